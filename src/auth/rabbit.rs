//! RabbitMQ's HTTP auth backend (`rabbitmq_auth_backend_http`), answered
//! on the admin listener at `/rabbitmq/auth/{user,vhost,resource,topic}`.
//!
//! A program that logs into RabbitMQ with username = its token's
//! `amqp_user` and password = the token gets exactly the token's grants:
//!
//! - `user`: the token verifies and names this `amqp_user`; the user's
//!   grants are then remembered until the token expires, because RabbitMQ's
//!   later checks carry no password (at most `auth.amqp.max_users` users;
//!   beyond that, logins are refused and counted);
//! - `vhost`: only `auth.amqp.vhost`;
//! - `resource`: olive's exchange, `read` with any subscribe grant (binding
//!   needs it), `write` with any publish grant, never `configure`; queues
//!   only server-named ones (`amq.gen-…`, a program's own); nothing else
//!   (not `{exchange}.presence`, not other exchanges);
//! - `topic` (olive's exchange): `write` when the routing key is a key the
//!   token may publish on, `read` when the binding key is a pattern it may
//!   subscribe to.
//!
//! RabbitMQ sends each check as a GET query or, with `auth_http.http_method
//! = post`, a form body; the answer is 200 with `allow` or `deny`. The field
//! names are those of RabbitMQ 3.10 (`tests/common/rabbit_node.rs` lists
//! what it sends). Unknown fields (`tags`, `ip`, `variable_map.*`) are
//! ignored.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use percent_encoding::percent_decode_str;

use super::grants::Grants;
use super::{Auth, Stats};
use crate::body::{self, Body};
use crate::live::key::{Key, Pattern};

/// The path prefix of the four endpoints on the admin listener.
pub const PREFIX: &str = "/rabbitmq/auth/";

/// Room for the form's other fields beside the password (a token of at
/// most `auth.max_token_bytes`).
const FORM_OVERHEAD_BYTES: usize = 2048;

/// Queues a token user may use: the ones RabbitMQ names for a `queue.declare`
/// with an empty name.
const SERVER_NAMED_QUEUE: &str = "amq.gen-";

#[derive(Debug, Clone)]
struct Entry {
    grants: Arc<Grants>,
    expires: SystemTime,
    /// The token's user (`sub`), whose revocation forgets the entry.
    sub: Arc<str>,
}

/// AMQP users that logged in with a token, remembered until it expires.
pub struct Users {
    max: usize,
    users: Mutex<HashMap<String, Entry>>,
}

/// `auth.amqp.max_users` users are remembered already, none expired.
#[derive(Debug, PartialEq, Eq)]
pub struct Full;

impl Users {
    pub fn new(max: usize) -> Users {
        Users { max, users: Mutex::default() }
    }

    /// Remembers `user`'s grants (the latest login wins: every token for
    /// one `amqp_user` speaks for the same program).
    fn insert(&self, user: &str, entry: Entry, now: SystemTime) -> Result<(), Full> {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        if users.len() >= self.max && !users.contains_key(user) {
            users.retain(|_, e| e.expires > now);
            if users.len() >= self.max {
                return Err(Full);
            }
        }
        users.insert(user.to_owned(), entry);
        Ok(())
    }

    /// The grants of a user whose token has not expired.
    fn grants(&self, user: &str, now: SystemTime) -> Option<Arc<Grants>> {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        match users.get(user) {
            Some(e) if e.expires > now => Some(e.grants.clone()),
            Some(_) => {
                users.remove(user);
                None
            }
            None => None,
        }
    }

    /// Forgets the AMQP users logged in with a token of `sub`: RabbitMQ's
    /// next check for them is refused (revocation).
    pub fn forget(&self, sub: &str) {
        self.users.lock().unwrap_or_else(|e| e.into_inner()).retain(|_, e| &*e.sub != sub);
    }

