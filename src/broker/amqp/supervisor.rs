//! The task that owns the AMQP connection.
//!
//! It connects, declares the exchange and this node's queue, binds every
//! pattern the hub wants, consumes, and puts a confirm-mode channel where
//! publishes find it; then it applies bind and unbind commands in order
//! and forwards deliveries to the hub. When anything on the connection
//! fails (an error event, the consumer stream ending, a publish that
//! could not be sent, a bind refused), it marks the broker not ready,
//! waits with jittered exponential backoff, and starts over.
//!
//! The queue is the same one across reconnects (durable, `x-expires`),
//! so what was routed to it in the gap waits there, and deliveries are
//! acked only after they went to the hub: a delivery the hub got but
//! RabbitMQ never heard acked comes again on the next connection, and is
//! dropped here by its message id ([`Recent`]). Acks go in batches, one
//! `multiple` ack for whatever deliveries had already arrived together.
//! The supervisor remembers the bound patterns itself and binds them again
//! on each connection (binding is idempotent; the queue may be new after a
//! RabbitMQ that lost it, or after `x-expires`), and unbinds what was
//! unbound while disconnected. Presence bindings are remembered and
//! restored the same way, on the presence exchange; announcements made
//! while disconnected are dropped (the next heartbeat repeats them).

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{FutureExt, Stream, StreamExt};
use lapin::message::Delivery;
use lapin::options::BasicPublishOptions;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer, Event, ExchangeKind};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Command, Shared, message, presence_exchange};
use crate::broker::Deliveries;
use crate::live::key::Key;

