//! The in-process test kit: a real olive on port 0, real upstreams, a test
//! CA, and clients that trust it.
//!
//! ```ignore
//! let up = Upstream::start(|_| async { text(200, "hi") }).await;
//! let olive = Olive::start(&proxy_config(up.addr)).await;
//! let resp = olive.client().get(olive.url("http", "/")).send().await?;
//! ```
#![allow(dead_code)] // each test binary uses a different part of the kit

pub mod h2raw;
pub mod live;
pub mod process;
pub mod rabbit_node;
pub mod tokens;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use olive::body::{self, Body};
use olive::config::Config;
use olive::edge::Server;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Installs the crypto provider and test logging once per test binary.
pub fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let _ = tracing_subscriber::fmt()
            .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
            .with_test_writer()
            .try_init();
    });
}

/// A running olive.
pub struct Olive {
    pub dir: tempfile::TempDir,
    addrs: HashMap<String, SocketAddr>,
    connections: HashMap<String, olive::edge::OpenConnections>,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Olive {
    /// Starts olive with `toml`, in which `{dir}` stands for a fresh
    /// temporary directory that also holds the config file.
    pub async fn start(toml: &str) -> Olive {
        Self::start_in(tempfile::tempdir().unwrap(), toml).await
    }

    pub async fn start_in(dir: tempfile::TempDir, toml: &str) -> Olive {
        init();
        let text = toml.replace("{dir}", dir.path().to_str().unwrap());
        let path = dir.path().join("olive.toml");
        std::fs::write(&path, &text).unwrap();
        let config = Config::parse(&text, &path).unwrap_or_else(|e| panic!("{e}"));
        let names: Vec<String> = config.listeners.iter().map(|l| l.name.clone()).collect();
        let server = Server::bind(config).await.unwrap();
        let addrs = names.iter().map(|n| (n.clone(), server.local_addr(n).unwrap())).collect();
        let connections = names.iter().map(|n| (n.clone(), server.open_connections(n).unwrap())).collect();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server.run(shutdown.clone()));
        Olive { dir, addrs, connections, shutdown, task }
    }

    pub fn addr(&self, listener: &str) -> SocketAddr {
        self.addrs[listener]
    }

    /// Open client connections on a listener (its `max_connections`
    /// slots taken).
    pub fn open_connections(&self, listener: &str) -> usize {
        self.connections[listener].count()
    }

    /// `http://127.0.0.1:PORT/path` (or https for a TLS listener named
    /// `https`).
    pub fn url(&self, listener: &str, path: &str) -> String {
        let scheme = if listener == "https" { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.addr(listener))
    }

    /// Starts the drain (as SIGTERM does) without waiting for it.
    pub fn begin_shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Shuts down and waits for the drain to finish.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }

    pub fn finished(&self) -> bool {
        self.task.is_finished()
    }
}

/// One plain HTTP listener named `http` proxying everything to `upstream`.
pub fn proxy_config(upstream: SocketAddr, extra: &str) -> String {
    format!(
        r#"
[server]
access_log = false
{extra}

[[listener]]
name = "http"
kind = "http"
bind = "127.0.0.1:0"

[[upstream]]
name = "app"
addresses = ["{upstream}"]
connect_timeout = "500ms"

[[route]]
path = "/"
proxy.upstream = "app"
proxy.compress = false
"#
    )
}

/// A request as an upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

type Handler =
    Arc<dyn Fn(Seen) -> std::pin::Pin<Box<dyn Future<Output = Response<Body>> + Send>> + Send + Sync>;

