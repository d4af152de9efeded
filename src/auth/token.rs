//! Tokens: verifying the JWTs Django mints, and minting them (`olive
//! token`) with the same keys.
//!
//! The key is picked by the token's `kid`, and its algorithm is pinned by
//! the configuration, never taken from the token: a token that names an
//! HS256 key but says RS256 (or the reverse, or `none`) is refused before
//! any signature is computed. `exp`, `aud`, `iss` and `sub` are required;
//! `nbf` is checked when present. The claims are documented in
//! `docs/PROTOCOL.md` ("Tokens").

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::grants::{GrantError, Grants, RawGrants};
use crate::config;

/// The claims olive reads. `aud`, `iss`, `nbf` are checked by the
/// verifier and not kept; `iat` decides whether a revocation covers the
/// token; unknown claims (`jti`) are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The Django user id. Required, like `exp`.
    #[serde(default)]
    pub sub: String,
    /// The display name shown in presence and on published messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The RabbitMQ user name this identity logs in as (with the token as
    /// its password), for programs that talk AMQP directly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amqp_user: Option<String>,
    #[serde(default)]
    pub grants: RawGrants,
    /// Expiry, seconds since the epoch. Required: the verifier refuses a
    /// token without it (the default only lets that refusal name the claim).
    #[serde(default)]
    pub exp: u64,
    /// When it was minted, seconds since the epoch (written by the minter,
    /// not from here).
    #[serde(default, skip_serializing)]
    pub iat: Option<u64>,
}

/// What a token minted by `olive token` carries: the claims olive reads,
/// and the ones it checks.
#[derive(Debug, Serialize)]
struct MintedClaims<'a> {
    #[serde(flatten)]
    claims: &'a Claims,
    aud: &'a str,
    iss: &'a str,
    iat: u64,
}

/// The user a token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub name: Option<String>,
    pub amqp_user: Option<String>,
}

/// A token that passed every check.
#[derive(Debug, Clone)]
pub struct Verified {
    pub user: User,
    pub grants: Grants,
    /// When it stops being accepted (its `exp` plus the leeway).
    pub expires: SystemTime,
    /// Its `iat`, if it has one.
    pub issued: Option<u64>,
}

/// Why a token was refused; each is counted ([`super::Stats`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token larger than {max} bytes")]
    TooLarge { max: usize },
    #[error("not a well-formed JWT")]
    Malformed,
    #[error("the token names no key (kid)")]
    NoKid,
    #[error("no key with kid {0:?}")]
    UnknownKid(String),
    #[error("the token's algorithm is not the one configured for its key")]
    Algorithm,
    #[error("bad signature")]
    Signature,
    #[error("token expired")]
    Expired,
    #[error("token not valid yet (nbf)")]
    NotYetValid,
    #[error("wrong audience (aud)")]
    Audience,
    #[error("wrong issuer (iss)")]
    Issuer,
    #[error("the token lacks the {0} claim")]
    MissingClaim(String),
    #[error("bad grants: {0}")]
    Grants(#[from] GrantError),
    #[error("token revoked")]
    Revoked,
    #[error("the token's header uses {0:?}, which olive does not implement")]
    Unsupported(&'static str),
}

/// Checks tokens against the configured keys.
pub struct Verifier {
    keys: HashMap<String, (DecodingKey, Validation)>,
    max_bytes: usize,
    max_grants: usize,
    leeway: Duration,
}

impl Verifier {
    pub fn new(config: &config::Auth) -> Verifier {
        let keys = config
            .keys
            .iter()
            .map(|k| {
                let mut v = Validation::new(k.algorithm);
                v.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
                v.set_audience(&[&config.audience]);
                v.set_issuer(&[&config.issuer]);
                v.validate_nbf = true;
                v.leeway = config.leeway.as_secs();
                // jsonwebtoken accepts a token in the second of its `exp`;
                // RFC 7519 §4.1.4 says "on or after" it is refused, which
                // is also when a live session with it is closed.
                v.reject_tokens_expiring_in_less_than = 1;
                (k.kid.clone(), (k.decoding.clone(), v))
            })
            .collect();
        Verifier {
            keys,
            max_bytes: config.max_token_bytes,
            max_grants: config.max_grants,
            leeway: config.leeway,
        }
    }

    /// Verifies `token` (the compact JWT, nothing around it).
    pub fn verify(&self, token: &str) -> Result<Verified, TokenError> {
        if token.len() > self.max_bytes {
            return Err(TokenError::TooLarge { max: self.max_bytes });
        }
        refuse_unsupported_header(token)?;
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        let kid = header.kid.ok_or(TokenError::NoKid)?;
        let (key, validation) = self.keys.get(&kid).ok_or(TokenError::UnknownKid(kid))?;
        let data = jsonwebtoken::decode::<Claims>(token, key, validation).map_err(|e| classify(e.kind()))?;
        let claims = data.claims;
        if claims.sub.is_empty() {
            return Err(TokenError::MissingClaim("sub".into()));
        }
        let grants = Grants::from_raw(&claims.grants, self.max_grants)?;
        Ok(Verified {
            user: User { id: claims.sub, name: claims.name, amqp_user: claims.amqp_user },
            grants,
            expires: UNIX_EPOCH + Duration::from_secs(claims.exp) + self.leeway,
            issued: claims.iat,
        })
    }
}

/// Header parameters that change what the signature covers or demand
/// processing olive does not do: `crit` must make a recipient that does not
/// understand every name in it refuse the token (RFC 7515 §4.1.11), and
/// `b64: false` means the payload was signed unencoded (RFC 7797 §3).
/// jsonwebtoken ignores both, so they are refused here. Keys a token
/// brings along (`jwk`, `jku`, `x5u`, `x5c`) are simply never used.
const UNSUPPORTED_HEADER: [&str; 2] = ["crit", "b64"];

fn refuse_unsupported_header(token: &str) -> Result<(), TokenError> {
    use base64::Engine;
    let segment = token.split('.').next().unwrap_or("");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| TokenError::Malformed)?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)?;
    match UNSUPPORTED_HEADER.into_iter().find(|name| header.contains_key(*name)) {
        Some(name) => Err(TokenError::Unsupported(name)),
        None => Ok(()),
    }
}

