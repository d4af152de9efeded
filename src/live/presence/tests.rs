use super::*;

fn limits(max_members: usize) -> Limits {
    Limits {
        heartbeat: Duration::from_secs(10),
        ttl: Duration::from_secs(30),
        max_members,
        count_interval: Duration::from_secs(1),
    }
}

fn key() -> Key {
    Key::parse("olive.notes.note.1").unwrap()
}

fn ann(user: &str) -> Member {
    Member { user: user.into(), name: Some(format!("name {user}")) }
}

fn texts(frames: &[Bytes]) -> Vec<String> {
    frames.iter().map(|f| String::from_utf8(f.to_vec()).unwrap()).collect()
}

fn announced(effects: &Effects) -> Announcement {
    serde_json::from_slice(effects.announce.as_ref().unwrap()).unwrap()
}

fn snapshot(table: &Table) -> serde_json::Value {
    serde_json::from_slice(&table.snapshot(&key())).unwrap()
}

fn remote(node: &str, op: Op, members: Vec<Member>, anonymous: usize) -> Announcement {
    Announcement { node: node.into(), op, members, anonymous }
}

#[test]
fn join_and_leave_of_named_and_anonymous() {
    let mut table = Table::new("a".into(), limits(100));
    let first = table.join(&key(), None);
    assert_eq!(first.bind, Some(true), "the first local member binds the key");
    assert_eq!(announced(&first).op, Op::Sync);
    assert_eq!(texts(&first.frames), [r#"{"type":"join","key":"olive.notes.note.1","anonymous":1}"#]);

    let joined = table.join(&key(), Some(&ann("7")));
    assert_eq!(joined.bind, None);
    assert_eq!(
        texts(&joined.frames),
        [r#"{"type":"join","key":"olive.notes.note.1","member":{"user":"7","name":"name 7"}}"#]
    );
    let delta = announced(&joined);
    assert_eq!((delta.op, delta.members, delta.anonymous), (Op::Join, vec![ann("7")], 1));
    assert_eq!(snapshot(&table)["members"][0]["user"], "7");
    assert_eq!(snapshot(&table)["anonymous"], 1);

    let left = table.leave(&key(), Some(&ann("7")));
    assert_eq!(
        texts(&left.frames),
        [r#"{"type":"leave","key":"olive.notes.note.1","member":{"user":"7","name":"name 7"}}"#]
    );
    let last = table.leave(&key(), None);
    assert_eq!(last.bind, Some(false), "the last local member unbinds the key");
    assert_eq!(announced(&last), remote("a", Op::Snapshot, vec![], 0), "the others hear the side is empty");
    assert!(table.heartbeat().is_empty(), "an empty key is forgotten");
}

#[test]
fn one_user_on_two_connections_is_one_member() {
    let mut table = Table::new("a".into(), limits(100));
    table.join(&key(), Some(&ann("7")));
    let second = table.join(&key(), Some(&ann("7")));
    assert!(second.frames.is_empty() && second.announce.is_none(), "a second tab changes nothing");
    assert_eq!(snapshot(&table)["members"].as_array().unwrap().len(), 1);
    let first_gone = table.leave(&key(), Some(&ann("7")));
    assert!(first_gone.frames.is_empty() && first_gone.announce.is_none(), "one tab left: still present");
    let last = table.leave(&key(), Some(&ann("7")));
    assert_eq!(last.bind, Some(false));
}

#[test]
fn the_same_user_on_two_nodes_is_one_member() {
    let mut table = Table::new("a".into(), limits(100));
    let now = Instant::now();
    table.join(&key(), Some(&ann("7")));
    let remote_join = table.receive(&key(), remote("b", Op::Join, vec![ann("7"), ann("8")], 2), now);
    assert_eq!(
        texts(&remote_join.frames),
        [
            r#"{"type":"join","key":"olive.notes.note.1","member":{"user":"8","name":"name 8"}}"#,
            r#"{"type":"join","key":"olive.notes.note.1","anonymous":2}"#,
        ]
    );
    let local_leave = table.leave(&key(), Some(&ann("7")));
    assert_eq!(local_leave.bind, Some(false), "no local member left: the key is dropped with its remotes");
}

#[test]
fn sync_is_answered_with_a_snapshot_and_echoes_are_ignored() {
    let mut table = Table::new("a".into(), limits(100));
    let now = Instant::now();
    table.join(&key(), None);
    let sync = table.receive(&key(), remote("b", Op::Sync, vec![], 1), now);
    assert_eq!(announced(&sync), remote("a", Op::Snapshot, vec![], 1));
    assert_eq!(snapshot(&table)["anonymous"], 2);
    let echo = table.receive(&key(), remote("a", Op::Snapshot, vec![], 5), now);
    assert_eq!(echo, Effects::default());
    let unknown = Key::parse("olive.notes.note.2").unwrap();
    assert_eq!(table.receive(&unknown, remote("b", Op::Sync, vec![], 1), now), Effects::default());
}

#[test]
fn snapshots_replace_a_side() {
    let mut table = Table::new("a".into(), limits(100));
    let now = Instant::now();
    table.join(&key(), None);
    table.receive(&key(), remote("b", Op::Snapshot, vec![ann("7"), ann("8")], 0), now);
    let replaced = table.receive(&key(), remote("b", Op::Snapshot, vec![ann("8"), ann("9")], 0), now);
    assert_eq!(
        texts(&replaced.frames),
        [
            r#"{"type":"join","key":"olive.notes.note.1","member":{"user":"9","name":"name 9"}}"#,
            r#"{"type":"leave","key":"olive.notes.note.1","member":{"user":"7","name":"name 7"}}"#,
        ]
    );
}

#[test]
fn a_silent_node_expires_with_its_members() {
    let mut table = Table::new("a".into(), limits(100));
    let start = Instant::now();
    table.join(&key(), None);
    table.receive(&key(), remote("b", Op::Snapshot, vec![ann("7")], 3), start);
    table.receive(&key(), remote("c", Op::Snapshot, vec![ann("7")], 0), start + Duration::from_secs(20));
    assert!(table.tick(start + Duration::from_secs(29)).is_empty(), "within the ttl nothing expires");
    let expired = table.tick(start + Duration::from_secs(30));
    let (_, effects) = &expired[0];
    assert_eq!(
        texts(&effects.frames),
        [r#"{"type":"leave","key":"olive.notes.note.1","anonymous":1}"#],
        "user 7 is still on node c; node b's anonymous connections are gone"
    );
    let expired = table.tick(start + Duration::from_secs(50));
    assert_eq!(
        texts(&expired[0].1.frames),
        [r#"{"type":"leave","key":"olive.notes.note.1","member":{"user":"7","name":"name 7"}}"#]
    );
    assert_eq!(snapshot(&table)["members"].as_array().unwrap().len(), 0);
}

#[test]
fn above_the_limit_a_key_is_a_throttled_count() {
    let mut table = Table::new("a".into(), limits(3));
    let now = Instant::now();
    for user in ["1", "2", "3"] {
        assert_eq!(table.join(&key(), Some(&ann(user))).frames.len(), 1);
    }
    let over = table.join(&key(), None);
    assert!(over.frames.is_empty(), "no join events above the limit");
    assert!(over.announce.is_some(), "the other nodes still hear of it");
    table.receive(&key(), remote("b", Op::Snapshot, vec![ann("4")], 10), now);
    assert_eq!(
        snapshot(&table),
        serde_json::json!({"type":"presence","key":"olive.notes.note.1","count":15})
    );
    let ticked = table.tick(now);
    assert_eq!(texts(&ticked[0].1.frames), [r#"{"type":"presence","key":"olive.notes.note.1","count":15}"#]);
    assert!(table.tick(now).is_empty(), "an unchanged count is not sent again");
    table.join(&key(), None);
    table.join(&key(), None);
    let ticked = table.tick(now);
    assert_eq!(
        texts(&ticked[0].1.frames),
        [r#"{"type":"presence","key":"olive.notes.note.1","count":17}"#],
        "one frame per tick"
    );

    let still = table.receive(&key(), remote("b", Op::Snapshot, vec![], 0), now);
    assert!(still.frames.is_empty(), "3 named and 3 anonymous is still above 3");
    table.leave(&key(), None);
    table.leave(&key(), None);
    // Back under the limit: the whole list once, then events again.
    let back = table.leave(&key(), None);
    assert_eq!(
        texts(&back.frames),
        [concat!(
            r#"{"type":"presence","key":"olive.notes.note.1","members":[{"user":"1","name":"name 1"},"#,
            r#"{"user":"2","name":"name 2"},{"user":"3","name":"name 3"}],"anonymous":0}"#
        )]
    );
    assert_eq!(table.leave(&key(), Some(&ann("1"))).frames.len(), 1);
}
