// Litestream replica readers (lib/store/litestream.h): LTX files of every
// accepted layout, replicas with several levels and a compaction, the real
// fixtures made by Litestream's test suite (../shared/fixtures/litestream,
// read in place; skipped when absent), and damaged inputs of every kind.
#include <doctest/doctest.h>
#include "temp_dir.h"
#include <sqlite3.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "store/litestream.h"
#include "store/object_store.h"

namespace fs = std::filesystem;
using namespace tw;
using namespace tw::litestream;

namespace {

using twtest::TempDir;

std::string ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

void WriteFile(const std::string& path, std::string_view data) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(data.data(), static_cast<std::streamsize>(data.size()));
}

// The fixtures live beside the source tree: $TENANTWAL_SOURCE/../shared, or
// relative to this file's directory when run from a build directory.
std::string FixtureDir() {
  std::vector<std::string> roots;
  if (const char* s = getenv("TENANTWAL_SOURCE")) roots.push_back(s);
  fs::path src = fs::path(__FILE__).parent_path().parent_path().parent_path();
  if (src.is_relative()) {  // relative to the build directory: build/tests/unit_tests
    std::error_code ec;
    fs::path exe = fs::read_symlink("/proc/self/exe", ec);
    if (!ec) roots.push_back((exe.parent_path().parent_path() / src).string());
    roots.push_back(exe.parent_path().parent_path().parent_path().string());
  }
  roots.push_back(src.string());
  for (const auto& r : roots) {
    std::string d = r + "/../shared/fixtures/litestream";
    if (fs::exists(d + "/README.md")) return fs::canonical(d).string();
  }
  return "";
}

std::unique_ptr<ObjectStore> FileStore(const std::string& dir) {
  fs::create_directories(dir);
  std::unique_ptr<ObjectStore> s;
  REQUIRE(OpenObjectStore("file://" + dir, StoreOptions(), &s).ok());
  return s;
}

// Pages of a database image.
using Image = std::string;
uint32_t Pages(const Image& db, uint32_t ps) { return uint32_t(db.size() / ps); }
const uint8_t* Page(const Image& db, uint32_t ps, uint32_t pgno) {
  return reinterpret_cast<const uint8_t*>(db.data()) + size_t(pgno - 1) * ps;
}

uint64_t LtxChecksumOf(const Image& db, uint32_t ps) {
  uint64_t x = 0;
  for (uint32_t p = 1; p <= Pages(db, ps); ++p)
    if (p != LtxLockPgno(ps)) x ^= LtxPageChecksum(p, Page(db, ps, p), ps);
  return x | kLtxChecksumFlag;
}

// An LTX file taking `before` (empty for a snapshot) to `after` over txids min..max.
std::string MakeLtx(const Image& before, const Image& after, uint32_t ps, uint64_t min,
                    uint64_t max, int64_t ts, LtxEncodeOptions o = {}) {
  LtxHeader h;
  h.page_size = ps;
  h.commit = Pages(after, ps);
  h.min_txid = min;
  h.max_txid = max;
  h.timestamp_ms = ts;
  h.pre_apply_checksum = min == 1 ? 0 : LtxChecksumOf(before, ps);
  std::vector<std::pair<uint32_t, const uint8_t*>> pages;
  for (uint32_t p = 1; p <= Pages(after, ps); ++p) {
    if (p == LtxLockPgno(ps)) continue;
    bool changed = min == 1 || p > Pages(before, ps) ||
                   std::memcmp(Page(before, ps, p), Page(after, ps, p), ps) != 0;
    if (changed) pages.push_back({p, Page(after, ps, p)});
  }
  std::string out;
  REQUIRE(EncodeLtx(h, pages, LtxChecksumOf(after, ps), o, &out).ok());
  return out;
}

std::string LtxKey(int level, uint64_t min, uint64_t max) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "ltx/%d/%016llx-%016llx.ltx", level, (unsigned long long)min,
                (unsigned long long)max);
  return buf;
}

