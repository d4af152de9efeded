//! `/healthz` and `/readyz` on the admin listener.
//!
//! `/healthz` says the process answers: 200 whenever it can answer at all.
//!
//! `/readyz` says whether this node should get traffic, 200 or 503, with a
//! JSON body that names what is wrong, for the operator:
//!
//! ```json
//! {"ready": false,
//!  "checks": {"listeners": "ok", "broker": "disconnected",
//!             "upstreams": {"django": "all 2 addresses failing"}}}
//! ```
//!
//! - `listeners`: every configured listener is accepting (not while
//!   draining);
//! - `broker`: connected and able to publish (publishes would otherwise get
//!   `unavailable`);
//! - `upstreams`: at least one upstream has an address in rotation (when
//!   any is configured). Each upstream is reported, but one broken upstream
//!   does not make the node unready: every node shares it, and taking them
//!   all out of the load balancer would also stop the routes that still
//!   work.

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use serde_json::{Map, Value, json};

use crate::body::{self, Body};
use crate::edge::App;
use crate::proxy::Upstream;

pub fn healthz() -> Response<Body> {
    json_response(StatusCode::OK, json!({ "status": "ok" }).to_string())
}

pub fn readyz(app: &App) -> Response<Body> {
    let configured = app.config.listeners.len();
    let up = app.metrics.listeners_up();
    let listeners = if app.shutdown.is_cancelled() {
        "draining".to_owned()
    } else if up >= configured {
        "ok".to_owned()
    } else {
        format!("{up} of {configured} listening")
    };
    let broker_ok = *app.hub.broker().ready().borrow();
    let broker = if broker_ok { "ok" } else { "disconnected" };
    let site = app.site();
    let upstreams: Map<String, Value> =
        site.upstreams.iter().map(|u| (u.name().to_owned(), upstream_check(u).into())).collect();
    let upstreams_ok = site.upstreams.is_empty() || site.upstreams.iter().any(|u| u.is_healthy());

    let ready = listeners == "ok" && broker_ok && upstreams_ok;
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = json!({
        "ready": ready,
        "checks": { "listeners": listeners, "broker": broker, "upstreams": upstreams },
    });
    json_response(status, body.to_string())
}

/// `ok`, or which of the upstream's addresses are out of rotation.
fn upstream_check(u: &Upstream) -> String {
    let (failing, total) = (u.failing(), u.peers());
    match failing {
        0 => "ok".to_owned(),
        _ if failing < total => format!("{failing} of {total} addresses failing"),
        1 => "its address is failing".to_owned(),
        _ => format!("all {total} addresses failing"),
    }
}

fn json_response(status: StatusCode, text: String) -> Response<Body> {
    let mut resp = Response::new(body::full(text));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}
