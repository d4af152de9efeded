//! The live status page on the admin listener: `GET /status` is one HTML
//! page (no build step, no outside assets) that plots connections,
//! messages per second and upstream latency over the last minutes and
//! lists the busiest key classes; `GET /status/events` is the
//! server-sent event stream that feeds it, one JSON sample every
//! [`INTERVAL`], read from the same counters as `/metrics`.
//!
//! Rates and latencies are computed here, per stream, from the change in
//! the counters since the previous sample, so the page does no
//! arithmetic on counters and a reload (which may replace upstreams)
//! shows as a gap rather than a negative rate. Key classes are what
//! `/metrics` labels by (the first three segments, at most 100 of them):
//! counts only, never a raw key.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::StreamExt;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body::Frame;
use http_body_util::StreamBody;
use serde_json::{Value, json};

use crate::body::{self, Body};
use crate::edge::App;

/// Time between samples: the page's resolution.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// Key classes listed, busiest first.
pub const TOP_CLASSES: usize = 10;

const PAGE: &str = include_str!("page.html");

/// `GET /status`.
pub fn page() -> Response<Body> {
    let mut resp = Response::new(body::full(PAGE));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // The page needs nothing from anywhere else.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'",
        ),
    );
    resp
}

/// `GET /status/events`: a sample now, then one every [`INTERVAL`], until
/// the client goes or olive drains.
pub fn events(app: Arc<App>) -> Response<Body> {
    let shutdown = app.shutdown.clone().cancelled_owned();
    let mut ticks = tokio::time::interval(INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let state = (app, Sampler::default(), ticks);
    let stream = futures_util::stream::unfold(state, |(app, mut sampler, mut ticks)| async move {
        ticks.tick().await;
        let sample = sampler.sample(&app);
        let event = Bytes::from(format!("data: {sample}\n\n"));
        Some((Ok::<_, Infallible>(Frame::data(event)), (app, sampler, ticks)))
    })
    .take_until(shutdown);
    let mut resp = Response::new(body::boxed(StreamBody::new(stream)));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    *resp.status_mut() = StatusCode::OK;
    resp
}

/// The counters at the previous sample, to turn totals into rates.
#[derive(Default)]
struct Sampler {
    at: Option<Instant>,
    published: HashMap<String, u64>,
    delivered: HashMap<String, u64>,
    /// Per upstream name: (responses, summed microseconds).
    upstreams: HashMap<String, (u64, u64)>,
}

impl Sampler {
    fn sample(&mut self, app: &App) -> Value {
        let now = Instant::now();
        let elapsed = self.at.map(|at| now.duration_since(at).as_secs_f64()).filter(|s| *s > 0.0);
        self.at = Some(now);
        let rate = |new: u64, old: Option<u64>| match (elapsed, old) {
            (Some(secs), Some(old)) => new.saturating_sub(old) as f64 / secs,
            _ => 0.0,
        };

        let connections: serde_json::Map<String, Value> =
            app.metrics.open_now().map(|(kind, n)| (kind.to_owned(), n.into())).collect();

        let published = totals(app.metrics.published().snapshot());
        let delivered = totals(app.hub.stats.delivered.snapshot());
        let sum = |m: &HashMap<String, u64>| m.values().sum::<u64>();
        let published_per_s = rate(sum(&published), Some(sum(&self.published)));
        let delivered_per_s = rate(sum(&delivered), Some(sum(&self.delivered)));

        let mut classes: Vec<(String, u64, u64, f64)> = published
            .keys()
            .chain(delivered.keys())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .map(|class| {
                let d = delivered.get(class).copied().unwrap_or(0);
                let p = published.get(class).copied().unwrap_or(0);
                let per_s = rate(d, Some(self.delivered.get(class).copied().unwrap_or(0)));
                (class.clone(), p, d, per_s)
            })
            .collect();
        classes.sort_by(|a, b| b.3.total_cmp(&a.3).then(b.2.cmp(&a.2)).then(b.1.cmp(&a.1)));
        classes.truncate(TOP_CLASSES);
        let classes: Vec<Value> = classes
            .into_iter()
            .map(|(class, p, d, per_s)| json!({"class": class, "published": p, "delivered": d, "delivered_per_s": per_s}))
            .collect();

        let site = app.site();
        let mut upstreams = Vec::new();
        let mut seen = HashMap::new();
        for u in &site.upstreams {
            let snap = u.stats.response.snapshot();
            let (count, micros) = (snap.buckets.iter().sum::<u64>(), snap.sum_micros);
            let latency_ms = match self.upstreams.get(u.name()) {
                Some(&(c, m)) if count > c => {
                    Some((micros.saturating_sub(m)) as f64 / (count - c) as f64 / 1000.0)
                }
                _ => None,
            };
            let per_s = rate(count, self.upstreams.get(u.name()).map(|&(c, _)| c));
            upstreams.push(json!({"name": u.name(), "latency_ms": latency_ms, "responses_per_s": per_s}));
            seen.insert(u.name().to_owned(), (count, micros));
        }

        self.upstreams = seen;
        self.published = published;
        self.delivered = delivered;
        let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
        json!({
            "t": t,
            "connections": connections,
            "messages_per_s": {"published": published_per_s, "delivered": delivered_per_s},
            "upstreams": upstreams,
            "classes": classes,
        })
    }
}

fn totals(snapshot: Vec<(&str, u64)>) -> HashMap<String, u64> {
    snapshot.into_iter().map(|(class, n)| (class.to_owned(), n)).collect()
}
