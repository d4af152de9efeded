//! Revocation (`olive.control.revoke.USER`): the user's websockets close
//! with 4401 and their streams end, on every node, and their older tokens
//! are refused; nobody else is touched, and no client can send one.

mod common;

use std::time::Duration;

use common::live::{Ws, config_auth, recv, send, subscribe};
use common::tokens::{SECRET, bearer, hs, hs_auth, now, open};
use common::{Olive, client, rabbit};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// A token for `user`, minted at `iat`, that may read and write the notes.
fn token(user: &str, iat: u64) -> String {
    hs(&json!({
        "sub": user, "aud": "olive", "iss": "django", "iat": iat, "exp": now() + 60,
        "grants": {"subscribe": ["olive.notes.#"], "publish": ["#"]},
    }))
}

async fn start(live: &str) -> Olive {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), SECRET).unwrap();
    Olive::start_in(dir, &config_auth(live, "", &hs_auth(""))).await
}

/// Publishes a revocation through `olive`'s admin listener.
async fn revoke(olive: &Olive, user: &str, body: Value) {
    let key = format!("olive.control.revoke.{user}");
    let resp = client().post(olive.url("admin", "/olive/publish")).json(&json!({"key": key, "data": body}));
    assert_eq!(resp.send().await.unwrap().status(), 202);
}

/// The next frame is a close with 4401 and `reason`.
async fn closed_with(ws: &mut Ws, reason: &str) {
    let frame = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.expect("closed in time");
    let Some(Ok(Message::Close(Some(close)))) = frame else { panic!("expected a close, got {frame:?}") };
    assert_eq!((close.code, close.reason.as_str()), (CloseCode::from(4401), reason));
}

async fn still_up(ws: &mut Ws) {
    send(ws, json!({"type": "ping"})).await;
    assert_eq!(recv(ws).await, json!({"type": "pong"}));
}

#[tokio::test]
async fn a_revocation_ends_the_users_sessions_and_refuses_older_tokens() {
    let olive = start("").await;
    let minted = now() - 5;
    let old = token("7", minted);
    let mut ws = bearer(&olive, &old).await;
    subscribe(&mut ws, "olive.notes.note.1").await;
    let mut other = bearer(&olive, &token("8", minted)).await;
    let sse_url = olive.url("http", &format!("/olive/sse?key=olive.notes.note.1&token={old}"));
    let mut sse = client().get(sse_url).send().await.unwrap().bytes_stream();

    revoke(&olive, "7", json!({"before": minted})).await;
    closed_with(&mut ws, "token revoked").await;
    let mut events = String::new();
    while let Ok(Some(Ok(chunk))) = tokio::time::timeout(Duration::from_secs(5), sse.next()).await {
        events.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(
        events.ends_with(
            "event: close\ndata: {\"type\":\"close\",\"code\":4401,\"reason\":\"token revoked\"}\n\n"
        ),
        "{events:?}"
    );
    still_up(&mut other).await;

    // The old token is refused from now on; one minted after the
    // revocation's `before` is good.
    assert_eq!(open(&olive, &format!("?token={old}"), &[]).await.err(), Some(401));
    let mut fresh = bearer(&olive, &token("7", minted + 1)).await;
    subscribe(&mut fresh, "olive.notes.note.1").await;
    let text = client().get(olive.url("admin", "/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(text.contains("olive_token_rejections_total{reason=\"revoked\"} 1"), "{text}");
}

#[tokio::test]
async fn no_client_may_publish_a_control_message() {
    let olive = start("").await;
    let mut ws = bearer(&olive, &token("8", now())).await;
    let mut victim = bearer(&olive, &token("7", now() - 5)).await;
    send(&mut ws, json!({"type": "publish", "key": "olive.control.revoke.7", "data": {}, "ref": "r"})).await;
    let answer = recv(&mut ws).await;
    assert_eq!((answer["code"].as_str(), answer["ref"].as_str()), (Some("forbidden"), Some("r")), "{answer}");
    still_up(&mut victim).await;
    // Nor does a subscriber to everything hear revocations.
    subscribe(&mut ws, "olive.notes.#").await;
    revoke(&olive, "9", json!({})).await;
    assert!(common::live::recv_within(&mut ws, Duration::from_millis(300)).await.is_none());
}

/// Two nodes on one RabbitMQ: a revocation published on one ends the
/// user's sessions on both.
#[tokio::test]
async fn a_revocation_reaches_every_node() {
    if !rabbit() {
        return;
    }
    let exchange = format!("olive.test.revoke.{:08x}", fastrand::u32(..));
    let live = format!("broker = \"amqp\"\n\n[live.amqp]\nexchange = \"{exchange}\"\n");
    let (a, b) = (start(&live).await, start(&live).await);
    for node in [&a, &b] {
        common::live::ready(node).await;
    }
    let old = token("7", now() - 5);
    let (mut on_a, mut on_b) = (bearer(&a, &old).await, bearer(&b, &old).await);
    revoke(&a, "7", json!({})).await;
    closed_with(&mut on_a, "token revoked").await;
    closed_with(&mut on_b, "token revoked").await;
    assert_eq!(open(&b, &format!("?token={old}"), &[]).await.err(), Some(401));
}
