// Point-in-time restore over a recorded history: a real SQLite database is
// driven through thousands of transactions (rollback journal, so the file is
// the whole state after each commit); every transaction's changed pages go
// into segments written with SegmentWriter, snapshots with SnapshotWriter,
// across several snapshots and generation changes, into a file:// store.
// For every txid the test records the commit time and a hash of the whole
// file; restores at random txids and instants must reproduce those hashes,
// read only the objects they need, and fail (or, with partial, stop at the
// last good txid) on damaged or missing objects. Also: dry-run plans,
// restore windows and verify.
//
// The seed is printed; set TW_PITR_SEED to replay one.
#include <doctest/doctest.h>
#include "temp_dir.h"
#include <fcntl.h>
#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "store/format.h"
#include "store/object_store.h"
#include "store/restore.h"

namespace fs = std::filesystem;
using namespace tw;

namespace {

using twtest::TempDir;

std::string ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

uint64_t Hash(const std::string& s) { return Crc64(s.data(), s.size()); }

void Exec(sqlite3* db, const std::string& sql) {
  char* err = nullptr;
  int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err);
  std::string msg = err ? err : "";
  sqlite3_free(err);
  REQUIRE_MESSAGE(rc == SQLITE_OK, sql << ": " << msg);
}

// An ObjectStore wrapper that records which objects were read, and how.
class CountingStore : public ObjectStore {
 public:
  explicit CountingStore(ObjectStore* base) : base_(base) {}
  std::vector<std::string> full, ranged;
  void Clear() {
    std::lock_guard<std::mutex> l(mu_);
    full.clear();
    ranged.clear();
  }
  Status Put(const std::string& k, std::string_view d,
             const std::map<std::string, std::string>& m = {}) override {
    return base_->Put(k, d, m);
  }
  Status PutFile(const std::string& k, const std::string& p,
                 const std::map<std::string, std::string>& m = {}) override {
    return base_->PutFile(k, p, m);
  }
  Status Get(const std::string& k, std::string* out) override {
    Note(&full, k);
    return base_->Get(k, out);
  }
  Status GetToFile(const std::string& k, const std::string& p) override {
    Note(&full, k);
    return base_->GetToFile(k, p);
  }
  Status GetRange(const std::string& k, uint64_t off, uint64_t len, std::string* out) override {
    Note(&ranged, k);
    return base_->GetRange(k, off, len, out);
  }
  Status List(const std::string& p, std::vector<ObjectInfo>* out) override {
    return base_->List(p, out);
  }
  Status ListDirs(const std::string& p, std::vector<std::string>* out) override {
    return base_->ListDirs(p, out);
  }
  Status Delete(const std::string& k) override { return base_->Delete(k); }
  std::string url() const override { return base_->url(); }
  std::map<std::string, std::pair<uint64_t, uint64_t>> RequestCounts() const override {
    return base_->RequestCounts();
  }

 private:
  void Note(std::vector<std::string>* v, const std::string& k) {
    std::lock_guard<std::mutex> l(mu_);
    v->push_back(k);
  }
  ObjectStore* base_;
  std::mutex mu_;
};

const char* kTenant = "acme";
const char* kDb = "ledger";

// A generation of the replica: its id, where its snapshots are, and where
// its segments stop (segments cover (first snapshot, end]).
struct GenLayout {
  std::string id, parent;
  std::vector<uint64_t> snapshots;  // first one starts the generation
  uint64_t end = 0;
};

// The recorded history.
struct Recorded {
  uint32_t ps = 1024;
  uint64_t n = 0;
  std::vector<int64_t> commit_us;  // [txid]
  std::vector<uint64_t> hash;      // [txid] Crc64 of the whole file
  std::vector<uint64_t> sum;       // [txid] DbChecksum
  std::map<std::string, std::vector<std::pair<uint64_t, uint64_t>>> segments;  // gen -> ranges
  std::map<std::string, std::map<uint64_t, std::string>> snapshot_keys;       // gen -> txid -> key
  std::vector<GenLayout> gens;

