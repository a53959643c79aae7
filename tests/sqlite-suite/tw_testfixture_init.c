/*
** tenantwal in SQLite's testfixture: compiled *instead of* sqlite3.c in the
** "shimmed" build of tests/sqlite-suite/run (make testfixture
** TESTFIXTURE_SRC1=<this file>, OPTS=-DSQLITE_EXTRA_INIT=tw_testfixture_init).
**
** It #includes the amalgamation so that the init function sits in the same
** translation unit as loadext.c's static api-routines table (sqlite3Apis):
** tenantwal's sources use sqlite3ext.h and need sqlite3_api set, exactly as
** when tenantwal.so is loaded into a process with a static SQLite.
**
** SQLITE_EXTRA_INIT runs at the end of every successful sqlite3_initialize()
** (so also after each sqlite3_shutdown/sqlite3_initialize cycle the tests do,
** which makes "unix" the default again). It registers the tenantwal shim over
** the then-default VFS ("unix") and makes it the default, before any
** connection can be opened.
*/
#include "sqlite3.c"

#ifndef SQLITE_OMIT_LOAD_EXTENSION
int sqlite3_tenantwal_init(sqlite3*, char**, const sqlite3_api_routines*);

int tw_testfixture_init(const char *zUnused){
  char *zErr = 0;
  sqlite3_vfs *pVfs;
  int rc;
  (void)zUnused;
  /* db==NULL: registers the VFS (once per process) and the auto-extension
  ** that adds tenantwal_status to every connection; no SQL objects now. */
  rc = sqlite3_tenantwal_init(0, &zErr, &sqlite3Apis);
  if( rc!=SQLITE_OK && rc!=SQLITE_OK_LOAD_PERMANENTLY ){
    fprintf(stderr, "tw_testfixture_init: %s\n", zErr ? zErr : "failed");
    sqlite3_free(zErr);
    return rc;
  }
  sqlite3_free(zErr);
  pVfs = sqlite3_vfs_find("tenantwal");
  if( pVfs==0 ) return SQLITE_ERROR;
  return sqlite3_vfs_register(pVfs, 1);   /* make it the default */
}
#else
# error "tenantwal needs the api-routines table: build without SQLITE_OMIT_LOAD_EXTENSION"
#endif
