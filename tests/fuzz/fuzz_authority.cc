// libFuzzer target for the authority parser (lib/store/authority.h,
// ParseAuthority): authority.json comes from the bucket, so any bytes must
// give OK or Corruption, never a crash, hang or unbounded allocation; and a
// document that parses must serialize and parse back to the same bytes
// (SerializeAuthority is deterministic).
// Build: CXX=clang++ meson setup build-fuzz -Dfuzz=true && ninja -C build-fuzz
// Run:   build-fuzz/tests/fuzz/fuzz_authority -max_len=20000 corpus/
// Seeds: any tenants/{t}/{d}/authority.json of a replica.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "store/authority.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  tw::Authority a;
  tw::Status s = tw::ParseAuthority(in, &a);
  if (!s.ok()) {
    if (s.code() != tw::Status::kCorruption) abort();  // bad bytes are Corruption, nothing else
    return 0;
  }
  if (a.lineage.empty() || a.epoch < 1) abort();
  const std::string once = tw::SerializeAuthority(a);
  tw::Authority b;
  if (!tw::ParseAuthority(once, &b).ok()) abort();
  if (tw::SerializeAuthority(b) != once) abort();
  return 0;
}
