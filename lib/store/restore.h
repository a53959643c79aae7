// tenantwal: the restore engine, shared by `tenantwal restore`, `ls` and
// `verify`, plus the replica catalog they all list objects through.
//
// Restore rebuilds one database from a replica:
//   1. List tenants/T/D/, keep the keys ParseKey accepts, group them by
//      generation (catalog below).
//   2. Plan (PlanRestore), for one of three targets:
//      * latest: the newest generation with a snapshot; the snapshot whose
//        chain of segments (min_txid = previous max_txid + 1; the widest one
//        when several start at the same txid) reaches furthest. Segments
//        beyond the end of that chain (a gap), or a newer generation that
//        has segments but no snapshot, make "latest" an error naming the
//        object and the last reachable txid: restoring "latest" never
//        silently gives an older state. With `partial` they are warnings and
//        the plan stops at the last reachable txid.
//      * txid N: the newest generation with a snapshot at or before N; its
//        newest snapshot whose chain reaches N. Beyond the chain: error
//        (partial: up to the last reachable txid).
//      * time T (Unix us): commit times come from the objects' headers
//        (SnapshotHeader::commit_us, SegmentHeader::first/last_commit_us,
//        TxnInfo::commit_us), never from the store's LastModified. The
//        generation is the newest one with a snapshot whose commit time is
//        <= T (snapshot headers are read newest first with ranged GETs of
//        288 bytes); within it the newest such snapshot; then a binary
//        search over the chain's segment headers finds the last segment
//        whose first commit is <= T (O(log n) ranged GETs). The restore
//        stops after the last transaction with commit_us <= T, so an instant
//        inside a snapshot's window (before the first segment transaction
//        after it) gives the snapshot's state. An instant before every
//        snapshot is NotFound naming the earliest restorable time and txid.
//        Commit times are assumed non-decreasing along a generation (they
//        come from one host's clock); the result is always a prefix of the
//        history, never a mix.
//      The plan lists exactly the objects that will be downloaded: nothing
//      past the target.
//   3. Apply into OUT.tmp-XXXXXX next to OUT. The snapshot and the segments
//      are downloaded by `parallelism` threads in plan order, at most
//      `parallelism` objects ahead of the one being applied (memory: that
//      many segments), and applied in order: the snapshot is streamed to a
//      temporary file and decoded page by page; each segment's CRCs and
//      header (tenant, db, generation, txids, page size) are checked against
//      its key and its checksum_before against the running DbChecksum. Pages
//      are written at (pgno-1)*page_size, the file is truncated to
//      db_pages_after after every transaction, and the running DbChecksum
//      (one 8-byte term per page) must equal each transaction's
//      checksum_after. Any failure (missing object, damaged bytes, checksum
//      mismatch) is an error naming the object and the last good txid; with
//      `partial` the restore instead finishes at the last good txid (if the
//      failing segment had already written pages, the restore is redone up
//      to that txid so the result is exactly that state) and says so in
//      warnings and RestoreResult::partial.
//   4. Finish: set bytes 18 and 19 of the database header (file format write
//      and read versions; SQLite Database File Format, section 1.3.3) to 1,
//      i.e. legacy rollback journal, so the result opens without a WAL or
//      -shm; fsync; open it with SQLite and require PRAGMA integrity_check to
//      return "ok"; then move it into place (atomically; never replacing an
//      existing OUT unless `overwrite`) and fsync the directory.
// Memory is bounded by `parallelism` segments plus the per-page checksum
// terms (8 bytes per database page); the snapshot never sits in memory.
//
// Verify (VerifyReplica) checks every object of every generation, not only a
// restore path: each snapshot decoded with its DbChecksum; each generation
// rebuilt from its oldest valid snapshot through every segment, so every
// transaction's checksum_after and every chain link (checksum_before =
// previous checksum_after) is checked; segments off the chain are decoded
// and checked against the chain's checksums where they overlap; later
// snapshots must equal the chain at their txid; gaps, snapshotless
// generations and unparseable keys are reported. CompareWithLive compares a
// live database with the replica (see there).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "base/status.h"
#include "store/format.h"
#include "store/object_store.h"

