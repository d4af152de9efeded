//! olive's `SessionVerifier` against cookie values minted by real Django
//! (`django.contrib.sessions.backends.signed_cookies`), each also loaded
//! back by Django so the two must agree on every one.
//!
//! Python comes from `common::python` (`OLIVE_TEST_PYTHON`, else
//! `.venv/bin/python`, made by `scripts/test`). Without it the test is
//! skipped with one line on stderr, except under `CI=true`, where it fails.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use olive::auth::django_session::{SIGNED_COOKIES_SALT, SessionError, SessionVerifier};
use serde_json::Value;

const SECRET_KEY: &str = "olive-test-current-secret-key-0123456789";
const FALLBACK: &str = "olive-test-retired-secret-key-9876543210";
/// `SESSION_COOKIE_AGE` in the Django settings below.
const COOKIE_AGE: u64 = 3600;

/// Configures Django inline and prints one JSON object: for each case, the
/// cookie value a `SessionStore` produced and what Django's own `load()`
/// makes of it now (`null` when Django rejects it, as `load` then returns
/// an empty session).
const MINT: &str = r#"
import hashlib, json, sys, time
from unittest import mock
import django
from django.conf import settings
secret, fallback, age = sys.argv[1], sys.argv[2], int(sys.argv[3])
settings.configure(
    SECRET_KEY=secret,
    SECRET_KEY_FALLBACKS=[fallback],
    SESSION_ENGINE="django.contrib.sessions.backends.signed_cookies",
    SESSION_COOKIE_AGE=age,
    INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "django.contrib.sessions"],
)
django.setup()
from django.contrib.auth import SESSION_KEY, BACKEND_SESSION_KEY, HASH_SESSION_KEY
from django.contrib.sessions.backends.signed_cookies import SessionStore
from django.core import signing
from django.test.utils import override_settings

def login(user_id, **extra):
    # What django.contrib.auth.login() leaves in the session.
    return {SESSION_KEY: str(user_id), BACKEND_SESSION_KEY: "django.contrib.auth.backends.ModelBackend",
            HASH_SESSION_KEY: hashlib.sha256(str(user_id).encode()).hexdigest(), **extra}

def mint(data):
    s = SessionStore()
    s.update(data)
    s.save()
    return s.session_key

def django_load(value):
    s = SessionStore(session_key=value)
    data = s.load()
    return data if data else None

cases = {}
# Too small for zlib to save anything: stored uncompressed.
cases["small"] = mint({SESSION_KEY: "42"})
cases["anonymous"] = mint({"cart": [1, 2, 3]})
# A real login's keys repeat enough that Django compresses them.
cases["login"] = mint(login(41))
cases["large"] = mint(login(7, notes=["note %d" % i for i in range(200)]))
cases["unicode"] = mint(login("e5c0\u00e9", name="Ren\u00e9e \u2603"))
with override_settings(SECRET_KEY=fallback, SECRET_KEY_FALLBACKS=[]):
    cases["fallback"] = mint(login(9))
with override_settings(SECRET_KEY="a-key-django-no-longer-knows", SECRET_KEY_FALLBACKS=[]):
    cases["retired"] = mint(login(10))
with mock.patch("time.time", return_value=time.time() - age - 120):
    cases["expired"] = mint(login(11))
with mock.patch("time.time", return_value=time.time() - age + 120):
    cases["nearly_expired"] = mint(login(12))
cases["other_salt"] = signing.dumps(login(13), compress=True)
print(json.dumps({name: {"cookie": v, "django": django_load(v)} for name, v in cases.items()}))
"#;

/// Runs [`MINT`] and returns its cases.
fn mint(py: &Path) -> serde_json::Map<String, Value> {
    let out = Command::new(py)
        .args(["-c", MINT, SECRET_KEY, FALLBACK, &COOKIE_AGE.to_string()])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", py.display()));
    assert!(out.status.success(), "minting failed: {}", String::from_utf8_lossy(&out.stderr));
    match serde_json::from_slice(&out.stdout).unwrap() {
        Value::Object(cases) => cases,
        other => panic!("unexpected output {other}"),
    }
}

