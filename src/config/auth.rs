//! The validated `[auth]` settings: verification keys loaded and checked
//! (a key that cannot verify anything is an error at start-up, not a
//! refusal of every token later), secrets resolved from where the file
//! says they live, grants and origins parsed.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey};

use super::Validator;
use super::file::{self, TokenAlgorithm};
use crate::auth::django_session::SessionVerifier;
use crate::auth::grants::Grants;

/// HS256 secrets shorter than the hash output weaken it (RFC 7518 §3.2).
const MIN_SECRET_BYTES: usize = 32;

/// What `[auth]` decided.
#[derive(Debug, Clone)]
pub struct Auth {
    pub keys: Vec<TokenKey>,
    pub audience: String,
    pub issuer: String,
    pub leeway: Duration,
    pub max_token_bytes: usize,
    pub max_grants: usize,
    /// Lower-cased `scheme://host[:port]`.
    pub allowed_origins: Vec<String>,
    pub anonymous: Grants,
    pub admin_token: Option<Secret>,
    pub amqp_vhost: String,
    pub amqp_max_users: usize,
    pub revoke_ttl: Duration,
    pub max_revoked: usize,
    /// Django's signed-cookie sessions, when configured.
    pub django_session: Option<DjangoSession>,
}

/// The validated `[auth.django_session]`.
#[derive(Debug, Clone)]
pub struct DjangoSession {
    pub verifier: SessionVerifier,
    pub cookie: String,
    pub grants: Arc<Grants>,
}

impl Default for Auth {
    /// No keys, nothing granted to anyone (tests, embedding).
    fn default() -> Auth {
        let d = file::Auth::default();
        Auth {
            keys: Vec::new(),
            audience: d.audience,
            issuer: d.issuer,
            leeway: d.leeway,
            max_token_bytes: d.max_token_bytes,
            max_grants: d.max_grants,
            allowed_origins: Vec::new(),
            anonymous: Grants::default(),
            admin_token: None,
            amqp_vhost: d.amqp.vhost,
            amqp_max_users: d.amqp.max_users,
            revoke_ttl: d.revoke_ttl,
            max_revoked: d.max_revoked,
            django_session: None,
        }
    }
}

/// A verification key with its pinned algorithm.
#[derive(Debug, Clone)]
pub struct TokenKey {
    pub kid: String,
    pub algorithm: Algorithm,
    pub decoding: DecodingKey,
    /// HS256 only: the secret, which also signs (`olive token`).
    pub secret: Option<Secret>,
}

