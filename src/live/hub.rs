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
//! after the last, once it has lingered (`history_linger`) with nobody
//! coming back: a client that reconnects within it resumes from the
//! history.
//!
//! Presence (who is on an exact key, across nodes) is kept in step with
//! the exact subscriptions here and lives in [`presence`].
//!
//! Every delivery is recorded once in the [`History`] before fan-out, so
//! that a subscribe with `since` can replay what the client missed
//! ([`resume`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::history::{self, History};
use super::key::{Key, Pattern};
use super::presence::{self as table, Member, Table};
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

/// One frame for a client: a `message` frame carries its message id (SSE
/// sends it as the event's `id:`), the connection's own frames none.
#[derive(Debug)]
pub struct Frame {
    pub id: Option<Arc<str>>,
    pub text: Utf8Bytes,
}

/// A frame as a connection's queue holds it: one pointer. A delivery's
/// frame is shared by every receiver (a reference count each, no copy),
/// and the first block of a queue (32 slots, allocated with the channel)
/// costs 256 bytes per idle connection rather than 1.5 KiB.
pub type Outgoing = Arc<Frame>;

impl Frame {
    /// A frame of the connection's own (subscribed, ack, error, presence).
    pub fn own(text: Utf8Bytes) -> Outgoing {
        Arc::new(Frame { id: None, text })
    }

    /// A `message` frame.
    pub fn message(id: Arc<str>, text: Utf8Bytes) -> Outgoing {
        Arc::new(Frame { id: Some(id), text })
    }
}

/// The sending side of a connection, as the registry holds it.
struct Outlet {
    queue: outbox::Sender,
    /// While an upstream recovery is pending for this connection, its
    /// deliveries wait here (bounded by the queue's capacity), so that the
    /// recovered messages go out first.
    held: Option<Vec<Delivery>>,
}

/// A message ready for fan-out: its key, id, delivery order and the
/// `message` frame, encoded once and shared by every receiver.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub key: Key,
    pub id: Arc<str>,
    /// Node-local delivery order, from the history.
    pub seq: u64,
    pub frame: Outgoing,
}

/// One subscription in the registry: deliveries up to `after` (a seq) are
/// not for it, because a replay already covered them. `watch`: the
/// connection asked for the key's presence and gets its changes.
#[derive(Debug, Clone, Copy)]
struct Sub {
    conn: ConnId,
    after: u64,
    watch: bool,
}

#[derive(Default)]
struct Registry {
    /// Looked up once per delivery and receiver: foldhash, not SipHash
    /// (connection ids are olive's own counter, not attacker-chosen).
    outlets: HashMap<ConnId, Outlet, foldhash::fast::FixedState>,
    exact: HashMap<Key, Vec<Sub>>,
    patterns: Vec<(Pattern, Sub)>,
}

/// The subscriptions of one worker's connections.
pub struct Shard {
    registry: Mutex<Registry>,
    inbox: mpsc::UnboundedSender<Delivery>,
}

/// Counters the hub keeps, exported by [`crate::ops::metrics`].
pub use crate::ops::metrics::LiveStats as Stats;

pub struct Hub {
    broker: Arc<dyn Broker>,
    shards: Vec<Arc<Shard>>,
    interest: Mutex<HashMap<Pattern, Interest>>,
    /// How long a pattern stays bound after its last subscription.
    linger: std::time::Duration,
    history: Mutex<History>,
    presence: Mutex<Table>,
    presence_limits: table::Limits,
    next_conn: AtomicU64,
    /// Where messages on olive's control keys go instead of to
    /// subscribers ([`Hub::take_control`]).
    control: std::sync::OnceLock<mpsc::UnboundedSender<Message>>,
    pub stats: Stats,
}

/// Local subscriptions that want one pattern bound.
#[derive(Debug, Default)]
struct Interest {
    count: usize,
    /// Bumped each time the count falls to 0: the unbind scheduled then
    /// goes ahead only if nothing happened since.
    released: u64,
}

