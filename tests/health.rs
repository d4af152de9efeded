//! /healthz and /readyz on the admin listener.

mod common;

use common::{Olive, Upstream, client};
use serde_json::{Value, json};

fn config(upstream: std::net::SocketAddr) -> String {
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
addresses = ["{upstream}"]
fail_timeout = "60s"

[[route]]
path = "/"
proxy.upstream = "django"
"#
    )
}

#[tokio::test]
async fn readiness_follows_the_upstreams() {
    let up = Upstream::echo().await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let http = client();

    let olive = Olive::start(&config(up.addr)).await;
    let health = http.get(olive.url("admin", "/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ready = http.get(olive.url("admin", "/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(
        ready.json::<Value>().await.unwrap(),
        json!({"ready": true, "broker": true, "upstreams": {"django": true}})
    );
    // Not on the public listener: that goes to Django.
    assert_eq!(http.get(olive.url("http", "/readyz")).send().await.unwrap().text().await.unwrap(), "/readyz");

    let olive = Olive::start(&config(dead)).await;
    assert_eq!(http.get(olive.url("http", "/")).send().await.unwrap().status(), 502);
    let ready = http.get(olive.url("admin", "/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    assert_eq!(ready.json::<Value>().await.unwrap()["upstreams"], json!({"django": false}));
}
