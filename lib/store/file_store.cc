// tenantwal: FileStore (see file_store.h for the design). Plain POSIX I/O:
// open/pread/write/fsync/rename/opendir, errno text in every IOError.

#include "store/file_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace tw {

namespace {

constexpr const char* kTmpPrefix = ".twtmp-";
constexpr size_t kCopyBuf = 1 << 20;  // 1 MiB

std::string ErrnoText(const std::string& what, int err) {
  return what + ": " + std::strerror(err);
}

// Closes an fd on scope exit unless released.
class FdCloser {
 public:
  explicit FdCloser(int fd) : fd_(fd) {}
  ~FdCloser() {
    if (fd_ >= 0) ::close(fd_);
  }
  int release() {
    int f = fd_;
    fd_ = -1;
    return f;
  }
  FdCloser(const FdCloser&) = delete;
  FdCloser& operator=(const FdCloser&) = delete;

 private:
  int fd_;
};

Status WriteAll(int fd, const char* p, size_t n, const std::string& path) {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return Status::IOError(ErrnoText("write " + path, errno));
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
  return Status::OK();
}

// Copies everything readable from `in` to `out`.
Status CopyFd(int in, const std::string& in_path, int out, const std::string& out_path) {
  std::unique_ptr<char[]> buf(new char[kCopyBuf]);
  while (true) {
    ssize_t r = ::read(in, buf.get(), kCopyBuf);
    if (r < 0) {
      if (errno == EINTR) continue;
      return Status::IOError(ErrnoText("read " + in_path, errno));
    }
    if (r == 0) return Status::OK();
    TW_RETURN_IF_ERROR(WriteAll(out, buf.get(), static_cast<size_t>(r), out_path));
  }
}

Status FsyncDir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Status::IOError(ErrnoText("open " + dir, errno));
  FdCloser c(fd);
  if (::fsync(fd) != 0) return Status::IOError(ErrnoText("fsync " + dir, errno));
  return Status::OK();
}

// mkdir -p for an absolute path.
Status MkdirAll(const std::string& dir) {
  size_t pos = 1;
  while (true) {
    size_t slash = dir.find('/', pos);
    std::string part = dir.substr(0, slash);
    if (::mkdir(part.c_str(), 0755) != 0 && errno != EEXIST) {
      return Status::IOError(ErrnoText("mkdir " + part, errno));
    }
    if (slash == std::string::npos) break;
    pos = slash + 1;
  }
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0) return Status::IOError(ErrnoText("stat " + dir, errno));
  if (!S_ISDIR(st.st_mode)) return Status::IOError(dir + " exists and is not a directory");
  return Status::OK();
}

std::string Parent(const std::string& path) { return path.substr(0, path.rfind('/')); }

Status CheckFileKey(const std::string& key) {
  TW_RETURN_IF_ERROR(ValidateObjectKey(key));
  size_t start = 0;
  while (true) {
    if (key.compare(start, std::strlen(kTmpPrefix), kTmpPrefix) == 0) {
      return Status::InvalidArgument("object key has a segment starting with \".twtmp-\" "
                                     "(reserved for temporary files): " + key);
    }
    size_t slash = key.find('/', start);
    if (slash == std::string::npos) break;
    start = slash + 1;
  }
  return Status::OK();
}

bool IsTmpName(const char* name) { return std::strncmp(name, kTmpPrefix, 7) == 0; }