fn classify(kind: &ErrorKind) -> TokenError {
    match kind {
        ErrorKind::InvalidSignature => TokenError::Signature,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName | ErrorKind::UnsupportedAlgorithm => {
            TokenError::Algorithm
        }
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidAudience => TokenError::Audience,
        ErrorKind::InvalidIssuer => TokenError::Issuer,
        ErrorKind::MissingRequiredClaim(claim) => TokenError::MissingClaim(claim.clone()),
        // A key the configuration accepted that cannot check this token
        // (an RSA key too short for the signature, say): not verified.
        ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat
        | ErrorKind::Provider(_) => TokenError::Signature,
        _ => TokenError::Malformed,
    }
}

/// What `olive token` puts in a token.
#[derive(Debug, Clone)]
pub struct Mint {
    pub user: String,
    pub name: Option<String>,
    pub amqp_user: Option<String>,
    pub grants: RawGrants,
    pub ttl: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error("[auth] has no [[auth.key]] to sign with")]
    NoKeys,
    #[error("no [[auth.key]] with kid {0:?}")]
    UnknownKid(String),
    #[error("kid {kid:?} is {algorithm:?}: olive holds only its public key; pass --private-key FILE")]
    NeedsPrivateKey { kid: String, algorithm: Algorithm },
    #[error("the private key is not a {algorithm:?} key in PEM (PKCS#8 for ES256 and EdDSA): {source}")]
    PrivateKey { algorithm: Algorithm, source: jsonwebtoken::errors::Error },
    #[error("the grants do not parse: {0}")]
    Grants(#[from] GrantError),
    #[error("signing failed: {0}")]
    Sign(jsonwebtoken::errors::Error),
}

