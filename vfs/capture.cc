// tenantwal VFS: capturing committed transactions into the ring.
//
// Design. Each database has a *capture cursor* in its ring slot, shared by
// every process on the host: the WAL position (salts, frame, running
// checksum) up to which committed transactions have been published, and the
// last txid assigned. Whoever holds the slot's robust mutex may advance it.
//
// A transaction is published by *reading back* the WAL, never by trusting
// what xWrite saw: SQLite rewrites uncommitted frames in place when a
// transaction spills its cache, rewrites their headers at commit, pads the
// commit under synchronous=FULL and leaves rolled-back frames behind. At the
// end of a write transaction (the WAL write lock is about to be released, or
// COMMIT_PHASETWO under locking_mode=EXCLUSIVE) the capture walks the frames
// after the cursor, up to the wal-index header's mxFrame when shared memory
// is in use (SQLite's own definition of committed) or to the last valid
// commit frame otherwise (its recovery rule), validating salts and the
// checksum chain (wal.h). Each committed transaction becomes one or more kTxn
// records in the ring (pages deduplicated, sorted), and the cursor moves on.
//
// Continuity. The WAL header is rewritten at offset 0 when the log restarts.
// Before that write the old log must hold nothing beyond the cursor; after it
// the cursor takes the new salts. A cursor that does not match the WAL, a
// restart not seen through the shim, a WAL that vanished, a dead mutex owner
// or a full ring all mean the replica's history is in doubt: the slot's
// resync flag is set and a kResync record sent, and tenantwald takes a new
// snapshot. The capture never guesses.
//
// Failure policy. Nothing here may fail or slow the application: errors
// are recorded in the slot and turn into a resync, never into an SQLite
// error; the ring is never waited on beyond TENANTWAL_RING_WAIT_MS (0).
#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <map>
#include <vector>
#include <memory>
#include <mutex>
#include <string>

#include "base/names.h"
#include "shim.h"
#include "walring/ring.h"
#include "walring/wal.h"

