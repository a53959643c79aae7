// tenantwal: Litestream replica readers (design and accepted versions:
// litestream.h).
#include "store/litestream.h"
#include "store/restore.h"
#include "store/file_util.h"

#include <fcntl.h>
#include <lz4.h>
#include <lz4frame.h>
#include <sqlite3.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>

#include "store/format.h"
#include "walring/wal.h"

namespace tw::litestream {

using file_util::DirOf;
using file_util::Errno;
using file_util::MakeTemp;
using file_util::PwriteAll;

namespace {

// ---- small helpers -----------------------------------------------------------------

uint16_t Be16(const uint8_t* p) { return uint16_t((p[0] << 8) | p[1]); }
uint32_t Be32(const uint8_t* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | p[3];
}
uint64_t Be64(const uint8_t* p) { return (uint64_t(Be32(p)) << 32) | Be32(p + 4); }
void PutBe16(std::string* s, uint16_t v) {
  s->push_back(char(v >> 8));
  s->push_back(char(v));
}
void PutBe32(std::string* s, uint32_t v) {
  for (int i = 3; i >= 0; --i) s->push_back(char(v >> (8 * i)));
}
void PutBe64(std::string* s, uint64_t v) {
  for (int i = 7; i >= 0; --i) s->push_back(char(v >> (8 * i)));
}
void PutUvarint(std::string* s, uint64_t v) {
  while (v >= 0x80) {
    s->push_back(char(uint8_t(v) | 0x80));
    v >>= 7;
  }
  s->push_back(char(v));
}
// Reads a Go-style uvarint; false if truncated or longer than 10 bytes / 64 bits.
bool GetUvarint(const uint8_t* p, size_t n, size_t* pos, uint64_t* v) {
  uint64_t x = 0;
  unsigned shift = 0;
  for (size_t i = 0; i < 10; ++i) {
    if (*pos >= n) return false;
    uint8_t b = p[(*pos)++];
    if (i == 9 && b > 1) return false;
    x |= uint64_t(b & 0x7f) << shift;
    if (b < 0x80) {
      *v = x;
      return true;
    }
    shift += 7;
  }
  return false;
}

std::string Hex16(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(v));
  return buf;
}
std::string Hex8(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%08llx", static_cast<unsigned long long>(v));
  return buf;
}



Status PreadAll(int fd, uint8_t* p, size_t n, uint64_t off, const std::string& path, size_t* got) {
  size_t total = 0;
  while (total < n) {
    ssize_t r = ::pread(fd, p + total, n - total, static_cast<off_t>(off + total));
    if (r < 0) {
      if (errno == EINTR) continue;
      return Status::IOError(Errno("read", path));
    }
    if (r == 0) break;
    total += size_t(r);
  }
  *got = total;
  return Status::OK();
}



// A file descriptor + path that are closed and unlinked unless released.
struct TempFile {
  std::string path;
  int fd = -1;
  bool keep = false;
  ~TempFile() {
    if (fd >= 0) ::close(fd);
    if (!keep && !path.empty()) ::unlink(path.c_str());
  }
};

// A read-only mapping of a whole local file.
struct Mapped {
  void* p = nullptr;
  size_t n = 0;
  ~Mapped() {
    if (p != nullptr && p != MAP_FAILED) ::munmap(p, n);
  }
  std::string_view view() const { return {static_cast<const char*>(p), n}; }
};

Status MapFile(int fd, const std::string& path, Mapped* m) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return Status::IOError(Errno("stat", path));
  m->n = size_t(st.st_size);
  if (m->n == 0) {
    m->p = nullptr;
    return Status::OK();
  }
  m->p = ::mmap(nullptr, m->n, PROT_READ, MAP_PRIVATE, fd, 0);
  if (m->p == MAP_FAILED) {
    m->p = nullptr;
    return Status::IOError(Errno("mmap", path));
  }
  return Status::OK();
}


// Sets bytes 18 and 19 (file format write/read version) to 1: rollback
// journal, so the file opens without a WAL (as restore does).
Status SetRollbackJournal(int fd, const std::string& path) {
  uint8_t one[2] = {1, 1};
  struct stat st;
  if (::fstat(fd, &st) != 0) return Status::IOError(Errno("stat", path));
  if (st.st_size < 100) return Status::OK();
  return PwriteAll(fd, one, 2, 18, path);
}

}  // namespace

// ---- checksums -----------------------------------------------------------------------

namespace {
struct IsoTable {
  uint64_t t[256];
  IsoTable() {
    for (int i = 0; i < 256; ++i) {
      uint64_t c = uint64_t(i);
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0xD800000000000000ull : c >> 1;
      t[i] = c;
    }
  }
};
const IsoTable& Table() {
  static const IsoTable table;
  return table;
}
}  // namespace

