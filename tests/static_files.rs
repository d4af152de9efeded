//! Static files served through olive over HTTP: types, validators, ranges,
//! precompressed siblings, and the traversal defences seen from outside.

mod common;

use std::time::Duration;

use common::{Olive, Upstream, client, raw};

const CSS: &str = "body { color: olive; }\n";
/// Stands in for `app.js.br`: olive serves the sibling's bytes as they are.
const JS_BR: &[u8] = b"\x1b\x00\xf8brotli bytes";
const SECRET: &str = "SECRET-OUTSIDE-THE-ROOT";

/// A temp dir holding `static/` with a few files, a secret beside it and a
/// symlink from inside the root to that secret; the olive config serves
/// `/static/` from it and proxies `/` to `upstream`.
async fn start(upstream: std::net::SocketAddr) -> Olive {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("static");
    std::fs::create_dir_all(root.join("css")).unwrap();
    std::fs::write(root.join("css/app.css"), CSS).unwrap();
    std::fs::write(root.join("app.js"), "console.log('olive');\n").unwrap();
    std::fs::write(root.join("app.js.br"), JS_BR).unwrap();
    std::fs::write(root.join("digits.txt"), "0123456789").unwrap();
    std::fs::write(dir.path().join("secret.txt"), SECRET).unwrap();
    std::os::unix::fs::symlink(dir.path().join("secret.txt"), root.join("leak.txt")).unwrap();
    std::os::unix::fs::symlink(dir.path(), root.join("up")).unwrap();
    let toml = format!(
        r#"
[server]
access_log = false

[[listener]]
name = "http"
kind = "http"
bind = "127.0.0.1:0"

[[upstream]]
name = "django"
addresses = ["{upstream}"]

[[route]]
path = "/static/"
static.root = "{{dir}}/static"

[[route]]
path = "/"
proxy.upstream = "django"
proxy.compress = false
"#
    );
    Olive::start_in(dir, &toml).await
}

#[tokio::test]
async fn files_are_served_with_their_type() {
    let up = Upstream::echo().await;
    let olive = start(up.addr).await;
    let resp = client().get(olive.url("http", "/static/css/app.css")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/css; charset=utf-8");
    assert_eq!(resp.headers()["content-length"], CSS.len().to_string().as_str());
    assert_eq!(resp.headers()["cache-control"], "public, max-age=3600");
    assert_eq!(resp.text().await.unwrap(), CSS);
    assert!(up.requests().is_empty(), "the upstream saw a static request");
}

#[tokio::test]
async fn etag_and_if_none_match_give_304() {
    let up = Upstream::echo().await;
    let olive = start(up.addr).await;
    let http = client();
    let url = olive.url("http", "/static/css/app.css");
    let first = http.get(&url).send().await.unwrap();
    let etag = first.headers()["etag"].clone();
    assert!(etag.to_str().unwrap().starts_with('"'), "{etag:?}");

    let again = http.get(&url).header("if-none-match", etag.clone()).send().await.unwrap();
    assert_eq!(again.status(), 304);
    assert_eq!(again.headers()["etag"], etag);
    assert!(again.bytes().await.unwrap().is_empty());

    let changed = http.get(&url).header("if-none-match", "\"something-else\"").send().await.unwrap();
    assert_eq!(changed.status(), 200);
}

#[tokio::test]
async fn range_requests_get_206() {
    let up = Upstream::echo().await;
    let olive = start(up.addr).await;
    let http = client();
    let url = olive.url("http", "/static/digits.txt");
    let resp = http.get(&url).header("range", "bytes=2-5").send().await.unwrap();
    assert_eq!(resp.status(), 206);
    assert_eq!(resp.headers()["content-range"], "bytes 2-5/10");
    assert_eq!(resp.text().await.unwrap(), "2345");

    let resp = http.get(&url).header("range", "bytes=-3").send().await.unwrap();
    assert_eq!(resp.status(), 206);
    assert_eq!(resp.text().await.unwrap(), "789");

    let resp = http.get(&url).header("range", "bytes=50-").send().await.unwrap();
    assert_eq!(resp.status(), 416);
    assert_eq!(resp.headers()["content-range"], "bytes */10");
}

#[tokio::test]
async fn precompressed_brotli_goes_to_clients_that_accept_it() {
    let up = Upstream::echo().await;
    let olive = start(up.addr).await;
    let http = client();
    let url = olive.url("http", "/static/app.js");
    let resp = http.get(&url).header("accept-encoding", "gzip, br").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-encoding"], "br");
    assert_eq!(resp.headers()["content-type"], "text/javascript; charset=utf-8");
    assert!(resp.headers()["vary"].to_str().unwrap().eq_ignore_ascii_case("accept-encoding"));
    assert_eq!(resp.bytes().await.unwrap(), JS_BR);

    let resp = http.get(&url).header("accept-encoding", "gzip").send().await.unwrap();
    assert!(resp.headers().get("content-encoding").is_none());
    assert_eq!(resp.text().await.unwrap(), "console.log('olive');\n");
}

#[tokio::test]
async fn traversal_never_reaches_files_outside_the_root() {
    let up = Upstream::echo().await;
    let olive = start(up.addr).await;
    let config_text = std::fs::read_to_string(olive.dir.path().join("olive.toml")).unwrap();
    assert!(config_text.contains("[[listener]]"));
    for path in [
        "/static/../olive.toml",
        "/static/%2e%2e/olive.toml",
        "/static/%2E%2E/olive.toml",
        "/static/..%2folive.toml",
        "/static/..%2Fsecret.txt",
        "/static/css/../../secret.txt",
        "/static/css/..%2f..%2fsecret.txt",
        "/static/..%5csecret.txt",
        "/static/.%2e/secret.txt",
    ] {
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let resp = raw(olive.addr("http"), request.as_bytes(), Duration::from_secs(3)).await;
        assert!(resp.starts_with("HTTP/1.1 4"), "{path}: {resp}");
        assert!(!resp.contains("[[listener]]") && !resp.contains(SECRET), "{path} leaked: {resp}");
    }
}

#[tokio::test]
async fn symlinks_out_of_the_root_are_404() {
    let up = Upstream::echo().await;
    let olive = start(up.addr).await;
    let http = client();
    for path in ["/static/leak.txt", "/static/up/secret.txt", "/static/up/olive.toml"] {
        let resp = http.get(olive.url("http", path)).send().await.unwrap();
        assert_eq!(resp.status(), 404, "{path}");
        let body = resp.text().await.unwrap();
        assert!(!body.contains(SECRET) && !body.contains("[[listener]]"), "{path} leaked: {body}");
    }
}

#[tokio::test]
async fn the_longest_prefix_wins() {
    let up = Upstream::echo().await;
    let olive = start(up.addr).await;
    let http = client();
    let resp = http.get(olive.url("http", "/static/css/app.css")).send().await.unwrap();
    assert_eq!(resp.text().await.unwrap(), CSS);
    let resp = http.get(olive.url("http", "/static/missing.css")).send().await.unwrap();
    assert_eq!(resp.status(), 404, "a missing static file is not passed to Django");
    for path in ["/", "/staticky/app.css", "/accounts/login/"] {
        let resp = http.get(olive.url("http", path)).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.text().await.unwrap(), path, "{path} was not proxied");
    }
    let proxied: Vec<String> = up.requests().iter().map(|s| s.uri.path().to_owned()).collect();
    assert_eq!(proxied, ["/", "/staticky/app.css", "/accounts/login/"]);
}
