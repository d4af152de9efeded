//! The RabbitMQ broker, for olive on several machines.
//!
//! Topology (see `DESIGN.md`, "AMQP topology"): one durable topic exchange
//! shared with Django and any other AMQP client; per olive node one queue,
//! `{queue_prefix}.{node id}` (the id random per start), bound to exactly
//! the keys and patterns the node's clients want. Routing key = object
//! key, body = the JSON data, `message_id` = the message id,
//! `content_type` = `application/json`, `delivery_mode` = 2 (persistent),
//! and the headers `olive-user` / `olive-name` name the user olive
//! published for.
//!
//! Nothing acked is lost to a node that stays up (docs/PROTOCOL.md,
//! "Between nodes"): the node's queue is durable, neither exclusive nor
//! auto-deleted, so it and its bindings outlive a lost connection and a
//! RabbitMQ restart, and collect what is routed while the node reconnects;
//! `x-expires` (`live.amqp.queue_expires`) removes the queue of a node
//! that died, and a node that stops cleanly deletes its own. Deliveries
//! are acked (in batches, `multiple`) once the hub has them, so what was
//! in flight when a connection dropped comes again, and the node drops
//! the redeliveries it already passed on, by message id.
//!
//! This module owns the handle the hub sees ([`AmqpBroker`]) and the
//! translation between [`Message`] and AMQP; the connection itself belongs
//! to the [`supervisor`] task, which reconnects with backoff and restores
//! the topology after any loss. `bind` and `unbind` are synchronous in the
//! trait, so they are commands sent to that task, which applies them in
//! order. Publishes go straight to the current publishing channel (in
//! confirm mode) and resolve only on RabbitMQ's ack: a nack, a timeout or
//! a lost connection is [`BrokerError::Unavailable`], never a silent drop.
//!
//! Presence has an exchange of its own, `{exchange}.presence` (topic, not
//! durable: announcements are only worth anything live), with the object
//! key as routing key and an announcement's JSON as body. A separate
//! exchange rather than a reserved prefix under the main one keeps
//! presence out of every pattern binding (`#` and `olive.#` would
//! otherwise receive it, in olive and in Django's consumers alike) and
//! cannot collide with any site's key prefix. The node's one queue is
//! bound there too, to the exact keys it has members on.

mod supervisor;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{Announcements, Broker, BrokerError, Deliveries, Message};
use crate::config::Amqp;
use crate::live::id::MessageId;
use crate::live::key::{Key, Pattern};
use crate::live::protocol::From as Publisher;

/// Header naming the olive user a message was published for.
pub const HEADER_USER: &str = "olive-user";
/// Header with that user's display name, when they have one.
pub const HEADER_NAME: &str = "olive-name";
const CONTENT_TYPE: &str = "application/json";
/// AMQP `delivery_mode` of a message RabbitMQ keeps on disk.
const PERSISTENT: u8 = 2;

/// A change of interest, applied by the supervisor in the order sent.
#[derive(Debug)]
enum Command {
    Bind(Pattern),
    Unbind(Pattern),
    BindPresence(Key),
    UnbindPresence(Key),
    /// Published in order with the presence bindings, on the
    /// supervisor's channel, unconfirmed; dropped while disconnected.
    Announce(Key, Bytes),
    /// Answered once every command before it has been carried out
    /// (`Broker::settled`).
    Barrier(tokio::sync::oneshot::Sender<()>),
}

/// The exchange presence announcements travel on, beside `exchange`.
fn presence_exchange(exchange: &str) -> String {
    format!("{exchange}.presence")
}

/// What the handle and the supervisor share.
struct Shared {
    config: Amqp,
    /// This node's queue, `{queue_prefix}.{node id}`: the same name across
    /// reconnects, so that the queue keeps what arrives meanwhile.
    queue: String,
    /// The confirm-mode channel of the live connection; `None` while
    /// disconnected. A std mutex: held only to clone or swap a handle.
    publisher: Mutex<Option<Channel>>,
    ready: watch::Sender<bool>,
    /// A publish that failed on the channel itself tells the supervisor,
    /// which reconnects: a closed channel does not heal by itself.
    lost: Notify,
    /// Connections made after a loss ([`Broker::reconnects`]).
    reconnects: AtomicU64,
}

impl Shared {
    fn set_publisher(&self, channel: Option<Channel>) {
        *self.publisher.lock().unwrap_or_else(PoisonError::into_inner) = channel;
    }
}

/// The RabbitMQ broker. Build it with [`AmqpBroker::start`]; use it as
/// `Arc<dyn Broker>`; [`AmqpBroker::close`] it before the runtime stops.
pub struct AmqpBroker {
    shared: Arc<Shared>,
    commands: mpsc::UnboundedSender<Command>,
    shutdown: CancellationToken,
    task: Mutex<Option<JoinHandle<()>>>,
    /// Other nodes' presence announcements, until the hub takes them.
    announcements: Mutex<Option<Announcements>>,
}

