//! Faults without loss (issue 7, item 7), against real processes.
//!
//! RabbitMQ faults run on a private RabbitMQ node of this test's own
//! (`common::rabbit_node`), never the machine's shared one: its
//! connections are closed and the node is stopped and started while
//! publishers publish steadily, and every publish that got an `ack` must
//! reach every subscriber that stayed connected, once, in publish order
//! per key.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use common::live::{Ws, connect, ready, recv_within, subscribe};
use common::rabbit_node::RabbitNode;
use common::{Olive, client};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

/// The keys every subscriber follows and every publisher writes to, in
/// turn.
const KEYS: [&str; 2] = ["olive.faults.note.1", "olive.faults.note.2"];
/// A publisher's pace.
const EVERY: Duration = Duration::from_millis(20);

/// A node on the private RabbitMQ at `url`: quick reconnects, so that the
/// test spends its time publishing, not waiting.
fn amqp_node(url: &str) -> String {
    let live = format!(
        "broker = \"amqp\"\n\n[live.amqp]\nurl = \"{url}\"\nreconnect_min = \"100ms\"\n\
         reconnect_max = \"1s\"\nconfirm_timeout = \"2s\"\n"
    );
    // Every client is 127.0.0.1 and publishes 50 a second: rates off.
    let auth = format!(
        "{}\n\n[rate_limits]\nhttp_per_ip = 0\nconnects_per_ip = 0\npublishes_per_user = 0\n\
         frames_per_connection = 0\n",
        common::live::OPEN
    );
    common::live::config_auth(&live, "", &auth)
}

/// Runs `rabbitmqctl` off the runtime (it takes seconds) and insists it
/// worked.
async fn ctl(node: &Arc<RabbitNode>, args: &'static [&'static str]) {
    let node = node.clone();
    let out = tokio::task::spawn_blocking(move || node.ctl(args)).await.unwrap();
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What one publisher heard back: the acked ids, in publish order per key,
/// and how many publishes were refused.
struct Published {
    /// `(key, id)` for each ack, in the order the publishes were sent.
    acked: Vec<(String, String)>,
    refused: usize,
    sent: usize,
}

/// Publishes to the keys in turn every [`EVERY`] until `stop`, then waits
/// for the answer to every publish.
async fn publisher(mut ws: Ws, name: &'static str, mut stop: watch::Receiver<bool>) -> Published {
    let mut answers: HashMap<u64, Value> = HashMap::new();
    let mut sent: Vec<&str> = Vec::new();
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = tick.tick() => {
                let key = KEYS[sent.len() % KEYS.len()];
                let frame = json!({"type": "publish", "key": key, "data": {"from": name}, "ref": sent.len()});
                ws.send(Message::text(frame.to_string())).await.unwrap();
                sent.push(key);
            }
            frame = ws.next() => take_answer(frame, &mut answers),
        }
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while answers.len() < sent.len() && Instant::now() < deadline {
        if let Ok(frame) = tokio::time::timeout(Duration::from_secs(1), ws.next()).await {
            take_answer(frame, &mut answers);
        }
    }
    assert_eq!(answers.len(), sent.len(), "{name}: every publish is answered");
    let mut published = Published { acked: Vec::new(), refused: 0, sent: sent.len() };
    for (n, key) in sent.iter().enumerate() {
        let answer = &answers[&(n as u64)];
        match answer["type"].as_str() {
            Some("ack") => published.acked.push((key.to_string(), answer["id"].as_str().unwrap().to_owned())),
            Some("error") => {
                assert_eq!(answer["code"], "unavailable", "{answer}");
                published.refused += 1;
            }
            _ => panic!("{name}: unexpected answer {answer}"),
        }
    }
    published
}

fn take_answer(
    frame: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    answers: &mut HashMap<u64, Value>,
) {
    match frame {
        Some(Ok(Message::Text(text))) => {
            let v: Value = serde_json::from_str(&text).unwrap();
            if let Some(n) = v["ref"].as_u64() {
                answers.insert(n, v);
            }
        }
        Some(Ok(_)) => {}
        other => panic!("the publisher's websocket ended: {other:?}"),
    }
}

/// Collects `(key, id)` of every message a subscriber receives until
/// `stop`.
async fn subscriber(mut ws: Ws, mut stop: watch::Receiver<bool>) -> Vec<(String, String)> {
    let mut got = Vec::new();
    loop {
        tokio::select! {
            _ = stop.changed() => return got,
            frame = ws.next() => match frame {
                Some(Ok(Message::Text(text))) => {
                    let v: Value = serde_json::from_str(&text).unwrap();
                    if v["type"] == "message" {
                        got.push((v["key"].as_str().unwrap().to_owned(), v["id"].as_str().unwrap().to_owned()));
                    }
                }
                Some(Ok(_)) => {}
                other => panic!("a subscriber was disconnected: {other:?}"),
            },
        }
    }
}

