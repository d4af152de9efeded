//! Access control: who a request speaks for, and what it may do.
//!
//! - [`token`]: verifying the JWTs Django mints (and `olive token`);
//! - [`grants`]: the key patterns an identity may subscribe to, publish
//!   on and see presence of, and the checks;
//! - [`rabbit`]: RabbitMQ's HTTP auth backend, so that programs speaking
//!   AMQP directly get exactly their token's grants;
//! - [`revoke`]: revocations from the broker, which refuse a user's tokens
//!   and end their sessions on every node.
//!
//! [`Auth::authenticate`] turns a request into an [`Identity`]: the token
//! from `Authorization: Bearer`, `?token=` or the `olive_token` cookie (in
//! that order of preference), or the anonymous grants when there is none.
//! A token that is present but bad is refused (401), never downgraded to
//! anonymous, so a client learns to refresh it. A token that came from the
//! cookie is only accepted from pages of an allowed origin: a browser sends
//! cookies on cross-site websocket upgrades, which is how cross-site
//! websocket hijacking works.
//!
//! Identity sources: tokens are the first. Django's signed-cookie sessions
//! ([`django_session`], when `[auth.django_session]` is configured) are the
//! second, for requests without a token, producing the same [`Identity`].

pub mod django_session;
pub mod grants;
pub mod rabbit;
pub mod revoke;
pub mod token;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use http::header::{self, HeaderMap, HeaderValue};
use http::{StatusCode, Uri};
use percent_encoding::percent_decode_str;

use crate::config::{self, normalize_origin};
use crate::live::presence::Member;
use crate::live::protocol::From;
pub use grants::Grants;
pub use token::{TokenError, User, Verifier};

/// The cookie the Django package sets.
pub const COOKIE: &str = "olive_token";

/// Who a request or a live session speaks for.
#[derive(Debug, Clone)]
pub struct Identity {
    /// `None`: anonymous.
    pub user: Option<User>,
    pub grants: Arc<Grants>,
    /// When the token stops being good (`exp` plus leeway); `None` for
    /// anonymous visitors, whose grants do not expire.
    pub expires: Option<SystemTime>,
    /// The token's `iat`, which decides whether a revocation covers it.
    pub issued: Option<u64>,
}

impl Identity {
    /// An anonymous identity with these grants (tests, embedding).
    pub fn anonymous(grants: Arc<Grants>) -> Identity {
        Identity { user: None, grants, expires: None, issued: None }
    }

    /// How presence shows this identity.
    pub fn member(&self) -> Option<Member> {
        self.user.as_ref().map(|u| Member { user: u.id.clone(), name: u.name.clone() })
    }

    /// How a message this identity publishes names its sender.
    pub fn from(&self) -> Option<From> {
        self.user.as_ref().map(|u| From { user: u.id.clone(), name: u.name.clone() })
    }
}

/// Where a token was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Bearer,
    Query,
    Cookie,
}

/// Why a request was refused before it reached the hub.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{0}")]
    Token(#[from] TokenError),
    #[error("pages from {0} may not use this site's login cookie")]
    Origin(String),
    #[error("the admin token is missing or wrong")]
    Admin,
}

/// The one mapping from refusals to HTTP status: a bad or missing
/// credential is 401 (the client should get a new one), an origin that is
/// not allowed is 403 (no credential will help).
impl std::convert::From<&Refusal> for StatusCode {
    fn from(r: &Refusal) -> StatusCode {
        match r {
            Refusal::Token(_) | Refusal::Admin => StatusCode::UNAUTHORIZED,
            Refusal::Origin(_) => StatusCode::FORBIDDEN,
        }
    }
}

