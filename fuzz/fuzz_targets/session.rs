//! The Django signed-cookie session verifier.
//!
//! The first input byte picks what the rest becomes: the cookie as it is
//! (must never verify: that would be a forged signature), or a payload
//! this harness signs as Django would, so the fuzzer reaches the decoding
//! behind the signature check: base64 of the bytes (JSON), base64 of their
//! zlib compression, or the bytes as a raw zlib stream. A signed payload
//! never fails the signature, and a JSON object Django could have stored
//! verifies to exactly that object.
#![no_main]

use std::time::{Duration, SystemTime};

use aws_lc_rs::{digest, hmac};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use libfuzzer_sys::fuzz_target;
use olive::auth::django_session::{
    MAX_COOKIE_BYTES, MAX_SESSION_BYTES, SIGNED_COOKIES_SALT, SessionError, SessionVerifier,
};

const SECRET: &str = "fuzz-secret";
/// 2024-01-01, signed as base62 `1x4NA0` would be; any fixed time will do.
const SIGNED_AT: u64 = 1_704_067_200;

fn b62(mut n: u64) -> String {
    const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(ALPHABET[(n % 62) as usize]);
        n /= 62;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap()
}

/// `signing.dumps`' signature, re-implemented here as the test module does.
fn sign(payload: &str) -> String {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(SIGNED_COOKIES_SALT.as_bytes());
    ctx.update(b"signer");
    ctx.update(SECRET.as_bytes());
    let key = hmac::Key::new(hmac::HMAC_SHA256, ctx.finish().as_ref());
    let value = format!("{payload}:{}", b62(SIGNED_AT));
    let signature = URL_SAFE_NO_PAD.encode(hmac::sign(&key, value.as_bytes()));
    format!("{value}:{signature}")
}

fn zlib(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    z.write_all(bytes).unwrap();
    z.finish().unwrap()
}

fuzz_target!(|input: &[u8]| {
    let Some((&mode, bytes)) = input.split_first() else { return };
    let verifier = SessionVerifier::new(SECRET, &[], Duration::from_secs(3600)).unwrap();
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(SIGNED_AT + 60);
    let cookie = match mode % 4 {
        0 => {
            let Ok(text) = std::str::from_utf8(bytes) else { return };
            assert!(verifier.verify(text, now).is_err(), "an unsigned value verified: {text:?}");
            return;
        }
        1 => sign(&URL_SAFE_NO_PAD.encode(bytes)),
        2 => sign(&format!(".{}", URL_SAFE_NO_PAD.encode(zlib(bytes)))),
        _ => sign(&format!(".{}", URL_SAFE_NO_PAD.encode(bytes))),
    };
    let result = verifier.verify(&cookie, now);
    assert_ne!(
        result.as_ref().err(),
        Some(&SessionError::BadSignature),
        "a signed value failed its signature"
    );
    let expected = match serde_json::from_slice::<serde_json::Value>(bytes) {
        Ok(serde_json::Value::Object(map)) if bytes.is_ascii() => Some(map),
        _ => None,
    };
    if mode % 4 != 3 && cookie.len() <= MAX_COOKIE_BYTES && bytes.len() <= MAX_SESSION_BYTES {
        if let Some(map) = expected {
            assert_eq!(result.map(|s| s.data).as_ref(), Ok(&map), "a JSON object Django could store");
        }
    }
});
