//! The live hub: browsers subscribe to object keys over websockets (or SSE)
//! and receive what is published on them through the broker.
//!
//! Its parts:
//! - [`key`]: object keys, AMQP topic patterns, matching and the pattern
//!   containment that grants are checked with;
//! - [`id`]: message ids, unique across nodes and ordered by time;
//! - [`protocol`]: the JSON frames of wire protocol v1;
//! - [`hub`]: local subscriptions, broker interest and fan-out;
//! - [`presence`]: who is on a key, across nodes;
//! - [`history`]: recent messages per key, for resume (recovery tier 1);
//! - [`recover`]: asking the upstream to fill a gap (recovery tier 2);
//! - [`ws`]: the websocket endpoint;
//! - [`sse`]: the Server-Sent Events endpoint, for clients without
//!   websockets;
//! - [`publish`]: `POST /olive/publish` for backends.
//!
//! And [`leave_after_drain`], when a draining olive lets each session go.

pub mod history;
pub mod hub;
pub mod id;
pub mod key;
pub mod presence;
pub mod protocol;
pub mod publish;
pub mod recover;
pub mod sse;
pub mod ws;

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Resolves when a draining olive lets this session go: once `shutdown`
/// is cancelled, after a uniformly random share of `spread`
/// (`live.reconnect_spread`), so that a node's clients reconnect spread
/// over the window instead of all at once.
pub async fn leave_after_drain(shutdown: CancellationToken, spread: Duration) {
    shutdown.cancelled().await;
    tokio::time::sleep(reconnect_delay(spread)).await;
}

/// A uniformly random share of `spread`.
pub fn reconnect_delay(spread: Duration) -> Duration {
    spread.mul_f64(fastrand::f64())
}
