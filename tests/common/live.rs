//! Websocket clients for the live hub tests.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::Message;

use super::{Olive, client};

pub type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// `[auth]` for tests that are not about access control: anonymous
/// visitors may do everything.
pub const OPEN: &str = r##"anonymous = { subscribe = ["#"], publish = ["#"], presence = ["#"] }"##;

/// An olive with the live hub at `/olive` on listener `http`, an `admin`
/// listener, `live` inside `[live]` and `route` inside the route's
/// `live = { }` table; anonymous visitors may do everything ([`OPEN`]).
pub fn config(live: &str, route: &str) -> String {
    config_auth(live, route, OPEN)
}

/// [`config`] with `auth` as the `[auth]` table (and its sub-tables).
pub fn config_auth(live: &str, route: &str, auth: &str) -> String {
    format!(
        r#"
[server]
access_log = false

[[listener]]
name = "http"
kind = "http"
bind = "127.0.0.1:0"

[[listener]]
name = "admin"
kind = "admin"
bind = "127.0.0.1:0"

[[route]]
path = "/olive"
live = {{ {route} }}

[live]
{live}

[auth]
{auth}
"#
    )
}

/// Waits until `olive` says it is ready (with AMQP: connected to RabbitMQ).
pub async fn ready(olive: &Olive) {
    let http = client();
    for _ in 0..100 {
        let resp = http.get(olive.url("admin", "/readyz")).send().await.unwrap();
        if resp.status() == 200 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("olive did not become ready (is RabbitMQ up?)");
}

pub async fn connect(olive: &Olive) -> Ws {
    let url = format!("ws://{}/olive/ws", olive.addr("http"));
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

/// Any websocket: over HTTP/1.1 ([`Ws`]) or over an HTTP/2 stream.
pub type AnyWs<S> = tokio_tungstenite::WebSocketStream<S>;

pub async fn send<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut AnyWs<S>, frame: Value) {
    ws.send(Message::text(frame.to_string())).await.unwrap();
}

/// The next text frame as JSON within `within` (pings skipped), or `None`.
pub async fn recv_within<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut AnyWs<S>,
    within: Duration,
) -> Option<Value> {
    loop {
        match tokio::time::timeout(within, ws.next()).await.ok()?? {
            Ok(Message::Text(text)) => return Some(serde_json::from_str(&text).unwrap()),
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// The next text frame as JSON; a frame must come within five seconds.
pub async fn recv<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut AnyWs<S>) -> Value {
    recv_within(ws, Duration::from_secs(5)).await.expect("a frame in time")
}

/// Subscribes to `key` and checks the `subscribed` answer.
pub async fn subscribe<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut AnyWs<S>, key: &str) {
    send(ws, json!({"type": "subscribe", "key": key})).await;
    let answer = recv(ws).await;
    assert_eq!(answer["type"], "subscribed", "{answer}");
    assert_eq!(answer["key"], key);
}
