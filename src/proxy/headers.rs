//! Header rules for proxying: hop-by-hop removal and the forwarding headers
//! olive adds.
//!
//! RFC 9110 §7.6.1: a proxy removes the `Connection` header and every field
//! it names, plus the classic hop-by-hop fields, before forwarding a message
//! in either direction. RFC 7239 defines `Forwarded`; the `X-Forwarded-*`
//! family is the de-facto form Django's `SECURE_PROXY_SSL_HEADER` and
//! `USE_X_FORWARDED_HOST` read. Incoming forwarding headers are kept only
//! when the peer is a trusted proxy; otherwise a client could claim any
//! address or scheme.

use std::net::IpAddr;

use http::HeaderMap;
use http::header::{self, HeaderName, HeaderValue};

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Fields that are hop-by-hop whether or not `Connection` names them
/// (RFC 9110 §7.6.1, plus the non-standard `Proxy-Connection` and
/// `Keep-Alive` that old clients send, and `HTTP2-Settings`, which only
/// an h2c upgrade of the immediate connection uses: RFC 7540 §3.2.1).
const HOP_BY_HOP: [HeaderName; 9] = [
    HeaderName::from_static("http2-settings"),
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Removes hop-by-hop fields, including every field named in `Connection`.
/// `Upgrade` is removed too unless `keep_upgrade` (a websocket tunnel, where
/// the upgrade is exactly what must reach the upstream).
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // One pass over the names first: most messages carry none of these,
    // and each `remove` below is a hash lookup (ten of them, per request
    // and per response, were 2,400 instructions of every proxied request).
    let present = headers.keys().any(|name| {
        name == header::CONNECTION || (name == header::UPGRADE && !keep_upgrade) || HOP_BY_HOP.contains(name)
    });
    if !present {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .filter(|name| !(keep_upgrade && name == header::UPGRADE))
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    if !keep_upgrade {
        headers.remove(header::UPGRADE);
    }
}

/// Removes fields whose names contain `_`, as nginx does by default
/// (`underscores_in_headers off`). CGI and WSGI turn `-` into `_` when they
/// name a field (RFC 3875 §4.1.18, PEP 3333), so Django would read a
/// client's `X_Forwarded_Proto` as the `X-Forwarded-Proto` olive sets, and
/// which one wins depends on the server.
pub fn strip_underscored(headers: &mut HeaderMap) {
    if !headers.keys().any(|name| name.as_str().contains('_')) {
        return;
    }
    let names: Vec<HeaderName> = headers.keys().filter(|name| name.as_str().contains('_')).cloned().collect();
    for name in names {
        headers.remove(name);
    }
}

/// Joins several `Cookie` fields into one, with `; ` between them.
///
/// HTTP/2 clients may split the cookie header into one field per cookie
/// for better compression, and browsers do (RFC 9113 §8.2.3); before the
/// request goes to an HTTP/1.1 upstream the fields must be concatenated
/// with `"; "`. Sent as separate lines, WSGI servers join them with `,`
/// (PEP 3333) and Django then reads one mangled cookie: a logged-in user
/// arrives as anonymous.
pub fn join_cookies(headers: &mut HeaderMap) {
    let mut fields = headers.get_all(header::COOKIE).iter();
    if fields.next().is_none() || fields.next().is_none() {
        return;
    }
    let mut joined = Vec::new();
    for value in headers.get_all(header::COOKIE) {
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(value.as_bytes());
    }
    // Joining valid field values with "; " yields a valid value.
    if let Ok(value) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, value);
    }
}

/// Who the client is, as olive decided it.
#[derive(Debug, Clone, Copy)]
pub struct Forwarding<'a> {
    pub peer: IpAddr,
    /// `peer` as a header value (formatted once per connection by the
    /// caller, so that an untrusted peer's `X-Forwarded-For` costs no
    /// allocation).
    pub peer_text: &'a HeaderValue,
    /// The peer is a trusted proxy: keep and extend what it sent.
    pub trusted: bool,
    /// `https` or `http`: how the client reached olive.
    pub proto: &'static str,
    /// The request's host (with port when the client sent one).
    pub host: &'a str,
}