/// A real HTTP/1.1 upstream on 127.0.0.1:0 that records what it is sent and
/// counts the connections it accepts.
pub struct Upstream {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

impl Upstream {
    pub async fn start<F, Fut>(handler: F) -> Upstream
    where
        F: Fn(Seen) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<Body>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener, Arc::new(move |seen| Box::pin(handler(seen))))
    }

    /// An upstream answering 200 with the path it was asked for.
    pub async fn echo() -> Upstream {
        Self::start(|seen| async move { text(200, seen.uri.path()) }).await
    }

    fn serve(listener: TcpListener, handler: Handler) -> Upstream {
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (conns, log) = (connections.clone(), seen.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                conns.fetch_add(1, Ordering::SeqCst);
                let (handler, log) = (handler.clone(), log.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (handler, log) = (handler.clone(), log.clone());
                        async move {
                            let (parts, incoming) = req.into_parts();
                            let body = incoming.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
                            let seen = Seen {
                                method: parts.method,
                                uri: parts.uri,
                                version: parts.version,
                                headers: parts.headers,
                                body,
                            };
                            log.lock().unwrap().push(seen.clone());
                            Ok::<_, std::convert::Infallible>(handler(seen).await)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Upstream { addr, connections, seen, task }
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn connection_count(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn text(status: u16, body_text: &str) -> Response<Body> {
    let mut resp = Response::new(body::full(body_text.to_owned()));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap();
    resp.headers_mut().insert("content-type", "text/plain".parse().unwrap());
    resp
}

/// A CA made at test time, and certificates it signs.
pub struct Ca {
    params: rcgen::CertificateParams,
    key: rcgen::KeyPair,
    cert: rcgen::Certificate,
}

impl Ca {
    pub fn new() -> Ca {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "olive test CA");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca { params, key, cert }
    }

    /// Writes `{stem}-cert.pem` and `{stem}-key.pem` for `names` into `dir`.
    pub fn issue(&self, dir: &Path, stem: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, names[0]);
        // As a public CA issues them (testssl.sh flags anything else):
        // 90 days, with a CRL to check revocation with.
        let now = time::OffsetDateTime::now_utc();
        (params.not_before, params.not_after) =
            (now - time::Duration::days(1), now + time::Duration::days(89));
        params.crl_distribution_points =
            vec![rcgen::CrlDistributionPoint { uris: vec!["http://ca.example/crl".into()] }];
        let key = rcgen::KeyPair::generate().unwrap();
        let issuer = rcgen::Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        let (cert_path, key_path) =
            (dir.join(format!("{stem}-cert.pem")), dir.join(format!("{stem}-key.pem")));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }

    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A root store holding only this CA, for hand-built client configs.
    pub fn roots(&self) -> rustls::RootCertStore {
        init();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.der().clone()).unwrap();
        roots
    }

    /// A rustls client config trusting this CA, offering `alpn`.
    pub fn client_config(&self, alpn: &[&[u8]]) -> rustls::ClientConfig {
        let mut config =
            rustls::ClientConfig::builder().with_root_certificates(self.roots()).with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config
    }

    /// A reqwest client trusting this CA that resolves every name in
    /// `names` to `addr`.
    pub fn client(&self, names: &[&str], addr: SocketAddr) -> reqwest::Client {
        init();
        let mut builder = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(self.pem().as_bytes()).unwrap()])
            .no_proxy();
        for name in names {
            builder = builder.resolve(name, addr);
        }
        builder.build().unwrap()
    }
}

