//! Requests by route label and status class (`olive_http_requests_total`).
//!
//! A route's label is its configured path prefix. Routes change on reload
//! (SIGHUP), so the labels are a table that only grows: each reload finds
//! the labels of its routes, claiming a row for a prefix never seen
//! before, and a counted request is one atomic add at a row found by
//! index. Rows are never freed (a counter must not go back), so the table
//! is capped at [`MAX_ROUTE_LABELS`]; past that, new prefixes count as
//! `other`.

use std::sync::Mutex;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use http::StatusCode;

use crate::config::Config;

/// Route labels kept over the process's life, the fixed ones included:
/// far more distinct path prefixes than a site configures, so that only
/// a long series of reloads that each invent new prefixes reaches it.
pub const MAX_ROUTE_LABELS: usize = 256;

/// Status classes, the `status` label values.
pub const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The route label of a request: a configured route, or one of olive's
/// own answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteLabel(usize);

impl RouteLabel {
    /// The admin listener's own endpoints (`/metrics`, `/healthz`,
    /// `/readyz`, `/status`, `/olive/publish`).
    pub const ADMIN: RouteLabel = RouteLabel(0);
    /// A listener's redirect to HTTPS.
    pub const REDIRECT: RouteLabel = RouteLabel(1);
    /// No route matched (404, or `unmatched_status`).
    pub const UNROUTED: RouteLabel = RouteLabel(2);
    /// Routes whose prefix came after [`MAX_ROUTE_LABELS`] was reached.
    pub const OTHER: RouteLabel = RouteLabel(3);
}

const FIXED: [&str; 4] = ["admin", "redirect", "unrouted", "other"];

/// Request counts by route label and status class.
#[derive(Debug)]
pub struct Requests {
    labels: Box<[OnceLock<Box<str>>]>,
    counts: Box<[[AtomicU64; 5]]>,
    /// Taken only to claim rows (at start-up and on reload).
    claiming: Mutex<usize>,
}

impl Default for Requests {
    fn default() -> Self {
        let labels: Box<[OnceLock<Box<str>>]> = (0..MAX_ROUTE_LABELS).map(|_| OnceLock::new()).collect();
        for (slot, name) in labels.iter().zip(FIXED) {
            let _ = slot.set(name.into());
        }
        let counts = (0..MAX_ROUTE_LABELS).map(|_| Default::default()).collect();
        Requests { labels, counts, claiming: Mutex::new(FIXED.len()) }
    }
}

impl Requests {
    /// The label of each of `config.routes`, in order; routes with the
    /// same prefix share one.
    pub fn labels_for(&self, config: &Config) -> Vec<RouteLabel> {
        let mut used = self.claiming.lock().unwrap_or_else(|e| e.into_inner());
        config
            .routes
            .iter()
            .map(|r| {
                let path = r.path.as_str();
                let known =
                    (FIXED.len()..*used).find(|&i| self.labels[i].get().is_some_and(|l| **l == *path));
                match known {
                    Some(i) => RouteLabel(i),
                    None if *used < MAX_ROUTE_LABELS => {
                        let _ = self.labels[*used].set(path.into());
                        *used += 1;
                        RouteLabel(*used - 1)
                    }
                    None => RouteLabel::OTHER,
                }
            })
            .collect()
    }

    /// Counts a request answered with `status`.
    pub fn count(&self, route: RouteLabel, status: StatusCode) {
        let class = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
        self.counts[route.0][class].fetch_add(1, Ordering::Relaxed);
    }

    /// Every label with its counts by status class.
    pub fn snapshot(&self) -> impl Iterator<Item = (&str, [u64; 5])> {
        self.labels.iter().zip(self.counts.iter()).filter_map(|(label, counts)| {
            let label = label.get()?;
            Some((&**label, std::array::from_fn(|i| counts[i].load(Ordering::Relaxed))))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(paths: &[&str]) -> Config {
        let mut text = String::from(
            "[[listener]]\nname = \"a\"\nkind = \"http\"\nbind = \"127.0.0.1:0\"\n[[upstream]]\nname = \"u\"\naddresses = [\"127.0.0.1:1\"]\n",
        );
        for p in paths {
            text.push_str(&format!("[[route]]\npath = \"{p}\"\nproxy.upstream = \"u\"\n"));
        }
        Config::parse(&text, std::path::Path::new("/olive.toml")).unwrap()
    }

    #[test]
    fn labels_are_kept_across_reloads_and_shared_by_prefix() {
        let r = Requests::default();
        let first = r.labels_for(&config(&["/", "/api"]));
        let second = r.labels_for(&config(&["/api", "/new", "/"]));
        assert_eq!(first, [RouteLabel(4), RouteLabel(5)]);
        assert_eq!(second, [RouteLabel(5), RouteLabel(6), RouteLabel(4)]);
        r.count(second[1], StatusCode::OK);
        let new: Vec<_> = r.snapshot().filter(|(l, _)| *l == "/new").collect();
        assert_eq!(new, [("/new", [0, 1, 0, 0, 0])]);
    }

    #[test]
    fn past_the_cap_new_prefixes_count_as_other() {
        let r = Requests::default();
        let paths: Vec<String> = (0..MAX_ROUTE_LABELS).map(|i| format!("/p{i}")).collect();
        let paths: Vec<&str> = paths.iter().map(String::as_str).collect();
        let labels = r.labels_for(&config(&paths));
        assert_eq!(labels[MAX_ROUTE_LABELS - FIXED.len() - 1], RouteLabel(MAX_ROUTE_LABELS - 1));
        assert!(labels[MAX_ROUTE_LABELS - FIXED.len()..].iter().all(|l| *l == RouteLabel::OTHER));
    }

    #[test]
    fn status_classes_clamp() {
        let r = Requests::default();
        for code in [101, 200, 204, 308, 404, 502, 599] {
            r.count(RouteLabel::ADMIN, StatusCode::from_u16(code).unwrap());
        }
        assert_eq!(r.snapshot().next(), Some(("admin", [1, 2, 1, 1, 2])));
    }
}
