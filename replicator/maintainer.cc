// tenantwald: the maintenance thread (design: compaction.h).
#include "maintainer.h"

#include "store/authority.h"

#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <tuple>

#include "log.h"
#include "replicator.h"
#include "walring/ring.h"

namespace twd {

using tw::Status;

// ---- the maintenance thread ------------------------------------------------------

Maintainer::Maintainer(Replicator* rep, std::string spool_dir,
                       MaintenanceOptions o, int zstd_level)
    : rep_(rep), spool_(std::move(spool_dir)), opts_(o), zstd_level_(zstd_level) {}

Maintainer::~Maintainer() { Stop(); }

void Maintainer::Start() {
  stop_ = false;
  thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "tw-maintain");
    Loop();
  });
}

void Maintainer::Stop() {
  {
    std::lock_guard<std::mutex> lk(mu_);  // not between Loop's check and its wait
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

namespace {
void InsertSorted(std::vector<IndexedObject>* v, const IndexedObject& o) {
  auto it = std::lower_bound(v->begin(), v->end(), o, [](const IndexedObject& a,
                                                        const IndexedObject& b) {
    return std::tie(a.min_txid, a.max_txid) < std::tie(b.min_txid, b.max_txid);
  });
  if (it != v->end() && it->key == o.key) *it = o;
  else v->insert(it, o);
}
}  // namespace

void Maintainer::OnSegmentUploaded(const std::string& tenant, const std::string& db,
                                   const std::string& generation, const IndexedObject& seg) {
  std::lock_guard<std::mutex> lk(mu_);
  auto& d = dbs_[tenant + "/" + db];
  if (!d) {
    d = std::make_shared<DbState>();
    d->tenant = tenant;
    d->db = db;
    d->last_snapshot_us = tw::ring::NowMicros();
  }
  d->generation = generation;
  InsertSorted(&d->index[generation].segments, seg);
  d->bytes_since_snapshot += seg.size;
  d->changed_since_snapshot = true;
  d->active_since_retention = true;
  d->compaction_pending = true;
  work_.insert(tenant + "/" + db);
}

void Maintainer::OnSnapshotUploaded(const std::string& tenant, const std::string& db,
                                    const std::string& generation, const IndexedObject& snap,
                                    uint64_t db_bytes) {
  std::lock_guard<std::mutex> lk(mu_);
  auto& d = dbs_[tenant + "/" + db];
  if (!d) {
    d = std::make_shared<DbState>();
    d->tenant = tenant;
    d->db = db;
  }
  d->generation = generation;
  InsertSorted(&d->index[generation].snapshots, snap);
  d->last_snapshot_us = tw::ring::NowMicros();
  d->bytes_since_snapshot = 0;
  d->db_bytes = db_bytes;
  d->changed_since_snapshot = false;
  d->snapshot_requested = false;
  d->active_since_retention = true;
  work_.insert(tenant + "/" + db);
}

void Maintainer::OnScheduledSnapshotDone(const std::string& tenant, const std::string& db) {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = dbs_.find(tenant + "/" + db);
  if (it != dbs_.end()) it->second->snapshot_requested = false;
}

void Maintainer::QueueDelete(const std::shared_ptr<tw::ObjectStore>& store, const std::string& key,
                             int64_t now) {
  if (queued_.insert(key).second) deletes_.push_back({store, key, now + opts_.delete_grace_us});
}

void Maintainer::RunDeletes(int64_t now, bool all) {
  std::vector<PendingDelete> due;
  {
    std::lock_guard<std::mutex> lk(mu_);
    auto it = std::stable_partition(deletes_.begin(), deletes_.end(), [&](const PendingDelete& p) {
      return !(all || p.due_us <= now);
    });
    for (auto x = it; x != deletes_.end(); ++x) due.push_back(*x);
    deletes_.erase(it, deletes_.end());
  }
  for (const auto& pd : due) {
    const std::string& k = pd.key;
    Status s = pd.store->Delete(k);
    std::lock_guard<std::mutex> lk(mu_);
    if (s.ok()) {
      ++stats_.deleted;
      queued_.erase(k);
    } else {
      ++stats_.failures;
      deletes_.push_back({pd.store, k, now + 10 * 1000000});  // try again later
      Log(Level::kWarn, "maintenance: delete failed; will retry",
          {{"key", k}, {"error", s.ToString()}});
    }
  }
}

void Maintainer::Loop() {
  int64_t shortest = opts_.l1_span_us;
  if (opts_.snapshot_interval_us > 0) shortest = std::min(shortest, opts_.snapshot_interval_us);
  const int64_t tick_us = std::clamp<int64_t>(shortest / 4, 50000, 1000000);
  // Compaction planning (CPU only) for a database at most this often.
  compact_every_us_ = std::clamp<int64_t>(opts_.l1_span_us / 4, 50000, 15000000);
  while (!stop_) {
    {
      // One wakeup per tick (the settings version is polled), none between.
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait_for(lk, std::chrono::microseconds(tick_us), [&] { return stop_.load(); });
    }
    if (stop_) break;
    const int64_t now = tw::ring::NowMicros();
    // Only databases with something to do (Maintain acts on nothing else):
    // work_ holds those changed since their snapshot, not listed yet,
    // uploaded since the last retention pass, or possibly compactable (the
    // hooks add them, a visit that leaves none of these drops them). All of
    // them when the tenant settings changed (a new replica target must be
    // noticed). An idle host with 50,000 databases then visits none of them,
    // and a tick costs O(databases with work), not O(databases).
    const uint64_t settings = rep_->tenants()->version();
    const bool settings_changed = settings != settings_seen_;
    settings_seen_ = settings;
    std::vector<std::string> ids;
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (settings_changed) {
        ids.reserve(dbs_.size());
        for (auto& kv : dbs_) ids.push_back(kv.first);
      } else {
        ids.assign(work_.begin(), work_.end());
      }
    }
    for (const auto& id : ids) {
      if (stop_) break;
      Maintain(id, now);
      std::lock_guard<std::mutex> lk(mu_);
      const DbState& d = *dbs_[id];
      if (d.changed_since_snapshot || !d.listed || d.active_since_retention ||
          d.compaction_pending)
        work_.insert(id);
      else
        work_.erase(id);
    }
    RunDeletes(tw::ring::NowMicros(), false);
  }
}

void Maintainer::Maintain(const std::string& id, int64_t now) {
  std::shared_ptr<DbState> d;
  {
    std::lock_guard<std::mutex> lk(mu_);
    d = dbs_[id];
  }
  std::string tenant = d->tenant, db = d->db;
  {
    // The tenant's replica target changed (config, PATCH): what we know is
    // of the old one; list the new one before compacting or deleting. The
    // old target keeps its objects (docs/OPERATIONS.md).
    std::shared_ptr<tw::ObjectStore> cur = rep_->tenants()->Store(tenant, nullptr);
    std::lock_guard<std::mutex> lk(mu_);
    if (d->store != cur) {
      if (d->store) {
        d->index.clear();
        d->listed = false;
        d->last_retention_us = 0;
      }
      d->store = cur;
    }
  }
  // Scheduled snapshots: only a database that changed since its last one.
  bool want_snapshot = false;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (d->changed_since_snapshot && !d->snapshot_requested) {
      const int64_t interval = rep_->SnapshotIntervalUs(d->tenant);
      // The size trigger waits at least min(interval, 1 min) after the last
      // snapshot, so a small, busy database is not snapshotted every tick.
      const int64_t since = now - d->last_snapshot_us;
      want_snapshot = interval > 0 &&
                      (since >= interval ||
                       (d->db_bytes > 0 && d->bytes_since_snapshot > d->db_bytes &&
                        since >= std::min<int64_t>(interval, 60 * 1000000LL)));
    }
  }
  if (want_snapshot && rep_->RequestScheduledSnapshot(tenant, db)) {
    std::lock_guard<std::mutex> lk(mu_);
    d->snapshot_requested = true;
    ++stats_.scheduled_snapshots;
  }
  // The first pass after start lists the replica (the retention pass does
  // it); later ones at most every --retention-check-interval, and only for a
  // database that uploaded something since.
  bool retain = false;
  {
    std::lock_guard<std::mutex> lk(mu_);
    retain = (!d->listed && now - d->last_retention_us >= 30 * 1000000LL) ||
             (d->listed && d->active_since_retention &&
                            now - d->last_retention_us >= opts_.retention_check_us);
  }
  if (retain) Retain(id, now);
  bool compact;
  {
    std::lock_guard<std::mutex> lk(mu_);
    compact = d->listed && opts_.compaction && d->compaction_pending &&
              now >= d->next_compact_us;
    if (compact) d->next_compact_us = now + compact_every_us_;
  }
  if (compact) Compact(id, now);
}

