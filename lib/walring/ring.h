// tenantwal: the host's shared-memory ring and database registry.
//
// One POSIX shared-memory object per host (name "tenantwal", or
// TENANTWAL_RING), created by whichever side opens it first, mode 0600
// (0660 with a group). Layout (docs/FORMAT.md, "The ring"):
//
//   [ShmHeader 4 KiB][registry: slot_count x Slot][ring: ring_capacity bytes]
//
// Registry. One Slot per database known on this host, keyed by (tenant, db).
// A slot holds the capture cursor (the WAL position up to which committed
// transactions have been published, and the last txid assigned) guarded by a
// robust process-shared mutex, and the replicator's view (replicated txid,
// lag, last error, generation) that tenantwal_status shows.
//
// Ring. Many producers (application processes, through the VFS), one
// consumer (tenantwald). Records are variable-length, 128-byte aligned, and
// never wrap: a kPad record fills the end of the buffer. A producer reserves
// space under a short robust mutex (writing the record header with state
// kWriting and its pid, then advancing `head`), copies its payload outside
// the lock, and publishes by storing state kReady. The consumer reads at
// `tail` and advances it; when it sleeps it says so, and only then do
// producers pay a futex wake. A producer killed mid-record leaves a kWriting
// record whose pid is gone: the consumer skips it and reports the database
// for a new snapshot, so the ring never wedges. When the ring is full a
// producer waits at most its bound (default 0 ms), then drops the record and
// flags the database for a resync: the writer is never blocked for long.
#pragma once

#include <pthread.h>
#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "base/status.h"

