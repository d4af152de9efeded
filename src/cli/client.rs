//! The websocket client behind `olive tail` and `olive post`: connects to
//! a live route over ws or wss, speaks wire protocol v1, and decides how
//! every way of failing maps to the documented exit codes (the one place
//! that mapping lives, [`Failure`]).

use std::fmt;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::header::{AUTHORIZATION, HeaderValue, ORIGIN};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use serde::Deserialize;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// The exit-code table, shown by `olive tail --help` and `olive post --help`
/// (and in the README): scripts may rely on it.
pub const EXIT_CODES: &str = "\
Exit codes:
  0  done: post was acknowledged; tail printed --count messages, or was stopped by SIGINT/SIGTERM
  1  usage or configuration: bad arguments, URL, --data, token, or no trusted root certificates
  2  connection failed: unreachable, TLS verification failed, no websocket at the URL,
     or the connection was lost (tail reconnects instead unless --once or --count)
  3  refused: an error frame with code invalid, forbidden or too_large; the upgrade was
     answered 401 or 403; the connection was closed for a policy reason (1008, 4401, 4403)
  4  unavailable, try again later: an error frame with code unavailable or rate_limited;
     the upgrade was answered 429 or 503; the server went away (close 1001, 1012, 1013);
     post got no ack within --timeout";

/// Largest frame accepted from the server. olive's frames are one message
/// (at most `live.max_frame_bytes` of data, 64 KiB by default) plus its
/// envelope; 4 MiB leaves room for sites that raise the limit while still
/// bounding what a wrong URL can make the client buffer.
const MAX_FRAME_BYTES: usize = 4 << 20;

/// The client pings this often so that a dead connection (a peer gone
/// without a FIN) is noticed even when no messages flow.
const PING_INTERVAL: Duration = Duration::from_secs(30);

/// Silence (not even a pong or olive's own ping) after which the
/// connection counts as lost: two and a half client ping intervals.
const IDLE_TIMEOUT: Duration = Duration::from_secs(75);

/// How long a graceful close waits for the server's close frame.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// What the documented exit codes mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok = 0,
    Usage = 1,
    Connection = 2,
    Refused = 3,
    Unavailable = 4,
}

impl From<Status> for ExitCode {
    fn from(status: Status) -> ExitCode {
        ExitCode::from(status as u8)
    }
}

/// Why a client command failed: the exit status and what to tell the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub status: Status,
    pub message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl Failure {
    pub fn new(status: Status, message: impl Into<String>) -> Failure {
        Failure { status, message: message.into() }
    }

    pub fn usage(message: impl Into<String>) -> Failure {
        Failure::new(Status::Usage, message)
    }

    pub fn connection(message: impl Into<String>) -> Failure {
        Failure::new(Status::Connection, message)
    }

    /// An `error` frame from olive, by its protocol error code. Codes this
    /// client does not know yet count as refusals: retrying will not help.
    pub fn from_error_frame(code: &str, message: &str) -> Failure {
        let status = match code {
            "unavailable" | "rate_limited" => Status::Unavailable,
            _ => Status::Refused,
        };
        Failure::new(status, format!("{code}: {message}"))
    }

    /// The upgrade was answered with something other than 101.
    fn from_http_status(status: http::StatusCode) -> Failure {
        let kind = match status.as_u16() {
            401 | 403 => Status::Refused,
            429 | 503 => Status::Unavailable,
            _ => Status::Connection,
        };
        Failure::new(kind, format!("the server answered the websocket upgrade with {status}"))
    }

    /// The server closed the websocket (or the connection just ended).
    fn from_close(frame: Option<&CloseFrame>) -> Failure {
        let Some(frame) = frame else {
            return Failure::connection("the server closed the connection");
        };
        let status = match u16::from(frame.code) {
            1001 | 1012 | 1013 => Status::Unavailable,
            1008 | 4401 | 4403 => Status::Refused,
            _ => Status::Connection,
        };
        let reason = if frame.reason.is_empty() { String::new() } else { format!(": {}", frame.reason) };
        Failure::new(status, format!("the server closed the connection ({}{reason})", u16::from(frame.code)))
    }
}