  // The txid restored for instant T: the last with commit_us <= T.
  uint64_t TxidAt(int64_t t) const {
    auto it = std::upper_bound(commit_us.begin() + 1, commit_us.end(), t);
    return static_cast<uint64_t>(it - commit_us.begin()) - 1;
  }
};

// Builds `n` transactions through SQLite and publishes them to `store` with
// the given generations. Segment lengths are random in 1..max_seg, except
// that every snapshot txid is a segment boundary.
// Stores a spooled object under `key` of the file:// store rooted at `root`
// (the file store's layout is root/key). A rename instead of PutFile, which
// fsyncs every object: building 20,000 transactions would take minutes.
void Publish(const std::string& root, const std::string& key, const std::string& spool) {
  std::string dst = root + "/" + key;
  fs::create_directories(fs::path(dst).parent_path());
  REQUIRE(::rename(spool.c_str(), dst.c_str()) == 0);
}

Recorded BuildReplica(const std::string& root, const std::string& dir, uint64_t n,
                      const std::vector<GenLayout>& gens, std::mt19937_64& rng, int max_seg) {
  Recorded rec;
  rec.n = n;
  rec.gens = gens;
  rec.commit_us.assign(n + 1, 0);
  rec.hash.assign(n + 1, 0);
  rec.sum.assign(n + 1, 0);
  std::string path = dir + "/src.db";
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
  Exec(db, "PRAGMA page_size=1024; PRAGMA journal_mode=MEMORY; PRAGMA synchronous=OFF");

  std::set<uint64_t> snap_at;
  for (const auto& g : gens)
    for (uint64_t s : g.snapshots) snap_at.insert(s);
  // Every generation's segments: split (first snapshot, end] at random, with
  // boundaries at its snapshots.
  struct Pending {
    std::string gen;
    uint64_t a, b;
  };
  std::map<uint64_t, std::vector<Pending>> seg_ending;  // b -> segments ending there
  for (const auto& g : gens) {
    uint64_t a = g.snapshots.front() + 1;
    while (a <= g.end) {
      uint64_t b = std::min<uint64_t>(g.end, a + rng() % static_cast<uint64_t>(max_seg));
      for (uint64_t s : g.snapshots)
        if (s >= a && s < b) b = s;
      seg_ending[b].push_back({g.id, a, b});
      rec.segments[g.id].push_back({a, b});
      a = b + 1;
    }
  }

  std::vector<std::string> images(1, "");  // images kept only as long as needed
  std::string prev;                        // image after txid - 1
  // Per-txid changed pages, kept until every segment containing them is written.
  std::map<uint64_t, TxnInfo> infos;
  std::map<uint64_t, std::map<uint32_t, std::string>> changed;
  int64_t t = 1700000000000000LL;
  for (uint64_t txid = 1; txid <= n; txid++) {
    if (txid == 1) {
      Exec(db, "CREATE TABLE t(id INTEGER PRIMARY KEY, k TEXT, v BLOB); CREATE INDEX t_k ON t(k)");
    } else if (txid % 400 == 0) {
      Exec(db, "VACUUM");
    } else {
      std::string sql = "BEGIN;";
      int ops = 1 + static_cast<int>(rng() % 4);
      for (int i = 0; i < ops; i++) {
        uint64_t r = rng() % 10;
        if (r < 5)
          sql += "INSERT INTO t(k, v) VALUES('k" + std::to_string(rng() % 100000) +
                 "', randomblob(" + std::to_string(20 + rng() % 300) + "));";
        else if (r < 8)
          sql += "UPDATE t SET v = randomblob(" + std::to_string(20 + rng() % 200) +
                 ") WHERE id IN (SELECT id FROM t ORDER BY random() LIMIT 2);";
        else
          sql += "DELETE FROM t WHERE id IN (SELECT id FROM t ORDER BY random() LIMIT 1);";
      }
      sql += "DELETE FROM t WHERE id NOT IN (SELECT id FROM t ORDER BY id DESC LIMIT 300);";
      sql += "COMMIT;";
      Exec(db, sql);
    }
    t += 200 + static_cast<int64_t>(rng() % 20000);  // strictly increasing commit times
    std::string cur = ReadFile(path);
    REQUIRE(cur.size() % rec.ps == 0);
    rec.commit_us[txid] = t;
    rec.hash[txid] = Hash(cur);
    rec.sum[txid] = DbChecksumOf(reinterpret_cast<const uint8_t*>(cur.data()), cur.size(), rec.ps);
    TxnInfo info;
    info.txid = txid;
    info.commit_us = t;
    info.db_pages_after = static_cast<uint32_t>(cur.size() / rec.ps);
    info.checksum_after = rec.sum[txid];
    auto& pages = changed[txid];
    for (uint32_t p = 1; p <= info.db_pages_after; p++) {
      size_t off = static_cast<size_t>(p - 1) * rec.ps;
      if (off + rec.ps > prev.size() || prev.compare(off, rec.ps, cur, off, rec.ps) != 0)
        pages[p] = cur.substr(off, rec.ps);
    }
    info.page_count = static_cast<uint32_t>(pages.size());
    infos[txid] = info;

    if (snap_at.count(txid)) {
      for (const auto& g : gens) {
        if (std::find(g.snapshots.begin(), g.snapshots.end(), txid) == g.snapshots.end()) continue;
        SnapshotHeader h;
        h.tenant = kTenant;
        h.db = kDb;
        h.generation = g.id;
        h.parent_generation = g.parent;
        h.txid = txid;
        h.page_size = rec.ps;
        h.commit_us = t;
        h.created_us = t + 5;
        SnapshotWriter w;
        REQUIRE(w.Open(dir + "/spool.twsnap", h).ok());
        for (size_t off = 0; off < cur.size(); off += rec.ps)
          REQUIRE(w.AddPage(reinterpret_cast<const uint8_t*>(cur.data() + off)).ok());
        uint64_t bytes;
        REQUIRE(w.Finish(false, &bytes).ok());
        std::string key = SnapshotKey(kTenant, kDb, g.id, txid);
        Publish(root, key, dir + "/spool.twsnap");
        rec.snapshot_keys[g.id][txid] = key;
      }
    }
    for (const Pending& p : seg_ending[txid]) {
      SegmentHeader h;
      h.tenant = kTenant;
      h.db = kDb;
      h.generation = p.gen;
      h.page_size = rec.ps;
      h.min_txid = p.a;
      h.checksum_before = rec.sum[p.a - 1];
      SegmentWriter w;
      REQUIRE(w.Open(dir + "/spool.twseg", h).ok());
      for (uint64_t x = p.a; x <= p.b; x++) {
        REQUIRE(w.BeginTxn(infos[x]).ok());
        for (const auto& [pg, data] : changed[x])
          REQUIRE(w.AddPage(pg, reinterpret_cast<const uint8_t*>(data.data())).ok());
      }
      uint64_t bytes;
      REQUIRE(w.Finish({}, false, &bytes).ok());
      Publish(root, SegmentKey(kTenant, kDb, p.gen, p.a, p.b), dir + "/spool.twseg");
    }
    // Forget what no segment still to be written needs.
    uint64_t keep_from = txid + 1;
    for (const auto& [gid, ranges] : rec.segments)
      for (const auto& r : ranges)
        if (r.first <= txid && r.second > txid) keep_from = std::min(keep_from, r.first);
    while (!changed.empty() && changed.begin()->first < keep_from) {
      changed.erase(changed.begin());
      infos.erase(infos.begin());
    }
    prev = std::move(cur);
  }
  sqlite3_close(db);
  return rec;
}

