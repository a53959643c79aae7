// Unit tests for replicator/peek_file: a PeekFile closed while a LockHold on
// its database exists must not drop the POSIX locks a SQLite connection of
// this process holds (checked with F_GETLK from a forked child, which sees
// the parent's locks), and parked descriptors are closed when the hold ends.

#include <doctest/doctest.h>
#include "temp_dir.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>

#include "peek_file.h"

namespace {

// In a child process: is byte range [start, start+len) of `path` read-locked
// by another process (the parent)? F_GETLK reports a conflicting lock; a
// write-lock probe conflicts with the parent's read lock.
bool LockedByParent(const std::string& path, off_t start, off_t len) {
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
    struct flock fl = {};
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = start;
    fl.l_len = len;
    bool locked = fd >= 0 && fcntl(fd, F_GETLK, &fl) == 0 && fl.l_type != F_UNLCK;
    _exit(locked ? 0 : 1);
  }
  int st = 0;
  waitpid(pid, &st, 0);
  return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

// SQLite's SHARED lock in rollback mode: a read lock on a byte of the
// 510-byte range after PENDING_BYTE + 2 (src/os_unix.c).
constexpr off_t kSharedFirst = 0x40000000 + 2;
constexpr off_t kSharedSize = 510;

struct Db {
  sqlite3* db = nullptr;
  ~Db() {
    if (db) sqlite3_close_v2(db);
  }
};

void MakeDb(const std::string& path) {
  Db d;
  REQUIRE(sqlite3_open(path.c_str(), &d.db) == SQLITE_OK);
  REQUIRE(sqlite3_exec(d.db, "PRAGMA journal_mode=DELETE; CREATE TABLE t(x); INSERT INTO t "
                             "VALUES (1);",
                       nullptr, nullptr, nullptr) == SQLITE_OK);
}

void BeginRead(Db* d, const std::string& path) {
  REQUIRE(sqlite3_open_v2(path.c_str(), &d->db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
  REQUIRE(sqlite3_exec(d->db, "BEGIN; SELECT count(*) FROM t;", nullptr, nullptr, nullptr) ==
          SQLITE_OK);
}

}  // namespace

TEST_CASE("peek_file: a plain close() drops the read lock (the defect guarded against)") {
  twtest::TempDir dir;
  const std::string path = dir / "a.db";
  MakeDb(path);
  Db reader;
  BeginRead(&reader, path);
  CHECK(LockedByParent(path, kSharedFirst, kSharedSize));
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  REQUIRE(fd >= 0);
  close(fd);
  CHECK_FALSE(LockedByParent(path, kSharedFirst, kSharedSize));
}

TEST_CASE("peek_file: a PeekFile closed under a LockHold keeps the lock; the hold's end closes it") {
  twtest::TempDir dir;
  const std::string path = dir / "b.db";
  MakeDb(path);
  const size_t parked0 = twd::ParkedPeekDescriptors();
  {
    twd::LockHold hold(path);
    REQUIRE(hold.ok());
    Db reader;
    BeginRead(&reader, path);
    REQUIRE(LockedByParent(path, kSharedFirst, kSharedSize));
    for (int i = 0; i < 3; ++i) {
      twd::PeekFile f;
      REQUIRE(f.Open(path).ok());
      char magic[16];
      CHECK(f.Read(magic, sizeof magic, 0) == 16);
      f.Close();
      CHECK_FALSE(f.is_open());
      CHECK(LockedByParent(path, kSharedFirst, kSharedSize));
    }
    {
      // A side file of the same database (suffix "-journal") is parked too.
      int j = open((path + "-journal").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
      REQUIRE(j >= 0);
      close(j);
      twd::PeekFile f;
      REQUIRE(f.Open(path + "-journal").ok());
    }
    CHECK(twd::ParkedPeekDescriptors() == parked0 + 4);
    CHECK(LockedByParent(path, kSharedFirst, kSharedSize));
    unlink((path + "-journal").c_str());
  }  // reader closes first (declared after hold), then the hold closes the parked descriptors
  CHECK(twd::ParkedPeekDescriptors() == parked0);
  CHECK_FALSE(LockedByParent(path, kSharedFirst, kSharedSize));
}

TEST_CASE("peek_file: without a hold a PeekFile closes at once; errors name the path") {
  twtest::TempDir dir;
  const std::string path = dir / "c.db";
  MakeDb(path);
  const size_t parked0 = twd::ParkedPeekDescriptors();
  {
    twd::PeekFile f;
    REQUIRE(f.Open(path).ok());
    int fd = f.fd();
    f.Close();
    CHECK(fcntl(fd, F_GETFD) == -1);  // really closed
  }
  CHECK(twd::ParkedPeekDescriptors() == parked0);
  twd::PeekFile missing;
  tw::Status s = missing.Open(dir / "nope.db");
  CHECK(s.IsNotFound());
  CHECK(s.ToString().find("nope.db") != std::string::npos);
  // O_NOFOLLOW: a symlink is refused.
  REQUIRE(symlink(path.c_str(), (dir / "link.db").c_str()) == 0);
  twd::PeekFile link;
  CHECK_FALSE(link.Open(dir / "link.db", true).ok());
  CHECK(link.Open(dir / "link.db", false).ok());
  // A hold on a missing database holds nothing.
  twd::LockHold none(dir / "nope.db");
  CHECK_FALSE(none.ok());
}