// Appends every regular, non-temporary file below `dir` (whose key prefix is
// `rel`, "" or ending in '/') whose key starts with `prefix`.
Status Walk(const std::string& dir, const std::string& rel, const std::string& prefix,
            std::vector<ObjectInfo>* out) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) {
    if (errno == ENOENT || errno == ENOTDIR) return Status::OK();
    return Status::IOError(ErrnoText("opendir " + dir, errno));
  }
  std::vector<std::string> names;
  errno = 0;
  while (dirent* e = ::readdir(d)) {
    if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0) continue;
    if (IsTmpName(e->d_name)) continue;
    names.emplace_back(e->d_name);
  }
  int err = errno;
  ::closedir(d);
  if (err != 0) return Status::IOError(ErrnoText("readdir " + dir, err));
  for (const std::string& name : names) {
    std::string key = rel + name;
    // Prune: descend only where the key space can still match the prefix.
    size_t n = std::min(key.size(), prefix.size());
    if (key.compare(0, n, prefix, 0, n) != 0) continue;
    std::string path = dir + "/" + name;
    struct stat st;
    if (::lstat(path.c_str(), &st) != 0) {
      if (errno == ENOENT) continue;  // deleted concurrently
      return Status::IOError(ErrnoText("lstat " + path, errno));
    }
    if (S_ISDIR(st.st_mode)) {
      TW_RETURN_IF_ERROR(Walk(path, key + "/", prefix, out));
    } else if (S_ISREG(st.st_mode) && key.size() >= prefix.size()) {
      out->push_back(ObjectInfo{key, static_cast<uint64_t>(st.st_size), ""});
    }
  }
  return Status::OK();
}

// True when some listable object lies below `dir`.
bool HasObjects(const std::string& dir) {
  std::vector<ObjectInfo> found;
  Status s = Walk(dir, "", "", &found);
  return !s.ok() || !found.empty();  // on error, show the directory
}

// The ETag of a file:// object: the hex MD5 of its content, as S3 gives for
// an object uploaded in one PUT (S3 API Reference, "Common Response
// Headers": ETag). Only compared for equality; never parsed.
std::string ContentEtag(std::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_Digest(data.data(), data.size(), md, &n, EVP_md5(), nullptr);
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < n; ++i) {
    out += kHex[md[i] >> 4];
    out += kHex[md[i] & 15];
  }
  return out;
}

}  // namespace

Status FileStore::Open(const std::string& root, std::unique_ptr<FileStore>* out) {
  out->reset();
  if (root.empty() || root[0] != '/') {
    return Status::InvalidArgument("file store root must be an absolute path: " + root);
  }
  std::string r = root;
  while (r.size() > 1 && r.back() == '/') r.pop_back();
  if (r == "/") return Status::InvalidArgument("file store root must not be \"/\"");
  Status s = ValidateObjectKey(std::string_view(r).substr(1));
  if (!s.ok()) return s.Prefix("file store root " + root);
  out->reset(new FileStore(r));
  return Status::OK();
}

Status FileStore::Count(Op op, Status s) {
  requests_[op].fetch_add(1, std::memory_order_relaxed);
  if (!s.ok()) failures_[op].fetch_add(1, std::memory_order_relaxed);
  return s;
}

std::map<std::string, std::pair<uint64_t, uint64_t>> FileStore::RequestCounts() const {
  static const char* kNames[kNumOps] = {"PUT", "GET", "LIST", "DELETE"};
  std::map<std::string, std::pair<uint64_t, uint64_t>> m;
  for (int i = 0; i < kNumOps; i++) {
    m[kNames[i]] = {requests_[i].load(std::memory_order_relaxed),
                    failures_[i].load(std::memory_order_relaxed)};
  }
  return m;
}