uint64_t Seed() {
  const char* s = std::getenv("TW_PITR_SEED");
  if (s != nullptr && *s != '\0') return std::strtoull(s, nullptr, 10);
  return std::random_device()();
}

// Generation ids sort by creation time.
const char* kGenA = "0000018c00000001";
const char* kGenB = "0000018c00000002";
const char* kGenC = "0000018c00000003";

std::vector<GenLayout> Layout2400() {
  return {
      {kGenA, "", {1, 500}, 1200},      // two snapshots; segments to 1200
      {kGenB, kGenA, {1200}, 1700},     // generation change at 1200
      {kGenC, kGenB, {1700, 2100}, 2400},
  };
}

struct Fixture {
  TempDir work, root, out;
  std::unique_ptr<ObjectStore> file;
  std::unique_ptr<CountingStore> store;
  Recorded rec;
  uint64_t seed;
  std::mt19937_64 rng;

  Fixture(uint64_t n, const std::vector<GenLayout>& layout, int max_seg = 25) {
    seed = Seed();
    MESSAGE("PITR seed " << seed << " (replay: TW_PITR_SEED=" << seed << ")");
    rng.seed(seed);
    REQUIRE(OpenObjectStore("file://" + root.path, StoreOptions(), &file).ok());
    store = std::make_unique<CountingStore>(file.get());
    rec = BuildReplica(root.path, work.path, n, layout, rng, max_seg);
  }