/// Counters of refusals and denials, by reason (exported as metrics by
/// the ops issue).
#[derive(Debug, Default)]
pub struct Stats {
    pub too_large: AtomicU64,
    pub malformed: AtomicU64,
    pub unknown_kid: AtomicU64,
    pub algorithm: AtomicU64,
    pub signature: AtomicU64,
    pub expired: AtomicU64,
    pub not_yet_valid: AtomicU64,
    pub audience: AtomicU64,
    pub issuer: AtomicU64,
    pub missing_claim: AtomicU64,
    pub bad_grants: AtomicU64,
    pub revoked: AtomicU64,
    /// Revocations applied (each ends the user's sessions on this node).
    pub revocations: AtomicU64,
    /// Django session cookies that did not verify (taken as anonymous).
    pub sessions_refused: AtomicU64,
    pub origin: AtomicU64,
    pub admin: AtomicU64,
    /// Live actions refused for want of a grant (`forbidden`).
    pub forbidden: AtomicU64,
    /// Websocket sessions closed (4401) and streams ended at token expiry.
    pub sessions_expired: AtomicU64,
    /// RabbitMQ logins refused, and logins refused because
    /// `auth.amqp.max_users` users are remembered already.
    pub amqp_refused: AtomicU64,
    pub amqp_users_full: AtomicU64,
}

