// tenantwald: the replicator core.
//
// The path of one frame (docs/ARCHITECTURE.md):
//   ring record (kTxn chunks)      Consumer thread: ConsumeLoop -> OnTxnChunk
//   -> Db::pending (whole txns)    Flusher thread: every tick, SealLocked when
//                                  the sync interval elapsed or the batch is big
//   -> spool file (.twseg)         SegmentWriter, DbChecksum kept per page
//   -> S3 object                   Uploader threads: PutFile, then
//                                  replicated_txid is published to the slot
// Snapshots (first sight, or whenever continuity is in doubt) are taken by
// snapshot workers (snapshot.cc) without holding SQLite's write lock while
// copying; until a snapshot is durable, a database's transactions wait in
// memory (bounded) and are trimmed to those after the snapshot's txid.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "base/status.h"
#include "config.h"
#include "maintainer.h"
#include "metrics.h"
#include "spool.h"
#include "store/format.h"
#include "store/object_store.h"
#include "tenants.h"
#include "walring/ring.h"
#include "walring/wal.h"

namespace twd {

struct Options {
  std::string root;                 // --root
  std::string replica_url;          // --replica
  std::string api_addr;             // --api host:port ("" = off)
  std::string spool_dir;            // --spool (default {root}/.tenantwal/spool)
  std::string ring_name;            // --ring / TENANTWAL_RING
  std::string config_path;          // --config ("" = none)
  uint64_t spool_max_db_bytes = 256ull << 20;  // --spool-max-db-mb: sealed bytes per db
  int64_t sync_interval_us = 1000000;   // --sync-interval
  uint64_t segment_max_bytes = 16ull << 20;  // seal a batch at this size
  uint64_t pending_max_bytes = 256ull << 20; // per db, while snapshotting
  uint64_t spool_max_bytes = kDefaultSpoolMaxBytes;  // --spool-max-bytes (0 = unbounded)
  int uploaders = 16;               // --uploaders
  int snapshotters = 2;             // snapshot threads = --max-concurrent-snapshots
  MaintenanceOptions maintenance;   // scheduled snapshots, compaction, retention
  int zstd_level = 3;
  int64_t bypass_check_us = 15000000;  // --bypass-check-interval (0 = off)
  tw::ring::Options ring;           // used if tenantwald creates the ring
  tw::StoreOptions store;
};

// One committed transaction, as received from the ring.
struct Txn {
  uint64_t txid = 0;
  int64_t commit_us = 0;
  uint32_t db_pages = 0;
  uint32_t page_size = 0;
  tw::WalPosition wal;
  std::vector<uint32_t> pgnos;
  std::string pages;  // pgnos.size() * page_size bytes
};

// A sealed segment file in the spool, waiting for upload.
struct Sealed {
  std::string path, key;
  uint64_t min_txid = 0, max_txid = 0;
  uint64_t bytes = 0;
  int64_t last_commit_us = 0;
  int64_t first_commit_us = 0;
  uint32_t db_pages = 0;            // database size after max_txid
  std::shared_ptr<tw::ObjectStore> store;  // the generation's target
};

// kFenced: another host owns the database in its authority (ownership.cc);
// nothing is uploaded for it until it is claimed or released.
enum class Phase { kNeedSnapshot, kSnapshotting, kActive, kDeleted, kNotReplicated, kFenced };
const char* PhaseName(Phase p);

struct Db {
  std::mutex mu;
  uint32_t slot = 0;
  std::string tenant, name, path;
  Phase phase = Phase::kNeedSnapshot;
  int64_t created_us = 0;
  // Lineage, valid when kActive.
  std::string generation;
  uint32_t page_size = 0;
  uint32_t db_pages = 0;
  std::vector<uint64_t> page_crc;   // PageChecksum of each page at last_txid
  uint64_t checksum = 0;            // DbChecksum at last_txid
  uint64_t last_txid = 0;           // last txid in the snapshot or a sealed segment
  // Received, not yet sealed.
  // std::list, not std::deque: an empty libstdc++ deque already holds a
  // 512-byte node plus its map, ~1.2 KB for the two queues of each of
  // 50,000 mostly idle databases; an empty list allocates nothing.
  std::list<Txn> pending;
  uint64_t pending_bytes = 0;
  int64_t pending_since_us = 0;     // arrival of the oldest pending txn
  std::unique_ptr<Txn> partial;     // a transaction whose chunks are arriving
  int64_t partial_last_us = 0;      // arrival of its last chunk (an overflow cuts it short)
  std::string snapshot_reason;      // why the pending snapshot was needed ("" when active)
  bool in_dirty = false;            // listed in Replicator::dirty_
  uint64_t snapshot_epoch = 0;      // bumped whenever a new snapshot is needed;
                                    // a snapshot applies only if unchanged
  // Sealed, waiting for upload (in order; one upload at a time).
  std::list<Sealed> sealed;
  uint64_t SealedBytes() const {    // bytes of `sealed` in the spool (mu held)
    uint64_t n = 0;
    for (const Sealed& x : sealed) n += x.bytes;
    return n;
  }
  bool uploading = false;
  std::string uploading_path;       // the sealed file in flight, when uploading
  uint64_t durable_txid = 0;
  int64_t durable_commit_us = 0;
  uint64_t bytes_uploaded = 0;
  uint64_t snapshots = 0;
  uint64_t txns_uploaded = 0;       // transactions in uploaded segments (metrics)
  uint64_t errors = 0;              // failed uploads and snapshots (metrics)
  bool api_stopped = false;         // DELETE /api/databases: stays deleted until registered again
  int64_t last_snapshot_us = 0;
  bool scheduled_snapshot = false;  // a same-generation snapshot is queued (compaction.h)
  uint64_t cut_after_txid = 0;      // end a segment at this txid (a scheduled snapshot's)
  int64_t next_attempt_us = 0;      // backoff for snapshots/uploads
  int failures = 0;
  std::string last_error;
  // Replica target of the current generation (set by its snapshot).
  std::shared_ptr<tw::ObjectStore> target;
  std::string target_key;
  int64_t throttled_until_us = 0;   // waiting for its tenant's rate limit
  bool deferred = false;            // listed in Replicator::deferred_
  // Ownership (ownership.cc): the epoch of this host's claim in the
  // authority, when it was last read or written, and a pending forced claim.
  uint64_t auth_epoch = 0;
  int64_t auth_checked_us = 0;
  bool owner_epoch_known = false;   // this run has claimed or checked it
  bool force_claim = false;         // the next claim takes over (epoch + 1)
  // Bypass detection: the files' last observed (mtime ns, size).
  int64_t seen_db_mtime = 0, seen_wal_mtime = 0;
  int64_t seen_db_size = -1, seen_wal_size = -1;
};

class Replicator {
 public:
  explicit Replicator(Options o);
  ~Replicator();

