#!/usr/bin/python3
"""A counting HTTP proxy in front of an S3 endpoint (bench only).

    s3count.py UPSTREAM_URL PORTFILE

Listens on 127.0.0.1 (free port, written to PORTFILE), forwards every request
unchanged to UPSTREAM_URL (s3rver does not verify SigV4 signatures, so the
Host header may differ), and counts requests by kind: PUT, GET, HEAD, DELETE,
LIST (GET on the bucket with list-type/prefix/delimiter), POST. GET
/__counts (no upstream request) returns the counts as JSON.
"""

import http.client
import http.server
import json
import socketserver
import sys
import threading
import urllib.parse

UP = urllib.parse.urlsplit(sys.argv[1])
COUNTS = {}
LOCK = threading.Lock()
LOCAL = threading.local()


def kind(method, path):
    u = urllib.parse.urlsplit(path)
    parts = [p for p in u.path.split("/") if p]
    if method == "GET" and len(parts) <= 1:
        return "LIST"
    return method


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def upstream(self):
        c = getattr(LOCAL, "conn", None)
        if c is None:
            c = http.client.HTTPConnection(UP.hostname, UP.port, timeout=120)
            LOCAL.conn = c
        return c

    def handle_any(self):
        if self.path == "/__counts":
            with LOCK:
                body = json.dumps(COUNTS).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        k = kind(self.command, self.path)
        with LOCK:
            COUNTS[k] = COUNTS.get(k, 0) + 1
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else None
        headers = {h: v for h, v in self.headers.items()
                   if h.lower() not in ("connection", "keep-alive", "transfer-encoding",
                                        "expect")}
        for attempt in range(2):
            try:
                c = self.upstream()
                c.request(self.command, self.path, body=body, headers=headers)
                r = c.getresponse()
                data = r.read()
                break
            except (http.client.HTTPException, OSError):
                LOCAL.conn = None
                if attempt:
                    self.send_error(502)
                    return
        self.send_response(r.status, r.reason)
        for h, v in r.getheaders():
            if h.lower() not in ("connection", "keep-alive", "transfer-encoding",
                                 "content-length"):
                self.send_header(h, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_any


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    request_queue_size = 256


srv = Server(("127.0.0.1", 0), Handler)
with open(sys.argv[2] + ".tmp", "w") as f:
    f.write(str(srv.server_address[1]))
import os  # noqa: E402
os.rename(sys.argv[2] + ".tmp", sys.argv[2])
srv.serve_forever()
