//! Configuration: the TOML file ([`file`]) and the validated runtime
//! [`Config`] built from it.
//!
//! Validation reports every problem at once, each with the path of the field
//! (`route[2].proxy.upstream`), so `olive check` works like `nginx -t` and an
//! operator fixes a file in one pass. Relative paths in the file are taken
//! relative to the file's own directory, so olive starts the same from any
//! working directory.

mod amqp;
mod auth;
pub mod file;
mod limits;

use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use ipnet::IpNet;

pub use amqp::Amqp;
pub use auth::{Auth, Secret, TokenKey, normalize_origin};
pub use file::{BrokerKind, Limits, ListenerKind, Live, LogFormat, OversizeBody, RateLimits};

/// The validated configuration olive runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this came from (for messages and reload).
    pub source: PathBuf,
    pub server: Server,
    pub limits: Limits,
    pub listeners: Vec<Listener>,
    pub certificates: Vec<Certificate>,
    pub upstreams: Vec<Upstream>,
    pub routes: Vec<Route>,
    pub unmatched_status: StatusCode,
    /// Shared by every live session (one pointer each, not a copy).
    pub live: Arc<Live>,
    /// The validated `[live.amqp]` table: `Some` exactly when
    /// `live.broker = "amqp"` (its URL may name an environment variable
    /// that a memory-broker setup never sets).
    pub amqp: Option<Amqp>,
    /// Who may do what on the live hub.
    pub auth: Auth,
    /// Requests, connections, frames and publishes per client.
    pub rate_limits: RateLimits,
}

#[derive(Debug, Clone)]
pub struct Server {
    pub drain_timeout: Duration,
    /// At most `drain_timeout`.
    pub drain_first_request: Duration,
    pub log_format: LogFormat,
    pub log_level: String,
    pub access_log: bool,
    pub trusted_proxies: Vec<IpNet>,
    pub workers: usize,
    pub reuse_port: bool,
}

impl Server {
    /// Whether forwarding headers from this peer are believed.
    pub fn trusts(&self, peer: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(&peer))
    }
}

#[derive(Debug, Clone)]
pub struct Listener {
    pub name: String,
    pub kind: ListenerKind,
    pub bind: SocketAddr,
    pub redirect_https_port: Option<u16>,
    /// `Strict-Transport-Security` max-age, when HSTS is on.
    pub hsts: Option<Duration>,
    /// Trusted proxies' connections start with a PROXY protocol header.
    pub proxy_protocol: bool,
}

#[derive(Debug, Clone)]
pub struct Certificate {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub server_names: Vec<String>,
    pub default: bool,
    pub self_signed_if_missing: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl fmt::Display for UpstreamAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamAddr::Tcp(addr) => write!(f, "{addr}"),
            UpstreamAddr::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Upstream {
    pub name: String,
    pub addresses: Vec<UpstreamAddr>,
    pub connect_timeout: Duration,
    pub header_timeout: Duration,
    pub total_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle: usize,
    pub max_fails: u32,
    pub fail_timeout: Duration,
    pub retries: u32,
}

#[derive(Debug, Clone)]
pub struct Route {
    /// Listener names; empty means every public listener.
    pub listeners: Vec<String>,
    pub hosts: Vec<HostPattern>,
    pub path: String,
    pub action: Action,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// `example.com`, compared case-insensitively.
    Exact(String),
    /// `*.example.com`: any name ending in `.example.com`.
    Suffix(String),
}

impl HostPattern {
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(name) => host.eq_ignore_ascii_case(name),
            HostPattern::Suffix(suffix) => {
                host.len() > suffix.len()
                    && host.as_bytes()[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
            }
        }
    }
}

#[derive(Debug, Clone)]
pub enum Action {
    Proxy {
        /// Index into [`Config::upstreams`].
        upstream: usize,
        compress: bool,
        /// `Some(idle timeout)` when websocket upgrades are tunnelled.
        tunnel: Option<Duration>,
    },
    Static(StaticDir),
    /// The live hub's websocket and SSE endpoints under the route's path.
    Live {
        recovery_url: Option<String>,
    },
}

#[derive(Debug, Clone)]
pub struct StaticDir {
    pub root: PathBuf,
    pub cache_control: String,
    pub precompressed: bool,
    pub index: Option<String>,
}

/// One problem found in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path of the field, e.g. `route[1].proxy.upstream`.
    pub field: String,
    pub message: String,
}

