//! An HTTP/2 client that writes frames byte by byte, for the abuse a real
//! client library will not send (tests/h2_abuse.rs): streams reset as soon
//! as opened, CONTINUATION frames that never end, floods of SETTINGS.
//!
//! Frames are RFC 9113 §4.1; header blocks are HPACK literals without
//! indexing or Huffman coding (RFC 7541 §6.2.2), which every decoder takes.
//! A reader task logs what olive sends back ([`Log`]) unless the client is
//! made not to read.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::Ca;

pub const DATA: u8 = 0;
pub const HEADERS: u8 = 1;
pub const RST_STREAM: u8 = 3;
pub const SETTINGS: u8 = 4;
pub const PING: u8 = 6;
pub const GOAWAY: u8 = 7;
pub const CONTINUATION: u8 = 9;
pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

/// Error codes (RFC 9113 §7).
pub const CANCEL: u32 = 0x8;
pub const REFUSED_STREAM: u32 = 0x7;
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

/// What olive sent on the connection.
#[derive(Debug, Default, Clone)]
pub struct Log {
    /// Streams that got a response HEADERS frame.
    pub responses: Vec<u32>,
    /// `(stream, error code)` of each RST_STREAM.
    pub resets: Vec<(u32, u32)>,
    /// `(last stream id, error code)` of the GOAWAY, if any.
    pub goaway: Option<(u32, u32)>,
    /// A SETTINGS frame (not an ACK) arrived.
    pub settings: bool,
    /// olive closed the connection (or it failed).
    pub closed: bool,
}

pub struct RawH2 {
    writer: WriteHalf<TlsStream<TcpStream>>,
    pub log: Arc<Mutex<Log>>,
    /// Kept unread when the client does not read.
    _unread: Option<ReadHalf<TlsStream<TcpStream>>>,
}

impl RawH2 {
    /// Connects over TLS with ALPN h2 and sends the preface and an empty
    /// SETTINGS. A reading client also waits for olive's SETTINGS and
    /// acknowledges them, as RFC 9113 §6.5.3 requires.
    pub async fn connect(ca: &Ca, addr: SocketAddr, read: bool) -> RawH2 {
        let tls = super::tls_connect(ca.client_config(&[b"h2"]), addr, "localhost").await;
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (reader, writer) = tokio::io::split(tls);
        let log = Arc::new(Mutex::new(Log::default()));
        let mut raw = RawH2 { writer, log: log.clone(), _unread: None };
        let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        hello.extend(frame(SETTINGS, 0, 0, &[]));
        raw.send(&hello).await.unwrap();
        if !read {
            raw._unread = Some(reader);
            return raw;
        }
        tokio::spawn(read_frames(reader, log));
        raw.wait(Duration::from_secs(5), |l| l.settings).await;
        raw.send(&frame(SETTINGS, ACK, 0, &[])).await.unwrap();
        raw
    }

    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.writer.write_all(bytes).await?;
        self.writer.flush().await
    }

    pub fn log(&self) -> Log {
        self.log.lock().unwrap().clone()
    }

    /// Waits until `done` holds for the log (or `within` passes) and
    /// returns the log.
    pub async fn wait(&self, within: Duration, done: impl Fn(&Log) -> bool) -> Log {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let log = self.log();
            if done(&log) || tokio::time::Instant::now() >= deadline {
                return log;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn read_frames(mut reader: ReadHalf<TlsStream<TcpStream>>, log: Arc<Mutex<Log>>) {
    let mut head = [0u8; 9];
    loop {
        if reader.read_exact(&mut head).await.is_err() {
            break;
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        if reader.read_exact(&mut payload).await.is_err() {
            break;
        }
        let word = |at: usize| u32::from_be_bytes(payload[at..at + 4].try_into().unwrap()) & 0x7fff_ffff;
        let mut l = log.lock().unwrap();
        match kind {
            HEADERS => l.responses.push(stream),
            RST_STREAM => l.resets.push((stream, word(0))),
            GOAWAY => l.goaway = Some((word(0), word(4))),
            SETTINGS if flags & ACK == 0 => l.settings = true,
            _ => {}
        }
    }
    log.lock().unwrap().closed = true;
}

/// One frame: 9-byte head and payload (RFC 9113 §4.1).
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap();
    assert!(len < 1 << 24);
    let mut out = len.to_be_bytes()[1..].to_vec();
    out.extend([kind, flags]);
    out.extend(stream.to_be_bytes());
    out.extend(payload);
    out
}

pub fn rst_stream(stream: u32, code: u32) -> Vec<u8> {
    frame(RST_STREAM, 0, stream, &code.to_be_bytes())
}

/// A header block of `fields` (HPACK literals, RFC 7541 §6.2.2).
pub fn block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0);
        for s in [name.as_bytes(), value.as_bytes()] {
            integer(&mut out, s.len(), 7);
            out.extend(s);
        }
    }
    out
}

/// An HPACK integer with an `n`-bit prefix (RFC 7541 §5.1), flag bits 0.
pub fn integer(out: &mut Vec<u8>, mut value: usize, n: u32) {
    let max = (1usize << n) - 1;
    if value < max {
        return out.push(value as u8);
    }
    out.push(max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128 + 128) as u8);
        value /= 128;
    }
    out.push(value as u8);
}

/// The pseudo-header fields of a request for `path` on `localhost`.
pub fn request(method: &'static str, path: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![(":method", method), (":scheme", "https"), (":path", path), (":authority", "localhost")]
}

/// A complete GET as one HEADERS frame (END_HEADERS, END_STREAM).
pub fn get(stream: u32, path: &'static str) -> Vec<u8> {
    frame(HEADERS, END_HEADERS | END_STREAM, stream, &block(&request("GET", path)))
}
