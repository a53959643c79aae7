#!/usr/bin/python3
"""Point-in-time restore end to end: a live workload through the VFS with a
running tenantwald; after each commit the test records (local txid from
tenantwal_status, wall time, content hash). Then, from the S3 replica:
  * `tenantwal ls --json` shows a restore window ending at the last txid;
  * restores at recorded txids (--txid) and at instants between commits
    (--timestamp) equal the recorded content hashes; an instant before the
    earliest restorable point fails naming it; --dry-run prints a plan;
  * `tenantwal verify` passes, also `--against` the live database;
  * after one byte of a segment object is flipped (aws s3api put-object),
    restore and verify fail naming the object, and `restore --partial`
    gives the last good txid with its recorded content."""

import datetime
import hashlib
import json
import os
import random
import sqlite3
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import twtest as tw  # noqa: E402

TENANT, DB = "pitr", "ledger"
COMMITS = int(os.environ.get("TENANTWAL_PITR_COMMITS", "150"))


def content_hash(conn):
    """sha256 of the schema and every row of kv, in id order."""
    h = hashlib.sha256()
    for row in conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_schema "
                            "ORDER BY type, name"):
        h.update(repr(row).encode())
    for row in conn.execute("SELECT * FROM kv ORDER BY id"):
        h.update(repr(row).encode())
    return h.hexdigest()


def file_hash(path):
    c = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return content_hash(c)
    finally:
        c.close()


def rfc3339(t):
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ")