/// Everything wrong with a configuration file.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub source_file: PathBuf,
    pub errors: Vec<FieldError>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        write!(f, "{}: {n} error{}", self.source_file.display(), if n == 1 { "" } else { "s" })?;
        for e in &self.errors {
            write!(f, "\n  {}: {}: {}", self.source_file.display(), e.field, e.message)?;
        }
        Ok(())
    }
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let fail = |field: &str, message: String| ConfigError {
            source_file: path.to_owned(),
            errors: vec![FieldError { field: field.into(), message }],
        };
        let text = std::fs::read_to_string(path).map_err(|e| fail("(file)", e.to_string()))?;
        Self::parse(&text, path)
    }

    /// Validates configuration text; `path` names it in errors and anchors
    /// relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        Self::parse_with_env(text, path, &|name| std::env::var(name).ok())
    }

    /// [`Config::parse`], reading environment variables (`url_env`)
    /// through `env`, so tests pass a map instead of changing the process
    /// environment.
    pub fn parse_with_env(
        text: &str,
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let raw: file::File = toml::from_str(text)
            .map_err(|e| ConfigError { source_file: path.to_owned(), errors: vec![toml_error(&e, text)] })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut v = Validator { base, env, errors: Vec::new() };
        let config = v.config(raw, path);
        if v.errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError { source_file: path.to_owned(), errors: v.errors })
        }
    }

    pub fn upstream(&self, name: &str) -> Option<usize> {
        self.upstreams.iter().position(|u| u.name == name)
    }
}

/// A syntax or type error, located by line and column.
fn toml_error(e: &toml::de::Error, text: &str) -> FieldError {
    let field = match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}")
        }
        None => "(file)".into(),
    };
    FieldError { field, message: e.message().trim().to_owned() }
}

struct Validator<'a> {
    base: &'a Path,
    env: &'a dyn Fn(&str) -> Option<String>,
    errors: Vec<FieldError>,
}

