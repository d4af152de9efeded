//! Presence: who is on a key, on this node and on the others.
//!
//! This module owns the presence [`Table`], pure bookkeeping with no I/O:
//! the hub (`hub/presence.rs`) calls it under one lock and carries out the
//! [`Effects`] it returns (frames for local watchers, announcements for
//! the other nodes, presence bindings in the broker). Keeping it free of
//! I/O is what lets its rules be tested with plain values and a clock.
//!
//! A connection is present on a key while it holds an exact subscription
//! to it. Named members ([`Member`]) are deduplicated by user across
//! connections and nodes: a user with two tabs is one member, who leaves
//! when the last tab does. Anonymous connections are counted, never listed.
//!
//! Each node tells the others about its own side of a key with
//! [`Announcement`]s (`docs/PROTOCOL.md`, "Presence"): deltas as they
//! happen, a snapshot every `live.presence_heartbeat`, and a `sync`
//! snapshot when it starts caring about a key, which the others answer
//! with theirs. A remote side that has not been heard of for
//! `live.presence_ttl` is dropped, so a node that dies takes its members
//! with it. Above `live.presence_max_members` a key is reported as a
//! count, at most once per tick, instead of a stream of joins and leaves.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::key::Key;
use super::protocol;

/// A signed-in user as presence shows them. Anonymous connections have
/// none (the auth code will set one from the token's subject and name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// The presence settings (`[live]` `presence_*`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// How often a node repeats its snapshot of each key.
    pub heartbeat: Duration,
    /// How long a remote node's side lives without news.
    pub ttl: Duration,
    /// Above this many (named plus anonymous), a key is sent as a count.
    pub max_members: usize,
    /// Count frames go out at most this often (the tick of the presence task).
    pub count_interval: Duration,
}

/// What a node says about its own side of a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announcement {
    /// The sending node (random per process start).
    pub node: String,
    pub op: Op,
    /// Members who joined or left (`join`, `leave`), or all of the node's
    /// members on the key (`snapshot`, `sync`).
    #[serde(default)]
    pub members: Vec<Member>,
    /// The node's anonymous connections on the key now (always absolute,
    /// so a lost delta is repaired by the next message).
    #[serde(default)]
    pub anonymous: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Join,
    Leave,
    Snapshot,
    /// A snapshot from a node that just started caring about the key:
    /// the others answer with their snapshots at once.
    Sync,
}

/// What the hub must do after a table change, in this order.
#[derive(Debug, Default, PartialEq)]
pub struct Effects {
    /// `Some(true)`: bind the key's presence in the broker (first local
    /// member); `Some(false)`: unbind it (last one gone).
    pub bind: Option<bool>,
    /// To publish to the other nodes (JSON of an [`Announcement`]).
    pub announce: Option<Bytes>,
    /// For this node's connections that watch the key, in order.
    pub frames: Vec<Bytes>,
}

/// One node's members on one key.
#[derive(Debug, Default)]
struct Side {
    /// user → (member, this side's connections of that user).
    named: HashMap<String, (Member, usize)>,
    anonymous: usize,
}

impl Side {
    fn is_empty(&self) -> bool {
        self.named.is_empty() && self.anonymous == 0
    }
}

#[derive(Debug)]
struct Remote {
    side: Side,
    seen: Instant,
}

/// A key with at least one local member.
#[derive(Debug, Default)]
struct Entry {
    local: Side,
    remotes: HashMap<String, Remote>,
    /// user → (member, sides holding them): the merged view.
    members: HashMap<String, (Member, usize)>,
    counting: bool,
    /// The count last sent while counting.
    sent_count: Option<usize>,
}

/// Who joined and left the merged view in one change.
#[derive(Default)]
struct Change {
    joined: Vec<Member>,
    left: Vec<Member>,
    anonymous_before: usize,
}

/// The presence of every key this node has members on.
#[derive(Debug)]
pub struct Table {
    node: String,
    limits: Limits,
    keys: HashMap<Key, Entry>,
}

impl Table {
    pub fn new(node: String, limits: Limits) -> Table {
        Table { node, limits, keys: HashMap::new() }
    }