namespace twvfs {

using tw::ring::Ring;
using tw::ring::Slot;

// Cursor states kept in Slot::cursor_valid.
enum : uint32_t {
  kCursorUnknown = 0,   // establish it, and snapshot
  kCursorValid = 1,     // salts/frame/checksum describe the captured prefix
  kCursorEmpty = 2,     // everything is in the database file; the next WAL
                        // header written through the shim starts afresh
};

struct DbCapture {
  std::string path;
  std::string tenant, db;
  bool replicated = false;
  std::string why_not;          // reason when !replicated
  uint32_t slot = UINT32_MAX;
  int refs = 0;
  // The last WAL header read from the file (guarded by the slot mutex). A
  // commit whose wal-index header carries the same salts reuses it instead
  // of an fstat + pread per commit: SQLite changes the salts whenever it
  // writes a new WAL header (src/wal.c, walRestartHdr), so equal salts in
  // the index mean the same log.
  bool wal_hdr_valid = false;
  tw::wal::Header wal_hdr;
};

namespace {

std::mutex g_mu;                               // guards everything below
std::map<std::string, std::unique_ptr<DbCapture>> g_dbs;  // by path
std::unique_ptr<Ring> g_ring;
std::string g_ring_error;
bool g_ring_tried = false;
int g_wait_ms = 0;

Ring* GetRing() {
  // Called with g_mu held.
  if (!g_ring_tried) {
    g_ring_tried = true;
    const char* w = getenv("TENANTWAL_RING_WAIT_MS");
    if (w && *w) g_wait_ms = atoi(w);
    tw::ring::Options opts;
    if (const char* g = getenv("TENANTWAL_RING_GROUP")) {
      if (struct group* gr = getgrnam(g)) opts.group = int(gr->gr_gid);
    }
    tw::Status st = Ring::Open(tw::ring::DefaultRingName(), opts, true, &g_ring);
    if (!st.ok()) {
      g_ring_error = st.ToString();
      // The application keeps working; say loudly that nothing is captured
      // (tenantwald's periodic scan of --root still snapshots these files).
      sqlite3_log(SQLITE_WARNING, "tenantwal: ring %s unavailable, nothing is captured: %s",
                  tw::ring::DefaultRingName().c_str(), g_ring_error.c_str());
      fprintf(stderr, "tenantwal: ring %s unavailable, nothing is captured: %s\n",
              tw::ring::DefaultRingName().c_str(), g_ring_error.c_str());
    }
  }
  return g_ring.get();
}

std::string RealPath(const std::string& p) {
  char buf[PATH_MAX];
  if (realpath(p.c_str(), buf)) return buf;
  return "";
}

std::string RootDir(Ring* ring) {
  const char* e = getenv("TENANTWAL_ROOT");
  if (e && *e) return e;
  if (ring) {
    char buf[sizeof(ring->header()->root)];
    std::memcpy(buf, ring->header()->root, sizeof buf);
    buf[sizeof buf - 1] = 0;
    return buf;
  }
  return "";
}

// Resolves {root}/{tenant}/{db}.{db,sqlite,sqlite3} or the URI overrides.
void ResolveIdentity(DbCapture* c, const char* uri, Ring* ring) {
  const char* t = sqlite3_uri_parameter(uri, "tenant");
  const char* d = sqlite3_uri_parameter(uri, "db");
  std::string tenant = t ? t : "", db = d ? d : "";
  if (tenant.empty() || db.empty()) {
    std::string root = RootDir(ring);
    std::string rroot = root.empty() ? "" : RealPath(root);
    size_t slash = c->path.rfind('/');
    std::string dir = slash == std::string::npos ? "" : c->path.substr(0, slash);
    std::string file = c->path.substr(slash + 1);
    std::string rdir = RealPath(dir);
    size_t s2 = rdir.rfind('/');
    std::string parent = s2 == std::string::npos ? "" : rdir.substr(0, s2);
    std::string tdir = s2 == std::string::npos ? "" : rdir.substr(s2 + 1);
    std::string stem;
    for (const char* ext : {".db", ".sqlite", ".sqlite3"}) {
      size_t n = strlen(ext);
      if (file.size() > n && file.compare(file.size() - n, n, ext) == 0) {
        stem = file.substr(0, file.size() - n);
        break;
      }
    }
    if (rroot.empty()) {
      c->why_not = root.empty() ? "no root: set TENANTWAL_ROOT or start tenantwald"
                                : "root " + root + " does not exist";
      return;
    }
    if (parent != rroot || stem.empty()) {
      if (tenant.empty() && db.empty()) {
        c->why_not = "outside the root " + rroot + " (expected {root}/{tenant}/{db}.db)";
        return;
      }
    }
    if (tenant.empty()) tenant = tdir;
    if (db.empty()) db = stem;
  }
  if (!tw::ValidName(tenant) || !tw::ValidName(db)) {
    c->why_not = "invalid tenant or db name (1-64 of [A-Za-z0-9._-], not starting with '.')";
    return;
  }
  c->tenant = tenant;
  c->db = db;
  c->replicated = true;
}

// Builds the registry key of a database that is not replicated, so that it
// still shows in tenantwal_status and tenantwald's log: tenant "." (never a
// valid name) and a hash of the path.
std::string PathKey(const std::string& path) {
  uint64_t h = 1469598103934665603ull;
  for (char ch : path) { h ^= uint8_t(ch); h *= 1099511628211ull; }
  char buf[17];
  snprintf(buf, sizeof buf, "%016llx", (unsigned long long)h);
  return buf;
}

void SendRecord(Ring* ring, Slot* s, uint16_t type) {
  Ring::Reservation r;
  if (!ring->Reserve(0, g_wait_ms, &r).ok()) {
    s->resync.store(1);
    return;
  }
  r.hdr->type = type;
  r.hdr->slot = s->index;
  r.hdr->txid = s->txid;
  ring->Publish(r);
}

void FlagResync(Ring* ring, Slot* s, const char* why, bool is_error = true) {
  s->resync.store(1, std::memory_order_release);
  if (is_error) Ring::SetError(s, std::string("capture: ") + why);
  SendRecord(ring, s, tw::ring::kResync);
}

// The capture's own reads (WAL frames, pages, headers) go straight to the
// real file's descriptor with pread/fstat when the VFS below is SQLite's
// "unix" VFS, rather than through its xRead/xFileSize: they are not the
// application's I/O, so they must not count as such (SQLite's test harness
// injects I/O errors into the N-th VFS call, and would see ours), and they
// are cheaper. The descriptor is the `h` field that follows three pointers
// at the start of the unix VFS's file object (src/os_unix.c, struct
// unixFile); it is used only after fstat() shows it is the very file (same
// device and inode as the path). Anything else falls back to xRead.
int DirectFd(TwFile* f, const std::string& path) {
  if (f->direct_fd != -2) return f->direct_fd;
  f->direct_fd = -1;
  sqlite3_vfs* real = RealVfs();
  if (!real || std::strncmp(real->zName, "unix", 4) != 0) return -1;
  struct UnixFileHead {
    const sqlite3_io_methods* methods;
    sqlite3_vfs* vfs;
    void* inode;
    int h;
  };
  int h = reinterpret_cast<const UnixFileHead*>(f->real)->h;
  struct stat a, b;
  if (h >= 0 && fstat(h, &a) == 0 && stat(path.c_str(), &b) == 0 && a.st_dev == b.st_dev &&
      a.st_ino == b.st_ino) {
    f->direct_fd = h;
  }
  return f->direct_fd;
}

std::string FilePath(TwFile* f) {
  return f->kind == kWal ? f->cap->path + "-wal" : f->cap->path;
}

// The size of the real file, in bytes; false on error.
bool RealSize(TwFile* f, sqlite3_int64* size) {
  int fd = DirectFd(f, FilePath(f));
  if (fd >= 0) {
    struct stat st;
    if (fstat(fd, &st) != 0) return false;
    *size = sqlite3_int64(st.st_size);
    return true;
  }
  return f->real->pMethods->xFileSize(f->real, size) == SQLITE_OK;
}

// Reads `n` bytes at `off` from the real file (WAL or database); short at
// EOF (`size` is the file size); -1 on error.
long ReadWal(TwFile* wal, void* buf, size_t n, uint64_t off, sqlite3_int64 size) {
  if (int64_t(off) >= size) return 0;
  if (off + n > uint64_t(size)) n = size_t(uint64_t(size) - off);
  if (n == 0) return 0;
  int fd = DirectFd(wal, FilePath(wal));
  if (fd >= 0) {
    size_t got = 0;
    while (got < n) {
      ssize_t r = pread(fd, static_cast<char*>(buf) + got, n - got, off_t(off + got));
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) return -1;
      if (r == 0) break;
      got += size_t(r);
    }
    if (got < n) std::memset(static_cast<char*>(buf) + got, 0, n - got);
    return long(n);
  }
  int rc = wal->real->pMethods->xRead(wal->real, buf, int(n), sqlite3_int64(off));
  if (rc != SQLITE_OK && rc != SQLITE_IOERR_SHORT_READ) return -1;
  return long(n);
}

struct WalView {
  sqlite3_int64 size = 0;
  bool has_header = false;
  tw::wal::Header hdr;
};

bool ReadWalView(TwFile* wal, WalView* v) {
  if (!RealSize(wal, &v->size)) return false;
  uint8_t buf[tw::wal::kHeaderSize];
  v->has_header = v->size >= sqlite3_int64(sizeof buf) &&
                  ReadWal(wal, buf, sizeof buf, 0, v->size) == long(sizeof buf) &&
                  tw::wal::ParseHeader(buf, &v->hdr);
  return true;
}

// Publishes one committed transaction found in the WAL. Called with the
// slot mutex held. Returns false if the ring could not take it.
bool PublishTxn(Ring* ring, Slot* s, TwFile* src, const tw::wal::Txn& txn, uint32_t page_size,
                sqlite3_int64 src_size) {
  const uint64_t txid = s->txid + 1;
  s->txid = txid;  // advance even if dropped: the gap must be visible
  const int64_t now = tw::ring::NowMicros();
  s->last_commit_us.store(now, std::memory_order_relaxed);
  int64_t zero = 0;
  s->pending_since_us.compare_exchange_strong(zero, now);
  const size_t entry = 8 + page_size;
  const size_t per_chunk = std::max<size_t>(1, ring->max_payload() / entry);
  const size_t total = txn.pgnos.size();
  size_t i = 0;
  uint32_t chunk = 0;
  do {
    size_t n = std::min(per_chunk, total - i);
    Ring::Reservation r;
    if (!ring->Reserve(n * entry, g_wait_ms, &r).ok()) return false;
    r.hdr->type = tw::ring::kTxn;
    r.hdr->slot = s->index;
    r.hdr->page_size = page_size;
    r.hdr->txid = txid;
    r.hdr->page_count = uint32_t(n);
    r.hdr->chunk = chunk;
    r.hdr->flags = (i == 0 ? tw::ring::kFirst : 0) | (i + n == total ? tw::ring::kLast : 0);
    r.hdr->commit_us = now;
    r.hdr->db_pages_after = txn.db_size;
    r.hdr->wal_salt1 = txn.end.salt1;
    r.hdr->wal_salt2 = txn.end.salt2;
    r.hdr->wal_frame = txn.end.frame;
    r.hdr->wal_cksum1 = txn.end.cksum1;
    r.hdr->wal_cksum2 = txn.end.cksum2;
    uint8_t* out = r.payload;
    bool ok = true;
    for (size_t k = 0; k < n; ++k, ++i) {
      uint64_t pg = txn.pgnos[i];
      std::memcpy(out, &pg, 8);
      if (i < txn.page_data.size() && txn.page_data[i]) {
        // Scan read and checksummed these bytes moments ago: no second read.
        std::memcpy(out + 8, txn.page_data[i], page_size);
      } else if (ReadWal(src, out + 8, page_size, txn.page_offsets[i], src_size) !=
                 long(page_size)) {
        ok = false;
      }
      out += entry;
    }
    if (!ok) {
      // The frame vanished under us (should not happen under the slot
      // mutex): publish nothing usable and resync.
      r.hdr->type = tw::ring::kResync;
      r.hdr->page_count = 0;
      ring->Publish(r);
      return false;
    }
    ring->Publish(r);
    ++chunk;
  } while (i < total);
  return true;
}

// Establishes an unknown cursor from what is on disk and in the wal-index,
// and asks for a snapshot (the history before it is not in the replica).
void Establish(Ring* ring, Slot* s, TwFile* main, TwFile* wal,
               const char* why = nullptr) {
  tw::wal::IndexHeader ih;
  if (main->shm0 && tw::wal::ReadIndexHeader(main->shm0, &ih)) {
    if (ih.mxFrame == 0) {
      s->cursor_valid = kCursorEmpty;
    } else {
      s->salt1 = ih.aSalt[0];
      s->salt2 = ih.aSalt[1];
      s->frame = ih.mxFrame;
      s->cksum1 = ih.aFrameCksum[0];
      s->cksum2 = ih.aFrameCksum[1];
      s->page_size = ih.szPage == 1 ? 65536 : ih.szPage;
      s->cursor_valid = kCursorValid;
    }
  } else if (wal) {
    WalView v;
    if (ReadWalView(wal, &v) && v.has_header) {
      tw::wal::Cursor c{v.hdr.salt1, v.hdr.salt2, 0, v.hdr.cksum1, v.hdr.cksum2};
      tw::wal::Cursor last = c;
      tw::wal::Scan(v.hdr, c, UINT32_MAX,
                    [&](void* b, size_t n, uint64_t o) { return ReadWal(wal, b, n, o, v.size); },
                    [&](const tw::wal::Txn& t) { last = t.end; return true; });
      s->salt1 = last.salt1;
      s->salt2 = last.salt2;
      s->frame = last.frame;
      s->cksum1 = last.cksum1;
      s->cksum2 = last.cksum2;
      s->page_size = v.hdr.page_size;
      s->cursor_valid = kCursorValid;
    } else {
      s->cursor_valid = kCursorEmpty;
    }
  } else {
    return;  // nothing to go on yet; stays unknown
  }
  // First sight (why == nullptr): not an error, just a snapshot.
  if (why) FlagResync(ring, s, why);
  else FlagResync(ring, s, "history before this point is not captured: snapshot needed", false);
}

// True when the WAL (as seen in `v`) holds a valid committed transaction
// after cursor `c`.
bool CommittedAfter(TwFile* wal, const WalView& v, const tw::wal::Cursor& c) {
  bool any = false;
  tw::wal::Scan(v.hdr, c, UINT32_MAX,
                [&](void* b, size_t n, uint64_t o) { return ReadWal(wal, b, n, o, v.size); },
                [&](const tw::wal::Txn&) { any = true; return false; });
  return any;
}

// Checks that the log after the cursor holds no committed transaction (we
// are about to lose sight of it). Flags a resync otherwise.
void CheckNothingBeyond(Ring* ring, Slot* s, TwFile* wal) {
  if (s->cursor_valid == kCursorUnknown) return;
  WalView v;
  if (!ReadWalView(wal, &v)) {
    FlagResync(ring, s, "cannot read the WAL before it restarts");
    return;
  }
  if (s->cursor_valid == kCursorEmpty) {
    // Only a header we have not seen could hold frames.
    if (v.has_header && v.size > sqlite3_int64(tw::wal::kHeaderSize)) {
      tw::wal::Cursor c{v.hdr.salt1, v.hdr.salt2, 0, v.hdr.cksum1, v.hdr.cksum2};
      if (CommittedAfter(wal, v, c)) FlagResync(ring, s, "WAL written outside tenantwal");
    }
    return;
  }
  if (!v.has_header || v.hdr.salt1 != s->salt1 || v.hdr.salt2 != s->salt2) {
    FlagResync(ring, s, "WAL restarted or removed outside tenantwal");
    return;
  }
  tw::wal::Cursor c{s->salt1, s->salt2, s->frame, s->cksum1, s->cksum2};
  if (CommittedAfter(wal, v, c)) {
    FlagResync(ring, s, "WAL holds transactions that were not captured");
  }
}

// Fault injection for the crash tests (tests/crash/run), in the manner of
// SQLite's own test hooks: TENANTWAL_TEST_CRASH_BEFORE_PUBLISH=N kills the
// process with SIGKILL at the N-th capture that has committed frames to
// publish: after the commit frame reached the WAL, before the ring has it.
// Unset (always, in production), it costs one branch.
void MaybeCrashForTest() {
  static int countdown = [] {
    const char* e = getenv("TENANTWAL_TEST_CRASH_BEFORE_PUBLISH");
    return e ? atoi(e) : 0;
  }();
  if (countdown > 0 && --countdown == 0) raise(SIGKILL);
}

Slot* LockedSlot(DbCapture* cap, Ring** ring_out) {
  Ring* ring;
  {
    std::lock_guard<std::mutex> lk(g_mu);
    ring = g_ring.get();
  }
  if (!ring || !cap || !cap->replicated || cap->slot == UINT32_MAX) return nullptr;
  Slot* s = ring->slot(cap->slot);
  bool died = false;
  if (!ring->LockSlot(s, false, &died).ok()) return nullptr;
  if (died) {
    // A writer died holding the capture lock, maybe half way through
    // publishing: the cursor cannot be trusted.
    s->cursor_valid = kCursorUnknown;
    FlagResync(ring, s, "a writer died while publishing");
  }
  s->last_pid.store(tw::ring::CurrentPid(), std::memory_order_relaxed);
  *ring_out = ring;
  return s;
}

}  // namespace

