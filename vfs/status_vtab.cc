// tenantwal.so: the tenantwal_status eponymous virtual table.
//
//   SELECT * FROM tenantwal_status;
//
// One row per database known on this host (every slot of the ring's
// registry, whichever process registered it), read straight from shared
// memory, so it shows tenantwald's view (replicated txid, lag, last error)
// without a round trip. Columns:
//   tenant, db        names (NULL for a database that is not replicated)
//   path              absolute path of the database file
//   state             registered | snapshotting | active | error | deleted |
//                     not-replicated | no-replicator (tenantwald not running)
//   local_txid        last transaction captured on this host
//   replicated_txid   last transaction durable in the replica
//   lag_ms            ms since the oldest transaction not yet durable (0 when
//                     caught up)
//   pending_bytes     bytes captured and not yet durable
//   last_error        the most recent error, or NULL
//   generation        current generation id in the replica
//   last_snapshot     time of the last snapshot (RFC 3339), or NULL
//   resync            1 while a new snapshot is needed
//   throttled         1 while the database's uploads wait for its tenant's
//                     rate limit (PATCH /api/tenants/{t}), else 0
// Read-only: INSERT/UPDATE/DELETE fail.
#include <errno.h>
#include <signal.h>

#include <cstring>
#include <ctime>
#include <string>

#include "shim.h"
#include "walring/ring.h"

