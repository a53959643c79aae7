#!/usr/bin/python3
"""SQLite's speedtest1 (built by tools/build-speedtest1, extension loaded)
runs through the tenantwal VFS in WAL mode on a database under the root;
then the restore from S3 equals the live database."""

import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import twtest as tw  # noqa: E402

SIZE = os.environ.get("TENANTWAL_SPEEDTEST1_SIZE", "10")


def test():
    tw.require_s3()
    if not os.path.exists(tw.SPEEDTEST1):
        tw.log(f"{tw.SPEEDTEST1} missing: running tools/build-speedtest1")
        subprocess.run([os.path.join(tw.SOURCE, "tools", "build-speedtest1"), tw.BUILD],
                       check=False, stdout=subprocess.DEVNULL)
    tw.require_built(tw.SPEEDTEST1, tw.EXT + ".so", tw.TENANTWALD, tw.CLI)
    d = tw.Daemon("speedtest1").start()
    os.makedirs(os.path.join(d.root, "bench"), exist_ok=True)
    path = d.db_path("bench", "speedtest1")
    # Create the database through the VFS and wait for its first snapshot,
    # so that speedtest1's transactions reach S3 as segments, not only as
    # part of the initial snapshot.
    conn = tw.connect(path)
    conn.execute("CREATE TABLE IF NOT EXISTS warmup(x)")
    conn.execute("INSERT INTO warmup VALUES(1)")
    conn.commit()
    conn.close()
    d.wait_caught_up([("bench", "speedtest1")], timeout=60)

    args = [tw.SPEEDTEST1, "--size", SIZE, "--journal", "wal", "--vfs", "tenantwal", path]
    tw.log("running " + " ".join(args))
    t0 = time.monotonic()
    env = dict(os.environ, TENANTWAL_EXT=tw.EXT)  # explicit: a load failure is an error
    p = subprocess.run(args, capture_output=True, text=True, env=env, timeout=900)
    secs = time.monotonic() - t0
    if p.returncode != 0:
        tw.fail(f"speedtest1 exited {p.returncode}:\n{p.stderr.strip()[-2000:]}\n"
                f"{p.stdout.strip()[-2000:]}")
    tw.check("tenantwal extension loaded" in p.stderr,
             "speedtest1 loaded the tenantwal extension")
    total = re.search(r"TOTAL\.*\s+([0-9.]+)s", p.stdout)
    tests = len(re.findall(r"^\s*\d+ - ", p.stdout, re.M))
    tw.check(total is not None and tests > 10,
             f"speedtest1 --size {SIZE} --journal wal --vfs tenantwal: {tests} steps, "
             f"TOTAL {total.group(1) if total else '?'}s (wall {secs:.1f}s)")
    conn = tw.connect(path)
    mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    tables = conn.execute("SELECT count(*) FROM sqlite_schema WHERE type='table'").fetchone()[0]
    conn.close()
    tw.check(mode == "wal" and tables > 0, f"{path}: journal_mode={mode}, {tables} tables")

    entries = d.wait_caught_up([("bench", "speedtest1")], timeout=300)
    tw.log(f"caught up at txid {entries[('bench', 'speedtest1')]['txid']}")
    outdir = tw.tempdir("speedtest1-restore")
    tw.restore_and_compare(d, "bench", "speedtest1", outdir)
    snaps, wals = tw.check_layout(d, "bench", "speedtest1")
    tw.check(snaps and wals, f"bucket: {len(snaps)} snapshot and {len(wals)} wal object(s)")
    rc = d.stop()
    tw.check(rc == 0, f"tenantwald exits 0 on SIGTERM (got {rc})")


if __name__ == "__main__":
    tw.main(test)