    pub fn len(&self) -> usize {
        self.users.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Answers one of the four checks; `exchange` is olive's topic exchange.
pub async fn handle(auth: &Auth, exchange: &str, req: Request<Incoming>) -> Response<Body> {
    let Some(check) = req.uri().path().strip_prefix(PREFIX).map(str::to_owned) else {
        return reply(StatusCode::NOT_FOUND, "not found\n");
    };
    let form = match *req.method() {
        Method::GET => req.uri().query().unwrap_or("").to_owned(),
        Method::POST => {
            let max = auth.config().max_token_bytes + FORM_OVERHEAD_BYTES;
            match Limited::new(req.into_body(), max).collect().await {
                Ok(body) => String::from_utf8_lossy(&body.to_bytes()).into_owned(),
                Err(_) => {
                    Stats::add(&auth.stats.amqp_refused);
                    return reply(StatusCode::PAYLOAD_TOO_LARGE, "form too large\n");
                }
            }
        }
        _ => return reply(StatusCode::METHOD_NOT_ALLOWED, "use GET or POST\n"),
    };
    let fields = parse_form(&form);
    let field = |name: &str| fields.get(name).map(String::as_str).unwrap_or("");
    let allowed = match check.as_str() {
        "user" => login(auth, field("username"), field("password")),
        "vhost" => known(auth, field("username")).is_some() && field("vhost") == auth.config().amqp_vhost,
        "resource" => known(auth, field("username"))
            .is_some_and(|g| resource(&g, exchange, field("resource"), field("name"), field("permission"))),
        "topic" => known(auth, field("username")).is_some_and(|g| {
            field("name") == exchange && topic(&g, field("permission"), field("routing_key"))
        }),
        _ => return reply(StatusCode::NOT_FOUND, "not found\n"),
    };
    if !allowed && check != "user" {
        Stats::add(&auth.stats.forbidden);
    }
    reply(StatusCode::OK, if allowed { "allow" } else { "deny" })
}

/// A login: the password is a token naming this user as its `amqp_user`.
fn login(auth: &Auth, username: &str, password: &str) -> bool {
    let Ok(verified) = auth.verify(password) else {
        Stats::add(&auth.stats.amqp_refused);
        return false;
    };
    if username.is_empty() || verified.user.amqp_user.as_deref() != Some(username) {
        Stats::add(&auth.stats.amqp_refused);
        return false;
    }
    let sub = verified.user.id.as_str().into();
    let entry = Entry { grants: Arc::new(verified.grants), expires: verified.expires, sub };
    match auth.amqp_users.insert(username, entry, SystemTime::now()) {
        Ok(()) => true,
        Err(Full) => {
            tracing::warn!(
                max = auth.config().amqp_max_users,
                "refused an AMQP login: auth.amqp.max_users users with live tokens are remembered"
            );
            Stats::add(&auth.stats.amqp_users_full);
            false
        }
    }
}

fn known(auth: &Auth, username: &str) -> Option<Arc<Grants>> {
    auth.amqp_users.grants(username, SystemTime::now())
}

/// The resource policy (module docs).
fn resource(grants: &Grants, exchange: &str, kind: &str, name: &str, permission: &str) -> bool {
    match (kind, permission) {
        ("exchange", "read") if name == exchange => !grants.subscribe.is_empty(),
        ("exchange", "write") if name == exchange => !grants.publish.is_empty(),
        ("queue", "configure" | "write" | "read") => name.starts_with(SERVER_NAMED_QUEUE),
        _ => false,
    }
}

/// The topic policy: publish on granted keys, bind granted patterns.
fn topic(grants: &Grants, permission: &str, routing_key: &str) -> bool {
    match permission {
        "write" => Key::parse(routing_key).is_ok_and(|k| grants.may_publish(&k)),
        "read" => Pattern::parse(routing_key).is_ok_and(|p| grants.may_subscribe(&p)),
        _ => false,
    }
}

/// `application/x-www-form-urlencoded` (`+` is a space), or a query.
fn parse_form(text: &str) -> HashMap<String, String> {
    let decode = |s: &str| percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned();
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn reply(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut resp = Response::new(body::full(text));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn grants() -> Grants {
        let own = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        Grants::parse(&own(&["olive.chat.#"]), &own(&["olive.chat.room.1"]), &[], 8).unwrap()
    }

    #[test]
    fn resource_table() {
        let g = grants();
        for (kind, name, permission, allowed) in [
            ("exchange", "olive", "read", true),
            ("exchange", "olive", "write", true),
            ("exchange", "olive", "configure", false),
            ("exchange", "olive.presence", "read", false),
            ("exchange", "amq.default", "write", false),
            ("exchange", "other", "write", false),
            ("queue", "amq.gen-abc", "configure", true),
            ("queue", "amq.gen-abc", "read", true),
            ("queue", "persister", "read", false),
            ("topic", "olive", "write", false),
        ] {
            assert_eq!(resource(&g, "olive", kind, name, permission), allowed, "{kind} {name} {permission}");
        }
        assert!(!resource(&Grants::default(), "olive", "exchange", "olive", "read"), "nothing granted");
    }

    #[test]
    fn topic_table() {
        let g = grants();
        for (permission, key, allowed) in [
            ("write", "olive.chat.room.1", true),
            ("write", "olive.chat.room.2", false),
            ("write", "olive.chat.*", false),
            ("read", "olive.chat.#", true),
            ("read", "olive.chat.room.*", true),
            ("read", "olive.#", false),
            ("read", "#", false),
            ("configure", "olive.chat.room.1", false),
            ("write", "", false),
        ] {
            assert_eq!(topic(&g, permission, key), allowed, "{permission} {key}");
        }
    }

    #[test]
    fn users_expire_and_are_capped() {
        let users = Users::new(2);
        let now = SystemTime::now();
        let entry = |secs| Entry {
            grants: Arc::new(grants()),
            expires: now + Duration::from_secs(secs),
            sub: "1".into(),
        };
        users.insert("a", entry(10), now).unwrap();
        users.insert("b", entry(100), now).unwrap();
        assert_eq!(users.insert("c", entry(10), now), Err(Full));
        users.insert("a", entry(10), now).unwrap();
        let later = now + Duration::from_secs(20);
        assert!(users.grants("a", later).is_none(), "expired");
        users.insert("c", entry(100), later).unwrap();
        assert!(users.grants("b", later).is_some() && users.grants("c", later).is_some());
    }

    #[test]
    fn form_decoding() {
        let f = parse_form("username=a+b&vhost=%2F&variable_map.vhost=%2F&x");
        assert_eq!(f["username"], "a b");
        assert_eq!(f["vhost"], "/");
        assert_eq!(f["x"], "");
    }
}
