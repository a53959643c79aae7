/*
** main() for tenantwal's speedtest1 build (tools/build-speedtest1).
**
** SQLite's test/speedtest1.c is compiled with -Dmain=speedtest1_main and
** linked against the system libsqlite3. Before handing over to it, this
** wrapper loads the tenantwal extension so that `--vfs tenantwal` works:
** a throwaway ":memory:" connection, sqlite3_enable_load_extension(),
** sqlite3_load_extension(), close. The extension registers its VFS
** process-wide, so it outlives that connection.
**
** Which extension (first match wins):
**   --tenantwal-ext PATH   as the first argument (removed before speedtest1 sees argv)
**   $TENANTWAL_EXT         ("" or "none" = do not load: stock speedtest1)
**   <dir of this binary>/vfs/tenantwal.so, if it exists (the meson build tree;
**                          if it fails to load, a warning and stock speedtest1)
** With none of them the program behaves exactly like stock speedtest1. An
** extension named by argument or environment that fails to load is an error.
**
** Note: loading the extension initializes SQLite, so speedtest1's --heap and
** --pcache options (sqlite3_config before initialize) fail while it is loaded.
*/
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <limits.h>

int speedtest1_main(int argc, char **argv);

static int load_extension(const char *zPath){
  sqlite3 *db = 0;
  char *zErr = 0;
  int rc = sqlite3_open(":memory:", &db);
  if( rc==SQLITE_OK ) rc = sqlite3_enable_load_extension(db, 1);
  if( rc==SQLITE_OK ) rc = sqlite3_load_extension(db, zPath, 0, &zErr);
  if( rc!=SQLITE_OK ){
    fprintf(stderr, "speedtest1: cannot load extension %s: %s\n", zPath,
            zErr ? zErr : (db ? sqlite3_errmsg(db) : sqlite3_errstr(rc)));
  }
  sqlite3_free(zErr);
  sqlite3_close(db);
  return rc;
}

/* <dir of /proc/self/exe>/vfs/tenantwal.so if that file exists, else NULL. */
static char *default_extension(void){
  static char zBuf[PATH_MAX + 32];
  ssize_t n = readlink("/proc/self/exe", zBuf, PATH_MAX);
  char *zSlash;
  if( n<=0 ) return 0;
  zBuf[n] = 0;
  zSlash = strrchr(zBuf, '/');
  if( zSlash==0 ) return 0;
  strcpy(zSlash, "/vfs/tenantwal.so");
  return access(zBuf, R_OK)==0 ? zBuf : 0;
}

int main(int argc, char **argv){
  const char *zExt = 0;
  int bAuto = 0;                 /* extension found next to the binary */
  if( argc>=3 && strcmp(argv[1], "--tenantwal-ext")==0 ){
    zExt = argv[2];
    argv[2] = argv[0];
    argv += 2;
    argc -= 2;
  }else if( getenv("TENANTWAL_EXT") ){
    zExt = getenv("TENANTWAL_EXT");
  }else{
    zExt = default_extension();
    bAuto = 1;
  }
  if( zExt && zExt[0] && strcmp(zExt, "none")!=0 ){
    if( load_extension(zExt)==SQLITE_OK ){
      fprintf(stderr, "-- tenantwal extension loaded: %s\n", zExt);
    }else if( bAuto ){
      fprintf(stderr, "-- continuing without the tenantwal extension\n");
    }else{
      return 1;
    }
  }
  return speedtest1_main(argc, argv);
}
