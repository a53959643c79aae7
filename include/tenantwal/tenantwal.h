/*
** tenantwal: continuous replication of many SQLite databases to S3.
**
** This is the public C interface of the SQLite extension tenantwal.so.
**
** Loading the extension (".load tenantwal" in the sqlite3 CLI,
** conn.load_extension() in Python, sqlite3_load_extension() in C) registers a
** shim VFS named "tenantwal" over the process's default VFS. Databases opened
** with "?vfs=tenantwal" (or with tenantwal made the default VFS) have every
** committed WAL transaction captured and pushed to the host's shared-memory
** ring, from which tenantwald uploads it to S3.
**
** Identity: {root}/{tenant}/{db}.db (also .sqlite, .sqlite3) is tenant
** {tenant}, database {db}. root comes from TENANTWAL_ROOT or the ring header
** (published by tenantwald); URI parameters tenant= and db= override.
**
** SQL objects (present in the loading connection and, through
** sqlite3_auto_extension, in every connection opened afterwards):
**   tenantwal_status   eponymous virtual table, one row per database known
**                      on this host (see vfs/status_vtab.cc for columns).
**
** Environment:
**   TENANTWAL_ROOT          root directory of {tenant}/{db}.db files
**   TENANTWAL_RING          shared-memory ring name (default "tenantwal")
**   TENANTWAL_RING_WAIT_MS  max time a writer waits for ring space (default 0)
**   TENANTWAL_DEFAULT_VFS   "1": make tenantwal the process's default VFS
*/
#ifndef TENANTWAL_H
#define TENANTWAL_H

#ifdef __cplusplus
extern "C" {
#endif

/* The name under which the shim VFS is registered. */
#define TENANTWAL_VFS_NAME "tenantwal"

/* Version of the extension and of the ring protocol it speaks. */
#define TENANTWAL_VERSION "0.1.0"

struct sqlite3;
struct sqlite3_api_routines;

/*
** The loadable-extension entry point (found by SQLite's default entry-point
** naming from the file name tenantwal.so). Registers the VFS (once per
** process; it stays registered after `db` closes), the SQL objects on `db`,
** and an auto-extension that adds them to every later connection.
** Returns SQLITE_OK_LOAD_PERMANENTLY on success so that the library is never
** unloaded while databases use the VFS, or an SQLite error code with
** *pzErrMsg set (allocated with sqlite3_malloc).
*/
int sqlite3_tenantwal_init(struct sqlite3 *db, char **pzErrMsg,
                           const struct sqlite3_api_routines *pApi);

#ifdef __cplusplus
}
#endif

#endif /* TENANTWAL_H */
