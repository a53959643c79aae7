// Unit tests for tenantwald's configuration file (replicator/config) and live
// per-tenant settings (replicator/tenants): schema, all-or-nothing errors,
// credentials references, precedence of the layers, token buckets.

#include <doctest/doctest.h>

#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>

#include "config.h"
#include "tenants.h"

using twd::Config;
using twd::ParseConfig;

namespace {

tw::Status Parse(const std::string& text, Config* c) { return ParseConfig(text, "t.toml", c); }

}  // namespace

TEST_CASE("config: a full file parses") {
  Config c;
  tw::Status st = Parse(R"(
[defaults]
syncInterval = "500ms"
rateLimitBytesPerSecond = 1048576
rateLimitRequestsPerSecond = 10
snapshotInterval = "6h"
retention = "7d"
replica = "s3://backups/prod"

[tenants.acme]
syncInterval = "2s"
[tenants.acme.replica]
url = "s3://acme-bucket/x"
region = "eu-west-1"
endpoint = "https://s3.example.com"
credentials = "env:ACME"
[tenants."b.2"]
retention = "30m"
)", &c);
  REQUIRE_MESSAGE(st.ok(), st.ToString());
  CHECK(*c.defaults.sync_us == 500000);
  CHECK(*c.defaults.rate_bytes == 1048576);
  CHECK(*c.defaults.rate_requests == 10);
  CHECK(*c.defaults.snapshot_us == 6 * 3600000000LL);
  CHECK(*c.defaults.retention_us == 7 * 86400000000LL);
  CHECK(c.defaults.replica->url == "s3://backups/prod");
  REQUIRE(c.tenants.count("acme"));
  CHECK(*c.tenants["acme"].sync_us == 2000000);
  CHECK(c.tenants["acme"].replica->credentials == "env:ACME");
  CHECK(c.tenants["acme"].replica->region == "eu-west-1");
  CHECK(*c.tenants["b.2"].retention_us == 30 * 60000000LL);
  CHECK_FALSE(c.tenants["b.2"].sync_us.has_value());
}

TEST_CASE("config: errors name the key and line; nothing is returned") {
  struct Case {
    const char* text;
    const char* want;
  } cases[] = {
      {"[defaults]\nsyncInterval = \"fast\"\n", "t.toml:2: defaults.syncInterval"},
      {"[defaults]\nsyncInterval = \"25h\"\n", "defaults.syncInterval"},
      {"[defaults]\nsyncInterval = 5\n", "defaults.syncInterval"},
      {"[defaults]\nrateLimitBytesPerSecond = -1\n", "rateLimitBytesPerSecond"},
      {"[defaults]\nrateLimitBytesPerSecond = 1.5\n", "rateLimitBytesPerSecond"},
      {"[defaults]\nretention = \"30s\"\n", "retention"},
      {"[defaults]\ncolour = \"red\"\n", "unknown key"},
      {"syncInterval = \"1s\"\n", "unknown top-level key"},
      {"[tenants.\"..\"]\nsyncInterval = \"1s\"\n", "invalid tenant name"},
      {"[tenants.\"a/b\"]\nsyncInterval = \"1s\"\n", "invalid tenant name"},
      {"[tenants.a]\nreplica = \"ftp://x\"\n", "url must be"},
      {"[tenants.a]\nreplica = \"s3://UPPER\"\n", "bucket names"},
      {"[tenants.a]\nreplica = \"s3://bucket/../x\"\n", "no '..'"},
      {"[tenants.a.replica]\nurl = \"s3://bucket\"\ncredentials = \"AKIA:secret\"\n",
       "never the secret"},
      {"[tenants.a.replica]\nurl = \"s3://bucket\"\nkey = \"x\"\n", "unknown key"},
      {"[defaults\n", "not valid TOML"},
  };
  for (const Case& k : cases) {
    Config c;
    c.path = "unchanged";
    tw::Status st = Parse(k.text, &c);
    CAPTURE(k.text);
    CHECK_FALSE(st.ok());
    CHECK_MESSAGE(st.ToString().find(k.want) != std::string::npos, st.ToString());
    CHECK(c.path == "unchanged");
  }
}

