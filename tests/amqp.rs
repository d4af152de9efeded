//! The AMQP broker against the real RabbitMQ on 127.0.0.1:5672.
//!
//! Each test uses an exchange of its own (and deletes it at the end), so
//! tests run in parallel without seeing each other's messages. With
//! `CI=true` an unreachable RabbitMQ fails the tests; elsewhere they skip
//! with a line on stderr.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::rabbit;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeleteOptions};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use olive::broker::amqp::AmqpBroker;
use olive::broker::{Broker, BrokerError, Message};
use olive::config::Amqp;
use olive::live::id::MessageId;
use olive::live::key::{Key, Pattern};
use olive::live::protocol::From as Publisher;
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Settings for a test: its own exchange, quick reconnects.
fn config(test: &str) -> Amqp {
    let mut config = Amqp::new(URL);
    config.exchange = format!("olive.test.{test}.{:08x}", fastrand::u32(..));
    config.connection_name = format!("{}.{:08x}", config.exchange, fastrand::u32(..));
    config.reconnect_min = Duration::from_millis(500);
    config.reconnect_max = Duration::from_secs(2);
    config
}

async fn node(config: Amqp) -> (Arc<AmqpBroker>, UnboundedReceiver<Message>) {
    let (tx, rx) = unbounded_channel();
    let broker = AmqpBroker::start(config, tx);
    wait_ready(&broker, true).await;
    (broker, rx)
}

async fn wait_ready(broker: &AmqpBroker, want: bool) {
    let mut ready = broker.ready();
    tokio::time::timeout(Duration::from_secs(10), ready.wait_for(|r| *r == want))
        .await
        .unwrap_or_else(|_| panic!("ready did not become {want} within 10s"))
        .unwrap();
}

fn message(key: &str, data: &str, from: Option<Publisher>) -> Message {
    Message {
        key: Key::parse(key).unwrap(),
        id: MessageId::new().to_string().into(),
        data: data.to_owned().into(),
        from,
    }
}

fn pattern(text: &str) -> Pattern {
    Pattern::parse(text).unwrap()
}

async fn recv(rx: &mut UnboundedReceiver<Message>, within: Duration) -> Option<Message> {
    tokio::time::timeout(within, rx.recv()).await.ok().flatten()
}

/// Binding is asynchronous: publishes probes on `key` through `publisher`
/// until one reaches `rx`, so that later messages find the binding.
async fn until_routed(publisher: &AmqpBroker, rx: &mut UnboundedReceiver<Message>, key: &str) {
    for _ in 0..50 {
        let probe = message(key, "\"probe\"", None);
        publisher.publish(probe.clone()).await.unwrap();
        while let Some(got) = recv(rx, Duration::from_millis(200)).await {
            if got.id == probe.id {
                return;
            }
        }
    }
    panic!("{key} was never routed");
}

async fn delete_exchange(exchange: &str) {
    let connection = Connection::connect(URL, ConnectionProperties::default()).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel.exchange_delete(exchange.into(), ExchangeDeleteOptions::default()).await.unwrap();
    connection.close(200, "done".into()).await.unwrap();
}