void Maintainer::Compact(const std::string& id, int64_t now) {
  std::shared_ptr<DbState> d;
  IndexedDb copy;
  {
    std::lock_guard<std::mutex> lk(mu_);
    d = dbs_[id];
    copy = d->index;
  }
  bool any_left = false;
  for (auto& [gen, g] : copy) {
    std::set<uint64_t> snaps;
    for (const auto& s : g.snapshots) snaps.insert(s.max_txid);
    std::vector<size_t> superseded;
    std::vector<CompactionStep> steps = PlanCompaction(g.segments, snaps, now, opts_, &superseded);
    if (!superseded.empty()) {
      // Left over from a merge (e.g. before a crash): delete, and forget them.
      std::lock_guard<std::mutex> lk(mu_);
      auto& segs = d->index[gen].segments;
      for (size_t i : superseded) {
        const std::string key = g.segments[i].key;
        QueueDelete(d->store, key, now);
        segs.erase(std::remove_if(segs.begin(), segs.end(),
                                  [&](const IndexedObject& o) { return o.key == key; }),
                   segs.end());
      }
    }
    // Anything that may become compactable later keeps the database on the list.
    for (const auto& s : g.segments)
      if (s.level < 2 || !s.points) any_left = true;
    for (const CompactionStep& st : steps) {
      if (stop_) return;
      std::vector<IndexedObject> srcs;
      for (size_t i : st.sources) srcs.push_back(g.segments[i]);
      // The database size before the first source: the object ending right before it.
      uint32_t pages_before = 0;
      const uint64_t before = srcs.front().min_txid - 1;
      for (const auto& s : g.segments)
        if (s.max_txid == before) pages_before = s.db_pages;
      for (const auto& s : g.snapshots)
        if (s.max_txid == before) pages_before = s.db_pages;
      IndexedObject merged;
      Status s = MergeSegments(d->store.get(), spool_, d->tenant, d->db, gen, srcs, st.level, st.points,
                               opts_.l1_span_us, pages_before, zstd_level_, opts_.point_max_bytes,
                               &merged);
      if (!s.ok()) {
        ++stats_.failures;
        Log(Level::kWarn, "compaction failed",
            {{"tenant", d->tenant}, {"db", d->db}, {"first", srcs.front().key},
             {"sources", srcs.size()}, {"error", s.ToString()}});
        continue;
      }
      ++stats_.merges;
      stats_.merged_sources += srcs.size();
      if (merged.points) ++stats_.coarsened;
      Log(Level::kDebug, "compacted",
          {{"tenant", d->tenant}, {"db", d->db}, {"key", merged.key}, {"level", merged.level},
           {"points", merged.points ? 1 : 0}, {"sources", srcs.size()}, {"bytes", merged.size}});
      std::lock_guard<std::mutex> lk(mu_);
      auto& segs = d->index[gen].segments;
      for (const auto& src : srcs) {
        if (src.key == merged.key) continue;  // rewritten in place
        segs.erase(std::remove_if(segs.begin(), segs.end(),
                                  [&](const IndexedObject& o) { return o.key == src.key; }),
                   segs.end());
        QueueDelete(d->store, src.key, now);
      }
      InsertSorted(&segs, merged);
    }
  }
  std::lock_guard<std::mutex> lk(mu_);
  d->compaction_pending = any_left;
}

