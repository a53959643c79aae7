// The spool replay at tenantwald's start (replicator/spool_replay.h), on a
// file:// replica: which leftover files of a killed run are uploaded, which
// are uploaded again over a torn object, which are unlinked, and that an
// unreachable store keeps them all for the next start.
#include <doctest/doctest.h>
#include "temp_dir.h"
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "replicator/spool_replay.h"
#include "store/format.h"
#include "store/object_store.h"

namespace {

using tw::Status;

const char* kGen = "0123456789abcdef";
const char* kOtherGen = "fedcba9876543210";

using Dir = twtest::TempDir;

// A level-0 segment of one-page transactions min..max.
void WriteSegment(const std::string& path, const char* gen, uint64_t min, uint64_t max) {
  tw::SegmentHeader h;
  h.tenant = "acme";
  h.db = "orders";
  h.generation = gen;
  h.page_size = 4096;
  h.min_txid = min;
  tw::SegmentWriter w;
  REQUIRE(w.Open(path, h).ok());
  std::vector<uint8_t> page(4096);
  for (uint64_t t = min; t <= max; t++) {
    page[0] = uint8_t(t);
    tw::TxnInfo info;
    info.txid = t;
    info.commit_us = int64_t(t) * 1000;
    info.db_pages_after = 1;
    info.page_count = 1;
    REQUIRE(w.BeginTxn(info).ok());
    REQUIRE(w.AddPage(1, page.data()).ok());
  }
  uint64_t bytes = 0;
  REQUIRE(w.Finish(tw::WalPosition(), false, &bytes).ok());
}

void WriteSnapshot(const std::string& path, const char* gen, uint64_t txid) {
  tw::SnapshotHeader h;
  h.tenant = "acme";
  h.db = "orders";
  h.generation = gen;
  h.txid = txid;
  h.page_size = 4096;
  h.commit_us = int64_t(txid) * 1000;
  tw::SnapshotWriter w;
  REQUIRE(w.Open(path, h).ok());
  std::vector<uint8_t> page(4096, 7);
  REQUIRE(w.AddPage(page.data()).ok());
  uint64_t bytes = 0;
  REQUIRE(w.Finish(false, &bytes).ok());
}

std::string Slurp(const std::string& path) {
  std::string s;
  FILE* f = fopen(path.c_str(), "rb");
  REQUIRE(f != nullptr);
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) s.append(buf, n);
  fclose(f);
  return s;
}

bool Exists(const std::string& p) { return access(p.c_str(), F_OK) == 0; }

// A store that answers every request with an error (S3 unreachable).
class DownStore : public tw::ObjectStore {
 public:
  int requests = 0;
  Status Fail() {
    ++requests;
    return Status::Unavailable("connection refused");
  }
  Status Put(const std::string&, std::string_view,
             const std::map<std::string, std::string>&) override { return Fail(); }
  Status PutFile(const std::string&, const std::string&,
                 const std::map<std::string, std::string>&) override { return Fail(); }
  Status Get(const std::string&, std::string*) override { return Fail(); }
  Status GetToFile(const std::string&, const std::string&) override { return Fail(); }
  Status List(const std::string&, std::vector<tw::ObjectInfo>*) override { return Fail(); }
  Status ListDirs(const std::string&, std::vector<std::string>*) override { return Fail(); }
  Status Delete(const std::string&) override { return Fail(); }
  std::string url() const override { return "s3://down"; }
  std::map<std::string, std::pair<uint64_t, uint64_t>> RequestCounts() const override {
    return {};
  }
};

}  // namespace

