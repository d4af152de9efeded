//! The configuration file as written: TOML structs that mirror
//! `config/olive.toml` one to one.
//!
//! Every struct denies unknown fields, so a typo is an error instead of a
//! silently ignored setting. Defaults live in named `DEFAULT_*` constants with
//! the reason for each value beside it. Nothing here is checked beyond its
//! type; `super::validate` turns these into the runtime [`super::Config`].

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// A client that cannot send its request head in this time is cut off
/// (slowloris). nginx's `client_header_timeout` defaults to 60s; browsers
/// send a head in one packet, so 10s is generous.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A request body olive reads before contacting the upstream (up to
/// `body_buffer_bytes`, or a spooled chunked one) must arrive within this
/// time, else 408 and the connection closes: without it a client sending
/// a byte every few seconds holds a connection forever (slow-body attack).
/// nginx's `client_body_timeout` is 60s between reads; this is for the
/// whole body, so at the default 1 MiB buffer a client needs ~17 KiB/s.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// A write to a client that makes no progress for this long ends the
/// connection (nginx's `send_timeout`, also 60s): a client that stops
/// reading (slow-read attack) otherwise holds its slot and the response
/// behind it forever. Counted between two successful writes, so a slow
/// but moving download is not cut.
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// TLS handshakes must finish within this time or the connection is dropped.
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Request head size limit (request line + headers). nginx uses 4 buffers of
/// 8 KiB; 32 KiB holds the largest cookies a Django site usually sets.
/// Above it the client gets 431.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 32 * 1024;
/// Number of request header fields accepted; more is 431.
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// Largest request body accepted (nginx `client_max_body_size`, default 1m;
/// Django's own `DATA_UPLOAD_MAX_MEMORY_SIZE` is 2.5 MB). Above it: 413.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 10 * 1024 * 1024;
/// Bodies up to this size are read completely before the upstream sees the
/// request, so a slow client never holds a synchronous Django worker.
pub const DEFAULT_BODY_BUFFER_BYTES: u64 = 1024 * 1024;
/// Simultaneous client connections per listener; past it new connections wait
/// in the kernel backlog. Each costs a file descriptor and some buffers.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Simultaneous client connections from one address (IPv6: one /64) per
/// listener; past it a new connection is answered 429 and closed at once.
/// Browsers open at most 6 HTTP/1.1 connections per site (one for HTTP/2),
/// so 256 leaves room for a large office behind one NAT address while one
/// client cannot take all of `max_connections`.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 256;

