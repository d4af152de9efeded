//! The private-RabbitMQ-node harness (`tests/common/rabbit_node.rs`) with
//! the HTTP auth backend pointed at a tiny policy server in this test, and
//! an ordinary AMQP client (pika from `.venv`) trying what the policy
//! allows and refuses. It pins down what RabbitMQ sends to the four auth
//! endpoints, which olive's own endpoints will have to answer.
//!
//! Needs RabbitMQ installed (not running: the node is our own) and
//! `.venv/bin/python` with pika (made by `scripts/test`) or
//! `OLIVE_TEST_PYTHON`; without them the test is skipped, except under
//! `CI=true`, where it fails.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use common::rabbit_node::{AuthHttp, RabbitNode};
use common::{Seen, Upstream, text};
use serde_json::Value;

/// The fixed policy: `alice`/`secret` may log in to `/` and use any
/// exchange or queue, but may publish to a topic exchange only with
/// routing keys matching `olive.demo.#`.
fn policy(seen: &Seen) -> &'static str {
    let form: HashMap<String, String> = url_form(&seen.body);
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    let alice = field("username") == "alice";
    let allowed = match seen.uri.path() {
        "/auth/user" => alice && field("password") == "secret",
        "/auth/vhost" => alice && field("vhost") == "/",
        "/auth/resource" => alice,
        "/auth/topic" => {
            let key = field("routing_key");
            alice && (field("permission") != "write" || key == "olive.demo" || key.starts_with("olive.demo."))
        }
        _ => false,
    };
    if allowed { "allow" } else { "deny" }
}

