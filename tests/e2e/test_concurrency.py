#!/usr/bin/python3
"""How applications share and open databases, through the VFS:

- many threads in one process and many processes on one database, with
  busy_timeout, while other connections hold long read transactions: every
  commit is replicated (restore equals live);
- read-only opens (mode=ro), a read-only directory, immutable=1 and
  nolock=1 behave exactly as with the stock unix VFS (same results, same
  errors);
- a database deleted through the VFS (xDelete, called with ctypes as a VFS
  user would) stops being replicated and is marked deleted; a new database
  created later at the same path starts a new generation."""

import ctypes
import os
import sqlite3
import stat
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import twtest as tw  # noqa: E402

PROC = r"""
import sqlite3, sys, random
c = sqlite3.connect(':memory:'); c.enable_load_extension(True); c.load_extension(sys.argv[3])
db = sqlite3.connect(f'file:{sys.argv[1]}?vfs=tenantwal', uri=True, timeout=60, isolation_level=None)
rng = random.Random(int(sys.argv[2]))
for i in range(60):
    db.execute('BEGIN IMMEDIATE')
    db.execute('INSERT INTO t(who, v) VALUES(?, randomblob(?))', (f'p{sys.argv[2]}', rng.randint(10, 2000)))
    db.execute('COMMIT')
"""


def outcome(uri, sql, vfs):
    """(result rows or error class name) of SQL on URI through VFS."""
    try:
        c = sqlite3.connect(uri + ("&" if "?" in uri else "?") + f"vfs={vfs}", uri=True)
        try:
            return ("ok", c.execute(sql).fetchall())
        finally:
            c.close()
    except sqlite3.Error as e:
        return ("error", type(e).__name__, str(e).split(":")[0])


def test():
    tw.require_s3()
    tw.require_built(tw.EXT + ".so", tw.TENANTWALD, tw.CLI)
    d = tw.Daemon("concurrency", sync_interval="300ms").start()
    outdir = tw.tempdir("concurrency-out")
    os.makedirs(os.path.join(d.root, "acme"), exist_ok=True)
    path = d.db_path("acme", "shared")
    c = tw.connect(path, isolation_level=None)
    c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, who TEXT, v BLOB)")
    c.execute("PRAGMA busy_timeout=60000")

    # Long readers: two connections keep read transactions open meanwhile.
    readers = [tw.connect(path, isolation_level=None) for _ in range(2)]
    for r in readers:
        r.execute("BEGIN")
        r.execute("SELECT count(*) FROM t").fetchone()

    errors = []

    def thread_writer(k):
        try:
            db = tw.connect(path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA busy_timeout=60000")
            for i in range(60):
                db.execute("BEGIN IMMEDIATE")
                db.execute("INSERT INTO t(who, v) VALUES(?, randomblob(100))", (f"t{k}",))
                db.execute("COMMIT")
            db.close()
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=thread_writer, args=(k,)) for k in range(6)]
    procs = [tw.spawn([tw.PYTHON, "-c", PROC, path, str(k), tw.EXT], stderr=subprocess.PIPE,
                      text=True) for k in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    for r in readers:  # the long readers end while writers are busy
        r.execute("COMMIT")
        r.close()
    for t in threads:
        t.join()
    for p in procs:
        _, err = p.communicate(timeout=300)
        if p.returncode != 0:
            errors.append(err)
    tw.check(not errors, f"6 threads and 4 processes wrote 600 transactions under busy_timeout "
                         f"beside 2 long readers ({len(errors)} errors)")
    n = c.execute("SELECT count(*) FROM t").fetchone()[0]
    tw.check(n == 600, f"{n} rows")
    c.execute("SELECT tenantwal_wait(60000)").fetchone()
    d.wait_caught_up([("acme", "shared")])
    tw.restore_and_compare(d, "acme", "shared", outdir)

    # Read-only, read-only directory, immutable, nolock: same as stock.
    ro_dir = os.path.join(d.root, "ro")
    os.makedirs(ro_dir, exist_ok=True)
    plain = sqlite3.connect(os.path.join(ro_dir, "r.db"))
    plain.execute("CREATE TABLE x(a)")
    plain.execute("INSERT INTO x VALUES(1),(2)")
    plain.commit()
    plain.close()
    os.chmod(ro_dir, stat.S_IRUSR | stat.S_IXUSR)
    try:
        base = "file:" + os.path.join(ro_dir, "r.db")
        cases = [(base + "?mode=ro", "SELECT a FROM x"),
                 (base + "?mode=ro", "INSERT INTO x VALUES(3)"),
                 (base + "?immutable=1", "SELECT count(*) FROM x"),
                 (base + "?nolock=1", "SELECT count(*) FROM x"),
                 (base + "?mode=ro&nolock=1", "SELECT sum(a) FROM x"),
                 ("file:" + os.path.join(ro_dir, "absent.db") + "?mode=ro", "SELECT 1")]
        tw.load_extension()
        for uri, sql in cases:
            stock, ours = outcome(uri, sql, "unix"), outcome(uri, sql, "tenantwal")
            if stock != ours:
                tw.fail(f"{uri} {sql}: unix gives {stock}, tenantwal gives {ours}")
        tw.check(True, f"{len(cases)} read-only/immutable/nolock opens behave exactly as with "
                       f"the unix VFS (including the errors)")
    finally:
        os.chmod(ro_dir, stat.S_IRWXU)

    # xDelete through the VFS: replication stops, the database shows deleted;
    # a new database at the same path is a new generation.
    gone = d.db_path("acme", "gone")
    g = tw.connect(gone, isolation_level=None)
    g.execute("CREATE TABLE t(x)")
    g.execute("INSERT INTO t VALUES(1)")
    g.execute("SELECT tenantwal_wait(60000)").fetchone()
    g.close()
    gen_before = d.db_entry("acme", "gone")["generation"]
    lib = ctypes.CDLL("libsqlite3.so.0")
    lib.sqlite3_vfs_find.restype = ctypes.c_void_p
    vfs = lib.sqlite3_vfs_find(b"tenantwal")
    tw.check(vfs, "the tenantwal VFS is registered in this process")
    # struct sqlite3_vfs: int iVersion, szOsFile, mxPathname; ptr pNext, zName,
    # pAppData, xOpen, xDelete ...  (sqlite3.h)
    XDELETE = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int)
    off = 3 * 4 + 4 + 3 * 8 + 8  # 3 ints, padding, pNext/zName/pAppData, xOpen
    xdelete = XDELETE(ctypes.c_void_p.from_address(vfs + off).value)
    tw.check(xdelete(vfs, gone.encode(), 0) == 0 and not os.path.exists(gone),
             "xDelete of the database through the VFS")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and d.db_entry("acme", "gone")["status"] != "deleted":
        time.sleep(0.2)
    tw.check(d.db_entry("acme", "gone")["status"] == "deleted", "the database shows deleted")
    g = tw.connect(gone, isolation_level=None)
    g.execute("CREATE TABLE n(y)")
    g.execute("INSERT INTO n VALUES(2)")
    g.execute("SELECT tenantwal_wait(60000)").fetchone()
    gen_after = d.db_entry("acme", "gone")["generation"]
    tw.check(gen_after and gen_after != gen_before,
             f"a new database at the same path is a new generation ({gen_before} -> {gen_after})")
    tw.restore_and_compare(d, "acme", "gone", outdir)
    g.close()


if __name__ == "__main__":
    tw.main(test)
