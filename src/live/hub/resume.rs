//! Subscribing with a resume point (`since`): replay first, then live,
//! nothing lost in between and nothing twice.
//!
//! # Why the order holds
//!
//! Deliveries reach a connection only through its shard's fan-out, which
//! runs under the shard's registry lock, and every delivery is recorded in
//! the history (getting its seq) before any shard sees it. [`Connection::resume`]
//! takes the registry lock first and, while holding it, reads the history
//! and registers the subscription with `after` = the last recorded seq,
//! then queues `subscribed` and the replayed frames. So:
//! - a message recorded after the snapshot has a larger seq and reaches
//!   the shard later, after the lock is released: it is delivered live,
//!   behind the replay (nothing lost);
//! - a message recorded before the snapshot but still on its way to the
//!   shard has seq ≤ `after` and is skipped for this subscription: it is
//!   either in the replay or older than `since` (nothing twice).
//!
//! When the history has a gap and the route can ask the upstream (tier 2),
//! the subscription is registered with the connection *held*: its
//! deliveries are kept aside (bounded like its queue) while the request is
//! in flight. [`Connection::finish`] then queues `subscribed`, the upstream's
//! messages, and the held deliveries whose id the upstream did not already
//! send, in that order, and releases the hold.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::time::Instant;

use super::{Connection, Frame, Outgoing, Sub, SubscribeError, encode};
use crate::broker::Message;
use crate::live::history::Recovery;
use crate::live::key::Pattern;
use crate::live::protocol;

/// How a subscribe with `since` went.
#[derive(Debug)]
pub enum Resumed {
    /// `subscribed` with `recovered: true` and the replay are queued.
    Recovered,
    /// Live messages follow; the caller sends `subscribed` with
    /// `recovered: false` once the broker has settled.
    NotRecovered,
    /// The history has a gap and the upstream may fill it: fetch, then
    /// call [`Connection::finish`] (deliveries are held until then).
    Pending(Pending),
}

/// A tier-2 recovery in progress on one subscription.
#[derive(Debug)]
#[must_use = "a pending recovery holds the connection's deliveries until finished"]
pub struct Pending {
    pub pattern: Pattern,
    pub since: String,
}

impl Connection {
    /// Subscribes to `pattern`, first replaying what followed `since`.
    /// `can_ask_upstream`: the route has a recovery URL, so a gap in the
    /// history on an exact key becomes [`Resumed::Pending`].
    pub fn resume(
        &mut self,
        pattern: Pattern,
        since: &str,
        max: usize,
        can_ask_upstream: bool,
    ) -> Result<Resumed, SubscribeError> {
        if self.subscriptions.contains(&pattern) {
            // Already live: a replay could only repeat what it was sent.
            return Ok(Resumed::NotRecovered);
        }
        if self.subscriptions.len() >= max {
            return Err(SubscribeError::TooMany);
        }
        let resumed = {
            let mut reg = self.shard.registry.lock().unwrap_or_else(|e| e.into_inner());
            let (mut recovery, last_seq) = {
                let mut history = self.hub.history();
                (history.since(&pattern, since, Instant::now()), history.last_seq())
            };
            // A replay the queue cannot take whole is a gap, not a reason
            // to cut the client off as a slow consumer.
            let room = reg.outlets.get(&self.id).map_or(0, |o| o.queue.room());
            if matches!(&recovery, Recovery::Full(entries) if entries.len() >= room) {
                recovery = Recovery::Gap;
            }
            self.hub.stats.resumed(matches!(recovery, Recovery::Full(_)));
            match recovery {
                Recovery::Full(entries) => {
                    reg.add(&pattern, Sub { conn: self.id, after: last_seq, watch: false });
                    let mut frames = vec![self.own(protocol::subscribed(pattern.as_str(), true))];
                    frames.extend(entries.into_iter().map(|e| Frame::message(e.id, e.frame)));
                    self.queue_all(&mut reg, frames);
                    Resumed::Recovered
                }
                Recovery::Gap if can_ask_upstream && pattern.is_exact().is_some() => {
                    reg.add(&pattern, Sub { conn: self.id, after: 0, watch: false });
                    if let Some(outlet) = reg.outlets.get_mut(&self.id) {
                        outlet.held.get_or_insert_with(Vec::new);
                    }
                    Resumed::Pending(Pending { pattern: pattern.clone(), since: since.to_owned() })
                }
                Recovery::Gap => {
                    reg.add(&pattern, Sub { conn: self.id, after: 0, watch: false });
                    Resumed::NotRecovered
                }
            }
        };
        self.hub.add_interest(&pattern);
        if let Some(key) = pattern.is_exact() {
            self.hub.present(&key, self.member.as_ref(), true);
        }
        self.subscriptions.push(pattern);
        Ok(resumed)
    }

    /// Ends a tier-2 recovery: `Some(messages)` when the upstream answered
    /// (oldest first), `None` when it could not.
    pub fn finish(&mut self, pending: Pending, recovered: Option<Vec<Message>>) {
        let mut reg = self.shard.registry.lock().unwrap_or_else(|e| e.into_inner());
        let Some(held) = reg.outlets.get_mut(&self.id).and_then(|o| o.held.take()) else {
            return; // kicked meanwhile
        };
        let mut sent: HashSet<Arc<str>> = HashSet::new();
        sent.insert(pending.since.as_str().into());
        let mut frames = vec![self.own(protocol::subscribed(pending.pattern.as_str(), recovered.is_some()))];
        for message in recovered.iter().flatten() {
            let Some(text) = encode(message) else { continue };
            if sent.insert(message.id.clone()) {
                frames.push(Frame::message(message.id.clone(), text));
            }
        }
        frames.extend(held.into_iter().filter(|d| !sent.contains(&d.id)).map(|d| d.frame));
        self.queue_all(&mut reg, frames);
    }

    pub(super) fn own(&self, frame: bytes::Bytes) -> Outgoing {
        // Server frames are built from strings and JSON: always UTF-8.
        let text = tokio_tungstenite::tungstenite::Utf8Bytes::try_from(frame).unwrap_or_default();
        Frame::own(text)
    }

    /// Queues frames under the registry lock, so that no delivery can come
    /// between them; a queue that cannot take them all is a slow consumer.
    pub(super) fn queue_all(&self, reg: &mut super::Registry, frames: Vec<Outgoing>) {
        let Some(outlet) = reg.outlets.get(&self.id) else { return };
        if frames.into_iter().all(|f| outlet.push(f)) {
            return;
        }
        reg.kick(self.id);
        self.hub.stats.slow_consumers.fetch_add(1, Ordering::Relaxed);
    }
}
