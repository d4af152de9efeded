//! The reverse proxy: forwards a request to an upstream over a pooled
//! keep-alive HTTP/1.1 connection and streams the answer back.
//!
//! Whatever the client spoke (HTTP/1.1 or HTTP/2), the upstream gets
//! HTTP/1.1 with `Host` preserved, hop-by-hop fields removed and the
//! forwarding headers set ([`headers`]). Only connect failures are retried,
//! and only for idempotent requests whose body was buffered: then the
//! upstream provably saw nothing, and the request can be sent again whole.

pub mod body;
mod connect;
pub mod headers;
mod pool;
pub mod tunnel;
pub mod upstream;

use std::net::IpAddr;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::body::Body;
use crate::config::Limits;
use crate::ops::metrics::UpstreamError;
pub use upstream::Upstream;

/// Why a proxied request failed, and so what the client is told.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error(transparent)]
    Body(#[from] body::BodyError),
    #[error("no address of upstream {0} could be connected")]
    Connect(String),
    #[error("upstream {upstream} failed: {source}")]
    Upstream { upstream: String, source: Box<dyn std::error::Error + Send + Sync> },
    #[error("upstream {0} did not answer in time")]
    Timeout(String),
}

impl ProxyError {
    /// The one mapping from proxy failures to HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::Body(body::BodyError::TooLarge) => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::Body(body::BodyError::Read(_)) => StatusCode::BAD_REQUEST,
            ProxyError::Body(body::BodyError::Timeout) => StatusCode::REQUEST_TIMEOUT,
            ProxyError::Body(body::BodyError::Spool(_)) => StatusCode::INTERNAL_SERVER_ERROR,
            ProxyError::Connect(_) | ProxyError::Upstream { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        }
    }
}

/// What olive knows about the client side of one request.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub peer: IpAddr,
    /// `peer` as text, ready to be a header value.
    pub peer_text: HeaderValue,
    /// The peer is a configured trusted proxy.
    pub trusted: bool,
    pub proto: &'static str,
    /// Host as the client named it (Host header or `:authority`), port kept.
    pub host: String,
    pub request_id: HeaderValue,
    /// The access log is on and wants to know which address served the
    /// request ([`UpstreamAddrUsed`]); off, the extension (an allocation
    /// per response) is skipped.
    pub log_upstream: bool,
}

/// Which address served a request, for the access log.
#[derive(Debug, Clone)]
pub struct UpstreamAddrUsed(pub std::sync::Arc<str>);

/// Rewrites a client request head into the one the upstream gets.
pub(crate) fn upstream_head(parts: &mut http::request::Parts, client: &ClientInfo, keep_upgrade: bool) {
    headers::strip_hop_by_hop(&mut parts.headers, keep_upgrade);
    headers::strip_underscored(&mut parts.headers);
    headers::join_cookies(&mut parts.headers);
    // olive answered the expectation itself (hyper sends `100 Continue`
    // when the body is first read) and forwards a body it already holds:
    // an upstream's own interim 100 would only be noise (RFC 9110 §10.1.1).
    parts.headers.remove(header::EXPECT);
    // Room for the five fields added below, in one step: a map sized by
    // hyper for the client's few fields would otherwise regrow (and
    // rehash) once or twice along the way.
    parts.headers.reserve(5);
    headers::set_forwarding(
        &mut parts.headers,
        headers::Forwarding {
            peer: client.peer,
            peer_text: &client.peer_text,
            trusted: client.trusted,
            proto: client.proto,
            host: &client.host,
        },
    );
    parts.headers.insert(&headers::X_REQUEST_ID, client.request_id.clone());
    // The upstream's Host is the name olive routed on. With a target in
    // absolute-form (RFC 9112 §3.2.2) or an HTTP/2 `:authority` (RFC 9113
    // §8.3.1), that is the target's authority, whatever `Host` said:
    // forwarding the client's `Host` unchanged would let a request routed
    // as one site reach Django as another.
    if (parts.uri.authority().is_some() || !parts.headers.contains_key(header::HOST))
        && let Ok(host) = HeaderValue::from_str(&client.host)
    {
        parts.headers.insert(header::HOST, host);
    }
    parts.version = Version::HTTP_11;
    // The upstream gets origin-form; HTTP/2 clients' requests carry a
    // scheme and authority, HTTP/1.1 ones (the common case) are kept as is.
    if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
        parts.uri = match parts.uri.path_and_query() {
            Some(pq) => Uri::from(pq.clone()),
            None => Uri::from_static("/"),
        };
    }
}

