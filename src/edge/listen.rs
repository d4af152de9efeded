//! One listening socket: the accept loop and the per-connection task.
//!
//! The accept loop only accepts and spawns. The connection task holds a
//! permit from the listener's connection limit (released on drop), runs the
//! TLS handshake under its timeout, and serves HTTP/1.1 or HTTP/2 with the
//! configured header limits until it ends or olive drains.
//!
//! Two things make a drain drop nobody when a new olive shares the port
//! (`SO_REUSEPORT`): the accept loop, told to stop, first takes every
//! connection the kernel has already completed on its socket (closing a
//! listening socket resets those), and a connection is only asked to
//! finish once it has had its first request (or
//! `server.drain_first_request` passed): hyper-util drops a connection still reading its first bytes
//! when asked to shut down, which would turn a connection accepted just
//! before the drain into a failed request.

use std::io::Write as _;
use std::os::fd::AsFd as _;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

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
    /// Every connection task, for the drain to wait on.
    pub connections: TaskTracker,
    pub workers: Arc<Workers>,
    /// Cancelled at the end of the drain timeout: ends every connection.
    pub abort: CancellationToken,
}

/// Connections the kernel queues for a listener before olive accepts
/// them, as tokio's `TcpListener::bind` sets it.
const BACKLOG: u32 = 1024;