// Database states after each of `n` transactions of a real SQLite database
// (rollback journal, so the file is the state). states[0] = after txn 1.
std::vector<Image> MakeStates(const std::string& path, int n, uint32_t ps) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
  std::string pragma = "PRAGMA page_size=" + std::to_string(ps) + "; PRAGMA journal_mode=DELETE;";
  REQUIRE(sqlite3_exec(db, pragma.c_str(), nullptr, nullptr, nullptr) == SQLITE_OK);
  std::vector<Image> states;
  std::mt19937 rng(42);
  for (int i = 0; i < n; ++i) {
    std::string sql;
    if (i == 0) {
      sql = "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); CREATE INDEX tv ON t(v);";
    } else if (i % 4 == 3) {
      sql = "DELETE FROM t WHERE id % 3 = " + std::to_string(i % 3) + ";";
    } else {
      sql = "BEGIN;";
      for (int k = 0; k < 30; ++k)
        sql += "INSERT INTO t(v) VALUES (hex(randomblob(" + std::to_string(20 + rng() % 200) +
               ")));";
      sql += "COMMIT;";
    }
    REQUIRE(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr) == SQLITE_OK);
    states.push_back(ReadFile(path));
  }
  sqlite3_close(db);
  return states;
}

// Equal databases, ignoring bytes 18-19 (WAL vs rollback journal mode).
void CheckSameDb(std::string a, std::string b) {
  REQUIRE(a.size() == b.size());
  REQUIRE(a.size() >= 100);
  a[18] = a[19] = b[18] = b[19] = 1;
  CHECK(a == b);
}

Status Restore(ObjectStore* src, const TempDir& t, const std::string& name, std::string* out,
               SourceOptions o = {}, SourceResult* res = nullptr) {
  SourceResult r;
  std::string path = t / name;
  Status s = RestoreSource(src, o, path, &r);
  if (s.ok()) *out = ReadFile(path);
  if (res) *res = r;
  return s;
}

// Finds 8 bytes at `off` in `page` that make LtxPageChecksum(pgno, page) ==
// want (CRC is affine in the message bits: solve the 64x64 system over GF(2)).
bool ForgePage(uint32_t pgno, uint8_t* page, uint32_t ps, size_t off, uint64_t want) {
  uint64_t base = LtxPageChecksum(pgno, page, ps);
  std::vector<uint64_t> col(64);
  for (int i = 0; i < 64; ++i) {
    page[off + i / 8] ^= uint8_t(1u << (i % 8));
    col[i] = LtxPageChecksum(pgno, page, ps) ^ base;
    page[off + i / 8] ^= uint8_t(1u << (i % 8));
  }
  // Gaussian elimination: rows = output bits, unknowns = 64 input bits.
  std::vector<std::pair<uint64_t, int>> rows;  // (input mask, rhs bit) per output bit
  uint64_t diff = base ^ want;
  std::vector<uint64_t> a(64);
  std::vector<int> rhs(64);
  for (int r = 0; r < 64; ++r) {
    uint64_t m = 0;
    for (int c = 0; c < 64; ++c)
      if ((col[c] >> r) & 1) m |= uint64_t(1) << c;
    a[r] = m;
    rhs[r] = int((diff >> r) & 1);
  }
  // Top bit is forced by the flag on both sides: drop that equation.
  a[63] = 0;
  rhs[63] = 0;
  std::vector<int> pivot_col(64, -1);
  int row = 0;
  for (int c = 0; c < 64 && row < 64; ++c) {
    int sel = -1;
    for (int r = row; r < 64; ++r)
      if ((a[r] >> c) & 1) { sel = r; break; }
    if (sel < 0) continue;
    std::swap(a[sel], a[row]);
    std::swap(rhs[sel], rhs[row]);
    for (int r = 0; r < 64; ++r)
      if (r != row && ((a[r] >> c) & 1)) {
        a[r] ^= a[row];
        rhs[r] ^= rhs[row];
      }
    pivot_col[row] = c;
    ++row;
  }
  for (int r = row; r < 64; ++r)
    if (rhs[r]) return false;
  uint64_t x = 0;
  for (int r = 0; r < row; ++r)
    if (rhs[r]) x |= uint64_t(1) << pivot_col[r];
  for (int i = 0; i < 64; ++i)
    if ((x >> i) & 1) page[off + i / 8] ^= uint8_t(1u << (i % 8));
  return LtxPageChecksum(pgno, page, ps) == want;
}

}  // namespace

