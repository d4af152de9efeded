//! Request bodies on their way upstream; response bodies on their way
//! back, with the total deadline and the return of the connection to its
//! pool.
//!
//! Bodies up to `limits.body_buffer_bytes` are read completely before the
//! upstream is contacted, as nginx does: a client trickling its upload ties
//! up olive (cheap) instead of a synchronous Django worker (expensive).
//! Larger bodies are streamed or refused by config; nothing larger than
//! `limits.max_body_bytes` ever reaches the upstream.
//!
//! A large body *without* a Content-Length (chunked) cannot be streamed
//! as it is: WSGI reads exactly `CONTENT_LENGTH` bytes, so Django would see
//! an empty body. Such a body is spooled to an unnamed temporary file until
//! complete and then sent with its length, as nginx does with
//! `client_body_temp_path`.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::{BodyExt, BodyStream, Limited, StreamBody};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use super::pool::Lease;
use crate::body::{self, Body, BoxError};
use crate::config::{Limits, OversizeBody};

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body larger than the configured limit")]
    TooLarge,
    #[error("reading request body: {0}")]
    Read(#[from] hyper::Error),
    #[error("request body not received within limits.body_read_timeout")]
    Timeout,
    #[error("spooling request body to disk: {0}")]
    Spool(#[from] std::io::Error),
}

/// A request body ready to be sent upstream.
pub enum Prepared {
    /// Read completely; can be sent again on a retry.
    Buffered(Bytes),
    /// Too large to buffer, length known: what was read, then the rest as
    /// it arrives (the request keeps its Content-Length).
    Streaming(Body),
    /// Too large to buffer, length unknown: read whole into a temporary
    /// file; the request must be sent with this Content-Length.
    Spooled { body: Body, len: u64 },
}

impl Prepared {
    /// The body to send, a copy for a retry when the body allows one, and
    /// the Content-Length to set when olive learnt it.
    pub fn into_body(self) -> (Body, Option<Bytes>, Option<u64>) {
        match self {
            Prepared::Buffered(bytes) if bytes.is_empty() => (body::empty(), Some(bytes), None),
            Prepared::Buffered(bytes) => (body::full(bytes.clone()), Some(bytes), None),
            Prepared::Streaming(body) => (body, None, None),
            Prepared::Spooled { body, len } => (body, None, Some(len)),
        }
    }
}

/// Reads up to the buffering limit of `incoming`; see the module docs.
///
/// What olive reads itself (the buffered body, or the whole of a spooled
/// one) must arrive within `limits.body_read_timeout`: without a deadline
/// a client trickling a byte now and then (slowhttptest's slow-body mode)
/// holds its connection slot forever. A streamed remainder is bounded by
/// the upstream's `header_timeout` instead.
pub async fn prepare(
    incoming: Incoming,
    content_length: Option<u64>,
    limits: &Limits,
) -> Result<Prepared, BodyError> {
    tokio::time::timeout(limits.body_read_timeout, read(incoming, content_length, limits))
        .await
        .unwrap_or(Err(BodyError::Timeout))
}

async fn read(
    mut incoming: Incoming,
    content_length: Option<u64>,
    limits: &Limits,
) -> Result<Prepared, BodyError> {
    if incoming.is_end_stream() {
        return Ok(Prepared::Buffered(Bytes::new()));
    }
    if let Some(len) = content_length {
        let refused = limits.oversize_body == OversizeBody::Refuse && len > limits.body_buffer_bytes;
        if len > limits.max_body_bytes || refused {
            return Err(BodyError::TooLarge);
        }
    }
    let cap = content_length.unwrap_or(8 * 1024).min(limits.body_buffer_bytes) as usize;
    let mut buf = BytesMut::with_capacity(cap);
    while let Some(frame) = incoming.frame().await {
        // Trailers on requests are dropped: Django does not read them.
        let Ok(data) = frame?.into_data() else { continue };
        buf.extend_from_slice(&data);
        if buf.len() as u64 > limits.body_buffer_bytes {
            if limits.oversize_body == OversizeBody::Refuse || buf.len() as u64 > limits.max_body_bytes {
                return Err(BodyError::TooLarge);
            }
            if content_length.is_none() {
                return spool(buf.freeze(), incoming, limits.max_body_bytes).await;
            }
            let remaining = (limits.max_body_bytes - buf.len() as u64) as usize;
            let head =
                futures_util::stream::once(async move { Ok::<_, BoxError>(Frame::data(buf.freeze())) });
            let rest = BodyStream::new(Limited::new(incoming, remaining));
            return Ok(Prepared::Streaming(body::boxed(StreamBody::new(head.chain(rest)))));
        }
    }
    Ok(Prepared::Buffered(buf.freeze()))
}

/// Writes `head` and the rest of `incoming` to an unnamed temporary file,
/// refusing more than `max` bytes in all, and returns it as a body.
async fn spool(head: Bytes, mut incoming: Incoming, max: u64) -> Result<Prepared, BodyError> {
    use tokio::io::{AsyncSeekExt, AsyncWriteExt};
    let file = tokio::task::spawn_blocking(tempfile::tempfile).await.map_err(std::io::Error::other)??;
    let mut file = tokio::io::BufWriter::new(tokio::fs::File::from_std(file));
    file.write_all(&head).await?;
    let mut len = head.len() as u64;
    while let Some(frame) = incoming.frame().await {
        let Ok(data) = frame?.into_data() else { continue };
        len += data.len() as u64;
        if len > max {
            return Err(BodyError::TooLarge);
        }
        file.write_all(&data).await?;
    }
    file.flush().await?;
    let mut file = file.into_inner();
    file.rewind().await?;
    let frames =
        tokio_util::io::ReaderStream::with_capacity(file, 64 * 1024).map(|chunk| chunk.map(Frame::data));
    Ok(Prepared::Spooled { body: body::boxed(StreamBody::new(frames)), len })
}

pin_project_lite::pin_project! {
    /// A proxied response body. It returns its upstream connection to the
    /// pool once read to its end (see [`super::pool`]), and fails once the
    /// exchange's total time is spent, so that an upstream trickling a
    /// response cannot hold a client connection forever: hyper then resets
    /// the stream or closes the connection, which is the only honest signal
    /// left once headers went out.
    ///
    /// The deadline's timer is armed only when the upstream makes the body
    /// wait: a small response that has arrived whole, the common case,
    /// never touches the timer wheel.
    pub struct UpstreamBody<B> {
        #[pin]
        inner: B,
        lease: Lease,
        deadline: Instant,
        sleep: Option<Pin<Box<Sleep>>>,
    }
}

impl<B: HttpBody> UpstreamBody<B> {
    pub fn new(inner: B, mut lease: Lease, started: Instant, total: Duration) -> Self {
        if inner.is_end_stream() {
            // HEAD, 204, 304, empty bodies: hyper may never poll it.
            lease.release();
        }
        Self { inner, lease, deadline: started + total, sleep: None }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("upstream response exceeded the total timeout")]
pub struct TotalTimeout;

impl<B> HttpBody for UpstreamBody<B>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        if let Poll::Ready(frame) = this.inner.as_mut().poll_frame(cx) {
            let ended = match &frame {
                None => true,
                Some(Ok(_)) => this.inner.is_end_stream(),
                // The connection's state is unknown: the lease closes it.
                Some(Err(_)) => false,
            };
            if ended {
                this.lease.release();
            }
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let deadline = *this.deadline;
        let sleep = this.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(TotalTimeout.into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
