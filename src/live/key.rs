//! Object keys and the patterns that subscribe to them.
//!
//! A [`Key`] names one object (`olive.notes.note.17`) and is what a publish
//! carries as its AMQP routing key. A [`Pattern`] is what a subscription or
//! a grant names; it follows AMQP topic rules, `*` for exactly one segment
//! and `#` for zero or more, so a pattern can be bound on the broker as it
//! is. This module owns the syntax, matching a key against a pattern, and
//! deciding whether one pattern covers another (the access check for
//! subscribing to a pattern).
//!
//! Segment numbers in errors count from 1, as a person reading the key does.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// Longest key or pattern, in bytes: AMQP routing and binding keys are
/// shortstr, whose length is one byte.
pub const MAX_LEN: usize = 255;

/// Most segments in a key or pattern. Real keys have four
/// (`prefix.app.model.pk`); the cap keeps a pattern's matcher state in one
/// `u64` (one bit per position, segments + 1 positions).
pub const MAX_SEGMENTS: usize = 32;

/// Most (position, state set) pairs [`Pattern::contains`] explores before
/// answering "no". Only a granted pattern with a long run of literals and
/// `*` after a `#` (say `#.a.*.*.*.*.*.*.*.*.*.*.*.*`) can come near it;
/// answering "no" then refuses a subscription that might have been allowed,
/// never the other way round.
const CONTAINS_BUDGET: usize = 1 << 16;

/// Why a key or pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the key is empty")]
    Empty,
    #[error("the key is {len} bytes long, at most {MAX_LEN} (an AMQP routing key is a shortstr)")]
    TooLong { len: usize },
    #[error("the key has {count} segments, at most {MAX_SEGMENTS}")]
    TooManySegments { count: usize },
    #[error("segment {segment} is empty")]
    EmptySegment { segment: usize },
    #[error("bad character {ch:?} in segment {segment}: segments use A-Z, a-z, 0-9, '_' and '-'")]
    BadCharacter { ch: char, segment: usize },
    #[error("wildcard in segment {segment}: a publish names a key, never a pattern")]
    WildcardInKey { segment: usize },
    #[error("segment {segment} mixes a wildcard with other characters: '*' and '#' stand alone")]
    PartialWildcard { segment: usize },
}

/// One segment of a pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Seg {
    Literal(Box<str>),
    /// `*`: exactly one segment.
    One,
    /// `#`: zero or more segments.
    Any,
}

/// Splits and checks `text`, the rules shared by keys and patterns.
fn parse_segments(text: &str, wildcards: bool) -> Result<Vec<Seg>, KeyError> {
    if text.is_empty() {
        return Err(KeyError::Empty);
    }
    if text.len() > MAX_LEN {
        return Err(KeyError::TooLong { len: text.len() });
    }
    let count = text.split('.').count();
    if count > MAX_SEGMENTS {
        return Err(KeyError::TooManySegments { count });
    }
    let mut segs = Vec::with_capacity(count);
    for (index, raw) in text.split('.').enumerate() {
        let segment = index + 1;
        let seg = match raw {
            "" => return Err(KeyError::EmptySegment { segment }),
            "*" | "#" if !wildcards => return Err(KeyError::WildcardInKey { segment }),
            "*" => Seg::One,
            "#" => Seg::Any,
            _ => {
                if let Some(ch) = raw.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
                {
                    return Err(match ch {
                        '*' | '#' if wildcards => KeyError::PartialWildcard { segment },
                        '*' | '#' => KeyError::WildcardInKey { segment },
                        _ => KeyError::BadCharacter { ch, segment },
                    });
                }
                Seg::Literal(raw.into())
            }
        };
        segs.push(seg);
    }
    Ok(segs)
}

/// A validated object key such as `olive.notes.note.17`.
///
/// Cloning is a reference count: one key is shared by every subscription
/// and message that names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(Arc<str>);

impl Key {
    /// Checks `text` against the key rules: non-empty segments of
    /// `[A-Za-z0-9_-]` separated by `.`, no wildcards, at most [`MAX_LEN`]
    /// bytes and [`MAX_SEGMENTS`] segments.
    pub fn parse(text: &str) -> Result<Key, KeyError> {
        parse_segments(text, false)?;
        Ok(Key(text.into()))
    }

    /// The key as text, which is also its AMQP routing key.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The segments, in order.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('.')
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Key {
    type Err = KeyError;
    fn from_str(text: &str) -> Result<Key, KeyError> {
        Key::parse(text)
    }
}

/// A validated AMQP topic pattern such as `olive.notes.*.17` or
/// `olive.public.#`.
///
/// Equality is textual: `#.#` and `#` match the same keys but are different
/// patterns (and different broker bindings). Use [`Pattern::contains`] both
/// ways for equivalence.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pattern {
    text: Arc<str>,
    segs: Arc<[Seg]>,
}

/// Sets of matcher positions: bit `i` set means "the first `i` segments of
/// the pattern have matched what was read so far"; bit `len` means a match.
type States = u64;

const fn bit(i: usize) -> States {
    1 << i
}

