//! The live hub: browsers subscribe to object keys over websockets (or SSE)
//! and receive what is published on them through the broker.
//!
//! So far only its pure foundation:
//! - [`key`]: object keys, AMQP topic patterns, matching and the pattern
//!   containment that grants are checked with;
//! - [`id`]: message ids, unique across nodes and ordered by time;
//! - [`protocol`]: the JSON frames of wire protocol v1;
//! - [`hub`]: local subscriptions, broker interest and fan-out;
//! - [`ws`]: the websocket endpoint;
//! - [`publish`]: `POST /olive/publish` for backends.

pub mod hub;
pub mod id;
pub mod key;
pub mod protocol;
pub mod publish;
pub mod ws;
