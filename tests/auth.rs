//! Access control end to end: tokens minted here with jsonwebtoken for each
//! algorithm (keys made at test time with rcgen), real websocket and SSE
//! clients against an in-process olive.

mod common;

use std::time::Duration;

use common::live::{Ws, config_auth, recv, send, subscribe};
use common::tokens::{
    OTHER_SECRET, SECRET, bearer, claims, hs, hs_auth, notes_token, now, open, sign, start,
};
use common::{Olive, client};
use futures_util::StreamExt;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Sends a frame and expects a `forbidden` error back.
async fn forbidden(ws: &mut Ws, frame: Value) -> Value {
    send(ws, frame.clone()).await;
    let answer = recv(ws).await;
    assert_eq!(
        (answer["type"].as_str(), answer["code"].as_str()),
        (Some("error"), Some("forbidden")),
        "{frame}"
    );
    answer
}

async fn still_up(ws: &mut Ws) {
    send(ws, json!({"type": "ping"})).await;
    assert_eq!(recv(ws).await, json!({"type": "pong"}));
}

#[tokio::test]
async fn each_token_source_is_accepted() {
    let olive = start(&hs_auth("")).await;
    let token = notes_token();
    for (query, headers) in [
        (String::new(), vec![("authorization".to_owned(), format!("Bearer {token}"))]),
        (format!("?token={token}"), vec![]),
        (String::new(), vec![("cookie".to_owned(), format!("theme=dark; olive_token={token}"))]),
    ] {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut ws = open(&olive, &query, &headers).await.expect("accepted");
        subscribe(&mut ws, "olive.notes.note.1").await;
        forbidden(&mut ws, json!({"type": "subscribe", "key": "olive.secret.x.1"})).await;
    }
}

#[tokio::test]
async fn rs256_es256_and_eddsa_tokens_verify_with_public_keys() {
    let dir = tempfile::tempdir().unwrap();
    let mut auth = String::new();
    let mut private = Vec::new();
    for (kid, alg, rc) in [
        ("rsa", "RS256", &rcgen::PKCS_RSA_SHA256),
        ("ec", "ES256", &rcgen::PKCS_ECDSA_P256_SHA256),
        ("ed", "EdDSA", &rcgen::PKCS_ED25519),
    ] {
        let key = rcgen::KeyPair::generate_for(rc).unwrap();
        std::fs::write(dir.path().join(format!("{kid}.pem")), key.public_key_pem()).unwrap();
        auth += &format!(
            "[[auth.key]]\nkid = \"{kid}\"\nalgorithm = \"{alg}\"\npublic_key_file = \"{kid}.pem\"\n"
        );
        private.push((kid, key.serialize_pem()));
    }
    let olive = Olive::start_in(dir, &config_auth("", "", &auth)).await;
    let claims = claims(json!({"subscribe": ["olive.notes.#"]}));
    for (kid, pem) in &private {
        let (alg, key) = match *kid {
            "rsa" => (Algorithm::RS256, EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap()),
            "ec" => (Algorithm::ES256, EncodingKey::from_ec_pem(pem.as_bytes()).unwrap()),
            _ => (Algorithm::EdDSA, EncodingKey::from_ed_pem(pem.as_bytes()).unwrap()),
        };
        let mut ws = bearer(&olive, &sign(alg, kid, &claims, &key)).await;
        subscribe(&mut ws, "olive.notes.note.1").await;
        // The same token under another key's kid fails its signature or
        // its pinned algorithm.
        let other = if *kid == "ed" { "rsa" } else { "ed" };
        let moved = sign(alg, other, &claims, &key);
        assert_eq!(open(&olive, &format!("?token={moved}"), &[]).await.err(), Some(401), "{kid} as {other}");
    }
}