/// Why a session ended and the connection is to be rebuilt.
#[derive(Debug, thiserror::Error)]
enum Lost {
    #[error(transparent)]
    Amqp(#[from] lapin::Error),
    #[error("connect timed out")]
    ConnectTimeout,
    #[error("{0}")]
    Ended(&'static str),
}

/// How a session ended without losing the connection.
enum Stop {
    /// `close()`, or the broker handle was dropped.
    Shutdown,
}

/// One connection and what was built on it.
struct Session {
    connection: Connection,
    /// Declares, binds and consumes; the publishing channel is separate
    /// because confirm mode applies to a whole channel.
    channel: Channel,
    /// The confirm-mode channel publishes use (also in `Shared`).
    publisher: Channel,
    consumer: Consumer,
    events: std::pin::Pin<Box<dyn Stream<Item = Event> + Send>>,
}

pub(super) struct Supervisor {
    shared: Arc<Shared>,
    commands: mpsc::UnboundedReceiver<Command>,
    deliveries: Deliveries,
    /// Where other nodes' presence announcements go.
    announced: mpsc::UnboundedSender<(Key, bytes::Bytes)>,
    shutdown: CancellationToken,
    /// Patterns bound now, or to bind on the next connection.
    bound: BTreeSet<String>,
    /// Keys bound on the presence exchange, likewise.
    presence: BTreeSet<String>,
    /// Patterns, and presence keys, unbound while disconnected: the queue
    /// outlives the connection, so their bindings are still there.
    stale: BTreeSet<String>,
    stale_presence: BTreeSet<String>,
    /// Ids recently passed to the hub, to drop redeliveries.
    recent: Recent,
}

/// The ids of the last `cap` messages passed to the hub. A redelivery is
/// of a message delivered but not acked (at most `prefetch` of them) or
/// whose ack was lost with the connection (at most `prefetch` more), so
/// twice the prefetch recognises every one.
struct Recent {
    order: VecDeque<Arc<str>>,
    ids: HashSet<Arc<str>>,
    cap: usize,
}

impl Recent {
    fn new(cap: usize) -> Recent {
        Recent { order: VecDeque::with_capacity(cap), ids: HashSet::with_capacity(cap), cap }
    }

    /// Remembers `id`; `false` when it was passed on already.
    fn first(&mut self, id: &Arc<str>) -> bool {
        if self.ids.contains(id) {
            return false;
        }
        if self.order.len() >= self.cap
            && let Some(old) = self.order.pop_front()
        {
            self.ids.remove(&old);
        }
        self.order.push_back(id.clone());
        self.ids.insert(id.clone());
        true
    }
}

impl Supervisor {
    pub(super) fn new(
        shared: Arc<Shared>,
        commands: mpsc::UnboundedReceiver<Command>,
        deliveries: Deliveries,
        announced: mpsc::UnboundedSender<(Key, bytes::Bytes)>,
        shutdown: CancellationToken,
    ) -> Supervisor {
        let recent = Recent::new(2 * usize::from(shared.config.prefetch));
        Supervisor {
            shared,
            commands,
            deliveries,
            announced,
            shutdown,
            bound: BTreeSet::new(),
            presence: BTreeSet::new(),
            stale: BTreeSet::new(),
            stale_presence: BTreeSet::new(),
            recent,
        }
    }

    pub(super) async fn run(mut self) {
        let config = &self.shared.config;
        let (min, max) = (config.reconnect_min, config.reconnect_max);
        let mut delay = min;
        let mut connected_before = false;
        loop {
            let attempt = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                attempt = self.open() => attempt,
            };
            let lost = match attempt {
                Ok(mut session) => {
                    let up = Instant::now();
                    let queue = self.shared.queue.clone();
                    self.stale.clear();
                    self.stale_presence.clear();
                    tracing::info!(queue, bindings = self.bound.len(), "connected to RabbitMQ");
                    if std::mem::replace(&mut connected_before, true) {
                        self.shared.reconnects.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    self.shared.ready.send_replace(true);
                    let ended = self.serve(&mut session).await;
                    self.shared.ready.send_replace(false);
                    self.shared.set_publisher(None);
                    // A connection that stayed up a while was healthy: the
                    // next failure starts the backoff afresh.
                    if up.elapsed() >= max {
                        delay = min;
                    }
                    match ended {
                        Err(lost) => {
                            // Best effort: the connection may be half alive.
                            let _ = tokio::time::timeout(
                                self.shared.config.connect_timeout,
                                session.connection.close(200, "olive reconnects".into()),
                            )
                            .await;
                            lost
                        }
                        Ok(Stop::Shutdown) => {
                            // The node is going for good: its queue with it
                            // (x-expires would take it later otherwise).
                            let _ = tokio::time::timeout(
                                self.shared.config.connect_timeout,
                                session
                                    .channel
                                    .queue_delete(queue.as_str().into(), QueueDeleteOptions::default()),
                            )
                            .await;
                            let closed = tokio::time::timeout(
                                self.shared.config.connect_timeout,
                                session.connection.close(200, "olive shutting down".into()),
                            )
                            .await;
                            tracing::info!(
                                queue,
                                clean = matches!(closed, Ok(Ok(()))),
                                "closed the RabbitMQ connection"
                            );
                            return;
                        }
                    }
                }
                Err(lost) => lost,
            };
            let wait = jittered(delay);
            tracing::warn!(error = %lost, retry_in = ?wait, "RabbitMQ connection lost");
            delay = (delay * 2).min(max);
            if self.wait(wait).await.is_err() {
                return;
            }
        }
    }

    /// Connects and builds the topology, with the current bindings.
    async fn open(&self) -> Result<Session, Lost> {
        let config = &self.shared.config;
        let properties =
            ConnectionProperties::default().with_connection_name(config.connection_name.as_str().into());
        let connection =
            tokio::time::timeout(config.connect_timeout, Connection::connect(&config.url, properties))
                .await
                .map_err(|_| Lost::ConnectTimeout)??;
        match self.build(connection).await {
            Ok(session) => Ok(session),
            Err((connection, e)) => {
                let _ = tokio::time::timeout(
                    config.connect_timeout,
                    connection.close(200, "setup failed".into()),
                )
                .await;
                Err(e)
            }
        }
    }

    async fn build(&self, connection: Connection) -> Result<Session, (Connection, Lost)> {
        match self.topology(&connection).await {
            Ok((channel, consumer, publisher)) => {
                self.shared.set_publisher(Some(publisher.clone()));
                let events = Box::pin(connection.events_listener());
                Ok(Session { connection, channel, publisher, consumer, events })
            }
            Err(e) => Err((connection, e.into())),
        }
    }

    async fn topology(&self, connection: &Connection) -> Result<(Channel, Consumer, Channel), lapin::Error> {
        let config = &self.shared.config;
        let exchange = config.exchange.as_str();
        let channel = connection.create_channel().await?;
        let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
        channel
            .exchange_declare(exchange.into(), ExchangeKind::Topic, durable, FieldTable::default())
            .await?;
        // The node's own queue, the same across reconnects: durable and
        // not exclusive, so that it outlives the connection (and a RabbitMQ
        // restart) with what was routed to it meanwhile; x-expires deletes
        // it once no node has consumed from it for queue_expires.
        let queue = self.shared.queue.as_str();
        let options = QueueDeclareOptions { durable: true, ..Default::default() };
        let mut arguments = FieldTable::default();
        let expires = i64::try_from(config.queue_expires.as_millis()).unwrap_or(i64::MAX);
        arguments.insert("x-expires".into(), AMQPValue::LongLongInt(expires));
        channel.queue_declare(queue.into(), options, arguments).await?;
        for pattern in &self.stale {
            unbind(&channel, queue, exchange, pattern).await?;
        }
        for pattern in &self.bound {
            bind(&channel, queue, exchange, pattern).await?;
        }
        // Not durable: announcements only matter live, and every node
        // declares it the same way after a RabbitMQ restart.
        let presence = presence_exchange(exchange);
        channel
            .exchange_declare(
                presence.as_str().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions::default(),
                FieldTable::default(),
            )
            .await?;
        for key in &self.stale_presence {
            unbind(&channel, queue, &presence, key).await?;
        }
        for key in &self.presence {
            bind(&channel, queue, &presence, key).await?;
        }
        // Manual acks (`serve`), at most `prefetch` unacked at a time. An
        // exclusive consumer: a consumer of the previous connection that
        // RabbitMQ has not yet noticed is gone would take messages out of
        // order; until it goes, this is refused and retried.
        channel.basic_qos(config.prefetch, BasicQosOptions::default()).await?;
        let consume = BasicConsumeOptions { exclusive: true, ..Default::default() };
        let consumer =
            channel.basic_consume(queue.into(), "olive".into(), consume, FieldTable::default()).await?;
        let publisher = connection.create_channel().await?;
        publisher.confirm_select(ConfirmSelectOptions::default()).await?;
        Ok((channel, consumer, publisher))
    }

    /// Serves one connection until it is lost or olive shuts down.
    async fn serve(&mut self, session: &mut Session) -> Result<Stop, Lost> {
        let Session { channel, publisher, consumer, events, .. } = session;
        let queue = self.shared.queue.clone();
        let queue = &queue;
        let exchange = self.shared.config.exchange.clone();
        let presence = presence_exchange(&exchange);
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return Ok(Stop::Shutdown),
                command = self.commands.recv() => match command {
                    None => return Ok(Stop::Shutdown),
                    Some(Command::Bind(p)) => {
                        if self.bound.insert(p.as_str().to_owned()) {
                            bind(channel, queue, &exchange, p.as_str()).await?;
                        }
                    }
                    Some(Command::Barrier(done)) => {
                        let _ = done.send(());
                    }
                    Some(Command::Unbind(p)) => {
                        if self.bound.remove(p.as_str()) {
                            // Stale until done: a failure leaves the
                            // binding to the next connection to remove.
                            self.stale.insert(p.as_str().to_owned());
                            unbind(channel, queue, &exchange, p.as_str()).await?;
                            self.stale.remove(p.as_str());
                        }
                    }
                    Some(Command::BindPresence(k)) => {
                        if self.presence.insert(k.as_str().to_owned()) {
                            bind(channel, queue, &presence, k.as_str()).await?;
                        }
                    }
                    Some(Command::UnbindPresence(k)) => {
                        if self.presence.remove(k.as_str()) {
                            self.stale_presence.insert(k.as_str().to_owned());
                            unbind(channel, queue, &presence, k.as_str()).await?;
                            self.stale_presence.remove(k.as_str());
                        }
                    }
                    Some(Command::Announce(k, body)) => {
                        let _unconfirmed = channel
                            .basic_publish(presence.as_str().into(), k.as_str().into(), BasicPublishOptions::default(), &body, BasicProperties::default())
                            .await?;
                    }
                },
                delivery = consumer.next() => {
                    let mut last = self.pass_on(delivery, &presence)?;
                    // What has already arrived goes in the same ack.
                    for _ in 1..self.shared.config.prefetch {
                        match consumer.next().now_or_never() {
                            Some(delivery) => last = self.pass_on(delivery, &presence)?,
                            None => break,
                        }
                    }
                    channel.basic_ack(last, BasicAckOptions { multiple: true }).await?;
                }
                event = events.next() => match event {
                    Some(Event::Error(e)) => return Err(e.into()),
                    // RabbitMQ blocks publishers under a memory or disk
                    // alarm: publishes would only time out, so say so.
                    Some(Event::ConnectionBlocked(reason)) => {
                        tracing::warn!(reason, "RabbitMQ blocked publishing");
                        self.shared.ready.send_replace(false);
                    }
                    Some(Event::ConnectionUnblocked) => {
                        self.shared.ready.send_replace(true);
                    }
                    Some(_) => {}
                    None => return Err(Lost::Ended("the connection's events ended")),
                },
                // A permit may be left from a publish on an earlier
                // connection's channel: only this one's state counts.
                _ = self.shared.lost.notified() => {
                    if !publisher.status().connected() {
                        return Err(Lost::Ended("the publishing channel closed"));
                    }
                }
            }
        }
    }