TEST_CASE("litestream: CRC-64/GO-ISO and page checksums") {
  CHECK(Crc64Iso("123456789", 9) == 0xb90956c775a41001ull);
  CHECK(Crc64Iso("6789", 4, Crc64Iso("12345", 5)) == 0xb90956c775a41001ull);
  std::vector<uint8_t> page(4096, 0);
  CHECK((LtxPageChecksum(1, page.data(), page.size()) & kLtxChecksumFlag) != 0);
  CHECK(LtxLockPgno(4096) == 262145);
  CHECK(LtxLockPgno(65536) == 16385);
}

TEST_CASE("litestream: LTX encode/decode round trip in every layout") {
  const uint32_t ps = 1024;
  Image before(ps * 5, '\0'), after;
  std::mt19937 rng(7);
  for (auto& c : before) c = char(rng() % 7);  // compressible
  after = before + std::string(ps, 'x');
  std::memset(after.data() + ps * 2, 'q', ps);
  for (int layout = 0; layout < 3; ++layout) {
    CAPTURE(layout);
    LtxEncodeOptions o;
    o.early = layout == 0;
    o.lz4_frames = layout == 1;
    std::string snap = MakeLtx("", before, ps, 1, 3, 1000, o);
    std::string inc = MakeLtx(before, after, ps, 4, 4, 2000, o);
    LtxInfo info;
    std::map<uint32_t, std::string> got;
    REQUIRE(DecodeLtx(snap, &info, [&](uint32_t p, const uint8_t* d) {
              got[p].assign(reinterpret_cast<const char*>(d), ps);
              return Status::OK();
            }).ok());
    CHECK(info.layout == (o.early ? LtxLayout::kEarly : LtxLayout::kCurrent));
    CHECK(info.pages == 5);
    CHECK(info.frame_pages == (layout == 1 ? 5u : 0u));
    CHECK(info.block_pages == (layout == 2 ? 5u : 0u));
    CHECK(info.post_apply_checksum == LtxChecksumOf(before, ps));
    for (uint32_t p = 1; p <= 5; ++p) CHECK(got[p] == before.substr((p - 1) * ps, ps));
    REQUIRE(DecodeLtx(inc, &info).ok());
    CHECK(info.pages == 2);  // page 3 and the new page 6
    CHECK(info.header.pre_apply_checksum == LtxChecksumOf(before, ps));
    CHECK(info.header.commit == 6);
    CHECK(info.header.timestamp_ms == 2000);
  }
}

TEST_CASE("litestream: damaged and truncated LTX files are Corruption, never a crash") {
  const uint32_t ps = 512;
  Image db(ps * 4, '\0');
  for (size_t i = 0; i < db.size(); ++i) db[i] = char((i * 31) % 251);
  for (int layout = 0; layout < 3; ++layout) {
    CAPTURE(layout);
    LtxEncodeOptions o;
    o.early = layout == 0;
    o.lz4_frames = layout == 1;
    const std::string good = MakeLtx("", db, ps, 1, 1, 5, o);
    LtxInfo info;
    REQUIRE(DecodeLtx(good, &info).ok());
    // Every truncation.
    for (size_t n = 0; n < good.size(); n += (n < 200 ? 1 : 7)) {
      Status s = DecodeLtx(std::string_view(good.data(), n), &info);
      CHECK_MESSAGE(s.IsCorruption(), "truncated to " << n << ": " << s.ToString());
    }
    // Every single-byte flip (header, frames, index, trailer).
    for (size_t i = 0; i < good.size(); i += (i < 120 ? 1 : 5)) {
      std::string bad = good;
      bad[i] ^= 0x20;
      Status s = DecodeLtx(bad, &info);
      CHECK_MESSAGE(s.IsCorruption(), "flip at " << i << ": " << s.ToString());
    }
    // Random garbage after a valid header.
    std::mt19937 rng(layout);
    for (int k = 0; k < 200; ++k) {
      std::string bad = good.substr(0, 100);
      size_t len = rng() % 3000;
      for (size_t i = 0; i < len; ++i) bad.push_back(char(rng()));
      CHECK(DecodeLtx(bad, &info).IsCorruption());
    }
  }
  std::string wrong = "LTX2" + std::string(200, '\0');
  LtxInfo info;
  Status s = DecodeLtx(wrong, &info);
  CHECK(s.IsCorruption());
  CHECK(s.message().find("magic") != std::string::npos);
}