#[tokio::test]
async fn keys_rotate_by_kid() {
    let auth = hs_auth("").replace(
        "[[auth.key]]",
        "[[auth.key]]\nkid = \"new\"\nalgorithm = \"HS256\"\nsecret_file = \"{dir}/other-secret\"\n\n[[auth.key]]",
    );
    let olive = start(&auth).await;
    let claims = claims(json!({"subscribe": ["olive.notes.#"]}));
    let new = sign(Algorithm::HS256, "new", &claims, &EncodingKey::from_secret(OTHER_SECRET.as_bytes()));
    for token in [hs(&claims), new] {
        subscribe(&mut bearer(&olive, &token).await, "olive.notes.note.1").await;
    }
    let unknown = sign(Algorithm::HS256, "gone", &claims, &EncodingKey::from_secret(SECRET.as_bytes()));
    let crossed = sign(Algorithm::HS256, "new", &claims, &EncodingKey::from_secret(SECRET.as_bytes()));
    for token in [unknown, crossed] {
        assert_eq!(open(&olive, &format!("?token={token}"), &[]).await.err(), Some(401));
    }
}

#[tokio::test]
async fn algorithm_confusion_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let public_pem = key.public_key_pem();
    std::fs::write(dir.path().join("rsa.pem"), &public_pem).unwrap();
    let auth = "[[auth.key]]\nkid = \"rsa\"\nalgorithm = \"RS256\"\npublic_key_file = \"rsa.pem\"\n";
    let olive = Olive::start_in(dir, &config_auth("", "", auth)).await;
    let claims = claims(json!({"subscribe": ["#"]}));
    // The classic attack: HS256 "signed" with the RSA public key as secret.
    let hs_with_public =
        sign(Algorithm::HS256, "rsa", &claims, &EncodingKey::from_secret(public_pem.as_bytes()));
    // alg "none", no signature: {"alg":"none","kid":"rsa"}.
    let payload = hs_with_public.split('.').nth(1).unwrap();
    let none = format!("eyJhbGciOiJub25lIiwia2lkIjoicnNhIn0.{payload}.");
    for token in [hs_with_public, none] {
        assert_eq!(open(&olive, &format!("?token={token}"), &[]).await.err(), Some(401), "{token}");
    }
    let good = sign(
        Algorithm::RS256,
        "rsa",
        &claims,
        &EncodingKey::from_rsa_pem(key.serialize_pem().as_bytes()).unwrap(),
    );
    subscribe(&mut bearer(&olive, &good).await, "olive.a.b.c").await;
}

/// User 7's real token with its payload rewritten: another name and wider
/// grants, the signature left as it was.
fn tampered() -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let token = hs(&claims(json!({"subscribe": ["olive.public.#"]})));
    let parts: Vec<&str> = token.split('.').collect();
    let mut payload: Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
    payload["name"] = "The Boss".into();
    payload["grants"] = json!({"subscribe": ["#"], "publish": ["#"]});
    let forged = b64.encode(serde_json::to_vec(&payload).unwrap());
    format!("{}.{forged}.{}", parts[0], parts[2])
}

#[tokio::test]
async fn expired_wrong_audience_wrong_issuer_and_oversize_tokens_get_401() {
    let olive = start(&hs_auth("max_token_bytes = 1024\nmax_grants = 2")).await;
    let with = |k: &str, v: Value| {
        let mut c = claims(json!({}));
        c[k] = v;
        hs(&c)
    };
    let many = json!({"subscribe": ["a.1", "a.2", "a.3"]});
    let long = json!({"subscribe": [format!("olive.{}", "x".repeat(1000))]});
    for (what, token) in [
        ("expired", with("exp", (now() - 120).into())),
        ("audience", with("aud", "someone-else".into())),
        ("issuer", with("iss", "mallory".into())),
        ("subject", {
            let mut c = claims(json!({}));
            c.as_object_mut().unwrap().remove("sub");
            hs(&c)
        }),
        ("not yet valid", with("nbf", (now() + 3600).into())),
        ("no expiry", {
            let mut c = claims(json!({}));
            c.as_object_mut().unwrap().remove("exp");
            hs(&c)
        }),
        ("tampered", tampered()),
        ("too many grants", hs(&claims(many))),
        ("too large", hs(&claims(long))),
        ("garbage", "abc.def.ghi".into()),
    ] {
        assert_eq!(open(&olive, &format!("?token={token}"), &[]).await.err(), Some(401), "{what}");
        let sse =
            client().get(olive.url("http", &format!("/olive/sse?key=olive.public.a&token={token}"))).send();
        let sse = sse.await.unwrap();
        assert_eq!(sse.status(), 401, "{what}");
        assert!(sse.headers()["www-authenticate"].to_str().unwrap().starts_with("Bearer"));
    }
}