impl AmqpBroker {
    /// Starts the supervisor task, which connects in the background:
    /// [`Broker::ready`] turns true once the exchange, the queue and the
    /// consumer are in place. Every delivery goes to `deliveries`. Must be
    /// called within a tokio runtime.
    pub fn start(config: Amqp, deliveries: Deliveries) -> Arc<AmqpBroker> {
        let queue = format!("{}.{:016x}", config.queue_prefix, fastrand::u64(..));
        let shared = Arc::new(Shared {
            config,
            queue,
            publisher: Mutex::new(None),
            ready: watch::Sender::new(false),
            lost: Notify::new(),
            reconnects: AtomicU64::new(0),
        });
        let (commands, receiver) = mpsc::unbounded_channel();
        let (announced, announcements) = mpsc::unbounded_channel();
        let shutdown = CancellationToken::new();
        let supervisor =
            supervisor::Supervisor::new(shared.clone(), receiver, deliveries, announced, shutdown.clone());
        let task = tokio::spawn(supervisor.run());
        Arc::new(AmqpBroker {
            shared,
            commands,
            shutdown,
            task: Mutex::new(Some(task)),
            announcements: Mutex::new(Some(announcements)),
        })
    }

    /// Deletes the node's queue, closes the AMQP connection cleanly and
    /// waits for the supervisor to finish.
    /// Publishes after this get `unavailable`. Call it before the runtime
    /// drops: a connection dropped with the runtime is only noticed by
    /// RabbitMQ at the next missed heartbeat.
    pub async fn close(&self) {
        self.shutdown.cancel();
        let task = self.task.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

impl Drop for AmqpBroker {
    /// Without a `close`, the supervisor still closes the connection on
    /// its own, as long as the runtime lives.
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Broker for AmqpBroker {
    fn publish(&self, message: Message) -> BoxFuture<'static, Result<(), BrokerError>> {
        let channel = if *self.shared.ready.borrow() {
            self.shared.publisher.lock().unwrap_or_else(PoisonError::into_inner).clone()
        } else {
            None
        };
        let shared = self.shared.clone();
        Box::pin(async move {
            let channel = channel.ok_or_else(|| unavailable("not connected to RabbitMQ"))?;
            let timeout = shared.config.confirm_timeout;
            match tokio::time::timeout(timeout, publish(&shared, &channel, &message)).await {
                Ok(result) => result,
                Err(_) => Err(unavailable(format!("no confirm from RabbitMQ within {timeout:?}"))),
            }
        })
    }

    fn bind(&self, pattern: &Pattern) {
        // Fails only once the supervisor has stopped (after `close`), when
        // there is nothing left to bind.
        let _ = self.commands.send(Command::Bind(pattern.clone()));
    }

    fn unbind(&self, pattern: &Pattern) {
        let _ = self.commands.send(Command::Unbind(pattern.clone()));
    }

    fn ready(&self) -> watch::Receiver<bool> {
        self.shared.ready.subscribe()
    }

    fn settled(&self) -> BoxFuture<'static, ()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let sent = self.commands.send(Command::Barrier(tx)).is_ok();
        Box::pin(async move {
            if sent {
                let _ = rx.await;
            }
        })
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(AmqpBroker::close(self))
    }

    fn reconnects(&self) -> u64 {
        self.shared.reconnects.load(Ordering::Relaxed)
    }

    fn announce(&self, key: &Key, body: Bytes) {
        let _ = self.commands.send(Command::Announce(key.clone(), body));
    }

    fn bind_presence(&self, key: &Key) {
        let _ = self.commands.send(Command::BindPresence(key.clone()));
    }

    fn unbind_presence(&self, key: &Key) {
        let _ = self.commands.send(Command::UnbindPresence(key.clone()));
    }

    fn take_announcements(&self) -> Option<Announcements> {
        self.announcements.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

fn unavailable(why: impl Into<String>) -> BrokerError {
    BrokerError::Unavailable(why.into())
}

/// One publish, resolved by RabbitMQ's confirm.
async fn publish(shared: &Shared, channel: &Channel, message: &Message) -> Result<(), BrokerError> {
    let properties = properties(message)?;
    let confirm = channel
        .basic_publish(
            shared.config.exchange.as_str().into(),
            message.key.as_str().into(),
            BasicPublishOptions::default(),
            &message.data,
            properties,
        )
        .await
        .map_err(|e| {
            shared.lost.notify_one();
            unavailable(format!("publish failed: {e}"))
        })?;
    match confirm.await {
        Ok(Confirmation::Ack(_)) => Ok(()),
        Ok(Confirmation::Nack(_)) => Err(unavailable("RabbitMQ refused the message (nack)")),
        // The channel is put in confirm mode before it is handed out.
        Ok(Confirmation::NotRequested) => Err(unavailable("the channel is not in confirm mode")),
        Err(e) => Err(unavailable(format!("no confirm: {e}"))),
    }
}

/// The AMQP properties that carry a message's id and sender.
fn properties(message: &Message) -> Result<BasicProperties, BrokerError> {
    // Callers set the id (`MessageId::new()`) so that they can ack with it;
    // an empty one still leaves olive with an id.
    let id = if message.id.is_empty() { MessageId::new().to_string() } else { message.id.to_string() };
    let id = ShortString::try_new(id).map_err(|_| unavailable("message id longer than 255 bytes"))?;
    // Persistent: a message in a node's (durable) queue survives a
    // RabbitMQ restart.
    let mut properties = BasicProperties::default()
        .with_content_type(CONTENT_TYPE.into())
        .with_message_id(id)
        .with_delivery_mode(PERSISTENT);
    if let Some(from) = &message.from {
        let mut headers = FieldTable::default();
        headers.insert(HEADER_USER.into(), AMQPValue::LongString(from.user.as_str().into()));
        if let Some(name) = &from.name {
            headers.insert(HEADER_NAME.into(), AMQPValue::LongString(name.as_str().into()));
        }
        properties = properties.with_headers(headers);
    }
    Ok(properties)
}

/// A delivery as a [`Message`], or `None` when its routing key is not an
/// object key (an outside publisher's mistake; logged).
fn message(routing_key: &str, properties: &BasicProperties, data: Vec<u8>) -> Option<Message> {
    let key = match Key::parse(routing_key) {
        Ok(key) => key,
        Err(e) => {
            tracing::warn!(routing_key, error = %e, "dropped an AMQP message whose routing key is not a key");
            return None;
        }
    };
    let id: Arc<str> = match properties.message_id() {
        Some(id) if !id.as_str().is_empty() => id.as_str().into(),
        _ => MessageId::new().to_string().into(),
    };
    let headers = properties.headers().as_ref();
    let text = |name: &str| headers.and_then(|h| h.inner().get(name)).and_then(header_text);
    let from = text(HEADER_USER).map(|user| Publisher { user, name: text(HEADER_NAME) });
    Some(Message { key, id, data: Bytes::from(data), from })
}

/// A header's text: olive sends long strings, other clients may send
/// short ones.
fn header_text(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(s) => String::from_utf8(s.as_bytes().to_vec()).ok(),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(from: Option<Publisher>) -> Message {
        Message {
            key: Key::parse("olive.notes.note.1").unwrap(),
            id: "".into(),
            data: "{\"a\":1}".into(),
            from,
        }
    }

    #[test]
    fn properties_round_trip() {
        let from = Publisher { user: "17".into(), name: Some("Ada".into()) };
        let mut sent = sample(Some(from));
        sent.id = MessageId::new().to_string().into();
        let props = properties(&sent).unwrap();
        assert_eq!(props.content_type().as_ref().map(|c| c.as_str()), Some(CONTENT_TYPE));
        assert_eq!(props.delivery_mode(), &Some(PERSISTENT));
        let got = message("olive.notes.note.1", &props, sent.data.to_vec()).unwrap();
        assert_eq!(got.id, sent.id);
        assert_eq!(got.data, sent.data);
        let from = got.from.unwrap();
        assert_eq!((from.user.as_str(), from.name.as_deref()), ("17", Some("Ada")));
    }

    #[test]
    fn ids_are_assigned_when_missing() {
        let props = properties(&sample(None)).unwrap();
        let id = props.message_id().as_ref().unwrap().as_str().to_owned();
        assert!(MessageId::parse(&id).is_ok(), "{id}");
        assert!(props.headers().is_none(), "no sender, no headers");
        let got = message("olive.a.b.1", &BasicProperties::default(), b"1".to_vec()).unwrap();
        assert!(MessageId::parse(&got.id).is_ok());
        assert!(got.from.is_none());
    }

    #[test]
    fn short_string_headers_and_bad_keys() {
        let mut headers = FieldTable::default();
        headers.insert(HEADER_USER.into(), AMQPValue::ShortString("bob".into()));
        let props = BasicProperties::default().with_headers(headers).with_message_id("m-1".into());
        let got = message("olive.a.b.1", &props, b"1".to_vec()).unwrap();
        assert_eq!(&*got.id, "m-1");
        assert_eq!(got.from.map(|f| f.user), Some("bob".into()));
        assert!(message("olive.a.*.1", &props, b"1".to_vec()).is_none());
        assert!(message("", &props, b"1".to_vec()).is_none());
    }
}
