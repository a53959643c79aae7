// tenantwald: deferred close of database files while SQLite locks are held
// (the design is in peek_file.h).
#include "peek_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <mutex>
#include <utility>
#include <vector>

namespace twd {

using tw::Status;

namespace {

struct Entry {
  int holds = 0;
  std::vector<int> parked;
};

// The registry: database main-file inode -> holds and parked descriptors.
struct Registry {
  std::mutex mu;
  std::map<std::pair<dev_t, ino_t>, Entry> dbs;
};

Registry& Reg() {
  static Registry* r = new Registry;  // never destroyed: usable until exit
  return *r;
}

// The database a file belongs to: `path` without SQLite's side-file suffix.
std::string DatabaseOf(const std::string& path) {
  for (const char* suffix : {"-wal", "-shm", "-journal"}) {
    size_t n = std::strlen(suffix);
    if (path.size() > n && path.compare(path.size() - n, n, suffix) == 0) {
      return path.substr(0, path.size() - n);
    }
  }
  return path;
}

}  // namespace

LockHold::LockHold(const std::string& db_path) {
  struct stat st;
  if (stat(db_path.c_str(), &st) != 0) return;
  dev_ = st.st_dev;
  ino_ = st.st_ino;
  Registry& r = Reg();
  std::lock_guard<std::mutex> lk(r.mu);
  r.dbs[{dev_, ino_}].holds++;
  held_ = true;
}

LockHold::~LockHold() {
  if (!held_) return;
  Registry& r = Reg();
  std::lock_guard<std::mutex> lk(r.mu);
  auto it = r.dbs.find({dev_, ino_});
  if (it == r.dbs.end()) return;
  if (--it->second.holds > 0) return;
  // The last hold: its connections are closed, no lock of ours remains.
  for (int fd : it->second.parked) close(fd);
  r.dbs.erase(it);
}

Status PeekFile::Open(const std::string& path, bool nofollow) {
  Close();
  struct stat st;
  if (stat(DatabaseOf(path).c_str(), &st) == 0) {
    dev_ = st.st_dev;
    ino_ = st.st_ino;
  } else {
    dev_ = 0;
    ino_ = 0;
  }
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | (nofollow ? O_NOFOLLOW : 0));
  if (fd < 0) {
    int e = errno;
    std::string m = "open " + path + ": " + strerror(e);
    return e == ENOENT ? Status::NotFound(m) : Status::IOError(m);
  }
  fd_ = fd;
  return Status::OK();
}

long PeekFile::Read(void* buf, size_t n, uint64_t off) const {
  size_t got = 0;
  while (got < n) {
    ssize_t r = pread(fd_, static_cast<char*>(buf) + got, n - got, off_t(off + got));
    if (r < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (r == 0) break;
    got += size_t(r);
  }
  return long(got);
}

void PeekFile::Close() {
  if (fd_ < 0) return;
  int fd = fd_;
  fd_ = -1;
  Registry& r = Reg();
  std::lock_guard<std::mutex> lk(r.mu);
  auto it = (dev_ != 0 || ino_ != 0) ? r.dbs.find({dev_, ino_}) : r.dbs.end();
  if (it != r.dbs.end() && it->second.holds > 0) {
    it->second.parked.push_back(fd);  // closing now would drop the hold's locks
    return;
  }
  close(fd);
}

size_t ParkedPeekDescriptors() {
  Registry& r = Reg();
  std::lock_guard<std::mutex> lk(r.mu);
  size_t n = 0;
  for (const auto& [k, e] : r.dbs) n += e.parked.size();
  return n;
}

}  // namespace twd
