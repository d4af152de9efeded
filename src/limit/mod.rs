//! What one client may do, and how fast (`[rate_limits]`, and
//! `limits.max_connections_per_ip`).
//!
//! | limit | keyed by | over it |
//! |---|---|---|
//! | `http_per_ip` | client address | `429` with `Retry-After` |
//! | `connects_per_ip` (websocket and SSE) | client address | `429` with `Retry-After` |
//! | `max_connections_per_ip` | client address | `429`, connection closed |
//! | `max_sessions_per_user` | user (token `sub`) | `429` |
//! | `frames_per_connection` | websocket | `rate_limited` error frame; counts as invalid, so sustained abuse closes with 1008 |
//! | `publishes_per_user` | user, or address when anonymous | `rate_limited` error (websocket), `429` (HTTP) |
//! | `live.max_subscriptions` | websocket | `too_large` error frame |
//!
//! Each refusal is counted in `olive_rate_limited_total{limit}`. The
//! client address is the socket's, or what a trusted proxy says
//! ([`client_ip`], and PROXY protocol in `edge::proxy_protocol`).

pub mod keyed;
pub mod shares;

use std::net::IpAddr;
use std::sync::Arc;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use http::HeaderMap;

use crate::config;
pub use keyed::{Keyed, Limited};
pub use shares::{Share, Shares, ip_key};

/// Who a per-user limit counts: a user, or an anonymous visitor's address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Client {
    User(Arc<str>),
    Ip(u128),
}

/// The `[rate_limits]` limiters; `None` where a rate is 0 (off).
pub struct RateLimits {
    pub http: Option<Keyed<u128>>,
    pub connects: Option<Keyed<u128>>,
    pub publishes: Option<Keyed<Client>>,
    frames: Option<Quota>,
    pub sessions: Option<Arc<Shares<Arc<str>>>>,
}

impl RateLimits {
    pub fn new(c: &config::RateLimits) -> RateLimits {
        let tracked = c.tracked_clients;
        RateLimits {
            http: keyed::quota(c.http_per_ip, c.http_burst).map(|q| Keyed::new(q, tracked)),
            connects: keyed::quota(c.connects_per_ip, c.connects_burst).map(|q| Keyed::new(q, tracked)),
            publishes: keyed::quota(c.publishes_per_user, c.publishes_burst).map(|q| Keyed::new(q, tracked)),
            frames: keyed::quota(c.frames_per_connection, c.frames_burst),
            sessions: (c.max_sessions_per_user > 0).then(|| Shares::new(c.max_sessions_per_user)),
        }
    }

    /// A websocket's own frame limiter (`None`: off).
    pub fn frames(&self) -> Option<DefaultDirectRateLimiter> {
        self.frames.map(RateLimiter::direct)
    }

    /// Checks `limit` for `key`, counting a refusal as `label`.
    pub fn check<K: std::hash::Hash + Eq + Clone>(
        limit: &Option<Keyed<K>>,
        key: &K,
        metrics: &crate::ops::metrics::Metrics,
        label: &'static str,
    ) -> Result<(), Limited> {
        let Some(limit) = limit else { return Ok(()) };
        limit.check(key).inspect_err(|_| metrics.rate_limited(label))
    }
}

/// The client's address: the peer's, or, when the peer is a trusted
/// proxy, the nearest address in `X-Forwarded-For` that is not one of
/// `trusted` (the rightmost untrusted entry: everything left of it was
/// written by the client and may be forged). An entry that is not an
/// address stops the walk at the last good one.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, server: &config::Server) -> IpAddr {
    if !server.trusts(peer) {
        return peer;
    }
    let mut client = peer;
    let entries = headers
        .get_all(&crate::proxy::headers::X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect::<Vec<_>>();
    for entry in entries.iter().rev() {
        let Ok(ip) = entry.trim().parse::<IpAddr>() else { break };
        client = ip;
        if !server.trusts(ip) {
            break;
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_is_the_rightmost_untrusted_forwarded_address() {
        let text = "[server]\ntrusted_proxies = [\"10.0.0.0/8\"]\n[[listener]]\nname = \"a\"\nkind = \"admin\"\nbind = \"127.0.0.1:0\"\n";
        let server = config::Config::parse(text, std::path::Path::new("/olive.toml")).unwrap().server;
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let xff = |v: &[&str]| {
            let mut h = HeaderMap::new();
            for line in v {
                h.append("x-forwarded-for", line.parse().unwrap());
            }
            h
        };
        for (peer, lines, want) in [
            // An untrusted peer's header is ignored: a forgery.
            ("198.51.100.7", &["203.0.113.9"][..], "198.51.100.7"),
            ("10.0.0.1", &[], "10.0.0.1"),
            ("10.0.0.1", &["203.0.113.9"], "203.0.113.9"),
            // The client wrote the leftmost entry itself.
            ("10.0.0.1", &["1.2.3.4, 203.0.113.9"], "203.0.113.9"),
            ("10.0.0.1", &["1.2.3.4, 203.0.113.9, 10.0.0.2"], "203.0.113.9"),
            ("10.0.0.1", &["1.2.3.4", "203.0.113.9"], "203.0.113.9"),
            ("10.0.0.1", &["10.0.0.3, 10.0.0.2"], "10.0.0.3"),
            ("10.0.0.1", &["garbage, 203.0.113.9"], "203.0.113.9"),
            ("10.0.0.1", &["203.0.113.9, garbage"], "10.0.0.1"),
        ] {
            assert_eq!(client_ip(ip(peer), &xff(lines), &server), ip(want), "{peer} {lines:?}");
        }
    }
}
