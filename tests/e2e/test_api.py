#!/usr/bin/python3
"""The control plane: tenantwald's REST API, /metrics and `tenantwal status`.

Against a real tenantwald (bearer token on) and s3rver:
  * every endpoint, every error code (400 bad JSON/names/paths/params, 401,
    404, 405 with Allow, 409, 413), hostile names ("..", "a/b", "%2e%2e",
    65 characters) in paths and bodies;
  * POST /api/databases of a database created without the VFS: snapshot in
    S3, restore equals live, and VFS writes are replicated afterwards;
  * POST .../snapshot uploads a new snapshot object (new generation);
  * DELETE stops replication (status deleted, later writes not replicated,
    replica kept, survives a VFS open), registering again resumes it;
  * PATCH syncInterval per tenant changes when commits are uploaded;
  * token auth (401 without/with a wrong token, 200 with it);
  * /metrics passes `promtool check metrics`, has the expected series, and
    the values move after writes; the db label disappears above
    --metrics-db-label-limit;
  * audit log lines (and no token in the log);
  * `tenantwal status` as a table and as JSON.
"""

import http.client
import json
import os
import re
import secrets
import shutil
import sqlite3
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import twtest as tw  # noqa: E402

TOKEN = "tw-" + secrets.token_hex(16)
PORT = None
STATS = {"requests": 0}


def call(method, path, body=None, token=True, headers=None):
    """(status, headers dict (lower-case), parsed JSON or text)."""
    conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=30)
    h = dict(headers or {})
    if token is True:
        h["Authorization"] = f"Bearer {TOKEN}"
    elif token:
        h["Authorization"] = token
    data = None
    if body is not None:
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        h.setdefault("Content-Type", "application/json")
    try:
        conn.request(method, path, body=data, headers=h)
        r = conn.getresponse()
        raw = r.read().decode(errors="replace")
        hdrs = {k.lower(): v for k, v in r.getheaders()}
        status = r.status
    finally:
        conn.close()
    STATS["requests"] += 1
    try:
        parsed = json.loads(raw) if raw else None
    except ValueError:
        parsed = raw
    return status, hdrs, parsed


def expect(method, path, status, body=None, code=None, **kw):
    st, h, b = call(method, path, body, **kw)
    what = f"{method} {path}" + (f" {str(body)[:60]}" if body is not None else "")
    if st != status:
        tw.fail(f"{what}: HTTP {st}, want {status}: {str(b)[:300]}")
    if status >= 400:
        if not (isinstance(b, dict) and isinstance(b.get("error"), dict)
                and "code" in b["error"] and "message" in b["error"]):
            tw.fail(f"{what}: error body is not {{error:{{code,message}}}}: {b!r}")
        if code and b["error"]["code"] != code:
            tw.fail(f"{what}: error code {b['error']['code']!r}, want {code!r}")
    tw.log(f"ok: {what} -> {st}" + (f" {b['error']['code']}" if status >= 400 else ""))
    return h, b


def get(path):
    return expect("GET", path, 200)[1]


def create_plain(path, rows=500):
    """A database made with the stock sqlite3 module (no VFS), rollback journal."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    c = sqlite3.connect(path)
    c.executescript(tw.SCHEMA)
    with c:
        c.executemany("INSERT INTO kv(writer, k, v) VALUES('plain', ?, randomblob(100))",
                      [(f"k{i}",) for i in range(rows)])
    c.close()


def vfs_insert(path, n, tag):
    conn = tw.connect(path, isolation_level=None)
    for i in range(n):
        conn.execute("INSERT INTO kv(writer, k, v) VALUES(?, ?, randomblob(300))",
                     (tag, f"{tag}-{i}-{time.monotonic_ns()}"))
    tenant = os.path.basename(os.path.dirname(path))
    name = os.path.splitext(os.path.basename(path))[0]
    txid = conn.execute("SELECT local_txid FROM tenantwal_status WHERE tenant=? AND db=?",
                        (tenant, name)).fetchone()
    conn.close()
    return txid[0] if txid else None


def metrics():
    h, text = expect("GET", "/metrics", 200)
    return h, text


def series(text, name, **labels):
    """Value of one sample NAME{labels} (exact label set) or None."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})? (\S+)$', line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        if got == {k: str(v) for k, v in labels.items()}:
            return float(m.group(4))
    return None


def promtool_check(text):
    p = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                       text=True, timeout=60)
    if p.returncode != 0:
        tw.fail(f"promtool check metrics failed ({p.returncode}):\n{p.stdout}{p.stderr}")
    return (p.stdout + p.stderr).strip()




def db(t, name):
    return get(f"/api/databases/{t}/{name}")


