// tenantwald: replica maintenance: scheduled snapshots, compaction by level,
// retention (docs/FORMAT.md "Compaction", docs/OPERATIONS.md).
//
// Design. tenantwald keeps, per database, an in-memory index of the objects
// of its replica (snapshots and segments, with txid ranges, commit-time
// ranges, sizes and compaction levels). The index is built with one LIST
// (plus one 288-byte ranged GET per object header) the first time a
// database is maintained after start, then kept up to date from tenantwald's
// own uploads (hooks called by the upload and snapshot paths), and rebuilt
// by the retention pass, which LISTs again at most once per
// --retention-check-interval and only for databases that uploaded something
// since the last pass. An idle database therefore costs no request.
//
// A single maintenance thread, every tick:
//  * Scheduled snapshots: a database that committed since its last snapshot
//    gets a new snapshot *in the same generation* (Replicator::
//    RequestScheduledSnapshot) when SnapshotIntervalUs(tenant) has passed
//    since the last one, or when the bytes of segments uploaded since then
//    exceed the database's size. Snapshots are taken by the snapshot worker
//    threads, whose number (--max-concurrent-snapshots) caps the snapshots
//    running at once on the host.
//  * Compaction (PlanCompaction, MergeSegments): contiguous segments of one
//    generation are merged, never across a snapshot's txid (so every
//    snapshot keeps a segment starting right after it):
//      L1: level-0 segments whose last commit lies in the same closed L1
//          span (default one minute, aligned to the Unix epoch);
//      L2: segments of level <= 1 in the same closed L2 span (default one
//          hour).
//    A span is closed once `settle` has passed since its end. Inside the
//    exact window (default 24 h before now) a merged segment keeps every
//    transaction (restore points stay exact); a span that ended before the
//    window becomes coarse: its segment keeps one restore point per L1 span
//    (the last transaction committed in it), each carrying the newest
//    version of every page changed since the previous point. L2 segments
//    that age out of the window are rewritten coarse the same way.
//  * Retention (PlanRetention): the newest snapshot committed at or before
//    now - RetentionUs(tenant), S*, is the oldest one any retained restore
//    point needs: objects of older generations, older snapshots of S*'s
//    generation and its segments ending at or before S* are deleted.
//  * Deletes (superseded compaction sources, expired objects, objects a
//    listing shows covered by a wider one) run only after --delete-grace, so
//    a restore that planned with them still finds them; a restore that does
//    not (a longer restore) lists and plans again (lib/store/restore.h).
// Crash safety: a merged object is written (PUT) before its sources are
// deleted; restore prefers the widest segment starting at a txid, so both
// existing at once is harmless, and the next listing deletes the leftovers.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "base/status.h"
#include "store/format.h"
#include "store/object_store.h"

namespace twd {

// Maintenance settings (tenantwald flags; durations in microseconds).
struct MaintenanceOptions {
  int64_t snapshot_interval_us = 24LL * 3600 * 1000000;  // --snapshot-interval
  int64_t retention_us = 7LL * 24 * 3600 * 1000000;      // --retention
  int64_t exact_window_us = 24LL * 3600 * 1000000;       // --exact-window
  int64_t l1_span_us = 60LL * 1000000;                    // --compaction-l1
  int64_t l2_span_us = 3600LL * 1000000;                  // --compaction-l2
  int64_t settle_us = 5LL * 1000000;                      // wait after a span ends
  int64_t delete_grace_us = 5LL * 60 * 1000000;           // --delete-grace
  int64_t retention_check_us = 3600LL * 1000000;          // --retention-check-interval
  bool compaction = true;                                 // --no-compaction = false
  uint64_t point_max_bytes = 64ull << 20;  // coarse merge: a point is emitted early above this
};

// One object of the replica, as maintenance knows it.
struct IndexedObject {
  std::string key;
  bool snapshot = false;
  uint64_t min_txid = 0, max_txid = 0;  // snapshots: both = txid
  int64_t first_us = 0, last_us = 0;    // commit times (snapshots: both = commit_us)
  uint64_t size = 0;                    // bytes
  uint32_t db_pages = 0;                // database size after max_txid
  uint32_t level = 0;                   // segments: compaction level
  bool points = false;                  // segments: coarse restore points
};

// One compaction step: merge `sources` (indexes into the sorted segment
// list given to PlanCompaction; contiguous txids) into one segment.
struct CompactionStep {
  std::vector<size_t> sources;
  uint32_t level = 1;
  bool points = false;  // coarse output
};

// Plans compaction for one generation. `segments` sorted by (min_txid,
// max_txid); `snapshot_txids` the generation's snapshots. Objects covered by
// a wider segment are returned in *superseded (indexes) and take no part.
std::vector<CompactionStep> PlanCompaction(const std::vector<IndexedObject>& segments,
                                           const std::set<uint64_t>& snapshot_txids,
                                           int64_t now_us, const MaintenanceOptions& o,
                                           std::vector<size_t>* superseded);

// Merges `sources` (contiguous segments of tenant/db/generation, in txid
// order) into one segment of `level`, written under `spool_dir` and PUT at
// SegmentKey(min, max). With `points` the output keeps one restore point per
// `point_span_us` of commit time (the last transaction of each span, and the
// last one) with the newest version of each page changed since the previous
// point; `pages_before` is the database size in pages before the first
// source (0 = unknown: then the merge keeps every transaction instead).
// Each source is checked (CRCs, header against key, page size, chain link
// checksum_before = previous checksum_after). *out describes the new object.
// Errors: the store's, Corruption (a damaged source: nothing is written),
// IOError (spool).
tw::Status MergeSegments(tw::ObjectStore* store, const std::string& spool_dir,
                         const std::string& tenant, const std::string& db,
                         const std::string& generation, const std::vector<IndexedObject>& sources,
                         uint32_t level, bool points, int64_t point_span_us,
                         uint32_t pages_before, int zstd_level, uint64_t point_max_bytes,
                         IndexedObject* out);

// The generations of one database: id -> (snapshots, segments), each sorted.
struct IndexedGeneration {
  std::vector<IndexedObject> snapshots, segments;
};
using IndexedDb = std::map<std::string, IndexedGeneration>;

// Keys retention deletes at `now_us` (see the top of this file). Never the
// newest snapshot committed by the cutoff, nor anything after it. "After"
// follows `lineage` (generation ids oldest first, from the database's
// authority, lib/store/authority.h) when given, so the current generation
// is never deleted whatever its id; generations not in it (orphans) are
// deleted once every object of theirs is older than the cutoff. Without a
// lineage (a replica from before the authority) generations are ordered by
// id, as they always were.
std::vector<std::string> PlanRetention(const IndexedDb& db, int64_t now_us, int64_t retention_us,
                                       const std::vector<std::string>* lineage = nullptr);

// Lists tenants/T/D/ and reads each object's header (ranged GETs; objects
// already in `known` by key are not read again) into *out. Unreadable
// headers are skipped (and logged).
tw::Status LoadIndex(tw::ObjectStore* store, const std::string& tenant, const std::string& db,
                     const IndexedDb* known, IndexedDb* out);

// Parses a duration with a unit: ms, s, m, h or d (e.g. 7d, 24h, 90s), up to
// ten years. False on anything else.
bool ParseLongDuration(const std::string& s, int64_t* us);

}  // namespace twd
