"""Shared helpers for tenantwal's end-to-end tests (and tools/demo).

Run everything with Debian's /usr/bin/python3: its sqlite3 module allows
enable_load_extension (the pyenv one on PATH does not).

What is here:
  * paths of the built programs (TENANTWAL_BUILD / TENANTWAL_SOURCE from meson)
  * require_s3(): the S3 settings tools/test exports, or a clear failure
  * Daemon: tenantwald on a temp root, free API port, unique ring and replica prefix
  * connect(): a sqlite3 connection through the tenantwal VFS
  * sqlite3_cli(): the sqlite3 shell with `.load` + `.open 'file:...?vfs=tenantwal'`
  * writers: random insert/update/delete workloads (CLI scripts and a Python worker)
  * restore_and_compare(): `tenantwal restore`, sqldiff, integrity_check
  * list_objects(): /usr/bin/aws s3 ls --recursive

Command line (used by tools/demo and by the tests to spawn client processes):
  python3 twtest.py py-writer --db PATH --seconds S --seed N [--tag T]
  python3 twtest.py cli-script --seconds S --seed N [--tag T]   (prints SQL)
  python3 twtest.py snapshot LIVE.db OUT.db       (consistent copy through the VFS)
  python3 twtest.py compare LIVE.db RESTORED.db   (prints "equal" or the diff)
"""

import atexit
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

PYTHON = "/usr/bin/python3"
AWS = "/usr/bin/aws"
SQLITE3 = shutil.which("sqlite3", path="/usr/bin:/bin") or "sqlite3"
SQLDIFF = shutil.which("sqldiff", path="/usr/bin:/bin") or "sqldiff"

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.environ.get("TENANTWAL_SOURCE") or os.path.dirname(os.path.dirname(HERE))
BUILD = os.environ.get("TENANTWAL_BUILD") or os.path.join(SOURCE, "build")
EXT = os.path.join(BUILD, "vfs", "tenantwal")          # load_extension adds ".so"
TENANTWALD = os.path.join(BUILD, "replicator", "tenantwald")
CLI = os.path.join(BUILD, "tools", "tenantwal")
SPEEDTEST1 = os.path.join(BUILD, "speedtest1")

S3_VARS = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
           "TENANTWAL_TEST_BUCKET")

_T0 = time.monotonic()
_cleanups = []


# --------------------------------------------------------------------------
# reporting

def log(msg):
    print(f"[{time.monotonic() - _T0:7.1f}s] {msg}", flush=True)


class TestFailure(Exception):
    pass


def fail(msg):
    raise TestFailure(msg)


def check(cond, msg):
    """Assert with a message; on success prints 'ok: msg'."""
    if not cond:
        fail(msg)
    log(f"ok: {msg}")


def main(test_fn):
    """Run test_fn(); print PASS/FAIL; exit 0/1. Cleanups run either way."""
    name = os.path.basename(sys.argv[0])
    rc = 1
    try:
        test_fn()
        rc = 0
    except TestFailure as e:
        print(f"\nFAIL: {name}: {e}", file=sys.stderr, flush=True)
    except Exception as e:  # noqa: BLE001 - report anything else as a failure too
        import traceback
        traceback.print_exc()
        print(f"\nFAIL: {name}: unexpected {type(e).__name__}: {e}", file=sys.stderr,
              flush=True)
    finally:
        run_cleanups()
    if rc == 0:
        print(f"\nPASS: {name} ({time.monotonic() - _T0:.1f}s)", flush=True)
    sys.exit(rc)


def at_cleanup(fn):
    _cleanups.append(fn)


def run_cleanups():
    while _cleanups:
        fn = _cleanups.pop()
        try:
            fn()
        except Exception as e:  # noqa: BLE001
            print(f"cleanup error: {e}", file=sys.stderr)


atexit.register(run_cleanups)


# --------------------------------------------------------------------------
# environment

