//! Django's signed-cookie sessions (`django.contrib.sessions.backends.signed_cookies`)
//! verified the way `django.core.signing.loads` verifies them, so that olive
//! can take the user id from a `sessionid` cookie without asking Django.
//!
//! A cookie value is what `TimestampSigner(salt=SALT).sign_object(session,
//! compress=True)` produces:
//!
//! ```text
//! [.]PAYLOAD:TIMESTAMP:SIGNATURE
//! ```
//!
//! - `PAYLOAD` is URL-safe base64 without padding of the session as compact
//!   JSON; a leading `.` says it was zlib-compressed first (Django compresses
//!   only when that saves more than one byte).
//! - `TIMESTAMP` is the signing time in whole Unix seconds, base62
//!   (`0-9A-Za-z`).
//! - `SIGNATURE` is URL-safe base64 without padding of
//!   `HMAC-SHA256(key, "[.]PAYLOAD:TIMESTAMP")` where
//!   `key = SHA-256(SALT + "signer" + secret)` (`django.utils.crypto.salted_hmac`),
//!   tried with `SECRET_KEY` and then each of `SECRET_KEY_FALLBACKS`.
//!
//! The order of the checks is Django's: the signature first (so nothing an
//! attacker wrote is decoded), then the age against `SESSION_COOKIE_AGE`,
//! then base64, zlib and JSON. Django compares signatures as base64 strings
//! in constant time, and so does this module.
//!
//! What this cannot check: `_auth_user_hash` is an HMAC of the user's
//! password hash, which only Django's database knows, so a session signed
//! before a password change stays valid here until it expires. Django's
//! signed-cookie sessions cannot be revoked server-side either; that is the
//! documented trade-off of that backend.
//!
//! Where a value that passed the signature check is decoded, olive is
//! stricter than Python in two corners only the holder of the secret could
//! reach: base64 must be clean (Python skips stray characters) and a
//! timestamp must fit an `i64` (Python's integers are unbounded).

use std::fmt;
use std::time::{Duration, SystemTime};

use aws_lc_rs::{constant_time, digest, hmac};
use base64::Engine;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, general_purpose};
use flate2::{Decompress, FlushDecompress, Status};
use serde_json::{Map, Value};

/// The salt `django.contrib.sessions.backends.signed_cookies` signs with.
pub const SIGNED_COOKIES_SALT: &str = "django.contrib.sessions.backends.signed_cookies";

/// Django's default `SESSION_COOKIE_AGE`: two weeks.
pub const DEFAULT_SESSION_COOKIE_AGE: Duration = Duration::from_secs(14 * 24 * 3600);

/// The longest cookie value looked at. Browsers keep at most about 4096
/// bytes per cookie (RFC 6265 §6.1 asks for at least that much and no more
/// is promised), and Django's signed sessions must fit in one; twice that
/// leaves room while capping the HMAC work a request can cause.
pub const MAX_COOKIE_BYTES: usize = 8 * 1024;

/// The most bytes a compressed session may inflate to. zlib can expand
/// about 1000:1, so a 4 KiB cookie could otherwise ask for 4 MiB; session
/// JSON that fits a cookie compressed is a few times its size at most. The
/// signature is checked first, so only the holder of the secret can send a
/// compressed payload at all; this bounds the damage of a bug on that side.
pub const MAX_SESSION_BYTES: usize = 64 * 1024;

/// `django.contrib.auth.SESSION_KEY`: the logged-in user's primary key.
pub const SESSION_KEY: &str = "_auth_user_id";
/// `django.contrib.auth.BACKEND_SESSION_KEY`: the backend that logged the
/// user in.
pub const BACKEND_SESSION_KEY: &str = "_auth_user_backend";
/// `django.contrib.auth.HASH_SESSION_KEY`: an HMAC of the user's password
/// hash, which olive cannot check (see the module docs).
pub const HASH_SESSION_KEY: &str = "_auth_user_hash";

