//! Defaults of the HTTP/2 fields of `[limits]` (see `super` for the
//! conventions). Each one is a limit of hyper's h2 server that a single
//! abusive connection would otherwise push; `docs/HARDENING.md` ("HTTP/2
//! abuse") has the attack each one stops and its test.

use std::time::Duration;

/// Concurrent HTTP/2 streams per client connection (RFC 9113 §6.5.2
/// suggests at least 100). A stream past it is refused with
/// `RST_STREAM(REFUSED_STREAM)`.
pub const DEFAULT_H2_MAX_STREAMS: u32 = 100;
/// Streams a client may reset before olive has accepted them, at once,
/// before the connection gets `GOAWAY(ENHANCE_YOUR_CALM)`: the rapid-reset
/// attack (CVE-2023-44487) opens and cancels streams faster than a server
/// can notice. h2's default; a browser cancels a few at a time.
pub const DEFAULT_H2_MAX_PENDING_RESETS: usize = 20;
/// Streams olive may reset for the client's errors (malformed headers,
/// flow-control or frame errors on a stream) over a connection's life
/// before it sends `GOAWAY(ENHANCE_YOUR_CALM)`: each such reset costs olive
/// work and no client that works needs more than a few ("MadeYouReset",
/// CVE-2025-8671). hyper's default is 1024; olive's clients are browsers.
pub const DEFAULT_H2_MAX_ERROR_RESETS: usize = 100;
/// Bytes olive buffers per stream for a client that does not read, before
/// it stops pulling the response from the upstream (hyper's default,
/// 400 KiB). Multiplied by `h2_max_concurrent_streams` in the worst case.
pub const DEFAULT_H2_MAX_SEND_BUF_BYTES: usize = 400 * 1024;
/// Idle HTTP/2 connections are pinged this often (0 turns pings off); a
/// peer that does not answer within `h2_keep_alive_timeout` is closed, so
/// dead connections do not hold slots. Browsers answer pings at once.
pub const DEFAULT_H2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(60);
pub const DEFAULT_H2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);