def require_s3():
    """The S3 settings tools/test exports; fail clearly when they are missing."""
    missing = [v for v in S3_VARS if not os.environ.get(v)]
    if missing:
        fail(f"S3 test environment missing ({', '.join(missing)}): run via tools/test "
             "(it starts s3rver and exports these)")
    os.environ.setdefault("AWS_REGION", "us-east-1")
    return os.environ["TENANTWAL_TEST_BUCKET"]


def require_built(*paths):
    for p in paths:
        if not os.path.exists(p):
            fail(f"{p} is not built: run via tools/test (or meson compile -C build)")


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    """VmRSS of process `pid` in KiB (/proc/PID/status), or -1."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def wait_until(what, fn, timeout=60, every=0.3):
    """Poll fn() until it returns a true value (returned); fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            fail(f"timed out after {timeout}s waiting for: {what}")
        time.sleep(every)


def tempdir(name):
    d = tempfile.mkdtemp(prefix=f"tenantwal-{name}-")
    if os.environ.get("TENANTWAL_KEEP_TMP"):
        at_cleanup(lambda: log(f"kept {d}"))
    else:
        at_cleanup(lambda: shutil.rmtree(d, ignore_errors=True))
    return d


# --------------------------------------------------------------------------
# the daemon

class Daemon:
    """tenantwald on ROOT replicating to s3://BUCKET/PREFIX (or another URL)."""

    def __init__(self, name, root=None, replica=None, sync_interval="1s", workdir=None,
                 extra_args=()):
        self.name = name
        self.workdir = workdir or tempdir(name)
        self.root = root or os.path.join(self.workdir, "root")
        os.makedirs(self.root, exist_ok=True)
        uniq = f"{os.getpid()}-{random.randrange(1 << 30):x}"
        base_ring = os.environ.get("TENANTWAL_RING", "tw-test")
        self.ring = f"{base_ring}-{name}-{uniq}"[:60]
        if replica is None:
            bucket = require_s3()
            self.bucket = bucket
            self.prefix = f"e2e/{name}-{uniq}"
            replica = f"s3://{bucket}/{self.prefix}"
        else:
            self.bucket, self.prefix = split_s3(replica) if replica.startswith("s3://") \
                else (None, None)
        self.replica = replica
        self.sync_interval = sync_interval
        self.port = free_port()
        self.api_base = f"http://127.0.0.1:{self.port}"
        self.spool = os.path.join(self.workdir, "spool")
        self.log_path = os.path.join(self.workdir, "tenantwald.log")
        self.extra_args = list(extra_args)
        self.exec_prefix = []   # e.g. ["faketime", "-f", "-1d"]: a command that execs tenantwald
        self.proc = None
        # Clients started from this process (and its children) use the same ring/root.
        os.environ["TENANTWAL_RING"] = self.ring
        os.environ["TENANTWAL_ROOT"] = self.root
        # The ring is a POSIX shm object (/dev/shm/NAME): do not leak one per run.
        at_cleanup(self.unlink_ring)

    def unlink_ring(self):
        try:
            os.unlink(os.path.join("/dev/shm", self.ring))
        except OSError:
            pass

    def db_path(self, tenant, db):
        return os.path.join(self.root, tenant, f"{db}.db")

    def s3_path(self, tenant, db):
        return f"{self.replica.rstrip('/')}/tenants/{tenant}/{db}/"

    def start(self, timeout=30):
        require_built(TENANTWALD)
        args = self.exec_prefix + [TENANTWALD, "--root", self.root, "--replica", self.replica,
                "--api", f"127.0.0.1:{self.port}", "--sync-interval", self.sync_interval,
                "--spool", self.spool, "--ring", self.ring] + self.extra_args
        log(f"starting tenantwald: {' '.join(args)}")
        self._logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, stdout=self._logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        at_cleanup(self.stop)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                fail(f"tenantwald exited with status {self.proc.returncode} during start-up;"
                     f" log:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.api_base + "/api/health", timeout=2) as r:
                    if r.status == 200:
                        log(f"tenantwald up (pid {self.proc.pid}, api {self.api_base}, "
                            f"ring {self.ring})")
                        return self
            except (urllib.error.URLError, ConnectionError, socket.timeout, OSError):
                pass
            time.sleep(0.2)
        fail(f"tenantwald: /api/health did not answer within {timeout}s; log:\n"
             f"{self.log_tail()}")

    def stop(self, timeout=20):
        if not self.proc or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log(f"tenantwald did not stop within {timeout}s of SIGTERM; killing it")
            self.proc.kill()
            self.proc.wait()
        self._logf.close()
        log(f"tenantwald stopped (status {self.proc.returncode})")
        return self.proc.returncode

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n=40):
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read().decode(errors="replace").splitlines()
            return "\n".join("    " + ln for ln in lines[-n:])
        except OSError:
            return "    (no log)"

    def api(self, path, timeout=10):
        with urllib.request.urlopen(self.api_base + path, timeout=timeout) as r:
            return json.loads(r.read().decode())

    def databases(self):
        return self.api("/api/databases")

    def db_entry(self, tenant, db, listing=None):
        listing = listing if listing is not None else self.databases()
        for e in listing.get("databases", []):
            if e.get("tenantId") == tenant and e.get("databaseName") == db:
                return e
        return None

    def wait_caught_up(self, dbs, timeout=120, min_txid=None, stable_polls=2,
                       allow_zero=False):
        """Wait until every (tenant, db) has txid > 0 and replicatedTxid == txid.

        allow_zero: also accept txid == 0 (a database known only from its
        initial snapshot, before any transaction through the VFS).

        min_txid: optional {(tenant, db): txid} the daemon's txid must reach
        (e.g. local_txid seen by the writers). The condition must hold on
        `stable_polls` consecutive polls with an unchanged txid, so a commit
        the daemon had not seen yet at the first poll is not missed.
        Returns {(tenant, db): entry}.
        """
        dbs = list(dbs)
        min_txid = min_txid or {}
        deadline = time.monotonic() + timeout
        streak, last_txids, last_state = 0, None, {}
        while True:
            if not self.alive():
                fail(f"tenantwald died (status {self.proc.returncode}); log:\n"
                     f"{self.log_tail()}")
            try:
                listing = self.databases()
            except Exception as e:  # noqa: BLE001
                listing, last_state = None, {"api": f"GET /api/databases failed: {e}"}
            if listing is not None:
                entries, lagging, txids = {}, [], {}
                for t, d in dbs:
                    e = self.db_entry(t, d, listing)
                    entries[(t, d)] = e
                    if e is None:
                        lagging.append(f"{t}/{d}: not listed")
                        continue
                    txid, rep = e.get("txid", 0), e.get("replicatedTxid", 0)
                    txids[(t, d)] = txid
                    want = min_txid.get((t, d), 0 if allow_zero else 1)
                    if not (txid >= want and rep == txid):
                        lagging.append(f"{t}/{d}: txid={txid} (want >= {want}) "
                                       f"replicatedTxid={rep} lagMs={e.get('lagMs')} "
                                       f"status={e.get('status')} "
                                       f"lastError={e.get('lastError', e.get('last_error'))}")
                last_state = lagging
                if not lagging:
                    streak = streak + 1 if txids == last_txids else 1
                    last_txids = txids
                    if streak >= stable_polls:
                        return entries
                else:
                    streak, last_txids = 0, None
            if time.monotonic() > deadline:
                detail = "\n  ".join(last_state if isinstance(last_state, list)
                                     else [str(last_state)])
                fail(f"not caught up within {timeout}s:\n  {detail}\n"
                     f"tenantwald log tail:\n{self.log_tail()}")
            time.sleep(0.5)

    def restore(self, tenant, db, out):
        return restore(self.replica, tenant, db, out)


