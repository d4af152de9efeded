//! `serve` end to end against a temporary directory.

use http::header::{self, HeaderName};
use http::{HeaderMap, Method, StatusCode};
use http_body_util::BodyExt;
use tempfile::TempDir;

use super::*;

const APP_JS: &str = "console.log('hello, olive');\n";

/// A served root under a temporary directory, with a sibling `secret.txt`
/// outside it for the traversal tests.
struct Fixture {
    _tmp: TempDir,
    dir: StaticDir,
}

fn fixture(precompressed: bool, index: Option<&str>) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let write = |rel: &str, data: &[u8]| {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    };
    write("app.js", APP_JS.as_bytes());
    write("app.js.br", b"BROTLI");
    write("app.js.gz", b"GZIP-BYTES");
    write("style.css", b"body{}");
    write("only-gz.css.gz", b"orphan");
    write("data.json", b"{}");
    write("logo.png", b"\x89PNG");
    write("blob", b"0123456789");
    write(".well-known/a.txt", b"dot");
    write("docs/index.html", b"<h1>docs</h1>");
    write("a b.txt", b"space");
    std::fs::write(tmp.path().join("secret.txt"), b"secret").unwrap();
    std::os::unix::fs::symlink(tmp.path().join("secret.txt"), root.join("out")).unwrap();
    std::os::unix::fs::symlink(tmp.path(), root.join("outdir")).unwrap();
    std::os::unix::fs::symlink(root.join("style.css"), root.join("in.css")).unwrap();
    let dir = StaticDir {
        root,
        cache_control: "public, max-age=60".into(),
        precompressed,
        index: index.map(Into::into),
    };
    Fixture { _tmp: tmp, dir }
}

