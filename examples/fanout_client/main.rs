//! Load client for the fan-out benchmark (`bench/fanout.sh`).
//!
//! Opens N websocket subscribers (subscriber `i` on key
//! `olive.bench.item.{i % K}`), spread over several loopback source
//! addresses so that more than one address's worth of ephemeral ports
//! (about 28k) can be open; then publishes R messages per second over HTTP
//! for S seconds, round-robin over the K keys, each carrying its send time;
//! every subscriber measures publish-to-delivery latency on receipt.
//!
//! ```text
//! cargo run --release --example fanout_client -- \
//!     --ws-url ws://127.0.0.1:18090/olive/ws --publish-url http://127.0.0.1:18091/olive/publish \
//!     --subscribers 10000 --keys 1 --rate 20 --duration 20 \
//!     --source-ips 127.0.0.1,127.0.0.2,127.0.0.3,127.0.0.4 --server-pid 1234
//! ```
//!
//! Two targets, which differ only in how a subscriber subscribes and how a
//! message is published:
//! - `olive`: the subscriber sends `{"type":"subscribe","key":K}` and waits
//!   for `subscribed`; the publisher POSTs `{"key":K,"data":D}` to olive's
//!   admin publish API.
//! - `pushpin`: the subscriber connects to `WS_URL?key=K`; the GRIP backend
//!   (`bench/grip_backend.py`) subscribes the connection to channel K and
//!   sends a `subscribed` text frame; the publisher POSTs
//!   `{"items":[{"channel":K,"formats":{"ws-message":{"content":..}}}]}` to
//!   pushpin's HTTP publish API. The delivered frame has the same shape as
//!   olive's.
//!
//! `--rate 0` publishes nothing: the subscribers are held idle for the
//! duration (the connection-count scenario).
//!
//! The report is one JSON object on stdout; progress goes to stderr.
//! Subscribers run on `--threads` threads with a current-thread runtime
//! each (as olive's workers do), and each thread keeps its own counters:
//! at 200k deliveries a second, a work-stealing runtime's cross-thread
//! wake-ups and counters shared by every subscriber cost the client more
//! CPU than the server it measures. Latency is kept in a log-linear
//! histogram of microseconds with 64 sub-buckets per power of two (values
//! within 1.6%), one per thread, merged for the report: no extra
//! dependency, no per-sample storage (10k subscribers × 20 msg/s × 20 s is
//! 4M samples).
#![forbid(unsafe_code)]

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use futures_util::{SinkExt, StreamExt};
use http::{Request, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

mod frames;
mod measure;

use frames::{Frame, OPCODE_CLOSE, OPCODE_PING, OPCODE_TEXT, pong};
use measure::{Histogram, TICKS_PER_S, cpu_ticks, rss_kib};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Target {
    Olive,
    Pushpin,
}

#[derive(Debug, Parser)]
#[command(about = "fan-out load client: websocket subscribers, an HTTP publisher, latency")]
struct Args {
    /// Websocket URL (olive: ws://HOST/olive/ws; pushpin: ws://HOST/ws).
    #[arg(long)]
    ws_url: String,
    /// Publish URL (olive: http://ADMIN/olive/publish; pushpin: http://127.0.0.1:5561/publish/).
    #[arg(long, default_value = "")]
    publish_url: String,
    #[arg(long, value_enum, default_value = "olive")]
    target: Target,
    /// Websocket subscribers.
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// Keys; subscriber i subscribes to olive.bench.item.{i % keys}.
    #[arg(long, default_value_t = 1)]
    keys: usize,
    /// Messages per second, in total, round-robin over the keys; 0: hold idle.
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// Seconds of publishing (or of idle holding with --rate 0).
    #[arg(long, default_value_t = 20.0)]
    duration: f64,
    /// After the last publish, wait at most this many seconds for deliveries.
    #[arg(long, default_value_t = 30.0)]
    drain: f64,
    /// Source addresses, round-robin per connection.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1")]
    source_ips: Vec<IpAddr>,
    /// Connection attempts in flight at once.
    #[arg(long, default_value_t = 200)]
    connect_concurrency: usize,
    /// Seconds one connection (TCP, upgrade, subscribe) may take.
    #[arg(long, default_value_t = 30.0)]
    connect_timeout: f64,
    /// Server process ids (comma-separated; RSS is summed) for RSS per connection.
    #[arg(long, value_delimiter = ',')]
    server_pid: Vec<u32>,
    /// Seconds to let the server settle before each RSS reading.
    #[arg(long, default_value_t = 2.0)]
    settle: f64,
    /// Subscriber threads (0: one per CPU).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Bytes of padding added to each message's data.
    #[arg(long, default_value_t = 0)]
    payload_bytes: usize,
    /// A label copied into the report.
    #[arg(long, default_value = "")]
    label: String,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.subscribers == 0 || args.keys == 0 || args.source_ips.is_empty() {
        bail!("--subscribers, --keys and --source-ips must not be empty");
    }
    if args.rate > 0.0 && args.publish_url.is_empty() {
        bail!("--publish-url is needed when --rate is above 0");
    }
    let threads = match args.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let lanes = Lanes::start(threads)?;
    let report =
        tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(run(args, &lanes))?;
    println!("{}", serde_json::to_string(&report)?);
    // Do not wait for thousands of sockets to close one by one.
    std::process::exit(0);
}

/// Connection counters, shared by every subscriber (they change once per
/// connection, not per delivery).
#[derive(Default)]
struct Stats {
    connected: AtomicUsize,
    failed: AtomicUsize,
    disconnected: AtomicUsize,
}

/// Delivery counters of one subscriber thread.
#[derive(Default)]
struct LaneStats {
    delivered: AtomicU64,
    unparsed: AtomicU64,
    last_delivery_ns: AtomicU64,
    latency: Histogram,
}

/// The subscriber threads, each a current-thread runtime driven until the
/// process exits.
struct Lanes {
    handles: Vec<tokio::runtime::Handle>,
    stats: Vec<Arc<LaneStats>>,
}

impl Lanes {
    fn start(threads: usize) -> anyhow::Result<Lanes> {
        let mut lanes = Lanes { handles: Vec::new(), stats: Vec::new() };
        for i in 0..threads {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            lanes.handles.push(rt.handle().clone());
            lanes.stats.push(Arc::default());
            std::thread::Builder::new()
                .name(format!("subscribers-{i}"))
                .spawn(move || rt.block_on(std::future::pending::<()>()))?;
        }
        Ok(lanes)
    }

    fn delivered(&self) -> u64 {
        self.stats.iter().map(|s| s.delivered.load(Relaxed)).sum()
    }
}

async fn run(args: Args, lanes: &Lanes) -> anyhow::Result<serde_json::Value> {
    let args = Arc::new(args);
    let server = resolve(&args.ws_url)?;
    let stats = Arc::new(Stats::default());

    let rss_before = rss_kib(&args.server_pid);
    // ------------------------------------------------------------ connect
    let started = Instant::now();
    let permits = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel::<Option<usize>>();
    let first_errors = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    for i in 0..args.subscribers {
        let permit = permits.clone().acquire_owned().await.expect("never closed");
        let (args, stats, ready_tx, first_errors) =
            (args.clone(), stats.clone(), ready_tx.clone(), first_errors.clone());
        let lane = lanes.stats[i % lanes.stats.len()].clone();
        lanes.handles[i % lanes.handles.len()].spawn(async move {
            let key = i % args.keys;
            let source = args.source_ips[i % args.source_ips.len()];
            let timeout = Duration::from_secs_f64(args.connect_timeout);
            let ws = match tokio::time::timeout(timeout, connect(&args, server, source, key)).await {
                Ok(Ok(ws)) => ws,
                Ok(Err(e)) => return fail(&stats, &first_errors, &ready_tx, format!("{e:#}"), permit),
                Err(_) => return fail(&stats, &first_errors, &ready_tx, "connect timed out".into(), permit),
            };
            stats.connected.fetch_add(1, Relaxed);
            let _ = ready_tx.send(Some(key));
            drop(permit);
            receive(ws, &lane).await;
            stats.disconnected.fetch_add(1, Relaxed);
        });
    }
    drop(ready_tx);
    let mut per_key = vec![0u64; args.keys];
    let mut progress = Instant::now();
    for _ in 0..args.subscribers {
        if let Some(key) = ready_rx.recv().await.expect("every subscriber reports") {
            per_key[key] += 1;
        }
        if progress.elapsed() > Duration::from_secs(2) {
            progress = Instant::now();
            eprintln!(
                "  connecting: {} up, {} failed",
                stats.connected.load(Relaxed),
                stats.failed.load(Relaxed)
            );
        }
    }
    let connect_secs = started.elapsed().as_secs_f64();
    let connected = stats.connected.load(Relaxed);
    let failed = stats.failed.load(Relaxed);
    eprintln!("  {connected} subscribed, {failed} failed, in {connect_secs:.1}s");
    for e in first_errors.lock().expect("not poisoned").iter() {
        eprintln!("  connect error: {e}");
    }
    if !args.server_pid.is_empty() {
        tokio::time::sleep(Duration::from_secs_f64(args.settle)).await;
    }
    let rss_after = rss_kib(&args.server_pid);
    let rss_per_conn = match (rss_before, rss_after) {
        (Some(b), Some(a)) if connected > 0 => Some((a as f64 - b as f64) * 1024.0 / connected as f64),
        _ => None,
    };

    // ------------------------------------------------------------ publish
    let mut outcome = Published::default();
    let cpu_before = (cpu_ticks(&args.server_pid), cpu_ticks(&[std::process::id()]));
    if args.rate > 0.0 {
        // The publisher runs on a thread and runtime of its own, so that a
        // busy subscriber side does not delay the publishing schedule (the
        // publisher stands for Django, not for the browsers).
        let (a, keys) = (args.clone(), per_key.clone());
        outcome = tokio::task::spawn_blocking(move || {
            tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(publish(&a, &keys))
        })
        .await??;
        eprintln!(
            "  published {} in {:.1}s ({} failed); draining",
            outcome.published, outcome.secs, outcome.failed
        );
        let deadline = Instant::now() + Duration::from_secs_f64(args.drain);
        while lanes.delivered() < outcome.expected && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    } else {
        eprintln!("  holding {connected} idle connections for {:.0}s", args.duration);
        tokio::time::sleep(Duration::from_secs_f64(args.duration)).await;
    }

    // ------------------------------------------------------------ report
    let cpu_after = (cpu_ticks(&args.server_pid), cpu_ticks(&[std::process::id()]));
    let cpu_s =
        |before: Option<u64>, after: Option<u64>| Some(after?.saturating_sub(before?) as f64 / TICKS_PER_S);
    let (server_cpu, client_cpu) = (cpu_s(cpu_before.0, cpu_after.0), cpu_s(cpu_before.1, cpu_after.1));
    let delivered = lanes.delivered();
    let last = lanes.stats.iter().map(|s| s.last_delivery_ns.load(Relaxed)).max().unwrap_or(0);
    let window = last.saturating_sub(outcome.first_ns) as f64 / 1e9;
    let per_sec = if delivered > 0 && window > 0.0 { delivered as f64 / window } else { 0.0 };
    let h = Histogram::default();
    for lane in &lanes.stats {
        h.add(&lane.latency);
    }
    let ms = |us: u64| us as f64 / 1000.0;
    Ok(serde_json::json!({
        "label": args.label,
        "target": format!("{:?}", args.target).to_lowercase(),
        "subscribers": args.subscribers,
        "keys": args.keys,
        "rate": args.rate,
        "duration_s": args.duration,
        "connected": connected,
        "failed": failed,
        "connect_s": round(connect_secs, 2),
        "disconnected": stats.disconnected.load(Relaxed),
        "published": outcome.published,
        "publish_failed": outcome.failed,
        "publish_s": round(outcome.secs, 2),
        "expected": outcome.expected,
        "delivered": delivered,
        "lost": outcome.expected.saturating_sub(delivered),
        "unparsed": lanes.stats.iter().map(|s| s.unparsed.load(Relaxed)).sum::<u64>(),
        "deliveries_per_s": per_sec.round(),
        "p50_ms": ms(h.percentile(0.50)),
        "p99_ms": ms(h.percentile(0.99)),
        "max_ms": ms(h.max.load(Relaxed)),
        "rss_before_kib": rss_before,
        "rss_after_kib": rss_after,
        "rss_per_conn_bytes": rss_per_conn.map(|v| v.round()),
        "server_cpu_s": server_cpu.map(|v| round(v, 2)),
        "client_cpu_s": client_cpu.map(|v| round(v, 2)),
        "server_us_per_delivery": server_cpu.filter(|_| delivered > 0).map(|v| round(v * 1e6 / delivered as f64, 2)),
        "client_us_per_delivery": client_cpu.filter(|_| delivered > 0).map(|v| round(v * 1e6 / delivered as f64, 2)),
        "errors": outcome.errors,
    }))
}

fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}

