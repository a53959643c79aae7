#!/usr/bin/python3
"""A WAL of 1 GiB: `PRAGMA wal_autocheckpoint=0` and a writer that keeps
rewriting the same ~4 MB of pages until the -wal file holds more than
TENANTWAL_BIG_WAL_MB (default 1024) MiB, with one connection open throughout
so that SQLite never checkpoints. Then:
  1. tenantwald catches up and a restore equals live (sqldiff empty,
     integrity_check ok), while the WAL still holds every frame;
  2. PRAGMA wal_checkpoint(TRUNCATE) of that WAL, more writes (the WAL
     restarts with new salts): caught up again, restore equals live.

The pages are mostly zeros with a few random bytes per row, so the segments
compress well and the test measures the capture path (WAL read-back,
checksum chain over 260,000+ frames, a wal-index spanning dozens of hash
blocks), not the S3 server's bandwidth. Writers wait for ring space
(TENANTWAL_RING_WAIT_MS) rather than drop records, so continuity is kept;
the test reports how many snapshots the daemon took."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import twtest as tw  # noqa: E402

T, DB = "bulk", "bigwal"
TARGET = int(os.environ.get("TENANTWAL_BIG_WAL_MB", "1024")) * 1024 * 1024
ROWS = 4000          # ~1 KB each: about 1,000 4 KiB pages rewritten per transaction


def wal_size(path):
    try:
        return os.path.getsize(path + "-wal")
    except OSError:
        return 0


def test():
    tw.require_s3()
    tw.require_built(tw.EXT + ".so", tw.TENANTWALD, tw.CLI)
    os.environ["TENANTWAL_RING_WAIT_MS"] = "5000"
    d = tw.Daemon("bigwal").start()
    os.makedirs(os.path.join(d.root, T), exist_ok=True)
    path = d.db_path(T, DB)
    outdir = tw.tempdir("bigwal-restore")

    conn = tw.connect(path, isolation_level=None)
    conn.execute("PRAGMA wal_autocheckpoint=0")
    tw.check(conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0,
             "wal_autocheckpoint is 0")
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, gen INTEGER, v BLOB)")
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO t(id, gen, v) VALUES(?, 0, zeroblob(1000))",
                     [(i,) for i in range(ROWS)])
    conn.execute("COMMIT")
    # The first-sight snapshot before the load, so that the 1 GiB of frames
    # travels as segments of one generation (not folded into a later snapshot).
    e = d.wait_caught_up([(T, DB)], timeout=120, min_txid={(T, DB): 2})
    snaps0, txid0 = e[(T, DB)].get("snapshots"), e[(T, DB)]["txid"]
    gen0 = e[(T, DB)].get("generation")
    tw.check(snaps0 == 1 and gen0, f"one initial snapshot before the load "
             f"(snapshots={snaps0}, generation {gen0})")

    t0 = time.monotonic()
    txns = 0
    while wal_size(path) < TARGET:
        txns += 1
        conn.execute("UPDATE t SET gen = ?, v = randomblob(8) || zeroblob(992)", (txns,))
    write_s = time.monotonic() - t0
    size = wal_size(path)
    frames = (size - 32) // (24 + page_size)
    tw.check(size >= TARGET, f"the WAL holds {size} bytes >= {TARGET}")
    tw.check(os.path.getsize(path) < 64 * 1024 * 1024,
             f"nothing was checkpointed: db file {os.path.getsize(path)} bytes, "
             f"WAL {size} bytes ({frames} frames of {page_size}-byte pages)")
    tw.log(f"wrote {txns} transactions: WAL {size / 2**20:.0f} MiB, {frames} frames, "
           f"in {write_s:.1f}s ({size / 2**20 / write_s:.0f} MiB/s)")

    # 1. caught up with the whole 1 GiB WAL in place
    t1 = time.monotonic()
    e = d.wait_caught_up([(T, DB)], timeout=900, min_txid={(T, DB): txid0 + txns})
    tw.check(e[(T, DB)].get("generation") == gen0,
             f"1. the {txns} transactions continued generation {gen0} "
             f"(now {e[(T, DB)].get('generation')}, snapshots={e[(T, DB)].get('snapshots')})")
    segs = [o for o in tw.list_objects(d.s3_path(T, DB) + "wal/")]
    seg_bytes = sum(o[1] for o in segs)
    tw.check(seg_bytes > 4 * 1024 * 1024,
             f"1. the frames reached S3 as segments: {len(segs)} objects, {seg_bytes} bytes "
             f"(compressed from {size} bytes of WAL)")
    tw.log(f"1. caught up at txid {e[(T, DB)]['txid']} {time.monotonic() - t1:.1f}s after "
           f"the last commit ({e[(T, DB)].get('snapshots')} snapshot(s), "
           f"{e[(T, DB)].get('bytesReplicated', e[(T, DB)].get('bytes'))} bytes replicated)")
    tw.check(wal_size(path) >= TARGET, "the WAL was not checkpointed behind our back")
    tw.restore_and_compare(d, T, DB, outdir)

    # 2. TRUNCATE checkpoint of the 1 GiB WAL, then more writes on a new WAL
    busy, log_frames, ckpt = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    tw.check(busy == 0 and wal_size(path) == 0,
             f"2. wal_checkpoint(TRUNCATE): busy={busy} log={log_frames} "
             f"checkpointed={ckpt}, WAL now {wal_size(path)} bytes")
    base = e[(T, DB)]["txid"]
    for i in range(20):
        conn.execute("UPDATE t SET gen = ?, v = randomblob(8) || zeroblob(992) "
                     "WHERE id % 20 = ?", (txns + 1 + i, i))
    e = d.wait_caught_up([(T, DB)], timeout=300, min_txid={(T, DB): base + 20})
    tw.log(f"2. after the checkpoint: caught up at txid {e[(T, DB)]['txid']}")
    tw.restore_and_compare(d, T, DB, outdir)
    conn.close()


if __name__ == "__main__":
    tw.main(test)
