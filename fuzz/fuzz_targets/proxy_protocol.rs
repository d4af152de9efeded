//! The PROXY protocol header a trusted load balancer sends before
//! anything else (`olive::edge::proxy_protocol::read`), from bytes that
//! may hold a header and what follows it. What is accepted was read
//! exactly: never a byte past the header (the TLS ClientHello or request
//! behind it stays for the usual path), a v1 line of at most 107 bytes
//! ending in CRLF, a v2 header of its stated length; and the client it
//! names is the one the header's text says.
#![no_main]

use std::future::Future;
use std::net::IpAddr;
use std::task::{Context, Poll, Waker};

use libfuzzer_sys::fuzz_target;
use olive::edge::proxy_protocol::{parse, read};

fuzz_target!(|input: &[u8]| {
    let mut rest = input;
    let result = {
        // A slice never makes a read wait: one poll finishes the future.
        let mut future = std::pin::pin!(read(&mut rest));
        let Poll::Ready(result) = future.as_mut().poll(&mut Context::from_waker(Waker::noop())) else {
            panic!("reading from a slice waited");
        };
        result
    };
    let consumed = &input[..input.len() - rest.len()];
    let Ok(client) = result else { return };
    // The same bytes, parsed alone, name the same client.
    assert_eq!(parse(consumed).ok(), Some(client));
    if consumed.starts_with(b"PROXY ") {
        assert!(consumed.len() <= 107 && consumed.ends_with(b"\r\n"), "{consumed:?}");
        // After `UNKNOWN` the spec has the receiver ignore anything up to
        // the CRLF, bare LFs and all (found by this target); the client is
        // then the proxy itself.
        if consumed.starts_with(b"PROXY UNKNOWN") {
            assert_eq!(client, None);
            return;
        }
        assert_eq!(consumed.iter().filter(|&&b| b == b'\n').count(), 1, "{consumed:?}");
        let line = std::str::from_utf8(consumed).expect("an accepted v1 line is text");
        let words: Vec<&str> = line.trim_end_matches("\r\n").split(' ').collect();
        match client {
            None => panic!("only UNKNOWN names no client: {line:?}"),
            Some(addr) => {
                assert_eq!(words.len(), 6, "{line:?}");
                assert_eq!(words[2].parse::<IpAddr>().ok(), Some(addr.ip()), "{line:?}");
                assert_eq!(words[4].parse::<u16>().ok(), Some(addr.port()), "{line:?}");
            }
        }
    } else {
        assert!(consumed.starts_with(b"\r\n\r\n\0\r\nQUIT\n"), "{consumed:?}");
        let length = usize::from(u16::from_be_bytes([consumed[14], consumed[15]]));
        assert_eq!(consumed.len(), 16 + length);
        if let Some(addr) = client {
            // Source address and port come first in the address block.
            let (ip, port): (IpAddr, usize) = match consumed[13] >> 4 {
                1 => (<[u8; 4]>::try_from(&consumed[16..20]).unwrap().into(), 24),
                2 => (<[u8; 16]>::try_from(&consumed[16..32]).unwrap().into(), 48),
                family => panic!("a client from address family {family}"),
            };
            assert_eq!(addr.ip(), ip);
            assert_eq!(addr.port(), u16::from_be_bytes([consumed[port], consumed[port + 1]]));
        }
    }
});
