// tenantwal: building blocks shared by the segment and snapshot codecs.
//
// Not a public API: only lib/store/{segment,snapshot}.cc include this.
//   - little-endian field coding into fixed-size headers (docs/FORMAT.md),
//   - ZstdFileSink: streams bytes through one zstd frame (ZSTD_CStream API,
//     zstd.h) into a local file, leaving room for a header written last,
//   - ZstdSource: the inverse, pulling exactly-sized records out of one zstd
//     frame read from memory or from a file range, with bounded memory
//     (ZSTD_d_windowLogMax), and proving the frame ends exactly where the
//     body does,
//   - FinishObjectFile: writes the header at offset 0, appends the CRC-64
//     trailer computed over the file as stored, optionally fsyncs.
// Every read-side function treats its input as hostile: lengths are checked
// before use and failures are Status::Corruption, never a crash.
#pragma once

#include <zstd.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace tw {
namespace fmt_internal {

// ---- little-endian fields ----------------------------------------------------

inline void PutU16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v);
  p[1] = static_cast<uint8_t>(v >> 8);
}
inline void PutU32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
inline void PutU64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
inline uint32_t GetU32(const uint8_t* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}
inline uint64_t GetU64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

// A name field: 1 length byte then 64 bytes, zero padded (65 bytes total).
constexpr size_t kNameFieldSize = 65;
// Writes `name` (at most 64 bytes) into a name field.
void PutName(uint8_t* p, std::string_view name);
// Reads a name field; false if the length exceeds 64 or the padding is not
// zero (so every header has exactly one encoding).
bool GetName(const uint8_t* p, std::string* out);

// A generation field: 16 ASCII bytes, or 16 zero bytes for "none".
void PutGeneration(uint8_t* p, std::string_view gen);
// False unless the field is all zero (*out = "", only if allow_empty) or an
// id accepted by IsGenerationId().
bool GetGeneration(const uint8_t* p, bool allow_empty, std::string* out);

// True if bytes [p, p+n) are all zero.
bool AllZero(const uint8_t* p, size_t n);

// ---- write side ----------------------------------------------------------------

// Compresses everything passed to Write() into one zstd frame appended to a
// local file, after `header_size` zero bytes reserved for the header.
class ZstdFileSink {
 public:
  ZstdFileSink() = default;
  ~ZstdFileSink();
  ZstdFileSink(const ZstdFileSink&) = delete;
  ZstdFileSink& operator=(const ZstdFileSink&) = delete;

  // Creates/truncates `path`. `level` is clamped to 1..19 so readers can
  // bound their window (windowLog <= 23 at those levels).
  Status Open(const std::string& path, size_t header_size, int level);
  Status Write(const void* data, size_t n);
  // Ends the frame and flushes it; the file stays open for FinishObjectFile.
  Status EndFrame();
  // Closes and unlinks the file (idempotent).
  void Abandon();
  int fd() const { return fd_; }
  const std::string& path() const { return path_; }
  // Closes the descriptor (after FinishObjectFile); the file stays.
  Status Close();

 private:
  Status Drain(ZSTD_inBuffer* in, ZSTD_EndDirective mode);
  std::string path_;
  int fd_ = -1;
  ZSTD_CCtx* cctx_ = nullptr;
  std::vector<uint8_t> out_;
  uint64_t offset_ = 0;  // where the next compressed byte goes
};

// Writes `header` at offset 0 of the open file, then appends the CRC-64 of
// every byte now in the file as the 8-byte trailer; fsyncs when `sync`.
// *bytes = final file size.
Status FinishObjectFile(int fd, const std::string& path, const uint8_t* header,
                        size_t header_size, bool sync, uint64_t* bytes);

// ---- read side -------------------------------------------------------------------

// Maximum zstd window accepted from an object: 2^24 bytes (16 MiB); writers
// use levels <= 19 whose windows are at most 2^23.
constexpr int kMaxWindowLog = 24;

// Pulls decompressed bytes out of one zstd frame. The compressed input is
// either a memory span or a byte range of an open file (read in 128 KiB
// chunks). Memory is bounded by the window plus fixed buffers.
class ZstdSource {
 public:
  ZstdSource() = default;
  ~ZstdSource();
  ZstdSource(const ZstdSource&) = delete;
  ZstdSource& operator=(const ZstdSource&) = delete;

  Status InitMemory(std::string_view compressed);
  Status InitFile(int fd, uint64_t offset, uint64_t length);

  // Fills dst with exactly n decompressed bytes. Corruption if the frame is
  // damaged or ends first.
  Status Read(void* dst, size_t n);
  // OK only if the frame is complete, no decompressed bytes remain, and no
  // compressed bytes follow it.
  Status ExpectEnd();

 private:
  Status FillInput();
  Status Decompress();  // produces more output into out_
  ZSTD_DCtx* dctx_ = nullptr;
  // Input.
  const uint8_t* mem_ = nullptr;
  int fd_ = -1;
  uint64_t file_pos_ = 0, file_end_ = 0;
  std::vector<uint8_t> file_buf_;
  ZSTD_inBuffer in_{nullptr, 0, 0};
  bool input_exhausted_ = false;
  // Output.
  std::vector<uint8_t> out_;
  size_t out_pos_ = 0, out_len_ = 0;
  bool frame_done_ = false;
};

// CRC-64 of bytes [0, length) of an open file, read with pread in chunks.
Status Crc64OfFileRange(int fd, uint64_t length, uint64_t* crc);

// Reads exactly n bytes at `offset`; Corruption on a short read (the file
// is shorter than its header says), IOError on a read error.
Status PreadFull(int fd, void* dst, size_t n, uint64_t offset);

}  // namespace fmt_internal
}  // namespace tw
