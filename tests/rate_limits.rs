//! `[rate_limits]` end to end: each limit crossed and recovered after its
//! window, the client address from a trusted proxy (X-Forwarded-For, PROXY
//! protocol v1 and v2) and never from anyone else.

mod common;

use std::time::Duration;

use common::live::{Ws, config, recv, send};
use common::tokens::{SECRET, hs, hs_auth, now, open};
use common::{Olive, Upstream, client, proxy_config, raw, text};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Five requests at once, then one a second (slow enough that a loaded
/// test machine cannot earn a request back within a burst).
const HTTP_5: &str = "\n[rate_limits]\nhttp_per_ip = 1\nhttp_burst = 5\n";

async fn get(http: &reqwest::Client, olive: &Olive, xff: Option<&str>) -> reqwest::Response {
    let mut req = http.get(olive.url("http", "/"));
    if let Some(xff) = xff {
        req = req.header("x-forwarded-for", xff);
    }
    req.send().await.unwrap()
}

async fn metric(olive: &Olive, limit: &str) -> u64 {
    let text = client().get(olive.url("admin", "/metrics")).send().await.unwrap().text().await.unwrap();
    let line = format!("olive_rate_limited_total{{limit=\"{limit}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&line)).expect("the family is exported").parse().unwrap()
}

#[tokio::test]
async fn http_over_the_rate_gets_429_with_retry_after_and_recovers() {
    let up = Upstream::start(|_| async { text(200, "hi") }).await;
    let olive = Olive::start(&(proxy_config(up.addr, "") + HTTP_5)).await;
    let http = client();
    for _ in 0..5 {
        assert_eq!(get(&http, &olive, None).await.status(), 200);
    }
    let limited = get(&http, &olive, None).await;
    assert_eq!(limited.status(), 429);
    assert_eq!(limited.headers()["retry-after"], "1");
    // One more a second.
    tokio::time::sleep(Duration::from_millis(1050)).await;
    assert_eq!(get(&http, &olive, None).await.status(), 200);
    assert_eq!(up.requests().len(), 6, "refused requests never reach the upstream");
}

#[tokio::test]
async fn a_forged_x_forwarded_for_from_an_untrusted_peer_changes_nothing() {
    let up = Upstream::start(|_| async { text(200, "hi") }).await;
    let olive = Olive::start(&(proxy_config(up.addr, "") + HTTP_5)).await;
    let http = client();
    for i in 0..5 {
        assert_eq!(get(&http, &olive, Some(&format!("203.0.113.{i}"))).await.status(), 200);
    }
    assert_eq!(get(&http, &olive, Some("198.51.100.1")).await.status(), 429);
    for seen in up.requests() {
        assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1", "the forged chain is replaced");
    }
}

#[tokio::test]
async fn a_trusted_proxy_names_each_client() {
    let up = Upstream::start(|_| async { text(200, "hi") }).await;
    let olive = Olive::start(&(proxy_config(up.addr, "trusted_proxies = [\"127.0.0.1\"]") + HTTP_5)).await;
    let http = client();
    for _ in 0..5 {
        assert_eq!(get(&http, &olive, Some("1.2.3.4, 203.0.113.1")).await.status(), 200);
    }
    // The client wrote "1.2.3.4" itself; the proxy saw 203.0.113.1.
    assert_eq!(get(&http, &olive, Some("9.9.9.9, 203.0.113.1")).await.status(), 429);
    assert_eq!(get(&http, &olive, Some("203.0.113.2")).await.status(), 200, "another client, its own rate");
}

/// An olive behind a PROXY-protocol load balancer at `trusted`.
fn proxied_config(upstream: std::net::SocketAddr, trusted: &str) -> String {
    let config = proxy_config(upstream, &format!("trusted_proxies = [\"{trusted}\"]"));
    config.replace("bind = \"127.0.0.1:0\"", "bind = \"127.0.0.1:0\"\nproxy_protocol = true")
}

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n";

#[tokio::test]
async fn proxy_protocol_v1_and_v2_name_the_client() {
    let up = Upstream::start(|_| async { text(200, "hi") }).await;
    let olive = Olive::start(&proxied_config(up.addr, "127.0.0.1")).await;
    let addr = olive.addr("http");
    let wait = Duration::from_secs(5);

    let v1 = [&b"PROXY TCP4 203.0.113.9 127.0.0.1 51234 80\r\n"[..], REQUEST].concat();
    assert!(raw(addr, &v1, wait).await.starts_with("HTTP/1.1 200"));
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    v2.extend_from_slice(&[198, 51, 100, 7, 127, 0, 0, 1, 0xc8, 0x22, 0, 80]);
    assert!(raw(addr, &[&v2[..], REQUEST].concat(), wait).await.starts_with("HTTP/1.1 200"));
    let forwarded: Vec<String> =
        up.requests().iter().map(|s| s.headers["x-forwarded-for"].to_str().unwrap().to_owned()).collect();
    assert_eq!(forwarded, ["203.0.113.9", "198.51.100.7"]);

    // From the trusted proxy, a connection without the header is dropped.
    assert_eq!(raw(addr, REQUEST, wait).await, "");
}

#[tokio::test]
async fn a_proxy_header_from_an_untrusted_peer_is_not_believed() {
    let up = Upstream::start(|_| async { text(200, "hi") }).await;
    let olive = Olive::start(&proxied_config(up.addr, "10.0.0.0/8")).await;
    let forged = [&b"PROXY TCP4 203.0.113.9 127.0.0.1 51234 80\r\n"[..], REQUEST].concat();
    let answer = raw(olive.addr("http"), &forged, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(up.requests().is_empty());
}

/// The live hub with tight limits; anonymous visitors may do everything.
async fn live(limits: &str) -> Olive {
    Olive::start(&(config("", "") + "\n[rate_limits]\n" + limits)).await
}

async fn try_ws(olive: &Olive) -> Result<Ws, u16> {
    open(olive, "", &[]).await
}

#[tokio::test]
async fn websocket_connection_attempts_over_the_rate_get_429() {
    let olive = live("connects_per_ip = 1\nconnects_burst = 2").await;
    let _a = try_ws(&olive).await.unwrap();
    let _b = try_ws(&olive).await.unwrap();
    assert_eq!(try_ws(&olive).await.err(), Some(429));
    let sse = client().get(olive.url("http", "/olive/sse?key=olive.a.b.c")).send().await.unwrap();
    assert_eq!(sse.status(), 429);
    tokio::time::sleep(Duration::from_millis(1050)).await;
    assert!(try_ws(&olive).await.is_ok(), "one more a second");
    assert_eq!(metric(&olive, "connects_per_ip").await, 2);
}

#[tokio::test]
async fn frames_over_the_rate_are_refused_then_the_connection_is_closed() {
    let olive = live("frames_per_connection = 1\nframes_burst = 5").await;
    let mut ws = try_ws(&olive).await.unwrap();
    for _ in 0..5 {
        send(&mut ws, json!({"type": "ping"})).await;
        assert_eq!(recv(&mut ws).await, json!({"type": "pong"}));
    }
    send(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(recv(&mut ws).await["code"], "rate_limited");
    tokio::time::sleep(Duration::from_millis(1050)).await;
    send(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(recv(&mut ws).await, json!({"type": "pong"}), "recovered");
    // Sustained abuse: past live.max_invalid_frames (10), 1008.
    for _ in 0..20 {
        if ws.send(Message::text(r#"{"type":"ping"}"#)).await.is_err() {
            break;
        }
    }
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await.expect("closed in time") {
            Some(Ok(Message::Close(Some(close)))) => break close,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(close.code, CloseCode::Policy);
    assert!(metric(&olive, "frames_per_connection").await >= 10);
}

#[tokio::test]
async fn publishes_over_the_rate_get_rate_limited_errors() {
    let olive = live("publishes_per_user = 1\npublishes_burst = 2").await;
    let mut ws = try_ws(&olive).await.unwrap();
    let publish = |r: &str| json!({"type": "publish", "key": "olive.a.b.c", "data": 1, "ref": r});
    for r in ["1", "2"] {
        send(&mut ws, publish(r)).await;
        assert_eq!(recv(&mut ws).await["type"], "ack");
    }
    send(&mut ws, publish("3")).await;
    let refused = recv(&mut ws).await;
    assert_eq!((refused["code"].as_str(), refused["ref"].as_str()), (Some("rate_limited"), Some("3")));
    // The same allowance over HTTP, for the same (anonymous) client.
    let http =
        client().post(olive.url("http", "/olive/publish")).json(&json!({"key": "olive.a.b.c", "data": 1}));
    assert_eq!(http.send().await.unwrap().status(), 429);
    tokio::time::sleep(Duration::from_millis(1050)).await;
    send(&mut ws, publish("4")).await;
    assert_eq!(recv(&mut ws).await["type"], "ack", "recovered");
    assert_eq!(metric(&olive, "publishes_per_user").await, 2);
}

#[tokio::test]
async fn a_user_holds_at_most_max_sessions_per_user() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), SECRET).unwrap();
    let toml =
        common::live::config_auth("", "", &hs_auth("")) + "\n[rate_limits]\nmax_sessions_per_user = 1\n";
    let olive = Olive::start_in(dir, &toml).await;
    let token = |user: &str| {
        hs(&json!({"sub": user, "aud": "olive", "iss": "django", "exp": now() + 60, "grants": {}}))
    };
    let query = |user: &str| format!("?token={}", token(user));
    let mut first = open(&olive, &query("7"), &[]).await.unwrap();
    assert_eq!(open(&olive, &query("7"), &[]).await.err(), Some(429));
    assert!(open(&olive, &query("8"), &[]).await.is_ok(), "another user");
    first.close(None).await.unwrap();
    let mut again = Err(0);
    for _ in 0..50 {
        again = open(&olive, &query("7"), &[]).await;
        if again.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(again.is_ok(), "the place is given back when the session ends");
    assert_eq!(metric(&olive, "sessions_per_user").await, 1);
}