    /// A local connection (of `member`, or anonymous) became present on `key`.
    pub fn join(&mut self, key: &Key, member: Option<&Member>) -> Effects {
        let first = !self.keys.contains_key(key);
        let entry = self.keys.entry(key.clone()).or_default();
        let mut change = Change { anonymous_before: entry.anonymous(), ..Change::default() };
        let mut delta = Vec::new();
        match member {
            None => entry.local.anonymous += 1,
            Some(m) => {
                let slot = entry.local.named.entry(m.user.clone()).or_insert_with(|| (m.clone(), 0));
                slot.1 += 1;
                if slot.1 == 1 {
                    if entry.hold(m) {
                        change.joined.push(m.clone());
                    }
                    delta.push(m.clone());
                }
            }
        }
        let frames = entry.report(key, change, self.limits.max_members);
        let announce = if first {
            Some(entry.announcement(&self.node, Op::Sync))
        } else if member.is_none() || !delta.is_empty() {
            Some(encode(&Announcement {
                node: self.node.clone(),
                op: Op::Join,
                members: delta,
                anonymous: entry.local.anonymous,
            }))
        } else {
            None
        };
        Effects { bind: first.then_some(true), announce, frames }
    }

    /// A local connection is no longer present on `key`.
    pub fn leave(&mut self, key: &Key, member: Option<&Member>) -> Effects {
        let Some(entry) = self.keys.get_mut(key) else { return Effects::default() };
        let mut change = Change { anonymous_before: entry.anonymous(), ..Change::default() };
        let mut delta = Vec::new();
        match member {
            None => entry.local.anonymous = entry.local.anonymous.saturating_sub(1),
            Some(m) => {
                if let Some(slot) = entry.local.named.get_mut(&m.user) {
                    slot.1 -= 1;
                    if slot.1 == 0 {
                        entry.local.named.remove(&m.user);
                        change.left.extend(entry.release(&m.user));
                        delta.push(m.clone());
                    }
                }
            }
        }
        if entry.local.is_empty() {
            // Nobody here watches the key any more: forget it, and tell the
            // others this node's side is empty.
            self.keys.remove(key);
            let empty =
                Announcement { node: self.node.clone(), op: Op::Snapshot, members: vec![], anonymous: 0 };
            return Effects { bind: Some(false), announce: Some(encode(&empty)), frames: vec![] };
        }
        let frames = entry.report(key, change, self.limits.max_members);
        let announce = (member.is_none() || !delta.is_empty()).then(|| {
            encode(&Announcement {
                node: self.node.clone(),
                op: Op::Leave,
                members: delta,
                anonymous: entry.local.anonymous,
            })
        });
        Effects { bind: None, announce, frames }
    }

    /// Another node's announcement on `key`. Own echoes and keys without
    /// local members are ignored.
    pub fn receive(&mut self, key: &Key, announcement: Announcement, now: Instant) -> Effects {
        if announcement.node == self.node {
            return Effects::default();
        }
        let Some(entry) = self.keys.get_mut(key) else { return Effects::default() };
        let mut change = Change { anonymous_before: entry.anonymous(), ..Change::default() };
        let Announcement { node, op, members, anonymous } = announcement;
        let mut remote = entry.remotes.remove(&node).unwrap_or(Remote { side: Side::default(), seen: now });
        remote.seen = now;
        match op {
            Op::Join => {
                for m in members {
                    if !remote.side.named.contains_key(&m.user) && entry.hold(&m) {
                        change.joined.push(m.clone());
                    }
                    remote.side.named.insert(m.user.clone(), (m, 1));
                }
            }
            Op::Leave => {
                for m in members {
                    if remote.side.named.remove(&m.user).is_some() {
                        change.left.extend(entry.release(&m.user));
                    }
                }
            }
            Op::Snapshot | Op::Sync => {
                let named: HashMap<String, (Member, usize)> =
                    members.into_iter().map(|m| (m.user.clone(), (m, 1))).collect();
                for user in remote.side.named.keys() {
                    if !named.contains_key(user) {
                        change.left.extend(entry.release(user));
                    }
                }
                for (user, (m, _)) in &named {
                    if !remote.side.named.contains_key(user) && entry.hold(m) {
                        change.joined.push(m.clone());
                    }
                }
                remote.side.named = named;
            }
        }
        remote.side.anonymous = anonymous;
        if !remote.side.is_empty() {
            entry.remotes.insert(node, remote);
        }
        let frames = entry.report(key, change, self.limits.max_members);
        let announce = (op == Op::Sync).then(|| entry.announcement(&self.node, Op::Snapshot));
        Effects { bind: None, announce, frames }
    }

    /// The answer to a presence request: members and anonymous count, or
    /// the count alone above the limit.
    pub fn snapshot(&self, key: &Key) -> Bytes {
        let Some(entry) = self.keys.get(key) else { return protocol::presence(key.as_str(), &[], 0) };
        if entry.counting {
            return protocol::presence_count(key.as_str(), entry.total());
        }
        let mut members: Vec<&Member> = entry.members.values().map(|(m, _)| m).collect();
        members.sort_by(|a, b| a.user.cmp(&b.user));
        protocol::presence(key.as_str(), &members, entry.anonymous())
    }

