//! The hub's side of presence: keeping the [`Table`] in step with local
//! subscriptions, carrying out its effects, and the presence task.
//!
//! Every table change and the fan-out of its frames happen under the
//! table's lock, so watchers see events in the order the table made them;
//! the lock order is table, then a shard's registry (never the reverse).
//! Presence frames go only to *watchers*: connections with an exact
//! subscription to the key that asked for its presence. Asking marks the
//! subscription and queues the snapshot under both locks, so that no
//! event is missed or sent twice between the snapshot and the first event.

use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::{Connection, Frame, Hub};
use crate::live::key::Key;
use crate::live::presence::{Announcement, Effects, Member, Table};

/// Why a presence request was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum PresenceError {
    /// Presence is for keys the connection holds an exact subscription to.
    NotSubscribed,
}

impl Hub {
    fn presence(&self) -> MutexGuard<'_, Table> {
        self.presence.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A local connection became present on `key` (`join`) or left it.
    pub(super) fn present(&self, key: &Key, member: Option<&Member>, join: bool) {
        let mut table = self.presence();
        let effects = if join { table.join(key, member) } else { table.leave(key, member) };
        self.apply(key, effects);
    }

    /// Carries out a table change; called with the table locked.
    fn apply(&self, key: &Key, effects: Effects) {
        match effects.bind {
            Some(true) => self.broker.bind_presence(key),
            Some(false) => self.broker.unbind_presence(key),
            None => {}
        }
        if let Some(body) = effects.announce {
            self.broker.announce(key, body);
        }
        for frame in effects.frames {
            self.notify(key, frame);
        }
    }

    /// Queues a presence frame for every local watcher of `key`; a watcher
    /// whose queue is full is a slow consumer, as for deliveries.
    fn notify(&self, key: &Key, frame: Bytes) {
        let Ok(text) = Utf8Bytes::try_from(frame) else { return };
        let frame = Frame::own(text);
        for shard in &self.shards {
            let mut reg = shard.registry.lock().unwrap_or_else(|e| e.into_inner());
            let Some(subs) = reg.exact.get(key) else { continue };
            let watchers: Vec<_> = subs.iter().filter(|s| s.watch).map(|s| s.conn).collect();
            for id in watchers {
                let Some(outlet) = reg.outlets.get(&id) else { continue };
                if !outlet.push(frame.clone()) {
                    reg.kick(id);
                    self.stats.slow_consumers.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// The presence task: every `count_interval` expires silent nodes and
    /// sends counts, every `heartbeat` repeats this node's snapshots, and
    /// in between applies the other nodes' announcements (when the broker
    /// has other nodes). Runs until the hub's last handle is dropped.
    pub async fn run_presence(self: Arc<Self>) {
        let mut announcements = self.broker.take_announcements();
        let limits = self.presence_limits;
        let mut tick = tokio::time::interval(limits.count_interval);
        let mut heartbeat = tokio::time::interval(limits.heartbeat);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let mut table = self.presence();
                    for (key, effects) in table.tick(Instant::now()) {
                        self.apply(&key, effects);
                    }
                }
                _ = heartbeat.tick() => {
                    let snapshots = self.presence().heartbeat();
                    for (key, body) in snapshots {
                        self.broker.announce(&key, body);
                    }
                }
                received = recv(&mut announcements) => {
                    let Some((key, body)) = received else { announcements = None; continue };
                    match serde_json::from_slice::<Announcement>(&body) {
                        Ok(announcement) => {
                            let mut table = self.presence();
                            let effects = table.receive(&key, announcement, Instant::now());
                            self.apply(&key, effects);
                        }
                        Err(e) => tracing::debug!(%key, error = %e, "ignored a malformed presence announcement"),
                    }
                }
            }
        }
    }
}

/// The next announcement, or never when there is no channel (memory broker).
async fn recv(announcements: &mut Option<mpsc::UnboundedReceiver<(Key, Bytes)>>) -> Option<(Key, Bytes)> {
    match announcements {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

impl Connection {
    /// Who this connection is, for presence: `None` is anonymous. For the
    /// auth code, once a token is verified; a change applies to the keys
    /// already subscribed, too (they leave as the old and join as the new).
    pub fn set_member(&mut self, member: Option<Member>) {
        if self.member == member {
            return;
        }
        let keys: Vec<Key> = self.subscriptions.iter().filter_map(|p| p.is_exact()).collect();
        for key in &keys {
            self.hub.present(key, self.member.as_ref(), false);
        }
        self.member = member;
        for key in &keys {
            self.hub.present(key, self.member.as_ref(), true);
        }
    }

    pub fn member(&self) -> Option<&Member> {
        self.member.as_ref()
    }

    /// Answers a presence request: queues the key's presence frame and
    /// makes the connection a watcher of the key's changes from then on.
    pub fn watch_presence(&self, key: &Key) -> Result<(), PresenceError> {
        let table = self.hub.presence();
        let mut reg = self.shard.registry.lock().unwrap_or_else(|e| e.into_inner());
        let sub = reg.exact.get_mut(key).and_then(|subs| subs.iter_mut().find(|s| s.conn == self.id));
        let Some(sub) = sub else { return Err(PresenceError::NotSubscribed) };
        sub.watch = true;
        let frame = self.own(table.snapshot(key));
        self.queue_all(&mut reg, vec![frame]);
        Ok(())
    }
}
