// The replica format (segments, snapshots, keys, checksums) and the restore
// engine. Decoders are fed damaged bytes of every kind and must answer
// Corruption without crashing; restores rebuild real SQLite databases from
// objects generated here from known page images and are compared byte for
// byte.
#include <doctest/doctest.h>
#include "temp_dir.h"
#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "store/format.h"
#include "store/object_store.h"
#include "store/restore.h"

namespace fs = std::filesystem;
using namespace tw;

namespace {

// ---- helpers ---------------------------------------------------------------------

using twtest::TempDir;

std::string ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

void WriteFile(const std::string& path, std::string_view data) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(data.data(), static_cast<std::streamsize>(data.size()));
}

uint64_t Le64(const std::string& s, size_t off) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | static_cast<uint8_t>(s[off + i]);
  return v;
}
void PutLe32(std::string* s, size_t off, uint32_t v) {
  for (int i = 0; i < 4; i++) (*s)[off + i] = static_cast<char>(v >> (8 * i));
}
void PutLe64(std::string* s, size_t off, uint64_t v) {
  for (int i = 0; i < 8; i++) (*s)[off + i] = static_cast<char>(v >> (8 * i));
}
// Recomputes the header CRC (at 280) and the trailer of an object, so a
// deliberately inconsistent object reaches the structural checks.
void Reseal(std::string* obj) {
  PutLe64(obj, 280, Crc64(obj->data(), 280));
  obj->resize(obj->size() - 8);
  uint64_t crc = Crc64(obj->data(), obj->size());
  obj->append(8, '\0');
  PutLe64(obj, obj->size() - 8, crc);
}

std::string Page(std::mt19937_64& rng, uint32_t page_size) {
  std::string p(page_size, '\0');
  // Partly compressible, partly random.
  for (uint32_t i = 0; i < page_size; i++)
    p[i] = (i % 64 < 16) ? static_cast<char>(rng()) : static_cast<char>(i / 64);
  return p;
}

struct TestTxn {
  TxnInfo info;
  std::map<uint32_t, std::string> pages;
};

// A random history: `n` txns from txid `first`, over a database that grows
// and shrinks; checksums maintained with DbChecksum.
std::vector<TestTxn> RandomTxns(std::mt19937_64& rng, uint32_t page_size, uint64_t first, int n,
                                DbChecksum* sum) {
  std::vector<TestTxn> out;
  uint32_t pages = std::max<uint32_t>(sum->pages(), 1);
  for (int i = 0; i < n; i++) {
    TestTxn t;
    pages = static_cast<uint32_t>(std::max<int64_t>(1, int64_t{pages} + int64_t(rng() % 7) - 2));
    sum->Resize(pages);
    uint32_t k = 1 + static_cast<uint32_t>(rng() % std::min<uint32_t>(pages, 6));
    while (t.pages.size() < k) {
      uint32_t pgno = 1 + static_cast<uint32_t>(rng() % pages);
      t.pages[pgno] = Page(rng, page_size);
    }
    for (auto& [pgno, data] : t.pages)
      sum->SetPage(pgno, reinterpret_cast<const uint8_t*>(data.data()));
    t.info.txid = first + static_cast<uint64_t>(i);
    t.info.commit_us = 1700000000000000LL + static_cast<int64_t>(t.info.txid) * 1000;
    t.info.db_pages_after = pages;
    t.info.page_count = static_cast<uint32_t>(t.pages.size());
    t.info.checksum_after = sum->value();
    out.push_back(std::move(t));
  }
  return out;
}

SegmentHeader SegHeader(uint32_t page_size, uint64_t min_txid, uint64_t before) {
  SegmentHeader h;
  h.tenant = "acme";
  h.db = "orders.db";
  h.generation = "0000018c1a2b3c4d";
  h.page_size = page_size;
  h.min_txid = min_txid;
  h.checksum_before = before;
  return h;
}

std::string WriteSegment(const std::string& path, const SegmentHeader& h,
                         const std::vector<TestTxn>& txns, const WalPosition& wal = {}) {
  SegmentWriter w;
  REQUIRE(w.Open(path, h).ok());
  for (const auto& t : txns) {
    REQUIRE(w.BeginTxn(t.info).ok());
    for (const auto& [pgno, data] : t.pages)
      REQUIRE(w.AddPage(pgno, reinterpret_cast<const uint8_t*>(data.data())).ok());
  }
  uint64_t bytes = 0;
  Status s = w.Finish(wal, false, &bytes);
  REQUIRE_MESSAGE(s.ok(), s.ToString());
  std::string out = ReadFile(path);
  CHECK(out.size() == bytes);
  return out;
}

// Decodes a whole segment; returns the status of Open/ForEach.
Status DecodeSegment(std::string_view bytes, std::vector<TestTxn>* out = nullptr) {
  SegmentReader r;
  TW_RETURN_IF_ERROR(r.Open(bytes));
  std::vector<TestTxn> txns;
  uint32_t ps = r.header().page_size;
  Status s = r.ForEach(
      [&](const TxnInfo& t) {
        txns.push_back(TestTxn{t, {}});
        return true;
      },
      [&](uint32_t pgno, const uint8_t* page) {
        txns.back().pages[pgno] = std::string(reinterpret_cast<const char*>(page), ps);
        return true;
      });
  if (out) *out = std::move(txns);
  return s;
}

Status DecodeSnapshot(const std::string& path, std::string* image = nullptr) {
  SnapshotReader r;
  TW_RETURN_IF_ERROR(r.Open(path));
  std::string img;
  uint32_t ps = r.header().page_size;
  Status s = r.ForEach([&](uint32_t pgno, const uint8_t* page) {
    CHECK(img.size() == static_cast<size_t>(pgno - 1) * ps);
    img.append(reinterpret_cast<const char*>(page), ps);
    return true;
  });
  if (image) *image = std::move(img);
  return s;
}

}  // namespace

// ---- checksums -------------------------------------------------------------------

TEST_CASE("CRC-64 is the .xz check") {
  // The standard check value of CRC-64/XZ over "123456789".
  CHECK(Crc64("123456789", 9) == 0x995DC9BBDF1939FAULL);
  CHECK(Crc64("", 0) == 0);
  // Continuation equals one pass.
  CHECK(Crc64("6789", 4, Crc64("12345", 5)) == Crc64("123456789", 9));
}

