#!/usr/bin/python3
"""Registration and deletion of many databases leaks neither memory nor fds.

Loop, N times: create {root}/leak/dbI.db on disk (a real SQLite file), POST
/api/databases {"tenantId":"leak","databaseName":"dbI"}, DELETE
/api/databases/leak/dbI, remove the file. tenantwald's VmRSS
(/proc/PID/status) and open descriptors (/proc/PID/fd) are measured at the
start, midway and at the end, and printed.

Two phases:
  1. N distinct names. Every name keeps a tombstone (its registry slot, which
     the ring never frees, and a small Db entry showing status "deleted", as
     the API promises until retention): growth is linear but small and bounded
     by --ring-slots. Asserted: fds grow by at most FD_TOL; RSS by at most
     TOMBSTONE_KIB per name.
  2. The same N names again, twice (register, delete): no new slot, no new
     entry. A re-registered database is snapshotted at once (no grace
     period), so the first pass also warms up the snapshot and upload paths
     (sqlite, zstd and curl state per worker thread: a one-time step); over
     the second pass RSS grows by at most FLAT_MIB and fds by at most FD_TOL.
     This is the leak check proper: registration/deletion leaks nothing.

N is 10,000 in phase 1 (about 10 s here; TENANTWAL_LEAK_N=N to change it) and
N2 = min(N, 1,500) in phase 2 (TENANTWAL_LEAK_N2): each re-registration there is
a snapshot uploaded to s3rver (~17 ms a cycle here, 10,000 of them took 170 s a
pass and timed the test out in CI); 1,500 still shows a leak of 3 KiB a cycle.
"""

import http.client
import json
import os
import socket
import sqlite3
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import twtest as tw  # noqa: E402

N = int(os.environ.get("TENANTWAL_LEAK_N", "10000"))
N2 = min(N, int(os.environ.get("TENANTWAL_LEAK_N2", "1500")))
FD_TOL = 4          # files (non-socket fds) after a quiet second
SOCK_MAX = 16       # sockets: API listener + client, S3 keep-alive (one per worker thread)
TOMBSTONE_KIB = 6
FLAT_MIB = 4




def fds(pid):
    """(all open fds, of which sockets)."""
    n = socks = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        n += 1
        socks += target.startswith("socket:")
    return n, socks


class Api:
    """One keep-alive HTTP connection (what an operator's client would use)."""

    def __init__(self, port):
        self.port = port
        self.c = self.connect()

    def connect(self):
        # TCP_NODELAY: http.client sends headers and body in two writes; with
        # Nagle and delayed ACKs each request would take 40 ms.
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        c.connect()
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return c

    def call(self, method, path, body=None):
        for attempt in range(3):
            try:
                self.c.request(method, path, body=json.dumps(body) if body is not None else None,
                               headers={"Content-Type": "application/json"})
                r = self.c.getresponse()
                return r.status, r.read()
            except (http.client.HTTPException, ConnectionError, OSError):
                self.c.close()
                self.c = self.connect()
                if attempt == 2:
                    raise
        return None, None


def cycle(api, root, template, i):
    name = f"db{i}"
    path = os.path.join(root, "leak", name + ".db")
    with open(path, "wb") as f:
        f.write(template)
    st, body = api.call("POST", "/api/databases", {"tenantId": "leak", "databaseName": name})
    if st != 201:
        tw.fail(f"POST leak/{name}: HTTP {st} {body[:300]!r}")
    st, body = api.call("DELETE", f"/api/databases/leak/{name}")
    if st != 200:
        tw.fail(f"DELETE leak/{name}: HTTP {st} {body[:300]!r}")
    os.unlink(path)