    /// Hands one delivery to the hub (or the presence task), unless it is
    /// a redelivery of one passed on before; returns its tag, to ack.
    fn pass_on(
        &mut self,
        delivery: Option<Result<Delivery, lapin::Error>>,
        presence: &str,
    ) -> Result<u64, Lost> {
        let d = match delivery {
            Some(Ok(d)) => d,
            Some(Err(e)) => return Err(e.into()),
            None => return Err(Lost::Ended("the consumer was cancelled")),
        };
        if d.exchange.as_str() == presence {
            if let Ok(key) = Key::parse(d.routing_key.as_str()) {
                let _ = self.announced.send((key, d.data.into()));
            }
        } else if let Some(m) = message(d.routing_key.as_str(), &d.properties, d.data) {
            if self.recent.first(&m.id) {
                // Fails only when the hub has stopped, during shutdown.
                let _ = self.deliveries.send(m);
            } else {
                tracing::debug!(id = %m.id, "dropped a redelivery the hub already has");
            }
        }
        Ok(d.delivery_tag)
    }

    /// Sleeps through a backoff, recording bind and unbind commands for
    /// the next connection. `Err` on shutdown.
    async fn wait(&mut self, duration: Duration) -> Result<(), Stop> {
        let sleep = tokio::time::sleep(duration);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => return Ok(()),
                _ = self.shutdown.cancelled() => return Err(Stop::Shutdown),
                command = self.commands.recv() => match command {
                    None => return Err(Stop::Shutdown),
                    Some(Command::Bind(p)) => {
                        self.stale.remove(p.as_str());
                        self.bound.insert(p.as_str().to_owned());
                    }
                    Some(Command::Unbind(p)) => {
                        if self.bound.remove(p.as_str()) {
                            self.stale.insert(p.as_str().to_owned());
                        }
                    }
                    Some(Command::BindPresence(k)) => {
                        self.stale_presence.remove(k.as_str());
                        self.presence.insert(k.as_str().to_owned());
                    }
                    Some(Command::UnbindPresence(k)) => {
                        if self.presence.remove(k.as_str()) {
                            self.stale_presence.insert(k.as_str().to_owned());
                        }
                    }
                    Some(Command::Announce(..)) => {}
                    // Disconnected: the bindings are applied on reconnect,
                    // and nothing is delivered before that anyway.
                    Some(Command::Barrier(done)) => { let _ = done.send(()); }
                },
            }
        }
    }
}

