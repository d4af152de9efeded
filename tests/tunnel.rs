//! Websocket tunnels to a real websocket upstream, with a real websocket
//! client, over plain HTTP and over TLS.

mod common;

use std::time::{Duration, Instant};

use common::{Ca, Olive, WsEcho, tls_connect};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

/// A plain `http` listener with a tunnel route `/ws/` and an ordinary proxy
/// route `/` to the same upstream; `extra` is appended.
fn config(upstream: std::net::SocketAddr, idle: &str, extra: &str) -> String {
    format!(
        r#"
[server]
access_log = false

[[listener]]
name = "http"
kind = "http"
bind = "127.0.0.1:0"

[[upstream]]
name = "channels"
addresses = ["{upstream}"]

[[route]]
path = "/ws/"
tunnel.upstream = "channels"
tunnel.idle_timeout = "{idle}"

[[route]]
path = "/"
proxy.upstream = "channels"
proxy.compress = false

{extra}
"#
    )
}

/// Sends a text and a binary message, checks both come back, then closes
/// cleanly (the close handshake completes through the tunnel).
async fn echo_round_trip<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>) {
    ws.send(Message::text("hello, comments")).await.unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(reply, Message::text("hello, comments"));

    let blob: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    ws.send(Message::binary(blob.clone())).await.unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(reply, Message::binary(blob));

    ws.close(None).await.unwrap();
    // The echo's close reply arrives, then the stream ends.
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap() {
            Some(Ok(Message::Close(_))) => continue,
            None => break,
            other => panic!("expected a clean close, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn websocket_echo_through_a_plain_tunnel() {
    let up = WsEcho::start().await;
    let olive = Olive::start(&config(up.addr, "60s", "")).await;
    let tcp = tokio::net::TcpStream::connect(olive.addr("http")).await.unwrap();
    let url = "ws://chat.example.test/ws/room/7/?token=abc";
    let (mut ws, resp) = tokio_tungstenite::client_async(url, tcp).await.unwrap();
    assert_eq!(resp.status(), 101);
    echo_round_trip(&mut ws).await;

    let seen = &up.requests()[0];
    assert_eq!(seen.uri, "/ws/room/7/?token=abc", "the original path reaches the upstream");
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert_eq!(seen.headers["host"], "chat.example.test");
    assert_eq!(seen.headers["upgrade"], "websocket");
    wait_for(|| up.ended.load(std::sync::atomic::Ordering::SeqCst) == 1).await;
}

#[tokio::test]
async fn websocket_echo_through_a_tls_tunnel() {
    let ca = Ca::new();
    let up = WsEcho::start().await;
    let dir = tempfile::tempdir().unwrap();
    ca.issue(dir.path(), "site", &["chat.example.test"]);
    let https = r#"
[[listener]]
name = "https"
kind = "https"
bind = "127.0.0.1:0"

[[certificate]]
cert = "{dir}/site-cert.pem"
key = "{dir}/site-key.pem"
"#;
    let olive = Olive::start_in(dir, &config(up.addr, "60s", https)).await;
    // Websockets are tunnelled over HTTP/1.1 only, so the client offers
    // just that, as browsers do for a websocket connection.
    let tls = tls_connect(ca.client_config(&[b"http/1.1"]), olive.addr("https"), "chat.example.test").await;
    let (mut ws, resp) =
        tokio_tungstenite::client_async("wss://chat.example.test/ws/live", tls).await.unwrap();
    assert_eq!(resp.status(), 101);
    echo_round_trip(&mut ws).await;

    let seen = &up.requests()[0];
    assert_eq!(seen.uri, "/ws/live");
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "https");
}

#[tokio::test]
async fn silent_tunnels_are_closed_at_the_idle_timeout() {
    let up = WsEcho::start().await;
    let olive = Olive::start(&config(up.addr, "300ms", "")).await;
    let tcp = tokio::net::TcpStream::connect(olive.addr("http")).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async("ws://x/ws/idle", tcp).await.unwrap();

    // Traffic keeps it open past one idle period.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        ws.send(Message::text("still here")).await.unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(2), ws.next()).await.unwrap();
        assert_eq!(reply.unwrap().unwrap(), Message::text("still here"));
    }

    let started = Instant::now();
    let end = tokio::time::timeout(Duration::from_secs(3), ws.next())
        .await
        .expect("the idle tunnel was not closed");
    let took = started.elapsed();
    // olive copies bytes and cannot speak websocket: it just drops both sides.
    assert!(matches!(end, None | Some(Err(_))), "{end:?}");
    assert!(took >= Duration::from_millis(250), "closed after {took:?}");
    assert!(took < Duration::from_secs(2), "closed after {took:?}");
    wait_for(|| up.ended.load(std::sync::atomic::Ordering::SeqCst) == 1).await;
}

#[tokio::test]
async fn plain_get_on_a_tunnel_route_is_proxied() {
    let up = WsEcho::start().await;
    let olive = Olive::start(&config(up.addr, "60s", "")).await;
    let resp = common::client().get(olive.url("http", "/ws/info?x=1")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "plain /ws/info");
    let seen = &up.requests()[0];
    assert_eq!(seen.uri, "/ws/info?x=1");
    assert!(seen.headers.get("upgrade").is_none());
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
}

#[tokio::test]
async fn upgrades_on_a_plain_proxy_route_are_not_tunnelled() {
    let up = WsEcho::start().await;
    let olive = Olive::start(&config(up.addr, "60s", "")).await;
    let tcp = tokio::net::TcpStream::connect(olive.addr("http")).await.unwrap();
    let err = tokio_tungstenite::client_async("ws://x/not-a-tunnel/", tcp).await.unwrap_err();
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => assert_eq!(resp.status(), 200),
        other => panic!("expected the plain answer, got {other:?}"),
    }
    let seen = &up.requests()[0];
    assert_eq!(seen.uri, "/not-a-tunnel/");
    assert!(seen.headers.get("upgrade").is_none(), "Upgrade leaked: {:?}", seen.headers);
    let connection = seen.headers.get("connection").map(|v| v.to_str().unwrap().to_ascii_lowercase());
    assert!(!connection.is_some_and(|c| c.contains("upgrade")), "Connection: upgrade leaked");
    assert_eq!(up.ended.load(std::sync::atomic::Ordering::SeqCst), 0);
}

/// Polls `done` for up to two seconds.
async fn wait_for(done: impl Fn() -> bool) {
    for _ in 0..100 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("condition not met within 2s");
}