fn fail(
    stats: &Stats,
    first_errors: &std::sync::Mutex<Vec<String>>,
    ready: &tokio::sync::mpsc::UnboundedSender<Option<usize>>,
    error: String,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    stats.failed.fetch_add(1, Relaxed);
    let mut errors = first_errors.lock().expect("not poisoned");
    if errors.len() < 5 {
        errors.push(error);
    }
    let _ = ready.send(None);
    drop(permit);
}

/// What the publisher did.
#[derive(Default)]
struct Published {
    published: u64,
    failed: u64,
    /// Deliveries owed: for each accepted publish, the subscribers of its key.
    expected: u64,
    secs: f64,
    first_ns: u64,
    errors: Vec<String>,
}

/// Publishes `rate × duration` messages at a steady rate, round-robin over
/// the keys; each request on its own task so that a slow answer does not
/// hold up the schedule.
async fn publish(args: &Args, per_key: &[u64]) -> anyhow::Result<Published> {
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let total = (args.rate * args.duration).round().max(1.0) as u64;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate));
    let mut inflight = tokio::task::JoinSet::new();
    let padding = "x".repeat(args.payload_bytes);
    let mut out = Published { first_ns: now_ns(), ..Published::default() };
    let begin = Instant::now();
    for seq in 0..total {
        tick.tick().await;
        let key = (seq % args.keys as u64) as usize;
        let body = publish_body(args.target, key, seq, &padding);
        let req = Request::post(&args.publish_url)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))?;
        let client = client.clone();
        inflight.spawn(async move {
            let resp = client.request(req).await.map_err(|e| format!("{e:#}"))?;
            let status = resp.status();
            let body = resp.into_body().collect().await.map_err(|e| format!("{e:#}"))?.to_bytes();
            if status.is_success() {
                Ok(key)
            } else {
                Err(format!("{status}: {}", String::from_utf8_lossy(&body)))
            }
        });
        while let Some(done) = inflight.try_join_next() {
            out.account(done, per_key);
        }
    }
    while let Some(done) = inflight.join_next().await {
        out.account(done, per_key);
    }
    out.secs = begin.elapsed().as_secs_f64();
    Ok(out)
}

