//! `olive tail` and `olive post`: the real binary against an in-process
//! olive, over ws and wss, with the exit codes scripts rely on
//! (`src/cli/client.rs`, `EXIT_CODES`).

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{Ca, Olive, WsEcho};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

/// Every run of the binary must finish within this.
const RUN_TIMEOUT: Duration = Duration::from_secs(30);

const KEY: &str = "olive.cli.note.1";

/// `olive ARGS`, with none of the client's environment inherited.
fn cli(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_olive"));
    cmd.args(args)
        .env_remove("OLIVE_URL")
        .env_remove("OLIVE_TOKEN")
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

#[derive(Debug)]
struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn output(mut cmd: Command) -> Output {
    let out = tokio::time::timeout(RUN_TIMEOUT, cmd.output()).await.expect("olive exits in time").unwrap();
    Output {
        code: out.status.code().expect("an exit code, not a signal"),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// `olive post KEY TEXT --url URL EXTRA...` (no TEXT when it is empty).
async fn post(url: &str, key: &str, text: &str, extra: &[&str]) -> Output {
    let mut args = vec!["post", key];
    args.extend([text].into_iter().filter(|t| !t.is_empty()));
    args.extend(["--url", url]);
    args.extend_from_slice(extra);
    output(cli(&args)).await
}

/// Posts and returns the id olive acked.
async fn post_ok(url: &str, key: &str, text: &str, extra: &[&str]) -> String {
    let out = post(url, key, text, extra).await;
    assert_eq!(out.code, 0, "{out:?}");
    let id = out.stdout.trim().to_owned();
    assert_eq!(id.len(), 26, "a message id: {out:?}");
    id
}

/// A running `olive tail`, already subscribed to all its patterns.
struct Tail {
    child: Child,
    stderr: JoinHandle<String>,
}

impl Tail {
    /// Starts `olive tail ARGS` and waits until it says it is subscribed
    /// to each of `patterns` (stderr), so that what is published next
    /// reaches it.
    async fn start(args: &[&str], patterns: usize) -> Tail {
        let mut child = cli(&[&["tail"], args].concat()).spawn().unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut seen = String::new();
        let mut subscribed = 0;
        while subscribed < patterns {
            let line = tokio::time::timeout(RUN_TIMEOUT, lines.next_line())
                .await
                .unwrap_or_else(|_| panic!("tail did not subscribe in time: {seen}"))
                .unwrap()
                .unwrap_or_else(|| panic!("tail ended before subscribing: {seen}"));
            subscribed += usize::from(line.starts_with("olive tail: subscribed to "));
            seen.push_str(&line);
            seen.push('\n');
        }
        let stderr = tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                seen.push_str(&line);
                seen.push('\n');
            }
            seen
        });
        Tail { child, stderr }
    }

    async fn finish(mut self) -> Output {
        let status = tokio::time::timeout(RUN_TIMEOUT, self.child.wait()).await.expect("tail exits").unwrap();
        let mut stdout = String::new();
        self.child.stdout.take().unwrap().read_to_string(&mut stdout).await.unwrap();
        Output { code: status.code().unwrap(), stdout, stderr: self.stderr.await.unwrap() }
    }
}

