//! olive as RabbitMQ's HTTP auth backend: first the four endpoints over
//! HTTP with the exact forms RabbitMQ 3.10 sends (`tests/common/rabbit_node.rs`
//! lists them), then end to end: a private RabbitMQ node with
//! `auth_backends.1 = internal, auth_backends.2 = http` pointed at olive's
//! admin listener, and a pika client logging in with its token.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::Olive;
use common::live::config_auth;
use common::rabbit_node::{AuthHttp, RabbitNode};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const SECRET: &str = "test-secret-of-at-least-thirty-two-bytes";
const ADMIN: &str = "admin-token-for-rabbit";

async fn start(admin_token: bool) -> Olive {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), SECRET).unwrap();
    std::fs::write(dir.path().join("admin"), ADMIN).unwrap();
    let admin = if admin_token { "admin_token_file = \"admin\"" } else { "" };
    let auth = format!(
        "{admin}\namqp = {{ max_users = 2 }}\n[[auth.key]]\nkid = \"hs\"\nalgorithm = \"HS256\"\nsecret_file = \"secret\"\n"
    );
    Olive::start_in(dir, &config_auth("", "", &auth)).await
}

fn token(amqp_user: &str, exp_from_now: i64) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let claims = json!({
        "sub": "svc", "amqp_user": amqp_user, "aud": "olive", "iss": "django", "exp": now + exp_from_now,
        "grants": {"subscribe": ["olive.chat.#"], "publish": ["olive.chat.room.1"]},
    });
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("hs".into());
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
}

/// POSTs `form` to `/rabbitmq/auth/{check}` as RabbitMQ does; the body.
async fn ask(olive: &Olive, check: &str, form: &[(&str, &str)]) -> String {
    let resp = common::client()
        .post(olive.url("admin", &format!("/rabbitmq/auth/{check}")))
        .basic_auth("rabbitmq", Some(ADMIN))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(serde_urlencoded(form))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.text().await.unwrap()
}

fn serde_urlencoded(form: &[(&str, &str)]) -> String {
    use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
    let enc = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
    form.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect::<Vec<_>>().join("&")
}

#[tokio::test]
async fn the_four_checks_answer_as_the_token_grants() {
    let olive = start(true).await;
    let worker = token("worker", 60);
    let common = [("vhost", "/"), ("tags", "")];
    // Nothing is known of a user before its login.
    let vhost = [("username", "worker"), ("vhost", "/"), ("ip", "127.0.0.1"), ("tags", "")];
    assert_eq!(ask(&olive, "vhost", &vhost).await, "deny");
    // Wrong user for the token, a bad token, an expired one.
    for (user, password) in
        [("other", worker.as_str()), ("worker", "x.y.z"), ("worker", token("worker", -120).as_str())]
    {
        assert_eq!(ask(&olive, "user", &[("username", user), ("password", password)]).await, "deny");
    }
    assert_eq!(ask(&olive, "user", &[("username", "worker"), ("password", &worker)]).await, "allow");
    assert_eq!(ask(&olive, "vhost", &vhost).await, "allow");
    assert_eq!(
        ask(&olive, "vhost", &[("username", "worker"), ("vhost", "/other"), ("ip", "x")]).await,
        "deny"
    );
    for (resource, name, permission, want) in [
        ("exchange", "olive", "write", "allow"),
        ("exchange", "olive", "read", "allow"),
        ("exchange", "olive", "configure", "deny"),
        ("exchange", "olive.presence", "read", "deny"),
        ("queue", "amq.gen-JzTY20BRgKO-HjmUJj0wLg", "configure", "allow"),
        ("queue", "olive.node.abc", "read", "deny"),
    ] {
        let mut form =
            vec![("username", "worker"), ("resource", resource), ("name", name), ("permission", permission)];
        form.extend(common);
        assert_eq!(ask(&olive, "resource", &form).await, want, "{resource} {name} {permission}");
    }
    for (permission, routing_key, want) in [
        ("write", "olive.chat.room.1", "allow"),
        ("write", "olive.chat.room.2", "deny"),
        ("read", "olive.chat.#", "allow"),
        ("read", "olive.#", "deny"),
    ] {
        let mut form = vec![
            ("username", "worker"),
            ("resource", "topic"),
            ("name", "olive"),
            ("permission", permission),
            ("routing_key", routing_key),
            ("variable_map.username", "worker"),
            ("variable_map.vhost", "/"),
        ];
        form.extend(common);
        assert_eq!(ask(&olive, "topic", &form).await, want, "{permission} {routing_key}");
    }
    // GET with a query works too (RabbitMQ's default method).
    let url = olive.url("admin", "/rabbitmq/auth/topic?username=worker&vhost=%2F&resource=topic&name=olive&permission=write&routing_key=olive.chat.room.1");
    let got = common::client().get(url).basic_auth("rabbitmq", Some(ADMIN)).send().await.unwrap();
    assert_eq!(got.text().await.unwrap(), "allow");
    // Without the admin token: 401.
    let bare =
        common::client().post(olive.url("admin", "/rabbitmq/auth/user")).body("username=worker").send();
    assert_eq!(bare.await.unwrap().status(), 401);
    // auth.amqp.max_users = 2: a third user with a live token is refused.
    for (user, want) in [("second", "allow"), ("third", "deny"), ("worker", "allow")] {
        let t = token(user, 60);
        assert_eq!(ask(&olive, "user", &[("username", user), ("password", &t)]).await, want, "{user}");
    }
}

