//! Keep-alive HTTP/1.1 connections to one upstream address, for one worker.
//!
//! olive's own pool over `hyper::client::conn::http1`, in place of
//! hyper-util's legacy pooled client. That client is general (any host,
//! HTTP/2, per-URI keys) and pays for it on every request: a pool key built
//! from the URI, a shared pool map, a boxed response future, and, for HTTP/1,
//! a task spawned per response only to put the connection back once it is
//! ready again. olive already keeps one pool per address per worker
//! ([`super::upstream`]), so a pool here is a short list of idle
//! `SendRequest`s under an uncontended mutex:
//!
//! - **checkout** takes the most recently used idle connection (warm, and
//!   the oldest ones are left to expire), dropping any that the upstream
//!   closed or that sat idle longer than `pool_idle_timeout`;
//! - **release** happens when the response body has been read to its end
//!   ([`Lease`]); a body dropped before its end closes the connection,
//!   whose state is then unknown. At most `pool_max_idle` connections are
//!   kept, the oldest closed first;
//! - **sweep**: while a pool holds idle connections, a task on the worker
//!   closes the expired ones every `pool_idle_timeout`, so an upstream that
//!   gets no more traffic does not keep olive's connections forever.
//!
//! Each connection's `Connection` future runs in its own task on the
//! worker, so an upstream closing an idle connection is noticed at once
//! (`is_closed`). Closing can still race with reuse: the request is then
//! handed back by hyper (`try_send_request`) only when not a byte of it was
//! written, and only then is it sent again on another connection, whatever
//! the method. Once written, a failure is the caller's error and is never
//! retried here.
//!
//! Measured against the legacy client with bench/proxy.sh's upstream and
//! config (13-byte body, 2 cores shared with wrk and other work), both
//! builds proxying at once under `wrk -t1 -c32` each, 12 paired 6 s rounds
//! in two runs: this pool served more requests in every round (median
//! +8% and +18% per run) at 10–17% less CPU per request (process
//! utime+stime / requests, median 44.8 → 39.7 µs in the second run).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use super::connect::Connector;
use crate::body::Body;

