// tenantwal: SQLite WAL parsing and validation (see wal.h for the format).
#include "walring/wal.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <unordered_map>

namespace tw::wal {

namespace {

inline uint32_t GetLE32(const uint8_t* p) {
  return uint32_t(p[0]) | (uint32_t(p[1]) << 8) | (uint32_t(p[2]) << 16) | (uint32_t(p[3]) << 24);
}

}  // namespace

bool ValidPageSize(uint32_t ps) {
  return ps >= 512 && ps <= 65536 && (ps & (ps - 1)) == 0;
}

void Checksum(bool big_endian, const uint8_t* data, size_t n, uint32_t* s1, uint32_t* s2) {
  uint32_t a = *s1, b = *s2;
  const uint8_t* end = data + (n & ~size_t(7));
  if (big_endian) {
    for (const uint8_t* p = data; p < end; p += 8) {
      a += GetBE32(p) + b;
      b += GetBE32(p + 4) + a;
    }
  } else {
    for (const uint8_t* p = data; p < end; p += 8) {
      a += GetLE32(p) + b;
      b += GetLE32(p + 4) + a;
    }
  }
  *s1 = a;
  *s2 = b;
}

bool ParseHeader(const uint8_t* p, Header* h) {
  h->magic = GetBE32(p);
  h->version = GetBE32(p + 4);
  h->page_size = GetBE32(p + 8);
  h->ckpt_seq = GetBE32(p + 12);
  h->salt1 = GetBE32(p + 16);
  h->salt2 = GetBE32(p + 20);
  h->cksum1 = GetBE32(p + 24);
  h->cksum2 = GetBE32(p + 28);
  if (h->magic != kMagicLE && h->magic != kMagicBE) return false;
  if (h->version != kVersion) return false;
  if (!ValidPageSize(h->page_size)) return false;
  uint32_t s1 = 0, s2 = 0;
  Checksum(h->big_endian_cksum(), p, 24, &s1, &s2);
  return s1 == h->cksum1 && s2 == h->cksum2;
}

void EncodeHeader(const Header& h, uint8_t* out) {
  PutBE32(out, h.magic);
  PutBE32(out + 4, h.version);
  PutBE32(out + 8, h.page_size);
  PutBE32(out + 12, h.ckpt_seq);
  PutBE32(out + 16, h.salt1);
  PutBE32(out + 20, h.salt2);
  uint32_t s1 = 0, s2 = 0;
  Checksum(h.big_endian_cksum(), out, 24, &s1, &s2);
  PutBE32(out + 24, s1);
  PutBE32(out + 28, s2);
}

FrameHeader ParseFrameHeader(const uint8_t* p) {
  FrameHeader f;
  f.pgno = GetBE32(p);
  f.db_size = GetBE32(p + 4);
  f.salt1 = GetBE32(p + 8);
  f.salt2 = GetBE32(p + 12);
  f.cksum1 = GetBE32(p + 16);
  f.cksum2 = GetBE32(p + 20);
  return f;
}

void EncodeFrame(const Header& h, uint32_t pgno, uint32_t db_size, const uint8_t* page,
                 uint32_t* s1, uint32_t* s2, uint8_t* out) {
  PutBE32(out, pgno);
  PutBE32(out + 4, db_size);
  PutBE32(out + 8, h.salt1);
  PutBE32(out + 12, h.salt2);
  std::memcpy(out + kFrameHeaderSize, page, h.page_size);
  Checksum(h.big_endian_cksum(), out, 8, s1, s2);
  Checksum(h.big_endian_cksum(), page, h.page_size, s1, s2);
  PutBE32(out + 16, *s1);
  PutBE32(out + 20, *s2);
}

ScanEnd Scan(const Header& h, const Cursor& from, uint32_t max_frame, const ReadFn& read,
             const std::function<bool(const Txn&)>& on_txn, uint32_t* tail_frames) {
  const size_t frame_size = kFrameHeaderSize + h.page_size;
  // Read in batches of frames to keep syscalls few; 256 KiB or one frame,
  // but no more than the frames there are to read (a one-row commit is 2
  // frames). Not zero-filled: `read` fills what is used. (A zeroed 256 KiB
  // vector per call cost an mmap, a memset, 64 page faults and a munmap per
  // commit: ~25% of a one-row commit, bench/commit_rate.)
  size_t batch_frames = std::max<size_t>(1, (256 * 1024) / frame_size);
  if (max_frame != UINT32_MAX && max_frame > from.frame)
    batch_frames = std::min<size_t>(batch_frames, size_t(max_frame - from.frame));
  std::unique_ptr<uint8_t[]> buf(new uint8_t[batch_frames * frame_size]);

  Cursor cur = from;                // running position (last valid frame)
  Txn txn;                          // frames since the last commit
  std::unordered_map<uint32_t, uint64_t> last;  // pgno -> page offset in txn
  uint32_t pending = 0;
  if (tail_frames) *tail_frames = 0;

  uint32_t next = from.frame + 1;
  while (next <= max_frame) {
    uint64_t want_frames = std::min<uint64_t>(batch_frames, uint64_t(max_frame) - next + 1);
    uint64_t off = kHeaderSize + uint64_t(next - 1) * frame_size;
    long got = read(buf.get(), want_frames * frame_size, off);
    if (got < 0) return ScanEnd::kIOError;
    size_t whole = size_t(got) / frame_size;
    for (size_t i = 0; i < whole; ++i, ++next) {
      const uint8_t* fp = buf.get() + i * frame_size;
      FrameHeader fh = ParseFrameHeader(fp);
      if (fh.salt1 != h.salt1 || fh.salt2 != h.salt2 || fh.pgno == 0) {
        if (tail_frames) *tail_frames = pending;
        return ScanEnd::kEndOfLog;
      }
      uint32_t s1 = cur.cksum1, s2 = cur.cksum2;
      Checksum(h.big_endian_cksum(), fp, 8, &s1, &s2);
      Checksum(h.big_endian_cksum(), fp + kFrameHeaderSize, h.page_size, &s1, &s2);
      if (s1 != fh.cksum1 || s2 != fh.cksum2) {
        if (tail_frames) *tail_frames = pending;
        return ScanEnd::kEndOfLog;
      }
      cur.frame = next;
      cur.cksum1 = s1;
      cur.cksum2 = s2;
      last[fh.pgno] = off + i * frame_size + kFrameHeaderSize;
      ++pending;
      if (fh.db_size != 0) {
        txn.pgnos.clear();
        txn.page_offsets.clear();
        txn.pgnos.reserve(last.size());
        for (auto& kv : last) txn.pgnos.push_back(kv.first);
        std::sort(txn.pgnos.begin(), txn.pgnos.end());
        txn.page_data.clear();
        for (uint32_t p : txn.pgnos) {
          const uint64_t po = last[p];
          txn.page_offsets.push_back(po);
          // In this batch's buffer (read at `off`, `whole` frames)?
          txn.page_data.push_back(po >= off && po < off + whole * frame_size
                                      ? buf.get() + (po - off) : nullptr);
        }
        txn.db_size = fh.db_size;
        txn.end = cur;
        last.clear();
        pending = 0;
        if (!on_txn(txn)) return ScanEnd::kLimit;
      }
    }
    if (whole < want_frames) {  // short read: end of file
      if (tail_frames) *tail_frames = pending;
      return ScanEnd::kEndOfLog;
    }
  }
  if (tail_frames) *tail_frames = pending;
  return ScanEnd::kLimit;
}

bool ReadIndexHeader(const volatile void* shm, IndexHeader* out) {
  IndexHeader a, b;
  // Two copies: SQLite writes copy 2 then copy 1 with a barrier between; a
  // reader that sees them equal has a consistent header (src/wal.c,
  // walIndexTryHdr).
  const volatile uint8_t* p = static_cast<const volatile uint8_t*>(shm);
  uint8_t tmp[sizeof(IndexHeader)];
  for (size_t i = 0; i < sizeof tmp; ++i) tmp[i] = p[i];
  std::memcpy(&a, tmp, sizeof a);
  __atomic_thread_fence(__ATOMIC_ACQUIRE);
  for (size_t i = 0; i < sizeof tmp; ++i) tmp[i] = p[sizeof(IndexHeader) + i];
  std::memcpy(&b, tmp, sizeof b);
  if (std::memcmp(&a, &b, sizeof a) != 0) return false;
  if (!a.isInit) return false;
  // The checksum is over the first 40 bytes, in native byte order.
  uint32_t s1 = 0, s2 = 0;
  const bool native_big = false;  // little-endian hosts: native words are LE
  static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "little-endian hosts only");
  Checksum(native_big, reinterpret_cast<const uint8_t*>(&a), 40, &s1, &s2);
  if (s1 != a.aCksum[0] || s2 != a.aCksum[1]) return false;
  // aSalt is a raw copy of the WAL header's bytes 16..23 (big-endian on
  // disk); return it as numbers, like Header::salt1/salt2.
  a.aSalt[0] = GetBE32(reinterpret_cast<const uint8_t*>(&a.aSalt[0]));
  a.aSalt[1] = GetBE32(reinterpret_cast<const uint8_t*>(&a.aSalt[1]));
  *out = a;
  return true;
}

}  // namespace tw::wal