TEST_CASE("PageChecksum binds the page number") {
  std::string page(4096, 'x');
  const uint8_t* p = reinterpret_cast<const uint8_t*>(page.data());
  std::string buf = std::string("\x00\x00\x01\x02", 4) + page;
  CHECK(PageChecksum(0x0102, p, page.size()) == Crc64(buf.data(), buf.size()));
  CHECK(PageChecksum(1, p, page.size()) != PageChecksum(2, p, page.size()));
}

TEST_CASE("DbChecksum maintained page by page equals the recomputed sum") {
  std::mt19937_64 rng(7);
  const uint32_t ps = 1024;
  DbChecksum sum(ps);
  std::string image;
  CHECK(sum.value() == 0);
  for (int step = 0; step < 300; step++) {
    uint32_t op = static_cast<uint32_t>(rng() % 10);
    if (op == 0) {  // resize
      uint32_t pages = static_cast<uint32_t>(rng() % 40);
      sum.Resize(pages);
      image.resize(static_cast<size_t>(pages) * ps, '\0');
    } else {
      uint32_t pgno = 1 + static_cast<uint32_t>(rng() % 40);
      std::string page = Page(rng, ps);
      sum.SetPage(pgno, reinterpret_cast<const uint8_t*>(page.data()));
      if (image.size() < static_cast<size_t>(pgno) * ps) image.resize(pgno * ps, '\0');
      image.replace(static_cast<size_t>(pgno - 1) * ps, ps, page);
    }
    REQUIRE(sum.pages() * static_cast<size_t>(ps) == image.size());
    REQUIRE(sum.value() ==
            DbChecksumOf(reinterpret_cast<const uint8_t*>(image.data()), image.size(), ps));
  }
  sum.Resize(0);
  CHECK(sum.value() == 0);
}

TEST_CASE("valid page sizes") {
  for (uint32_t ps : {512u, 1024u, 4096u, 65536u}) CHECK(ValidPageSize(ps));
  for (uint32_t ps : {0u, 1u, 256u, 1000u, 4097u, 131072u}) CHECK_FALSE(ValidPageSize(ps));
}

// ---- keys -------------------------------------------------------------------------

TEST_CASE("keys round trip") {
  std::string gen = "0000018c1a2b3c4d";
  std::string sk = SnapshotKey("acme", "orders.db", gen, 0x2a);
  CHECK(sk == "tenants/acme/orders.db/snapshots/0000018c1a2b3c4d/000000000000002a.twsnap");
  std::string wk = SegmentKey("acme", "orders.db", gen, 43, 0x100);
  CHECK(wk ==
        "tenants/acme/orders.db/wal/0000018c1a2b3c4d/000000000000002b-0000000000000100.twseg");
  CHECK(DbPrefix("acme", "orders.db") == "tenants/acme/orders.db/");
  CHECK(sk.rfind(DbPrefix("acme", "orders.db"), 0) == 0);

  ParsedKey k;
  REQUIRE(ParseKey(sk, &k));
  CHECK(k.kind == ParsedKey::kSnapshot);
  CHECK(k.tenant == "acme");
  CHECK(k.db == "orders.db");
  CHECK(k.generation == gen);
  CHECK(k.min_txid == 0x2a);
  CHECK(k.max_txid == 0x2a);
  REQUIRE(ParseKey(wk, &k));
  CHECK(k.kind == ParsedKey::kSegment);
  CHECK(k.min_txid == 43);
  CHECK(k.max_txid == 256);
  REQUIRE(ParseKey(SegmentKey("t", "d", gen, 1, UINT64_MAX), &k));
  CHECK(k.max_txid == UINT64_MAX);

  for (const char* bad : {
           "",
           "tenants/acme/orders.db/snapshots/0000018c1a2b3c4d/000000000000002A.twsnap",
           "tenants/acme/orders.db/snapshots/0000018c1a2b3c4d/00000000000002a.twsnap",
           "tenants/acme/orders.db/snapshots/0000018C1A2B3C4D/000000000000002a.twsnap",
           "tenants/acme/orders.db/snapshots/0000018c1a2b3c4d/000000000000002a.twseg",
           "tenants/acme/orders.db/snap/0000018c1a2b3c4d/000000000000002a.twsnap",
           "tenants/../orders.db/snapshots/0000018c1a2b3c4d/000000000000002a.twsnap",
           "tenants/acme/orders.db/snapshots/0000018c1a2b3c4d/000000000000002a.twsnap/x",
           "x/tenants/acme/orders.db/snapshots/0000018c1a2b3c4d/000000000000002a.twsnap",
           "tenants/acme/orders.db/wal/0000018c1a2b3c4d/0000000000000002-0000000000000001.twseg",
           "tenants/acme/orders.db/wal/0000018c1a2b3c4d/0000000000000001_0000000000000002.twseg",
           "tenants/acme/orders.db/wal/0000018c1a2b3c4d/0000000000000001-0000000000000002.twsnap",
           "tenants/acme//wal/0000018c1a2b3c4d/0000000000000001-0000000000000002.twseg",
       }) {
    CAPTURE(bad);
    CHECK_FALSE(ParseKey(bad, &k));
  }
}

