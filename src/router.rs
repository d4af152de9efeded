//! The route table: which configured route serves a request, decided in one
//! place from the listener, the host and the path.
//!
//! Rules, in order: a route must be served on the request's listener (routes
//! with no `listeners` are served on every public listener, never on admin);
//! its hosts must match (a route with no hosts matches any host, but a route
//! naming the host beats it); of those, the longest path prefix wins. Prefixes
//! match whole segments: `/static` matches `/static` and `/static/x`, not
//! `/staticky`.

use crate::config::{Action, Config, ListenerKind, Route};

/// What the router decided for one request.
#[derive(Debug)]
pub enum Decision<'a> {
    /// Serve with this route; `rest` is the path after the route's prefix,
    /// always starting with `/`; `index` is the route's place in
    /// `Config::routes` (what metrics label it by).
    Route { route: &'a Route, rest: &'a str, index: usize },
    /// Some route serves this host, but none this path.
    NoPath,
    /// No route serves this host.
    NoHost,
}

#[derive(Debug)]
pub struct Router {
    /// Per listener (same order as `Config::listeners`), the routes it
    /// serves with its index in `Config::routes`, sorted by prefix length
    /// (longest first) then by whether a host is named.
    tables: Vec<Vec<(usize, Route)>>,
}

impl Router {
    pub fn new(config: &Config) -> Router {
        let tables = config
            .listeners
            .iter()
            .map(|listener| {
                let mut routes: Vec<(usize, Route)> = config
                    .routes
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| {
                        if r.listeners.is_empty() {
                            listener.kind != ListenerKind::Admin
                        } else {
                            r.listeners.contains(&listener.name)
                        }
                    })
                    .map(|(i, r)| (i, r.clone()))
                    .collect();
                routes.sort_by_key(|(_, r)| (std::cmp::Reverse(r.path.len()), r.hosts.is_empty()));
                routes
            })
            .collect();
        Router { tables }
    }

    /// Routes a request that arrived on listener number `listener`.
    /// `host` is the request's host without port.
    pub fn route<'a>(&'a self, listener: usize, host: &str, path: &'a str) -> Decision<'a> {
        let Some(table) = self.tables.get(listener) else { return Decision::NoHost };
        let mut host_known = false;
        for (index, route) in table {
            if !route.hosts.is_empty() && !route.hosts.iter().any(|h| h.matches(host)) {
                continue;
            }
            host_known = true;
            if let Some(rest) = strip_prefix(path, &route.path) {
                return Decision::Route { route, rest, index: *index };
            }
        }
        if host_known || table.is_empty() { Decision::NoPath } else { Decision::NoHost }
    }

    /// Upstream indices used by any route (for readiness checks).
    pub fn upstreams(&self) -> impl Iterator<Item = usize> + '_ {
        self.tables.iter().flatten().filter_map(|(_, r)| match r.action {
            Action::Proxy { upstream, .. } => Some(upstream),
            Action::Static(_) | Action::Live { .. } => None,
        })
    }
}

/// Strips a route prefix from a path on a segment boundary, returning the
/// rest with its leading `/`.
fn strip_prefix<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = path.strip_prefix(prefix.trim_end_matches('/'))?;
    if rest.is_empty() {
        Some("/")
    } else if rest.starts_with('/') {
        Some(rest)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const CONFIG: &str = r#"
[[listener]]
name = "http"
kind = "http"
bind = "127.0.0.1:0"

[[listener]]
name = "admin"
kind = "admin"
bind = "127.0.0.1:0"

[[upstream]]
name = "django"
addresses = ["127.0.0.1:8000"]

[[upstream]]
name = "blog"
addresses = ["127.0.0.1:8001"]

[[upstream]]
name = "channels"
addresses = ["127.0.0.1:8002"]

[[route]]
path = "/"
proxy.upstream = "django"

[[route]]
path = "/ws/"
tunnel.upstream = "channels"

[[route]]
hosts = ["blog.example.com", "*.blog.example.com"]
path = "/"
proxy.upstream = "blog"

[[route]]
hosts = ["only.example.com"]
path = "/api"
proxy.upstream = "blog"

[[route]]
listeners = ["admin"]
path = "/django-admin/"
proxy.upstream = "django"
"#;

    fn router() -> Router {
        let config = Config::parse(CONFIG, Path::new("/tmp/olive.toml")).unwrap();
        Router::new(&config)
    }

    fn upstream_of(d: Decision<'_>) -> String {
        match d {
            Decision::Route { route: Route { action: Action::Proxy { upstream, .. }, .. }, rest, .. } => {
                format!("{upstream} {rest}")
            }
            Decision::Route { .. } => "static".into(),
            Decision::NoPath => "no path".into(),
            Decision::NoHost => "no host".into(),
        }
    }

    #[test]
    fn routing_table() {
        let r = router();
        for (listener, host, path, want) in [
            (0, "example.com", "/", "0 /"),
            (0, "example.com", "/accounts/login/", "0 /accounts/login/"),
            (0, "example.com", "/ws/chat/", "2 /chat/"),
            (0, "example.com", "/ws", "2 /"),
            (0, "example.com", "/wsx", "0 /wsx"),
            (0, "blog.example.com", "/ws/chat/", "2 /chat/"),
            (0, "blog.example.com", "/post/1", "1 /post/1"),
            (0, "a.blog.example.com", "/", "1 /"),
            (0, "BLOG.example.com", "/", "1 /"),
            (0, "only.example.com", "/api/x", "1 /x"),
            (0, "only.example.com", "/other", "0 /other"),
            (0, "example.com", "/django-admin/", "0 /django-admin/"),
            (1, "example.com", "/django-admin/x", "0 /x"),
            (1, "example.com", "/", "no path"),
        ] {
            assert_eq!(upstream_of(r.route(listener, host, path)), want, "{listener} {host} {path}");
        }
    }

    #[test]
    fn hosts_without_a_route_are_unmatched() {
        let config = Config::parse(
            r#"
[[listener]]
name = "http"
kind = "http"
bind = "127.0.0.1:0"
[[upstream]]
name = "u"
addresses = ["127.0.0.1:1"]
[[route]]
hosts = ["example.com"]
path = "/"
proxy.upstream = "u"
"#,
            Path::new("/tmp/x.toml"),
        )
        .unwrap();
        let r = Router::new(&config);
        assert!(matches!(r.route(0, "example.com", "/"), Decision::Route { .. }));
        assert!(matches!(r.route(0, "evil.com", "/"), Decision::NoHost));
    }
}