void Maintainer::Retain(const std::string& id, int64_t now) {
  std::shared_ptr<DbState> d;
  IndexedDb known;
  {
    std::lock_guard<std::mutex> lk(mu_);
    d = dbs_[id];
    known = d->index;
  }
  IndexedDb fresh;
  Status s = LoadIndex(d->store.get(), d->tenant, d->db, &known, &fresh);
  if (!s.ok()) {
    ++stats_.failures;
    Log(Level::kWarn, "retention: cannot list the replica",
        {{"tenant", d->tenant}, {"db", d->db}, {"error", s.ToString()}});
    std::lock_guard<std::mutex> lk(mu_);
    d->last_retention_us = now;
    return;
  }
  // The authority's lineage orders the generations (never their ids: a
  // clock that stepped back, or a second host, makes ids lie). A corrupt
  // or unreadable authority stops this pass: nothing is deleted on doubt.
  std::vector<std::string> lineage;
  bool has_lineage = false;
  {
    tw::Authority a;
    Status as = tw::LoadAuthority(d->store.get(), d->tenant, d->db, &a, nullptr);
    if (as.ok()) {
      for (const auto& g : a.lineage) lineage.push_back(g.id);
      has_lineage = true;
    } else if (!as.IsNotFound()) {
      ++stats_.failures;
      Log(Level::kWarn, "retention: cannot read the authority; nothing deleted",
          {{"tenant", d->tenant}, {"db", d->db}, {"error", as.ToString()}});
      std::lock_guard<std::mutex> lk(mu_);
      d->last_retention_us = now;
      return;
    }
  }
  const int64_t retention = rep_->RetentionUs(d->tenant);
  std::vector<std::string> del = PlanRetention(fresh, now, retention, has_lineage ? &lineage : nullptr);
  std::set<std::string> gone(del.begin(), del.end());
  std::lock_guard<std::mutex> lk(mu_);
  ++stats_.retention_passes;
  // Keep what hooks added since the listing; drop what is being deleted.
  for (auto& [g, gi] : d->index) {
    for (auto& o : gi.snapshots) InsertSorted(&fresh[g].snapshots, o);
    for (auto& o : gi.segments) InsertSorted(&fresh[g].segments, o);
  }
  for (auto& [g, gi] : fresh) {
    for (auto* v : {&gi.snapshots, &gi.segments})
      v->erase(std::remove_if(v->begin(), v->end(),
                              [&](const IndexedObject& o) { return gone.count(o.key) > 0; }),
               v->end());
  }
  for (auto it = fresh.begin(); it != fresh.end();) {
    if (it->second.snapshots.empty() && it->second.segments.empty()) it = fresh.erase(it);
    else ++it;
  }
  d->index = std::move(fresh);
  for (const auto& k : del) QueueDelete(d->store, k, now);
  if (!del.empty())
    Log(Level::kInfo, "retention: deleting expired objects",
        {{"tenant", d->tenant}, {"db", d->db}, {"objects", del.size()},
         {"graceMs", opts_.delete_grace_us / 1000}});
  d->last_retention_us = now;
  d->active_since_retention = false;
  d->compaction_pending = true;
  d->listed = true;
}

}  // namespace twd
