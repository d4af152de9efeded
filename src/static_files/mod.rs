//! Serving files from a directory (Django's `STATIC_ROOT` / `MEDIA_ROOT`)
//! the way nginx does: content types, validators and conditional requests,
//! single byte ranges, precompressed `.br` / `.gz` siblings, and a path
//! check that nothing outside the directory is ever served.
//!
//! [`path`] owns the traversal defence, [`headers`] the RFC 9110 header
//! rules; this file puts them together and owns the error-to-status mapping.

mod headers;
mod path;
#[cfg(test)]
mod tests;

use std::io::SeekFrom;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_util::TryStreamExt;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Method, Response, StatusCode};
use http_body_util::StreamBody;
use hyper::body::Frame;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use crate::body::{self, Body};
use crate::config::StaticDir;
use headers::{ByteRange, Coding, Precondition, Validators};

/// Read size for file bodies: large enough for few syscalls, small enough
/// that many concurrent downloads stay cheap in memory.
const CHUNK_SIZE: usize = 64 * 1024;

/// Why a static request could not be served.
#[derive(Debug, thiserror::Error)]
pub enum StaticError {
    #[error("method not allowed")]
    MethodNotAllowed,
    /// Invalid percent-encoding or UTF-8 in the path.
    #[error("malformed path")]
    MalformedPath,
    /// `..`, an encoded separator, a backslash or NUL: an attempt to leave
    /// the directory. Reported as 404 so it reveals nothing.
    #[error("not found")]
    Forbidden,
    #[error("not found")]
    NotFound,
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

impl From<&StaticError> for StatusCode {
    fn from(e: &StaticError) -> Self {
        match e {
            StaticError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            StaticError::MalformedPath => StatusCode::BAD_REQUEST,
            StaticError::Forbidden | StaticError::NotFound => StatusCode::NOT_FOUND,
            StaticError::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl StaticError {
    fn into_response(self) -> Response<Body> {
        let status = StatusCode::from(&self);
        if let StaticError::Io(e) = &self {
            tracing::error!(error = %e, "static file");
        }
        let mut res = text(status, &self.to_string());
        if let StaticError::MethodNotAllowed = self {
            res.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        }
        res
    }
}

/// Serves `rel_path` (the request path with the route prefix already stripped, still percent-encoded, without query) from `dir`.
///
/// Only GET and HEAD are allowed. A directory is answered with `dir.index`
/// when set (after a 301 to the slash form), otherwise 404.
pub async fn serve(req: &Parts, rel_path: &str, dir: &StaticDir) -> Response<Body> {
    let mut res = match try_serve(req, rel_path, dir).await {
        Ok(res) => res,
        Err(e) => e.into_response(),
    };
    if req.method == Method::HEAD {
        // Headers, including Content-Length, stay as a GET would send them.
        *res.body_mut() = body::empty();
    }
    res
}

/// What a request path names, once resolved.
enum Located {
    /// A file to send: its real path, the `Content-Type` of the name asked
    /// for, and the coding when a precompressed sibling was chosen.
    File { real: PathBuf, content_type: String, coding: Option<Coding> },
    /// A directory asked for without its trailing slash.
    Directory,
}

/// Resolves the request path to a file inside `dir`: index for directories,
/// then a precompressed sibling the client accepts.
async fn locate(req: &Parts, rel_path: &str, dir: &StaticDir) -> Result<Located, StaticError> {
    let rel = path::decode(rel_path)?;
    let root = path::canonical_root(&dir.root).await?;
    let mut found = path::find(&root, root.join(&rel.path)).await?.ok_or(StaticError::NotFound)?;
    if found.metadata.is_dir() {
        let Some(index) = &dir.index else { return Err(StaticError::NotFound) };
        if !rel.trailing_slash {
            return Ok(Located::Directory);
        }
        found = path::find(&root, found.requested.join(index)).await?.ok_or(StaticError::NotFound)?;
        if !found.metadata.is_file() {
            return Err(StaticError::NotFound);
        }
    } else if rel.trailing_slash {
        // `app.css/` names a directory that does not exist.
        return Err(StaticError::NotFound);
    }
    let content_type = content_type(&found.requested);

    // Siblings are looked for only once the file itself exists (nginx would
    // serve a lone `.gz`): every client can then be answered, and a stray
    // `.gz` in the directory never creates a URL of its own.
    if dir.precompressed {
        for c in headers::accepted_codings(&req.headers) {
            let sibling = path::with_suffix(&found.requested, c.suffix());
            if let Some(f) = path::find(&root, sibling).await?.filter(|f| f.metadata.is_file()) {
                return Ok(Located::File { real: f.real, content_type, coding: Some(c) });
            }
        }
    }
    Ok(Located::File { real: found.real, content_type, coding: None })
}

async fn try_serve(req: &Parts, rel_path: &str, dir: &StaticDir) -> Result<Response<Body>, StaticError> {
    if req.method != Method::GET && req.method != Method::HEAD {
        return Err(StaticError::MethodNotAllowed);
    }
    let (real, content_type, coding) = match locate(req, rel_path, dir).await? {
        Located::File { real, content_type, coding } => (real, content_type, coding),
        Located::Directory => return Ok(redirect_to_slash(req)),
    };

    let file = tokio::fs::File::open(&real).await?;
    // Size and mtime from the open handle, so they describe what is read.
    let meta = file.metadata().await?;
    let len = meta.len();
    let validators = Validators::new(len, meta.modified().ok(), coding.map(Coding::token));

    let mut res = Response::new(body::empty());
    let h = res.headers_mut();
    h.insert(header::ETAG, value(&validators.etag));
    if let Some(lm) = validators.last_modified {
        h.insert(header::LAST_MODIFIED, value(&lm.to_string()));
    }
    h.insert(header::CACHE_CONTROL, value(&dir.cache_control));
    if dir.precompressed {
        h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }

    match headers::evaluate(&req.headers, &validators) {
        Precondition::Proceed => {}
        Precondition::NotModified => {
            *res.status_mut() = StatusCode::NOT_MODIFIED;
            return Ok(res);
        }
        Precondition::Failed => {
            // Not `res`: its Cache-Control would make the error cacheable.
            return Ok(text(StatusCode::PRECONDITION_FAILED, "precondition failed"));
        }
    }

    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, value(&content_type));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Some(c) = coding {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static(c.token()));
    }

    // §14.2: Range is defined for GET only.
    let range = if req.method == Method::GET && headers::if_range_allows(&req.headers, &validators) {
        headers::parse_range(&req.headers, len)
    } else {
        ByteRange::Full
    };
    let (start, count) = match range {
        ByteRange::Full => (0, len),
        ByteRange::Partial(r) => {
            *res.status_mut() = StatusCode::PARTIAL_CONTENT;
            let content_range = format!("bytes {}-{}/{len}", r.start(), r.end());
            res.headers_mut().insert(header::CONTENT_RANGE, value(&content_range));
            (*r.start(), r.end() - r.start() + 1)
        }
        ByteRange::Unsatisfiable => {
            let mut unsatisfiable = text(StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable");
            let h = unsatisfiable.headers_mut();
            h.insert(header::CONTENT_RANGE, value(&format!("bytes */{len}")));
            h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
            return Ok(unsatisfiable);
        }
    };
    res.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(count));
    if req.method == Method::GET {
        *res.body_mut() = file_body(file, start, count).await?;
    }
    Ok(res)
}

/// Streams `count` bytes of `file` from `start`, `CHUNK_SIZE` at a time.
async fn file_body(mut file: tokio::fs::File, start: u64, count: u64) -> Result<Body, StaticError> {
    if start > 0 {
        file.seek(SeekFrom::Start(start)).await?;
    }
    let stream = ReaderStream::with_capacity(file.take(count), CHUNK_SIZE);
    Ok(body::boxed(StreamBody::new(stream.map_ok(Frame::<Bytes>::data))))
}

/// The `Content-Type` for a file name; text gets an explicit charset so
/// browsers do not guess one.
fn content_type(path: &Path) -> String {
    let mime = mime_guess::from_path(path).first_or_octet_stream();
    let textual = mime.type_() == mime_guess::mime::TEXT
        || matches!(mime.essence_str(), "application/javascript" | "application/json");
    if textual && mime.get_param(mime_guess::mime::CHARSET).is_none() {
        format!("{}; charset=utf-8", mime.essence_str())
    } else {
        mime.to_string()
    }
}

/// 301 from `/static/docs` to `/static/docs/`, keeping the query, so that
/// relative links in the index page resolve against the directory.
fn redirect_to_slash(req: &Parts) -> Response<Body> {
    let location = match req.uri.query() {
        Some(q) => format!("{}/?{q}", req.uri.path()),
        None => format!("{}/", req.uri.path()),
    };
    let mut res = text(StatusCode::MOVED_PERMANENTLY, "moved permanently");
    res.headers_mut().insert(header::LOCATION, value(&location));
    res
}

fn text(status: StatusCode, msg: &str) -> Response<Body> {
    let mut res = Response::new(body::full(format!("{msg}\n")));
    *res.status_mut() = status;
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    res
}

/// A header value from text olive built or read from config. Header values
/// cannot hold control characters; an empty value is safer than a panic.
fn value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}
