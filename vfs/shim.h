// tenantwal VFS: types shared by the shim (shim.cc), the capture logic
// (capture.cc), the status table (status_vtab.cc) and the entry point
// (extension.cc). Internal to tenantwal.so.
#pragma once

#include <sqlite3ext.h>

#include <cstdint>
#include <string>

SQLITE_EXTENSION_INIT3

namespace twvfs {

struct DbCapture;

enum FileKind { kMainDb, kWal, kOther };

// One open file through the shim. The real (underlying VFS) file object lives
// right after this struct, in the same allocation SQLite gives us (szOsFile
// is the sum of both).
struct TwFile {
  sqlite3_file base;          // pMethods: one of the shim's io_methods
  sqlite3_file* real;         // the underlying VFS's file
  FileKind kind;
  int lock_level;             // main db: SQLITE_LOCK_* held through this handle
  bool write_lock;            // main db: holds the WAL write lock (shm lock 0)
  DbCapture* cap;             // main db and WAL: the database's capture state
  TwFile* wal;                // main db: this connection's WAL handle, if open
  TwFile* main;               // WAL: its main database handle
  volatile void* shm0;        // main db: wal-index region 0, once mapped
  uint64_t last_txid;         // main db: last txid this connection published
  struct RollbackPages* rb;   // main db, rollback-journal mode: pages written in this txn
  int direct_fd;              // capture reads: the real file's descriptor (-1: use xRead,
                              // -2: not looked up yet); see capture.cc DirectFd
};

// The VFS below the shim (the default VFS when the extension was loaded).
sqlite3_vfs* RealVfs();

// ---- capture.cc ----

// Called when a main database file is opened: resolves identity (root,
// tenant, db), registers it in the ring, and returns its capture state
// (shared by all handles of the same path in this process; never null).
DbCapture* CaptureAttach(const char* path, const char* uri_filename);
void CaptureDetach(DbCapture* cap);

// Why the capture should look at the WAL now.
enum class SyncReason {
  kWriteLockAcquired,   // catch up on frames committed outside our view
  kWriteLockReleasing,  // a transaction just committed (normal locking)
  kCommitExclusive,     // COMMIT_PHASETWO under an EXCLUSIVE file lock
};
// Publishes every committed transaction after the slot's cursor.
void CaptureSync(TwFile* main, SyncReason why);

// The WAL header is about to be (re)written at offset 0 with `hdr` (32
// bytes): checks the old log was fully captured, then the caller writes.
void CaptureBeforeWalHeader(TwFile* wal);
void CaptureAfterWalHeader(TwFile* wal, const void* hdr, int n);
// The WAL is about to be truncated to `size` bytes, or deleted (size 0).
void CaptureBeforeWalTruncate(TwFile* wal, int64_t size);
void CaptureWalDeleted(const char* wal_path);
// The database file at `path` was deleted through the VFS.
void CaptureDbDeleted(const char* path);

// Rollback-journal databases (DELETE, TRUNCATE, PERSIST, MEMORY, OFF): the
// pager writes changed pages into the database file itself. The shim notes
// which pages a write transaction touched, and at COMMIT_PHASETWO (journal
// finalized: committed) reads them back from the file and publishes them.
void RollbackNoteWrite(TwFile* main, int n, int64_t off);
void RollbackBegin(TwFile* main);    // RESERVED lock taken: check continuity
void RollbackCommit(TwFile* main);   // COMMIT_PHASETWO
void RollbackEnd(TwFile* main);      // lock dropped to SHARED or less
void RollbackFree(TwFile* main);

// For tenantwal_status: whether the ring is open, and if not, why.
bool CaptureRingOpen(std::string* why);

// For tenantwal_wait(): the database's replication state as seen from the
// ring. Returns false (with *why) when the database is not replicated.
struct WaitView {
  uint64_t replicated_txid;
  bool consumer_alive;
  std::string last_error;
};
bool CaptureWaitView(DbCapture* cap, uint64_t flush_txid, WaitView* out, std::string* why);

// SQL objects (one file each).
int RegisterStatusTable(sqlite3* db);
int RegisterWaitFunction(sqlite3* db);

}  // namespace twvfs
