//! Short per-key history, so a client that reconnects can be given what it
//! missed (tier 1 of recovery, `docs/PROTOCOL.md`).
//!
//! The hub records every delivery here once, before fan-out, with a
//! node-local sequence number that is the order in which this node
//! delivered messages. Each key keeps a ring of its last `size` messages
//! no older than `ttl`; at most `max_keys` keys are kept, the least
//! recently written going first, so memory is bounded whatever clients
//! publish.
//!
//! A ring only proves something about the past while the key stayed bound
//! in the broker: while it was not, this node received nothing for it. So
//! when interest in a key ends, its ring is marked ([`History::forget`]) and
//! no id from before the mark can be resumed from it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::key::{Key, Pattern};

/// One delivered message as the history keeps it: the encoded `message`
/// frame, ready to be queued again.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Node-local delivery order (starts at 1).
    pub seq: u64,
    pub id: Arc<str>,
    pub at: Instant,
    pub frame: Utf8Bytes,
}

/// What the history can say about a resume point.
#[derive(Debug)]
pub enum Recovery {
    /// The id was found: these are the messages after it, oldest first
    /// (possibly none).
    Full(Vec<Entry>),
    /// The id is unknown, too old, or from before the key was last unbound.
    Gap,
}

/// The bounds of the history (`[live]` `history_*`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub size: usize,
    pub ttl: Duration,
    pub max_keys: usize,
    /// How long a key stays bound after its last subscriber left
    /// (`Hub` keeps it; the history just goes on recording).
    pub linger: Duration,
}

struct Ring {
    entries: VecDeque<Entry>,
    /// Entries with `seq` at or below this cannot be resumed from: the key
    /// was unbound after them.
    gap: u64,
    /// Seq of the last write, the ring's key in `by_age`.
    written: u64,
}

/// Per-key rings of recent deliveries.
pub struct History {
    limits: Limits,
    rings: HashMap<Key, Ring>,
    /// Rings by last write, oldest first: eviction in O(log n).
    by_age: BTreeMap<u64, Key>,
    seq: u64,
}

impl History {
    pub fn new(limits: Limits) -> History {
        History { limits, rings: HashMap::new(), by_age: BTreeMap::new(), seq: 0 }
    }

    /// The seq of the last recorded delivery (0 before any).
    pub fn last_seq(&self) -> u64 {
        self.seq
    }

    /// Records a delivery and returns its seq.
    pub fn record(&mut self, key: &Key, id: Arc<str>, frame: Utf8Bytes, now: Instant) -> u64 {
        self.seq += 1;
        let seq = self.seq;
        if self.limits.size == 0 || self.limits.max_keys == 0 {
            return seq;
        }
        if !self.rings.contains_key(key) && self.rings.len() >= self.limits.max_keys {
            self.evict_oldest();
        }
        let ring = self.rings.entry(key.clone()).or_insert_with(|| Ring {
            entries: VecDeque::new(),
            gap: 0,
            written: 0,
        });
        if ring.written != 0 {
            self.by_age.remove(&ring.written);
        }
        ring.written = seq;
        self.by_age.insert(seq, key.clone());
        ring.entries.push_back(Entry { seq, id, at: now, frame });
        while ring.entries.len() > self.limits.size {
            ring.entries.pop_front();
        }
        expire(ring, self.limits.ttl, now);
        seq
    }

    fn evict_oldest(&mut self) {
        if let Some((_, key)) = self.by_age.pop_first() {
            self.rings.remove(&key);
        }
    }

    /// What follows `id` on `pattern`. Only exact keys are resumed: for a
    /// pattern, this node cannot know that it received every key the
    /// pattern covers since `id` (it binds only what its clients want), so
    /// a pattern is always a [`Recovery::Gap`].
    pub fn since(&mut self, pattern: &Pattern, id: &str, now: Instant) -> Recovery {
        let Some(key) = pattern.is_exact() else { return Recovery::Gap };
        let Some(ring) = self.rings.get_mut(&key) else { return Recovery::Gap };
        expire(ring, self.limits.ttl, now);
        let Some(pos) = ring.entries.iter().rposition(|e| &*e.id == id) else { return Recovery::Gap };
        if ring.entries[pos].seq <= ring.gap {
            return Recovery::Gap;
        }
        Recovery::Full(ring.entries.iter().skip(pos + 1).cloned().collect())
    }

    /// Marks the rings `pattern` covers as broken up to now: the node is
    /// about to stop receiving them, so their past no longer proves that
    /// nothing was missed.
    pub fn forget(&mut self, pattern: &Pattern) {
        let seq = self.seq;
        match pattern.is_exact() {
            Some(key) => {
                if let Some(ring) = self.rings.get_mut(&key) {
                    ring.gap = seq;
                }
            }
            None => {
                for (key, ring) in &mut self.rings {
                    if pattern.matches(key) {
                        ring.gap = seq;
                    }
                }
            }
        }
    }

    /// Keys held (for tests and metrics).
    pub fn keys(&self) -> usize {
        self.rings.len()
    }
}