/// Upstream TCP (or unix) connect timeout. Loopback connects take
/// microseconds; a second means the upstream is not there.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Time for the upstream to produce response headers (nginx
/// `proxy_read_timeout` is 60s; gunicorn's worker timeout is 30s).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Budget for the whole exchange, body included: bounds a response that
/// trickles forever.
pub const DEFAULT_TOTAL_TIMEOUT: Duration = Duration::from_secs(300);
/// Idle pooled upstream connections are closed after this. Below gunicorn's
/// default keep-alive of 2s would defeat pooling; uvicorn keeps 5s.
pub const DEFAULT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle pooled connections kept per upstream address.
pub const DEFAULT_POOL_MAX_IDLE: usize = 256;
/// Connect failures in a row that eject an address (nginx `max_fails`).
pub const DEFAULT_MAX_FAILS: u32 = 1;
/// How long an ejected address stays out of rotation (nginx `fail_timeout`).
pub const DEFAULT_FAIL_TIMEOUT: Duration = Duration::from_secs(10);
/// Extra attempts on another address after a connect failure. Only connect
/// failures are retried: the upstream saw nothing, so retrying is safe.
pub const DEFAULT_RETRIES: u32 = 1;
/// A websocket tunnel with no bytes in either direction for this long is
/// closed. Browsers and Channels ping every 20-30s.
pub const DEFAULT_TUNNEL_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Cache-Control for static files when the route does not say.
pub const DEFAULT_STATIC_CACHE_CONTROL: &str = "public, max-age=3600";
/// HSTS max-age when redirecting to HTTPS: one year, as browsers' preload
/// lists expect.
pub const DEFAULT_HSTS_MAX_AGE: Duration = Duration::from_secs(365 * 24 * 3600);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    #[serde(default)]
    pub server: Server,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default, rename = "listener")]
    pub listeners: Vec<Listener>,
    #[serde(default, rename = "certificate")]
    pub certificates: Vec<Certificate>,
    #[serde(default, rename = "upstream")]
    pub upstreams: Vec<Upstream>,
    #[serde(default, rename = "route")]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub router: Router,
    #[serde(default)]
    pub live: Live,
    #[serde(default)]
    pub auth: Auth,
    #[serde(default)]
    pub rate_limits: RateLimits,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub tls_handshake_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub send_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_body_bytes: u64,
    pub body_buffer_bytes: u64,
    /// What to do with a body larger than `body_buffer_bytes` (but within
    /// `max_body_bytes`): stream it to the upstream, or refuse it with 413.
    pub oversize_body: OversizeBody,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub h2_max_concurrent_streams: u32,
    pub h2_max_pending_accept_reset_streams: usize,
    pub h2_max_local_error_reset_streams: usize,
    pub h2_max_send_buf_bytes: usize,
    #[serde(with = "humantime_serde")]
    pub h2_keep_alive_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub h2_keep_alive_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            tls_handshake_timeout: DEFAULT_TLS_HANDSHAKE_TIMEOUT,
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            send_timeout: DEFAULT_SEND_TIMEOUT,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_headers: DEFAULT_MAX_HEADERS,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            body_buffer_bytes: DEFAULT_BODY_BUFFER_BYTES,
            oversize_body: OversizeBody::Stream,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
            h2_max_concurrent_streams: DEFAULT_H2_MAX_STREAMS,
            h2_max_pending_accept_reset_streams: DEFAULT_H2_MAX_PENDING_RESETS,
            h2_max_local_error_reset_streams: DEFAULT_H2_MAX_ERROR_RESETS,
            h2_max_send_buf_bytes: DEFAULT_H2_MAX_SEND_BUF_BYTES,
            h2_keep_alive_interval: DEFAULT_H2_KEEP_ALIVE_INTERVAL,
            h2_keep_alive_timeout: DEFAULT_H2_KEEP_ALIVE_TIMEOUT,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OversizeBody {
    Stream,
    Refuse,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    pub name: String,
    pub kind: ListenerKind,
    /// `host:port`; port 0 picks a free port (tests).
    pub bind: String,
    /// Plain HTTP listeners only: answer every request with a 308 to this
    /// HTTPS port on the same host.
    pub redirect_https_port: Option<u16>,
    /// HTTPS listeners only: send Strict-Transport-Security.
    #[serde(default)]
    pub hsts: bool,
    #[serde(default = "default_hsts_max_age", with = "humantime_serde")]
    pub hsts_max_age: Duration,
    /// Connections from `server.trusted_proxies` start with a PROXY
    /// protocol header (v1 or v2), which names the client.
    #[serde(default)]
    pub proxy_protocol: bool,
}

