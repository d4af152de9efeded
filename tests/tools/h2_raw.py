"""Sends HTTP/2 requests that a well-behaved client library refuses to
build (connection-specific fields, CR/LF in names and values, a
content-length that disagrees with the body) and prints what came back.

Used by tests/smuggling_h2.rs: python-hyper's h2 with header validation
off (the library h2rs is built on) writes exactly the fields it is given.

    h2_raw.py HOST PORT < cases.json

Each case is {"headers": [[name, value], ...], "body": "text"}; each
result is {"status": int|null, "reset": int|null, "goaway": int|null,
"body": "text"}, one JSON list on stdout. Every case gets a fresh
TLS connection, so one reset cannot hide the next.
"""

import json
import socket
import ssl
import sys

import h2.config
import h2.connection
import h2.events


def send(host, port, headers, body):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    sock = ctx.wrap_socket(socket.create_connection((host, port), timeout=5), server_hostname="localhost")
    config = h2.config.H2Configuration(
        client_side=True,
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
        validate_inbound_headers=False,
    )
    conn = h2.connection.H2Connection(config=config)
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    raw = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in headers]
    conn.send_headers(1, raw, end_stream=not body)
    if body:
        conn.send_data(1, body.encode("latin-1"), end_stream=True)
    sock.sendall(conn.data_to_send())
    result = {"status": None, "reset": None, "goaway": None, "body": ""}
    data = b""
    done = False
    while not done:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            result["timeout"] = True
            break
        if not chunk:
            break
        try:
            events = conn.receive_data(chunk)
        except Exception as e:  # a frame h2 itself refuses
            result["error"] = repr(e)
            break
        for event in events:
            if isinstance(event, h2.events.ResponseReceived):
                result["status"] = int(dict(event.headers)[b":status"])
            elif isinstance(event, h2.events.DataReceived):
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                data += event.data
            elif isinstance(event, h2.events.StreamReset):
                result["reset"] = int(event.error_code)
                done = True
            elif isinstance(event, h2.events.ConnectionTerminated):
                result["goaway"] = int(event.error_code)
                done = True
            elif isinstance(event, h2.events.StreamEnded):
                done = True
        out = conn.data_to_send()
        if out:
            sock.sendall(out)
    result["body"] = data.decode("latin-1")
    sock.close()
    return result


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    cases = json.load(sys.stdin)
    print(json.dumps([send(host, port, c["headers"], c.get("body", "")) for c in cases]))


if __name__ == "__main__":
    main()
