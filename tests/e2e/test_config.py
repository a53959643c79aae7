#!/usr/bin/python3
"""--config: hot reload on SIGHUP and per-tenant replica targets.

tenantwald starts with a TOML file that sends tenant "beta" to a second
bucket (created here in s3rver with /usr/bin/aws) under its own prefix, with
credentials given by reference (env:TWCFGB -> $TWCFGB_ACCESS_KEY_ID, ...),
while tenant "alpha" uses the default replica. Writers run on both tenants
throughout. Checked:
  * GET /api/tenants/{t} shows the file's settings and their sources; the
    credentials reference is shown, the secret never (API, log);
  * SIGHUP with a valid changed file applies it (syncInterval, rate limit,
    snapshotInterval visible in GET; audit lines with old and new values);
  * SIGHUP with an invalid file is rejected whole: /api/health shows the
    error (status degraded), the old settings stay; a good file clears it;
  * changing beta's replica prefix on SIGHUP starts a new generation there;
  * objects land where configured (aws s3 ls): alpha only in the default
    replica, beta in the second bucket (old and new prefix), and restore from
    each location equals the live database (no lost frame).
"""

import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import twtest as tw  # noqa: E402

WRITE_SECONDS = 14


def aws(*args):
    env = dict(os.environ, AWS_PAGER="")
    p = subprocess.run(tw.aws_args() + list(args), capture_output=True, text=True, env=env,
                       timeout=120)
    if p.returncode != 0:
        tw.fail(f"aws {' '.join(args)}: {p.stderr.strip()}")
    return p.stdout


def write_cfg(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)


def cfg_text(bucket2, beta_prefix, beta_sync="300ms", alpha_extra=""):
    return f"""# tenantwald test configuration
[defaults]
syncInterval = "1s"
retention = "14d"

[tenants.alpha]
{alpha_extra}

[tenants.beta]
syncInterval = "{beta_sync}"
replica = {{ url = "s3://{bucket2}/{beta_prefix}", credentials = "env:TWCFGB" }}
"""


def hup_and_wait(d, pred, what, timeout=10):
    before = d.api("/api/health")["config"]["lastReloadAt"]
    d.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        h = d.api("/api/health")
        if h["config"]["lastReloadAt"] != before and pred(h):
            return h
        time.sleep(0.1)
    tw.fail(f"SIGHUP: {what} not seen within {timeout}s; log:\n{d.log_tail()}")


