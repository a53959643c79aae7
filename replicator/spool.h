// tenantwald: the bound on the on-disk spool.
//
// Sealed segments wait in the spool (--spool) until their upload succeeds.
// During an S3 outage they pile up; --spool-max-bytes bounds them so that a
// long outage cannot fill the disk. The design:
//
//  * SpoolBudget counts the bytes of every sealed segment file in the spool
//    exactly: Add() when SealLocked finished a file (its size as written),
//    Release() when the file is unlinked (uploaded or dropped). It is an
//    atomic counter; no lock is taken on the writer path (writers never
//    touch the spool: the flusher thread seals, uploaders upload).
//  * After each seal, Replicator::EnforceSpoolBound (spool.cc) runs while the
//    budget is over its bound: it picks the database whose oldest sealed
//    segment is the oldest (by commit time of its last transaction), deletes
//    all its sealed segment files (DropSealedLocked, also used for the
//    per-database bound --spool-max-db-mb), and marks it for a new snapshot (a new
//    generation; the snapshot is retried with backoff until S3 answers
//    again). A segment whose upload is in flight is left to its uploader: if
//    that upload fails, the uploader deletes it and counts it as dropped.
//    Each drop is logged (JSON, tenant/db, segments, bytes) and counted per
//    tenant (tenantwal_spool_dropped_{segments,bytes}_total).
//  * Snapshot staging files (.twsnap, one per running snapshot, removed after
//    each attempt) are not counted: they are bounded by --snapshotters.
//  * Write errors on the spool (ENOSPC, EIO) are counted here; the database
//    loses its batch and is snapshotted again once the spool is writable.
// What a drop costs: the restore points between the last durable txid and
// the new snapshot (docs/GUARANTEES.md); the committed data itself is in the
// local database and reaches the replica with that snapshot.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>

namespace twd {

// Default --spool-max-bytes: 1 GiB.
constexpr uint64_t kDefaultSpoolMaxBytes = 1ull << 30;

struct SpoolStats {
  uint64_t max_bytes = 0;       // the bound (0 = unbounded)
  uint64_t used_bytes = 0;      // bytes of sealed segment files in the spool
  uint64_t segments = 0;        // sealed segment files in the spool
  uint64_t drops = 0;           // drop events (one per database per drop)
  uint64_t write_errors = 0;    // failed writes of segment files
  std::string last_write_error; // message of the last one ("" if none)
  struct Dropped { uint64_t segments = 0, bytes = 0, drops = 0; };
  std::map<std::string, Dropped> dropped;  // by tenant
};

class SpoolBudget {
 public:
  void set_max_bytes(uint64_t m) { max_ = m; }
  uint64_t max_bytes() const { return max_; }
  // A sealed segment file of `bytes` bytes now exists in the spool.
  void Add(uint64_t bytes) { used_ += bytes; segments_ += 1; }
  // A sealed segment file of `bytes` bytes was unlinked.
  void Release(uint64_t bytes) { used_ -= bytes; segments_ -= 1; }
  uint64_t used() const { return used_.load(); }
  // True when a bound is set and the counted bytes exceed it.
  bool Over() const { return max_ > 0 && used_.load() > max_; }
  // `segments` files of `bytes` bytes of `tenant` were deleted unsent.
  void NoteDrop(const std::string& tenant, uint64_t segments, uint64_t bytes, bool new_event);
  void NoteWriteError(const std::string& message);
  SpoolStats Stats() const;

 private:
  uint64_t max_ = kDefaultSpoolMaxBytes;
  std::atomic<uint64_t> used_{0}, segments_{0};
  mutable std::mutex mu_;  // guards the fields below
  uint64_t drops_ = 0, write_errors_ = 0;
  std::string last_write_error_;
  std::map<std::string, SpoolStats::Dropped> dropped_;
};

// Parses a byte size: "1073741824", "512MiB", "1GiB", "64M", "2G", "100k"
// (K/M/G/T and KiB/MiB/GiB/TiB are powers of 1024; KB/MB/GB/TB powers of
// 1000). "0" means unbounded. False on anything else or on overflow.
bool ParseByteSize(const std::string& s, uint64_t* out);

}  // namespace twd