fn default_hsts_max_age() -> Duration {
    DEFAULT_HSTS_MAX_AGE
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerKind {
    Http,
    Https,
    Admin,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Certificate {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// SNI names this pair answers for. Empty: names from the certificate
    /// are not inspected, so an empty list only makes sense on the default.
    #[serde(default)]
    pub server_names: Vec<String>,
    /// The pair used when SNI is absent or matches nothing. Exactly one
    /// certificate is the default (the first, if none says so).
    #[serde(default)]
    pub default: bool,
    /// Create a self-signed certificate for `server_names` (or localhost)
    /// when the files are missing. For development only.
    #[serde(default)]
    pub self_signed_if_missing: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    pub name: String,
    /// `host:port` or `unix:/path/to/socket`.
    pub addresses: Vec<String>,
    #[serde(default = "d::connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    #[serde(default = "d::header_timeout", with = "humantime_serde")]
    pub header_timeout: Duration,
    #[serde(default = "d::total_timeout", with = "humantime_serde")]
    pub total_timeout: Duration,
    #[serde(default = "d::pool_idle_timeout", with = "humantime_serde")]
    pub pool_idle_timeout: Duration,
    #[serde(default = "d::pool_max_idle")]
    pub pool_max_idle: usize,
    #[serde(default = "d::max_fails")]
    pub max_fails: u32,
    #[serde(default = "d::fail_timeout", with = "humantime_serde")]
    pub fail_timeout: Duration,
    #[serde(default = "d::retries")]
    pub retries: u32,
}

/// serde needs functions for field defaults; these name the constants above.
mod d {
    use super::*;
    pub fn connect_timeout() -> Duration {
        DEFAULT_CONNECT_TIMEOUT
    }
    pub fn header_timeout() -> Duration {
        DEFAULT_HEADER_TIMEOUT
    }
    pub fn total_timeout() -> Duration {
        DEFAULT_TOTAL_TIMEOUT
    }
    pub fn pool_idle_timeout() -> Duration {
        DEFAULT_POOL_IDLE_TIMEOUT
    }
    pub fn pool_max_idle() -> usize {
        DEFAULT_POOL_MAX_IDLE
    }
    pub fn max_fails() -> u32 {
        DEFAULT_MAX_FAILS
    }
    pub fn fail_timeout() -> Duration {
        DEFAULT_FAIL_TIMEOUT
    }
    pub fn retries() -> u32 {
        DEFAULT_RETRIES
    }
    pub fn tunnel_idle_timeout() -> Duration {
        DEFAULT_TUNNEL_IDLE_TIMEOUT
    }
    pub fn yes() -> bool {
        true
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Router {
    /// Status for requests whose Host matches no route (default 421
    /// Misdirected Request; 404 is the other common choice).
    pub unmatched_status: Option<u16>,
}

/// One entry of the route table. Exactly one of `proxy`, `tunnel`,
/// `static`, `live` is set.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Listener names this route is served on; empty: every public
    /// (http/https) listener.
    #[serde(default)]
    pub listeners: Vec<String>,
    /// Host names (`example.com`, `*.example.com`); empty: any host.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Path prefix, starting with `/`. The longest matching prefix wins.
    pub path: String,
    pub proxy: Option<ProxyRoute>,
    pub tunnel: Option<TunnelRoute>,
    #[serde(rename = "static")]
    pub static_files: Option<StaticRoute>,
    /// The live hub: `{path}/ws` (websocket) and `{path}/sse`.
    pub live: Option<LiveRoute>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiveRoute {
    /// Asked `GET {recovery_url}?key=K&since=ID` when the history cannot
    /// cover a reconnect gap (the Django package serves it). An absolute
    /// `http://` URL, e.g. `http://127.0.0.1:8000/_olive/recover/`.
    pub recovery_url: Option<String>,
}

/// Messages queued for one client before it counts as a slow consumer and
/// is disconnected (1013). At 20 messages a second that is over 10 seconds
/// of backlog; a browser tab that far behind is better off reconnecting
/// and resuming.
pub const DEFAULT_OUTBOUND_QUEUE: usize = 256;
/// Largest client frame. Protocol frames are small JSON; 64 KiB leaves room
/// for a comment published over the socket.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 64 * 1024;
/// Subscriptions one connection may hold: a page watches a handful of
/// objects, not thousands.
pub const DEFAULT_MAX_SUBSCRIPTIONS: usize = 100;
/// Websocket ping interval; browsers and proxies drop quiet connections
/// after 30-60s.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(25);
/// A connection that sends nothing (not even a pong) for this long is gone.
pub const DEFAULT_WS_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Read buffer per websocket. tokio-tungstenite's default is 128 KiB per
/// connection, which alone would cost 1.2 GiB at 10k connections. Client
/// frames are small JSON (a subscribe is under 100 bytes), so 1 KiB: a
/// rare larger frame takes a few more reads. Measured at 19,000 idle
/// connections: 4 KiB → 1 KiB saves 2.2 KiB RSS per connection.
pub const DEFAULT_WS_READ_BUFFER: usize = 1024;
/// Invalid frames a connection may send before it is closed with 1008.
pub const DEFAULT_MAX_INVALID_FRAMES: u32 = 10;
/// Messages kept per key for resume. A reconnect after a network blip
/// misses seconds of a conversation, rarely more than a few dozen
/// comments; 100 frames of a few hundred bytes is ~30 KiB per busy key.
pub const DEFAULT_HISTORY_SIZE: usize = 100;
/// How long a kept message stays resumable. Long enough for a laptop lid
/// or a train tunnel; past it the upstream (tier 2) or a reload is the
/// better source.
pub const DEFAULT_HISTORY_TTL: Duration = Duration::from_secs(5 * 60);
/// Keys with a history at most (least recently written evicted first):
/// 10k busy keys at ~30 KiB is the worst case of ~300 MiB, and in practice
/// most rings hold a handful of messages.
pub const DEFAULT_HISTORY_MAX_KEYS: usize = 10_000;
/// How long a key stays bound (and its history kept) after its last local
/// subscriber leaves. A page reload or a phone switching networks comes
/// back within seconds, and finds its messages in the history rather than
/// asking the upstream; a lingering key costs one broker binding and the
/// deliveries nobody reads meanwhile.
pub const DEFAULT_HISTORY_LINGER: Duration = Duration::from_secs(30);
/// SSE heartbeat comment interval: proxies and load balancers commonly
/// close HTTP responses idle for 30-60s.
pub const DEFAULT_SSE_HEARTBEAT: Duration = Duration::from_secs(15);
/// Budget for one recovery request to the upstream; the subscription's
/// live messages wait meanwhile, so it is short.
pub const DEFAULT_RECOVERY_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest recovery answer read: a gap's worth of comments, not a dump.
pub const DEFAULT_RECOVERY_MAX_BYTES: usize = 1024 * 1024;
/// How often a node repeats its presence snapshot of each key it has
/// members on. One small message per key per node every 10s is cheap, and
/// it bounds how long a lost announcement leaves a node wrong.
pub const DEFAULT_PRESENCE_HEARTBEAT: Duration = Duration::from_secs(10);
/// A node not heard of for this long is gone, and its members with it:
/// three missed heartbeats, so one late or lost message is not a death.
pub const DEFAULT_PRESENCE_TTL: Duration = Duration::from_secs(30);
/// Above this many present (named plus anonymous), a key's presence is a
/// count: a list of 100 names is what a page can show, and beyond it
/// every arrival would be a frame to every watcher (n² traffic).
pub const DEFAULT_PRESENCE_MAX_MEMBERS: usize = 100;
/// Count frames go out at most this often per key: "1,204 here" need not
/// be more exact than once a second.
pub const DEFAULT_PRESENCE_COUNT_INTERVAL: Duration = Duration::from_secs(1);

/// On a drain, each websocket is closed and each SSE stream ended at a
/// random moment within this window, so that their clients reconnect
/// (to the olive that stays) spread out instead of all in the same
/// second: 10,000 sessions over 5s is 2,000 reconnects a second. At most
/// half of `server.drain_timeout` is used, leaving the rest for close
/// frames and in-flight requests.
pub const DEFAULT_RECONNECT_SPREAD: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Live {
    pub broker: BrokerKind,
    pub outbound_queue: usize,
    pub max_frame_bytes: usize,
    pub max_subscriptions: usize,
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    pub read_buffer_bytes: usize,
    pub max_invalid_frames: u32,
    /// RabbitMQ settings, used when `broker = "amqp"`.
    pub amqp: LiveAmqp,
    pub history_size: usize,
    #[serde(with = "humantime_serde")]
    pub history_ttl: Duration,
    pub history_max_keys: usize,
    #[serde(with = "humantime_serde")]
    pub history_linger: Duration,
    #[serde(with = "humantime_serde")]
    pub sse_heartbeat: Duration,
    #[serde(with = "humantime_serde")]
    pub recovery_timeout: Duration,
    pub recovery_max_bytes: usize,
    #[serde(with = "humantime_serde")]
    pub presence_heartbeat: Duration,
    #[serde(with = "humantime_serde")]
    pub presence_ttl: Duration,
    pub presence_max_members: usize,
    #[serde(with = "humantime_serde")]
    pub presence_count_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub reconnect_spread: Duration,
    /// Diagnostic, never for a site: websocket sessions echo every data
    /// message instead of speaking olive's protocol, so that conformance
    /// suites (Autobahn, docs/HARDENING.md) can drive olive's websocket layer.
    pub diagnostic_echo: bool,
}

impl Default for Live {
    fn default() -> Self {
        Self {
            broker: BrokerKind::Memory,
            outbound_queue: DEFAULT_OUTBOUND_QUEUE,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            max_subscriptions: DEFAULT_MAX_SUBSCRIPTIONS,
            ping_interval: DEFAULT_PING_INTERVAL,
            idle_timeout: DEFAULT_WS_IDLE_TIMEOUT,
            read_buffer_bytes: DEFAULT_WS_READ_BUFFER,
            max_invalid_frames: DEFAULT_MAX_INVALID_FRAMES,
            amqp: LiveAmqp::default(),
            history_size: DEFAULT_HISTORY_SIZE,
            history_ttl: DEFAULT_HISTORY_TTL,
            history_max_keys: DEFAULT_HISTORY_MAX_KEYS,
            history_linger: DEFAULT_HISTORY_LINGER,
            sse_heartbeat: DEFAULT_SSE_HEARTBEAT,
            recovery_timeout: DEFAULT_RECOVERY_TIMEOUT,
            recovery_max_bytes: DEFAULT_RECOVERY_MAX_BYTES,
            presence_heartbeat: DEFAULT_PRESENCE_HEARTBEAT,
            presence_ttl: DEFAULT_PRESENCE_TTL,
            presence_max_members: DEFAULT_PRESENCE_MAX_MEMBERS,
            presence_count_interval: DEFAULT_PRESENCE_COUNT_INTERVAL,
            reconnect_spread: DEFAULT_RECONNECT_SPREAD,
            diagnostic_echo: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BrokerKind {
    Memory,
    Amqp,
}

/// The broker RabbitMQ runs out of the box on the same machine (the
/// `guest` user may only connect from localhost). `%2f` is the default
/// vhost `/`.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// The topic exchange every node and every outside publisher shares.
pub const DEFAULT_AMQP_EXCHANGE: &str = "olive";
/// Each node's queue is named `{prefix}.{random}`, so `rabbitmqctl
/// list_queues` shows which queues are olive's.
pub const DEFAULT_AMQP_QUEUE_PREFIX: &str = "olive.node";
/// First wait before reconnecting: short, because a RabbitMQ restart or a
/// dropped connection usually heals at once.
pub const DEFAULT_AMQP_RECONNECT_MIN: Duration = Duration::from_millis(100);
/// Longest wait between attempts: subscribers stay open during an outage,
/// so service resumes at most this long after RabbitMQ is back.
pub const DEFAULT_AMQP_RECONNECT_MAX: Duration = Duration::from_secs(10);
/// TCP connect plus AMQP handshake; a broker that takes longer is treated
/// as down, and the next attempt follows the backoff.
pub const DEFAULT_AMQP_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a publish waits for RabbitMQ's confirm before the publisher
/// is told `unavailable`. Confirms take milliseconds on a healthy broker;
/// one under memory or disk alarm blocks publishers, and a browser should
/// hear about it instead of waiting.
pub const DEFAULT_AMQP_CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);

/// A node's queue outlives the node's connection by this long: a node that
/// reconnects within it finds every message routed meanwhile; a node that
/// died leaves nothing behind after it.
pub const DEFAULT_AMQP_QUEUE_EXPIRES: Duration = Duration::from_secs(60);

/// Deliveries RabbitMQ sends a node before the node acks them.
pub const DEFAULT_AMQP_PREFETCH: u16 = 1000;

/// `[live.amqp]`: the RabbitMQ broker. The URL holds a password, so it can
/// come from the file (`url`), an environment variable (`url_env`) or a
/// file of its own (`url_file`); at most one of the three.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LiveAmqp {
    pub url: Option<String>,
    pub url_env: Option<String>,
    pub url_file: Option<PathBuf>,
    pub exchange: String,
    pub queue_prefix: String,
    #[serde(with = "humantime_serde")]
    pub reconnect_min: Duration,
    #[serde(with = "humantime_serde")]
    pub reconnect_max: Duration,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub confirm_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub queue_expires: Duration,
    pub prefetch: u16,
}

impl Default for LiveAmqp {
    fn default() -> Self {
        Self {
            url: None,
            url_env: None,
            url_file: None,
            exchange: DEFAULT_AMQP_EXCHANGE.into(),
            queue_prefix: DEFAULT_AMQP_QUEUE_PREFIX.into(),
            reconnect_min: DEFAULT_AMQP_RECONNECT_MIN,
            reconnect_max: DEFAULT_AMQP_RECONNECT_MAX,
            connect_timeout: DEFAULT_AMQP_CONNECT_TIMEOUT,
            confirm_timeout: DEFAULT_AMQP_CONFIRM_TIMEOUT,
            queue_expires: DEFAULT_AMQP_QUEUE_EXPIRES,
            prefetch: DEFAULT_AMQP_PREFETCH,
        }
    }
}

/// By hand, so that a password in `url` never reaches a log line.
impl std::fmt::Debug for LiveAmqp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveAmqp")
            .field("url", &self.url.as_ref().map(|_| "<redacted>"))
            .field("url_env", &self.url_env)
            .field("url_file", &self.url_file)
            .field("exchange", &self.exchange)
            .field("queue_prefix", &self.queue_prefix)
            .field("reconnect_min", &self.reconnect_min)
            .field("reconnect_max", &self.reconnect_max)
            .field("connect_timeout", &self.connect_timeout)
            .field("confirm_timeout", &self.confirm_timeout)
            .field("queue_expires", &self.queue_expires)
            .field("prefetch", &self.prefetch)
            .finish()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyRoute {
    pub upstream: String,
    /// gzip/br-compress text responses the upstream left uncompressed.
    #[serde(default = "d::yes")]
    pub compress: bool,
}

/// A proxy route on which `Upgrade: websocket` requests are passed through
/// to the upstream (Django Channels under daphne or uvicorn); ordinary
/// requests on it are proxied as usual.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunnelRoute {
    pub upstream: String,
    #[serde(default = "d::tunnel_idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticRoute {
    /// Directory served; the route's path prefix is stripped first.
    pub root: PathBuf,
    pub cache_control: Option<String>,
    /// Serve `file.br` / `file.gz` next to `file` when the client accepts it.
    #[serde(default = "d::yes")]
    pub precompressed: bool,
    /// File served for a directory request (`index.html`); none: 404.
    pub index: Option<String>,
}

mod auth;
mod h2;
mod rate;
mod server;
pub use auth::*;
pub use h2::*;
pub use rate::*;
pub use server::*;
