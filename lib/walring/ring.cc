// tenantwal: the host's shared-memory ring and registry (see ring.h).
#include "walring/ring.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <pthread.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>

namespace tw::ring {

namespace {

uint64_t Hash(std::string_view t, std::string_view d) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a 64
  for (char c : t) { h ^= uint8_t(c); h *= 1099511628211ull; }
  h ^= '/'; h *= 1099511628211ull;
  for (char c : d) { h ^= uint8_t(c); h *= 1099511628211ull; }
  return h;
}

void InitRobustMutex(pthread_mutex_t* m) {
  pthread_mutexattr_t a;
  pthread_mutexattr_init(&a);
  pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
  pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
  pthread_mutex_init(m, &a);
  pthread_mutexattr_destroy(&a);
}

// Locks a robust mutex; returns true if the previous owner died.
bool LockRobust(pthread_mutex_t* m) {
  int rc = pthread_mutex_lock(m);
  if (rc == EOWNERDEAD) {
    pthread_mutex_consistent(m);
    return true;
  }
  return false;
}

long Futex(std::atomic<uint32_t>* addr, int op, uint32_t val, const struct timespec* ts) {
  return syscall(SYS_futex, reinterpret_cast<uint32_t*>(addr), op, val, ts, nullptr, 0);
}

bool PidAlive(int32_t pid) {
  if (pid <= 0) return false;
  return kill(pid, 0) == 0 || errno == EPERM;
}

size_t AlignUp(size_t n) { return (n + kRecordAlign - 1) & ~(kRecordAlign - 1); }

}  // namespace

const char* DbStateName(DbState s) {
  switch (s) {
    case DbState::kUnknown: return "registered";
    case DbState::kSnapshotting: return "snapshotting";
    case DbState::kActive: return "active";
    case DbState::kError: return "error";
    case DbState::kDeleted: return "deleted";
    case DbState::kNotReplicated: return "not-replicated";
    case DbState::kFenced: return "fenced";
  }
  return "unknown";
}

int64_t NowMicros() {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return int64_t(ts.tv_sec) * 1000000 + ts.tv_nsec / 1000;
}

namespace {
std::atomic<int32_t> g_pid{0};
void ResetPidInChild() { g_pid.store(0, std::memory_order_relaxed); }
}  // namespace

int32_t CurrentPid() {
  int32_t p = g_pid.load(std::memory_order_relaxed);
  if (p != 0) return p;
  static std::once_flag once;
  std::call_once(once, [] { pthread_atfork(nullptr, nullptr, ResetPidInChild); });
  p = int32_t(getpid());
  g_pid.store(p, std::memory_order_relaxed);
  return p;
}

std::string DefaultRingName() {
  const char* e = getenv("TENANTWAL_RING");
  return (e && *e) ? std::string(e) : std::string("tenantwal");
}