def test():
    tw.require_s3()
    tw.require_built(tw.EXT + ".so", tw.TENANTWALD, tw.CLI)
    bucket2 = f"tw-cfg-{os.getpid()}-{int(time.time()) % 100000}"
    aws("s3", "mb", f"s3://{bucket2}")
    tw.at_cleanup(lambda: subprocess.run(tw.aws_args() + ["s3", "rb", "--force", f"s3://{bucket2}"],
                                         capture_output=True, timeout=120))
    # beta's credentials, by reference (s3rver accepts the test credentials).
    secret = os.environ["AWS_SECRET_ACCESS_KEY"]
    os.environ["TWCFGB_ACCESS_KEY_ID"] = os.environ["AWS_ACCESS_KEY_ID"]
    os.environ["TWCFGB_SECRET_ACCESS_KEY"] = secret
    work = tw.tempdir("config")
    cfg = os.path.join(work, "tenantwald.toml")
    write_cfg(cfg, cfg_text(bucket2, "tenant-b"))
    d = tw.Daemon("config", workdir=work, extra_args=["--config", cfg]).start()
    for t in ("alpha", "beta"):
        os.makedirs(os.path.join(d.root, t), exist_ok=True)

    b = d.api("/api/tenants/beta")
    tw.check(b["replica"] == {"url": f"s3://{bucket2}/tenant-b", "endpoint": None,
                              "region": None, "credentials": "env:TWCFGB"}
             and b["sources"]["replica"] == "config-tenant"
             and b["syncInterval"] == "300ms" and b["sources"]["syncInterval"] == "config-tenant"
             and b["retention"] == "14d" and b["sources"]["retention"] == "config-defaults"
             and b["s3Path"] == f"s3://{bucket2}/tenant-b/tenants/beta/",
             f"GET /api/tenants/beta shows the file's settings: {b['sources']}")
    a = d.api("/api/tenants/alpha")
    tw.check(a["replica"]["url"] == d.replica and a["sources"]["replica"] == "flag"
             and a["snapshotInterval"] == "1d" and a["sources"]["snapshotInterval"] == "default",
             f"alpha: default replica (--replica), built-in snapshotInterval 1d (24h): {a['sources']}")

    # Writers on both tenants for the whole test.
    pairs = [("alpha", "a1"), ("beta", "b1")]
    for t, db in pairs:
        tw.sqlite3_cli(d.db_path(t, db), tw.SCHEMA)
    procs = []
    for i, (t, db) in enumerate(pairs):
        p = tw.spawn([tw.PYTHON, os.path.join(tw.HERE, "twtest.py"), "py-writer",
                      "--db", d.db_path(t, db), "--seconds", str(WRITE_SECONDS),
                      "--seed", str(7000 + i), "--tag", f"cfg-{t}"],
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append((f"writer {t}/{db}", p))
    t_start = time.monotonic()
    time.sleep(3)
    gen0 = d.db_entry("beta", "b1")["generation"]

    # 1. A valid changed file applies on SIGHUP.
    write_cfg(cfg, cfg_text(bucket2, "tenant-b", beta_sync="2s",
                            alpha_extra='rateLimitRequestsPerSecond = 500\n'
                                        'snapshotInterval = "1h"'))
    hup_and_wait(d, lambda h: h["config"]["lastReloadOk"], "reload ok")
    b, a = d.api("/api/tenants/beta"), d.api("/api/tenants/alpha")
    tw.check(b["syncInterval"] == "2s" and a["rateLimitRequestsPerSecond"] == 500
             and a["snapshotInterval"] == "1h" and a["sources"]["snapshotInterval"] == "config-tenant",
             "SIGHUP with a changed file: beta syncInterval 2s, alpha 500 req/s and "
             "snapshotInterval 1h visible in GET")

    # 2. An invalid file is rejected whole; the old settings stay.
    write_cfg(cfg, cfg_text(bucket2, "tenant-b", beta_sync="50ms") + 'retention = "forever"\n')
    h = hup_and_wait(d, lambda h: not h["config"]["lastReloadOk"], "rejection")
    tw.check(h["status"] == "degraded" and "retention" in (h["config"]["lastError"] or ""),
             f"invalid file rejected, visible in /api/health: {h['config']['lastError']}")
    b = d.api("/api/tenants/beta")
    tw.check(b["syncInterval"] == "2s",
             "the rejected file changed nothing (beta syncInterval still 2s, not 50ms)")
    write_cfg(cfg, "[tenants.beta\nsyncInterval = 1\n")
    h = hup_and_wait(d, lambda h: h["config"]["failedReloads"] >= 2, "second rejection")
    tw.check("not valid TOML" in h["config"]["lastError"],
             f"malformed TOML rejected: {h['config']['lastError']}")

    # 3. A valid file again, moving beta to a new prefix: a new generation there.
    write_cfg(cfg, cfg_text(bucket2, "tenant-b2", beta_sync="300ms"))
    h = hup_and_wait(d, lambda h: h["config"]["lastReloadOk"], "reload ok")
    tw.check(h["status"] == "ok" and h["config"]["lastError"] is None,
             "a good file clears the error")
    deadline = time.monotonic() + 30
    while d.db_entry("beta", "b1")["generation"] in (gen0, ""):
        if time.monotonic() > deadline:
            tw.fail(f"beta/b1 did not start a new generation after its replica moved; "
                    f"log:\n{d.log_tail()}")
        time.sleep(0.3)
    gen1 = d.db_entry("beta", "b1")["generation"]
    tw.log(f"beta/b1: generation {gen0} -> {gen1} after the replica moved to tenant-b2")

    outs = tw.wait_all(procs, 120, "python writer")
    tw.log(f"writers done after {time.monotonic() - t_start:.1f}s: "
           + "; ".join(o.strip().splitlines()[-1] if o.strip() else "" for o in outs.values()))
    d.wait_caught_up(pairs, timeout=90)

    # Where the objects are.
    default_keys = [k for k, _ in tw.list_objects(d.replica)]
    b2_keys = [k for k, _ in tw.list_objects(f"s3://{bucket2}/")]
    pa = f"{d.prefix}/tenants/alpha/a1/"
    tw.check(any(k.startswith(pa + "snapshots/") for k in default_keys)
             and any(k.startswith(pa + "wal/") for k in default_keys),
             f"alpha/a1: snapshots/ and wal/ in the default replica ({pa})")
    tw.check(not any("/alpha/" in k for k in b2_keys), "no alpha object in the second bucket")
    tw.check(not any(k.startswith(f"{d.prefix}/tenants/beta/") for k in default_keys),
             "no beta object in the default replica")
    for pre, gen in (("tenant-b", gen0), ("tenant-b2", gen1)):
        base = f"{pre}/tenants/beta/b1/"
        mine = [k for k in b2_keys if k.startswith(base)]
        tw.check(any(k.startswith(base + f"snapshots/{gen}/") for k in mine),
                 f"beta/b1 generation {gen} has its snapshot under s3://{bucket2}/{base} "
                 f"({len(mine)} objects)")
    tw.check(any(k.startswith(f"tenant-b2/tenants/beta/b1/wal/{gen1}/") for k in b2_keys),
             "beta/b1's segments after the move are in the new prefix")

    # Restore from each location equals live.
    outdir = tw.tempdir("config-restore")
    tw.restore_and_compare(d, "alpha", "a1", outdir)
    out = os.path.join(outdir, "beta.db")
    tw.restore(f"s3://{bucket2}/tenant-b2", "beta", "b1", out)
    ok, detail = tw.compare(d.db_path("beta", "b1"), out)
    tw.check(ok, f"beta/b1 restored from s3://{bucket2}/tenant-b2 equals live: {detail}")
    old = os.path.join(outdir, "beta-old.db")
    tw.restore(f"s3://{bucket2}/tenant-b", "beta", "b1", old)
    tw.check(tw.integrity(old) == "ok",
             f"the old prefix still restores (generation {gen0}, integrity ok)")

    # Audit and secrets.
    with open(d.log_path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    lines = [json.loads(ln) for ln in text.splitlines() if ln.startswith("{")]
    st = [o for o in lines if o.get("action") == "settings" and o.get("source") == "config"]
    tw.check(any(o["tenant"] == "beta" and o["setting"] == "syncInterval" and o["old"] == "300ms"
                 and o["new"] == "2s" for o in st),
             f"audit: {len(st)} settings lines from config reloads, with old and new values")
    if len(secret) >= 6:
        tw.check(secret not in text, "the secret key never appears in tenantwald's log")
        with_api = json.dumps([d.api("/api/tenants"), d.api("/api/health")])
        tw.check(secret not in with_api, "the secret key never appears in the API")


if __name__ == "__main__":
    tw.main(test)
