//! The hub: local subscriptions, interest in the broker, and fan-out.
//!
//! Subscriptions are sharded by worker thread: a connection registers in
//! the [`Shard`] of the worker it runs on, and each shard fans deliveries
//! out to its own connections from a task on that same worker. One
//! delivery task reads the broker's channel, serialises each message once,
//! and hands the same bytes to every shard; a shard pushes them into each
//! matching connection's bounded queue without waiting. A connection whose
//! queue is full is a slow consumer: it is told to close (1013) and
//! dropped from the registry, and nobody else waits for it.
//!
//! The hub also counts, across shards, how many local subscriptions want
//! each pattern, and binds it in the broker on the first and unbinds it
//! after the last.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::key::{Key, Pattern};
use super::protocol;
use crate::broker::{Broker, Message};

/// Identifies one client connection within the hub.
pub type ConnId = u64;

/// Why a connection is being closed by the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kick {
    /// Its outbound queue was full (websocket close 1013, "try again later").
    SlowConsumer,
}

/// The sending side of a connection, as the registry holds it.
struct Outlet {
    queue: mpsc::Sender<Utf8Bytes>,
    kick: Option<oneshot::Sender<Kick>>,
}

/// A message ready for fan-out: its key and the `message` frame, encoded
/// once and shared by every receiver.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub key: Key,
    pub frame: Utf8Bytes,
}

#[derive(Default)]
struct Registry {
    outlets: HashMap<ConnId, Outlet>,
    exact: HashMap<Key, Vec<ConnId>>,
    patterns: Vec<(Pattern, ConnId)>,
}

/// The subscriptions of one worker's connections.
pub struct Shard {
    registry: Mutex<Registry>,
    inbox: mpsc::UnboundedSender<Delivery>,
}

/// Counters the hub keeps (exported as metrics by the ops issue).
#[derive(Debug, Default)]
pub struct Stats {
    pub delivered: AtomicU64,
    pub slow_consumers: AtomicU64,
    pub published: AtomicU64,
}

pub struct Hub {
    broker: Arc<dyn Broker>,
    shards: Vec<Arc<Shard>>,
    interest: Mutex<HashMap<Pattern, usize>>,
    next_conn: AtomicU64,
    pub stats: Stats,
}

/// Receivers that must be driven on their workers: `Hub::run_shard`.
pub struct ShardInbox(pub usize, pub mpsc::UnboundedReceiver<Delivery>);

impl Hub {
    /// A hub with `workers` shards over `broker`. The shard inboxes must be
    /// handed to [`Hub::run_shard`] on their workers.
    pub fn new(broker: Arc<dyn Broker>, workers: usize) -> (Arc<Hub>, Vec<ShardInbox>) {
        let mut shards = Vec::new();
        let mut inboxes = Vec::new();
        for i in 0..workers.max(1) {
            let (tx, rx) = mpsc::unbounded_channel();
            shards.push(Arc::new(Shard { registry: Mutex::default(), inbox: tx }));
            inboxes.push(ShardInbox(i, rx));
        }
        let hub = Hub {
            broker,
            shards,
            interest: Mutex::default(),
            next_conn: AtomicU64::new(1),
            stats: Stats::default(),
        };
        (Arc::new(hub), inboxes)
    }

    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.broker
    }

    /// Reads the broker's deliveries until the channel closes, encoding
    /// each message once and passing it to every shard.
    pub async fn run_deliveries(self: Arc<Self>, mut deliveries: mpsc::UnboundedReceiver<Message>) {
        while let Some(message) = deliveries.recv().await {
            let Some(delivery) = encode(&message) else {
                tracing::warn!(key = %message.key, id = %message.id, "dropped a message whose data is not JSON");
                continue;
            };
            for shard in &self.shards {
                let _ = shard.inbox.send(delivery.clone());
            }
        }
    }

    /// Fans deliveries out to the connections of one shard. Runs on that
    /// shard's worker.
    pub async fn run_shard(self: Arc<Self>, inbox: ShardInbox) {
        let ShardInbox(index, mut rx) = inbox;
        let shard = self.shards[index].clone();
        let mut targets = Vec::new();
        while let Some(delivery) = rx.recv().await {
            let mut kicked = Vec::new();
            {
                let mut reg = shard.registry.lock().unwrap_or_else(|e| e.into_inner());
                targets.clear();
                if let Some(ids) = reg.exact.get(&delivery.key) {
                    targets.extend_from_slice(ids);
                }
                targets
                    .extend(reg.patterns.iter().filter(|(p, _)| p.matches(&delivery.key)).map(|(_, id)| *id));
                if targets.len() > 1 {
                    // One copy per connection, even when several of its
                    // subscriptions match.
                    targets.sort_unstable();
                    targets.dedup();
                }
                for id in &targets {
                    let Some(outlet) = reg.outlets.get_mut(id) else { continue };
                    match outlet.queue.try_send(delivery.frame.clone()) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(_)) => kicked.push(*id),
                        // The connection is closing; it unregisters itself.
                        Err(mpsc::error::TrySendError::Closed(_)) => {}
                    }
                }
                for id in &kicked {
                    // Out of the fan-out at once; its subscriptions go when
                    // the connection drops.
                    if let Some(kick) = reg.outlets.remove(id).and_then(|o| o.kick) {
                        let _ = kick.send(Kick::SlowConsumer);
                    }
                }
            }
            let delivered = (targets.len() - kicked.len()) as u64;
            self.stats.delivered.fetch_add(delivered, Ordering::Relaxed);
            self.stats.slow_consumers.fetch_add(kicked.len() as u64, Ordering::Relaxed);
        }
    }

    /// Registers a connection on the calling worker's shard. The
    /// [`Outbound`] half belongs to whatever writes to the client.
    pub fn connect(self: &Arc<Self>, queue_size: usize) -> (Connection, Outbound) {
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let shard_index = crate::edge::workers::current() % self.shards.len();
        let (tx, rx) = mpsc::channel(queue_size.max(1));
        let (kick_tx, kick_rx) = oneshot::channel();
        let shard = self.shards[shard_index].clone();
        shard
            .registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .outlets
            .insert(id, Outlet { queue: tx.clone(), kick: Some(kick_tx) });
        let conn = Connection { hub: self.clone(), shard, id, subscriptions: Vec::new(), queue: tx };
        (conn, Outbound { frames: rx, kicked: kick_rx })
    }

    fn add_interest(&self, pattern: &Pattern) {
        let mut interest = self.interest.lock().unwrap_or_else(|e| e.into_inner());
        let count = interest.entry(pattern.clone()).or_insert(0);
        *count += 1;
        if *count == 1 {
            self.broker.bind(pattern);
        }
    }

    fn remove_interest(&self, pattern: &Pattern) {
        let mut interest = self.interest.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = interest.get_mut(pattern) {
            *count -= 1;
            if *count == 0 {
                interest.remove(pattern);
                self.broker.unbind(pattern);
            }
        }
    }

    /// Patterns bound in the broker, with their local subscription counts.
    pub fn interest(&self) -> Vec<(Pattern, usize)> {
        let interest = self.interest.lock().unwrap_or_else(|e| e.into_inner());
        interest.iter().map(|(p, n)| (p.clone(), *n)).collect()
    }
}

