#!/usr/bin/python3
"""No database wedges after a transaction overflows the ring (issue 19, part 2).

A 2 MiB ring, six fresh databases, one ~24 MB transaction each with
cache_size=10 (its pages spill into the WAL before the commit), committed
from six threads at once, then no more writes. The ring overflows: the VFS
publishes the first chunks of a transaction, then neither the rest nor even
the empty resync record fits, and only the slot's resync flag is set.

Asserted:
  * every database is caught up (replicatedTxid == txid) within the bypass
    interval (5 s here) plus its snapshot, with no further write;
  * while a database waits for that snapshot, GET /api/databases shows why
    (snapshotReason) — checked on every poll that sees one lagging;
  * tenantwald's RSS (VmRSS) ends within 64 MiB of its value before the
    writes: the half-received transactions are released (each is up to
    24 MB; six kept would be ~150 MB);
  * every restore equals its live database.
Replica: file:// (no S3 needed).
"""

import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import twtest as tw  # noqa: E402

N_DBS = 6
TXN_MB = 24
BYPASS_S = 5




def big_txn(path, errors):
    try:
        c = tw.connect(path, isolation_level=None)
        c.execute("PRAGMA cache_size=10")
        c.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, pad BLOB)")
        c.execute("BEGIN")
        rows = TXN_MB * 1024 // 4
        c.execute("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
                  "INSERT INTO t(pad) SELECT randomblob(4000) FROM n", (rows,))
        c.execute("COMMIT")
        c.close()
    except Exception as e:  # noqa: BLE001
        errors.append(f"{path}: {e}")


def test():
    replica_dir = tw.tempdir("overflow-replica")
    d = tw.Daemon("overflow", replica="file://" + replica_dir,
                  extra_args=["--ring-size-mb", "2", "--bypass-check-interval", f"{BYPASS_S}s"])
    d.start()
    os.makedirs(os.path.join(d.root, "ovf"), exist_ok=True)
    dbs = [("ovf", f"db{i}") for i in range(N_DBS)]
    # Each database exists (first snapshot taken) before the big transactions.
    for t, name in dbs:
        c = tw.connect(d.db_path(t, name), isolation_level=None)
        c.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, pad BLOB)")
        c.execute("INSERT INTO t(pad) VALUES (x'00')")
        c.close()
    d.wait_caught_up(dbs, timeout=120)
    time.sleep(1)
    rss0 = tw.rss_kib(d.proc.pid)
    tw.log(f"before: VmRSS {rss0} KiB")
    errors = []
    threads = [threading.Thread(target=big_txn, args=(d.db_path(t, n), errors)) for t, n in dbs]
    t0 = time.monotonic()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    tw.check(not errors, f"{N_DBS} transactions of {TXN_MB} MB committed: {errors or 'no error'}")
    wrote = time.monotonic()
    h = d.api("/api/health")
    tw.log(f"ring: {h['ring']['recordsDropped']} records dropped "
           f"({h['ring']['bytesDropped']} bytes)")
    tw.check(h["ring"]["recordsDropped"] > 0, "the ring overflowed (the situation under test)")
    # No more writes. Poll: lagging databases must say why.
    deadline = wrote + BYPASS_S + 60
    reasons, missing_reason = set(), []
    while True:
        lag = []
        for t, n in dbs:
            e = d.db_entry(t, n)
            if e is None or e.get("replicatedTxid") != e.get("txid"):
                lag.append((t, n, e))
                r = (e or {}).get("snapshotReason") or (e or {}).get("lastError")
                if r:
                    reasons.add(r)
                elif e and e.get("status") != "active":
                    missing_reason.append(f"{t}/{n}: status {e.get('status')} without a reason")
        if not lag:
            break
        if time.monotonic() > deadline:
            tw.fail(f"not caught up {deadline - wrote:.0f}s after the writes (bypass interval "
                    f"{BYPASS_S}s): " + "; ".join(
                        f"{t}/{n}: txid {e and e.get('txid')} replicated "
                        f"{e and e.get('replicatedTxid')} status {e and e.get('status')} "
                        f"lagMs {e and e.get('lagMs')}" for t, n, e in lag)
                    + f"\nlog tail:\n{d.log_tail()}")
        time.sleep(0.25)
    caught = time.monotonic() - wrote
    tw.log(f"ok: all {N_DBS} databases caught up {caught:.1f}s after the last commit "
                   f"(bound: bypass interval {BYPASS_S}s + snapshot)")
    tw.check(not missing_reason, f"a lagging database shows why: {sorted(reasons)[:3]}")
    d.wait_caught_up(dbs, timeout=30)
    time.sleep(2)
    rss1 = tw.rss_kib(d.proc.pid)
    tw.check(rss1 - rss0 <= 64 * 1024,
             f"VmRSS {rss0} -> {rss1} KiB ({(rss1 - rss0) / 1024:+.0f} MiB; bound +64 MiB): the "
             f"half-received transactions were released")
    work = tw.tempdir("overflow-work")
    for t, n in dbs:
        out = os.path.join(work, f"{n}.db")
        tw.restore(d.replica, t, n, out)
        ok, detail = tw.compare(d.db_path(t, n), out)
        tw.check(ok, f"{t}/{n}: restore equals live: {detail}")
    tw.log(f"total {time.monotonic() - t0:.1f}s")


if __name__ == "__main__":
    tw.main(test)