impl Published {
    fn account(&mut self, done: Result<Result<usize, String>, tokio::task::JoinError>, per_key: &[u64]) {
        let error = match done {
            Ok(Ok(key)) => {
                self.published += 1;
                self.expected += per_key[key];
                return;
            }
            Ok(Err(e)) => e,
            Err(e) => e.to_string(),
        };
        self.failed += 1;
        if self.errors.len() < 5 {
            self.errors.push(error);
        }
    }
}

fn key_name(key: usize) -> String {
    format!("olive.bench.item.{key}")
}

/// The publish request body; the data carries the send time.
fn publish_body(target: Target, key: usize, seq: u64, padding: &str) -> String {
    let key = key_name(key);
    let data = format!(r#"{{"t":{},"seq":{seq},"pad":"{padding}"}}"#, now_ns());
    match target {
        Target::Olive => format!(r#"{{"key":"{key}","data":{data}}}"#),
        Target::Pushpin => {
            // The frame a pushpin subscriber gets: the same shape as olive's.
            let content = format!(r#"{{"type":"message","key":"{key}","data":{data}}}"#);
            serde_json::json!({
                "items": [{ "channel": key, "formats": { "ws-message": { "content": content } } }]
            })
            .to_string()
        }
    }
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

fn resolve(ws_url: &str) -> anyhow::Result<SocketAddr> {
    let req = ws_url.into_client_request().context("--ws-url")?;
    let host = req.uri().host().context("--ws-url has no host")?.trim_matches(['[', ']']);
    let port = req.uri().port_u16().unwrap_or(80);
    (host, port).to_socket_addrs()?.find(|a| a.is_ipv4()).context("--ws-url: no IPv4 address")
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// TCP from `source`, the upgrade, the subscription, and its confirmation.
async fn connect(args: &Args, server: SocketAddr, source: IpAddr, key: usize) -> anyhow::Result<Ws> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0)).with_context(|| format!("bind {source}"))?;
    let stream = socket.connect(server).await.context("connect")?;
    stream.set_nodelay(true)?;
    let url = match args.target {
        Target::Olive => args.ws_url.clone(),
        Target::Pushpin => format!("{}?key={}", args.ws_url, key_name(key)),
    };
    // Small buffers: the client holds as many connections as the server.
    let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config))
        .await
        .context("websocket handshake")?;
    if args.target == Target::Olive {
        let frame = format!(r#"{{"type":"subscribe","key":"{}"}}"#, key_name(key));
        ws.send(Message::text(frame)).await.context("send subscribe")?;
    }
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) if text.contains(r#""type":"subscribed""#) => return Ok(ws),
            Some(Ok(Message::Text(text))) => bail!("expected subscribed, got {text}"),
            Some(Ok(Message::Close(frame))) => bail!("closed before subscribed: {frame:?}"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e).context("before subscribed"),
            None => bail!("closed before subscribed"),
        }
    }
}

