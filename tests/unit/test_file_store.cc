// Unit tests for the file:// ObjectStore (store/file_store) and the shared
// URL/key/metadata validation in store/object_store.cc: round trips, atomic
// replacement, listing and "directories", hostile keys, URL parsing.

#include <doctest/doctest.h>
#include "temp_dir.h"

#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "store/file_store.h"
#include "store/object_store.h"

namespace {

using twtest::TempDir;

std::unique_ptr<tw::ObjectStore> OpenFile(const std::string& root) {
  std::unique_ptr<tw::ObjectStore> s;
  tw::Status st = tw::OpenObjectStore("file://" + root, tw::StoreOptions(), &s);
  REQUIRE_MESSAGE(st.ok(), st.ToString());
  return s;
}

std::string ReadAll(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

bool Exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

std::vector<std::string> Keys(const std::vector<tw::ObjectInfo>& v) {
  std::vector<std::string> out;
  for (const auto& o : v) out.push_back(o.key);
  return out;
}

}  // namespace

TEST_CASE("file store: put/get round trip, overwrite, binary data, empty object") {
  TempDir d;
  auto s = OpenFile(d.path + "/replica");
  CHECK(s->url() == "file://" + d.path + "/replica");

  std::string bin;
  for (int i = 0; i < 300000; i++) bin.push_back(static_cast<char>(i * 7));
  REQUIRE(s->Put("tenants/acme/db/wal/0001", bin, {{"sha256", "abc"}}).ok());
  std::string got;
  REQUIRE(s->Get("tenants/acme/db/wal/0001", &got).ok());
  CHECK(got == bin);
  CHECK(ReadAll(d.path + "/replica/tenants/acme/db/wal/0001") == bin);

  REQUIRE(s->Put("tenants/acme/db/wal/0001", "v2").ok());
  REQUIRE(s->Get("tenants/acme/db/wal/0001", &got).ok());
  CHECK(got == "v2");

  REQUIRE(s->Put("empty", "").ok());
  got = "junk";
  REQUIRE(s->Get("empty", &got).ok());
  CHECK(got.empty());

  // No temporary files are left behind.
  std::vector<tw::ObjectInfo> all;
  REQUIRE(s->List("", &all).ok());
  CHECK(Keys(all) == std::vector<std::string>{"empty", "tenants/acme/db/wal/0001"});
  CHECK(std::system(("test -z \"$(find '" + d.path + "' -name '.twtmp-*')\"").c_str()) == 0);
}

TEST_CASE("file store: missing objects") {
  TempDir d;
  auto s = OpenFile(d.path);
  std::string got = "x";
  tw::Status st = s->Get("nope/a", &got);
  CHECK(st.IsNotFound());
  CHECK(got.empty());
  CHECK(s->GetToFile("nope", d.path + "/out").IsNotFound());
  CHECK_FALSE(Exists(d.path + "/out"));  // no stray partial file
  CHECK(s->Delete("nope/a").ok());       // deleting a missing key is OK
  // A "directory" is not an object.
  REQUIRE(s->Put("dir/obj", "1").ok());
  CHECK(s->Get("dir", &got).IsNotFound());
  CHECK(s->Get("dir/obj/sub", &got).IsNotFound());  // ENOTDIR
  CHECK(s->Get("dir/obj", &got).ok());
  std::vector<tw::ObjectInfo> none;
  CHECK(s->List("zzz/", &none).ok());
  CHECK(none.empty());
  // A store whose root does not exist yet lists empty.
  auto fresh = OpenFile(d.path + "/not/yet");
  CHECK(fresh->List("", &none).ok());
  CHECK(none.empty());
  auto counts = s->RequestCounts();
  CHECK(counts["GET"].first == 5);
  CHECK(counts["GET"].second == 4);
}

TEST_CASE("file store: PutFile and GetToFile stream whole files") {
  TempDir d;
  auto s = OpenFile(d.path + "/r");
  std::string src = d.path + "/src.bin";
  std::string data;
  for (int i = 0; i < 3 * 1024 * 1024 + 17; i++) data.push_back(static_cast<char>(i % 251));
  {
    std::ofstream f(src, std::ios::binary);
    f << data;
  }
  REQUIRE(s->PutFile("snap/0001.db", src).ok());
  std::string dst = d.path + "/dst.bin";
  {
    std::ofstream f(dst, std::ios::binary);
    f << std::string(5 * 1024 * 1024, 'x');  // longer than the object: must be truncated
  }
  REQUIRE(s->GetToFile("snap/0001.db", dst).ok());
  CHECK(ReadAll(dst) == data);
  std::vector<tw::ObjectInfo> all;
  REQUIRE(s->List("snap/", &all).ok());
  REQUIRE(all.size() == 1);
  CHECK(all[0].size == data.size());
  CHECK(all[0].etag.empty());
  CHECK(s->PutFile("x", d.path + "/missing-source").code() == tw::Status::kIOError);
}

TEST_CASE("file store: List is recursive, sorted and prefix-exact") {
  TempDir d;
  auto s = OpenFile(d.path);
  const std::vector<std::string> keys = {"t/b/2", "t/a/1", "t/a/10", "t/ab", "t/a/sub/x",
                                         "u/1", "t/A", "top"};
  for (const auto& k : keys) REQUIRE(s->Put(k, k).ok());
  std::vector<tw::ObjectInfo> out;
  REQUIRE(s->List("", &out).ok());
  CHECK(Keys(out) == std::vector<std::string>{"t/A", "t/a/1", "t/a/10", "t/a/sub/x", "t/ab",
                                              "t/b/2", "top", "u/1"});
  REQUIRE(s->List("t/a/", &out).ok());
  CHECK(Keys(out) == std::vector<std::string>{"t/a/1", "t/a/10", "t/a/sub/x"});
  // A partial last segment matches names, like S3 prefixes.
  REQUIRE(s->List("t/a", &out).ok());
  CHECK(Keys(out) == std::vector<std::string>{"t/a/1", "t/a/10", "t/a/sub/x", "t/ab"});
  REQUIRE(s->List("t/a/1", &out).ok());
  CHECK(Keys(out) == std::vector<std::string>{"t/a/1", "t/a/10"});
  REQUIRE(s->List("to", &out).ok());
  CHECK(Keys(out) == std::vector<std::string>{"top"});
  for (const auto& o : out) CHECK(o.size == o.key.size());
}

TEST_CASE("file store: ListDirs returns only directories holding objects") {
  TempDir d;
  auto s = OpenFile(d.path);
  for (const char* k : {"tenants/acme/a/wal/1", "tenants/acme/b/snap/1", "tenants/zed/x/1",
                        "tenants/file-not-dir"}) {
    REQUIRE(s->Put(k, "v").ok());
  }
  std::vector<std::string> dirs;
  REQUIRE(s->ListDirs("tenants/", &dirs).ok());
  CHECK(dirs == std::vector<std::string>{"tenants/acme/", "tenants/zed/"});
  REQUIRE(s->ListDirs("tenants/acme/", &dirs).ok());
  CHECK(dirs == std::vector<std::string>{"tenants/acme/a/", "tenants/acme/b/"});
  REQUIRE(s->ListDirs("", &dirs).ok());
  CHECK(dirs == std::vector<std::string>{"tenants/"});
  REQUIRE(s->ListDirs("tenants/a", &dirs).ok());
  CHECK(dirs == std::vector<std::string>{"tenants/acme/"});
  REQUIRE(s->ListDirs("nothing/", &dirs).ok());
  CHECK(dirs.empty());

  // Deleting the last object below a directory makes it disappear (as in S3),
  // and empty parents are pruned from disk.
  REQUIRE(s->Delete("tenants/zed/x/1").ok());
  REQUIRE(s->ListDirs("tenants/", &dirs).ok());
  CHECK(dirs == std::vector<std::string>{"tenants/acme/"});
  CHECK_FALSE(Exists(d.path + "/tenants/zed"));
  CHECK(Exists(d.path + "/tenants"));
  // An empty directory created behind the store's back is not listed.
  REQUIRE(::mkdir((d.path + "/tenants/ghost").c_str(), 0755) == 0);
  REQUIRE(s->ListDirs("tenants/", &dirs).ok());
  CHECK(dirs == std::vector<std::string>{"tenants/acme/"});
}

TEST_CASE("file store: hostile keys are rejected and never touch the filesystem") {
  TempDir d;
  auto s = OpenFile(d.path + "/root");
  const std::vector<std::string> bad = {
      "",           "/etc/passwd", "../escape", "a/../../escape", "a/./b", "a//b", "a/",
      "..",         ".",           "a/..",      std::string("nul\0byte", 8), "new\nline",
      ".twtmp-abc", "a/.twtmp-x",  std::string(1025, 'k')};
  for (const auto& k : bad) {
    CAPTURE(k);
    tw::Status st = s->Put(k, "x");
    CHECK(st.code() == tw::Status::kInvalidArgument);
    std::string got;
    CHECK(s->Get(k, &got).code() == tw::Status::kInvalidArgument);
    CHECK(s->Delete(k).code() == tw::Status::kInvalidArgument);
    CHECK(s->GetToFile(k, d.path + "/out").code() == tw::Status::kInvalidArgument);
  }
  CHECK_FALSE(Exists(d.path + "/escape"));
  CHECK_FALSE(Exists(d.path + "/root"));  // nothing was ever written
  std::vector<tw::ObjectInfo> out;
  CHECK(s->List("../", &out).code() == tw::Status::kInvalidArgument);
  CHECK(s->List("/abs", &out).code() == tw::Status::kInvalidArgument);
  std::vector<std::string> dirs;
  CHECK(s->ListDirs("a/../", &dirs).code() == tw::Status::kInvalidArgument);
  // Legal but unusual keys work: spaces, UTF-8, leading dots in a segment.
  for (const std::string& k : std::vector<std::string>{"a b/c d", "caf\xc3\xa9/x", "..hidden/.x", "a/...", "%2e%2e/x"}) {
    CAPTURE(k);
    REQUIRE(s->Put(k, k).ok());
    std::string got;
    REQUIRE(s->Get(k, &got).ok());
    CHECK(got == k);
  }
  REQUIRE(s->List("", &out).ok());
  CHECK(out.size() == 5);
}

TEST_CASE("file store: metadata is validated") {
  TempDir d;
  auto s = OpenFile(d.path);
  CHECK(s->Put("k", "v", {{"crc32c", "1234"}, {"x-seq", "5"}}).ok());
  CHECK(s->Put("k", "v", {{"Upper", "1"}}).code() == tw::Status::kInvalidArgument);
  CHECK(s->Put("k", "v", {{"a_b", "1"}}).code() == tw::Status::kInvalidArgument);
  CHECK(s->Put("k", "v", {{"", "1"}}).code() == tw::Status::kInvalidArgument);
  CHECK(s->Put("k", "v", {{"a", "line\nbreak"}}).code() == tw::Status::kInvalidArgument);
  CHECK(s->Put("k", "v", {{"a", " padded"}}).code() == tw::Status::kInvalidArgument);
  CHECK(s->Put("k", "v", {{"a", std::string(3000, 'v')}}).code() ==
        tw::Status::kInvalidArgument);
}

TEST_CASE("file store: concurrent writers to one key and to sibling keys") {
  TempDir d;
  auto s = OpenFile(d.path);
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 8; t++) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 50; i++) {
        std::string v(1000 + t, static_cast<char>('a' + t));
        if (!s->Put("shared/key", v).ok()) failures++;
        if (!s->Put("dir" + std::to_string(t) + "/k" + std::to_string(i), v).ok()) failures++;
        if (!s->Delete("dir" + std::to_string(t) + "/k" + std::to_string(i)).ok()) failures++;
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK(failures == 0);
  std::string got;
  REQUIRE(s->Get("shared/key", &got).ok());
  // Whole value of exactly one writer: never torn or interleaved.
  REQUIRE(got.size() >= 1000);
  CHECK(got == std::string(got.size(), got[0]));
  CHECK(got.size() == 1000u + static_cast<size_t>(got[0] - 'a'));
  std::vector<tw::ObjectInfo> all;
  REQUIRE(s->List("", &all).ok());
  CHECK(Keys(all) == std::vector<std::string>{"shared/key"});
}

