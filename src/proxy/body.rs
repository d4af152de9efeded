//! Request bodies on their way upstream, and the response deadline.
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

use crate::body::{self, Body, BoxError};
use crate::config::{Limits, OversizeBody};

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body larger than the configured limit")]
    TooLarge,
    #[error("reading request body: {0}")]
    Read(#[from] hyper::Error),
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
pub async fn prepare(
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
    /// A response body that fails once the exchange's total time is spent,
    /// so that an upstream trickling a response cannot hold a client
    /// connection forever. hyper then resets the stream or closes the
    /// connection, which is the only honest signal left once headers went out.
    pub struct Deadline<B> {
        #[pin]
        inner: B,
        #[pin]
        sleep: Sleep,
    }
}

impl<B> Deadline<B> {
    pub fn new(inner: B, started: Instant, total: Duration) -> Self {
        Self { inner, sleep: tokio::time::sleep_until(started + total) }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("upstream response exceeded the total timeout")]
pub struct TotalTimeout;

impl<B> HttpBody for Deadline<B>
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
        let this = self.project();
        if let Poll::Ready(frame) = this.inner.poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        match this.sleep.poll(cx) {
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
