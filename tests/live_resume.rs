//! Resume after a reconnect (history, then upstream recovery) and the SSE
//! endpoint, end to end: real websocket and HTTP clients, the admin
//! publish API, a real upstream serving the recovery contract.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::live::{Ws, config, connect, recv, send};
use common::{Olive, Upstream, client};
use futures_util::{Stream, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const KEY: &str = "olive.notes.note.7";

/// Nothing more arrives within a short wait.
async fn quiet(ws: &mut Ws) {
    if let Ok(Some(Ok(Message::Text(text)))) =
        tokio::time::timeout(Duration::from_millis(300), ws.next()).await
    {
        panic!("unexpected frame {text}");
    }
}

async fn subscribe(ws: &mut Ws, key: &str, since: Option<&str>) -> Value {
    let mut frame = json!({"type": "subscribe", "key": key});
    if let Some(since) = since {
        frame["since"] = json!(since);
    }
    send(ws, frame).await;
    recv(ws).await
}

async fn publish(olive: &Olive, n: i64) -> String {
    let resp = client()
        .post(olive.url("admin", "/olive/publish"))
        .json(&json!({"key": KEY, "data": {"n": n}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    resp.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
}

fn message(id: &str, n: i64) -> Value {
    json!({"type": "message", "key": KEY, "id": id, "data": {"n": n}})
}

/// A subscriber that keeps the key bound (and so its history trustworthy)
/// while the client under test is away; what it receives shows that a
/// message has been recorded.
async fn keeper(olive: &Olive) -> Ws {
    let mut ws = connect(olive).await;
    subscribe(&mut ws, KEY, None).await;
    ws
}

#[tokio::test]
async fn websocket_since_replays_the_gap_then_continues_live() {
    let olive = Olive::start(&config("", "")).await;
    let mut keep = keeper(&olive).await;
    let mut ws = connect(&olive).await;
    assert_eq!(subscribe(&mut ws, KEY, None).await["recovered"], false);
    let first = publish(&olive, 1).await;
    assert_eq!(recv(&mut ws).await, message(&first, 1));
    assert_eq!(recv(&mut keep).await, message(&first, 1));
    drop(ws);

    let mut missed = Vec::new();
    for n in 2..=4 {
        missed.push(publish(&olive, n).await);
    }
    for (i, id) in missed.iter().enumerate() {
        assert_eq!(recv(&mut keep).await, message(id, i as i64 + 2)); // recorded by now
    }

    let mut ws = connect(&olive).await;
    assert_eq!(
        subscribe(&mut ws, KEY, Some(&first)).await,
        json!({"type": "subscribed", "key": KEY, "recovered": true})
    );
    for (i, id) in missed.iter().enumerate() {
        assert_eq!(recv(&mut ws).await, message(id, i as i64 + 2));
    }
    let live = publish(&olive, 5).await;
    assert_eq!(recv(&mut ws).await, message(&live, 5));
    quiet(&mut ws).await;
}

#[tokio::test]
async fn unknown_since_is_not_recovered() {
    let olive = Olive::start(&config("", "")).await;
    let mut keep = keeper(&olive).await;
    let id = publish(&olive, 1).await;
    recv(&mut keep).await;
    let mut ws = connect(&olive).await;
    let unknown = "01ARZ3NDEKTSV4RRFFQ69G5FAV";
    assert_eq!(subscribe(&mut ws, KEY, Some(unknown)).await["recovered"], false);
    // A pattern is never resumed from the history (docs/PROTOCOL.md).
    assert_eq!(subscribe(&mut ws, "olive.notes.#", Some(&id)).await["recovered"], false);
    quiet(&mut ws).await;
}

#[tokio::test]
async fn upstream_recovery_fills_the_gap_before_live_messages() {
    let upstream = Upstream::start(|seen| async move {
        let query = seen.uri.query().unwrap_or("").to_owned();
        if !query.contains("since=gone") {
            return common::text(500, "unexpected query");
        }
        let body = json!({"messages": [
            {"id": "u1", "data": {"n": 1}},
            {"id": "u2", "data": {"n": 2}},
        ]});
        let mut resp = common::text(200, &body.to_string());
        resp.headers_mut().insert("content-type", "application/json".parse().unwrap());
        resp
    })
    .await;
    let route = format!(r#"recovery_url = "http://{}/olive/recover/""#, upstream.addr);
    let olive = Olive::start(&config("", &route)).await;

    let mut ws = connect(&olive).await;
    assert_eq!(
        subscribe(&mut ws, KEY, Some("gone")).await,
        json!({"type": "subscribed", "key": KEY, "recovered": true})
    );
    assert_eq!(recv(&mut ws).await, message("u1", 1));
    assert_eq!(recv(&mut ws).await, message("u2", 2));
    let live = publish(&olive, 3).await;
    assert_eq!(recv(&mut ws).await, message(&live, 3));
    quiet(&mut ws).await;

    let seen = upstream.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].uri.path(), "/olive/recover/");
    assert_eq!(seen[0].uri.query(), Some(format!("key={KEY}&since=gone").as_str()));

    // When the upstream cannot answer, the client is told so.
    let mut ws = connect(&olive).await;
    assert_eq!(subscribe(&mut ws, KEY, Some("other")).await["recovered"], false);
}

/// Reads an event stream block by block.
struct Events {
    body: std::pin::Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    buf: String,
}

#[derive(Debug, Default)]
struct Event {
    id: Option<String>,
    data: Option<Value>,
    comment: bool,
}

impl Events {
    async fn open(olive: &Olive, query: &str, last_event_id: Option<&str>) -> Events {
        let mut req = client().get(olive.url("http", &format!("/olive/sse?{query}")));
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        Events { body: Box::pin(resp.bytes_stream()), buf: String::new() }
    }

    async fn next(&mut self) -> Event {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut event = Event::default();
                for line in block.lines() {
                    if let Some(id) = line.strip_prefix("id: ") {
                        event.id = Some(id.to_owned());
                    } else if let Some(data) = line.strip_prefix("data: ") {
                        event.data = Some(serde_json::from_str(data).unwrap());
                    } else if line.starts_with(':') {
                        event.comment = true;
                    }
                }
                return event;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(5), self.body.next())
                .await
                .expect("an event in time")
                .expect("the stream is open")
                .unwrap();
            self.buf.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// The next event that is not a heartbeat.
    async fn data(&mut self) -> Event {
        loop {
            let event = self.next().await;
            if !event.comment {
                return event;
            }
        }
    }
}

#[tokio::test]
async fn sse_delivers_with_ids_heartbeats_and_resumes() {
    let olive = Olive::start(&config(r#"sse_heartbeat = "100ms""#, "")).await;
    let mut keep = keeper(&olive).await;
    let mut events = Events::open(&olive, &format!("key={KEY}"), None).await;
    let subscribed = events.data().await;
    assert_eq!(subscribed.data, Some(json!({"type": "subscribed", "key": KEY, "recovered": false})));
    assert_eq!(subscribed.id, None);

    let ids = [publish(&olive, 1).await, publish(&olive, 2).await];
    for (i, id) in ids.iter().enumerate() {
        let event = events.data().await;
        assert_eq!(event.id.as_deref(), Some(id.as_str()));
        assert_eq!(event.data, Some(message(id, i as i64 + 1)));
        recv(&mut keep).await;
    }
    // Quiet stream: heartbeat comments keep it open.
    assert!(events.next().await.comment);
    assert!(events.next().await.comment);
    drop(events);

    let third = publish(&olive, 3).await;
    recv(&mut keep).await;
    let mut events = Events::open(&olive, &format!("key={KEY}&since=ignored"), Some(&ids[0])).await;
    assert_eq!(events.data().await.data, Some(json!({"type": "subscribed", "key": KEY, "recovered": true})));
    for (id, n) in [(&ids[1], 2), (&third, 3)] {
        let event = events.data().await;
        assert_eq!(event.id.as_deref(), Some(id.as_str()));
        assert_eq!(event.data, Some(message(id, n)));
    }
    let live = publish(&olive, 4).await;
    assert_eq!(events.data().await.id.as_deref(), Some(live.as_str()));
}

#[tokio::test]
async fn sse_refuses_bad_requests() {
    let olive = Olive::start(&config("max_subscriptions = 2", "")).await;
    for query in ["", "key=a..b", "key=olive.a.b.1&key=olive.a.b.2&key=olive.a.b.3"] {
        let resp = client().get(olive.url("http", &format!("/olive/sse?{query}"))).send().await.unwrap();
        assert_eq!(resp.status(), 400, "{query}");
        let text = resp.text().await.unwrap();
        if query.contains("b.3") {
            assert!(text.contains("at most 2 keys"), "{text}");
        }
    }
}
