// Unit tests for the authority (lib/store/authority.h) and the conditional
// writes of the file:// store it relies on: deterministic round trips,
// corrupt documents refused with Corruption, compare-and-swap semantics
// (exactly one of several racing writers wins, from threads and from
// processes), UpdateAuthority's retries and its Aborted/"fenced" answers.

#include <doctest/doctest.h>
#include "temp_dir.h"

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "store/authority.h"
#include "store/file_store.h"

namespace {

const std::string kHostA = "0123456789abcdef0123456789abcdef";
const std::string kHostB = "fedcba9876543210fedcba9876543210";

tw::Authority Sample() {
  tw::Authority a;
  a.tenant = "acme";
  a.db = "users";
  a.epoch = 3;
  a.owner = kHostA;
  a.owner_name = "web-1 \"prod\"\n";
  a.durable_txid = 42;
  a.durable_commit_us = 1700000000000000;
  a.updated_us = 1700000000000001;
  a.lineage = tw::LegacyLineage({"01a0000000000002", "01a0000000000001"});
  tw::AuthorityGeneration g;
  g.id = "0190000000000009";  // sorts lower: a clock stepped back
  g.parent = a.lineage.back().id;
  g.epoch = 3;
  g.host = kHostA;
  g.start_txid = 40;
  g.started_us = 1;
  g.reason = "first snapshot";
  a.lineage.push_back(g);
  return a;
}

std::unique_ptr<tw::FileStore> Store(const twtest::TempDir& dir) {
  std::unique_ptr<tw::FileStore> s;
  REQUIRE(tw::FileStore::Open(dir.path, &s).ok());
  return s;
}

}  // namespace

TEST_CASE("authority: serialization is deterministic and round-trips") {
  tw::Authority a = Sample();
  const std::string j = tw::SerializeAuthority(a);
  tw::Authority b;
  REQUIRE(tw::ParseAuthority(j, &b).ok());
  CHECK(tw::SerializeAuthority(b) == j);
  CHECK(b.current() == "0190000000000009");
  CHECK(b.Find("01a0000000000001") == 0);
  CHECK(b.Find("01a0000000000002") == 1);
  CHECK(b.Find("ffffffffffffffff") == -1);
  CHECK(b.owner_name == a.owner_name);
  CHECK(b.lineage[0].parent.empty());
  CHECK(b.lineage[1].parent == "01a0000000000001");
  CHECK(tw::AuthorityKey("acme", "users") == "tenants/acme/users/authority.json");
  CHECK(tw::IsHostId(kHostA));
  CHECK_FALSE(tw::IsHostId("0123456789ABCDEF0123456789ABCDEF"));
  CHECK_FALSE(tw::IsHostId("0123"));
}

TEST_CASE("authority: corrupt documents are Corruption with a reason") {
  const std::string good = tw::SerializeAuthority(Sample());
  auto bad = [](const std::string& doc, const char* needle) {
    tw::Authority out;
    tw::Status s = tw::ParseAuthority(doc, &out);
    CHECK_MESSAGE(s.code() == tw::Status::kCorruption, doc.substr(0, 80));
    CHECK_MESSAGE(s.message().find(needle) != std::string::npos, s.message());
  };
  auto replace = [&](const std::string& from, const std::string& to) {
    std::string d = good;
    size_t p = d.find(from);
    REQUIRE(p != std::string::npos);
    d.replace(p, from.size(), to);
    return d;
  };
  bad("", "not JSON");
  bad("[]", "not a JSON object");
  bad(good.substr(0, good.size() / 2), "not JSON");
  bad(replace("tenantwal-authority-1", "tenantwal-authority-9"), "unknown format");
  bad(replace("\"epoch\":3", "\"epoch\":0"), "epoch must be >= 1");
  bad(replace("\"epoch\":3", "\"epoch\":\"3\""), "\"epoch\"");
  bad(replace("\"tenant\":\"acme\"", "\"tenant\":\"../x\""), "invalid tenant");
  bad(replace("\"owner\":\"" + kHostA, "\"owner\":\"" + kHostA.substr(1) + "x"), "owner");
  bad(replace("\"id\":\"01a0000000000002\"", "\"id\":\"01a0000000000001\""), "appears twice");
  bad(replace("\"parent\":\"01a0000000000002\"", "\"parent\":\"01a0000000000001\""),
      "not the previous generation");
  bad(replace("\"lineage\":[", "\"lineage\":7,\"x\":["), "must be an array");
  {
    tw::Authority a = Sample();
    a.lineage.clear();
    bad(tw::SerializeAuthority(a), "empty lineage");
  }
  bad(std::string(tw::kAuthorityMaxBytes + 1, ' '), "exceeds the limit");
  // Unknown fields are ignored (newer writers may add some).
  tw::Authority ok;
  CHECK(tw::ParseAuthority(replace("{\"format\"", "{\"future\":[1,2],\"format\""), &ok).ok());
}