DbCapture* CaptureAttach(const char* path, const char* uri) {
  std::lock_guard<std::mutex> lk(g_mu);
  auto& ent = g_dbs[path];
  if (ent) {
    ++ent->refs;
    return ent.get();
  }
  ent = std::make_unique<DbCapture>();
  DbCapture* c = ent.get();
  c->refs = 1;
  c->path = path;
  Ring* ring = GetRing();
  if (!ring) {
    c->why_not = "ring unavailable: " + g_ring_error;
    return c;
  }
  ResolveIdentity(c, uri, ring);
  uint32_t idx = 0;
  bool created = false;
  if (c->replicated && ring->FindSlot(c->tenant, c->db, &idx).ok()) {
    // Two files must never feed one replica (db.db and db.sqlite in one
    // tenant directory, or a tenant=/db= URI naming another file's names):
    // while the file that registered the names exists and is another
    // file, this one is not replicated, and says why.
    const Slot* o = ring->slot(idx);
    const std::string other(o->path, strnlen(o->path, sizeof o->path));
    struct stat a, b;
    if (other != c->path && stat(other.c_str(), &a) == 0 &&
        (stat(c->path.c_str(), &b) != 0 || a.st_dev != b.st_dev || a.st_ino != b.st_ino)) {
      c->replicated = false;
      c->why_not = "tenant/db " + c->tenant + "/" + c->db + " is already replicated from " +
                   other + " (rename this file, or give it tenant= and db= in its URI)";
    }
  }
  std::string tenant = c->replicated ? c->tenant : ".";
  std::string db = c->replicated ? c->db : PathKey(c->path);
  tw::Status st = ring->FindOrAddSlot(tenant, db, c->path, &idx, &created);
  if (!st.ok()) {
    c->replicated = false;
    c->why_not = "ring registry: " + st.ToString();
    return c;
  }
  Slot* s = ring->slot(idx);
  if (c->replicated) {
    c->slot = idx;
    if (strncmp(s->path, c->path.c_str(), tw::ring::kMaxPath) != 0) {
      // Same names, another file: not ours to decide; say so.
      Ring::SetError(s, "two files claim this tenant/db: " + c->path);
    }
  } else {
    s->state.store(uint32_t(tw::ring::DbState::kNotReplicated));
    Ring::SetError(s, c->why_not);
  }
  s->last_pid.store(tw::ring::CurrentPid(), std::memory_order_relaxed);
  if (created || !c->replicated || s->state.load() == uint32_t(tw::ring::DbState::kDeleted)) {
    if (s->state.load() == uint32_t(tw::ring::DbState::kDeleted)) {
      s->state.store(uint32_t(tw::ring::DbState::kUnknown));
      s->resync.store(1);
    }
    SendRecord(ring, s, tw::ring::kRegister);
  }
  return c;
}

