// tenantwal: generation ids and object keys.
//
// Keys are canonical: numbers are fixed-width lowercase hex, so lexical order
// of keys equals numeric order of txids, and ParseKey accepts exactly the
// strings the builders produce (anything else in a bucket is ignored by
// readers rather than misread). Generation ids put Unix milliseconds in the
// top 48 bits so they sort by creation time; within one process they are
// also strictly increasing even when created in the same millisecond.
#include <sys/random.h>

#include <chrono>
#include <cstdio>
#include <mutex>

#include "store/format.h"

namespace tw {

namespace {

std::string Hex16(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

bool IsLowerHex(std::string_view s) {
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

// Parses exactly 16 lowercase hex digits.
bool ParseHex16(std::string_view s, uint64_t* out) {
  if (s.size() != 16 || !IsLowerHex(s)) return false;
  uint64_t v = 0;
  for (char c : s) v = (v << 4) | static_cast<uint64_t>(c <= '9' ? c - '0' : c - 'a' + 10);
  *out = v;
  return true;
}

}  // namespace

std::string NewGenerationId() {
  static std::mutex mu;
  static uint64_t last = 0;
  uint64_t ms = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                          std::chrono::system_clock::now().time_since_epoch())
                                          .count());
  uint16_t rnd = 0;
  if (getrandom(&rnd, sizeof(rnd), 0) != sizeof(rnd)) {
    rnd = static_cast<uint16_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  }
  uint64_t id = ((ms & 0xffffffffffffULL) << 16) | rnd;
  std::lock_guard<std::mutex> lock(mu);
  if (id <= last) id = last + 1;
  last = id;
  return Hex16(id);
}

bool IsGenerationId(std::string_view s) { return s.size() == 16 && IsLowerHex(s); }

std::string DbPrefix(std::string_view tenant, std::string_view db) {
  std::string k = "tenants/";
  k.append(tenant).append("/").append(db).append("/");
  return k;
}

std::string SnapshotKey(std::string_view tenant, std::string_view db,
                        std::string_view generation, uint64_t txid) {
  std::string k = DbPrefix(tenant, db);
  k.append("snapshots/").append(generation).append("/").append(Hex16(txid)).append(".twsnap");
  return k;
}

std::string SegmentKey(std::string_view tenant, std::string_view db,
                       std::string_view generation, uint64_t min_txid, uint64_t max_txid) {
  std::string k = DbPrefix(tenant, db);
  k.append("wal/").append(generation).append("/").append(Hex16(min_txid)).append("-");
  k.append(Hex16(max_txid)).append(".twseg");
  return k;
}

bool ParseKey(std::string_view key, ParsedKey* out) {
  std::string_view parts[6];
  size_t n = 0, start = 0;
  for (size_t i = 0; i <= key.size(); i++) {
    if (i == key.size() || key[i] == '/') {
      if (n == 6) return false;
      parts[n++] = key.substr(start, i - start);
      start = i + 1;
    }
  }
  if (n != 6 || parts[0] != "tenants" || !ValidName(parts[1]) || !ValidName(parts[2]) ||
      !IsGenerationId(parts[4]))
    return false;
  ParsedKey k;
  k.tenant = parts[1];
  k.db = parts[2];
  k.generation = parts[4];
  std::string_view file = parts[5];
  if (parts[3] == "snapshots") {
    if (file.size() != 16 + 7 || file.substr(16) != ".twsnap") return false;
    if (!ParseHex16(file.substr(0, 16), &k.min_txid)) return false;
    k.max_txid = k.min_txid;
    k.kind = ParsedKey::kSnapshot;
  } else if (parts[3] == "wal") {
    if (file.size() != 16 + 1 + 16 + 6 || file[16] != '-' || file.substr(33) != ".twseg")
      return false;
    if (!ParseHex16(file.substr(0, 16), &k.min_txid) ||
        !ParseHex16(file.substr(17, 16), &k.max_txid) || k.min_txid > k.max_txid)
      return false;
    k.kind = ParsedKey::kSegment;
  } else {
    return false;
  }
  *out = std::move(k);
  return true;
}

}  // namespace tw