/// How to reach olive; shared by `tail` and `post`.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectArgs {
    /// The live route's websocket URL, ws:// or wss://, for example
    /// wss://example.com/olive/ws.
    #[arg(long, env = "OLIVE_URL", value_name = "URL")]
    pub url: String,
    /// Token sent as `Authorization: Bearer TOKEN` on the upgrade.
    #[arg(long, env = "OLIVE_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Origin header to send on the upgrade.
    #[arg(long, value_name = "ORIGIN")]
    pub origin: Option<String>,
    /// Accept any server certificate (a self-signed development
    /// certificate). Without it, wss:// is verified against the system's
    /// root certificates (SSL_CERT_FILE / SSL_CERT_DIR override them).
    #[arg(long)]
    pub insecure: bool,
    /// Time allowed to connect (TCP, TLS, websocket upgrade) and, for
    /// post, to wait for the ack.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub timeout: Duration,
}

/// Where to connect, from the URL.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    secure: bool,
    /// Without IPv6 brackets: what DNS, TCP and TLS want.
    host: String,
    port: u16,
}

impl Target {
    fn parse(url: &str) -> Result<Target, Failure> {
        let bad = |why: &str| Failure::usage(format!("--url {url:?}: {why}"));
        let uri: http::Uri = url.parse().map_err(|e| bad(&format!("{e}")))?;
        let secure = match uri.scheme_str() {
            Some("wss") => true,
            Some("ws") => false,
            _ => return Err(bad("expected a ws:// or wss:// URL")),
        };
        let host = uri.host().filter(|h| !h.is_empty()).ok_or_else(|| bad("no host"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
        Ok(Target { secure, host, port })
    }
}

type Stream = Box<dyn Io>;

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A frame from olive, as far as the client reads it. Fields it does not
/// know are ignored: the protocol is extended, never broken.
#[derive(Debug, Deserialize)]
pub struct ServerFrame {
    #[serde(rename = "type")]
    pub kind: String,
    pub key: Option<String>,
    pub id: Option<String>,
    /// As sent: JSON numbers beyond `f64` (`1e99999`) are valid JSON that
    /// `Value` refuses, and one publisher's message must not make every
    /// `olive tail` on the key fail to read its frames.
    pub data: Option<Box<serde_json::value::RawValue>>,
    pub from: Option<Sender>,
    pub code: Option<String>,
    pub message: Option<String>,
    pub recovered: Option<bool>,
    #[serde(rename = "ref")]
    pub reference: Option<Value>,
}

/// Who published a message through olive (`from`).
#[derive(Debug, Deserialize)]
pub struct Sender {
    pub user: String,
    pub name: Option<String>,
}

/// A text frame as received and as parsed.
#[derive(Debug)]
pub struct Incoming {
    pub text: String,
    pub frame: ServerFrame,
}

/// An open websocket session with olive.
pub struct Session {
    ws: WebSocketStream<Stream>,
    ping: tokio::time::Interval,
    last_heard: Instant,
}

impl Session {
    /// Connects and upgrades, all within `args.timeout`.
    pub async fn connect(args: &ConnectArgs) -> Result<Session, Failure> {
        let target = Target::parse(&args.url)?;
        let mut request =
            args.url.as_str().into_client_request().map_err(|e| Failure::usage(format!("--url: {e}")))?;
        let headers = request.headers_mut();
        if let Some(token) = &args.token {
            let value = HeaderValue::try_from(format!("Bearer {token}"))
                .map_err(|_| Failure::usage("the token is not a valid header value"))?;
            headers.insert(AUTHORIZATION, value);
        }
        if let Some(origin) = &args.origin {
            let value = HeaderValue::try_from(origin.as_str())
                .map_err(|_| Failure::usage("--origin is not a valid header value"))?;
            headers.insert(ORIGIN, value);
        }
        let tls = match target.secure {
            true => Some(tls_config(args.insecure)?),
            false => None,
        };
        let server = format!("{}:{}", target.host, target.port);
        let handshake = async {
            let tcp = TcpStream::connect((target.host.as_str(), target.port))
                .await
                .map_err(|e| Failure::connection(format!("connecting to {server}: {e}")))?;
            let _ = tcp.set_nodelay(true);
            let stream: Stream = match tls {
                None => Box::new(tcp),
                Some(config) => {
                    let name = ServerName::try_from(target.host.clone())
                        .map_err(|e| Failure::usage(format!("--url: {e}")))?;
                    let tls = tokio_rustls::TlsConnector::from(config)
                        .connect(name, tcp)
                        .await
                        .map_err(|e| tls_failure(&server, e))?;
                    Box::new(tls)
                }
            };
            let ws_config = WebSocketConfig::default()
                .max_message_size(Some(MAX_FRAME_BYTES))
                .max_frame_size(Some(MAX_FRAME_BYTES));
            let (ws, _response) =
                tokio_tungstenite::client_async_with_config(request, stream, Some(ws_config)).await.map_err(
                    |e| match e {
                        WsError::Http(response) => Failure::from_http_status(response.status()),
                        e => Failure::connection(format!("websocket upgrade with {server}: {e}")),
                    },
                )?;
            Ok(ws)
        };
        let ws = tokio::time::timeout(args.timeout, handshake).await.map_err(|_| {
            Failure::connection(format!("no websocket session with {server} within {:?}", args.timeout))
        })??;
        let mut ping = tokio::time::interval_at(Instant::now() + PING_INTERVAL, PING_INTERVAL);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Ok(Session { ws, ping, last_heard: Instant::now() })
    }

    /// Sends one protocol frame.
    pub async fn send(&mut self, frame: &Value) -> Result<(), Failure> {
        self.ws
            .send(Message::text(frame.to_string()))
            .await
            .map_err(|e| Failure::connection(format!("sending: {e}")))
    }

    /// The next text frame. Pings keep the connection checked meanwhile;
    /// binary frames (not part of the protocol) are skipped.
    pub async fn recv(&mut self) -> Result<Incoming, Failure> {
        loop {
            let message = tokio::select! {
                message = self.ws.next() => message,
                _ = self.ping.tick() => {
                    if self.last_heard.elapsed() >= IDLE_TIMEOUT {
                        return Err(Failure::connection(format!(
                            "nothing heard from the server for {IDLE_TIMEOUT:?}"
                        )));
                    }
                    self.ws
                        .send(Message::Ping(bytes::Bytes::new()))
                        .await
                        .map_err(|e| Failure::connection(format!("connection lost: {e}")))?;
                    continue;
                }
            };
            self.last_heard = Instant::now();
            match message {
                Some(Ok(Message::Text(text))) => {
                    let text = text.as_str().to_owned();
                    let frame = serde_json::from_str(&text).map_err(|e| {
                        Failure::new(Status::Refused, format!("not a protocol frame ({e}): {text}"))
                    })?;
                    return Ok(Incoming { text, frame });
                }
                Some(Ok(Message::Close(frame))) => return Err(Failure::from_close(frame.as_ref())),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(Failure::connection(format!("connection lost: {e}"))),
                None => return Err(Failure::from_close(None)),
            }
        }
    }

    /// Says goodbye (1000) and waits briefly for the server's answer.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
            if self.ws.close(None).await.is_ok() {
                while let Some(Ok(_)) = self.ws.next().await {}
            }
        })
        .await;
    }
}

