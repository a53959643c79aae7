#!/usr/bin/python3
"""A snapshot holds exactly its txid (issue 19, part 1).

tenantwald takes a snapshot by pinning a read transaction at txid S with its
own SQLite connection and copying pages while writers continue. Closing any
other descriptor of the database's files in tenantwald would drop that
connection's POSIX locks (they belong to the process and the inode), and then
a checkpoint (WAL mode) or a commit (rollback-journal mode) of the
application lands in the file *during* the copy: the snapshot labelled S
then holds later transactions.

For each journal mode, on a ~120 MB database:
  1. ten small commits through the VFS, a snapshot requested through the API;
  2. as soon as the copy has started (its staging file appears in the spool),
     tenantwald is frozen with SIGSTOP, and /proc/locks must show it holding
     its lock: a read lock on the -shm's read-mark bytes (WAL), a shared lock
     on the database file (rollback);
  3. the application updates the rows at 90-95% of the table (txid S+1):
       WAL: then wal_checkpoint(PASSIVE) must NOT backfill the whole WAL (the
            snapshot's read mark forbids it);
       rollback: the commit must wait (it needs EXCLUSIVE) while the copy runs;
     the lock must still be held afterwards; then SIGCONT;
  4. `tenantwal restore --generation G --txid S` must not contain the update,
     `--txid S+1` must (so the check can tell), and the latest restore must
     equal the live database.
Replica: file:// (no S3 needed).
"""

import glob
import os
import signal
import sqlite3
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import twtest as tw  # noqa: E402

import json  # noqa: E402
import subprocess  # noqa: E402
import urllib.request  # noqa: E402

ROWS = 120_000          # ~1 KB each: ~120 MB, a copy long enough to catch
TAG = "updated-after-snapshot"
PROBLEMS = []   # checks that fail but let the test go on to show the data they cost


def expect(cond, msg):
    """Like tw.check, but a failure is recorded and the test goes on; test()
    fails at the end with every recorded failure."""
    if cond:
        tw.log(f"ok: {msg}")
    else:
        tw.log(f"FAILED: {msg}")
        PROBLEMS.append(msg)


