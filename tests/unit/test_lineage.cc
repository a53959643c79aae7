// The readers follow the authority's lineage, never generation ids (issue
// 12, situations 3 and 4): "latest" and retention over recorded catalogs
// where ids lie, a clock stepped back (the current generation has the
// lowest id) and a second host's orphan (the highest id).

#include <doctest/doctest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "replicator/compaction.h"
#include "store/restore.h"

namespace {

// Generation ids: OLD and CUR as a clock stepped back makes them (CUR, the
// current one, sorts lowest); ORPHAN is a fenced host's (sorts highest).
const std::string kOld = "01a0000000000005";
const std::string kCur = "0190000000000001";
const std::string kOrphan = "01b0000000000009";

tw::CatalogGeneration Gen(const std::string& id, uint64_t snap_txid, uint64_t last_txid) {
  tw::CatalogGeneration g;
  g.id = id;
  g.snapshots.push_back({"s/" + id + "/" + std::to_string(snap_txid), snap_txid, snap_txid, 10});
  if (last_txid > snap_txid) {
    g.segments.push_back({"g/" + id + "/" + std::to_string(snap_txid + 1), snap_txid + 1,
                          last_txid, 10});
  }
  return g;
}

tw::CatalogDatabase Catalog() {
  tw::CatalogDatabase c;
  c.tenant = "acme";
  c.db = "users";
  // As BuildCatalog gives them: sorted by id.
  c.generations = {Gen(kCur, 30, 40), Gen(kOld, 1, 29), Gen(kOrphan, 1, 5)};
  return c;
}

twd::IndexedGeneration IGen(const std::string& id, uint64_t snap_txid, int64_t snap_us,
                            uint64_t last_txid, int64_t last_us) {
  twd::IndexedGeneration g;
  twd::IndexedObject s;
  s.key = "s/" + id;
  s.snapshot = true;
  s.min_txid = s.max_txid = snap_txid;
  s.first_us = s.last_us = snap_us;
  g.snapshots.push_back(s);
  twd::IndexedObject seg;
  seg.key = "g/" + id;
  seg.min_txid = snap_txid + 1;
  seg.max_txid = last_txid;
  seg.first_us = snap_us + 1;
  seg.last_us = last_us;
  g.segments.push_back(seg);
  return g;
}

bool Has(const std::vector<std::string>& v, const std::string& k) {
  return std::find(v.begin(), v.end(), k) != v.end();
}

}  // namespace

TEST_CASE("lineage: latest is the lineage's current generation, never an orphan") {
  tw::CatalogDatabase legacy = Catalog();
  tw::RestorePlan p;
  REQUIRE(tw::PlanRestore(legacy, tw::kRestoreLatest, "", &p).ok());
  CHECK(p.generation == kOrphan);  // without an authority: id order (the defect)

  tw::CatalogDatabase c = Catalog();
  tw::ApplyLineage(&c, {kOld, kCur}, "0123456789abcdef0123456789abcdef", 2);
  REQUIRE(c.generations.size() == 3);
  CHECK(c.generations[0].id == kOrphan);
  CHECK(c.generations[0].orphan);
  CHECK(c.generations[1].id == kOld);
  CHECK(c.generations[2].id == kCur);
  CHECK(c.current == kCur);
  REQUIRE(tw::PlanRestore(c, tw::kRestoreLatest, "", &p).ok());
  CHECK(p.generation == kCur);
  CHECK(p.reachable_txid == 40);
  // A txid only the older generation reaches is found there, not in the orphan.
  REQUIRE(tw::PlanRestore(c, 20, "", &p).ok());
  CHECK(p.generation == kOld);
  // The orphan stays restorable by id.
  REQUIRE(tw::PlanRestore(c, tw::kRestoreLatest, kOrphan, &p).ok());
  CHECK(p.generation == kOrphan);
  CHECK(p.reachable_txid == 5);
}

TEST_CASE("lineage: retention never deletes the current generation whatever its id") {
  const int64_t H = 3600LL * 1000000;
  twd::IndexedDb db;
  db[kOld] = IGen(kOld, 1, 1 * H, 29, 5 * H);
  db[kCur] = IGen(kCur, 30, 6 * H, 40, 9 * H);      // current, lowest id
  db[kOrphan] = IGen(kOrphan, 1, 2 * H, 5, 3 * H);  // a fenced host's, old
  const int64_t now = 10 * H, retention = 2 * H;     // cutoff 8 h: S* = kCur's snapshot
  // Without the lineage (the defect): id order makes kCur the oldest.
  std::vector<std::string> legacy = twd::PlanRetention(db, now, retention);
  CHECK(Has(legacy, "s/" + kCur));
  // With it: kCur is kept whole, the older generation and the old orphan go.
  std::vector<std::string> lin = {kOld, kCur};
  std::vector<std::string> del = twd::PlanRetention(db, now, retention, &lin);
  CHECK_FALSE(Has(del, "s/" + kCur));
  CHECK_FALSE(Has(del, "g/" + kCur));
  CHECK(Has(del, "s/" + kOld));
  CHECK(Has(del, "g/" + kOld));
  CHECK(Has(del, "s/" + kOrphan));
  // A long retention keeps everything, orphans included.
  CHECK(twd::PlanRetention(db, now, 100 * H, &lin).empty());
  // A young orphan (still inside the window) is kept.
  db[kOrphan] = IGen(kOrphan, 1, 9 * H, 5, 9 * H + 5);
  del = twd::PlanRetention(db, now, retention, &lin);
  CHECK_FALSE(Has(del, "s/" + kOrphan));
  CHECK_FALSE(Has(del, "s/" + kCur));
}