  // Opens the ring (creating it if absent), the store and the spool; scans
  // the root; starts the threads. InvalidArgument/IOError on bad setup.
  tw::Status Start();
  // Stops the threads after flushing what can be flushed within `grace_ms`.
  void Stop(int grace_ms);

  // ---- for the API ----
  struct DbView {
    std::string tenant, db, path, phase, generation, last_error;
    std::string snapshot_reason;  // why a snapshot is pending or running ("" otherwise)
    uint64_t txid = 0, replicated_txid = 0, bytes = 0, snapshots = 0, pending_bytes = 0;
    uint64_t txns = 0, errors = 0;
    int64_t created_us = 0, lag_ms = 0, last_snapshot_us = 0;
    bool throttled = false;
  };
  std::vector<DbView> Databases();
  // One database by names (NotFound if unknown).
  tw::Status Database(const std::string& tenant, const std::string& db, DbView* out);
  // Registers {root}/{tenant}/{file} by hand (an existing regular file; the
  // caller validated names and path): it is snapshotted and then replicated
  // like any other. *created is false if it was already registered (and not
  // deleted); a deleted database is registered again (new generation).
  tw::Status RegisterDatabase(const std::string& tenant, const std::string& db,
                              const std::string& path, bool* created);
  // Stops replicating (status "deleted"; the replica is kept). It stays
  // deleted, also across restarts and VFS opens, until registered again.
  tw::Status StopDatabase(const std::string& tenant, const std::string& db);
  // Queues a new snapshot (new generation). *queued is false when one is
  // already pending; Aborted for a deleted or not-replicated database.
  tw::Status RequestSnapshot(const std::string& tenant, const std::string& db, bool* queued);
  // Per-tenant sync interval override (us > 0), or back to --sync-interval (0).
  void SetTenantSyncInterval(const std::string& tenant, int64_t us);
  // The tenant's effective sync interval; *overridden says whether it is its own.
  int64_t TenantSyncInterval(const std::string& tenant, bool* overridden) const;
  std::map<std::string, int64_t> TenantSyncOverrides() const;
  // Queues a snapshot in the current generation of an active database
  // (compaction.h). False if it is not active or one is already queued.
  bool RequestScheduledSnapshot(const std::string& tenant, const std::string& db);
  // Claims the database for this host (POST .../claim): a new snapshot and
  // generation, appended to the authority's lineage; with `force` even when
  // another host owns it (a takeover: the epoch is bumped, the other host
  // fences itself at its next check). NotFound for an unknown database,
  // Aborted for a deleted one.
  tw::Status ClaimDatabase(const std::string& tenant, const std::string& db, bool force);
  // This host's id in authorities (host_id.h) and its host name.
  const std::string& host_id() const { return host_id_; }
  // Whether the default store enforces conditional writes (probed at start);
  // without them two hosts are not fenced from each other.
  bool fencing_enforced() const { return fencing_enforced_; }
  Maintainer* maintainer() const { return maint_.get(); }
  tw::ObjectStore* store() const { return tenants_->default_store(); }
  TenantRegistry* tenants() const { return tenants_.get(); }
  // Effective per-tenant snapshot interval and retention (microseconds;
  // defaults 24h and 7d), for the snapshot scheduler and retention.
  int64_t SnapshotIntervalUs(const std::string& tenant) const;
  int64_t RetentionUs(const std::string& tenant) const;
  // Re-reads --config (SIGHUP). On error the old settings stay, the error is
  // logged and kept for /api/health, and it is returned.
  tw::Status ReloadConfig();
  struct ConfigState {
    std::string path, last_error;
    int64_t loaded_us = 0, last_attempt_us = 0;
    bool last_ok = true;
    uint64_t reloads = 0, failures = 0;
  };
  ConfigState config_state() const;
  // Applies a PATCH (validated by the API): audit-logs each changed field
  // with old and new values; a replica change starts new generations.
  tw::Status PatchTenant(const std::string& tenant, const Settings& set,
                         const std::vector<int>& clear, const std::string& remote);
  // The last outcome of a store request (reachability without a request).
  StoreHealth StoreHealthNow() const;
  // The spool bound's counters (spool.h).
  SpoolStats SpoolStatsNow() const { return spool_.Stats(); }
  const Options& options() const { return opts_; }
  tw::ring::Ring* ring() const { return ring_.get(); }
  int64_t started_us() const { return started_us_; }
  std::string S3Path(const std::string& tenant, const std::string& db) const;
  // Registers {root}/{tenant}/{db}.db-style paths found on disk. A tenant
  // directory whose mtime has not changed since the last scan (no entry
  // added, removed or renamed) is skipped without reading it.
  void ScanRoot();