/// Receivers that must be driven on their workers: `Hub::run_shard`.
pub struct ShardInbox(pub usize, pub mpsc::UnboundedReceiver<Delivery>);

impl Hub {
    /// A hub with `workers` shards over `broker`, keeping `history`. The
    /// shard inboxes must be handed to [`Hub::run_shard`] on their workers,
    /// and [`Hub::run_presence`] run for presence across nodes.
    pub fn new(
        broker: Arc<dyn Broker>,
        workers: usize,
        history: history::Limits,
        presence: table::Limits,
    ) -> (Arc<Hub>, Vec<ShardInbox>) {
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
            linger: history.linger,
            history: Mutex::new(History::new(history)),
            presence: Mutex::new(Table::new(table::node_id(), presence)),
            presence_limits: presence,
            next_conn: AtomicU64::new(1),
            control: std::sync::OnceLock::new(),
            stats: Stats::default(),
        };
        (Arc::new(hub), inboxes)
    }

    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.broker
    }

    /// Binds `pattern` (olive's control keys, `auth::revoke`) for this node
    /// and returns what arrives on control keys, once. Control messages
    /// never reach subscribers, whatever they subscribed to.
    pub fn take_control(&self, pattern: &Pattern) -> Option<mpsc::UnboundedReceiver<Message>> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.control.set(tx).ok()?;
        self.broker.bind(pattern);
        Some(rx)
    }

    /// Reads the broker's deliveries until the channel closes, encoding
    /// each message once, recording it in the history and passing it to
    /// every shard. Recording before fan-out, in this one task, is what
    /// [`resume`] relies on: a message is in the history before any shard
    /// can see it.
    pub async fn run_deliveries(self: Arc<Self>, mut deliveries: mpsc::UnboundedReceiver<Message>) {
        while let Some(message) = deliveries.recv().await {
            if crate::auth::revoke::is_control(&message.key) {
                if let Some(control) = self.control.get() {
                    let _ = control.send(message);
                }
                continue;
            }
            let Some(frame) = encode(&message) else {
                tracing::warn!(key = %message.key, id = %message.id, "dropped a message whose data is not JSON");
                self.stats.not_json.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            self.stats.arrived(&message.id);
            let seq = self.history().record(&message.key, message.id.clone(), frame.clone(), Instant::now());
            // Each shard gets its own copy of the frame: every receiving
            // connection takes a reference to it and its writer drops one,
            // and a count shared by the workers would have the cores
            // trading its cache line back and forth twice per delivery.
            for shard in &self.shards {
                let text = Utf8Bytes::from(frame.as_str().to_owned());
                let frame = Frame::message(message.id.clone(), text);
                let delivery = Delivery { key: message.key.clone(), id: message.id.clone(), seq, frame };
                let _ = shard.inbox.send(delivery);
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
            let mut delivered = 0u64;
            {
                let mut reg = shard.registry.lock().unwrap_or_else(|e| e.into_inner());
                targets.clear();
                let fresh = |sub: &Sub| delivery.seq > sub.after;
                if let Some(subs) = reg.exact.get(&delivery.key) {
                    targets.extend(subs.iter().filter(|s| fresh(s)).map(|s| s.conn));
                }
                targets.extend(
                    reg.patterns
                        .iter()
                        .filter(|(p, s)| fresh(s) && p.matches(&delivery.key))
                        .map(|(_, s)| s.conn),
                );
                if targets.len() > 1 {
                    // One copy per connection, even when several of its
                    // subscriptions match.
                    targets.sort_unstable();
                    targets.dedup();
                }
                for id in &targets {
                    // No outlet: kicked earlier, its subscriptions go when
                    // the connection drops.
                    let Some(outlet) = reg.outlets.get_mut(id) else { continue };
                    if outlet.offer(&delivery) {
                        delivered += 1;
                    } else {
                        kicked.push(*id);
                    }
                }
                for id in &kicked {
                    reg.kick(*id);
                }
            }
            self.stats.delivered.add(&delivery.key, delivered);
            self.stats.slow_consumers.fetch_add(kicked.len() as u64, Ordering::Relaxed);
        }
    }

    /// Registers a connection on the calling worker's shard. The
    /// [`Outbound`] half belongs to whatever writes to the client.
    pub fn connect(self: &Arc<Self>, queue_size: usize) -> (Connection, Outbound) {
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let shard_index = crate::edge::workers::current() % self.shards.len();
        let (tx, rx) = outbox::channel(queue_size);
        let shard = self.shards[shard_index].clone();
        shard
            .registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .outlets
            .insert(id, Outlet { queue: tx.clone(), held: None });
        let conn =
            Connection { hub: self.clone(), shard, id, subscriptions: Vec::new(), member: None, queue: tx };
        (conn, Outbound { frames: rx })
    }

    fn add_interest(&self, pattern: &Pattern) {
        let mut interest = self.interest.lock().unwrap_or_else(|e| e.into_inner());
        let entry = interest.entry(pattern.clone()).or_insert_with(|| {
            self.broker.bind(pattern);
            Interest::default()
        });
        // Back within the linger: still bound, the history intact.
        entry.count += 1;
    }

    fn remove_interest(self: &Arc<Self>, pattern: &Pattern) {
        let mut interest = self.interest.lock().unwrap_or_else(|e| e.into_inner());
        let Some(entry) = interest.get_mut(pattern) else { return };
        entry.count -= 1;
        if entry.count > 0 {
            return;
        }
        entry.released += 1;
        let released = entry.released;
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) if !self.linger.is_zero() => {
                let (hub, pattern) = (self.clone(), pattern.clone());
                runtime.spawn(async move {
                    tokio::time::sleep(hub.linger).await;
                    let mut interest = hub.interest.lock().unwrap_or_else(|e| e.into_inner());
                    if interest.get(&pattern).is_some_and(|e| e.count == 0 && e.released == released) {
                        hub.unbind(&mut interest, &pattern);
                    }
                });
            }
            _ => self.unbind(&mut interest, pattern),
        }
    }

    fn unbind(&self, interest: &mut HashMap<Pattern, Interest>, pattern: &Pattern) {
        interest.remove(pattern);
        // From here on this node misses messages on the pattern: its
        // history can no longer vouch for what came before.
        self.history().forget(pattern);
        self.broker.unbind(pattern);
    }

    fn history(&self) -> std::sync::MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Patterns bound in the broker, with their local subscription counts
    /// (0 while one lingers).
    pub fn interest(&self) -> Vec<(Pattern, usize)> {
        let interest = self.interest.lock().unwrap_or_else(|e| e.into_inner());
        interest.iter().map(|(p, i)| (p.clone(), i.count)).collect()
    }
}

