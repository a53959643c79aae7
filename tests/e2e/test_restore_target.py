#!/usr/bin/python3
"""Restoring onto a path that already has a database and its -wal/-shm:
without --force the restore refuses (also when only a stale -wal or
-journal is there, since the next opener would replay it into the restored
file); with --force the stale files are removed and the result equals the
replica, whatever the old WAL held. The restored file gets the mode of the
file it replaces."""

import os
import sqlite3
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import twtest as tw  # noqa: E402


def test():
    tw.require_s3()
    tw.require_built(tw.EXT + ".so", tw.TENANTWALD, tw.CLI)
    d = tw.Daemon("restore-target", sync_interval="300ms").start()
    os.makedirs(os.path.join(d.root, "acme"), exist_ok=True)
    conn = tw.connect(d.db_path("acme", "src"), isolation_level=None)
    conn.execute("CREATE TABLE o(x)")
    conn.executemany("INSERT INTO o VALUES(?)", [(i,) for i in range(100)])
    conn.execute("SELECT tenantwal_wait(60000)").fetchone()

    work = tw.tempdir("restore-target")
    stale = os.path.join(work, "stale.db")
    # A database with a WAL that was never checkpointed (the process exits hard).
    code = ("import sqlite3,os; c=sqlite3.connect(%r); c.execute('PRAGMA journal_mode=WAL');"
            "c.execute('CREATE TABLE big(y)'); c.execute('INSERT INTO big VALUES(1)');"
            "c.commit(); os._exit(0)") % stale
    subprocess.run([tw.PYTHON, "-c", code], check=True)
    os.chmod(stale, 0o640)
    tw.check(os.path.exists(stale + "-wal"), "a stale database with a WAL exists")

    args = [tw.CLI, "restore", "--replica", d.replica, "--tenant", "acme", "--db", "src", "-o"]
    p = subprocess.run(args + [stale], capture_output=True, text=True)
    tw.check(p.returncode != 0 and "already exists" in p.stderr,
             f"without --force: refused ({p.stderr.strip()})")
    p = subprocess.run(args + [stale, "--force"], capture_output=True, text=True)
    tw.check(p.returncode == 0, f"with --force: {p.stdout.strip()}")
    tw.check(not os.path.exists(stale + "-wal") and not os.path.exists(stale + "-shm"),
             "the stale -wal and -shm are gone")
    c = sqlite3.connect(stale)
    names = [r[0] for r in c.execute("SELECT name FROM sqlite_master")]
    n = c.execute("SELECT count(*) FROM o").fetchone()[0]
    c.close()
    tw.check(names == ["o"] and n == 100, f"the restored file holds the replica ({names}, {n} rows)")
    tw.check((os.stat(stale).st_mode & 0o777) == 0o640, "it kept the replaced file's mode")

    # Only a stale -wal next to a new output name: refused without --force.
    lone = os.path.join(work, "lone.db")
    with open(lone + "-wal", "wb") as f:
        f.write(b"\0" * 64)
    p = subprocess.run(args + [lone], capture_output=True, text=True)
    tw.check(p.returncode != 0 and "-wal exists" in p.stderr,
             f"a lone stale -wal: refused ({p.stderr.strip()})")


if __name__ == "__main__":
    tw.main(test)
