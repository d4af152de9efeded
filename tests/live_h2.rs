//! Websockets over HTTP/2 (RFC 8441): an extended CONNECT on the live
//! route over TLS with ALPN h2 is a full live session; elsewhere it is
//! refused.
#![allow(dead_code)]
mod common;

use common::live::{AnyWs, OPEN, recv, send, subscribe};
use common::{Ca, Olive, Upstream, tls_connect};
use http::{Method, Request, StatusCode};
use hyper::upgrade::Upgraded;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role;

async fn olive_with_tls(upstream: std::net::SocketAddr) -> (Olive, Ca) {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    ca.issue(dir.path(), "site", &["localhost"]);
    let toml = format!(
        r#"
[server]
access_log = false

[auth]
{OPEN}

[[listener]]
name = "https"
kind = "https"
bind = "127.0.0.1:0"

[[listener]]
name = "admin"
kind = "admin"
bind = "127.0.0.1:0"

[[certificate]]
cert = "{{dir}}/site-cert.pem"
key = "{{dir}}/site-key.pem"

[[upstream]]
name = "app"
addresses = ["{upstream}"]

[[route]]
path = "/olive"
live = {{}}

[[route]]
path = "/"
proxy.upstream = "app"
"#
    );
    (Olive::start_in(dir, &toml).await, ca)
}

/// Opens a websocket with an HTTP/2 extended CONNECT to `path`; the status
/// when olive does not answer 200.
async fn connect_h2(olive: &Olive, ca: &Ca, path: &str) -> Result<AnyWs<TokioIo<Upgraded>>, StatusCode> {
    let tls = tls_connect(ca.client_config(&[b"h2"]), olive.addr("https"), "localhost").await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(Method::CONNECT)
        .uri(format!("https://localhost{path}"))
        .header("sec-websocket-version", "13")
        .body(olive::body::empty())
        .unwrap();
    req.extensions_mut().insert(hyper::ext::Protocol::from_static("websocket"));
    let mut resp = sender.send_request(req).await.unwrap();
    if resp.status() != StatusCode::OK {
        return Err(resp.status());
    }
    let stream = hyper::upgrade::on(&mut resp).await.unwrap();
    Ok(WebSocketStream::from_raw_socket(TokioIo::new(stream), Role::Client, None).await)
}

#[tokio::test]
async fn a_websocket_over_http2_subscribes_publishes_and_receives() {
    let upstream = Upstream::start(|_| async { common::text(200, "app") }).await;
    let (olive, ca) = olive_with_tls(upstream.addr).await;
    let mut ws = connect_h2(&olive, &ca, "/olive/ws").await.expect("200 to the extended CONNECT");
    subscribe(&mut ws, "olive.h2.note.1").await;

    send(&mut ws, json!({"type": "publish", "key": "olive.h2.note.1", "data": {"n": 1}, "ref": "r1"})).await;
    let (mut ack, mut message) = (None, None);
    for _ in 0..2 {
        let frame = recv(&mut ws).await;
        match frame["type"].as_str() {
            Some("ack") => ack = Some(frame),
            Some("message") => message = Some(frame),
            _ => panic!("unexpected {frame}"),
        }
    }
    let (ack, message) = (ack.expect("an ack"), message.expect("the message"));
    assert_eq!(ack["ref"], "r1");
    assert_eq!(message["id"], ack["id"]);
    assert_eq!(message["data"], json!({"n": 1}));

    // A second websocket on its own stream of the same kind of connection
    // gets what the admin API publishes.
    let mut other = connect_h2(&olive, &ca, "/olive/ws").await.unwrap();
    subscribe(&mut other, "olive.h2.note.1").await;
    let resp = common::client()
        .post(olive.url("admin", "/olive/publish"))
        .json(&json!({"key": "olive.h2.note.1", "data": {"n": 2}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    for ws in [&mut ws, &mut other] {
        assert_eq!(recv(ws).await["data"], json!({"n": 2}));
    }
}

#[tokio::test]
async fn an_extended_connect_elsewhere_is_refused_and_the_upstream_sees_nothing() {
    let upstream = Upstream::start(|_| async { common::text(200, "app") }).await;
    let (olive, ca) = olive_with_tls(upstream.addr).await;
    assert_eq!(connect_h2(&olive, &ca, "/chat/ws").await.err(), Some(StatusCode::NOT_IMPLEMENTED));
    assert!(upstream.requests().is_empty());
    assert_eq!(connect_h2(&olive, &ca, "/olive/nothing").await.err(), Some(StatusCode::NOT_FOUND));
}