def split_s3(url):
    rest = url[len("s3://"):]
    bucket, _, prefix = rest.partition("/")
    return bucket, prefix.strip("/")


# --------------------------------------------------------------------------
# clients

_ext_loaded = False


def load_extension():
    """Load tenantwal into this process (registers the VFS process-wide)."""
    global _ext_loaded
    if _ext_loaded:
        return
    require_built(EXT + ".so")
    c = sqlite3.connect(":memory:")
    if not hasattr(c, "enable_load_extension"):
        fail(f"{sys.executable}'s sqlite3 cannot load extensions: run with {PYTHON}")
    c.enable_load_extension(True)
    c.load_extension(EXT)
    c.close()
    _ext_loaded = True


def connect(path, timeout=30.0, wal=True, **kw):
    """A connection to PATH through the tenantwal VFS, in WAL mode."""
    load_extension()
    conn = sqlite3.connect(f"file:{path}?vfs=tenantwal", uri=True, timeout=timeout, **kw)
    if wal:
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode.lower() != "wal":
            fail(f"{path}: journal_mode=WAL gave {mode!r}")
    return conn


def status_rows(path=None):
    """SELECT * FROM tenantwal_status (as dicts), from a VFS connection."""
    load_extension()
    conn = sqlite3.connect(f"file:{path}?vfs=tenantwal", uri=True) if path \
        else sqlite3.connect(":memory:")
    try:
        cur = conn.execute("SELECT * FROM tenantwal_status")
        cols = [c[0] for c in cur.description]
        return [dict(zip(cols, r)) for r in cur.fetchall()]
    finally:
        conn.close()