TEST_CASE("generation ids are hex and sort by creation time") {
  std::vector<std::string> ids;
  for (int i = 0; i < 50; i++) {
    ids.push_back(NewGenerationId());
    if (i % 10 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  for (const auto& id : ids) CHECK(IsGenerationId(id));
  CHECK(std::is_sorted(ids.begin(), ids.end()));
  CHECK(std::set<std::string>(ids.begin(), ids.end()).size() == ids.size());
  // The top 48 bits are Unix milliseconds.
  uint64_t v = std::stoull(ids.back(), nullptr, 16);
  int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                       .count();
  CHECK(std::llabs(static_cast<long long>(v >> 16) - now_ms) < 60000);
  CHECK_FALSE(IsGenerationId("0000018c1a2b3c4"));
  CHECK_FALSE(IsGenerationId("0000018c1a2b3c4G"));
  CHECK_FALSE(IsGenerationId("0000018C1A2B3C4D"));
}

// ---- segments -------------------------------------------------------------------

TEST_CASE("segment round trip") {
  TempDir dir;
  for (uint32_t ps : {512u, 4096u, 65536u}) {
    CAPTURE(ps);
    std::mt19937_64 rng(ps);
    DbChecksum sum(ps);
    sum.Resize(3);
    uint64_t before = sum.value();
    auto txns = RandomTxns(rng, ps, 101, 9, &sum);
    WalPosition wal{1, 2, 3, 4, 5};
    SegmentHeader h = SegHeader(ps, 101, before);
    std::string bytes = WriteSegment(dir / "seg", h, txns, wal);

    SegmentReader r;
    REQUIRE(r.Open(bytes).ok());
    const SegmentHeader& got = r.header();
    CHECK(got.tenant == "acme");
    CHECK(got.db == "orders.db");
    CHECK(got.generation == h.generation);
    CHECK(got.page_size == ps);
    CHECK(got.min_txid == 101);
    CHECK(got.max_txid == 109);
    CHECK(got.txn_count == 9);
    CHECK(got.db_pages_after == txns.back().info.db_pages_after);
    CHECK(got.first_commit_us == txns.front().info.commit_us);
    CHECK(got.last_commit_us == txns.back().info.commit_us);
    CHECK(got.checksum_before == before);
    CHECK(got.checksum_after == sum.value());
    CHECK(got.wal_after.salt1 == 1);
    CHECK(got.wal_after.cksum2 == 5);

    SegmentHeader parsed;
    REQUIRE(ParseSegmentHeader(bytes, &parsed).ok());
    CHECK(parsed.max_txid == 109);

    std::vector<TestTxn> decoded;
    Status s = DecodeSegment(bytes, &decoded);
    REQUIRE_MESSAGE(s.ok(), s.ToString());
    REQUIRE(decoded.size() == txns.size());
    for (size_t i = 0; i < txns.size(); i++) {
      CHECK(decoded[i].info.txid == txns[i].info.txid);
      CHECK(decoded[i].info.commit_us == txns[i].info.commit_us);
      CHECK(decoded[i].info.db_pages_after == txns[i].info.db_pages_after);
      CHECK(decoded[i].info.page_count == txns[i].info.page_count);
      CHECK(decoded[i].info.checksum_after == txns[i].info.checksum_after);
      CHECK(decoded[i].pages == txns[i].pages);
    }
  }
}

TEST_CASE("segment ForEach stops early when a callback says so") {
  TempDir dir;
  std::mt19937_64 rng(3);
  DbChecksum sum(1024);
  auto txns = RandomTxns(rng, 1024, 1, 5, &sum);
  std::string bytes = WriteSegment(dir / "seg", SegHeader(1024, 1, 0), txns);
  SegmentReader r;
  REQUIRE(r.Open(bytes).ok());
  int seen = 0;
  CHECK(r.ForEach([&](const TxnInfo& t) { return ++seen, t.txid < 3; }, nullptr).ok());
  CHECK(seen == 3);
  int pages = 0;
  CHECK(r.ForEach(nullptr, [&](uint32_t, const uint8_t*) { return ++pages < 2; }).ok());
  CHECK(pages == 2);
}

TEST_CASE("segment writer rejects misuse") {
  TempDir dir;
  std::string page(512, 'p');
  const uint8_t* p = reinterpret_cast<const uint8_t*>(page.data());
  SegmentHeader h = SegHeader(512, 10, 0);
  {
    SegmentHeader bad = h;
    bad.tenant = "../x";
    SegmentWriter w;
    CHECK(w.Open(dir / "a", bad).code() == Status::kInvalidArgument);
    bad = h;
    bad.page_size = 1000;
    CHECK(w.Open(dir / "a", bad).code() == Status::kInvalidArgument);
    bad = h;
    bad.min_txid = 0;
    CHECK(w.Open(dir / "a", bad).code() == Status::kInvalidArgument);
  }
  {
    SegmentWriter w;
    REQUIRE(w.Open(dir / "b", h).ok());
    CHECK_FALSE(w.BeginTxn(TxnInfo{11, 0, 5, 1, 0}).ok());  // not min_txid
  }
  CHECK_FALSE(fs::exists(dir / "b"));  // abandoned by the destructor
  {
    SegmentWriter w;
    REQUIRE(w.Open(dir / "c", h).ok());
    REQUIRE(w.BeginTxn(TxnInfo{10, 0, 5, 2, 0}).ok());
    REQUIRE(w.AddPage(3, p).ok());
    CHECK_FALSE(w.AddPage(3, p).ok());  // not increasing
  }
  {
    SegmentWriter w;
    REQUIRE(w.Open(dir / "d", h).ok());
    REQUIRE(w.BeginTxn(TxnInfo{10, 0, 5, 1, 0}).ok());
    CHECK_FALSE(w.AddPage(6, p).ok());  // beyond db_pages_after
  }
  {
    SegmentWriter w;
    REQUIRE(w.Open(dir / "e", h).ok());
    REQUIRE(w.BeginTxn(TxnInfo{10, 0, 5, 2, 0}).ok());
    REQUIRE(w.AddPage(1, p).ok());
    uint64_t bytes;
    CHECK_FALSE(w.Finish({}, false, &bytes).ok());  // missing a page
    w.Abandon();
    CHECK_FALSE(fs::exists(dir / "e"));
  }
  {
    SegmentWriter w;
    REQUIRE(w.Open(dir / "f", h).ok());
    uint64_t bytes;
    CHECK_FALSE(w.Finish({}, false, &bytes).ok());  // no transactions
  }
}

TEST_CASE("every flipped byte and every truncation of a segment is Corruption") {
  TempDir dir;
  std::mt19937_64 rng(11);
  DbChecksum sum(512);
  auto txns = RandomTxns(rng, 512, 7, 3, &sum);
  std::string good = WriteSegment(dir / "seg", SegHeader(512, 7, 0), txns);
  REQUIRE(DecodeSegment(good).ok());
  for (size_t i = 0; i < good.size(); i++) {
    for (uint8_t mask : {0x01, 0x80}) {
      std::string bad = good;
      bad[i] = static_cast<char>(bad[i] ^ mask);
      Status s = DecodeSegment(bad);
      CAPTURE(i);
      REQUIRE(s.IsCorruption());
    }
  }
  for (size_t n = 0; n < good.size(); n++) {
    CAPTURE(n);
    REQUIRE(DecodeSegment(std::string_view(good).substr(0, n)).IsCorruption());
  }
  std::string longer = good + "x";
  CHECK(DecodeSegment(longer).IsCorruption());
}

namespace {

// Builds a segment whose body is `body` (uncompressed) under the header of
// `model` with fields patched by `patch`; both CRCs are valid.
std::string CraftSegment(const std::string& model, const std::string& body,
                         const std::function<void(std::string*)>& patch = nullptr) {
  std::string out = model.substr(0, kSegmentHeaderSize);
  if (patch) patch(&out);
  std::string z(ZSTD_compressBound(body.size()), '\0');
  size_t n = ZSTD_compress(z.data(), z.size(), body.data(), body.size(), 3);
  REQUIRE_FALSE(ZSTD_isError(n));
  out += z.substr(0, n);
  out.append(8, '\0');
  Reseal(&out);
  return out;
}

// The uncompressed body of a (valid) segment.
std::string Body(const std::string& seg) {
  std::string z = seg.substr(kSegmentHeaderSize, seg.size() - kSegmentHeaderSize - 8);
  // The writer streams, so the frame does not record its content size.
  std::string out;
  ZSTD_DCtx* d = ZSTD_createDCtx();
  ZSTD_inBuffer in{z.data(), z.size(), 0};
  std::string buf(ZSTD_DStreamOutSize(), '\0');
  size_t r = 1;
  while (r != 0) {
    ZSTD_outBuffer ob{buf.data(), buf.size(), 0};
    r = ZSTD_decompressStream(d, &ob, &in);
    REQUIRE_FALSE(ZSTD_isError(r));
    out.append(buf.data(), ob.pos);
  }
  ZSTD_freeDCtx(d);
  return out;
}

}  // namespace

TEST_CASE("structurally inconsistent segments with valid CRCs are Corruption") {
  TempDir dir;
  std::mt19937_64 rng(5);
  DbChecksum sum(512);
  auto txns = RandomTxns(rng, 512, 20, 3, &sum);
  std::string good = WriteSegment(dir / "seg", SegHeader(512, 20, 0), txns);
  std::string body = Body(good);
  REQUIRE(DecodeSegment(CraftSegment(good, body)).ok());  // the crafting itself is sound
  size_t rec2 = kTxnRecordSize + txns[0].info.page_count * (4 + 512);

  auto expect = [&](const std::string& what, const std::string& seg) {
    CAPTURE(what);
    Status s = DecodeSegment(seg);
    CHECK(s.IsCorruption());
  };
  // Header fields.
  expect("txn_count", CraftSegment(good, body, [](std::string* h) { PutLe32(h, 32, 4); }));
  expect("max_txid", CraftSegment(good, body, [](std::string* h) { PutLe64(h, 24, 23); }));
  expect("min > max", CraftSegment(good, body, [](std::string* h) { PutLe64(h, 16, 30); }));
  expect("zero min", CraftSegment(good, body, [](std::string* h) { PutLe64(h, 16, 0); }));
  expect("page size", CraftSegment(good, body, [](std::string* h) { PutLe32(h, 12, 1024); }));
  expect("page size odd", CraftSegment(good, body, [](std::string* h) { PutLe32(h, 12, 513); }));
  expect("page total", CraftSegment(good, body, [](std::string* h) {
           PutLe64(h, 96, Le64(*h, 96) + 1);
         }));
  expect("huge page total", CraftSegment(good, body, [](std::string* h) {
           PutLe64(h, 96, UINT64_MAX / 2);
           PutLe64(h, 104, UINT64_MAX);
         }));
  expect("body size", CraftSegment(good, body, [](std::string* h) {
           PutLe64(h, 104, Le64(*h, 104) + 1);
         }));
  expect("version", CraftSegment(good, body, [](std::string* h) { PutLe32(h, 8, 2); }));
  expect("tenant len", CraftSegment(good, body, [](std::string* h) { (*h)[112] = 65; }));
  expect("tenant chars", CraftSegment(good, body, [](std::string* h) { (*h)[113] = '/'; }));
  expect("generation", CraftSegment(good, body, [](std::string* h) { (*h)[242] = 'X'; }));
  expect("reserved", CraftSegment(good, body, [](std::string* h) { (*h)[270] = 1; }));
  expect("db pages 0", CraftSegment(good, body, [](std::string* h) { PutLe32(h, 36, 0); }));
  expect("checksum_after", CraftSegment(good, body, [](std::string* h) {
           PutLe64(h, 64, Le64(*h, 64) ^ 1);
         }));
  // Body records.
  {
    std::string b = body;
    PutLe64(&b, rec2, 22);  // txid 21 -> 22: not consecutive
    expect("txid gap", CraftSegment(good, b));
  }
  {
    std::string b = body;
    PutLe64(&b, 0, 19);
    expect("first txid", CraftSegment(good, b));
  }
  {
    std::string b = body;
    PutLe32(&b, 20, txns[0].info.page_count + 1);  // page_count of txn 1
    expect("page count", CraftSegment(good, b));
  }
  {
    std::string b = body;
    PutLe32(&b, 16, 0);  // db_pages_after of txn 1
    expect("db pages after", CraftSegment(good, b));
  }
  {
    std::string b = body;
    b[kTxnRecordSize] = b[kTxnRecordSize + 1] = b[kTxnRecordSize + 2] =
        b[kTxnRecordSize + 3] = 0;  // pgno 0
    expect("pgno 0", CraftSegment(good, b));
  }
  {
    std::string b = body;
    for (int i = 0; i < 4; i++) b[kTxnRecordSize + i] = '\xff';  // pgno beyond the db
    expect("pgno too large", CraftSegment(good, b));
  }
  expect("body short", CraftSegment(good, body.substr(0, body.size() - 1)));
  expect("body long", CraftSegment(good, body + "z"));
  expect("body empty", CraftSegment(good, ""));
  {
    // Two frames: the second must not be accepted.
    std::string seg = CraftSegment(good, body);
    std::string z(ZSTD_compressBound(1), '\0');
    size_t n = ZSTD_compress(z.data(), z.size(), "x", 1, 1);
    seg.insert(seg.size() - 8, z.substr(0, n));
    Reseal(&seg);
    expect("second frame", seg);
  }
  {
    // Not zstd at all.
    std::string seg = good.substr(0, kSegmentHeaderSize) + body + std::string(8, '\0');
    Reseal(&seg);
    expect("raw body", seg);
  }
}

TEST_CASE("random mutations of a segment body never crash the decoder") {
  TempDir dir;
  std::mt19937_64 rng(99);
  DbChecksum sum(512);
  auto txns = RandomTxns(rng, 512, 1, 4, &sum);
  std::string good = WriteSegment(dir / "seg", SegHeader(512, 1, 0), txns);
  std::string body = Body(good);
  int corrupt = 0;
  for (int iter = 0; iter < 1500; iter++) {
    std::string b = body;
    int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; f++) {
      size_t at = rng() % b.size();
      // Favour the record and pgno bytes, where the structure lives.
      if (rng() % 2) at = rng() % std::min<size_t>(b.size(), kTxnRecordSize + 8);
      b[at] = static_cast<char>(rng());
    }
    if (rng() % 4 == 0) b.resize(rng() % b.size());
    Status s = DecodeSegment(CraftSegment(good, b));
    REQUIRE((s.ok() || s.IsCorruption()));
    corrupt += s.IsCorruption();
  }
  CHECK(corrupt > 0);
}

// ---- snapshots --------------------------------------------------------------------

namespace {

std::string WriteSnapshot(const std::string& path, const std::string& image, uint32_t ps,
                          uint64_t txid, const std::string& gen = "0000018c1a2b3c4d",
                          const std::string& tenant = "acme", const std::string& db = "orders.db") {
  SnapshotHeader h;
  h.tenant = tenant;
  h.db = db;
  h.generation = gen;
  h.parent_generation = "0000018c00000000";
  h.txid = txid;
  h.page_size = ps;
  h.commit_us = 1700000000000000LL + static_cast<int64_t>(txid);
  h.created_us = 1700000000500000LL;
  h.wal = WalPosition{9, 8, 7, 6, 5};
  SnapshotWriter w;
  REQUIRE(w.Open(path, h).ok());
  for (size_t off = 0; off < image.size(); off += ps)
    REQUIRE(w.AddPage(reinterpret_cast<const uint8_t*>(image.data() + off)).ok());
  uint64_t bytes = 0;
  REQUIRE(w.Finish(false, &bytes).ok());
  std::string out = ReadFile(path);
  CHECK(out.size() == bytes);
  return out;
}

}  // namespace

TEST_CASE("snapshot round trip") {
  TempDir dir;
  for (uint32_t ps : {512u, 4096u, 65536u}) {
    CAPTURE(ps);
    std::mt19937_64 rng(ps + 1);
    std::string image;
    for (int i = 0; i < 37; i++) image += Page(rng, ps);
    WriteSnapshot(dir / "snap", image, ps, 42);
    SnapshotReader r;
    REQUIRE(r.Open(dir / "snap").ok());
    const SnapshotHeader& h = r.header();
    CHECK(h.tenant == "acme");
    CHECK(h.db == "orders.db");
    CHECK(h.generation == "0000018c1a2b3c4d");
    CHECK(h.parent_generation == "0000018c00000000");
    CHECK(h.txid == 42);
    CHECK(h.page_size == ps);
    CHECK(h.db_pages == 37);
    CHECK(h.commit_us == 1700000000000042LL);
    CHECK(h.created_us == 1700000000500000LL);
    CHECK(h.wal.salt1 == 9);
    CHECK(h.wal.cksum2 == 5);
    CHECK(h.checksum ==
          DbChecksumOf(reinterpret_cast<const uint8_t*>(image.data()), image.size(), ps));
    std::string got;
    REQUIRE(DecodeSnapshot(dir / "snap", &got).ok());
    CHECK(got == image);
    SnapshotHeader parsed;
    REQUIRE(ParseSnapshotHeader(ReadFile(dir / "snap"), &parsed).ok());
    CHECK(parsed.db_pages == 37);
  }
  // An empty database (txid 0) is a valid snapshot.
  WriteSnapshot(dir / "empty", "", 4096, 0);
  std::string got = "x";
  CHECK(DecodeSnapshot(dir / "empty", &got).ok());
  CHECK(got.empty());
}

TEST_CASE("damaged snapshots are Corruption") {
  TempDir dir;
  std::mt19937_64 rng(17);
  std::string image;
  for (int i = 0; i < 5; i++) image += Page(rng, 512);
  std::string good = WriteSnapshot(dir / "good", image, 512, 3);
  std::string path = dir / "bad";
  for (size_t i = 0; i < good.size(); i += (i < 300 ? 1 : 7)) {
    std::string bad = good;
    bad[i] = static_cast<char>(bad[i] ^ 0x10);
    WriteFile(path, bad);
    CAPTURE(i);
    REQUIRE(DecodeSnapshot(path).IsCorruption());
  }
  for (size_t n = 0; n < good.size(); n += (n < 320 ? 1 : 13)) {
    WriteFile(path, std::string_view(good).substr(0, n));
    CAPTURE(n);
    REQUIRE(DecodeSnapshot(path).IsCorruption());
  }
  // Re-sealed inconsistencies: page count, checksum, a page swapped.
  auto sealed = [&](const std::function<void(std::string*)>& patch) {
    std::string s = good;
    patch(&s);
    Reseal(&s);
    WriteFile(path, s);
    return DecodeSnapshot(path);
  };
  CHECK(sealed([](std::string* s) {
          PutLe32(s, 24, 6);
          PutLe64(s, 80, 6 * 512);
        }).IsCorruption());
  CHECK(sealed([](std::string* s) {
          PutLe32(s, 24, 4);
          PutLe64(s, 80, 4 * 512);
        }).IsCorruption());
  CHECK(sealed([](std::string* s) { PutLe64(s, 48, Le64(*s, 48) ^ 4); }).IsCorruption());
  CHECK(sealed([](std::string* s) { PutLe64(s, 80, 1); }).IsCorruption());
  CHECK(sealed([](std::string* s) { (*s)[234] = 'Z'; }).IsCorruption());  // parent gen
  CHECK(DecodeSnapshot(dir / "missing").IsNotFound());
}

// ---- restore ----------------------------------------------------------------------

namespace {

// An ObjectStore over a std::map, for restore tests independent of any
// backend.
class MemStore : public ObjectStore {
 public:
  std::map<std::string, std::string> objects;
  int gets = 0;

  Status Put(const std::string& key, std::string_view data,
             const std::map<std::string, std::string>& = {}) override {
    std::lock_guard<std::mutex> l(mu_);
    objects[key] = std::string(data);
    return Status::OK();
  }
  Status PutFile(const std::string& key, const std::string& path,
                 const std::map<std::string, std::string>& = {}) override {
    return Put(key, ReadFile(path));
  }
  Status Get(const std::string& key, std::string* out) override {
    std::lock_guard<std::mutex> l(mu_);
    auto it = objects.find(key);
    if (it == objects.end()) return Status::NotFound(key);
    gets++;
    *out = it->second;
    return Status::OK();
  }
  Status GetToFile(const std::string& key, const std::string& path) override {
    std::string data;
    TW_RETURN_IF_ERROR(Get(key, &data));
    WriteFile(path, data);
    return Status::OK();
  }
  Status List(const std::string& prefix, std::vector<ObjectInfo>* out) override {
    std::lock_guard<std::mutex> l(mu_);
    out->clear();
    for (auto& [k, v] : objects)
      if (k.rfind(prefix, 0) == 0) out->push_back(ObjectInfo{k, v.size(), ""});
    return Status::OK();
  }
  Status ListDirs(const std::string&, std::vector<std::string>*) override {
    return Status::InvalidArgument("not implemented");
  }
  Status Delete(const std::string& key) override {
    std::lock_guard<std::mutex> l(mu_);
    objects.erase(key);
    return Status::OK();
  }
  std::string url() const override { return "mem://"; }
  std::map<std::string, std::pair<uint64_t, uint64_t>> RequestCounts() const override {
    return {};
  }

 private:
  std::mutex mu_;
};

void Exec(sqlite3* db, const std::string& sql) {
  char* err = nullptr;
  int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err);
  std::string msg = err ? err : "";
  sqlite3_free(err);
  REQUIRE_MESSAGE(rc == SQLITE_OK, sql << ": " << msg);
}

// A real SQLite database driven through transactions; images[t] is the file
// after txid t (rollback journal mode, so the file is the whole state).
struct History {
  uint32_t ps = 4096;
  std::vector<std::string> images;  // images[0] = empty database
};

History BuildHistory(const std::string& path) {
  History h;
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
  Exec(db, "PRAGMA journal_mode=DELETE; PRAGMA page_size=4096");
  h.images.push_back("");
  auto txn = [&](const std::string& sql) {
    Exec(db, sql);
    h.images.push_back(ReadFile(path));
  };
  txn("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT, b BLOB)");                       // 1
  txn("BEGIN; WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c WHERE i<200)"
      " INSERT INTO t(v, b) SELECT 'row ' || i, randomblob(300) FROM c; COMMIT");      // 2
  txn("CREATE INDEX t_v ON t(v)");                                                    // 3
  txn("UPDATE t SET v = v || ' updated' WHERE id % 3 = 0");                           // 4
  txn("INSERT INTO t(v, b) VALUES ('big', randomblob(50000))");                        // 5
  txn("DELETE FROM t WHERE id > 20");                                                  // 6
  txn("VACUUM");                                                                       // 7 shrinks
  txn("INSERT INTO t(v) VALUES ('last')");                                             // 8
  sqlite3_close(db);
  for (size_t i = 1; i < h.images.size(); i++) REQUIRE(h.images[i].size() % h.ps == 0);
  CHECK(h.images[7].size() < h.images[6].size());
  return h;
}

uint64_t SumOf(const History& h, size_t txid) {
  const std::string& img = h.images[txid];
  return DbChecksumOf(reinterpret_cast<const uint8_t*>(img.data()), img.size(), h.ps);
}

// The segment holding txns [a, b] of the history, as stored bytes.
std::string MakeSegment(const History& h, const std::string& dir, const std::string& gen,
                        uint64_t a, uint64_t b, const std::string& tenant = "acme",
                        const std::string& dbname = "orders.db") {
  SegmentHeader hdr;
  hdr.tenant = tenant;
  hdr.db = dbname;
  hdr.generation = gen;
  hdr.page_size = h.ps;
  hdr.min_txid = a;
  hdr.checksum_before = SumOf(h, a - 1);
  SegmentWriter w;
  REQUIRE(w.Open(dir + "/spool.twseg", hdr).ok());
  for (uint64_t t = a; t <= b; t++) {
    const std::string& prev = h.images[t - 1];
    const std::string& cur = h.images[t];
    uint32_t pages = static_cast<uint32_t>(cur.size() / h.ps);
    std::vector<uint32_t> changed;
    for (uint32_t p = 1; p <= pages; p++) {
      size_t off = static_cast<size_t>(p - 1) * h.ps;
      if (off + h.ps > prev.size() || prev.compare(off, h.ps, cur, off, h.ps) != 0)
        changed.push_back(p);
    }
    TxnInfo info;
    info.txid = t;
    info.commit_us = 1700000000000000LL + static_cast<int64_t>(t) * 1000000;
    info.db_pages_after = pages;
    info.page_count = static_cast<uint32_t>(changed.size());
    info.checksum_after = SumOf(h, t);
    REQUIRE(w.BeginTxn(info).ok());
    for (uint32_t p : changed)
      REQUIRE(w.AddPage(p, reinterpret_cast<const uint8_t*>(cur.data()) +
                               static_cast<size_t>(p - 1) * h.ps)
                  .ok());
  }
  uint64_t bytes;
  REQUIRE(w.Finish({}, false, &bytes).ok());
  return ReadFile(dir + "/spool.twseg");
}

std::string MakeSnapshot(const History& h, const std::string& dir, const std::string& gen,
                         uint64_t txid) {
  SnapshotHeader hdr;
  hdr.tenant = "acme";
  hdr.db = "orders.db";
  hdr.generation = gen;
  hdr.txid = txid;
  hdr.page_size = h.ps;
  hdr.commit_us = 1700000000000000LL + static_cast<int64_t>(txid) * 1000000;
  SnapshotWriter w;
  REQUIRE(w.Open(dir + "/spool.twsnap", hdr).ok());
  const std::string& img = h.images[txid];
  for (size_t off = 0; off < img.size(); off += h.ps)
    REQUIRE(w.AddPage(reinterpret_cast<const uint8_t*>(img.data() + off)).ok());
  uint64_t bytes;
  REQUIRE(w.Finish(false, &bytes).ok());
  return ReadFile(dir + "/spool.twsnap");
}

const char* kGen1 = "0000018c1a2b0001";
const char* kGen2 = "0000018c1a2b0002";

// Snapshot at txid 1, segments [2,3] [4,5] [6,6] [7,8].
void Populate(ObjectStore* store, const History& h, const std::string& dir) {
  REQUIRE(store->Put(SnapshotKey("acme", "orders.db", kGen1, 1), MakeSnapshot(h, dir, kGen1, 1))
              .ok());
  for (auto [a, b] : std::vector<std::pair<uint64_t, uint64_t>>{{2, 3}, {4, 5}, {6, 6}, {7, 8}})
    REQUIRE(store->Put(SegmentKey("acme", "orders.db", kGen1, a, b),
                       MakeSegment(h, dir, kGen1, a, b))
                .ok());
}

Status DoRestore(ObjectStore* store, const std::string& out, uint64_t txid, RestoreResult* r,
                 bool overwrite = false) {
  RestoreOptions o;
  o.tenant = "acme";
  o.db = "orders.db";
  o.output_path = out;
  o.target_txid = txid;
  o.overwrite = overwrite;
  return Restore(store, o, r);
}

int CountRows(const std::string& path, const char* sql) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  REQUIRE(sqlite3_prepare_v2(db, sql, -1, &st, nullptr) == SQLITE_OK);
  REQUIRE(sqlite3_step(st) == SQLITE_ROW);
  int n = sqlite3_column_int(st, 0);
  sqlite3_finalize(st);
  sqlite3_close(db);
  return n;
}