#[tokio::test]
async fn anonymous_visitors_get_the_anonymous_grants_only() {
    let olive = start(&hs_auth("")).await;
    let mut ws = open(&olive, "", &[]).await.unwrap();
    subscribe(&mut ws, "olive.public.page.1").await;
    forbidden(&mut ws, json!({"type": "subscribe", "key": "olive.notes.note.1"})).await;
    forbidden(&mut ws, json!({"type": "subscribe", "key": "#"})).await;
    let denied =
        forbidden(&mut ws, json!({"type": "publish", "key": "olive.public.page.1", "data": 1, "ref": 9}))
            .await;
    assert_eq!(denied["ref"], 9);
    forbidden(&mut ws, json!({"type": "presence", "key": "olive.public.page.1"})).await;
    still_up(&mut ws).await;
}

#[tokio::test]
async fn a_pattern_wider_than_the_grant_is_forbidden() {
    let olive = start(&hs_auth("")).await;
    let mut ws = bearer(&olive, &hs(&claims(json!({"subscribe": ["olive.notes.note.*"]})))).await;
    subscribe(&mut ws, "olive.notes.note.5").await;
    subscribe(&mut ws, "olive.notes.note.*").await;
    for wider in ["olive.notes.#", "olive.notes.*.*", "olive.*.note.5", "olive.#"] {
        forbidden(&mut ws, json!({"type": "subscribe", "key": wider})).await;
    }
    still_up(&mut ws).await;
}

#[tokio::test]
async fn publish_is_checked_and_names_the_sender() {
    let olive = start(&hs_auth("")).await;
    let grants = json!({"subscribe": ["olive.chat.#"], "publish": ["olive.chat.room.1"]});
    let mut ws = bearer(&olive, &hs(&claims(grants))).await;
    subscribe(&mut ws, "olive.chat.room.1").await;
    send(&mut ws, json!({"type": "publish", "key": "olive.chat.room.1", "data": "hi", "ref": 1})).await;
    let mut got = [recv(&mut ws).await, recv(&mut ws).await];
    got.sort_by_key(|f| f["type"].as_str().unwrap().to_owned());
    assert_eq!(got[0]["type"], "ack");
    assert_eq!(got[1]["from"], json!({"user": "7", "name": "Ann"}));
    let denied =
        forbidden(&mut ws, json!({"type": "publish", "key": "olive.chat.room.2", "data": 1, "ref": "r"}))
            .await;
    assert_eq!(denied["ref"], "r");
    // The sender is the token's: a frame that names another is refused.
    let forged = json!({"type": "publish", "key": "olive.chat.room.1", "data": "hi", "ref": 2,
                        "from": {"user": "1", "name": "The Boss"}});
    send(&mut ws, forged).await;
    assert_eq!(recv(&mut ws).await["code"], "invalid");
    still_up(&mut ws).await;
}

#[tokio::test]
async fn presence_is_checked_and_shows_the_user() {
    let olive = start(&hs_auth("")).await;
    let key = "olive.notes.note.3";
    let mut watcher =
        bearer(&olive, &hs(&claims(json!({"subscribe": ["olive.notes.#"], "presence": [key]})))).await;
    let mut blind = bearer(&olive, &notes_token()).await;
    subscribe(&mut blind, key).await;
    forbidden(&mut blind, json!({"type": "presence", "key": key})).await;
    subscribe(&mut watcher, key).await;
    send(&mut watcher, json!({"type": "presence", "key": key})).await;
    assert_eq!(
        recv(&mut watcher).await,
        json!({"type": "presence", "key": key, "members": [{"user": "7", "name": "Ann"}], "anonymous": 0})
    );
}