/// Sets `X-Forwarded-For`, `-Proto`, `-Host` and `Forwarded` on a request
/// bound upstream, replacing whatever an untrusted client sent.
pub fn set_forwarding(headers: &mut HeaderMap, f: Forwarding<'_>) {
    let prior_xff = if f.trusted { joined(headers, &X_FORWARDED_FOR) } else { None };
    let prior_fwd = if f.trusted { joined(headers, &header::FORWARDED) } else { None };
    let proto = if f.trusted { headers.get(&X_FORWARDED_PROTO).cloned() } else { None }
        .unwrap_or(HeaderValue::from_static(f.proto));
    let host = if f.trusted { headers.get(&X_FORWARDED_HOST).cloned() } else { None }
        .or_else(|| headers.get(header::HOST).filter(|h| h.as_bytes() == f.host.as_bytes()).cloned())
        .or_else(|| HeaderValue::from_str(f.host).ok());

    let peer_text = f.peer_text.to_str().unwrap_or("");
    let xff = match prior_xff {
        Some(prior) => value(prior + ", " + peer_text),
        None => Some(f.peer_text.clone()),
    };
    // Built by pushing strings into one buffer: this runs on every proxied
    // request.
    let mut fwd = String::with_capacity(prior_fwd.as_ref().map_or(0, |p| p.len() + 2) + 32 + f.host.len());
    if let Some(prior) = prior_fwd {
        fwd.push_str(&prior);
        fwd.push_str(", ");
    }
    fwd.push_str("for=");
    match f.peer {
        IpAddr::V4(_) => fwd.push_str(peer_text),
        // RFC 7239 §6: IPv6 addresses are quoted and bracketed.
        IpAddr::V6(_) => {
            fwd.push_str("\"[");
            fwd.push_str(peer_text);
            fwd.push_str("]\"");
        }
    }
    fwd.push_str(";proto=");
    fwd.push_str(f.proto);
    if is_token(f.host) {
        fwd.push_str(";host=");
        fwd.push_str(f.host);
    } else if !f.host.is_empty() {
        fwd.push_str(";host=\"");
        fwd.extend(f.host.chars().filter(|c| !matches!(c, '"' | '\\')));
        fwd.push('"');
    }

    for (name, value) in [(&X_FORWARDED_FOR, xff), (&header::FORWARDED, value(fwd))] {
        match value {
            Some(v) => {
                headers.insert(name, v);
            }
            None => {
                headers.remove(name);
            }
        }
    }
    headers.insert(&X_FORWARDED_PROTO, proto);
    match host {
        Some(h) => headers.insert(&X_FORWARDED_HOST, h),
        None => headers.remove(&X_FORWARDED_HOST),
    };
}

/// A header value that takes the string's buffer instead of copying it
/// (`HeaderValue::from_str` copies); `None` if it is not a valid value.
fn value(text: String) -> Option<HeaderValue> {
    HeaderValue::from_maybe_shared(bytes::Bytes::from(text)).ok()
}

/// All values of a (list-valued) field joined with `, `.
fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let values: Vec<&str> = headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).collect();
    (!values.is_empty()).then(|| values.join(", "))
}