#[test]
fn olive_agrees_with_django_on_cookies_django_made() {
    let Some(py) = common::python("django") else { return };
    let cases = mint(&py);
    let verifier = SessionVerifier::new(SECRET_KEY, &[FALLBACK], Duration::from_secs(COOKIE_AGE)).unwrap();
    let now = SystemTime::now();

    // What each case must be, beyond agreeing with Django.
    /// A user id (`None`: anonymous) or the reason it is refused.
    type Want = Result<Option<&'static str>, &'static str>;
    let expected: &[(&str, Want, Option<bool>)] = &[
        // (case, user id or error reason, compressed if it matters)
        ("small", Ok(Some("42")), Some(false)),
        ("anonymous", Ok(None), Some(false)),
        ("login", Ok(Some("41")), Some(true)),
        ("large", Ok(Some("7")), Some(true)),
        ("unicode", Ok(Some("e5c0\u{e9}")), None),
        ("fallback", Ok(Some("9")), None),
        ("retired", Err("bad_signature"), None),
        ("expired", Err("expired"), None),
        ("nearly_expired", Ok(Some("12")), None),
        ("other_salt", Err("bad_signature"), None),
    ];
    assert_eq!(cases.len(), expected.len(), "every minted case is checked");
    for &(name, want, compressed) in expected {
        let case = &cases[name];
        let cookie = case["cookie"].as_str().unwrap();
        if let Some(compressed) = compressed {
            assert_eq!(cookie.starts_with('.'), compressed, "{name}: compression marker in {cookie}");
        }
        let got = verifier.verify(cookie, now);
        match (&got, &case["django"]) {
            (Ok(session), Value::Object(django)) => {
                assert_eq!(&session.data, django, "{name}: same session data as Django");
            }
            (Err(_), Value::Null) => {}
            _ => panic!("{name}: olive says {got:?}, Django says {}", case["django"]),
        }
        match (got, want) {
            (Ok(session), Ok(user)) => {
                assert_eq!(session.user_id.as_deref(), user, "{name}");
                let backend = session.data.get("_auth_user_backend").and_then(Value::as_str);
                assert_eq!(session.backend.as_deref(), backend, "{name}");
            }
            (Err(e), Err(reason)) => assert_eq!(e.reason(), reason, "{name}: {e}"),
            (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
        }
    }

    // Tampering with any byte of a Django cookie breaks it.
    let small = cases["small"]["cookie"].as_str().unwrap();
    for i in [0, small.len() / 2, small.len() - 1] {
        let mut bytes = small.as_bytes().to_vec();
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).unwrap();
        assert_eq!(verifier.verify(&tampered, now).unwrap_err(), SessionError::BadSignature, "byte {i}");
    }

    // Without the fallback, the cookie signed with it is refused.
    let strict = SessionVerifier::new(SECRET_KEY, &[], Duration::from_secs(COOKIE_AGE)).unwrap();
    let fallback = cases["fallback"]["cookie"].as_str().unwrap();
    assert_eq!(strict.verify(fallback, now).unwrap_err(), SessionError::BadSignature);

    // Django's generic salt verifies the generic cookie: the salt is the
    // only thing that differs.
    let generic =
        SessionVerifier::with_salt("django.core.signing", SECRET_KEY, &[], Duration::from_secs(COOKIE_AGE))
            .unwrap();
    assert_ne!(generic.salt(), SIGNED_COOKIES_SALT);
    let other = generic.verify(cases["other_salt"]["cookie"].as_str().unwrap(), now).unwrap();
    assert_eq!(other.user_id.as_deref(), Some("13"));
}

/// The answer to subscribing to a note on `ws`.
async fn subscribe_answer(mut ws: common::live::Ws) -> Value {
    common::live::send(&mut ws, serde_json::json!({"type": "subscribe", "key": "olive.notes.note.1"})).await;
    common::live::recv(&mut ws).await
}

/// The same cookies against a running olive with `[auth.django_session]`:
/// a logged-in session subscribes with the session grants; an expired or
/// anonymous session is an anonymous visitor; a foreign page is refused.
#[tokio::test]
async fn a_django_session_cookie_logs_in_to_the_live_hub() {
    use common::live::config_auth;
    let Some(py) = common::python("django") else { return };
    let cases = mint(&py);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret-key"), SECRET_KEY).unwrap();
    std::fs::write(dir.path().join("fallback-key"), FALLBACK).unwrap();
    let auth = format!(
        r#"
[auth.django_session]
secret_key_file = "{{dir}}/secret-key"
fallback_key_files = ["{{dir}}/fallback-key"]
max_age = "{COOKIE_AGE}s"
grants = {{ subscribe = ["olive.notes.#"] }}
"#
    );
    let olive = common::Olive::start_in(dir, &config_auth("", "", &auth)).await;
    let open = |case: &str, origin: Option<&'static str>| {
        let cookie = format!("csrftoken=x; sessionid={}", cases[case]["cookie"].as_str().unwrap());
        let olive = &olive;
        async move {
            let mut headers = vec![("cookie", cookie.as_str())];
            headers.extend(origin.map(|o| ("origin", o)));
            common::tokens::open(olive, "", &headers).await
        }
    };
    for case in ["login", "fallback", "large"] {
        let answer = subscribe_answer(open(case, None).await.unwrap()).await;
        assert_eq!(answer["type"], "subscribed", "{case}: {answer}");
    }
    for case in ["expired", "anonymous", "retired"] {
        let answer = subscribe_answer(open(case, None).await.unwrap()).await;
        assert_eq!(answer["code"], "forbidden", "{case}: {answer}");
    }
    assert_eq!(open("login", Some("https://evil.example")).await.err(), Some(403));
    let metrics =
        common::client().get(olive.url("admin", "/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("olive_django_sessions_refused_total 2"), "expired and retired");
}
