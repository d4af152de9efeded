//! `GET /metrics` on the admin listener: real traffic through a real olive,
//! then a scrape parsed strictly as the text exposition format 0.0.4, and
//! the exact series that should have moved.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use common::live::{connect, recv, send, subscribe};
use common::{Ca, Olive, Upstream, client, raw, text};
use futures_util::StreamExt;
use serde_json::json;

// ---------------------------------------------------------------------
// A strict reader of the text format
// ---------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

#[derive(Debug)]
struct Scrape {
    /// Family name → type.
    types: HashMap<String, String>,
    samples: Vec<Sample>,
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Parses a scrape, failing on anything the format does not allow: a
/// sample outside its family, a family declared twice, `# TYPE` not right
/// after its `# HELP`, a bad name, label or value, a counter not named
/// `_total`, histogram buckets that are not cumulative or whose `+Inf`
/// disagrees with `_count`.
fn parse(text: &str) -> Scrape {
    let mut types = HashMap::new();
    let mut samples = Vec::new();
    let mut current: Option<(String, String)> = None;
    let mut help_for: Option<String> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP has a name and text");
            assert!(valid_name(name), "bad family name {name:?}");
            assert!(!help.is_empty(), "{name} has an empty HELP");
            assert!(!types.contains_key(name), "{name} declared twice");
            help_for = Some(name.to_owned());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE has a name and a type");
            assert_eq!(help_for.take().as_deref(), Some(name), "TYPE {name} must follow its HELP");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{name}: type {kind}");
            if kind == "counter" {
                assert!(name.ends_with("_total"), "counter {name} must end in _total");
            }
            types.insert(name.to_owned(), kind.to_owned());
            current = Some((name.to_owned(), kind.to_owned()));
            continue;
        }
        assert!(!line.is_empty() && !line.starts_with('#'), "unexpected line {line:?}");
        let sample = parse_sample(line);
        let (family, kind) = current.as_ref().expect("a sample before any family");
        let ok = match kind.as_str() {
            "histogram" => ["_bucket", "_sum", "_count"]
                .iter()
                .any(|suffix| sample.name.strip_suffix(suffix) == Some(family.as_str())),
            _ => sample.name == *family,
        };
        assert!(ok, "sample {} outside its family {family}", sample.name);
        if sample.name.ends_with("_bucket") {
            assert!(sample.labels.contains_key("le"), "bucket without le: {line}");
        }
        samples.push(sample);
    }
    let scrape = Scrape { types, samples };
    scrape.check_histograms();
    scrape
}

fn parse_sample(line: &str) -> Sample {
    let name_end = line.find(['{', ' ']).unwrap_or_else(|| panic!("no value in {line:?}"));
    let name = &line[..name_end];
    assert!(valid_name(name), "bad metric name in {line:?}");
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices().peekable();
        loop {
            let start = chars.peek().map(|&(i, _)| i).unwrap_or_else(|| panic!("unclosed labels: {line:?}"));
            if inner[start..].starts_with('}') {
                rest = &inner[start + 1..];
                break;
            }
            let eq = inner[start..].find('=').unwrap_or_else(|| panic!("label without =: {line:?}")) + start;
            let label = &inner[start..eq];
            assert!(valid_name(label) && !label.starts_with("__"), "bad label name {label:?} in {line:?}");
            assert!(inner[eq + 1..].starts_with('"'), "unquoted label value in {line:?}");
            while chars.peek().is_some_and(|&(i, _)| i <= eq + 1) {
                chars.next();
            }
            let mut value = String::new();
            loop {
                match chars.next().unwrap_or_else(|| panic!("unterminated value in {line:?}")) {
                    (_, '"') => break,
                    (_, '\\') => match chars.next() {
                        Some((_, '\\')) => value.push('\\'),
                        Some((_, '"')) => value.push('"'),
                        Some((_, 'n')) => value.push('\n'),
                        other => panic!("bad escape {other:?} in {line:?}"),
                    },
                    (_, c) => value.push(c),
                }
            }
            assert!(labels.insert(label.to_owned(), value).is_none(), "label {label} twice in {line:?}");
            if chars.peek().is_some_and(|&(_, c)| c == ',') {
                chars.next();
            }
        }
    }
    let value = rest.strip_prefix(' ').unwrap_or_else(|| panic!("no space before the value: {line:?}"));
    assert!(!value.contains(' '), "a timestamp or junk after the value: {line:?}");
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().unwrap_or_else(|_| panic!("bad value in {line:?}")),
    };
    Sample { name: name.to_owned(), labels, value }
}

