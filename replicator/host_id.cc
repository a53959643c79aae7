// tenantwald: the host id file (design in host_id.h).
#include "host_id.h"

#include <fcntl.h>
#include <openssl/rand.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "store/authority.h"

namespace twd {

using tw::Status;

namespace {

Status Errno(const std::string& what, const std::string& path) {
  return Status::IOError(what + " " + path + ": " + strerror(errno));
}

}  // namespace

Status LoadOrCreateHostId(const std::string& spool_dir, std::string* id) {
  const std::string path = spool_dir + "/host-id";
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd >= 0) {
    char buf[64];
    ssize_t n = read(fd, buf, sizeof buf);
    close(fd);
    if (n < 0) return Errno("read", path);
    std::string s(buf, size_t(n));
    if (!s.empty() && s.back() == '\n') s.pop_back();
    if (!tw::IsHostId(s)) {
      return Status::Corruption(path + " does not hold a host id (32 lowercase hex digits); "
                                "restore it from a backup, or remove it to make this spool a "
                                "new host (its databases are then claimed again)");
    }
    *id = s;
    return Status::OK();
  }
  if (errno != ENOENT) return Errno("open", path);
  unsigned char raw[16];
  if (RAND_bytes(raw, sizeof raw) != 1) return Status::IOError("RAND_bytes failed");
  static const char kHex[] = "0123456789abcdef";
  std::string s;
  for (unsigned char c : raw) {
    s += kHex[c >> 4];
    s += kHex[c & 15];
  }
  const std::string tmp = path + ".tmp";
  fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return Errno("create", tmp);
  const std::string line = s + "\n";
  bool ok = write(fd, line.data(), line.size()) == ssize_t(line.size()) && fsync(fd) == 0;
  close(fd);
  if (!ok || rename(tmp.c_str(), path.c_str()) != 0) {
    Status e = Errno("write", path);
    unlink(tmp.c_str());
    return e;
  }
  int dfd = open(spool_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    fsync(dfd);
    close(dfd);
  }
  *id = s;
  return Status::OK();
}

std::string HostName() {
  char buf[256] = {};
  if (gethostname(buf, sizeof buf - 1) != 0 || !buf[0]) return "unknown";
  return buf;
}

}  // namespace twd