namespace twvfs {

tw::ring::Ring* CaptureRing();

namespace {

enum Col {
  kTenant, kDb, kPath, kState, kLocalTxid, kReplTxid, kLag, kPending, kError, kGeneration,
  kLastSnapshot, kResync, kThrottled
};

struct Cursor {
  sqlite3_vtab_cursor base;
  tw::ring::Ring* ring;
  uint32_t i;
};

bool ConsumerAlive(tw::ring::Ring* r) {
  int32_t pid = r->header()->consumer_pid.load();
  return pid > 0 && (kill(pid, 0) == 0 || errno == EPERM);
}

uint32_t NextUsed(tw::ring::Ring* r, uint32_t i) {
  if (!r) return 0;
  while (i < r->slot_count() && r->slot(i)->used.load(std::memory_order_acquire) == 0) ++i;
  return i;
}

int Connect(sqlite3* db, void*, int, const char* const*, sqlite3_vtab** out, char**) {
  int rc = sqlite3_declare_vtab(db,
      "CREATE TABLE x(tenant TEXT, db TEXT, path TEXT, state TEXT, local_txid INTEGER,"
      " replicated_txid INTEGER, lag_ms INTEGER, pending_bytes INTEGER, last_error TEXT,"
      " generation TEXT, last_snapshot TEXT, resync INTEGER, throttled INTEGER)");
  if (rc != SQLITE_OK) return rc;
  auto* v = static_cast<sqlite3_vtab*>(sqlite3_malloc(sizeof(sqlite3_vtab)));
  if (!v) return SQLITE_NOMEM;
  std::memset(v, 0, sizeof *v);
  *out = v;
  return SQLITE_OK;
}

int Disconnect(sqlite3_vtab* v) {
  sqlite3_free(v);
  return SQLITE_OK;
}

int BestIndex(sqlite3_vtab*, sqlite3_index_info* info) {
  info->estimatedCost = 1000;
  return SQLITE_OK;
}

int Open(sqlite3_vtab*, sqlite3_vtab_cursor** out) {
  auto* c = static_cast<Cursor*>(sqlite3_malloc(sizeof(Cursor)));
  if (!c) return SQLITE_NOMEM;
  std::memset(c, 0, sizeof *c);
  *out = &c->base;
  return SQLITE_OK;
}

int Close(sqlite3_vtab_cursor* c) {
  sqlite3_free(c);
  return SQLITE_OK;
}

int Filter(sqlite3_vtab_cursor* cur, int, const char*, int, sqlite3_value**) {
  auto* c = reinterpret_cast<Cursor*>(cur);
  c->ring = CaptureRing();
  c->i = NextUsed(c->ring, 0);
  return SQLITE_OK;
}

int Next(sqlite3_vtab_cursor* cur) {
  auto* c = reinterpret_cast<Cursor*>(cur);
  c->i = NextUsed(c->ring, c->i + 1);
  return SQLITE_OK;
}

int Eof(sqlite3_vtab_cursor* cur) {
  auto* c = reinterpret_cast<Cursor*>(cur);
  return !c->ring || c->i >= c->ring->slot_count();
}

void ResultText(sqlite3_context* ctx, const char* s, size_t max) {
  size_t n = strnlen(s, max);
  if (n == 0) sqlite3_result_null(ctx);
  else sqlite3_result_text(ctx, s, int(n), SQLITE_TRANSIENT);
}

int Column(sqlite3_vtab_cursor* cur, sqlite3_context* ctx, int col) {
  auto* c = reinterpret_cast<Cursor*>(cur);
  const tw::ring::Slot* s = c->ring->slot(c->i);
  const bool named = s->tenant[0] != '.';
  const uint64_t local = s->txid;
  const uint64_t repl = s->replicated_txid.load(std::memory_order_acquire);
  switch (col) {
    case kTenant:
      if (named) ResultText(ctx, s->tenant, sizeof s->tenant); else sqlite3_result_null(ctx);
      break;
    case kDb:
      if (named) ResultText(ctx, s->db, sizeof s->db); else sqlite3_result_null(ctx);
      break;
    case kPath: ResultText(ctx, s->path, sizeof s->path); break;
    case kState: {
      auto st = tw::ring::DbState(s->state.load());
      const char* name = tw::ring::DbStateName(st);
      // Say so when nobody consumes the ring: nothing is being replicated.
      if (st != tw::ring::DbState::kDeleted && st != tw::ring::DbState::kNotReplicated &&
          !ConsumerAlive(c->ring)) {
        name = "no-replicator";
      }
      sqlite3_result_text(ctx, name, -1, SQLITE_STATIC);
      break;
    }
    case kLocalTxid: sqlite3_result_int64(ctx, sqlite3_int64(local)); break;
    case kReplTxid: sqlite3_result_int64(ctx, sqlite3_int64(repl)); break;
    case kLag: {
      int64_t since = s->pending_since_us.load(std::memory_order_acquire);
      int64_t lag = (repl < local && since > 0) ? (tw::ring::NowMicros() - since) / 1000 : 0;
      sqlite3_result_int64(ctx, lag < 0 ? 0 : lag);
      break;
    }
    case kPending: sqlite3_result_int64(ctx, sqlite3_int64(s->pending_bytes.load())); break;
    case kError: {
      std::string e = tw::ring::Ring::ReadError(s);
      if (e.empty()) sqlite3_result_null(ctx);
      else sqlite3_result_text(ctx, e.c_str(), int(e.size()), SQLITE_TRANSIENT);
      break;
    }
    case kGeneration: ResultText(ctx, s->generation, sizeof s->generation); break;
    case kLastSnapshot: {
      int64_t us = s->last_snapshot_us.load();
      if (us <= 0) { sqlite3_result_null(ctx); break; }
      time_t t = time_t(us / 1000000);
      struct tm tm;
      gmtime_r(&t, &tm);
      char buf[32];
      strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
      sqlite3_result_text(ctx, buf, -1, SQLITE_TRANSIENT);
      break;
    }
    case kResync: sqlite3_result_int(ctx, int(s->resync.load())); break;
    case kThrottled:
      sqlite3_result_int(ctx, s->throttled_until_us.load(std::memory_order_relaxed) >
                                  tw::ring::NowMicros());
      break;
  }
  return SQLITE_OK;
}

int Rowid(sqlite3_vtab_cursor* cur, sqlite3_int64* out) {
  *out = reinterpret_cast<Cursor*>(cur)->i;
  return SQLITE_OK;
}

sqlite3_module g_module;

}  // namespace

int RegisterStatusTable(sqlite3* db) {
  std::memset(&g_module, 0, sizeof g_module);
  g_module.iVersion = 0;
  g_module.xCreate = nullptr;  // eponymous-only
  g_module.xConnect = Connect;
  g_module.xBestIndex = BestIndex;
  g_module.xDisconnect = Disconnect;
  g_module.xDestroy = Disconnect;
  g_module.xOpen = Open;
  g_module.xClose = Close;
  g_module.xFilter = Filter;
  g_module.xNext = Next;
  g_module.xEof = Eof;
  g_module.xColumn = Column;
  g_module.xRowid = Rowid;
  return sqlite3_create_module(db, "tenantwal_status", &g_module, nullptr);
}

}  // namespace twvfs