impl Stats {
    pub fn count(&self, refusal: &Refusal) {
        let counter = match refusal {
            Refusal::Token(e) => match e {
                TokenError::TooLarge { .. } => &self.too_large,
                TokenError::Malformed | TokenError::Unsupported(_) => &self.malformed,
                TokenError::NoKid | TokenError::UnknownKid(_) => &self.unknown_kid,
                TokenError::Algorithm => &self.algorithm,
                TokenError::Signature => &self.signature,
                TokenError::Expired => &self.expired,
                TokenError::NotYetValid => &self.not_yet_valid,
                TokenError::Audience => &self.audience,
                TokenError::Issuer => &self.issuer,
                TokenError::MissingClaim(_) => &self.missing_claim,
                TokenError::Grants(_) => &self.bad_grants,
                TokenError::Revoked => &self.revoked,
            },
            Refusal::Origin(_) => &self.origin,
            Refusal::Admin => &self.admin,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The access-control state shared by every request.
pub struct Auth {
    config: config::Auth,
    verifier: Verifier,
    anonymous: Arc<Grants>,
    /// AMQP users logged in with a token ([`rabbit`]).
    pub amqp_users: rabbit::Users,
    pub revocations: revoke::Revocations,
    pub stats: Stats,
}

impl Auth {
    pub fn new(config: &config::Auth) -> Auth {
        Auth {
            verifier: Verifier::new(config),
            anonymous: Arc::new(config.anonymous.clone()),
            amqp_users: rabbit::Users::new(config.amqp_max_users),
            revocations: revoke::Revocations::new(config.revoke_ttl, config.max_revoked),
            config: config.clone(),
            stats: Stats::default(),
        }
    }

    pub fn config(&self) -> &config::Auth {
        &self.config
    }

    /// Who the request speaks for. Counts every refusal.
    pub fn authenticate(&self, headers: &HeaderMap, uri: &Uri) -> Result<Identity, Refusal> {
        let result = self.identify(headers, uri);
        if let Err(refusal) = &result {
            self.stats.count(refusal);
        }
        result
    }

    fn identify(&self, headers: &HeaderMap, uri: &Uri) -> Result<Identity, Refusal> {
        let Some((token, source)) = find_token(headers, uri) else {
            return self.session_identity(headers, uri);
        };
        if source == Source::Cookie {
            self.check_origin(headers, uri)?;
        }
        let verified = self.check(&token)?;
        Ok(Identity {
            user: Some(verified.user),
            grants: Arc::new(verified.grants),
            expires: Some(verified.expires),
            issued: verified.issued,
        })
    }

    /// The second identity source, Django's signed session cookie
    /// ([`django_session`], `[auth.django_session]`): a logged-in session
    /// is that user with the configured grants, until the cookie's max age.
    /// Like Django, olive takes a session it cannot load (bad signature,
    /// expired) or one without a login for an anonymous visitor; it counts
    /// those. The cookie is subject to the origin check like a token's.
    fn session_identity(&self, headers: &HeaderMap, uri: &Uri) -> Result<Identity, Refusal> {
        let anonymous = Identity::anonymous(self.anonymous.clone());
        let Some(sessions) = &self.config.django_session else { return Ok(anonymous) };
        let Some(value) = cookie(headers, &sessions.cookie) else { return Ok(anonymous) };
        self.check_origin(headers, uri)?;
        let session = match sessions.verifier.verify(value, SystemTime::now()) {
            Ok(session) => session,
            Err(e) => {
                Stats::add(&self.stats.sessions_refused);
                tracing::debug!(reason = e.reason(), "Django session cookie not accepted; anonymous");
                return Ok(anonymous);
            }
        };
        let Some(id) = session.user_id else { return Ok(anonymous) };
        let issued = session.signed_at.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).ok();
        if self.revocations.revoked(&id, issued) {
            return Err(Refusal::Token(TokenError::Revoked));
        }
        Ok(Identity {
            user: Some(User { id, name: None, amqp_user: None }),
            grants: sessions.grants.clone(),
            expires: Some(session.signed_at + sessions.verifier.max_age()),
            issued,
        })
    }

    /// Verifies a token on its own (RabbitMQ logins).
    pub fn verify(&self, token: &str) -> Result<token::Verified, Refusal> {
        self.check(token).map_err(|e| {
            let refusal = Refusal::Token(e);
            self.stats.count(&refusal);
            refusal
        })
    }

    /// The one verification: signature and claims, then revocations.
    fn check(&self, token: &str) -> Result<token::Verified, TokenError> {
        let verified = self.verifier.verify(token)?;
        if self.revocations.revoked(&verified.user.id, verified.issued) {
            return Err(TokenError::Revoked);
        }
        Ok(verified)
    }

    /// Completes when a live session of `identity` must end: its token
    /// expired, or its user was revoked. Never for anonymous visitors.
    pub fn session_end(self: &Arc<Self>, identity: &Identity) -> SessionEnd {
        let Some(user) = &identity.user else { return Box::pin(std::future::pending()) };
        let (auth, user, issued, expires) =
            (self.clone(), user.id.clone(), identity.issued, identity.expires);
        Box::pin(async move {
            tokio::select! {
                () = until(expires) => Ended::Expired,
                () = auth.revocations.ended(&user, issued) => Ended::Revoked,
            }
        })
    }
}

/// Completes at `expires` (never when `None`).
async fn until(expires: Option<std::time::SystemTime>) {
    match expires {
        Some(at) => {
            let left = at.duration_since(std::time::SystemTime::now()).unwrap_or_default();
            tokio::time::sleep(left).await
        }
        None => std::future::pending().await,
    }
}

/// Why a live session's identity ran out ([`Auth::session_end`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Expired,
    Revoked,
}

impl Ended {
    /// The close reason a websocket client reads, and the SSE event's.
    pub fn reason(self) -> &'static str {
        match self {
            Ended::Expired => "token expired",
            Ended::Revoked => "token revoked",
        }
    }
}

/// Boxed: it sits in every idle session.
pub type SessionEnd = std::pin::Pin<Box<dyn std::future::Future<Output = Ended> + Send>>;