fn tls_failure(server: &str, e: std::io::Error) -> Failure {
    let hint = match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidCertificate(_)) => {
            " (for a self-signed development certificate, use --insecure)"
        }
        _ => "",
    };
    Failure::connection(format!("TLS with {server}: {e}{hint}"))
}

/// TLS for wss://: the system's root certificates, or, with `--insecure`,
/// any certificate. Same crypto provider as the server (aws-lc-rs).
fn tls_config(insecure: bool) -> Result<Arc<ClientConfig>, Failure> {
    let provider = crate::edge::tls::provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Failure::usage(format!("TLS set-up: {e}")))?;
    let mut config = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth()
    } else {
        builder.with_root_certificates(system_roots()?).with_no_client_auth()
    };
    // The upgrade is an HTTP/1.1 request.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The platform's trusted roots (rustls-native-certs: the system store,
/// or SSL_CERT_FILE / SSL_CERT_DIR when set).
fn system_roots() -> Result<RootCertStore, Failure> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _unparsable) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let errors: Vec<String> = found.errors.iter().map(|e| e.to_string()).collect();
        let why = if errors.is_empty() { String::new() } else { format!(" ({})", errors.join("; ")) };
        return Err(Failure::usage(format!(
            "no trusted root certificates found{why}: install the system's CA certificates \
             or set SSL_CERT_FILE"
        )));
    }
    Ok(roots)
}