TEST_CASE("config: durations") {
  int64_t us = 0;
  CHECK(twd::ParseDurationIn("1.5s", 1, 1LL << 60, &us));
  CHECK(us == 1500000);
  CHECK(twd::ParseDurationIn("7d", 1, 1LL << 60, &us));
  CHECK(us == 7 * 86400000000LL);
  CHECK_FALSE(twd::ParseDurationIn("1", 1, 1LL << 60, &us));     // a unit is required
  CHECK_FALSE(twd::ParseDurationIn("-1s", 1, 1LL << 60, &us));
  CHECK_FALSE(twd::ParseDurationIn("1..2s", 1, 1LL << 60, &us));
  CHECK_FALSE(twd::ParseDurationIn("1w", 1, 1LL << 60, &us));
  CHECK(twd::FormatDurationLong(7 * 86400000000LL) == "7d");
  CHECK(twd::FormatDurationLong(36 * 3600000000LL) == "36h");
  CHECK(twd::FormatDurationLong(1500000) == "1500ms");
}

TEST_CASE("config: credentials references resolve without exposing secrets") {
  twd::ReplicaTarget t;
  t.url = "s3://bucket";
  t.credentials = "env:TWUNIT";
  tw::StoreOptions base, out;
  base.access_key_id = "BASE";
  unsetenv("TWUNIT_ACCESS_KEY_ID");
  tw::Status st = twd::ResolveStoreOptions(t, base, &out);
  CHECK_FALSE(st.ok());
  CHECK(st.ToString().find("TWUNIT_ACCESS_KEY_ID") != std::string::npos);
  setenv("TWUNIT_ACCESS_KEY_ID", "AKIDUNIT", 1);
  setenv("TWUNIT_SECRET_ACCESS_KEY", "sekret-unit", 1);
  REQUIRE(twd::ResolveStoreOptions(t, base, &out).ok());
  CHECK(out.access_key_id == "AKIDUNIT");
  CHECK(out.secret_access_key == "sekret-unit");
  CHECK(t.ToJson().find("sekret") == std::string::npos);
  CHECK(t.ToJson().find("env:TWUNIT") != std::string::npos);

  char path[] = "/tmp/tw_cred_XXXXXX";
  int fd = mkstemp(path);
  REQUIRE(fd >= 0);
  close(fd);
  {
    std::ofstream f(path);
    f << "[default]\naws_access_key_id = AKIDFILE\naws_secret_access_key=filesecret\n";
  }
  t.credentials = std::string("file:") + path;
  t.region = "eu-west-1";
  REQUIRE(twd::ResolveStoreOptions(t, base, &out).ok());
  CHECK(out.access_key_id == "AKIDFILE");
  CHECK(out.secret_access_key == "filesecret");
  CHECK(out.region == "eu-west-1");
  unlink(path);
  CHECK_FALSE(twd::ResolveStoreOptions(t, base, &out).ok());  // file gone
}