 private:
  friend class Snapshotter;
  std::shared_ptr<Db> GetDb(uint32_t slot, bool create);
  DbView View(Db* d, int64_t now_us);
  void ConsumeLoop();
  void FlushLoop();
  void UploadLoop();
  void SnapshotLoop();
  void BypassLoop();
  void CheckBypass(const std::shared_ptr<Db>& d, int64_t now_us);
  // After the ring dropped records (header records_dropped moved): every
  // active database whose slot carries the resync flag is snapshotted, and
  // the memory of the transactions cut short is returned (malloc_trim).
  void CheckOverflow();
  void OnRecord(const tw::ring::RecordHeader* r);
  void OnTxnChunk(Db* d, const tw::ring::RecordHeader* r);
  void NeedSnapshotLocked(Db* d, const std::string& why);
  void MarkDirtyLocked(Db* d);
  bool ResumeLocked(Db* d, tw::ring::Slot* s);
  tw::Status SealLocked(Db* d);
  void PublishSlot(Db* d);
  void EnforceSpoolBound();  // spool.cc
  void NoteRetry(const tw::Status& e, int retry);  // StoreOptions::on_retry
  tw::Status TakeSnapshot(const std::shared_ptr<Db>& d);
  // ownership.cc. After a new generation's snapshot is uploaded: appends it
  // to the authority's lineage by compare-and-swap. OK with *fenced empty:
  // claimed; OK with *fenced set: another host owns the database (the
  // message names it); an error: the store failed (retry later).
  tw::Status ClaimGeneration(const std::shared_ptr<Db>& d, tw::ObjectStore* store,
                             const tw::SnapshotHeader& sh, const std::string& reason,
                             bool force, std::string* fenced);
  // Stops replicating `d` (phase kFenced), drops its pending and sealed
  // data, logs and shows `why`. d->mu held.
  void FenceLocked(Db* d, const std::string& why);
  // Unlinks the sealed segments of `d` without counting a spool drop (the
  // one in flight is unlinked by UploadLoop). d->mu held.
  void DiscardSealedLocked(Db* d);
  // Before a segment upload: re-reads the authority at most every
  // kOwnershipCheckUs. False (and `d` fenced or queued for a snapshot) when
  // this host may not extend its generation any more.
  bool CheckOwnership(const std::shared_ptr<Db>& d, tw::ObjectStore* store);
  static constexpr int64_t kOwnershipCheckUs = 10'000'000;
  std::shared_ptr<Db> FindDb(const std::string& tenant, const std::string& db);
  std::string StoppedMarker(const std::string& tenant, const std::string& db) const;
  // After a settings change: audit the differences and resnapshot databases
  // whose tenant's replica target changed.
  void SettingsChanged(const std::map<std::string, Effective>& before, const char* source,
                       const std::string& remote);
  std::map<std::string, Effective> EffectiveAll() const;
  // Requeues `d` no earlier than `not_before_us` (throttled or backing off):
  // workers never sleep on one database.
  void DeferLocked(const std::shared_ptr<Db>& d, int64_t not_before_us);
  void MoveDueDeferred();
  bool SpoolBoundLocked(Db* d);
  // Drops every sealed segment of `d` (spool.cc), logs and counts the drop
  // ("spool-drop", with `cause`) and marks the database for a snapshot.
  void DropSealedLocked(Db* d, const std::string& cause);