impl Scrape {
    fn check_histograms(&self) {
        for (family, kind) in &self.types {
            if kind != "histogram" {
                continue;
            }
            let mut by_series: BTreeMap<BTreeMap<String, String>, Vec<(f64, f64)>> = BTreeMap::new();
            for s in self.samples.iter().filter(|s| s.name == format!("{family}_bucket")) {
                let mut labels = s.labels.clone();
                let le = labels.remove("le").unwrap();
                let le = if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap() };
                by_series.entry(labels).or_default().push((le, s.value));
            }
            for (labels, buckets) in by_series {
                assert!(
                    buckets.windows(2).all(|w| w[0].0 < w[1].0),
                    "{family} {labels:?}: le not increasing"
                );
                assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{family} {labels:?}: not cumulative");
                let (le, inf) = *buckets.last().unwrap();
                assert_eq!(le, f64::INFINITY, "{family} {labels:?}: no +Inf bucket");
                let pairs: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                assert_eq!(self.get(&format!("{family}_count"), &pairs), inf, "{family} {labels:?}");
                assert!(
                    self.maybe(&format!("{family}_sum"), &pairs).is_some(),
                    "{family} {labels:?}: no _sum"
                );
            }
        }
    }

    fn maybe(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> =
            labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        self.samples.iter().find(|s| s.name == name && s.labels == want).map(|s| s.value)
    }

    /// The value of one series, which must exist.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.maybe(name, labels).unwrap_or_else(|| panic!("no series {name}{labels:?} in\n{self:#?}"))
    }

    fn series(&self, name: &str) -> Vec<&Sample> {
        self.samples.iter().filter(|s| s.name == name).collect()
    }
}

async fn scrape_text(olive: &Olive) -> String {
    let resp = client().get(olive.url("admin", "/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    resp.text().await.unwrap()
}

async fn scrape(olive: &Olive) -> Scrape {
    parse(&scrape_text(olive).await)
}

/// Prometheus' own linter (`promtool check metrics`, in Debian's
/// `prometheus` package), where it is installed: a second opinion on the
/// format and the naming conventions. Skipped without it.
fn promtool_check(text: &str) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        eprintln!("promtool not installed: skipped its check");
        return;
    };
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "promtool check metrics:\n{said}");
}

