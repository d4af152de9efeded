//! The per-request entry point: decides the route and hands the request to
//! the proxy, a tunnel or the static file server, then finishes the response
//! (HSTS, request id, access log).
//!
//! Every error a handler can produce becomes a response here, in one place.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use arc_swap::ArcSwap;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::sync::OwnedSemaphorePermit;

use super::site::Site;
use crate::limit::shares::IpSlot;
use tokio_util::sync::CancellationToken;

use crate::auth::{self, Auth, Refusal};
use crate::body::{self, Body};
use crate::broker::amqp::AmqpBroker;
use crate::broker::memory::MemoryBroker;
use crate::broker::{Broker, Message};
use crate::config::BrokerKind;
use crate::config::{Action, Config, ListenerKind};
use crate::limit::{self, Client, Limited, RateLimits};
use crate::live::hub::{Hub, ShardInbox};
use crate::live::recover::{Recoverer, Target};
use crate::live::ws::Session;
use crate::live::{history, presence};
use crate::ops::access::{self, AccessLog};
use crate::ops::metrics::{self, Kind, Metered, Metrics, RouteLabel};
use crate::proxy::{self, ClientInfo, ProxyError, tunnel};
use crate::router::Decision;
use crate::static_files;

/// Everything a request needs, shared by all connections.
pub struct App {
    /// The configuration olive started with. Routes, upstreams and the
    /// other fields a reload changes are read from [`App::site`].
    pub config: Arc<Config>,
    /// Routes and upstreams, replaced whole by a reload.
    site: ArcSwap<Site>,
    /// Worker threads serving connections (each upstream keeps one pool
    /// per worker).
    pub workers: usize,
    /// The live hub (websocket and SSE subscriptions, publishing).
    pub hub: Arc<Hub>,
    /// Asks upstreams to fill reconnect gaps the history cannot.
    pub recoverer: Arc<Recoverer>,
    /// Tokens, grants, origins, the admin token, RabbitMQ's auth backend.
    pub auth: Arc<Auth>,
    /// `[rate_limits]`.
    pub rate: Arc<RateLimits>,
    /// Counters for `/metrics` (the hub, the upstreams and auth keep their
    /// own).
    pub metrics: Arc<Metrics>,
    /// Cancelled when olive starts draining: tunnels and live sessions close.
    pub shutdown: CancellationToken,
    /// Upgraded connections (tunnels, live sessions), which hyper no longer
    /// tracks: the drain waits for them to say goodbye.
    pub sessions: tokio_util::task::TaskTracker,
    /// Per listener, the Strict-Transport-Security value when HSTS is on,
    /// built once instead of on every response.
    hsts: Vec<Option<HeaderValue>>,
}

impl App {
    /// The shared state, and the hub's tasks for the server to start.
    pub fn new(config: Arc<Config>, shutdown: CancellationToken) -> (App, HubTasks) {
        let workers = super::workers::count(config.server.workers);
        let (deliveries_tx, deliveries) = tokio::sync::mpsc::unbounded_channel();
        let broker: Arc<dyn Broker> = match (&config.live.broker, &config.amqp) {
            (BrokerKind::Amqp, Some(amqp)) => AmqpBroker::start(amqp.clone(), deliveries_tx),
            _ => Arc::new(MemoryBroker::new(deliveries_tx)),
        };
        let metrics = Arc::new(Metrics::new());
        let site = ArcSwap::from_pointee(Site::new(&config, &config, None, &metrics.requests, workers));
        let broker = Metered::wrap(broker, metrics.clone());
        let live = &config.live;
        let history = history::Limits {
            size: live.history_size,
            ttl: live.history_ttl,
            max_keys: live.history_max_keys,
            linger: live.history_linger,
        };
        let presence = presence::Limits {
            heartbeat: live.presence_heartbeat,
            ttl: live.presence_ttl,
            max_members: live.presence_max_members,
            count_interval: live.presence_count_interval,
        };
        let (hub, shards) = Hub::new(broker, workers, history, presence);
        let recoverer = Arc::new(Recoverer::new(live.recovery_timeout, live.recovery_max_bytes));
        let sessions = tokio_util::task::TaskTracker::new();
        let hsts = config
            .listeners
            .iter()
            .map(|l| {
                let value = format!("max-age={}; includeSubDomains", l.hsts?.as_secs());
                Some(HeaderValue::from_str(&value).expect("digits are a valid header value"))
            })
            .collect();
        let auth = Arc::new(Auth::new(&config.auth));
        let control = hub.take_control(&auth::revoke::pattern()).expect("a new hub");
        let rate = Arc::new(RateLimits::new(&config.rate_limits));
        let app =
            App { config, site, workers, hub, recoverer, auth, rate, metrics, shutdown, sessions, hsts };
        (app, HubTasks { deliveries, shards, control })
    }
}

