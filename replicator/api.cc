// tenantwald: the REST API and /metrics (see api.h and docs/API.md).
//
// One dispatcher serves every method and path: it splits the raw request
// target into percent-decoded segments (so "a%2Fb" is one segment, and an
// invalid name, not a path), checks the bearer token, then routes. A known
// path with a method it does not support gets 405 with an Allow header.
#include "api.h"

#include <fcntl.h>
#include <httplib.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <simdjson.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <thread>
#include <vector>

#include "base/names.h"
#include "log.h"
#include "metrics.h"
#include "peek_file.h"
#include "replicator.h"
#include "tenantwal/tenantwal.h"

namespace twd {

struct ApiServer::Impl {
  Replicator* rep;
  ApiOptions opts;
  std::string token;  // empty: no authentication
  httplib::Server srv;
  std::thread th;
  int port = 0;
};

namespace {

constexpr size_t kMaxBody = 1 << 20;
const char* const kExts[] = {".db", ".sqlite", ".sqlite3"};
const char* const kPhases[] = {"pending-snapshot", "snapshotting", "active", "deleted",
                               "not-replicated", "fenced"};

// ---- responses ---------------------------------------------------------------

void Error(httplib::Response& res, int status, const char* code, const std::string& msg) {
  std::string body = "{\"error\":{\"code\":";
  JsonQuote(&body, code);
  body += ",\"message\":";
  JsonQuote(&body, msg);
  body += "}}\n";
  res.status = status;
  res.set_content(body, "application/json");
}

void Json(httplib::Response& res, int status, std::string body) {
  body += "\n";
  res.status = status;
  res.set_content(body, "application/json");
}

void Field(std::string* out, const char* k, const std::string& v, bool comma = true) {
  if (comma) out->push_back(',');
  JsonQuote(out, k);
  out->push_back(':');
  JsonQuote(out, v);
}

void Field(std::string* out, const char* k, int64_t v, bool comma = true) {
  if (comma) out->push_back(',');
  JsonQuote(out, k);
  out->push_back(':');
  *out += std::to_string(v);
}

void Raw(std::string* out, const char* k, const std::string& json, bool comma = true) {
  if (comma) out->push_back(',');
  JsonQuote(out, k);
  out->push_back(':');
  *out += json;
}

void TimeField(std::string* out, const char* k, int64_t us) {
  if (us > 0) Field(out, k, Rfc3339(us));
  else Raw(out, k, "null");
}

std::string DbJson(Replicator* rep, const Replicator::DbView& d) {
  std::string o = "{";
  Field(&o, "tenantId", d.tenant, false);
  Field(&o, "databaseName", d.db);
  Field(&o, "localPath", d.path);
  Field(&o, "s3Path", rep->S3Path(d.tenant, d.db));
  Field(&o, "status", d.phase);
  Field(&o, "createdAt", Rfc3339(d.created_us));
  Field(&o, "txid", int64_t(d.txid));
  Field(&o, "replicatedTxid", int64_t(d.replicated_txid));
  Field(&o, "lagMs", d.lag_ms);
  Field(&o, "pendingBytes", int64_t(d.pending_bytes));
  Field(&o, "generation", d.generation);
  Field(&o, "bytesReplicated", int64_t(d.bytes));
  Field(&o, "transactionsReplicated", int64_t(d.txns));
  Field(&o, "snapshots", int64_t(d.snapshots));
  Field(&o, "errors", int64_t(d.errors));
  Raw(&o, "throttled", d.throttled ? "true" : "false");
  if (d.last_snapshot_us > 0) Field(&o, "lastSnapshotAt", Rfc3339(d.last_snapshot_us));
  if (d.last_error.empty()) o += ",\"lastError\":null";
  else Field(&o, "lastError", d.last_error);
  // Why the database is being snapshotted again (pending-snapshot or
  // snapshotting after a doubt: ring overflow, bypass, gap...), else null.
  if (d.snapshot_reason.empty()) o += ",\"snapshotReason\":null";
  else Field(&o, "snapshotReason", d.snapshot_reason);
  o += "}";
  return o;
}


// ---- request target ---------------------------------------------------------------

int HexVal(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Splits the raw path ("/api/databases/a%2Fb/x") into percent-decoded
// segments; false on a malformed escape. The leading '/' gives no segment.
bool SplitPath(const std::string& target, std::vector<std::string>* segs) {
  std::string path = target.substr(0, target.find('?'));
  if (path.empty() || path[0] != '/') return false;
  std::string cur;
  for (size_t i = 1; i <= path.size(); ++i) {
    if (i == path.size() || path[i] == '/') {
      segs->push_back(cur);
      cur.clear();
      continue;
    }
    char c = path[i];
    if (c == '%') {
      if (i + 2 >= path.size()) return false;
      int h = HexVal(path[i + 1]), l = HexVal(path[i + 2]);
      if (h < 0 || l < 0) return false;
      cur.push_back(char(h * 16 + l));
      i += 2;
    } else {
      cur.push_back(c);
    }
  }
  return true;
}

// ---- authentication ------------------------------------------------------------

// SHA-256 both sides and compare the digests with CRYPTO_memcmp: the time
// depends neither on where they differ nor on the token's length.
bool TokenMatches(std::string_view got, const std::string& want) {
  unsigned char a[EVP_MAX_MD_SIZE], b[EVP_MAX_MD_SIZE];
  unsigned int na = 0, nb = 0;
  if (!EVP_Digest(got.data(), got.size(), a, &na, EVP_sha256(), nullptr)) return false;
  if (!EVP_Digest(want.data(), want.size(), b, &nb, EVP_sha256(), nullptr)) return false;
  return na == nb && CRYPTO_memcmp(a, b, na) == 0;
}

bool Authorized(const httplib::Request& req, const std::string& token) {
  if (token.empty()) return true;
  if (!req.has_header("Authorization")) return false;
  std::string h = req.get_header_value("Authorization");
  if (h.size() < 7 || strncasecmp(h.c_str(), "Bearer ", 7) != 0) return false;
  size_t i = 7;
  while (i < h.size() && h[i] == ' ') ++i;
  return TokenMatches(std::string_view(h).substr(i), token);
}

// ---- JSON bodies ------------------------------------------------------------------

// Parses `body` as one JSON object into *obj (keys unique); sets an error
// response and returns false otherwise.
bool ParseObject(const std::string& body, simdjson::dom::parser* parser,
                 simdjson::dom::object* obj, httplib::Response& res) {
  simdjson::padded_string ps(body);
  simdjson::dom::element doc;
  if (parser->parse(ps).get(doc) != simdjson::SUCCESS) {
    Error(res, 400, "invalid_json", "the request body is not valid JSON");
    return false;
  }
  if (doc.get_object().get(*obj) != simdjson::SUCCESS) {
    Error(res, 400, "invalid_json", "the request body must be a JSON object");
    return false;
  }
  std::set<std::string_view> seen;
  for (auto kv : *obj) {
    if (!seen.insert(kv.key).second) {
      Error(res, 400, "invalid_json", "duplicate field \"" + std::string(kv.key) + "\"");
      return false;
    }
  }
  return true;
}

// ---- registration paths ----------------------------------------------------------

struct Resolved {
  int status = 0;  // 0: ok, else the HTTP status of the error
  std::string code, message;
  std::string tenant, db, path;
};

Resolved Fail(int status, const char* code, std::string msg) {
  Resolved r;
  r.status = status;
  r.code = code;
  r.message = std::move(msg);
  return r;
}

// The file must be a regular file (not a symlink) that is empty or starts
// with SQLite's header: tenantwald runs with privileges an API client may
// not have, and must not upload an arbitrary file as a "database".
Resolved CheckFile(Resolved r) {
  struct stat st;
  if (lstat(r.path.c_str(), &st) != 0) {
    if (errno == ENOENT) return Fail(404, "not_found", "no such file: " + r.path);
    return Fail(400, "invalid_path", "cannot stat " + r.path + ": " + strerror(errno));
  }
  if (!S_ISREG(st.st_mode)) {
    return Fail(400, "invalid_path", r.path + " is not a regular file (symlinks are refused)");
  }
  if (st.st_size > 0) {
    char magic[16] = {};
    PeekFile f;  // a snapshot may hold SQLite locks on it (peek_file.h)
    long n = f.Open(r.path, true).ok() ? f.Read(magic, sizeof magic, 0) : -1;
    f.Close();
    if (n != long(sizeof magic) || memcmp(magic, "SQLite format 3", 16) != 0) {
      return Fail(400, "not_a_database", r.path + " is not a SQLite database");
    }
  }
  return r;
}

// Is `dir` (resolved) exactly {root}/{tenant} for a valid tenant?
bool TenantDir(const std::string& root, const std::string& dir, std::string* tenant) {
  if (dir.size() <= root.size() + 1 || dir.compare(0, root.size(), root) != 0 ||
      dir[root.size()] != '/') {
    return false;
  }
  *tenant = dir.substr(root.size() + 1);
  return tw::ValidName(*tenant);
}

// "/a/./b/../c" -> "/a/c" without touching the filesystem.
std::string Lexical(const std::string& p) {
  std::vector<std::string> parts;
  size_t i = 0;
  while (i <= p.size()) {
    size_t j = p.find('/', i);
    if (j == std::string::npos) j = p.size();
    std::string seg = p.substr(i, j - i);
    if (seg == "..") {
      if (!parts.empty()) parts.pop_back();
    } else if (!seg.empty() && seg != ".") {
      parts.push_back(seg);
    }
    i = j + 1;
  }
  std::string out;
  for (auto& s : parts) out += "/" + s;
  return out.empty() ? "/" : out;
}

Resolved ResolvePath(const std::string& root, const std::string& p) {
  const char* want = "must be {root}/{tenant}/{db}.db, .sqlite or .sqlite3 under --root ";
  if (p.empty() || p[0] != '/' || p.size() >= PATH_MAX || p.find('\0') != std::string::npos) {
    return Fail(400, "invalid_path", std::string("path ") + want + root);
  }
  size_t slash = p.rfind('/');
  std::string dir = slash == 0 ? "/" : p.substr(0, slash), file = p.substr(slash + 1);
  char buf[PATH_MAX];
  if (!realpath(dir.c_str(), buf)) {
    // Say "not found" only inside the root: nothing about other directories.
    std::string t;
    if (errno == ENOENT && TenantDir(root, Lexical(dir), &t)) {
      return Fail(404, "not_found", "no such directory: " + dir);
    }
    return Fail(400, "invalid_path", std::string("path ") + want + root);
  }
  Resolved r;
  if (!TenantDir(root, buf, &r.tenant)) {
    return Fail(400, "invalid_path", std::string("path ") + want + root);
  }
  for (const char* ext : kExts) {
    size_t n = strlen(ext);
    if (file.size() > n && file.compare(file.size() - n, n, ext) == 0) {
      r.db = file.substr(0, file.size() - n);
      break;
    }
  }
  if (r.db.empty()) return Fail(400, "invalid_path", std::string("path ") + want + root);
  if (!tw::ValidName(r.db)) {
    return Fail(400, "invalid_name",
                "database name must be 1-64 characters of [A-Za-z0-9._-], not starting with '.'");
  }
  r.path = root + "/" + r.tenant + "/" + file;
  return CheckFile(r);
}

Resolved ResolveNames(const std::string& root, const std::string& tenant, const std::string& db) {
  if (!tw::ValidName(tenant) || !tw::ValidName(db)) {
    return Fail(400, "invalid_name",
                "tenantId and databaseName must be 1-64 characters of [A-Za-z0-9._-], not "
                "starting with '.'");
  }
  char buf[PATH_MAX];
  const std::string dir = root + "/" + tenant;
  std::string t;
  if (!realpath(dir.c_str(), buf) || !TenantDir(root, buf, &t) || t != tenant) {
    return Fail(404, "not_found", "no tenant directory " + dir);
  }
  for (const char* ext : kExts) {
    Resolved r;
    r.tenant = tenant;
    r.db = db;
    r.path = dir + "/" + db + ext;
    struct stat st;
    if (lstat(r.path.c_str(), &st) == 0) return CheckFile(r);
  }
  return Fail(404, "not_found", "no file " + dir + "/" + db + ".db, .sqlite or .sqlite3");
}

// ---- tenants ------------------------------------------------------------------------

struct TenantTotals {
  int64_t databases = 0, active = 0, deleted = 0, with_errors = 0;
  int64_t bytes = 0, txns = 0, snapshots = 0, errors = 0, pending = 0, max_lag_ms = 0;
};

std::map<std::string, TenantTotals> Tenants(Replicator* rep) {
  std::map<std::string, TenantTotals> m;
  for (auto& d : rep->Databases()) {
    if (d.tenant.empty()) continue;
    TenantTotals& t = m[d.tenant];
    ++t.databases;
    t.active += d.phase == "active";
    t.deleted += d.phase == "deleted";
    t.with_errors += !d.last_error.empty();
    t.bytes += int64_t(d.bytes);
    t.txns += int64_t(d.txns);
    t.snapshots += int64_t(d.snapshots);
    t.errors += int64_t(d.errors);
    t.pending += int64_t(d.pending_bytes);
    t.max_lag_ms = std::max(t.max_lag_ms, d.lag_ms);
  }
  for (auto& t : rep->tenants()->Configured()) m[t];
  return m;
}

std::string TenantJson(Replicator* rep, const std::string& name, const TenantTotals& t) {
  bool own = false;
  const int64_t sync = rep->TenantSyncInterval(name, &own);
  std::string o = "{";
  Field(&o, "tenantId", name, false);
  Field(&o, "databases", t.databases);
  Field(&o, "activeDatabases", t.active);
  Field(&o, "deletedDatabases", t.deleted);
  Field(&o, "databasesWithErrors", t.with_errors);
  Field(&o, "bytesReplicated", t.bytes);
  Field(&o, "transactionsReplicated", t.txns);
  Field(&o, "snapshots", t.snapshots);
  Field(&o, "errors", t.errors);
  Field(&o, "pendingBytes", t.pending);
  Field(&o, "maxLagMs", t.max_lag_ms);
  const Effective e = rep->tenants()->Get(name);
  std::string url = e.replica.url;
  while (!url.empty() && url.back() == '/') url.pop_back();
  Field(&o, "s3Path", url + "/tenants/" + name + "/");
  const Throttle th = rep->tenants()->ThrottleState(name, tw::ring::NowMicros());
  Raw(&o, "throttled", th.throttled ? "true" : "false");
  Raw(&o, "throttledSeconds", std::to_string(th.throttled_seconds));
  // Effective settings (docs/API.md); "sources" says which layer set each
  // one: api, config-tenant, config-defaults, flag or default.
  Field(&o, "syncInterval", FormatDuration(sync));
  Field(&o, "syncIntervalSource", std::string(own ? "tenant" : "global"));
  for (int f = kRateBytes; f < kFieldCount; ++f) Raw(&o, kFieldNames[f], e.JsonValue(f));
  o += ",\"sources\":{";
  for (int f = 0; f < kFieldCount; ++f) Field(&o, kFieldNames[f], std::string(SourceName(e.source[f])), f > 0);
  o += "}";
  o += "}";
  return o;
}

const std::set<std::string> kReadOnly = {
    "tenantId", "databases", "activeDatabases", "deletedDatabases", "databasesWithErrors",
    "bytesReplicated", "transactionsReplicated", "snapshots", "errors", "pendingBytes",
    "maxLagMs", "s3Path", "syncIntervalSource", "throttled", "throttledSeconds", "sources"};

// ---- the router ---------------------------------------------------------------------

struct Ctx {
  Replicator* rep;
  const ApiOptions* opts;
  const httplib::Request& req;
  httplib::Response& res;
  std::vector<std::string> segs;
};

bool Names(Ctx& c, const std::string& tenant, const std::string* db) {
  if (!tw::ValidName(tenant) || (db && !tw::ValidName(*db))) {
    Error(c.res, 400, "invalid_name",
          "tenant and database names must be 1-64 characters of [A-Za-z0-9._-], not starting "
          "with '.'");
    return false;
  }
  return true;
}

void Health(Ctx& c) {
  Replicator* rep = c.rep;
  auto dbs = rep->Databases();
  std::set<std::string> tenants;
  std::map<std::string, int64_t> by_phase;
  int64_t lagging = 0, with_errors = 0;
  for (auto& d : dbs) {
    if (!d.tenant.empty()) tenants.insert(d.tenant);
    ++by_phase[d.phase];
    lagging += d.replicated_txid < d.txid && d.phase == "active";
    with_errors += !d.last_error.empty();
  }
  auto* ring = rep->ring();
  auto* h = ring->header();
  StoreHealth sh = rep->StoreHealthNow();
  SpoolUsage sp = ScanSpool(rep->options().spool_dir);
  const bool s3_bad = sh.last_us > 0 && !sh.last_ok;
  std::string b = "{";
  // Degraded: the last S3 request failed, or the last config reload was refused.
  const bool cfg_bad = !rep->config_state().last_ok;
  Field(&b, "status", std::string(s3_bad || cfg_bad ? "degraded" : "ok"), false);
  Field(&b, "version", std::string(TENANTWAL_VERSION));
  Field(&b, "uptimeSeconds", (tw::ring::NowMicros() - rep->started_us()) / 1000000);
  Field(&b, "startedAt", Rfc3339(rep->started_us()));
  // This host in the replica's authorities (ownership.cc), and whether the
  // store enforces the conditional writes that fence other hosts.
  Field(&b, "hostId", rep->host_id());
  Raw(&b, "fencing", rep->fencing_enforced() ? "true" : "false");
  b += ",\"ring\":{";
  Field(&b, "name", ring->name(), false);
  Field(&b, "usedBytes", int64_t(ring->used_bytes()));
  Field(&b, "capacityBytes", int64_t(h->ring_capacity));
  Field(&b, "recordsWritten", int64_t(h->records_written.load()));
  Field(&b, "recordsDropped", int64_t(h->records_dropped.load()));
  Field(&b, "bytesDropped", int64_t(h->bytes_dropped.load()));
  Field(&b, "recordsAbandoned", int64_t(h->records_abandoned.load()));
  Field(&b, "slotsUsed", int64_t(h->slots_used.load()));
  Field(&b, "slotCount", int64_t(h->slot_count));
  b += "},\"spool\":{";
  Field(&b, "path", rep->options().spool_dir, false);
  Field(&b, "files", int64_t(sp.files));
  Field(&b, "usedBytes", int64_t(sp.bytes));
  Field(&b, "freeBytes", int64_t(sp.free_bytes));
  Field(&b, "filesystemBytes", int64_t(sp.total_bytes));
  {
    // The bound on sealed segments (spool.h): counted bytes, drops, errors.
    SpoolStats ss = rep->SpoolStatsNow();
    uint64_t dropped_bytes = 0, dropped_segments = 0;
    for (auto& [t, x] : ss.dropped) {
      dropped_bytes += x.bytes;
      dropped_segments += x.segments;
    }
    Field(&b, "maxBytes", int64_t(ss.max_bytes));
    Field(&b, "segmentBytes", int64_t(ss.used_bytes));
    Field(&b, "segments", int64_t(ss.segments));
    Field(&b, "drops", int64_t(ss.drops));
    Field(&b, "droppedSegments", int64_t(dropped_segments));
    Field(&b, "droppedBytes", int64_t(dropped_bytes));
    Field(&b, "writeErrors", int64_t(ss.write_errors));
    if (ss.last_write_error.empty()) Raw(&b, "lastWriteError", "null");
    else Field(&b, "lastWriteError", ss.last_write_error);
  }
  b += "},\"s3\":{";
  Field(&b, "replica", rep->options().replica_url, false);
  // Reachability from the last request the replicator made (no request is
  // sent for a health check): null until one was made.
  Raw(&b, "reachable", sh.last_us == 0 ? "null" : sh.last_ok ? "true" : "false");
  TimeField(&b, "lastRequestAt", sh.last_us);
  if (sh.last_us > 0) Field(&b, "lastOperation", sh.last_op);
  else Raw(&b, "lastOperation", "null");
  TimeField(&b, "lastSuccessAt", sh.last_ok_us);
  TimeField(&b, "lastFailureAt", sh.last_fail_us);
  if (sh.last_error.empty()) Raw(&b, "lastError", "null");
  else Field(&b, "lastError", sh.last_error);
  b += ",\"requests\":{";
  size_t i = 0;
  for (auto& [op, rf] : rep->store()->RequestCounts()) {
    if (i++) b += ",";
    JsonQuote(&b, op);
    b += ":{";
    Field(&b, "requests", int64_t(rf.first), false);
    Field(&b, "failures", int64_t(rf.second));
    b += "}";
  }
  b += "}}";
  Field(&b, "replica", rep->options().replica_url);
  Field(&b, "totalTenants", int64_t(tenants.size()));
  Field(&b, "totalDatabases", int64_t(dbs.size()));
  b += ",\"databasesByStatus\":{";
  i = 0;
  for (auto& [p, n] : by_phase) Field(&b, p.c_str(), n, i++ > 0);
  b += "}";
  Field(&b, "laggingDatabases", lagging);
  {
    // The configuration file: a rejected reload shows here until a good one.
    const auto cs = rep->config_state();
    b += ",\"config\":{";
    if (cs.path.empty()) Raw(&b, "path", "null", false);
    else Field(&b, "path", cs.path, false);
    TimeField(&b, "loadedAt", cs.loaded_us);
    TimeField(&b, "lastReloadAt", cs.last_attempt_us);
    Raw(&b, "lastReloadOk", cs.last_ok ? "true" : "false");
    if (cs.last_error.empty()) Raw(&b, "lastError", "null");
    else Field(&b, "lastError", cs.last_error);
    Field(&b, "reloads", int64_t(cs.reloads));
    Field(&b, "failedReloads", int64_t(cs.failures));
    b += "}";
  }
  Field(&b, "databasesWithErrors", with_errors);
  b += "}";
  Json(c.res, 200, b);
}

bool ParseCount(Ctx& c, const char* name, int64_t lo, int64_t hi, int64_t* out) {
  if (!c.req.has_param(name)) return true;
  const std::string v = c.req.get_param_value(name);
  char* end = nullptr;
  errno = 0;
  long long n = v.empty() || !isdigit(static_cast<unsigned char>(v[0])) ? -1
                                                                       : strtoll(v.c_str(), &end, 10);
  if (n < lo || n > hi || errno != 0 || !end || *end != 0) {
    Error(c.res, 400, "invalid_parameter",
          std::string(name) + " must be an integer from " + std::to_string(lo) + " to " +
              std::to_string(hi));
    return false;
  }
  *out = n;
  return true;
}

void ListDatabases(Ctx& c) {
  Replicator* rep = c.rep;
  for (auto& [k, v] : c.req.params) {
    if (k != "tenant" && k != "status" && k != "limit" && k != "offset") {
      Error(c.res, 400, "invalid_parameter", "unknown query parameter " + k);
      return;
    }
    (void)v;
  }
  std::string want_tenant = c.req.has_param("tenant") ? c.req.get_param_value("tenant") : "";
  std::string want_status = c.req.has_param("status") ? c.req.get_param_value("status") : "";
  if (c.req.has_param("tenant") && !Names(c, want_tenant, nullptr)) return;
  if (c.req.has_param("status") &&
      std::find_if(std::begin(kPhases), std::end(kPhases),
                   [&](const char* p) { return want_status == p; }) == std::end(kPhases)) {
    Error(c.res, 400, "invalid_parameter",
          "status must be one of pending-snapshot, snapshotting, active, deleted, "
          "not-replicated, fenced");
    return;
  }
  int64_t limit = -1, offset = 0;
  if (!ParseCount(c, "limit", 1, 100000, &limit) || !ParseCount(c, "offset", 0, 1LL << 40, &offset)) {
    return;
  }
  auto dbs = rep->Databases();
  std::sort(dbs.begin(), dbs.end(), [](const Replicator::DbView& a, const Replicator::DbView& b) {
    return std::tie(a.tenant, a.db) < std::tie(b.tenant, b.db);
  });
  std::set<std::string> tenants, active;
  std::string list;
  int64_t n = 0, shown = 0;
  for (auto& d : dbs) {
    if (d.tenant.empty()) continue;  // not replicated: no identity
    if (!want_tenant.empty() && d.tenant != want_tenant) continue;
    if (!want_status.empty() && d.phase != want_status) continue;
    tenants.insert(d.tenant);
    if (d.phase == "active") active.insert(d.tenant);
    const int64_t idx = n++;
    if (idx < offset || (limit >= 0 && idx >= offset + limit)) continue;
    if (shown++) list.push_back(',');
    list += DbJson(rep, d);
  }
  std::string b = "{";
  Field(&b, "totalTenants", int64_t(tenants.size()), false);
  Field(&b, "totalDatabases", n);
  Field(&b, "offset", offset);
  if (limit >= 0) Field(&b, "limit", limit);
  else Raw(&b, "limit", "null");
  Field(&b, "count", shown);
  if (offset + shown < n) Field(&b, "next", offset + shown);
  else Raw(&b, "next", "null");
  b += ",\"activeTenants\":[";
  size_t i = 0;
  for (auto& t : active) {
    if (i++) b.push_back(',');
    JsonQuote(&b, t);
  }
  b += "],\"databases\":[" + list + "]}";
  Json(c.res, 200, b);
}

void RegisterDatabase(Ctx& c) {
  Replicator* rep = c.rep;
  simdjson::dom::parser parser;
  simdjson::dom::object obj;
  if (!ParseObject(c.req.body, &parser, &obj, c.res)) return;
  std::string path, tenant, db;
  bool has_path = false, has_t = false, has_d = false;
  for (auto kv : obj) {
    std::string_view v;
    const std::string key(kv.key);
    if (key != "path" && key != "tenantId" && key != "databaseName") {
      Error(c.res, 400, "unknown_field",
            "unknown field \"" + key + "\" (give \"path\", or \"tenantId\" and \"databaseName\")");
      return;
    }
    if (kv.value.get_string().get(v) != simdjson::SUCCESS) {
      Error(c.res, 400, "invalid_field", "\"" + key + "\" must be a string");
      return;
    }
    if (key == "path") has_path = true, path = std::string(v);
    if (key == "tenantId") has_t = true, tenant = std::string(v);
    if (key == "databaseName") has_d = true, db = std::string(v);
  }
  if (has_path == (has_t || has_d) || (!has_path && has_t != has_d)) {
    Error(c.res, 400, "invalid_body",
          "give either \"path\", or both \"tenantId\" and \"databaseName\"");
    return;
  }
  const std::string& root = rep->options().root;
  Resolved r = has_path ? ResolvePath(root, path) : ResolveNames(root, tenant, db);
  if (r.status) {
    Error(c.res, r.status, r.code.c_str(), r.message);
    return;
  }
  bool created = false;
  tw::Status st = rep->RegisterDatabase(r.tenant, r.db, r.path, &created);
  if (st.code() == tw::Status::kAborted) {
    Error(c.res, 409, "conflict", st.message());
    return;
  }
  if (st.code() == tw::Status::kNoSpace) {
    Error(c.res, 507, "registry_full", st.message());
    return;
  }
  if (!st.ok()) {
    Error(c.res, 500, "internal", st.ToString());
    return;
  }
  if (!created) {
    Error(c.res, 409, "already_registered", r.tenant + "/" + r.db + " is already registered");
    return;
  }
  Log(Level::kInfo, "database registered through the API",
      {{"audit", 1}, {"action", "register"}, {"source", "api"}, {"tenant", r.tenant},
       {"db", r.db}, {"path", r.path}, {"remote", c.req.remote_addr}});
  Replicator::DbView v;
  if (!rep->Database(r.tenant, r.db, &v).ok()) {
    Error(c.res, 500, "internal", "registered, but not found afterwards");
    return;
  }
  c.res.set_header("Location", "/api/databases/" + r.tenant + "/" + r.db);
  Json(c.res, 201, DbJson(rep, v));
}

void OneDatabase(Ctx& c, const std::string& tenant, const std::string& db, bool del) {
  Replicator* rep = c.rep;
  Replicator::DbView v;
  if (!rep->Database(tenant, db, &v).ok()) {
    Error(c.res, 404, "not_found", "no database " + tenant + "/" + db);
    return;
  }
  if (del) {
    const bool was = v.phase == "deleted";
    tw::Status st = rep->StopDatabase(tenant, db);
    if (st.IsNotFound()) {
      Error(c.res, 404, "not_found", st.message());
      return;
    }
    if (!st.ok()) {
      // Stopped in memory, but the marker that keeps it stopped across a
      // restart could not be written: say so.
      Error(c.res, 500, "internal", "replication stopped, but " + st.ToString());
      return;
    }
    if (!was) {
      Log(Level::kInfo, "database deleted through the API: replication stopped, replica kept",
          {{"audit", 1}, {"action", "delete"}, {"source", "api"}, {"tenant", tenant},
           {"db", db}, {"remote", c.req.remote_addr}});
    }
    rep->Database(tenant, db, &v);
  }
  Json(c.res, 200, DbJson(rep, v));
}

void Snapshot(Ctx& c, const std::string& tenant, const std::string& db) {
  if (!c.req.body.empty()) {
    simdjson::dom::parser parser;
    simdjson::dom::object obj;
    if (!ParseObject(c.req.body, &parser, &obj, c.res)) return;
    for (auto kv : obj) {
      Error(c.res, 400, "unknown_field",
            "unknown field \"" + std::string(kv.key) + "\" (the body must be empty or {})");
      return;
    }
  }
  bool queued = false;
  tw::Status st = c.rep->RequestSnapshot(tenant, db, &queued);
  if (st.IsNotFound()) {
    Error(c.res, 404, "not_found", st.message());
    return;
  }
  if (st.code() == tw::Status::kAborted) {
    Error(c.res, 409, "conflict", st.message());
    return;
  }
  Log(Level::kInfo, "snapshot requested through the API",
      {{"audit", 1}, {"action", "snapshot"}, {"source", "api"}, {"tenant", tenant}, {"db", db},
       {"queued", queued ? 1 : 0}, {"remote", c.req.remote_addr}});
  Replicator::DbView v;
  c.rep->Database(tenant, db, &v);
  std::string b = "{";
  Field(&b, "tenantId", tenant, false);
  Field(&b, "databaseName", db);
  Raw(&b, "accepted", "true");
  Raw(&b, "alreadyPending", queued ? "false" : "true");
  Field(&b, "status", v.phase);
  Field(&b, "generation", v.generation);
  Field(&b, "snapshots", int64_t(v.snapshots));
  Field(&b, "message", std::string("a new snapshot (and generation) will be uploaded; watch "
                                   "snapshots/generation in GET /api/databases/") +
                           tenant + "/" + db);
  b += "}";
  Json(c.res, 202, b);
}

// POST /api/databases/{t}/{d}/claim, body empty, {} or {"force": true}:
// this host claims the database in its authority with a new snapshot and
// generation (ownership.cc). Without force it fails (the database stays
// fenced) while another host owns it; force takes it over.
void Claim(Ctx& c, const std::string& tenant, const std::string& db) {
  bool force = false;
  if (!c.req.body.empty()) {
    simdjson::dom::parser parser;
    simdjson::dom::object obj;
    if (!ParseObject(c.req.body, &parser, &obj, c.res)) return;
    for (auto kv : obj) {
      if (kv.key != "force") {
        Error(c.res, 400, "unknown_field",
              "unknown field \"" + std::string(kv.key) + "\" (the only field is \"force\")");
        return;
      }
      bool b;
      if (kv.value.get(b) != simdjson::SUCCESS) {
        Error(c.res, 400, "invalid_field", "\"force\" must be true or false");
        return;
      }
      force = b;
    }
  }
  tw::Status st = c.rep->ClaimDatabase(tenant, db, force);
  if (st.IsNotFound()) {
    Error(c.res, 404, "not_found", st.message());
    return;
  }
  if (st.code() == tw::Status::kAborted) {
    Error(c.res, 409, "conflict", st.message());
    return;
  }
  Log(Level::kInfo, "claim requested through the API",
      {{"audit", 1}, {"action", force ? "takeover" : "claim"}, {"source", "api"},
       {"tenant", tenant}, {"db", db}, {"remote", c.req.remote_addr}});
  Replicator::DbView v;
  c.rep->Database(tenant, db, &v);
  std::string b = "{";
  Field(&b, "tenantId", tenant, false);
  Field(&b, "databaseName", db);
  Raw(&b, "accepted", "true");
  Raw(&b, "force", force ? "true" : "false");
  Field(&b, "status", v.phase);
  Field(&b, "hostId", c.rep->host_id());
  Field(&b, "message", std::string("a new snapshot (and generation) will be uploaded and "
                                   "claimed in the authority; watch status/generation in GET "
                                   "/api/databases/") +
                           tenant + "/" + db);
  b += "}";
  Json(c.res, 202, b);
}

void ListTenants(Ctx& c) {
  auto m = Tenants(c.rep);
  std::string b = "{";
  Field(&b, "totalTenants", int64_t(m.size()), false);
  b += ",\"tenants\":[";
  size_t i = 0;
  for (auto& [name, t] : m) {
    if (i++) b += ",";
    b += TenantJson(c.rep, name, t);
  }
  b += "]}";
  Json(c.res, 200, b);
}

void OneTenant(Ctx& c, const std::string& tenant) {
  auto m = Tenants(c.rep);
  auto it = m.find(tenant);
  if (it == m.end()) {
    Error(c.res, 404, "not_found", "no tenant " + tenant + " (no databases, no settings)");
    return;
  }
  Json(c.res, 200, TenantJson(c.rep, tenant, it->second));
}

// Reads one settings field of a PATCH body into `set` (or `clear` for null).
// False with a 400 already sent when the value is invalid.
bool PatchField(Ctx& c, int f, simdjson::dom::element v, Settings* set, std::vector<int>* clear) {
  if (v.is_null()) {
    clear->push_back(f);
    return true;
  }
  std::string_view sv;
  const bool is_str = v.get_string().get(sv) == simdjson::SUCCESS;
  const std::string str(is_str ? sv : std::string_view());
  int64_t us = 0;
  switch (f) {
    case kSync:
      if (!is_str || !ParseDurationIn(str, kMinSyncUs, kMaxSyncUs, &us)) {
        Error(c.res, 400, "invalid_field",
              "syncInterval must be a duration from 1ms to 24h (\"500ms\", \"2s\", \"1m\") or "
              "null for the global value");
        return false;
      }
      set->sync_us = us;
      return true;
    case kSnapshot:
    case kRetention: {
      const int64_t lo = f == kSnapshot ? kMinSnapshotUs : kMinRetentionUs;
      const int64_t hi = f == kSnapshot ? kMaxSnapshotUs : kMaxRetentionUs;
      if (!is_str || !ParseDurationIn(str, lo, hi, &us)) {
        Error(c.res, 400, "invalid_field",
              std::string(kFieldNames[f]) + " must be a duration from " + FormatDurationLong(lo) +
                  " to " + FormatDurationLong(hi) + " (\"30m\", \"24h\", \"7d\") or null for the "
                  "global value");
        return false;
      }
      (f == kSnapshot ? set->snapshot_us : set->retention_us) = us;
      return true;
    }
    case kRateBytes:
    case kRateRequests: {
      int64_t n = -1;
      if (v.get_int64().get(n) != simdjson::SUCCESS || n < 0 || n > kMaxRate) {
        Error(c.res, 400, "invalid_field",
              std::string(kFieldNames[f]) + " must be an integer >= 0 (0 = unlimited) or null "
              "for the global value");
        return false;
      }
      (f == kRateBytes ? set->rate_bytes : set->rate_requests) = n;
      return true;
    }
    case kReplica: {
      ReplicaTarget t;
      simdjson::dom::object o;
      if (is_str) {
        t.url = str;
      } else if (v.get_object().get(o) == simdjson::SUCCESS) {
        for (auto kv : o) {
          const std::string k(kv.key);
          std::string_view x;
          if (k != "url" && k != "endpoint" && k != "region" && k != "credentials") {
            Error(c.res, 400, "invalid_field",
                  "replica." + k + ": unknown (replica takes url, endpoint, region, credentials)");
            return false;
          }
          if (kv.value.is_null()) continue;
          if (kv.value.get_string().get(x) != simdjson::SUCCESS) {
            Error(c.res, 400, "invalid_field", "replica." + k + " must be a string");
            return false;
          }
          (k == "url" ? t.url : k == "endpoint" ? t.endpoint : k == "region" ? t.region
                                                                          : t.credentials) = x;
        }
      } else {
        Error(c.res, 400, "invalid_field",
              "replica must be a URL string, an object {url, endpoint, region, credentials} or "
              "null");
        return false;
      }
      tw::Status st = ValidateTarget(t, "replica");
      if (!st.ok()) {
        Error(c.res, 400, "invalid_field", st.message());
        return false;
      }
      set->replica = t;
      return true;
    }
  }
  return false;
}

void PatchTenant(Ctx& c, const std::string& tenant) {
  simdjson::dom::parser parser;
  simdjson::dom::object obj;
  if (!ParseObject(c.req.body, &parser, &obj, c.res)) return;
  // Validate everything first: a request is applied whole or not at all.
  Settings set;
  std::vector<int> clear;
  for (auto kv : obj) {
    const std::string key(kv.key);
    int f = -1;
    for (int i = 0; i < kFieldCount; ++i) {
      if (key == kFieldNames[i]) f = i;
    }
    if (f >= 0) {
      if (!PatchField(c, f, kv.value, &set, &clear)) return;
    } else if (kReadOnly.count(key)) {
      Error(c.res, 400, "read_only", "\"" + key + "\" is read-only");
      return;
    } else {
      Error(c.res, 400, "unknown_field", "unknown setting \"" + key + "\"");
      return;
    }
  }
  // Opening a new replica target can fail (credentials not set, bad URL):
  // then nothing changes.
  tw::Status st = c.rep->PatchTenant(tenant, set, clear, c.req.remote_addr);
  if (!st.ok()) {
    Error(c.res, 400, "invalid_field", st.ToString() + " (nothing was changed)");
    return;
  }
  auto m = Tenants(c.rep);
  Json(c.res, 200, TenantJson(c.rep, tenant, m[tenant]));
}

// Routes one request. Sets 404/405 for unknown paths and methods.
void Dispatch(Ctx& c) {
  const auto& s = c.segs;
  const std::string& m = c.req.method;
  const bool get = m == "GET" || m == "HEAD";
  auto allow = [&](const char* methods) {
    c.res.set_header("Allow", methods);
    if (m == "OPTIONS") {
      c.res.status = 204;
      return;
    }
    Error(c.res, 405, "method_not_allowed",
          m + " is not allowed on this path (allowed: " + methods + ")");
  };
  if (s.size() == 1 && s[0] == "metrics") {
    if (!get) return allow("GET, HEAD");
    MetricsOptions mo;
    mo.db_label_limit = c.opts->metrics_db_label_limit;
    c.res.status = 200;
    c.res.set_content(RenderMetrics(c.rep, mo), "text/plain; version=0.0.4; charset=utf-8");
    return;
  }
  if (s.size() < 2 || s[0] != "api") {
    return Error(c.res, 404, "not_found", "no such endpoint");
  }
  if (s.size() == 2 && s[1] == "health") {
    if (!get) return allow("GET, HEAD");
    return Health(c);
  }
  if (s[1] == "databases") {
    if (s.size() == 2) {
      if (get) return ListDatabases(c);
      if (m == "POST") return RegisterDatabase(c);
      return allow("GET, HEAD, POST");
    }
    if (s.size() == 4 || (s.size() == 5 && (s[4] == "snapshot" || s[4] == "claim"))) {
      if (s.size() == 4 && !get && m != "DELETE") return allow("GET, HEAD, DELETE");
      if (s.size() == 5 && m != "POST") return allow("POST");
      if (!Names(c, s[2], &s[3])) return;
      if (s.size() == 5 && s[4] == "claim") return Claim(c, s[2], s[3]);
      if (s.size() == 5) return Snapshot(c, s[2], s[3]);
      return OneDatabase(c, s[2], s[3], m == "DELETE");
    }
  }
  if (s[1] == "tenants") {
    if (s.size() == 2) {
      if (!get) return allow("GET, HEAD");
      return ListTenants(c);
    }
    if (s.size() == 3) {
      if (!get && m != "PATCH") return allow("GET, HEAD, PATCH");
      if (!Names(c, s[2], nullptr)) return;
      if (m == "PATCH") return PatchTenant(c, s[2]);
      return OneTenant(c, s[2]);
    }
  }
  Error(c.res, 404, "not_found", "no such endpoint");
}

}  // namespace

ApiServer::ApiServer(Replicator* r, ApiOptions o) : impl_(std::make_unique<Impl>()) {
  impl_->rep = r;
  impl_->opts = std::move(o);
}

ApiServer::~ApiServer() { Stop(); }

int ApiServer::port() const { return impl_->port; }

tw::Status ApiServer::Start(const std::string& addr) {
  size_t colon = addr.rfind(':');
  if (colon == std::string::npos) return tw::Status::InvalidArgument("--api wants HOST:PORT");
  std::string host = addr.substr(0, colon);
  int port = atoi(addr.c_str() + colon + 1);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  if (!impl_->opts.token_file.empty()) {
    const std::string& f = impl_->opts.token_file;
    std::ifstream in(f, std::ios::binary);
    if (!in) return tw::Status::InvalidArgument("--api-token-file " + f + ": cannot read it");
    std::stringstream ss;
    ss << in.rdbuf();
    std::string tok = ss.str();
    while (!tok.empty() && isspace(static_cast<unsigned char>(tok.back()))) tok.pop_back();
    while (!tok.empty() && isspace(static_cast<unsigned char>(tok.front()))) tok.erase(0, 1);
    if (tok.empty()) return tw::Status::InvalidArgument("--api-token-file " + f + " is empty");
    for (unsigned char ch : tok) {
      if (ch < 0x21 || ch > 0x7e) {
        return tw::Status::InvalidArgument("--api-token-file " + f +
                                           ": the token must be printable ASCII without spaces");
      }
    }
    struct stat st;
    if (stat(f.c_str(), &st) == 0 && (st.st_mode & 0077)) {
      Log(Level::kWarn, "API token file is readable by group or others; chmod 600 it",
          {{"file", f}});
    }
    impl_->token = tok;
  }
  Impl* im = impl_.get();
  auto& srv = impl_->srv;
  srv.set_payload_max_length(kMaxBody);
  // Headers and body go out in separate writes: without TCP_NODELAY a
  // keep-alive client waits for Nagle + its delayed ACK (~40 ms a request).
  srv.set_tcp_nodelay(true);
  // SO_REUSEADDR only: httplib's default also sets SO_REUSEPORT, which lets a
  // second daemon bind the same port silently and split the requests.
  srv.set_socket_options([](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, reinterpret_cast<const void*>(&yes), sizeof yes);
  });