/// Why a request could not be exchanged with the upstream.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection could be opened: the upstream saw nothing.
    #[error("connect: {0}")]
    Connect(#[source] std::io::Error),
    /// The exchange failed on an open connection.
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

/// The idle connections to one address, for one worker.
#[derive(Debug)]
pub struct Pool {
    connector: Connector,
    idle_timeout: Duration,
    max_idle: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Oldest first; checkout takes from the back.
    idle: VecDeque<Idle>,
    /// A sweep task is running for this pool.
    sweeping: bool,
}

#[derive(Debug)]
struct Idle {
    send: SendRequest<Body>,
    since: Instant,
}

impl Pool {
    pub fn new(connector: Connector, idle_timeout: Duration, max_idle: usize) -> Arc<Pool> {
        Arc::new(Pool { connector, idle_timeout, max_idle, state: Mutex::default() })
    }

    /// Sends `req` on an idle connection, or on a new one, and returns the
    /// response head with the lease that returns the connection when the
    /// body has been read.
    pub async fn send(
        self: &Arc<Self>,
        mut req: Request<Body>,
    ) -> Result<(Response<Incoming>, Lease), SendError> {
        while let Some(mut send) = self.checkout() {
            match send.try_send_request(req).await {
                Ok(resp) => return Ok((resp, Lease::new(self, send))),
                Err(mut e) => match e.take_message() {
                    // Not a byte was written: the connection was closing.
                    Some(back) => {
                        tracing::debug!(error = %e.error(), "pooled upstream connection closed; retrying on another");
                        req = back;
                    }
                    None => return Err(SendError::Http(e.into_error())),
                },
            }
        }
        let mut send = self.connect().await?;
        let resp = send.send_request(req).await?;
        Ok((resp, Lease::new(self, send)))
    }

    /// The number of idle connections held.
    pub fn idle(&self) -> usize {
        self.lock().idle.len()
    }

    async fn connect(&self) -> Result<SendRequest<Body>, SendError> {
        let stream = self.connector.connect().await.map_err(SendError::Connect)?;
        let (send, conn) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream connection ended");
            }
        });
        Ok(send)
    }

    /// The most recently used idle connection that is ready for a request.
    fn checkout(&self) -> Option<SendRequest<Body>> {
        let now = Instant::now();
        let mut state = self.lock();
        let mut i = state.idle.len();
        while i > 0 {
            i -= 1;
            let conn = &state.idle[i];
            if conn.send.is_closed() || now.duration_since(conn.since) >= self.idle_timeout {
                state.idle.remove(i);
            } else if conn.send.is_ready() {
                return state.idle.remove(i).map(|c| c.send);
            }
            // Otherwise its connection task has not yet taken in the end of
            // the last exchange: leave it for the next checkout.
        }
        None
    }

    fn release(self: &Arc<Self>, send: SendRequest<Body>) {
        if send.is_closed() || self.max_idle == 0 {
            return;
        }
        let mut state = self.lock();
        if state.idle.len() >= self.max_idle {
            state.idle.pop_front();
        }
        state.idle.push_back(Idle { send, since: Instant::now() });
        if !state.sweeping
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            state.sweeping = true;
            runtime.spawn(sweep(Arc::downgrade(self), self.idle_timeout));
        }
    }

    /// Closes the expired idle connections; false when none is left, and
    /// then the sweep ends (under the same lock that `release` checks).
    fn sweep_once(&self) -> bool {
        let now = Instant::now();
        let mut state = self.lock();
        state.idle.retain(|c| !c.send.is_closed() && now.duration_since(c.since) < self.idle_timeout);
        state.sweeping = !state.idle.is_empty();
        state.sweeping
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

async fn sweep(pool: Weak<Pool>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        match pool.upgrade() {
            Some(pool) if pool.sweep_once() => {}
            _ => return,
        }
    }
}

/// A connection lent to one exchange. [`Lease::release`] returns it to its
/// pool; dropped without that, the connection is closed.
#[derive(Debug)]
pub struct Lease(Option<(SendRequest<Body>, Arc<Pool>)>);

impl Lease {
    fn new(pool: &Arc<Pool>, send: SendRequest<Body>) -> Lease {
        Lease(Some((send, pool.clone())))
    }