const CLIENT: &str = r#"
import json, sys, time, pika
from pika.exceptions import ChannelClosedByBroker, ProbableAuthenticationError, ConnectionClosedByBroker
port, user, token, expired = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
def connect(u, p):
    return pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port,
        credentials=pika.PlainCredentials(u, p), connection_attempts=1, socket_timeout=10,
        blocked_connection_timeout=10))
out = {}
admin = connect("guest", "guest")
admin.channel().exchange_declare("olive", exchange_type="topic", durable=True)
admin.close()
conn = connect(user, token)
ch = conn.channel()
q = ch.queue_declare("", exclusive=True).method.queue
ch.queue_bind(q, "olive", routing_key="olive.chat.#")
ch.confirm_delivery()
ch.basic_publish("olive", "olive.chat.room.1", b'{"n":1}')
for _ in range(100):
    method, props, body = ch.basic_get(q, auto_ack=True)
    if method:
        out["received"] = body.decode()
        break
    time.sleep(0.05)
def refused(action):
    c = conn.channel()
    try:
        action(c)
        return "allowed"
    except ChannelClosedByBroker as e:
        return e.reply_code
def publish_other(c):
    c.confirm_delivery()
    c.basic_publish("olive", "olive.news.item.1", b"1")
out["bind_wider"] = refused(lambda c: c.queue_bind(q, "olive", routing_key="olive.#"))
out["publish_other"] = refused(publish_other)
out["declare_exchange"] = refused(lambda c: c.exchange_declare("mine", exchange_type="topic"))
conn.close()
for name, (u, p) in {"wrong_user": ("someone", token), "expired": (user, expired), "garbage": (user, "x")}.items():
    try:
        connect(u, p).close()
        out[name] = "connected"
    except (ProbableAuthenticationError, ConnectionClosedByBroker) as e:
        out[name] = "refused"
print(json.dumps(out))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pika_client_logging_in_with_its_token_gets_exactly_its_grants() {
    let Some(py) = common::python("pika") else { return };
    let olive = start(true).await;
    // RabbitMQ sends the URL's user info as Basic auth: the admin token.
    let base = format!("http://rabbitmq:{ADMIN}@{}/rabbitmq/auth", olive.addr("admin"));
    let Some(node) = RabbitNode::start(Some(&AuthHttp::under(&base))).await else { return };
    let out = tokio::process::Command::new(&py)
        .args([
            "-c",
            CLIENT,
            &node.amqp_port.to_string(),
            "worker",
            &token("worker", 60),
            &token("worker", -120),
        ])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "pika: {}\n{}", String::from_utf8_lossy(&out.stderr), node.log_tail());
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["received"], "{\"n\":1}", "{result}");
    for refused in ["bind_wider", "publish_other", "declare_exchange"] {
        assert_eq!(result[refused], 403, "{refused}: {result}");
    }
    for refused in ["wrong_user", "expired", "garbage"] {
        assert_eq!(result[refused], "refused", "{refused}: {result}");
    }
}