/// Opens a listening socket on `addr`, with `SO_REUSEPORT` when
/// `reuse_port`, so that a new olive can listen beside this one.
pub(super) fn bind(addr: std::net::SocketAddr, reuse_port: bool) -> std::io::Result<TcpListener> {
    let socket =
        if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(reuse_port)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

impl Listener {
    pub async fn accept_loop(self, shutdown: CancellationToken) {
        let permits = self.slots.clone();
        let per_ip = PerIp::new(self.app.config.limits.max_connections_per_ip);
        let http = Arc::new(http_builder(&self.app));
        let listening = self.app.metrics.listening();
        loop {
            // Wait for a free slot first: past the limit, connections queue
            // in the kernel backlog instead of costing memory here.
            let permit = tokio::select! {
                p = permits.clone().acquire_owned() => p.expect("semaphore is never closed"),
                _ = shutdown.cancelled() => break,
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
                _ = shutdown.cancelled() => break,
            };
            // Handed over as a std socket: the worker registers it with its
            // own reactor (see `workers`).
            match stream.into_std() {
                Ok(stream) => self.start(stream, peer, permit, &per_ip, &http),
                Err(e) => tracing::warn!(error = %e, "could not hand over a connection"),
            }
        }
        drop(listening);
        self.sweep(&per_ip, &http);
    }

    /// Closes the socket after taking every connection already queued on
    /// it, which closing would reset: with `SO_REUSEPORT` the kernel
    /// spread new connections over this socket and the new olive's, and
    /// these are the ones that came here. Each is served like any other
    /// (the drain lets it have its request).
    fn sweep(&self, per_ip: &Arc<PerIp>, http: &Arc<auto::Builder<TokioExecutor>>) {
        let socket = match self.socket.as_fd().try_clone_to_owned() {
            Ok(fd) => std::net::TcpListener::from(fd),
            Err(e) => return tracing::warn!(error = %e, "could not take the queued connections"),
        };
        let mut taken = 0;
        // Non-blocking, like the socket it was cloned from: stops at the
        // first `WouldBlock`, when the queue is empty.
        while let Ok((stream, peer)) = socket.accept() {
            let Ok(permit) = self.slots.clone().try_acquire_owned() else { break };
            if stream.set_nonblocking(true).is_ok() {
                self.start(stream, peer, permit, per_ip, http);
                taken += 1;
            }
        }
        if taken > 0 {
            tracing::debug!(listener = self.index, connections = taken, "took the queued connections");
        }
    }

    /// Starts serving an accepted connection on a worker.
    fn start(
        &self,
        stream: std::net::TcpStream,
        peer: std::net::SocketAddr,
        permit: OwnedSemaphorePermit,
        per_ip: &Arc<PerIp>,
        http: &Arc<auto::Builder<TokioExecutor>>,
    ) {
        // Behind a trusted proxy speaking PROXY protocol, the client (and
        // its share) is known once the header is read.
        let proxied = self.app.config.listeners[self.index].proxy_protocol
            && self.app.site().config.server.trusts(peer.ip());
        let ip_slot = if proxied {
            None
        } else {
            match per_ip.try_take(ip_key(peer.ip())) {
                Some(slot) => Some(slot),
                None => {
                    refused_share(&self.app, peer);
                    if self.tls.is_none() {
                        // Best effort, never waited for: the socket is new,
                        // so its send buffer is empty and this fits.
                        let _ = (&stream).write(shares::REFUSAL);
                    }
                    return;
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let task = ConnTask {
            app: self.app.clone(),
            http: http.clone(),
            tls: self.tls.clone(),
            abort: self.abort.clone(),
            index: self.index,
            peer,
            proxied,
            permit,
            ip_slot,
            per_ip: per_ip.clone(),
            open: self.open.clone(),
        };
        // Counted until the task ends, for the drain to wait on.
        let tracked = self.connections.token();
        self.workers.spawn(move |load| async move {
            let (_load, _tracked) = (load, tracked);
            match TcpStream::from_std(stream) {
                Ok(stream) => task.run(stream).await,
                Err(e) => tracing::warn!(error = %e, "could not register a connection"),
            }
        });
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
    let keep_alive = Some(limits.h2_keep_alive_interval).filter(|d| !d.is_zero());
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        // Rapid reset (CVE-2023-44487): GOAWAY past this many streams
        // cancelled before olive took them.
        .max_pending_accept_reset_streams(limits.h2_max_pending_accept_reset_streams)
        // Streams reset for the client's errors, GOAWAY past this many.
        .max_local_error_reset_streams(limits.h2_max_local_error_reset_streams)
        .max_send_buf_size(limits.h2_max_send_buf_bytes)
        .keep_alive_interval(keep_alive)
        .keep_alive_timeout(limits.h2_keep_alive_timeout)
        // Websockets over HTTP/2 (RFC 8441), on live routes.
        .enable_connect_protocol()
        // Also bounds CONTINUATION frames: h2 refuses a header block past
        // this many bytes (CONTINUATION floods).
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    builder
}

/// Counts and logs a connection refused for its address's share.
fn refused_share(app: &App, peer: std::net::SocketAddr) {
    tracing::debug!(%peer, "refused: limits.max_connections_per_ip");
    app.metrics.rate_limited("connections_per_ip");
}

struct ConnTask {
    app: Arc<App>,
    http: Arc<auto::Builder<TokioExecutor>>,
    tls: Option<tokio_rustls::TlsAcceptor>,
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
        use tokio::io::AsyncWriteExt;
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
                None => {
                    refused_share(&self.app, peer);
                    if self.tls.is_none() {
                        let _ = stream.write_all(shares::REFUSAL).await;
                    }
                    return;
                }
            },
        };
        let conn =
            Conn::new(self.index, peer, self.tls.is_some(), Slot::new(self.permit, ip_slot, self.open));
        let serve = Serve { app: self.app, http: self.http, tls: self.tls, conn };
        serve.handshake_and_serve(stream).await
    }
}

/// A connection whose client is known.
struct Serve {
    app: Arc<App>,
    http: Arc<auto::Builder<TokioExecutor>>,
    tls: Option<tokio_rustls::TlsAcceptor>,
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
        let first = Arc::new(FirstRequest::default());
        let (app, conn, seen) = (self.app.clone(), self.conn, first.clone());
        let peer = conn.peer;
        let service = service_fn(move |req| {
            seen.arrived();
            let (app, conn) = (app.clone(), conn.clone());
            async move { Ok::<_, std::convert::Infallible>(handler::handle(app, conn, req).await) }
        });
        let connection = self.http.serve_connection_with_upgrades(TokioIo::new(io), service);
        tokio::pin!(connection);
        // On a drain: once the connection has had its first request (or
        // `server.drain_first_request` passed), ask it to finish (HTTP/1 closes after the response
        // in flight, HTTP/2 sends GOAWAY).
        let drain = async {
            self.app.shutdown.cancelled().await;
            let wait = self.app.config.server.drain_first_request;
            let _ = tokio::time::timeout(wait, first.notify.notified()).await;
        };
        let result = tokio::select! {
            result = connection.as_mut() => result,
            () = drain => {
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        };
        if let Err(e) = result {
            if told_to_calm(&*e) {
                self.app.metrics.rate_limited("h2_enhance_your_calm");
            }
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        }
    }
}

/// Whether olive's h2 ended the connection with `GOAWAY(ENHANCE_YOUR_CALM)`:
/// one of its abuse limits (resets, stream errors, CONTINUATION frames)
/// was crossed.
fn told_to_calm(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(err) = source {
        if let Some(h2) = err.downcast_ref::<h2::Error>() {
            return h2.is_go_away() && h2.is_library() && h2.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM);
        }
        source = err.source();
    }
    false
}

/// Whether a connection has had a request yet, for the drain.
#[derive(Default)]
struct FirstRequest {
    seen: std::sync::atomic::AtomicBool,
    notify: tokio::sync::Notify,
}

impl FirstRequest {
    fn arrived(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        if !self.seen.load(Relaxed) {
            self.seen.store(true, Relaxed);
            // Stores a permit when nobody waits yet.
            self.notify.notify_one();
        }
    }
}
