#!/usr/bin/python3
"""Two hosts, one replica: the authority decides, the second host is fenced
(issue 12, situation 3).

Two tenantwald with their own roots, rings and spools (two "hosts": two host
ids) replicate to the same file:// replica, both with a database acme/users:
  1. host A replicates first: authority.json names A's host id (GET
     /api/health hostId), epoch 1, a lineage of one generation;
  2. host B's first snapshot fails its claim: B shows status "fenced" with a
     lastError naming A's host id, tenantwal_wait on B fails at once and says
     fenced, B's snapshot object is deleted (only A's generation is in the
     replica), and B uploads nothing while A keeps writing;
  3. the latest restore equals A's live database (never B's);
  4. POST B .../claim without force is accepted but B stays fenced; with
     {"force": true} B takes over: epoch 2, lineage A's generation then B's
     (parent = A's), and A fences itself at its next upload (within the
     ownership check interval, 10 s); the latest restore now equals B's live
     database.
"""

import json
import os
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import twtest as tw  # noqa: E402


def post(d, path, body=None):
    data = json.dumps(body).encode() if body is not None else b""
    req = urllib.request.Request(d.api_base + path, data=data, method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read().decode() or "{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read().decode() or "{}")


def cli(d, path, sql, check_rc=True):
    """The sqlite3 shell through the VFS, on daemon d's ring and root."""
    os.environ["TENANTWAL_RING"] = d.ring
    os.environ["TENANTWAL_ROOT"] = d.root
    return tw.sqlite3_cli(path, sql, check_rc=check_rc)


def cli_full(d, path, sql):
    import subprocess
    os.environ["TENANTWAL_RING"] = d.ring
    os.environ["TENANTWAL_ROOT"] = d.root
    p = subprocess.run([tw.SQLITE3, "-batch"], input=tw.cli_prelude(path) + sql,
                       capture_output=True, text=True, timeout=120)
    return p.returncode, p.stdout, p.stderr


def authority(replica_dir):
    with open(os.path.join(replica_dir, "tenants", "acme", "users", "authority.json")) as f:
        return json.load(f)


def generations(replica_dir):
    base = os.path.join(replica_dir, "tenants", "acme", "users", "snapshots")
    return sorted(os.listdir(base)) if os.path.isdir(base) else []




def entry(d):
    return d.db_entry("acme", "users") or {}


def writes(d, tag, n):
    sql = "CREATE TABLE IF NOT EXISTS u(id INTEGER PRIMARY KEY, who TEXT, n INT);\n"
    sql += "".join(f"INSERT INTO u(who, n) VALUES ('{tag}', {i});\n" for i in range(n))
    cli(d, d.db_path("acme", "users"), sql)


def test():
    replica_dir = tw.tempdir("fencing-replica")
    url = "file://" + replica_dir
    a = tw.Daemon("fence-a", replica=url, extra_args=[])
    b = tw.Daemon("fence-b", replica=url, extra_args=[])
    a.start()
    b.start()
    ha, hb = a.api("/api/health"), b.api("/api/health")
    tw.check(ha["hostId"] != hb["hostId"] and len(ha["hostId"]) == 32,
             f"two host ids: A {ha['hostId']}, B {hb['hostId']}")
    tw.check(ha["fencing"] is True, "file:// enforces conditional writes: fencing on")
    work = tw.tempdir("fencing-work")

    # 1. A first.
    os.makedirs(os.path.dirname(a.db_path("acme", "users")), exist_ok=True)
    writes(a, "a", 20)
    os.environ["TENANTWAL_RING"] = a.ring
    a.wait_caught_up([("acme", "users")], timeout=60)
    auth = authority(replica_dir)
    gen_a = entry(a)["generation"]
    tw.check(auth["owner"] == ha["hostId"] and auth["epoch"] == 1 and
             [g["id"] for g in auth["lineage"]] == [gen_a],
             f"authority: owner A, epoch 1, lineage [{gen_a}]: {auth['owner']} "
             f"{auth['epoch']} {[g['id'] for g in auth['lineage']]}")

    # 2. B is fenced.
    os.makedirs(os.path.dirname(b.db_path("acme", "users")), exist_ok=True)
    writes(b, "b", 5)
    e = tw.wait_until("B fenced", lambda: entry(b) if entry(b).get("status") == "fenced" else None)
    tw.check(ha["hostId"] in (e.get("lastError") or ""),
             f"B fenced, naming A's host: {e.get('lastError')}")
    rc, out, err = cli_full(b, b.db_path("acme", "users"),
                            "INSERT INTO u(who, n) VALUES ('b', 99);\nSELECT tenantwal_wait(20000);\n")
    tw.check(rc != 0 and "fenced" in err, f"tenantwal_wait on B fails and says fenced: {err.strip()}")
    tw.check(generations(replica_dir) == [gen_a],
             f"only A's generation in the replica (B's snapshot deleted): {generations(replica_dir)}")
    writes(a, "a2", 10)
    os.environ["TENANTWAL_RING"] = a.ring
    a.wait_caught_up([("acme", "users")], timeout=60)
    tw.check(generations(replica_dir) == [gen_a], "B uploaded nothing while A writes")
    out = os.path.join(work, "latest1.db")
    tw.restore(url, "acme", "users", out)
    ok, detail = tw.compare(a.db_path("acme", "users"), out)
    tw.check(ok, f"latest restore equals A's live database: {detail}")

    # 4. Claims.
    st, body = post(b, "/api/databases/acme/users/claim")
    tw.check(st == 202, f"claim without force accepted ({st})")
    tw.wait_until("B fenced again after a claim without force",
             lambda: entry(b).get("status") == "fenced" and entry(b).get("lastError"), timeout=60)
    tw.check(authority(replica_dir)["owner"] == ha["hostId"], "a claim without force changes "
                                                              "nothing while A owns it")
    st, body = post(b, "/api/databases/acme/users/claim", {"force": True})
    tw.check(st == 202 and body.get("force") is True, f"forced claim accepted ({st})")
    tw.wait_until("B active after the takeover", lambda: entry(b).get("status") == "active", timeout=60)
    auth = authority(replica_dir)
    gen_b = entry(b)["generation"]
    lin = auth["lineage"]
    tw.check(auth["owner"] == hb["hostId"] and auth["epoch"] == 2 and
             [g["id"] for g in lin] == [gen_a, gen_b] and lin[1]["parent"] == gen_a,
             f"authority after takeover: owner B, epoch 2, lineage {[g['id'] for g in lin]}, "
             f"parent {lin[1]['parent']}")
    # A notices at its next upload (the ownership check runs at most every 10 s).
    t0 = time.monotonic()
    for i in range(30):
        writes(a, f"a3-{i}", 1)
        if entry(a).get("status") == "fenced":
            break
        time.sleep(1)
    ea = tw.wait_until("A fenced", lambda: entry(a) if entry(a).get("status") == "fenced" else None,
                  timeout=30)
    tw.check(hb["hostId"] in (ea.get("lastError") or ""),
             f"A fenced {time.monotonic() - t0:.1f}s after the takeover, naming B: "
             f"{ea.get('lastError')}")
    writes(b, "b2", 3)
    os.environ["TENANTWAL_RING"] = b.ring
    b.wait_caught_up([("acme", "users")], timeout=60)
    out = os.path.join(work, "latest2.db")
    tw.restore(url, "acme", "users", out)
    ok, detail = tw.compare(b.db_path("acme", "users"), out)
    tw.check(ok, f"latest restore now equals B's live database: {detail}")
    tw.check(a.alive() and b.alive(), "both daemons still running")


if __name__ == "__main__":
    tw.main(test)
