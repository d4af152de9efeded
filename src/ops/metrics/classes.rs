//! Counters by key class, with a bounded number of classes.
//!
//! A key's class is its first three segments at most (`olive.notes.note`
//! for `olive.notes.note.17`): the object type, never the instance, so a
//! label never carries a raw key. Classes still come from what clients and
//! backends publish, so each counter family keeps at most [`MAX_CLASSES`]
//! of them, first come first kept, and counts every later one as `other`.
//!
//! The table is an open-addressed array of slots claimed once (a
//! `OnceLock` each) and never freed: a count is a hash of the class, a few
//! atomic loads to find its slot and one atomic add, with no lock and no
//! allocation except the first time a class is seen.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::live::key::Key;

/// Classes kept per family before the rest count as `other`.
pub const MAX_CLASSES: usize = 100;

/// Slots in the table: a power of two over twice [`MAX_CLASSES`], so that
/// probes stay short.
const SLOTS: usize = 256;

/// The label value of the classes past the cap.
pub const OTHER: &str = "other";

#[derive(Debug)]
struct Slot {
    class: OnceLock<Box<str>>,
    count: AtomicU64,
}

/// Counters by key class (see the module doc).
#[derive(Debug)]
pub struct ClassCounter {
    slots: Box<[Slot]>,
    /// Slots claimed, or being claimed.
    used: AtomicUsize,
    other: AtomicU64,
}

impl Default for ClassCounter {
    fn default() -> Self {
        let slots = (0..SLOTS).map(|_| Slot { class: OnceLock::new(), count: AtomicU64::new(0) }).collect();
        ClassCounter { slots, used: AtomicUsize::new(0), other: AtomicU64::new(0) }
    }
}

/// The first three segments of a key at most.
pub fn class(key: &str) -> &str {
    match key.match_indices('.').nth(2) {
        Some((i, _)) => &key[..i],
        None => key,
    }
}

impl ClassCounter {
    /// Adds `n` to the class of `key`.
    pub fn add(&self, key: &Key, n: u64) {
        if n > 0 {
            self.add_class(class(key.as_str()), n);
        }
    }

    fn add_class(&self, class: &str, n: u64) {
        let start = fnv1a(class.as_bytes()) as usize;
        for probe in 0..SLOTS {
            let slot = &self.slots[(start + probe) % SLOTS];
            let claimed = match slot.class.get() {
                Some(c) => c,
                None => {
                    // Reserve a place under the cap before claiming.
                    if self.used.fetch_add(1, Ordering::Relaxed) >= MAX_CLASSES {
                        self.used.fetch_sub(1, Ordering::Relaxed);
                        break;
                    }
                    if slot.class.set(class.into()).is_err() {
                        // Another thread claimed this slot first.
                        self.used.fetch_sub(1, Ordering::Relaxed);
                    }
                    slot.class.get().expect("the slot was just set")
                }
            };
            if **claimed == *class {
                slot.count.fetch_add(n, Ordering::Relaxed);
                return;
            }
        }
        self.other.fetch_add(n, Ordering::Relaxed);
    }

    /// The classes seen, sorted, with their counts; `other` last when any
    /// class was past the cap.
    pub fn snapshot(&self) -> Vec<(&str, u64)> {
        let mut out: Vec<(&str, u64)> = self
            .slots
            .iter()
            .filter_map(|s| Some((&**s.class.get()?, s.count.load(Ordering::Relaxed))))
            .collect();
        out.sort_unstable();
        let other = self.other.load(Ordering::Relaxed);
        if other > 0 {
            out.push((OTHER, other));
        }
        out
    }

    /// The total over every class.
    pub fn total(&self) -> u64 {
        self.snapshot().iter().map(|(_, n)| n).sum()
    }
}

/// FNV-1a: short keys, no allocation, and no need to resist collisions
/// chosen by an attacker (a collision costs one more probe).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> Key {
        Key::parse(s).unwrap()
    }

    #[test]
    fn class_is_at_most_three_segments() {
        for (k, want) in [
            ("olive.notes.note.17", "olive.notes.note"),
            ("olive.notes.note.17.extra", "olive.notes.note"),
            ("olive.notes.note", "olive.notes.note"),
            ("olive.notes", "olive.notes"),
            ("olive", "olive"),
        ] {
            assert_eq!(class(k), want, "{k}");
        }
    }

    #[test]
    fn counts_by_class_and_caps_the_classes() {
        let c = ClassCounter::default();
        for pk in 0..50 {
            c.add(&key(&format!("olive.notes.note.{pk}")), 1);
        }
        c.add(&key("olive.blog.post.1"), 2);
        c.add(&key("olive.blog.post.1"), 0);
        assert_eq!(c.snapshot(), vec![("olive.blog.post", 2), ("olive.notes.note", 50)]);

        for model in 0..200 {
            c.add(&key(&format!("olive.app.m{model}.1")), 1);
        }
        let snap = c.snapshot();
        assert_eq!(snap.len(), MAX_CLASSES + 1, "{MAX_CLASSES} classes and other");
        assert_eq!(snap.last(), Some(&(OTHER, 102)), "the 102 classes past the cap");
        // Classes kept go on counting in their own series.
        c.add(&key("olive.notes.note.9"), 1);
        assert!(c.snapshot().contains(&("olive.notes.note", 51)));
        assert_eq!(c.total(), 50 + 2 + 200 + 1);
    }

    #[test]
    fn concurrent_first_sightings_share_one_slot() {
        let c = std::sync::Arc::new(ClassCounter::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        c.add(&key(&format!("olive.t.m{}.1", i % 10)), 1);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let snap = c.snapshot();
        assert_eq!(snap.len(), 10);
        assert!(snap.iter().all(|&(_, n)| n == 400), "{snap:?}");
    }
}
