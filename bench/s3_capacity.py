#!/usr/bin/python3
"""bench/s3_capacity.py: how many PUTs per second the S3 endpoint itself takes.

    bench/s3_capacity.py [--threads 16] [--size 5000] [--seconds 10]

An independent client (the botocore that Debian's awscli bundles, SigV4
signed, one connection per thread) PUTs objects of --size bytes from
--threads threads for --seconds, under a throwaway prefix it deletes
afterwards, and prints PUTs/s and the latency p50/p99/max. It separates
what the S3 server can do on this machine from what tenantwald does: the
scale benchmark needs N PUTs/s for N active databases at a 1 s sync
interval (docs/BENCHMARKS.md, "Scale").

Reads AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION
and TENANTWAL_TEST_BUCKET (as `tools/s3rver start DIR` writes them to
DIR/env). With S3RVER_PID set (the same env file), also reports the CPU the
server used (cores): s3rver is one Node process, so ~1.0 means the server is
the limit. And the CPU of this client, which must stay below what the
machine has left for the number to be the server's. Prints one JSON line.
"""

import argparse
import json
import os
import statistics
import sys
import threading
import time

sys.path.insert(0, "/usr/lib/python3/dist-packages")
from awscli.botocore.config import Config  # noqa: E402
from awscli.botocore.session import Session  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--size", type=int, default=5000)
    ap.add_argument("--seconds", type=float, default=10)
    a = ap.parse_args()
    for k in ("AWS_ENDPOINT_URL", "TENANTWAL_TEST_BUCKET"):
        if not os.environ.get(k):
            sys.exit(f"s3_capacity: {k} is not set (source the env file of tools/s3rver start)")
    if a.threads < 1 or a.size < 0 or a.seconds <= 0:
        sys.exit("s3_capacity: --threads >= 1, --size >= 0, --seconds > 0")
    bucket = os.environ["TENANTWAL_TEST_BUCKET"]
    prefix = f"bench/s3cap-{os.getpid()}/"
    client = Session().create_client(
        "s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"],
        region_name=os.environ.get("AWS_REGION", "us-east-1"),
        config=Config(max_pool_connections=a.threads, retries={"max_attempts": 1},
                      s3={"addressing_style": "path"}))
    body = os.urandom(a.size)
    lat, errors, keys = [], [], []
    lock = threading.Lock()
    deadline = time.monotonic() + a.seconds

    def worker(t):
        i = 0
        while time.monotonic() < deadline:
            key = f"{prefix}{t}/{i}"
            t0 = time.monotonic()
            try:
                client.put_object(Bucket=bucket, Key=key, Body=body)
                with lock:
                    lat.append(time.monotonic() - t0)
                    keys.append(key)
            except Exception as e:  # noqa: BLE001
                with lock:
                    errors.append(repr(e)[:200])
            i += 1

    def cpu(pid):
        try:
            f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return None

    spid = os.environ.get("S3RVER_PID")
    s0, c0 = cpu(spid) if spid else None, cpu(os.getpid())
    start = time.monotonic()
    ths = [threading.Thread(target=worker, args=(t,)) for t in range(a.threads)]
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    elapsed = time.monotonic() - start
    s1, c1 = cpu(spid) if spid else None, cpu(os.getpid())
    # Clean up (one DELETE per key: s3rver refuses some DeleteObjects bodies).
    def deleter(part):
        for x in part:
            try:
                client.delete_object(Bucket=bucket, Key=x)
            except Exception:  # noqa: BLE001
                pass
    dts = [threading.Thread(target=deleter, args=(keys[t::a.threads],))
           for t in range(a.threads)]
    for th in dts:
        th.start()
    for th in dts:
        th.join()
    lat.sort()
    res = {"bench": "s3_capacity", "threads": a.threads, "size": a.size,
           "seconds": round(elapsed, 2), "puts": len(lat), "errors": len(errors),
           "puts_per_s": round(len(lat) / elapsed, 1),
           "p50_ms": round(statistics.median(lat) * 1000, 1) if lat else None,
           "p99_ms": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000, 1) if lat
           else None,
           "max_ms": round(lat[-1] * 1000, 1) if lat else None,
           "server_cores": round((s1 - s0) / elapsed, 2) if s0 is not None and s1 else None,
           "client_cores": round((c1 - c0) / elapsed, 2),
           "load": open("/proc/loadavg").read().split()[:3]}
    if errors:
        res["first_error"] = errors[0]
    print(json.dumps(res))
    return 1 if not lat else 0


if __name__ == "__main__":
    sys.exit(main())