TEST_CASE("spool replay: continue, upload again, discard") {
  Dir replica, spool, work;
  std::unique_ptr<tw::ObjectStore> owned;
  REQUIRE(tw::OpenObjectStore("file://" + replica.path, tw::StoreOptions(), &owned).ok());
  std::shared_ptr<tw::ObjectStore> store(std::move(owned));

  // The replica as the killed run left it: snapshot at 10, segments 11-12
  // and 13-14 whole, a compaction's merge of them (11-14) torn, and the
  // segment 15-16 torn (its PUT was in flight: half its bytes).
  auto put_file = [&](const std::string& key, const std::string& path) {
    REQUIRE(store->PutFile(key, path).ok());
  };
  WriteSnapshot(work.path + "/s.twsnap", kGen, 10);
  put_file(tw::SnapshotKey("acme", "orders", kGen, 10), work.path + "/s.twsnap");
  WriteSegment(work.path + "/a.twseg", kGen, 11, 12);
  put_file(tw::SegmentKey("acme", "orders", kGen, 11, 12), work.path + "/a.twseg");
  WriteSegment(work.path + "/b.twseg", kGen, 13, 14);
  put_file(tw::SegmentKey("acme", "orders", kGen, 13, 14), work.path + "/b.twseg");
  WriteSegment(spool.path + "/merge-1-1.twseg.tmp", kGen, 11, 14);
  const std::string whole_merge = Slurp(spool.path + "/merge-1-1.twseg.tmp");
  const std::string key_merge = tw::SegmentKey("acme", "orders", kGen, 11, 14);
  REQUIRE(store->Put(key_merge, whole_merge.substr(0, 100)).ok());
  WriteSegment(spool.path + "/1-1.twseg", kGen, 15, 16);
  const std::string whole_15 = Slurp(spool.path + "/1-1.twseg");
  const std::string key_15 = tw::SegmentKey("acme", "orders", kGen, 15, 16);
  REQUIRE(store->Put(key_15, whole_15.substr(0, whole_15.size() / 2)).ok());

  // Sealed segments that never reached S3: 17-18 and 19-20 continue the
  // generation; 25-26 comes after a gap.
  WriteSegment(spool.path + "/1-2.twseg", kGen, 17, 18);
  WriteSegment(spool.path + "/1-3.twseg", kGen, 19, 20);
  WriteSegment(spool.path + "/1-4.twseg", kGen, 25, 26);
  // Being written when the process died: cut short.
  WriteSegment(spool.path + "/1-5.twseg", kGen, 21, 23);
  REQUIRE(truncate((spool.path + "/1-5.twseg").c_str(), 300) == 0);
  // A snapshot of a new generation whose PUT never started.
  WriteSnapshot(spool.path + "/" + kOtherGen + "-30.twsnap", kOtherGen, 30);
  // Not ours: left alone.
  REQUIRE(close(open((spool.path + "/tenantwald.lock").c_str(), O_CREAT | O_WRONLY, 0600)) == 0);

  twd::SpoolReplayStats st;
  REQUIRE(twd::ReplaySpool(spool.path, [&](const std::string& t) {
            CHECK(t == "acme");
            return store;
          }, &st).ok());
  CHECK(st.reuploaded == 2);  // 15-16 and the merge 11-14
  CHECK(st.continued == 2);   // 17-18, 19-20
  CHECK(st.discarded == 3);   // 25-26 (gap), 21-23 (cut short), the new generation's snapshot
  CHECK(st.kept == 0);

  std::string got;
  REQUIRE(store->Get(key_15, &got).ok());
  CHECK(got == whole_15);
  REQUIRE(store->Get(key_merge, &got).ok());
  CHECK(got == whole_merge);
  CHECK(store->Get(tw::SegmentKey("acme", "orders", kGen, 17, 18), &got).ok());
  CHECK(store->Get(tw::SegmentKey("acme", "orders", kGen, 19, 20), &got).ok());
  tw::SegmentReader r;
  CHECK(r.Open(got).ok());  // uploaded whole
  CHECK(store->Get(tw::SegmentKey("acme", "orders", kGen, 25, 26), &got).IsNotFound());
  CHECK(store->Get(tw::SnapshotKey("acme", "orders", kOtherGen, 30), &got).IsNotFound());

  // The spool keeps only what is not a leftover.
  std::vector<std::string> left;
  for (auto& e : std::filesystem::directory_iterator(spool.path))
    left.push_back(e.path().filename().string());
  CHECK(left == std::vector<std::string>{"tenantwald.lock"});
}

TEST_CASE("spool replay: an unreachable store keeps every file, after one request") {
  Dir spool;
  WriteSegment(spool.path + "/1-1.twseg", kGen, 11, 12);
  WriteSegment(spool.path + "/1-2.twseg", kGen, 13, 14);
  WriteSegment(spool.path + "/2-1.twseg", kOtherGen, 5, 6);
  auto down = std::make_shared<DownStore>();
  twd::SpoolReplayStats st;
  REQUIRE(twd::ReplaySpool(spool.path, [&](const std::string&) { return down; }, &st).ok());
  CHECK(st.kept == 3);
  CHECK(st.kept_bytes > 0);
  CHECK(st.continued + st.reuploaded + st.discarded == 0);
  CHECK(down->requests == 1);  // the first LIST failed; nothing else was tried
  CHECK(Exists(spool.path + "/1-1.twseg"));
  CHECK(Exists(spool.path + "/1-2.twseg"));
  CHECK(Exists(spool.path + "/2-1.twseg"));
}

TEST_CASE("spool replay: a missing spool directory is an error") {
  twd::SpoolReplayStats st;
  Status s = twd::ReplaySpool("/nonexistent/tw-spool", [](const std::string&) {
    return std::shared_ptr<tw::ObjectStore>();
  }, &st);
  CHECK(!s.ok());
  CHECK(s.ToString().find("/nonexistent/tw-spool") != std::string::npos);
}
