//! Websocket tunnels: an `Upgrade: websocket` request on a tunnel route is
//! sent to the upstream on a fresh connection; when the upstream answers 101
//! both sides are upgraded and bytes are copied each way until one side
//! closes, nothing moves for the idle timeout, or olive shuts down.
//!
//! Upgraded connections never go back to a pool, so the tunnel dials its own
//! connection instead of borrowing a pooled one.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use crate::edge::handler::Upgrade;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{ClientInfo, ProxyError, Upstream, UpstreamAddrUsed, upstream_head};
use crate::body::{self, Body};

/// Whether a request asks for a websocket upgrade (RFC 6455 §4.1: a GET
/// over HTTP/1.1 with `Upgrade: websocket` and `Connection: upgrade`;
/// HTTP/2's extended CONNECT is not supported). The live hub's endpoint
/// and the tunnel both decide with this.
pub fn is_websocket_upgrade<B>(req: &Request<B>) -> bool {
    req.method() == http::Method::GET
        && req.version() == Version::HTTP_11
        && req.headers().get(header::UPGRADE).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
        && req
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Opens the tunnel; the response is the upstream's (101 on success).
pub async fn open(
    upstream: &Upstream,
    mut req: Request<Incoming>,
    client: &ClientInfo,
    idle: Duration,
    upgrade: Upgrade,
) -> Result<Response<Body>, ProxyError> {
    let (_, peer) = upstream.pick(&[]).ok_or_else(|| ProxyError::Connect(upstream.name().to_owned()))?;
    let stream = match peer.connector.connect().await {
        Ok(s) => {
            upstream.record(peer, true);
            s
        }
        Err(e) => {
            upstream.record(peer, false);
            tracing::warn!(upstream = %upstream.name(), addr = %peer.addr, error = %e, "tunnel connect failed");
            return Err(ProxyError::Connect(upstream.name().to_owned()));
        }
    };
    let failed =
        |e: hyper::Error| ProxyError::Upstream { upstream: upstream.name().to_owned(), source: e.into() };
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(failed)?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "tunnel upstream connection ended");
        }
    });

    let client_upgrade = hyper::upgrade::on(&mut req);
    let (mut parts, _) = req.into_parts();
    upstream_head(&mut parts, client, true);
    parts.headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    // A plain connection takes origin-form.
    parts.uri = parts.uri.path_and_query().map_or("/", |pq| pq.as_str()).parse().unwrap_or_default();
    let upstream_req = Request::from_parts(parts, body::empty());

    let cfg = &upstream.config;
    let mut resp = tokio::time::timeout(cfg.header_timeout, sender.send_request(upstream_req))
        .await
        .map_err(|_| ProxyError::Timeout(upstream.name().to_owned()))?
        .map_err(failed)?;
    if client.log_upstream {
        resp.extensions_mut().insert(UpstreamAddrUsed(peer.label.clone()));
    }

    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let (mut parts, incoming) = resp.into_parts();
        super::headers::strip_hop_by_hop(&mut parts.headers, false);
        return Ok(Response::from_parts(parts, body::boxed(incoming)));
    }
    let upstream_upgrade = hyper::upgrade::on(&mut resp);
    let name = upstream.name().to_owned();
    let shutdown = upgrade.shutdown.clone();
    upgrade.spawn(async move {
        let (from_client, from_upstream) = match tokio::try_join!(client_upgrade, upstream_upgrade) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(upstream = %name, error = %e, "tunnel upgrade failed");
                return;
            }
        };
        let outcome = splice(TokioIo::new(from_client), TokioIo::new(from_upstream), idle, shutdown).await;
        tracing::debug!(upstream = %name, ?outcome, "tunnel closed");
    });
    let (parts, _) = resp.into_parts();
    Ok(Response::from_parts(parts, body::empty()))
}

/// How a tunnel ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Closed { to_upstream: u64, to_client: u64 },
    Error(String),
    Idle,
    Shutdown,
}

/// Copies both ways until a side closes, the tunnel idles out, or shutdown.
pub async fn splice<A, B>(a: A, b: B, idle: Duration, shutdown: CancellationToken) -> Outcome
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let epoch = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let mut a = Activity { inner: a, epoch, last: last.clone() };
    let mut b = Activity { inner: b, epoch, last: last.clone() };
    let copy = tokio::io::copy_bidirectional(&mut a, &mut b);
    tokio::pin!(copy);
    loop {
        let deadline = epoch + Duration::from_millis(last.load(Ordering::Relaxed)) + idle;
        tokio::select! {
            result = &mut copy => {
                return match result {
                    Ok((to_upstream, to_client)) => Outcome::Closed { to_upstream, to_client },
                    Err(e) => Outcome::Error(e.to_string()),
                };
            }
            _ = tokio::time::sleep_until(deadline) => {
                let since = epoch.elapsed().saturating_sub(Duration::from_millis(last.load(Ordering::Relaxed)));
                if since >= idle {
                    return Outcome::Idle;
                }
            }
            _ = shutdown.cancelled() => return Outcome::Shutdown,
        }
    }
}

/// Stamps the time of the last byte read through it.
struct Activity<T> {
    inner: T,
    epoch: Instant,
    last: Arc<AtomicU64>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Activity<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.last.store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        }
        poll
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Activity<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    #[tokio::test(start_paused = true)]
    async fn idle_tunnel_is_closed_after_the_timeout() {
        let (a, mut a_peer) = duplex(64);
        let (b, mut b_peer) = duplex(64);
        let task = tokio::spawn(splice(a, b, Duration::from_secs(30), CancellationToken::new()));
        // Traffic keeps it open past one idle period.
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_secs(20)).await;
            a_peer.write_all(b"ping").await.unwrap();
            let mut buf = [0; 4];
            b_peer.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"ping");
        }
        assert!(!task.is_finished());
        tokio::time::sleep(Duration::from_secs(31)).await;
        assert_eq!(task.await.unwrap(), Outcome::Idle);
    }

    #[tokio::test]
    async fn shutdown_ends_the_tunnel() {
        let (a, _a_peer) = duplex(64);
        let (b, _b_peer) = duplex(64);
        let token = CancellationToken::new();
        let task = tokio::spawn(splice(a, b, Duration::from_secs(30), token.clone()));
        token.cancel();
        assert_eq!(task.await.unwrap(), Outcome::Shutdown);
    }

    #[test]
    fn upgrade_detection() {
        let req = |version, upgrade: &str, connection: &str| {
            Request::builder()
                .version(version)
                .header("upgrade", upgrade)
                .header("connection", connection)
                .body(())
                .unwrap()
        };
        assert!(is_websocket_upgrade(&req(Version::HTTP_11, "websocket", "Upgrade")));
        assert!(is_websocket_upgrade(&req(Version::HTTP_11, "WebSocket", "keep-alive, upgrade")));
        assert!(!is_websocket_upgrade(&req(Version::HTTP_11, "h2c", "upgrade")));
        assert!(!is_websocket_upgrade(&req(Version::HTTP_11, "websocket", "keep-alive")));
        assert!(!is_websocket_upgrade(&req(Version::HTTP_10, "websocket", "upgrade")));
    }
}