TEST_CASE("litestream: an LTX replica with several levels, a compaction and a snapshot") {
  TempDir t;
  const uint32_t ps = 4096;
  std::vector<Image> st = MakeStates(t / "live.db", 12, ps);
  auto store = FileStore(t / "replica");
  // Level 0: one file per txid (mixed page encodings); level 1: a compaction
  // of 2..6; level 9: a snapshot at 8.
  for (uint64_t i = 1; i <= 12; ++i) {
    LtxEncodeOptions o;
    o.lz4_frames = i % 2 == 0;
    Image before = i == 1 ? Image() : st[i - 2];
    REQUIRE(store->Put(LtxKey(0, i, i), MakeLtx(before, st[i - 1], ps, i, i, 1000 * int64_t(i), o))
                .ok());
  }
  REQUIRE(store->Put(LtxKey(1, 2, 6), MakeLtx(st[0], st[5], ps, 2, 6, 6000)).ok());
  REQUIRE(store->Put(LtxKey(9, 1, 8), MakeLtx("", st[7], ps, 1, 8, 8000)).ok());

  std::string out;
  SourceResult r;
  REQUIRE(Restore(store.get(), t, "latest.db", &out, {}, &r).ok());
  CheckSameDb(out, st[11]);
  CHECK(r.format == "ltx");
  CHECK(r.txid == 12);
  CHECK(r.objects_read == 5);  // snapshot 1-8, then 9, 10, 11, 12
  CHECK(r.pages == Pages(st[11], ps));

  // Earlier points: by txid (snapshot 1-1 is not at level 9, but 1-1 at level
  // 0 is a snapshot too; the compaction 2-6 is used), and by time.
  SourceOptions o;
  o.target_txid = 6;
  REQUIRE(Restore(store.get(), t, "tx6.db", &out, o, &r).ok());
  CheckSameDb(out, st[5]);
  CHECK(r.objects_read == 2);  // 1-1 then the compaction 2-6
  o = {};
  o.target_time_ms = 4500;
  REQUIRE(Restore(store.get(), t, "t4.db", &out, o, &r).ok());
  CheckSameDb(out, st[3]);
  CHECK(r.txid == 4);

  // A damaged file on the path is Corruption; a missing one is a gap.
  std::string l12;
  REQUIRE(store->Get(LtxKey(0, 12, 12), &l12).ok());
  std::string bad = l12;
  bad[bad.size() / 2] ^= 1;
  REQUIRE(store->Put(LtxKey(0, 12, 12), bad).ok());
  Status s = Restore(store.get(), t, "bad.db", &out);
  CHECK(s.IsCorruption());
  CHECK(s.message().find("000000000000000c") != std::string::npos);
  CHECK(!fs::exists(t / "bad.db"));
  REQUIRE(store->Delete(LtxKey(0, 12, 12)).ok());
  REQUIRE(store->Delete(LtxKey(0, 10, 10)).ok());
  o = {};
  o.target_txid = 11;
  s = Restore(store.get(), t, "gap.db", &out, o);
  CHECK(s.IsNotFound());
  CHECK(s.message().find("gap") != std::string::npos);
  // A file whose pre-apply checksum does not continue the state.
  REQUIRE(store->Put(LtxKey(0, 10, 10), MakeLtx(st[7], st[9], ps, 10, 10, 10000)).ok());
  s = Restore(store.get(), t, "chain.db", &out);
  CHECK(s.IsCorruption());
  CHECK(s.message().find("pre-apply") != std::string::npos);
}