  Options opts_;
  std::unique_ptr<tw::ring::Ring> ring_;
  std::unique_ptr<TenantRegistry> tenants_;
  ObservedStore* observed_ = nullptr;              // store_, seen through its wrapper
  std::atomic<bool> stop_{false};
  SpoolBudget spool_;                              // bytes of sealed segments in the spool
  int lock_fd_ = -1;                               // flock on {spool}/tenantwald.lock
  std::string host_id_, host_name_;                // host_id.h
  bool fencing_enforced_ = false;                  // ProbeConditionalWrites at start
  int64_t started_us_ = 0;

  std::mutex mu_;                                  // guards dbs_ and the queues
  std::condition_variable cv_;
  std::condition_variable flush_cv_;               // dirty_ became non-empty
  std::map<uint32_t, std::shared_ptr<Db>> dbs_;    // by slot index
  std::deque<std::shared_ptr<Db>> upload_q_;       // dbs with sealed segments
  std::deque<std::shared_ptr<Db>> snapshot_q_;     // dbs needing a snapshot
  std::vector<std::shared_ptr<Db>> dirty_;         // dbs that may have pending txns
  std::multimap<int64_t, std::shared_ptr<Db>> deferred_;  // not before (us) -> db
  mutable std::mutex config_mu_;                   // guards config_state_, serializes reloads
  ConfigState config_state_;
  std::vector<std::thread> threads_;
  std::unique_ptr<Maintainer> maint_;              // scheduled snapshots, compaction, retention
  std::mutex scan_mu_;                             // guards scanned_dirs_
  std::map<std::string, int64_t> scanned_dirs_;    // tenant dir -> mtime (ns) when scanned
  uint64_t seq_ = 0;
};

}  // namespace twd
