//! Prometheus metrics: the counters olive keeps and `GET /metrics` on the
//! admin listener, in the text exposition format 0.0.4. Every metric is
//! listed in `docs/OPERATIONS.md` ("Metrics").
//!
//! Counting is atomics only: a request, a connection or a delivery adds to
//! an `AtomicU64` found by index (route, status class, kind), never by a
//! map lookup, a lock or an allocation. Label values are bounded by
//! construction: routes are the configured path prefixes, upstreams the
//! configured names, key classes capped ([`classes`]), reasons and limits
//! fixed lists. Nothing is labelled with a raw key, path or address.
//!
//! Hand-rolled rather than a crate: `prometheus-client`'s histogram takes
//! a lock per observation and its label families a map lookup under a lock
//! per increment, and `metrics` + `metrics-exporter-prometheus` bring a
//! global recorder (one per process: tests that run several olives in one
//! process would see each other's counts) and a larger dependency tree.
//! What olive needs (counters, gauges, fixed-bucket histograms, one text
//! format) is the few hundred lines here.
//!
//! Where the numbers live: [`Metrics`] is per [`App`] (requests,
//! connections, TLS, publishes, limits); the hub keeps [`LiveStats`]
//! (deliveries, slow consumers, history); each upstream keeps
//! [`UpstreamStats`]; access control keeps `auth::Stats` (refusals by
//! reason); the broker reports its state and reconnects. A scrape reads
//! them all ([`render`]).

mod broker;
pub mod classes;
pub mod histogram;
pub mod routes;
pub mod text;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

pub use broker::Metered;
pub use classes::ClassCounter;
pub use histogram::Histogram;
pub use routes::{Requests, RouteLabel};
use text::{Text, Type};

use crate::body::{self, Body};
use crate::config::BrokerKind;
use crate::edge::App;
use crate::live::id::MessageId;

/// The limits of `crate::limit`, the label values of
/// `olive_rate_limited_total`. Anything else counts as `other`.
pub const RATE_LIMITS: &[&str] = &[
    "http_per_ip",
    "connects_per_ip",
    "connections_per_ip",
    "sessions_per_user",
    "frames_per_connection",
    "publishes_per_user",
    "subscriptions_per_connection",
    "h2_enhance_your_calm",
];

const OTHER: &str = "other";

/// What an open connection is, the label values of `olive_connections`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A TCP (or TLS) connection served by the HTTP server.
    Http = 0,
    /// A live websocket session (it left the HTTP server at the upgrade).
    Websocket = 1,
    /// A live SSE stream (its connection is also counted as `http`).
    Sse = 2,
    /// A websocket tunnel to an upstream.
    Tunnel = 3,
}

const KINDS: [&str; 4] = ["http", "websocket", "sse", "tunnel"];

/// How a TLS handshake ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handshake {
    Ok = 0,
    Failed = 1,
    TimedOut = 2,
}

const HANDSHAKES: [&str; 3] = ["ok", "failed", "timeout"];

