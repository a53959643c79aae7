// tenantwald: the maintenance thread: scheduled snapshots, compaction and
// retention for every replicated database (design: compaction.h, which also
// holds the planning and merging it runs).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "compaction.h"

namespace twd {

class Replicator;

// Counters, for /metrics and tests.
struct MaintenanceStats {
  std::atomic<uint64_t> merges{0}, merged_sources{0}, coarsened{0}, deleted{0},
      scheduled_snapshots{0}, retention_passes{0}, failures{0};
};

class Maintainer {
 public:
  // Works on each tenant's current replica target
  // (Replicator::tenants()->Store(tenant)).
  Maintainer(Replicator* rep, std::string spool_dir, MaintenanceOptions o, int zstd_level);
  ~Maintainer();
  void Start();
  void Stop();

  // Hooks (any thread).
  void OnSegmentUploaded(const std::string& tenant, const std::string& db,
                         const std::string& generation, const IndexedObject& seg);
  void OnSnapshotUploaded(const std::string& tenant, const std::string& db,
                          const std::string& generation, const IndexedObject& snap,
                          uint64_t db_bytes);
  // A scheduled snapshot request finished (taken or given up).
  void OnScheduledSnapshotDone(const std::string& tenant, const std::string& db);

  const MaintenanceStats& stats() const { return stats_; }
  const MaintenanceOptions& options() const { return opts_; }

 private:
  struct DbState {
    std::string tenant, db, generation;
    std::shared_ptr<tw::ObjectStore> store;  // the target `index` was built from
    IndexedDb index;
    bool listed = false;
    int64_t last_snapshot_us = 0;
    uint64_t bytes_since_snapshot = 0;
    uint64_t db_bytes = 0;  // database size at the last snapshot
    bool changed_since_snapshot = false;
    bool snapshot_requested = false;
    int64_t last_retention_us = 0;
    bool active_since_retention = true;
    bool compaction_pending = true;  // something may be compactable
    int64_t next_compact_us = 0;     // planning throttle
  };
  struct PendingDelete {
    std::shared_ptr<tw::ObjectStore> store;
    std::string key;
    int64_t due_us;
  };
  void Loop();
  void Maintain(const std::string& id, int64_t now);
  void Compact(const std::string& id, int64_t now);
  void Retain(const std::string& id, int64_t now);
  void RunDeletes(int64_t now, bool all);
  void QueueDelete(const std::shared_ptr<tw::ObjectStore>& store, const std::string& key,
                   int64_t now);

  Replicator* rep_;
  uint64_t settings_seen_ = ~0ull;  // TenantRegistry::version() at the last pass (Loop only)
  std::string spool_;
  MaintenanceOptions opts_;
  int zstd_level_;
  MaintenanceStats stats_;
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<DbState>> dbs_;  // "tenant/db"
  // Ids in dbs_ that may have something to do (see Loop); the rest are idle.
  std::set<std::string> work_;
  std::condition_variable cv_;  // Stop() wakes Loop's tick wait
  std::vector<PendingDelete> deletes_;
  std::set<std::string> queued_;
  std::atomic<bool> stop_{false};
  int64_t compact_every_us_ = 1000000;
  std::thread thread_;
};

}  // namespace twd