impl Validator<'_> {
    fn error(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError { field: field.into(), message: message.into() });
    }

    fn path(&self, p: PathBuf) -> PathBuf {
        if p.is_absolute() { p } else { self.base.join(p) }
    }

    fn config(&mut self, raw: file::File, source: &Path) -> Config {
        let server = self.server(raw.server);
        self.limits(&raw.limits);
        let listeners: Vec<Listener> =
            raw.listeners.into_iter().enumerate().map(|(i, l)| self.listener(i, l)).collect();
        let certificates: Vec<Certificate> = raw
            .certificates
            .into_iter()
            .map(|c| Certificate {
                cert: self.path(c.cert),
                key: self.path(c.key),
                server_names: c.server_names,
                default: c.default,
                self_signed_if_missing: c.self_signed_if_missing,
            })
            .collect();
        self.cross_check_listeners(&listeners, &certificates);
        for (i, l) in listeners.iter().enumerate() {
            if l.proxy_protocol && server.trusted_proxies.is_empty() {
                let message = "only trusted proxies send a PROXY header: set server.trusted_proxies";
                self.error(format!("listener[{i}].proxy_protocol"), message);
            }
        }
        let upstreams: Vec<Upstream> =
            raw.upstreams.into_iter().enumerate().map(|(i, u)| self.upstream(i, u)).collect();
        for (i, u) in upstreams.iter().enumerate() {
            if upstreams[..i].iter().any(|o| o.name == u.name) {
                self.error(format!("upstream[{i}].name"), format!("duplicate upstream name {:?}", u.name));
            }
        }
        let routes: Vec<Route> = raw
            .routes
            .into_iter()
            .enumerate()
            .filter_map(|(i, r)| self.route(i, r, &upstreams, &listeners))
            .collect();
        let unmatched_status = match raw.router.unmatched_status {
            None => StatusCode::MISDIRECTED_REQUEST,
            Some(code) => match StatusCode::from_u16(code) {
                Ok(s) if s.is_client_error() || s.is_server_error() => s,
                _ => {
                    self.error("router.unmatched_status", format!("{code} is not a 4xx or 5xx status"));
                    StatusCode::MISDIRECTED_REQUEST
                }
            },
        };
        self.presence(&raw.live);
        let amqp = (raw.live.broker == BrokerKind::Amqp).then(|| self.amqp(&raw.live.amqp));
        let auth = self.auth(raw.auth);
        self.rate_limits(&raw.rate_limits);
        let mut live = raw.live;
        // The other half of the drain is for close frames and requests.
        live.reconnect_spread = live.reconnect_spread.min(server.drain_timeout / 2);
        Config {
            source: source.to_owned(),
            server,
            limits: raw.limits,
            listeners,
            certificates,
            upstreams,
            routes,
            unmatched_status,
            live: Arc::new(live),
            amqp,
            auth,
            rate_limits: raw.rate_limits,
        }
    }

    fn rate_limits(&mut self, r: &RateLimits) {
        for (name, rate, burst) in r.rates() {
            if rate > 0 && burst == 0 {
                self.error(
                    format!("rate_limits.{name}"),
                    "needs a burst of at least 1 (0 turns the rate off)",
                );
            }
        }
        if r.tracked_clients == 0 {
            self.error("rate_limits.tracked_clients", "must be greater than 0");
        }
    }

    fn server(&mut self, s: file::Server) -> Server {
        let mut trusted = Vec::new();
        for (i, t) in s.trusted_proxies.iter().enumerate() {
            let parsed = t.parse::<IpNet>().or_else(|_| t.parse::<IpAddr>().map(IpNet::from));
            match parsed {
                Ok(net) => trusted.push(net),
                Err(_) => self.error(
                    format!("server.trusted_proxies[{i}]"),
                    format!("{t:?} is not an address or CIDR"),
                ),
            }
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&s.log_level) {
            self.error("server.log_level", format!("not a tracing filter: {e}"));
        }
        Server {
            drain_timeout: s.drain_timeout,
            drain_first_request: s.drain_first_request.min(s.drain_timeout),
            log_format: s.log_format,
            log_level: s.log_level,
            access_log: s.access_log,
            trusted_proxies: trusted,
            workers: s.workers,
            reuse_port: s.reuse_port,
        }
    }

    fn presence(&mut self, l: &Live) {
        for (field, value) in [
            ("live.presence_heartbeat", l.presence_heartbeat),
            ("live.presence_count_interval", l.presence_count_interval),
        ] {
            if value.is_zero() {
                self.error(field, "must be greater than 0");
            }
        }
        // A ttl within one heartbeat would expire live nodes between beats.
        if l.presence_ttl <= l.presence_heartbeat {
            self.error("live.presence_ttl", "must be longer than live.presence_heartbeat");
        }
    }

    fn listener(&mut self, i: usize, l: file::Listener) -> Listener {
        let field = |f: &str| format!("listener[{i}].{f}");
        let bind = match l.bind.parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                self.error(field("bind"), format!("{:?} is not ip:port", l.bind));
                SocketAddr::from(([127, 0, 0, 1], 0))
            }
        };
        if l.redirect_https_port.is_some() && l.kind != ListenerKind::Http {
            self.error(field("redirect_https_port"), "only plain http listeners redirect");
        }
        if l.hsts && l.kind != ListenerKind::Https {
            self.error(field("hsts"), "HSTS is sent only over https");
        }
        Listener {
            name: l.name,
            kind: l.kind,
            bind,
            redirect_https_port: l.redirect_https_port,
            hsts: l.hsts.then_some(l.hsts_max_age),
            proxy_protocol: l.proxy_protocol,
        }
    }

    fn cross_check_listeners(&mut self, listeners: &[Listener], certificates: &[Certificate]) {
        if listeners.is_empty() {
            self.error("listener", "at least one listener is needed");
        }
        for (i, l) in listeners.iter().enumerate() {
            if listeners[..i].iter().any(|o| o.name == l.name) {
                self.error(format!("listener[{i}].name"), format!("duplicate listener name {:?}", l.name));
            }
        }
        let https = listeners.iter().any(|l| l.kind == ListenerKind::Https);
        if https && certificates.is_empty() {
            self.error("certificate", "an https listener needs at least one [[certificate]]");
        }
        if certificates.iter().filter(|c| c.default).count() > 1 {
            self.error("certificate", "more than one certificate says default = true");
        }
        for (i, c) in certificates.iter().enumerate() {
            if c.self_signed_if_missing {
                continue;
            }
            for (f, p) in [("cert", &c.cert), ("key", &c.key)] {
                if !p.is_file() {
                    self.error(format!("certificate[{i}].{f}"), format!("{} does not exist", p.display()));
                }
            }
        }
    }

    fn upstream(&mut self, i: usize, u: file::Upstream) -> Upstream {
        let mut addresses = Vec::new();
        if u.addresses.is_empty() {
            self.error(format!("upstream[{i}].addresses"), "at least one address is needed");
        }
        for (j, a) in u.addresses.iter().enumerate() {
            match parse_upstream_addr(a, self.base) {
                Ok(addr) => addresses.push(addr),
                Err(m) => self.error(format!("upstream[{i}].addresses[{j}]"), m),
            }
        }
        Upstream {
            name: u.name,
            addresses,
            connect_timeout: u.connect_timeout,
            header_timeout: u.header_timeout,
            total_timeout: u.total_timeout,
            pool_idle_timeout: u.pool_idle_timeout,
            pool_max_idle: u.pool_max_idle,
            max_fails: u.max_fails,
            fail_timeout: u.fail_timeout,
            retries: u.retries,
        }
    }

    fn route(
        &mut self,
        i: usize,
        r: file::Route,
        upstreams: &[Upstream],
        listeners: &[Listener],
    ) -> Option<Route> {
        let field = |f: &str| format!("route[{i}].{f}");
        if !r.path.starts_with('/') {
            self.error(field("path"), format!("{:?} must start with /", r.path));
        }
        for name in &r.listeners {
            if !listeners.iter().any(|l| &l.name == name) {
                self.error(field("listeners"), format!("no listener named {name:?}"));
            }
        }
        let hosts = r
            .hosts
            .iter()
            .map(|h| match h.strip_prefix("*.") {
                Some(rest) => HostPattern::Suffix(format!(".{}", rest.to_ascii_lowercase())),
                None => HostPattern::Exact(h.to_ascii_lowercase()),
            })
            .collect();
        let resolve = |v: &mut Self, f: &str, name: &str| match upstreams.iter().position(|u| u.name == name)
        {
            Some(idx) => Some(idx),
            None => {
                v.error(field(f), format!("no upstream named {name:?}"));
                None
            }
        };
        let mut actions = Vec::new();
        if let Some(p) = r.proxy {
            actions.push(resolve(self, "proxy.upstream", &p.upstream).map(|upstream| Action::Proxy {
                upstream,
                compress: p.compress,
                tunnel: None,
            }));
        }
        if let Some(t) = r.tunnel {
            actions.push(resolve(self, "tunnel.upstream", &t.upstream).map(|upstream| Action::Proxy {
                upstream,
                compress: false,
                tunnel: Some(t.idle_timeout),
            }));
        }
        if let Some(s) = r.static_files {
            let root = self.path(s.root);
            if !root.is_dir() {
                self.error(field("static.root"), format!("{} is not a directory", root.display()));
            }
            actions.push(Some(Action::Static(StaticDir {
                root,
                cache_control: s.cache_control.unwrap_or_else(|| file::DEFAULT_STATIC_CACHE_CONTROL.into()),
                precompressed: s.precompressed,
                index: s.index,
            })));
        }
        if let Some(l) = r.live {
            if let Some(url) = &l.recovery_url {
                let ok = url
                    .parse::<http::Uri>()
                    .is_ok_and(|u| u.scheme_str() == Some("http") && u.host().is_some());
                if !ok {
                    self.error(field("live.recovery_url"), format!("{url:?} is not an absolute http:// URL"));
                }
            }
            actions.push(Some(Action::Live { recovery_url: l.recovery_url }));
        }
        if actions.len() != 1 {
            self.error(field("path"), "a route needs exactly one of proxy, tunnel, static, live");
            return None;
        }
        let action = actions.pop().flatten()?;
        Some(Route { listeners: r.listeners, hosts, path: r.path, action })
    }
}

/// Parses `host:port` or `unix:/path`. Host names are resolved once, now.
pub fn parse_upstream_addr(s: &str, base: &Path) -> Result<UpstreamAddr, String> {
    if let Some(path) = s.strip_prefix("unix:") {
        let path = PathBuf::from(path);
        return Ok(UpstreamAddr::Unix(if path.is_absolute() { path } else { base.join(path) }));
    }
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(UpstreamAddr::Tcp(addr));
    }
    match s.to_socket_addrs() {
        Ok(mut addrs) => {
            addrs.next().map(UpstreamAddr::Tcp).ok_or_else(|| format!("{s:?} resolves to nothing"))
        }
        Err(e) => Err(format!("{s:?} is not host:port or unix:/path ({e})")),
    }
}

#[cfg(test)]
mod tests;
