//! The edge: listeners, TLS termination, connection serving and graceful
//! shutdown.
//!
//! [`Server::bind`] opens every configured socket (so that a port conflict
//! is reported before anything is served; with `SO_REUSEPORT` unless
//! `server.reuse_port = false`, so that a new olive can bind beside this
//! one) and builds the shared [`App`]; [`Server::run`] accepts until the
//! shutdown token is cancelled, then drains: listeners close, in-flight
//! requests finish, live sessions leave spread over
//! `live.reconnect_spread`, tunnels close, and whatever is still open
//! when the drain timeout passes is dropped.

pub mod handler;
mod listen;
pub mod proxy_protocol;
mod send_timeout;
pub mod site;
pub mod strict;
pub mod tls;
pub mod workers;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

pub use handler::App;
use workers::Workers;

use crate::config::{Config, ListenerKind};

pub struct Server {
    app: Arc<App>,
    hub_tasks: handler::HubTasks,
    sockets: Vec<TcpListener>,
    /// Per listener, its `limits.max_connections` slots.
    slots: Vec<Arc<Semaphore>>,
    /// Per listener, its open connections.
    open: Vec<Arc<AtomicUsize>>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// What the TLS acceptor serves, for reloads to replace.
    certificates: Option<Arc<tls::Certificates>>,
}

/// A listener's open client connections, upgraded ones (tunnels,
/// websockets) included: what `limits.max_connections` bounds.
#[derive(Clone)]
pub struct OpenConnections {
    open: Arc<AtomicUsize>,
    max: usize,
}

impl OpenConnections {
    pub fn count(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    pub fn max(&self) -> usize {
        self.max
    }
}

impl Server {
    /// Binds every listener and loads certificates.
    pub async fn bind(config: Config) -> anyhow::Result<Server> {
        let config = Arc::new(config);
        let needs_tls = config.listeners.iter().any(|l| l.kind == ListenerKind::Https);
        let (tls, certificates) = if needs_tls {
            let certificates =
                Arc::new(tls::Certificates::load(&config.certificates).context("loading TLS certificates")?);
            let server_config = tls::server_config(certificates.clone())?;
            (Some(tokio_rustls::TlsAcceptor::from(server_config)), Some(certificates))
        } else {
            (None, None)
        };
        let mut sockets = Vec::new();
        for l in &config.listeners {
            let socket = listen::bind(l.bind, config.server.reuse_port)
                .with_context(|| format!("listener {} on {}", l.name, l.bind))?;
            tracing::info!(listener = %l.name, kind = ?l.kind, addr = %socket.local_addr()?, "listening");
            sockets.push(socket);
        }
        let slots = sockets.iter().map(|_| Arc::new(Semaphore::new(config.limits.max_connections))).collect();
        let open = sockets.iter().map(|_| Arc::new(AtomicUsize::new(0))).collect();
        let (app, hub_tasks) = App::new(config, CancellationToken::new());
        Ok(Server { app: Arc::new(app), hub_tasks, sockets, slots, open, tls, certificates })
    }

    /// The bound address of the listener called `name` (port 0 resolved).
    pub fn local_addr(&self, name: &str) -> Option<SocketAddr> {
        let i = self.app.config.listeners.iter().position(|l| l.name == name)?;
        self.sockets[i].local_addr().ok()
    }

    /// The connection count of the listener called `name`, to watch while
    /// the server runs.
    pub fn open_connections(&self, name: &str) -> Option<OpenConnections> {
        let i = self.app.config.listeners.iter().position(|l| l.name == name)?;
        Some(OpenConnections { open: self.open[i].clone(), max: self.app.config.limits.max_connections })
    }

    /// Reloads this server's configuration file on demand (SIGHUP).
    pub fn reloader(&self) -> crate::ops::reload::Reloader {
        crate::ops::reload::Reloader::new(self.app.clone(), self.certificates.clone())
    }

    /// Serves until `shutdown` is cancelled, then drains within the
    /// configured drain timeout.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        // Every connection task, for the drain to wait on.
        let connections = tokio_util::task::TaskTracker::new();
        // Cancelled when the drain timeout passes: connection tasks still
        // running then are dropped instead of outliving `run`.
        let abort = CancellationToken::new();
        let workers = Arc::new(Workers::start(self.app.workers)?);
        let hub = &self.app.hub;
        // On the main runtime, not on a worker: every shard then hears of a
        // delivery from another thread, through its runtime's remote queue,
        // which a busy worker checks every 31 tasks. A shard on the same
        // worker as this task was woken at the back of that worker's local
        // queue instead, behind every connection writer still owed the
        // previous message: that worker fanned out each message only after
        // writing the last one, one send() per delivery, while the other
        // shard caught up by sending several messages per send(). At 10,000
        // subscribers on one key the first worker used a quarter more CPU
        // and set the p99 (docs/BENCHMARKS.md).
        let deliveries = tokio::spawn(hub.clone().run_deliveries(self.hub_tasks.deliveries));
        let presence = tokio::spawn(hub.clone().run_presence());
        let control = tokio::spawn(crate::auth::revoke::run(self.app.auth.clone(), self.hub_tasks.control));
        for inbox in self.hub_tasks.shards {
            let hub = hub.clone();
            workers.spawn_on(inbox.0, hub.run_shard(inbox));
        }
        let mut accept_loops = tokio::task::JoinSet::new();
        let listeners = self.sockets.into_iter().zip(self.slots).zip(self.open);
        for (index, ((socket, slots), open)) in listeners.enumerate() {
            let listener = listen::Listener {
                index,
                socket,
                slots,
                open,
                tls: if self.app.config.listeners[index].kind == ListenerKind::Https {
                    self.tls.clone()
                } else {
                    None
                },
                app: self.app.clone(),
                connections: connections.clone(),
                abort: abort.clone(),
                workers: workers.clone(),
            };
            accept_loops.spawn(listener.accept_loop(shutdown.clone()));
        }
        shutdown.cancelled().await;
        // Listening sockets close as the accept loops return.
        accept_loops.join_all().await;
        // Connections finish what they serve and close (each after its
        // first request, see `listen`); live sessions leave within
        // `live.reconnect_spread`; tunnels close.
        self.app.shutdown.cancel();
        let drain = self.app.config.server.drain_timeout;
        let deadline = tokio::time::Instant::now() + drain;
        connections.close();
        tracing::info!(connections = connections.len(), timeout_secs = drain.as_secs_f32(), "draining");
        match tokio::time::timeout(drain, connections.wait()).await {
            Ok(()) => tracing::info!("drained"),
            Err(_) => {
                tracing::warn!("drain timeout passed; closing the remaining connections");
                abort.cancel();
            }
        }
        // Tunnels and live sessions got the shutdown signal with the drain;
        // give them what is left of it to send their close frames.
        self.app.sessions.close();
        if tokio::time::timeout_at(deadline, self.app.sessions.wait()).await.is_err() {
            tracing::warn!(
                sessions = self.app.sessions.len(),
                "drain timeout passed with sessions still open"
            );
        }
        // Stops the worker threads once the last handle is gone.
        drop(workers);
        self.app.hub.broker().close().await;
        presence.abort();
        deliveries.abort();
        control.abort();
        Ok(())
    }
}

/// Resolves when SIGTERM or SIGINT arrives.
pub async fn termination_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
}
