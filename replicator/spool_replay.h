// tenantwald: what a restart does with the files a killed tenantwald left
// in its spool.
//
// tenantwald writes every object it uploads to the spool first, uploads it
// with a PUT, and unlinks it after the PUT answered (success or failure).
// A SIGKILL, OOM kill or host crash can therefore leave, in the spool:
//
//   *.twseg       sealed segments: waiting for an uploader, or mid-PUT
//   *.twsnap      a snapshot: being written, or mid-PUT
//   *.twseg.tmp   a compaction's merged segment: being written, or mid-PUT
//
// A PUT cut short is not always harmless: Amazon S3 stores nothing for an
// incomplete body, but some S3-compatible servers (s3rver among them) keep
// the bytes they received under the final key, a torn object. And a sealed
// segment that never reached S3 holds restore points that the new snapshot
// taken after the restart would otherwise fold away.
//
// ReplaySpool, run once at start before any other thread, handles each
// leftover file:
//
//   1. Verify it locally (magic, header, trailing CRC-64: SegmentReader /
//      SnapshotReader). A file that does not verify was still being written
//      when the process died, so its PUT had not started: unlink it.
//   2. LIST the object's generation in the tenant's current replica target.
//   3. If the object's key is already there (its PUT started, maybe torn):
//      PUT the verified local file again. The bytes are identical when that
//      PUT had completed, and whole when it had not.
//   4. Else, for a level-0 segment only: PUT it if it continues the
//      generation, i.e. its first txid is one past the highest txid any
//      object of the generation holds, the generation having a snapshot.
//      Leftover segments of one database are taken in txid order, so a run
//      of them continues the chain one after another. Anything else (a
//      snapshot or merge whose PUT never started, a segment after a gap, a
//      generation absent from the current target) is unlinked: the new
//      snapshot that follows the restart covers its transactions.
//   5. On a failed PUT or LIST (S3 unreachable, after the store's own
//      retries) that file and every later one are left in place for the
//      next start, untried: an outage must not hold up the start for
//      minutes per file. The databases' new generations do not depend on
//      them (only restore points of the old generation wait).
//
// Nothing here guesses: every object uploaded verified locally, and the
// restore path checks every chain link and checksum again.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "base/status.h"

namespace tw {
class ObjectStore;
}

namespace twd {

struct SpoolReplayStats {
  uint64_t reuploaded = 0;  // objects PUT again (key already present)
  uint64_t continued = 0;   // segments PUT that continue their generation
  uint64_t discarded = 0;   // files unlinked (incomplete, or superseded)
  uint64_t kept = 0;        // files left for the next start (S3 error)
  uint64_t kept_bytes = 0;  // their size
};

// The store of a tenant's current replica target (never null).
using StoreForTenant = std::function<std::shared_ptr<tw::ObjectStore>(const std::string& tenant)>;

// Handles every *.twseg, *.twsnap and *.twseg.tmp file directly in
// `spool_dir` as described above. Logs each decision (JSON, tenant, db, key).
// Returns OK unless the directory cannot be read; per-file failures are
// counted in *stats, never fatal.
tw::Status ReplaySpool(const std::string& spool_dir, const StoreForTenant& store_for,
                   SpoolReplayStats* stats);

}  // namespace twd