impl Pattern {
    /// Checks `text` against the pattern rules: like a key, but a segment
    /// may also be exactly `*` or `#`.
    pub fn parse(text: &str) -> Result<Pattern, KeyError> {
        let segs = parse_segments(text, true)?;
        Ok(Pattern { text: text.into(), segs: segs.into() })
    }

    /// The pattern as text, which is also its AMQP binding key.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The key this pattern names, when it has no wildcards and so matches
    /// exactly one key.
    pub fn is_exact(&self) -> Option<Key> {
        self.segs.iter().all(|s| matches!(s, Seg::Literal(_))).then(|| Key(self.text.clone()))
    }

    /// Whether `key` is routed to a binding with this pattern.
    ///
    /// Runs the pattern as a nondeterministic automaton with every live
    /// position in one bitset, so the cost is segments × segments whatever
    /// the wildcards (no backtracking on `#.#.#…`).
    pub fn matches(&self, key: &Key) -> bool {
        let mut states = self.closure(bit(0));
        for segment in key.segments() {
            states = self.step(states, Some(segment));
            if states == 0 {
                return false;
            }
        }
        states & bit(self.segs.len()) != 0
    }

    /// Whether every routing key `other` matches is also matched by `self`:
    /// the check that a grant of `self` allows a subscription to `other`.
    ///
    /// Exact for AMQP topic semantics over all routing keys, including the
    /// empty one that `#` matches: so `*.#` does not contain `#`.
    ///
    /// Why it is enough to look at one "fresh" segment (equal to no literal
    /// of `self`): a key matched by `other` fails `self` iff the same key
    /// with every segment that one of `other`'s wildcards produced replaced
    /// by the fresh segment fails `self`, since `self` can only have matched
    /// such a segment with its own `*` or `#`, which match anything. So this
    /// walks `other` left to right, feeding `self`'s automaton the literal
    /// for a literal and the fresh segment for `*` and for each segment of a
    /// `#` (any number of them), and looks for a way to reach the end of
    /// `other` with `self` not matching. The walk is over (position in
    /// `other`, set of positions of `self`) pairs, which are finitely many,
    /// so it ends; sets are kept small by dropping positions before the
    /// last `#` reached (whatever can follow them can follow that `#`).
    pub fn contains(&self, other: &Pattern) -> bool {
        let end = other.segs.len();
        let start = (0, self.prune(self.closure(bit(0))));
        let mut seen: HashSet<(usize, States)> = HashSet::from([start]);
        let mut todo = vec![start];
        while let Some((j, states)) = todo.pop() {
            if states == 0 {
                // `other` can always finish a key from here (`#` may be
                // empty), and `self` matches nothing after it.
                return false;
            }
            if j == end {
                if states & bit(self.segs.len()) == 0 {
                    return false;
                }
                continue;
            }
            let fresh = self.prune(self.step(states, None));
            let next: &[(usize, States)] = match &other.segs[j] {
                Seg::Literal(l) => &[(j + 1, self.prune(self.step(states, Some(l))))],
                Seg::One => &[(j + 1, fresh)],
                Seg::Any => &[(j + 1, states), (j, fresh)],
            };
            for &pair in next {
                if seen.insert(pair) {
                    todo.push(pair);
                }
            }
            if seen.len() > CONTAINS_BUDGET {
                return false;
            }
        }
        true
    }

    /// Adds the positions reachable without reading a segment: past a `#`
    /// that matches nothing. Edges only go forward, so one pass suffices.
    fn closure(&self, mut states: States) -> States {
        for (i, seg) in self.segs.iter().enumerate() {
            if matches!(seg, Seg::Any) && states & bit(i) != 0 {
                states |= bit(i + 1);
            }
        }
        states
    }

    /// Reads one segment; `None` is a segment equal to no literal.
    fn step(&self, states: States, segment: Option<&str>) -> States {
        let mut next = 0;
        for (i, seg) in self.segs.iter().enumerate() {
            if states & bit(i) == 0 {
                continue;
            }
            match seg {
                Seg::Literal(l) if Some(&**l) == segment => next |= bit(i + 1),
                Seg::Literal(_) => {}
                Seg::One => next |= bit(i + 1),
                Seg::Any => next |= bit(i),
            }
        }
        self.closure(next)
    }

    /// Drops positions before the last live `#`: a `#` position stays live
    /// on every segment and accepts every continuation an earlier position
    /// does (that continuation is some run, which the `#` absorbs, followed
    /// by what follows the `#`). Keeps [`Pattern::contains`] small.
    fn prune(&self, states: States) -> States {
        let last_any =
            self.segs.iter().enumerate().rev().find(|(i, s)| matches!(s, Seg::Any) && states & bit(*i) != 0);
        match last_any {
            Some((i, _)) => states & !(bit(i) - 1),
            None => states,
        }
    }
}

impl From<Key> for Pattern {
    fn from(key: Key) -> Pattern {
        let segs: Vec<Seg> = key.segments().map(|s| Seg::Literal(s.into())).collect();
        Pattern { text: key.0, segs: segs.into() }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for Pattern {
    type Err = KeyError;
    fn from_str(text: &str) -> Result<Pattern, KeyError> {
        Pattern::parse(text)
    }
}

#[cfg(test)]
mod tests;
