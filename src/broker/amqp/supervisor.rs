//! The task that owns the AMQP connection.
//!
//! It connects, declares the exchange and this node's queue, binds every
//! pattern the hub wants, consumes, and puts a confirm-mode channel where
//! publishes find it; then it applies bind and unbind commands in order
//! and forwards deliveries to the hub. When anything on the connection
//! fails (an error event, the consumer stream ending, a publish that
//! could not be sent, a bind refused), it marks the broker not ready,
//! waits with jittered exponential backoff, and starts over from an empty
//! queue. It remembers the bound patterns itself, so the new queue gets
//! the same bindings; messages published during the gap are lost to this
//! node, as a browser's resume from history covers. Presence bindings
//! are remembered and restored the same way, on the presence exchange;
//! announcements made while disconnected are dropped (the next heartbeat
//! repeats them).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{Stream, StreamExt};
use lapin::options::BasicPublishOptions;
use lapin::options::{
    BasicConsumeOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
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
    queue: String,
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
}

impl Supervisor {
    pub(super) fn new(
        shared: Arc<Shared>,
        commands: mpsc::UnboundedReceiver<Command>,
        deliveries: Deliveries,
        announced: mpsc::UnboundedSender<(Key, bytes::Bytes)>,
        shutdown: CancellationToken,
    ) -> Supervisor {
        let (bound, presence) = (BTreeSet::new(), BTreeSet::new());
        Supervisor { shared, commands, deliveries, announced, shutdown, bound, presence }
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
                    let queue = session.queue.clone();
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
            Ok((channel, queue, consumer, publisher)) => {
                self.shared.set_publisher(Some(publisher.clone()));
                let events = Box::pin(connection.events_listener());
                Ok(Session { connection, channel, publisher, queue, consumer, events })
            }
            Err(e) => Err((connection, e.into())),
        }
    }

    async fn topology(
        &self,
        connection: &Connection,
    ) -> Result<(Channel, String, Consumer, Channel), lapin::Error> {
        let config = &self.shared.config;
        let exchange = config.exchange.as_str();
        let channel = connection.create_channel().await?;
        let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
        channel
            .exchange_declare(exchange.into(), ExchangeKind::Topic, durable, FieldTable::default())
            .await?;
        // A fresh name per connection: the old exclusive queue may outlive
        // a dropped connection until RabbitMQ notices, and redeclaring its
        // name from a new connection would be refused (405).
        let queue = format!("{}.{:016x}", config.queue_prefix, fastrand::u64(..));
        let options = QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() };
        channel.queue_declare(queue.as_str().into(), options, FieldTable::default()).await?;
        for pattern in &self.bound {
            bind(&channel, &queue, exchange, pattern).await?;
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
        for key in &self.presence {
            bind(&channel, &queue, &presence, key).await?;
        }
        // Auto-ack: the queue is exclusive and dies with the connection, so
        // an unacked message has nowhere to be redelivered, and browsers
        // get at-most-once beyond the history anyway. RabbitMQ then pushes
        // without waiting on acks; prefetch does not apply.
        let consume = BasicConsumeOptions { no_ack: true, exclusive: true, ..Default::default() };
        let consumer = channel
            .basic_consume(queue.as_str().into(), "olive".into(), consume, FieldTable::default())
            .await?;
        let publisher = connection.create_channel().await?;
        publisher.confirm_select(ConfirmSelectOptions::default()).await?;
        Ok((channel, queue, consumer, publisher))
    }

    /// Serves one connection until it is lost or olive shuts down.
    async fn serve(&mut self, session: &mut Session) -> Result<Stop, Lost> {
        let Session { channel, publisher, queue, consumer, events, .. } = session;
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
                            channel
                                .queue_unbind(queue.as_str().into(), exchange.as_str().into(), p.as_str().into(), FieldTable::default())
                                .await?;
                        }
                    }
                    Some(Command::BindPresence(k)) => {
                        if self.presence.insert(k.as_str().to_owned()) {
                            bind(channel, queue, &presence, k.as_str()).await?;
                        }
                    }
                    Some(Command::UnbindPresence(k)) => {
                        if self.presence.remove(k.as_str()) {
                            channel
                                .queue_unbind(queue.as_str().into(), presence.as_str().into(), k.as_str().into(), FieldTable::default())
                                .await?;
                        }
                    }
                    Some(Command::Announce(k, body)) => {
                        let _unconfirmed = channel
                            .basic_publish(presence.as_str().into(), k.as_str().into(), BasicPublishOptions::default(), &body, BasicProperties::default())
                            .await?;
                    }
                },
                delivery = consumer.next() => match delivery {
                    Some(Ok(d)) if d.exchange.as_str() == presence => {
                        if let Ok(key) = Key::parse(d.routing_key.as_str()) {
                            let _ = self.announced.send((key, d.data.into()));
                        }
                    }
                    Some(Ok(d)) => {
                        if let Some(m) = message(d.routing_key.as_str(), &d.properties, d.data) {
                            // Fails only when the hub has stopped, during shutdown.
                            let _ = self.deliveries.send(m);
                        }
                    }
                    Some(Err(e)) => return Err(e.into()),
                    None => return Err(Lost::Ended("the consumer was cancelled")),
                },
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
                    Some(Command::Bind(p)) => { self.bound.insert(p.as_str().to_owned()); }
                    Some(Command::Unbind(p)) => { self.bound.remove(p.as_str()); }
                    Some(Command::BindPresence(k)) => { self.presence.insert(k.as_str().to_owned()); }
                    Some(Command::UnbindPresence(k)) => { self.presence.remove(k.as_str()); }
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

/// Between half and all of `delay`, so that nodes that lost RabbitMQ
/// together do not all come back in the same instant.
fn jittered(delay: Duration) -> Duration {
    delay.mul_f64(0.5 + fastrand::f64() * 0.5)
}