Status Ring::Open(const std::string& name, const Options& opts, bool create,
                  std::unique_ptr<Ring>* out) {
  if (name.empty() || name.size() > 200 || name.find('/') != std::string::npos) {
    return Status::InvalidArgument("ring name must be 1-200 characters without '/': " + name);
  }
  const std::string shm_name = "/" + name;
  mode_t mode = opts.group >= 0 ? 0660 : 0600;
  bool creator = false;
  int fd = -1;
  if (create) {
    fd = shm_open(shm_name.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd >= 0) creator = true;
    else if (errno != EEXIST) return Status::IOError("shm_open " + shm_name + ": " + strerror(errno));
  }
  if (fd < 0) {
    fd = shm_open(shm_name.c_str(), O_RDWR | O_CLOEXEC, 0);
    if (fd >= 0 && opts.group >= 0) {
      // An existing ring (made by an application, or an earlier run): give
      // it the configured group if we own it. Errors are not fatal.
      (void)fchown(fd, -1, opts.group);
      (void)fchmod(fd, 0660);
    }
    if (fd < 0) {
      if (errno == ENOENT) return Status::NotFound("no ring " + shm_name);
      return Status::IOError("shm_open " + shm_name + ": " + strerror(errno));
    }
  }
  size_t total = 0;
  if (creator) {
    uint32_t slots = opts.slots ? opts.slots : kDefaultSlots;
    uint64_t cap = opts.ring_bytes ? opts.ring_bytes : kDefaultRingBytes;
    cap = (cap + kRecordAlign - 1) & ~uint64_t(kRecordAlign - 1);
    if (cap < 64 * 1024) cap = 64 * 1024;
    total = kHeaderBytes + size_t(slots) * kSlotBytes + cap;
    if (opts.group >= 0) (void)fchown(fd, -1, opts.group);
    (void)fchmod(fd, mode);  // exactly 0600/0660, whatever the umask
    if (ftruncate(fd, off_t(total)) != 0) {
      int e = errno;
      close(fd);
      shm_unlink(shm_name.c_str());
      return Status::IOError("ftruncate ring: " + std::string(strerror(e)));
    }
    void* p = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED) return Status::IOError("mmap ring: " + std::string(strerror(errno)));
    auto* h = static_cast<ShmHeader*>(p);
    h->magic = kMagic;
    h->version = kVersion;
    h->header_bytes = kHeaderBytes;
    h->total_bytes = total;
    h->slot_count = slots;
    h->slot_bytes = kSlotBytes;
    h->registry_offset = kHeaderBytes;
    h->ring_offset = kHeaderBytes + uint64_t(slots) * kSlotBytes;
    h->ring_capacity = cap;
    InitRobustMutex(&h->ring_mutex);
    InitRobustMutex(&h->registry_mutex);
    h->ready.store(1, std::memory_order_release);
    std::unique_ptr<Ring> r(new Ring());
    r->name_ = name;
    r->hdr_ = h;
    r->base_ = static_cast<uint8_t*>(p);
    r->map_bytes_ = total;
    *out = std::move(r);
    return Status::OK();
  }
  // Opener: wait briefly for the creator to size and initialize it.
  struct stat st;
  for (int i = 0; i < 200; ++i) {
    if (fstat(fd, &st) != 0) { close(fd); return Status::IOError("fstat ring"); }
    if (size_t(st.st_size) >= kHeaderBytes) break;
    usleep(5000);
  }
  if (size_t(st.st_size) < kHeaderBytes) { close(fd); return Status::Busy("ring not initialized"); }
  total = size_t(st.st_size);
  void* p = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (p == MAP_FAILED) return Status::IOError("mmap ring: " + std::string(strerror(errno)));
  auto* h = static_cast<ShmHeader*>(p);
  for (int i = 0; i < 200 && h->ready.load(std::memory_order_acquire) != 1; ++i) usleep(5000);
  if (h->ready.load(std::memory_order_acquire) != 1) {
    munmap(p, total);
    return Status::Busy("ring not initialized");
  }
  if (h->magic != kMagic || h->version != kVersion || h->total_bytes != total ||
      h->slot_bytes != kSlotBytes ||
      h->ring_offset + h->ring_capacity != total ||
      h->registry_offset + uint64_t(h->slot_count) * kSlotBytes != h->ring_offset) {
    munmap(p, total);
    return Status::Corruption("ring /" + name + " has another layout or version");
  }
  std::unique_ptr<Ring> r(new Ring());
  r->name_ = name;
  r->hdr_ = h;
  r->base_ = static_cast<uint8_t*>(p);
  r->map_bytes_ = total;
  *out = std::move(r);
  return Status::OK();
}

Ring::~Ring() {
  if (base_) munmap(base_, map_bytes_);
}

Status Ring::Unlink(const std::string& name) {
  if (shm_unlink(("/" + name).c_str()) != 0 && errno != ENOENT) {
    return Status::IOError("shm_unlink: " + std::string(strerror(errno)));
  }
  return Status::OK();
}

Slot* Ring::slot(uint32_t index) const {
  return reinterpret_cast<Slot*>(base_ + hdr_->registry_offset + uint64_t(index) * kSlotBytes);
}

Status Ring::FindSlot(std::string_view tenant, std::string_view db, uint32_t* index) const {
  const uint32_t n = hdr_->slot_count;
  uint32_t i = uint32_t(Hash(tenant, db) % n);
  for (uint32_t probes = 0; probes < n; ++probes, i = (i + 1) % n) {
    Slot* s = slot(i);
    if (s->used.load(std::memory_order_acquire) == 0) break;
    if (tenant == s->tenant && db == s->db) {
      *index = i;
      return Status::OK();
    }
  }
  return Status::NotFound("no slot");
}