TEST_CASE("file store: PutIf is a compare-and-swap") {
  twtest::TempDir dir;
  auto s = Store(dir);
  std::string e1, e2, body, tag;
  CHECK(s->PutIf("a/k", "one", tw::PutCondition::Absent(), &e1).ok());
  CHECK(s->PutIf("a/k", "two", tw::PutCondition::Absent(), &e2).IsConflict());
  REQUIRE(s->GetWithEtag("a/k", &body, &tag).ok());
  CHECK(body == "one");
  CHECK(tag == e1);
  CHECK(s->PutIf("a/k", "two", tw::PutCondition::Matches("0000"), &e2).IsConflict());
  CHECK(s->PutIf("a/k", "two", tw::PutCondition::Matches(e1), &e2).ok());
  CHECK(e2 != e1);
  CHECK(s->PutIf("a/k", "three", tw::PutCondition::Matches(e1), nullptr).IsConflict());
  CHECK(s->PutIf("a/gone", "x", tw::PutCondition::Matches(e1), nullptr).IsConflict());
  CHECK(s->GetWithEtag("a/none", &body, &tag).IsNotFound());
  tw::PutCondition both = tw::PutCondition::Absent();
  both.if_match = e2;
  CHECK(s->PutIf("a/k", "x", both, nullptr).code() == tw::Status::kInvalidArgument);
  bool enforced = false;
  REQUIRE(tw::ProbeConditionalWrites(s.get(), "hosts/probe", &enforced).ok());
  CHECK(enforced);
}

TEST_CASE("file store: of racing conditional writers exactly one wins (threads, processes)") {
  twtest::TempDir dir;
  auto s = Store(dir);
  std::string e0;
  REQUIRE(s->PutIf("r/k", "v0", tw::PutCondition::Absent(), &e0).ok());
  std::atomic<int> wins{0}, conflicts{0};
  std::vector<std::thread> th;
  for (int i = 0; i < 8; ++i) {
    th.emplace_back([&, i] {
      tw::Status st = s->PutIf("r/k", "t" + std::to_string(i), tw::PutCondition::Matches(e0), nullptr);
      (st.ok() ? wins : conflicts)++;
    });
  }
  for (auto& t : th) t.join();
  CHECK(wins == 1);
  CHECK(conflicts == 7);
  // Processes: each forked child tries to create a fresh key once.
  std::vector<pid_t> kids;
  for (int i = 0; i < 6; ++i) {
    pid_t p = fork();
    REQUIRE(p >= 0);
    if (p == 0) {
      std::unique_ptr<tw::FileStore> cs;
      if (!tw::FileStore::Open(dir.path, &cs).ok()) _exit(3);
      tw::Status st = cs->PutIf("p/k", "child" + std::to_string(i), tw::PutCondition::Absent(), nullptr);
      _exit(st.ok() ? 0 : st.IsConflict() ? 1 : 2);
    }
    kids.push_back(p);
  }
  int ok = 0, conflict = 0;
  for (pid_t p : kids) {
    int st = 0;
    waitpid(p, &st, 0);
    REQUIRE(WIFEXITED(st));
    if (WEXITSTATUS(st) == 0) ++ok;
    if (WEXITSTATUS(st) == 1) ++conflict;
  }
  CHECK(ok == 1);
  CHECK(conflict == 5);
}