    /// Runs every `count_interval`: drops remote sides not heard of within
    /// the ttl, and sends the count of counting keys whose count changed.
    pub fn tick(&mut self, now: Instant) -> Vec<(Key, Effects)> {
        let (ttl, max) = (self.limits.ttl, self.limits.max_members);
        let mut out = Vec::new();
        for (key, entry) in &mut self.keys {
            let mut frames = Vec::new();
            let stale: Vec<String> = entry
                .remotes
                .iter()
                .filter(|(_, r)| now.duration_since(r.seen) >= ttl)
                .map(|(n, _)| n.clone())
                .collect();
            if !stale.is_empty() {
                let mut change = Change { anonymous_before: entry.anonymous(), ..Change::default() };
                for node in stale {
                    let Some(remote) = entry.remotes.remove(&node) else { continue };
                    for user in remote.side.named.keys() {
                        change.left.extend(entry.release(user));
                    }
                }
                frames = entry.report(key, change, max);
            }
            if entry.counting && entry.sent_count != Some(entry.total()) {
                entry.sent_count = Some(entry.total());
                frames.push(protocol::presence_count(key.as_str(), entry.total()));
            }
            if !frames.is_empty() {
                out.push((key.clone(), Effects { frames, ..Effects::default() }));
            }
        }
        out
    }

    /// This node's snapshot of every key it has members on (the heartbeat).
    pub fn heartbeat(&self) -> Vec<(Key, Bytes)> {
        self.keys
            .iter()
            .map(|(key, entry)| (key.clone(), entry.announcement(&self.node, Op::Snapshot)))
            .collect()
    }
}

impl Entry {
    fn anonymous(&self) -> usize {
        self.local.anonymous + self.remotes.values().map(|r| r.side.anonymous).sum::<usize>()
    }

    fn total(&self) -> usize {
        self.members.len() + self.anonymous()
    }

    /// One more side holds `member`; `true` when they are new to the key.
    fn hold(&mut self, member: &Member) -> bool {
        let slot = self.members.entry(member.user.clone()).or_insert_with(|| (member.clone(), 0));
        slot.1 += 1;
        slot.1 == 1
    }

    /// One side fewer holds `user`; the member when that was the last.
    fn release(&mut self, user: &str) -> Option<Member> {
        let slot = self.members.get_mut(user)?;
        slot.1 = slot.1.saturating_sub(1);
        if slot.1 > 0 {
            return None;
        }
        self.members.remove(user).map(|(m, _)| m)
    }

    fn announcement(&self, node: &str, op: Op) -> Bytes {
        let members = self.local.named.values().map(|(m, _)| m.clone()).collect();
        encode(&Announcement { node: node.to_owned(), op, members, anonymous: self.local.anonymous })
    }

    /// The frames for watchers after `change`. Above the limit nothing
    /// (the tick sends the count); on coming back under it, the whole
    /// list once, so that clients can start from it again.
    fn report(&mut self, key: &Key, change: Change, max: usize) -> Vec<Bytes> {
        let was_counting = self.counting;
        self.counting = self.total() > max;
        if self.counting {
            return vec![];
        }
        if was_counting {
            self.sent_count = None;
            let mut members: Vec<&Member> = self.members.values().map(|(m, _)| m).collect();
            members.sort_by(|a, b| a.user.cmp(&b.user));
            return vec![protocol::presence(key.as_str(), &members, self.anonymous())];
        }
        let k = key.as_str();
        let mut frames: Vec<Bytes> =
            change.joined.iter().map(|m| protocol::member_event(true, k, m)).collect();
        frames.extend(change.left.iter().map(|m| protocol::member_event(false, k, m)));
        let anonymous = self.anonymous();
        if anonymous != change.anonymous_before {
            frames.push(protocol::anonymous_event(anonymous > change.anonymous_before, k, anonymous));
        }
        frames
    }
}

/// An announcement's JSON (serialising strings and numbers cannot fail).
fn encode(announcement: &Announcement) -> Bytes {
    Bytes::from(serde_json::to_vec(announcement).unwrap_or_default())
}

/// A node id: random per process start, so a restarted node is a new
/// node and its old side simply expires.
pub fn node_id() -> String {
    format!("{:016x}", fastrand::u64(..))
}

#[cfg(test)]
mod tests;