impl Auth {
    /// A request with an `Origin` must come from the request's own host or
    /// an allowed origin. Requests without one are not from a browser page
    /// on another site (browsers always send it on websocket upgrades and
    /// cross-origin `EventSource`s).
    fn check_origin(&self, headers: &HeaderMap, uri: &Uri) -> Result<(), Refusal> {
        let Some(origin) = headers.get(header::ORIGIN) else { return Ok(()) };
        let text = origin.to_str().unwrap_or("");
        let Some(origin) = normalize_origin(text) else { return Err(Refusal::Origin(text.to_owned())) };
        if self.config.allowed_origins.contains(&origin) {
            return Ok(());
        }
        let host = uri.authority().map(|a| a.as_str()).or_else(|| headers.get(header::HOST)?.to_str().ok());
        let same_host = host.is_some_and(|host| {
            origin.split_once("://").is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host))
        });
        if same_host { Ok(()) } else { Err(Refusal::Origin(origin)) }
    }

    /// The admin listener's own check: with `admin_token` configured, a
    /// request must carry it as `Authorization: Bearer`, or as the password
    /// of `Basic` (RabbitMQ's HTTP auth backend sends the user info of its
    /// URLs that way: `http://rabbitmq:TOKEN@host/rabbitmq/auth/user`);
    /// without, the listener is trusted by its position.
    pub fn check_admin(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        let Some(want) = &self.config.admin_token else { return Ok(()) };
        let given = bearer(headers)
            .map(|t| t.as_bytes().to_vec())
            .or_else(|| basic_password(headers))
            .unwrap_or_default();
        if constant_time_eq(&given, &want.0) {
            Ok(())
        } else {
            let refusal = Refusal::Admin;
            self.stats.count(&refusal);
            Err(refusal)
        }
    }
}

/// The token a request carries, by preference: header, query, cookie.
pub fn find_token(headers: &HeaderMap, uri: &Uri) -> Option<(String, Source)> {
    if let Some(token) = bearer(headers) {
        return Some((token.to_owned(), Source::Bearer));
    }
    if let Some(token) = uri.query().and_then(|q| query_param(q, "token")) {
        return Some((token, Source::Query));
    }
    cookie(headers, COOKIE).map(|token| (token.to_owned(), Source::Cookie))
}

/// `Authorization: Bearer TOKEN` (RFC 6750 §2.1; the scheme is
/// case-insensitive, RFC 9110 §11.1).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// The password of `Authorization: Basic base64(user:password)` (RFC 7617).
fn basic_password(headers: &HeaderMap) -> Option<Vec<u8>> {
    use base64::Engine;
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    Some(decoded[colon + 1..].to_vec())
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (n, v) = pair.split_once('=')?;
        (n == name && !v.is_empty()).then(|| percent_decode_str(v).decode_utf8_lossy().into_owned())
    })
}

/// A cookie's value from every `Cookie` header (HTTP/2 may split them;
/// RFC 6265 §5.4, RFC 9113 §8.2.3).
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).find_map(|line| {
        line.split(';').find_map(|pair| {
            let (n, v) = pair.trim().split_once('=')?;
            (n == name && !v.is_empty()).then(|| v.trim_matches('"'))
        })
    })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `path?key=k&token=SECRET` → `path?key=k&token=-`, for logs.
pub fn redact_token(path_and_query: &str) -> std::borrow::Cow<'_, str> {
    let Some((path, query)) = path_and_query.split_once('?') else { return path_and_query.into() };
    if !query.split('&').any(|p| p.starts_with("token=")) {
        return path_and_query.into();
    }
    let query: Vec<&str> =
        query.split('&').map(|p| if p.starts_with("token=") { "token=-" } else { p }).collect();
    format!("{path}?{}", query.join("&")).into()
}

