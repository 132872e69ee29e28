#!/usr/bin/env python3
"""hello-py: a small HTTP service in plain Python, deployable by signalbox as a bundle.

It serves its version on `/`, answers `/healthz` once listening, and exposes the conventional
Prometheus HTTP metrics on `/metrics` (`http_requests_total` by `status`, the
`http_request_duration_seconds` histogram). `HELLO_ERROR_RATE` (0 to 1) makes that share of
requests answer 500, so a bad build is easy to make. SIGTERM drains: it stops accepting, finishes
the requests in flight, and exits.
"""

import http.server
import json
import os
import random
import signal
import socketserver
import threading
import time

PORT = int(os.environ["PORT"])
with open("VERSION") as f:
    VERSION = f.read().strip()
ERROR_RATE = float(os.environ.get("HELLO_ERROR_RATE", "0"))
BOUNDS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0]

lock = threading.Lock()
by_status = {}
buckets = [0] * len(BOUNDS)
observed = {"count": 0, "sum": 0.0}


def observe(status, seconds):
    with lock:
        by_status[status] = by_status.get(status, 0) + 1
        for i, bound in enumerate(BOUNDS):
            if seconds <= bound:
                buckets[i] += 1
        observed["count"] += 1
        observed["sum"] += seconds


def exposition():
    with lock:
        lines = ["# TYPE http_requests_total counter"]
        lines += [f'http_requests_total{{status="{s}"}} {n}' for s, n in sorted(by_status.items())]
        lines.append("# TYPE http_request_duration_seconds histogram")
        lines += [f'http_request_duration_seconds_bucket{{le="{b}"}} {n}' for b, n in zip(BOUNDS, buckets)]
        lines.append(f'http_request_duration_seconds_bucket{{le="+Inf"}} {observed["count"]}')
        lines.append(f'http_request_duration_seconds_sum {observed["sum"]}')
        lines.append(f'http_request_duration_seconds_count {observed["count"]}')
    return "\n".join(lines) + "\n"


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body, content_type="text/plain"):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/healthz":
            return self.reply(200, "ok\n")
        if self.path == "/metrics":
            return self.reply(200, exposition(), "text/plain; version=0.0.4")
        started = time.monotonic()
        status = 500 if random.random() < ERROR_RATE else 200
        self.reply(status, json.dumps({"service": "hello-py", "version": VERSION}) + "\n", "application/json")
        observe(status, time.monotonic() - started)


class Server(http.server.ThreadingHTTPServer):
    def server_bind(self):
        # HTTPServer looks its own name up in DNS here, which on a host without a resolver
        # holds the start up for the resolver's whole timeout.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


server = Server((os.environ.get("SIGNALBOX_ADDRESS", "127.0.0.1"), PORT), Handler)
server.daemon_threads = True


def drain(signum, frame):
    threading.Thread(target=server.shutdown).start()


signal.signal(signal.SIGTERM, drain)
server.serve_forever()
server.server_close()
