//! The live hub over the real RabbitMQ: several olive nodes, and programs
//! that publish with an ordinary AMQP client.

mod common;

use std::time::Duration;

use common::live::{Ws, connect, ready, recv_within, subscribe};
use common::{Olive, client, rabbit};
use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

/// A node on `exchange` (one per test, so parallel tests stay apart).
fn node_config(exchange: &str) -> String {
    let live = format!(
        "broker = \"amqp\"\n\n[live.amqp]\nexchange = \"{exchange}\"\nreconnect_min = \"200ms\"\nreconnect_max = \"2s\"\n"
    );
    common::live::config(&live, "")
}

fn exchange(test: &str) -> String {
    format!("olive.test.{test}.{:08x}", fastrand::u32(..))
}

/// The binding in RabbitMQ follows the subscribe asynchronously: publish
/// probes through `publish` until one arrives.
async fn until_bound<F, Fut>(ws: &mut Ws, publish: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for _ in 0..50 {
        publish().await;
        if let Some(msg) = recv_within(ws, Duration::from_millis(200)).await {
            assert_eq!(msg["data"], "probe");
            while recv_within(ws, Duration::from_millis(100)).await.is_some() {}
            return;
        }
    }
    panic!("the binding never took effect");
}

#[tokio::test]
async fn a_publish_on_one_node_reaches_a_subscriber_on_another() {
    if !rabbit() {
        return;
    }
    let exchange = exchange("nodes");
    let a = Olive::start(&node_config(&exchange)).await;
    let b = Olive::start(&node_config(&exchange)).await;
    ready(&a).await;
    ready(&b).await;
    let mut sub = connect(&a).await;
    subscribe(&mut sub, "olive.notes.#").await;
    let http = client();
    let publish_url = b.url("admin", "/olive/publish");
    let probe = || async {
        let body = json!({"key": "olive.notes.note.0", "data": "probe"});
        assert_eq!(http.post(&publish_url).json(&body).send().await.unwrap().status(), 202);
    };
    until_bound(&mut sub, probe).await;

    // Through node B's websocket: acked after RabbitMQ confirmed it.
    let mut publisher = connect(&b).await;
    for i in 0..10 {
        let frame = json!({"type": "publish", "key": "olive.notes.note.1", "data": {"n": i}, "ref": i});
        publisher.send(Message::text(frame.to_string())).await.unwrap();
    }
    let mut ids = Vec::new();
    for _ in 0..10 {
        let ack = recv_within(&mut publisher, Duration::from_secs(5)).await.unwrap();
        assert_eq!(ack["type"], "ack", "{ack}");
        ids.push(ack["id"].as_str().unwrap().to_owned());
    }
    for i in 0..10 {
        let msg = recv_within(&mut sub, Duration::from_secs(5)).await.expect("delivered through RabbitMQ");
        assert_eq!(msg["key"], "olive.notes.note.1");
        assert_eq!(msg["data"]["n"], i, "in publish order");
        assert!(ids.contains(&msg["id"].as_str().unwrap().to_owned()));
    }
}

#[tokio::test]
async fn a_message_published_with_pika_reaches_a_websocket_subscriber() {
    if !rabbit() {
        return;
    }
    let Some(python) = common::python("pika") else { return };
    let exchange = exchange("pika");
    let olive = Olive::start(&node_config(&exchange)).await;
    ready(&olive).await;
    let mut sub = connect(&olive).await;
    subscribe(&mut sub, "olive.notes.note.7").await;
    let script = format!(
        r#"
import json, pika, sys
conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1"))
ch = conn.channel()
ch.exchange_declare("{exchange}", exchange_type="topic", durable=True)
body = json.dumps(sys.argv[1] if sys.argv[1] == "probe" else {{"comment": 42, "html": "<p>from Django</p>"}})
props = pika.BasicProperties(content_type="application/json", message_id=(None if sys.argv[1] == "probe" else "django-42"))
ch.basic_publish("{exchange}", "olive.notes.note.7", body, props)
conn.close()
"#
    );
    let run = |arg: &'static str| {
        let (python, script) = (python.clone(), script.clone());
        async move {
            let status =
                tokio::process::Command::new(&python).arg("-c").arg(&script).arg(arg).status().await.unwrap();
            assert!(status.success());
        }
    };
    until_bound(&mut sub, || run("probe")).await;
    run("comment").await;
    let msg = recv_within(&mut sub, Duration::from_secs(5)).await.expect("delivered");
    assert_eq!(
        msg,
        json!({"type": "message", "key": "olive.notes.note.7", "id": "django-42",
               "data": {"comment": 42, "html": "<p>from Django</p>"}})
    );
}

