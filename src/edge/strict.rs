//! Request rules that hyper leaves to the application, checked before a
//! request is routed.
//!
//! hyper already refuses what would desynchronise the connection itself
//! (conflicting `Content-Length`, a `Transfer-Encoding` not ending in
//! `chunked`, obs-fold, control characters; with both `Content-Length` and
//! `Transfer-Encoding` it drops the length, decodes the chunks and closes
//! the connection after the response, as RFC 9112 §6.3 asks). What it
//! accepts but an edge must not is the request target and `Host`: two
//! `Host` lines, or a target whose host differs from `Host`, let olive
//! route on one name while Django reads another.

use http::header::{self, HeaderValue};
use http::uri::Authority;
use http::{Method, Request, StatusCode, Version};

/// Why a request is refused before routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// RFC 9112 §3.2: an HTTP/1.1 request without `Host`, with more than
    /// one, or with one that is not a valid `uri-host [ ":" port ]`.
    #[error("missing, repeated or invalid Host")]
    BadHost,
    /// RFC 9112 §3.2.3: authority-form is only for CONNECT.
    #[error("authority-form request target outside CONNECT")]
    AuthorityForm,
    /// RFC 9110 §9.3.6: CONNECT asks for a tunnel to any address, which is
    /// a forward proxy's job; olive is a gateway to its own routes. (An
    /// HTTP/2 extended CONNECT, RFC 8441, is a websocket, not this.)
    #[error("CONNECT is not served")]
    Connect,
}

impl Refusal {
    /// The one mapping from refusals to HTTP status.
    pub fn status(self) -> StatusCode {
        match self {
            Refusal::BadHost | Refusal::AuthorityForm => StatusCode::BAD_REQUEST,
            Refusal::Connect => StatusCode::METHOD_NOT_ALLOWED,
        }
    }
}

/// Checks the request target and `Host`; see the module docs.
pub fn check<B>(req: &Request<B>) -> Result<(), Refusal> {
    // An HTTP/2 extended CONNECT (RFC 8441) opens a websocket on a live
    // route, not a tunnel to an address; the router decides where it goes.
    if req.method() == Method::CONNECT && !crate::live::ws::is_extended_connect(req) {
        return Err(Refusal::Connect);
    }
    let uri = req.uri();
    if uri.authority().is_some() && uri.scheme().is_none() {
        return Err(Refusal::AuthorityForm);
    }
    let mut hosts = req.headers().get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (_, Some(_)) => Err(Refusal::BadHost),
        (Some(host), None) if !valid_host(host) => Err(Refusal::BadHost),
        // RFC 9112 §3.2: "A client MUST send a Host header field in all
        // HTTP/1.1 request messages". HTTP/2 carries `:authority` instead,
        // and HTTP/1.0 predates Host.
        (None, None) if req.version() == Version::HTTP_11 && uri.authority().is_none() => {
            Err(Refusal::BadHost)
        }
        _ => Ok(()),
    }
}

/// `uri-host [ ":" port ]` (RFC 9110 §7.2), without userinfo; empty is
/// allowed (RFC 9112 §3.2, a target without an authority).
fn valid_host(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    if bytes.is_empty() {
        return true;
    }
    if bytes.contains(&b'@') || Authority::try_from(bytes).is_err() {
        return false;
    }
    // `Authority` takes any port text; RFC 3986 §3.2.3 says `*DIGIT`.
    let after_host = match bytes.iter().rposition(|&b| b == b']') {
        Some(end) => &bytes[end + 1..],
        None => bytes.iter().position(|&b| b == b':').map_or(&[][..], |i| &bytes[i..]),
    };
    match after_host.split_first() {
        None => true,
        Some((b':', port)) => port.iter().all(u8::is_ascii_digit),
        Some(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, target: &str, version: Version, hosts: &[&[u8]]) -> Request<()> {
        let mut b = Request::builder().method(method).uri(target).version(version);
        for h in hosts {
            b = b.header(header::HOST, HeaderValue::from_bytes(h).unwrap());
        }
        b.body(()).unwrap()
    }

    /// RFC 9112 §3.2 (Host), §3.2.2 (absolute-form), §3.2.3
    /// (authority-form); RFC 9110 §9.3.6 (CONNECT).
    #[test]
    fn refusal_table() {
        use Refusal::*;
        use Version as V;
        for (method, target, version, hosts, want) in [
            ("GET", "/", V::HTTP_11, &[&b"example.com"[..]][..], Ok(())),
            ("GET", "/", V::HTTP_11, &[b"example.com:8443"], Ok(())),
            ("GET", "/", V::HTTP_11, &[b"[::1]:8080"], Ok(())),
            ("GET", "/", V::HTTP_11, &[b""], Ok(())),
            ("GET", "/", V::HTTP_11, &[], Err(BadHost)),
            ("GET", "/", V::HTTP_10, &[], Ok(())),
            ("GET", "/", V::HTTP_2, &[], Ok(())),
            ("GET", "/", V::HTTP_11, &[b"a.example", b"b.example"], Err(BadHost)),
            ("GET", "/", V::HTTP_11, &[b"a.example", b"a.example"], Err(BadHost)),
            ("GET", "/", V::HTTP_11, &[b"a b"], Err(BadHost)),
            ("GET", "/", V::HTTP_11, &[b"evil.example/path"], Err(BadHost)),
            ("GET", "/", V::HTTP_11, &[b"user@evil.example"], Err(BadHost)),
            ("GET", "/", V::HTTP_11, &[b"a.example:port"], Err(BadHost)),
            ("GET", "/", V::HTTP_11, &[b"a.example:80:80"], Err(BadHost)),
            ("GET", "/", V::HTTP_11, &[b"[::1]x"], Err(BadHost)),
            ("GET", "http://a.example/p", V::HTTP_11, &[b"b.example"], Ok(())),
            ("GET", "http://a.example/p", V::HTTP_11, &[], Ok(())),
            ("GET", "a.example:80", V::HTTP_11, &[b"a.example"], Err(AuthorityForm)),
            ("CONNECT", "a.example:443", V::HTTP_11, &[b"a.example"], Err(Connect)),
            ("OPTIONS", "*", V::HTTP_11, &[b"a.example"], Ok(())),
        ] {
            let r = req(method, target, version, hosts);
            assert_eq!(check(&r), want, "{method} {target} {version:?} {hosts:?}");
        }
    }

    /// RFC 8441 §4: a websocket over HTTP/2 is a CONNECT with `:protocol`;
    /// any other protocol is still a tunnel request.
    #[test]
    fn an_extended_connect_for_a_websocket_passes() {
        let mut ws = req("CONNECT", "https://a.example/olive/ws", Version::HTTP_2, &[]);
        ws.extensions_mut().insert(hyper::ext::Protocol::from_static("websocket"));
        assert_eq!(check(&ws), Ok(()));
        let mut other = req("CONNECT", "https://a.example/olive/ws", Version::HTTP_2, &[]);
        other.extensions_mut().insert(hyper::ext::Protocol::from_static("connect-udp"));
        assert_eq!(check(&other), Err(Refusal::Connect));
    }
}
