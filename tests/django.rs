//! Real Django under real gunicorn, behind a real olive: what Django
//! concludes about a request (HTTPS, host, client address), CSRF, uploads,
//! and a unix socket upstream.
//!
//! The Django project is `tests/django_site/`. Python comes from
//! `OLIVE_TEST_PYTHON`, else `.venv/bin/python` (made by `scripts/test`).
//! Without it these tests are skipped with one line on stderr, except under
//! `CI=true`, where they fail: CI must never pass by running nothing.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{Ca, Olive};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const HOST: &str = "www.example.test";

/// A Python that can run the test site.
#[derive(Debug)]
struct Python {
    exe: PathBuf,
    /// gunicorn ≥ 25 opens a control socket in `~/.gunicorn/` unless told
    /// not to; parallel tests would fight over it.
    has_control_socket: bool,
}

/// Prints what `python -c` needs to know, or fails to import.
const PROBE: &str = "import django, gunicorn, gunicorn.config as c; \
    print(django.get_version(), gunicorn.__version__, 'control_socket_disable' in c.Config().settings)";

/// The Python to use, found once per test binary; `None` means skip.
fn python() -> Option<&'static Python> {
    static PYTHON: OnceLock<Option<Python>> = OnceLock::new();
    PYTHON.get_or_init(find_python).as_ref()
}

fn find_python() -> Option<Python> {
    let missing = |why: String| -> Option<Python> {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true: the Django tests cannot run: {why}");
        }
        // Straight to fd 2, past the test harness's output capture, so the
        // skip is seen in a normal run.
        let _ = writeln!(std::io::stderr(), "SKIPPED tests/django.rs: {why} (run scripts/test to set it up)");
        None
    };
    let exe = match std::env::var_os("OLIVE_TEST_PYTHON") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => {
            let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
            if !venv.exists() {
                return missing(format!("no OLIVE_TEST_PYTHON and no {}", venv.display()));
            }
            venv
        }
    };
    let out = match Command::new(&exe).args(["-c", PROBE]).output() {
        Ok(out) => out,
        Err(e) => return missing(format!("cannot run {}: {e}", exe.display())),
    };
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().last().unwrap_or("");
        return missing(format!("{} cannot import django and gunicorn: {last}", exe.display()));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let has_control_socket = stdout.trim().ends_with("True");
    Some(Python { exe, has_control_socket })
}

/// The Python to use, or return from the test (a skip).
macro_rules! require_python {
    () => {
        match python() {
            Some(py) => py,
            None => return,
        }
    };
}

