// libFuzzer target for the snapshot parser (lib/store/format.h,
// SnapshotReader, which reads a local file): any bytes must give OK or
// Corruption, never a crash, hang or unbounded allocation.
// Run: build-fuzz/tests/fuzz/fuzz_snapshot -max_len=200000 corpus/
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

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
  static std::string path = "/tmp/fuzz_snapshot." + std::to_string(getpid());
  FILE* f = fopen(path.c_str(), "wb");
  if (!f) abort();
  std::vector<uint8_t> bytes = FixCrcs(data, size);
  if (size && fwrite(bytes.data(), 1, size, f) != size) abort();
  fclose(f);
  tw::SnapshotReader r;
  tw::Status s = r.Open(path);
  if (s.ok()) {
    uint64_t pages = 0;
    s = r.ForEach([&](uint32_t pgno, const uint8_t*) {
      if (pgno != pages + 1) abort();  // pages come in order 1..n
      ++pages;
      return true;
    });
    if (s.ok() && pages != r.header().db_pages) abort();
  }
  if (!s.ok() && !s.IsCorruption()) abort();
  return 0;
}
