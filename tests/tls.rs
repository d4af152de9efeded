//! TLS termination: certificate choice by SNI, ALPN, protocol versions, the
//! handshake timeout, HTTP→HTTPS redirects and HSTS.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{Ca, Olive, Upstream, h2_get, raw, tls_connect};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Names the default certificate covers. None of them is listed in
/// `server_names`, so olive can only pick it as the default.
const DEFAULT_NAMES: &[&str] = &["default.example.test", "unknown.example.test"];

/// A started olive with an `https` listener holding certificates for
/// `a.example.test`, `b.example.test` and a default, proxying to `upstream`.
/// `extra` is appended to the config.
async fn start(ca: &Ca, upstream: SocketAddr, hsts: bool, extra: &str) -> Olive {
    let dir = tempfile::tempdir().unwrap();
    ca.issue(dir.path(), "a", &["a.example.test"]);
    ca.issue(dir.path(), "b", &["b.example.test"]);
    ca.issue(dir.path(), "default", DEFAULT_NAMES);
    let toml = format!(
        r#"
[server]
access_log = false

[[listener]]
name = "https"
kind = "https"
bind = "127.0.0.1:0"
hsts = {hsts}

[[certificate]]
cert = "{{dir}}/a-cert.pem"
key = "{{dir}}/a-key.pem"
server_names = ["a.example.test"]

[[certificate]]
cert = "{{dir}}/b-cert.pem"
key = "{{dir}}/b-key.pem"
server_names = ["b.example.test"]

[[certificate]]
cert = "{{dir}}/default-cert.pem"
key = "{{dir}}/default-key.pem"
default = true

[[upstream]]
name = "app"
addresses = ["{upstream}"]

[[route]]
path = "/"
proxy.upstream = "app"
proxy.compress = false

{extra}
"#
    );
    Olive::start_in(dir, &toml).await
}

/// The leaf certificate olive wrote to `{dir}/{stem}-cert.pem`.
fn issued_leaf(olive: &Olive, stem: &str) -> CertificateDer<'static> {
    CertificateDer::pem_file_iter(olive.dir.path().join(format!("{stem}-cert.pem")))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
}

/// Whether a DER certificate names `dns` (SAN dNSName entries and the CN are
/// stored as plain ASCII).
fn names(der: &[u8], dns: &str) -> bool {
    der.windows(dns.len()).any(|w| w == dns.as_bytes())
}

async fn leaf_for(ca: &Ca, olive: &Olive, name: &str, sni: bool) -> CertificateDer<'static> {
    let mut config = ca.client_config(&[]);
    config.enable_sni = sni;
    let tls = tls_connect(config, olive.addr("https"), name).await;
    tls.get_ref().1.peer_certificates().unwrap()[0].clone().into_owned()
}

#[tokio::test]
async fn sni_picks_the_certificate() {
    let ca = Ca::new();
    let up = Upstream::echo().await;
    let olive = start(&ca, up.addr, false, "").await;

    for (name, sni, stem) in [
        ("a.example.test", true, "a"),
        ("b.example.test", true, "b"),
        // Unknown SNI name: the default (which happens to cover it, so the
        // client can verify what it got).
        ("unknown.example.test", true, "default"),
        // No SNI at all: the default.
        ("default.example.test", false, "default"),
    ] {
        let leaf = leaf_for(&ca, &olive, name, sni).await;
        assert_eq!(leaf, issued_leaf(&olive, stem), "{name} (sni: {sni}) got the wrong certificate");
        assert!(names(&leaf, name), "{name}: leaf does not name it");
    }
    let a = leaf_for(&ca, &olive, "a.example.test", true).await;
    assert!(!names(&a, "b.example.test"));
}

#[tokio::test]
async fn h2_client_reaches_an_http1_upstream() {
    let ca = Ca::new();
    let up = Upstream::echo().await;
    let olive = start(&ca, up.addr, false, "").await;
    let (version, status, body) = h2_get(&ca, olive.addr("https"), "a.example.test", "/h2/path?x=1").await;
    assert_eq!(version, http::Version::HTTP_2);
    assert_eq!(status, 200);
    assert_eq!(body, "/h2/path");
    let seen = &up.requests()[0];
    assert_eq!(seen.version, http::Version::HTTP_11, "the upstream speaks HTTP/1.1");
    assert_eq!(seen.headers["host"], "a.example.test", "Host comes from :authority");
    assert_eq!(seen.uri, "/h2/path?x=1");
}

