//! The Server-Sent Events endpoint of the live hub (`{route}/sse`), for
//! browsers and networks where websockets do not get through.
//!
//! `GET {route}/sse?key=K&key=K2[&since=ID]` answers `text/event-stream`.
//! Each event's `data:` is the same JSON frame a websocket would get (so
//! one client-side handler serves both), and `message` frames carry their
//! message id as the event `id:`; the browser's `EventSource` sends the
//! last one back as `Last-Event-ID` when it reconnects, which resumes
//! exactly like `since` (both recovery tiers). The stream is a hub
//! [`Connection`] like a websocket session, so it shares the fan-out, the
//! bounded queue and the slow-consumer cut-off. Comment lines (`: ping`)
//! every `live.sse_heartbeat` keep proxies from closing a quiet stream.
//! The stream ends with olive's shutdown, or when the client is too slow.
//!
//! Every key must be allowed by the stream's [`Identity`] (else 403 before
//! the stream starts). When the identity's token expires the stream sends
//! one `close` event (`{"type":"close","code":4401,...}`, named so that
//! `onmessage` handlers never see it) and ends.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::StreamBody;
use hyper::body::Incoming;
use percent_encoding::percent_decode_str;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::hub::{self, Connection, Hub, Outbound};
use super::key::Pattern;
use super::protocol;
use super::recover::{self, Target};
use super::ws::{CLOSE_TOKEN_EXPIRED, Session};
use crate::auth::Ended;
use crate::auth::Stats;
use crate::body::{self, Body};
use crate::config::Live;

/// Frames written in one body chunk.
const WRITE_BATCH: usize = 64;

/// The last event of a stream whose token expired or was revoked.
fn close_event(why: Ended) -> Bytes {
    let (code, reason) = (CLOSE_TOKEN_EXPIRED, why.reason());
    Bytes::from(format!(
        "event: close\ndata: {{\"type\":\"close\",\"code\":{code},\"reason\":\"{reason}\"}}\n\n"
    ))
}

/// What the query asked for.
#[derive(Debug, PartialEq)]
struct Query {
    keys: Vec<Pattern>,
    since: Option<String>,
}

