//! The RFC 9110 request-header rules a static file server needs, as pure
//! functions over a `HeaderMap`: preconditions (§13), byte ranges (§14) and
//! content-coding negotiation (§12.5.3).

use std::ops::RangeInclusive;
use std::time::{Duration, SystemTime};

use http::HeaderMap;
use http::header::{self, HeaderName};
use httpdate::HttpDate;

/// The validators of one representation, as sent in `ETag` / `Last-Modified`.
pub(super) struct Validators {
    /// A strong entity tag, quotes included.
    pub etag: String,
    /// Whole seconds, as HTTP dates have no finer resolution.
    pub last_modified: Option<HttpDate>,
}

impl Validators {
    /// `"<size hex>-<mtime nanos hex>[-<coding>]"`: size and mtime change with
    /// the content in practice, and the coding suffix keeps the `.br`, `.gz`
    /// and identity representations apart even if sizes and mtimes collide.
    pub fn new(size: u64, modified: Option<SystemTime>, coding: Option<&str>) -> Self {
        let nanos =
            modified.and_then(|m| m.duration_since(SystemTime::UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos());
        let etag = match coding {
            Some(c) => format!("\"{size:x}-{nanos:x}-{c}\""),
            None => format!("\"{size:x}-{nanos:x}\""),
        };
        Validators { etag, last_modified: modified.and_then(http_date) }
    }
}

/// `HttpDate::from` panics outside 1970..9999; a file with such an mtime
/// (it happens: `touch -d @-1`) simply gets no `Last-Modified`.
fn http_date(t: SystemTime) -> Option<HttpDate> {
    const YEAR_9999: Duration = Duration::from_secs(253_402_300_800);
    let since_epoch = t.duration_since(SystemTime::UNIX_EPOCH).ok()?;
    (since_epoch < YEAR_9999).then(|| HttpDate::from(t))
}

/// What the preconditions of a GET or HEAD request decide (§13.2.2).
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Precondition {
    /// Serve the representation (possibly a range of it).
    Proceed,
    /// 304: the client's copy is current.
    NotModified,
    /// 412: If-Match or If-Unmodified-Since failed.
    Failed,
}

/// Evaluates the preconditions in the order of RFC 9110 §13.2.2. The
/// representation always exists here, so `If-Match: *` always passes.
pub(super) fn evaluate(headers: &HeaderMap, v: &Validators) -> Precondition {
    if let Some(list) = header_str(headers, &header::IF_MATCH) {
        // §13.1.1: strong comparison, so a weak tag never matches.
        if !list_matches(list, &v.etag, false) {
            return Precondition::Failed;
        }
    } else if let (Some(since), Some(lm)) =
        (header_date(headers, &header::IF_UNMODIFIED_SINCE), v.last_modified)
        && lm > since
    {
        return Precondition::Failed;
    }
    if let Some(list) = header_str(headers, &header::IF_NONE_MATCH) {
        // §13.1.2: weak comparison; it takes precedence over If-Modified-Since.
        if list_matches(list, &v.etag, true) {
            return Precondition::NotModified;
        }
    } else if let (Some(since), Some(lm)) =
        (header_date(headers, &header::IF_MODIFIED_SINCE), v.last_modified)
        && lm <= since
    {
        return Precondition::NotModified;
    }
    Precondition::Proceed
}

/// Whether a `Range` header may be honoured given `If-Range` (§13.1.5): the
/// validator must match exactly, and an entity tag must match strongly.
pub(super) fn if_range_allows(headers: &HeaderMap, v: &Validators) -> bool {
    let Some(value) = header_str(headers, &header::IF_RANGE) else { return true };
    let value = value.trim();
    if value.starts_with('"') {
        return value == v.etag;
    }
    if value.starts_with("W/") {
        return false;
    }
    matches!((httpdate::parse_http_date(value), v.last_modified), (Ok(d), Some(lm)) if http_date(d) == Some(lm))
}

/// `true` when an entity-tag list (`*` or `"a", W/"b"`) matches `etag`.
fn list_matches(list: &str, etag: &str, weak: bool) -> bool {
    if list.trim() == "*" {
        return true;
    }
    list.split(',').map(str::trim).any(|tag| match tag.strip_prefix("W/") {
        Some(opaque) => weak && opaque == etag,
        None => tag == etag,
    })
}

/// The answer to a `Range` header for a representation of `len` bytes.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum ByteRange {
    /// No usable Range: send the whole representation with 200.
    Full,
    /// 206 with these inclusive byte offsets.
    Partial(RangeInclusive<u64>),
    /// 416.
    Unsatisfiable,
}