/// `--insecure`: accepts whatever certificate the server shows, but still
/// checks the handshake signatures made with it, so the session is at
/// least bound to that certificate's key.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Runs a client command on a small single-threaded runtime.
pub fn block_on<F: std::future::Future<Output = Status>>(future: F) -> ExitCode {
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime.block_on(future).into(),
        Err(e) => {
            eprintln!("olive: starting the runtime: {e}");
            Status::Usage.into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

    #[test]
    fn urls() {
        let ok = |url: &str, secure: bool, host: &str, port: u16| {
            assert_eq!(Target::parse(url).unwrap(), Target { secure, host: host.into(), port }, "{url}");
        };
        ok("ws://127.0.0.1:8080/olive/ws", false, "127.0.0.1", 8080);
        ok("wss://example.com/olive/ws", true, "example.com", 443);
        ok("ws://example.com/olive/ws", false, "example.com", 80);
        ok("wss://[::1]:8443/olive/ws", true, "::1", 8443);
        for bad in ["http://example.com/olive/ws", "example.com/olive/ws", "wss:///x", "ws://a b/"] {
            assert_eq!(Target::parse(bad).unwrap_err().status, Status::Usage, "{bad}");
        }
    }

    #[test]
    fn error_codes_map_to_exit_codes() {
        for (code, status) in [
            ("invalid", Status::Refused),
            ("forbidden", Status::Refused),
            ("too_large", Status::Refused),
            ("rate_limited", Status::Unavailable),
            ("unavailable", Status::Unavailable),
            ("something_new", Status::Refused),
        ] {
            assert_eq!(Failure::from_error_frame(code, "m").status, status, "{code}");
        }
    }

    #[test]
    fn upgrade_statuses_and_closes_map_to_exit_codes() {
        for (http, status) in [
            (401, Status::Refused),
            (403, Status::Refused),
            (429, Status::Unavailable),
            (503, Status::Unavailable),
            (404, Status::Connection),
            (502, Status::Connection),
        ] {
            let code = http::StatusCode::from_u16(http).unwrap();
            assert_eq!(Failure::from_http_status(code).status, status, "{http}");
        }
        for (close, status) in [
            (1000, Status::Connection),
            (1001, Status::Unavailable),
            (1013, Status::Unavailable),
            (1008, Status::Refused),
            (4401, Status::Refused),
            (1011, Status::Connection),
        ] {
            let frame = CloseFrame { code: CloseCode::from(close), reason: "r".into() };
            assert_eq!(Failure::from_close(Some(&frame)).status, status, "{close}");
        }
        assert_eq!(Failure::from_close(None).status, Status::Connection);
    }
}