async fn bind(channel: &Channel, queue: &str, exchange: &str, pattern: &str) -> Result<(), lapin::Error> {
    channel
        .queue_bind(
            queue.into(),
            exchange.into(),
            pattern.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
}

async fn unbind(channel: &Channel, queue: &str, exchange: &str, pattern: &str) -> Result<(), lapin::Error> {
    channel.queue_unbind(queue.into(), exchange.into(), pattern.into(), FieldTable::default()).await
}

/// Between half and all of `delay`, so that nodes that lost RabbitMQ
/// together do not all come back in the same instant.
fn jittered(delay: Duration) -> Duration {
    delay.mul_f64(0.5 + fastrand::f64() * 0.5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_ids_are_recognised_until_they_fall_out() {
        let mut recent = Recent::new(3);
        let ids: Vec<Arc<str>> = ["a", "b", "c", "d"].into_iter().map(Arc::from).collect();
        assert!(recent.first(&ids[0]) && recent.first(&ids[1]) && recent.first(&ids[2]));
        assert!(!recent.first(&ids[0]), "a redelivery is dropped");
        assert!(recent.first(&ids[3]), "and a new id pushes the oldest out");
        assert!(recent.first(&ids[0]), "a is forgotten");
        assert_eq!((recent.order.len(), recent.ids.len()), (3, 3));
    }
}
