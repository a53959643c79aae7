// tenantwald: reading an application's database files without dropping the
// POSIX locks of SQLite connections in this same process.
//
// POSIX advisory locks (fcntl F_SETLK, what SQLite's unix VFS takes on the
// database file and on the -shm) belong to the *process* and the *inode*,
// not to a descriptor: closing any descriptor of a file drops every lock the
// process holds on that file (POSIX.1-2017, fcntl(): "All locks associated
// with a file for a given process shall be removed when a file descriptor
// for that file is closed by that process"). SQLite's own unix VFS works
// around this by sharing one inode-level record and deferring close() while
// a lock is held (os_unix.c, the unixInodeInfo comments and pUnused).
//
// tenantwald holds SQLite locks on an application's database only while it
// takes a snapshot (replicator/snapshot.cc: a write lock for an instant, then
// a read transaction for the whole copy). Every other look at those files
// (the bypass check, the root scan, the API's file check, and the snapshot's
// own reads of the -shm, the WAL and the database file) goes through
// PeekFile, and the snapshot wraps its connections in a LockHold:
//
//   - LockHold(db_path) marks the database (by the inode of its main file)
//     as "connections of this process may hold locks on its files".
//   - A PeekFile of that database's main file, "-wal", "-shm" or
//     "-journal", closed while a hold exists, is not closed: its descriptor
//     is parked and closed when the last hold on that database ends, i.e.
//     after the snapshot's connections are closed.
//
// The inode, not the path string, identifies a database, so a file reached
// by two spellings (a symlinked root, "a//b") is still one database. A
// database file replaced by rename is a new inode: locks on the old one are
// not at risk from descriptors of the new one, and are not tracked with it.
//
// Thread-safety: both types may be used from any thread; a process-wide
// mutex guards the registry (held for a close() and a map lookup). One
// object is not shared between threads.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "base/status.h"

namespace twd {

/// RAII: while alive, descriptors of the database `db_path`'s files opened
/// through PeekFile are closed only when the last LockHold on it ends.
/// Create it *before* opening the SQLite connections that take locks, and
/// destroy it *after* closing them (declare it before them in a scope).
/// If the database file cannot be stat'ed, ok() is false and the hold does
/// nothing (there is no file to take locks on either).
class LockHold {
 public:
  explicit LockHold(const std::string& db_path);
  ~LockHold();
  LockHold(const LockHold&) = delete;
  LockHold& operator=(const LockHold&) = delete;
  bool ok() const { return held_; }
  /// Whether this hold is on the database whose main file is (dev, ino).
  bool Holds(dev_t dev, ino_t ino) const { return held_ && dev == dev_ && ino == ino_; }

 private:
  dev_t dev_ = 0;
  ino_t ino_ = 0;
  bool held_ = false;
};

/// A read-only descriptor of a database's main file or of one of its side
/// files ("-wal", "-shm", "-journal"), whose close is deferred while a
/// LockHold on the database exists (see the file comment).
class PeekFile {
 public:
  PeekFile() = default;
  ~PeekFile() { Close(); }
  PeekFile(const PeekFile&) = delete;
  PeekFile& operator=(const PeekFile&) = delete;

  /// Opens `path` read-only (O_CLOEXEC; O_NOFOLLOW when `nofollow`). The
  /// database it belongs to is `path` without a "-wal", "-shm" or
  /// "-journal" suffix. Errors: NotFound (ENOENT), IOError otherwise, with
  /// the path and strerror.
  tw::Status Open(const std::string& path, bool nofollow = false);

  /// pread(2) of up to `n` bytes at byte offset `off`, retried on EINTR and
  /// short reads. Returns the bytes read (less than `n` only at end of file)
  /// or -1 with errno set.
  long Read(void* buf, size_t n, uint64_t off) const;

  /// Closes now, or parks the descriptor until the last LockHold on its
  /// database ends. Idempotent.
  void Close();

  bool is_open() const { return fd_ >= 0; }
  int fd() const { return fd_; }

 private:
  int fd_ = -1;
  dev_t dev_ = 0;  // the database main file's inode (0/0: unknown)
  ino_t ino_ = 0;
};

/// For tests: descriptors parked now, over all databases.
size_t ParkedPeekDescriptors();

}  // namespace twd