struct Got {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Got {
    fn header(&self, name: HeaderName) -> &str {
        self.headers.get(&name).map_or("", |v| v.to_str().unwrap())
    }
}

async fn request(dir: &StaticDir, method: Method, path: &str, headers: Headers<'_>) -> Got {
    let mut builder = http::Request::builder().method(method).uri(format!("/static/{path}"));
    for (name, value) in headers {
        builder = builder.header(name, *value);
    }
    let parts = builder.body(()).unwrap().into_parts().0;
    let res = serve(&parts, path, dir).await;
    let (parts, body) = res.into_parts();
    Got {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes().to_vec(),
    }
}

/// Request headers in a test table; values may hold `{placeholders}`.
type Headers<'a> = &'a [(HeaderName, &'a str)];

/// Replaces each `{placeholder}` in the header values.
fn fill(headers: Headers, vars: &[(&str, &str)]) -> Vec<(HeaderName, String)> {
    let subst = |v: &str| vars.iter().fold(v.to_owned(), |acc, (k, val)| acc.replace(k, val));
    headers.iter().map(|(n, v)| (n.clone(), subst(v))).collect()
}

fn as_refs(headers: &[(HeaderName, String)]) -> Vec<(HeaderName, &str)> {
    headers.iter().map(|(n, v)| (n.clone(), v.as_str())).collect()
}

async fn get(dir: &StaticDir, path: &str, headers: Headers<'_>) -> Got {
    request(dir, Method::GET, path, headers).await
}

#[tokio::test]
async fn content_types() {
    let f = fixture(false, None);
    let cases = [
        ("app.js", "text/javascript; charset=utf-8"),
        ("style.css", "text/css; charset=utf-8"),
        ("data.json", "application/json; charset=utf-8"),
        ("logo.png", "image/png"),
        ("blob", "application/octet-stream"),
    ];
    for (path, want) in cases {
        let got = get(&f.dir, path, &[]).await;
        assert_eq!(got.status, StatusCode::OK, "{path}");
        assert_eq!(got.header(header::CONTENT_TYPE), want, "{path}");
    }
}

#[tokio::test]
async fn full_response_headers() {
    let f = fixture(false, None);
    let got = get(&f.dir, "app.js", &[]).await;
    assert_eq!(got.body, APP_JS.as_bytes());
    assert_eq!(got.header(header::CONTENT_LENGTH), APP_JS.len().to_string());
    assert_eq!(got.header(header::CACHE_CONTROL), "public, max-age=60");
    assert_eq!(got.header(header::ACCEPT_RANGES), "bytes");
    assert!(got.header(header::ETAG).starts_with('"'));
    assert!(httpdate::parse_http_date(got.header(header::LAST_MODIFIED)).is_ok());
    assert!(got.headers.get(header::VARY).is_none(), "no Vary without precompression");
    assert!(got.headers.get(header::CONTENT_ENCODING).is_none());
}

#[tokio::test]
async fn head_sends_headers_only() {
    let f = fixture(false, None);
    let got = request(&f.dir, Method::HEAD, "app.js", &[]).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.header(header::CONTENT_LENGTH), APP_JS.len().to_string());
    assert!(got.body.is_empty());
}

#[tokio::test]
async fn other_methods_are_405() {
    let f = fixture(false, None);
    for method in [Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS] {
        let got = request(&f.dir, method.clone(), "app.js", &[]).await;
        assert_eq!(got.status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
        assert_eq!(got.header(header::ALLOW), "GET, HEAD");
    }
}

/// RFC 9110 §13: each row sends one header built from the file's own
/// validators (`{etag}` / `{lm}`) or a fixed value, and expects a status.
#[tokio::test]
async fn conditional_requests() {
    let f = fixture(false, None);
    let first = get(&f.dir, "app.js", &[]).await;
    let etag = first.header(header::ETAG).to_owned();
    let lm = first.header(header::LAST_MODIFIED).to_owned();
    let old = "Thu, 01 Jan 1998 00:00:00 GMT";
    let cases: &[(Headers, StatusCode)] = &[
        (&[(header::IF_NONE_MATCH, "{etag}")], StatusCode::NOT_MODIFIED),
        (&[(header::IF_NONE_MATCH, "W/{etag}")], StatusCode::NOT_MODIFIED),
        (&[(header::IF_NONE_MATCH, "\"other\", {etag}")], StatusCode::NOT_MODIFIED),
        (&[(header::IF_NONE_MATCH, "*")], StatusCode::NOT_MODIFIED),
        (&[(header::IF_NONE_MATCH, "\"other\"")], StatusCode::OK),
        (&[(header::IF_MODIFIED_SINCE, "{lm}")], StatusCode::NOT_MODIFIED),
        (&[(header::IF_MODIFIED_SINCE, old)], StatusCode::OK),
        (&[(header::IF_MODIFIED_SINCE, "not a date")], StatusCode::OK),
        // §13.2.2: If-None-Match takes precedence over If-Modified-Since.
        (&[(header::IF_NONE_MATCH, "\"other\""), (header::IF_MODIFIED_SINCE, "{lm}")], StatusCode::OK),
        (&[(header::IF_MATCH, "{etag}")], StatusCode::OK),
        (&[(header::IF_MATCH, "*")], StatusCode::OK),
        (&[(header::IF_MATCH, "\"other\"")], StatusCode::PRECONDITION_FAILED),
        (&[(header::IF_MATCH, "W/{etag}")], StatusCode::PRECONDITION_FAILED),
        (&[(header::IF_UNMODIFIED_SINCE, old)], StatusCode::PRECONDITION_FAILED),
        (&[(header::IF_UNMODIFIED_SINCE, "{lm}")], StatusCode::OK),
    ];
    for (headers, want) in cases {
        let filled = fill(headers, &[("{etag}", &etag), ("{lm}", &lm)]);
        let got = get(&f.dir, "app.js", &as_refs(&filled)).await;
        assert_eq!(got.status, *want, "{filled:?}");
        if got.status == StatusCode::NOT_MODIFIED {
            assert!(got.body.is_empty());
            assert_eq!(got.header(header::ETAG), etag, "304 carries the ETag");
        }
    }
}

/// RFC 9110 §14 against the 10-byte file `blob` ("0123456789").
#[tokio::test]
async fn ranges() {
    let f = fixture(false, None);
    let etag = get(&f.dir, "blob", &[]).await.header(header::ETAG).to_owned();
    let cases: &[(Headers, StatusCode, &str, &str)] = &[
        (&[(header::RANGE, "bytes=0-3")], StatusCode::PARTIAL_CONTENT, "bytes 0-3/10", "0123"),
        (&[(header::RANGE, "bytes=7-")], StatusCode::PARTIAL_CONTENT, "bytes 7-9/10", "789"),
        (&[(header::RANGE, "bytes=-2")], StatusCode::PARTIAL_CONTENT, "bytes 8-9/10", "89"),
        (&[(header::RANGE, "bytes=5-100")], StatusCode::PARTIAL_CONTENT, "bytes 5-9/10", "56789"),
        (&[(header::RANGE, "bytes=10-")], StatusCode::RANGE_NOT_SATISFIABLE, "bytes */10", ""),
        (&[(header::RANGE, "bytes=0-1,4-5")], StatusCode::OK, "", "0123456789"),
        (
            &[(header::RANGE, "bytes=2-3"), (header::IF_RANGE, "{etag}")],
            StatusCode::PARTIAL_CONTENT,
            "bytes 2-3/10",
            "23",
        ),
        (&[(header::RANGE, "bytes=2-3"), (header::IF_RANGE, "\"stale\"")], StatusCode::OK, "", "0123456789"),
        (
            &[(header::RANGE, "bytes=2-3"), (header::IF_RANGE, "Thu, 01 Jan 1998 00:00:00 GMT")],
            StatusCode::OK,
            "",
            "0123456789",
        ),
    ];
    for (headers, status, content_range, body) in cases {
        let filled = fill(headers, &[("{etag}", &etag)]);
        let got = get(&f.dir, "blob", &as_refs(&filled)).await;
        assert_eq!(got.status, *status, "{filled:?}");
        assert_eq!(got.header(header::CONTENT_RANGE), *content_range, "{filled:?}");
        if *status != StatusCode::RANGE_NOT_SATISFIABLE {
            assert_eq!(String::from_utf8_lossy(&got.body), *body, "{filled:?}");
            assert_eq!(got.header(header::CONTENT_LENGTH), body.len().to_string(), "{filled:?}");
        }
    }
}

#[tokio::test]
async fn precompressed_selection() {
    let f = fixture(true, None);
    // (Accept-Encoding, Content-Encoding, body)
    let cases = [
        ("", "", APP_JS),
        ("gzip, deflate, br", "br", "BROTLI"),
        ("gzip", "gzip", "GZIP-BYTES"),
        ("br;q=0, gzip", "gzip", "GZIP-BYTES"),
        ("br;q=0.5, gzip", "gzip", "GZIP-BYTES"),
        ("br;q=0, gzip;q=0", "", APP_JS),
        ("identity", "", APP_JS),
    ];
    let mut etags = Vec::new();
    for (accept, encoding, body) in cases {
        let got = get(&f.dir, "app.js", &[(header::ACCEPT_ENCODING, accept)]).await;
        assert_eq!(got.status, StatusCode::OK, "{accept}");
        assert_eq!(got.header(header::CONTENT_ENCODING), encoding, "{accept}");
        assert_eq!(got.header(header::CONTENT_TYPE), "text/javascript; charset=utf-8", "{accept}");
        assert_eq!(got.header(header::VARY), "Accept-Encoding", "{accept}");
        assert_eq!(String::from_utf8_lossy(&got.body), body, "{accept}");
        etags.push((encoding, got.header(header::ETAG).to_owned()));
    }
    etags.sort();
    etags.dedup();
    assert_eq!(etags.len(), 3, "one ETag per encoding: {etags:?}");

    // Ranges apply to the encoded bytes, as with nginx.
    let got = get(&f.dir, "app.js", &[(header::ACCEPT_ENCODING, "br"), (header::RANGE, "bytes=0-1")]).await;
    assert_eq!((got.status, got.body.as_slice()), (StatusCode::PARTIAL_CONTENT, &b"BR"[..]));
    assert_eq!(got.header(header::CONTENT_RANGE), "bytes 0-1/6");

    // No sibling: identity. A sibling without the file itself: 404.
    let got = get(&f.dir, "style.css", &[(header::ACCEPT_ENCODING, "br, gzip")]).await;
    assert_eq!((got.status, got.header(header::CONTENT_ENCODING)), (StatusCode::OK, ""));
    let got = get(&f.dir, "only-gz.css", &[(header::ACCEPT_ENCODING, "gzip")]).await;
    assert_eq!(got.status, StatusCode::NOT_FOUND);

    // Precompression off: siblings are ignored.
    let off = StaticDir { precompressed: false, ..f.dir.clone() };
    let got = get(&off, "app.js", &[(header::ACCEPT_ENCODING, "br")]).await;
    assert_eq!((got.header(header::CONTENT_ENCODING), got.body.as_slice()), ("", APP_JS.as_bytes()));
}

/// Nothing outside the root is ever served, however the path is spelled.
#[tokio::test]
async fn traversal_attempts() {
    let f = fixture(false, Some("index.html"));
    let cases = [
        ("../secret.txt", StatusCode::NOT_FOUND),
        ("%2e%2e/secret.txt", StatusCode::NOT_FOUND),
        (".%2E/secret.txt", StatusCode::NOT_FOUND),
        ("..%2fsecret.txt", StatusCode::NOT_FOUND),
        ("docs%2Findex.html", StatusCode::NOT_FOUND),
        ("docs/../../secret.txt", StatusCode::NOT_FOUND),
        ("\\..\\secret.txt", StatusCode::NOT_FOUND),
        ("app.js%00.png", StatusCode::NOT_FOUND),
        ("%ff", StatusCode::BAD_REQUEST),
        ("out", StatusCode::NOT_FOUND),
        ("outdir/secret.txt", StatusCode::NOT_FOUND),
        ("outdir/", StatusCode::NOT_FOUND),
        ("missing.txt", StatusCode::NOT_FOUND),
        ("app.js/", StatusCode::NOT_FOUND),
        ("in.css", StatusCode::OK),
        (".well-known/a.txt", StatusCode::OK),
        ("a%20b.txt", StatusCode::OK),
        ("docs/./index.html", StatusCode::OK),
    ];
    for (path, want) in cases {
        let got = get(&f.dir, path, &[]).await;
        assert_eq!(got.status, want, "{path}");
        assert_ne!(got.body, b"secret", "{path}");
    }
    let got = get(&f.dir, "in.css", &[]).await;
    assert_eq!(got.header(header::CONTENT_TYPE), "text/css; charset=utf-8");
}

#[tokio::test]
async fn directories_and_index() {
    let with = fixture(false, Some("index.html"));
    let got = get(&with.dir, "docs/", &[]).await;
    assert_eq!((got.status, got.body.as_slice()), (StatusCode::OK, &b"<h1>docs</h1>"[..]));
    assert_eq!(got.header(header::CONTENT_TYPE), "text/html; charset=utf-8");

    let got = get(&with.dir, "docs", &[]).await;
    assert_eq!(got.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(got.header(header::LOCATION), "/static/docs/");

    // The root has no index.html.
    assert_eq!(get(&with.dir, "", &[]).await.status, StatusCode::NOT_FOUND);

    let without = fixture(false, None);
    for path in ["docs/", "docs", ""] {
        assert_eq!(get(&without.dir, path, &[]).await.status, StatusCode::NOT_FOUND, "{path}");
    }
}

#[tokio::test]
async fn missing_root_is_500() {
    let f = fixture(false, None);
    let dir = StaticDir { root: f.dir.root.join("nope"), ..f.dir.clone() };
    assert_eq!(get(&dir, "app.js", &[]).await.status, StatusCode::INTERNAL_SERVER_ERROR);
}

#[test]
fn error_status_mapping() {
    let cases = [
        (StaticError::MethodNotAllowed, StatusCode::METHOD_NOT_ALLOWED),
        (StaticError::MalformedPath, StatusCode::BAD_REQUEST),
        (StaticError::Forbidden, StatusCode::NOT_FOUND),
        (StaticError::NotFound, StatusCode::NOT_FOUND),
        (StaticError::Io(std::io::Error::other("disk")), StatusCode::INTERNAL_SERVER_ERROR),
    ];
    for (e, want) in cases {
        assert_eq!(StatusCode::from(&e), want, "{e:?}");
    }
}