/// A `WWW-Authenticate` value for a 401 (RFC 6750 §3).
pub fn challenge(refusal: &Refusal) -> HeaderValue {
    let error = match refusal {
        Refusal::Token(_) => "Bearer error=\"invalid_token\"",
        _ => "Bearer",
    };
    HeaderValue::from_static(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        h
    }

    #[test]
    fn token_sources_in_order_of_preference() {
        let uri: Uri = "/olive/ws?x=1&token=q%2Eq".parse().unwrap();
        let plain: Uri = "/olive/ws".parse().unwrap();
        let all = headers(&[("authorization", "bearer h"), ("cookie", "a=b; olive_token=c")]);
        assert_eq!(find_token(&all, &uri), Some(("h".into(), Source::Bearer)));
        let cookie_only = headers(&[("cookie", "a=b"), ("cookie", "olive_token=c; d=e")]);
        assert_eq!(find_token(&cookie_only, &uri), Some(("q.q".into(), Source::Query)));
        assert_eq!(find_token(&cookie_only, &plain), Some(("c".into(), Source::Cookie)));
        for h in [headers(&[("authorization", "Basic x")]), headers(&[("cookie", "olive_token=")])] {
            assert_eq!(find_token(&h, &plain), None);
        }
    }

    #[test]
    fn origins_table() {
        let config = config::Auth {
            allowed_origins: vec!["https://app.example.com".into()],
            ..config::Auth::default()
        };
        let auth = Auth::new(&config);
        let uri: Uri = "/olive/ws".parse().unwrap();
        for (origin, host, ok) in [
            (None, "example.com", true),
            (Some("https://example.com"), "example.com", true),
            (Some("https://EXAMPLE.com"), "example.com", true),
            (Some("http://localhost:8080"), "localhost:8080", true),
            (Some("https://app.example.com"), "example.com", true),
            (Some("https://evil.example"), "example.com", false),
            (Some("https://example.com:8443"), "example.com", false),
            (Some("null"), "example.com", false),
        ] {
            let mut pairs = vec![("host", host)];
            if let Some(o) = origin {
                pairs.push(("origin", o));
            }
            assert_eq!(auth.check_origin(&headers(&pairs), &uri).is_ok(), ok, "{origin:?} on {host}");
        }
    }

    #[test]
    fn refusals_are_counted_by_reason() {
        let config = config::Auth { max_token_bytes: 16, ..config::Auth::default() };
        let auth = Auth::new(&config);
        let uri = |q: &str| q.parse::<Uri>().unwrap();
        let none = HeaderMap::new();
        assert!(auth.authenticate(&none, &uri("/ws")).is_ok_and(|i| i.user.is_none()));
        assert!(auth.authenticate(&none, &uri("/ws?token=aaaaaaaaaaaaaaaaaaaaaaa")).is_err());
        assert!(auth.authenticate(&none, &uri("/ws?token=a.b.c")).is_err());
        let cookie =
            headers(&[("cookie", "olive_token=x"), ("origin", "https://evil.example"), ("host", "a")]);
        assert!(matches!(auth.authenticate(&cookie, &uri("/ws")), Err(Refusal::Origin(_))));
        let s = &auth.stats;
        let counts = [&s.too_large, &s.malformed, &s.origin].map(|c| c.load(Ordering::Relaxed));
        assert_eq!(counts, [1, 1, 1]);
    }

    #[test]
    fn redaction() {
        assert_eq!(redact_token("/a?token=x&key=k"), "/a?token=-&key=k");
        assert_eq!(redact_token("/a?key=k"), "/a?key=k");
        assert_eq!(redact_token("/a"), "/a");
    }

    #[test]
    fn admin_token() {
        let mut config = config::Auth::default();
        let auth = Auth::new(&config);
        assert!(auth.check_admin(&HeaderMap::new()).is_ok(), "no admin token: trusted by position");
        config.admin_token = Some(config::Secret(b"s3cret".to_vec()));
        let auth = Auth::new(&config);
        assert!(auth.check_admin(&headers(&[("authorization", "Bearer s3cret")])).is_ok());
        // rabbitmq:s3cret, as RabbitMQ sends a URL's user info.
        assert!(auth.check_admin(&headers(&[("authorization", "Basic cmFiYml0bXE6czNjcmV0")])).is_ok());
        assert_eq!(auth.check_admin(&headers(&[("authorization", "Bearer s3cre")])), Err(Refusal::Admin));
        assert_eq!(auth.check_admin(&HeaderMap::new()), Err(Refusal::Admin));
        assert_eq!(auth.stats.admin.load(Ordering::Relaxed), 2);
    }
}
