// tenantwal: the replica format: segments, snapshots, keys and checksums.
//
// docs/FORMAT.md documents every byte; this header is the API over it.
//
// Positions. A database's history is a sequence of committed transactions
// numbered by txid (1, 2, 3, ... per database, never reused). An unbroken
// history is a *generation*: it begins with a snapshot (the whole database
// at some txid) and continues with segments (batches of consecutive
// transactions). A new generation starts, with a new snapshot, whenever
// continuity is in doubt; it records its parent generation.
//
// Checksums. `DbChecksum` is the whole-database checksum: the XOR over every
// page p (1..db_pages) of CRC-64(big-endian u32 p || page bytes), with CRC-64
// as in the .xz format (ECMA-182, liblzma's lzma_crc64). It can be kept up to
// date page by page (XOR out the old page's term, XOR in the new one), the
// idea of LTX's rolling checksum (superfly/ltx). Snapshots carry it; segments
// carry it before and after, so gaps, divergence and wrong applies are caught.
// Every object also ends in a CRC-64 of all its preceding bytes, so torn or
// corrupted objects are caught before anything is decoded.
//
// Keys (relative to the replica prefix; generation = 16 lowercase hex):
//   tenants/{tenant}/{db}/snapshots/{generation}/{txid:016x}.twsnap
//   tenants/{tenant}/{db}/wal/{generation}/{min_txid:016x}-{max_txid:016x}.twseg
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/names.h"
#include "base/status.h"

namespace tw {

// ---- checksums -------------------------------------------------------------

// CRC-64/XZ (ECMA-182 polynomial, reflected), continuing from `crc`.
uint64_t Crc64(const void* data, size_t n, uint64_t crc = 0);

// The term one page contributes to DbChecksum: CRC-64(be32(pgno) || page).
uint64_t PageChecksum(uint32_t pgno, const uint8_t* page, size_t page_size);

// True for the page sizes SQLite allows: a power of two in 512..65536 bytes
// (SQLite Database File Format, section 1.3.2).
bool ValidPageSize(uint32_t page_size);

// DbChecksum kept up to date page by page. It remembers each page's term
// (8 bytes per page) so a page can be replaced without re-reading the old
// bytes. Pages that exist but were never set (the database grew without
// writing them) count as all-zero pages, which is what such pages read as.
// Not thread-safe.
class DbChecksum {
 public:
  // `page_size` must satisfy ValidPageSize().
  explicit DbChecksum(uint32_t page_size);
  // Sets the database size to `pages`: shrinking XORs out the terms of the
  // removed pages, growing adds zero-page terms for the new ones.
  void Resize(uint32_t pages);
  // Replaces page `pgno` (1-based) with `page` (page_size bytes), growing the
  // database to `pgno` pages first if needed.
  void SetPage(uint32_t pgno, const uint8_t* page);
  uint32_t pages() const { return static_cast<uint32_t>(terms_.size()); }
  uint64_t value() const { return value_; }

