#!/usr/bin/python3
"""The clock steps back across a tenantwald restart (issue 12, situation 4).

tenantwald runs, replicates acme/users (generation G1), stops cleanly, and
starts again under Debian's faketime one day in the past (an NTP correction,
a VM restored). A snapshot requested through the API then starts generation
G2, whose id (top bits: the wall clock) sorts *below* G1's. Asserted:
  * the situation: G2 < G1 as strings;
  * the authority's lineage is [G1, G2] (G2's parent G1);
  * `tenantwal restore` (latest) equals the live database: "latest" follows
    the lineage (before the authority it returned G1's older state, exit 0);
  * `tenantwal restore --generation G1` still gives G1's last state;
  * `tenantwal restore --force -o LIVE` (rolling the live file back while
    tenantwald replicates it, situation 1) is refused with the safe
    procedure, and the live file is unchanged.
Replica: file://.
"""

import json
import os
import shutil
import sys
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import twtest as tw  # noqa: E402


def post(d, path):
    req = urllib.request.Request(d.api_base + path, data=b"", method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status


def test():
    faketime = shutil.which("faketime")
    if not faketime:
        tw.fail("faketime is not installed (tools/setup-deps installs Debian's faketime)")
    replica_dir = tw.tempdir("clockstep-replica")
    d = tw.Daemon("clockstep", replica="file://" + replica_dir)
    d.start()
    path = d.db_path("acme", "users")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    c = tw.connect(path, isolation_level=None)
    c.execute("CREATE TABLE u(id INTEGER PRIMARY KEY, v TEXT)")
    for i in range(10):
        c.execute("INSERT INTO u(v) VALUES (?)", (f"before-{i}",))
    d.wait_caught_up([("acme", "users")], timeout=60)
    g1 = d.db_entry("acme", "users")["generation"]
    d.stop()
    d.exec_prefix = [faketime, "-f", "-1d"]
    d.start()
    tw.check(post(d, "/api/databases/acme/users/snapshot") == 202, "snapshot requested")
    for i in range(10):
        c.execute("INSERT INTO u(v) VALUES (?)", (f"after-{i}",))
    e = d.wait_caught_up([("acme", "users")], timeout=60)[("acme", "users")]
    g2 = e["generation"]
    tw.check(g2 != g1 and g2 < g1, f"the clock stepped back: new generation {g2} sorts below {g1}")
    with open(os.path.join(replica_dir, "tenants", "acme", "users", "authority.json")) as f:
        auth = json.load(f)
    lin = [g["id"] for g in auth["lineage"]]
    tw.check(lin[-2:] == [g1, g2] and auth["lineage"][-1]["parent"] == g1,
             f"lineage {lin}, current {g2} with parent {auth['lineage'][-1]['parent']}")
    work = tw.tempdir("clockstep-work")
    tw.restore_and_compare(d, "acme", "users", work)
    out = os.path.join(work, "g1.db")
    p = __import__("subprocess").run([tw.CLI, "restore", "--replica", d.replica, "--tenant",
                                      "acme", "--db", "users", "-o", out, "--generation", g1],
                                     capture_output=True, text=True)
    tw.check(p.returncode == 0, f"restore --generation {g1}: {p.stderr.strip()}")
    import sqlite3
    n = sqlite3.connect(out).execute("SELECT count(*) FROM u").fetchone()[0]
    tw.check(n == 10, f"generation {g1} still restores its own last state ({n} rows)")
    # Restore over the live file (issue 12, situation 1): refused, file untouched.
    import hashlib
    before = hashlib.sha256(open(path, "rb").read()).hexdigest()
    p = __import__("subprocess").run([tw.CLI, "restore", "--replica", d.replica, "--tenant",
                                      "acme", "--db", "users", "-o", path, "--force",
                                      "--generation", g1],
                                     capture_output=True, text=True)
    after = hashlib.sha256(open(path, "rb").read()).hexdigest()
    tw.check(p.returncode != 0 and "refusing to restore over" in p.stderr and before == after,
             f"restore --force over the live file is refused, the file unchanged: "
             f"{p.stderr.strip()[:160]}...")
    c.close()


if __name__ == "__main__":
    tw.main(test)
