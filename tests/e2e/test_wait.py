#!/usr/bin/python3
"""tenantwal_wait(timeout_ms): synchronous replication on demand.

Against a real tenantwald and s3rver with a long sync interval (30 s), each
commit followed by tenantwal_wait() must return within a small bound (the
wait asks for an immediate flush), with the returned replicated txid at
least the connection's own txid, and the transaction restorable from S3 at
once. With tenantwald stopped, tenantwal_wait must fail after its timeout
with an error that says tenantwald is not running. A plain (non-VFS)
connection gets a clear error."""

import os
import sqlite3
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import twtest as tw  # noqa: E402


def local_txid(conn, tenant, db):
    return conn.execute("SELECT local_txid FROM tenantwal_status WHERE tenant=? AND db=?",
                        (tenant, db)).fetchone()[0]


def test():
    tw.require_s3()
    tw.require_built(tw.EXT + ".so", tw.TENANTWALD, tw.CLI)
    d = tw.Daemon("wait", sync_interval="30s").start()
    os.makedirs(os.path.join(d.root, "acme"), exist_ok=True)
    path = d.db_path("acme", "orders")
    conn = tw.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
    # The first wait also covers the initial snapshot.
    r = conn.execute("SELECT tenantwal_wait(30000)").fetchone()[0]
    tw.check(r >= 1, f"first tenantwal_wait returned replicated txid {r}")

    lat = []
    for i in range(40):
        conn.execute("INSERT INTO t(v) VALUES(randomblob(500))")
        mine = local_txid(conn, "acme", "orders")
        t0 = time.monotonic()
        r = conn.execute("SELECT tenantwal_wait(10000)").fetchone()[0]
        lat.append(time.monotonic() - t0)
        if r < mine:
            tw.fail(f"tenantwal_wait returned {r} < own txid {mine}")
    lat.sort()
    p50, p99 = lat[len(lat) // 2] * 1000, lat[-1] * 1000
    tw.check(p99 < 5000, f"40 commits, each durable through tenantwal_wait with a 30 s sync "
                         f"interval: p50 {p50:.1f} ms, max {p99:.1f} ms")
    # Durable means restorable right now.
    outdir = tw.tempdir("wait-restore")
    tw.restore_and_compare(d, "acme", "orders", outdir)

    # A connection that committed nothing returns at once.
    other = tw.connect(path, isolation_level=None)
    t0 = time.monotonic()
    other.execute("SELECT tenantwal_wait(5000)").fetchone()
    tw.check(time.monotonic() - t0 < 1.0, "a connection with no commits returns at once")

    # Not through the VFS: a clear error.
    plain = sqlite3.connect(os.path.join(d.workdir, "plain.db"))
    try:
        plain.execute("SELECT tenantwal_wait(10)").fetchone()
        tw.fail("tenantwal_wait on a non-VFS connection did not fail")
    except sqlite3.OperationalError as e:
        tw.check("not opened through the tenantwal VFS" in str(e), f"non-VFS connection: {e}")

    # tenantwald stopped: the wait times out with a clear message.
    tw.check(d.stop() == 0, "tenantwald stopped")
    conn.execute("INSERT INTO t(v) VALUES(1)")
    t0 = time.monotonic()
    try:
        conn.execute("SELECT tenantwal_wait(300)").fetchone()
        tw.fail("tenantwal_wait succeeded with tenantwald stopped")
    except sqlite3.OperationalError as e:
        waited = time.monotonic() - t0
        tw.check("timed out" in str(e) and "not running" in str(e) and 0.25 < waited < 5,
                 f"with tenantwald stopped: {e} (after {waited:.2f} s)")


if __name__ == "__main__":
    tw.main(test)