    /// Call once the response body has been read to its end.
    pub fn release(&mut self) {
        if let Some((send, pool)) = self.0.take() {
            pool.release(send);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UpstreamAddr;
    use http_body_util::BodyExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A raw HTTP/1.1 upstream: answers each request head with `200 ok`,
    /// and closes the connection after `per_conn` answers when not 0.
    /// Returns its address and the counts of requests read and connections
    /// accepted.
    async fn upstream(per_conn: usize) -> (std::net::SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        raw_upstream(per_conn, false).await
    }

    /// With `hang_up`, the request after the `per_conn`th is read and the
    /// connection closed without an answer.
    async fn raw_upstream(
        per_conn: usize,
        hang_up: bool,
    ) -> (std::net::SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (requests, conns) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (r, c) = (requests.clone(), conns.clone());
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                c.fetch_add(1, Ordering::SeqCst);
                let r = r.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut answered = 0;
                    let mut chunk = [0u8; 4096];
                    loop {
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            buf.drain(..end + 4);
                            r.fetch_add(1, Ordering::SeqCst);
                            if hang_up && answered == per_conn {
                                return;
                            }
                            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await.unwrap();
                            answered += 1;
                            if answered == per_conn && !hang_up {
                                return;
                            }
                        }
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                });
            }
        });
        (addr, requests, conns)
    }

    fn pool(addr: std::net::SocketAddr, idle_timeout: Duration, max_idle: usize) -> Arc<Pool> {
        Pool::new(Connector::new(UpstreamAddr::Tcp(addr), Duration::from_secs(1)), idle_timeout, max_idle)
    }

    fn get() -> Request<Body> {
        Request::builder().uri("/").header("host", "x").body(crate::body::empty()).unwrap()
    }

    /// One exchange, body read to its end, connection released.
    async fn exchange(pool: &Arc<Pool>, req: Request<Body>) -> Result<(), SendError> {
        let (resp, mut lease) = pool.send(req).await?;
        let body = resp.into_body().collect().await?.to_bytes();
        assert_eq!(&body[..], b"ok");
        lease.release();
        // Let the connection task take in the end of the exchange.
        tokio::task::yield_now().await;
        Ok(())
    }

    #[tokio::test]
    async fn reuses_a_released_connection() {
        let (addr, requests, conns) = upstream(0).await;
        let pool = pool(addr, Duration::from_secs(60), 4);
        for _ in 0..5 {
            exchange(&pool, get()).await.unwrap();
        }
        assert_eq!(requests.load(Ordering::SeqCst), 5);
        assert_eq!(conns.load(Ordering::SeqCst), 1);
        assert_eq!(pool.idle(), 1);
    }

    #[tokio::test]
    async fn a_connection_closed_while_idle_is_replaced() {
        // The upstream closes each connection after one answer.
        let (addr, requests, conns) = upstream(1).await;
        let pool = pool(addr, Duration::from_secs(60), 4);
        exchange(&pool, get()).await.unwrap();
        // Whether or not the pool has noticed the close yet, the request
        // goes out once, on a new connection.
        let post = Request::builder().method("POST").uri("/").header("host", "x");
        exchange(&pool, post.body(crate::body::full("x")).unwrap()).await.unwrap();
        assert_eq!(requests.load(Ordering::SeqCst), 2);
        assert_eq!(conns.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_post_that_was_written_is_not_sent_twice() {
        // The upstream reads the second request and hangs up on it.
        let (addr, requests, conns) = raw_upstream(1, true).await;
        let pool = pool(addr, Duration::from_secs(60), 4);
        exchange(&pool, get()).await.unwrap();
        let post = Request::builder().method("POST").uri("/").header("host", "x");
        let sent = pool.send(post.body(crate::body::full("x")).unwrap()).await;
        assert!(matches!(sent, Err(SendError::Http(_))), "{sent:?}");
        assert_eq!(requests.load(Ordering::SeqCst), 2);
        assert_eq!(conns.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_body_dropped_before_its_end_closes_the_connection() {
        let (addr, _, conns) = upstream(0).await;
        let pool = pool(addr, Duration::from_secs(60), 4);
        let (_resp, lease) = pool.send(get()).await.unwrap();
        drop(lease);
        assert_eq!(pool.idle(), 0);
        exchange(&pool, get()).await.unwrap();
        assert_eq!(conns.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn keeps_at_most_max_idle() {
        let (addr, _, conns) = upstream(0).await;
        let pool = pool(addr, Duration::from_secs(60), 2);
        // Three exchanges at once need three connections.
        let mut held = Vec::new();
        for _ in 0..3 {
            let (resp, lease) = pool.send(get()).await.unwrap();
            resp.into_body().collect().await.unwrap();
            held.push(lease);
        }
        assert_eq!(conns.load(Ordering::SeqCst), 3);
        for mut lease in held {
            lease.release();
        }
        assert_eq!(pool.idle(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connections_expire() {
        let (addr, _, conns) = upstream(0).await;
        let pool = pool(addr, Duration::from_secs(5), 4);
        exchange(&pool, get()).await.unwrap();
        assert_eq!(pool.idle(), 1);
        // The sweep closes it without any further traffic.
        tokio::time::sleep(Duration::from_secs(11)).await;
        assert_eq!(pool.idle(), 0);
        exchange(&pool, get()).await.unwrap();
        assert_eq!(conns.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn connect_failure_is_a_connect_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let pool = pool(addr, Duration::from_secs(60), 4);
        assert!(matches!(pool.send(get()).await, Err(SendError::Connect(_))));
    }
}