TEST_CASE("litestream: the early LTX fixture (Litestream test data) migrates to its database") {
  std::string fx = FixtureDir();
  if (fx.empty()) {
    MESSAGE("SKIPPED: ../shared/fixtures/litestream not found");
    return;
  }
  const std::string ltx = ReadFile(fx + "/ltx-early/000000000000000d-000000000000000d.ltx");
  const Image database = ReadFile(fx + "/ltx-early/database");
  const uint32_t ps = 4096;
  REQUIRE(database.size() == 10 * ps);
  LtxInfo info;
  std::map<uint32_t, std::string> pages;
  REQUIRE(DecodeLtx(ltx, &info, [&](uint32_t p, const uint8_t* d) {
            pages[p].assign(reinterpret_cast<const char*>(d), ps);
            return Status::OK();
          }).ok());
  CHECK(info.layout == LtxLayout::kEarly);
  CHECK(info.header.min_txid == 0xd);
  CHECK(info.header.max_txid == 0xd);
  CHECK(info.header.commit == 10);
  CHECK(info.pages == 3);
  for (const auto& [p, d] : pages) CHECK(d == database.substr((p - 1) * ps, ps));
  // The post-apply checksum is that of the whole database: the checksum
  // definition matches Litestream's.
  CHECK(info.post_apply_checksum == LtxChecksumOf(database, ps));

  // A replica: a snapshot 1-c whose checksum is the fixture's pre-apply
  // checksum (page 8 differs, 8 bytes chosen so the checksums agree), then
  // the fixture file itself. The result must equal `database`.
  Image pre = database;
  uint64_t others = 0;
  for (uint32_t p = 1; p <= 10; ++p)
    if (p != 8) others ^= LtxPageChecksum(p, Page(pre, ps, p), ps);
  uint64_t want8 = (info.header.pre_apply_checksum ^ others) | kLtxChecksumFlag;
  REQUIRE(ForgePage(8, reinterpret_cast<uint8_t*>(pre.data()) + 7 * ps, ps, 2000, want8));
  REQUIRE(LtxChecksumOf(pre, ps) == info.header.pre_apply_checksum);
  REQUIRE(pre != database);

  TempDir t;
  auto store = FileStore(t / "replica");
  REQUIRE(store->Put(LtxKey(9, 1, 0xc), MakeLtx("", pre, ps, 1, 0xc, 1)).ok());
  REQUIRE(store->Put(LtxKey(0, 0xd, 0xd), ltx).ok());
  std::string out;
  SourceResult r;
  Status s = Restore(store.get(), t, "early.db", &out, {}, &r);
  REQUIRE_MESSAGE(s.ok(), s.ToString());
  CheckSameDb(out, database);
  CHECK(r.txid == 0xd);
  CHECK(r.checksum == info.post_apply_checksum);

  // Truncated, it is refused clearly.
  REQUIRE(store->Put(LtxKey(0, 0xd, 0xd), ltx.substr(0, ltx.size() - 100)).ok());
  s = Restore(store.get(), t, "early2.db", &out);
  CHECK(s.IsCorruption());
}

