// tenantwal: readers for Litestream replicas, for `tenantwal migrate` and
// `tenantwal import` (issue 8).
//
// Two Litestream replica layouts are read, both through an ObjectStore whose
// prefix is the database's replica path (e.g. s3://bucket/databases/NAME):
//
//  * Current (Litestream 0.5 and later): LTX files by compaction level,
//      ltx/{level}/{min_txid:016x}-{max_txid:016x}.ltx
//    (level 0 = as written, higher levels = compactions, 9 = snapshots;
//    ltx/levels/{level}/... of some pre-release builds is accepted too).
//  * v0.3: generations/{generation}/snapshots/{index:08x}.snapshot.lz4 (an LZ4
//    frame holding the whole database file) and
//    generations/{generation}/wal/{index:08x}_{offset:08x}.wal.lz4 (LZ4 frames
//    holding the bytes of WAL file number `index` at `offset`; offset 0 starts
//    with the 32-byte WAL header).
//
// LTX files (superfly/ltx). Every integer is big-endian. Accepted versions,
// all with magic "LTX1" and the same 100-byte header (the magic does not
// change between them; the layout of the page block is recognised from its
// first page frame and confirmed by the file checksum):
//   early   page frame = u32 pgno + the page, uncompressed; no page index
//           (files written before LTX compressed pages, e.g. the fixture
//           ltx-early/ from Litestream's test data);
//   v0.5.0+ page frame = u32 pgno + u16 flags + the page as one LZ4 frame
//           (flags 0), followed after the end marker by a page index;
//   v0.5.2+ as v0.5.0 but flags bit 0 set: u32 size + one LZ4 *block* of
//           exactly page-size bytes when decompressed. Both kinds of frame
//           may appear in one file.
//   The LTX "v2" development layout (4-byte page header with LZ4 frames) is
//   not accepted; nor are encrypted files.
// Header (100 bytes): magic, flags (only bit 1 "no checksum" allowed), page
// size, commit (database size in pages after the file), min and max txid,
// timestamp (ms), pre-apply checksum, WAL offset, WAL size, WAL salts, node
// id, 20 reserved bytes. The page block ends with an all-zero page header
// (4 or 6 bytes). Page index (not in early files): uvarint triples (pgno,
// file offset of the page frame, frame size) in pgno order, a uvarint 0,
// then u64 the index size in bytes (not counting this field). Trailer: u64
// post-apply checksum, u64 file checksum.
// Checksums use CRC-64/GO-ISO (polynomial x^64+x^4+x^3+x+1, reflected, init
// and xorout all ones; check value of "123456789" 0xb90956c775a41001), with
// bit 63 forced on: a page's checksum is CRC(be32 pgno || page), the database
// checksum is the XOR of its pages' checksums (the lock page excluded), and
// the file checksum covers every byte of the file before it, except that
// compressed page data is replaced by the page it decompresses to.
//
// Everything here parses untrusted bytes: every count and length is bounded
// by the bytes actually present, allocations are bounded (an LTX file is
// read from a memory-mapped local copy; v0.3 WAL files at most
// kMaxV3WalBytes), and any failure is Corruption naming the object.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "store/object_store.h"

