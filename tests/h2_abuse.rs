//! HTTP/2 abuse against a real olive over TLS, each attack written frame
//! by frame (`common::h2raw`): rapid reset (CVE-2023-44487), stream errors
//! on purpose (CVE-2025-8671), CONTINUATION floods, more streams than
//! allowed, oversized header lists, SETTINGS and PING floods.
//!
//! Each test checks what a user sees: a normal client on its own
//! connection keeps getting pages quickly while the attack runs, the
//! abusive connection gets `GOAWAY` (or the refusal RFC 9113 names) and
//! is closed, the upstream is not flooded, and olive's memory stays flat.
//! The limits are `[limits]` `h2_*` fields (docs/HARDENING.md).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::h2raw::{self, RawH2};
use common::{Ca, Olive, Upstream, h2_get, text};
use http::StatusCode;

struct Site {
    ca: Arc<Ca>,
    olive: Olive,
    upstream: Upstream,
}

async fn start(limits: &str) -> Site {
    let ca = Arc::new(Ca::new());
    let upstream = Upstream::start(|_| async { text(200, "page") }).await;
    let dir = tempfile::tempdir().unwrap();
    ca.issue(dir.path(), "site", &["localhost"]);
    let toml = format!(
        r#"
[server]
access_log = false

[limits]
{limits}

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
default = true

[[upstream]]
name = "app"
addresses = ["{}"]

[[route]]
path = "/"
proxy.upstream = "app"
proxy.compress = false
"#,
        upstream.addr
    );
    let olive = Olive::start_in(dir, &toml).await;
    Site { ca, olive, upstream }
}

/// A normal visitor: a fresh HTTP/2 connection and a GET every 50 ms
/// until stopped. Returns the slowest request; panics on a failure.
struct Probe {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(usize, Duration)>,
}

impl Probe {
    fn start(site: &Site) -> Probe {
        let (ca, addr) = (site.ca.clone(), site.olive.addr("https"));
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let (mut count, mut slowest) = (0, Duration::ZERO);
            while !stopped.load(Ordering::SeqCst) {
                let began = Instant::now();
                let got =
                    tokio::time::timeout(Duration::from_secs(5), h2_get(&ca, addr, "localhost", "/probe"))
                        .await
                        .expect("a normal request took over 5 s during the attack");
                assert_eq!(got.1, StatusCode::OK);
                slowest = slowest.max(began.elapsed());
                count += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (count, slowest)
        });
        Probe { stop, task }
    }

    /// Stops and asserts every request was quick.
    async fn finish(self, what: &str) {
        self.stop.store(true, Ordering::SeqCst);
        let (count, slowest) = self.task.await.unwrap();
        eprintln!("{what}: {count} normal requests, slowest {slowest:?}");
        assert!(count >= 1, "{what}: no normal request");
        assert!(slowest < Duration::from_secs(1), "{what}: a normal request took {slowest:?}");
    }
}

/// Resident memory of this process (olive runs in it), in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Requests the attacker got through to the upstream (the probe's are
/// on `/probe`).
fn attacked(upstream: &Upstream) -> usize {
    upstream.requests().iter().filter(|r| r.uri.path() != "/probe").count()
}

/// `olive_rate_limited_total{limit="h2_enhance_your_calm"}`: connections
/// olive's h2 limits sent away.
async fn calmed(site: &Site) -> u64 {
    let text =
        common::client().get(site.olive.url("admin", "/metrics")).send().await.unwrap().text().await.unwrap();
    let line =
        text.lines().find(|l| l.starts_with("olive_rate_limited_total{limit=\"h2_enhance_your_calm\"}"));
    line.and_then(|l| l.rsplit(' ').next()?.parse().ok()).expect("no h2_enhance_your_calm series")
}

fn assert_calm(log: &h2raw::Log, what: &str) {
    assert_eq!(
        log.goaway.map(|(_, code)| code),
        Some(h2raw::ENHANCE_YOUR_CALM),
        "{what}: expected GOAWAY(ENHANCE_YOUR_CALM), got {log:?}"
    );
    assert!(log.closed, "{what}: connection still open after GOAWAY");
}

