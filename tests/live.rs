//! The live hub end to end: real websocket clients, the admin publish API,
//! the embedded broker.

mod common;

use std::time::Duration;

use common::live::{Ws, connect, recv, send, subscribe};
use common::{Olive, client};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

async fn http_publish(olive: &Olive, body: Value) -> reqwest::Response {
    client().post(olive.url("admin", "/olive/publish")).json(&body).send().await.unwrap()
}

#[tokio::test]
async fn http_publish_reaches_exact_and_pattern_subscribers() {
    let olive = Olive::start(&common::live::config("", "")).await;
    let mut exact = connect(&olive).await;
    let mut pattern = connect(&olive).await;
    subscribe(&mut exact, "olive.notes.note.17").await;
    subscribe(&mut pattern, "olive.notes.#").await;

    let resp =
        http_publish(&olive, json!({"key": "olive.notes.note.17", "data": {"html": "<p>hi</p>"}})).await;
    assert_eq!(resp.status(), 202);
    let id = resp.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();

    let want =
        json!({"type": "message", "key": "olive.notes.note.17", "id": id, "data": {"html": "<p>hi</p>"}});
    assert_eq!(recv(&mut exact).await, want);
    assert_eq!(recv(&mut pattern).await, want);
}

#[tokio::test]
async fn websocket_publish_is_acked_and_delivered_in_order() {
    let olive = Olive::start(&common::live::config("", "")).await;
    let mut reader = connect(&olive).await;
    let mut writer = connect(&olive).await;
    subscribe(&mut reader, "olive.demo.room.1").await;
    for i in 0..20 {
        send(&mut writer, json!({"type": "publish", "key": "olive.demo.room.1", "data": i, "ref": i})).await;
    }
    let mut acked = Vec::new();
    for _ in 0..20 {
        let ack = recv(&mut writer).await;
        assert_eq!(ack["type"], "ack");
        acked.push((ack["ref"].as_i64().unwrap(), ack["id"].as_str().unwrap().to_owned()));
    }
    acked.sort();
    for (i, (_, id)) in acked.iter().enumerate() {
        let msg = recv(&mut reader).await;
        assert_eq!(msg["data"], i);
        assert_eq!(&msg["id"], id.as_str());
    }
}

