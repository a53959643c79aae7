// tenantwald: lineage state files (see state_file.h).
#include "state_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "store/format.h"

namespace twd {

using tw::Status;

namespace {
constexpr char kMagic[8] = {'T', 'W', 'S', 'T', 'A', 'T', 'E', '1'};
constexpr size_t kFixed = 8 + 4 * 4 + 8 * 3 + 24 + 4;

void Put32(std::string* b, uint32_t v) { b->append(reinterpret_cast<const char*>(&v), 4); }
void Put64(std::string* b, uint64_t v) { b->append(reinterpret_cast<const char*>(&v), 8); }
uint32_t Get32(const char* p) { uint32_t v; std::memcpy(&v, p, 4); return v; }
uint64_t Get64(const char* p) { uint64_t v; std::memcpy(&v, p, 8); return v; }
}  // namespace

Status WriteLineageState(const std::string& path, const LineageState& s, bool sync) {
  std::string b(kMagic, 8);
  Put32(&b, 1);
  Put32(&b, s.page_size);
  Put32(&b, s.db_pages);
  Put32(&b, 0);
  Put64(&b, s.last_txid);
  Put64(&b, uint64_t(s.commit_us));
  Put64(&b, s.checksum);
  char gen[24] = {};
  std::memcpy(gen, s.generation.data(), std::min<size_t>(s.generation.size(), 23));
  b.append(gen, 24);
  Put32(&b, uint32_t(s.page_crc.size()));
  for (uint64_t c : s.page_crc) Put64(&b, c);
  Put64(&b, tw::Crc64(b.data(), b.size()));
  const std::string tmp = path + ".tmp";
  int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return Status::IOError("create " + tmp + ": " + strerror(errno));
  size_t off = 0;
  while (off < b.size()) {
    ssize_t n = write(fd, b.data() + off, b.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int e = errno;
      close(fd);
      unlink(tmp.c_str());
      return Status::IOError("write " + tmp + ": " + strerror(e));
    }
    off += size_t(n);
  }
  if ((sync && fsync(fd) != 0) || close(fd) != 0) {
    unlink(tmp.c_str());
    return Status::IOError("fsync " + tmp + ": " + strerror(errno));
  }
  if (rename(tmp.c_str(), path.c_str()) != 0) {
    unlink(tmp.c_str());
    return Status::IOError("rename " + path + ": " + strerror(errno));
  }
  return Status::OK();
}

Status ReadLineageState(const std::string& path, LineageState* s) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return Status::NotFound(path);
    return Status::IOError("open " + path + ": " + strerror(errno));
  }
  std::string b;
  char buf[65536];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    b.append(buf, size_t(n));
    if (b.size() > (size_t(1) << 34)) break;
  }
  close(fd);
  if (b.size() < kFixed + 8 || std::memcmp(b.data(), kMagic, 8) != 0) {
    return Status::Corruption(path + ": not a state file");
  }
  if (tw::Crc64(b.data(), b.size() - 8) != Get64(b.data() + b.size() - 8)) {
    return Status::Corruption(path + ": checksum mismatch");
  }
  const char* p = b.data() + 8;
  if (Get32(p) != 1) return Status::Corruption(path + ": unknown version");
  s->page_size = Get32(p + 4);
  s->db_pages = Get32(p + 8);
  s->last_txid = Get64(p + 16);
  s->commit_us = int64_t(Get64(p + 24));
  s->checksum = Get64(p + 32);
  s->generation.assign(p + 40, strnlen(p + 40, 24));
  uint32_t n = Get32(p + 64);
  if (n != s->db_pages || b.size() != kFixed + size_t(n) * 8 + 8) {
    return Status::Corruption(path + ": size mismatch");
  }
  s->page_crc.resize(n);
  std::memcpy(s->page_crc.data(), b.data() + kFixed, size_t(n) * 8);
  uint64_t x = 0;
  for (uint64_t c : s->page_crc) x ^= c;
  if (x != s->checksum) return Status::Corruption(path + ": checksum does not match pages");
  if (!tw::IsGenerationId(s->generation)) return Status::Corruption(path + ": bad generation");
  return Status::OK();
}

tw::Status WriteTargetKey(const std::string& path, const std::string& key) {
  const std::string tmp = path + ".tmp";
  FILE* f = fopen(tmp.c_str(), "we");
  if (!f) return tw::Status::IOError("create " + tmp + ": " + strerror(errno));
  bool ok = fwrite(key.data(), 1, key.size(), f) == key.size();
  ok = (fclose(f) == 0) && ok;
  if (!ok || rename(tmp.c_str(), path.c_str()) != 0) {
    unlink(tmp.c_str());
    return tw::Status::IOError("write " + path + ": " + strerror(errno));
  }
  return tw::Status::OK();
}

tw::Status ReadTargetKey(const std::string& path, std::string* key) {
  key->clear();
  FILE* f = fopen(path.c_str(), "re");
  if (!f) return tw::Status::NotFound(path);
  char buf[4096];
  size_t n = fread(buf, 1, sizeof buf, f);
  fclose(f);
  key->assign(buf, n);
  return tw::Status::OK();
}

}  // namespace twd
