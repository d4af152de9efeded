//! The access log: one line per request, written when the response body has
//! been sent (or abandoned), so that bytes and duration are the real ones.
//!
//! Lines go to the `olive::access` tracing target at INFO with fields time,
//! client, method, path, status, bytes, duration, upstream and request id.

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::header::HeaderValue;
use http::{Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};

use crate::body::{self, Body, BoxError};
use crate::proxy::UpstreamAddrUsed;

/// What is known of a request when it arrives.
#[derive(Debug)]
pub struct AccessLog {
    client: SocketAddr,
    method: http::Method,
    path: String,
    request_id: HeaderValue,
    started: Instant,
    status: u16,
    upstream: Option<std::sync::Arc<str>>,
    bytes: u64,
}

impl AccessLog {
    pub fn start<B>(
        req: &Request<B>,
        client: SocketAddr,
        request_id: &HeaderValue,
        started: Instant,
    ) -> Self {
        AccessLog {
            client,
            method: req.method().clone(),
            // A `?token=` would put a credential in the log.
            path: req
                .uri()
                .path_and_query()
                .map_or_else(|| "/".into(), |pq| crate::auth::redact_token(pq.as_str()).into_owned()),
            request_id: request_id.clone(),
            started,
            status: 0,
            upstream: None,
            bytes: 0,
        }
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        tracing::info!(
            target: "olive::access",
            client = %self.client.ip(),
            method = %self.method,
            path = %self.path,
            status = self.status,
            bytes = self.bytes,
            duration_ms = self.started.elapsed().as_secs_f64() * 1000.0,
            upstream = self.upstream.as_deref().unwrap_or("-"),
            request_id = self.request_id.to_str().unwrap_or("-"),
        );
    }
}

/// Attaches the log to the response body; the line is written when the
/// body is done or dropped.
pub fn finish(mut log: AccessLog, resp: Response<Body>) -> Response<Body> {
    log.status = resp.status().as_u16();
    log.upstream = resp.extensions().get::<UpstreamAddrUsed>().map(|u| u.0.clone());
    resp.map(|inner| body::boxed(Counted { inner, log }))
}

struct Counted {
    inner: Body,
    log: AccessLog,
}

impl HttpBody for Counted {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let poll = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &poll
            && let Some(data) = frame.data_ref()
        {
            self.log.bytes += data.len() as u64;
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
