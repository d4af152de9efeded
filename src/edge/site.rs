//! The part of the configuration a reload replaces: routes, upstreams,
//! `[router]`, and `server.access_log` / `server.trusted_proxies`.
//!
//! A [`Site`] is built whole and swapped in with one pointer store
//! (`App::site`), so a request sees either the old site or the new one,
//! never half of each. A request holds its `Arc<Site>` until it has its
//! response; a connection that started before a reload keeps nothing of
//! the old site past that, so the next request on it is routed by the new
//! one. Everything else (listeners, limits, `[live]`, `[auth]`, the broker)
//! stays as olive started: see `ops::reload` for what needs a restart.

use std::sync::Arc;

use crate::config::{Config, Upstream as UpstreamConfig};
use crate::ops::metrics::{Requests, RouteLabel};
use crate::proxy::Upstream;
use crate::router::Router;

#[derive(Debug)]
pub struct Site {
    /// The configuration this site was built from, with the fields a
    /// reload does not change (listeners, limits, live, auth, the rest of
    /// `[server]`) as olive started. Read the reloadable fields here, the
    /// others on `App::config`.
    pub config: Arc<Config>,
    pub router: Router,
    /// In `config.upstreams` order: a route's upstream index points here.
    pub upstreams: Vec<Arc<Upstream>>,
    /// The metrics label of each of `config.routes`.
    route_labels: Vec<RouteLabel>,
}

impl Site {
    /// Builds the site for `new` on a server that started with `running`.
    /// An upstream whose settings did not change is carried over from
    /// `previous`, with its idle connections, passive health and counters.
    pub fn new(
        running: &Config,
        new: &Config,
        previous: Option<&Site>,
        requests: &Requests,
        workers: usize,
    ) -> Site {
        let mut config = running.clone();
        config.source = new.source.clone();
        config.routes = new.routes.clone();
        config.upstreams = new.upstreams.clone();
        config.certificates = new.certificates.clone();
        config.unmatched_status = new.unmatched_status;
        config.server.access_log = new.server.access_log;
        config.server.trusted_proxies = new.server.trusted_proxies.clone();
        let upstreams = config
            .upstreams
            .iter()
            .map(|u| match previous.and_then(|p| p.upstream_like(u)) {
                Some(kept) => kept,
                None => Arc::new(Upstream::new(u, workers)),
            })
            .collect();
        let router = Router::new(&config);
        let route_labels = requests.labels_for(&config);
        Site { config: Arc::new(config), router, upstreams, route_labels }
    }

    /// The metrics label of `config.routes[index]`.
    pub fn route_label(&self, index: usize) -> RouteLabel {
        self.route_labels.get(index).copied().unwrap_or(RouteLabel::UNROUTED)
    }

    /// This site's upstream configured exactly as `config`.
    fn upstream_like(&self, config: &UpstreamConfig) -> Option<Arc<Upstream>> {
        self.upstreams.iter().find(|u| u.config == *config).cloned()
    }
}