/// RFC 9110 §5.6.2 token characters.
fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn names(h: &HeaderMap) -> Vec<&str> {
        let mut v: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        v.sort();
        v
    }

    /// RFC 9110 §7.6.1.
    #[test]
    fn hop_by_hop_table() {
        for (input, keep_upgrade, left) in [
            (&[("connection", "close"), ("accept", "*/*")][..], false, &["accept"][..]),
            (
                &[
                    ("connection", "x-secret, Keep-Alive"),
                    ("x-secret", "1"),
                    ("keep-alive", "5"),
                    ("x-ok", "1"),
                ],
                false,
                &["x-ok"],
            ),
            (
                &[("te", "trailers"), ("trailer", "x"), ("transfer-encoding", "chunked"), ("host", "h")],
                false,
                &["host"],
            ),
            (&[("proxy-connection", "keep-alive"), ("proxy-authorization", "Basic x")], false, &[]),
            (
                &[("connection", "upgrade"), ("upgrade", "websocket"), ("sec-websocket-key", "k")],
                false,
                &["sec-websocket-key"],
            ),
            (
                &[("connection", "upgrade"), ("upgrade", "websocket"), ("sec-websocket-key", "k")],
                true,
                &["sec-websocket-key", "upgrade"],
            ),
            (&[("connection", "bogus header name!, x-a"), ("x-a", "1"), ("x-b", "2")], false, &["x-b"]),
        ] {
            let mut h = map(input);
            strip_hop_by_hop(&mut h, keep_upgrade);
            assert_eq!(names(&h), left, "{input:?}");
        }
    }

    /// RFC 3875 §4.1.18: `X_Forwarded_Proto` and `X-Forwarded-Proto` are
    /// one meta-variable to a WSGI server.
    /// RFC 9113 §8.2.3.
    #[test]
    fn cookie_fields_are_joined() {
        for (input, joined) in [
            (&[][..], None),
            (&[("cookie", "a=b")][..], Some("a=b")),
            (&[("cookie", "a=b"), ("cookie", "c=d")][..], Some("a=b; c=d")),
            (
                &[("cookie", "a=b; c=d"), ("accept", "*/*"), ("cookie", "e=f"), ("cookie", "g=h")][..],
                Some("a=b; c=d; e=f; g=h"),
            ),
        ] {
            let mut h = map(input);
            join_cookies(&mut h);
            let all: Vec<&str> = h.get_all(header::COOKIE).iter().map(|v| v.to_str().unwrap()).collect();
            assert_eq!(all, joined.into_iter().collect::<Vec<_>>(), "{input:?}");
        }
    }

    #[test]
    fn underscored_names_are_dropped() {
        let mut h = map(&[("x_forwarded_proto", "https"), ("x-ok", "1"), ("a_b", "2")]);
        strip_underscored(&mut h);
        assert_eq!(names(&h), ["x-ok"]);
    }

    fn forwarded(input: &[(&str, &str)], trusted: bool, peer: &str, host: &str) -> HeaderMap {
        let mut h = map(input);
        let ip: IpAddr = peer.parse().unwrap();
        set_forwarding(
            &mut h,
            Forwarding {
                peer: ip,
                peer_text: &HeaderValue::from_str(&ip.to_string()).unwrap(),
                trusted,
                proto: "https",
                host,
            },
        );
        h
    }

    #[test]
    fn untrusted_clients_cannot_spoof() {
        let h = forwarded(
            &[
                ("x-forwarded-for", "1.2.3.4"),
                ("x-forwarded-proto", "http"),
                ("x-forwarded-host", "evil.com"),
                ("forwarded", "for=1.2.3.4"),
            ],
            false,
            "203.0.113.9",
            "example.com",
        );
        assert_eq!(h["x-forwarded-for"], "203.0.113.9");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "example.com");
        assert_eq!(h["forwarded"], "for=203.0.113.9;proto=https;host=example.com");
    }

    #[test]
    fn trusted_proxies_are_extended() {
        let h = forwarded(
            &[("x-forwarded-for", "1.2.3.4"), ("x-forwarded-for", "5.6.7.8"), ("x-forwarded-proto", "https")],
            true,
            "10.0.0.2",
            "example.com:8443",
        );
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 5.6.7.8, 10.0.0.2");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["forwarded"], "for=10.0.0.2;proto=https;host=\"example.com:8443\"");
    }

    /// RFC 7239 §6: IPv6 nodes are quoted and bracketed.
    #[test]
    fn ipv6_peer_in_forwarded() {
        let h = forwarded(&[], false, "2001:db8::1", "example.com");
        assert_eq!(h["x-forwarded-for"], "2001:db8::1");
        assert_eq!(h["forwarded"], "for=\"[2001:db8::1]\";proto=https;host=example.com");
    }
}