/// Encodes a message's `message` frame once for every receiver.
///
/// Line breaks in the data become spaces: outside strings they are only
/// whitespace (JSON strings cannot hold them raw), and a frame on one line
/// is one SSE `data:` line.
pub fn encode(message: &Message) -> Option<Utf8Bytes> {
    let text = std::str::from_utf8(&message.data).ok()?;
    let flat;
    let text = if text.contains(['\n', '\r']) {
        flat = text.replace(['\n', '\r'], " ");
        flat.as_str()
    } else {
        text
    };
    let data: &serde_json::value::RawValue = serde_json::from_str(text).ok()?;
    let frame = protocol::message(message.key.as_str(), &message.id, data, message.from.as_ref());
    Utf8Bytes::try_from(frame).ok()
}

/// One client connection's membership in the hub. Dropping it removes
/// every subscription it holds.
pub struct Connection {
    hub: Arc<Hub>,
    shard: Arc<Shard>,
    id: ConnId,
    subscriptions: Vec<Pattern>,
    /// Who the connection is, for presence; `None`: anonymous.
    member: Option<Member>,
    /// For frames the connection sends itself (acks, errors), in order with
    /// deliveries.
    pub queue: outbox::Sender,
}

/// The writing side of a connection: what to send to the client, then
/// why it ended (the hub's notice that the client is too slow to keep
/// comes before anything still queued).
pub struct Outbound {
    pub frames: outbox::Receiver,
}