  RestoreOptions Opts(const std::string& name) {
    RestoreOptions o;
    o.tenant = kTenant;
    o.db = kDb;
    o.output_path = out / name;
    o.overwrite = true;
    return o;
  }
};

// Checks that the full reads of a restore are exactly its plan, and that
// no segment beyond `txid` was downloaded.
void CheckReads(CountingStore* store, const RestoreResult& r, uint64_t txid) {
  std::vector<std::string> a = store->full, b = r.keys_read;  // downloads run in parallel
  std::sort(a.begin(), a.end());
  std::sort(b.begin(), b.end());
  CHECK(a == b);
  for (const auto& k : store->full) {
    ParsedKey pk;
    REQUIRE(ParseKey(k, &pk));
    CHECK_MESSAGE(pk.min_txid <= std::max<uint64_t>(txid, 1), "read past the target: " << k);
  }
}

}  // namespace

#ifndef TW_PITR_HELPERS_ONLY  // test_compaction.cc reuses the helpers above

TEST_CASE("pitr: restores at random txids and instants match the recorded history") {
  // Built once and shared by the subcases (none of them changes the replica).
  static std::unique_ptr<Fixture> shared;
  if (!shared) shared = std::make_unique<Fixture>(2400, Layout2400());
  Fixture& fx = *shared;
  const Recorded& rec = fx.rec;

  SUBCASE("latest") {
    RestoreResult r;
    Status s = Restore(fx.store.get(), fx.Opts("latest.db"), &r);
    REQUIRE_MESSAGE(s.ok(), s.ToString());
    CHECK(r.txid == 2400);
    CHECK(r.generation == kGenC);
    CHECK(r.snapshot_txid == 2100);
    CHECK(Hash(ReadFile(fx.out / "latest.db")) == rec.hash[2400]);
    CHECK(r.checksum == rec.sum[2400]);
    CheckReads(fx.store.get(), r, 2400);
  }

  SUBCASE("30 random txids") {
    for (int i = 0; i < 30; i++) {
      uint64_t txid = 1 + fx.rng() % rec.n;
      CAPTURE(txid);
      fx.store->Clear();
      RestoreOptions o = fx.Opts("tx.db");
      o.target_txid = txid;
      o.parallelism = 1 + static_cast<int>(fx.rng() % 8);
      RestoreResult r;
      Status s = Restore(fx.store.get(), o, &r);
      REQUIRE_MESSAGE(s.ok(), s.ToString());
      CHECK(r.txid == txid);
      CHECK(r.commit_us == rec.commit_us[txid]);
      CHECK(Hash(ReadFile(o.output_path)) == rec.hash[txid]);
      CHECK(r.header_reads == 0);  // txid targets plan from the listing alone
      CheckReads(fx.store.get(), r, txid);
    }
  }

  SUBCASE("30 random instants, including exact commit times") {
    int64_t lo = rec.commit_us[1], hi = rec.commit_us[rec.n] + 1000000;
    for (int i = 0; i < 30; i++) {
      int64_t t = lo + static_cast<int64_t>(fx.rng() % static_cast<uint64_t>(hi - lo));
      if (i % 5 == 0) t = rec.commit_us[1 + fx.rng() % rec.n];  // exactly at a commit
      uint64_t want = rec.TxidAt(t);
      CAPTURE(t);
      CAPTURE(want);
      fx.store->Clear();
      RestoreOptions o = fx.Opts("t.db");
      o.has_target_time = true;
      o.target_time_us = t;
      RestoreResult r;
      Status s = Restore(fx.store.get(), o, &r);
      REQUIRE_MESSAGE(s.ok(), s.ToString());
      CHECK(r.txid == want);
      CHECK(r.commit_us <= t);
      CHECK(Hash(ReadFile(o.output_path)) == rec.hash[want]);
      // The generation whose window holds t: the newest with a snapshot by t.
      std::string gen = want >= 1700 ? kGenC : want >= 1200 ? kGenB : kGenA;
      CHECK(r.generation == gen);
      CheckReads(fx.store.get(), r, want + 1);  // the segment holding want+1 may be read
      // Header reads: the snapshots examined plus a binary search: O(log n).
      CHECK(r.header_reads <= 16);
    }
  }

  SUBCASE("instants inside a snapshot's window give the snapshot's state") {
    for (uint64_t snap : {uint64_t{500}, uint64_t{1200}, uint64_t{1700}, uint64_t{2100}}) {
      CAPTURE(snap);
      for (int64_t t : {rec.commit_us[snap], (rec.commit_us[snap] + rec.commit_us[snap + 1]) / 2,
                        rec.commit_us[snap + 1] - 1}) {
        fx.store->Clear();
        RestoreOptions o = fx.Opts("snapwin.db");
        o.has_target_time = true;
        o.target_time_us = t;
        RestoreResult r;
        Status s = Restore(fx.store.get(), o, &r);
        REQUIRE_MESSAGE(s.ok(), s.ToString());
        CHECK(r.txid == snap);
        CHECK(r.snapshot_txid == snap);
        CHECK(r.segments == 0);
        CHECK(r.objects_read == 1);  // the snapshot alone
        CHECK(fx.store->full.size() == 1);
        CHECK(Hash(ReadFile(o.output_path)) == rec.hash[snap]);
      }
    }
  }

  SUBCASE("an instant before the earliest restorable point is an error naming it") {
    RestoreOptions o = fx.Opts("early.db");
    o.has_target_time = true;
    o.target_time_us = rec.commit_us[1] - 1;
    RestoreResult r;
    Status s = Restore(fx.store.get(), o, &r);
    CHECK(s.IsNotFound());
    CHECK(s.message().find("earliest") != std::string::npos);
    CHECK(s.message().find("2023-11-14T22:13:20") != std::string::npos);  // commit_us[1]'s second
    CHECK(s.message().find("txid 1") != std::string::npos);
    CHECK_FALSE(fs::exists(o.output_path));
    // Restricted to a generation, its own earliest point.
    o.generation = kGenB;
    o.target_time_us = rec.commit_us[1199];
    s = Restore(fx.store.get(), o, &r);
    CHECK(s.IsNotFound());
    CHECK(s.message().find("txid 1200") != std::string::npos);
  }

  SUBCASE("--generation with --txid picks that generation's history") {
    RestoreOptions o = fx.Opts("g.db");
    o.target_txid = 1150;
    o.generation = kGenA;
    RestoreResult r;
    REQUIRE(Restore(fx.store.get(), o, &r).ok());
    CHECK(r.generation == kGenA);
    CHECK(r.snapshot_txid == 500);
    CHECK(Hash(ReadFile(o.output_path)) == rec.hash[1150]);
    o.target_txid = 1300;  // beyond generation A
    CHECK(Restore(fx.store.get(), o, &r).IsNotFound());
  }

  SUBCASE("dry-run plans list exactly what a restore reads") {
    for (uint64_t txid : {uint64_t{1}, uint64_t{499}, uint64_t{500}, uint64_t{777},
                          uint64_t{1200}, uint64_t{1650}, uint64_t{2400}}) {
      CAPTURE(txid);
      RestoreOptions o = fx.Opts("plan.db");
      o.target_txid = txid;
      RestorePlan p;
      fx.store->Clear();
      REQUIRE(PlanRestore(fx.store.get(), o, &p).ok());
      CHECK(fx.store->full.empty());  // planning downloads nothing
      CHECK(p.txid_min == txid);
      CHECK(p.txid_max == txid);
      uint64_t bytes = p.snapshot.size;
      uint64_t cur = p.snapshot.min_txid;
      CHECK(cur <= txid);
      for (const auto& s : p.segments) {
        CHECK(s.min_txid == cur + 1);
        cur = s.max_txid;
        bytes += s.size;
      }
      CHECK(cur >= txid);
      if (!p.segments.empty()) CHECK(p.segments.back().min_txid <= txid);
      CHECK(p.bytes == bytes);
      RestoreResult r;
      REQUIRE(Restore(fx.store.get(), o, &r).ok());
      std::vector<std::string> keys{p.snapshot.key};
      for (const auto& s : p.segments) keys.push_back(s.key);
      CHECK(r.keys_read == keys);
      CHECK(r.bytes_read == p.bytes);
    }
    // Time plans: the txid range holds the answer.
    for (int i = 0; i < 10; i++) {
      int64_t t = rec.commit_us[1] +
                  static_cast<int64_t>(fx.rng() % static_cast<uint64_t>(rec.commit_us[rec.n] -
                                                                        rec.commit_us[1]));
      RestoreOptions o = fx.Opts("plan.db");
      o.has_target_time = true;
      o.target_time_us = t;
      RestorePlan p;
      REQUIRE(PlanRestore(fx.store.get(), o, &p).ok());
      uint64_t want = rec.TxidAt(t);
      CHECK(p.txid_min <= want);
      CHECK(want <= p.txid_max);
      CHECK_FALSE(p.headers_read.empty());
    }
  }

  SUBCASE("restore windows per generation") {
    CatalogDatabase cat;
    REQUIRE(ListDatabase(fx.store.get(), kTenant, kDb, &cat).ok());
    std::vector<RestoreWindow> w;
    REQUIRE(DescribeRestoreWindows(fx.store.get(), cat, &w).ok());
    REQUIRE(w.size() == 3);
    CHECK(w[0].earliest_txid == 1);
    CHECK(w[0].earliest_us == rec.commit_us[1]);
    CHECK(w[0].latest_txid == 1200);
    CHECK(w[0].latest_us == rec.commit_us[1200]);
    CHECK(w[1].earliest_txid == 1200);
    CHECK(w[1].latest_txid == 1700);
    CHECK(w[2].earliest_txid == 1700);
    CHECK(w[2].earliest_us == rec.commit_us[1700]);
    CHECK(w[2].latest_txid == 2400);
    CHECK(w[2].latest_us == rec.commit_us[2400]);
    for (const auto& x : w) {
      CHECK(x.restorable);
      CHECK(x.problems.empty());
      CHECK(x.unreachable_segments == 0);
    }
  }

  SUBCASE("verify passes on the intact replica and checks every transaction") {
    VerifyOptions vo;
    vo.tenant = kTenant;
    vo.db = kDb;
    VerifyReport rep;
    REQUIRE(VerifyReplica(fx.store.get(), vo, &rep).ok());
    for (const auto& p : rep.problems) MESSAGE(p.object << ": " << p.message);
    CHECK(rep.ok());
    CHECK(rep.generations == 3);
    CHECK(rep.snapshots == 5);
    size_t segs = 0;
    for (const auto& [g, v] : rec.segments) segs += v.size();
    CHECK(rep.segments == segs);
    CHECK(rep.txns == (1200 - 1) + (1700 - 1200) + (2400 - 1700));
  }
}

