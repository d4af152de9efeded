//! `/healthz` and `/readyz` on the admin listener.
//!
//! `/healthz` says the process answers. `/readyz` says whether this node
//! should get traffic: the broker is connected (publishes would otherwise
//! get `unavailable`) and every upstream has at least one address in
//! rotation. The JSON body says what is wrong, for the operator.

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use serde_json::json;

use crate::body::{self, Body};
use crate::edge::App;

pub fn healthz() -> Response<Body> {
    json_response(StatusCode::OK, json!({ "status": "ok" }).to_string())
}

pub fn readyz(app: &App) -> Response<Body> {
    let broker = *app.hub.broker().ready().borrow();
    let upstreams: serde_json::Map<String, serde_json::Value> =
        app.upstreams.iter().map(|u| (u.name().to_owned(), u.is_healthy().into())).collect();
    let ready = broker && upstreams.values().all(|v| v == true);
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    json_response(status, json!({ "ready": ready, "broker": broker, "upstreams": upstreams }).to_string())
}

fn json_response(status: StatusCode, text: String) -> Response<Body> {
    let mut resp = Response::new(body::full(text));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}