/// Sends one HTTP/1.1 request over `tls` and returns the whole answer.
async fn http1_exchange<S>(mut tls: S, host: &str, path: &str) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut out)).await.unwrap().unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn http1_over_tls() {
    let ca = Ca::new();
    let up = Upstream::echo().await;
    let olive = start(&ca, up.addr, false, "").await;
    let tls = tls_connect(ca.client_config(&[b"http/1.1"]), olive.addr("https"), "b.example.test").await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let resp = http1_exchange(tls, "b.example.test", "/one").await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.ends_with("/one"), "{resp}");

    // A client offering no ALPN at all gets HTTP/1.1 too.
    let tls = tls_connect(ca.client_config(&[]), olive.addr("https"), "b.example.test").await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), None);
    let resp = http1_exchange(tls, "b.example.test", "/two").await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
}

#[tokio::test]
async fn tls12_and_tls13_both_negotiate() {
    let ca = Ca::new();
    let up = Upstream::echo().await;
    let olive = start(&ca, up.addr, false, "").await;
    for (version, want) in [
        (&rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2),
        (&rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3),
    ] {
        let config = rustls::ClientConfig::builder_with_protocol_versions(&[version])
            .with_root_certificates(ca.roots())
            .with_no_client_auth();
        let tls = tls_connect(config, olive.addr("https"), "a.example.test").await;
        assert_eq!(tls.get_ref().1.protocol_version(), Some(want));
        let resp = http1_exchange(tls, "a.example.test", "/v").await;
        assert!(resp.starts_with("HTTP/1.1 200"), "{want:?}: {resp}");
    }
}

#[tokio::test]
async fn plain_listener_redirects_to_https_and_https_sends_hsts() {
    let ca = Ca::new();
    let up = Upstream::echo().await;
    let extra = r#"
[[listener]]
name = "http"
kind = "http"
bind = "127.0.0.1:0"
redirect_https_port = 8443
"#;
    let olive = start(&ca, up.addr, true, extra).await;

    let wait = Duration::from_secs(3);
    for host in ["www.example.test", "www.example.test:8080"] {
        let request = format!(
            "POST /comments/post/?next=/a%20b HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let resp = raw(olive.addr("http"), request.as_bytes(), wait).await;
        assert!(resp.starts_with("HTTP/1.1 308"), "{resp}");
        let lower = resp.to_ascii_lowercase();
        assert!(
            lower.contains("\r\nlocation: https://www.example.test:8443/comments/post/?next=/a%20b\r\n"),
            "{resp}"
        );
        assert!(
            !lower.contains("strict-transport-security"),
            "HSTS over plain HTTP is ignored by browsers: {resp}"
        );
    }
    assert!(up.requests().is_empty(), "a redirecting listener proxies nothing");

    let http = ca.client(&["a.example.test"], olive.addr("https"));
    let resp =
        http.get(format!("https://a.example.test:{}/", olive.addr("https").port())).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["strict-transport-security"], "max-age=31536000; includeSubDomains");
}

#[tokio::test]
async fn stalled_handshakes_are_dropped_at_the_timeout() {
    let ca = Ca::new();
    let up = Upstream::echo().await;
    let olive = start(&ca, up.addr, false, "[limits]\ntls_handshake_timeout = \"300ms\"\n").await;
    let started = Instant::now();
    // Connects and sends nothing.
    let silent = raw(olive.addr("https"), b"", Duration::from_secs(5)).await;
    let took = started.elapsed();
    assert!(silent.is_empty(), "{silent}");
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(2),
        "silent client held {took:?}"
    );

    // Sends the first bytes of a ClientHello and stalls.
    let started = Instant::now();
    let partial =
        raw(olive.addr("https"), &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01], Duration::from_secs(5)).await;
    let took = started.elapsed();
    assert!(partial.is_empty(), "{partial}");
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(2),
        "stalled client held {took:?}"
    );
}

#[tokio::test]
async fn forwarded_proto_is_https_over_tls() {
    let ca = Ca::new();
    let up = Upstream::echo().await;
    let olive = start(&ca, up.addr, false, "").await;
    let http = ca.client(&["a.example.test"], olive.addr("https"));
    let resp = http
        .get(format!("https://a.example.test:{}/secure", olive.addr("https").port()))
        .header("x-forwarded-proto", "http")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_2, "reqwest offers h2");
    let h = &up.requests()[0].headers;
    assert_eq!(h["x-forwarded-proto"], "https");
    assert!(h["forwarded"].to_str().unwrap().contains("proto=https"), "{:?}", h["forwarded"]);
    assert!(resp.headers().get("strict-transport-security").is_none(), "HSTS is off unless configured");
}