#[tokio::test]
async fn unsubscribe_stops_delivery() {
    let olive = Olive::start(&common::live::config("", "")).await;
    let mut ws = connect(&olive).await;
    subscribe(&mut ws, "olive.a.b.1").await;
    send(&mut ws, json!({"type": "unsubscribe", "key": "olive.a.b.1"})).await;
    assert_eq!(recv(&mut ws).await, json!({"type": "unsubscribed", "key": "olive.a.b.1"}));
    http_publish(&olive, json!({"key": "olive.a.b.1", "data": 1})).await;
    send(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(recv(&mut ws).await, json!({"type": "pong"}), "no message before the pong");
}

#[tokio::test]
async fn bad_frames_get_errors_and_the_connection_stays_up() {
    let olive = Olive::start(&common::live::config("max_frame_bytes = 1024", "")).await;
    let mut ws = connect(&olive).await;
    for (frame, code) in [
        ("not json".to_owned(), "invalid"),
        (json!({"type": "dance"}).to_string(), "invalid"),
        (json!({"type": "subscribe", "key": "olive..x"}).to_string(), "invalid"),
        (json!({"type": "publish", "key": "olive.a.*", "data": 1}).to_string(), "invalid"),
        (json!({"type": "publish", "key": "olive.a.b", "data": "x".repeat(2000)}).to_string(), "too_large"),
    ] {
        ws.send(Message::text(frame.clone())).await.unwrap();
        let error = recv(&mut ws).await;
        assert_eq!(error["type"], "error", "{frame}");
        assert_eq!(error["code"], code, "{frame}");
    }
    ws.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(recv(&mut ws).await["code"], "invalid", "binary frames are not part of the protocol");
    send(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(recv(&mut ws).await, json!({"type": "pong"}));
}

#[tokio::test]
async fn repeated_abuse_closes_with_1008() {
    let olive = Olive::start(&common::live::config("max_invalid_frames = 3", "")).await;
    let mut ws = connect(&olive).await;
    for _ in 0..4 {
        ws.send(Message::text("garbage")).await.unwrap();
    }
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap() {
            Some(Ok(Message::Close(Some(frame)))) => {
                assert_eq!(frame.code, CloseCode::Policy);
                break;
            }
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn subscription_limit_is_enforced() {
    let olive = Olive::start(&common::live::config("max_subscriptions = 2", "")).await;
    let mut ws = connect(&olive).await;
    subscribe(&mut ws, "olive.a.b.1").await;
    subscribe(&mut ws, "olive.a.b.2").await;
    send(&mut ws, json!({"type": "subscribe", "key": "olive.a.b.3"})).await;
    assert_eq!(recv(&mut ws).await["code"], "too_large");
}

#[tokio::test]
async fn a_client_that_does_not_read_is_cut_off_with_1013_and_others_get_everything() {
    let olive = Olive::start(&common::live::config("outbound_queue = 8", "")).await;
    let mut stalled = connect(&olive).await;
    let mut healthy = connect(&olive).await;
    subscribe(&mut stalled, "olive.big.feed.1").await;
    subscribe(&mut healthy, "olive.big.feed.1").await;
    let payload = "x".repeat(16 * 1024);
    let http = client();
    let url = olive.url("admin", "/olive/publish");
    let reader = tokio::spawn(async move {
        for i in 0..2000 {
            let msg = recv(&mut healthy).await;
            assert_eq!(msg["data"]["n"], i);
        }
    });
    // 32 MB: far more than the socket buffers of a client that never reads.
    for i in 0..2000 {
        let body = json!({"key": "olive.big.feed.1", "data": {"n": i, "pad": payload}});
        assert_eq!(http.post(&url).json(&body).send().await.unwrap().status(), 202);
    }
    reader.await.unwrap();
    // The stalled client, reading at last, finds the close frame after
    // whatever fitted in the buffers.
    let code = loop {
        match tokio::time::timeout(Duration::from_secs(5), stalled.next()).await.unwrap() {
            Some(Ok(Message::Close(Some(frame)))) => break frame.code,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(code, CloseCode::Again);
}

#[tokio::test]
async fn http_publish_errors() {
    let olive = Olive::start(&common::live::config("max_frame_bytes = 256", "")).await;
    let http = client();
    let url = olive.url("admin", "/olive/publish");
    let bad = http.post(&url).body("{\"key\":\"olive.a.*\",\"data\":1}").send().await.unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(bad.json::<Value>().await.unwrap()["error"]["code"], "invalid");
    let big =
        http.post(&url).body(format!("{{\"key\":\"olive.a.b\",\"data\":\"{}\"}}", "x".repeat(300))).send();
    assert_eq!(big.await.unwrap().status(), 413);
    assert_eq!(http.get(&url).send().await.unwrap().status(), 405);
    // On the public listener it is the live route's own, checked against
    // the grants (tests/auth.rs); here anonymous may publish, so the body
    // is what is wrong.
    let public = http.post(olive.url("http", "/olive/publish")).body("{}").send().await.unwrap();
    assert_eq!(public.status(), 400);
    // Only on the live route, though.
    let elsewhere = http.post(olive.url("http", "/publish")).body("{}").send().await.unwrap();
    assert_eq!(elsewhere.status(), 404);
}

#[tokio::test]
async fn shutdown_closes_websockets_with_1001() {
    let olive = Olive::start(&common::live::config("", "")).await;
    let mut ws = connect(&olive).await;
    subscribe(&mut ws, "olive.a.b.1").await;
    olive.begin_shutdown();
    match tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap() {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::Away),
        other => panic!("expected a close frame, got {other:?}"),
    }
}

/// Reads frames until one of `kind` (presence events may come first).
async fn recv_kind(ws: &mut Ws, kind: &str) -> Value {
    loop {
        let frame = recv(ws).await;
        if frame["type"] == kind {
            return frame;
        }
    }
}

#[tokio::test]
async fn presence_counts_anonymous_connections_and_reports_changes() {
    let olive = Olive::start(&common::live::config("", "")).await;
    let key = "olive.notes.note.5";
    let mut a = connect(&olive).await;
    let mut b = connect(&olive).await;
    send(&mut a, json!({"type": "presence", "key": key})).await;
    assert_eq!(recv(&mut a).await["code"], "invalid", "presence needs a subscription to the key");
    subscribe(&mut a, key).await;
    subscribe(&mut b, key).await;
    for ws in [&mut a, &mut b] {
        send(&mut *ws, json!({"type": "presence", "key": key})).await;
        assert_eq!(
            recv(&mut *ws).await,
            json!({"type": "presence", "key": key, "members": [], "anonymous": 2})
        );
    }
    b.close(None).await.unwrap();
    assert_eq!(recv(&mut a).await, json!({"type": "leave", "key": key, "anonymous": 1}));
    let mut c = connect(&olive).await;
    subscribe(&mut c, key).await;
    assert_eq!(recv(&mut a).await, json!({"type": "join", "key": key, "anonymous": 2}));
    send(&mut c, json!({"type": "unsubscribe", "key": key})).await;
    assert_eq!(recv(&mut a).await, json!({"type": "leave", "key": key, "anonymous": 1}));
}

#[tokio::test]
async fn above_the_limit_presence_is_a_throttled_count() {
    let olive = Olive::start(&common::live::config(
        "presence_max_members = 1\npresence_count_interval = \"100ms\"",
        "",
    ))
    .await;
    let key = "olive.notes.note.6";
    let mut a = connect(&olive).await;
    subscribe(&mut a, key).await;
    send(&mut a, json!({"type": "presence", "key": key})).await;
    assert_eq!(recv(&mut a).await, json!({"type": "presence", "key": key, "members": [], "anonymous": 1}));
    let mut others = Vec::new();
    for _ in 0..3 {
        let mut ws = connect(&olive).await;
        subscribe(&mut ws, key).await;
        others.push(ws);
    }
    let count = recv_kind(&mut a, "presence").await;
    assert!(count["count"].as_u64().unwrap() >= 2, "{count}");
    assert!(count.get("members").is_none());
    let mut b = others.pop().unwrap();
    send(&mut b, json!({"type": "presence", "key": key})).await;
    assert_eq!(recv(&mut b).await, json!({"type": "presence", "key": key, "count": 4}));
}

#[tokio::test]
async fn websocket_sessions_count_against_the_connection_limit() {
    let config =
        common::live::config("", "").replace("[server]", "[limits]\nmax_connections = 2\n\n[server]");
    let olive = Olive::start(&config).await;
    let mut first = connect(&olive).await;
    let _second = connect(&olive).await;
    // A third waits in the backlog while two sessions are open...
    let third = tokio::spawn({
        let url = format!("ws://{}/olive/ws", olive.addr("http"));
        async move { tokio_tungstenite::connect_async(url).await.unwrap().0 }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!third.is_finished(), "a third session was accepted past max_connections = 2");
    // ...and is served once one closes.
    first.close(None).await.unwrap();
    while first.next().await.is_some() {}
    let mut third = tokio::time::timeout(Duration::from_secs(5), third).await.unwrap().unwrap();
    subscribe(&mut third, "olive.a.b.1").await;
}