Status Ring::FindOrAddSlot(std::string_view tenant, std::string_view db, std::string_view path,
                           uint32_t* index, bool* created) {
  *created = false;
  if (tenant.size() >= sizeof(Slot::tenant) || db.size() >= sizeof(Slot::db)) {
    return Status::InvalidArgument("name too long");
  }
  if (path.size() >= kMaxPath) return Status::InvalidArgument("path too long");
  if (FindSlot(tenant, db, index).ok()) return Status::OK();
  LockRobust(&hdr_->registry_mutex);
  Status st = FindSlot(tenant, db, index);
  if (st.ok()) {
    pthread_mutex_unlock(&hdr_->registry_mutex);
    return st;
  }
  const uint32_t n = hdr_->slot_count;
  if (hdr_->slots_used.load() + 1 >= n) {
    pthread_mutex_unlock(&hdr_->registry_mutex);
    return Status::NoSpace("registry full (" + std::to_string(n) + " slots)");
  }
  uint32_t i = uint32_t(Hash(tenant, db) % n);
  while (slot(i)->used.load(std::memory_order_acquire) != 0) i = (i + 1) % n;
  Slot* s = slot(i);
  std::memset(static_cast<void*>(s), 0, sizeof(Slot));
  s->index = i;
  std::memcpy(s->tenant, tenant.data(), tenant.size());
  std::memcpy(s->db, db.data(), db.size());
  std::memcpy(s->path, path.data(), path.size());
  InitRobustMutex(&s->mutex);
  s->used.store(1, std::memory_order_release);
  hdr_->slots_used.fetch_add(1);
  pthread_mutex_unlock(&hdr_->registry_mutex);
  *index = i;
  *created = true;
  return Status::OK();
}

Status Ring::LockSlot(Slot* s, bool try_only, bool* owner_died) {
  *owner_died = false;
  int rc = try_only ? pthread_mutex_trylock(&s->mutex) : pthread_mutex_lock(&s->mutex);
  if (rc == EOWNERDEAD) {
    pthread_mutex_consistent(&s->mutex);
    *owner_died = true;
    return Status::OK();
  }
  if (rc == EBUSY) return Status::Busy("slot busy");
  if (rc != 0) return Status::IOError("slot mutex: " + std::string(strerror(rc)));
  return Status::OK();
}

void Ring::UnlockSlot(Slot* s) { pthread_mutex_unlock(&s->mutex); }

void Ring::SetError(Slot* s, std::string_view msg) {
  s->error_seq.fetch_add(1, std::memory_order_acq_rel);  // odd: writing
  size_t n = std::min(msg.size(), kErrorBytes - 1);
  std::memcpy(s->last_error, msg.data(), n);
  s->last_error[n] = 0;
  s->error_seq.fetch_add(1, std::memory_order_release);
}

std::string Ring::ReadError(const Slot* s) {
  for (int i = 0; i < 100; ++i) {
    uint32_t a = s->error_seq.load(std::memory_order_acquire);
    if (a & 1) continue;
    char buf[kErrorBytes];
    std::memcpy(buf, s->last_error, kErrorBytes);
    buf[kErrorBytes - 1] = 0;
    std::atomic_thread_fence(std::memory_order_acquire);
    if (s->error_seq.load(std::memory_order_relaxed) == a) return buf;
  }
  return "";
}

size_t Ring::max_payload() const {
  size_t quarter = size_t(hdr_->ring_capacity / 4);
  size_t cap = size_t(4) << 20;
  return (quarter < cap ? quarter : cap) - kRecordHeaderBytes;
}

