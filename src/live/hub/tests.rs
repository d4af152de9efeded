use super::*;
use crate::broker::memory::MemoryBroker;
use crate::live::history::Limits;
use std::sync::Mutex as StdMutex;

/// A broker that records bind/unbind calls.
#[derive(Default)]
struct Recording {
    calls: StdMutex<Vec<String>>,
}

impl Broker for Recording {
    fn publish(
        &self,
        _: Message,
    ) -> futures_util::future::BoxFuture<'static, Result<(), crate::broker::BrokerError>> {
        Box::pin(std::future::ready(Ok(())))
    }
    fn bind(&self, p: &Pattern) {
        self.calls.lock().unwrap().push(format!("bind {p}"));
    }
    fn unbind(&self, p: &Pattern) {
        self.calls.lock().unwrap().push(format!("unbind {p}"));
    }
    fn ready(&self) -> tokio::sync::watch::Receiver<bool> {
        tokio::sync::watch::Sender::new(true).subscribe()
    }
    fn close(&self) -> futures_util::future::BoxFuture<'_, ()> {
        Box::pin(std::future::ready(()))
    }
}

fn p(s: &str) -> Pattern {
    Pattern::parse(s).unwrap()
}

fn message(key: &str, id: &str) -> Message {
    Message {
        key: Key::parse(key).unwrap(),
        id: id.into(),
        data: Bytes::from_static(b"{\"n\":1}"),
        from: None,
    }
}

/// A hub over the memory broker with its tasks running.
fn running_hub() -> (Arc<Hub>, Arc<MemoryBroker>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let broker = Arc::new(MemoryBroker::new(tx));
    let (hub, inboxes) = Hub::new(broker.clone(), 1, limits(), presence_limits());
    tokio::spawn(hub.clone().run_deliveries(rx));
    for inbox in inboxes {
        tokio::spawn(hub.clone().run_shard(inbox));
    }
    (hub, broker)
}

async fn next(out: &mut Outbound) -> String {
    let frame =
        tokio::time::timeout(std::time::Duration::from_secs(1), out.frames.recv()).await.unwrap().unwrap();
    frame.text.as_str().to_owned()
}

#[tokio::test]
async fn exact_and_pattern_subscribers_get_one_copy_each() {
    let (hub, broker) = running_hub();
    let (mut a, mut a_out) = hub.connect(8);
    let (mut b, mut b_out) = hub.connect(8);
    let (mut c, mut c_out) = hub.connect(8);
    a.subscribe(p("olive.notes.note.1"), 10).unwrap();
    b.subscribe(p("olive.notes.#"), 10).unwrap();
    // Both of c's subscriptions match: it must still get one copy.
    c.subscribe(p("olive.notes.note.1"), 10).unwrap();
    c.subscribe(p("olive.*.note.*"), 10).unwrap();

    broker.publish(message("olive.notes.note.1", "m1")).await.unwrap();
    broker.publish(message("olive.notes.note.2", "m2")).await.unwrap();
    let want1 = r#"{"type":"message","key":"olive.notes.note.1","id":"m1","data":{"n":1}}"#;
    assert_eq!(next(&mut a_out).await, want1);
    assert_eq!(next(&mut b_out).await, want1);
    assert_eq!(next(&mut c_out).await, want1);
    assert!(next(&mut b_out).await.contains("\"m2\""));
    assert!(next(&mut c_out).await.contains("\"m2\""));
    assert!(a_out.frames.try_recv().is_none(), "a is not subscribed to note.2");
    assert!(c_out.frames.try_recv().is_none(), "no duplicate for c");
    assert_eq!(hub.stats.delivered.total(), 5);
}

