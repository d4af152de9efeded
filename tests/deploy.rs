//! A deploy that drops nobody, with real processes and signals: a new
//! olive binds the same port beside the running one (`SO_REUSEPORT`), the
//! old one gets SIGTERM and drains. Requests made all through the switch
//! all succeed, one in flight at the SIGTERM included; the old node's
//! websockets are closed (1001) spread over `live.reconnect_spread`, and
//! their clients reconnect to the new process.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::live::{Ws, recv, subscribe};
use common::process::OliveProcess;
use common::{Upstream, text};
use futures_util::StreamExt;
use serde_json::json;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;

const KEY: &str = "olive.deploy.note.1";
const SPREAD: Duration = Duration::from_secs(2);
const SESSIONS: usize = 20;
/// Clients making requests through the switch at once.
const LOADERS: usize = 8;

fn config(bind: &str, upstream: SocketAddr) -> String {
    format!(
        r##"
[server]
access_log = false
drain_timeout = "6s"

[[listener]]
name = "http"
kind = "http"
bind = "{bind}"

[[listener]]
name = "admin"
kind = "admin"
bind = "127.0.0.1:0"

[[upstream]]
name = "app"
addresses = ["{upstream}"]

[[route]]
path = "/"
proxy.upstream = "app"

[[route]]
path = "/olive"
live = {{ }}

[live]
reconnect_spread = "{spread}s"

[auth]
{open}

# Every client is 127.0.0.1: per-address rates off for this load.
[rate_limits]
http_per_ip = 0
connects_per_ip = 0
"##,
        spread = SPREAD.as_secs(),
        open = common::live::OPEN
    )
}

/// GETs on a fresh connection each, one after another, until `stop`:
/// (made, failed).
async fn requests(url: String, stop: CancellationToken) -> (usize, Vec<String>) {
    common::init();
    let client = reqwest::Client::builder().no_proxy().pool_max_idle_per_host(0).build().unwrap();
    let (mut made, mut failed) = (0, Vec::new());
    while !stop.is_cancelled() {
        made += 1;
        match client.get(&url).send().await {
            Ok(resp) if resp.status() == 200 => {}
            Ok(resp) => failed.push(format!("status {}", resp.status())),
            Err(e) => failed.push(format!("{e:?}")),
        }
    }
    (made, failed)
}

/// Waits for the close frame (answering pings), returning its code.
async fn closed(ws: &mut Ws) -> CloseCode {
    loop {
        match ws.next().await {
            Some(Ok(Message::Close(Some(frame)))) => return frame.code,
            Some(Ok(Message::Text(_) | Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_olive_takes_over_the_port_and_the_old_one_drains_without_failures() {
    let upstream = Upstream::start(|seen| async move {
        if seen.uri.path() == "/slow" {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        text(200, seen.uri.path())
    })
    .await;
    let (old_dir, new_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut old = OliveProcess::start(old_dir.path(), &config("127.0.0.1:0", upstream.addr)).await;
    let port = old.addr("http");
    let ws_url = format!("ws://{port}/olive/ws");

    // Sessions on the old node, before the new one listens.
    let mut sessions = Vec::new();
    for _ in 0..SESSIONS {
        let (mut ws, _) = tokio_tungstenite::connect_async(ws_url.as_str()).await.unwrap();
        subscribe(&mut ws, KEY).await;
        sessions.push(ws);
    }

    let stop = CancellationToken::new();
    let load: Vec<_> =
        (0..LOADERS).map(|_| tokio::spawn(requests(format!("http://{port}/page"), stop.clone()))).collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let new = OliveProcess::start(new_dir.path(), &config(&port.to_string(), upstream.addr)).await;
    assert_eq!(new.addr("http"), port);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A request in flight when the old node is told to go.
    let slow_client = common::client();
    let slow = tokio::spawn(slow_client.get(format!("http://{port}/slow")).send());
    tokio::time::sleep(Duration::from_millis(50)).await;
    let sigterm = Instant::now();
    old.signal("TERM").await;

    // Each session is let go at its own moment, and its client comes
    // back to the new node.
    let reconnected = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for mut ws in sessions {
        let (ws_url, reconnected) = (ws_url.clone(), reconnected.clone());
        clients.push(tokio::spawn(async move {
            let code = closed(&mut ws).await;
            let after = sigterm.elapsed();
            let (mut ws, _) = tokio_tungstenite::connect_async(ws_url.as_str()).await.unwrap();
            subscribe(&mut ws, KEY).await;
            reconnected.fetch_add(1, Ordering::SeqCst);
            (code, after, ws)
        }));
    }
    let mut closes = Vec::new();
    let mut back = Vec::new();
    for client in clients {
        let (code, after, ws) = client.await.unwrap();
        closes.push((code, after));
        back.push(ws);
    }
    let status = old.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "the old olive exits 0 after its drain: {status:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.cancel();

    let (mut made, mut failed) = (0, Vec::new());
    for loader in load {
        let (m, f) = loader.await.unwrap();
        made += m;
        failed.extend(f);
    }
    assert!(made > 20, "only {made} requests were made through the switch");
    assert!(failed.is_empty(), "{} of {made} requests failed: {failed:?}", failed.len());
    let slow = slow.await.unwrap().unwrap();
    assert_eq!(slow.status(), 200);
    assert_eq!(slow.text().await.unwrap(), "/slow");

    assert!(closes.iter().all(|(code, _)| *code == CloseCode::Away), "{closes:?}");
    let first = closes.iter().map(|(_, t)| *t).min().unwrap();
    let last = closes.iter().map(|(_, t)| *t).max().unwrap();
    assert!(last < SPREAD + Duration::from_millis(500), "closes by {last:?}, spread is {SPREAD:?}");
    assert!(last - first > SPREAD / 4, "closes not spread: {first:?} to {last:?}");
    assert_eq!(reconnected.load(Ordering::SeqCst), SESSIONS);

    // They are on the new node: its broker is the only one left, and it
    // delivers to every one of them.
    let publish = json!({"key": KEY, "data": {"text": "from the new node"}});
    let resp = common::client().post(new.url("admin", "/olive/publish")).json(&publish).send().await.unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    for ws in &mut back {
        let message = recv(ws).await;
        assert_eq!(message["data"]["text"], "from the new node", "{message}");
    }
}