namespace tw::ring {

constexpr uint64_t kMagic = 0x31474e4952575754ull;  // "TWWRING1", little-endian
constexpr uint32_t kVersion = 1;
constexpr size_t kHeaderBytes = 4096;
constexpr size_t kSlotBytes = 1024;
constexpr size_t kRecordAlign = 128;  // == kRecordHeaderBytes: a pad always fits
constexpr uint32_t kDefaultSlots = 65536;
constexpr uint64_t kDefaultRingBytes = 64ull << 20;
constexpr size_t kMaxPath = 512;
constexpr size_t kErrorBytes = 128;
constexpr size_t kRecordHeaderBytes = 128;

// Replicator-side state of a database, as shown in tenantwal_status.
enum class DbState : uint32_t {
  kUnknown = 0,      // registered, not yet seen by tenantwald
  kSnapshotting = 1, // initial or resync snapshot in progress
  kActive = 2,       // replicating
  kError = 3,        // last operation failed (see last_error); retrying
  kDeleted = 4,      // deleted through the VFS or found missing
  kNotReplicated = 5,// outside the root or invalid names: never replicated
  kFenced = 6,       // another host owns it in the replica's authority: not uploaded
};
const char* DbStateName(DbState s);

struct alignas(64) ShmHeader {
  uint64_t magic;
  uint32_t version;
  uint32_t header_bytes;
  uint64_t total_bytes;
  uint32_t slot_count;
  uint32_t slot_bytes;
  uint64_t registry_offset;
  uint64_t ring_offset;
  uint64_t ring_capacity;
  std::atomic<uint32_t> ready;          // 1 once initialized
  std::atomic<int32_t> consumer_pid;    // tenantwald's pid, 0 if none
  std::atomic<int64_t> consumer_heartbeat_us;
  pthread_mutex_t ring_mutex;           // robust, process-shared
  pthread_mutex_t registry_mutex;       // robust, process-shared
  std::atomic<uint32_t> slots_used;
  char root[1024];                      // published by tenantwald ("" if none)
  alignas(64) std::atomic<uint64_t> head;   // next byte to reserve (monotonic)
  alignas(64) std::atomic<uint64_t> tail;   // next byte to consume (monotonic)
  alignas(64) std::atomic<uint32_t> wake_seq;
  std::atomic<uint32_t> consumer_waiting;  // 0 awake, 1 napping, 2 deep sleep (wake me)
  alignas(64) std::atomic<uint64_t> records_written;
  std::atomic<uint64_t> records_dropped;
  std::atomic<uint64_t> bytes_dropped;
  std::atomic<uint64_t> records_abandoned;
};
static_assert(sizeof(ShmHeader) <= kHeaderBytes, "header fits its page");

struct alignas(64) Slot {
  std::atomic<uint32_t> used;         // 0 free, 1 in use (never reused)
  uint32_t index;
  char tenant[72];
  char db[72];
  char path[kMaxPath];                // absolute path of the database file
  pthread_mutex_t mutex;              // guards the capture cursor below
  // -- capture cursor (producers, under `mutex`) --
  uint32_t cursor_valid;              // 0: unknown, establish before use
  uint32_t page_size;
  uint32_t salt1, salt2, frame, cksum1, cksum2;
  uint32_t rb_valid;                  // rollback-journal mode: rb_counter is the baseline
  uint32_t rb_counter;                // file change counter after the last captured commit
  uint64_t txid;                      // last txid assigned
  // -- flags, any side --
  std::atomic<uint32_t> resync;       // 1: history in doubt: take a snapshot
  std::atomic<int64_t> last_commit_us;
  std::atomic<int32_t> last_pid;      // last producer that touched the slot
  // -- replicator's view (tenantwald writes, the extension reads) --
  std::atomic<uint32_t> state;        // DbState
  std::atomic<uint64_t> replicated_txid;
  std::atomic<int64_t> replicated_commit_us;
  std::atomic<uint64_t> snapshot_txid;
  std::atomic<uint64_t> pending_bytes;
  std::atomic<int64_t> last_snapshot_us;
  std::atomic<int64_t> pending_since_us; // commit time of the oldest txn not yet durable (0: none)
  std::atomic<uint64_t> flush_txid;   // a tenantwal_wait() caller wants this txid durable now
  std::atomic<uint32_t> error_seq;    // odd while last_error is being written
  char last_error[kErrorBytes];
  char generation[24];
  std::atomic<int64_t> throttled_until_us; // tenant over its rate limit until then (0: not)
};
static_assert(sizeof(Slot) <= kSlotBytes, "slot fits");

enum RecordType : uint16_t {
  kNone = 0,      // reserved but never typed: consumed and ignored
  kRegister = 1,  // a database was opened (slot has its names and path)
  kTxn = 2,       // pages of a committed transaction (one or more chunks)
  kResync = 3,    // the producer lost continuity: take a snapshot
  kDelete = 4,    // the database file was deleted through the VFS
  kPad = 5,       // filler to the end of the buffer (skipped by Peek)
};

enum RecordFlags : uint16_t {
  kFirst = 1,  // first chunk of a transaction
  kLast = 2,   // last chunk: db_pages_after, commit_us and wal_* are set
};

enum RecordState : uint32_t { kWriting = 1, kReady = 2 };

// At most 128 bytes (kRecordHeaderBytes); the payload follows at offset 128. A kTxn payload is page_count entries of
// (u64 pgno, page_size bytes).
struct RecordHeader {
  std::atomic<uint32_t> state;
  uint32_t length;          // header + payload, multiple of 64
  uint16_t type;
  uint16_t flags;
  uint32_t slot;
  int32_t pid;
  uint32_t page_size;
  uint64_t txid;
  uint32_t page_count;
  uint32_t db_pages_after;
  int64_t commit_us;
  uint32_t wal_salt1, wal_salt2, wal_frame, wal_cksum1;
  uint32_t wal_cksum2;
  uint32_t chunk;
};
static_assert(sizeof(RecordHeader) <= kRecordHeaderBytes, "record header fits");

struct Options {
  uint32_t slots = kDefaultSlots;
  uint64_t ring_bytes = kDefaultRingBytes;
  int group = -1;  // gid for mode 0660, or -1 for 0600
};

// A mapping of the host's shared-memory segment.
class Ring {
 public:
  // Opens (or creates with `opts`, if absent and `create`) the segment
  // `name` (no leading '/'). NotFound if absent and !create; Corruption if
  // the magic/version/size do not match; IOError on shm_open/mmap failures.
  static Status Open(const std::string& name, const Options& opts, bool create,
                     std::unique_ptr<Ring>* out);
  ~Ring();

