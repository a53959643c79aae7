// tenantwal: the restore engine, shared by `tenantwal restore` and later tools
// (verify, migrate), plus the replica catalog they all list objects through.
//
// Restore rebuilds one database from a replica:
//   1. List tenants/T/D/, keep the keys ParseKey accepts, group them by
//      generation (catalog below).
//   2. Plan: take the newest generation (ids sort by creation time) that has
//      a snapshot at or before the target; its newest such snapshot; then the
//      chain of segments whose min_txid is the previous max_txid + 1, up to
//      the target, stopping at the first gap. A target beyond the chain is an
//      error naming the last reachable txid.
//   3. Apply into OUT.tmp-XXXXXX next to OUT: the snapshot is streamed to a
//      temporary file and decoded page by page; each segment is downloaded
//      into memory, its CRCs and header (tenant, db, generation, txids,
//      page size) checked against its key, and its checksum_before against
//      the running DbChecksum. Pages are written at (pgno-1)*page_size, the
//      file is truncated to db_pages_after after every transaction, and the
//      running DbChecksum (one 8-byte term per page) must equal each
//      transaction's checksum_after. Any mismatch is Corruption naming the
//      object and the last good txid.
//   4. Finish: set bytes 18 and 19 of the database header (file format write
//      and read versions; SQLite Database File Format, section 1.3.3) to 1,
//      i.e. legacy rollback journal, so the result opens without a WAL or
//      -shm; fsync; open it with SQLite and require PRAGMA integrity_check to
//      return "ok"; then move it into place (atomically; never replacing an
//      existing OUT unless `overwrite`) and fsync the directory.
// Memory is bounded by one segment plus the per-page checksum terms
// (8 bytes per database page); the snapshot never sits in memory.
#pragma once

#include <cstdint>
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
  std::string id;  // 16 hex; ids sort by creation time
  std::vector<CatalogObject> snapshots;
  std::vector<CatalogObject> segments;
};

// Every generation of one database, sorted by id (oldest first).
struct CatalogDatabase {
  std::string tenant, db;
  std::vector<CatalogGeneration> generations;
};

// Groups a listing (any prefix of tenants/) into databases sorted by
// (tenant, db). Keys ParseKey rejects are skipped and counted in *ignored
// (may be null).
std::vector<CatalogDatabase> BuildCatalog(const std::vector<ObjectInfo>& objects,
                                          size_t* ignored);

// Lists tenants/T/D/ and returns its catalog; an empty `generations` means
// no replica. Errors: the store's List errors.
Status ListDatabase(ObjectStore* store, const std::string& tenant, const std::string& db,
                    CatalogDatabase* out);

// ---- plan ----------------------------------------------------------------------

constexpr uint64_t kRestoreLatest = UINT64_MAX;

// What a restore will read, in order.
struct RestorePlan {
  std::string generation;
  CatalogObject snapshot;
  std::vector<CatalogObject> segments;  // consecutive: min = previous max + 1
  uint64_t reachable_txid = 0;          // max txid covered by snapshot + segments
  std::vector<std::string> warnings;    // e.g. segments unreachable past a gap
};

// Chooses the generation, snapshot and segment chain for `target_txid`
// (kRestoreLatest for the newest state). `generation` = "" chooses the newest
// generation with a usable snapshot; otherwise only that one is considered.
// NotFound if there is no usable snapshot or `target_txid` is beyond the
// chain (the message names the last reachable txid).
Status PlanRestore(const CatalogDatabase& catalog, uint64_t target_txid,
                   const std::string& generation, RestorePlan* plan);

// ---- restore -------------------------------------------------------------------

struct RestoreOptions {
  std::string tenant, db;                  // ValidName()
  uint64_t target_txid = kRestoreLatest;   // restore the state after this txid
  std::string generation;                  // "" = newest usable
  std::string output_path;                 // the database file to create
  bool overwrite = false;                  // replace an existing output_path
  bool integrity_check = true;             // run PRAGMA integrity_check
};

struct RestoreResult {
  std::string generation;
  uint64_t txid = 0;           // state restored: after this transaction
  int64_t commit_us = 0;       // commit time of txid, Unix microseconds
  uint32_t page_size = 0;      // bytes
  uint32_t pages = 0;          // database size in pages
  uint64_t snapshot_txid = 0;  // where the snapshot stood
  uint64_t segments = 0;       // segments applied (wholly or in part)
  uint64_t objects_read = 0;   // objects downloaded
  uint64_t bytes_read = 0;     // bytes downloaded
  uint64_t checksum = 0;       // DbChecksum of the restored pages (before the
                               // header bytes 18-19 were set to 1)
  std::vector<std::string> warnings;
};

// Restores options.tenant/options.db from `store` into options.output_path
// (see the top of this file). On success the output is a verified rollback
// journal SQLite database. Errors: InvalidArgument (bad names or path, output
// exists without overwrite), NotFound (no replica, no snapshot, target
// unreachable), Corruption (any object or checksum failure, integrity_check),
// IOError (local files), or the store's errors. On failure no output file is
// created and temporary files are removed.
Status Restore(ObjectStore* store, const RestoreOptions& options, RestoreResult* result);

}  // namespace tw
