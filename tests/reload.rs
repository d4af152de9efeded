//! SIGHUP reload, on a real olive process with real signals: a changed
//! route applies while a websocket stays open, a broken file is refused
//! and the old configuration keeps serving, a renewed certificate is
//! served to new connections while old ones carry on.

mod common;

use common::live::{recv, send, subscribe};
use common::process::OliveProcess;
use common::{Ca, Upstream, text};
use http::{Request, Version};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde_json::json;

const KEY: &str = "olive.notes.note.1";

/// An http listener with `routes` and the live hub at `/olive`, an admin
/// listener, upstreams `a` and `b`; `live` goes into `[live]`.
fn config(a: &Upstream, b: &Upstream, routes: &str, live: &str) -> String {
    format!(
        r##"
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
name = "a"
addresses = ["{a}"]

[[upstream]]
name = "b"
addresses = ["{b}"]

[[route]]
path = "/olive"
live = {{ }}

{routes}

[live]
{live}

[auth]
anonymous = {{ subscribe = ["#"], publish = ["#"] }}
"##,
        a = a.addr,
        b = b.addr,
    )
}

async fn upstreams() -> (Upstream, Upstream) {
    let a = Upstream::start(|seen| async move { text(200, &format!("a {}", seen.uri.path())) }).await;
    let b = Upstream::start(|seen| async move { text(200, &format!("b {}", seen.uri.path())) }).await;
    (a, b)
}

