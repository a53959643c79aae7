// tenantwal VFS: the shim itself.
//
// A pass-through VFS in the manner of SQLite's ext/misc/vfstrace.c and
// cksumvfs.c: every VFS and io method is forwarded to the VFS below
// (normally "unix"); the io_methods reported for a file carry the real
// file's iVersion, so SQLite sees exactly the capabilities of the real file.
// The shim only *observes* a few calls, and never changes their results:
//
//   main db  xShmLock(0,1,EXCLUSIVE)      write lock taken: catch up
//            xShmUnlock of the write lock  a transaction ended: publish it
//                                          (before the lock is dropped)
//            xShmMap region 0              remember the wal-index header
//            xFileControl COMMIT_PHASETWO  commit under locking_mode=EXCLUSIVE
//            xLock/xUnlock                 track the file lock level
//   WAL      xWrite at offset 0            WAL (re)started: new salts
//            xTruncate                     TRUNCATE checkpoint/size limit
//   VFS      xDelete of a WAL or database  close of a WAL / database removed
//
// Everything about *what* to publish lives in capture.cc. If capture fails
// in any way, the application's call still succeeds exactly as without us.
#include "shim.h"

#include <cstring>

namespace twvfs {

namespace {

sqlite3_vfs* g_real = nullptr;

inline sqlite3_file* Real(sqlite3_file* f) { return reinterpret_cast<TwFile*>(f)->real; }

int Close(sqlite3_file* f) {
  TwFile* p = reinterpret_cast<TwFile*>(f);
  if (p->kind == kWal && p->main) p->main->wal = nullptr;
  int rc = p->real->pMethods ? p->real->pMethods->xClose(p->real) : SQLITE_OK;
  if (p->kind == kMainDb) RollbackFree(p);
  if (p->kind == kMainDb && p->cap) CaptureDetach(p->cap);
  p->cap = nullptr;
  return rc;
}

int Read(sqlite3_file* f, void* buf, int n, sqlite3_int64 off) {
  return Real(f)->pMethods->xRead(Real(f), buf, n, off);
}

int Write(sqlite3_file* f, const void* buf, int n, sqlite3_int64 off) {
  TwFile* p = reinterpret_cast<TwFile*>(f);
  if (p->kind == kWal && off == 0 && n >= 32 && p->cap) {
    CaptureBeforeWalHeader(p);
    int rc = p->real->pMethods->xWrite(p->real, buf, n, off);
    if (rc == SQLITE_OK) CaptureAfterWalHeader(p, buf, n);
    return rc;
  }
  int rc = p->real->pMethods->xWrite(p->real, buf, n, off);
  if (rc == SQLITE_OK && p->kind == kMainDb && p->cap && !p->wal) RollbackNoteWrite(p, n, off);
  return rc;
}

int Truncate(sqlite3_file* f, sqlite3_int64 size) {
  TwFile* p = reinterpret_cast<TwFile*>(f);
  if (p->kind == kWal && p->cap) CaptureBeforeWalTruncate(p, size);
  return p->real->pMethods->xTruncate(p->real, size);
}

int Sync(sqlite3_file* f, int flags) { return Real(f)->pMethods->xSync(Real(f), flags); }

int FileSize(sqlite3_file* f, sqlite3_int64* size) {
  return Real(f)->pMethods->xFileSize(Real(f), size);
}

int Lock(sqlite3_file* f, int level) {
  TwFile* p = reinterpret_cast<TwFile*>(f);
  int rc = p->real->pMethods->xLock(p->real, level);
  if (rc == SQLITE_OK) {
    const int before = p->lock_level;
    p->lock_level = level;
    if (p->kind == kMainDb && p->cap && !p->wal && level == SQLITE_LOCK_RESERVED &&
        before < SQLITE_LOCK_RESERVED) {
      RollbackBegin(p);  // a rollback-journal write transaction starts
    }
  }
  return rc;
}

int Unlock(sqlite3_file* f, int level) {
  TwFile* p = reinterpret_cast<TwFile*>(f);
  int rc = p->real->pMethods->xUnlock(p->real, level);
  if (rc == SQLITE_OK) {
    p->lock_level = level;
    if (p->kind == kMainDb && level <= SQLITE_LOCK_SHARED) RollbackEnd(p);
  }
  return rc;
}

int CheckReservedLock(sqlite3_file* f, int* out) {
  return Real(f)->pMethods->xCheckReservedLock(Real(f), out);
}

int FileControl(sqlite3_file* f, int op, void* arg) {
  TwFile* p = reinterpret_cast<TwFile*>(f);
  if (op == SQLITE_FCNTL_COMMIT_PHASETWO && p->kind == kMainDb && p->cap &&
      p->lock_level == SQLITE_LOCK_EXCLUSIVE) {
    // locking_mode=EXCLUSIVE: no xShmLock calls are made, so the end of the
    // transaction is only visible here (src/pager.c, pager_end_transaction).
    // Rollback-journal commits end here too, still under EXCLUSIVE.
    if (p->wal) CaptureSync(p, SyncReason::kCommitExclusive);
    else RollbackCommit(p);
  }
  int rc = p->real->pMethods->xFileControl(p->real, op, arg);
  if (op == SQLITE_FCNTL_VFSNAME && rc == SQLITE_OK && arg) {
    char** name = static_cast<char**>(arg);
    char* prev = *name;
    *name = prev ? sqlite3_mprintf("tenantwal/%z", prev) : sqlite3_mprintf("tenantwal");
  }
  return rc;
}

int SectorSize(sqlite3_file* f) { return Real(f)->pMethods->xSectorSize(Real(f)); }

int DeviceCharacteristics(sqlite3_file* f) {
  return Real(f)->pMethods->xDeviceCharacteristics(Real(f));
}

int ShmMap(sqlite3_file* f, int region, int size, int extend, void volatile** pp) {
  TwFile* p = reinterpret_cast<TwFile*>(f);
  int rc = p->real->pMethods->xShmMap(p->real, region, size, extend, pp);
  if (rc == SQLITE_OK && region == 0 && *pp) p->shm0 = *pp;
  return rc;
}

int ShmLock(sqlite3_file* f, int ofst, int n, int flags) {
  TwFile* p = reinterpret_cast<TwFile*>(f);
  const bool write_lock = (ofst == 0 && n >= 1);  // WAL_WRITE_LOCK is lock 0
  if (write_lock && p->write_lock && p->cap &&
      flags == (SQLITE_SHM_UNLOCK | SQLITE_SHM_EXCLUSIVE)) {
    CaptureSync(p, SyncReason::kWriteLockReleasing);
    p->write_lock = false;
  }
  int rc = p->real->pMethods->xShmLock(p->real, ofst, n, flags);
  if (rc == SQLITE_OK && write_lock && flags == (SQLITE_SHM_LOCK | SQLITE_SHM_EXCLUSIVE)) {
    p->write_lock = true;
    if (p->cap) CaptureSync(p, SyncReason::kWriteLockAcquired);
  }
  return rc;
}

void ShmBarrier(sqlite3_file* f) { Real(f)->pMethods->xShmBarrier(Real(f)); }

int ShmUnmap(sqlite3_file* f, int del) {
  TwFile* p = reinterpret_cast<TwFile*>(f);
  p->shm0 = nullptr;
  return p->real->pMethods->xShmUnmap(p->real, del);
}

int Fetch(sqlite3_file* f, sqlite3_int64 off, int n, void** pp) {
  return Real(f)->pMethods->xFetch(Real(f), off, n, pp);
}

int Unfetch(sqlite3_file* f, sqlite3_int64 off, void* p) {
  return Real(f)->pMethods->xUnfetch(Real(f), off, p);
}

// One method table per iVersion, so the shim never advertises methods the
// real file lacks.
#define TW_IO_METHODS(v)                                                                   \
  {v, Close, Read, Write, Truncate, Sync, FileSize, Lock, Unlock, CheckReservedLock,       \
   FileControl, SectorSize, DeviceCharacteristics, (v) >= 2 ? ShmMap : nullptr,           \
   (v) >= 2 ? ShmLock : nullptr, (v) >= 2 ? ShmBarrier : nullptr,                         \
   (v) >= 2 ? ShmUnmap : nullptr, (v) >= 3 ? Fetch : nullptr, (v) >= 3 ? Unfetch : nullptr}
const sqlite3_io_methods kMethods[4] = {TW_IO_METHODS(0), TW_IO_METHODS(1), TW_IO_METHODS(2),
                                        TW_IO_METHODS(3)};
#undef TW_IO_METHODS

int Open(sqlite3_vfs* vfs, const char* name, sqlite3_file* f, int flags, int* out_flags) {
  (void)vfs;
  TwFile* p = reinterpret_cast<TwFile*>(f);
  std::memset(p, 0, sizeof *p);
  p->direct_fd = -2;
  p->real = reinterpret_cast<sqlite3_file*>(p + 1);
  int rc = g_real->xOpen(g_real, name, p->real, flags, out_flags);
  if (rc != SQLITE_OK || p->real->pMethods == nullptr) {
    // SQLite calls xClose only when pMethods is set: make sure it is not.
    if (p->real->pMethods) p->real->pMethods->xClose(p->real);
    p->base.pMethods = nullptr;
    return rc != SQLITE_OK ? rc : SQLITE_CANTOPEN;
  }
  int v = p->real->pMethods->iVersion;
  p->base.pMethods = &kMethods[v < 0 ? 0 : (v > 3 ? 3 : v)];
  p->kind = kOther;
  if ((flags & SQLITE_OPEN_MAIN_DB) && name) {
    p->kind = kMainDb;
    p->cap = CaptureAttach(name, name);
  } else if ((flags & SQLITE_OPEN_WAL) && name) {
    p->kind = kWal;
    sqlite3_file* mf = sqlite3_database_file_object(name);
    if (mf && mf->pMethods >= &kMethods[0] && mf->pMethods <= &kMethods[3]) {
      TwFile* m = reinterpret_cast<TwFile*>(mf);
      if (m->kind == kMainDb) {
        p->main = m;
        p->cap = m->cap;
        m->wal = p;
      }
    }
  }
  return SQLITE_OK;
}

int Delete(sqlite3_vfs* vfs, const char* name, int sync_dir) {
  (void)vfs;
  if (name) {
    size_t n = std::strlen(name);
    if (n > 4 && std::strcmp(name + n - 4, "-wal") == 0) CaptureWalDeleted(name);
  }
  int rc = g_real->xDelete(g_real, name, sync_dir);
  if (rc == SQLITE_OK && name) {
    size_t n = std::strlen(name);
    bool aux = (n > 4 && (std::strcmp(name + n - 4, "-wal") == 0 ||
                          std::strcmp(name + n - 4, "-shm") == 0)) ||
               (n > 8 && std::strcmp(name + n - 8, "-journal") == 0);
    if (!aux) CaptureDbDeleted(name);
  }
  return rc;
}

int Access(sqlite3_vfs*, const char* name, int flags, int* out) {
  return g_real->xAccess(g_real, name, flags, out);
}
int FullPathname(sqlite3_vfs*, const char* name, int n, char* out) {
  return g_real->xFullPathname(g_real, name, n, out);
}
void* DlOpen(sqlite3_vfs*, const char* path) { return g_real->xDlOpen(g_real, path); }
void DlError(sqlite3_vfs*, int n, char* msg) { g_real->xDlError(g_real, n, msg); }
void (*DlSym(sqlite3_vfs*, void* h, const char* sym))(void) {
  return g_real->xDlSym(g_real, h, sym);
}
void DlClose(sqlite3_vfs*, void* h) { g_real->xDlClose(g_real, h); }
int Randomness(sqlite3_vfs*, int n, char* out) { return g_real->xRandomness(g_real, n, out); }
int Sleep(sqlite3_vfs*, int us) { return g_real->xSleep(g_real, us); }
int CurrentTime(sqlite3_vfs*, double* t) { return g_real->xCurrentTime(g_real, t); }
int GetLastError(sqlite3_vfs*, int n, char* msg) {
  return g_real->xGetLastError ? g_real->xGetLastError(g_real, n, msg) : 0;
}
int CurrentTimeInt64(sqlite3_vfs*, sqlite3_int64* t) {
  return g_real->xCurrentTimeInt64(g_real, t);
}
int SetSystemCall(sqlite3_vfs*, const char* name, sqlite3_syscall_ptr fn) {
  return g_real->xSetSystemCall(g_real, name, fn);
}
sqlite3_syscall_ptr GetSystemCall(sqlite3_vfs*, const char* name) {
  return g_real->xGetSystemCall(g_real, name);
}
const char* NextSystemCall(sqlite3_vfs*, const char* name) {
  return g_real->xNextSystemCall(g_real, name);
}

sqlite3_vfs g_vfs;

}  // namespace

sqlite3_vfs* RealVfs() { return g_real; }

// Registers the shim over the current default VFS. Idempotent; returns an
// SQLite result code.
int RegisterShim(bool make_default) {
  if (sqlite3_vfs_find("tenantwal")) {
    if (make_default) return sqlite3_vfs_register(sqlite3_vfs_find("tenantwal"), 1);
    return SQLITE_OK;
  }
  g_real = sqlite3_vfs_find(nullptr);
  if (!g_real) return SQLITE_ERROR;
  std::memset(&g_vfs, 0, sizeof g_vfs);
  g_vfs.iVersion = g_real->iVersion < 3 ? g_real->iVersion : 3;
  g_vfs.szOsFile = int(sizeof(TwFile)) + g_real->szOsFile;
  g_vfs.mxPathname = g_real->mxPathname;
  g_vfs.zName = "tenantwal";
  g_vfs.xOpen = Open;
  g_vfs.xDelete = Delete;
  g_vfs.xAccess = Access;
  g_vfs.xFullPathname = FullPathname;
  g_vfs.xDlOpen = g_real->xDlOpen ? DlOpen : nullptr;
  g_vfs.xDlError = g_real->xDlError ? DlError : nullptr;
  g_vfs.xDlSym = g_real->xDlSym ? DlSym : nullptr;
  g_vfs.xDlClose = g_real->xDlClose ? DlClose : nullptr;
  g_vfs.xRandomness = Randomness;
  g_vfs.xSleep = Sleep;
  g_vfs.xCurrentTime = CurrentTime;
  g_vfs.xGetLastError = GetLastError;
  if (g_vfs.iVersion >= 2) g_vfs.xCurrentTimeInt64 = g_real->xCurrentTimeInt64 ? CurrentTimeInt64 : nullptr;
  if (g_vfs.iVersion >= 3) {
    g_vfs.xSetSystemCall = g_real->xSetSystemCall ? SetSystemCall : nullptr;
    g_vfs.xGetSystemCall = g_real->xGetSystemCall ? GetSystemCall : nullptr;
    g_vfs.xNextSystemCall = g_real->xNextSystemCall ? NextSystemCall : nullptr;
  }
  return sqlite3_vfs_register(&g_vfs, make_default ? 1 : 0);
}

}  // namespace twvfs
