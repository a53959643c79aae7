// tenantwal: the restore engine, replica catalog, restore windows and verify
// (design: restore.h).
#include "store/restore.h"

#include "store/authority.h"

#include "store/file_util.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <ctime>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <mutex>
#include <set>
#include <thread>
#include <unordered_map>
#include <cerrno>
#include <cstring>
#include <new>
#include <stdexcept>
#include <tuple>

namespace tw {

using file_util::DirOf;
using file_util::Errno;
using file_util::MakeTemp;
using file_util::PwriteAll;

namespace {





// Removes temporary files and closes descriptors on every exit path.
struct TempFiles {
  std::vector<std::string> paths;
  int fd = -1;
  ~TempFiles() { Reset(); }
  void Reset() {
    if (fd >= 0) ::close(fd);
    fd = -1;
    for (const auto& p : paths) ::unlink(p.c_str());
    paths.clear();
  }
};


}  // namespace

// Runs PRAGMA integrity_check on a closed database file.
Status IntegrityCheck(const std::string& path) {
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    sqlite3_close(db);
    return Status::Corruption("database does not open: " + msg);
  }
  std::vector<std::string> rows;
  char* err = nullptr;
  rc = sqlite3_exec(
      db, "PRAGMA integrity_check",
      [](void* arg, int n, char** vals, char**) -> int {
        auto* out = static_cast<std::vector<std::string>*>(arg);
        if (n > 0 && out->size() < 5) out->push_back(vals[0] ? vals[0] : "NULL");
        return 0;
      },
      &rows, &err);
  std::string emsg = err ? err : "";
  sqlite3_free(err);
  sqlite3_close(db);
  if (rc != SQLITE_OK) return Status::Corruption("integrity_check failed: " + emsg);
  if (rows.size() == 1 && rows[0] == "ok") return Status::OK();
  std::string joined;
  for (const auto& r : rows) joined += (joined.empty() ? "" : "; ") + r;
  return Status::Corruption("integrity_check: " + (joined.empty() ? "no result" : joined));
}

// ---- catalog -----------------------------------------------------------------

std::vector<CatalogDatabase> BuildCatalog(const std::vector<ObjectInfo>& objects,
                                          size_t* ignored) {
  std::map<std::pair<std::string, std::string>, std::map<std::string, CatalogGeneration>> by_db;
  size_t skipped = 0;
  for (const ObjectInfo& o : objects) {
    ParsedKey k;
    if (!ParseKey(o.key, &k)) {
      skipped++;
      continue;
    }
    CatalogGeneration& g = by_db[{k.tenant, k.db}][k.generation];
    g.id = k.generation;
    CatalogObject c{o.key, k.min_txid, k.max_txid, o.size};
    (k.kind == ParsedKey::kSnapshot ? g.snapshots : g.segments).push_back(std::move(c));
  }
  auto order = [](const CatalogObject& a, const CatalogObject& b) {
    return std::tie(a.min_txid, a.max_txid) < std::tie(b.min_txid, b.max_txid);
  };
  std::vector<CatalogDatabase> out;
  for (auto& [name, gens] : by_db) {
    CatalogDatabase d;
    d.tenant = name.first;
    d.db = name.second;
    for (auto& [id, g] : gens) {
      std::sort(g.snapshots.begin(), g.snapshots.end(), order);
      std::sort(g.segments.begin(), g.segments.end(), order);
      d.generations.push_back(std::move(g));
    }
    out.push_back(std::move(d));
  }
  if (ignored != nullptr) *ignored = skipped;
  return out;
}

Status ListDatabase(ObjectStore* store, const std::string& tenant, const std::string& db,
                    CatalogDatabase* out) {
  std::vector<ObjectInfo> objects;
  TW_RETURN_IF_ERROR(store->List(DbPrefix(tenant, db), &objects));
  std::vector<CatalogDatabase> all = BuildCatalog(objects, nullptr);
  *out = CatalogDatabase();
  out->tenant = tenant;
  out->db = db;
  for (auto& d : all)
    if (d.tenant == tenant && d.db == db) *out = std::move(d);
  bool has_authority = false;
  for (const ObjectInfo& o : objects) has_authority |= o.key == AuthorityKey(tenant, db);
  if (!has_authority) return Status::OK();  // a replica from before the authority
  Authority a;
  Status s = LoadAuthority(store, tenant, db, &a, nullptr);
  if (s.IsNotFound()) return Status::OK();  // deleted since the listing
  TW_RETURN_IF_ERROR(s);
  std::vector<std::string> ids;
  for (const AuthorityGeneration& g : a.lineage) ids.push_back(g.id);
  ApplyLineage(out, ids, a.released ? "" : a.owner, a.epoch);
  return Status::OK();
}

void ApplyLineage(CatalogDatabase* cat, const std::vector<std::string>& lineage,
                  const std::string& owner, uint64_t epoch) {
  std::map<std::string, CatalogGeneration> by_id;
  for (auto& g : cat->generations) by_id[g.id] = std::move(g);
  cat->generations.clear();
  std::set<std::string> in_lineage(lineage.begin(), lineage.end());
  for (auto& [id, g] : by_id) {  // orphans first, by id
    if (in_lineage.count(id)) continue;
    g.orphan = true;
    cat->generations.push_back(std::move(g));
  }
  for (const std::string& id : lineage) {
    auto it = by_id.find(id);
    if (it == by_id.end() || in_lineage.count(id) == 0) continue;
    it->second.orphan = false;
    cat->generations.push_back(std::move(it->second));
    in_lineage.erase(id);  // a duplicate id in the lineage is used once
  }
  cat->has_authority = true;
  cat->current = lineage.empty() ? "" : lineage.back();
  cat->owner = owner;
  cat->epoch = epoch;
}
// ---- helpers for planning --------------------------------------------------------

namespace {

// Unix microseconds as RFC 3339 UTC ("-" for 0), for messages.
std::string TimeText(int64_t us) {
  if (us == 0) return "-";
  int64_t sec = us / 1000000, frac = us % 1000000;
  if (frac < 0) {
    frac += 1000000;
    sec -= 1;
  }
  time_t t = static_cast<time_t>(sec);
  struct tm tm;
  if (gmtime_r(&t, &tm) == nullptr) return std::to_string(us) + "us";
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(frac));
  return buf;
}

std::string Txt(uint64_t v) { return std::to_string(v); }

// The strict chain of segments of `gen` from txid `from` (exclusive) up to
// `target` (inclusive): min_txid = previous max + 1, the widest at each step.
std::vector<const CatalogObject*> ChainFrom(const CatalogGeneration& gen, uint64_t from,
                                            uint64_t target) {
  std::vector<const CatalogObject*> chain;
  uint64_t cur = from;
  // Segments are sorted by (min, max): binary search for min == cur + 1.
  while (cur < target) {
    auto it = std::lower_bound(gen.segments.begin(), gen.segments.end(), cur + 1,
                               [](const CatalogObject& o, uint64_t v) { return o.min_txid < v; });
    const CatalogObject* next = nullptr;
    for (; it != gen.segments.end() && it->min_txid == cur + 1; ++it)
      if (next == nullptr || it->max_txid > next->max_txid) next = &*it;
    if (next == nullptr) break;
    chain.push_back(next);
    cur = next->max_txid;
  }
  return chain;
}

uint64_t ChainEnd(const CatalogObject& snap, const std::vector<const CatalogObject*>& chain) {
  return chain.empty() ? snap.max_txid : chain.back()->max_txid;
}

// The first segment of `gen` beyond txid `end` (the one after a gap), or null.
const CatalogObject* FirstBeyond(const CatalogGeneration& gen, uint64_t end) {
  const CatalogObject* first = nullptr;
  for (const CatalogObject& s : gen.segments)
    if (s.max_txid > end && (first == nullptr || s.min_txid < first->min_txid)) first = &s;
  return first;
}

// Reads and checks the 288-byte header of an object with a ranged GET.
Status ReadSnapshotHeaderOf(ObjectStore* store, const std::string& tenant, const std::string& db,
                            const std::string& gen, const CatalogObject& o, SnapshotHeader* h) {
  std::string bytes;
  TW_RETURN_IF_ERROR(store->GetRange(o.key, 0, kSnapshotHeaderSize, &bytes).Prefix("get " + o.key));
  TW_RETURN_IF_ERROR(ParseSnapshotHeader(bytes, h).Prefix("snapshot " + o.key));
  if (h->tenant != tenant || h->db != db || h->generation != gen || h->txid != o.min_txid)
    return Status::Corruption("snapshot " + o.key + ": header does not match its key");
  return Status::OK();
}

Status ReadSegmentHeaderOf(ObjectStore* store, const std::string& tenant, const std::string& db,
                           const std::string& gen, const CatalogObject& o, SegmentHeader* h) {
  std::string bytes;
  TW_RETURN_IF_ERROR(store->GetRange(o.key, 0, kSegmentHeaderSize, &bytes).Prefix("get " + o.key));
  TW_RETURN_IF_ERROR(ParseSegmentHeader(bytes, h).Prefix("segment " + o.key));
  if (h->tenant != tenant || h->db != db || h->generation != gen || h->min_txid != o.min_txid ||
      h->max_txid != o.max_txid)
    return Status::Corruption("segment " + o.key + ": header does not match its key");
  return Status::OK();
}

