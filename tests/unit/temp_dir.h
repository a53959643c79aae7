// tests/unit/temp_dir.h: a fresh temporary directory per test, removed
// (recursively) when it goes out of scope. mkdtemp(3) under /tmp; a failure
// to create it fails the test (doctest REQUIRE).
#pragma once

#include <doctest/doctest.h>
#include <stdlib.h>

#include <filesystem>
#include <string>
#include <system_error>

namespace twtest {

struct TempDir {
  std::string path;  // absolute, no trailing '/'
  TempDir() {
    char buf[] = "/tmp/tw-unit-XXXXXX";
    REQUIRE(mkdtemp(buf) != nullptr);
    path = buf;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  // path + "/" + name
  std::string operator/(const std::string& name) const { return path + "/" + name; }
};

}  // namespace twtest