void CaptureDetach(DbCapture* cap) {
  std::lock_guard<std::mutex> lk(g_mu);
  if (--cap->refs == 0) g_dbs.erase(cap->path);
}

void CaptureSync(TwFile* main, SyncReason why) {
  DbCapture* cap = main->cap;
  TwFile* wal = main->wal;
  if (!cap || !cap->replicated) return;
  Ring* ring = nullptr;
  // Fast path: nothing committed since the cursor (reads shared memory only).
  tw::wal::IndexHeader ih;
  bool have_ih = main->shm0 && tw::wal::ReadIndexHeader(main->shm0, &ih);
  if (have_ih && g_ring) {
    Slot* s = g_ring->slot(cap->slot);
    if (s->cursor_valid == kCursorValid && s->frame == ih.mxFrame && s->salt1 == ih.aSalt[0] &&
        s->salt2 == ih.aSalt[1]) {
      return;
    }
    if (s->cursor_valid == kCursorEmpty && ih.mxFrame == 0) return;
  }
  Slot* s = LockedSlot(cap, &ring);
  if (!s) return;
  if (!wal) {
    // No WAL open on this connection (rollback-journal database): nothing
    // to read. Non-WAL databases are snapshotted by tenantwald.
    ring->UnlockSlot(s);
    return;
  }
  if (s->cursor_valid == kCursorUnknown) {
    Establish(ring, s, main, wal);
    ring->UnlockSlot(s);
    return;
  }
  uint32_t limit = UINT32_MAX;
  if (main->shm0) {
    have_ih = tw::wal::ReadIndexHeader(main->shm0, &ih);
    if (have_ih) limit = ih.mxFrame;
  }
  WalView v;
  if (have_ih && cap->wal_hdr_valid && cap->wal_hdr.salt1 == ih.aSalt[0] &&
      cap->wal_hdr.salt2 == ih.aSalt[1] && cap->wal_hdr.salt1 == s->salt1 &&
      cap->wal_hdr.salt2 == s->salt2 && DirectFd(wal, FilePath(wal)) >= 0) {
    // Same log as last time: no fstat/pread of the header. Reads past the
    // end of the file come back zero-filled, which Scan rejects (salts).
    v.has_header = true;
    v.hdr = cap->wal_hdr;
    v.size = INT64_MAX / 2;
  } else {
    if (!ReadWalView(wal, &v)) {
      FlagResync(ring, s, "cannot read the WAL");
      ring->UnlockSlot(s);
      return;
    }
    cap->wal_hdr_valid = v.has_header;
    if (v.has_header) cap->wal_hdr = v.hdr;
  }
  if (s->cursor_valid == kCursorEmpty) {
    if (!v.has_header || limit == 0) {
      ring->UnlockSlot(s);
      return;
    }
    // A log exists that we did not see start: history in doubt.
    s->cursor_valid = kCursorUnknown;
    Establish(ring, s, main, wal, "a WAL was started outside tenantwal");
    ring->UnlockSlot(s);
    return;
  }
  if (!v.has_header || v.hdr.salt1 != s->salt1 || v.hdr.salt2 != s->salt2) {
    if (v.has_header || (have_ih && limit > 0)) {
      s->cursor_valid = kCursorUnknown;
      Establish(ring, s, main, wal, "WAL restarted or replaced outside tenantwal");
    }
    ring->UnlockSlot(s);
    return;
  }
  if (have_ih && (ih.aSalt[0] != s->salt1 || ih.aSalt[1] != s->salt2)) {
    // The index already describes a newer log than the file header we read:
    // a restart is in progress elsewhere. Try again at the next event.
    ring->UnlockSlot(s);
    return;
  }
  if (limit != UINT32_MAX && limit <= s->frame) {
    ring->UnlockSlot(s);
    return;
  }
  s->page_size = v.hdr.page_size;
  MaybeCrashForTest();
  tw::wal::Cursor from{s->salt1, s->salt2, s->frame, s->cksum1, s->cksum2};
  bool dropped = false;
  const uint64_t txid_before = s->txid;
  tw::wal::ScanEnd end = tw::wal::Scan(
      v.hdr, from, limit,
      [&](void* b, size_t n, uint64_t o) { return ReadWal(wal, b, n, o, v.size); },
      [&](const tw::wal::Txn& t) {
        if (!PublishTxn(ring, s, wal, t, v.hdr.page_size, v.size)) dropped = true;
        s->frame = t.end.frame;
        s->cksum1 = t.end.cksum1;
        s->cksum2 = t.end.cksum2;
        return true;
      });
  if (s->txid != txid_before) main->last_txid = s->txid;
  if (dropped) FlagResync(ring, s, "ring full: transactions dropped");
  if (limit != UINT32_MAX && s->frame != limit && end != tw::wal::ScanEnd::kLimit) {
    // The wal-index says frames up to `limit` are committed but the chain
    // broke before: the log is not what we think it is.
    s->cursor_valid = kCursorUnknown;
    Establish(ring, s, main, wal, "the WAL does not match the wal-index: changed outside tenantwal");
  }
  (void)why;
  ring->UnlockSlot(s);
}