/// Rapid reset: thousands of requests, each cancelled in the same write
/// that opens it. Past `h2_max_pending_accept_reset_streams` the
/// connection is told to go away, and few requests reach the upstream.
#[tokio::test]
async fn rapid_reset_gets_goaway() {
    let site = start("h2_max_pending_accept_reset_streams = 20").await;
    let probe = Probe::start(&site);
    let rss = rss_kib();
    let mut attacker = RawH2::connect(&site.ca, site.olive.addr("https"), true).await;
    let mut sent = 0;
    for batch in 0..100u32 {
        let mut bytes = Vec::new();
        for i in 0..100u32 {
            let stream = 1 + 2 * (batch * 100 + i);
            bytes.extend(h2raw::get(stream, "/"));
            bytes.extend(h2raw::rst_stream(stream, h2raw::CANCEL));
        }
        if attacker.send(&bytes).await.is_err() || attacker.log().closed {
            break;
        }
        sent += 100;
    }
    let log = attacker.wait(Duration::from_secs(5), |l| l.closed).await;
    assert_calm(&log, "rapid reset");
    let reached = attacked(&site.upstream);
    eprintln!(
        "rapid reset: {sent} streams sent, {reached} reached the upstream, rss +{} KiB",
        rss_kib() - rss
    );
    assert!(sent < 10_000, "olive read all 10,000 resets without a GOAWAY");
    assert!(reached <= 200, "{reached} cancelled requests reached the upstream");
    assert_eq!(calmed(&site).await, 1);
    probe.finish("rapid reset").await;
}

/// Streams the client breaks on purpose (a content-length its DATA does
/// not match is a stream error, RFC 9113 §8.1.1), so that olive resets
/// them itself:
/// past `h2_max_local_error_reset_streams` the connection goes away.
#[tokio::test]
async fn stream_errors_on_purpose_get_goaway() {
    let site = start("h2_max_local_error_reset_streams = 50").await;
    let probe = Probe::start(&site);
    let mut attacker = RawH2::connect(&site.ca, site.olive.addr("https"), true).await;
    let mut fields = h2raw::request("POST", "/");
    fields.push(("content-length", "5"));
    let bad = h2raw::block(&fields);
    let broken = |stream| h2raw::frame(h2raw::HEADERS, h2raw::END_HEADERS | h2raw::END_STREAM, stream, &bad);
    // Below the limit: the connection is kept.
    let few: Vec<u8> = (1..80u32).step_by(2).flat_map(broken).collect();
    attacker.send(&few).await.unwrap();
    let log = attacker.wait(Duration::from_millis(500), |l| l.closed).await;
    assert!(log.goaway.is_none() && !log.closed, "40 stream errors (limit 50) ended the connection: {log:?}");
    for stream in (81..2000u32).step_by(2) {
        if attacker.send(&broken(stream)).await.is_err() || attacker.log().closed {
            break;
        }
    }
    let log = attacker.wait(Duration::from_secs(5), |l| l.closed).await;
    assert_calm(&log, "stream errors");
    assert_eq!(calmed(&site).await, 1);
    assert!(attacked(&site.upstream) == 0);
    probe.finish("stream errors").await;
}

/// A header block that never ends: HEADERS without END_HEADERS, then
/// CONTINUATION frames forever (tiny ones, and full ones). olive stops
/// reading within a few frames past `max_header_bytes`.
#[tokio::test]
async fn continuation_flood_gets_goaway() {
    let site = start("max_header_bytes = 16384").await;
    let probe = Probe::start(&site);
    for chunk in [1usize, 16_384] {
        let mut attacker = RawH2::connect(&site.ca, site.olive.addr("https"), true).await;
        // A valid block that ends in the start of a 1 MiB field value; the
        // CONTINUATION frames carry the rest of it.
        let mut first = h2raw::block(&h2raw::request("GET", "/"));
        first.extend(b"\x00\x08x-filler");
        h2raw::integer(&mut first, 1 << 20, 7);
        attacker.send(&h2raw::frame(h2raw::HEADERS, h2raw::END_STREAM, 1, &first)).await.unwrap();
        let piece = vec![b'a'; chunk];
        let mut sent = 0usize;
        let began = Instant::now();
        while sent < 64 << 20 && began.elapsed() < Duration::from_secs(10) {
            let f = h2raw::frame(h2raw::CONTINUATION, 0, 1, &piece);
            if attacker.send(&f).await.is_err() || attacker.log().closed {
                break;
            }
            sent += f.len();
        }
        let log = attacker.wait(Duration::from_secs(5), |l| l.closed).await;
        eprintln!("continuation flood ({chunk} B frames): {sent} bytes sent before the close, {log:?}");
        assert_calm(&log, "continuation flood");
        assert!(sent < 4 << 20, "{chunk} B frames: olive read {sent} bytes of one header block");
    }
    assert!(attacked(&site.upstream) == 0);
    assert_eq!(calmed(&site).await, 2);
    probe.finish("continuation flood").await;
}