namespace tw::litestream {

// ---- checksums ------------------------------------------------------------------

constexpr uint64_t kLtxChecksumFlag = uint64_t(1) << 63;

// CRC-64/GO-ISO, continuing from `crc` (0 to start).
uint64_t Crc64Iso(const void* data, size_t n, uint64_t crc = 0);

// flag | CRC-64/GO-ISO(be32(pgno) || page).
uint64_t LtxPageChecksum(uint32_t pgno, const uint8_t* page, size_t page_size);

// The page holding SQLite's PENDING_BYTE (offset 2^30), never stored in LTX.
uint32_t LtxLockPgno(uint32_t page_size);

// ---- LTX files ------------------------------------------------------------------

constexpr size_t kLtxHeaderSize = 100;
constexpr size_t kLtxTrailerSize = 16;
constexpr uint32_t kLtxFlagNoChecksum = 1u << 1;

struct LtxHeader {
  uint32_t flags = 0;
  uint32_t page_size = 0;
  uint32_t commit = 0;  // database size in pages after this file
  uint64_t min_txid = 0, max_txid = 0;
  int64_t timestamp_ms = 0;
  uint64_t pre_apply_checksum = 0;
  int64_t wal_offset = 0, wal_size = 0;
  uint32_t wal_salt1 = 0, wal_salt2 = 0;
  uint64_t node_id = 0;
  bool no_checksum() const { return (flags & kLtxFlagNoChecksum) != 0; }
  bool snapshot() const { return min_txid == 1; }
};

enum class LtxLayout {
  kEarly,    // 4-byte page headers, uncompressed pages, no page index
  kCurrent,  // 6-byte page headers, LZ4 frame or block per page, page index
};

struct LtxInfo {
  LtxHeader header;
  LtxLayout layout = LtxLayout::kCurrent;
  uint64_t post_apply_checksum = 0;
  uint64_t file_checksum = 0;
  uint32_t pages = 0;         // page frames in the file
  uint32_t max_pgno = 0;      // highest page number in the file (0 if none)
  uint32_t frame_pages = 0;   // pages stored as LZ4 frames (v0.5.0 style)
  uint32_t block_pages = 0;   // pages stored as LZ4 blocks (v0.5.2 style)
};

// Parses and validates the 100-byte header (magic, flags, page size, txid
// range, checksum rules). Corruption on failure.
Status ParseLtxHeader(std::string_view bytes, LtxHeader* out);

// Called for every page, in file order (page numbers strictly increasing).
using LtxPageFn = std::function<Status(uint32_t pgno, const uint8_t* page)>;

// Decodes a whole LTX file held in memory: header, page frames (decompressed
// and bounds-checked), end marker, page index (must describe exactly the
// frames present), trailer and file checksum; for snapshots also the
// post-apply checksum. The file is verified completely before `on_page`
// (may be empty) sees any page. Corruption on any failure.
Status DecodeLtx(std::string_view bytes, LtxInfo* info, const LtxPageFn& on_page = nullptr);

// Writes an LTX file (for tests, fuzz seeds and tools): the current layout
// with LZ4 blocks (v0.5.2), or LZ4 frames (v0.5.0) when `lz4_frames`, or the
// early uncompressed layout when `early`. `pages` must be in pgno order. The
// trailer's post-apply checksum is `post_apply_checksum`.
struct LtxEncodeOptions {
  bool lz4_frames = false;
  bool early = false;
};
Status EncodeLtx(const LtxHeader& header,
                 const std::vector<std::pair<uint32_t, const uint8_t*>>& pages,
                 uint64_t post_apply_checksum, const LtxEncodeOptions& options,
                 std::string* out);

// ---- LZ4 frames (liblz4's frame API) ------------------------------------------

// Decompresses exactly one LZ4 frame from the start of `in` (*consumed = its
// length; may be null) and passes the output to `sink` in pieces. More than
// `max_out` bytes of output is Corruption.
Status Lz4FrameDecode(std::string_view in, uint64_t max_out, size_t* consumed,
                      const std::function<Status(const uint8_t*, size_t)>& sink);
// Compresses `in` into one LZ4 frame (tests).
Status Lz4FrameEncode(std::string_view in, std::string* out);

// ---- replicas -------------------------------------------------------------------

constexpr uint64_t kMaxV3WalBytes = uint64_t(2) << 30;  // one v0.3 WAL index, decompressed

enum class SourceFormat { kAuto, kLtx, kV3 };

struct SourceOptions {
  SourceFormat format = SourceFormat::kAuto;  // auto: ltx/ if present, else generations/
  uint64_t target_txid = 0;     // LTX only: restore to this txid (0 = latest)
  int64_t target_time_ms = 0;   // LTX only: latest state written at or before (0 = latest)
  std::string generation;       // v0.3 only: which generation ("" = the only one)
  std::string work_dir;         // for downloads ("" = the output file's directory)
};

struct SourceResult {
  std::string format;      // "ltx" or "v0.3"
  std::string position;    // source position, e.g. "txid 0000000000000005" or
                           // "generation 0123456789abcdef index 00000002 offset 00001038"
  uint64_t txid = 0;       // LTX: max txid applied (v0.3: 0)
  uint64_t checksum = 0;   // LTX: post-apply checksum of the final state (v0.3: 0)
  int64_t time_ms = 0;     // LTX: header timestamp of the last file (v0.3: 0)
  uint32_t page_size = 0;
  uint32_t pages = 0;
  uint64_t objects_read = 0, bytes_read = 0;
  std::vector<std::string> warnings;
};

// Rebuilds the database held in the Litestream replica `src` into a new file
// `out_path` (which must not exist), verifying every checksum the source
// carries (LTX: file, pre- and post-apply; v0.3: LZ4 frame checksums and the
// WAL checksum chain). Bytes 18-19 of the result are set to 1 (rollback
// journal) and PRAGMA integrity_check must return ok. On failure no output is
// left behind. Errors: NotFound (no replica, no snapshot, gap before the
// target), Corruption, InvalidArgument, IOError, and the store's errors.
Status RestoreSource(ObjectStore* src, const SourceOptions& options, const std::string& out_path,
                     SourceResult* result);

// ---- writing into a tenantwal replica --------------------------------------------

struct SnapshotUpload {
  std::string generation;   // new generation id
  std::string key;          // the snapshot object's key
  uint32_t page_size = 0, pages = 0;
  uint64_t db_bytes = 0;        // database size
  uint64_t snapshot_bytes = 0;  // compressed snapshot object
  uint64_t checksum = 0;        // tenantwal DbChecksum
};

// Writes the database file `db_path` (a quiescent SQLite file nobody writes)
// as a snapshot at txid 0 of a new generation of tenant/db in `dst` and
// uploads it; `parent` is the generation it follows ("" for none). The
// snapshot's commit time is `commit_us` (0 = now). `metadata` becomes the
// object's user metadata (tenantwal-txid and tenantwal-commit-us are added).
Status UploadDatabaseSnapshot(ObjectStore* dst, const std::string& tenant, const std::string& db,
                              const std::string& db_path, int64_t commit_us,
                              const std::string& parent,
                              const std::map<std::string, std::string>& metadata,
                              SnapshotUpload* out);

// Copies a live or plain SQLite database `src_path` into the new file
// `out_path` with SQLite's online backup API (a consistent copy including any
// WAL content), sets bytes 18-19 to 1 and runs PRAGMA integrity_check.
Status CopyDatabase(const std::string& src_path, const std::string& out_path, uint32_t* pages,
                    uint32_t* page_size);

// Keeps only printable ASCII (<= 200 bytes) so a value fits S3 user metadata.
std::string MetadataValue(std::string_view s);

}  // namespace tw::litestream
