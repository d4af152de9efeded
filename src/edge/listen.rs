//! One listening socket: the accept loop and the per-connection task.
//!
//! The accept loop only accepts and spawns. The connection task holds a
//! permit from the listener's connection limit (released on drop), runs the
//! TLS handshake under its timeout, and serves HTTP/1.1 or HTTP/2 with the
//! configured header limits, watched by the graceful-shutdown tracker.

use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::handler::{self, App, Conn, Slot};
use super::proxy_protocol;
use super::send_timeout::SendTimeout;
use super::workers::Workers;
use crate::limit::shares::{self, IpSlot, PerIp, ip_key};
use crate::ops::metrics::{Handshake, Kind};

pub(super) struct Listener {
    pub index: usize,
    pub socket: TcpListener,
    /// `limits.max_connections` permits, one moved into each connection.
    pub slots: Arc<Semaphore>,
    /// Connections open now (see `OpenConnections`).
    pub open: Arc<std::sync::atomic::AtomicUsize>,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub app: Arc<App>,
    pub graceful: Arc<GracefulShutdown>,
    pub workers: Arc<Workers>,
    /// Cancelled at the end of the drain timeout: ends every connection.
    pub abort: CancellationToken,
}

impl Listener {
    pub async fn accept_loop(self, shutdown: CancellationToken) {
        let permits = self.slots.clone();
        let per_ip = PerIp::new(self.app.config.limits.max_connections_per_ip);
        let http = Arc::new(http_builder(&self.app));
        let _listening = self.app.metrics.listening();
        loop {
            // Wait for a free slot first: past the limit, connections queue
            // in the kernel backlog instead of costing memory here.
            let permit = tokio::select! {
                p = permits.clone().acquire_owned() => p.expect("semaphore is never closed"),
                _ = shutdown.cancelled() => return,
            };
            let (stream, peer) = tokio::select! {
                accepted = self.socket.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = shutdown.cancelled() => return,
            };
            // Behind a trusted proxy speaking PROXY protocol, the client
            // (and its share) is known once the header is read.
            let proxied = self.app.config.listeners[self.index].proxy_protocol
                && self.app.config.server.trusts(peer.ip());
            let ip_slot = if proxied {
                None
            } else {
                match per_ip.try_take(ip_key(peer.ip())) {
                    Some(slot) => Some(slot),
                    None => {
                        refuse_share(&self.app, peer, self.tls.is_none(), &stream);
                        continue;
                    }
                }
            };
            let _ = stream.set_nodelay(true);
            // Handed over as a std socket: the worker registers it with its
            // own reactor (see `workers`).
            let stream = match stream.into_std() {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "could not hand over a connection");
                    continue;
                }
            };
            let task = ConnTask {
                app: self.app.clone(),
                http: http.clone(),
                tls: self.tls.clone(),
                watcher: self.graceful.watcher(),
                abort: self.abort.clone(),
                index: self.index,
                peer,
                proxied,
                permit,
                ip_slot,
                per_ip: per_ip.clone(),
                open: self.open.clone(),
            };
            self.workers.spawn(move |load| async move {
                let _load = load;
                match TcpStream::from_std(stream) {
                    Ok(stream) => task.run(stream).await,
                    Err(e) => tracing::warn!(error = %e, "could not register a connection"),
                }
            });
        }
    }
}

/// The HTTP/1.1 + HTTP/2 server settings for a listener.
fn http_builder(app: &App) -> auto::Builder<TokioExecutor> {
    let limits = &app.config.limits;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // Request head larger than this: 431.
        .max_buf_size(limits.max_header_bytes)
        .max_headers(limits.max_headers);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        // Websockets over HTTP/2 (RFC 8441), on live routes.
        .enable_connect_protocol()
        .max_header_list_size(limits.max_header_bytes as u32);
    builder
}