/// Scrapes until `done` holds (counters are bumped right after the work
/// a client can see), for at most five seconds.
async fn scrape_until(olive: &Olive, what: &str, done: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let s = scrape(olive).await;
        if done(&s) {
            return s;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}:\n{s:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn the_reader_refuses_what_the_format_does_not_allow() {
    let ok = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"q\\\"\\\\\\n\"} 1\n";
    assert_eq!(parse(ok).get("a_total", &[("x", "q\"\\\n")]), 1.0);
    for bad in [
        "a_total 1\n",                                                 // no family
        "# HELP a_total A.\n# TYPE a_total counter\nb_total 1\n",      // outside its family
        "# HELP a A.\n# TYPE a counter\na 1\n",                        // counter without _total
        "# HELP a_total A.\n# TYPE a_total counter\na_total{x=y} 1\n", // unquoted
        "# HELP a_total A.\n# TYPE a_total counter\na_total 1 123\n",  // timestamp
        "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 0\nh_count 1\n",
        "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 0\nh_count 1\n",
    ] {
        assert!(std::panic::catch_unwind(|| parse(bad)).is_err(), "accepted {bad:?}");
    }
}

// ---------------------------------------------------------------------
// HTTP, proxy and TLS
// ---------------------------------------------------------------------

#[tokio::test]
async fn requests_upstreams_and_tls_handshakes_are_counted() {
    // The upstream answers /status/N with N, anything else with 200.
    let up = Upstream::start(|seen| async move {
        match seen.uri.path().strip_prefix("/status/") {
            Some(code) => text(code.parse().unwrap(), "as asked"),
            None => text(200, "ok"),
        }
    })
    .await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    ca.issue(dir.path(), "site", &["olive.test"]);
    std::fs::create_dir(dir.path().join("static")).unwrap();
    let toml = format!(
        r#"
[server]
access_log = false

[[listener]]
name = "http"
kind = "http"
bind = "127.0.0.1:0"

[[listener]]
name = "https"
kind = "https"
bind = "127.0.0.1:0"

[[listener]]
name = "admin"
kind = "admin"
bind = "127.0.0.1:0"

[[certificate]]
cert = "{{dir}}/site-cert.pem"
key = "{{dir}}/site-key.pem"

[[upstream]]
name = "app"
addresses = ["{app}"]

[[upstream]]
name = "gone"
addresses = ["{dead}"]
connect_timeout = "500ms"
fail_timeout = "60s"

[[route]]
path = "/"
proxy.upstream = "app"
proxy.compress = false

[[route]]
path = "/gone"
proxy.upstream = "gone"

[[route]]
path = "/static/"
static.root = "{{dir}}/static"
"#,
        app = up.addr
    );
    let olive = Olive::start_in(dir, &toml).await;

    // Nothing yet: the families exist, the request series do not.
    let before = scrape(&olive).await;
    assert!(before.series("olive_http_requests_total").is_empty());
    assert_eq!(before.types["olive_http_requests_total"], "counter");
    assert_eq!(before.get("olive_upstream_response_seconds_count", &[("upstream", "app")]), 0.0);
    assert_eq!(before.get("olive_build_info", &[("version", env!("CARGO_PKG_VERSION"))]), 1.0);
    assert_eq!(before.get("olive_listeners", &[]), 3.0);

    let http = client();
    for path in ["/", "/a", "/b?x=1", "/status/404", "/status/503", "/gone/x", "/static/missing.css"] {
        http.get(olive.url("http", path)).send().await.unwrap().bytes().await.unwrap();
    }
    let https = ca.client(&["olive.test"], olive.addr("https"));
    let resp = https.get(format!("https://olive.test:{}/status/201", olive.addr("https").port())).send();
    assert_eq!(resp.await.unwrap().status(), 201);
    // Not TLS at all: the handshake fails.
    raw(olive.addr("https"), b"GET / HTTP/1.1\r\nHost: olive.test\r\n\r\n", Duration::from_secs(2)).await;
    assert_eq!(http.get(olive.url("admin", "/healthz")).send().await.unwrap().status(), 200);
    assert_eq!(http.get(olive.url("http", "/nope")).send().await.unwrap().status(), 200, "/ catches all");

    let s = scrape(&olive).await;
    let requests = |route: &str, status: &str| {
        s.get("olive_http_requests_total", &[("route", route), ("status", status)])
    };
    assert_eq!(requests("/", "2xx"), 5.0, "/, /a, /b, /nope and the https 201");
    assert_eq!(requests("/", "4xx"), 1.0);
    assert_eq!(requests("/", "5xx"), 1.0);
    assert_eq!(requests("/gone", "5xx"), 1.0);
    assert_eq!(requests("/static/", "4xx"), 1.0);
    // The first scrape and /healthz; this scrape counts once it is answered.
    assert_eq!(requests("admin", "2xx"), 2.0);
    assert_eq!(s.series("olive_http_requests_total").len(), 6, "no series for what did not happen");

    assert_eq!(s.get("olive_upstream_response_seconds_count", &[("upstream", "app")]), 7.0);
    assert_eq!(s.get("olive_upstream_response_seconds_count", &[("upstream", "gone")]), 0.0);
    assert_eq!(s.get("olive_upstream_errors_total", &[("upstream", "gone"), ("error", "connect")]), 1.0);
    assert_eq!(s.get("olive_upstream_errors_total", &[("upstream", "app"), ("error", "connect")]), 0.0);
    assert_eq!(s.get("olive_upstream_addresses_failing", &[("upstream", "gone")]), 1.0);
    assert_eq!(s.get("olive_upstream_addresses_failing", &[("upstream", "app")]), 0.0);
    let sum = s.get("olive_upstream_response_seconds_sum", &[("upstream", "app")]);
    assert!(sum > 0.0 && sum < 5.0, "{sum}");

    assert_eq!(s.get("olive_tls_handshakes_total", &[("result", "ok")]), 1.0);
    assert_eq!(s.get("olive_tls_handshakes_total", &[("result", "failed")]), 1.0);
    assert_eq!(s.get("olive_tls_handshakes_total", &[("result", "timeout")]), 0.0);

    // This scrape's own connection at least; no upgraded ones.
    assert!(s.get("olive_connections", &[("kind", "http")]) >= 1.0);
    for kind in ["websocket", "sse", "tunnel"] {
        assert_eq!(s.get("olive_connections", &[("kind", kind)]), 0.0, "{kind}");
    }

    // Limits and access control: families with every bounded label at
    // zero.
    for limit in olive::ops::metrics::RATE_LIMITS {
        assert_eq!(s.get("olive_rate_limited_total", &[("limit", limit)]), 0.0);
    }
    assert_eq!(s.get("olive_token_rejections_total", &[("reason", "expired")]), 0.0);
    assert!(s.maybe("olive_rate_limited_total", &[("limit", "other")]).is_none());
    assert_eq!(s.get("olive_broker_connected", &[("broker", "memory")]), 1.0);
    assert_eq!(s.get("olive_broker_reconnects_total", &[]), 0.0);

    promtool_check(&scrape_text(&olive).await);

    // No label anywhere carries a raw path or query.
    for sample in &s.samples {
        for value in sample.labels.values() {
            assert!(!["/a", "/b", "/status/404", "/gone/x", "x=1"].contains(&value.as_str()), "{sample:?}");
        }
    }
    drop(olive);
}

// ---------------------------------------------------------------------
// The live hub
// ---------------------------------------------------------------------

/// Reads an SSE body until its text contains `needle`.
async fn sse_until(
    stream: &mut (impl futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    seen: &mut String,
    needle: &str,
) {
    while !seen.contains(needle) {
        let chunk =
            tokio::time::timeout(Duration::from_secs(5), stream.next()).await.unwrap().unwrap().unwrap();
        seen.push_str(std::str::from_utf8(&chunk).unwrap());
    }
}

#[tokio::test]
async fn websocket_sse_publish_delivery_and_history_are_counted() {
    // No linger: the bound patterns gauge falls with the last subscriber.
    let olive = Olive::start(&common::live::config(r#"history_linger = "0s""#, "")).await;
    let key = "olive.notes.note.1";
    let class = [("class", "olive.notes.note")];

    let mut reader = connect(&olive).await;
    subscribe(&mut reader, key).await;
    let sse = client().get(olive.url("http", &format!("/olive/sse?key={key}"))).send().await.unwrap();
    assert_eq!(sse.status(), 200);
    let mut events = Box::pin(sse.bytes_stream());
    let mut seen = String::new();
    sse_until(&mut events, &mut seen, "\"subscribed\"").await;
    let mut writer = connect(&olive).await;

    let s = scrape(&olive).await;
    assert_eq!(s.get("olive_connections", &[("kind", "websocket")]), 2.0);
    assert_eq!(s.get("olive_connections", &[("kind", "sse")]), 1.0);
    assert_eq!(s.get("olive_live_subscriptions", &[]), 2.0);
    assert_eq!(s.get("olive_live_bound_patterns", &[]), 1.0);
    assert!(s.series("olive_live_messages_published_total").is_empty());
    assert_eq!(s.get("olive_live_delivery_lag_seconds_count", &[]), 0.0);

    send(&mut writer, json!({"type": "publish", "key": key, "data": {"text": "hi"}, "ref": 1})).await;
    let ack = recv(&mut writer).await;
    assert_eq!(ack["type"], "ack");
    let id = ack["id"].as_str().unwrap().to_owned();
    assert_eq!(recv(&mut reader).await["id"], id.as_str());
    sse_until(&mut events, &mut seen, &format!("id: {id}")).await;

    let s = scrape_until(&olive, "two deliveries", |s| {
        s.maybe("olive_live_messages_delivered_total", &class) == Some(2.0)
    })
    .await;
    assert_eq!(s.series("olive_live_messages_delivered_total").len(), 1);
    assert_eq!(s.get("olive_live_messages_published_total", &class), 1.0);
    assert_eq!(s.get("olive_live_publish_failures_total", &[]), 0.0);
    assert_eq!(s.get("olive_live_delivery_lag_seconds_count", &[]), 1.0);
    let lag = s.get("olive_live_delivery_lag_seconds_sum", &[]);
    assert!((0.0..1.0).contains(&lag), "publish to hub took {lag} s on one machine");
    assert_eq!(s.get("olive_live_slow_consumer_disconnects_total", &[]), 0.0);
    assert_eq!(s.get("olive_live_messages_dropped_total", &[("reason", "not_json")]), 0.0);

    // Resuming after the message is served from the history; resuming from
    // an id the history never saw is a miss.
    send(&mut writer, json!({"type": "subscribe", "key": key, "since": id})).await;
    assert_eq!(recv(&mut writer).await["recovered"], true);
    let unknown = "01ARZ3NDEKTSV4RRFFQ69G5FAV";
    send(&mut writer, json!({"type": "subscribe", "key": "olive.notes.note.2", "since": unknown})).await;
    assert_eq!(recv(&mut writer).await["recovered"], false);
    let s = scrape(&olive).await;
    assert_eq!(s.get("olive_live_history_lookups_total", &[("result", "hit")]), 1.0);
    assert_eq!(s.get("olive_live_history_lookups_total", &[("result", "miss")]), 1.0);
    assert_eq!(s.get("olive_live_subscriptions", &[]), 4.0);
    promtool_check(&scrape_text(&olive).await);

    // A bad token is refused and counted by its reason.
    let refused = client()
        .get(olive.url("http", &format!("/olive/sse?key={key}")))
        .bearer_auth("not-a-token")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let s = scrape(&olive).await;
    assert_eq!(s.get("olive_token_rejections_total", &[("reason", "malformed")]), 1.0);
    let rejected: f64 = s.series("olive_token_rejections_total").iter().map(|s| s.value).sum();
    assert_eq!(rejected, 1.0);
    assert_eq!(s.get("olive_http_requests_total", &[("route", "/olive"), ("status", "4xx")]), 1.0);

    // Everyone leaves: the gauges come back down.
    drop((reader, writer, events));
    let s = scrape_until(&olive, "connections to close", |s| {
        s.maybe("olive_connections", &[("kind", "websocket")]) == Some(0.0)
            && s.maybe("olive_connections", &[("kind", "sse")]) == Some(0.0)
    })
    .await;
    assert_eq!(s.get("olive_live_subscriptions", &[]), 0.0);
    assert_eq!(s.get("olive_live_bound_patterns", &[]), 0.0);
}

#[tokio::test]
async fn a_slow_consumer_kicked_is_counted_once() {
    let olive = Olive::start(&common::live::config("outbound_queue = 8", "")).await;
    let mut stalled = connect(&olive).await;
    subscribe(&mut stalled, "olive.big.feed.1").await;
    let http = client();
    let url = olive.url("admin", "/olive/publish");
    let pad = "x".repeat(16 * 1024);
    // A client that never reads fills its socket buffers, then its queue
    // of 8; publish until the hub cuts it off (bounded: 4000 × 16 KiB).
    let mut kicked = false;
    for i in 0..4000 {
        let body = json!({"key": "olive.big.feed.1", "data": {"n": i, "pad": pad}});
        assert_eq!(http.post(&url).json(&body).send().await.unwrap().status(), 202);
        if i % 100 == 99 {
            let s = scrape(&olive).await;
            if s.get("olive_live_slow_consumer_disconnects_total", &[]) > 0.0 {
                kicked = true;
                break;
            }
        }
    }
    assert!(kicked, "the stalled client was never cut off");
    let s = scrape(&olive).await;
    assert_eq!(s.get("olive_live_slow_consumer_disconnects_total", &[]), 1.0);
    let published = s.get("olive_live_messages_published_total", &[("class", "olive.big.feed")]);
    let delivered = s.get("olive_live_messages_delivered_total", &[("class", "olive.big.feed")]);
    assert!(delivered < published, "the dropped ones are not delivered: {delivered} of {published}");
    drop(stalled);
}

#[tokio::test]
async fn key_classes_stay_bounded() {
    let olive = Olive::start(&common::live::config("", "")).await;
    let http = client();
    let url = olive.url("admin", "/olive/publish");
    let publish = |key: String| {
        let http = http.clone();
        let url = url.clone();
        async move {
            let resp = http.post(&url).json(&json!({"key": key, "data": 1})).send().await.unwrap();
            assert_eq!(resp.status(), 202);
        }
    };
    // Many objects of one type: one class.
    for pk in 0..300 {
        publish(format!("olive.notes.note.{pk}")).await;
    }
    // 150 more types: 99 fit under the cap of 100, the rest are other.
    for model in 0..150 {
        publish(format!("olive.app.m{model}.1")).await;
    }
    let s = scrape(&olive).await;
    let series = s.series("olive_live_messages_published_total");
    assert_eq!(series.len(), 101, "100 classes and other");
    assert_eq!(s.get("olive_live_messages_published_total", &[("class", "olive.notes.note")]), 300.0);
    assert_eq!(s.get("olive_live_messages_published_total", &[("class", "other")]), 51.0);
    let total: f64 = series.iter().map(|s| s.value).sum();
    assert_eq!(total, 450.0);
    for sample in series {
        let class = &sample.labels["class"];
        assert!(class == "other" || class.split('.').count() == 3, "{class}");
    }
}
