//! A connection whose writes fail once they have made no progress for
//! `limits.send_timeout` (nginx's `send_timeout`).
//!
//! hyper has no write timeout: a client that stops reading (slowhttptest's
//! slow-read mode) leaves a response write pending forever, and with it the
//! connection's slot under `limits.max_connections`. The wrapper sits under
//! TLS and hyper, so it covers HTTP/1.1, HTTP/2 and upgraded connections
//! (tunnels, websockets) alike. The clock starts when a write is first
//! refused and stops at the next one that goes through: a slow download
//! that keeps moving is never cut.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

pin_project_lite::pin_project! {
    pub struct SendTimeout<IO> {
        #[pin]
        inner: IO,
        timeout: Duration,
        // Armed only while a write waits: a connection that writes freely
        // never touches the timer wheel.
        stalled: Option<Pin<Box<Sleep>>>,
    }
}

impl<IO> SendTimeout<IO> {
    pub fn new(inner: IO, timeout: Duration) -> Self {
        Self { inner, timeout, stalled: None }
    }
}

/// What a stalled write returns; hyper then closes the connection.
fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "client made no progress reading for limits.send_timeout")
}

impl<IO: AsyncWrite> SendTimeout<IO> {
    /// Passes `poll`'s result through, arming the stall clock when it is
    /// pending and failing once the clock runs out.
    fn watch<T>(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        poll: impl FnOnce(Pin<&mut IO>, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        let this = self.project();
        match poll(this.inner, cx) {
            Poll::Ready(result) => {
                *this.stalled = None;
                Poll::Ready(result)
            }
            Poll::Pending => {
                let timeout = *this.timeout;
                let sleep = this.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(timed_out())),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<IO: AsyncRead> AsyncRead for SendTimeout<IO> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite> AsyncWrite for SendTimeout<IO> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.watch(cx, |io, cx| io.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.watch(cx, |io, cx| io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.watch(cx, |io, cx| io.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.watch(cx, |io, cx| io.poll_shutdown(cx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A peer that never reads: the writer fails after the timeout, not
    /// before.
    #[tokio::test(start_paused = true)]
    async fn a_write_that_stalls_fails_at_the_timeout() {
        let (client, _server) = tokio::io::duplex(16);
        let mut io = SendTimeout::new(client, Duration::from_secs(5));
        io.write_all(&[0; 16]).await.unwrap();
        let started = tokio::time::Instant::now();
        let err = io.write_all(&[0; 1]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }

    /// A peer that reads slowly but steadily is never cut, however long
    /// the whole transfer takes.
    #[tokio::test(start_paused = true)]
    async fn a_slow_but_moving_reader_is_not_cut() {
        use tokio::io::AsyncReadExt;
        let (client, mut server) = tokio::io::duplex(4);
        let reader = tokio::spawn(async move {
            let mut buf = [0; 4];
            let mut total = 0;
            while total < 64 {
                tokio::time::sleep(Duration::from_secs(3)).await;
                total += server.read(&mut buf).await.unwrap();
            }
            total
        });
        let mut io = SendTimeout::new(client, Duration::from_secs(5));
        io.write_all(&[0; 64]).await.unwrap();
        assert_eq!(reader.await.unwrap(), 64);
    }
}
