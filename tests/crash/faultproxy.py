#!/usr/bin/python3
"""tests/crash/faultproxy.py: a fault-injecting HTTP proxy for S3 (loopback only).

    faultproxy.py --upstream http://127.0.0.1:PORT [--port 0] [--seed S]
                  [--fault-rate 0.35] [--max-stall 6]

Sits between tenantwald (--endpoint http://127.0.0.1:PROXYPORT) and an S3
server. Every request is read whole (Content-Length or chunked body, after
answering `Expect: 100-continue`), then one action is drawn from a random
generator seeded with --seed (printed at start; one generator for the whole
run, so the sequence of actions repeats with the seed, although which request
gets which action depends on thread timing):

  pass      forwarded to the upstream, the answer copied back
  500       500 InternalError (S3 XML error body); not forwarded
  503       503 ServiceUnavailable; not forwarded
  slowdown  503 SlowDown; not forwarded
  reset     the client connection is reset (RST, SO_LINGER 0); not forwarded
  stall     sleeps 1..--max-stall seconds, then forwarded
  truncate  forwarded, but the answer's body is cut short (the full
            Content-Length is announced, about half the bytes sent) and the
            connection closed; an answer without a body gets a fake XML body
            announced at 200 bytes and cut after 40

With probability 1 - --fault-rate a request passes. Listens on 127.0.0.1
only. Prints `faultproxy: listening on 127.0.0.1:PORT seed S` first, then one
line per fault; on SIGTERM prints the counts per action as JSON and exits.
SIGUSR1 switches faults off (every request passes), SIGUSR2 on again.
"""

import argparse
import http.client
import http.server
import json
import random
import signal
import socket
import socketserver
import struct
import sys
import threading
import time
import urllib.parse

ACTIONS = ["500", "503", "slowdown", "reset", "stall", "truncate"]


def s3_error(code, message):
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
            f'<Message>{message}</Message><RequestId>faultproxy</RequestId></Error>').encode()


class State:
    def __init__(self, seed, rate, max_stall):
        self.rng = random.Random(seed)
        self.rate = rate
        self.max_stall = max_stall
        self.lock = threading.Lock()
        self.counts = {a: 0 for a in ["pass"] + ACTIONS}
        self.enabled = True

    def draw(self):
        with self.lock:
            if not self.enabled or self.rng.random() >= self.rate:
                action, stall = "pass", 0.0
            else:
                action = self.rng.choice(ACTIONS)
                stall = self.rng.uniform(1.0, self.max_stall)
            self.counts[action] += 1
            return action, stall


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "faultproxy"

    def log_message(self, fmt, *args):  # quiet: faults are printed by do_any
        pass

    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def reply(self, status, body, extra=()):
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def reset(self):
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass

    def forward(self, body):
        conn = http.client.HTTPConnection(st_up.hostname, st_up.port, timeout=120)
        headers = {k: v for k, v in self.headers.items()
                   if k.lower() not in ("connection", "expect", "transfer-encoding",
                                        "content-length", "proxy-connection")}
        if body or self.command in ("PUT", "POST"):
            headers["Content-Length"] = str(len(body))
        conn.request(self.command, self.path, body=body, headers=headers)
        r = conn.getresponse()
        data = r.read()
        conn.close()
        return r.status, r.getheaders(), data

    def do_any(self):
        body = self.read_body()
        action, stall = self.server.state.draw()
        if action != "pass":
            print(f"faultproxy: {action}{f' {stall:.1f}s' if action == 'stall' else ''} "
                  f"{self.command} {self.path[:100]}", flush=True)
        if action == "reset":
            return self.reset()
        if action == "500":
            return self.reply(500, s3_error("InternalError", "injected by faultproxy"))
        if action == "503":
            return self.reply(503, s3_error("ServiceUnavailable", "injected by faultproxy"))
        if action == "slowdown":
            return self.reply(503, s3_error("SlowDown", "Please reduce your request rate."))
        if action == "stall":
            time.sleep(stall)
        try:
            status, headers, data = self.forward(body)
        except (OSError, http.client.HTTPException) as e:
            print(f"faultproxy: upstream failed: {e}", flush=True)
            return self.reset()
        self.send_response(status)
        for k, v in headers:
            if k.lower() not in ("connection", "transfer-encoding", "content-length",
                                 "keep-alive"):
                self.send_header(k, v)
        if action == "truncate":
            fake = data if data else s3_error("Truncated", "x" * 150)[:200]
            announced = len(fake) if data else 200
            cut = max(1, len(fake) // 2) if data else 40
            self.send_header("Content-Length", str(announced))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(fake[:cut])
            self.wfile.flush()
            return self.reset()
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_any


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


st_up = None


def main():
    global st_up
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--fault-rate", type=float, default=0.35)
    ap.add_argument("--max-stall", type=float, default=6.0)
    a = ap.parse_args()
    st_up = urllib.parse.urlparse(a.upstream)
    if st_up.hostname not in ("127.0.0.1", "localhost", "::1"):
        sys.exit("faultproxy: --upstream must be on loopback")
    seed = a.seed if a.seed is not None else random.randrange(1 << 31)
    srv = Server(("127.0.0.1", a.port), Handler)
    srv.state = State(seed, a.fault_rate, a.max_stall)
    print(f"faultproxy: listening on 127.0.0.1:{srv.server_address[1]} seed {seed}", flush=True)

    def on_term(*_):
        print("faultproxy: counts " + json.dumps(srv.state.counts), flush=True)
        sys.stdout.flush()
        threading.Thread(target=srv.shutdown, daemon=True).start()

    def toggle(on):
        def f(*_):
            with srv.state.lock:
                srv.state.enabled = on
            print(f"faultproxy: faults {'on' if on else 'off'}", flush=True)
        return f

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGUSR1, toggle(False))
    signal.signal(signal.SIGUSR2, toggle(True))
    srv.serve_forever()


if __name__ == "__main__":
    main()
