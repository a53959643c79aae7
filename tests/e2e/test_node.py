#!/usr/bin/python3
"""e2e-node: the Node example (examples/node: better-sqlite3 12 from npm)
loads the extension and writes through the VFS while tenantwald runs; the
restored database equals the live one (sqldiff empty, integrity_check ok).

`npm ci` runs in a temporary copy of examples/node (package.json and the
pinned package-lock.json). If it cannot fetch or build better-sqlite3 the test
FAILS with npm's output: it never passes without having run Node."""
import json
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import twtest as tw  # noqa: E402

EXAMPLE = os.path.join(tw.SOURCE, "examples", "node")


def npm_ci(workdir):
    app = os.path.join(workdir, "node-app")
    os.makedirs(app)
    for f in ("package.json", "package-lock.json", "writer.js"):
        shutil.copy(os.path.join(EXAMPLE, f), app)
    env = dict(os.environ)
    # No prebuilt binary can be downloaded here (GitHub is unreachable):
    # node-gyp builds better-sqlite3 against Debian's Node headers.
    if os.path.isdir("/usr/include/node"):
        env.setdefault("npm_config_nodedir", "/usr")
    tw.log("npm ci (better-sqlite3; may build from source, a few minutes)")
    try:
        p = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=app, env=env,
                           capture_output=True, text=True, timeout=1200)
    except FileNotFoundError:
        tw.fail("npm is not installed (tools/setup-deps installs nodejs and npm)")
    except subprocess.TimeoutExpired:
        tw.fail("npm ci did not finish within 20 minutes")
    if p.returncode != 0:
        tw.fail(f"npm ci failed (status {p.returncode}); cannot run the Node example:\n"
                f"{p.stdout[-2000:]}\n{p.stderr[-4000:]}")
    probe = subprocess.run(["node", "-e", "require('better-sqlite3')"], cwd=app,
                           capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        tw.fail(f"better-sqlite3 does not load after npm ci: {probe.stderr.strip()}")
    tw.log("npm ci done")
    return app


def test():
    tw.require_s3()
    tw.require_built(tw.EXT + ".so", tw.TENANTWALD, tw.CLI)
    work = tw.tempdir("node")
    app = npm_ci(work)
    d = tw.Daemon("node")
    d.start()
    dbs = [("nodeco", "orders"), ("nodeco", "ledger")]
    outputs = {}
    for i, (t, db) in enumerate(dbs):
        path = d.db_path(t, db)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        p = subprocess.run(["node", os.path.join(app, "writer.js"), "--ext", tw.EXT,
                            "--db", path, "--txns", str(40 + 20 * i), "--rows", "25"],
                           cwd=app, capture_output=True, text=True, timeout=300)
        if p.returncode != 0:
            tw.fail(f"node writer.js {t}/{db} failed (status {p.returncode}):\n"
                    f"{p.stdout}\n{p.stderr}")
        outputs[(t, db)] = json.loads(p.stdout.strip().splitlines()[-1])
        tw.check(outputs[(t, db)]["rows"] == 25 * (40 + 20 * i),
                 f"{t}/{db}: Node wrote {outputs[(t, db)]['rows']} rows through the VFS "
                 f"(tenantwal_status: {outputs[(t, db)]['status']})")
        st = outputs[(t, db)]["status"]
        tw.check(st is not None and st["local_txid"] > 0,
                 f"{t}/{db}: the VFS captured the Node transactions (local_txid "
                 f"{st and st['local_txid']})")
    min_txid = {k: v["status"]["local_txid"] for k, v in outputs.items()}
    d.wait_caught_up(dbs, timeout=120, min_txid=min_txid)
    outdir = tw.tempdir("node-restore")
    for t, db in dbs:
        tw.restore_and_compare(d, t, db, outdir)


if __name__ == "__main__":
    tw.main(test)