async fn get(olive: &OliveProcess, path: &str) -> (u16, String) {
    let resp = common::client().get(olive.url("http", path)).send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// `olive_config_reloads_total{result=...}` now.
async fn reloads(olive: &OliveProcess, result: &str) -> u64 {
    let text =
        common::client().get(olive.url("admin", "/metrics")).send().await.unwrap().text().await.unwrap();
    let series = format!("olive_config_reloads_total{{result=\"{result}\"}} ");
    let line = text.lines().find(|l| l.starts_with(&series)).expect("the reload counter");
    line[series.len()..].parse().unwrap()
}

#[tokio::test]
async fn sighup_applies_a_changed_route_while_a_websocket_stays_connected() {
    let (a, b) = upstreams().await;
    let dir = tempfile::tempdir().unwrap();
    let route_a = "[[route]]\npath = \"/\"\nproxy.upstream = \"a\"\n";
    let olive = OliveProcess::start(dir.path(), &config(&a, &b, route_a, "history_size = 10")).await;
    assert_eq!(get(&olive, "/page").await, (200, "a /page".into()));

    let url = format!("ws://{}/olive/ws", olive.addr("http"));
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    subscribe(&mut ws, KEY).await;

    // `/` now goes to b, a new `/a` prefix to a; the history size is a
    // setting that needs a restart.
    let routes = "[[route]]\npath = \"/\"\nproxy.upstream = \"b\"\n\n[[route]]\npath = \"/a\"\nproxy.upstream = \"a\"\n";
    olive.rewrite(&config(&a, &b, routes, "history_size = 20"));
    olive.signal("HUP").await;
    let done = olive.wait_log("configuration reloaded", 1).await;
    assert_eq!(done[0]["routes"], 3, "{done:?}");
    let warning =
        olive.wait_log("these settings changed but need a restart; they keep their old values", 1).await;
    assert_eq!(warning[0]["settings"], "live");

    assert_eq!(get(&olive, "/page").await, (200, "b /page".into()));
    assert_eq!(get(&olive, "/a/x").await, (200, "a /a/x".into()));
    assert_eq!(reloads(&olive, "ok").await, 1);
    assert_eq!(reloads(&olive, "error").await, 0);
    let metrics =
        common::client().get(olive.url("admin", "/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("olive_http_requests_total{route=\"/a\",status=\"2xx\"} 1"), "{metrics}");

    // The websocket opened before the reload still delivers and answers.
    let publish = json!({"key": KEY, "data": {"text": "after the reload"}});
    let resp =
        common::client().post(olive.url("admin", "/olive/publish")).json(&publish).send().await.unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let message = recv(&mut ws).await;
    assert_eq!(message["type"], "message", "{message}");
    assert_eq!(message["data"]["text"], "after the reload");
    send(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(recv(&mut ws).await["type"], "pong");
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn sighup_with_a_broken_config_is_refused_and_the_old_keeps_serving() {
    let (a, b) = upstreams().await;
    let dir = tempfile::tempdir().unwrap();
    let route_a = "[[route]]\npath = \"/\"\nproxy.upstream = \"a\"\n";
    let olive = OliveProcess::start(dir.path(), &config(&a, &b, route_a, "")).await;

    // A route to an upstream nobody configured.
    let broken = "[[route]]\npath = \"/\"\nproxy.upstream = \"nowhere\"\n";
    olive.rewrite(&config(&a, &b, broken, ""));
    olive.signal("HUP").await;
    let refused = olive.wait_log("configuration reload refused; the running configuration stays", 1).await;
    let error = refused[0]["error"].as_str().unwrap();
    assert!(error.contains("route[1].proxy.upstream"), "{error}");
    assert_eq!(get(&olive, "/page").await, (200, "a /page".into()));
    assert_eq!(reloads(&olive, "error").await, 1);
    assert_eq!(reloads(&olive, "ok").await, 0);

    // Not TOML at all: refused too.
    olive.rewrite("[server]\n[[route]\n");
    olive.signal("HUP").await;
    olive.wait_log("configuration reload refused; the running configuration stays", 2).await;
    assert_eq!(get(&olive, "/page").await, (200, "a /page".into()));

    // Fixed: applied.
    olive.rewrite(&config(&a, &b, "[[route]]\npath = \"/\"\nproxy.upstream = \"b\"\n", ""));
    olive.signal("HUP").await;
    olive.wait_log("configuration reloaded", 1).await;
    assert_eq!(get(&olive, "/page").await, (200, "b /page".into()));
    assert_eq!(reloads(&olive, "ok").await, 1);
    assert_eq!(reloads(&olive, "error").await, 2);
}

/// The certificate a new TLS connection to `olive` is served.
async fn served(ca: &Ca, olive: &OliveProcess) -> CertificateDer<'static> {
    let tls = common::tls_connect(ca.client_config(&[b"http/1.1"]), olive.addr("https"), "localhost").await;
    tls.get_ref().1.peer_certificates().unwrap()[0].clone().into_owned()
}

fn on_disk(path: &std::path::Path) -> CertificateDer<'static> {
    CertificateDer::pem_file_iter(path).unwrap().next().unwrap().unwrap()
}

#[tokio::test]
async fn a_renewed_certificate_is_served_to_new_connections() {
    let (a, _b) = upstreams().await;
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let (cert, _) = ca.issue(dir.path(), "site", &["localhost"]);
    let toml = format!(
        r#"
[server]
access_log = false

[[listener]]
name = "https"
kind = "https"
bind = "127.0.0.1:0"

[[certificate]]
cert = "{{dir}}/site-cert.pem"
key = "{{dir}}/site-key.pem"

[[upstream]]
name = "a"
addresses = ["{}"]

[[route]]
path = "/"
proxy.upstream = "a"
"#,
        a.addr
    );
    let olive = OliveProcess::start(dir.path(), &toml).await;
    let old = on_disk(&cert);
    assert_eq!(served(&ca, &olive).await, old);

    // A connection made before the renewal, kept open across it.
    let tls = common::tls_connect(ca.client_config(&[b"http/1.1"]), olive.addr("https"), "localhost").await;
    let (mut before, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);

    ca.issue(dir.path(), "site", &["localhost"]);
    let renewed = on_disk(&cert);
    assert_ne!(renewed, old);
    olive.signal("HUP").await;
    olive.wait_log("configuration reloaded", 1).await;
    assert_eq!(served(&ca, &olive).await, renewed);

    let req = Request::builder().uri("/kept").header("host", "localhost").body(olive::body::empty()).unwrap();
    let resp = before.send_request(req).await.unwrap();
    assert_eq!(resp.version(), Version::HTTP_11);
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "a /kept");

    // A key that does not match its certificate: refused, the renewed
    // certificate stays.
    let other = Ca::new();
    other.issue(dir.path(), "other", &["localhost"]);
    std::fs::rename(dir.path().join("other-key.pem"), dir.path().join("site-key.pem")).unwrap();
    olive.signal("HUP").await;
    let refused = olive.wait_log("configuration reload refused; the running configuration stays", 1).await;
    assert!(refused[0]["error"].as_str().unwrap().contains("site-key.pem"), "{refused:?}");
    assert_eq!(served(&ca, &olive).await, renewed);
}