/// Django's base62 alphabet (`django.core.signing.BASE62_ALPHABET`).
const BASE62_ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `django.core.signing.b64_decode`: URL-safe, padding optional (Django
/// strips it), trailing bits not checked (Python's binascii does not).
const B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Why a session cookie was not accepted.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SessionError {
    /// No `:` separators, or no secret produces this signature: forged,
    /// tampered with, signed with another salt, or signed with a secret
    /// that has been retired.
    #[error("bad signature")]
    BadSignature,
    /// Signed correctly, but longer ago than the maximum age.
    #[error("expired: signed {age_secs} s ago, max age {max_age_secs} s")]
    Expired { age_secs: u64, max_age_secs: u64 },
    /// Signed correctly but not decodable; `what` names the layer.
    #[error("malformed session: bad {what}")]
    Malformed { what: &'static str },
    /// The cookie value or its inflated payload is over the limit
    /// ([`MAX_COOKIE_BYTES`], [`MAX_SESSION_BYTES`]).
    #[error("session too large")]
    TooLarge,
}

impl SessionError {
    /// A short fixed label for metrics (`bad_signature`, `expired`,
    /// `malformed`, `too_large`).
    pub fn reason(&self) -> &'static str {
        match self {
            SessionError::BadSignature => "bad_signature",
            SessionError::Expired { .. } => "expired",
            SessionError::Malformed { .. } => "malformed",
            SessionError::TooLarge => "too_large",
        }
    }
}

/// A secret that cannot be used to verify anything.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SecretError {
    /// Django refuses an empty `SECRET_KEY`, and an empty fallback would be
    /// replaced by `SECRET_KEY` in `Signer.signature` (`key or self.key`);
    /// either way it is a configuration mistake.
    #[error("secret {index} is empty (0 is SECRET_KEY, then SECRET_KEY_FALLBACKS)")]
    Empty { index: usize },
}

/// A verified session.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    /// `_auth_user_id`: the logged-in user's primary key as Django stores it
    /// (a string; a JSON number is accepted and written in decimal). `None`
    /// for an anonymous session.
    pub user_id: Option<String>,
    /// `_auth_user_backend`, the dotted path of the backend that logged the
    /// user in.
    pub backend: Option<String>,
    /// The whole session as Django stored it.
    pub data: Map<String, Value>,
    /// When the cookie was signed.
    pub signed_at: SystemTime,
}

/// Verifies Django signed-cookie session values.
///
/// The derived HMAC keys are computed once here, not per request.
#[derive(Clone)]
pub struct SessionVerifier {
    /// One per secret: `SECRET_KEY` first, then `SECRET_KEY_FALLBACKS` in
    /// order, as Django tries them.
    keys: Vec<hmac::Key>,
    max_age: Duration,
    salt: String,
}

impl fmt::Debug for SessionVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the keys.
        f.debug_struct("SessionVerifier")
            .field("secrets", &self.keys.len())
            .field("max_age", &self.max_age)
            .field("salt", &self.salt)
            .finish()
    }
}

impl SessionVerifier {
    /// A verifier for `django.contrib.sessions.backends.signed_cookies`
    /// with `SECRET_KEY`, `SECRET_KEY_FALLBACKS` and `SESSION_COOKIE_AGE`.
    pub fn new<S: AsRef<[u8]>>(
        secret_key: S,
        fallbacks: &[S],
        max_age: Duration,
    ) -> Result<SessionVerifier, SecretError> {
        Self::with_salt(SIGNED_COOKIES_SALT, secret_key, fallbacks, max_age)
    }