def print_table(rows, cols=None):
    if not rows:
        print("    (no rows)")
        return
    cols = cols or list(rows[0].keys())
    widths = [max(len(str(c)), *(len(str(r.get(c))) for r in rows)) for c in cols]
    print("    " + "  ".join(str(c).ljust(w) for c, w in zip(cols, widths)))
    for r in rows:
        print("    " + "  ".join(str(r.get(c)).ljust(w) for c, w in zip(cols, widths)))
    sys.stdout.flush()


def cli_prelude(path):
    return (f".load {EXT}\n"
            f".open 'file:{path}?vfs=tenantwal'\n"
            ".timeout 30000\n"
            ".bail on\n"
            "PRAGMA journal_mode=WAL;\n")


def sqlite3_cli(path, sql, check_rc=True, timeout=300):
    """Run the sqlite3 shell on PATH through the VFS (.load + .open); return stdout."""
    require_built(EXT + ".so")
    script = cli_prelude(path) + sql
    p = subprocess.run([SQLITE3, "-batch"], input=script, capture_output=True, text=True,
                       timeout=timeout)
    if check_rc and (p.returncode != 0 or "Error" in p.stderr):
        fail(f"sqlite3 CLI on {path} failed (status {p.returncode}):\n{p.stderr.strip()}")
    return p.stdout


SCHEMA = """
CREATE TABLE IF NOT EXISTS kv(
  id INTEGER PRIMARY KEY,
  writer TEXT NOT NULL,
  k TEXT NOT NULL,
  v BLOB,
  n INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS kv_k ON kv(k);
"""


def random_txn_sql(rng, tag, i):
    """One random transaction of inserts/updates/deletes (SQL text)."""
    stmts = ["BEGIN IMMEDIATE;"]
    for _ in range(rng.randint(1, 8)):
        op = rng.random()
        if op < 0.6:
            stmts.append(f"INSERT INTO kv(writer, k, v) VALUES('{tag}', "
                         f"'k{rng.randrange(100000)}', randomblob({rng.randint(10, 3000)}));")
        elif op < 0.85:
            stmts.append("UPDATE kv SET v = randomblob(%d), n = n + 1 WHERE id IN "
                         "(SELECT id FROM kv ORDER BY random() LIMIT %d);"
                         % (rng.randint(10, 2000), rng.randint(1, 5)))
        else:
            stmts.append("DELETE FROM kv WHERE id IN (SELECT id FROM kv ORDER BY random() "
                         "LIMIT %d);" % rng.randint(1, 3))
    stmts.append("COMMIT;")
    return "\n".join(stmts) + "\n"