/// A plain reqwest client (no TLS trust needed).
pub fn client() -> reqwest::Client {
    init();
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// Sends raw bytes on a fresh TCP connection and returns all that comes
/// back until the server closes or `wait` passes.
pub async fn raw(addr: SocketAddr, request: &[u8], wait: std::time::Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Opens a TLS connection to `addr`, verifying the certificate for
/// `server_name` (also sent as SNI unless the config disables it).
pub async fn tls_connect(
    config: rustls::ClientConfig,
    addr: SocketAddr,
    server_name: &str,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from(server_name.to_owned()).unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.unwrap()
}

/// A real websocket upstream on 127.0.0.1:0 (hyper with upgrades, as
/// daphne or uvicorn would be): websocket upgrades are accepted and every
/// data message is echoed back; any other request is answered 200 with
/// `plain PATH`. Every request head is recorded.
pub struct WsEcho {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// Websocket sessions that have ended, for whatever reason.
    pub ended: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl WsEcho {
    pub async fn start() -> WsEcho {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::WebSocketStream;
        use tokio_tungstenite::tungstenite::{handshake::derive_accept_key, protocol::Role};

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let ended = Arc::new(AtomicUsize::new(0));
        let (log, done) = (seen.clone(), ended.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let (log, done) = (log.clone(), done.clone());
                let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                    let (log, done) = (log.clone(), done.clone());
                    async move {
                        log.lock().unwrap().push(Seen {
                            method: req.method().clone(),
                            uri: req.uri().clone(),
                            version: req.version(),
                            headers: req.headers().clone(),
                            body: Bytes::new(),
                        });
                        let key = req.headers().get("sec-websocket-key").cloned();
                        let upgrade = req.headers().get("upgrade").is_some_and(|v| v == "websocket");
                        let (true, Some(key)) = (upgrade, key) else {
                            return Ok::<_, std::convert::Infallible>(text(
                                200,
                                &format!("plain {}", req.uri().path()),
                            ));
                        };
                        let on_upgrade = hyper::upgrade::on(&mut req);
                        tokio::spawn(async move {
                            if let Ok(upgraded) = on_upgrade.await {
                                let mut ws = WebSocketStream::from_raw_socket(
                                    TokioIo::new(upgraded),
                                    Role::Server,
                                    None,
                                )
                                .await;
                                while let Some(Ok(msg)) = ws.next().await {
                                    if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                                        break;
                                    }
                                }
                            }
                            done.fetch_add(1, Ordering::SeqCst);
                        });
                        let mut resp = Response::new(body::empty());
                        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                        let h = resp.headers_mut();
                        h.insert("upgrade", "websocket".parse().unwrap());
                        h.insert("connection", "upgrade".parse().unwrap());
                        h.insert("sec-websocket-accept", derive_accept_key(key.as_bytes()).parse().unwrap());
                        Ok(resp)
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades(),
                );
            }
        });
        WsEcho { addr, seen, ended, task }
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for WsEcho {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An HTTP/2 (prior knowledge over TLS) or HTTP/1.1 client built directly
/// on hyper, for checks that need the exact protocol.
pub async fn h2_get(ca: &Ca, addr: SocketAddr, host: &str, path: &str) -> (Version, StatusCode, Bytes) {
    let config = Arc::new(ca.client_config(&[b"h2"]));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from(host.to_owned()).unwrap();
    let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let req = Request::builder().uri(format!("https://{host}{path}")).body(body::empty()).unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let (version, status) = (resp.version(), resp.status());
    (version, status, resp.into_body().collect().await.unwrap().to_bytes())
}

/// Whether RabbitMQ answers on 127.0.0.1:5672; with `CI=true` a missing
/// RabbitMQ fails the test instead of skipping it.
pub fn rabbit() -> bool {
    let addr = "127.0.0.1:5672".parse().unwrap();
    match std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2)) {
        Ok(_) => true,
        Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("RabbitMQ is required in CI and is not reachable on {addr}: {e}")
        }
        Err(e) => {
            eprintln!("skipped: RabbitMQ is not reachable on {addr} ({e}); set CI=true to fail instead");
            false
        }
    }
}

/// The test Python (`OLIVE_TEST_PYTHON`, else `.venv/bin/python`, which
/// scripts/test makes) if it can import every module of `imports`
/// (comma-separated, as Python writes them). `None` skips the caller with
/// one line on stderr; under `CI=true` a missing Python fails instead.
pub fn python(imports: &str) -> Option<PathBuf> {
    let exe = match std::env::var_os("OLIVE_TEST_PYTHON") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"),
    };
    let probe = std::process::Command::new(&exe).args(["-c", &format!("import {imports}")]).output();
    let why = match probe {
        Ok(out) if out.status.success() => return Some(exe),
        Ok(out) => String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("").to_owned(),
        Err(e) => e.to_string(),
    };
    let why = format!("{} cannot import {imports}: {why} (run scripts/test)", exe.display());
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("CI=true: {why}");
    }
    // Straight to fd 2, past the harness's capture, so the skip is seen.
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED: {why}");
    None
}