    /// As [`SessionVerifier::new`] for values made by
    /// `signing.dumps(..., salt=salt)`.
    pub fn with_salt<S: AsRef<[u8]>>(
        salt: &str,
        secret_key: S,
        fallbacks: &[S],
        max_age: Duration,
    ) -> Result<SessionVerifier, SecretError> {
        let secrets = std::iter::once(secret_key.as_ref()).chain(fallbacks.iter().map(AsRef::as_ref));
        let keys = secrets
            .enumerate()
            .map(|(index, secret)| {
                if secret.is_empty() {
                    return Err(SecretError::Empty { index });
                }
                Ok(derive_key(salt, secret))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SessionVerifier { keys, max_age, salt: salt.to_owned() })
    }

    /// `SESSION_COOKIE_AGE`: older signatures are [`SessionError::Expired`].
    pub fn max_age(&self) -> Duration {
        self.max_age
    }

    /// The signing salt, [`SIGNED_COOKIES_SALT`] unless built [`SessionVerifier::with_salt`].
    pub fn salt(&self) -> &str {
        &self.salt
    }

    /// Checks a `sessionid` cookie value as `signing.loads(value, salt=...,
    /// max_age=SESSION_COOKIE_AGE)` does, at time `now`.
    pub fn verify(&self, cookie_value: &str, now: SystemTime) -> Result<Session, SessionError> {
        if cookie_value.len() > MAX_COOKIE_BYTES {
            return Err(SessionError::TooLarge);
        }
        // Signer.unsign
        let (signed, signature) = cookie_value.rsplit_once(':').ok_or(SessionError::BadSignature)?;
        if !self.keys.iter().any(|key| signature_matches(key, signed, signature)) {
            return Err(SessionError::BadSignature);
        }
        // TimestampSigner.unsign
        let (payload, timestamp) =
            signed.rsplit_once(':').ok_or(SessionError::Malformed { what: "timestamp" })?;
        let timestamp = b62_decode(timestamp).ok_or(SessionError::Malformed { what: "timestamp" })?;
        let offset = Duration::from_secs(timestamp.unsigned_abs());
        let signed_at = if timestamp >= 0 {
            SystemTime::UNIX_EPOCH.checked_add(offset)
        } else {
            SystemTime::UNIX_EPOCH.checked_sub(offset)
        }
        .ok_or(SessionError::Malformed { what: "timestamp" })?;
        // Django: `time.time() - timestamp > max_age`. A timestamp in the
        // future has a negative age and passes, as in Django.
        if let Ok(age) = now.duration_since(signed_at)
            && age > self.max_age
        {
            return Err(SessionError::Expired {
                age_secs: age.as_secs(),
                max_age_secs: self.max_age.as_secs(),
            });
        }
        // Signer.unsign_object
        let (compressed, payload) = match payload.strip_prefix('.') {
            Some(rest) => (true, rest),
            None => (false, payload),
        };
        let mut bytes = B64.decode(payload).map_err(|_| SessionError::Malformed { what: "base64" })?;
        if compressed {
            bytes = inflate(&bytes)?;
        }
        if bytes.len() > MAX_SESSION_BYTES {
            return Err(SessionError::TooLarge);
        }
        // JSONSerializer.loads: `json.loads(data.decode("latin-1"))`. Every
        // byte is a character; Django writes ASCII (json.dumps escapes the
        // rest), so this only matters for exactness.
        let text: String = bytes.iter().map(|&b| char::from(b)).collect();
        let data = match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(map)) => map,
            Ok(_) => return Err(SessionError::Malformed { what: "session (not a JSON object)" }),
            Err(_) => return Err(SessionError::Malformed { what: "JSON" }),
        };
        let user_id = match data.get(SESSION_KEY) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        let backend = data.get(BACKEND_SESSION_KEY).and_then(Value::as_str).map(str::to_owned);
        Ok(Session { user_id, backend, data, signed_at })
    }
}

/// `salted_hmac`'s key: `sha256(key_salt + secret)` with `key_salt = salt +
/// "signer"` (`Signer.signature`).
fn derive_key(salt: &str, secret: &[u8]) -> hmac::Key {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(salt.as_bytes());
    ctx.update(b"signer");
    ctx.update(secret);
    hmac::Key::new(hmac::HMAC_SHA256, ctx.finish().as_ref())
}

/// `constant_time_compare(sig, self.signature(value, key))`: Django compares
/// the base64 text, so a differently encoded signature of the same bytes
/// does not pass either.
fn signature_matches(key: &hmac::Key, value: &str, signature: &str) -> bool {
    let expected = general_purpose::URL_SAFE_NO_PAD.encode(hmac::sign(key, value.as_bytes()));
    constant_time::verify_slices_are_equal(expected.as_bytes(), signature.as_bytes()).is_ok()
}