Status Ring::Reserve(size_t payload_bytes, int wait_ms, Reservation* r) {
  if (payload_bytes > max_payload()) return Status::InvalidArgument("record too large");
  const uint64_t cap = hdr_->ring_capacity;
  const size_t len = AlignUp(kRecordHeaderBytes + payload_bytes);
  uint8_t* ring = base_ + hdr_->ring_offset;
  int64_t deadline = wait_ms > 0 ? NowMicros() + int64_t(wait_ms) * 1000 : 0;
  for (;;) {
    LockRobust(&hdr_->ring_mutex);
    uint64_t head = hdr_->head.load(std::memory_order_relaxed);
    uint64_t tail = hdr_->tail.load(std::memory_order_acquire);
    uint64_t off = head % cap;
    uint64_t pad = (off + len > cap) ? cap - off : 0;
    if (head - tail + pad + len <= cap) {
      if (pad) {
        auto* ph = reinterpret_cast<RecordHeader*>(ring + off);
        std::memset(static_cast<void*>(ph), 0, kRecordHeaderBytes);
        ph->length = uint32_t(pad);
        ph->type = kPad;
        ph->state.store(kReady, std::memory_order_relaxed);
        head += pad;
        off = 0;
      }
      auto* rh = reinterpret_cast<RecordHeader*>(ring + off);
      std::memset(static_cast<void*>(rh), 0, kRecordHeaderBytes);
      rh->length = uint32_t(len);
      rh->pid = CurrentPid();
      rh->state.store(kWriting, std::memory_order_relaxed);
      hdr_->head.store(head + len, std::memory_order_release);
      pthread_mutex_unlock(&hdr_->ring_mutex);
      r->hdr = rh;
      r->payload = ring + off + kRecordHeaderBytes;
      r->payload_bytes = payload_bytes;
      return Status::OK();
    }
    pthread_mutex_unlock(&hdr_->ring_mutex);
    if (wait_ms <= 0 || NowMicros() >= deadline) {
      hdr_->records_dropped.fetch_add(1, std::memory_order_relaxed);
      hdr_->bytes_dropped.fetch_add(payload_bytes, std::memory_order_relaxed);
      return Status::NoSpace("ring full");
    }
    usleep(200);
  }
}

void Ring::Publish(const Reservation& r) {
  r.hdr->state.store(kReady, std::memory_order_release);
  hdr_->records_written.fetch_add(1, std::memory_order_relaxed);
  hdr_->wake_seq.fetch_add(1, std::memory_order_seq_cst);
  // Only a consumer in a deep (long) sleep is woken: one that naps for a
  // few milliseconds between busy periods finds the record by itself, so a
  // busy writer pays no system call per commit.
  if (hdr_->consumer_waiting.load(std::memory_order_seq_cst) == 2) {
    Futex(&hdr_->wake_seq, FUTEX_WAKE, 1, nullptr);
  }
}

Ring::PeekResult Ring::Peek(const RecordHeader** rec) {
  const uint64_t cap = hdr_->ring_capacity;
  uint8_t* ring = base_ + hdr_->ring_offset;
  for (;;) {
    uint64_t tail = hdr_->tail.load(std::memory_order_relaxed);
    uint64_t head = hdr_->head.load(std::memory_order_acquire);
    if (tail == head) return PeekResult::kEmpty;
    auto* rh = reinterpret_cast<RecordHeader*>(ring + tail % cap);
    uint32_t state = rh->state.load(std::memory_order_acquire);
    if (state == kReady && rh->type == kPad) {
      hdr_->tail.store(tail + rh->length, std::memory_order_release);
      continue;
    }
    *rec = rh;
    if (state == kReady) return PeekResult::kRecord;
    if (!PidAlive(rh->pid)) {
      hdr_->records_abandoned.fetch_add(1, std::memory_order_relaxed);
      return PeekResult::kAbandoned;
    }
    return PeekResult::kBusy;
  }
}

void Ring::Consume(const RecordHeader* rec) {
  uint64_t tail = hdr_->tail.load(std::memory_order_relaxed);
  hdr_->tail.store(tail + rec->length, std::memory_order_release);
}

uint32_t Ring::WakeToken() const { return hdr_->wake_seq.load(std::memory_order_acquire); }

void Ring::Wait(uint32_t token, int timeout_ms, bool deep) {
  hdr_->consumer_waiting.store(deep ? 2 : 1, std::memory_order_seq_cst);
  struct timespec ts = {timeout_ms / 1000, long(timeout_ms % 1000) * 1000000L};
  // Returns at once if a producer published since `token` was read.
  Futex(&hdr_->wake_seq, FUTEX_WAIT, token, &ts);
  hdr_->consumer_waiting.store(0, std::memory_order_release);
}

uint64_t Ring::used_bytes() const {
  return hdr_->head.load(std::memory_order_acquire) - hdr_->tail.load(std::memory_order_acquire);
}

}  // namespace tw::ring