/// Parses a `Range` header (§14.1.2) for one byte range: `a-b`, `a-`, `-n`.
///
/// Multiple ranges would need a `multipart/byteranges` body; like many
/// servers, olive answers them with the full 200 instead, which §14.2
/// allows. Syntactically invalid ranges and other units are ignored too.
pub(super) fn parse_range(headers: &HeaderMap, len: u64) -> ByteRange {
    let Some(value) = header_str(headers, &header::RANGE) else { return ByteRange::Full };
    let Some((unit, spec)) = value.split_once('=') else { return ByteRange::Full };
    if !unit.trim().eq_ignore_ascii_case("bytes") || spec.contains(',') {
        return ByteRange::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else { return ByteRange::Full };
    let number = |s: &str| if s.bytes().all(|b| b.is_ascii_digit()) { s.parse::<u64>().ok() } else { None };
    match (first.trim(), last.trim()) {
        ("", suffix) => match number(suffix) {
            None => ByteRange::Full,
            Some(0) => ByteRange::Unsatisfiable,
            Some(_) if len == 0 => ByteRange::Unsatisfiable,
            Some(n) => ByteRange::Partial(len - n.min(len)..=len - 1),
        },
        (first, "") => match number(first) {
            None => ByteRange::Full,
            Some(a) if a >= len => ByteRange::Unsatisfiable,
            Some(a) => ByteRange::Partial(a..=len - 1),
        },
        (first, last) => match (number(first), number(last)) {
            (Some(a), Some(b)) if a <= b => {
                if a >= len {
                    ByteRange::Unsatisfiable
                } else {
                    ByteRange::Partial(a..=b.min(len - 1))
                }
            }
            _ => ByteRange::Full,
        },
    }
}

/// A content coding olive can serve from a precompressed sibling file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Coding {
    Br,
    Gzip,
}

impl Coding {
    /// The `Content-Encoding` token.
    pub fn token(self) -> &'static str {
        match self {
            Coding::Br => "br",
            Coding::Gzip => "gzip",
        }
    }

    /// The file-name suffix nginx's `gzip_static` / `brotli_static` look for.
    pub fn suffix(self) -> &'static str {
        match self {
            Coding::Br => ".br",
            Coding::Gzip => ".gz",
        }
    }
}

/// The codings the client accepts (§12.5.3), best first: higher `q` wins,
/// and on a tie br beats gzip as it is smaller. `q=0` means "not this"; `*`
/// covers codings not named.
pub(super) fn accepted_codings(headers: &HeaderMap) -> Vec<Coding> {
    let (mut br, mut gzip, mut any) = (None, None, None);
    for value in headers.get_all(header::ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let mut parts = item.split(';');
            let name = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q=").or_else(|| p.trim().strip_prefix("Q=")))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            match name.as_str() {
                "br" => br = Some(q),
                "gzip" | "x-gzip" => gzip = Some(q),
                "*" => any = Some(q),
                _ => {}
            }
        }
    }
    let mut out: Vec<(Coding, f32)> = [(Coding::Br, br.or(any)), (Coding::Gzip, gzip.or(any))]
        .into_iter()
        .filter_map(|(c, q)| q.filter(|q| *q > 0.0).map(|q| (c, q)))
        .collect();
    // A stable sort keeps br ahead of gzip on equal q.
    out.sort_by(|a, b| b.1.total_cmp(&a.1));
    out.into_iter().map(|(c, _)| c).collect()
}

fn header_str<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// A date header; an unparsable date is ignored, as §13.1.3 requires.
fn header_date(headers: &HeaderMap, name: &HeaderName) -> Option<HttpDate> {
    header_str(headers, name).and_then(|s| s.trim().parse::<HttpDate>().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(name: HeaderName, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, value.parse().unwrap());
        h
    }

    /// RFC 9110 §14.1.2 byte-range forms against a 10-byte representation.
    #[test]
    fn range_table() {
        use ByteRange::*;
        let cases = [
            ("bytes=0-4", Partial(0..=4)),
            ("bytes=5-", Partial(5..=9)),
            ("bytes=-3", Partial(7..=9)),
            ("bytes=-30", Partial(0..=9)),
            ("bytes=2-100", Partial(2..=9)),
            ("Bytes = 1-1", Partial(1..=1)),
            ("bytes=10-", Unsatisfiable),
            ("bytes=10-20", Unsatisfiable),
            ("bytes=-0", Unsatisfiable),
            ("bytes=4-2", Full),
            ("bytes=0-1,3-4", Full),
            ("items=0-1", Full),
            ("bytes=a-b", Full),
            ("bytes=+1-2", Full),
            ("bytes", Full),
        ];
        for (value, want) in cases {
            assert_eq!(parse_range(&headers(header::RANGE, value), 10), want, "{value}");
        }
    }

    /// RFC 9110 §12.5.3: q-values, `*`, and q=0 as a refusal.
    #[test]
    fn accept_encoding_table() {
        use Coding::*;
        let cases: &[(&str, &[Coding])] = &[
            ("gzip, deflate, br", &[Br, Gzip]),
            ("gzip", &[Gzip]),
            ("br;q=0.5, gzip", &[Gzip, Br]),
            ("br;q=0, gzip", &[Gzip]),
            ("br, gzip;q=0", &[Br]),
            ("*", &[Br, Gzip]),
            ("*;q=0", &[]),
            ("gzip, *;q=0", &[Gzip]),
            ("identity", &[]),
            ("X-GZIP ;Q=0.1", &[Gzip]),
        ];
        for (value, want) in cases {
            assert_eq!(accepted_codings(&headers(header::ACCEPT_ENCODING, value)), *want, "{value}");
        }
    }

    /// RFC 9110 §13.1.1 / §13.1.2: strong for If-Match, weak for If-None-Match.
    #[test]
    fn etag_comparison_table() {
        let tag = "\"a-b\"";
        let cases = [
            ("\"a-b\"", true, true),
            ("W/\"a-b\"", false, true),
            ("\"x\", \"a-b\"", true, true),
            ("*", true, true),
            ("\"x\"", false, false),
            ("a-b", false, false),
        ];
        for (list, strong, weak) in cases {
            assert_eq!(list_matches(list, tag, false), strong, "strong {list}");
            assert_eq!(list_matches(list, tag, true), weak, "weak {list}");
        }
    }
}
