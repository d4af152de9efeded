//! HTTP/1.1 framing and request-smuggling cases, sent as raw bytes to a
//! real olive in front of a recording upstream, and checked from both
//! sides: the statuses the client reads and whether olive closed the
//! connection, and exactly which requests reached the upstream (method,
//! path, body; never a second request made of a first one's body).
//!
//! RFC 9112 §6.3 (message body length), §7.1 (chunked), §5 (field
//! syntax), §2.2 (line endings), §3.2 (request target, Host), RFC 9110
//! §10.1.1 (Expect). The HTTP/2 → HTTP/1.1 downgrade cases are in
//! `tests/smuggling_h2.rs`.

mod common;

use std::time::Duration;

use common::{Olive, Seen, Upstream, proxy_config, text};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One raw exchange and what each side must see.
struct Case {
    name: &'static str,
    send: &'static [u8],
    /// Status codes of the responses, in order.
    statuses: &'static [u16],
    /// Whether olive closes the connection after them.
    closed: bool,
    /// (method, path, body) of every request the upstream received.
    upstream: &'static [(&'static str, &'static str, &'static str)],
}

/// An upstream that answers `METHOD PATH BODYLEN`.
async fn recording_upstream() -> Upstream {
    Upstream::start(|seen: Seen| async move {
        text(200, &format!("{} {} {}", seen.method, seen.uri.path(), seen.body.len()))
    })
    .await
}

/// A request built at run time, for a `Case`.
fn leak(text: String) -> &'static [u8] {
    Box::leak(text.into_bytes().into_boxed_slice())
}

/// What came back on one connection, and whether the server closed it.
struct Reply {
    text: String,
    closed: bool,
}

impl Reply {
    fn statuses(&self) -> Vec<u16> {
        // Status lines, wherever they start: a body has no line end.
        self.text
            .match_indices("HTTP/1.")
            .filter_map(|(i, _)| self.text.get(i + 9..i + 12)?.parse().ok())
            .collect()
    }
}

