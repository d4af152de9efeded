//! The status page (`GET /status` on the admin listener) in real headless
//! Chromium: it loads, goes live on its event stream, and its plots and
//! busiest-classes table follow real traffic (websocket deliveries,
//! publishes, proxied requests).
//!
//! Chromium is Debian's `/usr/bin/chromium`, driven by Playwright for
//! Python (`tests/browser/status_page.py`) from `OLIVE_TEST_PYTHON`, else
//! `.venv/bin/python`; `scripts/test` sets both up. Without them the test
//! is skipped with one line on stderr, except under `CI=true`, where it
//! fails.

mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::live::{send, subscribe};
use common::{Olive, Upstream, text};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio_util::sync::CancellationToken;

const CHROMIUM: &str = "/usr/bin/chromium";
const KEY: &str = "olive.status.note.1";

/// The Python with Playwright, and Chromium; `None` means skip.
fn browser() -> Option<PathBuf> {
    let missing = |why: String| -> Option<PathBuf> {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true: the status page test cannot run: {why}");
        }
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED tests/status_page.rs: {why} (run scripts/test to set it up)"
        );
        None
    };
    if !Path::new(CHROMIUM).exists() {
        return missing(format!("no {CHROMIUM}"));
    }
    let python = match std::env::var_os("OLIVE_TEST_PYTHON") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"),
    };
    let probe = std::process::Command::new(&python).args(["-c", "import playwright"]).output();
    match probe {
        Ok(out) if out.status.success() => Some(python),
        Ok(_) => missing(format!("{} cannot import playwright", python.display())),
        Err(e) => missing(format!("cannot run {}: {e}", python.display())),
    }
}

fn config(upstream: std::net::SocketAddr) -> String {
    format!(
        r##"
[server]
access_log = false

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
addresses = ["{upstream}"]

[[route]]
path = "/"
proxy.upstream = "django"

[[route]]
path = "/olive"
live = {{ }}

[auth]
{open}
"##,
        open = common::live::OPEN
    )
}

/// Two subscribers, a publish and a proxied request (answered after 20 ms)
/// every 100 ms, until `stop`.
async fn traffic(olive: &Olive, stop: CancellationToken) {
    let url = format!("ws://{}/olive/ws", olive.addr("http"));
    let mut subscribers = Vec::new();
    for _ in 0..2 {
        let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str()).await.unwrap();
        subscribe(&mut ws, KEY).await;
        subscribers.push(ws);
    }
    let (mut publisher, _) = tokio_tungstenite::connect_async(url.as_str()).await.unwrap();
    let client = common::client();
    let page = olive.url("http", "/page");
    for n in 0.. {
        if stop.is_cancelled() {
            break;
        }
        send(&mut publisher, json!({"type": "publish", "key": KEY, "data": {"n": n}, "ref": n})).await;
        assert_eq!(client.get(&page).send().await.unwrap().status(), 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(subscribers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_loads_and_its_plots_follow_traffic() {
    let Some(python) = browser() else { return };
    let upstream = Upstream::start(|_| async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        text(200, "page")
    })
    .await;
    let olive = Olive::start(&config(upstream.addr)).await;

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/status_page.py");
    let mut driver = tokio::process::Command::new(python)
        .arg(script)
        .arg(olive.url("admin", "/status"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = driver.stdin.take().unwrap();
    let mut lines = BufReader::new(driver.stdout.take().unwrap()).lines();
    let mut next = async || -> Value {
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("the browser reports in time")
            .unwrap()
            .expect("the browser script printed a line (see its stderr)");
        serde_json::from_str(&line).unwrap()
    };

    let loaded = next().await;
    assert_eq!(loaded["errors"], json!([]), "{loaded}");
    let before = &loaded["loaded"];
    assert_eq!(before["messages"], 0, "{loaded}");
    assert_eq!(before["classes"], json!([["none yet"]]), "{loaded}");

    stdin.write_all(b"go\n").await.unwrap();
    let stop = CancellationToken::new();
    let (updated, ()) = tokio::join!(
        async {
            let updated = next().await;
            stop.cancel();
            updated
        },
        traffic(&olive, stop.clone())
    );
    assert_eq!(updated["errors"], json!([]), "{updated}");
    let now = &updated["updated"];
    assert!(now["messages"].as_f64().unwrap() > 0.0, "{updated}");
    assert!(now["latency"].as_f64().unwrap() >= 20.0, "{updated}");
    // Two subscribers and the publisher, at least.
    assert!(now["connections"].as_f64().unwrap() >= 3.0, "{updated}");
    assert_ne!(now["delivered_points"], before["delivered_points"], "{updated}");
    let row = &now["classes"][0];
    assert_eq!(row[0], "olive.status.note", "{updated}");
    assert!(!updated.to_string().contains(KEY), "a raw key on the page: {updated}");
    assert!(driver.wait().await.unwrap().success());
}