impl App {
    /// The routes and upstreams now. Hold it for one request, not longer:
    /// a reload replaces it.
    pub fn site(&self) -> Arc<Site> {
        self.site.load_full()
    }

    /// Replaces the site (a reload); requests already routed finish with
    /// the one they have.
    pub fn replace_site(&self, site: Site) {
        self.site.store(Arc::new(site));
    }
}

/// The hub's long-running tasks, started by `Server::run`: the delivery
/// task anywhere, each shard on its own worker.
pub struct HubTasks {
    pub deliveries: tokio::sync::mpsc::UnboundedReceiver<Message>,
    pub shards: Vec<ShardInbox>,
    /// Control messages (revocations) for `auth::revoke::run`.
    pub control: tokio::sync::mpsc::UnboundedReceiver<Message>,
}

/// What an upgraded connection (a live session, a tunnel) takes from the
/// edge: the shutdown signal, the tracker the drain waits on, and the
/// connection's place under `limits.max_connections`, held for as long as
/// the session lives (hyper lets go of the connection at the upgrade),
/// with its count in `olive_connections`.
pub struct Upgrade {
    pub shutdown: CancellationToken,
    tracker: tokio_util::task::TaskTracker,
    slot: (Arc<Slot>, metrics::Open),
}

impl Upgrade {
    /// Runs the session, tracked for the drain, holding the slot.
    pub fn spawn<F>(self, session: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        use futures_util::FutureExt;
        let slot = self.slot;
        // `map`, not `async move { session.await; .. }`: an async block
        // keeps the captured future and the awaited one side by side, which
        // doubled every idle websocket's task.
        self.tracker.spawn(session.map(move |()| drop(slot)));
    }
}

/// Facts about the connection a request arrived on.
#[derive(Debug, Clone)]
pub struct Conn {
    /// Index into `Config::listeners`.
    pub listener: usize,
    pub peer: SocketAddr,
    /// The peer's address as text, formatted once per connection rather
    /// than once per request (it goes into X-Forwarded-For).
    pub peer_ip: HeaderValue,
    pub tls: bool,
    /// This connection's place under the connection limits.
    pub slot: Arc<Slot>,
}

/// A connection's places under `limits.max_connections` and
/// `limits.max_connections_per_ip`, released together when the connection
/// (or the session it was upgraded to) ends.
#[derive(Debug)]
pub struct Slot {
    _total: OwnedSemaphorePermit,
    _per_ip: IpSlot,
    /// The listener's count of open connections.
    open: Arc<AtomicUsize>,
}

