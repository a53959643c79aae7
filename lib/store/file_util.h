// tenantwal: small POSIX file helpers shared by the restore engine
// (restore.cc) and the Litestream readers (litestream.cc). Internal to
// libtwstore; not part of the public API.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "base/status.h"

namespace tw::file_util {

// "WHAT PATH: strerror(errno)", for error messages.
std::string Errno(const std::string& what, const std::string& path);

// Writes all `n` bytes at `off` (retrying EINTR and short writes). NoSpace on
// ENOSPC, IOError otherwise; `path` names the file in the message.
Status PwriteAll(int fd, const uint8_t* p, size_t n, uint64_t off, const std::string& path);

// The directory part of `path` ("." when there is none, "/" for the root).
std::string DirOf(const std::string& path);

// Creates an empty file from `pattern` (ending in XXXXXX, mkostemp with
// O_CLOEXEC); *path gets the name, *fd the descriptor. IOError on failure.
Status MakeTemp(const std::string& pattern, std::string* path, int* fd);

}  // namespace tw::file_util
