//! Backend publishing over HTTP: `POST /olive/publish` on the admin
//! listener, `{"key":K,"data":ANY}` → `202 {"id":ID}`; and the same body
//! on a live route's `{route}/publish` for a token that grants publishing
//! on the key (403 `forbidden` otherwise), the message then naming its
//! sender like a websocket publish.
//!
//! This is how Django publishes when olive runs the embedded broker (with
//! RabbitMQ it may publish over AMQP directly). The answer comes only after
//! the broker took the message: 503 `unavailable` otherwise, never a
//! silent drop.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::hub::Hub;
use super::id::MessageId;
use super::key::Key;
use super::protocol::ErrorCode;
use super::ws::Session;
use crate::auth::Stats;
use crate::body::{self, Body};
use crate::broker::Message;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishRequest<'a> {
    #[serde(borrow)]
    key: &'a str,
    data: Box<RawValue>,
}

/// Handles one publish request; `max_bytes` bounds the body. `who`: the
/// publisher to check and name, `None` on the (trusted) admin listener.
pub async fn handle(
    hub: &Hub,
    req: Request<Incoming>,
    max_bytes: usize,
    who: Option<&Session>,
) -> Response<Body> {
    if req.method() != Method::POST {
        let mut resp = reply(StatusCode::METHOD_NOT_ALLOWED, error_json(ErrorCode::Invalid, "use POST"));
        resp.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
        return resp;
    }
    let bytes = match Limited::new(req.into_body(), max_bytes).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            let message = format!("body larger than {max_bytes} bytes");
            return reply(StatusCode::PAYLOAD_TOO_LARGE, error_json(ErrorCode::TooLarge, &message));
        }
        Err(e) => return reply(StatusCode::BAD_REQUEST, error_json(ErrorCode::Invalid, &e.to_string())),
    };
    let request: PublishRequest<'_> = match serde_json::from_slice(&bytes) {
        Ok(r) => r,
        Err(e) => {
            let message = format!("expected {{\"key\":K,\"data\":ANY}}: {e}");
            return reply(StatusCode::BAD_REQUEST, error_json(ErrorCode::Invalid, &message));
        }
    };
    let key = match Key::parse(request.key) {
        Ok(key) => key,
        Err(e) => return reply(StatusCode::BAD_REQUEST, error_json(ErrorCode::Invalid, &e.to_string())),
    };
    if let Some(who) = who
        && !who.identity.grants.may_publish(&key)
    {
        Stats::add(&who.auth.stats.forbidden);
        let message = format!("not allowed to publish on {key}");
        return reply(StatusCode::FORBIDDEN, error_json(ErrorCode::Forbidden, &message));
    }
    if let Some(Err(message)) = who.map(Session::publish_allowed) {
        return reply(StatusCode::TOO_MANY_REQUESTS, error_json(ErrorCode::RateLimited, &message));
    }
    let id = MessageId::new().to_string();
    let from = who.and_then(|w| w.identity.from());
    let message =
        Message { key, id: id.clone().into(), data: Bytes::from(request.data.get().to_owned()), from };
    match hub.broker().publish(message).await {
        Ok(()) => reply(StatusCode::ACCEPTED, serde_json::json!({ "id": id }).to_string()),
        Err(e) => reply(StatusCode::SERVICE_UNAVAILABLE, error_json(ErrorCode::Unavailable, &e.to_string())),
    }
}

fn error_json(code: ErrorCode, message: &str) -> String {
    serde_json::json!({ "error": { "code": code, "message": message } }).to_string()
}

fn reply(status: StatusCode, json: String) -> Response<Body> {
    let mut resp = Response::new(body::full(json));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}
