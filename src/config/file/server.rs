//! The `[server]` table as written (see `super` for the conventions).

use std::time::Duration;

use serde::Deserialize;

/// Graceful shutdown budget. Long enough for a slow Django view to finish,
/// short enough that a deploy does not hang on a stuck client.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// On a drain, a connection that has not sent a request yet gets this
/// long to send one before it is closed: accepted just before the drain,
/// its request is a round trip away, and closing it unread would fail
/// that request. Connections that never send one (browsers' speculative
/// pre-connections) hold the drain up this long, no longer.
pub const DEFAULT_DRAIN_FIRST_REQUEST: Duration = Duration::from_secs(1);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub drain_first_request: Duration,
    pub log_format: LogFormat,
    /// `tracing` filter directive, e.g. `info` or `olive=debug,hyper=warn`.
    pub log_level: String,
    pub access_log: bool,
    /// Peers whose X-Forwarded-* / Forwarded / X-Request-ID headers are
    /// believed (a load balancer in front of olive). CIDR or single address.
    pub trusted_proxies: Vec<String>,
    /// Worker threads serving connections; 0 means one per CPU (as nginx's
    /// `worker_processes auto`).
    pub workers: usize,
    /// Listening sockets open with `SO_REUSEPORT`, so that a new olive
    /// binds the same ports while the old one drains (a deploy that drops
    /// nobody: `docs/OPERATIONS.md`, "Upgrading"). On by default: Linux
    /// lets only a process of the same user join a port this way, and
    /// without it a deploy has a moment where nobody listens.
    pub reuse_port: bool,
}

impl Default for Server {
    fn default() -> Self {
        Self {
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            drain_first_request: DEFAULT_DRAIN_FIRST_REQUEST,
            log_format: LogFormat::Pretty,
            log_level: "info".into(),
            access_log: true,
            trusted_proxies: Vec::new(),
            workers: 0,
            reuse_port: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}