def cli_script(seconds_worth, seed, tag):
    """A sqlite3-shell script: schema + ~N random transactions."""
    rng = random.Random(seed)
    n = max(1, int(seconds_worth * 20))
    return SCHEMA + "".join(random_txn_sql(rng, tag, i) for i in range(n))


def py_writer(path, seconds, seed, tag):
    """Random inserts/updates/deletes through the VFS for `seconds`; returns #txns."""
    rng = random.Random(seed)
    conn = connect(path, isolation_level=None)
    conn.executescript(SCHEMA)
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        for attempt in range(50):
            try:
                conn.executescript(random_txn_sql(rng, tag, n))
                break
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) and "busy" not in str(e):
                    raise
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                time.sleep(0.05 * (attempt + 1))
        else:
            raise RuntimeError(f"{path}: database stayed busy")
        n += 1
        time.sleep(rng.random() * 0.02)
    conn.close()
    return n


# --------------------------------------------------------------------------
# restore and compare

def snapshot(live, out):
    """A consistent copy of LIVE (read through the VFS) into the plain file OUT."""
    load_extension()
    if os.path.exists(out):
        os.unlink(out)
    src = sqlite3.connect(f"file:{live}?vfs=tenantwal", uri=True, timeout=30)
    dst = sqlite3.connect(out)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()


def integrity(path):
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return ", ".join(r[0] for r in conn.execute("PRAGMA integrity_check").fetchall())
    finally:
        conn.close()


def compare(live, restored, workdir=None):
    """(equal: bool, detail: str). Equal = sqldiff prints nothing (and exits 0)
    between a VFS snapshot of LIVE and RESTORED, and RESTORED passes
    integrity_check."""
    workdir = workdir or os.path.dirname(restored)
    snap = os.path.join(workdir, os.path.basename(restored) + ".live-snapshot.db")
    snapshot(live, snap)
    p = subprocess.run([SQLDIFF, snap, restored], capture_output=True, text=True)
    ic = integrity(restored)
    os.unlink(snap)
    problems = []
    if p.returncode != 0:
        problems.append(f"sqldiff exited {p.returncode}: {p.stderr.strip()}")
    if p.stdout.strip():
        lines = p.stdout.strip().splitlines()
        problems.append(f"sqldiff prints {len(lines)} line(s):\n      "
                        + "\n      ".join(ln[:160] for ln in lines[:10]))
    if ic != "ok":
        problems.append(f"integrity_check: {ic[:300]}")
    return (not problems, "; ".join(problems) or "sqldiff empty, integrity_check ok")