TEST_CASE("authority: UpdateAuthority creates, appends, fences and retries") {
  twtest::TempDir dir;
  auto s = Store(dir);
  auto claim = [&](const std::string& host, const std::string& gen, tw::Authority* out) {
    return tw::UpdateAuthority(
        s.get(), "acme", "users",
        [&](const tw::Authority* cur, tw::Authority* next) -> tw::Status {
          if (cur && cur->current() == gen) return tw::Status::Aborted("already");
          if (cur && cur->owner != host && !cur->released) return tw::Status::Conflict("owned");
          if (cur) *next = *cur; else next->epoch = 1;
          next->owner = host;
          tw::AuthorityGeneration g;
          g.id = gen;
          g.parent = next->lineage.empty() ? "" : next->lineage.back().id;
          next->lineage.push_back(g);
          return tw::Status::OK();
        },
        out, nullptr);
  };
  tw::Authority a;
  REQUIRE(claim(kHostA, "01a0000000000005", &a).ok());
  CHECK(a.epoch == 1);
  REQUIRE(claim(kHostA, "0190000000000001", &a).ok());  // lower id, later: lineage order
  CHECK(a.current() == "0190000000000001");
  CHECK(a.lineage.size() == 2);
  CHECK(claim(kHostA, "0190000000000001", &a).ok());     // Aborted: nothing to change
  CHECK(a.lineage.size() == 2);
  CHECK(claim(kHostB, "01b0000000000001", &a).IsConflict());  // fenced
  tw::Authority back;
  std::string etag;
  REQUIRE(tw::LoadAuthority(s.get(), "acme", "users", &back, &etag).ok());
  CHECK(back.owner == kHostA);
  CHECK(back.lineage.size() == 2);
  CHECK(!etag.empty());
  // A writer that read a stale version conflicts and UpdateAuthority reads
  // again: simulate with an update function that changes the object first.
  int calls = 0;
  tw::Status st = tw::UpdateAuthority(
      s.get(), "acme", "users",
      [&](const tw::Authority* cur, tw::Authority* next) -> tw::Status {
        *next = *cur;
        if (calls++ == 0) {
          tw::Authority other = *cur;
          other.durable_txid = 99;
          std::string e;
          REQUIRE(tw::LoadAuthority(s.get(), "acme", "users", &other, &e).ok());
          other.durable_txid = 99;
          REQUIRE(tw::StoreAuthority(s.get(), other, e, nullptr).ok());
        }
        next->durable_txid = std::max<uint64_t>(cur->durable_txid, 7);
        return tw::Status::OK();
      },
      &a, nullptr);
  REQUIRE(st.ok());
  CHECK(calls == 2);
  CHECK(a.durable_txid == 99);  // the second pass saw the other writer's value
  // Corrupt authority: an error, never silently replaced.
  REQUIRE(s->Put("tenants/acme/users/authority.json", "{not json").ok());
  CHECK(tw::LoadAuthority(s.get(), "acme", "users", &back, &etag).code() == tw::Status::kCorruption);
  CHECK(claim(kHostA, "01c0000000000001", &a).code() == tw::Status::kCorruption);
  // Another database's document under this key is refused.
  tw::Authority other = Sample();
  other.db = "orders";
  REQUIRE(s->Put("tenants/acme/users/authority.json", tw::SerializeAuthority(other)).ok());
  CHECK(tw::LoadAuthority(s.get(), "acme", "users", &back, &etag).code() == tw::Status::kCorruption);
}
