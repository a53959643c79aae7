// libFuzzer target for the segment parser (lib/store/format.h,
// SegmentReader): segments come from S3, so any bytes must give OK or
// Corruption, never a crash, hang or unbounded allocation.
// Build: CXX=clang++ meson setup build-fuzz -Dfuzz=true && ninja -C build-fuzz
// Run:   build-fuzz/tests/fuzz/fuzz_segment -max_len=200000 corpus/
// Seeds: any .twseg object of a replica (tenantwal ls --objects lists them).
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "store/format.h"

#include <cstring>
#include <vector>

// Random bytes almost never carry valid CRCs, which would stop every input
// at the first check. Half the inputs get their header CRC (bytes 280..287,
// over 0..279) and trailer CRC (last 8 bytes, over all before) fixed up, so
// the fuzzer reaches the header fields, the zstd body and the records.
static std::vector<uint8_t> FixCrcs(const uint8_t* data, size_t size) {
  std::vector<uint8_t> v(data, data + size);
  if (size >= 288 + 8 && (data[size - 1] & 1)) {
    uint64_t h = tw::Crc64(v.data(), 280);
    std::memcpy(v.data() + 280, &h, 8);
    uint64_t t = tw::Crc64(v.data(), size - 8);
    std::memcpy(v.data() + size - 8, &t, 8);
  }
  return v;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<uint8_t> bytes = FixCrcs(data, size);
  tw::SegmentReader r;
  tw::Status s = r.Open(std::string_view(reinterpret_cast<const char*>(bytes.data()), size));
  if (!s.ok()) {
    if (!s.IsCorruption()) abort();
    return 0;
  }
  uint64_t txns = 0, pages = 0;
  s = r.ForEach([&](const tw::TxnInfo&) { ++txns; return true; },
                [&](uint32_t pgno, const uint8_t*) {
                  if (pgno == 0) abort();
                  ++pages;
                  return true;
                });
  if (!s.ok() && !s.IsCorruption()) abort();
  if (s.ok() && txns != r.header().txn_count) abort();
  return 0;
}