#[tokio::test]
async fn sse_keys_are_checked() {
    let olive = start(&hs_auth("")).await;
    let http = client();
    let sse = |query: &str| http.get(olive.url("http", &format!("/olive/sse?{query}"))).send();
    assert_eq!(sse("key=olive.public.a.1").await.unwrap().status(), 200);
    let refused = sse("key=olive.public.a.1&key=olive.notes.note.1").await.unwrap();
    assert_eq!(refused.status(), 403);
    assert!(refused.text().await.unwrap().contains("olive.notes.note.1"));
    let token = notes_token();
    assert_eq!(sse(&format!("key=olive.notes.%23&token={token}")).await.unwrap().status(), 200);
    assert_eq!(sse(&format!("key=olive.%23&token={token}")).await.unwrap().status(), 403);
}

#[tokio::test]
async fn admin_publish_requires_the_admin_token_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin-token"), "admin-s3cret\n").unwrap();
    let olive = Olive::start_in(dir, &config_auth("", "", "admin_token_file = \"admin-token\"")).await;
    let http = client();
    let url = olive.url("admin", "/olive/publish");
    let body = json!({"key": "olive.a.b.1", "data": 1});
    assert_eq!(http.post(&url).json(&body).send().await.unwrap().status(), 401);
    let wrong = http.post(&url).bearer_auth("admin-s3cre").json(&body).send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    let right = http.post(&url).bearer_auth("admin-s3cret").json(&body).send().await.unwrap();
    assert_eq!(right.status(), 202);
    assert_eq!(http.get(olive.url("admin", "/healthz")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn public_http_publish_needs_a_publish_grant() {
    let olive = start(&hs_auth("")).await;
    let http = client();
    let url = olive.url("http", "/olive/publish");
    let token = hs(&claims(json!({"publish": ["olive.chat.#"]})));
    let body = |key: &str| json!({"key": key, "data": {"t": 1}});
    let ok = http.post(&url).bearer_auth(&token).json(&body("olive.chat.room.1")).send().await.unwrap();
    assert_eq!(ok.status(), 202);
    let denied = http.post(&url).bearer_auth(&token).json(&body("olive.news.item.1")).send().await.unwrap();
    assert_eq!(denied.status(), 403);
    assert_eq!(denied.json::<Value>().await.unwrap()["error"]["code"], "forbidden");
    let anonymous = http.post(&url).json(&body("olive.chat.room.1")).send().await.unwrap();
    assert_eq!(anonymous.status(), 403);
}

#[tokio::test]
async fn cookie_logins_are_refused_from_other_origins() {
    let olive = start(&hs_auth("allowed_origins = [\"https://app.example.com\"]")).await;
    let host = olive.addr("http").to_string();
    let cookie = format!("olive_token={}", notes_token());
    let same = format!("http://{host}");
    for (origin, want) in [
        (Some("https://evil.example"), Err(403)),
        (Some("null"), Err(403)),
        (Some(same.as_str()), Ok(())),
        (Some("https://app.example.com"), Ok(())),
        (None, Ok(())),
    ] {
        let mut headers = vec![("cookie", cookie.as_str())];
        headers.extend(origin.map(|o| ("origin", o)));
        assert_eq!(open(&olive, "", &headers).await.map(|_| ()), want, "{origin:?}");
    }
    // A token in a header is not a cookie a browser attaches on its own.
    let auth = format!("Bearer {}", notes_token());
    assert!(open(&olive, "", &[("authorization", &auth), ("origin", "https://evil.example")]).await.is_ok());
    let sse = client()
        .get(olive.url("http", "/olive/sse?key=olive.notes.note.1"))
        .header("cookie", &cookie)
        .header("origin", "https://evil.example")
        .send();
    assert_eq!(sse.await.unwrap().status(), 403);
}

#[tokio::test]
async fn an_expiring_token_closes_the_websocket_with_4401_and_ends_the_stream() {
    let olive = start(&hs_auth("leeway = \"0s\"")).await;
    let mut c = claims(json!({"subscribe": ["olive.notes.#"]}));
    c["exp"] = (now() + 2).into();
    let token = hs(&c);
    let mut ws = bearer(&olive, &token).await;
    subscribe(&mut ws, "olive.notes.note.1").await;
    let sse = client().get(olive.url("http", &format!("/olive/sse?key=olive.notes.note.1&token={token}")));
    let mut events = sse.send().await.unwrap().bytes_stream();
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await.expect("closed within 5s") {
            Some(Ok(Message::Close(Some(frame)))) => break frame,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(close.code, CloseCode::from(4401));
    assert_eq!(close.reason.as_str(), "token expired");
    let mut text = String::new();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(5), events.next()).await.unwrap() {
        text += &String::from_utf8_lossy(&chunk.unwrap());
    }
    assert!(
        text.ends_with(
            "event: close\ndata: {\"type\":\"close\",\"code\":4401,\"reason\":\"token expired\"}\n\n"
        ),
        "{text}"
    );
    // Reconnecting with the expired token is refused.
    assert_eq!(open(&olive, &format!("?token={token}"), &[]).await.err(), Some(401));
}

/// `olive token`, the real binary, against the same config.
#[tokio::test]
async fn olive_token_mints_what_olive_accepts() {
    let olive = start(&hs_auth("")).await;
    let config = olive.dir.path().join("olive.toml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_olive"))
        .args(["token", "--config", config.to_str().unwrap(), "--user", "9", "--name", "Bo"])
        .args([
            "--subscribe",
            "olive.notes.#",
            "--subscribe",
            "olive.chat.#",
            "--publish",
            "olive.chat.room.1",
        ])
        .args(["--ttl", "60"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let mut ws = bearer(&olive, &token).await;
    subscribe(&mut ws, "olive.notes.note.1").await;
    subscribe(&mut ws, "olive.chat.room.1").await;
    send(&mut ws, json!({"type": "publish", "key": "olive.chat.room.1", "data": 1})).await;
    let mut got = [recv(&mut ws).await, recv(&mut ws).await];
    got.sort_by_key(|f| f["type"].as_str().unwrap().to_owned());
    assert_eq!(got[1]["from"], json!({"user": "9", "name": "Bo"}));
    forbidden(&mut ws, json!({"type": "publish", "key": "olive.chat.room.2", "data": 1})).await;

    // An asymmetric key needs its private half; a bad pattern is refused.
    let fail = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_olive"))
            .args(["token", "--config", config.to_str().unwrap(), "--user", "9"])
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8(out.stderr).unwrap()
    };
    assert!(fail(&["--subscribe", "olive..x"]).contains("grants"));
    assert!(fail(&["--kid", "nope"]).contains("nope"));
}

#[tokio::test]
async fn olive_token_signs_asymmetric_keys_with_the_private_key_given() {
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    std::fs::write(dir.path().join("ed.pem"), key.public_key_pem()).unwrap();
    std::fs::write(dir.path().join("ed-private.pem"), key.serialize_pem()).unwrap();
    let auth = "[[auth.key]]\nkid = \"ed\"\nalgorithm = \"EdDSA\"\npublic_key_file = \"ed.pem\"\n";
    let olive = Olive::start_in(dir, &config_auth("", "", auth)).await;
    let config = olive.dir.path().join("olive.toml");
    let run = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_olive"))
            .args(["token", "--config", config.to_str().unwrap(), "--user", "1", "--subscribe", "olive.#"])
            .args(extra)
            .output()
            .unwrap()
    };
    let without = run(&[]);
    assert!(!without.status.success());
    assert!(String::from_utf8_lossy(&without.stderr).contains("--private-key"));
    let private = olive.dir.path().join("ed-private.pem");
    let with = run(&["--private-key", private.to_str().unwrap()]);
    assert!(with.status.success(), "{}", String::from_utf8_lossy(&with.stderr));
    let token = String::from_utf8(with.stdout).unwrap().trim().to_owned();
    subscribe(&mut bearer(&olive, &token).await, "olive.a.b.1").await;
}
