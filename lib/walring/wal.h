// tenantwal: SQLite WAL parsing and validation.
//
// Source: SQLite "Database File Format", section 4 (The Write-Ahead Log), and
// src/wal.c (walChecksumBytes, walDecodeFrame, the WalIndexHdr layout).
//
// A WAL file is a 32-byte header followed by frames; each frame is a 24-byte
// header and one page. All header fields are big-endian u32:
//   WAL header:   magic, version (3007000), page size, checkpoint sequence,
//                 salt-1, salt-2, checksum-1, checksum-2
//   frame header: page number, db size in pages after commit (commit frames
//                 only, else 0), salt-1, salt-2, checksum-1, checksum-2
// The checksum is a running Fibonacci-weighted sum over 32-bit words, in
// big-endian words when the magic's low bit is 1, else little-endian. The
// header's checksum covers its first 24 bytes; each frame's checksum covers
// its first 8 header bytes and its page, continuing from the previous frame's
// (or the header's) checksum. A frame is valid only when its salts equal the
// header's and its stored checksum equals the running one. A transaction is
// committed when its commit frame (db size != 0) is valid.
//
// This library is linked into application processes: it never allocates
// in proportion to untrusted sizes without a bound, never throws, and reads
// the WAL through a caller-supplied read function (the shim's real file).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

namespace tw::wal {

constexpr uint32_t kMagicLE = 0x377f0682;  // checksums over little-endian words
constexpr uint32_t kMagicBE = 0x377f0683;  // checksums over big-endian words
constexpr uint32_t kVersion = 3007000;
constexpr size_t kHeaderSize = 32;
constexpr size_t kFrameHeaderSize = 24;

inline uint32_t GetBE32(const uint8_t* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | p[3];
}
inline void PutBE32(uint8_t* p, uint32_t v) {
  p[0] = uint8_t(v >> 24); p[1] = uint8_t(v >> 16); p[2] = uint8_t(v >> 8); p[3] = uint8_t(v);
}

// True for the page sizes SQLite allows: powers of two from 512 to 65536.
bool ValidPageSize(uint32_t page_size);

struct Header {
  uint32_t magic = 0, version = 0, page_size = 0, ckpt_seq = 0;
  uint32_t salt1 = 0, salt2 = 0, cksum1 = 0, cksum2 = 0;
  bool big_endian_cksum() const { return (magic & 1) != 0; }
};

// Parses and validates a 32-byte WAL header (magic, version, page size and
// its own checksum). Returns false when any check fails.
bool ParseHeader(const uint8_t* p, Header* out);

// Encodes a valid header (computes the checksum); used by tests and tools.
void EncodeHeader(const Header& h, uint8_t* out);

struct FrameHeader {
  uint32_t pgno = 0, db_size = 0, salt1 = 0, salt2 = 0, cksum1 = 0, cksum2 = 0;
};
FrameHeader ParseFrameHeader(const uint8_t* p);

// Continues the WAL checksum (s1, s2) over `n` bytes (n a multiple of 8).
void Checksum(bool big_endian, const uint8_t* data, size_t n, uint32_t* s1, uint32_t* s2);

// Encodes one frame (header + page) continuing the chain (s1, s2), which it
// updates; used by tests and the fuzzers to build WAL files.
void EncodeFrame(const Header& h, uint32_t pgno, uint32_t db_size, const uint8_t* page,
                 uint32_t* s1, uint32_t* s2, uint8_t* out);

// The position after the last frame accepted so far: the salts of the WAL
// generation, the 1-based index of the last frame, and the running checksum.
struct Cursor {
  uint32_t salt1 = 0, salt2 = 0;
  uint32_t frame = 0;
  uint32_t cksum1 = 0, cksum2 = 0;
};

// One committed transaction found by Scan. Pages are deduplicated (the last
// frame of each page in the transaction wins) and sorted by page number;
// `frame_offsets[i]` is the WAL file offset of the page bytes of pgnos[i].
struct Txn {
  std::vector<uint32_t> pgnos;
  std::vector<uint64_t> page_offsets;
  // page_data[i]: the page bytes of pgnos[i] in Scan's read buffer, or
  // nullptr when that frame was read in an earlier batch (re-read it at
  // page_offsets[i]). Valid only during the on_txn callback; the bytes are
  // exactly those whose checksum Scan verified.
  std::vector<const uint8_t*> page_data;
  uint32_t db_size = 0;   // pages after commit
  Cursor end;             // cursor after the commit frame
};

// Reads `n` bytes at `offset` of the WAL into `buf`; returns bytes read
// (short at end of file) or -1 on error.
using ReadFn = std::function<long(void* buf, size_t n, uint64_t offset)>;

enum class ScanEnd {
  kLimit,        // reached `max_frame`
  kEndOfLog,     // a frame was short, had other salts, or failed its checksum
  kIOError,      // the read function failed
};

// Walks the frames after `from` (which must carry the header's salts and
// the checksum after frame `from.frame`), up to frame `max_frame` inclusive
// (UINT32_MAX: to the end of the valid log), calling `on_txn` for each
// committed transaction in order. Frames after the last commit frame are
// not reported. *stop says why the walk ended; *tail_frames is the number of
// valid frames after the last commit (an uncommitted or abandoned tail).
// `on_txn` returning false stops the scan (reported as kLimit).
ScanEnd Scan(const Header& h, const Cursor& from, uint32_t max_frame, const ReadFn& read,
             const std::function<bool(const Txn&)>& on_txn, uint32_t* tail_frames = nullptr);

// The wal-index header as SQLite keeps it at the start of the -shm file
// (two copies of 48 bytes; native byte order). Source: src/wal.c,
// struct WalIndexHdr.
struct IndexHeader {
  uint32_t iVersion;
  uint32_t unused;
  uint32_t iChange;
  uint8_t isInit;
  uint8_t bigEndCksum;
  uint16_t szPage;
  uint32_t mxFrame;
  uint32_t nPage;
  uint32_t aFrameCksum[2];
  uint32_t aSalt[2];
  uint32_t aCksum[2];
};
static_assert(sizeof(IndexHeader) == 48, "WalIndexHdr is 48 bytes");

// Copies a consistent wal-index header from shared memory (`shm` is the
// start of region 0): both copies must be identical, initialized and carry a
// valid checksum. Returns false if not (a writer is mid-update, or the index
// is not initialized). aSalt is returned as numbers (SQLite stores the WAL
// header's big-endian bytes there verbatim); other fields are native.
bool ReadIndexHeader(const volatile void* shm, IndexHeader* out);

}  // namespace tw::wal