std::vector<std::string> DirEntries(const std::string& dir) {
  std::vector<std::string> out;
  for (auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

void RestoreSuite(ObjectStore* store) {
  TempDir work, outdir;
  History h = BuildHistory(work / "src.db");
  Populate(store, h, work.path);

  SUBCASE("latest restores the final image byte for byte") {
    RestoreResult r;
    std::string out = outdir / "out.db";
    Status s = DoRestore(store, out, kRestoreLatest, &r);
    REQUIRE_MESSAGE(s.ok(), s.ToString());
    CHECK(ReadFile(out) == h.images[8]);
    CHECK(r.generation == kGen1);
    CHECK(r.txid == 8);
    CHECK(r.snapshot_txid == 1);
    CHECK(r.segments == 4);
    CHECK(r.objects_read == 5);
    CHECK(r.pages == h.images[8].size() / h.ps);
    CHECK(r.page_size == h.ps);
    CHECK(r.commit_us == 1700000000000000LL + 8 * 1000000);
    CHECK(r.warnings.empty());
    std::vector<ObjectInfo> listed;
    REQUIRE(store->List("tenants/", &listed).ok());
    uint64_t total = 0;
    for (const auto& o : listed) total += o.size;
    CHECK(r.bytes_read == total);
    CHECK(CountRows(out, "SELECT count(*) FROM t") == 21);
    CHECK(DirEntries(outdir.path) == std::vector<std::string>{"out.db"});  // no temp files

    // Existing output: refused without overwrite, replaced with it.
    CHECK(DoRestore(store, out, 3, &r).code() == Status::kInvalidArgument);
    CHECK(ReadFile(out) == h.images[8]);
    REQUIRE(DoRestore(store, out, 3, &r, true).ok());
    CHECK(ReadFile(out) == h.images[3]);
    CHECK(DirEntries(outdir.path) == std::vector<std::string>{"out.db"});
  }

  SUBCASE("every txid restores its own image") {
    for (uint64_t t = 1; t <= 8; t++) {
      CAPTURE(t);
      RestoreResult r;
      std::string out = outdir / ("at" + std::to_string(t) + ".db");
      Status s = DoRestore(store, out, t, &r);
      REQUIRE_MESSAGE(s.ok(), s.ToString());
      CHECK(r.txid == t);
      CHECK(ReadFile(out) == h.images[t]);
    }
    RestoreResult r;
    CHECK(DoRestore(store, outdir / "x.db", 9, &r).IsNotFound());
    CHECK(DoRestore(store, outdir / "y.db", 0, &r).IsNotFound());  // before the snapshot
  }

  SUBCASE("a gap makes latest an error (--partial: a warning) and later txids unreachable") {
    REQUIRE(store->Delete(SegmentKey("acme", "orders.db", kGen1, 4, 5)).ok());
    RestoreResult r;
    Status s = DoRestore(store, outdir / "gap.db", kRestoreLatest, &r);
    CHECK(s.IsNotFound());
    CHECK(s.message().find("last good txid is 3") != std::string::npos);
    CHECK_FALSE(fs::exists(outdir / "gap.db"));
    RestoreOptions po;
    po.tenant = "acme";
    po.db = "orders.db";
    po.output_path = outdir / "gap.db";
    po.partial = true;
    s = Restore(store, po, &r);
    REQUIRE_MESSAGE(s.ok(), s.ToString());
    CHECK(r.txid == 3);
    CHECK(r.partial);
    CHECK(ReadFile(outdir / "gap.db") == h.images[3]);
    REQUIRE(r.warnings.size() == 1);
    CHECK(r.warnings[0].find("after txid 3") != std::string::npos);
    s = DoRestore(store, outdir / "gap6.db", 6, &r);
    CHECK(s.IsNotFound());
    CHECK(s.message().find("last good txid is 3") != std::string::npos);
    CHECK_FALSE(fs::exists(outdir / "gap6.db"));
  }

  SUBCASE("a corrupted segment is Corruption naming the object and last good txid") {
    std::string key = SegmentKey("acme", "orders.db", kGen1, 4, 5);
    std::string bytes;
    REQUIRE(store->Get(key, &bytes).ok());
    bytes[bytes.size() / 2] ^= 0x40;
    REQUIRE(store->Put(key, bytes).ok());
    RestoreResult r;
    Status s = DoRestore(store, outdir / "bad.db", kRestoreLatest, &r);
    CHECK(s.IsCorruption());
    CHECK(s.message().find(key) != std::string::npos);
    CHECK(s.message().find("last good txid 3") != std::string::npos);
    CHECK(DirEntries(outdir.path).empty());  // no output, no temp files
  }

  SUBCASE("a segment from another history fails checksum_before") {
    // Segment [4,5] rebuilt over a different txn 3 image.
    History other = h;
    other.images[3][other.images[3].size() - 100] ^= 1;
    std::string key = SegmentKey("acme", "orders.db", kGen1, 4, 5);
    REQUIRE(store->Put(key, MakeSegment(other, work.path, kGen1, 4, 5)).ok());
    RestoreResult r;
    Status s = DoRestore(store, outdir / "div.db", kRestoreLatest, &r);
    CHECK(s.IsCorruption());
    CHECK(s.message().find("checksum_before") != std::string::npos);
    CHECK(s.message().find(key) != std::string::npos);
  }

  SUBCASE("a segment with wrong per-txn checksum is caught after applying") {
    History other = h;
    // Claim txn 6 produced different bytes than the pages carry.
    std::string key = SegmentKey("acme", "orders.db", kGen1, 6, 6);
    std::string seg = MakeSegment(other, work.path, kGen1, 6, 6);
    REQUIRE(store->Put(key, seg).ok());
    RestoreResult r;
    REQUIRE(DoRestore(store, outdir / "ok.db", kRestoreLatest, &r).ok());
    // Now a segment whose pages differ from what its checksums describe.
    other.images[6][h.ps * 2 + 10] ^= 1;  // page 3 content changes...
    History lie = h;
    lie.images[6] = other.images[6];
    std::string bad = MakeSegment(lie, work.path, kGen1, 6, 6);
    // ...but keep the honest checksum_after: patch header and txn record.
    SegmentReader honest;
    REQUIRE(honest.Open(seg).ok());
    uint64_t want = honest.header().checksum_after;
    std::string body = Body(bad);
    PutLe64(&body, 24, want);
    bad = CraftSegment(bad, body, [&](std::string* hd) { PutLe64(hd, 64, want); });
    REQUIRE(store->Put(key, bad).ok());
    Status s = DoRestore(store, outdir / "lie.db", kRestoreLatest, &r);
    CHECK(s.IsCorruption());
    CHECK(s.message().find("txn 6") != std::string::npos);
    CHECK(s.message().find("last good txid 5") != std::string::npos);
  }

  SUBCASE("an object stored under another database's key is rejected") {
    std::string key = SegmentKey("acme", "orders.db", kGen1, 6, 6);
    REQUIRE(store->Put(key, MakeSegment(h, work.path, kGen1, 6, 6, "other", "orders.db")).ok());
    RestoreResult r;
    Status s = DoRestore(store, outdir / "k.db", kRestoreLatest, &r);
    CHECK(s.IsCorruption());
    CHECK(s.message().find("does not match its key") != std::string::npos);
  }

  SUBCASE("the newest generation with a snapshot wins") {
    REQUIRE(store->Put(SnapshotKey("acme", "orders.db", kGen2, 5), MakeSnapshot(h, work.path, kGen2, 5))
                .ok());
    REQUIRE(store->Put(SegmentKey("acme", "orders.db", kGen2, 6, 7),
                       MakeSegment(h, work.path, kGen2, 6, 7))
                .ok());
    RestoreResult r;
    Status s = DoRestore(store, outdir / "g.db", kRestoreLatest, &r);
    REQUIRE_MESSAGE(s.ok(), s.ToString());
    CHECK(r.generation == kGen2);
    CHECK(r.txid == 7);
    // A newer generation with segments but no snapshot makes "latest" an
    // error (its history is lost); --partial restores gen2 with a warning.
    REQUIRE(store->Put(SegmentKey("acme", "orders.db", "0000018c1a2b0003", 8, 8),
                       MakeSegment(h, work.path, "0000018c1a2b0003", 8, 8))
                .ok());
    s = DoRestore(store, outdir / "g0.db", kRestoreLatest, &r);
    CHECK(s.IsNotFound());
    CHECK(s.message().find("no snapshot") != std::string::npos);
    RestoreOptions po;
    po.tenant = "acme";
    po.db = "orders.db";
    po.output_path = outdir / "g.db";
    po.overwrite = true;
    po.partial = true;
    s = Restore(store, po, &r);
    REQUIRE_MESSAGE(s.ok(), s.ToString());
    CHECK(r.partial);
    CHECK(r.warnings.size() == 1);
    CHECK(r.generation == kGen2);
    CHECK(r.txid == 7);
    CHECK(r.snapshot_txid == 5);
    CHECK(ReadFile(outdir / "g.db") == h.images[7]);
    // A txid before gen2's snapshot comes from gen1.
    REQUIRE(DoRestore(store, outdir / "g3.db", 3, &r).ok());
    CHECK(r.generation == kGen1);
    CHECK(ReadFile(outdir / "g3.db") == h.images[3]);
  }

  SUBCASE("a hostile database size is refused before it is allocated") {
    REQUIRE(store->Delete(SegmentKey("acme", "orders.db", kGen1, 2, 3)).ok());
    SegmentHeader hdr;
    hdr.tenant = "acme";
    hdr.db = "orders.db";
    hdr.generation = kGen1;
    hdr.page_size = h.ps;
    hdr.min_txid = 2;
    hdr.checksum_before = SumOf(h, 1);
    SegmentWriter w;
    REQUIRE(w.Open(work / "huge.twseg", hdr).ok());
    REQUIRE(w.BeginTxn(TxnInfo{2, 0, 4000000000u, 1, 0}).ok());
    REQUIRE(w.AddPage(3999999999u, reinterpret_cast<const uint8_t*>(h.images[2].data())).ok());
    uint64_t bytes;
    REQUIRE(w.Finish({}, false, &bytes).ok());
    REQUIRE(store->Put(SegmentKey("acme", "orders.db", kGen1, 2, 2), ReadFile(work / "huge.twseg"))
                .ok());
    RestoreResult r;
    Status s = DoRestore(store, outdir / "huge.db", 2, &r);  // latest: a gap (txid 3)
    CHECK(s.IsCorruption());
    CHECK(s.message().find("does not contain") != std::string::npos);
    CHECK(DirEntries(outdir.path).empty());
  }

  SUBCASE("no replica") {
    RestoreResult r;
    RestoreOptions o;
    o.tenant = "nobody";
    o.db = "x";
    o.output_path = outdir / "n.db";
    CHECK(Restore(store, o, &r).IsNotFound());
    o.tenant = "../etc";
    CHECK(Restore(store, o, &r).code() == Status::kInvalidArgument);
  }
}

}  // namespace

TEST_CASE("restore from an in-memory store") {
  MemStore store;
  RestoreSuite(&store);
}

TEST_CASE("restore from a file:// store") {
  TempDir root;
  std::unique_ptr<ObjectStore> store;
  Status s = OpenObjectStore("file://" + root.path, StoreOptions(), &store);
  if (!s.ok()) {
    MESSAGE("file:// store unavailable: " << s.ToString());
    return;
  }
  RestoreSuite(store.get());
}

TEST_CASE("restored WAL-mode databases come back in rollback journal mode") {
  TempDir work, outdir;
  std::string src = work / "wal.db";
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(src.c_str(), &db) == SQLITE_OK);
  Exec(db, "PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (1), (2)");
  Exec(db, "PRAGMA wal_checkpoint(TRUNCATE)");
  std::string image = ReadFile(src);
  sqlite3_close(db);
  REQUIRE(image.size() >= 100);
  CHECK(image[18] == 2);
  CHECK(image[19] == 2);
  MemStore store;
  REQUIRE(store.Put(SnapshotKey("acme", "orders.db", kGen1, 4),
                    WriteSnapshot(work / "s", image, 4096, 4, kGen1))
              .ok());
  RestoreResult r;
  Status s = DoRestore(&store, outdir / "r.db", kRestoreLatest, &r);
  REQUIRE_MESSAGE(s.ok(), s.ToString());
  std::string got = ReadFile(outdir / "r.db");
  REQUIRE(got.size() == image.size());
  CHECK(got[18] == 1);
  CHECK(got[19] == 1);
  const std::string orig = image;
  image[18] = image[19] = 1;
  CHECK(got == image);
  CHECK(r.checksum ==
        DbChecksumOf(reinterpret_cast<const uint8_t*>(orig.data()), orig.size(), 4096));
  CHECK(CountRows(outdir / "r.db", "SELECT count(*) FROM t") == 2);
  CHECK_FALSE(fs::exists(outdir / "r.db-wal"));
}
