#!/usr/bin/python3
"""3 tenants x 4 databases written concurrently by several real client
processes (sqlite3 shell with .load, Python with load_extension), with random
inserts/updates/deletes for a few seconds; then: caught up, every database
restored from S3 equals the live one (sqldiff empty, integrity_check ok), and
the bucket holds snapshots/ and wal/ objects for every database."""

import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import twtest as tw  # noqa: E402

TENANTS = ["acme", "globex", "initech"]
DBS = ["users", "orders", "events", "audit"]
SECONDS = float(os.environ.get("TENANTWAL_E2E_SECONDS", "4"))


def test():
    tw.require_s3()
    tw.require_built(tw.EXT + ".so", tw.TENANTWALD, tw.CLI)
    d = tw.Daemon("multitenant").start()
    pairs = [(t, db) for t in TENANTS for db in DBS]
    for t in TENANTS:
        os.makedirs(os.path.join(d.root, t), exist_ok=True)

    # Create every database through the VFS first (sqlite3 shell), so the
    # concurrent writers below all start from an existing WAL database.
    for t, db in pairs:
        tw.sqlite3_cli(d.db_path(t, db), tw.SCHEMA)
    tw.log(f"created {len(pairs)} databases under {d.root} with the sqlite3 shell")

    # Workload: per database one Python writer for SECONDS; plus sqlite3 shell
    # invocations (several per database, one after the other) running beside them.
    procs = []
    for i, (t, db) in enumerate(pairs):
        p = tw.spawn([tw.PYTHON, os.path.join(tw.HERE, "twtest.py"), "py-writer",
                      "--db", d.db_path(t, db), "--seconds", str(SECONDS),
                      "--seed", str(1000 + i), "--tag", f"py-{t}-{db}"],
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append((f"python {t}/{db}", p))
    cli_runs = 0
    end = time.monotonic() + SECONDS
    round_ = 0
    while time.monotonic() < end or round_ == 0:
        batch = []
        for i, (t, db) in enumerate(pairs):
            if (i + round_) % 3:  # a third of the databases per round
                continue
            label = f"sqlite3 {t}/{db} round {round_}"
            p = tw.spawn_cli(d.db_path(t, db), tw.cli_script(
                0.5, seed=round_ * 100 + i, tag=f"cli-{t}-{db}-{round_}"), d.workdir, label)
            batch.append((label, p))
        tw.wait_all(batch, 120, "sqlite3 shell")
        cli_runs += len(batch)
        round_ += 1
        time.sleep(0.2)
    outs = tw.wait_all(procs, 120, "python writer")
    py_txns = sum(int(o.split()[1]) for o in outs.values() if len(o.split()) > 1
                  and o.split()[1].isdigit())
    check_counts = {(t, db): tw.row_count(d.db_path(t, db)) for t, db in pairs}
    tw.check(cli_runs >= 4, f"{cli_runs} sqlite3 shell invocations (.load + .open) wrote "
             f"concurrently with {len(procs)} Python writer processes ({py_txns} txns)")
    tw.check(all(n > 0 for n in check_counts.values()),
             f"every database has rows ({min(check_counts.values())}..."
             f"{max(check_counts.values())} rows each)")

    # tenantwal_status from a client process.
    rows = tw.status_rows(d.db_path(*pairs[0]))
    print("\nSELECT * FROM tenantwal_status:")
    tw.print_table(rows)
    want_cols = {"tenant", "db", "path", "state", "local_txid", "replicated_txid",
                 "lag_ms", "pending_bytes", "last_error"}
    tw.check(rows and want_cols <= set(rows[0].keys()),
             f"tenantwal_status has {len(rows)} row(s) with columns {sorted(want_cols)}")
    local = {}
    for r in rows:
        if (r.get("tenant"), r.get("db")) in check_counts and r.get("local_txid"):
            local[(r["tenant"], r["db"])] = int(r["local_txid"])

    entries = d.wait_caught_up(pairs, timeout=180, min_txid=local)
    listing = d.databases()
    tw.check(listing.get("totalTenants") == len(TENANTS)
             and listing.get("totalDatabases") == len(pairs),
             f"/api/databases: totalTenants={listing.get('totalTenants')} "
             f"totalDatabases={listing.get('totalDatabases')}")
    tw.check(sorted(listing.get("activeTenants", [])) == sorted(TENANTS),
             f"/api/databases: activeTenants={sorted(listing.get('activeTenants', []))}")
    bad_paths = [(k, e.get("s3Path")) for k, e in entries.items()
                 if e.get("s3Path") != d.s3_path(*k)]
    tw.check(not bad_paths, f"s3Path of every database is {d.replica}/tenants/T/D/"
             + (f" (got {bad_paths[:2]})" if bad_paths else ""))
    tw.check(all(e.get("localPath") == d.db_path(*k) for k, e in entries.items()),
             "localPath of every database is {root}/{tenant}/{db}.db")
    tw.log("caught up: " + ", ".join(f"{t}/{db}@{e['txid']}"
                                     for (t, db), e in sorted(entries.items())))

    outdir = tw.tempdir("multitenant-restore")
    for t, db in pairs:
        tw.restore_and_compare(d, t, db, outdir)
    tw.check(True, f"all {len(pairs)} restores equal their live databases")

    keys = tw.list_objects(d.replica)
    tw.log(f"aws s3 ls --recursive {d.replica}/: {len(keys)} objects, "
           f"{sum(s for _, s in keys)} bytes")
    missing = []
    for t, db in pairs:
        snaps, wals = tw.check_layout(d, t, db, keys)
        if not snaps or not wals:
            missing.append(f"{t}/{db} (snapshots: {len(snaps)}, wal: {len(wals)})")
    tw.check(not missing, "every database has keys under tenants/T/D/snapshots/ and "
             "tenants/T/D/wal/" + (f"; missing: {missing}" if missing else ""))

    rc = d.stop()
    tw.check(rc == 0, f"tenantwald exits 0 on SIGTERM (got {rc})")


if __name__ == "__main__":
    tw.main(test)
