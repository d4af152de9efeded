//! JWT attacks beyond the access-control list, forged with PyJWT and
//! cryptography (tests/tools/forge_jwt.py) against a real olive with an
//! RS256, an ES256 and an HS256 key: every forgery gets 401 on the
//! websocket and on SSE, and the genuine token of each key is accepted
//! (so the test can fail).

mod common;

use std::path::Path;

use common::Olive;
use common::live::{config_auth, subscribe};
use common::tokens::{SECRET, open};
use serde_json::Value;

fn forge(py: &Path, dir: &Path) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/forge_jwt.py");
    let out = std::process::Command::new(py).arg(script).arg(dir).arg(SECRET).output().unwrap();
    assert!(out.status.success(), "forging failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn forged_tokens_are_refused() {
    let Some(py) = common::python("jwt, cryptography") else { return };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), SECRET).unwrap();
    let forged = forge(&py, dir.path());
    let auth = r#"
[[auth.key]]
kid = "rs"
algorithm = "RS256"
public_key_file = "{dir}/rs.pub.pem"

[[auth.key]]
kid = "es"
algorithm = "ES256"
public_key_file = "{dir}/es.pub.pem"

[[auth.key]]
kid = "hs"
algorithm = "HS256"
secret_file = "{dir}/secret"
"#;
    // Two connection attempts per forgery from one address.
    let toml = config_auth("", "", auth) + "\n[rate_limits]\nconnects_per_ip = 0\n";
    let olive = Olive::start_in(dir, &toml).await;

    for (kid, token) in forged["good"].as_object().unwrap() {
        let mut ws = open(&olive, &format!("?token={}", token.as_str().unwrap()), &[]).await.expect(kid);
        subscribe(&mut ws, "olive.notes.note.1").await;
    }
    let http = common::client();
    let attacks = forged["attacks"].as_array().unwrap();
    assert!(attacks.len() >= 30, "{} attacks", attacks.len());
    let mut accepted = Vec::new();
    for attack in attacks {
        let (name, token) = (attack["name"].as_str().unwrap(), attack["token"].as_str().unwrap());
        let ws = open(&olive, "", &[("authorization", &format!("Bearer {token}"))]).await;
        let sse = http
            .get(olive.url("http", "/olive/sse?key=olive.notes.note.1"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status();
        if ws.as_ref().err() != Some(&401) || sse != 401 {
            accepted.push(format!("{name}: websocket {:?}, SSE {sse}", ws.map(|_| 101)));
        }
    }
    assert!(accepted.is_empty(), "forgeries not refused with 401:\n{}", accepted.join("\n"));
}