fn url_form(body: &[u8]) -> HashMap<String, String> {
    let decode =
        |s: &str| percent_encoding::percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned();
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// Logs in as alice and publishes with confirms to `olive.demo.x` and then
/// `olive.secret.x` on a topic exchange, then tries a wrong password;
/// prints what happened as JSON.
const CLIENT: &str = r#"
import json, sys, pika
from pika.exceptions import ChannelClosedByBroker, ProbableAuthenticationError, ConnectionClosedByBroker
port = int(sys.argv[1])
def params(password):
    return pika.ConnectionParameters("127.0.0.1", port, credentials=pika.PlainCredentials("alice", password),
                                     connection_attempts=1, socket_timeout=10, blocked_connection_timeout=10)
out = {}
conn = pika.BlockingConnection(params("secret"))
ch = conn.channel()
ch.exchange_declare("olive.test", exchange_type="topic")
ch.confirm_delivery()
ch.basic_publish("olive.test", "olive.demo.x", b"hello")
out["demo"] = "published"
q = ch.queue_declare("", exclusive=True).method.queue
ch.queue_bind(q, "olive.test", routing_key="olive.demo.#")
out["bound"] = q
try:
    ch.basic_publish("olive.test", "olive.secret.x", b"hello")
    out["secret"] = "published"
except ChannelClosedByBroker as e:
    out["secret"] = {"code": e.reply_code, "text": e.reply_text}
conn.close()
try:
    pika.BlockingConnection(params("wrong")).close()
    out["wrong_password"] = "connected"
except (ProbableAuthenticationError, ConnectionClosedByBroker) as e:
    out["wrong_password"] = {"error": type(e).__name__, "detail": str(e)}
print(json.dumps(out))
"#;

fn python() -> Option<PathBuf> {
    let exe = match std::env::var_os("OLIVE_TEST_PYTHON") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"),
    };
    let ok = std::process::Command::new(&exe)
        .args(["-c", "import pika"])
        .output()
        .is_ok_and(|out| out.status.success());
    if ok {
        return Some(exe);
    }
    let why = format!("{} cannot import pika", exe.display());
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("CI=true: tests/rabbit_auth_harness.rs cannot run: {why}");
    }
    let _ = writeln!(std::io::stderr(), "SKIPPED tests/rabbit_auth_harness.rs: {why} (run scripts/test)");
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_auth_backend_follows_the_test_policy() {
    let Some(py) = python() else { return };
    let auth = Upstream::start(|seen| async move { text(200, policy(&seen)) }).await;
    let base = format!("http://{}/auth", auth.addr);
    let Some(node) = RabbitNode::start(Some(&AuthHttp::under(&base))).await else { return };
    eprintln!("private RabbitMQ node {} accepted AMQP after {:?}", node.name, node.startup);

    // The client runs as a child process while this runtime answers the
    // broker's auth requests.
    let out = tokio::process::Command::new(&py)
        .args(["-c", CLIENT, &node.amqp_port.to_string()])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "pika client failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        node.log_tail()
    );
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();

    assert_eq!(result["demo"], "published", "{result}");
    assert_eq!(result["secret"]["code"], 403, "{result}");
    let refusal = result["secret"]["text"].as_str().unwrap();
    assert!(refusal.starts_with("ACCESS_REFUSED") && refusal.contains("olive.secret.x"), "{refusal}");
    assert_eq!(result["wrong_password"]["error"], "ProbableAuthenticationError", "{result}");

    // What RabbitMQ sent, in the shapes tests/common/rabbit_node.rs
    // documents for olive's endpoints.
    let requests: Vec<(String, HashMap<String, String>)> = auth
        .requests()
        .iter()
        .map(|seen| {
            assert_eq!(seen.method, http::Method::POST);
            let ct = seen.headers.get("content-type").and_then(|v| v.to_str().ok());
            assert_eq!(ct, Some("application/x-www-form-urlencoded"));
            (seen.uri.path().to_owned(), url_form(&seen.body))
        })
        .collect();
    let find = |path: &str, pairs: &[(&str, &str)]| {
        requests
            .iter()
            .find(|(p, form)| {
                p == path && pairs.iter().all(|(k, v)| form.get(*k).map(String::as_str) == Some(*v))
            })
            .unwrap_or_else(|| panic!("no {path} request with {pairs:?} in {requests:#?}"))
            .1
            .clone()
    };
    find("/auth/user", &[("username", "alice"), ("password", "secret")]);
    find("/auth/user", &[("username", "alice"), ("password", "wrong")]);
    let vhost = find("/auth/vhost", &[("username", "alice"), ("vhost", "/")]);
    assert!(vhost.contains_key("ip"), "{vhost:?}");
    find("/auth/resource", &[("resource", "exchange"), ("name", "olive.test"), ("permission", "configure")]);
    find("/auth/resource", &[("resource", "exchange"), ("name", "olive.test"), ("permission", "write")]);
    let topic = find(
        "/auth/topic",
        &[
            ("username", "alice"),
            ("vhost", "/"),
            ("resource", "topic"),
            ("name", "olive.test"),
            ("permission", "write"),
            ("routing_key", "olive.demo.x"),
        ],
    );
    assert_eq!(topic.get("variable_map.username").map(String::as_str), Some("alice"), "{topic:?}");
    assert_eq!(topic.get("variable_map.vhost").map(String::as_str), Some("/"), "{topic:?}");
    find("/auth/topic", &[("routing_key", "olive.secret.x")]);
    // Binding a queue: configure on the queue, write on the queue, read on
    // the exchange, and a topic read with the binding key.
    let queue = result["bound"].as_str().unwrap();
    find("/auth/resource", &[("resource", "queue"), ("name", queue), ("permission", "configure")]);
    find("/auth/resource", &[("resource", "queue"), ("name", queue), ("permission", "write")]);
    find("/auth/resource", &[("resource", "exchange"), ("name", "olive.test"), ("permission", "read")]);
    find("/auth/topic", &[("permission", "read"), ("routing_key", "olive.demo.#")]);

    // The CLI reaches the node with its cookie.
    let status = node.ctl(&["status"]);
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));

    let stopping = Instant::now();
    drop(node);
    eprintln!("private RabbitMQ node stopped in {:?}", stopping.elapsed());
}