// Header reads during one planning, cached and recorded.
struct HeaderReader {
  ObjectStore* store;
  const CatalogDatabase& cat;
  RestorePlan* plan;
  std::map<std::string, SnapshotHeader> snaps;
  std::map<std::string, SegmentHeader> segs;

  Status Snapshot(const std::string& gen, const CatalogObject& o, SnapshotHeader* h) {
    auto it = snaps.find(o.key);
    if (it == snaps.end()) {
      SnapshotHeader x;
      plan->headers_read.push_back(o.key);
      TW_RETURN_IF_ERROR(ReadSnapshotHeaderOf(store, cat.tenant, cat.db, gen, o, &x));
      it = snaps.emplace(o.key, x).first;
    }
    *h = it->second;
    return Status::OK();
  }
  Status Segment(const std::string& gen, const CatalogObject& o, SegmentHeader* h) {
    auto it = segs.find(o.key);
    if (it == segs.end()) {
      SegmentHeader x;
      plan->headers_read.push_back(o.key);
      TW_RETURN_IF_ERROR(ReadSegmentHeaderOf(store, cat.tenant, cat.db, gen, o, &x));
      it = segs.emplace(o.key, x).first;
    }
    *h = it->second;
    return Status::OK();
  }
};

void FinishPlan(RestorePlan* plan) {
  plan->bytes = plan->snapshot.size;
  for (const auto& s : plan->segments) plan->bytes += s.size;
}

// Newer generations than `chosen` (an index into catalog.generations) that
// hold segments but no snapshot: their history cannot be restored.
std::vector<const CatalogGeneration*> SnapshotlessAfter(const CatalogDatabase& cat,
                                                        size_t chosen) {
  std::vector<const CatalogGeneration*> out;
  for (size_t i = chosen + 1; i < cat.generations.size(); i++)
    if (cat.generations[i].snapshots.empty() && !cat.generations[i].segments.empty())
      out.push_back(&cat.generations[i]);
  return out;
}

}  // namespace

// ---- plan ----------------------------------------------------------------------

Status PlanRestore(const CatalogDatabase& catalog, uint64_t target, const std::string& generation,
                   RestorePlan* plan, bool partial) {
  *plan = RestorePlan();
  std::string what = catalog.tenant + "/" + catalog.db;
  if (catalog.generations.empty()) return Status::NotFound("no replica of " + what);
  const CatalogGeneration* gen = nullptr;
  size_t gen_index = 0;
  const CatalogObject* snap = nullptr;
  std::vector<const CatalogObject*> chain;
  for (size_t gi = catalog.generations.size(); gi-- > 0;) {
    const CatalogGeneration& g = catalog.generations[gi];
    if (!generation.empty() && g.id != generation) continue;
    if (generation.empty() && g.orphan) continue;  // only by id
    // Snapshots at or before the target, newest first: the first whose chain
    // reaches the target (latest: the one reaching furthest).
    uint64_t best_end = 0;
    for (auto it = g.snapshots.rbegin(); it != g.snapshots.rend(); ++it) {
      if (it->min_txid > target) continue;
      std::vector<const CatalogObject*> c = ChainFrom(g, it->min_txid, target);
      uint64_t end = ChainEnd(*it, c);
      if (snap == nullptr || end > best_end) {
        snap = &*it;
        chain = std::move(c);
        best_end = end;
      }
      if (target != kRestoreLatest && end >= target) break;
    }
    if (snap != nullptr) {
      gen = &g;
      gen_index = gi;
      break;
    }
    if (!generation.empty()) break;
  }
  if (gen == nullptr) {
    std::string where = generation.empty() ? what : what + " generation " + generation;
    if (target == kRestoreLatest) return Status::NotFound("no snapshot of " + where);
    return Status::NotFound("no snapshot of " + where + " at or before txid " + Txt(target));
  }
  plan->generation = gen->id;
  plan->snapshot = *snap;
  for (const CatalogObject* c : chain) plan->segments.push_back(*c);
  uint64_t cur = ChainEnd(*snap, chain);
  plan->reachable_txid = std::min(cur, target);
  if (target != kRestoreLatest && cur < target) {
    std::string msg = "txid " + Txt(target) + " is not reachable in generation " + gen->id +
                      ": last good txid is " + Txt(cur);
    const CatalogObject* beyond = FirstBeyond(*gen, cur);
    if (beyond != nullptr) msg += " (gap before " + beyond->key + ")";
    if (!partial) return Status::NotFound(msg);
    plan->warnings.push_back(msg + "; restoring txid " + Txt(cur) + " (--partial)");
    plan->partial = true;
  }
  if (target == kRestoreLatest) {
    const CatalogObject* beyond = FirstBeyond(*gen, cur);
    if (beyond != nullptr) {
      std::string msg = "generation " + gen->id + ": segments after txid " + Txt(cur) +
                        " are unreachable (gap before " + beyond->key + "): last good txid is " +
                        Txt(cur);
      if (!partial) return Status::NotFound(msg);
      plan->warnings.push_back(msg + "; restoring txid " + Txt(cur) + " (--partial)");
      plan->partial = true;
    }
    if (generation.empty()) {
      for (const CatalogGeneration* g : SnapshotlessAfter(catalog, gen_index)) {
        std::string msg = "generation " + g->id + " has " + Txt(g->segments.size()) +
                          " segment(s) (first " + g->segments.front().key +
                          ") but no snapshot, so its history cannot be restored: last good txid "
                          "is " + Txt(cur) + " in generation " + gen->id;
        if (!partial) return Status::NotFound(msg);
        plan->warnings.push_back(msg + " (--partial)");
        plan->partial = true;
      }
    }
  }
  plan->txid_min = plan->txid_max = plan->reachable_txid;
  FinishPlan(plan);
  return Status::OK();
}