void CaptureBeforeWalHeader(TwFile* wal) {
  Ring* ring = nullptr;
  Slot* s = LockedSlot(wal->cap, &ring);
  if (!s) return;
  CheckNothingBeyond(ring, s, wal);
  ring->UnlockSlot(s);
}

void CaptureAfterWalHeader(TwFile* wal, const void* buf, int n) {
  tw::wal::Header h;
  if (n < int(tw::wal::kHeaderSize) ||
      !tw::wal::ParseHeader(static_cast<const uint8_t*>(buf), &h)) {
    return;
  }
  Ring* ring = nullptr;
  Slot* s = LockedSlot(wal->cap, &ring);
  if (!s) return;
  if (s->cursor_valid != kCursorUnknown) {
    s->salt1 = h.salt1;
    s->salt2 = h.salt2;
    s->frame = 0;
    s->cksum1 = h.cksum1;
    s->cksum2 = h.cksum2;
    s->page_size = h.page_size;
    s->cursor_valid = kCursorValid;
  }
  s->rb_valid = 0;  // the WAL era begins: a later switch back re-baselines
  ring->UnlockSlot(s);
}

void CaptureBeforeWalTruncate(TwFile* wal, int64_t size) {
  Ring* ring = nullptr;
  Slot* s = LockedSlot(wal->cap, &ring);
  if (!s) return;
  CheckNothingBeyond(ring, s, wal);
  if (size <= int64_t(tw::wal::kHeaderSize) && s->cursor_valid != kCursorUnknown) {
    s->cursor_valid = kCursorEmpty;
  }
  ring->UnlockSlot(s);
}