template <typename Fill>
Status FileStore::AtomicWrite(const std::string& key, Fill fill) {
  const std::string path = root_ + "/" + key;
  const std::string dir = Parent(path);
  std::string tmp;
  int fd = -1;
  // A concurrent Delete may prune the directory between mkdir and mkstemp;
  // creating it again is enough.
  for (int attempt = 0; fd < 0; attempt++) {
    TW_RETURN_IF_ERROR(MkdirAll(dir));
    tmp = dir + "/" + kTmpPrefix + "XXXXXX";
    fd = ::mkostemp(tmp.data(), O_CLOEXEC);
    if (fd < 0 && (errno != ENOENT || attempt >= 5)) {
      return Status::IOError(ErrnoText("create temporary file in " + dir, errno));
    }
  }
  FdCloser closer(fd);
  Status s = fill(fd, tmp);
  if (s.ok() && ::fchmod(fd, 0644) != 0) s = Status::IOError(ErrnoText("fchmod " + tmp, errno));
  if (s.ok() && ::fsync(fd) != 0) s = Status::IOError(ErrnoText("fsync " + tmp, errno));
  if (s.ok() && ::close(closer.release()) != 0) {
    s = Status::IOError(ErrnoText("close " + tmp, errno));
  }
  if (s.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) {
    s = Status::IOError(ErrnoText("rename to " + path, errno));
  }
  if (!s.ok()) {
    ::unlink(tmp.c_str());
    return s;
  }
  return FsyncDir(dir);
}

Status FileStore::Put(const std::string& key, std::string_view data,
                      const std::map<std::string, std::string>& metadata) {
  Status s = CheckFileKey(key);
  if (s.ok()) s = ValidateMetadata(metadata);
  if (s.ok()) {
    s = AtomicWrite(key, [&](int fd, const std::string& tmp) {
      return WriteAll(fd, data.data(), data.size(), tmp);
    });
  }
  return Count(kPut, s);
}

Status FileStore::PutFile(const std::string& key, const std::string& path,
                          const std::map<std::string, std::string>& metadata) {
  Status s = CheckFileKey(key);
  if (s.ok()) s = ValidateMetadata(metadata);
  if (!s.ok()) return Count(kPut, s);
  int in = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (in < 0) return Count(kPut, Status::IOError(ErrnoText("open " + path, errno)));
  FdCloser c(in);
  s = AtomicWrite(key, [&](int fd, const std::string& tmp) { return CopyFd(in, path, fd, tmp); });
  return Count(kPut, s);
}

Status FileStore::Get(const std::string& key, std::string* out) {
  out->clear();
  Status s = CheckFileKey(key);
  if (!s.ok()) return Count(kGet, s);
  const std::string path = root_ + "/" + key;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT || errno == ENOTDIR) {
      return Count(kGet, Status::NotFound("no object " + key + " in " + url()));
    }
    return Count(kGet, Status::IOError(ErrnoText("open " + path, errno)));
  }
  FdCloser c(fd);
  struct stat st;
  if (::fstat(fd, &st) != 0) return Count(kGet, Status::IOError(ErrnoText("fstat " + path, errno)));
  if (!S_ISREG(st.st_mode)) {
    return Count(kGet, Status::NotFound("no object " + key + " in " + url()));
  }
  out->reserve(static_cast<size_t>(st.st_size));
  char buf[64 * 1024];
  while (true) {
    ssize_t r = ::read(fd, buf, sizeof(buf));
    if (r < 0) {
      if (errno == EINTR) continue;
      out->clear();
      return Count(kGet, Status::IOError(ErrnoText("read " + path, errno)));
    }
    if (r == 0) break;
    out->append(buf, static_cast<size_t>(r));
  }
  return Count(kGet, Status::OK());
}

Status FileStore::GetRange(const std::string& key, uint64_t offset, uint64_t length,
                           std::string* out) {
  out->clear();
  Status s = CheckFileKey(key);
  if (!s.ok()) return Count(kGet, s);
  const std::string path = root_ + "/" + key;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT || errno == ENOTDIR) {
      return Count(kGet, Status::NotFound("no object " + key + " in " + url()));
    }
    return Count(kGet, Status::IOError(ErrnoText("open " + path, errno)));
  }
  FdCloser c(fd);
  struct stat st;
  if (::fstat(fd, &st) != 0) return Count(kGet, Status::IOError(ErrnoText("fstat " + path, errno)));
  if (!S_ISREG(st.st_mode)) {
    return Count(kGet, Status::NotFound("no object " + key + " in " + url()));
  }
  uint64_t size = static_cast<uint64_t>(st.st_size);
  if (offset >= size) return Count(kGet, Status::OK());
  uint64_t n = std::min(length, size - offset);
  out->resize(static_cast<size_t>(n));
  uint64_t done = 0;
  while (done < n) {
    ssize_t r = ::pread(fd, out->data() + done, static_cast<size_t>(n - done),
                        static_cast<off_t>(offset + done));
    if (r < 0) {
      if (errno == EINTR) continue;
      out->clear();
      return Count(kGet, Status::IOError(ErrnoText("read " + path, errno)));
    }
    if (r == 0) break;  // shrank underneath us
    done += static_cast<uint64_t>(r);
  }
  out->resize(static_cast<size_t>(done));
  return Count(kGet, Status::OK());
}

