#!/usr/bin/python3
"""Writers that bypass the VFS: a plain sqlite3 CLI, without the extension,
writing to and checkpointing the same database between writes through the
VFS. tenantwald must detect each discontinuity (salts, frame counts, the
wal-index header, the file change counter), report it, and heal with a new
snapshot, so that every restore equals the live database:

1. WAL mode: plain writes in the current WAL, then VFS writes (the capture
   finds the foreign commits after its cursor and publishes them).
2. WAL mode: plain writes + wal_checkpoint(TRUNCATE), then VFS writes (the
   WAL restarted outside the shim: a new snapshot).
3. WAL mode and rollback mode: a plain write that is the last one (no VFS
   write follows): the periodic bypass check finds it within seconds."""

import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import twtest as tw  # noqa: E402


def plain(path, sql):
    p = subprocess.run([tw.SQLITE3, path], input=".timeout 10000\n" + sql, text=True,
                       capture_output=True, timeout=60)
    if p.returncode != 0 or p.stderr.strip():
        tw.fail(f"plain sqlite3 on {path}: {p.stderr.strip()}")


def vfs_writes(conn, n, tag):
    for i in range(n):
        conn.execute("INSERT INTO t(v) VALUES(?)", (f"{tag}-{i}",))
    conn.execute("SELECT tenantwal_wait(60000)").fetchone()


def restore_until_equal(d, tenant, db, outdir, timeout=60):
    """Restores until the replica equals live (the heal may take a snapshot)."""
    out = os.path.join(outdir, f"{tenant}__{db}.db")
    deadline = time.monotonic() + timeout
    while True:
        tw.restore(d.replica, tenant, db, out)
        ok, detail = tw.compare(d.db_path(tenant, db), out)
        if ok:
            return detail
        if time.monotonic() > deadline:
            tw.fail(f"{tenant}/{db}: restore still differs from live after {timeout}s: {detail}")
        time.sleep(1)


def test():
    tw.require_s3()
    tw.require_built(tw.EXT + ".so", tw.TENANTWALD, tw.CLI)
    d = tw.Daemon("bypass", sync_interval="300ms",
                  extra_args=["--bypass-check-interval", "1s"]).start()
    outdir = tw.tempdir("bypass-restore")
    os.makedirs(os.path.join(d.root, "acme"), exist_ok=True)

    # 1 + 2: WAL mode, with a VFS connection open throughout.
    path = d.db_path("acme", "wal")
    conn = tw.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    vfs_writes(conn, 5, "vfs1")
    plain(path, "INSERT INTO t(v) VALUES('plain-1'); INSERT INTO t(v) VALUES('plain-2');")
    vfs_writes(conn, 5, "vfs2")
    d.wait_caught_up([("acme", "wal")])
    tw.check(True, "acme/wal: " + restore_until_equal(d, "acme", "wal", outdir, timeout=5) +
             " (plain commits in the current WAL were captured)")
    plain(path, "INSERT INTO t(v) VALUES('plain-3'); PRAGMA wal_checkpoint(TRUNCATE);"
                "INSERT INTO t(v) VALUES('plain-4');")
    vfs_writes(conn, 5, "vfs3")
    tw.check(True, "acme/wal: " + restore_until_equal(d, "acme", "wal", outdir) +
             " (WAL restarted outside tenantwal: healed)")
    log = open(d.log_path).read()
    tw.check("outside tenantwal" in log and "continuity in doubt" in log,
             "tenantwald logged the discontinuity")

    # 3: a plain write is the last write, in WAL and in rollback mode.
    plain(path, "INSERT INTO t(v) VALUES('plain-last');")
    tw.check(True, "acme/wal: " + restore_until_equal(d, "acme", "wal", outdir) +
             " (a final plain write found by the periodic check)")
    conn.close()

    rb = d.db_path("acme", "rollback")
    c2 = tw.connect(rb, wal=False, isolation_level=None)
    c2.execute("PRAGMA journal_mode=DELETE")
    c2.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    vfs_writes(c2, 5, "vfs")
    plain(rb, "INSERT INTO t(v) VALUES('plain-rollback');")
    tw.check(True, "acme/rollback: " + restore_until_equal(d, "acme", "rollback", outdir) +
             " (rollback-journal change outside tenantwal found)")
    vfs_writes(c2, 3, "vfs-after")
    tw.check(True, "acme/rollback: " + restore_until_equal(d, "acme", "rollback", outdir) +
             " (VFS writes continue after the heal)")
    c2.close()


if __name__ == "__main__":
    tw.main(test)
