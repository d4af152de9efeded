//! HS256 tokens for tests: an olive whose `[auth]` has one HS256 key, and
//! tokens minted here with jsonwebtoken, as Django would.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::Olive;
use super::live::{Ws, config_auth};

pub const SECRET: &str = "test-secret-of-at-least-thirty-two-bytes";
pub const OTHER_SECRET: &str = "another-secret-at-least-thirty-two-bytes";

/// `[auth]` with one HS256 key `hs` (secret from a file in the olive dir),
/// anonymous visitors may subscribe to `olive.public.#`, and `extra`.
pub fn hs_auth(extra: &str) -> String {
    format!(
        r#"{extra}
anonymous = {{ subscribe = ["olive.public.#"] }}

[[auth.key]]
kid = "hs"
algorithm = "HS256"
secret_file = "{{dir}}/secret"
"#
    )
}

pub async fn start(auth: &str) -> Olive {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), SECRET).unwrap();
    std::fs::write(dir.path().join("other-secret"), OTHER_SECRET).unwrap();
    Olive::start_in(dir, &config_auth("", "", auth)).await
}

pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// Claims for user 7 (Ann) with `grants`, valid for a minute.
pub fn claims(grants: Value) -> Value {
    json!({"sub": "7", "name": "Ann", "aud": "olive", "iss": "django", "exp": now() + 60, "grants": grants})
}

pub fn sign(alg: Algorithm, kid: &str, claims: &Value, key: &EncodingKey) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

pub fn hs(claims: &Value) -> String {
    sign(Algorithm::HS256, "hs", claims, &EncodingKey::from_secret(SECRET.as_bytes()))
}

pub fn notes_token() -> String {
    hs(&claims(json!({"subscribe": ["olive.notes.#"]})))
}

/// Opens `/olive/ws{query}` with `headers`; the handshake's answer.
pub async fn open(olive: &Olive, query: &str, headers: &[(&str, &str)]) -> Result<Ws, u16> {
    let url = format!("ws://{}/olive/ws{query}", olive.addr("http"));
    let mut req = url.into_client_request().unwrap();
    for (name, value) in headers {
        req.headers_mut()
            .insert(http::HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(ws),
        Err(WsError::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("{e}"),
    }
}

pub async fn bearer(olive: &Olive, token: &str) -> Ws {
    open(olive, "", &[("authorization", &format!("Bearer {token}"))]).await.expect("accepted")
}