namespace {

// Plans a time target (see restore.h).
Status PlanByTime(ObjectStore* store, const CatalogDatabase& cat, const RestoreOptions& opt,
                  RestorePlan* plan) {
  const int64_t T = opt.target_time_us;
  std::string what = cat.tenant + "/" + cat.db;
  if (cat.generations.empty()) return Status::NotFound("no replica of " + what);
  HeaderReader hr{store, cat, plan, {}, {}};
  const CatalogGeneration* gen = nullptr;
  size_t gen_index = 0;
  const CatalogObject* snap = nullptr;
  SnapshotHeader snap_hdr;
  int64_t earliest_us = INT64_MAX;
  uint64_t earliest_txid = 0;
  std::string earliest_gen;
  for (size_t gi = cat.generations.size(); gi-- > 0 && snap == nullptr;) {
    const CatalogGeneration& g = cat.generations[gi];
    if (!opt.generation.empty() && g.id != opt.generation) continue;
    if (opt.generation.empty() && g.orphan) continue;  // only by id
    // Snapshots committed by T, newest first: the first whose chain runs to
    // the generation's last segment; failing that, the one reaching furthest.
    uint64_t best_end = 0;
    for (auto it = g.snapshots.rbegin(); it != g.snapshots.rend(); ++it) {
      SnapshotHeader h;
      TW_RETURN_IF_ERROR(hr.Snapshot(g.id, *it, &h));
      if (h.commit_us < earliest_us) {
        earliest_us = h.commit_us;
        earliest_txid = h.txid;
        earliest_gen = g.id;
      }
      if (h.commit_us > T) continue;
      uint64_t end = ChainEnd(*it, ChainFrom(g, it->min_txid, kRestoreLatest));
      if (snap == nullptr || end > best_end) {
        snap = &*it;
        snap_hdr = h;
        gen = &g;
        gen_index = gi;
        best_end = end;
      }
      if (FirstBeyond(g, end) == nullptr) break;
    }
  }
  if (snap == nullptr) {
    std::string where = opt.generation.empty() ? what : what + " generation " + opt.generation;
    if (earliest_us == INT64_MAX) return Status::NotFound("no snapshot of " + where);
    return Status::NotFound(TimeText(T) + " is before the earliest restorable point of " + where +
                            ": the earliest is " + TimeText(earliest_us) + " (txid " +
                            Txt(earliest_txid) + ", generation " + earliest_gen + ")");
  }
  plan->generation = gen->id;
  plan->snapshot = *snap;
  plan->snapshot_commit_us = snap_hdr.commit_us;

  // Newer generations without a snapshot whose history started by T.
  if (opt.generation.empty()) {
    for (const CatalogGeneration* g : SnapshotlessAfter(cat, gen_index)) {
      SegmentHeader h;
      Status s = hr.Segment(g->id, g->segments.front(), &h);
      if (s.ok() && h.first_commit_us > T) continue;
      std::string msg = "generation " + g->id + " has segments but no snapshot (first " +
                        g->segments.front().key + (s.ok() ? "" : ": " + s.ToString()) +
                        "), so the state at " + TimeText(T) + " may be in a history that "
                        "cannot be restored";
      if (!opt.partial) return Status::NotFound(msg);
      plan->warnings.push_back(msg + "; restoring from generation " + gen->id + " (--partial)");
      plan->partial = true;
    }
  }

  // The whole chain from the snapshot, then a binary search on first commit times.
  std::vector<const CatalogObject*> chain = ChainFrom(*gen, snap->min_txid, kRestoreLatest);
  size_t lo = 0, hi = chain.size();
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    SegmentHeader h;
    TW_RETURN_IF_ERROR(hr.Segment(gen->id, *chain[mid], &h));
    if (h.first_commit_us <= T) lo = mid + 1;
    else hi = mid;
  }
  size_t count = lo;  // segments [0, count) start at or before T
  for (size_t i = 0; i < count; i++) plan->segments.push_back(*chain[i]);
  if (count == 0) {
    plan->txid_min = plan->txid_max = snap->min_txid;
  } else {
    SegmentHeader last;
    TW_RETURN_IF_ERROR(hr.Segment(gen->id, *chain[count - 1], &last));
    if (last.last_commit_us <= T) {
      plan->txid_min = plan->txid_max = last.max_txid;
    } else {
      plan->txid_min = last.min_txid;
      plan->txid_max = last.max_txid - 1;
    }
  }
  plan->reachable_txid = plan->txid_max;
  if (count < chain.size()) {
    // T lies before the first restore point of a coarse compacted segment:
    // the state used is the last point before it (the snapshot or the end
    // of the previous segment), not necessarily the last commit by T.
    SegmentHeader next;
    if (hr.Segment(gen->id, *chain[count], &next).ok() && next.points &&
        plan->txid_min == plan->txid_max) {
      plan->coarse = true;
      plan->coarse_level = next.level;
      if (count == 0) {
        plan->point_commit_us = snap_hdr.commit_us;
      } else {
        SegmentHeader prev;
        if (hr.Segment(gen->id, *chain[count - 1], &prev).ok())
          plan->point_commit_us = prev.last_commit_us;
      }
    }
  }
  if (count == chain.size()) {
    // The chain is exhausted: a segment past a gap that starts by T means
    // the state at T is not reachable.
    uint64_t end = ChainEnd(*snap, chain);
    const CatalogObject* beyond = FirstBeyond(*gen, end);
    if (beyond != nullptr) {
      SegmentHeader h;
      Status s = hr.Segment(gen->id, *beyond, &h);
      if (!s.ok() || h.first_commit_us <= T) {
        std::string msg = "the state at " + TimeText(T) + " is not reachable in generation " +
                          gen->id + ": gap before " + beyond->key + (s.ok() ? "" : " (" +
                          s.ToString() + ")") + "; last good txid is " + Txt(end);
        if (!opt.partial) return Status::NotFound(msg);
        plan->warnings.push_back(msg + "; restoring txid " + Txt(end) + " (--partial)");
        plan->partial = true;
      }
    }
  }
  FinishPlan(plan);
  return Status::OK();
}

Status CheckNames(const RestoreOptions& opt) {
  if (!ValidName(opt.tenant)) return Status::InvalidArgument("invalid tenant name");
  if (!ValidName(opt.db)) return Status::InvalidArgument("invalid database name");
  if (!opt.generation.empty() && !IsGenerationId(opt.generation))
    return Status::InvalidArgument("invalid generation id '" + opt.generation + "'");
  return Status::OK();
}

}  // namespace

Status PlanRestore(ObjectStore* store, const RestoreOptions& opt, RestorePlan* plan) {
  *plan = RestorePlan();
  TW_RETURN_IF_ERROR(CheckNames(opt));
  CatalogDatabase catalog;
  TW_RETURN_IF_ERROR(ListDatabase(store, opt.tenant, opt.db, &catalog).Prefix("list"));
  if (opt.has_target_time) return PlanByTime(store, catalog, opt, plan);
  return PlanRestore(catalog, opt.target_txid, opt.generation, plan, opt.partial);
}

Status ResolveRestorePoint(ObjectStore* store, const RestoreOptions& opt, RestorePlan* plan) {
  if (plan->segments.empty()) return Status::OK();
  const CatalogObject& last = plan->segments.back();
  std::string head;
  TW_RETURN_IF_ERROR(store->GetRange(last.key, 0, kSegmentHeaderSize, &head).Prefix("get " + last.key));
  SegmentHeader h;
  TW_RETURN_IF_ERROR(ParseSegmentHeader(head, &h).Prefix("segment " + last.key));
  plan->headers_read.push_back(last.key);
  if (!h.points) return Status::OK();
  std::string bytes;
  TW_RETURN_IF_ERROR(store->Get(last.key, &bytes).Prefix("get " + last.key));
  SegmentReader r;
  TW_RETURN_IF_ERROR(r.Open(bytes).Prefix("segment " + last.key));
  uint64_t point = last.min_txid - 1;
  int64_t point_us = 0;
  const uint64_t target = opt.has_target_time ? kRestoreLatest : opt.target_txid;
  TW_RETURN_IF_ERROR(r.ForEach(
      [&](const TxnInfo& t) {
        if (t.txid > target || (opt.has_target_time && t.commit_us > opt.target_time_us))
          return false;
        point = t.txid;
        point_us = t.commit_us;
        return true;
      },
      nullptr).Prefix("segment " + last.key));
  plan->coarse = true;
  plan->txid_min = plan->txid_max = point;
  plan->point_commit_us = point_us;
  return Status::OK();
}

// ---- restore -------------------------------------------------------------------

namespace {

// How many pages one transaction may add to the database without carrying
// them (they read as zeros). SQLite never writes the lock-byte page (the page
// holding byte offset 2^30; File Format section 1.3), so a transaction that
// crosses 1 GiB legitimately leaves one hole; anything far beyond that is a
// damaged or hostile object, refused before memory or time is spent on it.
constexpr uint64_t kMaxUnwrittenGrowth = 64;

// The database being rebuilt: the output file plus its running checksum.
class Rebuild {
 public:
  Rebuild(int fd, std::string path, uint32_t page_size)
      : fd_(fd), path_(std::move(path)), page_size_(page_size), sum_(page_size) {}

  // Starts a transaction (for the growth bound).
  void BeginTxn() { unwritten_ = 0; }

  Status WritePage(uint32_t pgno, const uint8_t* page) {
    if (pgno > sum_.pages()) TW_RETURN_IF_ERROR(Grow(pgno - 1));
    TW_RETURN_IF_ERROR(
        PwriteAll(fd_, page, page_size_, static_cast<uint64_t>(pgno - 1) * page_size_, path_));
    sum_.SetPage(pgno, page);
    return Status::OK();
  }
  // Sets the database size (file and checksum) to `pages` pages.
  Status Resize(uint32_t pages) {
    if (pages > sum_.pages()) TW_RETURN_IF_ERROR(Grow(pages));
    if (::ftruncate(fd_, static_cast<off_t>(static_cast<uint64_t>(pages) * page_size_)) != 0)
      return Status::IOError(Errno("truncate", path_));
    sum_.Resize(pages);
    return Status::OK();
  }
  uint64_t checksum() const { return sum_.value(); }
  uint32_t pages() const { return sum_.pages(); }
  uint32_t page_size() const { return page_size_; }

 private:
  // Adds zero pages up to `pages`, within kMaxUnwrittenGrowth per txn.
  Status Grow(uint32_t pages) {
    unwritten_ += pages - sum_.pages();
    if (unwritten_ > kMaxUnwrittenGrowth)
      return Status::Corruption("transaction grows the database by " + std::to_string(unwritten_) +
                                " pages it does not contain");
    sum_.Resize(pages);
    return Status::OK();
  }

