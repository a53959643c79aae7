// tenantwal: tenant and database name validation, shared by every entry
// point (VFS, API, config, CLI).
//
// A name is 1-64 characters of [A-Za-z0-9._-] and does not start with '.'.
// This alone guarantees that a name can never traverse a path ("..", "/"),
// inject into an S3 key or URL ('%', '?', '#', spaces, control or non-ASCII
// bytes), or collide with tenantwal's own dot-directories.
#pragma once

#include <string_view>

namespace tw {

constexpr size_t kMaxNameLen = 64;

inline bool ValidName(std::string_view name) {
  if (name.empty() || name.size() > kMaxNameLen || name[0] == '.') return false;
  for (char c : name) {
    bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

}  // namespace tw