TEST_CASE("pitr: damaged and missing objects, --partial and verify") {
  Fixture fx(800, {{kGenA, "", {1}, 400}, {kGenB, kGenA, {400}, 800}}, 10);
  const Recorded& rec = fx.rec;
  // A segment of generation B with at least two transactions, from txid 550 on.
  std::string bad_key;
  for (auto [a, b] : fx.rec.segments[kGenB])
    if (a >= 550 && b > a && bad_key.empty()) bad_key = SegmentKey(kTenant, kDb, kGenB, a, b);
  REQUIRE_FALSE(bad_key.empty());
  ParsedKey bk;
  REQUIRE(ParseKey(bad_key, &bk));
  const uint64_t last_good = bk.min_txid - 1;

  SUBCASE("a flipped byte: restore names the object and the last good txid; --partial stops there") {
    std::string bytes;
    REQUIRE(fx.file->Get(bad_key, &bytes).ok());
    bytes[bytes.size() / 2] ^= 0x10;
    REQUIRE(fx.file->Put(bad_key, bytes).ok());
    RestoreResult r;
    Status s = Restore(fx.store.get(), fx.Opts("bad.db"), &r);
    CHECK(s.IsCorruption());
    CHECK(s.message().find(bad_key) != std::string::npos);
    CHECK(s.message().find("last good txid " + std::to_string(last_good)) != std::string::npos);
    CHECK_FALSE(fs::exists(fx.out / "bad.db"));

    RestoreOptions o = fx.Opts("partial.db");
    o.partial = true;
    s = Restore(fx.store.get(), o, &r);
    REQUIRE_MESSAGE(s.ok(), s.ToString());
    CHECK(r.partial);
    CHECK(r.txid == last_good);
    CHECK(r.failed_object == bad_key);
    CHECK(Hash(ReadFile(o.output_path)) == rec.hash[last_good]);
    REQUIRE_FALSE(r.warnings.empty());
    CHECK(r.warnings.back().find(bad_key) != std::string::npos);

    // Targets before the damage are unaffected; after it, errors.
    o = fx.Opts("before.db");
    o.target_txid = last_good;
    REQUIRE(Restore(fx.store.get(), o, &r).ok());
    o.target_txid = 700;
    CHECK(Restore(fx.store.get(), o, &r).IsCorruption());
    o.has_target_time = true;
    o.target_time_us = rec.commit_us[700];
    CHECK(Restore(fx.store.get(), o, &r).IsCorruption());

    VerifyOptions vo;
    vo.tenant = kTenant;
    vo.db = kDb;
    VerifyReport rep;
    REQUIRE(VerifyReplica(fx.store.get(), vo, &rep).ok());
    REQUIRE(rep.problems.size() >= 1);
    CHECK(rep.problems[0].object == bad_key);
  }

  SUBCASE("a missing segment: latest is an error naming the gap; --partial stops before it") {
    REQUIRE(fx.file->Delete(bad_key).ok());
    RestoreResult r;
    Status s = Restore(fx.store.get(), fx.Opts("gap.db"), &r);
    CHECK(s.IsNotFound());
    CHECK(s.message().find("last good txid is " + std::to_string(last_good)) != std::string::npos);
    RestoreOptions o = fx.Opts("gap.db");
    o.partial = true;
    s = Restore(fx.store.get(), o, &r);
    REQUIRE_MESSAGE(s.ok(), s.ToString());
    CHECK(r.txid == last_good);
    CHECK(r.partial);
    CHECK(Hash(ReadFile(o.output_path)) == rec.hash[last_good]);
    // A time after the gap: error, or partial.
    o.partial = false;
    o.has_target_time = true;
    o.target_time_us = rec.commit_us[750];
    s = Restore(fx.store.get(), o, &r);
    CHECK(s.IsNotFound());
    CHECK(s.message().find("gap") != std::string::npos);
    o.partial = true;
    REQUIRE(Restore(fx.store.get(), o, &r).ok());
    CHECK(r.txid == last_good);

    VerifyOptions vo;
    vo.tenant = kTenant;
    vo.db = kDb;
    VerifyReport rep;
    REQUIRE(VerifyReplica(fx.store.get(), vo, &rep).ok());
    REQUIRE(rep.problems.size() == 1);
    CHECK(rep.problems[0].message.find("gap") != std::string::npos);
    CHECK(rep.problems[0].message.find("txid " + std::to_string(last_good + 1)) !=
          std::string::npos);
  }

  SUBCASE("a segment lying about one transaction: --partial redoes up to the txn before") {
    // Rewrite the segment with a wrong checksum_after on its second txn: the
    // object is well formed, the damage shows only after that txn's pages
    // were written.
    SegmentReader orig;
    std::string bytes;
    REQUIRE(fx.file->Get(bad_key, &bytes).ok());
    REQUIRE(orig.Open(bytes).ok());
    REQUIRE(bk.max_txid > bk.min_txid);
    SegmentHeader h = orig.header();
    SegmentWriter w;
    REQUIRE(w.Open(fx.work / "lie.twseg", h).ok());
    REQUIRE(orig.ForEach(
                    [&](const TxnInfo& t) {
                      TxnInfo x = t;
                      if (t.txid == bk.min_txid + 1) x.checksum_after ^= 1;
                      return w.BeginTxn(x).ok();
                    },
                    [&](uint32_t pg, const uint8_t* data) { return w.AddPage(pg, data).ok(); })
                .ok());
    uint64_t n;
    REQUIRE(w.Finish({}, false, &n).ok());
    REQUIRE(fx.file->PutFile(bad_key, fx.work / "lie.twseg").ok());
    RestoreResult r;
    Status s = Restore(fx.store.get(), fx.Opts("lie.db"), &r);
    CHECK(s.IsCorruption());
    CHECK(s.message().find("txn " + std::to_string(bk.min_txid + 1)) != std::string::npos);
    RestoreOptions o = fx.Opts("lie.db");
    o.partial = true;
    s = Restore(fx.store.get(), o, &r);
    REQUIRE_MESSAGE(s.ok(), s.ToString());
    CHECK(r.txid == bk.min_txid);
    CHECK(r.partial);
    CHECK(Hash(ReadFile(o.output_path)) == rec.hash[bk.min_txid]);
  }

  SUBCASE("a damaged snapshot is named by verify; a damaged later snapshot does not hurt restores") {
    std::string key = rec.snapshot_keys.at(kGenB).at(400);
    std::string bytes;
    REQUIRE(fx.file->Get(key, &bytes).ok());
    bytes[bytes.size() - 20] ^= 1;
    REQUIRE(fx.file->Put(key, bytes).ok());
    VerifyOptions vo;
    vo.tenant = kTenant;
    vo.db = kDb;
    VerifyReport rep;
    REQUIRE(VerifyReplica(fx.store.get(), vo, &rep).ok());
    REQUIRE_FALSE(rep.ok());
    CHECK(rep.problems[0].object == key);
    RestoreResult r;
    RestoreOptions o = fx.Opts("a.db");
    o.target_txid = 399;
    REQUIRE(Restore(fx.store.get(), o, &r).ok());
    CHECK(Hash(ReadFile(o.output_path)) == rec.hash[399]);
  }
}