/// Answers a request on `{route}/sse` with an event stream, or 400/405.
pub async fn serve(
    hub: &Arc<Hub>,
    config: &Live,
    req: Request<Incoming>,
    shutdown: CancellationToken,
    recovery: Option<Target>,
    who: Session,
) -> Response<Body> {
    if req.method() != Method::GET {
        let mut resp = plain(StatusCode::METHOD_NOT_ALLOWED, "use GET\n".into());
        resp.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET"));
        return resp;
    }
    let query = match parse_query(req.uri().query().unwrap_or(""), config.max_subscriptions) {
        Ok(q) => q,
        Err(message) => return plain(StatusCode::BAD_REQUEST, message + "\n"),
    };
    if let Some(key) = query.keys.iter().find(|k| !who.identity.grants.may_subscribe(k)) {
        Stats::add(&who.auth.stats.forbidden);
        return plain(StatusCode::FORBIDDEN, format!("forbidden: not allowed to subscribe to {key}\n"));
    }
    // The browser's own resume point wins over the one in the URL, which
    // is the page's first.
    let since = req
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .or(query.since);

    let (mut conn, outbound) = hub.connect(config.outbound_queue);
    conn.set_member(who.identity.member());
    // Too many keys was refused above, so subscribing cannot fail.
    let mut plain = Vec::new();
    for key in query.keys {
        match &since {
            Some(since) => {
                let max = config.max_subscriptions;
                let _ = recover::subscribe(&mut conn, key, since, max, recovery.as_ref()).await;
            }
            None => {
                if conn.subscribe(key.clone(), config.max_subscriptions).is_ok() {
                    plain.push(key);
                }
            }
        }
    }
    if !plain.is_empty() {
        conn.settled().await;
        for key in plain {
            conn.send(protocol::subscribed(key.as_str(), false));
        }
    }

    let mut heartbeat = tokio::time::interval_at(Instant::now() + config.sse_heartbeat, config.sse_heartbeat);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let outside = super::outside(shutdown, config.reconnect_spread, who.auth.session_end(&who.identity));
    let state = Stream { _conn: conn, outbound, heartbeat, outside, who, done: false };
    let events =
        futures_util::stream::unfold(state, next_chunk).map(|chunk| Ok::<_, Infallible>(Frame::data(chunk)));
    let mut resp = Response::new(body::boxed(StreamBody::new(events)));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // nginx and similar proxies in front of olive must not buffer events.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}

/// The body's state: the hub membership lives as long as the stream.
struct Stream {
    _conn: Connection,
    outbound: Outbound,
    heartbeat: Interval,
    /// A drain (the stream ends at a random moment within
    /// `live.reconnect_spread`; `EventSource` then reconnects) or the
    /// token running out.
    outside: super::Outside,
    who: Session,
    /// The last event was sent; the stream ends.
    done: bool,
}

async fn next_chunk(mut s: Stream) -> Option<(Bytes, Stream)> {
    if s.done {
        return None;
    }
    let chunk = tokio::select! {
        // The rare ends first (cheap to poll, never starved by a busy
        // queue), then events, the heartbeat last.
        biased;
        why = &mut s.outside => match why {
            None => return None,
            Some(why) => {
                Stats::add(&s.who.auth.stats.sessions_expired);
                s.done = true;
                close_event(why)
            }
        },
        frame = s.outbound.frames.recv() => {
            let mut buf = BytesMut::new();
            // Closed or kicked (a slow consumer): the stream ends.
            write_event(&mut buf, &*frame.ok()?);
            let mut batch = 1;
            while batch < WRITE_BATCH {
                let Some(frame) = s.outbound.frames.try_recv() else { break };
                write_event(&mut buf, &frame);
                batch += 1;
            }
            buf.freeze()
        }
        _ = s.heartbeat.tick() => Bytes::from_static(b": ping\n\n"),
    };
    Some((chunk, s))
}

/// One event. Frames are single-line JSON (`hub::encode` flattens line
/// breaks); an id that could break the framing is left out.
fn write_event(buf: &mut BytesMut, frame: &hub::Frame) {
    if let Some(id) = frame.id.as_deref().filter(|id| !id.contains(['\n', '\r', '\0'])) {
        buf.put_slice(b"id: ");
        buf.put_slice(id.as_bytes());
        buf.put_u8(b'\n');
    }
    buf.put_slice(b"data: ");
    buf.put_slice(frame.text.as_bytes());
    buf.put_slice(b"\n\n");
}

/// `key=K` (repeatable, percent-encoded: `#` is `%23`) and `since=ID`;
/// other parameters are ignored (cache busters, tokens).
fn parse_query(query: &str, max_keys: usize) -> Result<Query, String> {
    let mut keys: Vec<Pattern> = Vec::new();
    let mut since = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode_str(value).decode_utf8().map_err(|_| format!("{name} is not UTF-8"))?;
        match name {
            "key" => {
                let key = Pattern::parse(&value).map_err(|e| format!("invalid key {value:?}: {e}"))?;
                if !keys.contains(&key) {
                    keys.push(key);
                }
            }
            "since" if !value.is_empty() => since = Some(value.into_owned()),
            _ => {}
        }
    }
    if keys.is_empty() {
        return Err("at least one key= is required".into());
    }
    if keys.len() > max_keys {
        return Err(format!("at most {max_keys} keys per stream"));
    }
    Ok(Query { keys, since })
}

fn plain(status: StatusCode, text: String) -> Response<Body> {
    let mut resp = Response::new(body::full(text));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(q: &Query) -> Vec<&str> {
        q.keys.iter().map(|k| k.as_str()).collect()
    }

    #[test]
    fn query_table() {
        let q = parse_query("key=olive.a.b.1&key=olive.a.%23&since=01J&x=1", 10).unwrap();
        assert_eq!(keys(&q), ["olive.a.b.1", "olive.a.#"]);
        assert_eq!(q.since.as_deref(), Some("01J"));
        let q = parse_query("key=olive.a.b.1&key=olive.a.b.1&since=", 10).unwrap();
        assert_eq!(keys(&q), ["olive.a.b.1"]);
        assert_eq!(q.since, None);
        for (query, max) in
            [("", 10), ("since=1", 10), ("key=a..b", 10), ("key=%FF", 10), ("key=a.b&key=a.c", 1)]
        {
            assert!(parse_query(query, max).is_err(), "{query}");
        }
    }

    #[test]
    fn events_carry_ids_when_safe() {
        let mut buf = BytesMut::new();
        write_event(&mut buf, &hub::Frame { id: Some("01J".into()), text: "{}".into() });
        write_event(&mut buf, &hub::Frame { id: None, text: "{\"type\":\"pong\"}".into() });
        write_event(&mut buf, &hub::Frame { id: Some("a\nb".into()), text: "{}".into() });
        assert_eq!(&buf[..], b"id: 01J\ndata: {}\n\ndata: {\"type\":\"pong\"}\n\ndata: {}\n\n");
    }
}
