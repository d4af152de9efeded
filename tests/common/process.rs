//! olive as a real process (`olive serve`), for what only a process has:
//! signals (SIGHUP, SIGTERM) and sockets shared between two of them.
//!
//! The config is written to `{dir}/olive.toml` (`{dir}` in it stands for
//! the directory); olive logs JSON to stderr, from which the listeners'
//! bound addresses are read and which tests can wait on.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long olive may take to start listening, or to log what a test waits for.
const WAIT: Duration = Duration::from_secs(20);

pub struct OliveProcess {
    pub config: PathBuf,
    child: Child,
    addrs: HashMap<String, SocketAddr>,
    log: Arc<Mutex<Vec<Value>>>,
}

impl OliveProcess {
    /// Writes `toml` (which must have a `[server]` table; JSON logs are
    /// switched on in it) to `dir/olive.toml` and starts `olive serve`
    /// on it, returning once every listener in the file is listening.
    pub async fn start(dir: &Path, toml: &str) -> OliveProcess {
        let config = dir.join("olive.toml");
        write_config(&config, toml);
        let listeners = toml.matches("[[listener]]").count();
        let mut child = Command::new(env!("CARGO_BIN_EXE_olive"))
            .args(["serve", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("olive starts");
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let sink = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) => sink.lock().unwrap().push(v),
                    Err(_) => eprintln!("olive: {line}"),
                }
            }
        });
        let mut olive = OliveProcess { config, child, addrs: HashMap::new(), log };
        let listening = olive.wait_log("listening", listeners).await;
        for line in listening {
            let name = line["listener"].as_str().unwrap().to_owned();
            olive.addrs.insert(name, line["addr"].as_str().unwrap().parse().unwrap());
        }
        olive
    }

    pub fn addr(&self, listener: &str) -> SocketAddr {
        self.addrs[listener]
    }

    /// `http://ADDR/path` (https for the listener named `https`).
    pub fn url(&self, listener: &str, path: &str) -> String {
        let scheme = if listener == "https" { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.addr(listener))
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("olive is running")
    }

    /// Sends `signal` (`HUP`, `TERM`, ...) with kill(1).
    pub async fn signal(&self, signal: &str) {
        let pid = self.pid().to_string();
        let status = Command::new("kill").args(["-s", signal, &pid]).status().await.unwrap();
        assert!(status.success(), "kill -s {signal} {pid}");
    }

    /// Rewrites the config file (`{dir}` replaced as at start).
    pub fn rewrite(&self, toml: &str) {
        write_config(&self.config, toml);
    }

    /// Log lines (JSON) whose message is `message`.
    pub fn logged(&self, message: &str) -> Vec<Value> {
        self.log.lock().unwrap().iter().filter(|v| v["message"] == message).cloned().collect()
    }

    /// Waits until `message` has been logged `count` times; returns those lines.
    pub async fn wait_log(&self, message: &str, count: usize) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let lines = self.logged(message);
            if lines.len() >= count {
                return lines;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "olive did not log {message:?} {count} times; log: {:#?}",
                self.log.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for the process to exit.
    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        tokio::time::timeout(within, self.child.wait()).await.expect("olive exits in time").unwrap()
    }
}

fn write_config(path: &Path, toml: &str) {
    assert!(toml.contains("[server]\n"), "the config needs a [server] table");
    let dir = path.parent().unwrap().to_str().unwrap();
    let text = toml.replace("{dir}", dir).replacen("[server]\n", "[server]\nlog_format = \"json\"\n", 1);
    // Written aside and renamed, as an editor or a deploy tool would: a
    // reload never reads half a file.
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}