/// The counters kept per [`App`].
#[derive(Debug)]
pub struct Metrics {
    /// Requests by route label and status class (labels live as long
    /// as the process, across reloads).
    pub requests: Requests,
    open: [AtomicI64; 4],
    listening: AtomicI64,
    handshakes: [AtomicU64; 3],
    /// Publishes the broker confirmed, by key class ([`Metered`]).
    published: ClassCounter,
    publish_failures: AtomicU64,
    rate_limited: Box<[AtomicU64]>,
    /// Reloads applied and refused (`ops::reload`).
    reloads: [AtomicU64; 2],
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let zeros = |n: usize| (0..n).map(|_| AtomicU64::new(0)).collect();
        Metrics {
            requests: Requests::default(),
            open: Default::default(),
            listening: AtomicI64::new(0),
            handshakes: Default::default(),
            published: ClassCounter::default(),
            publish_failures: AtomicU64::new(0),
            rate_limited: zeros(RATE_LIMITS.len() + 1),
            reloads: Default::default(),
        }
    }

    /// Counts a request answered with `status`.
    pub fn request(&self, route: RouteLabel, status: StatusCode) {
        self.requests.count(route, status);
    }

    /// Open connections now, by kind label.
    pub fn open_now(&self) -> impl Iterator<Item = (&'static str, i64)> + '_ {
        KINDS.iter().zip(&self.open).map(|(kind, n)| (*kind, n.load(Ordering::Relaxed)))
    }

    /// Publishes the broker confirmed, by key class.
    pub fn published(&self) -> &ClassCounter {
        &self.published
    }

    /// Counts a configuration reload, applied (`true`) or refused.
    pub fn reloaded(&self, applied: bool) {
        self.reloads[usize::from(!applied)].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an open connection of `kind` until the guard drops.
    pub fn open(self: &Arc<Self>, kind: Kind) -> Open {
        self.open[kind as usize].fetch_add(1, Ordering::Relaxed);
        Open { metrics: self.clone(), kind }
    }

    /// Counts a listening socket until the guard drops (for `/readyz`).
    pub fn listening(self: &Arc<Self>) -> Listening {
        self.listening.fetch_add(1, Ordering::Relaxed);
        Listening(self.clone())
    }

    /// Listening sockets now.
    pub fn listeners_up(&self) -> usize {
        usize::try_from(self.listening.load(Ordering::Relaxed)).unwrap_or(0)
    }

    pub fn handshake(&self, outcome: Handshake) {
        self.handshakes[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a response body as an open SSE stream while it lasts (only
    /// a 200: anything else is not a stream).
    pub fn track_sse(self: &Arc<Self>, resp: Response<Body>) -> Response<Body> {
        if resp.status() != StatusCode::OK {
            return resp;
        }
        let open = self.open(Kind::Sse);
        resp.map(|inner| body::boxed(Tracked { inner, _open: open }))
    }

    /// Hook for the rate limiter: a request, connection or frame refused
    /// by `limit`, one of [`RATE_LIMITS`] (anything else counts as
    /// `other`).
    pub fn rate_limited(&self, limit: &'static str) {
        self.rate_limited[index_of(RATE_LIMITS, limit)].fetch_add(1, Ordering::Relaxed);
    }
}

fn index_of(list: &[&str], value: &str) -> usize {
    list.iter().position(|&v| v == value).unwrap_or(list.len())
}

/// An open connection, counted until dropped.
#[derive(Debug)]
pub struct Open {
    metrics: Arc<Metrics>,
    kind: Kind,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.metrics.open[self.kind as usize].fetch_sub(1, Ordering::Relaxed);
    }
}

/// A listening socket, counted until dropped.
#[derive(Debug)]
pub struct Listening(Arc<Metrics>);

impl Drop for Listening {
    fn drop(&mut self) {
        self.0.listening.fetch_sub(1, Ordering::Relaxed);
    }
}

pin_project_lite::pin_project! {
    /// A body that holds a connection guard while it is being sent.
    struct Tracked {
        #[pin]
        inner: Body,
        _open: Open,
    }
}

impl http_body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = body::BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The hub's counters (`live::hub::Stats`).
#[derive(Debug)]
pub struct LiveStats {
    /// Copies of messages queued to local connections, by key class.
    pub delivered: ClassCounter,
    /// Connections cut off because their queue was full (websocket 1013,
    /// SSE stream ended).
    pub slow_consumers: AtomicU64,
    /// Broker messages dropped because their data is not JSON.
    pub not_json: AtomicU64,
    /// Time from a message's id to its arrival at the hub ([`Self::arrived`]).
    pub delivery_lag: Histogram,
    /// Subscribes with `since` that the history served, and that it could
    /// not (a gap: upstream recovery or `recovered: false`).
    pub history_hits: AtomicU64,
    pub history_misses: AtomicU64,
}

impl Default for LiveStats {
    fn default() -> Self {
        LiveStats {
            delivered: ClassCounter::default(),
            slow_consumers: AtomicU64::new(0),
            not_json: AtomicU64::new(0),
            delivery_lag: Histogram::new(histogram::DELIVERY),
            history_hits: AtomicU64::new(0),
            history_misses: AtomicU64::new(0),
        }
    }
}

/// Lags further than this either way are not a time-ordered id's (an
/// outside publisher's id that happens to parse) and are not recorded.
const MAX_LAG: Duration = Duration::from_secs(3600);

impl LiveStats {
    /// Records the lag of a message reaching the hub from the broker: now
    /// minus the time in its id, when the id is olive's (time-ordered,
    /// millisecond resolution). A clock a little ahead on the publishing
    /// node counts as no lag.
    pub fn arrived(&self, id: &str) {
        let Ok(id) = MessageId::parse(id) else { return };
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let made = Duration::from_millis(id.timestamp_ms());
        let lag = now.saturating_sub(made);
        if lag < MAX_LAG && made.saturating_sub(now) < MAX_LAG {
            self.delivery_lag.observe(lag);
        }
    }

    /// Counts a resume from history (`true`) or a gap.
    pub fn resumed(&self, from_history: bool) {
        let counter = if from_history { &self.history_hits } else { &self.history_misses };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// How an upstream's requests went (`Upstream::stats`).
#[derive(Debug)]
pub struct UpstreamStats {
    /// From the first attempt to send (after the request body was
    /// buffered) to the response head, retries included.
    pub response: Histogram,
    errors: [AtomicU64; 3],
}

/// Why a proxied request got no response from its upstream.
#[derive(Debug, Clone, Copy)]
pub enum UpstreamError {
    /// No address could be connected (502).
    Connect = 0,
    /// No response head within `header_timeout` (504).
    Timeout = 1,
    /// The connection failed after the request was sent (502).
    Failed = 2,
}

const UPSTREAM_ERRORS: [&str; 3] = ["connect", "timeout", "failed"];

impl Default for UpstreamStats {
    fn default() -> Self {
        UpstreamStats { response: Histogram::new(histogram::LATENCY), errors: Default::default() }
    }
}

impl UpstreamStats {
    pub fn error(&self, error: UpstreamError) {
        self.errors[error as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// `GET /metrics`: every metric, read now.
pub fn render(app: &App) -> Response<Body> {
    let mut resp = Response::new(body::full(scrape(app)));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(text::CONTENT_TYPE));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn load(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

fn scrape(app: &App) -> String {
    let m = &app.metrics;
    let live = &app.hub.stats;
    let site = app.site();
    let mut t = Text::new();

    t.family("olive_build_info", Type::Gauge, "Always 1; the version label says which olive runs.");
    t.sample("olive_build_info", &[("version", env!("CARGO_PKG_VERSION"))], 1);

    t.family(
        "olive_http_requests_total",
        Type::Counter,
        "Requests answered, by route (the configured path prefix, or admin, redirect, unrouted) and status class. Series appear with their first request.",
    );
    for (route, counts) in m.requests.snapshot() {
        for (class, n) in routes::STATUS_CLASSES.iter().zip(counts) {
            if n > 0 {
                t.sample("olive_http_requests_total", &[("route", route), ("status", class)], n);
            }
        }
    }
    t.family(
        "olive_config_reloads_total",
        Type::Counter,
        "Configuration reloads (SIGHUP) by result: ok (applied), error (refused: the running configuration stays).",
    );
    for (result, count) in ["ok", "error"].iter().zip(&m.reloads) {
        t.sample("olive_config_reloads_total", &[("result", result)], load(count));
    }

    t.family(
        "olive_connections",
        Type::Gauge,
        "Open connections by kind: http (served by the HTTP server, TLS or not), websocket (live sessions), sse (live streams, whose connections also count as http), tunnel (websocket tunnels to an upstream).",
    );
    for (kind, open) in KINDS.iter().zip(&m.open) {
        t.sample("olive_connections", &[("kind", kind)], open.load(Ordering::Relaxed));
    }

    t.family("olive_listeners", Type::Gauge, "Listening sockets accepting connections.");
    t.sample("olive_listeners", &[], m.listening.load(Ordering::Relaxed));

    t.family(
        "olive_tls_handshakes_total",
        Type::Counter,
        "TLS handshakes on https listeners, by result (ok, failed, timeout).",
    );
    for (result, count) in HANDSHAKES.iter().zip(&m.handshakes) {
        t.sample("olive_tls_handshakes_total", &[("result", result)], load(count));
    }

    t.family(
        "olive_upstream_response_seconds",
        Type::Histogram,
        "Time from sending a proxied request (after its body was buffered) to the upstream's response head, retries included; requests that got no response are not observed.",
    );
    for u in &site.upstreams {
        t.histogram("olive_upstream_response_seconds", &[("upstream", u.name())], &u.stats.response);
    }
    t.family(
        "olive_upstream_errors_total",
        Type::Counter,
        "Proxied requests that got no response, by upstream and error: connect (no address could be connected, 502), timeout (no response head in time, 504), failed (the connection failed after sending, 502).",
    );
    for u in &site.upstreams {
        for (error, count) in UPSTREAM_ERRORS.iter().zip(&u.stats.errors) {
            t.sample("olive_upstream_errors_total", &[("upstream", u.name()), ("error", error)], load(count));
        }
    }
    t.family(
        "olive_upstream_addresses_failing",
        Type::Gauge,
        "Addresses of an upstream left out of rotation by passive health checks.",
    );
    for u in &site.upstreams {
        t.sample("olive_upstream_addresses_failing", &[("upstream", u.name())], u.failing());
    }

    let interest = app.hub.interest();
    t.family(
        "olive_live_subscriptions",
        Type::Gauge,
        "Live subscriptions (keys and patterns) held by this node's connections.",
    );
    t.sample("olive_live_subscriptions", &[], interest.iter().map(|(_, n)| n).sum::<usize>());
    t.family(
        "olive_live_bound_patterns",
        Type::Gauge,
        "Distinct keys and patterns this node is bound to in the broker.",
    );
    t.sample("olive_live_bound_patterns", &[], interest.len());

    t.family(
        "olive_live_messages_published_total",
        Type::Counter,
        "Messages published through olive (websocket, HTTP) and confirmed by the broker, by key class (first three key segments; at most 100 classes, then other).",
    );
    for (class, n) in m.published.snapshot() {
        t.sample("olive_live_messages_published_total", &[("class", class)], n);
    }
    t.family(
        "olive_live_publish_failures_total",
        Type::Counter,
        "Publishes through olive the broker did not take (the publisher was told unavailable).",
    );
    t.sample("olive_live_publish_failures_total", &[], load(&m.publish_failures));
    t.family(
        "olive_live_messages_delivered_total",
        Type::Counter,
        "Message copies queued to this node's live connections (one per receiving connection), by key class (at most 100 classes, then other).",
    );
    for (class, n) in live.delivered.snapshot() {
        t.sample("olive_live_messages_delivered_total", &[("class", class)], n);
    }
    t.family(
        "olive_live_slow_consumer_disconnects_total",
        Type::Counter,
        "Live connections cut off because their outbound queue was full (websocket close 1013, SSE stream ended); the message that did not fit and all later ones are dropped for that connection.",
    );
    t.sample("olive_live_slow_consumer_disconnects_total", &[], load(&live.slow_consumers));
    t.family(
        "olive_live_messages_dropped_total",
        Type::Counter,
        "Messages from the broker dropped before fan-out, by reason (not_json: the data is not JSON).",
    );
    t.sample("olive_live_messages_dropped_total", &[("reason", "not_json")], load(&live.not_json));
    t.family(
        "olive_live_delivery_lag_seconds",
        Type::Histogram,
        "Time from a message's publish to its arrival at this node's hub for fan-out: now minus the time in its olive message id (made at publish, millisecond resolution; across nodes it includes clock skew). Messages whose id is not olive's are not observed.",
    );
    t.histogram("olive_live_delivery_lag_seconds", &[], &live.delivery_lag);
    t.family(
        "olive_live_history_lookups_total",
        Type::Counter,
        "Subscribes with a resume point: hit when the history replayed what was missed, miss when it had a gap.",
    );
    t.sample("olive_live_history_lookups_total", &[("result", "hit")], load(&live.history_hits));
    t.sample("olive_live_history_lookups_total", &[("result", "miss")], load(&live.history_misses));

    let broker = app.hub.broker();
    let kind = match app.config.live.broker {
        BrokerKind::Memory => "memory",
        BrokerKind::Amqp => "amqp",
    };
    t.family(
        "olive_broker_connected",
        Type::Gauge,
        "1 while the broker is connected and able to publish, else 0.",
    );
    t.sample("olive_broker_connected", &[("broker", kind)], u8::from(*broker.ready().borrow()));
    t.family(
        "olive_broker_reconnects_total",
        Type::Counter,
        "Connections to the broker re-established after a loss.",
    );
    t.sample("olive_broker_reconnects_total", &[], broker.reconnects());

    t.family(
        "olive_rate_limited_total",
        Type::Counter,
        "Requests, connections, sessions, frames, publishes or subscriptions refused by a limit, by limit.",
    );
    for (limit, count) in RATE_LIMITS.iter().chain([&OTHER]).zip(m.rate_limited.iter()) {
        let n = load(count);
        if n > 0 || *limit != OTHER {
            t.sample("olive_rate_limited_total", &[("limit", limit)], n);
        }
    }
    let auth = &app.auth.stats;
    t.family(
        "olive_token_rejections_total",
        Type::Counter,
        "Requests and live sessions refused for their credentials (401, or 403 for origin), by reason.",
    );
    for (reason, count) in [
        ("too_large", &auth.too_large),
        ("malformed", &auth.malformed),
        ("unknown_kid", &auth.unknown_kid),
        ("algorithm", &auth.algorithm),
        ("signature", &auth.signature),
        ("expired", &auth.expired),
        ("not_yet_valid", &auth.not_yet_valid),
        ("audience", &auth.audience),
        ("issuer", &auth.issuer),
        ("missing_claim", &auth.missing_claim),
        ("bad_grants", &auth.bad_grants),
        ("revoked", &auth.revoked),
        ("origin", &auth.origin),
        ("admin", &auth.admin),
    ] {
        t.sample("olive_token_rejections_total", &[("reason", reason)], load(count));
    }
    t.family(
        "olive_live_forbidden_total",
        Type::Counter,
        "Live actions (subscribe, publish, presence) refused for want of a grant (error forbidden, or 403).",
    );
    t.sample("olive_live_forbidden_total", &[], load(&auth.forbidden));
    t.family(
        "olive_live_sessions_expired_total",
        Type::Counter,
        "Websocket sessions closed (4401) and SSE streams ended because their token expired or was revoked.",
    );
    t.sample("olive_live_sessions_expired_total", &[], load(&auth.sessions_expired));
    t.family(
        "olive_revocations_total",
        Type::Counter,
        "Revocations (olive.control.revoke.USER) applied on this node.",
    );
    t.sample("olive_revocations_total", &[], load(&auth.revocations));
    t.family(
        "olive_django_sessions_refused_total",
        Type::Counter,
        "Django session cookies that did not verify (bad signature, expired), taken as anonymous.",
    );
    t.sample("olive_django_sessions_refused_total", &[], load(&auth.sessions_refused));
    t.family(
        "olive_amqp_logins_refused_total",
        Type::Counter,
        "RabbitMQ logins the HTTP auth backend refused, by reason (refused: bad token; users_full: auth.amqp.max_users reached).",
    );
    t.sample("olive_amqp_logins_refused_total", &[("reason", "refused")], load(&auth.amqp_refused));
    t.sample("olive_amqp_logins_refused_total", &[("reason", "users_full")], load(&auth.amqp_users_full));
    t.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hooks_keep_their_labels_bounded() {
        let m = Metrics::new();
        m.rate_limited("http_per_ip");
        m.rate_limited("bogus");
        assert_eq!(load(&m.rate_limited[0]), 1);
        assert_eq!(load(&m.rate_limited[RATE_LIMITS.len()]), 1);
    }

    #[test]
    fn lag_is_recorded_for_olive_ids_only() {
        let s = LiveStats::default();
        s.arrived(&MessageId::new().to_string());
        s.arrived("not-an-olive-id");
        s.arrived(&MessageId::from_parts(1, 0).to_string()); // 1970: not a real lag
        let snap = s.delivery_lag.snapshot();
        assert_eq!(snap.buckets.iter().sum::<u64>(), 1);
    }
}