def cli(*args, check=True, timeout=300):
    p = subprocess.run([tw.CLI, *args], capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        tw.fail(f"tenantwal {' '.join(args)} exited {p.returncode}:\n{p.stdout}\n{p.stderr}")
    return p


def restore(d, out, *extra, check=True):
    return cli("restore", "--replica", d.replica, "--tenant", TENANT, "--db", DB, "-o", out,
               "--force", "--json", *extra, check=check)


def s3api(*args, **kw):
    env = dict(os.environ, AWS_PAGER="")
    return subprocess.run(tw.aws_args() + ["s3api", *args], env=env, timeout=120, **kw)


def test():
    tw.require_s3()
    tw.require_built(tw.EXT + ".so", tw.TENANTWALD, tw.CLI)
    d = tw.Daemon("pitr", sync_interval="300ms").start()
    path = d.db_path(TENANT, DB)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    seed = int(os.environ.get("TENANTWAL_PITR_SEED", random.randrange(1 << 30)))
    tw.log(f"seed {seed} (replay: TENANTWAL_PITR_SEED={seed})")
    rng = random.Random(seed)

    # The workload, recording (txid, wall time before/after, content hash).
    conn = tw.connect(path, isolation_level=None)
    conn.executescript(tw.SCHEMA)
    records = []  # dicts: txid, before, after, hash

    def local_txid():
        r = conn.execute("SELECT local_txid FROM tenantwal_status WHERE tenant=? AND db=?",
                         (TENANT, DB)).fetchone()
        if r is None:
            tw.fail("tenantwal_status has no row for the database")
        return r[0]

    for i in range(COMMITS):
        sql = tw.random_txn_sql(rng, "pitr", i)
        if i % 40 == 39:  # now and then a bigger transaction
            sql = ("BEGIN IMMEDIATE;\nWITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 "
                   "FROM c WHERE i < 300) INSERT INTO kv(writer, k, v) SELECT 'bulk', 'b' || i, "
                   "randomblob(1500) FROM c;\nCOMMIT;\n")
        before = time.time()
        conn.executescript(sql)
        after = time.time()
        records.append({"txid": local_txid(), "before": before, "after": after,
                        "hash": content_hash(conn)})
        time.sleep(0.01 + rng.random() * 0.03)
    last = records[-1]["txid"]
    txids = [r["txid"] for r in records]
    tw.check(txids == sorted(set(txids)),
             f"{COMMITS} commits got increasing local txids {txids[0]}..{last}")
    d.wait_caught_up([(TENANT, DB)], timeout=120, min_txid={(TENANT, DB): last})
    outdir = tw.tempdir("pitr-restore")

    # The restore window.
    ls = json.loads(cli("ls", "--replica", d.replica, "--tenant", TENANT, "--db", DB,
                        "--json").stdout)
    dbs = ls["databases"]
    tw.check(len(dbs) == 1 and dbs[0]["latest"]["txid"] == last,
             f"ls --json: latest restorable txid is {last} "
             f"(window {dbs[0].get('earliest')} .. {dbs[0].get('latest')})")
    earliest = dbs[0]["earliest"]
    table = cli("ls", "--replica", d.replica, "--tenant", TENANT).stdout
    tw.check("EARLIEST TXID" in table and str(last) in table,
             "ls prints a window table:\n" + table.rstrip())
    usable = [r for r in records if r["txid"] >= earliest["txid"]]
    tw.check(len(usable) >= COMMITS // 2,
             f"{len(usable)} recorded commits at or after the earliest restorable txid "
             f"{earliest['txid']}")

    # Restores at recorded txids.
    picks = rng.sample(usable, min(8, len(usable))) + [records[-1]]
    for r in picks:
        out = os.path.join(outdir, f"tx{r['txid']}.db")
        res = json.loads(restore(d, out, "--txid", str(r["txid"])).stdout)
        if res["txid"] != r["txid"] or file_hash(out) != r["hash"]:
            tw.fail(f"restore --txid {r['txid']}: got txid {res['txid']}, content "
                    f"{'equal' if file_hash(out) == r['hash'] else 'DIFFERENT'}")
    tw.check(True, f"restores at {len(picks)} recorded txids equal the recorded contents")

    # Restores at instants between commits: after commit i returned and
    # before commit i+1 began, the state is commit i's.
    between = [(usable[k], usable[k + 1]) for k in range(len(usable) - 1)]
    for r, nxt in rng.sample(between, min(8, len(between))) + [(records[-1], None)]:
        t = (r["after"] + nxt["before"]) / 2 if nxt else r["after"] + 5
        out = os.path.join(outdir, f"t{r['txid']}.db")
        res = json.loads(restore(d, out, "--timestamp", rfc3339(t)).stdout)
        if res["txid"] != r["txid"] or file_hash(out) != r["hash"]:
            tw.fail(f"restore --timestamp {rfc3339(t)}: got txid {res['txid']}, want "
                    f"{r['txid']}; content {'equal' if file_hash(out) == r['hash'] else 'DIFFERENT'}")
    tw.check(True, "restores at 9 instants between commits equal the recorded contents")
    p = restore(d, os.path.join(outdir, "early.db"), "--timestamp",
                rfc3339(earliest["us"] / 1e6 - 60), check=False)
    tw.check(p.returncode != 0 and "earliest" in p.stderr and earliest["time"][:19] in p.stderr,
             f"an instant before the earliest point fails naming it: {p.stderr.strip()}")

    # Dry run.
    mid = usable[len(usable) // 2]
    plan = json.loads(cli("restore", "--replica", d.replica, "--tenant", TENANT, "--db", DB,
                          "--txid", str(mid["txid"]), "--dry-run", "--json").stdout)
    tw.check(plan["dryRun"] and plan["txidMax"] == mid["txid"] and plan["objects"] >= 1
             and plan["bytes"] > 0 and plan["snapshot"]["key"],
             f"--dry-run plan for txid {mid['txid']}: {plan['objects']} objects, "
             f"{plan['bytes']} bytes")

    # verify, and verify --against the live database.
    p = cli("verify", "--replica", d.replica, "--tenant", TENANT, "--db", DB)
    tw.check("OK" in p.stdout, "verify passes: " + p.stdout.strip().splitlines()[-1])
    p = cli("verify", "--replica", d.replica, "--tenant", TENANT, "--db", DB,
            "--against", path, "--wait", "20")
    tw.check(f"equal at txid {last}" in p.stdout,
             "verify --against LIVE: " + p.stdout.strip().splitlines()[-1])
    conn.close()
    rc = d.stop()
    tw.check(rc == 0, f"tenantwald exits 0 on SIGTERM (got {rc})")

    # Flip one byte of a segment in the middle of the newest generation.
    objs = json.loads(cli("ls", "--replica", d.replica, "--tenant", TENANT, "--db", DB,
                          "--objects", "--json").stdout)
    gen = objs["databases"][0]["generations"][-1]
    segs = [s for s in gen["segments"] if s["minTxid"] > gen["earliest"]["txid"] + 1]
    tw.check(len(segs) >= 2, f"newest generation {gen['id']} has {len(gen['segments'])} "
             "segments to damage one of")
    seg = segs[len(segs) // 2]
    key = seg["key"]
    full_key = f"{d.prefix}/{key}" if d.prefix else key
    blob = os.path.join(outdir, "seg.bin")
    s3api("get-object", "--bucket", d.bucket, "--key", full_key, blob, check=True,
          capture_output=True)
    data = bytearray(open(blob, "rb").read())
    data[len(data) // 2] ^= 0x01
    open(blob, "wb").write(bytes(data))
    s3api("put-object", "--bucket", d.bucket, "--key", full_key, "--body", blob, check=True,
          capture_output=True)
    good = seg["minTxid"] - 1
    tw.log(f"flipped byte {len(data) // 2} of {key} (txids {seg['minTxid']}-{seg['maxTxid']})")

    p = restore(d, os.path.join(outdir, "bad.db"), check=False)
    tw.check(p.returncode != 0 and key in p.stderr and f"last good txid {good}" in p.stderr,
             f"restore fails naming the object and last good txid {good}: {p.stderr.strip()}")
    out = os.path.join(outdir, "partial.db")
    p = restore(d, out, "--partial", check=False)
    res = json.loads(p.stdout) if p.returncode == 0 else {}
    want = {r["txid"]: r["hash"] for r in records}.get(good)
    tw.check(p.returncode == 0 and res["txid"] == good and res["partial"]
             and res["failedObject"] == key and (want is None or file_hash(out) == want),
             f"restore --partial gives txid {good} (content "
             f"{'as recorded' if want else 'not recorded'}): {p.stderr.strip()}")
    p = cli("verify", "--replica", d.replica, "--tenant", TENANT, "--db", DB, check=False)
    tw.check(p.returncode == 1 and f"PROBLEM {key}" in p.stdout,
             "verify fails naming the object: " + " | ".join(
                 ln for ln in p.stdout.splitlines() if ln.startswith("PROBLEM")))
    p = cli("verify", "--replica", d.replica, "--tenant", TENANT, "--db", DB,
            "--against", path, check=False)
    tw.check(p.returncode == 1 and key in p.stdout + p.stderr,
             "verify --against fails naming the object")


if __name__ == "__main__":
    tw.main(test)
