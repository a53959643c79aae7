// tenantwal.so: the loadable-extension entry point.
//
// sqlite3_tenantwal_init registers the shim VFS "tenantwal" over the
// process's default VFS (once per process), adds the extension's SQL objects
// to the loading connection, and registers an auto-extension so that every
// connection opened later in the process has them too. It returns
// SQLITE_OK_LOAD_PERMANENTLY: the library must never be unloaded while
// databases are open through the VFS.
//
// Built on sqlite3ext.h, so it works in processes whose SQLite is linked
// statically (Python, Node's better-sqlite3) as well as with libsqlite3.so.
#include <sqlite3ext.h>
SQLITE_EXTENSION_INIT1

#include <cstdlib>
#include <cstring>
#include <mutex>

#include "tenantwal/tenantwal.h"
#include "shim.h"

namespace twvfs {
int RegisterShim(bool make_default);

// The extension's SQL objects, on one connection.
int RegisterSqlObjects(sqlite3* db) {
  int rc = RegisterStatusTable(db);
  if (rc == SQLITE_OK) rc = RegisterWaitFunction(db);
  return rc;
}
}  // namespace twvfs

namespace {

std::once_flag g_auto_once;

int AutoInit(sqlite3* db, const char** err, const sqlite3_api_routines* api) {
  (void)err;
  (void)api;
  return twvfs::RegisterSqlObjects(db);
}

}  // namespace

extern "C" __attribute__((visibility("default"))) int sqlite3_tenantwal_init(
    sqlite3* db, char** pzErrMsg, const sqlite3_api_routines* pApi) {
  SQLITE_EXTENSION_INIT2(pApi);
  const char* def = getenv("TENANTWAL_DEFAULT_VFS");
  int rc = twvfs::RegisterShim(def && std::strcmp(def, "1") == 0);
  if (rc != SQLITE_OK) {
    if (pzErrMsg) *pzErrMsg = sqlite3_mprintf("tenantwal: cannot register the VFS (%d)", rc);
    return rc;
  }
  if (db) {
    rc = twvfs::RegisterSqlObjects(db);
    if (rc != SQLITE_OK) {
      if (pzErrMsg) *pzErrMsg = sqlite3_mprintf("tenantwal: cannot create SQL objects (%d)", rc);
      return rc;
    }
  }
  std::call_once(g_auto_once, [] {
    sqlite3_auto_extension(reinterpret_cast<void (*)(void)>(AutoInit));
  });
  return SQLITE_OK_LOAD_PERMANENTLY;
}
