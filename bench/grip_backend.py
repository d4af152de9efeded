#!/usr/bin/env python3
"""Tiny GRIP backend for the fan-out benchmark (bench/fanout.sh).

Pushpin turns each websocket's activity into HTTP POSTs with
`Content-Type: application/websocket-events` (its WebSocket-over-HTTP
protocol). On OPEN this backend accepts the connection, enables the GRIP
extension (`Sec-WebSocket-Extensions: grip; message-prefix=""`, so control
messages carry a `c:` prefix and ordinary ones none), subscribes the
connection to the channel named by the `key` query parameter, and sends the
client `{"type":"subscribed","key":K}`, which reaches it after the
subscription is in place (the same confirmation olive gives). CLOSE is
echoed; anything else the client sends is ignored.

    bench/grip_backend.py PORT
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


def event(kind, content=None):
    if content is None:
        return f"{kind}\r\n".encode()
    data = content.encode()
    return f"{kind} {len(data):x}\r\n".encode() + data + b"\r\n"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive with pushpin

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        out = b""
        headers = {}
        if body.startswith(b"OPEN\r\n"):
            key = parse_qs(urlsplit(self.path).query).get("key", ["olive.bench.item.0"])[0]
            headers["Sec-WebSocket-Extensions"] = 'grip; message-prefix=""'
            out += event("OPEN")
            out += event("TEXT", "c:" + json.dumps({"type": "subscribe", "channel": key}))
            out += event("TEXT", json.dumps({"type": "subscribed", "key": key}, separators=(",", ":")))
        elif b"CLOSE" in body.split(b"\r\n", 1)[0]:
            out += event("CLOSE")
        self.send_response(200)
        self.send_header("Content-Type", "application/websocket-events")
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def do_GET(self):  # readiness probe
        self.send_response(200)
        self.send_header("Content-Length", "3")
        self.end_headers()
        self.wfile.write(b"ok\n")

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 18095
    ThreadingHTTPServer.request_queue_size = 1024
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.serve_forever()