void CaptureWalDeleted(const char* wal_path) {
  std::string db(wal_path, strlen(wal_path) - 4);
  DbCapture* cap = nullptr;
  {
    std::lock_guard<std::mutex> lk(g_mu);
    auto it = g_dbs.find(db);
    if (it != g_dbs.end()) cap = it->second.get();
  }
  if (!cap) return;
  Ring* ring = nullptr;
  Slot* s = LockedSlot(cap, &ring);
  if (!s) return;
  // SQLite deletes the WAL on last close, after a full checkpoint; the
  // transactions in it were published when they committed.
  if (s->cursor_valid != kCursorUnknown) s->cursor_valid = kCursorEmpty;
  ring->UnlockSlot(s);
}

void CaptureDbDeleted(const char* path) {
  std::lock_guard<std::mutex> lk(g_mu);
  Ring* ring = g_ring.get();
  if (!ring) return;
  // Usually no connection has it open any more: resolve its identity again.
  uint32_t idx = UINT32_MAX;
  auto it = g_dbs.find(path);
  if (it != g_dbs.end()) {
    if (!it->second->replicated) return;
    idx = it->second->slot;
  } else {
    DbCapture tmp;
    tmp.path = path;
    ResolveIdentity(&tmp, path, ring);
    if (!tmp.replicated || !ring->FindSlot(tmp.tenant, tmp.db, &idx).ok()) return;
  }
  Slot* s = ring->slot(idx);
  s->state.store(uint32_t(tw::ring::DbState::kDeleted));
  s->cursor_valid = kCursorUnknown;
  SendRecord(ring, s, tw::ring::kDelete);
}