/// Subscribes to every key and waits until a publish through `via` on
/// each key arrives (bindings follow `subscribed` per node, but the other
/// node's must be in place too).
async fn subscribed(ws: &mut Ws, via: &[&Olive]) {
    for key in KEYS {
        subscribe(ws, key).await;
    }
    let http = client();
    for olive in via {
        for key in KEYS {
            let url = olive.url("admin", "/olive/publish");
            let mut arrived = false;
            for _ in 0..50 {
                let body = json!({"key": key, "data": "probe"});
                assert_eq!(http.post(&url).json(&body).send().await.unwrap().status(), 202);
                if recv_within(ws, Duration::from_millis(200)).await.is_some() {
                    arrived = true;
                    break;
                }
            }
            assert!(arrived, "the binding for {key} never took effect");
        }
    }
    while recv_within(ws, Duration::from_millis(200)).await.is_some() {}
}

/// Acked ⊆ received, each received once, and per key the acked messages
/// of each publisher arrive in publish order.
fn check(name: &str, received: &[(String, String)], publishers: &[&Published]) {
    let mut seen = HashSet::new();
    for (_, id) in received {
        assert!(seen.insert(id.as_str()), "{name}: {id} delivered twice");
    }
    let position: HashMap<&str, usize> =
        received.iter().enumerate().map(|(i, (_, id))| (id.as_str(), i)).collect();
    for (p, published) in publishers.iter().enumerate() {
        let missing: Vec<&(String, String)> =
            published.acked.iter().filter(|(_, id)| !position.contains_key(id.as_str())).collect();
        assert!(
            missing.is_empty(),
            "{name}: {} of publisher {p}'s {} acked messages never arrived, e.g. {:?}",
            missing.len(),
            published.acked.len(),
            &missing[..missing.len().min(5)]
        );
        for key in KEYS {
            let order: Vec<usize> = published
                .acked
                .iter()
                .filter(|(k, _)| k == key)
                .map(|(_, id)| position[id.as_str()])
                .collect();
            assert!(order.windows(2).all(|w| w[0] < w[1]), "{name}: {key} out of publish order");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_messages_survive_closed_connections_and_a_rabbitmq_restart() {
    let Some(rabbit) = RabbitNode::start(None).await else { return };
    let rabbit = Arc::new(rabbit);
    let config = amqp_node(&rabbit.amqp_url("guest", "guest"));
    let a = Olive::start(&config).await;
    let b = Olive::start(&config).await;
    ready(&a).await;
    ready(&b).await;

    let (mut sub_a, mut sub_b) = (connect(&a).await, connect(&b).await);
    subscribed(&mut sub_a, &[&a, &b]).await;
    subscribed(&mut sub_b, &[&a, &b]).await;
    let (stop_tx, stop) = watch::channel(false);
    let subs = [tokio::spawn(subscriber(sub_a, stop.clone())), tokio::spawn(subscriber(sub_b, stop.clone()))];
    let (stop_pub_tx, stop_pub) = watch::channel(false);
    let pubs = [
        tokio::spawn(publisher(connect(&a).await, "a", stop_pub.clone())),
        tokio::spawn(publisher(connect(&b).await, "b", stop_pub.clone())),
    ];

    // Steady state, then the faults, each followed by time to recover
    // while the publishers go on.
    tokio::time::sleep(Duration::from_secs(1)).await;
    ctl(&rabbit, &["close_all_connections", "faults test"]).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    ctl(&rabbit, &["close_all_connections", "faults test, again"]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    ctl(&rabbit, &["close_all_connections", "faults test, quickly again"]).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    ctl(&rabbit, &["stop_app"]).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    ctl(&rabbit, &["start_app"]).await;
    ready(&a).await;
    ready(&b).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = stop_pub_tx.send(true);
    let [pa, pb] = pubs;
    let (pa, pb) = (pa.await.unwrap(), pb.await.unwrap());

    // Deliveries may trail the acks (a redelivery after a reconnect).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _ = stop_tx.send(true);
    let [sa, sb] = subs;
    let (ra, rb) = (sa.await.unwrap(), sb.await.unwrap());
    eprintln!(
        "publisher a: {} sent, {} acked, {} refused; publisher b: {} sent, {} acked, {} refused; \
         received: {} on a, {} on b",
        pa.sent,
        pa.acked.len(),
        pa.refused,
        pb.sent,
        pb.acked.len(),
        pb.refused,
        ra.len(),
        rb.len()
    );
    // The faults were real: some publishes were refused, and plenty got
    // through on either side of them.
    assert!(pa.refused + pb.refused > 0, "no publish was refused: the faults did not bite");
    assert!(pa.acked.len() > 100 && pb.acked.len() > 100);
    check("subscriber on a", &ra, &[&pa, &pb]);
    check("subscriber on b", &rb, &[&pa, &pb]);
    a.stop().await;
    b.stop().await;
}

/// An upstream process that answers `…/length` (a Content-Length of a
/// megabyte) and `…/chunked` with their first 10 000 bytes, `…/silent`
/// with nothing, holds every connection open, and says each path's last
/// segment on stdout once the request is in.
const DYING_UPSTREAM: &str = r#"
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0))
s.listen(16)
print(s.getsockname()[1], flush=True)
held = []
while True:
    c, _ = s.accept()
    req = b""
    while b"\r\n\r\n" not in req:
        req += c.recv(4096)
    path = req.split(b" ")[1].rsplit(b"/", 1)[-1]
    if path == b"length":
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 10000)
    elif path == b"chunked":
        c.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2710\r\n" + b"x" * 10000 + b"\r\n")
    held.append(c)
    print(path.decode(), flush=True)
"#;

/// `/dying/` goes to the upstream that is killed, `/` to a healthy one.
fn two_upstreams(dying: u16, healthy: std::net::SocketAddr) -> String {
    format!(
        r#"
[server]
access_log = false

[[listener]]
name = "http"
kind = "http"
bind = "127.0.0.1:0"

[[upstream]]
name = "dying"
addresses = ["127.0.0.1:{dying}"]
connect_timeout = "500ms"

[[upstream]]
name = "app"
addresses = ["{healthy}"]

[[route]]
path = "/dying/"
proxy.upstream = "dying"
proxy.compress = false

[[route]]
path = "/"
proxy.upstream = "app"
proxy.compress = false
"#
    )
}

/// A request to the dying upstream whose response head came, with the
/// first bytes of its body: the rest of the body, or the error that ends it.
async fn rest_of_body(resp: reqwest::Response) -> Result<usize, reqwest::Error> {
    let mut resp = resp;
    let mut total = 0;
    while let Some(chunk) = resp.chunk().await? {
        total += chunk.len();
    }
    Ok(total)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_killed_mid_response_is_a_clean_error_and_olive_serves_on() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut upstream = tokio::process::Command::new("python3")
        .args(["-c", DYING_UPSTREAM])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs");
    let mut said = BufReader::new(upstream.stdout.take().unwrap()).lines();
    let port: u16 = said.next_line().await.unwrap().unwrap().parse().unwrap();
    let healthy = common::Upstream::echo().await;
    let olive = Olive::start(&two_upstreams(port, healthy.addr)).await;
    let http = client();

    // Steady traffic to the healthy upstream throughout.
    let (stop_tx, mut stop) = watch::channel(false);
    let steady = {
        let (http, url) = (http.clone(), olive.url("http", "/steady"));
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0, Vec::new());
            while !*stop.borrow_and_update() {
                let answer = match http.get(&url).send().await {
                    Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
                    Err(e) => (0, e.to_string()),
                };
                match answer {
                    (200, body) if body == "/steady" => ok += 1,
                    other => failed.push(other),
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (ok, failed)
        })
    };

    // Two responses mid-body and one waiting for its head.
    let mut mid_body = Vec::new();
    for path in ["length", "chunked"] {
        let mut resp = http.get(olive.url("http", &format!("/dying/{path}"))).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let first = resp.chunk().await.unwrap().expect("the first bytes of the body");
        assert!(!first.is_empty());
        assert_eq!(said.next_line().await.unwrap().unwrap(), path);
        mid_body.push((path, resp));
    }
    let silent = tokio::spawn(http.get(olive.url("http", "/dying/silent")).send());
    assert_eq!(said.next_line().await.unwrap().unwrap(), "silent");

    upstream.start_kill().unwrap();
    upstream.wait().await.unwrap();
    let killed = Instant::now();

    // Mid-body: the body ends in an error, never a short body that looks whole.
    for (path, resp) in mid_body {
        let ended = tokio::time::timeout(Duration::from_secs(5), rest_of_body(resp)).await;
        let ended = ended.unwrap_or_else(|_| panic!("{path}: the body neither ended nor failed"));
        assert!(ended.is_err(), "{path}: a truncated body ended as if complete ({ended:?})");
    }
    // Head not yet sent: a 502.
    let resp = tokio::time::timeout(Duration::from_secs(5), silent).await.unwrap().unwrap().unwrap();
    assert_eq!(resp.status(), 502);
    assert!(killed.elapsed() < Duration::from_secs(5));

    // And olive serves on: the dead upstream's route says 502 at once, the
    // healthy one never failed.
    let resp = http.get(olive.url("http", "/dying/length")).send().await.unwrap();
    assert_eq!(resp.status(), 502);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = stop_tx.send(true);
    let (ok, failed) = steady.await.unwrap();
    assert!(failed.is_empty(), "healthy requests failed: {failed:?}");
    assert!(ok > 10, "only {ok} healthy requests");
    olive.stop().await;
}