def test():
    tw.require_s3()
    tw.require_built(tw.TENANTWALD)
    d = tw.Daemon("leak", extra_args=["--bypass-check-interval", "0"]).start()
    pid = d.proc.pid
    os.makedirs(os.path.join(d.root, "leak"), exist_ok=True)
    tpl = os.path.join(d.workdir, "template.db")
    c = sqlite3.connect(tpl)
    c.execute("CREATE TABLE t(x)")
    c.execute("INSERT INTO t VALUES (1)")
    c.commit()
    c.close()
    with open(tpl, "rb") as f:
        template = f.read()
    api = Api(d.port)
    # Warm up (allocator arenas, thread stacks, the API's worker threads).
    for i in range(50):
        cycle(api, d.root, template, N + i)
    time.sleep(1)
    table = []

    def sample(label, settle=False):
        if settle:  # let snapshots of just-registered databases finish or abort
            time.sleep(2)
        n, socks = fds(pid)
        row = (label, tw.rss_kib(pid), n, socks)
        table.append(row)
        tw.log(f"{label}: VmRSS {row[1]} KiB, {n} open fds ({socks} sockets)")
        return row

    s0 = sample("start", settle=True)
    t0 = time.monotonic()
    for i in range(N):
        cycle(api, d.root, template, i)
        if i == N // 2:
            sample(f"phase 1 midway ({i + 1} distinct names)")
    el1 = time.monotonic() - t0
    s1 = sample(f"phase 1 end ({N} distinct names, {el1:.1f}s, {2 * N / el1:.0f} requests/s)",
                settle=True)
    for rnd in ("a", "b"):
        t0 = time.monotonic()
        for i in range(N2):
            cycle(api, d.root, template, i)
            if i == N2 // 2:
                sample(f"phase 2{rnd} midway ({i + 1} names again)")
        el2 = time.monotonic() - t0
        last = sample(f"phase 2{rnd} end ({N2} names again, {el2:.1f}s)", settle=True)
        if rnd == "a":
            s2a = last
    s2 = last

    h = d.api("/api/health")
    tw.log(f"ring slots used {h['ring']['slotsUsed']} of {h['ring']['slotCount']}; "
           f"databasesByStatus {h['databasesByStatus']}")
    print("\n    %-62s %12s %8s %8s" % ("point", "VmRSS KiB", "fds", "sockets"))
    for label, r, n, k in table:
        print("    %-62s %12d %8d %8d" % (label, r, n, k))
    print()
    tw.check(h["databasesByStatus"].get("deleted", 0) == N + 50
             and h["ring"]["slotsUsed"] <= N + 50 + 5,
             f"{N + 50} deleted databases, {h['ring']['slotsUsed']} slots (one per name, reused "
             f"when a name comes back)")
    per_name = (s1[1] - s0[1]) / N
    files = [r[2] - r[3] for r in (s0, s1, s2a, s2)]
    tw.check(max(files) - files[0] <= FD_TOL,
             f"open files (non-socket fds) bounded: {' -> '.join(map(str, files))} at the quiet "
             f"points (tolerance +{FD_TOL})")
    socks = [r[3] for r in (s0, s1, s2a, s2)]
    tw.check(max(socks) <= SOCK_MAX and s2[2] - s2a[2] <= FD_TOL,
             f"sockets bounded: {' -> '.join(map(str, socks))} (at most {SOCK_MAX}: API and S3 "
             f"keep-alive connections); phase 2b fds {s2a[2]} -> {s2[2]}")
    tw.check(per_name <= TOMBSTONE_KIB,
             f"phase 1 (distinct names): RSS +{s1[1] - s0[1]} KiB = {per_name:.2f} KiB per deleted "
             f"name (tombstone: slot + Db entry; tolerance {TOMBSTONE_KIB} KiB)")
    tw.log(f"phase 2a (first re-registration, warms up snapshots/uploads): RSS {s1[1]} -> "
           f"{s2a[1]} KiB ({s2a[1] - s1[1]:+d} KiB)")
    tw.check(s2[1] - s2a[1] <= FLAT_MIB * 1024,
             f"phase 2b (same names again): RSS {s2a[1]} -> {s2[1]} KiB "
             f"({s2[1] - s2a[1]:+d} KiB for {N2} registrations + deletions; tolerance {FLAT_MIB} "
             f"MiB): no leak per registration/deletion")
    tw.check(d.alive(), "tenantwald still running")


if __name__ == "__main__":
    tw.main(test)