TEST_CASE("pitr: 20,000 transactions from a file:// store (timings)") {
  auto t0 = std::chrono::steady_clock::now();
  Fixture fx(20000, {{kGenA, "", {1, 10000}, 20000}}, 40);
  double build = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  size_t segs = fx.rec.segments[kGenA].size();
  struct Case {
    const char* what;
    bool time;
    uint64_t txid;
  };
  for (Case c : {Case{"latest", false, kRestoreLatest}, Case{"txid 9999 (from the first snapshot)", false, 9999},
                 Case{"time of txid 15000", true, 15000}, Case{"txid 20000, parallelism 1", false, 20000}}) {
    RestoreOptions o = fx.Opts("big.db");
    if (c.time) {
      o.has_target_time = true;
      o.target_time_us = fx.rec.commit_us[c.txid];
    } else {
      o.target_txid = c.txid;
    }
    if (c.txid == 20000) o.parallelism = 1;
    RestoreResult r;
    auto t1 = std::chrono::steady_clock::now();
    Status s = Restore(fx.store.get(), o, &r);
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
    REQUIRE_MESSAGE(s.ok(), s.ToString());
    uint64_t want = c.txid == kRestoreLatest ? 20000 : c.txid;
    CHECK(r.txid == want);
    CHECK(Hash(ReadFile(o.output_path)) == fx.rec.hash[want]);
    MESSAGE("20k history (" << segs << " segments, built in " << build << " s): restore "
                            << std::string(c.what) << ": " << secs << " s, " << r.objects_read
                            << " objects, " << r.bytes_read << " bytes, " << r.header_reads
                            << " header reads, " << r.pages << " pages");
  }
}

#endif  // TW_PITR_HELPERS_ONLY