  // Removes the segment name from the system (mapped users keep theirs).
  static Status Unlink(const std::string& name);

  ShmHeader* header() const { return hdr_; }
  const std::string& name() const { return name_; }

  // ---- registry ----
  // Finds the slot of (tenant, db), creating it with `path` if absent. A
  // full registry gives NoSpace. *created says whether it is new.
  Status FindOrAddSlot(std::string_view tenant, std::string_view db, std::string_view path,
                       uint32_t* index, bool* created);
  // Finds an existing slot; NotFound if absent.
  Status FindSlot(std::string_view tenant, std::string_view db, uint32_t* index) const;
  Slot* slot(uint32_t index) const;
  uint32_t slot_count() const { return hdr_->slot_count; }

  // Locks a slot's mutex. Returns true if a previous owner died holding it
  // (the caller must then treat the cursor as unknown). `try_only`: returns
  // Busy instead of waiting.
  Status LockSlot(Slot* s, bool try_only, bool* owner_died);
  void UnlockSlot(Slot* s);

  // Sets a slot's last_error (truncated); readers use ReadError.
  static void SetError(Slot* s, std::string_view msg);
  static std::string ReadError(const Slot* s);

  // ---- producer ----
  struct Reservation {
    RecordHeader* hdr = nullptr;
    uint8_t* payload = nullptr;
    size_t payload_bytes = 0;
  };
  // Reserves a record with `payload_bytes` of payload; waits at most
  // `wait_ms` for space. NoSpace when it does not fit in time (counted in
  // records_dropped), InvalidArgument if larger than max_payload().
  Status Reserve(size_t payload_bytes, int wait_ms, Reservation* r);
  // Publishes a reserved record (state kReady) and wakes a sleeping consumer.
  void Publish(const Reservation& r);
  // Largest payload one record may carry.
  size_t max_payload() const;

  // ---- consumer ----
  enum class PeekResult { kRecord, kEmpty, kBusy, kAbandoned };
  // Looks at the record at `tail`. kRecord: *rec is a ready record (kPad is
  // skipped internally). kEmpty: nothing to read. kBusy: a live producer is
  // still writing it. kAbandoned: its producer died; *rec is its header
  // (the slot is valid) and Consume must still be called.
  PeekResult Peek(const RecordHeader** rec);
  void Consume(const RecordHeader* rec);
  // A token to read *before* Peek; Wait(token) then sleeps until a producer
  // publishes after that moment or `timeout_ms` passes (futex), so no wake-up
  // is lost between Peek and Wait. Producers wake only a `deep` sleeper: a
  // consumer that naps briefly while busy (a few ms) is not woken, so a busy
  // writer makes no futex call per commit; an idle consumer sleeps deep and
  // costs nothing.
  uint32_t WakeToken() const;
  void Wait(uint32_t token, int timeout_ms, bool deep = true);
  uint64_t used_bytes() const;

 private:
  Ring() = default;
  std::string name_;
  ShmHeader* hdr_ = nullptr;
  uint8_t* base_ = nullptr;
  size_t map_bytes_ = 0;
};

// The default segment name: $TENANTWAL_RING or "tenantwal".
std::string DefaultRingName();

// Unix time in microseconds.
int64_t NowMicros();

// getpid() without a system call per use: cached per process and reset in
// the child of fork() (pthread_atfork). The pid is written into every ring
// record and slot on the commit path, where a syscall per commit counts.
int32_t CurrentPid();

}  // namespace tw::ring
