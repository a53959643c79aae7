// WAL parsing and scanning (lib/walring/wal.h) against WAL files built here
// and against real WAL files written by SQLite.
#include <doctest/doctest.h>
#include <sqlite3.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "walring/wal.h"

using namespace tw::wal;

namespace {

struct WalBuilder {
  Header h;
  std::vector<uint8_t> bytes;
  uint32_t s1 = 0, s2 = 0;
  explicit WalBuilder(uint32_t page_size = 1024, uint32_t magic = kMagicBE) {
    h.magic = magic;
    h.version = kVersion;
    h.page_size = page_size;
    h.ckpt_seq = 3;
    h.salt1 = 0x11223344;
    h.salt2 = 0x55667788;
    bytes.resize(kHeaderSize);
    EncodeHeader(h, bytes.data());
    REQUIRE(ParseHeader(bytes.data(), &h));
    s1 = h.cksum1;
    s2 = h.cksum2;
  }
  void Frame(uint32_t pgno, uint32_t db_size, uint8_t fill) {
    std::vector<uint8_t> page(h.page_size, fill);
    size_t off = bytes.size();
    bytes.resize(off + kFrameHeaderSize + h.page_size);
    EncodeFrame(h, pgno, db_size, page.data(), &s1, &s2, bytes.data() + off);
  }
  ReadFn Reader() const {
    return [this](void* buf, size_t n, uint64_t off) -> long {
      if (off >= bytes.size()) return 0;
      size_t m = std::min<size_t>(n, bytes.size() - off);
      std::memcpy(buf, bytes.data() + off, m);
      return long(m);
    };
  }
  Cursor Start() const { return Cursor{h.salt1, h.salt2, 0, h.cksum1, h.cksum2}; }
};

std::vector<Txn> ScanAll(const WalBuilder& w, uint32_t max = UINT32_MAX, ScanEnd* end = nullptr,
                         uint32_t* tail = nullptr) {
  std::vector<Txn> out;
  ScanEnd e = Scan(w.h, w.Start(), max, w.Reader(), [&](const Txn& t) {
    out.push_back(t);
    return true;
  }, tail);
  if (end) *end = e;
  return out;
}

}  // namespace

TEST_CASE("WAL header round trip and validation") {
  for (uint32_t magic : {kMagicLE, kMagicBE}) {
    WalBuilder w(4096, magic);
    Header h;
    CHECK(ParseHeader(w.bytes.data(), &h));
    CHECK(h.page_size == 4096);
    CHECK(h.big_endian_cksum() == (magic == kMagicBE));
    for (size_t i = 0; i < kHeaderSize; ++i) {
      auto copy = w.bytes;
      copy[i] ^= 0x40;
      CAPTURE(i);
      CHECK_FALSE(ParseHeader(copy.data(), &h));
    }
  }
  CHECK(ValidPageSize(512));
  CHECK(ValidPageSize(65536));
  CHECK_FALSE(ValidPageSize(1000));
  CHECK_FALSE(ValidPageSize(256));
  CHECK_FALSE(ValidPageSize(131072));
}

TEST_CASE("scan groups frames into committed transactions and drops the uncommitted tail") {
  WalBuilder w;
  w.Frame(1, 0, 1);
  w.Frame(2, 0, 2);
  w.Frame(1, 3, 3);  // commit: page 1 rewritten in the same txn, db is 3 pages
  w.Frame(3, 4, 4);  // commit
  w.Frame(4, 0, 5);  // uncommitted tail
  ScanEnd end;
  uint32_t tail = 0;
  auto txns = ScanAll(w, UINT32_MAX, &end, &tail);
  REQUIRE(txns.size() == 2);
  CHECK(end == ScanEnd::kEndOfLog);
  CHECK(tail == 1);
  CHECK(txns[0].pgnos == std::vector<uint32_t>{1, 2});
  CHECK(txns[0].db_size == 3);
  CHECK(txns[0].end.frame == 3);
  // The last frame of page 1 in the transaction wins.
  const size_t fs = kFrameHeaderSize + 1024;
  CHECK(txns[0].page_offsets[0] == kHeaderSize + 2 * fs + kFrameHeaderSize);
  CHECK(w.bytes[txns[0].page_offsets[0]] == 3);
  CHECK(txns[1].pgnos == std::vector<uint32_t>{3});
  CHECK(txns[1].end.frame == 4);
}