/// Sends `bytes` and reads until the server closes, or nothing more came
/// for `idle` (the connection is then still open).
async fn exchange(stream: &mut TcpStream, bytes: &[u8], idle: Duration) -> Reply {
    stream.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let closed = loop {
        match tokio::time::timeout(idle, stream.read(&mut buf)).await {
            Err(_) => break false,
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    };
    Reply { text: String::from_utf8_lossy(&out).into_owned(), closed }
}

/// Every request that reached the upstream is framed by olive alone: no
/// `Transfer-Encoding` or `Upgrade`, a `Content-Length` equal to the body,
/// exactly one `Host`.
fn assert_clean(name: &str, seen: &Seen) {
    let h = &seen.headers;
    assert!(!h.contains_key("transfer-encoding"), "{name}: upstream got Transfer-Encoding");
    assert!(!h.contains_key("upgrade"), "{name}: upstream got Upgrade");
    assert!(!h.contains_key("http2-settings"), "{name}: upstream got HTTP2-Settings");
    assert!(!h.contains_key("expect"), "{name}: upstream got Expect");
    assert!(h.keys().all(|k| !k.as_str().contains('_')), "{name}: underscored field reached the upstream");
    assert_eq!(h.get_all("host").iter().count(), 1, "{name}: upstream Host lines");
    let lengths: Vec<_> = h.get_all("content-length").iter().collect();
    assert!(lengths.len() <= 1, "{name}: upstream got {} Content-Length lines", lengths.len());
    if let Some(len) = lengths.first() {
        assert_eq!(len.to_str().unwrap(), seen.body.len().to_string(), "{name}: Content-Length vs body");
    }
}

async fn run(cases: &[Case], extra: &str) {
    run_with(cases, |addr| proxy_config(addr, extra)).await;
}

/// Runs each case against a fresh upstream and a fresh olive configured by
/// `config(upstream address)`.
async fn run_with(cases: &[Case], config: impl Fn(std::net::SocketAddr) -> String) {
    let mut failures = Vec::new();
    for case in cases {
        let up = recording_upstream().await;
        let olive = Olive::start(&config(up.addr)).await;
        let mut stream = TcpStream::connect(olive.addr("http")).await.unwrap();
        let reply = exchange(&mut stream, case.send, Duration::from_millis(300)).await;
        let seen = up.requests();
        let got: Vec<(String, String, String)> = seen
            .iter()
            .map(|s| (s.method.to_string(), s.uri.path().to_owned(), String::from_utf8_lossy(&s.body).into()))
            .collect();
        let want: Vec<(String, String, String)> =
            case.upstream.iter().map(|(m, p, b)| (m.to_string(), p.to_string(), b.to_string())).collect();
        if reply.statuses() != case.statuses || reply.closed != case.closed || got != want {
            failures.push(format!(
                "{}:\n  client got {:?}, closed {} (want {:?}, closed {})\n  upstream saw {got:?} (want {want:?})\n  reply: {:?}",
                case.name,
                reply.statuses(),
                reply.closed,
                case.statuses,
                case.closed,
                reply.text.chars().take(300).collect::<String>()
            ));
        }
        for s in &seen {
            assert_clean(case.name, s);
        }
        olive.stop().await;
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// RFC 9112 §6.3: Content-Length and Transfer-Encoding. Whatever the
/// client's framing, olive either refuses it (400, closed) or decodes it
/// and sends the upstream one request with its own, single framing.
#[tokio::test]
async fn body_framing() {
    run(&[
        Case {
            name: "CL+TE: chunked wins, CL dropped, connection closed (§6.3 item 3)",
            send: b"POST /a HTTP/1.1\r\nHost: s\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            statuses: &[200],
            closed: true,
            upstream: &[("POST", "/a", "hello")],
        },
        Case {
            name: "TE+CL in the other order",
            send: b"POST /a HTTP/1.1\r\nHost: s\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            statuses: &[200],
            closed: true,
            upstream: &[("POST", "/a", "hello")],
        },
        Case {
            name: "CL.TE smuggle: the bytes after the last chunk are never a request",
            send: b"POST /a HTTP/1.1\r\nHost: s\r\nContent-Length: 35\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nX: y\r\n\r\n",
            statuses: &[200],
            closed: true,
            upstream: &[("POST", "/a", "")],
        },
        Case {
            name: "TE.CL smuggle: the chunk is body, not a request",
            send: b"POST /a HTTP/1.1\r\nHost: s\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n1a\r\nGET /smuggled HTTP/1.1\r\n\r\n\r\n0\r\n\r\n",
            statuses: &[200],
            closed: true,
            upstream: &[("POST", "/a", "GET /smuggled HTTP/1.1\r\n\r\n")],
        },
        Case {
            name: "duplicate identical Content-Length is one length (RFC 9110 §8.6)",
            send: b"POST /a HTTP/1.1\r\nHost: s\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
            statuses: &[200],
            closed: false,
            upstream: &[("POST", "/a", "hello")],
        },
        Case {
            name: "conflicting Content-Length",
            send: b"POST /a HTTP/1.1\r\nHost: s\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
            statuses: &[400],
            closed: true,
            upstream: &[],
        },
        Case {
            name: "Content-Length as a list",
            send: b"POST /a HTTP/1.1\r\nHost: s\r\nContent-Length: 5, 6\r\n\r\nhello!",
            statuses: &[400],
            closed: true,
            upstream: &[],
        },
        Case {
            name: "Content-Length with a sign",
            send: b"POST /a HTTP/1.1\r\nHost: s\r\nContent-Length: +5\r\n\r\nhello",
            statuses: &[400],
            closed: true,
            upstream: &[],
        },
        Case {
            name: "negative Content-Length",
            send: b"POST /a HTTP/1.1\r\nHost: s\r\nContent-Length: -1\r\n\r\nhello",
            statuses: &[400],
            closed: true,
            upstream: &[],
        },
        Case {
            name: "hex Content-Length",
            send: b"POST /a HTTP/1.1\r\nHost: s\r\nContent-Length: 0x5\r\n\r\nhello",
            statuses: &[400],
            closed: true,
            upstream: &[],
        },
        Case {
            name: "Content-Length overflowing u64",
            send: b"POST /a HTTP/1.1\r\nHost: s\r\nContent-Length: 99999999999999999999\r\n\r\nhello",
            statuses: &[400],
            closed: true,
            upstream: &[],
        },
        Case {
            name: "Transfer-Encoding in another case is chunked",
            send: b"POST /a HTTP/1.1\r\nHost: s\r\nTransfer-Encoding: ChUnKeD\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            statuses: &[200],
            closed: false,
            upstream: &[("POST", "/a", "hello")],
        },
        Case {
            name: "Transfer-Encoding with a tab and trailing spaces (OWS, §5.1)",
            send: b"POST /a HTTP/1.1\r\nHost: s\r\nTransfer-Encoding:\tchunked  \r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            statuses: &[200],
            closed: false,
            upstream: &[("POST", "/a", "hello")],
        },
        Case {
            name: "space before the colon (§5.1: MUST be rejected with 400)",
            send: b"POST /a HTTP/1.1\r\nHost: s\r\nTransfer-Encoding : chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            statuses: &[400],
            closed: true,
            upstream: &[],
        },
        Case {
            name: "Transfer-Encoding not ending in chunked (§6.3 item 4)",
            send: b"POST /a HTTP/1.1\r\nHost: s\r\nTransfer-Encoding: chunked, identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            statuses: &[400],
            closed: true,
            upstream: &[],
        },
        Case {
            name: "Transfer-Encoding: xchunked",
            send: b"POST /a HTTP/1.1\r\nHost: s\r\nTransfer-Encoding: xchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            statuses: &[400],
            closed: true,
            upstream: &[],
        },
        Case {
            name: "two Transfer-Encoding lines, last not chunked",
            send: b"POST /a HTTP/1.1\r\nHost: s\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            statuses: &[400],
            closed: true,
            upstream: &[],
        },
        Case {
            name: "Transfer-Encoding in HTTP/1.0 (§6.1)",
            send: b"POST /a HTTP/1.0\r\nHost: s\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            statuses: &[400],
            closed: true,
            upstream: &[],
        },
        Case {
            name: "obs-fold continuing Transfer-Encoding (§5.2)",
            send: b"POST /a HTTP/1.1\r\nHost: s\r\nTransfer-Encoding:\r\n chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            statuses: &[400],
            closed: true,
            upstream: &[],
        },
        Case {
            name: "Transfer_Encoding is no framing and never reaches the upstream",
            send: b"POST /a HTTP/1.1\r\nHost: s\r\nTransfer_Encoding: chunked\r\nContent-Length: 0\r\n\r\n",
            statuses: &[200],
            closed: false,
            upstream: &[("POST", "/a", "")],
        },
    ], "")
    .await;
}

/// RFC 9112 §7.1: chunk sizes, extensions and trailers.
#[tokio::test]
async fn chunked_bodies() {
    run(&[
        Case {
            name: "chunk extensions are ignored (§7.1.1)",
            send: b"POST /a HTTP/1.1\r\nHost: s\r\nTransfer-Encoding: chunked\r\n\r\n5;name=value;x\r\nhello\r\n0;end\r\n\r\n",
            statuses: &[200],
            closed: false,
            upstream: &[("POST", "/a", "hello")],
        },
        Case {
            name: "trailers are dropped (§7.1.2)",
            send: b"POST /a HTTP/1.1\r\nHost: s\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n",
            statuses: &[200],
            closed: false,
            upstream: &[("POST", "/a", "hello")],
        },
        Case {
            name: "chunk size overflowing u64",
            send: b"POST /a HTTP/1.1\r\nHost: s\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff1\r\nhello\r\n0\r\n\r\n",
            statuses: &[400],
            closed: true,
            upstream: &[],
        },
        Case {
            name: "chunk size with 0x",
            send: b"POST /a HTTP/1.1\r\nHost: s\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
            statuses: &[400],
            closed: true,
            upstream: &[],
        },
        Case {
            name: "chunk size with a sign",
            send: b"POST /a HTTP/1.1\r\nHost: s\r\nTransfer-Encoding: chunked\r\n\r\n+5\r\nhello\r\n0\r\n\r\n",
            statuses: &[400],
            closed: true,
            upstream: &[],
        },
        Case {
            name: "chunk longer than its size",
            send: b"POST /a HTTP/1.1\r\nHost: s\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n",
            statuses: &[400],
            closed: true,
            upstream: &[],
        },
        Case {
            name: "a huge chunk that never comes: 408 at body_read_timeout",
            send: b"POST /a HTTP/1.1\r\nHost: s\r\nTransfer-Encoding: chunked\r\n\r\n7fffffff\r\nhello",
            statuses: &[408],
            closed: true,
            upstream: &[],
        },
        Case {
            name: "chunks adding up to more than max_body_bytes: 413",
            send: leak(format!("POST /a HTTP/1.1\r\nHost: s\r\nTransfer-Encoding: chunked\r\n\r\n3e9\r\n{}\r\n0\r\n\r\n", "x".repeat(1001))),
            statuses: &[413],
            closed: true,
            upstream: &[],
        },
    ], "[limits]\nmax_body_bytes = 1000\nbody_buffer_bytes = 100\nbody_read_timeout = \"200ms\"")
    .await;
}

/// RFC 9112 §2.2 and §5: line endings and the characters of fields.
#[tokio::test]
async fn lines_and_characters() {
    run(
        &[
            Case {
                name: "bare LF line endings are accepted (§2.2 MAY) and normalised",
                send: b"POST /a HTTP/1.1\nHost: s\nContent-Length: 5\n\nhello",
                statuses: &[200],
                closed: false,
                upstream: &[("POST", "/a", "hello")],
            },
            Case {
                name: "bare CR inside a field value (§2.2 MUST reject or replace)",
                send: b"GET /a HTTP/1.1\r\nHost: s\r\nX-A: a\rContent-Length: 5\r\n\r\nhello",
                statuses: &[400],
                closed: true,
                upstream: &[],
            },
            Case {
                name: "NUL in a field value",
                send: b"GET /a HTTP/1.1\r\nHost: s\r\nX-A: a\0b\r\n\r\n",
                statuses: &[400],
                closed: true,
                upstream: &[],
            },
            Case {
                name: "NUL in a field name",
                send: b"GET /a HTTP/1.1\r\nHost: s\r\nX-\0A: b\r\n\r\n",
                statuses: &[400],
                closed: true,
                upstream: &[],
            },
            Case {
                name: "control character in a field value",
                send: b"GET /a HTTP/1.1\r\nHost: s\r\nX-A: a\x01b\r\n\r\n",
                statuses: &[400],
                closed: true,
                upstream: &[],
            },
            Case {
                name: "DEL in a field value",
                send: b"GET /a HTTP/1.1\r\nHost: s\r\nX-A: a\x7fb\r\n\r\n",
                statuses: &[400],
                closed: true,
                upstream: &[],
            },
            Case {
                name: "space inside a field name",
                send: b"GET /a HTTP/1.1\r\nHost: s\r\nX A: b\r\n\r\n",
                statuses: &[400],
                closed: true,
                upstream: &[],
            },
            Case {
                name: "empty field name",
                send: b"GET /a HTTP/1.1\r\nHost: s\r\n: b\r\n\r\n",
                statuses: &[400],
                closed: true,
                upstream: &[],
            },
            Case {
                name: "space in the request target",
                send: b"GET /a b HTTP/1.1\r\nHost: s\r\n\r\n",
                statuses: &[400],
                closed: true,
                upstream: &[],
            },
            Case {
                name: "unknown HTTP version",
                send: b"GET /a HTTP/1.2\r\nHost: s\r\n\r\n",
                statuses: &[400],
                closed: true,
                upstream: &[],
            },
            Case {
                name: "HTTP/0.9 request line",
                send: b"GET /a\r\n\r\n",
                statuses: &[400],
                closed: true,
                upstream: &[],
            },
            Case {
                name: "underscored fields are dropped (nginx underscores_in_headers off)",
                send: b"GET /a HTTP/1.1\r\nHost: s\r\nX_Forwarded_Proto: https\r\n\r\n",
                statuses: &[200],
                closed: false,
                upstream: &[("GET", "/a", "")],
            },
        ],
        "",
    )
    .await;
}

/// RFC 9112 §3.2: request targets and Host; RFC 9110 §9.3.6: CONNECT.
#[tokio::test]
async fn targets_and_host() {
    run(
        &[
            Case {
                name: "absolute-form is routed and forwarded in origin-form (§3.2.2)",
                send: b"GET http://s/a?q=1 HTTP/1.1\r\nHost: s\r\n\r\n",
                statuses: &[200],
                closed: false,
                upstream: &[("GET", "/a", "")],
            },
            Case {
                name: "authority-form outside CONNECT (§3.2.3)",
                send: b"GET s:80 HTTP/1.1\r\nHost: s\r\n\r\n",
                statuses: &[400],
                closed: true,
                upstream: &[],
            },
            Case {
                name: "CONNECT: olive is not a forward proxy",
                send: b"CONNECT internal.example:22 HTTP/1.1\r\nHost: internal.example:22\r\n\r\n",
                statuses: &[405],
                closed: true,
                upstream: &[],
            },
            Case {
                name: "asterisk-form matches no route",
                send: b"OPTIONS * HTTP/1.1\r\nHost: s\r\n\r\n",
                statuses: &[404],
                closed: false,
                upstream: &[],
            },
            Case {
                name: "HTTP/1.1 without Host (§3.2 MUST 400)",
                send: b"GET /a HTTP/1.1\r\n\r\n",
                statuses: &[400],
                closed: true,
                upstream: &[],
            },
            Case {
                name: "two Host lines (§3.2 MUST 400)",
                send: b"GET /a HTTP/1.1\r\nHost: s\r\nHost: t\r\n\r\n",
                statuses: &[400],
                closed: true,
                upstream: &[],
            },
            Case {
                name: "Host with a path (§3.2 MUST 400)",
                send: b"GET /a HTTP/1.1\r\nHost: s/b\r\n\r\n",
                statuses: &[400],
                closed: true,
                upstream: &[],
            },
            Case {
                name: "Host with userinfo",
                send: b"GET /a HTTP/1.1\r\nHost: u@s\r\n\r\n",
                statuses: &[400],
                closed: true,
                upstream: &[],
            },
            Case {
                name: "HTTP/1.0 without Host is served",
                send: b"GET /a HTTP/1.0\r\n\r\n",
                statuses: &[200],
                closed: true,
                upstream: &[("GET", "/a", "")],
            },
        ],
        "",
    )
    .await;
}

/// Several requests on one connection: each is served in order, and a
/// refused one ends the connection, so nothing after it is read.
#[tokio::test]
async fn pipelining_and_requests_after_a_400() {
    run(&[
        Case {
            name: "two pipelined GETs",
            send: b"GET /a HTTP/1.1\r\nHost: s\r\n\r\nGET /b HTTP/1.1\r\nHost: s\r\n\r\n",
            statuses: &[200, 200],
            closed: false,
            upstream: &[("GET", "/a", ""), ("GET", "/b", "")],
        },
        Case {
            name: "a POST body then a GET",
            send: b"POST /a HTTP/1.1\r\nHost: s\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\nHost: s\r\n\r\n",
            statuses: &[200, 200],
            closed: false,
            upstream: &[("POST", "/a", "hello"), ("GET", "/b", "")],
        },
        Case {
            name: "a 400 from the parser ends the connection",
            send: b"GET /a HTTP/1.1\r\nHost: s\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nGET /b HTTP/1.1\r\nHost: s\r\n\r\n",
            statuses: &[400],
            closed: true,
            upstream: &[],
        },
        Case {
            name: "a 400 from olive's own checks ends the connection",
            send: b"GET /a HTTP/1.1\r\nHost: s\r\nHost: t\r\n\r\nGET /b HTTP/1.1\r\nHost: s\r\n\r\n",
            statuses: &[400],
            closed: true,
            upstream: &[],
        },
        Case {
            name: "a good request, then a bad one: the first is served",
            send: b"GET /a HTTP/1.1\r\nHost: s\r\n\r\nGET /b HTTP/1.1\r\nHost: s\r\nX-A: \0\r\n\r\nGET /c HTTP/1.1\r\nHost: s\r\n\r\n",
            statuses: &[200, 400],
            closed: true,
            upstream: &[("GET", "/a", "")],
        },
        Case {
            name: "CL+TE in the middle of a pipeline closes after it",
            send: b"GET /a HTTP/1.1\r\nHost: s\r\n\r\nPOST /b HTTP/1.1\r\nHost: s\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /c HTTP/1.1\r\nHost: s\r\n\r\n",
            statuses: &[200, 200],
            closed: true,
            upstream: &[("GET", "/a", ""), ("POST", "/b", "")],
        },
    ], "")
    .await;
}

/// An h2c upgrade (RFC 7540 §3.2, removed by RFC 9113) is not honoured on
/// a proxy route, nor on a websocket tunnel route: the request is served
/// as plain HTTP/1.1 and the upstream never sees the upgrade, so it can
/// never answer 101 and open a tunnel around olive.
#[tokio::test]
async fn h2c_upgrade_is_not_passed_on() {
    let h2c: &[u8] = b"GET /a HTTP/1.1\r\nHost: s\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n";
    let bare: &[u8] =
        b"GET /a HTTP/1.1\r\nHost: s\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n";
    let cases = [
        Case {
            name: "h2c upgrade",
            send: h2c,
            statuses: &[200],
            closed: false,
            upstream: &[("GET", "/a", "")],
        },
        Case {
            name: "Upgrade: h2c without Connection",
            send: bare,
            statuses: &[200],
            closed: false,
            upstream: &[("GET", "/a", "")],
        },
    ];
    run(&cases, "").await;
    // The same on a route that tunnels websocket upgrades.
    run_with(&cases, |addr| {
        proxy_config(addr, "")
            .replace("proxy.upstream = \"app\"\nproxy.compress = false", "tunnel.upstream = \"app\"")
    })
    .await;
}

/// RFC 9110 §10.1.1: `Expect: 100-continue` gets its 100 when olive starts
/// reading the body, the upstream gets the body without the expectation;
/// a body refused by its length gets its final status instead, and the
/// connection closes.
#[tokio::test]
async fn expect_100_continue() {
    let up = recording_upstream().await;
    let olive =
        Olive::start(&proxy_config(up.addr, "[limits]\nmax_body_bytes = 1000\nbody_buffer_bytes = 100"))
            .await;
    let mut s = TcpStream::connect(olive.addr("http")).await.unwrap();
    let idle = Duration::from_millis(300);
    let head = exchange(
        &mut s,
        b"POST /a HTTP/1.1\r\nHost: s\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
        idle,
    )
    .await;
    assert_eq!(head.statuses(), [100], "{}", head.text);
    assert!(up.requests().is_empty(), "the upstream is not asked before the body is whole");
    let rest = exchange(&mut s, b"hello", idle).await;
    assert_eq!((rest.statuses(), rest.closed), (vec![200], false), "{}", rest.text);
    let seen = up.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(&seen[0].body[..], b"hello");
    assert_clean("expect", &seen[0]);

    let mut s = TcpStream::connect(olive.addr("http")).await.unwrap();
    let big = exchange(
        &mut s,
        b"POST /b HTTP/1.1\r\nHost: s\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n",
        idle,
    )
    .await;
    assert_eq!((big.statuses(), big.closed), (vec![413], true), "{}", big.text);
    assert_eq!(up.requests().len(), 1, "the upstream never saw the refused request");
}

/// Absolute-form and HTTP/1.1 `Host`: the upstream's `Host` is the name
/// olive routed on (RFC 9112 §3.2.2: the target's authority wins), so a
/// request routed as one site cannot reach Django as another.
#[tokio::test]
async fn absolute_form_host_wins_over_the_host_header() {
    let up = recording_upstream().await;
    let olive = Olive::start(&proxy_config(up.addr, "")).await;
    let mut s = TcpStream::connect(olive.addr("http")).await.unwrap();
    let reply = exchange(
        &mut s,
        b"GET http://routed.example/a HTTP/1.1\r\nHost: other.example\r\n\r\n",
        Duration::from_millis(300),
    )
    .await;
    assert_eq!(reply.statuses(), [200], "{}", reply.text);
    let seen = up.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].uri, "/a");
    assert_eq!(seen[0].headers["host"], "routed.example");
    assert_eq!(seen[0].headers["x-forwarded-host"], "routed.example");
}
