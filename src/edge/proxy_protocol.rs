//! The PROXY protocol (HAProxy's, v1 text and v2 binary): a load balancer
//! that passes TCP through to olive names the client at the start of each
//! connection. Read on listeners with `proxy_protocol = true`, from peers
//! in `server.trusted_proxies` only: anyone else could name any client.
//!
//! The header is read exactly, never past its end, so what follows (a TLS
//! ClientHello, an HTTP request) stays in the socket for the usual path:
//! v2 carries its length in its first 16 bytes; v1 is one line of at most
//! 107 bytes, read up to its CRLF. Parsing is the `ppp` crate's.

use std::io;
use std::net::SocketAddr;

use ppp::{HeaderResult, v1, v2};
use tokio::io::{AsyncRead, AsyncReadExt};

/// A v1 line's greatest length, CRLF included (the spec's 107).
const V1_MAX: usize = 107;

/// The first bytes of a v2 header's signature.
const V2_START: &[u8] = b"\r\n\r\n\0\r\nQ";

/// Reads the header; the client it names, or `None` when the proxy speaks
/// for itself (v2 `LOCAL`, v1 `UNKNOWN`: health checks).
pub async fn read<S: AsyncRead + Unpin>(stream: &mut S) -> io::Result<Option<SocketAddr>> {
    let mut buf = vec![0u8; 8];
    stream.read_exact(&mut buf).await?;
    if buf.starts_with(b"PROXY ") {
        while !buf.ends_with(b"\r\n") {
            if buf.len() >= V1_MAX {
                return Err(invalid("a PROXY v1 line longer than 107 bytes"));
            }
            buf.push(stream.read_u8().await?);
        }
    } else if buf.starts_with(V2_START) {
        buf.resize(16, 0);
        stream.read_exact(&mut buf[8..]).await?;
        let length = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
        buf.resize(16 + length, 0);
        stream.read_exact(&mut buf[16..]).await?;
    } else {
        return Err(invalid("the connection does not start with a PROXY header"));
    }
    parse(&buf)
}

/// The client a complete header names (public for `fuzz/`).
pub fn parse(header: &[u8]) -> io::Result<Option<SocketAddr>> {
    match HeaderResult::parse(header) {
        HeaderResult::V1(Ok(h)) => Ok(match h.addresses {
            v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
            v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
            v1::Addresses::Unknown => None,
        }),
        HeaderResult::V2(Ok(h)) if h.command == v2::Command::Local => Ok(None),
        HeaderResult::V2(Ok(h)) => Ok(match h.addresses {
            v2::Addresses::IPv4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
            v2::Addresses::IPv6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
            v2::Addresses::Unspecified | v2::Addresses::Unix(_) => None,
        }),
        HeaderResult::V1(Err(e)) => Err(invalid(&format!("bad PROXY v1 header: {e}"))),
        HeaderResult::V2(Err(e)) => Err(invalid(&format!("bad PROXY v2 header: {e}"))),
    }
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_all(bytes: &[u8]) -> (io::Result<Option<SocketAddr>>, Vec<u8>) {
        let mut stream = bytes;
        let result = read(&mut stream).await;
        (result, stream.to_vec())
    }

    fn v2(command: u8, family: u8, addresses: &[u8]) -> Vec<u8> {
        let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend_from_slice(&(addresses.len() as u16).to_be_bytes());
        h.extend_from_slice(addresses);
        h
    }

    #[tokio::test]
    async fn v1_names_the_client_and_leaves_the_request() {
        let (r, rest) = read_all(b"PROXY TCP4 203.0.113.9 10.0.0.1 51234 443\r\nGET / HTTP/1.1\r\n").await;
        assert_eq!(r.unwrap(), Some("203.0.113.9:51234".parse().unwrap()));
        assert_eq!(rest, b"GET / HTTP/1.1\r\n");
        let (r, _) = read_all(b"PROXY TCP6 2001:db8::9 2001:db8::1 51234 443\r\n").await;
        assert_eq!(r.unwrap(), Some("[2001:db8::9]:51234".parse().unwrap()));
        let (r, rest) = read_all(b"PROXY UNKNOWN\r\n\x16\x03\x01").await;
        assert_eq!(r.unwrap(), None);
        assert_eq!(rest, b"\x16\x03\x01");
    }

    #[tokio::test]
    async fn v2_names_the_client_and_leaves_the_request() {
        // PROXY, TCP over IPv4: 203.0.113.9:51234 -> 10.0.0.1:443, one TLV.
        let mut addresses = vec![203, 0, 113, 9, 10, 0, 0, 1];
        addresses.extend_from_slice(&51234u16.to_be_bytes());
        addresses.extend_from_slice(&443u16.to_be_bytes());
        addresses.extend_from_slice(&[0x04, 0, 1, 7]);
        let mut bytes = v2(1, 0x11, &addresses);
        bytes.extend_from_slice(b"GET /");
        let (r, rest) = read_all(&bytes).await;
        assert_eq!(r.unwrap(), Some("203.0.113.9:51234".parse().unwrap()));
        assert_eq!(rest, b"GET /");
        let (r, rest) = read_all(&[v2(0, 0x00, &[]), b"x".to_vec()].concat()).await;
        assert_eq!(r.unwrap(), None, "LOCAL: the proxy's own health check");
        assert_eq!(rest, b"x");
    }

    #[tokio::test]
    async fn anything_else_is_refused() {
        for bytes in [
            &b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            b"PROXY TCP4 999.0.113.9 10.0.0.1 1 2\r\n",
            b"PROXY TCP4 203.0.113.9 10.0.0.1 51234 443 and then some more than a line may hold, on and on and on...\r\n",
            b"PROXY TCP4 203.0.113.9",
            b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c\x01",
        ] {
            let (r, _) = read_all(bytes).await;
            assert!(r.is_err(), "{:?}", String::from_utf8_lossy(bytes));
        }
    }
}