/// Signs a token for `mint` with the key named `kid` (default: the first
/// configured key). Asymmetric keys need the private key in PEM.
pub fn mint(
    config: &config::Auth,
    kid: Option<&str>,
    private_key_pem: Option<&[u8]>,
    mint: &Mint,
) -> Result<String, MintError> {
    let key = match kid {
        Some(kid) => {
            config.keys.iter().find(|k| k.kid == kid).ok_or_else(|| MintError::UnknownKid(kid.into()))?
        }
        None => config.keys.first().ok_or(MintError::NoKeys)?,
    };
    Grants::from_raw(&mint.grants, config.max_grants)?;
    let algorithm = key.algorithm;
    let encoding = match (&key.secret, private_key_pem) {
        (Some(secret), _) => EncodingKey::from_secret(&secret.0),
        (None, None) => return Err(MintError::NeedsPrivateKey { kid: key.kid.clone(), algorithm }),
        (None, Some(pem)) => match algorithm {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(pem),
            Algorithm::ES256 => EncodingKey::from_ec_pem(pem),
            _ => EncodingKey::from_ed_pem(pem),
        }
        .map_err(|source| MintError::PrivateKey { algorithm, source })?,
    };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let claims = Claims {
        sub: mint.user.clone(),
        name: mint.name.clone(),
        amqp_user: mint.amqp_user.clone(),
        grants: mint.grants.clone(),
        exp: now + mint.ttl.as_secs(),
        iat: None,
    };
    let minted = MintedClaims { claims: &claims, aud: &config.audience, iss: &config.issuer, iat: now };
    let mut header = Header::new(algorithm);
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&header, &minted, &encoding).map_err(MintError::Sign)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Secret, TokenKey};

    fn config(secrets: &[(&str, &str)]) -> config::Auth {
        let keys = secrets
            .iter()
            .map(|(kid, secret)| TokenKey {
                kid: kid.to_string(),
                algorithm: Algorithm::HS256,
                decoding: DecodingKey::from_secret(secret.as_bytes()),
                secret: Some(Secret(secret.as_bytes().to_vec())),
            })
            .collect();
        config::Auth { keys, ..config::Auth::default() }
    }

    fn ann() -> Mint {
        let grants = RawGrants { subscribe: vec!["olive.notes.#".into()], ..RawGrants::default() };
        Mint {
            user: "7".into(),
            name: Some("Ann".into()),
            amqp_user: None,
            grants,
            ttl: Duration::from_secs(60),
        }
    }

    const A: &str = "a-secret-that-is-thirty-two-bytes-long";
    const B: &str = "b-secret-that-is-thirty-two-bytes-long";

    #[test]
    fn minted_tokens_verify_by_kid() {
        let both = config(&[("a", A), ("b", B)]);
        let verifier = Verifier::new(&both);
        for kid in ["a", "b"] {
            let token = mint(&both, Some(kid), None, &ann()).unwrap();
            let verified = verifier.verify(&token).unwrap();
            assert_eq!(verified.user.id, "7");
            assert_eq!(verified.user.name.as_deref(), Some("Ann"));
            assert_eq!(verified.grants.subscribe[0].as_str(), "olive.notes.#");
        }
        // Only "b" left: tokens from "a" stop working (the end of a rotation).
        let token = mint(&both, Some("a"), None, &ann()).unwrap();
        let only_b = Verifier::new(&config(&[("b", B)]));
        assert_eq!(only_b.verify(&token).unwrap_err(), TokenError::UnknownKid("a".into()));
        // Same kid, another secret: the signature fails.
        let swapped = Verifier::new(&config(&[("a", B)]));
        assert_eq!(swapped.verify(&token).unwrap_err(), TokenError::Signature);
    }

    #[test]
    fn refusals_table() {
        let c = config(&[("a", A)]);
        let verifier = Verifier::new(&c);
        let key = EncodingKey::from_secret(A.as_bytes());
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let sign = |claims: serde_json::Value, kid: Option<&str>| {
            let mut header = Header::new(Algorithm::HS256);
            header.kid = kid.map(str::to_owned);
            jsonwebtoken::encode(&header, &claims, &key).unwrap()
        };
        let good = serde_json::json!({"sub": "1", "aud": "olive", "iss": "django", "exp": now + 60});
        let with = |k: &str, v: serde_json::Value| {
            let mut c = good.clone();
            c[k] = v;
            c
        };
        let without = |k: &str| {
            let mut c = good.clone();
            c.as_object_mut().unwrap().remove(k);
            c
        };
        assert!(verifier.verify(&sign(good.clone(), Some("a"))).is_ok());
        for (token, want) in [
            (sign(good.clone(), None), TokenError::NoKid),
            (sign(with("exp", (now - 3600).into()), Some("a")), TokenError::Expired),
            (sign(with("nbf", (now + 3600).into()), Some("a")), TokenError::NotYetValid),
            (sign(with("aud", "other".into()), Some("a")), TokenError::Audience),
            (sign(with("iss", "mallory".into()), Some("a")), TokenError::Issuer),
            (sign(without("exp"), Some("a")), TokenError::MissingClaim("exp".into())),
            (sign(without("aud"), Some("a")), TokenError::MissingClaim("aud".into())),
            (sign(without("sub"), Some("a")), TokenError::MissingClaim("sub".into())),
            ("not.a.jwt".into(), TokenError::Malformed),
            ("x".repeat(5000), TokenError::TooLarge { max: 4096 }),
        ] {
            assert_eq!(verifier.verify(&token).unwrap_err(), want, "{token}");
        }
        let bad_grants = sign(with("grants", serde_json::json!({"subscribe": ["a..b"]})), Some("a"));
        assert!(matches!(verifier.verify(&bad_grants), Err(TokenError::Grants(_))));
    }

    #[test]
    fn alg_none_and_a_different_alg_are_refused() {
        let c = config(&[("a", A)]);
        let verifier = Verifier::new(&c);
        // {"alg":"none","kid":"a"} . {"sub":"1","aud":"olive","iss":"django","exp":4294967295} . (no signature)
        let none = "eyJhbGciOiJub25lIiwia2lkIjoiYSJ9.eyJzdWIiOiIxIiwiYXVkIjoib2xpdmUiLCJpc3MiOiJkamFuZ28iLCJleHAiOjQyOTQ5NjcyOTV9.";
        assert_eq!(verifier.verify(none).unwrap_err(), TokenError::Malformed);
        let hs384 = {
            let mut header = Header::new(Algorithm::HS384);
            header.kid = Some("a".into());
            let claims = serde_json::json!({"sub": "1", "aud": "olive", "iss": "django", "exp": u32::MAX});
            jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(A.as_bytes())).unwrap()
        };
        assert_eq!(verifier.verify(&hs384).unwrap_err(), TokenError::Algorithm);
    }
}
