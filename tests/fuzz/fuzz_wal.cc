// libFuzzer target for WAL parsing (lib/walring/wal.h): the capture and the
// snapshotter read WAL files that other processes (or a corrupt disk) wrote.
// ParseHeader and Scan must accept any bytes without crashing, report only
// transactions whose frames carry the header's salts and a valid checksum
// chain, and never report a page number 0.
// Run: build-fuzz/tests/fuzz/fuzz_wal -max_len=70000 corpus/
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "walring/wal.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < tw::wal::kHeaderSize) return 0;
  // Give most inputs a valid header (magic, version, page size and checksum
  // fixed up) and valid frame checksums, so the scan logic is reached; the
  // salts, page numbers, commit markers and lengths stay the fuzzer's.
  std::vector<uint8_t> v(data, data + size);
  if (data[0] & 1) {
    tw::wal::Header fh;
    fh.magic = (data[1] & 1) ? tw::wal::kMagicBE : tw::wal::kMagicLE;
    fh.version = tw::wal::kVersion;
    fh.page_size = 512u << (data[2] % 3);
    fh.ckpt_seq = tw::wal::GetBE32(data + 12);
    fh.salt1 = tw::wal::GetBE32(data + 16);
    fh.salt2 = tw::wal::GetBE32(data + 20);
    tw::wal::EncodeHeader(fh, v.data());
    uint32_t s1, s2;
    tw::wal::Header hh;
    tw::wal::ParseHeader(v.data(), &hh);
    s1 = hh.cksum1;
    s2 = hh.cksum2;
    const size_t fs = tw::wal::kFrameHeaderSize + fh.page_size;
    for (size_t off = tw::wal::kHeaderSize; off + fs <= size; off += fs) {
      if (data[off] & 0x80) {  // most frames: this WAL's salts, then checksum
        tw::wal::PutBE32(v.data() + off + 8, fh.salt1);
        tw::wal::PutBE32(v.data() + off + 12, fh.salt2);
      }
      tw::wal::Checksum(fh.big_endian_cksum(), v.data() + off, 8, &s1, &s2);
      tw::wal::Checksum(fh.big_endian_cksum(), v.data() + off + 24, fh.page_size, &s1, &s2);
      tw::wal::PutBE32(v.data() + off + 16, s1);
      tw::wal::PutBE32(v.data() + off + 20, s2);
    }
  }
  data = v.data();
  tw::wal::Header h;
  if (!tw::wal::ParseHeader(data, &h)) {
    // Also exercise the wal-index header reader on the same bytes.
    if (size >= 2 * sizeof(tw::wal::IndexHeader)) {
      tw::wal::IndexHeader ih;
      (void)tw::wal::ReadIndexHeader(data, &ih);
    }
    return 0;
  }
  tw::wal::Cursor c{h.salt1, h.salt2, 0, h.cksum1, h.cksum2};
  uint32_t last = 0;
  tw::wal::Scan(
      h, c, UINT32_MAX,
      [&](void* buf, size_t n, uint64_t off) -> long {
        if (off >= size) return 0;
        size_t m = n < size - off ? n : size - off;
        std::memcpy(buf, data + off, m);
        return long(m);
      },
      [&](const tw::wal::Txn& t) {
        if (t.db_size == 0 || t.end.frame <= last) abort();
        for (size_t i = 0; i < t.pgnos.size(); ++i) {
          if (t.pgnos[i] == 0 || t.page_offsets[i] + h.page_size > size) abort();
          if (i && t.pgnos[i] <= t.pgnos[i - 1]) abort();  // sorted, unique
        }
        last = t.end.frame;
        return true;
      });
  return 0;
}