def restore(replica, tenant, db, out):
    require_built(CLI)
    args = [CLI, "restore", "--replica", replica, "--tenant", tenant, "--db", db,
            "-o", out, "--force"]
    p = subprocess.run(args, capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        fail(f"tenantwal restore {tenant}/{db} failed (status {p.returncode}):\n"
             f"{p.stdout.strip()}\n{p.stderr.strip()}")
    if not os.path.exists(out):
        fail(f"tenantwal restore {tenant}/{db} exited 0 but wrote no {out}")
    return p.stdout + p.stderr


def restore_and_compare(daemon, tenant, db, outdir):
    """Restore tenant/db from the daemon's replica and require it equal to live."""
    out = os.path.join(outdir, f"{tenant}__{db}.restored.db")
    t0 = time.monotonic()
    restore(daemon.replica, tenant, db, out)
    secs = time.monotonic() - t0
    ok, detail = compare(daemon.db_path(tenant, db), out)
    if not ok:
        fail(f"{tenant}/{db}: restore differs from live: {detail}")
    log(f"ok: {tenant}/{db}: restored ({os.path.getsize(out)} bytes, {secs:.1f}s), "
        f"{detail}")
    return out


def row_count(path, table="kv"):
    load_extension()
    conn = sqlite3.connect(f"file:{path}?vfs=tenantwal", uri=True, timeout=30)
    try:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    finally:
        conn.close()


# --------------------------------------------------------------------------
# the bucket

def aws_args():
    args = [AWS]
    ep = os.environ.get("AWS_ENDPOINT_URL")
    if ep:  # Debian's aws-cli 2.9 ignores AWS_ENDPOINT_URL: pass it explicitly
        args += ["--endpoint-url", ep]
    return args


def list_objects(s3_url):
    """Keys (relative to the bucket) under s3://bucket/prefix/, via the aws CLI."""
    bucket, prefix = split_s3(s3_url)
    url = f"s3://{bucket}/{prefix.rstrip('/')}/" if prefix else f"s3://{bucket}/"
    env = dict(os.environ, AWS_PAGER="")
    p = subprocess.run(aws_args() + ["s3", "ls", "--recursive", url], capture_output=True,
                       text=True, env=env, timeout=120)
    if p.returncode not in (0, 1):  # 1 = nothing matched
        fail(f"aws s3 ls {url} failed (status {p.returncode}): {p.stderr.strip()}")
    keys = []
    for line in p.stdout.splitlines():
        parts = line.split(None, 3)
        if len(parts) == 4:
            keys.append((parts[3], int(parts[2])))
    return keys


def wait_for_objects(daemon, dbs, kind="snapshots", timeout=60):
    """Poll the bucket until every (tenant, db) has an object under KIND/."""
    deadline = time.monotonic() + timeout
    while True:
        keys = list_objects(daemon.replica)
        missing = [(t, d) for t, d in dbs
                   if not check_layout(daemon, t, d, keys)[0 if kind == "snapshots" else 1]]
        if not missing:
            return keys
        if time.monotonic() > deadline:
            fail(f"no {kind}/ object within {timeout}s for "
                 + ", ".join(f"{t}/{d}" for t, d in missing)
                 + f"; tenantwald log tail:\n{daemon.log_tail()}")
        time.sleep(1)


def check_layout(daemon, tenant, db, keys=None):
    """The bucket holds snapshots/ and wal/ objects for tenant/db."""
    keys = keys if keys is not None else list_objects(daemon.replica)
    base = (daemon.prefix + "/" if daemon.prefix else "") + f"tenants/{tenant}/{db}/"
    snaps = [k for k, _ in keys if k.startswith(base + "snapshots/")]
    wals = [k for k, _ in keys if k.startswith(base + "wal/")]
    return snaps, wals


# --------------------------------------------------------------------------
# process helpers

def spawn(args, **kw):
    """Popen that is killed at cleanup if still running."""
    p = subprocess.Popen(args, **kw)

    def kill():
        if p.poll() is None:
            p.kill()
            p.wait()
    at_cleanup(kill)
    return p


def wait_all(procs, timeout, what="client"):
    """Wait for (label, Popen) pairs; fail on a non-zero exit or a hang.
    Returns {label: stdout}."""
    deadline = time.monotonic() + timeout
    outs = {}
    for label, p in procs:
        left = max(1, deadline - time.monotonic())
        try:
            out, err = p.communicate(timeout=left)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            fail(f"{what} {label} did not finish within {timeout}s: {(err or '')[-500:]}")
        if p.returncode != 0:
            fail(f"{what} {label} exited with status {p.returncode}:\n"
                 f"{(err or '').strip()[-2000:]}")
        outs[label] = out or ""
    return outs


def spawn_cli(path, sql, workdir, label):
    """The sqlite3 shell on PATH through the VFS, script from a file on stdin."""
    fn = os.path.join(workdir, f"script-{label.replace('/', '_').replace(' ', '_')}.sql")
    with open(fn, "w") as f:
        f.write(cli_prelude(path) + sql)
    with open(fn) as stdin:
        return spawn([SQLITE3, "-batch"], stdin=stdin, stdout=subprocess.PIPE,
                     stderr=subprocess.PIPE, text=True)


# --------------------------------------------------------------------------
# command line

def wait_caught_up_cli(api, expect, timeout):
    """For tools/demo: wait until /api/databases lists >= expect databases, all
    with txid > 0 and replicatedTxid == txid on two polls in a row."""
    deadline = time.monotonic() + timeout
    streak, prev, shown = 0, None, 0.0
    while True:
        try:
            with urllib.request.urlopen(api.rstrip("/") + "/api/databases", timeout=10) as r:
                dbs = json.loads(r.read().decode()).get("databases", [])
        except Exception as e:  # noqa: BLE001
            dbs, err = [], str(e)
        else:
            err = None
        lag = [x for x in dbs if not (x.get("txid") and x.get("replicatedTxid") == x.get("txid"))]
        state = sorted((x.get("tenantId"), x.get("databaseName"), x.get("txid")) for x in dbs)
        done = not err and len(dbs) >= expect and not lag
        streak = streak + 1 if done and state == prev else (1 if done else 0)
        prev = state
        if streak >= 2:
            print(f"  caught up: {len(dbs)} databases, replicatedTxid == txid for all")
            return 0
        if time.monotonic() - shown > 2:
            shown = time.monotonic()
            print(f"  waiting: {len(dbs)}/{expect} databases listed, {len(lag)} lagging"
                  + (f" ({err})" if err else "") + "".join(
                      f"\n    {x.get('tenantId')}/{x.get('databaseName')}: txid {x.get('txid')}"
                      f" replicated {x.get('replicatedTxid')} lagMs {x.get('lagMs')}"
                      for x in lag[:5]), flush=True)
        if time.monotonic() > deadline:
            print(f"  NOT caught up within {timeout:.0f}s", flush=True)
            return 1
        time.sleep(0.5)


def _cli(argv):
    import argparse
    ap = argparse.ArgumentParser(prog="twtest.py")
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("py-writer")
    w.add_argument("--db", required=True)
    w.add_argument("--seconds", type=float, default=3)
    w.add_argument("--seed", type=int, default=1)
    w.add_argument("--tag", default="py")
    c = sub.add_parser("cli-script")
    c.add_argument("--seconds", type=float, default=3)
    c.add_argument("--seed", type=int, default=1)
    c.add_argument("--tag", default="cli")
    s = sub.add_parser("snapshot")
    s.add_argument("live")
    s.add_argument("out")
    f = sub.add_parser("free-port")
    wc = sub.add_parser("wait-caught-up")
    wc.add_argument("api", help="http://127.0.0.1:PORT")
    wc.add_argument("--expect", type=int, default=0, help="number of databases")
    wc.add_argument("--timeout", type=float, default=120)
    k = sub.add_parser("compare")
    k.add_argument("live")
    k.add_argument("restored")
    a = ap.parse_args(argv)
    try:
        if a.cmd == "py-writer":
            n = py_writer(a.db, a.seconds, a.seed, a.tag)
            print(f"{a.tag}: {n} transactions on {a.db}")
        elif a.cmd == "cli-script":
            sys.stdout.write(cli_script(a.seconds, a.seed, a.tag))
        elif a.cmd == "snapshot":
            snapshot(a.live, a.out)
        elif a.cmd == "free-port":
            print(free_port())
        elif a.cmd == "wait-caught-up":
            return wait_caught_up_cli(a.api, a.expect, a.timeout)
        elif a.cmd == "compare":
            ok, detail = compare(a.live, a.restored)
            print("equal" if ok else f"DIFFERENT: {detail}")
            return 0 if ok else 1
    except TestFailure as e:
        print(f"twtest: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_cli(sys.argv[1:]))