/// A running gunicorn serving `tests/django_site`, stopped on drop.
struct Gunicorn {
    child: Child,
    /// As olive's config wants it: `127.0.0.1:PORT` or `unix:/path`.
    upstream: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Gunicorn {
    /// gunicorn with 2 sync workers on a free loopback port.
    async fn tcp(py: &Python) -> Gunicorn {
        // Bind then drop: a port that was free a moment ago.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        Self::start(py, format!("127.0.0.1:{port}"), tempfile::tempdir().unwrap()).await
    }

    /// gunicorn with 2 sync workers on a unix socket under /tmp (socket
    /// paths are limited to about 100 bytes).
    async fn unix(py: &Python) -> Gunicorn {
        let dir = tempfile::Builder::new().prefix("olive-gunicorn").tempdir_in("/tmp").unwrap();
        let bind = format!("unix:{}", dir.path().join("django.sock").display());
        Self::start(py, bind, dir).await
    }

    /// `bind` is gunicorn's `--bind`, which is also how olive's config names
    /// the upstream address.
    async fn start(py: &Python, bind: String, dir: tempfile::TempDir) -> Gunicorn {
        let site = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/django_site");
        let log = dir.path().join("gunicorn.log");
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(&py.exe);
        cmd.args(["-m", "gunicorn", "--workers", "2", "--bind", &bind, "--error-logfile", "-"])
            .arg("--chdir")
            .arg(&site)
            .env("DJANGO_SETTINGS_MODULE", "settings")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        if py.has_control_socket {
            cmd.arg("--no-control-socket");
        }
        cmd.arg("wsgi:application");
        let child =
            cmd.spawn().unwrap_or_else(|e| panic!("starting gunicorn with {}: {e}", py.exe.display()));
        let mut g = Gunicorn { child, upstream: bind, log, _dir: dir };
        g.wait_until_answering().await;
        g
    }

    /// Polls with a real request until a worker answers it.
    async fn wait_until_answering(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("gunicorn exited with {status}:\n{}", self.log_text());
            }
            if self.answers().await {
                return;
            }
            assert!(Instant::now() < deadline, "gunicorn did not answer in 60s:\n{}", self.log_text());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn answers(&self) -> bool {
        match self.upstream.strip_prefix("unix:") {
            Some(path) => match tokio::net::UnixStream::connect(path).await {
                Ok(s) => ask_whoami(s).await,
                Err(_) => false,
            },
            None => match tokio::net::TcpStream::connect(&self.upstream).await {
                Ok(s) => ask_whoami(s).await,
                Err(_) => false,
            },
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

async fn ask_whoami<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) -> bool {
    let request = b"GET /whoami/ HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    if s.write_all(request).await.is_err() {
        return false;
    }
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    matches!(read, Ok(Ok(_))) && out.starts_with(b"HTTP/1.1 200")
}

impl Drop for Gunicorn {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- gunicorn log ---\n{}", self.log_text());
        }
        // SIGINT is gunicorn's quick shutdown: the master stops its workers,
        // then exits. SIGKILL would leave the workers behind for a while.
        let _ = Command::new("kill").args(["-INT", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// olive with an HTTPS listener (a certificate for [`HOST`] from a test CA)
/// and a plain HTTP one, proxying everything to Django.
struct Site {
    olive: Olive,
    https: reqwest::Client,
    http: reqwest::Client,
    // Dropped last: olive may still hold connections to it.
    _gunicorn: Gunicorn,
}

impl Site {
    async fn start(gunicorn: Gunicorn, upstream_extra: &str) -> Site {
        let ca = Ca::new();
        let dir = tempfile::tempdir().unwrap();
        ca.issue(dir.path(), "www", &[HOST]);
        let config = format!(
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

[[certificate]]
cert = "{{dir}}/www-cert.pem"
key = "{{dir}}/www-key.pem"

[[upstream]]
name = "django"
addresses = ["{upstream}"]
{upstream_extra}

[[route]]
path = "/"
proxy.upstream = "django"
"#,
            upstream = gunicorn.upstream
        );
        let olive = Olive::start_in(dir, &config).await;
        let https = ca.client(&[HOST], olive.addr("https"));
        let http = ca.client(&[HOST], olive.addr("http"));
        Site { olive, https, http, _gunicorn: gunicorn }
    }

    /// `https://www.example.test:PORT` (also what the browser sends as Origin).
    fn https_origin(&self) -> String {
        format!("https://{HOST}:{}", self.olive.addr("https").port())
    }

    fn https_url(&self, path: &str) -> String {
        format!("{}{path}", self.https_origin())
    }

    fn http_url(&self, path: &str) -> String {
        format!("http://{HOST}:{}{path}", self.olive.addr("http").port())
    }
}

async fn json(resp: reqwest::Response) -> Value {
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[tokio::test]
async fn django_sees_https_only_when_the_client_used_it() {
    let py = require_python!();
    let site = Site::start(Gunicorn::tcp(py).await, "").await;

    let me = json(site.https.get(site.https_url("/whoami/")).send().await.unwrap()).await;
    assert_eq!(me["is_secure"], true, "{me}");
    assert_eq!(me["scheme"], "https");
    assert_eq!(me["host"], format!("{HOST}:{}", site.olive.addr("https").port()));
    assert_eq!(me["x_forwarded_for"], "127.0.0.1");
    assert_eq!(me["path"], "/whoami/");
    assert_eq!(me["method"], "GET");

    let me = json(site.http.get(site.http_url("/whoami/")).send().await.unwrap()).await;
    assert_eq!(me["is_secure"], false, "{me}");
    assert_eq!(me["scheme"], "http");
    assert_eq!(me["host"], format!("{HOST}:{}", site.olive.addr("http").port()));
}

#[tokio::test]
async fn spoofed_forwarding_headers_do_not_reach_django() {
    let py = require_python!();
    let site = Site::start(Gunicorn::tcp(py).await, "").await;

    let me = json(
        site.https
            .get(site.https_url("/whoami/"))
            .header("x-forwarded-proto", "http")
            .header("x-forwarded-host", "evil.example")
            .header("x-forwarded-for", "6.6.6.6")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(me["is_secure"], true, "{me}");
    assert_eq!(me["host"], format!("{HOST}:{}", site.olive.addr("https").port()));
    assert_eq!(me["x_forwarded_for"], "127.0.0.1");

    let me = json(
        site.http.get(site.http_url("/whoami/")).header("x-forwarded-proto", "https").send().await.unwrap(),
    )
    .await;
    assert_eq!(me["is_secure"], false, "{me}");
    assert_eq!(me["scheme"], "http");
}

/// The CSRF cookie from a response's `Set-Cookie`, as `csrftoken=VALUE`.
fn csrf_cookie(resp: &reqwest::Response) -> String {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("csrftoken="))
        .and_then(|v| v.split(';').next())
        .unwrap_or_else(|| panic!("no csrftoken cookie in {:?}", resp.headers()))
        .to_owned()
}

/// The hidden `csrfmiddlewaretoken` value in a rendered form.
fn csrf_token(html: &str) -> String {
    let marker = "name=\"csrfmiddlewaretoken\" value=\"";
    let start = html.find(marker).unwrap_or_else(|| panic!("no token in {html}")) + marker.len();
    html[start..].split('"').next().unwrap().to_owned()
}

#[tokio::test]
async fn csrf_protected_post_over_https() {
    let py = require_python!();
    let site = Site::start(Gunicorn::tcp(py).await, "").await;
    let form_url = site.https_url("/form/");

    let page = site.https.get(&form_url).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let cookie = csrf_cookie(&page);
    let token = csrf_token(&page.text().await.unwrap());

    // What a browser sends for a same-origin form post over HTTPS.
    let post = |body: String, origin: String| {
        site.https
            .post(&form_url)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("cookie", &cookie)
            .header("origin", origin)
            .header("referer", &form_url)
            .body(body)
    };

    let ok = post(format!("csrfmiddlewaretoken={token}&text=hello+olive"), site.https_origin())
        .send()
        .await
        .unwrap();
    let status = ok.status();
    let text = ok.text().await.unwrap();
    assert_eq!(status, 200, "{text}");
    assert_eq!(text, "hello olive");

    let no_token = post("text=hello".into(), site.https_origin()).send().await.unwrap();
    assert_eq!(no_token.status(), 403);

    let cross_origin = post(format!("csrfmiddlewaretoken={token}&text=x"), "https://evil.example".into())
        .send()
        .await
        .unwrap();
    assert_eq!(cross_origin.status(), 403);
}

#[tokio::test]
async fn a_3mb_upload_reaches_django_whole() {
    let py = require_python!();
    let site = Site::start(Gunicorn::tcp(py).await, "").await;
    let size = 3_000_000;
    for (url, client) in [(site.https_url("/upload/"), &site.https), (site.http_url("/upload/"), &site.http)]
    {
        let resp = client.post(&url).body(vec![b'x'; size]).send().await.unwrap();
        let got = json(resp).await;
        assert_eq!(got["size"], size, "{url}");
    }
}

/// A chunked request body (no Content-Length) that fits olive's body buffer:
/// olive reads it whole and Django must get it whole.
#[tokio::test]
async fn a_small_chunked_upload_reaches_django_whole() {
    let py = require_python!();
    let site = Site::start(Gunicorn::tcp(py).await, "").await;
    let chunks = futures_util::stream::iter((0..10).map(|_| Ok::<_, std::io::Error>(vec![b'c'; 50_000])));
    let resp =
        site.http.post(site.http_url("/upload/")).body(reqwest::Body::wrap_stream(chunks)).send().await;
    assert_eq!(json(resp.unwrap()).await["size"], 500_000);
}

/// A chunked request body (no Content-Length) larger than olive's body
/// buffer (1 MiB by default). WSGI reads exactly `CONTENT_LENGTH` bytes, so
/// olive must spool such a body and send it with its length, as nginx does
/// with `proxy_request_buffering on`.
#[tokio::test]
async fn a_large_chunked_upload_reaches_django_whole() {
    let py = require_python!();
    let site = Site::start(Gunicorn::tcp(py).await, "").await;
    let chunks = futures_util::stream::iter((0..30).map(|_| Ok::<_, std::io::Error>(vec![b'c'; 100_000])));
    let resp =
        site.http.post(site.http_url("/upload/")).body(reqwest::Body::wrap_stream(chunks)).send().await;
    assert_eq!(json(resp.unwrap()).await["size"], 3_000_000);
}

#[tokio::test]
async fn a_slow_django_view_is_504_at_the_header_timeout() {
    let py = require_python!();
    let site = Site::start(Gunicorn::tcp(py).await, "header_timeout = \"500ms\"").await;
    let fast = site.https.get(site.https_url("/slow/?ms=50")).send().await.unwrap();
    assert_eq!(json(fast).await["slept_ms"], 50);
    let started = Instant::now();
    let slow = site.https.get(site.https_url("/slow/?ms=3000")).send().await.unwrap();
    assert_eq!(slow.status(), 504);
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
}

#[tokio::test]
async fn unix_socket_upstream() {
    let py = require_python!();
    let gunicorn = Gunicorn::unix(py).await;
    assert!(gunicorn.upstream.starts_with("unix:/tmp/"));
    let site = Site::start(gunicorn, "").await;

    let me = json(site.https.get(site.https_url("/whoami/")).send().await.unwrap()).await;
    assert_eq!(me["is_secure"], true, "{me}");
    assert_eq!(me["host"], format!("{HOST}:{}", site.olive.addr("https").port()));
    assert_eq!(me["x_forwarded_for"], "127.0.0.1");

    let resp = site.http.post(site.http_url("/upload/")).body(vec![b'u'; 200_000]).send().await.unwrap();
    assert_eq!(json(resp).await["size"], 200_000);
}