/// `django.core.signing.b62_decode`, with an optional leading `-`; `None`
/// for an empty string, a character outside the alphabet or an `i64`
/// overflow.
fn b62_decode(s: &str) -> Option<i64> {
    let (negative, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    if s.is_empty() {
        return None; // Python: IndexError on s[0]
    }
    let mut value: i64 = 0;
    for c in digits.bytes() {
        let digit = BASE62_ALPHABET.iter().position(|&a| a == c)?;
        value = value.checked_mul(62)?.checked_add(digit as i64)?;
    }
    Some(if negative { -value } else { value })
}

/// `zlib.decompress`, stopping at [`MAX_SESSION_BYTES`]. Like Python, a
/// stream that ends early is an error and bytes after its end are ignored.
fn inflate(input: &[u8]) -> Result<Vec<u8>, SessionError> {
    const LIMIT: usize = MAX_SESSION_BYTES + 1;
    let mut z = Decompress::new(true);
    let mut out = Vec::with_capacity(input.len().saturating_mul(4).clamp(256, LIMIT));
    loop {
        if out.len() == out.capacity() {
            if out.len() >= LIMIT {
                return Err(SessionError::TooLarge);
            }
            out.reserve_exact(out.capacity().min(LIMIT - out.len()));
        }
        let (in_before, out_before) = (z.total_in(), z.total_out());
        let rest = input.get(in_before as usize..).unwrap_or_default();
        let status = z
            .decompress_vec(rest, &mut out, FlushDecompress::None)
            .map_err(|_| SessionError::Malformed { what: "zlib" })?;
        if status == Status::StreamEnd {
            return Ok(out);
        }
        if z.total_in() == in_before && z.total_out() == out_before {
            // Room to write and nothing read or written: the input ended
            // before the stream did.
            return Err(SessionError::Malformed { what: "zlib" });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const SECRET: &str = "django-insecure-current";
    const OLD: &str = "django-insecure-old";
    const NOW: u64 = 1_760_000_000;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn b62_encode(mut n: u64) -> String {
        if n == 0 {
            return "0".into();
        }
        let mut out = Vec::new();
        while n > 0 {
            out.push(BASE62_ALPHABET[(n % 62) as usize]);
            n /= 62;
        }
        out.reverse();
        String::from_utf8(out).unwrap()
    }

    /// `signing.dumps(json, salt=salt, compress=True)` at `when`, as a
    /// test-side re-implementation; tests/django_session.rs checks against
    /// real Django.
    fn sign_raw(salt: &str, secret: &str, payload: &str, when: &str) -> String {
        let value = format!("{payload}:{when}");
        let sig = general_purpose::URL_SAFE_NO_PAD
            .encode(hmac::sign(&derive_key(salt, secret.as_bytes()), value.as_bytes()));
        format!("{value}:{sig}")
    }

    fn dumps(salt: &str, secret: &str, json: &str, when: u64, compress: bool) -> String {
        let payload = if compress {
            let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            z.write_all(json.as_bytes()).unwrap();
            format!(".{}", B64.encode(z.finish().unwrap()))
        } else {
            B64.encode(json)
        };
        sign_raw(salt, secret, &payload, &b62_encode(when))
    }

    fn verifier() -> SessionVerifier {
        SessionVerifier::new(SECRET, &[OLD], Duration::from_secs(3600)).unwrap()
    }

    const USER: &str = r#"{"_auth_user_id":"42","_auth_user_backend":"django.contrib.auth.backends.ModelBackend","_auth_user_hash":"abc"}"#;

    #[test]
    fn accepts_and_rejects_like_django() {
        let big = format!(r#"{{"_auth_user_id":"7","cart":"{}"}}"#, "x".repeat(2000));
        let s = SIGNED_COOKIES_SALT;
        let good = dumps(s, SECRET, USER, NOW, false);
        let mut tampered_sig = good.clone();
        let last = tampered_sig.pop().unwrap();
        tampered_sig.push(if last == 'A' { 'B' } else { 'A' });
        let tampered_payload = good.replacen("eyJf", "eyJg", 1);
        let bomb = format!(r#"{{"pad":"{}"}}"#, "a".repeat(MAX_SESSION_BYTES));

        type Want = Result<Option<&'static str>, &'static str>;
        let cases: Vec<(&str, String, Want)> = vec![
            ("uncompressed", good.clone(), Ok(Some("42"))),
            ("compressed", dumps(s, SECRET, &big, NOW, true), Ok(Some("7"))),
            ("anonymous", dumps(s, SECRET, "{}", NOW, false), Ok(None)),
            ("integer user id", dumps(s, SECRET, r#"{"_auth_user_id":5}"#, NOW, false), Ok(Some("5"))),
            ("fallback key", dumps(s, OLD, USER, NOW, false), Ok(Some("42"))),
            ("unknown key", dumps(s, "someone-else", USER, NOW, false), Err("bad_signature")),
            ("wrong salt", dumps("django.core.signing", SECRET, USER, NOW, false), Err("bad_signature")),
            ("tampered signature", tampered_sig, Err("bad_signature")),
            ("tampered payload", tampered_payload, Err("bad_signature")),
            ("padded signature", format!("{good}="), Err("bad_signature")),
            ("no separator", "abc".into(), Err("bad_signature")),
            ("empty", String::new(), Err("bad_signature")),
            ("just under max age", dumps(s, SECRET, USER, NOW - 3600, false), Ok(Some("42"))),
            ("expired", dumps(s, SECRET, USER, NOW - 3601, false), Err("expired")),
            ("future timestamp", dumps(s, SECRET, USER, NOW + 86400, false), Ok(Some("42"))),
            ("malformed base62", sign_raw(s, SECRET, &B64.encode(USER), "1!x"), Err("malformed")),
            ("empty timestamp", sign_raw(s, SECRET, &B64.encode(USER), ""), Err("malformed")),
            ("base62 overflow", sign_raw(s, SECRET, &B64.encode(USER), &"z".repeat(20)), Err("malformed")),
            ("negative timestamp", sign_raw(s, SECRET, &B64.encode(USER), "-1"), Err("expired")),
            ("bad base64", sign_raw(s, SECRET, "e$J9", &b62_encode(NOW)), Err("malformed")),
            (
                "not zlib",
                sign_raw(s, SECRET, &format!(".{}", B64.encode(USER)), &b62_encode(NOW)),
                Err("malformed"),
            ),
            ("not JSON", dumps(s, SECRET, "{nope", NOW, false), Err("malformed")),
            ("not an object", dumps(s, SECRET, "[1]", NOW, false), Err("malformed")),
            ("zip bomb", dumps(s, SECRET, &bomb, NOW, true), Err("too_large")),
            ("too long", "a".repeat(MAX_COOKIE_BYTES + 1), Err("too_large")),
        ];
        let v = verifier();
        for (name, cookie, want) in cases {
            let got = v.verify(&cookie, at(NOW));
            match (&got, want) {
                (Ok(session), Ok(user)) => assert_eq!(session.user_id.as_deref(), user, "{name}"),
                (Err(e), Err(reason)) => assert_eq!(e.reason(), reason, "{name}: {e}"),
                _ => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn compressed_payload_is_marked_with_a_dot_and_decoded() {
        let json = format!(r#"{{"_auth_user_id":"1","k":"{}"}}"#, "ab".repeat(500));
        let cookie = dumps(SIGNED_COOKIES_SALT, SECRET, &json, NOW, true);
        assert!(cookie.starts_with('.'));
        let session = verifier().verify(&cookie, at(NOW)).unwrap();
        assert_eq!(session.data["k"].as_str().unwrap().len(), 1000);
        assert_eq!(session.signed_at, at(NOW));
    }

    #[test]
    fn truncated_zlib_is_malformed() {
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(USER.as_bytes()).unwrap();
        let mut deflated = z.finish().unwrap();
        deflated.truncate(deflated.len() - 6);
        let cookie = sign_raw(SIGNED_COOKIES_SALT, SECRET, &format!(".{}", B64.encode(&deflated)), "1");
        let v = SessionVerifier::new(SECRET, &[], Duration::from_secs(u64::MAX / 4)).unwrap();
        assert_eq!(v.verify(&cookie, at(NOW)), Err(SessionError::Malformed { what: "zlib" }));
    }

    #[test]
    fn inflate_stops_at_the_limit() {
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        z.write_all(&vec![b'a'; MAX_SESSION_BYTES]).unwrap();
        assert_eq!(inflate(&z.finish().unwrap()).unwrap().len(), MAX_SESSION_BYTES);
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        z.write_all(&vec![b'a'; 10 * 1024 * 1024]).unwrap();
        assert_eq!(inflate(&z.finish().unwrap()), Err(SessionError::TooLarge));
    }

    #[test]
    fn b62_matches_django() {
        // django.core.signing.b62_encode(n) for these n.
        for (text, n) in
            [("0", 0), ("1", 1), ("Z", 35), ("z", 61), ("10", 62), ("-10", -62), ("1v6mOm", 1_760_000_000)]
        {
            assert_eq!(b62_decode(text), Some(n), "{text}");
        }
        assert_eq!(b62_encode(1_760_000_000), "1v6mOm");
    }

    #[test]
    fn empty_secrets_are_refused() {
        assert_eq!(
            SessionVerifier::new("", &[], DEFAULT_SESSION_COOKIE_AGE).unwrap_err(),
            SecretError::Empty { index: 0 }
        );
        assert_eq!(
            SessionVerifier::new("k", &["a", ""], DEFAULT_SESSION_COOKIE_AGE).unwrap_err(),
            SecretError::Empty { index: 2 }
        );
    }

    #[test]
    fn debug_does_not_show_secrets() {
        let shown = format!("{:?}", verifier());
        assert!(!shown.contains(SECRET) && shown.contains("secrets: 2"), "{shown}");
    }
}