fn ws_url(olive: &Olive) -> String {
    format!("ws://{}/olive/ws", olive.addr("http"))
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

#[tokio::test]
async fn post_is_acked_and_tail_prints_json_frames_and_human_lines() {
    let olive = Olive::start(&common::live::config("", "")).await;
    let url = ws_url(&olive);
    let json_tail = Tail::start(&[KEY, "--url", &url, "--json", "--count", "3"], 1).await;
    let human = Tail::start(&["olive.cli.#", "--url", &url, "--count", "3"], 1).await;

    let first = post_ok(&url, KEY, "hello there", &[]).await;
    let second = post_ok(&url, KEY, "", &["--data", r#"{"html":"<p>bold &amp; <b>brave</b></p>"}"#]).await;
    let third = post_ok(&url, KEY, "", &["--data", "[1,2]"]).await;
    assert!(first < second && second < third, "ids are time-ordered");

    let out = json_tail.finish().await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        json_lines(&out.stdout),
        [
            json!({"type": "message", "key": KEY, "id": first, "data": {"text": "hello there"}}),
            json!({"type": "message", "key": KEY, "id": second, "data": {"html": "<p>bold &amp; <b>brave</b></p>"}}),
            json!({"type": "message", "key": KEY, "id": third, "data": [1, 2]}),
        ]
    );

    let out = human.finish().await;
    assert_eq!(out.code, 0, "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{out:?}");
    for (line, want) in lines.iter().zip(["hello there", "bold & brave", "[1,2]"]) {
        let (time, rest) = line.split_once(' ').unwrap();
        assert!(time.len() == 24 && time.ends_with('Z'), "an RFC 3339 UTC time: {line}");
        assert_eq!(rest, format!("{KEY} {want}"));
    }
    olive.stop().await;
}

#[tokio::test]
async fn tail_since_replays_what_it_missed() {
    let olive = Olive::start(&common::live::config("", "")).await;
    let url = ws_url(&olive);
    // History is kept while the node has the key bound: hold a subscriber.
    let mut holder = common::live::connect(&olive).await;
    common::live::subscribe(&mut holder, KEY).await;
    let ids = [
        post_ok(&url, KEY, "one", &[]).await,
        post_ok(&url, KEY, "two", &[]).await,
        post_ok(&url, KEY, "three", &[]).await,
    ];

    let out = output(cli(&["tail", KEY, "--url", &url, "--json", "--since", &ids[0], "--count", "2"])).await;
    assert_eq!(out.code, 0, "{out:?}");
    let got: Vec<Value> = json_lines(&out.stdout).into_iter().map(|m| m["id"].clone()).collect();
    assert_eq!(got, [json!(ids[1]), json!(ids[2])]);
    assert!(out.stderr.contains(&format!("subscribed to {KEY}, resumed")), "{out:?}");
    olive.stop().await;
}

/// An olive with an https listener whose certificate the test CA signed
/// for `localhost`; returns it and the CA's PEM file.
async fn tls_olive() -> (Olive, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    ca.issue(dir.path(), "site", &["localhost"]);
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let toml = format!(
        r#"
[server]
access_log = false

[auth]
{open}

[[listener]]
name = "https"
kind = "https"
bind = "127.0.0.1:0"

[[certificate]]
cert = "{{dir}}/site-cert.pem"
key = "{{dir}}/site-key.pem"

[[route]]
path = "/olive"
live = {{}}
"#,
        open = common::live::OPEN
    );
    (Olive::start_in(dir, &toml).await, ca_file)
}

#[tokio::test]
async fn wss_with_insecure_or_a_trusted_ca_and_refused_otherwise() {
    let (olive, ca_file) = tls_olive().await;
    let url = format!("wss://localhost:{}/olive/ws", olive.addr("https").port());

    let tail = Tail::start(&[KEY, "--url", &url, "--insecure", "--json", "--count", "2"], 1).await;
    let insecure = post_ok(&url, KEY, "over tls", &["--insecure"]).await;

    // Verified for real against the CA, found through SSL_CERT_FILE.
    let mut cmd = cli(&["post", KEY, "verified", "--url", &url]);
    cmd.env("SSL_CERT_FILE", &ca_file);
    let out = output(cmd).await;
    assert_eq!(out.code, 0, "{out:?}");
    let verified = out.stdout.trim().to_owned();

    let out = tail.finish().await;
    assert_eq!(out.code, 0, "{out:?}");
    let ids: Vec<Value> = json_lines(&out.stdout).into_iter().map(|m| m["id"].clone()).collect();
    assert_eq!(ids, [json!(insecure), json!(verified)]);

    // A certificate no trusted root signed: connection failed (2), with a hint.
    let other_ca = olive.dir.path().join("other-ca.pem");
    std::fs::write(&other_ca, Ca::new().pem()).unwrap();
    let mut cmd = cli(&["post", KEY, "nope", "--url", &url]);
    cmd.env("SSL_CERT_FILE", &other_ca);
    let out = output(cmd).await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("--insecure"), "{out:?}");
    olive.stop().await;
}

/// A port nothing listens on.
async fn closed_port() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn connection_refused_exits_2() {
    let url = format!("ws://127.0.0.1:{}/olive/ws", closed_port().await);
    let out = post(&url, KEY, "hi", &[]).await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.starts_with("olive post: connecting to 127.0.0.1:"), "{out:?}");

    let out = output(cli(&["tail", KEY, "--url", &url, "--once"])).await;
    assert_eq!(out.code, 2, "{out:?}");
}

#[tokio::test]
async fn a_url_without_a_websocket_exits_2() {
    let olive = Olive::start(&common::live::config("", "")).await;
    let url = format!("ws://{}/nothing/here", olive.addr("http"));
    let out = post(&url, KEY, "hi", &[]).await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("answered the websocket upgrade with"), "{out:?}");
    olive.stop().await;
}