TEST_CASE("tenants: precedence api > config-tenant > config-defaults > flag > default") {
  char dir[] = "/tmp/tw_tenants_XXXXXX";
  REQUIRE(mkdtemp(dir) != nullptr);
  twd::ReplicaTarget flag;
  flag.url = std::string("file://") + dir + "/main";
  twd::TenantRegistry r(1000000, flag, tw::StoreOptions{});
  REQUIRE(r.Init(nullptr).ok());
  twd::Effective e = r.Get("acme");
  CHECK(e.sync_us == 1000000);
  CHECK(e.source[twd::kSync] == twd::Source::kFlag);
  CHECK(e.snapshot_us == 86400000000LL);
  CHECK(e.retention_us == 7 * 86400000000LL);
  CHECK(e.source[twd::kRetention] == twd::Source::kDefault);

  Config c;
  REQUIRE(Parse(std::string("[defaults]\nsyncInterval = \"2s\"\n[tenants.acme]\nsyncInterval = "
                            "\"3s\"\nreplica = \"file://") + dir + "/acme\"\n", &c).ok());
  REQUIRE(r.ApplyConfig(c).ok());
  CHECK(r.Get("other").sync_us == 2000000);
  CHECK(r.Get("other").source[twd::kSync] == twd::Source::kConfigDefaults);
  CHECK(r.Get("acme").sync_us == 3000000);
  CHECK(r.Get("acme").source[twd::kSync] == twd::Source::kConfigTenant);
  twd::ReplicaTarget got;
  auto acme_store = r.Store("acme", &got);
  CHECK(got.url == std::string("file://") + dir + "/acme");
  CHECK(acme_store != r.Store("other", nullptr));

  twd::Settings set;
  set.sync_us = 4000000;
  REQUIRE(r.Patch("acme", set, {}).ok());
  CHECK(r.Get("acme").sync_us == 4000000);
  CHECK(r.Get("acme").source[twd::kSync] == twd::Source::kApi);
  REQUIRE(r.ApplyConfig(c).ok());  // a reload keeps API settings
  CHECK(r.Get("acme").sync_us == 4000000);
  REQUIRE(r.Patch("acme", {}, {twd::kSync}).ok());
  CHECK(r.Get("acme").sync_us == 3000000);

  // A replica whose credentials do not resolve: refused, nothing changes.
  twd::Settings bad;
  bad.replica = twd::ReplicaTarget{"s3://bucket", "", "", "env:TW_NOT_SET_EVER"};
  CHECK_FALSE(r.Patch("acme", bad, {}).ok());
  CHECK(r.Get("acme").source[twd::kReplica] == twd::Source::kConfigTenant);
  if (system((std::string("rm -rf ") + dir).c_str()) != 0) MESSAGE("cannot remove ", dir);
}

TEST_CASE("tenants: token bucket admits, charges debt, and lifts") {
  twd::ReplicaTarget flag;
  flag.url = "file:///tmp/tw_tenants_bucket_unused";
  twd::TenantRegistry r(1000000, flag, tw::StoreOptions{});
  REQUIRE(r.Init(nullptr).ok());
  const int64_t t0 = 1000000000;
  CHECK(r.AdmitWaitUs("a", t0) == 0);  // unlimited
  twd::Settings set;
  set.rate_bytes = 1000000;  // 1 MB/s
  REQUIRE(r.Patch("a", set, {}).ok());
  CHECK(r.AdmitWaitUs("a", t0) == 0);           // a full bucket (1 s worth)
  r.Charge("a", 3000000, 1, t0);                // 3 MB: 2 MB of debt = 2 s
  int64_t w = r.AdmitWaitUs("a", t0);
  CHECK(w > 1990000);
  CHECK(w < 2010000);
  CHECK(r.ThrottleState("a", t0).throttled);
  CHECK(r.AdmitWaitUs("a", t0 + 2100000) == 0);  // repaid
  twd::Throttle th = r.ThrottleState("a", t0 + 3000000);
  CHECK_FALSE(th.throttled);
  CHECK(th.throttled_seconds > 1.9);
  CHECK(th.throttled_seconds < 2.1);
  // Lifting the limit ends the debt at once.
  r.Charge("a", 5000000, 1, t0 + 3000000);
  CHECK(r.AdmitWaitUs("a", t0 + 3000000) > 0);
  REQUIRE(r.Patch("a", {}, {twd::kRateBytes}).ok());
  CHECK(r.AdmitWaitUs("a", t0 + 3000000) == 0);
  CHECK_FALSE(r.ThrottleState("a", t0 + 3000000).throttled);
}
