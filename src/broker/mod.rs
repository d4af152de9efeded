//! Brokers: how a message published on one olive node reaches the nodes
//! whose clients want it.
//!
//! One small trait with two implementations: [`memory`] (the default, one
//! process) and `amqp` (RabbitMQ, several nodes). A broker publishes
//! (resolving only once the message is safe: for AMQP, after the
//! publisher confirm), binds and unbinds the patterns local clients are
//! interested in (the hub counts references and calls `bind` for the first
//! and `unbind` after the last), and hands every delivery to the hub
//! through the channel it was built with. Deliveries always come through
//! that one channel, so a node sees its own publishes in the same order as
//! every other node.
//!
//! Presence travels beside messages, never mixed with them: a node
//! announces its side of a key with [`Broker::announce`] (best effort, no
//! confirm: heartbeats repair losses), binds the keys it has members on
//! with [`Broker::bind_presence`], and the hub takes the other nodes'
//! announcements from [`Broker::take_announcements`]. The defaults do
//! nothing, which is right for one process.

pub mod amqp;
pub mod memory;

use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use tokio::sync::watch;

use crate::live::key::{Key, Pattern};
use crate::live::protocol::From;

/// A message as it travels between nodes.
#[derive(Debug, Clone)]
pub struct Message {
    pub key: Key,
    /// The message id: olive's own (time-ordered) or what an outside
    /// AMQP publisher put in `message_id`.
    pub id: Arc<str>,
    /// The JSON `data`, as text (validated when it entered olive).
    pub data: Bytes,
    /// The user who published through olive, if one did.
    pub from: Option<From>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerError {
    /// Not connected, or the broker refused the message: the publisher is
    /// told `unavailable`, never silently dropped.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
}

/// Where a broker sends what it receives. Unbounded on purpose: the hub's
/// delivery task only moves each message to per-worker queues, and every
/// client-facing queue after that is bounded.
pub type Deliveries = tokio::sync::mpsc::UnboundedSender<Message>;

/// Presence announcements from other nodes: the key and the JSON body.
pub type Announcements = tokio::sync::mpsc::UnboundedReceiver<(Key, Bytes)>;

pub trait Broker: Send + Sync {
    /// Publishes; resolves when the broker has taken responsibility for
    /// the message.
    fn publish(&self, message: Message) -> BoxFuture<'static, Result<(), BrokerError>>;

    /// Starts receiving messages whose key matches `pattern`.
    fn bind(&self, pattern: &Pattern);

    /// Stops receiving messages for `pattern` (bound before).
    fn unbind(&self, pattern: &Pattern);

    /// `true` while connected and able to publish (for `/readyz`).
    fn ready(&self) -> watch::Receiver<bool>;

    /// Closes connections cleanly; called once, at the end of the drain.
    fn close(&self) -> BoxFuture<'_, ()>;

    /// Tells the other nodes about this node's presence on `key`.
    fn announce(&self, _key: &Key, _body: Bytes) {}

    /// Starts receiving other nodes' presence announcements on `key`.
    fn bind_presence(&self, _key: &Key) {}

    /// Stops receiving presence announcements on `key`.
    fn unbind_presence(&self, _key: &Key) {}

    /// The other nodes' announcements, once (the hub's presence task takes
    /// them); `None` when there are no other nodes.
    fn take_announcements(&self) -> Option<Announcements> {
        None
    }

    /// Resolves once every `bind` and `unbind` asked for before it has
    /// taken effect, so that a client told `subscribed` gets every message
    /// published after that. Immediate where binding is (memory).
    fn settled(&self) -> BoxFuture<'static, ()> {
        Box::pin(std::future::ready(()))
    }

    /// Connections re-established after a loss (for metrics); a broker
    /// that never disconnects has none.
    fn reconnects(&self) -> u64 {
        0
    }
}
