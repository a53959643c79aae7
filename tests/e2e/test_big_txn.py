#!/usr/bin/python3
"""Hard cases for WAL capture, each followed by restore == live:
  1. cache_size=10 and one ~50 MB transaction (pages spill into the WAL
     before the commit frame);
  2. a spilled transaction that is rolled back, then a small commit;
  3. PRAGMA wal_checkpoint(TRUNCATE) between writes;
  4. a connection in locking_mode=EXCLUSIVE (heap wal-index, no -shm) that
     writes and closes."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import twtest as tw  # noqa: E402

T, DB = "heavy", "big"
BIG_MB = int(os.environ.get("TENANTWAL_BIG_MB", "50"))
ROW = 4000


def wal_size(path):
    try:
        return os.path.getsize(path + "-wal")
    except OSError:
        return 0


def test():
    tw.require_s3()
    tw.require_built(tw.EXT + ".so", tw.TENANTWALD, tw.CLI)
    d = tw.Daemon("bigtxn").start()
    os.makedirs(os.path.join(d.root, T), exist_ok=True)
    path = d.db_path(T, DB)
    outdir = tw.tempdir("bigtxn-restore")
    last = {"txid": 0}

    def settle(what):
        e = d.wait_caught_up([(T, DB)], timeout=300, min_txid={(T, DB): last["txid"] + 1})
        txid = e[(T, DB)]["txid"]
        tw.log(f"{what}: caught up at txid {txid} (was {last['txid']})")
        last["txid"] = txid
        tw.restore_and_compare(d, T, DB, outdir)

    conn = tw.connect(path, isolation_level=None)
    conn.execute("PRAGMA cache_size=10")
    conn.execute("CREATE TABLE big(id INTEGER PRIMARY KEY, tag TEXT, payload BLOB)")
    tw.check(conn.execute("PRAGMA cache_size").fetchone()[0] == 10, "cache_size=10")

    # 1. one ~50 MB transaction, spilling
    rows = BIG_MB * 1024 * 1024 // ROW
    mid = 0
    conn.execute("BEGIN")
    for i in range(0, rows, 500):
        conn.executemany("INSERT INTO big(tag, payload) VALUES(?, randomblob(?))",
                         [("big", ROW)] * min(500, rows - i))
        if not mid and i >= rows // 2:
            mid = wal_size(path)
    conn.execute("COMMIT")
    tw.check(mid > 10 * 4096 * 10,
             f"1. the {BIG_MB} MB transaction spilled: the WAL held {mid} bytes mid-transaction")
    tw.log(f"1. committed {rows} rows x {ROW} bytes in one transaction; db "
           f"{os.path.getsize(path)} bytes, wal {wal_size(path)} bytes")
    settle("1. big transaction")

    # 2. a spilled transaction, rolled back, then a small commit
    before = conn.execute("SELECT count(*) FROM big").fetchone()[0]
    w0 = os.stat(path + "-wal").st_mtime_ns
    time.sleep(0.05)
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO big(tag, payload) VALUES(?, randomblob(?))",
                     [("rolled-back", ROW)] * 2500)
    conn.execute("UPDATE big SET tag = 'touched-then-rolled-back' WHERE id % 10 = 0")
    w1 = os.stat(path + "-wal").st_mtime_ns
    tw.check(w1 > w0, "2. a 10 MB transaction spilled into the WAL before its commit "
             "(-wal written mid-transaction)")
    conn.execute("ROLLBACK")
    tw.check(conn.execute("SELECT count(*) FROM big").fetchone()[0] == before,
             f"2. rolled it back: still {before} rows")
    conn.execute("INSERT INTO big(tag, payload) VALUES('after-rollback', randomblob(100))")
    settle("2. rollback + small commit")

    # 3. checkpoint(TRUNCATE) between writes
    for i in range(3):
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO big(tag, payload) VALUES(?, randomblob(?))",
                         [(f"ckpt-{i}", 1000)] * 200)
        conn.execute("DELETE FROM big WHERE id IN (SELECT id FROM big ORDER BY random() LIMIT 50)")
        conn.execute("COMMIT")
        busy, frames, done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        tw.log(f"3. write {i}, wal_checkpoint(TRUNCATE) -> busy={busy} log={frames} "
               f"checkpointed={done}, wal now {wal_size(path)} bytes")
    conn.execute("INSERT INTO big(tag, payload) VALUES('after-truncate', randomblob(100))")
    settle("3. writes around wal_checkpoint(TRUNCATE)")
    conn.close()

    # 4. locking_mode=EXCLUSIVE: write, then close
    ex = tw.connect(path, isolation_level=None, wal=False)
    mode = ex.execute("PRAGMA locking_mode=EXCLUSIVE").fetchone()[0]
    ex.execute("PRAGMA journal_mode=WAL")
    ex.execute("BEGIN")
    ex.executemany("INSERT INTO big(tag, payload) VALUES(?, randomblob(?))",
                   [("exclusive", 2000)] * 300)
    ex.execute("UPDATE big SET tag = 'exclusive-updated' WHERE tag = 'after-rollback'")
    ex.execute("COMMIT")
    ex.execute("INSERT INTO big(tag, payload) VALUES('exclusive-2', randomblob(10))")
    ex.close()
    tw.check(mode == "exclusive", "4. wrote through a locking_mode=EXCLUSIVE connection "
             "and closed it")
    settle("4. exclusive-mode connection")

    rc = d.stop()
    tw.check(rc == 0, f"tenantwald exits 0 on SIGTERM (got {rc})")


if __name__ == "__main__":
    tw.main(test)
