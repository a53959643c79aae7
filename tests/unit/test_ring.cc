// The shared-memory ring and registry (lib/walring/ring.h): records, wrap,
// full ring, abandoned records, futex wake-ups, the slot registry.
#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <thread>

#include "walring/ring.h"

using namespace tw::ring;

namespace {

std::string UniqueName(const char* tag) {
  return std::string("tw-unit-") + tag + "-" + std::to_string(getpid());
}

struct TestRing {
  std::string name;
  std::unique_ptr<Ring> r;
  TestRing(const char* tag, uint64_t bytes, uint32_t slots = 64) : name(UniqueName(tag)) {
    Ring::Unlink(name);
    Options o;
    o.ring_bytes = bytes;
    o.slots = slots;
    REQUIRE(Ring::Open(name, o, true, &r).ok());
  }
  ~TestRing() { Ring::Unlink(name); }
};

bool Put(Ring* r, uint64_t txid, size_t bytes) {
  Ring::Reservation res;
  if (!r->Reserve(bytes, 0, &res).ok()) return false;
  res.hdr->type = kTxn;
  res.hdr->txid = txid;
  std::memset(res.payload, int(txid & 0xff), bytes);
  r->Publish(res);
  return true;
}

}  // namespace

TEST_CASE("records come out in order, across many wraps, with payload intact") {
  TestRing t("order", 64 * 1024);
  uint64_t next_in = 1, next_out = 1;
  for (int round = 0; round < 200; ++round) {
    for (int k = 0; k < 7; ++k) {
      if (Put(t.r.get(), next_in, 1000 + size_t(next_in % 5000))) ++next_in;
    }
    const RecordHeader* rec;
    while (t.r->Peek(&rec) == Ring::PeekResult::kRecord) {
      CHECK(rec->txid == next_out);
      const uint8_t* p = reinterpret_cast<const uint8_t*>(rec) + kRecordHeaderBytes;
      size_t n = 1000 + size_t(next_out % 5000);
      bool same = true;
      for (size_t i = 0; i < n; ++i) same &= p[i] == uint8_t(next_out & 0xff);
      CHECK(same);
      t.r->Consume(rec);
      ++next_out;
    }
  }
  CHECK(next_out == next_in);
  CHECK(next_in > 1000);
  CHECK(t.r->used_bytes() == 0);
}

TEST_CASE("a full ring drops instead of blocking, and counts it") {
  TestRing t("full", 64 * 1024);
  int ok = 0;
  while (Put(t.r.get(), uint64_t(ok + 1), 4000)) ++ok;
  CHECK(ok > 5);
  CHECK(t.r->header()->records_dropped.load() == 1);
  Ring::Reservation res;
  auto t0 = NowMicros();
  CHECK(t.r->Reserve(4000, 20, &res).code() == tw::Status::kNoSpace);  // waits <= 20 ms
  CHECK(NowMicros() - t0 < 2000000);
  CHECK(t.r->Reserve(t.r->max_payload() + 1, 0, &res).code() == tw::Status::kInvalidArgument);
}

TEST_CASE("a producer killed mid-record is skipped, not waited for") {
  TestRing t("dead", 64 * 1024);
  pid_t pid = fork();
  if (pid == 0) {
    std::unique_ptr<Ring> child;
    if (!Ring::Open(t.name, Options(), false, &child).ok()) _exit(1);
    Ring::Reservation res;
    if (!child->Reserve(100, 0, &res).ok()) _exit(2);
    res.hdr->slot = 7;
    _exit(0);  // dies without publishing
  }
  int status = 0;
  waitpid(pid, &status, 0);
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
  REQUIRE(Put(t.r.get(), 42, 10));
  const RecordHeader* rec;
  REQUIRE(t.r->Peek(&rec) == Ring::PeekResult::kAbandoned);
  CHECK(rec->slot == 7);
  t.r->Consume(rec);
  REQUIRE(t.r->Peek(&rec) == Ring::PeekResult::kRecord);
  CHECK(rec->txid == 42);
  t.r->Consume(rec);
  CHECK(t.r->Peek(&rec) == Ring::PeekResult::kEmpty);
}

TEST_CASE("a live producer still writing is waited for") {
  TestRing t("busy", 64 * 1024);
  Ring::Reservation res;
  REQUIRE(t.r->Reserve(10, 0, &res).ok());
  const RecordHeader* rec;
  CHECK(t.r->Peek(&rec) == Ring::PeekResult::kBusy);
  t.r->Publish(res);
  CHECK(t.r->Peek(&rec) == Ring::PeekResult::kRecord);
}

TEST_CASE("the consumer sleeps on the futex and a publish wakes it") {
  TestRing t("wake", 64 * 1024);
  uint32_t token = t.r->WakeToken();
  std::thread producer([&] {
    usleep(50000);
    Put(t.r.get(), 1, 10);
  });
  auto t0 = NowMicros();
  t.r->Wait(token, 5000);
  auto waited = NowMicros() - t0;
  producer.join();
  CHECK(waited >= 30000);
  CHECK(waited < 2000000);
  // A token read before a publish makes Wait return at once.
  token = t.r->WakeToken();
  Put(t.r.get(), 2, 10);
  t0 = NowMicros();
  t.r->Wait(token, 5000);
  CHECK(NowMicros() - t0 < 1000000);
}

TEST_CASE("registry: find or add, lookup from another mapping, full registry") {
  TestRing t("reg", 64 * 1024, 8);
  uint32_t a, b, c;
  bool created;
  REQUIRE(t.r->FindOrAddSlot("acme", "orders", "/r/acme/orders.db", &a, &created).ok());
  CHECK(created);
  REQUIRE(t.r->FindOrAddSlot("acme", "orders", "/r/acme/orders.db", &b, &created).ok());
  CHECK_FALSE(created);
  CHECK(a == b);
  std::unique_ptr<Ring> other;
  REQUIRE(Ring::Open(t.name, Options(), false, &other).ok());
  REQUIRE(other->FindSlot("acme", "orders", &c).ok());
  CHECK(c == a);
  CHECK(std::string(other->slot(c)->path) == "/r/acme/orders.db");
  CHECK(other->FindSlot("acme", "nope", &c).IsNotFound());
  int added = 1;
  for (int i = 0; i < 20; ++i) {
    if (t.r->FindOrAddSlot("t", "d" + std::to_string(i), "/p", &c, &created).ok()) ++added;
  }
  CHECK(added == 7);  // one slot always stays free so probes terminate
  Ring::SetError(t.r->slot(a), "boom");
  CHECK(Ring::ReadError(other->slot(a)) == "boom");
}

TEST_CASE("opening a segment of another layout is refused") {
  std::unique_ptr<Ring> r;
  CHECK(Ring::Open("bad/name", Options(), true, &r).code() == tw::Status::kInvalidArgument);
  CHECK(Ring::Open(UniqueName("absent"), Options(), false, &r).IsNotFound());
}
