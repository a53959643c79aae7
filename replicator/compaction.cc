// tenantwald: scheduled snapshots, compaction by level and retention
// (design: compaction.h; format: docs/FORMAT.md "Compaction").
#include "compaction.h"

#include <set>

#include "duration.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>

#include <atomic>
#include <tuple>

#include "log.h"

namespace twd {

using tw::Status;

namespace {

int64_t FloorDiv(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

}  // namespace

bool ParseLongDuration(const std::string& s, int64_t* us) {
  return ParseDurationIn(s, 1000, 3650 * 86400000000LL, us);  // duration.h
}

// ---- planning ------------------------------------------------------------------

std::vector<CompactionStep> PlanCompaction(const std::vector<IndexedObject>& segs,
                                           const std::set<uint64_t>& snaps, int64_t now,
                                           const MaintenanceOptions& o,
                                           std::vector<size_t>* superseded) {
  std::vector<CompactionStep> steps;
  superseded->clear();
  // The chain: objects not covered by a wider one. Sorted by (min, max), a
  // covering object either comes earlier (smaller min: the running maximum
  // of max_txid reaches this max) or is the next one (same min, larger max).
  std::vector<size_t> live;
  uint64_t reach = 0;
  for (size_t i = 0; i < segs.size(); i++) {
    const IndexedObject& a = segs[i];
    bool covered = (i > 0 && reach >= a.max_txid) ||
                   (i + 1 < segs.size() && segs[i + 1].min_txid == a.min_txid);
    reach = std::max(reach, a.max_txid);
    if (covered) superseded->push_back(i);
    else live.push_back(i);
  }
  auto closed = [&](int64_t bucket, int64_t span) {
    return now >= (bucket + 1) * span + o.settle_us;
  };
  auto coarse = [&](int64_t bucket, int64_t span) {
    return (bucket + 1) * span < now - o.exact_window_us;
  };
  // Runs of contiguous live objects satisfying `fits`, in the same bucket.
  auto runs = [&](auto fits, int64_t span, std::vector<bool>& used, uint32_t level,
                  bool allow_single) {
    size_t k = 0;
    while (k < live.size()) {
      const IndexedObject& a = segs[live[k]];
      if (used[k] || !fits(a)) {
        k++;
        continue;
      }
      int64_t bucket = FloorDiv(a.last_us, span);
      if (!closed(bucket, span)) {
        k++;
        continue;
      }
      size_t end = k + 1;
      while (end < live.size()) {
        const IndexedObject& p = segs[live[end - 1]];
        const IndexedObject& n = segs[live[end]];
        if (used[end] || !fits(n) || n.min_txid != p.max_txid + 1 || snaps.count(p.max_txid) ||
            FloorDiv(n.last_us, span) != bucket)
          break;
        end++;
      }
      bool any_lower = false;
      for (size_t x = k; x < end; x++) any_lower |= segs[live[x]].level < level;
      if ((end - k >= 2 || (allow_single && any_lower))) {
        CompactionStep st;
        st.level = level;
        st.points = coarse(bucket, span);
        for (size_t x = k; x < end; x++) {
          st.sources.push_back(live[x]);
          used[x] = true;
          st.points |= segs[live[x]].points;
        }
        steps.push_back(std::move(st));
      }
      k = end;
    }
  };
  std::vector<bool> used(live.size(), false);
  // L2 first (closed hours), then L1 (closed minutes of open hours).
  runs([&](const IndexedObject& x) { return x.level <= 1 || (x.level == 2 && !x.points); },
       o.l2_span_us, used, 2, true);
  runs([&](const IndexedObject& x) {
         return x.level == 0 && !closed(FloorDiv(x.last_us, o.l2_span_us), o.l2_span_us);
       },
       o.l1_span_us, used, 1, false);
  // Exact L2 objects that aged out of the exact window: rewrite coarse.
  for (size_t k = 0; k < live.size(); k++) {
    const IndexedObject& a = segs[live[k]];
    if (used[k] || a.level != 2 || a.points) continue;
    if (!coarse(FloorDiv(a.last_us, o.l2_span_us), o.l2_span_us)) continue;
    CompactionStep st;
    st.level = 2;
    st.points = true;
    st.sources.push_back(live[k]);
    used[k] = true;
    steps.push_back(std::move(st));
  }
  // A lone level-2 object without lower ones is not merged again, unless
  // it is being coarsened (handled above): drop no-op steps.
  std::vector<CompactionStep> out;
  for (auto& st : steps) {
    if (st.sources.size() == 1) {
      const IndexedObject& a = segs[st.sources[0]];
      if (a.level == st.level && a.points == st.points) continue;
    }
    out.push_back(std::move(st));
  }
  return out;
}

std::vector<std::string> PlanRetention(const IndexedDb& db, int64_t now, int64_t retention_us,
                                       const std::vector<std::string>* lineage) {
  std::vector<std::string> del;
  const int64_t cutoff = now - retention_us;
  // Generations oldest first: the lineage's order when there is one
  // (orphans, not in it, before everything), else id order.
  std::vector<std::string> order, orphans;
  if (lineage) {
    std::set<std::string> in(lineage->begin(), lineage->end());
    for (const auto& [gen, g] : db) {
      if (!in.count(gen)) orphans.push_back(gen);
    }
    for (const std::string& gen : *lineage) {
      if (db.count(gen)) order.push_back(gen);
    }
  } else {
    for (const auto& [gen, g] : db) order.push_back(gen);
  }
  // An orphan is deleted once all of it is older than the cutoff: no
  // restore without --generation reads it, and it is kept as long as the
  // window lasts for one that does.
  for (const std::string& gen : orphans) {
    const IndexedGeneration& g = db.at(gen);
    bool old = true;
    for (const auto& o : g.snapshots) old &= o.last_us <= cutoff;
    for (const auto& o : g.segments) old &= o.last_us <= cutoff;
    if (!old) continue;
    for (const auto& o : g.snapshots) del.push_back(o.key);
    for (const auto& o : g.segments) del.push_back(o.key);
  }
  // The (generation, snapshot) a restore to the cutoff instant would use.
  size_t gstar = order.size();
  const IndexedObject* sstar = nullptr;
  for (size_t i = order.size(); i-- > 0 && sstar == nullptr;) {
    const IndexedGeneration& g = db.at(order[i]);
    for (auto s = g.snapshots.rbegin(); s != g.snapshots.rend(); ++s) {
      if (s->first_us <= cutoff) {
        sstar = &*s;
        gstar = i;
        break;
      }
    }
  }
  if (sstar == nullptr) return del;
  for (size_t i = 0; i < gstar; ++i) {
    const IndexedGeneration& g = db.at(order[i]);
    for (const auto& o : g.snapshots) del.push_back(o.key);
    for (const auto& o : g.segments) del.push_back(o.key);
  }
  const IndexedGeneration& g = db.at(order[gstar]);
  for (const auto& o : g.snapshots)
    if (o.max_txid < sstar->max_txid) del.push_back(o.key);
  for (const auto& o : g.segments)
    if (o.max_txid <= sstar->max_txid) del.push_back(o.key);
  return del;
}

// ---- merging --------------------------------------------------------------------

Status MergeSegments(tw::ObjectStore* store, const std::string& spool_dir,
                     const std::string& tenant, const std::string& db,
                     const std::string& generation, const std::vector<IndexedObject>& sources,
                     uint32_t level, bool points, int64_t point_span_us, uint32_t pages_before,
                     int zstd_level, uint64_t point_max_bytes, IndexedObject* out) {
  if (sources.empty()) return Status::InvalidArgument("merge: no sources");
  bool src_points = false;
  for (const auto& s : sources) src_points |= s.points;
  // Coarse points need the size before the first source (the shrink rule
  // below); without it only an exact merge is possible, and coarse sources
  // cannot be merged at all.
  if (pages_before == 0) {
    if (src_points) return Status::Aborted("merge: database size before " + sources[0].key +
                                           " unknown");
    points = false;
  }
  points |= src_points;
  static std::atomic<uint64_t> seq{0};
  const std::string path = spool_dir + "/merge-" + std::to_string(getpid()) + "-" +
                           std::to_string(++seq) + ".twseg.tmp";
  tw::SegmentWriter w;
  bool opened = false;
  uint32_t page_size = 0;
  uint64_t prev_after = 0;
  tw::WalPosition wal;
  int64_t first_us = 0;
  bool have_first = false;
  // Coarse state: newest page versions since the previous point.
  std::map<uint32_t, std::string> pages;
  uint64_t page_bytes = 0;
  uint32_t size_now = pages_before;  // database size after the last txn seen
  uint32_t min_size = pages_before;  // smallest size since the previous point
  bool have_cur = false;
  tw::TxnInfo cur;
  Status err;

  auto emit_point = [&]() -> Status {
    tw::TxnInfo t = cur;
    std::vector<uint32_t> pgnos;
    for (auto& [pg, _] : pages)
      if (pg <= t.db_pages_after) pgnos.push_back(pg);
    // Pages that a shrink dropped and a later growth brought back without
    // writing them read as zeros: carry them explicitly.
    std::vector<uint32_t> zeros;
    for (uint32_t pg = min_size + 1; pg <= t.db_pages_after; pg++)
      if (!pages.count(pg)) zeros.push_back(pg);
    std::vector<uint32_t> all = pgnos;
    all.insert(all.end(), zeros.begin(), zeros.end());
    std::sort(all.begin(), all.end());
    t.page_count = uint32_t(all.size());
    TW_RETURN_IF_ERROR(w.BeginTxn(t));
    std::string zero(page_size, '\0');
    for (uint32_t pg : all) {
      auto it = pages.find(pg);
      const std::string& data = it != pages.end() ? it->second : zero;
      TW_RETURN_IF_ERROR(w.AddPage(pg, reinterpret_cast<const uint8_t*>(data.data())));
    }
    pages.clear();
    page_bytes = 0;
    min_size = t.db_pages_after;
    if (!have_first) {
      first_us = t.commit_us;
      have_first = true;
    }
    return Status::OK();
  };

  for (size_t i = 0; i < sources.size() && err.ok(); i++) {
    const IndexedObject& src = sources[i];
    std::string bytes;
    err = store->Get(src.key, &bytes).Prefix("get " + src.key);
    if (!err.ok()) break;
    tw::SegmentReader r;
    err = r.Open(bytes).Prefix("segment " + src.key);
    if (!err.ok()) break;
    const tw::SegmentHeader& h = r.header();
    if (h.tenant != tenant || h.db != db || h.generation != generation ||
        h.min_txid != src.min_txid || h.max_txid != src.max_txid) {
      err = Status::Corruption("segment " + src.key + ": header does not match its key");
      break;
    }
    if (i == 0) {
      page_size = h.page_size;
      tw::SegmentHeader oh;
      oh.tenant = tenant;
      oh.db = db;
      oh.generation = generation;
      oh.page_size = h.page_size;
      oh.min_txid = h.min_txid;
      oh.checksum_before = h.checksum_before;
      oh.level = level;
      oh.points = points;
      err = w.Open(path, oh, zstd_level);
      if (!err.ok()) break;
      opened = true;
    } else {
      if (h.page_size != page_size || h.min_txid != sources[i - 1].max_txid + 1 ||
          h.checksum_before != prev_after) {
        err = Status::Corruption("segment " + src.key +
                                 ": does not continue the previous source (page size, txid or "
                                 "checksum_before)");
        break;
      }
    }
    prev_after = h.checksum_after;
    wal = h.wal_after;
    if (!points) {
      Status rs = r.ForEach(
          [&](const tw::TxnInfo& t) {
            if (!have_first) {
              first_us = t.commit_us;
              have_first = true;
            }
            err = w.BeginTxn(t);
            return err.ok();
          },
          [&](uint32_t pgno, const uint8_t* page) {
            err = w.AddPage(pgno, page);
            return err.ok();
          });
      if (err.ok() && !rs.ok()) err = rs.Prefix("segment " + src.key);
      continue;
    }
    Status ws;
    Status rs = r.ForEach(
        [&](const tw::TxnInfo& t) {
          if (have_cur) {
            bool boundary = FloorDiv(cur.commit_us, point_span_us) !=
                                FloorDiv(t.commit_us, point_span_us) ||
                            page_bytes > point_max_bytes;
            if (boundary) ws = emit_point();
            if (!ws.ok()) return false;
          }
          // This transaction's size applies before its pages are recorded.
          if (t.db_pages_after < size_now) {
            for (auto it = pages.upper_bound(t.db_pages_after); it != pages.end();) {
              page_bytes -= it->second.size();
              it = pages.erase(it);
            }
          }
          size_now = t.db_pages_after;
          min_size = std::min(min_size, size_now);
          cur = t;
          have_cur = true;
          return true;
        },
        [&](uint32_t pgno, const uint8_t* page) {
          auto& slot = pages[pgno];
          if (slot.empty()) page_bytes += page_size;
          slot.assign(reinterpret_cast<const char*>(page), page_size);
          return true;
        });
    if (!ws.ok()) err = ws;
    else if (!rs.ok()) err = rs.Prefix("segment " + src.key);
  }
  if (err.ok() && points && have_cur) err = emit_point();
  uint64_t bytes = 0;
  if (err.ok()) err = w.Finish(wal, true, &bytes);
  if (!err.ok()) {
    if (opened) w.Abandon();
    ::unlink(path.c_str());
    return err;
  }
  out->key = tw::SegmentKey(tenant, db, generation, sources.front().min_txid,
                            sources.back().max_txid);
  out->snapshot = false;
  out->min_txid = sources.front().min_txid;
  out->max_txid = sources.back().max_txid;
  out->first_us = first_us;
  out->last_us = sources.back().last_us;
  out->size = bytes;
  out->db_pages = sources.back().db_pages;
  out->level = level;
  out->points = points;
  Status ps = store->PutFile(out->key, path,
                             {{"tenantwal-min-txid", std::to_string(out->min_txid)},
                              {"tenantwal-max-txid", std::to_string(out->max_txid)},
                              {"tenantwal-commit-us", std::to_string(out->last_us)},
                              {"tenantwal-level", std::to_string(level)}});
  ::unlink(path.c_str());
  return ps.Prefix("upload " + out->key);
}

// ---- index ------------------------------------------------------------------------

Status LoadIndex(tw::ObjectStore* store, const std::string& tenant, const std::string& db,
                 const IndexedDb* known, IndexedDb* out) {
  out->clear();
  std::vector<tw::ObjectInfo> objects;
  TW_RETURN_IF_ERROR(store->List(tw::DbPrefix(tenant, db), &objects).Prefix("list"));
  std::map<std::string, IndexedObject> prior;
  if (known != nullptr)
    for (const auto& [g, gi] : *known) {
      for (const auto& o : gi.snapshots) prior[o.key] = o;
      for (const auto& o : gi.segments) prior[o.key] = o;
    }
  for (const auto& oi : objects) {
    tw::ParsedKey k;
    if (!tw::ParseKey(oi.key, &k) || k.tenant != tenant || k.db != db) continue;
    IndexedObject o;
    auto it = prior.find(oi.key);
    if (it != prior.end()) {
      o = it->second;
    } else {
      std::string head;
      Status s = store->GetRange(oi.key, 0, tw::kSegmentHeaderSize, &head);
      if (!s.ok()) {
        if (s.IsNotFound()) continue;
        return s.Prefix("get " + oi.key);
      }
      o.key = oi.key;
      o.min_txid = k.min_txid;
      o.max_txid = k.max_txid;
      o.size = oi.size;
      if (k.kind == tw::ParsedKey::kSnapshot) {
        tw::SnapshotHeader h;
        if (!tw::ParseSnapshotHeader(head, &h).ok() || h.txid != k.min_txid) {
          Log(Level::kWarn, "maintenance: unreadable snapshot header", {{"key", oi.key}});
          continue;
        }
        o.snapshot = true;
        o.first_us = o.last_us = h.commit_us;
        o.db_pages = h.db_pages;
      } else {
        tw::SegmentHeader h;
        if (!tw::ParseSegmentHeader(head, &h).ok() || h.min_txid != k.min_txid ||
            h.max_txid != k.max_txid) {
          Log(Level::kWarn, "maintenance: unreadable segment header", {{"key", oi.key}});
          continue;
        }
        o.first_us = h.first_commit_us;
        o.last_us = h.last_commit_us;
        o.db_pages = h.db_pages_after;
        o.level = h.level;
        o.points = h.points;
      }
    }
    auto& g = (*out)[k.generation];
    (o.snapshot ? g.snapshots : g.segments).push_back(o);
  }
  auto order = [](const IndexedObject& a, const IndexedObject& b) {
    return std::tie(a.min_txid, a.max_txid) < std::tie(b.min_txid, b.max_txid);
  };
  for (auto& [g, gi] : *out) {
    std::sort(gi.snapshots.begin(), gi.snapshots.end(), order);
    std::sort(gi.segments.begin(), gi.segments.end(), order);
  }
  return Status::OK();
}

}  // namespace twd
