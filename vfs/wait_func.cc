// tenantwal.so: the tenantwal_wait(timeout_ms) SQL function.
//
//   SELECT tenantwal_wait(5000);
//
// Returns (the replicated txid, an integer) once every transaction that the
// calling connection has committed on its "main" database is durable in the
// replica, or fails with an error once `timeout_ms` (default 10000) passes.
// This gives applications synchronous replication where they need it, in the
// manner of Cloudflare's "output gate": commit, then wait before answering.
//
// The wait asks tenantwald to flush now (Slot::flush_txid) instead of at the
// next sync interval, then polls the slot's replicated txid (1 ms steps). A
// connection that committed nothing returns at once. Errors: the database is
// not opened through the tenantwal VFS or is not replicated; timeout (the
// message says whether tenantwald is running and its last error).
#include <time.h>

#include <cstring>
#include <string>

#include "shim.h"
#include "walring/ring.h"

namespace twvfs {

namespace {

void Wait(sqlite3_context* ctx, int argc, sqlite3_value** argv) {
  int64_t timeout_ms = 10000;
  if (argc >= 1 && sqlite3_value_type(argv[0]) != SQLITE_NULL) {
    if (sqlite3_value_numeric_type(argv[0]) != SQLITE_INTEGER) {
      sqlite3_result_error(ctx, "tenantwal_wait: timeout_ms must be an integer", -1);
      return;
    }
    timeout_ms = sqlite3_value_int64(argv[0]);
    if (timeout_ms < 0) timeout_ms = 0;
  }
  sqlite3* db = sqlite3_context_db_handle(ctx);
  sqlite3_file* f = nullptr;
  if (sqlite3_file_control(db, "main", SQLITE_FCNTL_FILE_POINTER, &f) != SQLITE_OK || !f ||
      !f->pMethods) {
    sqlite3_result_error(ctx, "tenantwal_wait: no main database file", -1);
    return;
  }
  sqlite3_vfs* vfs = nullptr;
  sqlite3_file_control(db, "main", SQLITE_FCNTL_VFS_POINTER, &vfs);
  if (!vfs || std::strcmp(vfs->zName, "tenantwal") != 0) {
    sqlite3_result_error(ctx,
                         "tenantwal_wait: the main database is not opened through the "
                         "tenantwal VFS (open it with ?vfs=tenantwal)", -1);
    return;
  }
  TwFile* tf = reinterpret_cast<TwFile*>(f);
  const uint64_t target = tf->last_txid;
  WaitView v;
  std::string why;
  if (!CaptureWaitView(tf->cap, target, &v, &why)) {
    std::string m = "tenantwal_wait: database not replicated: " + why;
    sqlite3_result_error(ctx, m.c_str(), -1);
    return;
  }
  const int64_t deadline = tw::ring::NowMicros() + timeout_ms * 1000;
  while (v.replicated_txid < target) {
    if (tw::ring::NowMicros() >= deadline) {
      std::string m = "tenantwal_wait: timed out after " + std::to_string(timeout_ms) +
                      " ms: txid " + std::to_string(target) + " not durable (replicated txid " +
                      std::to_string(v.replicated_txid) + ")";
      if (!v.consumer_alive) m += "; tenantwald is not running";
      if (!v.last_error.empty()) m += "; last error: " + v.last_error;
      sqlite3_result_error(ctx, m.c_str(), -1);
      return;
    }
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, nullptr);
    if (!CaptureWaitView(tf->cap, target, &v, &why)) {  // e.g. fenced meanwhile
      std::string m = "tenantwal_wait: database not replicated: " + why;
      sqlite3_result_error(ctx, m.c_str(), -1);
      return;
    }
  }
  sqlite3_result_int64(ctx, sqlite3_int64(v.replicated_txid));
}

}  // namespace

int RegisterWaitFunction(sqlite3* db) {
  int rc = sqlite3_create_function_v2(db, "tenantwal_wait", 1, SQLITE_UTF8, nullptr, Wait,
                                      nullptr, nullptr, nullptr);
  if (rc == SQLITE_OK) {
    rc = sqlite3_create_function_v2(db, "tenantwal_wait", 0, SQLITE_UTF8, nullptr, Wait,
                                    nullptr, nullptr, nullptr);
  }
  return rc;
}

}  // namespace twvfs