/// Encodes a message's `message` frame once for every receiver.
pub fn encode(message: &Message) -> Option<Delivery> {
    let text = std::str::from_utf8(&message.data).ok()?;
    let data: &serde_json::value::RawValue = serde_json::from_str(text).ok()?;
    let frame = protocol::message(message.key.as_str(), &message.id, data, message.from.as_ref());
    let frame = Utf8Bytes::try_from(frame).ok()?;
    Some(Delivery { key: message.key.clone(), frame })
}

/// One client connection's membership in the hub. Dropping it removes
/// every subscription it holds.
pub struct Connection {
    hub: Arc<Hub>,
    shard: Arc<Shard>,
    id: ConnId,
    subscriptions: Vec<Pattern>,
    /// For frames the connection sends itself (acks, errors), in order with
    /// deliveries.
    pub queue: mpsc::Sender<Utf8Bytes>,
}

/// The writing side of a connection: what to send to the client, and the
/// hub's notice that the client is too slow to keep.
pub struct Outbound {
    pub frames: mpsc::Receiver<Utf8Bytes>,
    pub kicked: oneshot::Receiver<Kick>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum SubscribeError {
    TooMany,
}

impl Connection {
    pub fn id(&self) -> ConnId {
        self.id
    }

    pub fn subscriptions(&self) -> &[Pattern] {
        &self.subscriptions
    }

    /// Subscribes to a key or pattern; subscribing twice is a no-op that
    /// returns `Ok(false)`.
    pub fn subscribe(&mut self, pattern: Pattern, max: usize) -> Result<bool, SubscribeError> {
        if self.subscriptions.contains(&pattern) {
            return Ok(false);
        }
        if self.subscriptions.len() >= max {
            return Err(SubscribeError::TooMany);
        }
        {
            let mut reg = self.shard.registry.lock().unwrap_or_else(|e| e.into_inner());
            match pattern.is_exact() {
                Some(key) => reg.exact.entry(key).or_default().push(self.id),
                None => reg.patterns.push((pattern.clone(), self.id)),
            }
        }
        self.hub.add_interest(&pattern);
        self.subscriptions.push(pattern);
        Ok(true)
    }

    /// Unsubscribes; `false` when it was not subscribed.
    pub fn unsubscribe(&mut self, pattern: &Pattern) -> bool {
        let Some(pos) = self.subscriptions.iter().position(|p| p == pattern) else { return false };
        self.subscriptions.swap_remove(pos);
        self.shard.registry.lock().unwrap_or_else(|e| e.into_inner()).remove(self.id, pattern);
        self.hub.remove_interest(pattern);
        true
    }

    /// Queues a frame of the connection's own (ack, error, pong). Returns
    /// `false` when the queue is full: the client is not reading.
    pub fn send(&self, frame: Bytes) -> bool {
        match Utf8Bytes::try_from(frame) {
            Ok(text) => self.queue.try_send(text).is_ok(),
            Err(_) => true,
        }
    }
}

impl Registry {
    fn remove(&mut self, id: ConnId, pattern: &Pattern) {
        match pattern.is_exact() {
            Some(key) => {
                if let Some(ids) = self.exact.get_mut(&key) {
                    ids.retain(|&c| c != id);
                    if ids.is_empty() {
                        self.exact.remove(&key);
                    }
                }
            }
            None => self.patterns.retain(|(p, c)| !(*c == id && p == pattern)),
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        {
            let mut reg = self.shard.registry.lock().unwrap_or_else(|e| e.into_inner());
            reg.outlets.remove(&self.id);
            for pattern in &self.subscriptions {
                reg.remove(self.id, pattern);
            }
        }
        for pattern in &self.subscriptions {
            self.hub.remove_interest(pattern);
        }
    }
}

#[cfg(test)]
mod tests;