TEST_CASE("OpenObjectStore: URL parsing") {
  tw::StoreOptions o;
  o.access_key_id = "AKID";
  o.secret_access_key = "SECRET";
  std::unique_ptr<tw::ObjectStore> s;
  auto code = [&](const std::string& url) { return tw::OpenObjectStore(url, o, &s).code(); };

  REQUIRE(code("s3://my-bucket") == tw::Status::kOk);
  CHECK(s->url() == "s3://my-bucket");
  REQUIRE(code("s3://my-bucket/some/prefix/") == tw::Status::kOk);
  CHECK(s->url() == "s3://my-bucket/some/prefix");
  REQUIRE(code("s3://my.dotted.bucket/p") == tw::Status::kOk);
  REQUIRE(code("file:///var/lib/tw/") == tw::Status::kOk);
  CHECK(s->url() == "file:///var/lib/tw");

  for (const std::string& bad : std::vector<std::string>{
           "", "s3://", "s3:///prefix", "s3://ab", "s3://UpperCase", "s3://under_score",
        "s3://-leading", "s3://trailing-", "s3://a..b", "s3://192.168.1.1", "s3://b@evil.com/x",
        "s3://bucket/a/../b", "s3://bucket//x", "s3://bucket/p?x=1", "s3://bucket/p#frag",
        std::string("s3://") + std::string(64, 'a'), "file://relative/path", "file:relative",
        "file://", "file:///", "file:///a/../b", "/abs/path", "http://bucket/x", "S3://bucket",
        "gs://bucket"}) {
    CAPTURE(bad);
    tw::Status st = tw::OpenObjectStore(bad, o, &s);
    CHECK(st.code() == tw::Status::kInvalidArgument);
    CHECK(s == nullptr);
    CHECK_FALSE(st.message().empty());
  }
  // The messages say what is wrong.
  CHECK(tw::OpenObjectStore("s3:///p", o, &s).message().find("no bucket") != std::string::npos);
  CHECK(tw::OpenObjectStore("file://rel", o, &s).message().find("absolute") != std::string::npos);
  CHECK(tw::OpenObjectStore("s3://Bad", o, &s).message().find("bucket name") != std::string::npos);

  // S3 needs credentials (checked without any network I/O) and a sane endpoint.
  tw::StoreOptions none;
  CHECK(tw::OpenObjectStore("s3://bucket", none, &s).code() == tw::Status::kInvalidArgument);
  tw::StoreOptions ep = o;
  for (const std::string& bad_ep : std::vector<std::string>{"ftp://host", "127.0.0.1:9000", "http://", "http://user:pw@host", "http://h/p?q"}) {
    CAPTURE(bad_ep);
    ep.endpoint = bad_ep;
    tw::Status st = tw::OpenObjectStore("s3://bucket", ep, &s);
    CHECK(st.code() == tw::Status::kInvalidArgument);
    CHECK(st.message().find("pw") == std::string::npos);
  }
  ep.endpoint = "http://127.0.0.1:9000/";
  CHECK(tw::OpenObjectStore("s3://bucket", ep, &s).ok());
}