fn expire(ring: &mut Ring, ttl: Duration, now: Instant) {
    while ring.entries.front().is_some_and(|e| now.saturating_duration_since(e.at) > ttl) {
        ring.entries.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(size: usize, ttl: u64, max_keys: usize) -> Limits {
        Limits { size, ttl: Duration::from_secs(ttl), max_keys, linger: Duration::ZERO }
    }

    fn key(s: &str) -> Key {
        Key::parse(s).unwrap()
    }

    fn pat(s: &str) -> Pattern {
        Pattern::parse(s).unwrap()
    }

    fn put(h: &mut History, k: &str, id: &str, now: Instant) -> u64 {
        h.record(&key(k), id.into(), Utf8Bytes::from(format!("frame {id}")), now)
    }

    fn ids(r: Recovery) -> Option<Vec<String>> {
        match r {
            Recovery::Full(v) => Some(v.iter().map(|e| e.id.to_string()).collect()),
            Recovery::Gap => None,
        }
    }

    #[test]
    fn since_found_replays_what_follows() {
        let now = Instant::now();
        let mut h = History::new(limits(10, 60, 10));
        for id in ["a", "b", "c"] {
            put(&mut h, "olive.x.y.1", id, now);
        }
        put(&mut h, "olive.x.y.2", "z", now);
        assert_eq!(ids(h.since(&pat("olive.x.y.1"), "a", now)), Some(vec!["b".into(), "c".into()]));
        assert_eq!(ids(h.since(&pat("olive.x.y.1"), "c", now)), Some(vec![]));
        assert_eq!(h.last_seq(), 4);
    }

    #[test]
    fn unknown_id_key_or_pattern_is_a_gap() {
        let now = Instant::now();
        let mut h = History::new(limits(10, 60, 10));
        put(&mut h, "olive.x.y.1", "a", now);
        assert!(ids(h.since(&pat("olive.x.y.1"), "nope", now)).is_none());
        assert!(ids(h.since(&pat("olive.x.y.9"), "a", now)).is_none());
        assert!(ids(h.since(&pat("olive.x.y.*"), "a", now)).is_none());
    }

    #[test]
    fn size_bound_drops_the_oldest() {
        let now = Instant::now();
        let mut h = History::new(limits(2, 60, 10));
        for id in ["a", "b", "c"] {
            put(&mut h, "olive.x.y.1", id, now);
        }
        assert!(ids(h.since(&pat("olive.x.y.1"), "a", now)).is_none(), "a fell out");
        assert_eq!(ids(h.since(&pat("olive.x.y.1"), "b", now)), Some(vec!["c".into()]));
    }

    #[test]
    fn ttl_bound_expires_old_entries() {
        let start = Instant::now();
        let mut h = History::new(limits(10, 60, 10));
        put(&mut h, "olive.x.y.1", "a", start);
        put(&mut h, "olive.x.y.1", "b", start + Duration::from_secs(30));
        let later = start + Duration::from_secs(61);
        assert!(ids(h.since(&pat("olive.x.y.1"), "a", later)).is_none(), "a expired");
        assert_eq!(ids(h.since(&pat("olive.x.y.1"), "b", later)), Some(vec![]));
        let much_later = start + Duration::from_secs(200);
        assert!(ids(h.since(&pat("olive.x.y.1"), "b", much_later)).is_none());
    }

    #[test]
    fn key_cap_evicts_the_least_recently_written() {
        let now = Instant::now();
        let mut h = History::new(limits(10, 60, 2));
        put(&mut h, "olive.x.y.1", "a", now);
        put(&mut h, "olive.x.y.2", "b", now);
        put(&mut h, "olive.x.y.1", "c", now); // key 1 is now the most recent
        put(&mut h, "olive.x.y.3", "d", now); // evicts key 2
        assert_eq!(h.keys(), 2);
        assert!(ids(h.since(&pat("olive.x.y.2"), "b", now)).is_none());
        assert_eq!(ids(h.since(&pat("olive.x.y.1"), "a", now)), Some(vec!["c".into()]));
        assert_eq!(ids(h.since(&pat("olive.x.y.3"), "d", now)), Some(vec![]));
    }

    #[test]
    fn forgetting_a_key_breaks_resume_from_before() {
        let now = Instant::now();
        let mut h = History::new(limits(10, 60, 10));
        put(&mut h, "olive.x.y.1", "a", now);
        put(&mut h, "olive.x.y.2", "b", now);
        h.forget(&pat("olive.x.#"));
        put(&mut h, "olive.x.y.1", "c", now);
        put(&mut h, "olive.x.y.1", "d", now);
        assert!(ids(h.since(&pat("olive.x.y.1"), "a", now)).is_none());
        assert!(ids(h.since(&pat("olive.x.y.2"), "b", now)).is_none());
        assert_eq!(ids(h.since(&pat("olive.x.y.1"), "c", now)), Some(vec!["d".into()]));
    }

    #[test]
    fn zero_size_keeps_nothing() {
        let now = Instant::now();
        let mut h = History::new(limits(0, 60, 10));
        assert_eq!(put(&mut h, "olive.x.y.1", "a", now), 1);
        assert_eq!(h.keys(), 0);
    }
}