#[tokio::test]
async fn a_publish_on_one_node_reaches_the_other() {
    if !rabbit() {
        return;
    }
    let config = config("two-nodes");
    let exchange = config.exchange.clone();
    let (a, _a_rx) = node(config.clone()).await;
    let (b, mut b_rx) = node(config).await;
    b.bind(&pattern("olive.notes.#"));
    until_routed(&a, &mut b_rx, "olive.notes.probe").await;

    let from = Publisher { user: "17".into(), name: Some("Ada Lovelace".into()) };
    let sent = message("olive.notes.note.1", r#"{"text":"hello"}"#, Some(from));
    a.publish(sent.clone()).await.unwrap();
    let got = recv(&mut b_rx, Duration::from_secs(5)).await.expect("delivered to B");
    assert_eq!(got.key, sent.key);
    assert_eq!(got.id, sent.id);
    assert_eq!(got.data, sent.data);
    let from = got.from.expect("from travels in headers");
    assert_eq!((from.user.as_str(), from.name.as_deref()), ("17", Some("Ada Lovelace")));

    a.close().await;
    b.close().await;
    assert!(matches!(a.publish(sent).await, Err(BrokerError::Unavailable(_))), "closed: unavailable");
    delete_exchange(&exchange).await;
}

#[tokio::test]
async fn an_outside_publisher_needs_no_olive() {
    if !rabbit() {
        return;
    }
    let config = config("outside");
    let exchange = config.exchange.clone();
    let (b, mut b_rx) = node(config).await;
    b.bind(&pattern("olive.notes.*.2"));
    until_routed(&b, &mut b_rx, "olive.notes.note.2").await;

    // Django's side: a plain AMQP client.
    let connection = Connection::connect(URL, ConnectionProperties::default()).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    for message_id in [Some("django-42"), None] {
        let mut properties = BasicProperties::default().with_content_type("application/json".into());
        if let Some(id) = message_id {
            properties = properties.with_message_id(id.into());
        }
        let confirm = channel
            .basic_publish(
                exchange.as_str().into(),
                "olive.notes.note.2".into(),
                BasicPublishOptions::default(),
                br#"{"comment":"from django"}"#,
                properties,
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(confirm.is_ack());
        let got = recv(&mut b_rx, Duration::from_secs(5)).await.expect("delivered");
        assert_eq!(got.key.as_str(), "olive.notes.note.2");
        assert_eq!(&got.data[..], br#"{"comment":"from django"}"#);
        assert!(got.from.is_none());
        match message_id {
            Some(id) => assert_eq!(&*got.id, id, "the publisher's id is kept"),
            None => assert!(MessageId::parse(&got.id).is_ok(), "olive assigned an id: {}", got.id),
        }
    }
    connection.close(200, "done".into()).await.unwrap();
    b.close().await;
    delete_exchange(&exchange).await;
}

#[tokio::test]
async fn unbind_stops_deliveries() {
    if !rabbit() {
        return;
    }
    let config = config("unbind");
    let exchange = config.exchange.clone();
    let (b, mut b_rx) = node(config).await;
    b.bind(&pattern("olive.notes.#"));
    until_routed(&b, &mut b_rx, "olive.notes.note.3").await;
    b.unbind(&pattern("olive.notes.#"));
    // Commands apply in order: once the new binding routes, the unbind
    // before it is done.
    b.bind(&pattern("olive.marks.#"));
    until_routed(&b, &mut b_rx, "olive.marks.m.1").await;

    b.publish(message("olive.notes.note.3", "1", None)).await.unwrap();
    let marker = message("olive.marks.m.1", "2", None);
    b.publish(marker.clone()).await.unwrap();
    // Same channel, same queue: had the first been routed, it would come
    // first.
    let got = recv(&mut b_rx, Duration::from_secs(5)).await.expect("the marker");
    assert_eq!(got.id, marker.id, "an unbound key was delivered: {got:?}");
    b.close().await;
    delete_exchange(&exchange).await;
}

/// Finds olive's connection by its name and has RabbitMQ close it.
async fn close_connection(name: &str) {
    let list = tokio::process::Command::new("rabbitmqctl")
        .args(["list_connections", "-q", "--no-table-headers", "pid", "client_properties"])
        .output()
        .await
        .expect("rabbitmqctl runs");
    let list = String::from_utf8_lossy(&list.stdout);
    let line =
        list.lines().find(|l| l.contains(name)).unwrap_or_else(|| panic!("no connection {name}: {list}"));
    let pid = line.split_whitespace().next().unwrap();
    let closed = tokio::process::Command::new("rabbitmqctl")
        .args(["close_connection", pid, "test"])
        .status()
        .await
        .expect("rabbitmqctl runs");
    assert!(closed.success());
}

#[tokio::test]
async fn reconnects_and_rebinds_after_the_connection_is_closed() {
    if !rabbit() {
        return;
    }
    let config = config("reconnect");
    let (exchange, name) = (config.exchange.clone(), config.connection_name.clone());
    let (b, mut b_rx) = node(config).await;
    b.bind(&pattern("olive.r.#"));
    until_routed(&b, &mut b_rx, "olive.r.probe").await;

    let mut ready = b.ready();
    close_connection(&name).await;
    // Publish all through the outage; each Ok must be delivered.
    let mut confirmed = Vec::new();
    let mut refused = 0;
    let outage = async {
        ready.wait_for(|r| !*r).await.unwrap();
        ready.wait_for(|r| *r).await.unwrap();
    };
    tokio::pin!(outage);
    let mut seen_down = false;
    loop {
        let m = message("olive.r.x.1", "\"during\"", None);
        match b.publish(m.clone()).await {
            Ok(()) => confirmed.push(m.id),
            Err(BrokerError::Unavailable(_)) => refused += 1,
        }
        seen_down |= !*b.ready().borrow();
        tokio::select! {
            _ = &mut outage => break,
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
        assert!(confirmed.len() + refused < 1000, "no reconnect within ~20s");
    }
    eprintln!("through the outage: {} publishes confirmed, {refused} refused", confirmed.len());
    assert!(seen_down && refused > 0, "publishes during the outage get unavailable");
    assert!(*b.ready().borrow());
    assert_eq!(b.reconnects(), 1, "one reconnect, for olive_broker_reconnects_total");

    let after = message("olive.r.x.2", "\"after\"", None);
    b.publish(after.clone()).await.unwrap();
    confirmed.push(after.id.clone());
    let mut delivered = Vec::new();
    while let Some(got) = recv(&mut b_rx, Duration::from_secs(2)).await {
        delivered.push(got.id);
    }
    assert!(delivered.contains(&after.id), "the binding is restored");
    for id in &confirmed {
        assert!(delivered.contains(id), "{id} was confirmed but never delivered");
    }
    b.close().await;
    delete_exchange(&exchange).await;
}

/// A message that comes again with the same id (a redelivery after a lost
/// connection, or an outside publisher's retry) is passed on once.
#[tokio::test]
async fn a_message_that_comes_again_is_passed_on_once() {
    if !rabbit() {
        return;
    }
    let config = config("again");
    let exchange = config.exchange.clone();
    let (node, mut rx) = node(config).await;
    node.bind(&pattern("olive.notes.note.3"));
    until_routed(&node, &mut rx, "olive.notes.note.3").await;

    let first = message("olive.notes.note.3", "1", None);
    let next = message("olive.notes.note.3", "2", None);
    for sent in [&first, &first, &next] {
        node.publish(sent.clone()).await.unwrap();
    }
    let got = recv(&mut rx, Duration::from_secs(5)).await.expect("the first");
    assert_eq!(got.id, first.id);
    let got = recv(&mut rx, Duration::from_secs(5)).await.expect("the next");
    assert_eq!(got.id, next.id, "the copy of the first was dropped");
    assert!(recv(&mut rx, Duration::from_millis(300)).await.is_none());
    node.close().await;
    delete_exchange(&exchange).await;
}