Status FileStore::GetToFile(const std::string& key, const std::string& path) {
  Status s = CheckFileKey(key);
  if (!s.ok()) return Count(kGet, s);
  const std::string src = root_ + "/" + key;
  int in = ::open(src.c_str(), O_RDONLY | O_CLOEXEC);
  if (in < 0) {
    if (errno == ENOENT || errno == ENOTDIR) {
      return Count(kGet, Status::NotFound("no object " + key + " in " + url()));
    }
    return Count(kGet, Status::IOError(ErrnoText("open " + src, errno)));
  }
  FdCloser cin(in);
  struct stat st;
  if (::fstat(in, &st) != 0) return Count(kGet, Status::IOError(ErrnoText("fstat " + src, errno)));
  if (!S_ISREG(st.st_mode)) {
    return Count(kGet, Status::NotFound("no object " + key + " in " + url()));
  }
  int out = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (out < 0) return Count(kGet, Status::IOError(ErrnoText("open " + path, errno)));
  FdCloser cout(out);
  s = CopyFd(in, src, out, path);
  if (s.ok() && ::fsync(out) != 0) s = Status::IOError(ErrnoText("fsync " + path, errno));
  if (s.ok() && ::close(cout.release()) != 0) s = Status::IOError(ErrnoText("close " + path, errno));
  if (!s.ok()) ::unlink(path.c_str());
  return Count(kGet, s);
}

Status FileStore::List(const std::string& prefix, std::vector<ObjectInfo>* out) {
  out->clear();
  Status s = ValidateListPrefix(prefix);
  if (!s.ok()) return Count(kList, s);
  // Start the walk at the deepest directory the prefix names.
  size_t slash = prefix.rfind('/');
  std::string rel = slash == std::string::npos ? "" : prefix.substr(0, slash + 1);
  std::string dir = rel.empty() ? root_ : root_ + "/" + prefix.substr(0, slash);
  s = Walk(dir, rel, prefix, out);
  if (!s.ok()) {
    out->clear();
    return Count(kList, s);
  }
  std::sort(out->begin(), out->end(),
            [](const ObjectInfo& a, const ObjectInfo& b) { return a.key < b.key; });
  return Count(kList, Status::OK());
}

Status FileStore::ListDirs(const std::string& prefix, std::vector<std::string>* out) {
  out->clear();
  Status s = ValidateListPrefix(prefix);
  if (!s.ok()) return Count(kList, s);
  size_t slash = prefix.rfind('/');
  std::string rel = slash == std::string::npos ? "" : prefix.substr(0, slash + 1);
  std::string partial = prefix.substr(rel.size());
  std::string dir = rel.empty() ? root_ : root_ + "/" + prefix.substr(0, slash);
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) {
    if (errno == ENOENT || errno == ENOTDIR) return Count(kList, Status::OK());
    return Count(kList, Status::IOError(ErrnoText("opendir " + dir, errno)));
  }
  std::vector<std::string> names;
  errno = 0;
  while (dirent* e = ::readdir(d)) {
    if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0) continue;
    if (IsTmpName(e->d_name)) continue;
    if (std::strncmp(e->d_name, partial.c_str(), partial.size()) != 0) continue;
    names.emplace_back(e->d_name);
  }
  int err = errno;
  ::closedir(d);
  if (err != 0) return Count(kList, Status::IOError(ErrnoText("readdir " + dir, err)));
  for (const std::string& name : names) {
    std::string path = dir + "/" + name;
    struct stat st;
    if (::lstat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) continue;
    if (HasObjects(path)) out->push_back(rel + name + "/");
  }
  std::sort(out->begin(), out->end());
  return Count(kList, Status::OK());
}