#[tokio::test]
async fn a_slow_consumer_is_kicked_and_others_keep_receiving() {
    let (hub, broker) = running_hub();
    let (mut slow, mut slow_out) = hub.connect(2);
    let (mut fast, mut fast_out) = hub.connect(64);
    slow.subscribe(p("olive.a.b.1"), 10).unwrap();
    fast.subscribe(p("olive.a.b.1"), 10).unwrap();
    for i in 0..10 {
        broker.publish(message("olive.a.b.1", &i.to_string())).await.unwrap();
    }
    for i in 0..10 {
        assert!(next(&mut fast_out).await.contains(&format!("\"id\":\"{i}\"")));
    }
    assert_eq!(slow_out.frames.recv().await.err(), Some(outbox::End::Kicked(Kick::SlowConsumer)));
    assert_eq!(hub.stats.slow_consumers.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn interest_is_reference_counted_across_connections() {
    let broker = Arc::new(Recording::default());
    let (hub, _inboxes) = Hub::new(broker.clone(), 2, limits(), presence_limits());
    let (mut a, _a_out) = hub.connect(8);
    let (mut b, _b_out) = hub.connect(8);
    a.subscribe(p("olive.x.y.1"), 10).unwrap();
    assert_eq!(b.subscribe(p("olive.x.y.1"), 10), Ok(true));
    assert_eq!(b.subscribe(p("olive.x.y.1"), 10), Ok(false), "twice is a no-op");
    b.subscribe(p("olive.x.#"), 10).unwrap();
    assert!(a.unsubscribe(&p("olive.x.y.1")));
    assert!(!a.unsubscribe(&p("olive.x.y.1")));
    drop(b);
    assert_eq!(
        *broker.calls.lock().unwrap(),
        ["bind olive.x.y.1", "bind olive.x.#", "unbind olive.x.y.1", "unbind olive.x.#"]
    );
    assert!(hub.interest().is_empty());
}

#[tokio::test]
async fn subscriptions_per_connection_are_capped() {
    let broker = Arc::new(Recording::default());
    let (hub, _inboxes) = Hub::new(broker, 1, limits(), presence_limits());
    let (mut a, _a_out) = hub.connect(8);
    a.subscribe(p("olive.a.b.1"), 2).unwrap();
    a.subscribe(p("olive.a.b.2"), 2).unwrap();
    assert_eq!(a.subscribe(p("olive.a.b.3"), 2), Err(SubscribeError::TooMany));
}

#[test]
fn non_json_data_is_not_delivered() {
    let mut m = message("olive.a.b.1", "x");
    m.data = Bytes::from_static(b"{not json");
    assert!(encode(&m).is_none());
}

fn limits() -> crate::live::history::Limits {
    crate::live::history::Limits {
        size: 10,
        ttl: std::time::Duration::from_secs(60),
        max_keys: 100,
        linger: std::time::Duration::ZERO,
    }
}

/// Ids of the frames queued so far, `subscribed:BOOL` for subscribed.
fn drain(out: &mut Outbound) -> Vec<String> {
    let mut got = Vec::new();
    while let Some(frame) = out.frames.try_recv() {
        let v: serde_json::Value = serde_json::from_str(frame.text.as_str()).unwrap();
        got.push(match v["type"].as_str().unwrap() {
            "subscribed" => format!("subscribed:{}", v["recovered"]),
            _ => v["id"].as_str().unwrap().to_owned(),
        });
    }
    got
}

/// The shard has not fanned out m1..m3 yet when the client resumes from
/// m1: the replay covers m2 and m3, and the shard must then skip them.
#[tokio::test]
async fn resume_replays_then_skips_what_is_still_in_flight() {
    let (tx, rx) = mpsc::unbounded_channel();
    let broker = Arc::new(MemoryBroker::new(tx));
    let (hub, mut inboxes) = Hub::new(broker.clone(), 1, limits(), presence_limits());
    tokio::spawn(hub.clone().run_deliveries(rx));
    let (mut keeper, _keeper_out) = hub.connect(64);
    keeper.subscribe(p("olive.a.b.1"), 10).unwrap();
    for id in ["m1", "m2", "m3"] {
        broker.publish(message("olive.a.b.1", id)).await.unwrap();
    }
    while hub.history().last_seq() < 3 {
        tokio::task::yield_now().await;
    }

    let (mut conn, mut out) = hub.connect(64);
    assert!(matches!(conn.resume(p("olive.a.b.1"), "m1", 10, false), Ok(resume::Resumed::Recovered)));
    tokio::spawn(hub.clone().run_shard(inboxes.remove(0)));
    broker.publish(message("olive.a.b.1", "m4")).await.unwrap();
    assert_eq!(next(&mut out).await, "{\"type\":\"subscribed\",\"key\":\"olive.a.b.1\",\"recovered\":true}");
    assert!(next(&mut out).await.contains("\"m2\""));
    assert!(next(&mut out).await.contains("\"m3\""));
    assert!(next(&mut out).await.contains("\"m4\""));
    assert!(drain(&mut out).is_empty(), "no duplicates");
}

/// Tier 2: deliveries during the upstream request are held, then sent
/// after the recovered messages, minus the ones the upstream already sent.
#[tokio::test]
async fn pending_recovery_holds_live_messages_and_drops_duplicates() {
    let (hub, broker) = running_hub();
    let (mut conn, mut out) = hub.connect(64);
    let resumed = conn.resume(p("olive.a.b.1"), "gone", 10, true).unwrap();
    let resume::Resumed::Pending(pending) = resumed else { panic!("{resumed:?}") };
    broker.publish(message("olive.a.b.1", "u2")).await.unwrap();
    broker.publish(message("olive.a.b.1", "l1")).await.unwrap();
    while hub.stats.delivered.total() < 2 {
        tokio::task::yield_now().await;
    }
    assert!(drain(&mut out).is_empty(), "held while pending");
    conn.finish(pending, Some(vec![message("olive.a.b.1", "u1"), message("olive.a.b.1", "u2")]));
    assert_eq!(drain(&mut out), ["subscribed:true", "u1", "u2", "l1"]);
    broker.publish(message("olive.a.b.1", "l2")).await.unwrap();
    assert!(next(&mut out).await.contains("\"l2\""));
}

fn presence_limits() -> crate::live::presence::Limits {
    crate::live::presence::Limits {
        heartbeat: std::time::Duration::from_secs(10),
        ttl: std::time::Duration::from_secs(30),
        max_members: 100,
        count_interval: std::time::Duration::from_secs(1),
    }
}

/// Named members as the auth code will set them: one user on two
/// connections is one member, who leaves with the last connection; only
/// watchers (who asked for presence) get events; patterns are not presence.
#[tokio::test]
async fn named_members_at_the_hub() {
    use crate::live::presence::Member;
    let (hub, _broker) = running_hub();
    let key = Key::parse("olive.a.b.1").unwrap();
    let (mut watcher, mut events) = hub.connect(16);
    watcher.subscribe(p("olive.a.b.1"), 10).unwrap();
    watcher.watch_presence(&key).unwrap();
    assert_eq!(
        next(&mut events).await,
        r#"{"type":"presence","key":"olive.a.b.1","members":[],"anonymous":1}"#
    );

    let ann = Member { user: "7".into(), name: Some("Ann".into()) };
    let (mut tab1, _out1) = hub.connect(16);
    tab1.set_member(Some(ann.clone()));
    tab1.subscribe(p("olive.a.b.1"), 10).unwrap();
    let joined = r#"{"type":"join","key":"olive.a.b.1","member":{"user":"7","name":"Ann"}}"#;
    assert_eq!(next(&mut events).await, joined);
    let (mut tab2, mut out2) = hub.connect(16);
    tab2.set_member(Some(ann));
    tab2.subscribe(p("olive.a.b.1"), 10).unwrap();
    drop(tab1);
    assert!(events.frames.try_recv().is_none(), "one user on two connections is one member");
    assert!(out2.frames.try_recv().is_none(), "a connection that did not ask gets no presence frames");
    tab2.set_member(None);
    assert_eq!(next(&mut events).await, joined.replace("join", "leave"));
    assert_eq!(next(&mut events).await, r#"{"type":"join","key":"olive.a.b.1","anonymous":2}"#);

    let (mut other, _other_out) = hub.connect(16);
    other.subscribe(p("olive.a.#"), 10).unwrap();
    assert_eq!(other.watch_presence(&key), Err(presence::PresenceError::NotSubscribed));
}

/// A lone viewer who reloads: its key lingers bound, the messages it
/// missed meanwhile are in the history, and only a longer absence unbinds.
#[tokio::test(start_paused = true)]
async fn a_key_lingers_after_its_last_subscriber_so_a_reload_resumes() {
    let (tx, rx) = mpsc::unbounded_channel();
    let broker = Arc::new(MemoryBroker::new(tx));
    let linger = std::time::Duration::from_secs(30);
    let (hub, inboxes) = Hub::new(broker.clone(), 1, Limits { linger, ..limits() }, presence_limits());
    tokio::spawn(hub.clone().run_deliveries(rx));
    for inbox in inboxes {
        tokio::spawn(hub.clone().run_shard(inbox));
    }
    let (mut viewer, _out) = hub.connect(64);
    viewer.subscribe(p("olive.a.b.1"), 10).unwrap();
    broker.publish(message("olive.a.b.1", "m1")).await.unwrap();
    while hub.history().last_seq() < 1 {
        tokio::task::yield_now().await;
    }
    drop(viewer);
    broker.publish(message("olive.a.b.1", "m2")).await.unwrap();
    tokio::time::sleep(linger / 2).await;
    assert_eq!(hub.interest(), [(p("olive.a.b.1"), 0)], "still bound while it lingers");

    let (mut back, mut out) = hub.connect(64);
    assert!(matches!(back.resume(p("olive.a.b.1"), "m1", 10, false), Ok(resume::Resumed::Recovered)));
    assert_eq!(drain(&mut out), ["subscribed:true", "m2"]);
    drop(back);
    tokio::time::sleep(linger / 2).await;
    assert_eq!(hub.interest().len(), 1, "the first linger's unbind is void: the key was wanted again");
    tokio::time::sleep(linger).await;
    assert!(hub.interest().is_empty(), "unbound once it lingered with nobody back");
}