TEST_CASE("scan stops at a broken checksum chain, wrong salts or a limit") {
  WalBuilder w;
  for (uint32_t i = 1; i <= 6; ++i) w.Frame(i, i, uint8_t(i));  // six commits
  CHECK(ScanAll(w).size() == 6);
  CHECK(ScanAll(w, 4).size() == 4);
  ScanEnd end;
  ScanAll(w, 6, &end);
  CHECK(end == ScanEnd::kLimit);
  const size_t fs = kFrameHeaderSize + 1024;
  auto page_flip = w;
  page_flip.bytes[kHeaderSize + 3 * fs + kFrameHeaderSize + 10] ^= 1;  // frame 4's page
  CHECK(ScanAll(page_flip).size() == 3);
  auto salt_flip = w;
  salt_flip.bytes[kHeaderSize + 2 * fs + 9] ^= 1;  // frame 3's salt-1
  CHECK(ScanAll(salt_flip).size() == 2);
  auto truncated = w;
  truncated.bytes.resize(truncated.bytes.size() - 100);
  CHECK(ScanAll(truncated).size() == 5);
  // Continuing from a cursor in the middle gives the rest.
  auto all = ScanAll(w);
  std::vector<Txn> rest;
  Scan(w.h, all[2].end, UINT32_MAX, w.Reader(), [&](const Txn& t) {
    rest.push_back(t);
    return true;
  });
  REQUIRE(rest.size() == 3);
  CHECK(rest[0].pgnos == std::vector<uint32_t>{4});
}

TEST_CASE("a real SQLite WAL is parsed, and its wal-index header read") {
  char dir[] = "/tmp/twwalXXXXXX";
  REQUIRE(mkdtemp(dir));
  std::string path = std::string(dir) + "/x.db";
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
  sqlite3_db_config(db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, nullptr);
  REQUIRE(sqlite3_exec(db,
                       "PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0;"
                       "CREATE TABLE t(x); INSERT INTO t VALUES(1);"
                       "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i<50)"
                       " INSERT INTO t SELECT randomblob(3000) FROM n;"
                       "BEGIN; INSERT INTO t VALUES(2); ROLLBACK;",
                       nullptr, nullptr, nullptr) == SQLITE_OK);
  // Read the -shm file's header as SQLite wrote it.
  std::ifstream shm(path + "-shm", std::ios::binary);
  std::vector<uint8_t> ib(96);
  shm.read(reinterpret_cast<char*>(ib.data()), 96);
  IndexHeader ih;
  REQUIRE(ReadIndexHeader(ib.data(), &ih));
  std::ifstream in(path + "-wal", std::ios::binary);
  std::vector<uint8_t> wal((std::istreambuf_iterator<char>(in)), {});
  Header h;
  REQUIRE(ParseHeader(wal.data(), &h));
  CHECK(ih.aSalt[0] == h.salt1);
  CHECK(ih.aSalt[1] == h.salt2);
  std::vector<Txn> txns;
  Cursor c{h.salt1, h.salt2, 0, h.cksum1, h.cksum2};
  Scan(h, c, ih.mxFrame,
       [&](void* buf, size_t n, uint64_t off) -> long {
         if (off >= wal.size()) return 0;
         size_t m = std::min<size_t>(n, wal.size() - off);
         std::memcpy(buf, wal.data() + off, m);
         return long(m);
       },
       [&](const Txn& t) {
         txns.push_back(t);
         return true;
       });
  CHECK(txns.size() == 3);  // CREATE, INSERT, INSERT...SELECT
  REQUIRE(!txns.empty());
  CHECK(txns.back().end.frame == ih.mxFrame);
  CHECK(txns.back().end.cksum1 == ih.aFrameCksum[0]);
  CHECK(txns.back().end.cksum2 == ih.aFrameCksum[1]);
  CHECK(txns.back().db_size == ih.nPage);
  sqlite3_close(db);
  std::string rm = std::string("rm -rf ") + dir;
  CHECK(system(rm.c_str()) == 0);
}