TEST_CASE("litestream: the v0.3 fixture (Litestream test data) migrates to expected.db") {
  std::string fx = FixtureDir();
  if (fx.empty()) {
    MESSAGE("SKIPPED: ../shared/fixtures/litestream not found");
    return;
  }
  TempDir t;
  std::unique_ptr<ObjectStore> src;
  REQUIRE(OpenObjectStore("file://" + fx + "/v03-restore-ok", StoreOptions(), &src).ok());
  std::string out;
  SourceResult r;
  Status s = Restore(src.get(), t, "v3.db", &out, {}, &r);
  REQUIRE_MESSAGE(s.ok(), s.ToString());
  CheckSameDb(out, ReadFile(fx + "/v03-restore-ok/expected.db"));
  CHECK(r.format == "v0.3");
  CHECK(r.objects_read == 7);
  CHECK(r.position.find("index 00000002") != std::string::npos);

  // Damaged copies: a truncated WAL segment, a flipped byte in a frame, a
  // missing segment in the middle, garbage instead of LZ4.
  auto copy = [&](const std::string& name) {
    fs::copy(fx + "/v03-restore-ok", t / name, fs::copy_options::recursive);
    for (auto& e : fs::recursive_directory_iterator(t / name))
      fs::permissions(e.path(), fs::perms::owner_all, fs::perm_options::add);
    std::unique_ptr<ObjectStore> st;
    REQUIRE(OpenObjectStore("file://" + t / name, StoreOptions(), &st).ok());
    return st;
  };
  const std::string seg = "generations/0000000000000000/wal/00000000_00000000.wal.lz4";
  {
    auto st = copy("trunc");
    std::string b;
    REQUIRE(st->Get(seg, &b).ok());
    REQUIRE(st->Put(seg, b.substr(0, b.size() - 10)).ok());
    s = Restore(st.get(), t, "trunc.db", &out);
    CHECK(s.IsCorruption());
    CHECK(s.message().find("00000000_00000000.wal.lz4") != std::string::npos);
  }
  {
    auto st = copy("flip");
    std::string b, raw, z;
    REQUIRE(st->Get(seg, &b).ok());
    REQUIRE(Lz4FrameDecode(b, 1 << 20, nullptr, [&](const uint8_t* d, size_t n) {
              raw.append(reinterpret_cast<const char*>(d), n);
              return Status::OK();
            }).ok());
    raw[32 + 24 + 4096 + 24 + 100] ^= 1;  // page of the second frame
    REQUIRE(Lz4FrameEncode(raw, &z).ok());
    REQUIRE(st->Put(seg, z).ok());
    s = Restore(st.get(), t, "flip.db", &out);
    CHECK(s.IsCorruption());
    CHECK(s.message().find("checksum") != std::string::npos);
  }
  {
    auto st = copy("hole");
    REQUIRE(st->Delete("generations/0000000000000000/wal/00000000_00002050.wal.lz4").ok());
    s = Restore(st.get(), t, "hole.db", &out);
    CHECK(s.IsCorruption());
    CHECK(s.message().find("offset") != std::string::npos);
  }
  {
    auto st = copy("garbage");
    REQUIRE(st->Put("generations/0000000000000000/snapshots/00000000.snapshot.lz4",
                    std::string(64, 'z'))
                .ok());
    s = Restore(st.get(), t, "garbage.db", &out);
    CHECK(s.IsCorruption());
    CHECK(s.message().find("lz4") != std::string::npos);
  }
  CHECK(!fs::exists(t / "garbage.db"));
}

TEST_CASE("litestream: no replica, both layouts, and import of a plain file") {
  TempDir t;
  auto empty = FileStore(t / "empty");
  std::string out;
  CHECK(Restore(empty.get(), t, "none.db", &out).IsNotFound());

  // CopyDatabase + UploadDatabaseSnapshot: the snapshot restores to the file.
  const uint32_t ps = 4096;
  std::vector<Image> st = MakeStates(t / "plain.db", 3, ps);
  uint32_t pages = 0, psz = 0;
  REQUIRE(CopyDatabase(t / "plain.db", t / "copy.db", &pages, &psz).ok());
  CHECK(psz == ps);
  CHECK(pages == Pages(st[2], ps));
  auto dst = FileStore(t / "dst");
  SnapshotUpload up;
  REQUIRE(UploadDatabaseSnapshot(dst.get(), "acme", "plain", t / "copy.db", 0, "", {}, &up).ok());
  CHECK(up.pages == pages);
  std::vector<ObjectInfo> objs;
  REQUIRE(dst->List("tenants/acme/plain/", &objs).ok());
  REQUIRE(objs.size() == 1);
  CHECK(objs[0].key == up.key);
  CHECK(CopyDatabase(t / "nope.db", t / "x.db", &pages, &psz).IsNotFound());
  WriteFile(t / "notdb", std::string(4096, 'n'));
  CHECK(!CopyDatabase(t / "notdb", t / "y.db", &pages, &psz).ok());
}