  auto handler = [im](const httplib::Request& req, httplib::Response& res) {
    if (!Authorized(req, im->token)) {
      res.set_header("WWW-Authenticate", "Bearer realm=\"tenantwald\"");
      Error(res, 401, "unauthorized", "missing or wrong bearer token (Authorization: Bearer ...)");
      Log(Level::kWarn, "API request refused: no valid token",
          {{"method", req.method}, {"remote", req.remote_addr}});
      return;
    }
    Ctx c{im->rep, &im->opts, req, res, {}};
    if (!SplitPath(req.target, &c.segs)) {
      Error(res, 400, "invalid_path", "malformed percent-encoding in the request path");
      return;
    }
    Dispatch(c);
  };
  const char* any = R"([\s\S]*)";
  srv.Get(any, handler);
  srv.Post(any, handler);
  srv.Put(any, handler);
  srv.Patch(any, handler);
  srv.Delete(any, handler);
  srv.Options(any, handler);

  srv.set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (!res.body.empty()) return;
    switch (res.status) {
      case 400:
        Error(res, 400, "bad_request",
              "malformed HTTP request (a POST, PUT or PATCH needs a Content-Length header, "
              "e.g. curl -d '')");
        break;
      case 404: Error(res, 404, "not_found", "no such endpoint"); break;
      case 413:
        Error(res, 413, "payload_too_large", "request bodies are limited to 1 MiB");
        break;
      case 414: Error(res, 414, "uri_too_long", "request target too long"); break;
      default: Error(res, res.status, "error", "request failed"); break;
    }
  });

  if (port == 0) {
    impl_->port = srv.bind_to_any_port(host.c_str());
    if (impl_->port <= 0) return tw::Status::IOError("cannot bind the API on " + addr);
  } else {
    if (!srv.bind_to_port(host.c_str(), port)) {
      return tw::Status::IOError("cannot bind the API on " + addr);
    }
    impl_->port = port;
  }
  impl_->th = std::thread([this] { impl_->srv.listen_after_bind(); });
  Log(Level::kInfo, "API listening",
      {{"addr", host + ":" + std::to_string(impl_->port)},
       {"auth", impl_->token.empty() ? "none" : "bearer token"}});
  return tw::Status::OK();
}

void ApiServer::Stop() {
  if (impl_->th.joinable()) {
    impl_->srv.stop();
    impl_->th.join();
  }
}

}  // namespace twd
