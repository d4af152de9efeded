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
//! - [`publish`]: `POST /olive/publish` for backends;
//! - [`quiet`]: a future polled only when it stirs, for the rare branches
//!   of a session's loop.
//!
//! And [`outside`], what ends a session from outside: a drain, or its
//! token running out.

pub mod history;
pub mod hub;
pub mod id;
pub mod key;
pub mod presence;
pub mod protocol;
pub mod publish;
pub mod quiet;
pub mod recover;
pub mod sse;
pub mod ws;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::auth::{Ended, SessionEnd};
use quiet::Quiet;

/// What ends a session from outside, rarely, and so is polled only when
/// it stirs ([`quiet`]): `None` when a draining olive lets this session
/// go, `Some` when its identity ran out ([`Auth::session_end`]).
pub type Outside = Quiet<Pin<Box<dyn Future<Output = Option<Ended>> + Send>>>;

/// [`Outside`] for a session. On a drain the session goes after a
/// uniformly random share of `spread` (`live.reconnect_spread`), so that a
/// node's clients reconnect spread over the window instead of all at once.
///
/// [`Auth::session_end`]: crate::auth::Auth::session_end
pub fn outside(shutdown: CancellationToken, spread: Duration, ended: SessionEnd) -> Outside {
    Quiet::new(Box::pin(async move {
        tokio::select! {
            () = async {
                shutdown.cancelled().await;
                tokio::time::sleep(reconnect_delay(spread)).await;
            } => None,
            why = ended => Some(why),
        }
    }))
}

/// A uniformly random share of `spread`.
fn reconnect_delay(spread: Duration) -> Duration {
    spread.mul_f64(fastrand::f64())
}