  uint64_t unwritten_ = 0;
  int fd_;
  std::string path_;
  uint32_t page_size_;
  DbChecksum sum_;
};

// Applies one verified-on-open segment, stopping before the first
// transaction for which `stop_before` is true; updates *good_txid/*commit_us
// as transactions complete and reports each verified state to `on_state`.
// *wrote is set once any page of the file was changed.
Status ApplySegment(SegmentReader* reader, const std::function<bool(const TxnInfo&)>& stop_before,
                    Rebuild* db, uint64_t* good_txid, int64_t* commit_us, bool* stopped_early,
                    bool* wrote, const std::function<void(uint64_t, uint64_t)>& on_state) {
  Status err;
  bool have_txn = false;
  TxnInfo cur;
  auto finish_txn = [&]() -> bool {
    if (!have_txn) return true;
    have_txn = false;
    err = db->Resize(cur.db_pages_after);
    if (!err.ok()) return false;
    if (db->checksum() != cur.checksum_after) {
      err = Status::Corruption("txn " + std::to_string(cur.txid) +
                               ": database checksum mismatch after applying");
      return false;
    }
    *good_txid = cur.txid;
    *commit_us = cur.commit_us;
    if (on_state) on_state(cur.txid, cur.checksum_after);
    return true;
  };
  bool stopped = false;
  Status s = reader->ForEach(
      [&](const TxnInfo& t) {
        if (!finish_txn()) return false;
        if (stop_before(t)) {
          stopped = true;
          return false;
        }
        cur = t;
        have_txn = true;
        db->BeginTxn();
        // Shrink first (pages beyond db_pages_after are gone); growth happens
        // as pages arrive and at the end of the transaction.
        if (t.db_pages_after < db->pages()) {
          *wrote = true;
          err = db->Resize(t.db_pages_after);
        }
        return err.ok();
      },
      [&](uint32_t pgno, const uint8_t* page) {
        *wrote = true;
        err = db->WritePage(pgno, page);
        return err.ok();
      });
  *stopped_early = stopped;
  TW_RETURN_IF_ERROR(s);
  TW_RETURN_IF_ERROR(err);
  if (!stopped && !finish_txn()) return err;
  return Status::OK();
}

// Downloads a list of objects with `parallelism` threads, in order, at most
// `parallelism` objects ahead of the consumer. Item 0 may go to a file.
class Prefetcher {
 public:
  struct Item {
    std::string key;
    std::string file;  // non-empty: GetToFile into this path; else into memory
  };
  Prefetcher(ObjectStore* store, std::vector<Item> items, int parallelism)
      : store_(store), items_(std::move(items)), slots_(items_.size()) {
    window_ = static_cast<size_t>(std::clamp(parallelism, 1, 64));
    size_t n = std::min(window_, items_.size());
    for (size_t i = 0; i < n; i++) threads_.emplace_back([this] { Work(); });
  }
  ~Prefetcher() {
    {
      std::lock_guard<std::mutex> l(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }
  // Waits for item i (taken in order) and moves its bytes out.
  Status Take(size_t i, std::string* data) {
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait(l, [&] { return slots_[i].done; });
    *data = std::move(slots_[i].data);
    consumed_ = i + 1;
    cv_.notify_all();
    return slots_[i].status;
  }

 private:
  struct Slot {
    bool done = false;
    Status status;
    std::string data;
  };
  void Work() {
    while (true) {
      size_t j;
      {
        std::unique_lock<std::mutex> l(mu_);
        cv_.wait(l, [&] { return stop_ || next_ >= items_.size() || next_ < consumed_ + window_; });
        if (stop_ || next_ >= items_.size()) return;
        j = next_++;
      }
      Status s;
      std::string data;
      try {
        if (!items_[j].file.empty()) s = store_->GetToFile(items_[j].key, items_[j].file);
        else s = store_->Get(items_[j].key, &data);
      } catch (const std::bad_alloc&) {
        s = Status::NoSpace("out of memory");
      }
      {
        std::lock_guard<std::mutex> l(mu_);
        slots_[j].status = s;
        slots_[j].data = std::move(data);
        slots_[j].done = true;
      }
      cv_.notify_all();
    }
  }

  ObjectStore* store_;
  std::vector<Item> items_;
  std::vector<Slot> slots_;
  size_t window_ = 1;
  std::mutex mu_;
  std::condition_variable cv_;
  size_t next_ = 0, consumed_ = 0;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

// A failure while applying: whether pages of the failing object were written.
struct ApplyFailure {
  Status status;
  std::string key;
  bool wrote = false;
};

Status RestoreImpl(ObjectStore* store, const RestoreOptions& opt, RestoreResult* result,
                   bool* vanished);

// Writes `plan` into the open temp file; on a failure inside a segment sets
// *failure (and returns OK) so the caller can decide about --partial.
Status ApplyPlan(ObjectStore* store, const RestoreOptions& opt, const RestorePlan& plan,
                 TempFiles* tmp, const std::string& db_tmp, const std::string& snap_tmp,
                 std::unique_ptr<Rebuild>* rebuild, uint64_t* good_out, int64_t* commit_out,
                 ApplyFailure* failure, RestoreResult* result, bool* vanished) {
  const uint64_t target = opt.has_target_time ? kRestoreLatest : plan.txid_max;
  auto stop_before = [&](const TxnInfo& t) {
    if (t.txid > target) return true;
    return opt.has_target_time && t.commit_us > opt.target_time_us;
  };
  std::vector<Prefetcher::Item> items;
  items.push_back({plan.snapshot.key, snap_tmp});
  for (const auto& s : plan.segments) items.push_back({s.key, ""});
  Prefetcher fetch(store, items, opt.parallelism);
  RestoreProgress prog;
  prog.objects_total = items.size();
  prog.bytes_total = plan.bytes;

  // The snapshot.
  const std::string& skey = plan.snapshot.key;
  std::string unused;
  {
    Status ts = fetch.Take(0, &unused);
    if (ts.IsNotFound()) *vanished = true;
    TW_RETURN_IF_ERROR(ts.Prefix("get " + skey));
  }
  result->objects_read++;
  result->keys_read.push_back(skey);
  struct stat st;
  if (::stat(snap_tmp.c_str(), &st) == 0) result->bytes_read += static_cast<uint64_t>(st.st_size);
  SnapshotReader sr;
  TW_RETURN_IF_ERROR(sr.Open(snap_tmp).Prefix("snapshot " + skey));
  const SnapshotHeader& sh = sr.header();
  if (sh.tenant != opt.tenant || sh.db != opt.db || sh.generation != plan.generation ||
      sh.txid != plan.snapshot.min_txid)
    return Status::Corruption("snapshot " + skey + ": header (" + sh.tenant + "/" + sh.db +
                              " generation " + sh.generation + " txid " + std::to_string(sh.txid) +
                              ") does not match its key");
  if (opt.has_target_time && sh.commit_us > opt.target_time_us)
    return Status::Corruption("snapshot " + skey + ": commit time " + TimeText(sh.commit_us) +
                              " is after " + TimeText(opt.target_time_us) +
                              " (the object changed while restoring?)");
  *rebuild = std::make_unique<Rebuild>(tmp->fd, db_tmp, sh.page_size);
  Rebuild& db = **rebuild;
  db.BeginTxn();
  Status werr;
  Status s = sr.ForEach([&](uint32_t pgno, const uint8_t* page) {
    werr = db.WritePage(pgno, page);
    return werr.ok();
  });
  if (s.ok()) s = werr;
  if (s.ok()) s = db.Resize(sh.db_pages);
  if (s.ok() && db.checksum() != sh.checksum)
    s = Status::Corruption("database checksum mismatch after applying");
  TW_RETURN_IF_ERROR(s.Prefix("snapshot " + skey));
  ::unlink(snap_tmp.c_str());
  uint64_t good = sh.txid;
  int64_t commit_us = sh.commit_us;
  if (opt.on_state) opt.on_state(good, db.checksum());
  result->snapshot_txid = sh.txid;
  result->page_size = sh.page_size;
  prog.objects_done = 1;
  prog.bytes_done = plan.snapshot.size;
  prog.txid = good;
  if (opt.progress) opt.progress(prog);

  // The segments.
  for (size_t i = 0; i < plan.segments.size(); i++) {
    const CatalogObject& seg = plan.segments[i];
    std::string ctx = "segment " + seg.key + " (last good txid " + std::to_string(good) + ")";
    auto fail = [&](Status st, bool wrote) {
      failure->status = st;
      failure->key = seg.key;
      failure->wrote = wrote;
      *good_out = good;
      *commit_out = commit_us;
      return Status::OK();
    };
    std::string bytes;
    Status gs = fetch.Take(i + 1, &bytes);
    if (gs.IsNotFound()) *vanished = true;
    if (!gs.ok()) return fail(gs.Prefix("get " + seg.key + " (last good txid " +
                                        std::to_string(good) + ")"), false);
    result->objects_read++;
    result->keys_read.push_back(seg.key);
    result->bytes_read += bytes.size();
    SegmentReader r;
    Status os = r.Open(bytes);
    if (!os.ok()) return fail(os.Prefix(ctx), false);
    const SegmentHeader& h = r.header();
    if (h.tenant != opt.tenant || h.db != opt.db || h.generation != plan.generation ||
        h.min_txid != seg.min_txid || h.max_txid != seg.max_txid)
      return fail(Status::Corruption(ctx + ": header (" + h.tenant + "/" + h.db + " generation " +
                                     h.generation + " txids " + std::to_string(h.min_txid) + "-" +
                                     std::to_string(h.max_txid) + ") does not match its key"),
                  false);
    if (h.page_size != sh.page_size)
      return fail(Status::Corruption(ctx + ": page size " + std::to_string(h.page_size) +
                                     " differs from the snapshot's " +
                                     std::to_string(sh.page_size)),
                  false);
    if (h.checksum_before != db.checksum())
      return fail(Status::Corruption(ctx + ": checksum_before does not match the database " +
                                     "(history diverged)"),
                  false);
    bool stopped = false, wrote = false;
    Status as = ApplySegment(&r, stop_before, &db, &good, &commit_us, &stopped, &wrote,
                             opt.on_state);
    if (!as.ok()) return fail(as.Prefix(ctx), wrote);
    if (h.points) {
      // Coarse restore points: the state reached is a point, at or before
      // the target (exact when the target is itself a point).
      if (stopped && (opt.has_target_time || good < target)) {
        result->coarse = true;
        result->point_level = h.level;
      }
    }
    result->segments++;
    prog.objects_done++;
    prog.bytes_done += seg.size;
    prog.txid = good;
    if (opt.progress) opt.progress(prog);
    if (stopped) break;
  }
  *good_out = good;
  *commit_out = commit_us;
  return Status::OK();
}

Status RestoreImpl(ObjectStore* store, const RestoreOptions& opt, RestoreResult* result,
                   bool* vanished) {
  TW_RETURN_IF_ERROR(CheckNames(opt));
  const std::string& out = opt.output_path;
  if (out.empty() || out.back() == '/') return Status::InvalidArgument("invalid output path");
  struct stat st;
  if (!opt.overwrite && ::lstat(out.c_str(), &st) == 0)
    return Status::InvalidArgument(out + " already exists (use --force to replace it)");
  // A -wal or -journal left next to the output would be replayed into the
  // restored file by the next opener: a silently different database.
  for (const char* sfx : {"-wal", "-journal"}) {
    if (!opt.overwrite && ::lstat((out + sfx).c_str(), &st) == 0)
      return Status::InvalidArgument(out + sfx + " exists and would be applied to the restored "
                                     "database (remove it, or use --force to replace it)");
  }
  mode_t out_mode = 0644;
  if (::stat(out.c_str(), &st) == 0) {
    out_mode = st.st_mode & 07777;
  } else {
    mode_t um = ::umask(0);
    ::umask(um);
    out_mode = 0666 & ~um;
  }

  RestorePlan plan;
  TW_RETURN_IF_ERROR(PlanRestore(store, opt, &plan));
  result->generation = plan.generation;
  result->warnings = plan.warnings;
  result->header_reads = plan.headers_read.size();
  result->partial = plan.partial;
  if (plan.coarse) {
    result->coarse = true;
    result->point_level = plan.coarse_level;
  }

  TempFiles tmp;
  std::string db_tmp, snap_tmp;
  TW_RETURN_IF_ERROR(MakeTemp(out + ".tmp-XXXXXX", &db_tmp, &tmp.fd));
  tmp.paths.push_back(db_tmp);
  {
    int sfd = -1;
    TW_RETURN_IF_ERROR(MakeTemp(out + ".snap-XXXXXX", &snap_tmp, &sfd));
    ::close(sfd);
    tmp.paths.push_back(snap_tmp);
  }

  std::unique_ptr<Rebuild> rebuild;
  uint64_t good = 0;
  int64_t commit_us = 0;
  ApplyFailure failure;
  TW_RETURN_IF_ERROR(ApplyPlan(store, opt, plan, &tmp, db_tmp, snap_tmp, &rebuild, &good,
                               &commit_us, &failure, result, vanished));
  if (!failure.status.ok() && *vanished) return failure.status;  // Restore() plans again
  if (!failure.status.ok()) {
    if (!opt.partial) return failure.status;
    std::string warn = "stopped at " + failure.key + ": " + failure.status.ToString() +
                       "; restoring txid " + std::to_string(good) + " (--partial)";
    if (failure.wrote) {
      // The failing transaction left pages behind: redo the restore up to
      // the last good txid, exactly.
      RestoreOptions again = opt;
      again.has_target_time = false;
      again.target_txid = good;
      again.generation = plan.generation;
      again.partial = false;
      again.on_state = nullptr;
      RestoreResult r2;
      rebuild.reset();
      tmp.Reset();  // close and remove this attempt's files first
      bool vanished2 = false;
      Status s2 = RestoreImpl(store, again, &r2, &vanished2);
      if (!s2.ok()) return s2.Prefix("--partial: restoring txid " + std::to_string(good));
      std::vector<std::string> warnings = result->warnings;
      warnings.push_back(warn);
      uint64_t objects = result->objects_read + r2.objects_read;
      uint64_t bytes = result->bytes_read + r2.bytes_read;
      std::vector<std::string> keys = result->keys_read;
      keys.insert(keys.end(), r2.keys_read.begin(), r2.keys_read.end());
      *result = r2;
      result->warnings = warnings;
      result->objects_read = objects;
      result->bytes_read = bytes;
      result->keys_read = keys;
      result->partial = true;
      result->failed_object = failure.key;
      return Status::OK();
    }
    result->warnings.push_back(warn);
    result->partial = true;
    result->failed_object = failure.key;
  }
  Rebuild& db = *rebuild;
  if (!opt.has_target_time && opt.target_txid != kRestoreLatest && good != opt.target_txid &&
      !opt.partial && !result->coarse)
    return Status::NotFound("txid " + std::to_string(opt.target_txid) +
                            " was not found: last good txid is " + std::to_string(good));
  if (!opt.has_target_time && opt.target_txid != kRestoreLatest && good < opt.target_txid &&
      opt.partial)
    result->partial = true;

  // Page 1: sanity-check, then switch to rollback-journal mode (bytes 18-19).
  if (db.pages() > 0) {
    uint8_t hdr[100];
    ssize_t n = ::pread(tmp.fd, hdr, sizeof(hdr), 0);
    if (n != static_cast<ssize_t>(sizeof(hdr)))
      return Status::IOError(Errno("read", db_tmp));
    if (std::memcmp(hdr, "SQLite format 3", 16) != 0)
      return Status::Corruption("restored page 1 is not a SQLite database header (txid " +
                                std::to_string(good) + ")");
    uint32_t ps = (static_cast<uint32_t>(hdr[16]) << 8) | hdr[17];
    if (ps == 1) ps = 65536;
    if (ps != db.page_size())
      return Status::Corruption("restored database header says page size " + std::to_string(ps) +
                                ", the replica " + std::to_string(db.page_size()));
    const uint8_t legacy[2] = {1, 1};
    TW_RETURN_IF_ERROR(PwriteAll(tmp.fd, legacy, 2, 18, db_tmp));
  }
  if (::fsync(tmp.fd) != 0) return Status::IOError(Errno("fsync", db_tmp));
  ::close(tmp.fd);
  tmp.fd = -1;
  if (opt.integrity_check && db.pages() > 0) TW_RETURN_IF_ERROR(IntegrityCheck(db_tmp));

  ::chmod(db_tmp.c_str(), out_mode);  // like a file the user created (temp files are 0600)
  // Move into place: link() refuses to replace an existing file atomically.
  if (opt.overwrite) {
    // The old database's -wal/-shm/-journal belong to the old file: drop them
    // first, or the next opener would replay them into the restored one.
    for (const char* sfx : {"-wal", "-shm", "-journal"}) {
      if (::unlink((out + sfx).c_str()) != 0 && errno != ENOENT)
        return Status::IOError(Errno("remove stale", out + sfx));
    }
    if (::rename(db_tmp.c_str(), out.c_str()) != 0)
      return Status::IOError(Errno("rename to", out));
  } else {
    if (::link(db_tmp.c_str(), out.c_str()) != 0) {
      if (errno == EEXIST)
        return Status::InvalidArgument(out + " already exists (use --force to replace it)");
      return Status::IOError(Errno("link to", out));
    }
    ::unlink(db_tmp.c_str());
  }
  tmp.paths.clear();
  int dfd = ::open(DirOf(out).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  result->txid = good;
  result->commit_us = commit_us;
  result->pages = db.pages();
  result->checksum = db.checksum();
  return Status::OK();
}

}  // namespace

Status Restore(ObjectStore* store, const RestoreOptions& options, RestoreResult* result) {
  *result = RestoreResult();
  try {
    // Retention and compaction delete objects only after a grace delay
    // (docs/OPERATIONS.md), so a plan rarely names a deleted object; when it
    // does, the restore lists and plans again (twice at most). Every attempt
    // writes only its own temporary file: nothing half-done is kept.
    for (uint64_t attempt = 0;; attempt++) {
      bool vanished = false;
      Status s = RestoreImpl(store, options, result, &vanished);
      if (s.ok() || !vanished || attempt >= 2) {
        if (!s.ok() && vanished)
          s = s.Prefix("an object disappeared while restoring (retention or compaction ran; "
                       "tried " + std::to_string(attempt + 1) + " plans)");
        result->replans = attempt;
        return s;
      }
      *result = RestoreResult();
    }
  } catch (const std::bad_alloc&) {
    return Status::NoSpace("restore: out of memory");
  } catch (const std::exception& e) {
    return Status::IOError(std::string("restore: ") + e.what());
  }
}

// ---- restore windows ------------------------------------------------------------

Status DescribeRestoreWindows(ObjectStore* store, const CatalogDatabase& cat,
                              std::vector<RestoreWindow>* out) {
  out->clear();
  for (const CatalogGeneration& g : cat.generations) {
    RestoreWindow w;
    w.generation = g.id;
    w.snapshots = g.snapshots.size();
    w.segments = g.segments.size();
    for (const auto& o : g.snapshots) w.bytes += o.size;
    for (const auto& o : g.segments) w.bytes += o.size;
    if (g.snapshots.empty()) {
      w.problems.push_back("no snapshot: " + Txt(g.segments.size()) +
                           " segment(s) cannot be restored");
      w.unreachable_segments = g.segments.size();
      out->push_back(std::move(w));
      continue;
    }
    // Earliest: the oldest snapshot whose header reads.
    for (const CatalogObject& s : g.snapshots) {
      SnapshotHeader h;
      Status st = ReadSnapshotHeaderOf(store, cat.tenant, cat.db, g.id, s, &h);
      if (!st.ok()) {
        if (st.code() == Status::kUnavailable || st.code() == Status::kPermission) return st;
        w.problems.push_back(s.key + ": " + st.ToString());
        continue;
      }
      w.restorable = true;
      w.earliest_txid = h.txid;
      w.earliest_us = h.commit_us;
      break;
    }
    if (!w.restorable) {
      out->push_back(std::move(w));
      continue;
    }
    // Latest: the end of the longest chain.
    const CatalogObject* best = nullptr;
    std::vector<const CatalogObject*> best_chain;
    uint64_t best_end = 0;
    for (const CatalogObject& s : g.snapshots) {
      std::vector<const CatalogObject*> c = ChainFrom(g, s.min_txid, kRestoreLatest);
      uint64_t end = ChainEnd(s, c);
      if (best == nullptr || end >= best_end) {
        best = &s;
        best_chain = std::move(c);
        best_end = end;
      }
    }
    w.latest_txid = best_end;
    Status st;
    if (best_chain.empty()) {
      SnapshotHeader h;
      st = ReadSnapshotHeaderOf(store, cat.tenant, cat.db, g.id, *best, &h);
      if (st.ok()) w.latest_us = h.commit_us;
    } else {
      SegmentHeader h;
      st = ReadSegmentHeaderOf(store, cat.tenant, cat.db, g.id, *best_chain.back(), &h);
      if (st.ok()) w.latest_us = h.last_commit_us;
    }
    if (!st.ok()) {
      if (st.code() == Status::kUnavailable || st.code() == Status::kPermission) return st;
      w.problems.push_back(st.ToString());
    }
    for (const CatalogObject& s : g.segments)
      if (s.max_txid > best_end) w.unreachable_segments++;
    if (w.unreachable_segments > 0) {
      w.gap_after_txid = best_end;
      w.problems.push_back("gap after txid " + Txt(best_end) + ": " +
                           Txt(w.unreachable_segments) + " segment(s) unreachable, first " +
                           FirstBeyond(g, best_end)->key);
    }
    out->push_back(std::move(w));
  }
  return Status::OK();
}

// ---- verify ---------------------------------------------------------------------

namespace {

std::string TmpRoot(const std::string& dir) {
  if (!dir.empty()) return dir;
  const char* t = getenv("TMPDIR");
  return (t != nullptr && *t != '\0') ? t : "/tmp";
}

class Verifier {
 public:
  Verifier(ObjectStore* store, const VerifyOptions& opt, VerifyReport* rep)
      : store_(store), opt_(opt), rep_(rep) {}

  Status Run() {
    std::vector<ObjectInfo> objects;
    TW_RETURN_IF_ERROR(store_->List(DbPrefix(opt_.tenant, opt_.db), &objects).Prefix("list"));
    size_t ignored = 0;
    std::vector<CatalogDatabase> all = BuildCatalog(objects, &ignored);
    rep_->ignored_keys = ignored;
    CatalogDatabase cat;
    for (auto& d : all)
      if (d.tenant == opt_.tenant && d.db == opt_.db) cat = std::move(d);
    if (cat.generations.empty()) {
      Problem("", "no replica of " + opt_.tenant + "/" + opt_.db + " (no snapshots or segments)");
      return Status::OK();
    }
    std::string tmpl = TmpRoot(opt_.tmpdir) + "/tenantwal-verify-XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    if (mkdtemp(buf.data()) == nullptr) return Status::IOError(Errno("mkdtemp", tmpl));
    dir_ = buf.data();
    Status s;
    for (const CatalogGeneration& g : cat.generations) {
      s = Generation(cat, g);
      if (!s.ok()) break;
    }
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
    return s;
  }

 private:
  void Problem(const std::string& key, const std::string& msg) {
    rep_->problems.push_back({key, msg});
  }
  void Checked(const std::string& key, bool ok) {
    if (opt_.on_object) opt_.on_object(key, ok);
  }
  // Local or store-wide failures stop the whole run.
  static bool Fatal(const Status& s) {
    return s.code() == Status::kIOError || s.code() == Status::kNoSpace ||
           s.code() == Status::kPermission || s.code() == Status::kUnavailable;
  }

  // Downloads a snapshot, checks it against its key, decodes it (verifying
  // its DbChecksum) and, with `db`, writes its pages there. *problem is set
  // for damage; the Status is only for fatal errors.
  Status CheckSnapshot(const CatalogDatabase& cat, const CatalogGeneration& g,
                       const CatalogObject& o, Rebuild* db, SnapshotHeader* hdr, bool* ok) {
    *ok = false;
    std::string path = dir_ + "/snap";
    Status s = store_->GetToFile(o.key, path);
    if (!s.ok()) {
      if (Fatal(s) && s.code() != Status::kIOError) return s.Prefix("get " + o.key);
      if (s.IsNotFound()) vanished_++;
      Problem(o.key, "cannot be read: " + s.ToString());
      Checked(o.key, false);
      return Status::OK();
    }
    struct stat st;
    if (::stat(path.c_str(), &st) == 0) rep_->bytes += static_cast<uint64_t>(st.st_size);
    rep_->snapshots++;
    SnapshotReader r;
    s = r.Open(path);
    const SnapshotHeader& h = r.header();
    if (s.ok() && (h.tenant != cat.tenant || h.db != cat.db || h.generation != g.id ||
                   h.txid != o.min_txid))
      s = Status::Corruption("header (" + h.tenant + "/" + h.db + " generation " + h.generation +
                             " txid " + Txt(h.txid) + ") does not match its key");
    if (s.ok() && db != nullptr && h.page_size != db->page_size())
      s = Status::Corruption("page size differs");
    Status werr;
    if (s.ok()) {
      if (db != nullptr) db->BeginTxn();
      s = r.ForEach([&](uint32_t pgno, const uint8_t* page) {
        if (db != nullptr) werr = db->WritePage(pgno, page);
        return werr.ok();
      });
      if (s.ok()) s = werr;
      if (s.ok() && db != nullptr) s = db->Resize(h.db_pages);
      if (s.ok() && db != nullptr && db->checksum() != h.checksum)
        s = Status::Corruption("database checksum mismatch after applying");
    }
    ::unlink(path.c_str());
    if (!s.ok()) {
      if (s.code() == Status::kIOError || s.code() == Status::kNoSpace) {
        // The snapshot file itself is local: an IOError reading it is local,
        // but SnapshotReader reports some decode failures as Corruption.
        return s.Prefix("snapshot " + o.key);
      }
      Problem(o.key, s.ToString());
      Checked(o.key, false);
      return Status::OK();
    }
    *hdr = h;
    *ok = true;
    Checked(o.key, true);
    return Status::OK();
  }

  Status Generation(const CatalogDatabase& cat, const CatalogGeneration& g) {
    rep_->generations++;
    std::map<uint64_t, uint64_t> sums;     // txid -> DbChecksum on some chain
    std::set<std::string> done;            // objects fully checked
    std::set<std::string> damaged;
    uint64_t txns_before = rep_->txns;
    uint64_t first_txid = UINT64_MAX, last_txid = 0;
    if (g.snapshots.empty()) {
      Problem(g.segments.front().key, "generation " + g.id + " has " + Txt(g.segments.size()) +
                                          " segment(s) but no snapshot: they cannot be restored");
    }
    // Phase A: chains, from the oldest snapshot, restarting at the next
    // snapshot beyond wherever a chain breaks.
    uint64_t reach = 0;
    bool have_reach = false;
    std::vector<uint64_t> chain_ends;  // where chains stopped for want of a next segment
    for (const CatalogObject& snap : g.snapshots) {
      if (have_reach && snap.min_txid <= reach) continue;  // checked against the chain later
      std::string db_path = dir_ + "/rebuild.db";
      int fd = ::open(db_path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
      if (fd < 0) return Status::IOError(Errno("create", db_path));
      TempFiles tf;
      tf.fd = fd;
      tf.paths.push_back(db_path);
      // Page size comes from the snapshot header: decode it first with a
      // throwaway header read.
      SnapshotHeader peek;
      {
        std::string head;
        Status hs = store_->GetRange(snap.key, 0, kSnapshotHeaderSize, &head);
        if (hs.ok()) hs = ParseSnapshotHeader(head, &peek);
        if (!hs.ok()) {
          if (Fatal(hs) && hs.code() != Status::kIOError) return hs.Prefix("get " + snap.key);
          Problem(snap.key, hs.ToString());
          damaged.insert(snap.key);
          done.insert(snap.key);
          Checked(snap.key, false);
          continue;
        }
      }
      Rebuild db(fd, db_path, peek.page_size);
      SnapshotHeader h;
      bool ok = false;
      TW_RETURN_IF_ERROR(CheckSnapshot(cat, g, snap, &db, &h, &ok));
      done.insert(snap.key);
      if (!ok) {
        damaged.insert(snap.key);
        continue;
      }
      uint64_t cur = h.txid;
      sums[cur] = h.checksum;
      first_txid = std::min(first_txid, cur);
      std::vector<const CatalogObject*> chain = ChainFrom(g, cur, kRestoreLatest);
      std::vector<Prefetcher::Item> items;
      for (const CatalogObject* c : chain) items.push_back({c->key, ""});
      Prefetcher fetch(store_, items, opt_.parallelism);
      bool broken = false;
      for (size_t i = 0; i < chain.size(); i++) {
        const CatalogObject& seg = *chain[i];
        std::string bytes;
        Status s = fetch.Take(i, &bytes);
        done.insert(seg.key);
        std::string ctx = "(last good txid " + Txt(cur) + ")";
        if (!s.ok()) {
          if (Fatal(s) && s.code() != Status::kIOError) return s.Prefix("get " + seg.key);
          if (s.IsNotFound()) vanished_++;
          Problem(seg.key, "cannot be read " + ctx + ": " + s.ToString());
          damaged.insert(seg.key);
          Checked(seg.key, false);
          broken = true;
          break;
        }
        rep_->bytes += bytes.size();
        rep_->segments++;
        SegmentReader r;
        s = r.Open(bytes);
        if (s.ok()) {
          const SegmentHeader& sh = r.header();
          if (sh.tenant != cat.tenant || sh.db != cat.db || sh.generation != g.id ||
              sh.min_txid != seg.min_txid || sh.max_txid != seg.max_txid)
            s = Status::Corruption("header does not match its key");
          else if (sh.page_size != db.page_size())
            s = Status::Corruption("page size " + Txt(sh.page_size) + " differs from the snapshot's");
          else if (sh.checksum_before != db.checksum())
            s = Status::Corruption("checksum_before does not match the chain (history diverged)");
        }
        if (s.ok()) {
          bool stopped = false, wrote = false;
          int64_t commit_us = 0;
          uint64_t good = cur;
          s = ApplySegment(
              &r, [](const TxnInfo&) { return false; }, &db, &good, &commit_us, &stopped, &wrote,
              [&](uint64_t txid, uint64_t sum) {
                sums[txid] = sum;
                rep_->txns++;
              });
          cur = good;
        }
        if (!s.ok()) {
          if (s.code() == Status::kIOError || s.code() == Status::kNoSpace)
            return s.Prefix("segment " + seg.key);
          Problem(seg.key, s.ToString() + " " + ctx);
          damaged.insert(seg.key);
          Checked(seg.key, false);
          broken = true;
          break;
        }
        Checked(seg.key, true);
      }
      if (!broken) chain_ends.push_back(cur);
      reach = have_reach ? std::max(reach, cur) : cur;
      have_reach = true;
      last_txid = std::max(last_txid, cur);
    }
    // Gaps: a chain that ran out of segments while later ones exist that no
    // chain reached.
    for (uint64_t end : chain_ends) {
      const CatalogObject* beyond = FirstBeyond(g, end);
      if (beyond != nullptr && !done.count(beyond->key))
        Problem(beyond->key, "gap: no segment starts at txid " + Txt(end + 1) +
                                 ", so this segment (txids " + Txt(beyond->min_txid) + "-" +
                                 Txt(beyond->max_txid) + ") and later ones are unreachable");
    }
    // Phase B: the other snapshots, each compared with the chain.
    for (const CatalogObject& snap : g.snapshots) {
      if (done.count(snap.key)) continue;
      SnapshotHeader h;
      bool ok = false;
      TW_RETURN_IF_ERROR(CheckSnapshot(cat, g, snap, nullptr, &h, &ok));
      done.insert(snap.key);
      if (!ok) continue;
      auto it = sums.find(h.txid);
      if (it != sums.end() && it->second != h.checksum)
        Problem(snap.key, "DbChecksum differs from the segment chain's at txid " + Txt(h.txid));
    }
    // Phase C: segments no chain applied, decoded on their own and compared
    // with the chain where they overlap.
    std::vector<const CatalogObject*> rest;
    for (const CatalogObject& seg : g.segments)
      if (!done.count(seg.key)) rest.push_back(&seg);
    std::vector<Prefetcher::Item> items;
    for (const CatalogObject* c : rest) items.push_back({c->key, ""});
    Prefetcher fetch(store_, items, opt_.parallelism);
    for (size_t i = 0; i < rest.size(); i++) {
      const CatalogObject& seg = *rest[i];
      std::string bytes;
      Status s = fetch.Take(i, &bytes);
      if (!s.ok()) {
        if (Fatal(s) && s.code() != Status::kIOError) return s.Prefix("get " + seg.key);
        if (s.IsNotFound()) vanished_++;
        Problem(seg.key, "cannot be read: " + s.ToString());
        Checked(seg.key, false);
        continue;
      }
      rep_->bytes += bytes.size();
      rep_->segments++;
      SegmentReader r;
      s = r.Open(bytes);
      std::string mismatch;
      if (s.ok()) {
        const SegmentHeader& sh = r.header();
        if (sh.tenant != cat.tenant || sh.db != cat.db || sh.generation != g.id ||
            sh.min_txid != seg.min_txid || sh.max_txid != seg.max_txid)
          s = Status::Corruption("header does not match its key");
        auto it = sums.find(seg.min_txid - 1);
        if (s.ok() && it != sums.end() && it->second != sh.checksum_before)
          mismatch = "checksum_before differs from the chain's at txid " + Txt(seg.min_txid - 1);
      }
      if (s.ok()) {
        s = r.ForEach(
            [&](const TxnInfo& t) {
              auto it = sums.find(t.txid);
              if (mismatch.empty() && it != sums.end() && it->second != t.checksum_after)
                mismatch = "txn " + Txt(t.txid) + ": checksum_after differs from the chain's";
              return true;
            },
            [](uint32_t, const uint8_t*) { return true; });
      }
      if (s.ok() && !mismatch.empty()) s = Status::Corruption(mismatch);
      if (!s.ok()) {
        Problem(seg.key, s.ToString());
        Checked(seg.key, false);
        continue;
      }
      Checked(seg.key, true);
    }
    std::string note = "generation " + g.id + ": " + Txt(g.snapshots.size()) + " snapshot(s), " +
                       Txt(g.segments.size()) + " segment(s)";
    if (first_txid != UINT64_MAX)
      note += ", chain txids " + Txt(first_txid) + "-" + Txt(last_txid) + " (" +
              Txt(rep_->txns - txns_before) + " transactions applied and checked)";
    rep_->notes.push_back(note);
    return Status::OK();
  }

  ObjectStore* store_;
  const VerifyOptions& opt_;
  VerifyReport* rep_;
  std::string dir_;

 public:
  // Listed objects that were gone when read (deleted by retention or
  // compaction meanwhile).
  uint64_t vanished_ = 0;
};

// Runs `fn` on a read-only connection to `path` inside one read transaction.
Status WithReadTxn(const std::string& path, const std::function<Status(sqlite3*)>& fn) {
  sqlite3* db = nullptr;
  std::string uri = "file:" + path + "?mode=ro";
  // Escape characters that are special in a URI path.
  std::string esc;
  for (char c : path) {
    if (c == '?' || c == '#' || c == '%') {
      char b[4];
      std::snprintf(b, sizeof(b), "%%%02X", static_cast<unsigned char>(c));
      esc += b;
    } else {
      esc += c;
    }
  }
  uri = "file:" + esc + "?mode=ro";
  int rc = sqlite3_open_v2(uri.c_str(), &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    sqlite3_close(db);
    return Status::IOError("open " + path + ": " + msg);
  }
  sqlite3_busy_timeout(db, 10000);
  Status s;
  char* err = nullptr;
  if (sqlite3_exec(db, "BEGIN; SELECT count(*) FROM sqlite_schema", nullptr, nullptr, &err) !=
      SQLITE_OK) {
    s = Status::IOError("read " + path + ": " + (err ? err : "?"));
    sqlite3_free(err);
  } else {
    s = fn(db);
    sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr);
  }
  sqlite3_close(db);
  return s;
}

// Hashes one value with its type.
uint64_t HashValue(sqlite3_stmt* st, int col, uint64_t crc) {
  int type = sqlite3_column_type(st, col);
  uint8_t t = static_cast<uint8_t>(type);
  crc = Crc64(&t, 1, crc);
  switch (type) {
    case SQLITE_INTEGER: {
      int64_t v = sqlite3_column_int64(st, col);
      return Crc64(&v, sizeof(v), crc);
    }
    case SQLITE_FLOAT: {
      double v = sqlite3_column_double(st, col);
      return Crc64(&v, sizeof(v), crc);
    }
    case SQLITE_TEXT:
    case SQLITE_BLOB: {
      const void* p = type == SQLITE_TEXT ? static_cast<const void*>(sqlite3_column_text(st, col))
                                          : sqlite3_column_blob(st, col);
      uint64_t n = static_cast<uint64_t>(sqlite3_column_bytes(st, col));
      crc = Crc64(&n, sizeof(n), crc);
      return p != nullptr ? Crc64(p, n, crc) : crc;
    }
    default:
      return crc;
  }
}

std::string QuoteIdent(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

Status ContentHashOpen(sqlite3* db, uint64_t* hash,
                       std::map<std::string, std::pair<uint64_t, uint64_t>>* tables) {
  uint64_t crc = 0;
  std::vector<std::string> names;
  {
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db,
                           "SELECT type, name, tbl_name, sql FROM sqlite_schema "
                           "ORDER BY type, name",
                           -1, &st, nullptr) != SQLITE_OK)
      return Status::Corruption(std::string("schema: ") + sqlite3_errmsg(db));
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
      for (int c = 0; c < 4; c++) crc = HashValue(st, c, crc);
      std::string type = reinterpret_cast<const char*>(sqlite3_column_text(st, 0));
      std::string name = reinterpret_cast<const char*>(sqlite3_column_text(st, 1));
      const unsigned char* sql = sqlite3_column_text(st, 3);
      std::string sqls = sql ? reinterpret_cast<const char*>(sql) : "";
      if (type == "table" && sqls.rfind("CREATE VIRTUAL", 0) != 0) names.push_back(name);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) return Status::Corruption(std::string("schema: ") + sqlite3_errmsg(db));
  }
  for (const std::string& name : names) {
    std::string q = "SELECT * FROM " + QuoteIdent(name) + " ORDER BY rowid";
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db, q.c_str(), -1, &st, nullptr) != SQLITE_OK) {
      // WITHOUT ROWID tables: their natural order is the primary key.
      q = "SELECT * FROM " + QuoteIdent(name);
      if (sqlite3_prepare_v2(db, q.c_str(), -1, &st, nullptr) != SQLITE_OK)
        return Status::Corruption("table " + name + ": " + sqlite3_errmsg(db));
    }
    uint64_t rows = 0, tcrc = 0;
    int rc;
    int cols = sqlite3_column_count(st);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
      rows++;
      for (int c = 0; c < cols; c++) tcrc = HashValue(st, c, tcrc);
    }
    std::string msg = sqlite3_errmsg(db);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) return Status::Corruption("table " + name + ": " + msg);
    if (tables != nullptr) (*tables)[name] = {rows, tcrc};
    crc = Crc64(name.data(), name.size(), crc);
    crc = Crc64(&rows, sizeof(rows), crc);
    crc = Crc64(&tcrc, sizeof(tcrc), crc);
  }
  *hash = crc;
  return Status::OK();
}

}  // namespace