 private:
  uint32_t page_size_;
  uint64_t value_ = 0;
  std::vector<uint64_t> terms_;  // terms_[p - 1] = PageChecksum(p, page p)
};

// DbChecksum of a whole database image held in memory: `size` bytes, a
// multiple of `page_size` (a partial last page counts as zero-padded).
uint64_t DbChecksumOf(const uint8_t* db, size_t size, uint32_t page_size);

// ---- generations and keys --------------------------------------------------

// A new generation id: 16 lowercase hex digits, 48 bits of Unix milliseconds
// then 16 random bits, so ids sort by creation time.
std::string NewGenerationId();
bool IsGenerationId(std::string_view s);

std::string DbPrefix(std::string_view tenant, std::string_view db);  // "tenants/T/D/"
std::string SnapshotKey(std::string_view tenant, std::string_view db,
                        std::string_view generation, uint64_t txid);
std::string SegmentKey(std::string_view tenant, std::string_view db,
                       std::string_view generation, uint64_t min_txid, uint64_t max_txid);

// Parses a key produced by SnapshotKey/SegmentKey (relative to the replica
// prefix). Returns false for anything else.
// `tenant` and `db` must satisfy ValidName() and `generation` IsGenerationId();
// the builders do not check (callers validate at their entry points).
struct ParsedKey {
  enum Kind { kSnapshot, kSegment } kind;
  std::string tenant, db, generation;
  uint64_t min_txid = 0, max_txid = 0;  // snapshots: both = txid
};
bool ParseKey(std::string_view key, ParsedKey* out);

// ---- WAL position ------------------------------------------------------------

// Where, in the local WAL file, the history stood after a transaction: the
// WAL header's salts, the index (1-based) of the transaction's commit frame,
// and the cumulative WAL checksum after it (SQLite file format, section 4).
// Lets a restarted replicator prove that the local WAL continues the replica.
// All zero when unknown (e.g. non-WAL databases).
struct WalPosition {
  uint32_t salt1 = 0, salt2 = 0;
  uint32_t frame = 0;
  uint32_t cksum1 = 0, cksum2 = 0;
};

// ---- object layout -------------------------------------------------------------

// Fixed sizes, in bytes, of the parts of every object (docs/FORMAT.md).
constexpr size_t kSegmentHeaderSize = 288;
constexpr size_t kSnapshotHeaderSize = 288;
constexpr size_t kTrailerSize = 8;          // CRC-64 of all preceding bytes
constexpr size_t kTxnRecordSize = 32;       // per transaction, in a segment body
constexpr uint32_t kFormatVersion = 1;

// ---- segments ----------------------------------------------------------------

struct SegmentHeader {
  uint32_t version = 1;
  std::string tenant, db;     // names as validated by ValidName()
  std::string generation;     // 16 hex
  uint32_t page_size = 0;     // bytes, 512..65536
  uint64_t min_txid = 0, max_txid = 0;
  uint32_t txn_count = 0;     // == max_txid - min_txid + 1
  uint32_t db_pages_after = 0;  // database size in pages after max_txid
  int64_t first_commit_us = 0, last_commit_us = 0;  // Unix microseconds
  uint64_t checksum_before = 0;  // DbChecksum after min_txid - 1
  uint64_t checksum_after = 0;   // DbChecksum after max_txid
  WalPosition wal_after;         // position after max_txid
  // Compaction (docs/FORMAT.md, "Compaction"). level 0 = as uploaded by
  // tenantwald; 1, 2 = merged by compaction. `points` = the body's records
  // are restore points, not every transaction: txids strictly increasing,
  // the last = max_txid, txn_count <= max_txid - min_txid + 1, each record's
  // pages being the newest version of every page changed since the previous
  // point. Without `points` every txid of the range has its record.
  uint32_t level = 0;            // 0..15
  bool points = false;
};

// One committed transaction inside a segment.
struct TxnInfo {
  uint64_t txid = 0;
  int64_t commit_us = 0;        // commit time, Unix microseconds
  uint32_t db_pages_after = 0;  // database size after this transaction
  uint32_t page_count = 0;      // pages that follow
  uint64_t checksum_after = 0;  // DbChecksum after this transaction
};

// Streams a segment into a local file (the spool), compressing with zstd as
// pages arrive, so memory is bounded by the zstd window, not the batch.
// Usage: Open, then for each transaction BeginTxn + AddPage*, then Finish.
class SegmentWriter {
 public:
  SegmentWriter();
  ~SegmentWriter();
  // `hdr` gives tenant, db, generation, page_size, min_txid, checksum_before;
  // the rest is filled by Finish. `level` is the zstd level.
  Status Open(const std::string& path, const SegmentHeader& hdr, int level = 3);
  Status BeginTxn(const TxnInfo& txn);
  Status AddPage(uint32_t pgno, const uint8_t* data);  // page_size bytes
  // Writes the header (with the txid range, sizes, times, checksum_after and
  // wal_after taken from the transactions and `wal_after`), fsyncs if
  // `sync`, and closes the file. *bytes = final file size.
  Status Finish(const WalPosition& wal_after, bool sync, uint64_t* bytes);
  void Abandon();  // closes and unlinks the partial file
  uint64_t raw_bytes() const;  // uncompressed page bytes added so far
 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Decodes a whole segment held in memory. Open verifies the magic, version,
// header fields and the trailing CRC-64 before anything else is read.
class SegmentReader {
 public:
  SegmentReader();
  ~SegmentReader();
  Status Open(std::string_view bytes);
  const SegmentHeader& header() const;
  // Calls `on_txn` for each transaction in txid order, then `on_page` for
  // each of its pages. A callback returning false stops the walk early (OK).
  Status ForEach(const std::function<bool(const TxnInfo&)>& on_txn,
                 const std::function<bool(uint32_t pgno, const uint8_t* page)>& on_page);
 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Decodes and validates just the fixed header at the start of a segment
// (`bytes` needs at least kSegmentHeaderSize bytes; more are ignored).
// Checks magic, version, the header CRC-64 and every field's range, but not
// the trailer or body: use SegmentReader for that. Corruption on failure.
// For listings that only need txid ranges and times.
Status ParseSegmentHeader(std::string_view bytes, SegmentHeader* out);

// ---- snapshots ---------------------------------------------------------------

struct SnapshotHeader {
  uint32_t version = 1;
  std::string tenant, db;
  std::string generation;          // 16 hex
  std::string parent_generation;   // 16 hex, or "" for the first
  uint64_t txid = 0;               // state after this transaction (0 = before any)
  uint32_t page_size = 0;
  uint32_t db_pages = 0;
  int64_t commit_us = 0;           // commit time of txid (or snapshot time)
  int64_t created_us = 0;          // when the snapshot was taken
  uint64_t checksum = 0;           // DbChecksum of the pages
  WalPosition wal;                 // position of txid in the local WAL
};

// Streams pages 1..db_pages, in order, into a compressed snapshot file.
class SnapshotWriter {
 public:
  SnapshotWriter();
  ~SnapshotWriter();
  Status Open(const std::string& path, const SnapshotHeader& hdr, int level = 3);
  Status AddPage(const uint8_t* data);  // next page, page_size bytes
  // Fills db_pages and checksum from the pages, writes the header, closes.
  Status Finish(bool sync, uint64_t* bytes);
  void Abandon();
 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Decodes a snapshot file (streamed: memory does not grow with its size).
class SnapshotReader {
 public:
  SnapshotReader();
  ~SnapshotReader();
  // Verifies magic, version, header and trailing CRC-64 (one pass over the
  // file) before returning OK.
  Status Open(const std::string& path);
  const SnapshotHeader& header() const;
  // Calls on_page(pgno, data) for pages 1..db_pages, verifying DbChecksum.
  Status ForEach(const std::function<bool(uint32_t pgno, const uint8_t* page)>& on_page);
 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Like ParseSegmentHeader, for the first kSnapshotHeaderSize bytes of a
// snapshot.
Status ParseSnapshotHeader(std::string_view bytes, SnapshotHeader* out);

}  // namespace tw