bool CaptureRingOpen(std::string* why) {
  std::lock_guard<std::mutex> lk(g_mu);
  Ring* r = GetRing();
  if (!r) *why = g_ring_error;
  return r != nullptr;
}

bool CaptureWaitView(DbCapture* cap, uint64_t flush_txid, WaitView* out, std::string* why) {
  Ring* ring;
  {
    std::lock_guard<std::mutex> lk(g_mu);
    ring = g_ring.get();
  }
  if (!cap || !cap->replicated || !ring) {
    *why = cap ? cap->why_not : "not opened through the tenantwal VFS";
    if (why->empty()) *why = "ring unavailable";
    return false;
  }
  Slot* s = ring->slot(cap->slot);
  if (s->state.load(std::memory_order_relaxed) == uint32_t(tw::ring::DbState::kFenced)) {
    // Another host owns the database in the replica: waiting cannot help.
    *why = Ring::ReadError(s);  // "fenced: ... owned by host ..." (ownership.cc)
    if (why->empty()) *why = "fenced: another host owns it in the replica";
    return false;
  }
  uint64_t cur = s->flush_txid.load(std::memory_order_relaxed);
  while (cur < flush_txid && !s->flush_txid.compare_exchange_weak(cur, flush_txid)) {
  }
  out->replicated_txid = s->replicated_txid.load(std::memory_order_acquire);
  int32_t pid = ring->header()->consumer_pid.load();
  out->consumer_alive = pid > 0 && (kill(pid, 0) == 0 || errno == EPERM);
  out->last_error = Ring::ReadError(s);
  return true;
}

// ---- rollback-journal databases ----------------------------------------------