impl Slot {
    pub fn new(total: OwnedSemaphorePermit, per_ip: IpSlot, open: Arc<AtomicUsize>) -> Slot {
        open.fetch_add(1, Ordering::Relaxed);
        Slot { _total: total, _per_ip: per_ip, open }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Conn {
    pub fn new(listener: usize, peer: SocketAddr, tls: bool, slot: Slot) -> Conn {
        let peer_ip =
            HeaderValue::from_str(&peer.ip().to_string()).expect("an address is a valid header value");
        Conn { listener, peer, peer_ip, tls, slot: Arc::new(slot) }
    }

    fn upgrade(&self, app: &App, kind: Kind) -> Upgrade {
        let slot = (self.slot.clone(), app.metrics.open(kind));
        Upgrade { shutdown: app.shutdown.clone(), tracker: app.sessions.clone(), slot }
    }
}

/// Serves one request.
pub async fn handle(app: Arc<App>, conn: Conn, req: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    let listener = &app.config.listeners[conn.listener];
    let site = app.site();
    let trusted = site.config.server.trusts(conn.peer.ip());
    let client_ip = limit::client_ip(conn.peer.ip(), req.headers(), &site.config.server);
    let request_id = request_id(&req, trusted);
    let host = request_host(&req).unwrap_or_default();
    let log = site.config.server.access_log.then(|| AccessLog::start(&req, conn.peer, &request_id, started));

    let mut route = RouteLabel::ADMIN;
    let mut resp = if let Err(refusal) = super::strict::check(&req) {
        route = RouteLabel::UNROUTED;
        malformed(refusal, req.version())
    } else if let (ListenerKind::Http | ListenerKind::Https, Err(limited)) = (
        listener.kind,
        RateLimits::check(&app.rate.http, &limit::ip_key(client_ip), &app.metrics, "http_per_ip"),
    ) {
        too_many(limited, "too many requests from your address\n")
    } else if let Some(port) = listener.redirect_https_port {
        route = RouteLabel::REDIRECT;
        redirect_to_https(&req, &host, port)
    } else if let Some(resp) = admin(&app, listener.kind, req.uri().path()) {
        resp
    } else if listener.kind == ListenerKind::Admin && req.uri().path() == "/olive/publish" {
        match app.auth.check_admin(req.headers()) {
            Ok(()) => {
                crate::live::publish::handle(&app.hub, req, app.config.live.max_frame_bytes, None).await
            }
            Err(refusal) => refused(&refusal),
        }
    } else if listener.kind == ListenerKind::Admin && req.uri().path().starts_with(auth::rabbit::PREFIX) {
        match app.auth.check_admin(req.headers()) {
            Ok(()) => auth::rabbit::handle(&app.auth, &app.config.live.amqp.exchange, req).await,
            Err(refusal) => refused(&refusal),
        }
    } else {
        let client = ClientInfo {
            peer: conn.peer.ip(),
            peer_text: conn.peer_ip.clone(),
            trusted,
            proto: if conn.tls { "https" } else { "http" },
            host,
            request_id: request_id.clone(),
            log_upstream: log.is_some(),
        };
        dispatch(&app, &site, &conn, req, &client, client_ip, &mut route).await
    };
    app.metrics.request(route, resp.status());

    let headers = resp.headers_mut();
    headers.insert(&proxy::headers::X_REQUEST_ID, request_id);
    if let Some(hsts) = &app.hsts[conn.listener] {
        headers.insert(header::STRICT_TRANSPORT_SECURITY, hsts.clone());
    }
    match log {
        Some(log) => access::finish(log, resp),
        None => resp,
    }
}

/// The admin listener's own endpoints that need no request body.
fn admin(app: &Arc<App>, kind: ListenerKind, path: &str) -> Option<Response<Body>> {
    if kind != ListenerKind::Admin {
        return None;
    }
    match path {
        "/healthz" => Some(crate::ops::health::healthz()),
        "/readyz" => Some(crate::ops::health::readyz(app)),
        "/metrics" => Some(metrics::render(app)),
        "/status" => Some(crate::ops::status::page()),
        "/status/events" => Some(crate::ops::status::events(app.clone())),
        _ => None,
    }
}

/// Routes and serves a request; `label` is set to the route's metrics
/// label once one is chosen.
async fn dispatch(
    app: &App,
    site: &Site,
    conn: &Conn,
    req: Request<Incoming>,
    client: &ClientInfo,
    client_ip: std::net::IpAddr,
    label: &mut RouteLabel,
) -> Response<Body> {
    // A Uri clone shares its bytes: the route's rest borrows from it while
    // the request itself moves on to a handler.
    let uri = req.uri().clone();
    let version = req.version();
    *label = RouteLabel::UNROUTED;
    let route = match site.router.route(conn.listener, strip_port(&client.host), uri.path()) {
        Decision::Route { route, rest, index } => {
            *label = site.route_label(index);
            (route, rest)
        }
        Decision::NoPath => return text(StatusCode::NOT_FOUND, "not found\n"),
        Decision::NoHost => return status_page(site.config.unmatched_status),
    };
    if crate::live::ws::is_extended_connect(&req) && !matches!(route.0.action, Action::Live { .. }) {
        // An upstream would read it as an HTTP/1.1 CONNECT (RFC 8441 has
        // no HTTP/1.1 form); websocket routes to upstreams are HTTP/1.1.
        return text(StatusCode::NOT_IMPLEMENTED, "websockets over HTTP/2 are served on live routes only\n");
    }
    let limits = &app.config.limits;
    let result = match &route.0.action {
        Action::Live { recovery_url } => {
            if !matches!(route.1, "/ws" | "/sse" | "/publish") {
                return text(StatusCode::NOT_FOUND, "not found\n");
            }
            let opens_session = route.1 != "/publish";
            let ip = limit::ip_key(client_ip);
            if opens_session
                && let Err(limited) =
                    RateLimits::check(&app.rate.connects, &ip, &app.metrics, "connects_per_ip")
            {
                return too_many(limited, "too many connection attempts from your address\n");
            }
            let identity = match app.auth.authenticate(req.headers(), req.uri()) {
                Ok(identity) => identity,
                Err(refusal) => return refused(&refusal),
            };
            let user = identity.user.as_ref().map(|u| Arc::<str>::from(u.id.as_str()));
            let share = match (&user, &app.rate.sessions) {
                (Some(user), Some(sessions)) if opens_session => match sessions.try_take(user.clone()) {
                    Some(share) => Some(share),
                    None => {
                        app.metrics.rate_limited("sessions_per_user");
                        return text(
                            StatusCode::TOO_MANY_REQUESTS,
                            "too many live sessions open for this user\n",
                        );
                    }
                },
                _ => None,
            };
            let who = Session {
                identity,
                auth: app.auth.clone(),
                client: user.map_or(Client::Ip(ip), Client::User),
                limits: app.rate.clone(),
                metrics: app.metrics.clone(),
                share,
            };
            let recovery = recovery_url
                .as_ref()
                .map(|url| Target { recoverer: app.recoverer.clone(), url: url.clone() });
            let live = &app.config.live;
            return match route.1 {
                "/ws" => {
                    let upgrade = conn.upgrade(app, Kind::Websocket);
                    crate::live::ws::upgrade(&app.hub, live, req, upgrade, recovery, who)
                }
                "/sse" => app.metrics.track_sse(
                    crate::live::sse::serve(&app.hub, live, req, app.shutdown.clone(), recovery, who).await,
                ),
                _ => crate::live::publish::handle(&app.hub, req, live.max_frame_bytes, Some(&who)).await,
            };
        }
        Action::Static(dir) => {
            let (parts, _) = req.into_parts();
            return static_files::serve(&parts, route.1, dir).await;
        }
        Action::Proxy { upstream, tunnel: Some(idle), .. } if tunnel::is_websocket_upgrade(&req) => {
            tunnel::open(&site.upstreams[*upstream], req, client, *idle, conn.upgrade(app, Kind::Tunnel))
                .await
        }
        Action::Proxy { upstream, compress, .. } => {
            let upstream = &site.upstreams[*upstream];
            if *compress {
                crate::compress::forward(upstream, req, client, limits).await
            } else {
                proxy::forward(upstream, req, client, limits).await
            }
        }
    };
    result.unwrap_or_else(|e| proxy_error(&e, version))
}

/// A request over a rate: 429 with `Retry-After` (RFC 6585 §4).
fn too_many(limited: Limited, message: &'static str) -> Response<Body> {
    let mut resp = text(StatusCode::TOO_MANY_REQUESTS, message);
    resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(limited.retry_after_secs()));
    resp
}

/// A request refused by access control: 401 with a Bearer challenge
/// (RFC 6750 §3) or 403, and the reason in plain text.
fn refused(refusal: &Refusal) -> Response<Body> {
    let status = StatusCode::from(refusal);
    let mut resp = Response::new(body::full(format!("{refusal}\n")));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status == StatusCode::UNAUTHORIZED {
        h.insert(header::WWW_AUTHENTICATE, auth::challenge(refusal));
    }
    resp
}

fn proxy_error(e: &ProxyError, version: http::Version) -> Response<Body> {
    let status = e.status();
    if status.is_server_error() {
        tracing::warn!(error = %e, "proxy error");
    }
    let mut resp = status_page(status);
    let unread = matches!(status, StatusCode::PAYLOAD_TOO_LARGE | StatusCode::REQUEST_TIMEOUT);
    if unread && version <= http::Version::HTTP_11 {
        // The rest of the body is still on the wire: tell the client this
        // connection ends here (RFC 9112 §9.6) rather than let it reuse it.
        resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// A request refused before routing; on HTTP/1 the connection ends with
/// it, since a client that sent one malformed head may be trying to
/// desynchronise the next.
fn malformed(refusal: super::strict::Refusal, version: http::Version) -> Response<Body> {
    tracing::debug!(%refusal, "request refused");
    let mut resp = status_page(refusal.status());
    if version <= http::Version::HTTP_11 {
        resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// A small HTML page for an error status, in the spirit of nginx's.
pub fn status_page(status: StatusCode) -> Response<Body> {
    let reason = status.canonical_reason().unwrap_or("");
    let html = format!(
        "<!doctype html>\n<html><head><title>{code} {reason}</title></head>\n<body><h1>{code} {reason}</h1><hr><p>olive</p></body></html>\n",
        code = status.as_u16()
    );
    let mut resp = Response::new(body::full(html));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

pub fn text(status: StatusCode, message: &'static str) -> Response<Body> {
    let mut resp = Response::new(body::full(message));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}

fn redirect_to_https<B>(req: &Request<B>, host: &str, port: u16) -> Response<Body> {
    let host = strip_port(host);
    let authority = if port == 443 { host.to_owned() } else { format!("{host}:{port}") };
    let path = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let location = format!("https://{authority}{path}");
    let mut resp = Response::new(body::empty());
    // 308 keeps the method and body, unlike 301 (RFC 9110 §15.4.9).
    *resp.status_mut() = StatusCode::PERMANENT_REDIRECT;
    match HeaderValue::from_str(&location) {
        Ok(v) => {
            resp.headers_mut().insert(header::LOCATION, v);
            resp
        }
        Err(_) => status_page(StatusCode::BAD_REQUEST),
    }
}

/// The request's host: `Host`, or the URI authority (HTTP/2 `:authority`).
fn request_host<B>(req: &Request<B>) -> Option<String> {
    if let Some(authority) = req.uri().authority() {
        return Some(authority.as_str().to_owned());
    }
    req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).map(str::to_owned)
}

/// `example.com:8443` → `example.com`; `[::1]:8443` → `[::1]`.
fn strip_port(host: &str) -> &str {
    match host.rfind(':') {
        Some(i) if !host[i..].contains(']') => &host[..i],
        _ => host,
    }
}

/// The id this request is logged and forwarded under: a trusted proxy's, or
/// a fresh random one.
fn request_id<B>(req: &Request<B>, trusted: bool) -> HeaderValue {
    if trusted
        && let Some(id) = req.headers().get(&proxy::headers::X_REQUEST_ID)
        && id.len() <= 128
    {
        return id.clone();
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let random = fastrand::u128(..);
    let id: [u8; 32] = std::array::from_fn(|i| HEX[(random >> (124 - 4 * i)) as usize & 0xf]);
    HeaderValue::from_bytes(&id).expect("hex is a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_port_table() {
        for (input, want) in [
            ("example.com", "example.com"),
            ("example.com:8443", "example.com"),
            ("[::1]:8443", "[::1]"),
            ("[::1]", "[::1]"),
            ("", ""),
        ] {
            assert_eq!(strip_port(input), want);
        }
    }
}
