//! The `[auth]` table as written (see `super` for the conventions).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// What `aud` a token must carry when `[auth]` does not say: the service
/// the Django package mints for.
pub const DEFAULT_AUTH_AUDIENCE: &str = "olive";
/// What `iss` a token must carry when `[auth]` does not say: the Django
/// package's default.
pub const DEFAULT_AUTH_ISSUER: &str = "django";
/// Clock skew forgiven on `exp` and `nbf`. Servers kept by NTP differ by
/// milliseconds; 10s covers a drifting VM without stretching short-lived
/// tokens noticeably.
pub const DEFAULT_AUTH_LEEWAY: Duration = Duration::from_secs(10);
/// Longest token read from a cookie, a query or a header. Browsers cap a
/// cookie at 4 KiB, so a real token is far smaller; the cap bounds the
/// base64 and JSON work an unauthenticated client can ask for.
pub const DEFAULT_AUTH_MAX_TOKEN_BYTES: usize = 4096;
/// Patterns per grant kind in one token. A page needs a handful; each
/// check walks them, so the cap bounds the work per subscribe.
pub const DEFAULT_AUTH_MAX_GRANTS: usize = 32;
/// AMQP users remembered between RabbitMQ's login check and its later
/// topic checks (which carry no password). One entry per program logged
/// in with a token; 10,000 is far beyond any site's backends and costs a
/// few MiB at most.
pub const DEFAULT_AUTH_AMQP_MAX_USERS: usize = 10_000;
/// How long a revocation refuses the user's older tokens. Tokens Django
/// mints live minutes; an hour outlasts any of them with room to spare.
pub const DEFAULT_AUTH_REVOKE_TTL: Duration = Duration::from_secs(3600);
/// Revocations remembered at once. Each is a user id and two numbers; past
/// the cap the oldest goes first (its tokens are the likeliest expired).
pub const DEFAULT_AUTH_MAX_REVOKED: usize = 100_000;
/// The vhost RabbitMQ's out-of-the-box setup and olive's default URL use.
pub const DEFAULT_AUTH_AMQP_VHOST: &str = "/";

/// `[auth]`: who may do what on the live hub (docs/PROTOCOL.md, "Tokens").
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Auth {
    /// Keys that verify tokens, picked by the token's `kid`. The first is
    /// the one `olive token` signs with.
    #[serde(rename = "key")]
    pub keys: Vec<AuthKey>,
    /// The `aud` every token must carry.
    pub audience: String,
    /// The `iss` every token must carry.
    pub issuer: String,
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    pub max_token_bytes: usize,
    pub max_grants: usize,
    /// Origins (`https://example.com`) whose pages may open cookie-
    /// authenticated websockets and streams, besides the request's own host.
    pub allowed_origins: Vec<String>,
    /// What visitors without a token may do.
    pub anonymous: GrantsFile,
    /// The admin listener's own bearer token, from an environment variable
    /// or a file (at most one); unset: the admin listener is trusted by its
    /// position (loopback).
    pub admin_token_env: Option<String>,
    pub admin_token_file: Option<PathBuf>,
    /// RabbitMQ's HTTP auth backend, answered on the admin listener.
    pub amqp: AuthAmqp,
    /// Revocations (`olive.control.revoke.USER`): how long each refuses
    /// the user's older tokens, and how many are remembered.
    #[serde(with = "humantime_serde")]
    pub revoke_ttl: Duration,
    pub max_revoked: usize,
    /// Django's signed-cookie sessions as a second identity source.
    pub django_session: Option<DjangoSessionFile>,
}

/// Django's `SESSION_COOKIE_NAME` default.
pub const DEFAULT_DJANGO_SESSION_COOKIE: &str = "sessionid";

/// `[auth.django_session]`: the settings of a Django site whose
/// `SESSION_ENGINE` is `django.contrib.sessions.backends.signed_cookies`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DjangoSessionFile {
    /// `SECRET_KEY`, from an environment variable or a file (exactly one).
    pub secret_key_env: Option<String>,
    pub secret_key_file: Option<PathBuf>,
    /// `SECRET_KEY_FALLBACKS`, one file each.
    #[serde(default)]
    pub fallback_key_files: Vec<PathBuf>,
    /// `SESSION_COOKIE_NAME`.
    #[serde(default = "default_session_cookie")]
    pub cookie: String,
    /// `SESSION_COOKIE_AGE`.
    #[serde(default = "default_session_age", with = "humantime_serde")]
    pub max_age: Duration,
    /// What a logged-in session user may do.
    #[serde(default)]
    pub grants: GrantsFile,
}

fn default_session_cookie() -> String {
    DEFAULT_DJANGO_SESSION_COOKIE.into()
}

fn default_session_age() -> Duration {
    crate::auth::django_session::DEFAULT_SESSION_COOKIE_AGE
}

impl Default for Auth {
    fn default() -> Self {
        Self {
            keys: Vec::new(),
            audience: DEFAULT_AUTH_AUDIENCE.into(),
            issuer: DEFAULT_AUTH_ISSUER.into(),
            leeway: DEFAULT_AUTH_LEEWAY,
            max_token_bytes: DEFAULT_AUTH_MAX_TOKEN_BYTES,
            max_grants: DEFAULT_AUTH_MAX_GRANTS,
            allowed_origins: Vec::new(),
            anonymous: GrantsFile::default(),
            admin_token_env: None,
            admin_token_file: None,
            amqp: AuthAmqp::default(),
            revoke_ttl: DEFAULT_AUTH_REVOKE_TTL,
            max_revoked: DEFAULT_AUTH_MAX_REVOKED,
            django_session: None,
        }
    }
}

/// One `[[auth.key]]`. The algorithm is pinned per key: a token naming
/// this `kid` with any other `alg` is refused.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthKey {
    pub kid: String,
    pub algorithm: TokenAlgorithm,
    /// HS256: the shared secret, from an environment variable or a file.
    pub secret_env: Option<String>,
    pub secret_file: Option<PathBuf>,
    /// RS256, ES256, EdDSA: the PEM public key (`BEGIN PUBLIC KEY`).
    pub public_key_file: Option<PathBuf>,
}

/// The algorithms olive accepts; `none` and the rest are not among them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum TokenAlgorithm {
    HS256,
    RS256,
    ES256,
    EdDSA,
}

/// Grants as written: key patterns per action.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrantsFile {
    pub subscribe: Vec<String>,
    pub publish: Vec<String>,
    pub presence: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthAmqp {
    /// The only vhost token users may open.
    pub vhost: String,
    pub max_users: usize,
}

impl Default for AuthAmqp {
    fn default() -> Self {
        Self { vhost: DEFAULT_AUTH_AMQP_VHOST.into(), max_users: DEFAULT_AUTH_AMQP_MAX_USERS }
    }
}