/// More streams at once than `h2_max_concurrent_streams`: the extra
/// ones are refused (RST_STREAM REFUSED_STREAM, RFC 9113 §5.1.2), the
/// open ones still complete, the connection stays usable.
#[tokio::test]
async fn streams_past_the_limit_are_refused() {
    let site = start("h2_max_concurrent_streams = 10").await;
    let probe = Probe::start(&site);
    let mut attacker = RawH2::connect(&site.ca, site.olive.addr("https"), true).await;
    // POSTs whose bodies never come keep their streams open.
    let mut fields = h2raw::request("POST", "/");
    fields.push(("content-length", "2"));
    let open = h2raw::block(&fields);
    let mut bytes = Vec::new();
    for stream in (1..=59u32).step_by(2) {
        bytes.extend(h2raw::frame(h2raw::HEADERS, h2raw::END_HEADERS, stream, &open));
    }
    attacker.send(&bytes).await.unwrap();
    let log = attacker.wait(Duration::from_secs(5), |l| l.resets.len() >= 20).await;
    let refused: Vec<u32> = log.resets.iter().filter(|r| r.1 == h2raw::REFUSED_STREAM).map(|r| r.0).collect();
    assert_eq!(refused, (21..=59).step_by(2).collect::<Vec<_>>(), "{log:?}");
    assert!(log.goaway.is_none());
    // The first stream's body arrives: it is answered.
    attacker.send(&h2raw::frame(h2raw::DATA, h2raw::END_STREAM, 1, b"hi")).await.unwrap();
    let log = attacker.wait(Duration::from_secs(5), |l| l.responses.contains(&1)).await;
    assert!(log.responses.contains(&1), "{log:?}");
    assert_eq!(attacked(&site.upstream), 1);
    probe.finish("concurrent streams").await;
}

/// A header list over `max_header_bytes` (in HEADERS + CONTINUATION) is
/// refused with 431 or a reset, never forwarded; the connection stays up.
#[tokio::test]
async fn oversized_header_list_is_refused() {
    let site = start("max_header_bytes = 16384").await;
    let mut attacker = RawH2::connect(&site.ca, site.olive.addr("https"), true).await;
    let mut fields = h2raw::request("GET", "/");
    let big = "b".repeat(8000);
    for name in ["x-a", "x-b", "x-c"] {
        fields.push((name, &big));
    }
    let block = h2raw::block(&fields);
    let (head, rest) = block.split_at(12_000);
    let mut bytes = h2raw::frame(h2raw::HEADERS, h2raw::END_STREAM, 1, head);
    bytes.extend(h2raw::frame(h2raw::CONTINUATION, h2raw::END_HEADERS, 1, rest));
    attacker.send(&bytes).await.unwrap();
    let log =
        attacker.wait(Duration::from_secs(5), |l| !l.responses.is_empty() || !l.resets.is_empty()).await;
    assert!(log.responses.contains(&1) || log.resets.iter().any(|r| r.0 == 1), "{log:?}");
    assert!(attacked(&site.upstream) == 0, "an oversized request was forwarded");
    // The same connection still serves a normal request.
    attacker.send(&h2raw::get(3, "/")).await.unwrap();
    let log = attacker.wait(Duration::from_secs(5), |l| l.responses.contains(&3)).await;
    assert!(log.responses.contains(&3) && log.goaway.is_none(), "{log:?}");
    assert_eq!(attacked(&site.upstream), 1);
}

/// SETTINGS and PING floods from a client that never reads the ACKs:
/// h2 answers each before reading the next frame, so olive's writes
/// stall, it stops reading, and `send_timeout` ends the connection.
/// Memory stays flat; a client that does read its ACKs only costs CPU.
#[tokio::test]
async fn settings_and_ping_floods_are_bounded() {
    let site = start("send_timeout = \"2s\"").await;
    let probe = Probe::start(&site);
    let rss = rss_kib();
    for kind in [h2raw::SETTINGS, h2raw::PING] {
        let mut attacker = RawH2::connect(&site.ca, site.olive.addr("https"), false).await;
        let payload = if kind == h2raw::PING { vec![0u8; 8] } else { vec![] };
        let batch: Vec<u8> = (0..1000).flat_map(|_| h2raw::frame(kind, 0, 0, &payload)).collect();
        let began = Instant::now();
        let mut sent = 0usize;
        let ended = tokio::time::timeout(Duration::from_secs(20), async {
            while attacker.send(&batch).await.is_ok() {
                sent += 1000;
            }
        })
        .await;
        eprintln!("{kind} flood, not reading: {sent} frames, cut after {:?}", began.elapsed());
        assert!(ended.is_ok(), "the flooding connection was still open after 20 s");
    }
    // A flooder that reads: 200,000 SETTINGS, all acknowledged.
    let mut reader = RawH2::connect(&site.ca, site.olive.addr("https"), true).await;
    let batch: Vec<u8> = (0..1000).flat_map(|_| h2raw::frame(h2raw::SETTINGS, 0, 0, &[])).collect();
    for _ in 0..200 {
        if reader.send(&batch).await.is_err() {
            break;
        }
    }
    let grew = rss_kib().saturating_sub(rss);
    eprintln!("floods: rss +{grew} KiB");
    assert!(grew < 64 * 1024, "memory grew by {grew} KiB during the floods");
    probe.finish("settings/ping floods").await;
}