#[tokio::test]
async fn error_frames_exit_3() {
    let olive = Olive::start(&common::live::config("", "")).await;
    let url = ws_url(&olive);
    let out = post(&url, "olive..bad", "hi", &[]).await;
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stderr.starts_with("olive post: invalid: "), "{out:?}");
    assert_eq!(out.stdout, "");

    let out = post(&url, "olive.cli.#", "a pattern is not a key", &[]).await;
    assert_eq!(out.code, 3, "{out:?}");

    // A refused subscription ends tail even without --once: retrying cannot help.
    let out = output(cli(&["tail", "olive..bad", "--url", &url])).await;
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stderr.contains("invalid: "), "{out:?}");
    olive.stop().await;
}

#[tokio::test]
async fn a_broker_that_is_down_exits_4() {
    let port = closed_port().await;
    let live = format!(
        "broker = \"amqp\"\n\n[live.amqp]\nurl = \"amqp://guest:guest@127.0.0.1:{port}/%2f\"\nreconnect_max = \"1s\"\n"
    );
    let olive = Olive::start(&common::live::config(&live, "")).await;
    let out = post(&ws_url(&olive), KEY, "hi", &[]).await;
    assert_eq!(out.code, 4, "{out:?}");
    assert!(out.stderr.starts_with("olive post: unavailable: "), "{out:?}");
    olive.stop().await;
}

#[tokio::test]
async fn token_and_origin_are_sent_on_the_upgrade_and_no_ack_in_time_exits_4() {
    // An echo server answers the publish with the publish itself, never an
    // ack: post gives up after --timeout.
    let echo = WsEcho::start().await;
    let url = format!("ws://{}/olive/ws", echo.addr);
    let out =
        post(&url, KEY, "hi", &["--token", "t0k3n", "--origin", "https://example.com", "--timeout", "500ms"])
            .await;
    assert_eq!(out.code, 4, "{out:?}");
    assert!(out.stderr.contains("no ack within 500ms"), "{out:?}");

    let mut cmd = cli(&["post", KEY, "hi", "--timeout", "200ms"]);
    cmd.env("OLIVE_URL", &url).env("OLIVE_TOKEN", "from-env");
    assert_eq!(output(cmd).await.code, 4);

    let seen = echo.requests();
    let header = |i: usize, name: &str| seen[i].headers.get(name).map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(header(0, "authorization").as_deref(), Some("Bearer t0k3n"));
    assert_eq!(header(0, "origin").as_deref(), Some("https://example.com"));
    assert_eq!(header(1, "authorization").as_deref(), Some("Bearer from-env"));
    assert_eq!(header(1, "origin"), None);
}

#[tokio::test]
async fn usage_errors_exit_1() {
    for args in [
        &["post", KEY, "--data", "{not json", "--url", "ws://127.0.0.1:9/olive/ws"][..],
        &["post", KEY, "hi", "--url", "http://127.0.0.1:9/olive/ws"],
        &["post", KEY, "--url", "ws://127.0.0.1:9/olive/ws"],
        &["post", KEY, "hi"],
        &["tail", "--url", "ws://127.0.0.1:9/olive/ws"],
        &["tail", KEY, "--url", "ws://127.0.0.1:9/olive/ws", "--count", "many"],
        &["no-such-command"],
    ] {
        let out = output(cli(args)).await;
        assert_eq!(out.code, 1, "{args:?}: {out:?}");
        assert!(!out.stderr.is_empty(), "{args:?}");
    }
    let out = output(cli(&["tail", "--help"])).await;
    assert_eq!(out.code, 0);
    assert!(out.stdout.contains("Exit codes:"), "{out:?}");
}

#[tokio::test]
async fn tail_reconnects_until_olive_is_up_and_stops_on_sigint_with_0() {
    let port = closed_port().await;
    let url = format!("ws://127.0.0.1:{port}/olive/ws");
    let config = common::live::config("", "").replacen("127.0.0.1:0", &format!("127.0.0.1:{port}"), 1);
    let args = [KEY, "--url", &url];
    let (mut tail, olive) = tokio::join!(Tail::start(&args, 1), async {
        // Long enough for tail to fail and retry at least once.
        tokio::time::sleep(Duration::from_millis(700)).await;
        Olive::start(&config).await
    });

    let id = post_ok(&url, KEY, "back again", &[]).await;
    let mut stdout = BufReader::new(tail.child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(RUN_TIMEOUT, stdout.next_line()).await.unwrap().unwrap().unwrap();
    assert!(line.ends_with(&format!(" {KEY} back again")), "{line} ({id})");

    let pid = tail.child.id().unwrap().to_string();
    let kill = Command::new("kill").args(["-INT", &pid]).status().await.unwrap();
    assert!(kill.success());
    let status = tokio::time::timeout(RUN_TIMEOUT, tail.child.wait()).await.unwrap().unwrap();
    let stderr = tail.stderr.await.unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("reconnecting in "), "{stderr}");
    olive.stop().await;
}