struct RollbackPages {
  std::vector<uint32_t> pgnos;   // pages written in this transaction (unsorted)
  uint32_t page_size = 0;
  bool odd_write = false;        // a write that was not one whole page
};

namespace {

struct DbHeader {
  uint32_t page_size = 0, change_counter = 0, db_pages = 0;
};

// Reads the database header (SQLite file format, section 1.3) through the
// real file: page size at 16 (1 = 65536), change counter at 24, size in
// pages at 28 (valid when the version-valid-for number at 92 equals the
// change counter; otherwise the file size decides).
bool ReadDbHeader(TwFile* main, DbHeader* h) {
  sqlite3_int64 size = 0;
  if (!RealSize(main, &size) || size < 100) return false;
  uint8_t b[100];
  if (ReadWal(main, b, sizeof b, 0, size) != long(sizeof b)) return false;
  uint32_t ps = (uint32_t(b[16]) << 8) | b[17];
  h->page_size = ps == 1 ? 65536 : ps;
  if (!tw::wal::ValidPageSize(h->page_size)) return false;
  h->change_counter = tw::wal::GetBE32(b + 24);
  uint32_t n = tw::wal::GetBE32(b + 28);
  bool valid = n > 0 && std::memcmp(b + 92, b + 24, 4) == 0;
  h->db_pages = valid ? n : uint32_t(uint64_t(size) / h->page_size);
  return true;
}

}  // namespace

void RollbackNoteWrite(TwFile* main, int n, int64_t off) {
  if (!main->cap || !main->cap->replicated) return;
  if (!main->rb) main->rb = new RollbackPages();
  RollbackPages* rb = main->rb;
  if (tw::wal::ValidPageSize(uint32_t(n)) && off % n == 0) {
    rb->page_size = uint32_t(n);
    rb->pgnos.push_back(uint32_t(off / n) + 1);
  } else {
    rb->odd_write = true;
  }
}

void RollbackBegin(TwFile* main) {
  Ring* ring = nullptr;
  Slot* s = LockedSlot(main->cap, &ring);
  if (!s) return;
  DbHeader h;
  if (ReadDbHeader(main, &h)) {
    if (s->rb_valid) {
      if (h.change_counter != s->rb_counter) {
        FlagResync(ring, s, "database file changed outside tenantwal");
      }
    } else if (s->cursor_valid != kCursorEmpty) {
      // No baseline: neither a snapshot in rollback mode nor a WAL that
      // ended cleanly through the shim.
      FlagResync(ring, s, "rollback-journal history before this point is not captured");
    }
    s->rb_valid = 1;
    s->rb_counter = h.change_counter;
  }
  ring->UnlockSlot(s);
}

void RollbackCommit(TwFile* main) {
  RollbackPages* rb = main->rb;
  if (!rb || (rb->pgnos.empty() && !rb->odd_write)) return;
  Ring* ring = nullptr;
  Slot* s = LockedSlot(main->cap, &ring);
  if (!s) {
    RollbackEnd(main);
    return;
  }
  DbHeader h;
  sqlite3_int64 size = 0;
  RealSize(main, &size);
  if (!ReadDbHeader(main, &h) || rb->odd_write ||
      (rb->page_size != 0 && rb->page_size != h.page_size)) {
    FlagResync(ring, s, "cannot follow this rollback-journal commit");
  } else {
    tw::wal::Txn txn;
    std::sort(rb->pgnos.begin(), rb->pgnos.end());
    rb->pgnos.erase(std::unique(rb->pgnos.begin(), rb->pgnos.end()), rb->pgnos.end());
    for (uint32_t pg : rb->pgnos) {
      if (pg == 0 || pg > h.db_pages) continue;
      txn.pgnos.push_back(pg);
      txn.page_offsets.push_back(uint64_t(pg - 1) * h.page_size);
    }
    txn.db_size = h.db_pages;
    const uint64_t before = s->txid;
    if (!PublishTxn(ring, s, main, txn, h.page_size, size)) {
      FlagResync(ring, s, "ring full: transactions dropped");
    }
    if (s->txid != before) main->last_txid = s->txid;
    s->rb_valid = 1;
    s->rb_counter = h.change_counter;
  }
  ring->UnlockSlot(s);
  RollbackEnd(main);
}

void RollbackEnd(TwFile* main) {
  if (main->rb) {
    main->rb->pgnos.clear();
    main->rb->odd_write = false;
  }
}

void RollbackFree(TwFile* main) {
  delete main->rb;
  main->rb = nullptr;
}

// Used by the status table.
Ring* CaptureRing() {
  std::lock_guard<std::mutex> lk(g_mu);
  return GetRing();
}

}  // namespace twvfs