Status VerifyReplica(ObjectStore* store, const VerifyOptions& options, VerifyReport* report) {
  *report = VerifyReport();
  if (!ValidName(options.tenant)) return Status::InvalidArgument("invalid tenant name");
  if (!ValidName(options.db)) return Status::InvalidArgument("invalid database name");
  try {
    // Objects listed but gone when read were deleted meanwhile (retention,
    // compaction): list and check again, twice at most.
    for (int attempt = 0;; attempt++) {
      Verifier v(store, options, report);
      Status s = v.Run();
      if (!s.ok() || v.vanished_ == 0 || attempt >= 2) {
        if (attempt > 0)
          report->notes.push_back("listed again " + std::to_string(attempt) +
                                  " time(s): objects were deleted while verifying (retention "
                                  "or compaction)");
        return s;
      }
      *report = VerifyReport();
    }
  } catch (const std::bad_alloc&) {
    return Status::NoSpace("verify: out of memory");
  } catch (const std::exception& e) {
    return Status::IOError(std::string("verify: ") + e.what());
  }
}

Status ContentHash(const std::string& path, uint64_t* hash,
                   std::map<std::string, std::pair<uint64_t, uint64_t>>* tables) {
  return WithReadTxn(path, [&](sqlite3* db) { return ContentHashOpen(db, hash, tables); });
}

