//! django-olive, the Django side (`django/`): its Django tests
//! (`django/runtests.py`, RabbitMQ-backed where they are about AMQP) and
//! the browser end-to-end test (`django/e2e/run.py`: Debian's Chromium
//! through this build of olive over HTTPS, in front of the demo site under
//! gunicorn; with RabbitMQ, and again with the embedded broker, where
//! Django publishes with olive's HTTP API).
//!
//! Python comes from `OLIVE_TEST_PYTHON`, else `.venv/bin/python` (made by
//! `scripts/test`). Without it, or without `/usr/bin/chromium` for the
//! browser test, these tests are skipped with one line on stderr, except
//! under `CI=true`, where they fail: CI must never pass by running nothing.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

const CHROMIUM: &str = "/usr/bin/chromium";

/// One suite at a time: both start Django, and the browser test measures
/// latency, which a parallel Django suite on two cores would distort.
static SERIAL: Mutex<()> = Mutex::new(());

fn skip_or_fail(why: String) -> Option<PathBuf> {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true: the django-olive tests cannot run: {why}");
    }
    let _ =
        writeln!(std::io::stderr(), "SKIPPED tests/django_olive.rs: {why} (run scripts/test to set it up)");
    None
}

/// The venv's python with django-olive importable, or `None` (skip).
fn python() -> Option<PathBuf> {
    let exe = match std::env::var_os("OLIVE_TEST_PYTHON") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"),
    };
    let probe = Command::new(&exe)
        .args(["-c", "import django_olive, django_comments, jwt, pika, playwright"])
        .output();
    match probe {
        Ok(out) if out.status.success() => Some(exe),
        Ok(out) => skip_or_fail(format!(
            "{} cannot import django-olive's dependencies: {}",
            exe.display(),
            String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("")
        )),
        Err(e) => skip_or_fail(format!("cannot run {}: {e}", exe.display())),
    }
}

/// Runs a Python suite and fails with its output when it fails.
fn run(python: &Path, args: &[&str]) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(python).args(args).current_dir(root).output().expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The suites' own summaries, shown with --nocapture.
    print!("{stdout}");
    assert!(out.status.success(), "{args:?} failed ({}):\n{stdout}\n{stderr}", out.status);
}

#[test]
fn django_tests() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(python) = python() else { return };
    run(&python, &["django/runtests.py"]);
}

/// The browser test against this build of olive with `broker`, measuring
/// post → shown over `latency` comments.
fn browser_end_to_end(broker: &str, latency: &str) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(python) = python() else { return };
    if !Path::new(CHROMIUM).exists() {
        skip_or_fail(format!("no {CHROMIUM} (apt-get install chromium)"));
        return;
    }
    let olive = env!("CARGO_BIN_EXE_olive");
    run(&python, &["django/e2e/run.py", "--olive", olive, "--broker", broker, "--latency", latency]);
}

#[test]
fn browser_end_to_end_with_rabbitmq() {
    browser_end_to_end("amqp", "100");
}

#[test]
fn browser_end_to_end_with_the_embedded_broker() {
    browser_end_to_end("memory", "20");
}
