// tenantwal: small POSIX file helpers (see file_util.h).
#include "store/file_util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstring>
#include <vector>

namespace tw::file_util {

std::string Errno(const std::string& what, const std::string& path) {
  return what + " " + path + ": " + std::strerror(errno);
}

Status PwriteAll(int fd, const uint8_t* p, size_t n, uint64_t off, const std::string& path) {
  while (n > 0) {
    ssize_t w = ::pwrite(fd, p, n, static_cast<off_t>(off));
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == ENOSPC) return Status::NoSpace(Errno("write", path));
      return Status::IOError(Errno("write", path));
    }
    p += w;
    n -= static_cast<size_t>(w);
    off += static_cast<uint64_t>(w);
  }
  return Status::OK();
}

std::string DirOf(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

Status MakeTemp(const std::string& pattern, std::string* path, int* fd) {
  std::vector<char> buf(pattern.begin(), pattern.end());
  buf.push_back('\0');
  int f = ::mkostemp(buf.data(), O_CLOEXEC);
  if (f < 0) return Status::IOError(Errno("create", pattern));
  *path = buf.data();
  *fd = f;
  return Status::OK();
}

}  // namespace tw::file_util
