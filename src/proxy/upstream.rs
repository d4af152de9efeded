//! An upstream: its addresses, a keep-alive connection pool for each
//! ([`super::pool`], one per worker), the
//! round-robin choice between them, and passive health.
//!
//! Passive health works like nginx's `max_fails` / `fail_timeout`: after
//! `max_fails` connect failures in a row an address is left out of the
//! rotation for `fail_timeout`, then tried again. When every address is
//! ejected, olive still tries the one whose ejection ends first rather than
//! failing without trying (nginx does the same).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use super::connect::Connector;
use super::pool::Pool;
use crate::config::{self, UpstreamAddr};
use crate::ops::metrics::UpstreamStats;

#[derive(Debug)]
pub struct Upstream {
    pub config: config::Upstream,
    peers: Vec<Peer>,
    next: AtomicUsize,
    /// Response times and errors, for metrics.
    pub stats: UpstreamStats,
}

#[derive(Debug)]
pub struct Peer {
    pub addr: UpstreamAddr,
    /// `addr` as text, for logs.
    pub label: std::sync::Arc<str>,
    /// One pool per worker thread, so that a pooled connection is always
    /// driven by the thread that uses it.
    pools: Vec<std::sync::Arc<Pool>>,
    pub connector: Connector,
    health: Mutex<Health>,
    /// No failure recorded since the last success: the common case, read
    /// without the lock on every request (both workers touch each peer).
    clean: AtomicBool,
}

#[derive(Debug, Default)]
struct Health {
    fails: u32,
    ejected_until: Option<Instant>,
}

impl Upstream {
    /// An upstream served from `workers` worker threads.
    pub fn new(config: &config::Upstream, workers: usize) -> Upstream {
        let peers = config
            .addresses
            .iter()
            .map(|addr| {
                let connector = Connector::new(addr.clone(), config.connect_timeout);
                let pools = (0..workers.max(1))
                    .map(|_| Pool::new(connector.clone(), config.pool_idle_timeout, config.pool_max_idle))
                    .collect();
                Peer {
                    addr: addr.clone(),
                    label: addr.to_string().into(),
                    pools,
                    connector,
                    health: Mutex::default(),
                    clean: AtomicBool::new(true),
                }
            })
            .collect();
        Upstream { config: config.clone(), peers, next: AtomicUsize::new(0), stats: UpstreamStats::default() }
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The next address to try, skipping `exclude` (already failed for this
    /// request) and ejected ones while others remain.
    pub fn pick(&self, exclude: &[usize]) -> Option<(usize, &Peer)> {
        let n = self.peers.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let candidates = (0..n).map(|i| (start + i) % n).filter(|i| !exclude.contains(i));
        let mut now = None;
        let mut soonest: Option<(usize, Instant)> = None;
        for i in candidates {
            let peer = &self.peers[i];
            if peer.clean.load(Ordering::Relaxed) {
                return Some((i, peer));
            }
            match peer.ejected_until(*now.get_or_insert_with(Instant::now)) {
                None => return Some((i, &self.peers[i])),
                Some(until) if soonest.is_none_or(|(_, s)| until < s) => soonest = Some((i, until)),
                Some(_) => {}
            }
        }
        soonest.map(|(i, _)| (i, &self.peers[i]))
    }

    /// Whether at least one address is in rotation.
    pub fn is_healthy(&self) -> bool {
        let now = Instant::now();
        self.peers.iter().any(|p| p.ejected_until(now).is_none())
    }

    pub fn peers(&self) -> usize {
        self.peers.len()
    }

    /// How many addresses are out of rotation now.
    pub fn failing(&self) -> usize {
        let now = Instant::now();
        self.peers.iter().filter(|p| p.ejected_until(now).is_some()).count()
    }

    /// Records the outcome of a connection attempt to `peer`.
    pub fn record(&self, peer: &Peer, connected: bool) {
        if connected && peer.clean.load(Ordering::Relaxed) {
            return;
        }
        let mut h = peer.health.lock().unwrap_or_else(|e| e.into_inner());
        if connected {
            h.fails = 0;
            h.ejected_until = None;
            peer.clean.store(true, Ordering::Relaxed);
            return;
        }
        peer.clean.store(false, Ordering::Relaxed);
        h.fails += 1;
        if h.fails >= self.config.max_fails.max(1) {
            h.ejected_until = Some(Instant::now() + self.config.fail_timeout);
            h.fails = 0;
            tracing::warn!(upstream = %self.config.name, addr = %peer.addr,
                for_secs = self.config.fail_timeout.as_secs_f32(), "upstream address ejected");
        }
    }
}

impl Peer {
    /// The pool of the calling worker thread.
    pub fn pool(&self) -> &std::sync::Arc<Pool> {
        let worker = crate::edge::workers::current();
        &self.pools[worker % self.pools.len()]
    }

    fn ejected_until(&self, now: Instant) -> Option<Instant> {
        let h = self.health.lock().unwrap_or_else(|e| e.into_inner());
        h.ejected_until.filter(|&until| until > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::time::Duration;

    fn upstream(addrs: &[&str], max_fails: u32) -> Upstream {
        let mut cfg = config::Upstream {
            name: "u".into(),
            addresses: addrs
                .iter()
                .map(|a| config::parse_upstream_addr(a, Path::new("/")).unwrap())
                .collect(),
            connect_timeout: Duration::from_secs(1),
            header_timeout: Duration::from_secs(1),
            total_timeout: Duration::from_secs(1),
            pool_idle_timeout: Duration::from_secs(1),
            pool_max_idle: 1,
            max_fails,
            fail_timeout: Duration::from_secs(60),
            retries: 1,
        };
        cfg.max_fails = max_fails;
        Upstream::new(&cfg, 1)
    }

    #[tokio::test]
    async fn round_robin_skips_ejected_and_excluded() {
        let u = upstream(&["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"], 2);
        let picks: Vec<usize> = (0..6).map(|_| u.pick(&[]).unwrap().0).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        assert_eq!(u.pick(&[0]).unwrap().0, 1);

        // One failure is not enough with max_fails = 2.
        u.record(&u.peers[1], false);
        assert!((0..3).any(|_| u.pick(&[]).unwrap().0 == 1));
        u.record(&u.peers[1], false);
        assert!((0..6).all(|_| u.pick(&[]).unwrap().0 != 1));

        // A success resets it.
        u.record(&u.peers[1], true);
        assert!((0..3).any(|_| u.pick(&[]).unwrap().0 == 1));
    }

    #[tokio::test]
    async fn all_ejected_still_tries_one() {
        let u = upstream(&["127.0.0.1:1", "127.0.0.1:2"], 1);
        u.record(&u.peers[0], false);
        u.record(&u.peers[1], false);
        assert!(!u.is_healthy());
        assert_eq!(u.failing(), 2);
        assert_eq!(u.pick(&[]).unwrap().0, 0, "the earliest ejected comes back first");
        assert!(u.pick(&[0, 1]).is_none());
    }
}