#[derive(Debug, PartialEq, Eq)]
pub enum SubscribeError {
    TooMany,
}

/// How long a subscribe waits for the broker to bind before answering
/// anyway (RabbitMQ down: the binding is applied when it is back).
const SETTLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl Connection {
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// Completes once the broker routes what this connection subscribed
    /// to here (at most [`SETTLE_TIMEOUT`]): a message published after the
    /// client hears `subscribed` must reach it, and a recovery asked after
    /// this cannot miss one that is not delivered live.
    pub fn settled(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let settled = self.hub.broker.settled();
        async move {
            let _ = tokio::time::timeout(SETTLE_TIMEOUT, settled).await;
        }
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
            reg.add(&pattern, Sub { conn: self.id, after: 0, watch: false });
        }
        self.hub.add_interest(&pattern);
        if let Some(key) = pattern.is_exact() {
            self.hub.present(&key, self.member.as_ref(), true);
        }
        self.subscriptions.push(pattern);
        Ok(true)
    }

    /// Unsubscribes; `false` when it was not subscribed.
    pub fn unsubscribe(&mut self, pattern: &Pattern) -> bool {
        let Some(pos) = self.subscriptions.iter().position(|p| p == pattern) else { return false };
        self.subscriptions.swap_remove(pos);
        self.shard.registry.lock().unwrap_or_else(|e| e.into_inner()).remove(self.id, pattern);
        if let Some(key) = pattern.is_exact() {
            self.hub.present(&key, self.member.as_ref(), false);
        }
        self.hub.remove_interest(pattern);
        true
    }

    /// Queues a frame of the connection's own (ack, error, pong). Returns
    /// `false` when the queue is full: the client is not reading.
    pub fn send(&self, frame: Bytes) -> bool {
        match Utf8Bytes::try_from(frame) {
            Ok(text) => self.queue.try_send(Frame::own(text)).is_ok(),
            Err(_) => true,
        }
    }
}

impl Outlet {
    /// Queues (or holds) a delivery; `false` when the client is too slow.
    fn offer(&mut self, delivery: &Delivery) -> bool {
        if let Some(held) = &mut self.held {
            if held.len() >= self.queue.capacity() {
                return false;
            }
            held.push(delivery.clone());
            return true;
        }
        self.push(delivery.frame.clone())
    }

    fn push(&self, frame: Outgoing) -> bool {
        match self.queue.try_send(frame) {
            Ok(()) => true,
            Err(outbox::Refused::Full) => false,
            // The connection is closing; it unregisters itself.
            Err(outbox::Refused::Closed) => true,
        }
    }
}

impl Registry {
    fn add(&mut self, pattern: &Pattern, sub: Sub) {
        match pattern.is_exact() {
            Some(key) => self.exact.entry(key).or_default().push(sub),
            None => self.patterns.push((pattern.clone(), sub)),
        }
    }

    fn remove(&mut self, id: ConnId, pattern: &Pattern) {
        match pattern.is_exact() {
            Some(key) => {
                if let Some(subs) = self.exact.get_mut(&key) {
                    subs.retain(|s| s.conn != id);
                    if subs.is_empty() {
                        self.exact.remove(&key);
                    }
                }
            }
            None => self.patterns.retain(|(p, s)| !(s.conn == id && p == pattern)),
        }
    }

    /// Takes a slow consumer out of the fan-out at once and tells it to
    /// close; its subscriptions go when the connection drops.
    fn kick(&mut self, id: ConnId) {
        if let Some(outlet) = self.outlets.remove(&id) {
            outlet.queue.kick(Kick::SlowConsumer);
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
            if let Some(key) = pattern.is_exact() {
                self.hub.present(&key, self.member.as_ref(), false);
            }
            self.hub.remove_interest(pattern);
        }
    }
}

pub mod outbox;
pub mod presence;
pub mod resume;
#[cfg(test)]
mod tests;