namespace tw {

// ---- catalog -----------------------------------------------------------------

// One stored object, as listed and parsed from its key.
struct CatalogObject {
  std::string key;
  uint64_t min_txid = 0, max_txid = 0;  // snapshots: both = txid
  uint64_t size = 0;                    // bytes
};

// The objects of one generation, each list sorted by (min_txid, max_txid).
struct CatalogGeneration {
  std::string id;  // 16 hex; ids sort by creation time (a wall clock: never trusted for order)
  std::vector<CatalogObject> snapshots;
  std::vector<CatalogObject> segments;
  // Not in the authority's lineage (a fenced host's, or a claim that lost):
  // never chosen unless asked for by id (--generation).
  bool orphan = false;
};

// Every generation of one database, oldest first: in the order of the
// authority's lineage (lib/store/authority.h) when the database has one
// (orphans first, by id, so "latest" is never one), else by id (replicas
// written before the authority).
struct CatalogDatabase {
  std::string tenant, db;
  std::vector<CatalogGeneration> generations;
  bool has_authority = false;   // set by ListDatabase
  std::string current;          // the lineage's current generation ("" without authority)
  std::string owner;            // the authority's owner host id ("" when released or none)
  uint64_t epoch = 0;           // the authority's epoch (0 without)
};

// Orders `cat`'s generations by `lineage` (oldest first; ids absent from it
// become orphans, placed first in id order) and records the authority's
// current generation, owner and epoch. Generations of the lineage with no
// object in the listing are skipped.
void ApplyLineage(CatalogDatabase* cat, const std::vector<std::string>& lineage,
                  const std::string& owner, uint64_t epoch);

// Groups a listing (any prefix of tenants/) into databases sorted by
// (tenant, db). Keys ParseKey rejects are skipped and counted in *ignored
// (may be null).
std::vector<CatalogDatabase> BuildCatalog(const std::vector<ObjectInfo>& objects,
                                          size_t* ignored);

// Lists tenants/T/D/ and returns its catalog; an empty `generations` means
// no replica. Reads tenants/T/D/authority.json (one GET) and orders the
// generations by its lineage (ApplyLineage); without one, by id. Errors: the
// store's List and Get errors; Corruption for an authority that does not
// parse (never silently ordered by id instead).
Status ListDatabase(ObjectStore* store, const std::string& tenant, const std::string& db,
                    CatalogDatabase* out);


// ---- plan ----------------------------------------------------------------------

constexpr uint64_t kRestoreLatest = UINT64_MAX;

struct RestoreOptions;

// What a restore will read, in order.
struct RestorePlan {
  std::string generation;
  CatalogObject snapshot;
  std::vector<CatalogObject> segments;  // consecutive: min = previous max + 1
  uint64_t reachable_txid = 0;          // max txid covered by snapshot + segments
  std::vector<std::string> warnings;    // e.g. (with partial) segments past a gap
  // The state the restore will end at: txid_min == txid_max when known
  // exactly; a time target ending inside the last segment is known only to
  // lie in [txid_min, txid_max] until that segment is decoded.
  uint64_t txid_min = 0, txid_max = 0;
  int64_t snapshot_commit_us = 0;  // from its header, if planning read it (else 0)
  uint64_t bytes = 0;              // sizes of snapshot + segments
  bool partial = false;            // `partial` accepted a gap: ends before what was asked
  std::vector<std::string> headers_read;  // objects whose headers planning read (ranged GETs)
  // Set by ResolveRestorePoint: the target falls inside a compacted segment
  // with coarse restore points (docs/FORMAT.md, "Compaction"); the restore
  // ends at the latest point at or before the target, txid_min == txid_max
  // == that point, committed at point_commit_us.
  // PlanRestore also sets it for a time target that falls between the
  // previous state and a coarse segment's first point.
  bool coarse = false;
  uint32_t coarse_level = 0;
  int64_t point_commit_us = 0;
};

// Chooses the generation, snapshot and segment chain for `target_txid`
// (kRestoreLatest for the newest state) from a catalog alone (see the top of
// this file; no time targets). `generation` = "" chooses among all
// generations; otherwise only that one is considered. NotFound if there is
// no usable snapshot, `target_txid` is beyond the chain, or (latest, without
// `partial`) the newest generation has a gap or a newer one has no snapshot;
// the message names the object and the last reachable txid.
Status PlanRestore(const CatalogDatabase& catalog, uint64_t target_txid,
                   const std::string& generation, RestorePlan* plan, bool partial = false);

// For --dry-run: when the plan's last segment is a compacted one with
// coarse restore points and the target lies inside it, downloads that one
// segment and sets plan->coarse, txid_min = txid_max = the point the restore
// will use and point_commit_us. Otherwise leaves the plan unchanged (one
// ranged header GET). Errors: the store's, Corruption.
Status ResolveRestorePoint(ObjectStore* store, const RestoreOptions& options, RestorePlan* plan);

// ---- restore -------------------------------------------------------------------

// Progress of a restore, reported after each object is applied.
struct RestoreProgress {
  uint64_t objects_done = 0, objects_total = 0;
  uint64_t bytes_done = 0, bytes_total = 0;  // bytes of the applied objects
  uint64_t txid = 0;                         // state reached so far
};

struct RestoreOptions {
  std::string tenant, db;                  // ValidName()
  uint64_t target_txid = kRestoreLatest;   // restore the state after this txid
  // Or (when has_target_time) the state after the last transaction committed
  // at or before this instant, Unix microseconds; target_txid is then ignored.
  bool has_target_time = false;
  int64_t target_time_us = 0;
  std::string generation;                  // "" = chosen by the target
  std::string output_path;                 // the database file to create
  bool overwrite = false;                  // replace an existing output_path
  bool integrity_check = true;             // run PRAGMA integrity_check
  bool partial = false;                    // on a gap/missing/corrupt object: stop at the
                                           // last good txid instead of failing
  int parallelism = 8;                     // concurrent downloads (1..64)
  // Called on the calling thread after each applied object (may be empty).
  std::function<void(const RestoreProgress&)> progress;
  // Called with (txid, DbChecksum) for every verified state: the snapshot's,
  // then each transaction's (may be empty). Used by verify.
  std::function<void(uint64_t txid, uint64_t checksum)> on_state;
};

struct RestoreResult {
  std::string generation;
  uint64_t txid = 0;           // state restored: after this transaction
  int64_t commit_us = 0;       // commit time of txid, Unix microseconds
  uint32_t page_size = 0;      // bytes
  uint32_t pages = 0;          // database size in pages
  uint64_t snapshot_txid = 0;  // where the snapshot stood
  uint64_t segments = 0;       // segments applied (wholly or in part)
  uint64_t objects_read = 0;   // objects downloaded whole
  uint64_t bytes_read = 0;     // bytes downloaded (whole objects)
  uint64_t header_reads = 0;   // ranged header reads while planning
  uint64_t checksum = 0;       // DbChecksum of the restored pages (before the
                               // header bytes 18-19 were set to 1)
  bool partial = false;        // `partial` stopped before what was asked
  std::string failed_object;   // with partial: the object restore stopped at ("" = a gap)
  std::vector<std::string> warnings;
  std::vector<std::string> keys_read;  // objects downloaded whole, in order
  // The target fell inside a compacted range with coarse restore points: the
  // result is the latest point at or before it (txid, commit_us) rather than
  // the exact state asked for (docs/FORMAT.md, "Compaction").
  bool coarse = false;
  uint32_t point_level = 0;    // with coarse: the compaction level of that segment
  // Times the plan was made again because an object it named disappeared
  // while restoring (retention or compaction deleted it): at most 2.
  uint64_t replans = 0;
};

// Lists the replica and plans a restore for `options` (target, generation,
// partial; the output path is not looked at). Time targets read object
// headers (ranged GETs). Errors as for Restore. Used by --dry-run.
Status PlanRestore(ObjectStore* store, const RestoreOptions& options, RestorePlan* plan);

// Restores options.tenant/options.db from `store` into options.output_path
// (see the top of this file). On success the output is a verified rollback
// journal SQLite database. Errors: InvalidArgument (bad names or path, output
// exists without overwrite), NotFound (no replica, no snapshot, target
// unreachable or before the earliest restorable point), Corruption (any
// object or checksum failure, integrity_check), IOError (local files), or
// the store's errors; every message about an object names it and the last
// good txid. On failure no output file is created and temporary files are
// removed.
Status Restore(ObjectStore* store, const RestoreOptions& options, RestoreResult* result);

// ---- restore windows ------------------------------------------------------------

// What one generation can restore (for `tenantwal ls`).
struct RestoreWindow {
  std::string generation;
  uint64_t snapshots = 0, segments = 0, bytes = 0;
  bool restorable = false;                 // has a snapshot with a readable header
  uint64_t earliest_txid = 0;              // the oldest snapshot
  int64_t earliest_us = 0;
  uint64_t latest_txid = 0;                // end of the longest snapshot + segment chain
  int64_t latest_us = 0;
  uint64_t unreachable_segments = 0;       // segments past a gap in the chain
  uint64_t gap_after_txid = 0;             // with unreachable segments: where the chain ends
  std::vector<std::string> problems;       // unreadable headers, "key: message"
};

// One window per generation of `catalog` (oldest first). Reads the header of
// each generation's oldest snapshot, of the snapshot its longest chain starts
// from, and of that chain's last segment (ranged GETs). Per-object failures
// go to RestoreWindow::problems; the Status is for the store as a whole.
Status DescribeRestoreWindows(ObjectStore* store, const CatalogDatabase& catalog,
                              std::vector<RestoreWindow>* out);

// ---- verify ---------------------------------------------------------------------

struct VerifyProblem {
  std::string object;   // key ("" for the database as a whole)
  std::string message;
};

struct VerifyOptions {
  std::string tenant, db;
  std::string tmpdir;        // for temporary files ("" = $TMPDIR or /tmp)
  int parallelism = 8;
  // Called for each object checked (key, ok) (may be empty).
  std::function<void(const std::string& key, bool ok)> on_object;
};

struct VerifyReport {
  uint64_t generations = 0, snapshots = 0, segments = 0;
  uint64_t txns = 0;         // transactions whose checksum_after was checked by applying
  uint64_t bytes = 0;        // bytes downloaded
  uint64_t ignored_keys = 0; // keys under tenants/T/D/ that are not snapshots or segments
  std::vector<VerifyProblem> problems;
  std::vector<std::string> notes;  // per generation: "G: txids A-B ..."
  bool ok() const { return problems.empty(); }
};

// Checks every checksum and chain link of every generation of tenant/db
// (see the top of this file). The Status is not OK only when the check could
// not run (listing failed, local I/O); damage goes to report->problems.
Status VerifyReplica(ObjectStore* store, const VerifyOptions& options, VerifyReport* report);

// How a live database compares with the replica.
//
// LIVE is opened read-only with SQLite (default VFS) in one read transaction;
// its page images are taken with sqlite3_serialize (memory: the database
// size) and its content hash computed. The replica's latest state is
// restored into a temporary file, recording the DbChecksum after every
// transaction. Then:
//  * LIVE's DbChecksum equals the replica's latest: equal at that txid, and
//    the logical content hashes (schema + every table's rows in rowid order)
//    of LIVE and the restored file must also be equal;
//  * it equals the replica's checksum at an earlier txid M: LIVE is behind
//    the replica, equal to its state at M (reported, counted as equal);
//  * it equals none: LIVE is ahead of the replica (commits not yet
//    replicated) or has diverged; what can be compared is: the logical
//    content per table, reported as table_diffs.
struct LiveComparison {
  enum State { kEqual, kLiveBehind, kNoMatch } state = kNoMatch;
  uint64_t replica_txid = 0;     // the replica's latest restorable txid
  uint64_t matched_txid = 0;     // kEqual / kLiveBehind: the replica txid LIVE equals
  uint64_t live_checksum = 0, replica_checksum = 0;  // DbChecksum (replica: latest)
  uint32_t live_pages = 0, replica_pages = 0;
  uint64_t live_content = 0, replica_content = 0;    // logical content hashes
  std::vector<std::string> table_diffs;  // kNoMatch (or content mismatch): per table
  std::string generation;
};

Status CompareWithLive(ObjectStore* store, const VerifyOptions& options,
                       const std::string& live_path, LiveComparison* out);

// A logical content hash of a closed-or-live SQLite database file opened
// read-only: schema rows, then each table's rows in rowid order (per-table
// counts and hashes in *tables, "name" -> {rows, hash}, may be null).
Status ContentHash(const std::string& path, uint64_t* hash,
                   std::map<std::string, std::pair<uint64_t, uint64_t>>* tables);

// Runs PRAGMA integrity_check on the closed database file at `path`.
// OK when SQLite answers "ok"; Corruption with up to five of its messages
// otherwise, or when the file does not open as a database.
Status IntegrityCheck(const std::string& path);

}  // namespace tw