Status FileStore::GetWithEtag(const std::string& key, std::string* out, std::string* etag) {
  etag->clear();
  TW_RETURN_IF_ERROR(Get(key, out));
  *etag = ContentEtag(*out);
  return Status::OK();
}

Status FileStore::PutIf(const std::string& key, std::string_view data, const PutCondition& cond,
                        std::string* etag, const std::map<std::string, std::string>& metadata) {
  if (cond.if_none_match == !cond.if_match.empty()) {
    return Count(kPut, Status::InvalidArgument("PutIf " + key +
                                               ": exactly one of If-None-Match and If-Match"));
  }
  Status s = CheckFileKey(key);
  if (s.ok()) s = ValidateMetadata(metadata);
  if (!s.ok()) return Count(kPut, s);
  // Compare-and-swap under an exclusive flock(2) of the key's directory:
  // every conditional writer of this directory, in any process, takes it,
  // so the comparison and the rename are one step for them. (Unconditional
  // Puts do not take it: keys written conditionally are written only so.)
  const std::string path = root_ + "/" + key;
  const std::string dir = Parent(path);
  int dfd = -1;
  for (int attempt = 0; dfd < 0; attempt++) {
    TW_RETURN_IF_ERROR(Count(kPut, MkdirAll(dir)));
    dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 && (errno != ENOENT || attempt >= 5)) {
      return Count(kPut, Status::IOError(ErrnoText("open " + dir, errno)));
    }
  }
  FdCloser dc(dfd);
  while (::flock(dfd, LOCK_EX) != 0) {
    if (errno != EINTR) return Count(kPut, Status::IOError(ErrnoText("flock " + dir, errno)));
  }
  std::string cur;
  Status g = Get(key, &cur);
  if (!g.ok() && !g.IsNotFound()) return Count(kPut, g);
  if (cond.if_none_match && g.ok()) {
    return Count(kPut, Status::Conflict("PutIf " + key + ": the object exists (If-None-Match: *)"));
  }
  if (!cond.if_match.empty() && (!g.ok() || ContentEtag(cur) != cond.if_match)) {
    return Count(kPut, Status::Conflict("PutIf " + key + ": " +
                                        (g.ok() ? "the object changed (If-Match)"
                                                : "the object is gone (If-Match)")));
  }
  s = AtomicWrite(key, [&](int fd, const std::string& tmp) {
    return WriteAll(fd, data.data(), data.size(), tmp);
  });
  if (s.ok() && etag) *etag = ContentEtag(data);
  return Count(kPut, s);
}

Status FileStore::Delete(const std::string& key) {
  Status s = CheckFileKey(key);
  if (!s.ok()) return Count(kDelete, s);
  const std::string path = root_ + "/" + key;
  struct stat st;
  if (::lstat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
    return Count(kDelete, Status::OK());  // a "directory" is not an object: nothing to delete
  }
  if (::unlink(path.c_str()) != 0 && errno != ENOENT && errno != ENOTDIR) {
    return Count(kDelete, Status::IOError(ErrnoText("unlink " + path, errno)));
  }
  // Prune now-empty parents up to (not including) the root; stops at the
  // first non-empty one. Failures here are harmless.
  for (std::string dir = Parent(path); dir.size() > root_.size(); dir = Parent(dir)) {
    if (::rmdir(dir.c_str()) != 0) break;
  }
  return Count(kDelete, Status::OK());
}

}  // namespace tw