def test():
    global PORT
    tw.require_s3()
    tw.require_built(tw.EXT + ".so", tw.TENANTWALD, tw.CLI)
    if not shutil.which("promtool"):
        tw.fail("promtool is not installed (Debian package prometheus; tools/setup-deps)")
    work = tw.tempdir("api-work")
    token_file = os.path.join(work, "api-token")
    with open(token_file, "w") as f:
        f.write(TOKEN + "\n")
    os.chmod(token_file, 0o600)
    # Daemon.start() and its helpers use urllib: send the token with them.
    opener = urllib.request.build_opener()
    opener.addheaders = [("Authorization", f"Bearer {TOKEN}")]
    urllib.request.install_opener(opener)

    d = tw.Daemon("api", sync_interval="1s", extra_args=["--api-token-file", token_file])
    # Created without the VFS before start: found by the root scan.
    create_plain(d.db_path("acme", "orders"))
    d.start()
    PORT = d.port
    outdir = tw.tempdir("api-restore")

    # ---- auth --------------------------------------------------------------------
    expect("GET", "/api/health", 401, token=None, code="unauthorized")
    h, _ = expect("GET", "/api/databases", 401, token="Bearer wrong", code="unauthorized")
    tw.check("bearer" in h.get("www-authenticate", "").lower(),
             "401 carries WWW-Authenticate: Bearer")
    expect("GET", "/metrics", 401, token=None)
    expect("GET", "/api/nope", 401, token=None)  # auth before routing: nothing to probe
    expect("GET", "/api/health", 401, token=f"Bearer {TOKEN[:-1]}")       # a prefix
    expect("GET", "/api/health", 401, token=f"Bearer {TOKEN}x")           # longer
    expect("GET", "/api/health", 401, token=f"Basic {TOKEN}")
    expect("GET", "/api/health", 200, token=f"bearer {TOKEN}")            # scheme is case-free
    # Timing sanity of the comparison (SHA-256 + CRYPTO_memcmp in api.cc):
    # a wrong first byte and a wrong last byte cost the same, within noise.
    def med(tok, n=40):
        ts = []
        for _ in range(n):
            t0 = time.perf_counter()
            call("GET", "/api/health", token=f"Bearer {tok}")
            ts.append(time.perf_counter() - t0)
        ts.sort()
        return ts[n // 2]
    first = med("X" + TOKEN[1:])
    last = med(TOKEN[:-1] + "X")
    tw.check(0.5 < first / last < 2.0,
             f"wrong-first-byte vs wrong-last-byte token: median {first * 1e6:.0f} vs "
             f"{last * 1e6:.0f} us (compare is on SHA-256 digests with CRYPTO_memcmp)")

    # ---- health ------------------------------------------------------------------------
    hl = get("/api/health")
    for k in ("status", "version", "uptimeSeconds", "ring", "spool", "s3", "totalTenants",
              "totalDatabases"):
        if k not in hl:
            tw.fail(f"/api/health lacks {k}: {hl}")
    tw.check(hl["status"] in ("ok", "degraded") and hl["ring"]["capacityBytes"] > 0
             and "usedBytes" in hl["spool"] and "freeBytes" in hl["spool"]
             and "reachable" in hl["s3"],
             f"health: status {hl['status']}, version {hl['version']}, ring "
             f"{hl['ring']['usedBytes']}/{hl['ring']['capacityBytes']} B, spool "
             f"{hl['spool']['usedBytes']} B, s3 reachable {hl['s3']['reachable']}")

    # ---- the pre-existing database, then VFS writes ------------------------------------------
    d.wait_caught_up([("acme", "orders")], allow_zero=True, timeout=60)
    t1 = vfs_insert(d.db_path("acme", "orders"), 5, "vfs")
    d.wait_caught_up([("acme", "orders")], min_txid={("acme", "orders"): t1}, timeout=60)
    os.makedirs(os.path.join(d.root, "beta"), exist_ok=True)
    vfs_path = d.db_path("beta", "web")
    conn = tw.connect(vfs_path, isolation_level=None)
    conn.executescript(tw.SCHEMA)
    conn.close()
    t2 = vfs_insert(vfs_path, 3, "web")
    d.wait_caught_up([("acme", "orders"), ("beta", "web")],
                     min_txid={("beta", "web"): t2}, timeout=60)

    # ---- GET /api/databases: shape, filters, paging -----------------------------------------
    lst = get("/api/databases")
    tw.check(lst["totalTenants"] == 2 and lst["totalDatabases"] == 2
             and sorted(lst["activeTenants"]) == ["acme", "beta"],
             f"listing: {lst['totalTenants']} tenants, {lst['totalDatabases']} databases, "
             f"activeTenants {lst['activeTenants']}")
    e = d.db_entry("acme", "orders", lst)
    for k in ("tenantId", "databaseName", "localPath", "s3Path", "status", "createdAt", "txid",
              "replicatedTxid", "lagMs", "lastError", "generation", "bytesReplicated"):
        if k not in e:
            tw.fail(f"database object lacks {k}: {e}")
    tw.check(e["s3Path"] == d.s3_path("acme", "orders") and e["status"] == "active"
             and re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$", e["createdAt"])
             and e["localPath"] == d.db_path("acme", "orders"),
             f"database object: s3Path {e['s3Path']}, createdAt {e['createdAt']}")
    one = get("/api/databases?tenant=beta")
    tw.check([x["databaseName"] for x in one["databases"]] == ["web"]
             and one["totalDatabases"] == 1, "?tenant=beta lists only beta/web")
    tw.check(get("/api/databases?status=deleted")["totalDatabases"] == 0,
             "?status=deleted lists nothing yet")
    p1 = get("/api/databases?limit=1")
    p2 = get(f"/api/databases?limit=1&offset={p1['next']}")
    tw.check(p1["count"] == 1 and p1["next"] == 1 and p1["totalDatabases"] == 2
             and p2["count"] == 1 and p2["next"] is None
             and p1["databases"][0]["databaseName"] != p2["databases"][0]["databaseName"],
             "paging: limit=1 gives next=1, offset=1 gives the other and next=null")
    for q in ("limit=0", "limit=abc", "offset=-1", "status=bogus", "tenant=..",
              "tenant=%2e%2e", "tenant=a%2Fb", "tenant=" + "t" * 65, "colour=red"):
        expect("GET", f"/api/databases?{q}", 400)

    # ---- GET one; hostile names in the path --------------------------------------------------
    tw.check(db("acme", "orders")["databaseName"] == "orders", "GET /api/databases/acme/orders")
    expect("GET", "/api/databases/acme/nothere", 404, code="not_found")
    expect("GET", "/api/databases/nobody/orders", 404, code="not_found")
    for bad in ("..", "%2e%2e", "%2E%2e", "a%2Fb", ".hidden", "t" * 65, "a%20b", "%00",
                "caf%C3%A9", "a%5Cb"):
        expect("GET", f"/api/databases/{bad}/orders", 400, code="invalid_name")
        expect("GET", f"/api/databases/acme/{bad}", 400, code="invalid_name")
        expect("DELETE", f"/api/databases/acme/{bad}", 400, code="invalid_name")
        expect("POST", f"/api/databases/{bad}/orders/snapshot", 400, code="invalid_name")
        expect("GET", f"/api/tenants/{bad}", 400, code="invalid_name")
        expect("PATCH", f"/api/tenants/{bad}", 400, {"syncInterval": "1s"}, code="invalid_name")
    expect("GET", "/api/databases/../acme", 400, code="invalid_name")  # raw, unnormalized
    expect("GET", "/api/databases/acme/%zz", 400, code="invalid_path")
    expect("GET", "/api/databases/a/b/orders", 404, code="not_found")
    expect("GET", "/api/nope", 404, code="not_found")
    expect("GET", "/nope", 404, code="not_found")
    tw.check(d.alive(), "tenantwald alive after hostile requests")

    # ---- 405 ---------------------------------------------------------------------------------
    for m, path, allow in (("PUT", "/api/databases", "POST"), ("DELETE", "/api/health", "GET"),
                           ("POST", "/metrics", "GET"), ("PATCH", "/api/databases/acme/orders",
                                                         "DELETE"),
                           ("GET", "/api/databases/acme/orders/snapshot", "POST"),
                           ("POST", "/api/tenants", "GET"), ("DELETE", "/api/tenants/acme",
                                                             "PATCH")):
        h, _ = expect(m, path, 405, body={} if m in ("PUT", "POST", "PATCH") else None,
                      code="method_not_allowed")
        if allow not in h.get("allow", ""):
            tw.fail(f"{m} {path}: Allow header {h.get('allow')!r} lacks {allow}")
    tw.log("ok: 405 answers carry an Allow header")

    # ---- POST /api/databases: a database created without the VFS ------------------------------
    create_plain(d.db_path("gamma", "ledger"), rows=800)
    create_plain(d.db_path("gamma", "bypath"), rows=50)
    _, b = expect("POST", "/api/databases", 201, {"tenantId": "gamma", "databaseName": "ledger"})
    tw.check(b["tenantId"] == "gamma" and b["databaseName"] == "ledger"
             and b["s3Path"] == d.s3_path("gamma", "ledger"),
             f"registered gamma/ledger by names: status {b['status']}")
    h, b = expect("POST", "/api/databases", 201, {"path": d.db_path("gamma", "bypath")})
    tw.check(h.get("location") == "/api/databases/gamma/bypath" and b["databaseName"] == "bypath",
             "registered gamma/bypath by path (Location header)")
    expect("POST", "/api/databases", 409, {"tenantId": "gamma", "databaseName": "ledger"},
           code="already_registered")
    expect("POST", "/api/databases", 409, {"path": d.db_path("acme", "orders")},
           code="already_registered")
    # 400/404/413 on registration
    with open(os.path.join(d.root, "gamma", "junk.db"), "w") as f:
        f.write("this is not a database, just text that is long enough to have a header\n")
    os.symlink("/etc/passwd", os.path.join(d.root, "gamma", "link.db"))
    os.makedirs(os.path.join(d.root, "gamma", "sub"), exist_ok=True)
    create_plain(os.path.join(d.root, "gamma", "sub", "deep.db"), rows=1)
    for body, st, code in (
            ({"tenantId": "..", "databaseName": "x"}, 400, "invalid_name"),
            ({"tenantId": "a/b", "databaseName": "x"}, 400, "invalid_name"),
            ({"tenantId": "%2e%2e", "databaseName": "x"}, 400, "invalid_name"),
            ({"tenantId": "gamma", "databaseName": "d" * 65}, 400, "invalid_name"),
            ({"tenantId": "gamma", "databaseName": ""}, 400, "invalid_name"),
            ({"tenantId": "gamma"}, 400, "invalid_body"),
            ({"path": d.db_path("gamma", "ledger"), "tenantId": "gamma"}, 400, "invalid_body"),
            ({}, 400, "invalid_body"),
            ({"tenantId": 5, "databaseName": "x"}, 400, "invalid_field"),
            ({"path": None}, 400, "invalid_field"),
            ({"name": "x"}, 400, "unknown_field"),
            ({"path": "gamma/ledger.db"}, 400, "invalid_path"),
            ({"path": "/etc/passwd"}, 400, "invalid_path"),
            ({"path": os.path.join(d.root, "gamma", *([".."] * 12), "etc", "x.db")}, 400,
             "invalid_path"),
            ({"path": os.path.join(d.root, "gamma", "..", "..", "nowhere", "x.db")}, 400,
             "invalid_path"),
            ({"path": os.path.join(d.root, "gamma", "sub", "deep.db")}, 400, "invalid_path"),
            ({"path": os.path.join(d.root, "gamma", "ledger.txt")}, 400, "invalid_path"),
            ({"path": os.path.join(d.root, "gamma", ".x.db")}, 400, "invalid_name"),
            ({"path": os.path.join(d.root, ".tenantwal", "spool", "x.db")}, 400, "invalid_path"),
            ({"path": os.path.join(d.root, "gamma", "junk.db")}, 400, "not_a_database"),
            ({"path": os.path.join(d.root, "gamma", "link.db")}, 400, "invalid_path"),
            ({"path": os.path.join(d.root, "gamma", "absent.db")}, 404, "not_found"),
            ({"path": os.path.join(d.root, "nobody", "x.db")}, 404, "not_found"),
            ({"tenantId": "gamma", "databaseName": "absent"}, 404, "not_found"),
            ({"tenantId": "nobody", "databaseName": "x"}, 404, "not_found")):
        expect("POST", "/api/databases", st, body, code=code)
    for raw in ('{"path":', "not json", "[1,2]", '"string"', "null",
                '{"tenantId":"gamma","tenantId":"x","databaseName":"y"}'):
        expect("POST", "/api/databases", 400, raw, code="invalid_json")
    expect("POST", "/api/databases", 413, "x" * (1536 * 1024), code="payload_too_large")
    expect("PATCH", "/api/tenants/acme", 413, "x" * (1100 * 1024))

    keys = tw.wait_for_objects(d, [("gamma", "ledger"), ("gamma", "bypath")], "snapshots",
                               timeout=60)
    snaps, _ = tw.check_layout(d, "gamma", "ledger", keys)
    tw.check(snaps, f"gamma/ledger: snapshot in S3 after registration ({snaps[0]})")
    tw.wait_until("gamma/ledger active", lambda: db("gamma", "ledger")["status"] == "active")
    tw.restore_and_compare(d, "gamma", "ledger", outdir)
    t3 = vfs_insert(d.db_path("gamma", "ledger"), 7, "after-register")
    d.wait_caught_up([("gamma", "ledger")], min_txid={("gamma", "ledger"): t3}, timeout=60)
    tw.restore_and_compare(d, "gamma", "ledger", outdir)
    tw.log("ok: a database registered by hand is replicated once a process writes through "
           "the VFS")

    # ---- POST .../snapshot --------------------------------------------------------------------
    before = db("acme", "orders")
    n_before = len(tw.check_layout(d, "acme", "orders")[0])
    _, b = expect("POST", "/api/databases/acme/orders/snapshot", 202)
    tw.check(b["accepted"] is True and b["alreadyPending"] is False,
             f"snapshot accepted: {b['message']}")
    after = tw.wait_until("a new snapshot of acme/orders",
                       lambda: (lambda x: x if x["snapshots"] > before["snapshots"]
                                and x["status"] == "active" else None)(db("acme", "orders")))
    snaps = tw.wait_until("a new snapshot object in S3",
                       lambda: (lambda s: s if len(s) > n_before else None)(
                           tw.check_layout(d, "acme", "orders")[0]))
    tw.check(after["generation"] != before["generation"],
             f"snapshot endpoint: generation {before['generation']} -> {after['generation']}, "
             f"snapshot objects {n_before} -> {len(snaps)}")
    expect("POST", "/api/databases/acme/orders/snapshot", 400, "{bad", code="invalid_json")
    expect("POST", "/api/databases/acme/orders/snapshot", 400, {"x": 1}, code="unknown_field")
    expect("POST", "/api/databases/acme/nothere/snapshot", 404, code="not_found")
    t4 = vfs_insert(d.db_path("acme", "orders"), 3, "after-snap")
    d.wait_caught_up([("acme", "orders")], min_txid={("acme", "orders"): t4}, timeout=60)
    tw.restore_and_compare(d, "acme", "orders", outdir)

    # ---- PATCH /api/tenants/{t}: syncInterval ----------------------------------------------------
    ten = get("/api/tenants/acme")
    tw.check(ten["syncInterval"] == "1s" and ten["syncIntervalSource"] == "global",
             f"acme syncInterval {ten['syncInterval']} ({ten['syncIntervalSource']})")
    _, b = expect("PATCH", "/api/tenants/acme", 200, {"syncInterval": "30s"})
    tw.check(b["syncInterval"] == "30s" and b["syncIntervalSource"] == "tenant",
             "PATCH acme syncInterval 30s")
    base = db("acme", "orders")["replicatedTxid"]
    t5 = vfs_insert(d.db_path("acme", "orders"), 1, "slow")
    tb = vfs_insert(d.db_path("beta", "web"), 1, "other-tenant")
    d.wait_caught_up([("beta", "web")], min_txid={("beta", "web"): tb}, timeout=10)
    time.sleep(3)
    slow = db("acme", "orders")
    tw.check(slow["txid"] >= t5 and slow["replicatedTxid"] == base and slow["lagMs"] >= 2000,
             f"with 30s, acme/orders txid {slow['txid']} waits (replicated {base}, lag "
             f"{slow['lagMs']} ms) while beta/web (global 1s) was uploaded")
    t0 = time.monotonic()
    _, b = expect("PATCH", "/api/tenants/acme", 200, {"syncInterval": "100ms"})
    d.wait_caught_up([("acme", "orders")], min_txid={("acme", "orders"): t5}, timeout=10,
                     stable_polls=1)
    tw.check(time.monotonic() - t0 < 5,
             f"PATCH syncInterval 100ms: acme/orders uploaded {time.monotonic() - t0:.2f}s later")
    for body, st, code in (({"syncInterval": "fast"}, 400, "invalid_field"),
                           ({"syncInterval": "0s"}, 400, "invalid_field"),
                           ({"syncInterval": "25h"}, 400, "invalid_field"),
                           ({"syncInterval": 5}, 400, "invalid_field"),
                           ({"syncInterval": "-1s"}, 400, "invalid_field"),
                           ({"colour": "red"}, 400, "unknown_field"),
                           ({"databases": 3}, 400, "read_only"),
                           ({"rateLimitBytesPerSecond": -1}, 400, "invalid_field"),
                           ({"rateLimitBytesPerSecond": "1MB"}, 400, "invalid_field"),
                           ({"rateLimitRequestsPerSecond": 1.5}, 400, "invalid_field"),
                           ({"snapshotInterval": "0s"}, 400, "invalid_field"),
                           ({"snapshotInterval": 3600}, 400, "invalid_field"),
                           ({"retention": "forever"}, 400, "invalid_field"),
                           ({"retention": "30s"}, 400, "invalid_field"),
                           ({"replica": "ftp://elsewhere"}, 400, "invalid_field"),
                           ({"replica": "s3://../x"}, 400, "invalid_field"),
                           ({"replica": {"url": "s3://other-bucket", "credentials": "AKIAXX:s3cret"}},
                            400, "invalid_field"),
                           ({"replica": {"url": "s3://other-bucket",
                                         "credentials": "env:TW_UNSET_PREFIX"}},
                            400, "invalid_field"),
                           ({"replica": {"url": "s3://other-bucket", "colour": "x"}},
                            400, "invalid_field"),
                           ({"syncInterval": "5s", "retention": "forever"}, 400, "invalid_field")):
        expect("PATCH", "/api/tenants/acme", st, body, code=code)
    for raw in ("{", "[]", "1", '{"syncInterval":"1s","syncInterval":"2s"}'):
        expect("PATCH", "/api/tenants/acme", 400, raw, code="invalid_json")
    tw.check(get("/api/tenants/acme")["syncInterval"] == "100ms",
             "rejected PATCHes (400) changed nothing (still 100ms)")
    a = get("/api/tenants/acme")
    tw.check(a["retention"] == "7d" and a["rateLimitBytesPerSecond"] == 0
             and a["sources"]["retention"] == "default",
             f"rejected PATCHes left the other settings alone: {a['sources']}")
    _, b = expect("PATCH", "/api/tenants/acme", 200, {"syncInterval": None})
    tw.check(b["syncInterval"] == "1s" and b["syncIntervalSource"] == "global",
             "PATCH syncInterval null: back to the global 1s")
    _, b = expect("PATCH", "/api/tenants/newcomer", 200, {"syncInterval": "2s"})
    tw.check(b["databases"] == 0 and b["syncInterval"] == "2s",
             "a tenant without databases yet can be given settings")
    # Every settings field at once; GET shows the effective value and its source.
    _, b = expect("PATCH", "/api/tenants/newcomer", 200,
                  {"rateLimitBytesPerSecond": 2000000, "rateLimitRequestsPerSecond": 50,
                   "snapshotInterval": "6h", "retention": "30d",
                   "replica": {"url": d.replica + "-newcomer", "region": "us-east-1"}})
    tw.check(b["rateLimitBytesPerSecond"] == 2000000 and b["rateLimitRequestsPerSecond"] == 50
             and b["snapshotInterval"] == "6h" and b["retention"] == "30d"
             and b["replica"]["url"] == d.replica + "-newcomer"
             and b["replica"]["credentials"] is None
             and b["s3Path"] == d.replica + "-newcomer/tenants/newcomer/"
             and all(b["sources"][k] == "api" for k in b["sources"]) and b["throttled"] is False,
             f"PATCH newcomer with every setting: {b}")
    _, b = expect("PATCH", "/api/tenants/newcomer", 200,
                  {"retention": None, "replica": None, "rateLimitRequestsPerSecond": None})
    tw.check(b["retention"] == "7d" and b["sources"]["retention"] == "default"
             and b["replica"]["url"] == d.replica and b["sources"]["replica"] == "flag"
             and b["rateLimitRequestsPerSecond"] == 0
             and b["rateLimitBytesPerSecond"] == 2000000,
             f"PATCH null: back to the global values ({b['sources']})")

    # ---- tenants ----------------------------------------------------------------------------------
    ts = get("/api/tenants")
    names = [t["tenantId"] for t in ts["tenants"]]
    tw.check(names == ["acme", "beta", "gamma", "newcomer"] and ts["totalTenants"] == 4,
             f"GET /api/tenants: {names}")
    g = get("/api/tenants/gamma")
    for k in ("syncInterval", "rateLimitBytesPerSecond", "rateLimitRequestsPerSecond",
              "snapshotInterval", "retention", "replica"):
        if k not in g:
            tw.fail(f"tenant object lacks {k}: {g}")
    tw.check(g["databases"] == 2 and g["activeDatabases"] == 2 and g["bytesReplicated"] > 0,
             f"GET /api/tenants/gamma: {g['databases']} databases, {g['bytesReplicated']} bytes, "
             f"{g['snapshots']} snapshots")
    expect("GET", "/api/tenants/nobody", 404, code="not_found")

    # ---- DELETE ---------------------------------------------------------------------------------
    bp = d.db_path("gamma", "bypath")
    tb1 = vfs_insert(bp, 2, "before-delete")
    d.wait_caught_up([("gamma", "bypath")], min_txid={("gamma", "bypath"): tb1}, timeout=60)
    kept = tw.check_layout(d, "gamma", "bypath")
    _, b = expect("DELETE", "/api/databases/gamma/bypath", 200)
    tw.check(b["status"] == "deleted", "DELETE gamma/bypath: status deleted")
    tb2 = vfs_insert(bp, 3, "after-delete")  # also a fresh VFS open (kRegister)
    time.sleep(3)
    x = db("gamma", "bypath")
    tw.check(x["status"] == "deleted" and x["replicatedTxid"] == tb1 and x["txid"] >= tb2,
             f"after DELETE: writes not replicated (txid {x['txid']}, replicated "
             f"{x['replicatedTxid']}), status stays deleted across a VFS open")
    now = tw.check_layout(d, "gamma", "bypath")
    tw.check(set(kept[0]) <= set(now[0]) and set(kept[1]) <= set(now[1]),
             f"replica kept: {len(now[0])} snapshot(s), {len(now[1])} segment(s)")
    out = os.path.join(outdir, "bypath-after-delete.db")
    tw.restore(d.replica, "gamma", "bypath", out)
    c = sqlite3.connect(out)
    nb = c.execute("SELECT count(*) FROM kv WHERE writer='before-delete'").fetchone()[0]
    na = c.execute("SELECT count(*) FROM kv WHERE writer='after-delete'").fetchone()[0]
    c.close()
    tw.check(nb == 2 and na == 0, "restore after DELETE gives the last replicated state")
    lst = get("/api/databases?status=deleted")
    tw.check([x["databaseName"] for x in lst["databases"]] == ["bypath"],
             "?status=deleted lists gamma/bypath")
    expect("DELETE", "/api/databases/gamma/bypath", 200)  # idempotent
    expect("POST", "/api/databases/gamma/bypath/snapshot", 409, code="conflict")
    expect("DELETE", "/api/databases/gamma/absent", 404, code="not_found")
    _, b = expect("POST", "/api/databases", 201, {"path": bp})
    d.wait_caught_up([("gamma", "bypath")], min_txid={("gamma", "bypath"): tb2}, timeout=60)
    tw.restore_and_compare(d, "gamma", "bypath", outdir)
    tw.log("ok: registering a deleted database again resumes replication (new generation)")

    # ---- /metrics ---------------------------------------------------------------------------------
    h, m1 = metrics()
    tw.check(h.get("content-type", "").startswith("text/plain")
             and "version=0.0.4" in h.get("content-type", ""),
             f"/metrics Content-Type: {h.get('content-type')}")
    out = promtool_check(m1)
    tw.check(True, f"promtool check metrics: passed{(' (' + out + ')') if out else ''}")
    want = [("tenantwal_transactions_replicated_total", {"tenant": "acme", "db": "orders"}),
            ("tenantwal_replicated_bytes_total", {"tenant": "acme", "db": "orders"}),
            ("tenantwal_snapshots_total", {"tenant": "acme", "db": "orders"}),
            ("tenantwal_errors_total", {"tenant": "acme", "db": "orders"}),
            ("tenantwal_replication_lag_seconds", {"tenant": "acme", "db": "orders"}),
            ("tenantwal_pending_bytes", {"tenant": "acme", "db": "orders"}),
            ("tenantwal_s3_requests_total", {"operation": "PUT", "outcome": "success"}),
            ("tenantwal_s3_requests_total", {"operation": "PUT", "outcome": "failure"}),
            ("tenantwal_ring_used_bytes", {}), ("tenantwal_ring_capacity_bytes", {}),
            ("tenantwal_ring_dropped_records_total", {}), ("tenantwal_ring_records_total", {}),
            ("tenantwal_spool_bytes", {}), ("tenantwal_spool_free_bytes", {}),
            ("tenantwal_databases", {"tenant": "gamma", "status": "active"}),
            ("tenantwal_s3_last_request_success", {})]
    for name, labels in want:
        if series(m1, name, **labels) is None:
            tw.fail(f"/metrics lacks {name}{labels}")
    tw.check(series(m1, "tenantwal_snapshots_total", tenant="acme", db="orders") >= 2
             and series(m1, "tenantwal_s3_last_request_success") == 1,
             f"/metrics has all {len(want)} expected series")
    t6 = vfs_insert(d.db_path("acme", "orders"), 20, "metrics")
    d.wait_caught_up([("acme", "orders")], min_txid={("acme", "orders"): t6}, timeout=60)
    _, m2 = metrics()
    promtool_check(m2)
    moved = {}
    for name, labels in (("tenantwal_transactions_replicated_total",
                          {"tenant": "acme", "db": "orders"}),
                         ("tenantwal_replicated_bytes_total", {"tenant": "acme", "db": "orders"}),
                         ("tenantwal_s3_requests_total", {"operation": "PUT",
                                                          "outcome": "success"}),
                         ("tenantwal_ring_records_total", {}),
                         ("tenantwal_txid", {"tenant": "acme", "db": "orders"})):
        a, b2 = series(m1, name, **labels), series(m2, name, **labels)
        moved[name] = (a, b2)
        if not (b2 > a):
            tw.fail(f"{name}{labels} did not move after 20 commits: {a} -> {b2}")
    dt = moved["tenantwal_transactions_replicated_total"]
    tw.check(dt[1] - dt[0] >= 20, "values move after 20 commits: " + ", ".join(
        f"{k.replace('tenantwal_', '')} {int(a)}->{int(b2)}" for k, (a, b2) in moved.items()))
    hl = get("/api/health")
    tw.check(hl["s3"]["reachable"] is True and hl["s3"]["lastSuccessAt"]
             and hl["s3"]["requests"]["PUT"]["requests"] > 0,
             f"health: S3 reachable (last {hl['s3']['lastOperation']} at "
             f"{hl['s3']['lastRequestAt']}), {hl['s3']['requests']['PUT']['requests']} PUTs")

    # ---- tenantwal status -----------------------------------------------------------------------------
    api = f"127.0.0.1:{PORT}"
    p = subprocess.run([tw.CLI, "status", "--api", api, "--token-file", token_file],
                       capture_output=True, text=True, timeout=60)
    lines = p.stdout.splitlines()
    tw.check(p.returncode == 0 and lines and lines[0].split()[:6] ==
             ["TENANT", "DB", "STATUS", "TXID", "REPLICATED", "LAG"]
             and any(ln.split()[:3] == ["acme", "orders", "active"] for ln in lines)
             and any(ln.split()[:3] == ["gamma", "ledger", "active"] for ln in lines),
             "tenantwal status (table):\n" + "\n".join("      " + ln for ln in lines))
    p = subprocess.run([tw.CLI, "status", "--json", "--token-file", token_file],
                       capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, TENANTWAL_API=f"http://{api}"))
    js = json.loads(p.stdout)
    tw.check(p.returncode == 0 and js["totalDatabases"] == 4
             and {(x["tenantId"], x["databaseName"]) for x in js["databases"]}
             == {("acme", "orders"), ("beta", "web"), ("gamma", "ledger"), ("gamma", "bypath")},
             "tenantwal status --json (TENANTWAL_API): the API's listing, 4 databases")
    p = subprocess.run([tw.CLI, "status", "--api", api], capture_output=True, text=True,
                       timeout=60)
    tw.check(p.returncode == 1 and "401" in p.stderr and TOKEN not in p.stderr,
             f"tenantwal status without the token: exit 1: {p.stderr.strip()}")
    p = subprocess.run([tw.CLI, "status", "--api", "127.0.0.1:1"], capture_output=True,
                       text=True, timeout=60)
    tw.check(p.returncode == 1 and "cannot reach tenantwald" in p.stderr,
             "tenantwal status against nothing: exit 1, cannot reach")

    # ---- audit log ----------------------------------------------------------------------------------
    audit = []
    with open(d.log_path, errors="replace") as f:
        text = f.read()
    for ln in text.splitlines():
        try:
            o = json.loads(ln)
        except ValueError:
            continue
        if o.get("audit") == 1:
            audit.append(o)
    acts = {}
    for o in audit:
        acts.setdefault(o.get("action"), []).append(o)
        if "tenant" not in o or "db" not in o:
            tw.fail(f"audit line without tenant/db: {o}")
    for a in ("register", "delete", "settings", "snapshot", "generation"):
        if a not in acts:
            tw.fail(f"no audit line with action {a}; have {sorted(acts)}")
    st = [o for o in acts["settings"] if o["tenant"] == "acme"]
    tw.check(any(o["old"].startswith("1s") and o["new"] == "30s" for o in st),
             f"audit: {len(audit)} lines ({', '.join(f'{k} {len(v)}' for k, v in sorted(acts.items()))});"
             " settings lines carry old and new values")
    tw.check(TOKEN not in text, "the token appears nowhere in tenantwald's log")

    rc = d.stop()
    tw.check(rc == 0, f"tenantwald exits 0 on SIGTERM (got {rc})")

    # ---- a second daemon: no token, db label limit ---------------------------------------------------
    d2 = tw.Daemon("api-agg", replica="file://" + tw.tempdir("api-agg-replica"),
                   extra_args=["--metrics-db-label-limit", "2"])
    for name in ("a1", "a2", "a3"):
        create_plain(d2.db_path("agg", name), rows=10)
    d2.start()
    PORT = d2.port
    tw.wait_until("agg/a1..a3 snapshotted", lambda: all(
        x["status"] == "active" and x["snapshots"] == 1
        for x in call("GET", "/api/databases?tenant=agg", token=None)[2]["databases"])
        and call("GET", "/api/databases?tenant=agg", token=None)[2]["totalDatabases"] == 3)
    _, m3 = expect("GET", "/metrics", 200, token=None)
    promtool_check(m3)
    tw.check(series(m3, "tenantwal_snapshots_total", tenant="agg") == 3
             and series(m3, "tenantwal_metrics_db_label") == 0
             and 'db="' not in m3,
             "3 databases > --metrics-db-label-limit 2: series per tenant only "
             "(tenantwal_snapshots_total{tenant=\"agg\"} 3, no db label)")
    expect("GET", "/api/health", 200, token=None)
    tw.check(d2.stop() == 0, "second tenantwald (no token file: no auth) stopped")
    tw.log(f"{STATS['requests']} API requests made")


if __name__ == "__main__":
    tw.main(test)