/// Reads deliveries until the connection ends.
///
/// tungstenite made the connection and saw the subscription confirmed;
/// from then on the client reads frames itself. At 200k deliveries a
/// second on the server's own cores, tungstenite's read path (a 4 KiB
/// buffer zeroed for every read, a `Bytes` split per frame, a stream
/// future per message) cost the client a third of its CPU, CPU the
/// server under test then did not get. Nothing is read ahead of the
/// confirmation (the server sends nothing else until the publisher
/// starts), so nothing is lost in the hand-over; should anything be, it
/// shows as lost deliveries in the report.
async fn receive(ws: Ws, stats: &LaneStats) {
    let mut stream = ws.into_inner();
    let mut buf = vec![0u8; 4096];
    let (mut start, mut end) = (0, 0);
    loop {
        while let Some(frame) = Frame::parse(&buf[start..end]) {
            let payload = &buf[start + frame.header..start + frame.header + frame.len];
            match frame.opcode {
                OPCODE_TEXT => match std::str::from_utf8(payload).ok().and_then(sent_at) {
                    Some(t) => {
                        let now = now_ns();
                        stats.latency.record(now.saturating_sub(t) / 1000);
                        stats.delivered.fetch_add(1, Relaxed);
                        stats.last_delivery_ns.fetch_max(now, Relaxed);
                    }
                    None => {
                        stats.unparsed.fetch_add(1, Relaxed);
                    }
                },
                OPCODE_CLOSE => return,
                OPCODE_PING => {
                    let answered = stream.write_all(&pong(payload)).await;
                    if answered.is_err() {
                        return;
                    }
                }
                _ => {}
            }
            start += frame.header + frame.len;
        }
        if start == end {
            (start, end) = (0, 0);
        } else if start > 0 {
            buf.copy_within(start..end, 0);
            (start, end) = (0, end - start);
        }
        if end == buf.len() {
            // A frame larger than the buffer.
            buf.resize(buf.len() * 2, 0);
        }
        match stream.read(&mut buf[end..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => end += n,
        }
    }
}

/// The send time in a delivered frame: the number after `{"t":` (the data
/// object starts with it); no full JSON parse on the hot path.
fn sent_at(text: &str) -> Option<u64> {
    if !text.contains(r#""type":"message""#) {
        return None;
    }
    let start = text.find(r#"{"t":"#)? + 5;
    let digits = &text[start..];
    let end = digits.find(|c: char| !c.is_ascii_digit()).unwrap_or(digits.len());
    digits[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sent_at_reads_the_timestamp() {
        let frame =
            r#"{"type":"message","key":"olive.bench.item.0","id":"x","data":{"t":1234,"seq":0,"pad":""}}"#;
        assert_eq!(sent_at(frame), Some(1234));
        assert_eq!(sent_at(r#"{"type":"subscribed","key":"k","recovered":false}"#), None);
    }
}
