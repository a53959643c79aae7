#!/usr/bin/python3
"""Databases created before tenantwald starts, without the VFS (one in
rollback-journal mode, one in WAL mode), get an initial snapshot when the
daemon starts; then writes through the VFS follow; each restore equals live."""

import os
import sqlite3
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import twtest as tw  # noqa: E402

DBS = [("legacy", "journal"), ("legacy", "walmode")]


def create_plain(path, journal_mode):
    """Create PATH with the stock sqlite3 module (no extension, default VFS)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    c = sqlite3.connect(path)
    c.execute(f"PRAGMA journal_mode={journal_mode}")
    c.executescript(tw.SCHEMA)
    with c:
        c.executemany("INSERT INTO kv(writer, k, v) VALUES('plain', ?, randomblob(200))",
                      [(f"k{i}",) for i in range(2000)])
        c.execute("DELETE FROM kv WHERE id % 7 = 0")
    c.execute("CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT)")
    with c:
        c.execute("INSERT INTO meta VALUES('created', 'before tenantwald')")
    c.close()


def test():
    tw.require_s3()
    tw.require_built(tw.EXT + ".so", tw.TENANTWALD, tw.CLI)
    d = tw.Daemon("existing")
    for (t, db), mode in zip(DBS, ("DELETE", "WAL")):
        create_plain(d.db_path(t, db), mode)
        tw.log(f"created {t}/{db}.db without the VFS (journal_mode={mode}, "
               f"{os.path.getsize(d.db_path(t, db))} bytes)")
    d.start()

    # Initial snapshot, before any VFS client touched the files. Such a
    # database may be at txid 0 (no transaction through the VFS yet): wait for
    # it to be listed with replicatedTxid == txid and its snapshot in the bucket.
    entries = d.wait_caught_up(DBS, timeout=120, allow_zero=True)
    tw.check(all(entries.values()),
             "the daemon found both pre-existing databases at start: " + ", ".join(
                 f"{t}/{db} txid {e['txid']} ({e.get('status')})"
                 for (t, db), e in entries.items()))
    keys = tw.wait_for_objects(d, DBS, "snapshots", timeout=60)
    for t, db in DBS:
        snaps, _ = tw.check_layout(d, t, db, keys)
        tw.check(snaps, f"{t}/{db}: initial snapshot in the bucket ({len(snaps)} object(s))")
    outdir = tw.tempdir("existing-restore")
    for t, db in DBS:
        tw.restore_and_compare(d, t, db, outdir)
    first = {k: e["txid"] for k, e in entries.items()}

    # Then writes through the VFS (Python and the sqlite3 shell).
    for i, (t, db) in enumerate(DBS):
        n = tw.py_writer(d.db_path(t, db), 1.5, seed=77 + i, tag="vfs-py")
        tw.sqlite3_cli(d.db_path(t, db), tw.cli_script(0.5, seed=99 + i, tag="vfs-cli")
                       + "UPDATE meta SET value = 'written through the VFS';\n")
        tw.log(f"{t}/{db}: {n} Python transactions + sqlite3 shell script through the VFS")
    entries = d.wait_caught_up(DBS, timeout=120,
                               min_txid={k: v + 1 for k, v in first.items()})
    tw.check(all(entries[k]["txid"] > first[k] for k in DBS),
             "txid advanced after VFS writes: " + ", ".join(
                 f"{t}/{db} {first[(t, db)]} -> {entries[(t, db)]['txid']}" for t, db in DBS))
    for t, db in DBS:
        out = tw.restore_and_compare(d, t, db, outdir)
        c = sqlite3.connect(out)
        v = c.execute("SELECT value FROM meta WHERE key='created'").fetchone()
        c.close()
        tw.check(v and v[0] == "written through the VFS",
                 f"{t}/{db}: restored copy has the VFS-era update")
        snaps, wals = tw.check_layout(d, t, db)
        tw.check(snaps and wals, f"{t}/{db}: bucket has {len(snaps)} snapshot and "
                 f"{len(wals)} wal object(s)")
    rc = d.stop()
    tw.check(rc == 0, f"tenantwald exits 0 on SIGTERM (got {rc})")


if __name__ == "__main__":
    tw.main(test)
