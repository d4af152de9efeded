//! The `[rate_limits]` table as written (see `super` for the conventions).
//!
//! Each rate is a sustained number per second and a burst: a client may
//! spend the burst at once, then earns one more every `1/rate` seconds
//! (GCRA, as governor implements it). A rate of 0 turns that limit off.

use serde::Deserialize;

/// Requests per second from one client address, on public listeners. A
/// page with its assets is a burst of tens of requests; an office behind
/// one NAT address is many people. nginx's `limit_req` is off by default;
/// this default only stops floods.
pub const DEFAULT_HTTP_PER_IP: u32 = 200;
pub const DEFAULT_HTTP_BURST: u32 = 400;
/// Websocket and SSE connection attempts per second from one address. A
/// page opens one and reconnects with backoff; a reconnect storm from a
/// broken client (or a script) is what this stops.
pub const DEFAULT_CONNECTS_PER_IP: u32 = 10;
pub const DEFAULT_CONNECTS_BURST: u32 = 50;
/// Messages one user (or, anonymous, one address) may publish per second,
/// over every connection and `POST /publish` together: comments and typing
/// signals from a person are a few a second at most.
pub const DEFAULT_PUBLISHES_PER_USER: u32 = 20;
pub const DEFAULT_PUBLISHES_BURST: u32 = 40;
/// Frames a client may send per second on one websocket. A page sends a
/// handful of subscribes at load, then pings and the odd publish.
pub const DEFAULT_FRAMES_PER_CONNECTION: u32 = 50;
pub const DEFAULT_FRAMES_BURST: u32 = 100;
/// Live sessions (websockets and SSE streams) one user may hold open at
/// once, across tabs and devices; 0 turns it off.
pub const DEFAULT_MAX_SESSIONS_PER_USER: usize = 64;
/// Clients (addresses, users) a keyed limit remembers before it sweeps out
/// those whose allowance is full again, and past which it starts afresh.
/// An entry is about 40 bytes: 1,000,000 is 40 MiB at worst.
pub const DEFAULT_TRACKED_CLIENTS: usize = 1_000_000;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimits {
    pub http_per_ip: u32,
    pub http_burst: u32,
    pub connects_per_ip: u32,
    pub connects_burst: u32,
    pub publishes_per_user: u32,
    pub publishes_burst: u32,
    pub frames_per_connection: u32,
    pub frames_burst: u32,
    pub max_sessions_per_user: usize,
    pub tracked_clients: usize,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            http_per_ip: DEFAULT_HTTP_PER_IP,
            http_burst: DEFAULT_HTTP_BURST,
            connects_per_ip: DEFAULT_CONNECTS_PER_IP,
            connects_burst: DEFAULT_CONNECTS_BURST,
            publishes_per_user: DEFAULT_PUBLISHES_PER_USER,
            publishes_burst: DEFAULT_PUBLISHES_BURST,
            frames_per_connection: DEFAULT_FRAMES_PER_CONNECTION,
            frames_burst: DEFAULT_FRAMES_BURST,
            max_sessions_per_user: DEFAULT_MAX_SESSIONS_PER_USER,
            tracked_clients: DEFAULT_TRACKED_CLIENTS,
        }
    }
}

impl RateLimits {
    /// Every rate with its burst and field names, for validation and for
    /// building the limiters.
    pub fn rates(&self) -> [(&'static str, u32, u32); 4] {
        [
            ("http_per_ip", self.http_per_ip, self.http_burst),
            ("connects_per_ip", self.connects_per_ip, self.connects_burst),
            ("publishes_per_user", self.publishes_per_user, self.publishes_burst),
            ("frames_per_connection", self.frames_per_connection, self.frames_burst),
        ]
    }
}