/// Forwards `req` to `upstream` and returns its response (streaming).
pub async fn forward(
    upstream: &Upstream,
    req: Request<Incoming>,
    client: &ClientInfo,
    limits: &Limits,
) -> Result<Response<Body>, ProxyError> {
    let started = Instant::now();
    let (mut parts, incoming) = req.into_parts();
    let content_length = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let framed = content_length.is_some() || parts.headers.contains_key(header::TRANSFER_ENCODING);
    let prepared = body::prepare(incoming, content_length, limits).await?;
    let asked = Instant::now();
    upstream_head(&mut parts, client, false);

    let (body, replay, length) = prepared.into_body();
    // The upstream's framing is the length of what olive read, never the
    // client's header as sent: HTTP/2's h2 checks only the first of
    // several `content-length` fields, and a stale header beside a body
    // of another length is how requests are smuggled (RFC 9112 §6.3).
    parts.headers.remove(header::CONTENT_LENGTH);
    let length = match (&replay, length) {
        (_, Some(len)) => Some(len),
        (Some(bytes), None) if framed || !bytes.is_empty() => Some(bytes.len() as u64),
        // Streaming: hyper (HTTP/1) or h2 (HTTP/2) enforces that the body
        // is exactly this long, or fails it.
        (None, None) => content_length,
        (Some(_), None) => None,
    };
    if let Some(len) = length {
        parts.headers.insert(header::CONTENT_LENGTH, len.into());
    }
    let idempotent = is_idempotent(&parts.method);
    let cfg = &upstream.config;
    let mut tried = Vec::new();
    let mut request = Some(Request::from_parts(parts, body));
    loop {
        let Some((index, peer)) = upstream.pick(&tried) else {
            upstream.stats.error(UpstreamError::Connect);
            return Err(ProxyError::Connect(upstream.name().to_owned()));
        };
        tried.push(index);
        let retry_possible =
            idempotent && tried.len() <= cfg.retries as usize && upstream.peers() > tried.len();
        let req = match request.take() {
            Some(req) => req,
            None => break Err(ProxyError::Connect(upstream.name().to_owned())),
        };
        // Keep what a second attempt would need, only when there can be one.
        let spare = match (&replay, retry_possible) {
            (Some(bytes), true) => Some(clone_head(&req, bytes)),
            _ => None,
        };
        let sent = tokio::time::timeout(cfg.header_timeout, peer.pool().send(req)).await;
        let result = match sent {
            Err(_) => Err(ProxyError::Timeout(upstream.name().to_owned())),
            Ok(Ok(exchange)) => {
                upstream.record(peer, true);
                Ok(exchange)
            }
            Ok(Err(pool::SendError::Connect(e))) => {
                upstream.record(peer, false);
                tracing::warn!(upstream = %upstream.name(), addr = %peer.addr, error = %e, "upstream connect failed");
                if spare.is_some() {
                    request = spare;
                    continue;
                }
                Err(ProxyError::Connect(upstream.name().to_owned()))
            }
            Ok(Err(e)) => {
                Err(ProxyError::Upstream { upstream: upstream.name().to_owned(), source: e.into() })
            }
        };
        match &result {
            Ok(_) => upstream.stats.response.observe(asked.elapsed()),
            Err(ProxyError::Timeout(_)) => upstream.stats.error(UpstreamError::Timeout),
            Err(ProxyError::Connect(_)) => upstream.stats.error(UpstreamError::Connect),
            Err(_) => upstream.stats.error(UpstreamError::Failed),
        }
        break result.map(|(resp, lease)| {
            let (mut parts, incoming) = resp.into_parts();
            headers::strip_hop_by_hop(&mut parts.headers, false);
            if client.log_upstream {
                parts.extensions.insert(UpstreamAddrUsed(peer.label.clone()));
            }
            let body = body::UpstreamBody::new(incoming, lease, started, cfg.total_timeout);
            let body = crate::body::boxed(body);
            Response::from_parts(parts, body)
        });
    }
}

/// RFC 9110 §9.2.2.
fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

fn clone_head(req: &Request<Body>, body: &bytes::Bytes) -> Request<Body> {
    let mut copy =
        Request::new(if body.is_empty() { crate::body::empty() } else { crate::body::full(body.clone()) });
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    copy
}
