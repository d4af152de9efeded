//! Turning a request path into a file inside the served directory.
//!
//! Two lines of defence, both needed. Decoding works segment by segment so
//! that an encoded `%2F` never becomes a separator and an encoded `..` is
//! seen as `..`; that rejects traversal before the file system is touched.
//! Then every candidate is canonicalized and must still lie under the
//! canonical root, which catches symlinks that point out of the directory.

use std::ffi::OsString;
use std::fs::Metadata;
use std::io;
use std::path::{Path, PathBuf};

use percent_encoding::percent_decode_str;

use super::StaticError;

/// A request path, decoded and checked, still relative to the root.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct RelPath {
    /// Only normal components: no `..`, `.`, root or prefix.
    pub path: PathBuf,
    /// The request named a directory (`css/`); a file then does not match.
    pub trailing_slash: bool,
}

/// Decodes `rel` (percent-encoded, no query) into a safe relative path.
///
/// Empty and `.` segments are dropped, as nginx merges slashes. Anything that
/// could name something other than a child of the root is rejected: `..`
/// (however encoded), a decoded `/` or `\`, and NUL.
pub(super) fn decode(rel: &str) -> Result<RelPath, StaticError> {
    let mut path = PathBuf::new();
    for raw in rel.split('/') {
        let segment = percent_decode_str(raw).decode_utf8().map_err(|_| StaticError::MalformedPath)?;
        if segment.contains(['/', '\\', '\0']) || segment == ".." {
            return Err(StaticError::Forbidden);
        }
        if segment.is_empty() || segment == "." {
            continue;
        }
        path.push(segment.as_ref());
    }
    Ok(RelPath { path, trailing_slash: rel.is_empty() || rel.ends_with('/') })
}

/// A regular file or directory found inside the root.
pub(super) struct Found {
    /// The path as requested under the root; its extension names the type.
    pub requested: PathBuf,
    /// Where it really is, after symlinks; the file to open.
    pub real: PathBuf,
    pub metadata: Metadata,
}

/// Canonicalizes `root`, the base every containment check compares against.
pub(super) async fn canonical_root(root: &Path) -> Result<PathBuf, StaticError> {
    // A missing root is a deployment mistake, not a missing file: let it be a 500.
    Ok(tokio::fs::canonicalize(root).await?)
}

/// Looks up `requested` and returns it only when its real path is inside
/// `root` (already canonical). Missing, outside and unreadable all give
/// `Ok(None)`; only unexpected IO errors are errors.
pub(super) async fn find(root: &Path, requested: PathBuf) -> Result<Option<Found>, StaticError> {
    let real = match tokio::fs::canonicalize(&requested).await {
        Ok(real) => real,
        Err(e) if is_absent(&e) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if !real.starts_with(root) {
        return Ok(None);
    }
    let metadata = match tokio::fs::metadata(&real).await {
        Ok(m) => m,
        Err(e) if is_absent(&e) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    // Sockets, FIFOs and devices are never content: opening a FIFO would block.
    if !metadata.is_file() && !metadata.is_dir() {
        return Ok(None);
    }
    Ok(Some(Found { requested, real, metadata }))
}

/// `path` with `suffix` appended to its file name: `app.js` → `app.js.br`.
pub(super) fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = OsString::from(path.as_os_str());
    s.push(suffix);
    PathBuf::from(s)
}

/// Errors that mean "there is no such file for this client", not a fault.
fn is_absent(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound
            | io::ErrorKind::NotADirectory
            | io::ErrorKind::PermissionDenied
            | io::ErrorKind::InvalidFilename
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The decoding half of the traversal defence, without a file system.
    #[test]
    fn decode_table() {
        let ok = |p: &str, slash| Ok(RelPath { path: PathBuf::from(p), trailing_slash: slash });
        let cases: &[(&str, Result<RelPath, StaticError>)] = &[
            ("app.css", ok("app.css", false)),
            ("/css//app.css", ok("css/app.css", false)),
            ("css/", ok("css", true)),
            ("", ok("", true)),
            ("./a/./b", ok("a/b", false)),
            ("a%20b.txt", ok("a b.txt", false)),
            (".hidden", ok(".hidden", false)),
            ("..", Err(StaticError::Forbidden)),
            ("../x", Err(StaticError::Forbidden)),
            ("%2e%2e/x", Err(StaticError::Forbidden)),
            (".%2E/x", Err(StaticError::Forbidden)),
            ("..%2fx", Err(StaticError::Forbidden)),
            ("a%2Fb", Err(StaticError::Forbidden)),
            ("foo/../../x", Err(StaticError::Forbidden)),
            ("\\..\\x", Err(StaticError::Forbidden)),
            ("a%5c..", Err(StaticError::Forbidden)),
            ("a%00.txt", Err(StaticError::Forbidden)),
            ("%ff%fe", Err(StaticError::MalformedPath)),
        ];
        for (input, want) in cases {
            let got = decode(input);
            assert_eq!(format!("{got:?}"), format!("{want:?}"), "decode({input:?})");
        }
    }
}