TEST_CASE("StoreOptions::FromEnv reads the AWS variables") {
  // Saves and restores the caller's environment.
  const std::vector<std::string> vars = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                         "AWS_SESSION_TOKEN", "AWS_REGION",
                                         "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL",
                                         "AWS_ENDPOINT_URL_S3", "AWS_CA_BUNDLE"};
  std::vector<std::pair<std::string, const char*>> saved;
  std::vector<std::string> saved_values;
  saved_values.reserve(vars.size());
  for (const auto& v : vars) {
    const char* cur = std::getenv(v.c_str());
    saved_values.push_back(cur ? cur : "");
    saved.emplace_back(v, cur ? saved_values.back().c_str() : nullptr);
  }
  setenv("AWS_ACCESS_KEY_ID", "AK", 1);
  setenv("AWS_SECRET_ACCESS_KEY", "SK", 1);
  setenv("AWS_SESSION_TOKEN", "TOK", 1);
  unsetenv("AWS_REGION");
  setenv("AWS_DEFAULT_REGION", "eu-west-2", 1);
  setenv("AWS_ENDPOINT_URL", "http://generic:1", 1);
  setenv("AWS_ENDPOINT_URL_S3", "http://s3specific:2", 1);
  setenv("AWS_CA_BUNDLE", "/etc/ca.pem", 1);
  tw::StoreOptions o = tw::StoreOptions::FromEnv();
  CHECK(o.access_key_id == "AK");
  CHECK(o.secret_access_key == "SK");
  CHECK(o.session_token == "TOK");
  CHECK(o.region == "eu-west-2");
  CHECK(o.endpoint == "http://s3specific:2");
  CHECK(o.ca_file == "/etc/ca.pem");
  CHECK(o.verify_tls);
  setenv("AWS_REGION", "ap-south-1", 1);
  unsetenv("AWS_ENDPOINT_URL_S3");
  o = tw::StoreOptions::FromEnv();
  CHECK(o.region == "ap-south-1");
  CHECK(o.endpoint == "http://generic:1");
  unsetenv("AWS_REGION");
  unsetenv("AWS_DEFAULT_REGION");
  CHECK(tw::StoreOptions::FromEnv().region == "us-east-1");
  for (const auto& [name, value] : saved) {
    if (value) {
      setenv(name.c_str(), value, 1);
    } else {
      unsetenv(name.c_str());
    }
  }
}

TEST_CASE("file store: GetRange reads a byte range, clipped at the end") {
  TempDir d;
  auto s = OpenFile(d.path);
  std::string data;
  for (int i = 0; i < 1000; i++) data.push_back(static_cast<char>(i * 7));
  REQUIRE(s->Put("a/b", data).ok());
  std::string got;
  REQUIRE(s->GetRange("a/b", 0, 288, &got).ok());
  CHECK(got == data.substr(0, 288));
  REQUIRE(s->GetRange("a/b", 990, 100, &got).ok());
  CHECK(got == data.substr(990));
  REQUIRE(s->GetRange("a/b", 1000, 10, &got).ok());
  CHECK(got.empty());
  REQUIRE(s->GetRange("a/b", 5000, 10, &got).ok());
  CHECK(got.empty());
  CHECK(s->GetRange("a/missing", 0, 10, &got).IsNotFound());
  CHECK(s->GetRange("../x", 0, 10, &got).code() == tw::Status::kInvalidArgument);
}