/// A connection refused for its address's share (counted, and told so on
/// plain HTTP).
fn refuse_share(app: &App, peer: std::net::SocketAddr, plain: bool, stream: &TcpStream) {
    tracing::debug!(%peer, "refused: limits.max_connections_per_ip");
    app.metrics.rate_limited("connections_per_ip");
    if plain {
        // Best effort, never waited for: the socket is new, so its send
        // buffer is empty and this fits.
        let _ = stream.try_write(shares::REFUSAL);
    }
}

struct ConnTask {
    app: Arc<App>,
    http: Arc<auto::Builder<TokioExecutor>>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    watcher: Watcher,
    abort: CancellationToken,
    index: usize,
    peer: std::net::SocketAddr,
    /// The connection starts with a PROXY protocol header.
    proxied: bool,
    permit: OwnedSemaphorePermit,
    /// The share of the peer's address; `None` until the PROXY header
    /// names the client.
    ip_slot: Option<IpSlot>,
    per_ip: Arc<PerIp>,
    open: Arc<std::sync::atomic::AtomicUsize>,
}

impl ConnTask {
    async fn run(self, stream: TcpStream) {
        let (abort, peer) = (self.abort.clone(), self.peer);
        tokio::select! {
            () = self.start(stream) => {}
            () = abort.cancelled() => tracing::debug!(%peer, "connection dropped at the drain timeout"),
        }
    }

    /// Learns who the client is (PROXY header), takes its share, then
    /// handshakes and serves.
    async fn start(self, mut stream: TcpStream) {
        let mut peer = self.peer;
        if self.proxied {
            let timeout = self.app.config.limits.header_read_timeout;
            match tokio::time::timeout(timeout, proxy_protocol::read(&mut stream)).await {
                Ok(Ok(client)) => peer = client.unwrap_or(peer),
                Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "PROXY header refused"),
                Err(_) => return tracing::debug!(%peer, "no PROXY header in time"),
            }
        }
        let ip_slot = match self.ip_slot {
            Some(slot) => slot,
            None => match self.per_ip.try_take(ip_key(peer.ip())) {
                Some(slot) => slot,
                None => return refuse_share(&self.app, peer, self.tls.is_none(), &stream),
            },
        };
        let conn =
            Conn::new(self.index, peer, self.tls.is_some(), Slot::new(self.permit, ip_slot, self.open));
        let task = Serve { app: self.app, http: self.http, tls: self.tls, watcher: self.watcher, conn };
        task.handshake_and_serve(stream).await
    }
}

/// A connection whose client is known.
struct Serve {
    app: Arc<App>,
    http: Arc<auto::Builder<TokioExecutor>>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    watcher: Watcher,
    conn: Conn,
}

impl Serve {
    async fn handshake_and_serve(self, stream: TcpStream) {
        let stream = SendTimeout::new(stream, self.app.config.limits.send_timeout);
        match self.tls.clone() {
            None => self.serve(stream).await,
            Some(acceptor) => {
                let timeout = self.app.config.limits.tls_handshake_timeout;
                let metrics = &self.app.metrics;
                match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        metrics.handshake(Handshake::Ok);
                        self.serve(tls).await
                    }
                    Ok(Err(e)) => {
                        metrics.handshake(Handshake::Failed);
                        tracing::debug!(peer = %self.conn.peer, error = %e, "TLS handshake failed")
                    }
                    Err(_) => {
                        metrics.handshake(Handshake::TimedOut);
                        tracing::debug!(peer = %self.conn.peer, "TLS handshake timed out")
                    }
                }
            }
        }
    }

    async fn serve<IO>(self, io: IO)
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let _open = self.app.metrics.open(Kind::Http);
        let app = self.app;
        let conn = self.conn;
        let peer = conn.peer;
        let service = service_fn(move |req| {
            let (app, conn) = (app.clone(), conn.clone());
            async move { Ok::<_, std::convert::Infallible>(handler::handle(app, conn, req).await) }
        });
        let connection = self.http.serve_connection_with_upgrades(TokioIo::new(io), service).into_owned();
        if let Err(e) = self.watcher.watch(connection).await {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        }
    }
}
