// libFuzzer target for the LTX parser (lib/store/litestream.h): any bytes
// must give OK or Corruption, never a crash, hang or unbounded allocation.
// Build: CXX=clang++ meson setup build-fuzz -Dfuzz=true && ninja -C build-fuzz
// Run:   build-fuzz/tests/fuzz/fuzz_ltx -max_len=70000 corpus/
// Seeds: the fixture ../shared/fixtures/litestream/ltx-early/*.ltx and files
// written by litestream::EncodeLtx (see tests/unit/test_litestream.cc).
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "store/litestream.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  tw::litestream::LtxInfo info;
  uint64_t pages = 0;
  tw::Status s = tw::litestream::DecodeLtx(
      std::string_view(reinterpret_cast<const char*>(data), size), &info,
      [&](uint32_t pgno, const uint8_t*) {
        if (pgno == 0) abort();
        ++pages;
        return tw::Status::OK();
      });
  if (!s.ok() && !s.IsCorruption()) abort();  // only Corruption for bad bytes
  if (s.ok() && pages != info.pages) abort();
  // The v0.3 path's LZ4 frame decoder, bounded output.
  (void)tw::litestream::Lz4FrameDecode(
      std::string_view(reinterpret_cast<const char*>(data), size), 1 << 20, nullptr,
      [](const uint8_t*, size_t) { return tw::Status::OK(); });
  return 0;
}