/// Bytes that must never reach a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub Vec<u8>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Validator<'_> {
    pub(super) fn auth(&mut self, a: file::Auth) -> Auth {
        let mut keys = Vec::new();
        for (i, k) in a.keys.into_iter().enumerate() {
            if let Some(key) = self.token_key(i, k) {
                if keys.iter().any(|o: &TokenKey| o.kid == key.kid) {
                    self.error(format!("auth.key[{i}].kid"), format!("duplicate kid {:?}", key.kid));
                }
                keys.push(key);
            }
        }
        for (field, value) in [
            ("audience", a.audience.is_empty()),
            ("issuer", a.issuer.is_empty()),
            ("amqp.vhost", a.amqp.vhost.is_empty()),
        ] {
            if value {
                self.error(format!("auth.{field}"), "must not be empty");
            }
        }
        for (field, value) in [
            ("max_token_bytes", a.max_token_bytes),
            ("max_grants", a.max_grants),
            ("amqp.max_users", a.amqp.max_users),
            ("max_revoked", a.max_revoked),
        ] {
            if value == 0 {
                self.error(format!("auth.{field}"), "must be greater than 0");
            }
        }
        let mut origins = Vec::new();
        for (i, o) in a.allowed_origins.iter().enumerate() {
            match normalize_origin(o) {
                Some(o) => origins.push(o),
                None => self.error(
                    format!("auth.allowed_origins[{i}]"),
                    format!(
                        "{o:?} is not an origin like \"https://example.com\" (scheme, host, optional port)"
                    ),
                ),
            }
        }
        let g = &a.anonymous;
        let anonymous = match Grants::parse(&g.subscribe, &g.publish, &g.presence, usize::MAX) {
            Ok(grants) => grants,
            Err(e) => {
                self.error("auth.anonymous", e.to_string());
                Grants::default()
            }
        };
        let admin_token =
            self.secret("auth.admin_token", a.admin_token_env.as_deref(), a.admin_token_file).map(Secret);
        if admin_token.as_ref().is_some_and(|t| t.0.is_empty()) {
            self.error("auth.admin_token_env", "the admin token is empty");
        }
        Auth {
            keys,
            audience: a.audience,
            issuer: a.issuer,
            leeway: a.leeway,
            max_token_bytes: a.max_token_bytes,
            max_grants: a.max_grants,
            allowed_origins: origins,
            anonymous,
            admin_token,
            amqp_vhost: a.amqp.vhost,
            amqp_max_users: a.amqp.max_users,
            revoke_ttl: a.revoke_ttl,
            max_revoked: a.max_revoked,
            django_session: a.django_session.and_then(|d| self.django_session(d)),
        }
    }

    fn django_session(&mut self, d: file::DjangoSessionFile) -> Option<DjangoSession> {
        const FIELD: &str = "auth.django_session";
        let Some(secret) =
            self.secret(&format!("{FIELD}.secret_key"), d.secret_key_env.as_deref(), d.secret_key_file)
        else {
            self.error(
                format!("{FIELD}.secret_key_env"),
                "Django's SECRET_KEY is needed: set secret_key_env or secret_key_file",
            );
            return None;
        };
        let fallbacks: Vec<Vec<u8>> = d
            .fallback_key_files
            .into_iter()
            .enumerate()
            .filter_map(|(i, path)| {
                self.secret(&format!("{FIELD}.fallback_key_files[{i}]"), None, Some(path))
            })
            .collect();
        let g = &d.grants;
        let grants = match Grants::parse(&g.subscribe, &g.publish, &g.presence, usize::MAX) {
            Ok(grants) => grants,
            Err(e) => {
                self.error(format!("{FIELD}.grants"), e.to_string());
                return None;
            }
        };
        match SessionVerifier::new(secret, &fallbacks, d.max_age) {
            Ok(verifier) => Some(DjangoSession { verifier, cookie: d.cookie, grants: Arc::new(grants) }),
            Err(e) => {
                self.error(format!("{FIELD}.secret_key_env"), e.to_string());
                None
            }
        }
    }

    fn token_key(&mut self, i: usize, k: file::AuthKey) -> Option<TokenKey> {
        let field = |f: &str| format!("auth.key[{i}].{f}");
        if k.kid.is_empty() {
            self.error(field("kid"), "must not be empty");
        }
        let algorithm = match k.algorithm {
            TokenAlgorithm::HS256 => Algorithm::HS256,
            TokenAlgorithm::RS256 => Algorithm::RS256,
            TokenAlgorithm::ES256 => Algorithm::ES256,
            TokenAlgorithm::EdDSA => Algorithm::EdDSA,
        };
        let hmac = k.algorithm == TokenAlgorithm::HS256;
        // A secret where a public key belongs (or the reverse) is exactly
        // the HS/RS confusion the pinning exists to rule out.
        if hmac && k.public_key_file.is_some() {
            self.error(field("public_key_file"), "HS256 keys take secret_env or secret_file");
        }
        if !hmac && (k.secret_env.is_some() || k.secret_file.is_some()) {
            self.error(field("secret_env"), format!("{:?} keys take public_key_file", k.algorithm));
        }
        if hmac {
            if k.secret_env.is_none() && k.secret_file.is_none() {
                self.error(field("secret_env"), "HS256 keys need secret_env or secret_file");
                return None;
            }
            let prefix = format!("auth.key[{i}].secret");
            let secret = self.secret(&prefix, k.secret_env.as_deref(), k.secret_file)?;
            if secret.len() < MIN_SECRET_BYTES {
                self.error(
                    field("secret_env"),
                    format!("an HS256 secret needs at least {MIN_SECRET_BYTES} bytes"),
                );
                return None;
            }
            return Some(TokenKey {
                kid: k.kid,
                algorithm,
                decoding: DecodingKey::from_secret(&secret),
                secret: Some(Secret(secret)),
            });
        }
        let Some(path) = k.public_key_file else {
            self.error(field("public_key_file"), format!("{:?} keys need public_key_file", k.algorithm));
            return None;
        };
        let path = self.path(path);
        let pem = match std::fs::read(&path) {
            Ok(pem) => pem,
            Err(e) => {
                self.error(field("public_key_file"), format!("{}: {e}", path.display()));
                return None;
            }
        };
        let decoding = match algorithm {
            Algorithm::RS256 => DecodingKey::from_rsa_pem(&pem),
            Algorithm::ES256 => DecodingKey::from_ec_pem(&pem),
            _ => DecodingKey::from_ed_pem(&pem),
        };
        match decoding {
            Ok(decoding) => Some(TokenKey { kid: k.kid, algorithm, decoding, secret: None }),
            Err(e) => {
                self.error(
                    field("public_key_file"),
                    format!("{}: not a {:?} public key in PEM: {e}", path.display(), k.algorithm),
                );
                None
            }
        }
    }

    /// A secret from exactly one of an environment variable or a file;
    /// `None` when neither is given or on an error. Errors are reported under
    /// `{prefix}_env` / `{prefix}_file`; messages never repeat the secret.
    fn secret(&mut self, prefix: &str, env: Option<&str>, file: Option<PathBuf>) -> Option<Vec<u8>> {
        match (env, file) {
            (Some(_), Some(_)) => {
                self.error(
                    format!("{prefix}_env"),
                    format!("set at most one of {prefix}_env, {prefix}_file"),
                );
                None
            }
            (Some(name), None) => match (self.env)(name) {
                Some(value) => Some(value.into_bytes()),
                None => {
                    self.error(format!("{prefix}_env"), format!("environment variable {name:?} is not set"));
                    None
                }
            },
            (None, Some(path)) => {
                let path = self.path(path);
                match std::fs::read_to_string(&path) {
                    // A trailing newline from `echo secret > file` is not part of it.
                    Ok(text) => Some(text.trim_end_matches(['\n', '\r']).as_bytes().to_vec()),
                    Err(e) => {
                        self.error(format!("{prefix}_file"), format!("{}: {e}", path.display()));
                        None
                    }
                }
            }
            (None, None) => None,
        }
    }
}

/// `https://Example.com:8443/` → `https://example.com:8443`; `None` when it
/// is not scheme://host[:port].
pub fn normalize_origin(origin: &str) -> Option<String> {
    let uri = origin.trim_end_matches('/').parse::<http::Uri>().ok()?;
    let scheme = uri.scheme_str()?;
    let authority = uri.authority()?;
    let bare = uri.path_and_query().is_none_or(|pq| pq.as_str().is_empty() || pq.as_str() == "/");
    (bare && !authority.as_str().contains('@'))
        .then(|| format!("{scheme}://{authority}").to_ascii_lowercase())
}