Status CompareWithLive(ObjectStore* store, const VerifyOptions& options,
                       const std::string& live_path, LiveComparison* out) {
  *out = LiveComparison();
  if (!ValidName(options.tenant)) return Status::InvalidArgument("invalid tenant name");
  if (!ValidName(options.db)) return Status::InvalidArgument("invalid database name");
  struct stat st;
  if (::stat(live_path.c_str(), &st) != 0) return Status::InvalidArgument(Errno("", live_path));

  // LIVE: page images and content hash in one read transaction.
  std::map<std::string, std::pair<uint64_t, uint64_t>> live_tables;
  Status s = WithReadTxn(live_path, [&](sqlite3* db) -> Status {
    sqlite3_int64 size = 0;
    unsigned char* image = sqlite3_serialize(db, "main", &size, 0);
    if (image == nullptr && size != 0)
      return Status::NoSpace("sqlite3_serialize " + live_path + ": out of memory");
    int page_size = 0;
    {
      sqlite3_stmt* q = nullptr;
      if (sqlite3_prepare_v2(db, "PRAGMA page_size", -1, &q, nullptr) == SQLITE_OK &&
          sqlite3_step(q) == SQLITE_ROW)
        page_size = sqlite3_column_int(q, 0);
      sqlite3_finalize(q);
    }
    if (!ValidPageSize(static_cast<uint32_t>(page_size))) {
      sqlite3_free(image);
      return Status::Corruption(live_path + ": page size " + std::to_string(page_size));
    }
    out->live_checksum =
        DbChecksumOf(image, static_cast<size_t>(size), static_cast<uint32_t>(page_size));
    out->live_pages = static_cast<uint32_t>(static_cast<uint64_t>(size) / page_size);
    sqlite3_free(image);
    return ContentHashOpen(db, &out->live_content, &live_tables);
  });
  TW_RETURN_IF_ERROR(s.Prefix("live database"));

  // The replica's latest state, with the checksum after every transaction.
  std::string tmpl = TmpRoot(options.tmpdir) + "/tenantwal-verify-XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (mkdtemp(buf.data()) == nullptr) return Status::IOError(Errno("mkdtemp", tmpl));
  std::string dir = buf.data();
  struct Cleanup {
    std::string d;
    ~Cleanup() {
      std::error_code ec;
      std::filesystem::remove_all(d, ec);
    }
  } cleanup{dir};
  std::unordered_map<uint64_t, uint64_t> txid_of;  // DbChecksum -> last txid with it
  RestoreOptions ro;
  ro.tenant = options.tenant;
  ro.db = options.db;
  ro.output_path = dir + "/restored.db";
  ro.parallelism = options.parallelism;
  ro.on_state = [&](uint64_t txid, uint64_t sum) { txid_of[sum] = txid; };
  RestoreResult rr;
  TW_RETURN_IF_ERROR(Restore(store, ro, &rr).Prefix("restore"));
  out->generation = rr.generation;
  out->replica_txid = rr.txid;
  out->replica_checksum = rr.checksum;
  out->replica_pages = rr.pages;
  std::map<std::string, std::pair<uint64_t, uint64_t>> rep_tables;
  TW_RETURN_IF_ERROR(
      ContentHash(ro.output_path, &out->replica_content, &rep_tables).Prefix("restored copy"));

  auto diff_tables = [&] {
    for (const auto& [name, v] : live_tables) {
      auto it = rep_tables.find(name);
      if (it == rep_tables.end())
        out->table_diffs.push_back(name + ": only in LIVE (" + Txt(v.first) + " rows)");
      else if (it->second != v)
        out->table_diffs.push_back(name + ": LIVE " + Txt(v.first) + " rows, replica " +
                                   Txt(it->second.first) + " rows, contents differ");
    }
    for (const auto& [name, v] : rep_tables)
      if (!live_tables.count(name))
        out->table_diffs.push_back(name + ": only in the replica (" + Txt(v.first) + " rows)");
  };
  if (out->live_checksum == rr.checksum) {
    out->state = LiveComparison::kEqual;
    out->matched_txid = rr.txid;
    if (out->live_content != out->replica_content) diff_tables();
    return Status::OK();
  }
  auto it = txid_of.find(out->live_checksum);
  if (it != txid_of.end()) {
    out->state = LiveComparison::kLiveBehind;
    out->matched_txid = it->second;
    return Status::OK();
  }
  out->state = LiveComparison::kNoMatch;
  diff_tables();
  return Status::OK();
}

}  // namespace tw
