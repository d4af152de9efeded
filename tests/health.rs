//! /healthz and /readyz on the admin listener.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Olive, Upstream, client, rabbit};
use serde_json::{Value, json};

/// An http and an admin listener; the upstream `django` at `addresses`
/// serves `/`; `live` goes into `[live]`.
fn config(addresses: &[SocketAddr], live: &str) -> String {
    let addresses: Vec<String> = addresses.iter().map(|a| format!("\"{a}\"")).collect();
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

[[upstream]]
name = "django"
addresses = [{}]
connect_timeout = "500ms"
fail_timeout = "60s"

[[route]]
path = "/"
proxy.upstream = "django"

[live]
{live}
"#,
        addresses.join(", ")
    )
}

/// A port nothing listens on.
fn closed_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

async fn readyz(olive: &Olive) -> (u16, Value) {
    let resp = client().get(olive.url("admin", "/readyz")).send().await.unwrap();
    assert_eq!(resp.headers()["content-type"], "application/json");
    (resp.status().as_u16(), resp.json().await.unwrap())
}

#[tokio::test]
async fn ready_when_all_is_fine() {
    let up = Upstream::echo().await;
    let http = client();
    let olive = Olive::start(&config(&[up.addr], "")).await;
    let health = http.get(olive.url("admin", "/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.json::<Value>().await.unwrap(), json!({"status": "ok"}));
    assert_eq!(
        readyz(&olive).await,
        (
            200,
            json!({"ready": true, "checks": {"listeners": "ok", "broker": "ok", "upstreams": {"django": "ok"}}})
        )
    );
    // Not on the public listener: that goes to Django.
    for path in ["/readyz", "/metrics"] {
        assert_eq!(http.get(olive.url("http", path)).send().await.unwrap().text().await.unwrap(), path);
    }
}

#[tokio::test]
async fn not_ready_when_every_address_of_the_upstreams_fails() {
    let (a, b) = (closed_port(), closed_port());
    let olive = Olive::start(&config(&[a, b], "")).await;
    // Both addresses are tried (GET is retried on connect failure) and
    // ejected for fail_timeout.
    assert_eq!(client().get(olive.url("http", "/")).send().await.unwrap().status(), 502);
    assert_eq!(
        readyz(&olive).await,
        (
            503,
            json!({"ready": false, "checks": {
                "listeners": "ok", "broker": "ok", "upstreams": {"django": "all 2 addresses failing"}
            }})
        )
    );
    // Still alive.
    assert_eq!(client().get(olive.url("admin", "/healthz")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn one_failing_address_is_reported_but_ready() {
    let up = Upstream::echo().await;
    let olive = Olive::start(&config(&[closed_port(), up.addr], "")).await;
    // Round-robin: one of two requests meets the closed port first, and
    // is retried on the live one.
    for _ in 0..2 {
        assert_eq!(client().get(olive.url("http", "/")).send().await.unwrap().status(), 200);
    }
    let (status, body) = readyz(&olive).await;
    assert_eq!(status, 200);
    assert_eq!(body["checks"]["upstreams"]["django"], "1 of 2 addresses failing");
}

/// An AMQP broker on a port where nothing listens never connects: not
/// ready, and the metrics say so.
#[tokio::test]
async fn not_ready_while_the_broker_is_down() {
    let up = Upstream::echo().await;
    let live = format!(
        "broker = \"amqp\"\n\n[live.amqp]\nurl = \"amqp://guest:guest@{}/%2f\"\nreconnect_max = \"1s\"\n",
        closed_port()
    );
    let olive = Olive::start(&config(&[up.addr], &live)).await;
    assert_eq!(
        readyz(&olive).await,
        (
            503,
            json!({"ready": false, "checks": {
                "listeners": "ok", "broker": "disconnected", "upstreams": {"django": "ok"}
            }})
        )
    );
    let metrics = client().get(olive.url("admin", "/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("\nolive_broker_connected{broker=\"amqp\"} 0\n"), "{metrics}");
    olive.stop().await;
}

/// With RabbitMQ up, the same node turns ready once connected.
#[tokio::test]
async fn ready_once_rabbitmq_is_connected() {
    if !rabbit() {
        return;
    }
    let up = Upstream::echo().await;
    let live = "broker = \"amqp\"\n\n[live.amqp]\nexchange = \"olive.test.health\"\n";
    let olive = Olive::start(&config(&[up.addr], live)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let body = loop {
        let (status, body) = readyz(&olive).await;
        if status == 200 {
            break body;
        }
        assert!(tokio::time::Instant::now() < deadline, "never ready: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(body["checks"]["broker"], "ok");
    let metrics = client().get(olive.url("admin", "/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("\nolive_broker_connected{broker=\"amqp\"} 1\n"), "{metrics}");
    olive.stop().await;
}