/// Asks for `key`'s presence until it shows `anonymous` connections
/// (announcements between nodes are asynchronous); events are skipped.
async fn until_present(ws: &mut Ws, key: &str, anonymous: u64, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    let mut last = Value::Null;
    while Instant::now() < deadline {
        ws.send(Message::text(json!({"type": "presence", "key": key}).to_string())).await.unwrap();
        while let Some(frame) = recv_within(ws, Duration::from_secs(2)).await {
            if frame["type"] == "presence" {
                last = frame;
                break;
            }
        }
        if last["anonymous"] == anonymous {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("presence never showed {anonymous} anonymous: {last}");
}

#[tokio::test]
async fn presence_spans_nodes_and_a_stopped_node_takes_its_members_along() {
    if !rabbit() {
        return;
    }
    let exchange = exchange("presence");
    let config = node_config(&exchange).replace(
        "broker = \"amqp\"",
        "broker = \"amqp\"\npresence_heartbeat = \"200ms\"\npresence_ttl = \"1s\"",
    );
    let a = Olive::start(&config).await;
    let b = Olive::start(&config).await;
    ready(&a).await;
    ready(&b).await;
    let key = "olive.notes.note.3";
    let mut on_a = connect(&a).await;
    let mut on_b = connect(&b).await;
    subscribe(&mut on_a, key).await;
    subscribe(&mut on_b, key).await;
    let seen = until_present(&mut on_a, key, 2, Duration::from_secs(5)).await;
    assert_eq!(seen, json!({"type": "presence", "key": key, "members": [], "anonymous": 2}));
    let seen = until_present(&mut on_b, key, 2, Duration::from_secs(5)).await;
    assert_eq!(seen["anonymous"], 2, "both nodes agree");

    b.stop().await;
    let stopped = Instant::now();
    // Node B's side goes, by its goodbye or by the ttl (1s) at the latest.
    let seen = until_present(&mut on_a, key, 1, Duration::from_secs(3)).await;
    assert_eq!(seen, json!({"type": "presence", "key": key, "members": [], "anonymous": 1}));
    assert!(stopped.elapsed() < Duration::from_secs(3));
}

/// No ghosts: a node that announces itself and then falls silent (as a
/// crashed one does, without a goodbye) loses its members after the ttl.
#[tokio::test]
async fn a_node_that_falls_silent_expires_after_the_ttl() {
    if !rabbit() {
        return;
    }
    let exchange = exchange("ghost");
    let config = node_config(&exchange).replace(
        "broker = \"amqp\"",
        "broker = \"amqp\"\npresence_heartbeat = \"200ms\"\npresence_ttl = \"1s\"",
    );
    let a = Olive::start(&config).await;
    ready(&a).await;
    let key = "olive.notes.note.4";
    let mut ws = connect(&a).await;
    subscribe(&mut ws, key).await;
    until_present(&mut ws, key, 1, Duration::from_secs(5)).await;

    let amqp = lapin::Connection::connect("amqp://guest:guest@127.0.0.1:5672/%2f", Default::default())
        .await
        .unwrap();
    let channel = amqp.create_channel().await.unwrap();
    let presence = format!("{exchange}.presence");
    let body = json!({"node": "ghost", "op": "snapshot", "members": [], "anonymous": 4}).to_string();
    // The presence binding follows the subscribe asynchronously: announce
    // until node A has heard it once, then never again.
    let mut heard = false;
    for _ in 0..50 {
        channel
            .basic_publish(
                presence.as_str().into(),
                key.into(),
                Default::default(),
                body.as_bytes(),
                Default::default(),
            )
            .await
            .unwrap();
        let silent_from = Instant::now();
        ws.send(Message::text(json!({"type": "presence", "key": key}).to_string())).await.unwrap();
        let mut answer = Value::Null;
        while let Some(frame) = recv_within(&mut ws, Duration::from_secs(2)).await {
            if frame["type"] == "presence" {
                answer = frame;
                break;
            }
        }
        if answer["anonymous"] == 5 {
            heard = true;
            let seen = until_present(&mut ws, key, 1, Duration::from_secs(4)).await;
            assert_eq!(seen["anonymous"], 1);
            let took = silent_from.elapsed();
            assert!(took >= Duration::from_millis(800), "expired by the ttl, not before: {took:?}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(heard, "node A never heard the announcement");
    let _ = amqp.close(200, "done".into()).await;
}

/// `subscribed` means routed: a message published on another node right
/// after the client heard it reaches the client, with no warm-up.
#[tokio::test]
async fn subscribed_means_the_binding_is_in_place() {
    if !rabbit() {
        return;
    }
    let exchange = exchange("settled");
    let a = Olive::start(&node_config(&exchange)).await;
    let b = Olive::start(&node_config(&exchange)).await;
    ready(&a).await;
    ready(&b).await;
    let http = client();
    for i in 0..5 {
        let mut sub = connect(&a).await;
        let key = format!("olive.notes.note.{i}");
        subscribe(&mut sub, &key).await;
        let body = json!({"key": key, "data": i});
        assert_eq!(
            http.post(b.url("admin", "/olive/publish")).json(&body).send().await.unwrap().status(),
            202
        );
        let msg =
            recv_within(&mut sub, Duration::from_secs(5)).await.expect("the first message after subscribed");
        assert_eq!(msg["data"], i);
    }
}