uint64_t Crc64Iso(const void* data, size_t n, uint64_t crc) {
  const uint64_t* t = Table().t;
  const uint8_t* p = static_cast<const uint8_t*>(data);
  crc = ~crc;
  for (size_t i = 0; i < n; ++i) crc = t[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
  return ~crc;
}

uint64_t LtxPageChecksum(uint32_t pgno, const uint8_t* page, size_t page_size) {
  uint8_t be[4] = {uint8_t(pgno >> 24), uint8_t(pgno >> 16), uint8_t(pgno >> 8), uint8_t(pgno)};
  return kLtxChecksumFlag | Crc64Iso(page, page_size, Crc64Iso(be, 4));
}

uint32_t LtxLockPgno(uint32_t page_size) {
  return page_size == 0 ? 0 : uint32_t(0x40000000u / page_size) + 1;
}

// ---- LZ4 frames ------------------------------------------------------------------------

Status Lz4FrameDecode(std::string_view in, uint64_t max_out, size_t* consumed,
                      const std::function<Status(const uint8_t*, size_t)>& sink) {
  LZ4F_dctx* ctx = nullptr;
  if (LZ4F_isError(LZ4F_createDecompressionContext(&ctx, LZ4F_VERSION)))
    return Status::IOError("lz4: cannot create a decompression context");
  std::unique_ptr<LZ4F_dctx, size_t (*)(LZ4F_dctx*)> guard(ctx, LZ4F_freeDecompressionContext);
  std::vector<uint8_t> buf(64 * 1024);
  size_t pos = 0;
  uint64_t produced = 0;
  for (;;) {
    size_t dst = buf.size();
    size_t src = in.size() - pos;
    size_t hint = LZ4F_decompress(ctx, buf.data(), &dst,
                                  reinterpret_cast<const uint8_t*>(in.data()) + pos, &src,
                                  nullptr);
    if (LZ4F_isError(hint))
      return Status::Corruption(std::string("lz4 frame: ") + LZ4F_getErrorName(hint));
    pos += src;
    if (dst > 0) {
      produced += dst;
      if (produced > max_out)
        return Status::Corruption("lz4 frame: decompresses to more than " +
                                  std::to_string(max_out) + " bytes");
      if (sink) TW_RETURN_IF_ERROR(sink(buf.data(), dst));
    }
    if (hint == 0) break;  // frame complete (content checksum verified if present)
    if (src == 0 && dst == 0) {
      if (pos >= in.size()) return Status::Corruption("lz4 frame: truncated");
      return Status::Corruption("lz4 frame: decoder made no progress");
    }
  }
  if (consumed) *consumed = pos;
  return Status::OK();
}

Status Lz4FrameEncode(std::string_view in, std::string* out) {
  LZ4F_preferences_t prefs;
  std::memset(&prefs, 0, sizeof(prefs));
  prefs.frameInfo.contentChecksumFlag = LZ4F_contentChecksumEnabled;
  prefs.frameInfo.blockSizeID = LZ4F_max64KB;
  size_t bound = LZ4F_compressFrameBound(in.size(), &prefs);
  out->resize(bound);
  size_t n = LZ4F_compressFrame(out->data(), bound, in.data(), in.size(), &prefs);
  if (LZ4F_isError(n)) return Status::IOError(std::string("lz4: ") + LZ4F_getErrorName(n));
  out->resize(n);
  return Status::OK();
}

// ---- LTX ---------------------------------------------------------------------------------

Status ParseLtxHeader(std::string_view bytes, LtxHeader* out) {
  if (bytes.size() < kLtxHeaderSize)
    return Status::Corruption("LTX: " + std::to_string(bytes.size()) +
                              " bytes, shorter than the 100-byte header");
  const uint8_t* p = reinterpret_cast<const uint8_t*>(bytes.data());
  if (std::memcmp(p, "LTX1", 4) != 0) return Status::Corruption("LTX: bad magic (not LTX1)");
  LtxHeader h;
  h.flags = Be32(p + 4);
  h.page_size = Be32(p + 8);
  h.commit = Be32(p + 12);
  h.min_txid = Be64(p + 16);
  h.max_txid = Be64(p + 24);
  h.timestamp_ms = int64_t(Be64(p + 32));
  h.pre_apply_checksum = Be64(p + 40);
  h.wal_offset = int64_t(Be64(p + 48));
  h.wal_size = int64_t(Be64(p + 56));
  h.wal_salt1 = Be32(p + 64);
  h.wal_salt2 = Be32(p + 68);
  h.node_id = Be64(p + 72);
  if ((h.flags & ~kLtxFlagNoChecksum) != 0)
    return Status::Corruption("LTX: unsupported header flags 0x" + Hex8(h.flags) +
                              " (encrypted or newer than this reader?)");
  if (!ValidPageSize(h.page_size))
    return Status::Corruption("LTX: invalid page size " + std::to_string(h.page_size));
  if (h.min_txid == 0 || h.max_txid == 0 || h.min_txid > h.max_txid)
    return Status::Corruption("LTX: invalid txid range " + Hex16(h.min_txid) + "-" +
                              Hex16(h.max_txid));
  if (h.wal_offset < 0 || h.wal_size < 0)
    return Status::Corruption("LTX: negative WAL offset or size");
  if (h.snapshot()) {
    if (h.pre_apply_checksum != 0)
      return Status::Corruption("LTX: snapshot with a pre-apply checksum");
  } else if (h.no_checksum()) {
    if (h.pre_apply_checksum != 0)
      return Status::Corruption("LTX: pre-apply checksum set with the no-checksum flag");
  } else if ((h.pre_apply_checksum & kLtxChecksumFlag) == 0) {
    return Status::Corruption("LTX: malformed pre-apply checksum " + Hex16(h.pre_apply_checksum));
  }
  *out = h;
  return Status::OK();
}

namespace {

constexpr uint8_t kLz4FrameMagic[4] = {0x04, 0x22, 0x4d, 0x18};

struct IndexEntry {
  uint32_t pgno;
  uint64_t offset, size;
};

// One pass over an LTX file in the given layout. on_page may be null.
Status WalkLtx(std::string_view bytes, LtxLayout layout, LtxInfo* info, const LtxPageFn& on_page) {
  LtxInfo r;
  TW_RETURN_IF_ERROR(ParseLtxHeader(bytes, &r.header));
  r.layout = layout;
  const LtxHeader& h = r.header;
  const uint8_t* p = reinterpret_cast<const uint8_t*>(bytes.data());
  const size_t n = bytes.size();
  if (n < kLtxHeaderSize + kLtxTrailerSize)
    return Status::Corruption("LTX: truncated (" + std::to_string(n) + " bytes)");
  const size_t end = n - kLtxTrailerSize;  // page block and index live in [100, end)
  const size_t ph = layout == LtxLayout::kEarly ? 4 : 6;
  const uint32_t ps = h.page_size;
  const uint32_t lock = LtxLockPgno(ps);
  uint64_t crc = Crc64Iso(p, kLtxHeaderSize);
  uint64_t snap_sum = 0;
  std::vector<uint8_t> page(ps);
  std::vector<IndexEntry> frames;
  size_t pos = kLtxHeaderSize;
  uint32_t prev = 0;
  for (;;) {
    if (end - pos < ph)
      return Status::Corruption("LTX: truncated page header at offset " + std::to_string(pos));
    const size_t frame_start = pos;
    uint32_t pgno = Be32(p + pos);
    uint16_t flags = layout == LtxLayout::kEarly ? 0 : Be16(p + pos + 4);
    crc = Crc64Iso(p + pos, ph, crc);
    pos += ph;
    if (pgno == 0) {
      if (flags != 0) return Status::Corruption("LTX: end marker with flags set");
      break;
    }
    const std::string where = "LTX page " + std::to_string(pgno) + " at offset " +
                              std::to_string(frame_start);
    if (pgno > h.commit)
      return Status::Corruption(where + ": beyond the database size " + std::to_string(h.commit));
    if (pgno == lock) return Status::Corruption(where + ": the lock page is never stored");
    if (pgno <= prev)
      return Status::Corruption(where + ": page numbers not increasing (after " +
                                std::to_string(prev) + ")");
    if (h.snapshot()) {
      uint32_t want = prev + 1 == lock ? prev + 2 : prev + 1;
      if (pgno != want)
        return Status::Corruption(where + ": snapshot skips page " + std::to_string(want));
    }
    if ((flags & ~uint16_t(1)) != 0)
      return Status::Corruption(where + ": unknown page flags 0x" + Hex8(flags));
    if (layout == LtxLayout::kEarly) {
      if (end - pos < ps) return Status::Corruption(where + ": truncated page");
      std::memcpy(page.data(), p + pos, ps);
      pos += ps;
    } else if (flags & 1) {  // v0.5.2: u32 size + LZ4 block
      if (end - pos < 4) return Status::Corruption(where + ": truncated size field");
      uint32_t sz = Be32(p + pos);
      crc = Crc64Iso(p + pos, 4, crc);
      pos += 4;
      if (sz == 0 || sz > end - pos || sz > uint32_t(LZ4_compressBound(int(ps))))
        return Status::Corruption(where + ": invalid compressed size " + std::to_string(sz));
      int got = LZ4_decompress_safe(reinterpret_cast<const char*>(p + pos),
                                    reinterpret_cast<char*>(page.data()), int(sz), int(ps));
      if (got != int(ps))
        return Status::Corruption(where + ": LZ4 block does not decompress to one page");
      pos += sz;
      r.block_pages++;
    } else {  // v0.5.0: one LZ4 frame
      size_t used = 0, filled = 0;
      Status s = Lz4FrameDecode(
          std::string_view(bytes.data() + pos, end - pos), ps, &used,
          [&](const uint8_t* d, size_t k) {
            std::memcpy(page.data() + filled, d, k);  // bounded by max_out = ps
            filled += k;
            return Status::OK();
          });
      if (!s.ok()) return s.Prefix(where);
      if (filled != ps) return Status::Corruption(where + ": LZ4 frame is not one page");
      pos += used;
      r.frame_pages++;
    }
    crc = Crc64Iso(page.data(), ps, crc);
    if (h.snapshot()) snap_sum ^= LtxPageChecksum(pgno, page.data(), ps);
    frames.push_back({pgno, frame_start, pos - frame_start});
    r.pages++;
    r.max_pgno = pgno;
    prev = pgno;
    if (on_page) TW_RETURN_IF_ERROR(on_page(pgno, page.data()));
  }
  if (h.snapshot()) {
    uint32_t want_last = h.commit == lock ? h.commit - 1 : h.commit;
    if (prev != want_last)
      return Status::Corruption("LTX snapshot holds pages 1.." + std::to_string(prev) +
                                " but the database has " + std::to_string(h.commit));
  }
  if (layout == LtxLayout::kCurrent) {
    // Page index: uvarint (pgno, offset, size) triples, uvarint 0, u64 size.
    const size_t index_start = pos;
    size_t i = 0;
    for (;;) {
      uint64_t pg = 0, off = 0, sz = 0;
      if (!GetUvarint(p, end, &pos, &pg))
        return Status::Corruption("LTX: truncated or malformed page index");
      if (pg == 0) break;
      if (!GetUvarint(p, end, &pos, &off) || !GetUvarint(p, end, &pos, &sz))
        return Status::Corruption("LTX: truncated or malformed page index");
      if (i >= frames.size() || frames[i].pgno != pg || frames[i].offset != off ||
          frames[i].size != sz)
        return Status::Corruption("LTX: page index entry " + std::to_string(i) +
                                  " (page " + std::to_string(pg) +
                                  ") does not match the page frames");
      ++i;
    }
    if (i != frames.size())
      return Status::Corruption("LTX: page index lists " + std::to_string(i) + " of " +
                                std::to_string(frames.size()) + " pages");
    if (end - pos < 8) return Status::Corruption("LTX: truncated page index size");
    uint64_t isz = Be64(p + pos);
    if (isz != pos - index_start)
      return Status::Corruption("LTX: page index size field " + std::to_string(isz) +
                                " != " + std::to_string(pos - index_start));
    pos += 8;
    crc = Crc64Iso(p + index_start, pos - index_start, crc);
  }
  if (pos != end)
    return Status::Corruption("LTX: " + std::to_string(end - pos) +
                              " unexpected bytes before the trailer");
  r.post_apply_checksum = Be64(p + end);
  r.file_checksum = Be64(p + end + 8);
  crc = Crc64Iso(p + end, 8, crc);
  if ((r.file_checksum & kLtxChecksumFlag) == 0)
    return Status::Corruption("LTX: malformed file checksum");
  if ((crc | kLtxChecksumFlag) != r.file_checksum)
    return Status::Corruption("LTX: file checksum mismatch (stored " + Hex16(r.file_checksum) +
                              ", computed " + Hex16(crc | kLtxChecksumFlag) + ")");
  if (h.no_checksum()) {
    if (r.post_apply_checksum != 0)
      return Status::Corruption("LTX: post-apply checksum set with the no-checksum flag");
  } else {
    if ((r.post_apply_checksum & kLtxChecksumFlag) == 0)
      return Status::Corruption("LTX: malformed post-apply checksum");
    if (h.snapshot() && (snap_sum | kLtxChecksumFlag) != r.post_apply_checksum)
      return Status::Corruption("LTX: snapshot pages do not match its post-apply checksum");
  }
  *info = r;
  return Status::OK();
}

}  // namespace

Status DecodeLtx(std::string_view bytes, LtxInfo* info, const LtxPageFn& on_page) {
  LtxHeader h;
  TW_RETURN_IF_ERROR(ParseLtxHeader(bytes, &h));
  // Which layout? The first page frame tells: a 6-byte header whose flags are
  // 1 (LZ4 block), or 0 followed by an LZ4 frame magic, is the current
  // layout; anything else is the early one. An empty page block is early only
  // if the trailer follows the 4-byte end marker directly.
  const uint8_t* p = reinterpret_cast<const uint8_t*>(bytes.data());
  const size_t n = bytes.size();
  LtxLayout first = LtxLayout::kEarly;
  if (n >= kLtxHeaderSize + 10) {
    uint32_t pgno = Be32(p + 100);
    uint16_t flags = Be16(p + 104);
    if (pgno == 0) {
      first = n == kLtxHeaderSize + 4 + kLtxTrailerSize ? LtxLayout::kEarly : LtxLayout::kCurrent;
    } else if (flags == 1 || (flags == 0 && std::memcmp(p + 106, kLz4FrameMagic, 4) == 0)) {
      first = LtxLayout::kCurrent;
    }
  }
  LtxLayout second = first == LtxLayout::kEarly ? LtxLayout::kCurrent : LtxLayout::kEarly;
  LtxInfo tmp;
  Status s1 = WalkLtx(bytes, first, &tmp, nullptr);
  LtxLayout chosen = first;
  if (!s1.ok()) {
    // A page's bytes can look like the other layout's frame header; the file
    // checksum decides. Report the first layout's error if neither works.
    if (!WalkLtx(bytes, second, &tmp, nullptr).ok()) return s1;
    chosen = second;
  }
  if (!on_page) {
    *info = tmp;
    return Status::OK();
  }
  return WalkLtx(bytes, chosen, info, on_page);
}

Status EncodeLtx(const LtxHeader& h, const std::vector<std::pair<uint32_t, const uint8_t*>>& pages,
                 uint64_t post_apply_checksum, const LtxEncodeOptions& o, std::string* out) {
  if (!ValidPageSize(h.page_size)) return Status::InvalidArgument("EncodeLtx: bad page size");
  std::string f;
  f.append("LTX1", 4);
  PutBe32(&f, h.flags);
  PutBe32(&f, h.page_size);
  PutBe32(&f, h.commit);
  PutBe64(&f, h.min_txid);
  PutBe64(&f, h.max_txid);
  PutBe64(&f, uint64_t(h.timestamp_ms));
  PutBe64(&f, h.pre_apply_checksum);
  PutBe64(&f, uint64_t(h.wal_offset));
  PutBe64(&f, uint64_t(h.wal_size));
  PutBe32(&f, h.wal_salt1);
  PutBe32(&f, h.wal_salt2);
  PutBe64(&f, h.node_id);
  f.append(20, '\0');
  uint64_t crc = Crc64Iso(f.data(), f.size());
  std::string index;
  const size_t ps = h.page_size;
  std::vector<char> block(static_cast<size_t>(LZ4_compressBound(static_cast<int>(ps))));
  for (const auto& [pgno, data] : pages) {
    size_t start = f.size();
    std::string hdr;
    PutBe32(&hdr, pgno);
    if (o.early) {
      f += hdr;
      f.append(reinterpret_cast<const char*>(data), ps);
      crc = Crc64Iso(f.data() + start, f.size() - start, crc);
      continue;
    }
    PutBe16(&hdr, o.lz4_frames ? 0 : 1);
    crc = Crc64Iso(hdr.data(), hdr.size(), crc);
    f += hdr;
    if (o.lz4_frames) {
      std::string z;
      TW_RETURN_IF_ERROR(Lz4FrameEncode(std::string_view(reinterpret_cast<const char*>(data), ps), &z));
      f += z;
    } else {
      int k = LZ4_compress_default(reinterpret_cast<const char*>(data), block.data(), int(ps),
                                   int(block.size()));
      if (k <= 0) return Status::IOError("EncodeLtx: LZ4 block compression failed");
      std::string sz;
      PutBe32(&sz, uint32_t(k));
      crc = Crc64Iso(sz.data(), 4, crc);
      f += sz;
      f.append(block.data(), size_t(k));
    }
    crc = Crc64Iso(data, ps, crc);
    PutUvarint(&index, pgno);
    PutUvarint(&index, start);
    PutUvarint(&index, f.size() - start);
  }
  std::string endm(o.early ? 4 : 6, '\0');
  crc = Crc64Iso(endm.data(), endm.size(), crc);
  f += endm;
  if (!o.early) {
    PutUvarint(&index, 0);
    PutBe64(&index, index.size());
    crc = Crc64Iso(index.data(), index.size(), crc);
    f += index;
  }
  std::string tr;
  PutBe64(&tr, post_apply_checksum);
  crc = Crc64Iso(tr.data(), 8, crc);
  PutBe64(&tr, crc | kLtxChecksumFlag);
  f += tr;
  *out = std::move(f);
  return Status::OK();
}

// ---- replica restore --------------------------------------------------------------------

namespace {

// The database being rebuilt: a local file plus the LTX rolling checksum.
class Builder {
 public:
  Builder(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}

  Status SetPageSize(uint32_t ps) {
    if (page_size_ != 0 && page_size_ != ps)
      return Status::Corruption("page size changes from " + std::to_string(page_size_) + " to " +
                                std::to_string(ps));
    page_size_ = ps;
    if (zero_.size() != ps) zero_.assign(ps, 0);
    return Status::OK();
  }
  uint32_t page_size() const { return page_size_; }
  uint32_t pages() const { return uint32_t(terms_.size()); }

  // v0.3 sources carry no database checksum: skip computing one.
  void set_track_checksum(bool on) { track_ = on; }

  Status WritePage(uint32_t pgno, const uint8_t* data) {
    if (pgno == 0) return Status::Corruption("page number 0");
    TW_RETURN_IF_ERROR(PwriteAll(fd_, data, page_size_, uint64_t(pgno - 1) * page_size_, path_));
    uint64_t t = (!track_ || pgno == LtxLockPgno(page_size_))
                     ? 0
                     : LtxPageChecksum(pgno, data, page_size_);
    if (pgno > terms_.size()) {
      Grow(pgno - 1);
      terms_.push_back(t);
      sum_ ^= t;
      return Status::OK();
    }
    sum_ ^= terms_[pgno - 1] ^ t;
    terms_[pgno - 1] = t;
    return Status::OK();
  }

  Status Truncate(uint32_t pages) {
    if (pages < terms_.size()) {
      for (size_t i = pages; i < terms_.size(); ++i) sum_ ^= terms_[i];
      terms_.resize(pages);
    } else if (pages > terms_.size()) {
      Grow(pages);
    }
    if (::ftruncate(fd_, off_t(uint64_t(pages) * page_size_)) != 0)
      return Status::IOError(Errno("truncate", path_));
    return Status::OK();
  }

  uint64_t checksum() const { return sum_ | kLtxChecksumFlag; }

 private:
  void Grow(uint32_t pages) {
    uint32_t lock = LtxLockPgno(page_size_);
    for (uint32_t p = uint32_t(terms_.size()) + 1; p <= pages; ++p) {
      uint64_t t = (!track_ || p == lock) ? 0 : LtxPageChecksum(p, zero_.data(), page_size_);
      terms_.push_back(t);
      sum_ ^= t;
    }
  }

  int fd_;
  std::string path_;
  uint32_t page_size_ = 0;
  std::vector<uint64_t> terms_;
  std::vector<uint8_t> zero_;
  uint64_t sum_ = 0;
  bool track_ = true;
};

// How many pages a file may add without carrying them (the lock page, and
// some slack): any more is a corrupt commit field.
constexpr uint32_t kMaxUncarriedGrowth = 64;

struct LtxObject {
  int level = 0;
  uint64_t min = 0, max = 0;
  std::string key;
  uint64_t size = 0;
};

bool ParseHexN(std::string_view s, size_t n, uint64_t* v) {
  if (s.size() != n) return false;
  uint64_t x = 0;
  for (char c : s) {
    int d;
    if (c >= '0' && c <= '9') d = c - '0';
    else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
    else return false;
    x = (x << 4) | uint64_t(d);
  }
  *v = x;
  return true;
}

// "ltx/{level}/{min}-{max}.ltx" or "ltx/levels/{level}/...".
bool ParseLtxKey(const std::string& key, LtxObject* o) {
  std::string_view k = key;
  if (k.substr(0, 4) != "ltx/") return false;
  k.remove_prefix(4);
  if (k.substr(0, 7) == "levels/") k.remove_prefix(7);
  size_t slash = k.find('/');
  if (slash == std::string_view::npos || slash == 0 || slash > 3) return false;
  int level = 0;
  for (char c : k.substr(0, slash)) {
    if (c < '0' || c > '9') return false;
    level = level * 10 + (c - '0');
  }
  std::string_view name = k.substr(slash + 1);
  if (name.size() != 37 || name[16] != '-' || name.substr(33) != ".ltx") return false;
  if (!ParseHexN(name.substr(0, 16), 16, &o->min) || !ParseHexN(name.substr(17, 16), 16, &o->max))
    return false;
  if (o->min == 0 || o->min > o->max) return false;
  o->level = level;
  o->key = key;
  return true;
}

// Downloads `key` into a temporary file in `dir` and maps it.
Status Fetch(ObjectStore* src, const std::string& key, const std::string& dir, TempFile* tf,
             Mapped* m, SourceResult* r) {
  TW_RETURN_IF_ERROR(MakeTemp(dir + "/.tw-migrate-XXXXXX", &tf->path, &tf->fd));
  TW_RETURN_IF_ERROR(src->GetToFile(key, tf->path).Prefix("download " + key));
  ::close(tf->fd);
  tf->fd = ::open(tf->path.c_str(), O_RDONLY | O_CLOEXEC);
  if (tf->fd < 0) return Status::IOError(Errno("open", tf->path));
  TW_RETURN_IF_ERROR(MapFile(tf->fd, tf->path, m));
  r->objects_read++;
  r->bytes_read += m->n;
  return Status::OK();
}

Status RestoreLtx(ObjectStore* src, const std::vector<ObjectInfo>& listing,
                  const SourceOptions& o, const std::string& dir, Builder* b, SourceResult* r) {
  std::vector<LtxObject> files;
  for (const auto& oi : listing) {
    LtxObject f;
    if (ParseLtxKey(oi.key, &f)) {
      f.size = oi.size;
      files.push_back(f);
    }
  }
  if (files.empty()) return Status::NotFound("no LTX files under ltx/");
  uint64_t latest = 0;
  for (const auto& f : files) latest = std::max(latest, f.max);
  uint64_t target = latest;
  if (o.target_txid != 0) {
    if (o.target_txid > latest)
      return Status::NotFound("txid " + Hex16(o.target_txid) + " is beyond the replica (latest " +
                              Hex16(latest) + ")");
    target = o.target_txid;
  }
  if (o.target_time_ms != 0) {
    // The newest file (by max txid, lowest level first) written at or before
    // the time decides the target txid.
    std::vector<LtxObject> by_max = files;
    std::sort(by_max.begin(), by_max.end(), [](const LtxObject& a, const LtxObject& b2) {
      return a.max != b2.max ? a.max > b2.max : a.level < b2.level;
    });
    uint64_t found = 0;
    for (const auto& f : by_max) {
      if (f.max > target) continue;
      TempFile tf;
      Mapped m;
      TW_RETURN_IF_ERROR(Fetch(src, f.key, dir, &tf, &m, r));
      LtxHeader h;
      TW_RETURN_IF_ERROR(ParseLtxHeader(m.view(), &h).Prefix(f.key));
      if (h.timestamp_ms <= o.target_time_ms) {
        found = f.max;
        break;
      }
    }
    if (found == 0) return Status::NotFound("no LTX file was written at or before the timestamp");
    target = found;
  }
  // Plan: the newest snapshot (min txid 1) at or before the target, then
  // repeatedly the file reaching furthest that continues the state.
  const LtxObject* snap = nullptr;
  for (const auto& f : files) {
    if (f.min != 1 || f.max > target) continue;
    if (!snap || f.max > snap->max || (f.max == snap->max && f.level > snap->level)) snap = &f;
  }
  if (!snap)
    return Status::NotFound("no LTX snapshot (a file starting at txid 1) at or before txid " +
                            Hex16(target));
  std::vector<const LtxObject*> plan = {snap};
  uint64_t cur = snap->max;
  while (cur < target) {
    const LtxObject* best = nullptr;
    for (const auto& f : files) {
      if (f.min > cur + 1 || f.max <= cur || f.max > target) continue;
      if (!best || f.max > best->max ||
          (f.max == best->max && (f.min == cur + 1) > (best->min == cur + 1)))
        best = &f;
    }
    if (!best)
      return Status::NotFound("gap in the LTX files: nothing continues txid " + Hex16(cur) +
                              " (target " + Hex16(target) + ")");
    plan.push_back(best);
    cur = best->max;
  }
  // Apply.
  cur = 0;
  for (const LtxObject* f : plan) {
    TempFile tf;
    Mapped m;
    TW_RETURN_IF_ERROR(Fetch(src, f->key, dir, &tf, &m, r));
    LtxHeader h;
    Status s = ParseLtxHeader(m.view(), &h);
    if (!s.ok()) return s.Prefix(f->key);
    if (h.min_txid != f->min || h.max_txid != f->max)
      return Status::Corruption(f->key + ": header txids " + Hex16(h.min_txid) + "-" +
                                Hex16(h.max_txid) + " do not match the name");
    TW_RETURN_IF_ERROR(b->SetPageSize(h.page_size).Prefix(f->key));
    if (!h.snapshot() && !h.no_checksum() && h.min_txid == cur + 1 &&
        h.pre_apply_checksum != b->checksum())
      return Status::Corruption(f->key + ": pre-apply checksum " + Hex16(h.pre_apply_checksum) +
                                " does not match the database after txid " + Hex16(cur) + " (" +
                                Hex16(b->checksum()) + ")");
    const uint32_t before = b->pages();
    LtxInfo info;
    s = DecodeLtx(m.view(), &info, [&](uint32_t pgno, const uint8_t* page) {
      return b->WritePage(pgno, page);
    });
    if (!s.ok()) return s.Prefix(f->key);
    if (uint64_t(h.commit) > uint64_t(std::max(before, info.max_pgno)) + kMaxUncarriedGrowth)
      return Status::Corruption(f->key + ": database size " + std::to_string(h.commit) +
                                " pages, far beyond the pages it carries");
    TW_RETURN_IF_ERROR(b->Truncate(h.commit));
    if (!h.no_checksum()) {
      uint64_t want = h.commit == 0 ? kLtxChecksumFlag : info.post_apply_checksum;
      if (b->checksum() != want)
        return Status::Corruption(f->key + ": database checksum after applying is " +
                                  Hex16(b->checksum()) + ", the file says " + Hex16(want));
    }
    cur = h.max_txid;
    r->txid = h.max_txid;
    r->checksum = info.post_apply_checksum;
    r->time_ms = h.timestamp_ms;
  }
  r->format = "ltx";
  r->position = "txid " + Hex16(r->txid) + " checksum " + Hex16(r->checksum) + " (" +
                std::to_string(plan.size()) + " LTX files)";
  return Status::OK();
}

struct V3Wal {
  uint64_t index, offset;
  std::string key;
};

Status RestoreV3(ObjectStore* src, const std::vector<ObjectInfo>& listing, const SourceOptions& o,
                 const std::string& dir, Builder* b, int fd, const std::string& path,
                 SourceResult* r) {
  if (o.target_time_ms != 0 || o.target_txid != 0)
    return Status::InvalidArgument(
        "--timestamp/--txid are not supported for v0.3 replicas (their objects carry no "
        "times or txids); the latest state is migrated");
  // generations/{gen}/snapshots/{index}.snapshot.lz4, .../wal/{index}_{offset}.wal.lz4
  std::map<std::string, std::pair<std::map<uint64_t, std::string>, std::vector<V3Wal>>> gens;
  for (const auto& oi : listing) {
    std::string_view k = oi.key;
    if (k.substr(0, 12) != "generations/") continue;
    k.remove_prefix(12);
    if (k.size() < 18 || k[16] != '/') continue;
    std::string gen(k.substr(0, 16));
    uint64_t dummy;
    if (!ParseHexN(gen, 16, &dummy)) continue;
    std::string_view rest = k.substr(17);
    uint64_t idx = 0, off = 0;
    if (rest.substr(0, 10) == "snapshots/" && rest.size() == 10 + 8 + 13 &&
        rest.substr(18) == ".snapshot.lz4" && ParseHexN(rest.substr(10, 8), 8, &idx)) {
      gens[gen].first[idx] = oi.key;
    } else if (rest.substr(0, 4) == "wal/" && rest.size() == 4 + 17 + 8 &&
               rest.substr(21) == ".wal.lz4" && rest[12] == '_' &&
               ParseHexN(rest.substr(4, 8), 8, &idx) && ParseHexN(rest.substr(13, 8), 8, &off)) {
      gens[gen].second.push_back({idx, off, oi.key});
    }
  }
  if (gens.empty()) return Status::NotFound("no v0.3 generations under generations/");
  std::string gen = o.generation;
  if (gen.empty()) {
    if (gens.size() > 1) {
      std::string list;
      for (const auto& [g, _] : gens) list += (list.empty() ? "" : ", ") + g;
      return Status::InvalidArgument(
          "the v0.3 replica has " + std::to_string(gens.size()) +
          " generations (" + list + "); choose one with --generation (v0.3 ids are random, "
          "so the newest cannot be told from the keys)");
    }
    gen = gens.begin()->first;
  }
  auto git = gens.find(gen);
  if (git == gens.end()) return Status::NotFound("no v0.3 generation " + gen);
  auto& [snaps, wals] = git->second;
  if (snaps.empty()) return Status::NotFound("generation " + gen + " has no snapshot");
  const uint64_t snap_index = snaps.rbegin()->first;
  const std::string& snap_key = snaps.rbegin()->second;

  // Snapshot: one LZ4 frame holding the database file.
  {
    TempFile tf;
    Mapped m;
    TW_RETURN_IF_ERROR(Fetch(src, snap_key, dir, &tf, &m, r));
    uint64_t written = 0;
    size_t used = 0;
    Status s = Lz4FrameDecode(m.view(), uint64_t(1) << 44, &used,
                              [&](const uint8_t* d, size_t k) {
                                Status ws = PwriteAll(fd, d, k, written, path);
                                written += k;
                                return ws;
                              });
    if (!s.ok()) return s.Prefix(snap_key);
    if (used != m.n) return Status::Corruption(snap_key + ": bytes after the LZ4 frame");
    uint8_t hdr[100];
    size_t got = 0;
    TW_RETURN_IF_ERROR(PreadAll(fd, hdr, sizeof(hdr), 0, path, &got));
    if (got < 100 || std::memcmp(hdr, "SQLite format 3", 16) != 0)
      return Status::Corruption(snap_key + ": not a SQLite database");
    uint32_t ps = Be16(hdr + 16) == 1 ? 65536 : Be16(hdr + 16);
    if (!ValidPageSize(ps)) return Status::Corruption(snap_key + ": invalid page size");
    if (written % ps != 0)
      return Status::Corruption(snap_key + ": size " + std::to_string(written) +
                                " is not a multiple of the page size");
    TW_RETURN_IF_ERROR(b->SetPageSize(ps));
    b->set_track_checksum(false);  // v0.3 has no database checksum; only sizes are tracked
    TW_RETURN_IF_ERROR(b->Truncate(uint32_t(written / ps)));
  }
  r->format = "v0.3";
  r->position = "generation " + gen + " snapshot index " + Hex8(snap_index);

  // WAL: per index >= the snapshot's, segments contiguous from offset 0.
  std::sort(wals.begin(), wals.end(), [](const V3Wal& a, const V3Wal& c) {
    return a.index != c.index ? a.index < c.index : a.offset < c.offset;
  });
  const uint32_t ps = b->page_size();
  size_t i = 0;
  while (i < wals.size() && wals[i].index < snap_index) ++i;
  uint64_t prev_index = snap_index;
  bool first_index = true;
  while (i < wals.size()) {
    const uint64_t index = wals[i].index;
    if (!first_index && index != prev_index + 1)
      return Status::NotFound("gap in WAL indexes of generation " + gen + ": " +
                              Hex8(prev_index) + " then " + Hex8(index));
    if (first_index && index != snap_index)
      return Status::NotFound("WAL of generation " + gen + " starts at index " + Hex8(index) +
                              ", after the snapshot's " + Hex8(snap_index));
    first_index = false;
    std::string wal;
    uint64_t last_offset = 0;
    for (; i < wals.size() && wals[i].index == index; ++i) {
      const V3Wal& w = wals[i];
      if (w.offset != wal.size())
        return Status::Corruption(w.key + ": WAL segment at offset " + std::to_string(w.offset) +
                                  " but the previous segments end at " +
                                  std::to_string(wal.size()));
      TempFile tf;
      Mapped m;
      TW_RETURN_IF_ERROR(Fetch(src, w.key, dir, &tf, &m, r));
      size_t used = 0;
      Status s = Lz4FrameDecode(m.view(), kMaxV3WalBytes - wal.size(), &used,
                                [&](const uint8_t* d, size_t k) {
                                  wal.append(reinterpret_cast<const char*>(d), k);
                                  return Status::OK();
                                });
      if (!s.ok()) return s.Prefix(w.key);
      if (used != m.n) return Status::Corruption(w.key + ": bytes after the LZ4 frame");
      last_offset = w.offset;
    }
    const std::string where = "generation " + gen + " WAL index " + Hex8(index);
    if (wal.size() < wal::kHeaderSize)
      return Status::Corruption(where + ": shorter than a WAL header");
    wal::Header wh;
    if (!wal::ParseHeader(reinterpret_cast<const uint8_t*>(wal.data()), &wh))
      return Status::Corruption(where + ": invalid WAL header (magic, version or checksum)");
    if (wh.page_size != ps)
      return Status::Corruption(where + ": WAL page size " + std::to_string(wh.page_size) +
                                " != database page size " + std::to_string(ps));
    const size_t fsz = wal::kFrameHeaderSize + ps;
    if ((wal.size() - wal::kHeaderSize) % fsz != 0)
      return Status::Corruption(where + ": " + std::to_string(wal.size()) +
                                " bytes is not a whole number of frames");
    const uint32_t total = uint32_t((wal.size() - wal::kHeaderSize) / fsz);
    wal::Cursor from;
    from.salt1 = wh.salt1;
    from.salt2 = wh.salt2;
    from.cksum1 = wh.cksum1;
    from.cksum2 = wh.cksum2;
    Status apply;
    uint32_t committed = 0, tail = 0;
    wal::ReadFn read = [&](void* buf, size_t n, uint64_t off) -> long {
      if (off >= wal.size()) return 0;
      size_t k = std::min<uint64_t>(n, wal.size() - off);
      std::memcpy(buf, wal.data() + off, k);
      return long(k);
    };
    wal::Scan(wh, from, UINT32_MAX, read,
              [&](const wal::Txn& t) {
                for (size_t j = 0; j < t.pgnos.size() && apply.ok(); ++j) {
                  if (t.page_offsets[j] + ps > wal.size()) {
                    apply = Status::Corruption(where + ": page beyond the WAL");
                    break;
                  }
                  if (t.pgnos[j] > b->pages() + kMaxUncarriedGrowth &&
                      t.pgnos[j] > t.db_size) {
                    apply = Status::Corruption(where + ": page number out of range");
                    break;
                  }
                  apply = b->WritePage(
                      t.pgnos[j], reinterpret_cast<const uint8_t*>(wal.data()) + t.page_offsets[j]);
                }
                if (apply.ok()) {
                  if (uint64_t(t.db_size) > uint64_t(b->pages()) + kMaxUncarriedGrowth)
                    apply = Status::Corruption(where + ": database size out of range");
                  else
                    apply = b->Truncate(t.db_size);
                }
                committed = t.end.frame;
                return apply.ok();
              },
              &tail);
    if (!apply.ok()) return apply;
    if (committed + tail != total)
      return Status::Corruption(where + ": frame " + std::to_string(committed + tail + 1) +
                                " of " + std::to_string(total) +
                                " fails its salt or checksum check");
    if (tail > 0)
      r->warnings.push_back(where + ": " + std::to_string(tail) +
                            " frames after the last commit ignored (uncommitted)");
    r->position = "generation " + gen + " index " + Hex8(index) + " offset " +
                  Hex8(wal::kHeaderSize + uint64_t(committed) * fsz) + " (last segment at " +
                  Hex8(last_offset) + ")";
    prev_index = index;
  }
  return Status::OK();
}

}  // namespace

Status RestoreSource(ObjectStore* src, const SourceOptions& o, const std::string& out_path,
                     SourceResult* r) {
  *r = SourceResult();
  if (out_path.empty()) return Status::InvalidArgument("no output path");
  struct stat st;
  if (::stat(out_path.c_str(), &st) == 0)
    return Status::InvalidArgument("output " + out_path + " already exists");
  const std::string dir = o.work_dir.empty() ? DirOf(out_path) : o.work_dir;
  std::vector<ObjectInfo> listing;
  TW_RETURN_IF_ERROR(src->List("", &listing).Prefix("list " + src->url()));
  bool has_ltx = false, has_v3 = false;
  for (const auto& oi : listing) {
    if (oi.key.rfind("ltx/", 0) == 0) has_ltx = true;
    if (oi.key.rfind("generations/", 0) == 0) has_v3 = true;
  }
  SourceFormat fmt = o.format;
  if (fmt == SourceFormat::kAuto) {
    if (has_ltx) fmt = SourceFormat::kLtx;
    else if (has_v3) fmt = SourceFormat::kV3;
    else
      return Status::NotFound("no Litestream replica at " + src->url() +
                              " (neither ltx/ nor generations/)");
    if (has_ltx && has_v3)
      r->warnings.push_back("both ltx/ (current) and generations/ (v0.3) exist; using ltx/");
  }
  TempFile out;
  TW_RETURN_IF_ERROR(MakeTemp(out_path + ".tmp-XXXXXX", &out.path, &out.fd));
  Builder b(out.fd, out.path);
  Status s = fmt == SourceFormat::kLtx
                 ? RestoreLtx(src, listing, o, dir, &b, r)
                 : RestoreV3(src, listing, o, dir, &b, out.fd, out.path, r);
  if (!s.ok()) return s;
  r->page_size = b.page_size();
  r->pages = b.pages();
  if (r->pages == 0) return Status::Corruption("the source database is empty (0 pages)");
  TW_RETURN_IF_ERROR(SetRollbackJournal(out.fd, out.path));
  if (::fsync(out.fd) != 0) return Status::IOError(Errno("fsync", out.path));
  TW_RETURN_IF_ERROR(tw::IntegrityCheck(out.path).Prefix("migrated database"));
  if (::link(out.path.c_str(), out_path.c_str()) != 0)
    return Status::IOError(Errno("create", out_path));
  return Status::OK();
}

// ---- tenantwal side ---------------------------------------------------------------------

std::string MetadataValue(std::string_view s) {
  std::string v;
  for (char c : s) {
    if (v.size() >= 200) break;
    v += (c >= 0x20 && c <= 0x7e) ? c : '?';
  }
  while (!v.empty() && v.back() == ' ') v.pop_back();
  while (!v.empty() && v.front() == ' ') v.erase(v.begin());
  return v;
}

Status UploadDatabaseSnapshot(ObjectStore* dst, const std::string& tenant, const std::string& db,
                              const std::string& db_path, int64_t commit_us,
                              const std::string& parent,
                              const std::map<std::string, std::string>& metadata,
                              SnapshotUpload* out) {
  if (!ValidName(tenant) || !ValidName(db))
    return Status::InvalidArgument("invalid tenant or database name");
  TempFile in;
  in.keep = true;  // not ours to delete
  in.path = db_path;
  in.fd = ::open(db_path.c_str(), O_RDONLY | O_CLOEXEC);
  if (in.fd < 0) return Status::IOError(Errno("open", db_path));
  uint8_t hdr[100];
  size_t got = 0;
  TW_RETURN_IF_ERROR(PreadAll(in.fd, hdr, sizeof(hdr), 0, db_path, &got));
  if (got < 100 || std::memcmp(hdr, "SQLite format 3", 16) != 0)
    return Status::InvalidArgument(db_path + " is not a SQLite database");
  uint32_t ps = Be16(hdr + 16) == 1 ? 65536 : Be16(hdr + 16);
  if (!ValidPageSize(ps)) return Status::Corruption(db_path + ": invalid page size");
  struct stat st;
  if (::fstat(in.fd, &st) != 0) return Status::IOError(Errno("stat", db_path));
  if (uint64_t(st.st_size) % ps != 0)
    return Status::Corruption(db_path + ": size is not a multiple of the page size");
  uint64_t npages = uint64_t(st.st_size) / ps;
  if (npages == 0 || npages > UINT32_MAX) return Status::Corruption(db_path + ": bad size");

  int64_t now = 0;
  {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    now = int64_t(ts.tv_sec) * 1000000 + ts.tv_nsec / 1000;
  }
  SnapshotHeader sh;
  sh.tenant = tenant;
  sh.db = db;
  sh.generation = NewGenerationId();
  sh.parent_generation = parent;
  sh.txid = 0;
  sh.page_size = ps;
  sh.commit_us = commit_us > 0 ? commit_us : now;
  sh.created_us = now;
  TempFile spool;
  TW_RETURN_IF_ERROR(MakeTemp(db_path + ".twsnap-XXXXXX", &spool.path, &spool.fd));
  ::close(spool.fd);
  spool.fd = -1;
  SnapshotWriter w;
  TW_RETURN_IF_ERROR(w.Open(spool.path, sh));
  std::vector<uint8_t> page(ps);
  for (uint64_t p = 1; p <= npages; ++p) {
    Status s = PreadAll(in.fd, page.data(), ps, (p - 1) * ps, db_path, &got);
    if (s.ok() && got != ps) s = Status::IOError(db_path + ": short read (file changed?)");
    if (s.ok()) s = w.AddPage(page.data());
    if (!s.ok()) {
      w.Abandon();
      return s;
    }
  }
  uint64_t bytes = 0;
  TW_RETURN_IF_ERROR(w.Finish(true, &bytes));
  const std::string key = SnapshotKey(tenant, db, sh.generation, 0);
  std::map<std::string, std::string> meta = metadata;
  meta["tenantwal-txid"] = "0";
  meta["tenantwal-commit-us"] = std::to_string(sh.commit_us);
  TW_RETURN_IF_ERROR(dst->PutFile(key, spool.path, meta).Prefix("upload " + key));
  SnapshotHeader back;
  {
    // Read the header back for the checksum it recorded.
    std::string head(kSnapshotHeaderSize, '\0');
    int f = ::open(spool.path.c_str(), O_RDONLY | O_CLOEXEC);
    if (f >= 0) {
      size_t g = 0;
      if (PreadAll(f, reinterpret_cast<uint8_t*>(head.data()), head.size(), 0, spool.path, &g)
              .ok() &&
          g == head.size())
        (void)ParseSnapshotHeader(head, &back);
      ::close(f);
    }
  }
  out->generation = sh.generation;
  out->key = key;
  out->page_size = ps;
  out->pages = uint32_t(npages);
  out->db_bytes = uint64_t(st.st_size);
  out->snapshot_bytes = bytes;
  out->checksum = back.checksum;
  return Status::OK();
}

Status CopyDatabase(const std::string& src_path, const std::string& out_path, uint32_t* pages,
                    uint32_t* page_size) {
  struct stat st;
  if (::stat(src_path.c_str(), &st) != 0) return Status::NotFound(Errno("stat", src_path));
  if (!S_ISREG(st.st_mode)) return Status::InvalidArgument(src_path + " is not a regular file");
  {
    int f = ::open(src_path.c_str(), O_RDONLY | O_CLOEXEC);
    if (f < 0) return Status::IOError(Errno("open", src_path));
    uint8_t hdr[16] = {};
    size_t got = 0;
    Status s = PreadAll(f, hdr, 16, 0, src_path, &got);
    ::close(f);
    TW_RETURN_IF_ERROR(s);
    if (got < 16 || std::memcmp(hdr, "SQLite format 3", 16) != 0)
      return Status::InvalidArgument(src_path + " is not a SQLite database");
  }
  if (::stat(out_path.c_str(), &st) == 0)
    return Status::InvalidArgument("output " + out_path + " already exists");
  TempFile out;
  TW_RETURN_IF_ERROR(MakeTemp(out_path + ".tmp-XXXXXX", &out.path, &out.fd));
  sqlite3 *sdb = nullptr, *ddb = nullptr;
  auto close_all = [&] {
    sqlite3_close(sdb);
    sqlite3_close(ddb);
  };
  int rc = sqlite3_open_v2(src_path.c_str(), &sdb, SQLITE_OPEN_READONLY, nullptr);
  if (rc == SQLITE_OK) rc = sqlite3_open_v2(out.path.c_str(), &ddb, SQLITE_OPEN_READWRITE, nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = sqlite3_errstr(rc);
    close_all();
    return Status::IOError("open " + src_path + ": " + msg);
  }
  sqlite3_busy_timeout(sdb, 10000);
  sqlite3_backup* bk = sqlite3_backup_init(ddb, "main", sdb, "main");
  if (!bk) {
    std::string msg = sqlite3_errmsg(ddb);
    close_all();
    return Status::IOError("backup " + src_path + ": " + msg);
  }
  do {
    rc = sqlite3_backup_step(bk, -1);
    if (rc == SQLITE_BUSY || rc == SQLITE_LOCKED) sqlite3_sleep(50);
  } while (rc == SQLITE_OK || rc == SQLITE_BUSY || rc == SQLITE_LOCKED);
  sqlite3_backup_finish(bk);
  if (rc != SQLITE_DONE) {
    std::string msg = sqlite3_errstr(rc);
    close_all();
    if (rc == SQLITE_NOTADB || rc == SQLITE_CORRUPT)
      return Status::Corruption(src_path + ": " + msg);
    return Status::IOError("backup " + src_path + ": " + msg);
  }
  close_all();
  TW_RETURN_IF_ERROR(SetRollbackJournal(out.fd, out.path));
  if (::fsync(out.fd) != 0) return Status::IOError(Errno("fsync", out.path));
  TW_RETURN_IF_ERROR(tw::IntegrityCheck(out.path).Prefix(src_path));
  uint8_t hdr[100];
  size_t got = 0;
  TW_RETURN_IF_ERROR(PreadAll(out.fd, hdr, 100, 0, out.path, &got));
  if (::fstat(out.fd, &st) != 0) return Status::IOError(Errno("stat", out.path));
  uint32_t ps = got == 100 ? (Be16(hdr + 16) == 1 ? 65536 : Be16(hdr + 16)) : 0;
  if (!ValidPageSize(ps)) return Status::Corruption(src_path + ": empty or invalid database");
  *page_size = ps;
  *pages = uint32_t(uint64_t(st.st_size) / ps);
  if (::link(out.path.c_str(), out_path.c_str()) != 0)
    return Status::IOError(Errno("create", out_path));
  return Status::OK();
}

}  // namespace tw::litestream