def post(d, path):
    req = urllib.request.Request(d.api_base + path, data=b"", method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, json.loads(r.read().decode() or "{}")


def proc_locks(pid, path):
    """POSIX locks held by `pid` on the file at `path`: [(type, start, end)]."""
    ino = os.stat(path).st_ino
    out = []
    with open("/proc/locks") as f:
        for line in f:
            parts = line.split()
            # "1: POSIX  ADVISORY  READ 1234 fe:01:5678 124 124"
            if len(parts) < 8 or parts[1] != "POSIX":
                continue
            if parts[4] != str(pid) or int(parts[5].rsplit(":", 1)[1]) != ino:
                continue
            end = parts[7]
            out.append((parts[3], int(parts[6]), -1 if end == "EOF" else int(end)))
    return out


def create_db(path, wal):
    """A plain database (no VFS): ROWS rows, WAL or rollback mode, closed."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    c = sqlite3.connect(path)
    c.execute(f"PRAGMA journal_mode={'WAL' if wal else 'DELETE'}")
    c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT, pad BLOB)")
    c.execute("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
              "INSERT INTO t SELECT i, 'v0', randomblob(1000) FROM n", (ROWS,))
    c.commit()
    c.close()


def tagged(path):
    c = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return c.execute("SELECT count(*) FROM t WHERE v = ?", (TAG,)).fetchone()[0]
    finally:
        c.close()


def snapshot_keys(replica_dir, tenant, db):
    """{generation: [txid, ...]} of the snapshot objects on disk."""
    out = {}
    base = os.path.join(replica_dir, "tenants", tenant, db, "snapshots")
    for p in glob.glob(os.path.join(base, "*", "*.twsnap")):
        gen = os.path.basename(os.path.dirname(p))
        out.setdefault(gen, []).append(int(os.path.basename(p).split(".")[0], 16))
    return out


def restore_at(d, tenant, db, out, generation, txid):
    args = [tw.CLI, "restore", "--replica", d.replica, "--tenant", tenant, "--db", db,
            "-o", out, "--force", "--generation", generation, "--txid", str(txid)]
    p = subprocess.run(args, capture_output=True, text=True, timeout=600)
    expect(p.returncode == 0, f"restore --generation {generation} --txid {txid}: exit "
                              f"{p.returncode} {p.stdout.strip()} {p.stderr.strip()}")
    return p.returncode == 0


def one_mode(d, replica_dir, wal, work):
    tenant, name = "acme", ("walbig" if wal else "rbbig")
    mode = "WAL" if wal else "rollback"
    path = d.db_path(tenant, name)
    create_db(path, wal)
    app = tw.connect(path, wal=wal, isolation_level=None)
    app.execute("PRAGMA busy_timeout=60000")
    if not wal:
        got = app.execute("PRAGMA journal_mode").fetchone()[0]
        tw.check(got.lower() == "delete", f"{mode}: the database is in journal_mode={got}")
    for i in range(1, 11):
        app.execute("UPDATE t SET v = ? WHERE id = ?", (f"commit-{i}", i))
    d.wait_caught_up([(tenant, name)], timeout=180)
    before = d.db_entry(tenant, name)
    gens_before = snapshot_keys(replica_dir, tenant, name)

    status, body = post(d, f"/api/databases/{tenant}/{name}/snapshot")
    tw.check(status == 202, f"{mode}: snapshot requested ({status} {body.get('message', '')})")
    # The copy has started once its staging file exists (it is created after
    # the read transaction is pinned and before the first page is copied).
    deadline = time.monotonic() + 60
    staging = []
    while not staging and time.monotonic() < deadline:
        staging = glob.glob(os.path.join(d.spool, "*.twsnap"))
        if not staging:
            time.sleep(0.001)
    if not staging:
        tw.fail(f"{mode}: no snapshot staging file appeared in {d.spool} within 60 s")
    os.kill(d.proc.pid, signal.SIGSTOP)
    try:
        if wal:
            lockfile = path + "-shm"
            # WAL_READ_LOCK(i) is byte 123 + i of the -shm (src/wal.c); a
            # reader of frames beyond the backfill holds a mark i >= 1.
            want = lambda locks: [l for l in locks if l[0] == "READ" and 124 <= l[1] <= 127]  # noqa: E731
        else:
            lockfile = path
            # SHARED: a read lock in the 510-byte range after PENDING_BYTE+2
            # (0x40000002, src/os_unix.c).
            want = lambda locks: [l for l in locks if l[0] == "READ" and l[1] >= 0x40000002]  # noqa: E731
        locks = proc_locks(d.proc.pid, lockfile)
        expect(want(locks), f"{mode}: while the copy runs tenantwald holds its read lock on "
                              f"{os.path.basename(lockfile)}: {locks}")
        # The application's next transaction, rows at 90-95% of the table.
        lo, hi = int(ROWS * 0.90), int(ROWS * 0.95)
        if wal:
            app.execute("UPDATE t SET v = ? WHERE id BETWEEN ? AND ?", (TAG, lo, hi))
            busy, log_frames, ckpt = app.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            expect(0 <= ckpt < log_frames,
                     f"{mode}: a PASSIVE checkpoint during the copy stops at the snapshot's "
                     f"read mark: ({busy}, {log_frames}, {ckpt})")
        else:
            done = threading.Event()
            err = []

            def writer():
                try:
                    c = tw.connect(path, wal=False, isolation_level=None)
                    c.execute("PRAGMA busy_timeout=120000")
                    c.execute("UPDATE t SET v = ? WHERE id BETWEEN ? AND ?", (TAG, lo, hi))
                    c.close()
                except Exception as e:  # noqa: BLE001
                    err.append(e)
                done.set()

            th = threading.Thread(target=writer)
            th.start()
            time.sleep(2.0)
            expect(not done.is_set(),
                     f"{mode}: a commit during the copy waits for the snapshot's read lock")
        locks = proc_locks(d.proc.pid, lockfile)
        expect(want(locks), f"{mode}: the read lock is still held after the application's "
                              f"commit: {locks}")
    finally:
        os.kill(d.proc.pid, signal.SIGCONT)
    if not wal:
        th.join(120)
        tw.check(done.is_set() and not err, f"{mode}: the waiting commit went through after the "
                                            f"copy ({err or 'no error'})")
    # The snapshot must be uploaded before the next commit: a commit that
    # restarted a fully backfilled WAL would make a copy retry, legitimately
    # at a later txid, and hide what the first copy held.
    deadline = time.monotonic() + 300
    while d.db_entry(tenant, name)["snapshots"] <= before["snapshots"]:
        if time.monotonic() > deadline:
            tw.fail(f"{mode}: the snapshot was not uploaded within 300 s:\n{d.log_tail()}")
        time.sleep(0.2)
    app.execute("UPDATE t SET v = 'last' WHERE id = 1")  # one more commit after it
    entries = d.wait_caught_up([(tenant, name)], timeout=300)
    after = entries[(tenant, name)]
    tw.check(after["snapshots"] > before["snapshots"] and
             after["generation"] != before["generation"],
             f"{mode}: the snapshot was taken: generation {before['generation']} -> "
             f"{after['generation']}")
    gen = after["generation"]
    txids = snapshot_keys(replica_dir, tenant, name).get(gen)
    tw.check(txids and gen not in gens_before, f"{mode}: the new generation's snapshot: {txids}")
    s = min(txids)
    out = os.path.join(work, f"{name}-at-{s}.db")
    n = tagged(out) if restore_at(d, tenant, name, out, gen, s) else -1
    expect(n == 0, f"{mode}: the snapshot at txid {s} holds none of the rows updated after "
                     f"it (found {n})")
    out2 = os.path.join(work, f"{name}-at-{s + 1}.db")
    n2 = tagged(out2) if restore_at(d, tenant, name, out2, gen, s + 1) else -1
    expect(n2 == hi - lo + 1, f"{mode}: txid {s + 1} holds the {hi - lo + 1} updated rows "
                                f"({n2})")
    app.close()
    tw.restore_and_compare(d, tenant, name, work)


def test():
    replica_dir = tw.tempdir("snaptxid-replica")
    d = tw.Daemon("snaptxid", replica="file://" + replica_dir)
    d.start()
    work = tw.tempdir("snaptxid-work")
    one_mode(d, replica_dir, False, work)
    one_mode(d, replica_dir, True, work)
    tw.check(d.alive(), "tenantwald still running")
    if PROBLEMS:
        tw.fail(f"{len(PROBLEMS)} check(s) failed:\n  " + "\n  ".join(PROBLEMS))


if __name__ == "__main__":
    tw.main(test)
