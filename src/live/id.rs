//! Message ids: unique across olive nodes and ordered by time.
//!
//! An id travels as the AMQP `message_id`, in `message` and `ack` frames,
//! and as the SSE `id:` that `Last-Event-ID` resumes from, so its text must
//! sort like the id itself. The layout is ULID's: 48 bits of milliseconds
//! since the Unix epoch, then 80 random bits, written as 26 characters of
//! Crockford base32. The random part keeps two nodes from colliding in the
//! same millisecond; within one process a generator never repeats and never
//! goes backwards, even when the wall clock does.

use std::fmt;
use std::str::FromStr;
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

/// Crockford's base32 alphabet (no I, L, O, U), in ascending order so that
/// text order is numeric order.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Characters in an id's text: 128 bits at 5 bits a character.
pub const TEXT_LEN: usize = 26;

const RANDOM_BITS: u32 = 80;
const RANDOM_MASK: u128 = (1 << RANDOM_BITS) - 1;
const TIMESTAMP_MASK: u64 = (1 << 48) - 1;

/// Why a message id's text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageIdError {
    #[error("a message id is {TEXT_LEN} characters, not {len}")]
    Length { len: usize },
    #[error("bad character {ch:?} at {at} in a message id (Crockford base32)")]
    BadCharacter { ch: char, at: usize },
    #[error("a message id starts with 0-7 (it holds 128 bits)")]
    Overflow,
}

/// A message id. `Ord` is time order, and agrees with the order of the
/// text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(u128);

/// The process's generator: the last id handed out, behind a mutex held for
/// a compare and an add.
static GENERATOR: Generator = Generator::new();

impl MessageId {
    /// A fresh id, greater than every id this process made before.
    #[allow(clippy::new_without_default)] // a default id would not be fresh
    pub fn new() -> MessageId {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
        let now = u64::try_from(now).unwrap_or(u64::MAX);
        GENERATOR.next(now, fastrand::u128(..))
    }

    /// The id with this timestamp and random part (extra high bits of
    /// either are dropped).
    pub fn from_parts(timestamp_ms: u64, random: u128) -> MessageId {
        MessageId(u128::from(timestamp_ms & TIMESTAMP_MASK) << RANDOM_BITS | (random & RANDOM_MASK))
    }

    /// Milliseconds since the Unix epoch when the id was made (or, if the
    /// clock went back, when the id it follows was made).
    pub fn timestamp_ms(&self) -> u64 {
        // The shift leaves 48 bits, which always fit.
        u64::try_from(self.0 >> RANDOM_BITS).unwrap_or(u64::MAX)
    }

    /// Reads the 26-character text form; lower case is accepted.
    pub fn parse(text: &str) -> Result<MessageId, MessageIdError> {
        let len = text.chars().count();
        if len != TEXT_LEN {
            return Err(MessageIdError::Length { len });
        }
        let mut value: u128 = 0;
        for (at, ch) in text.chars().enumerate() {
            let upper = ch.to_ascii_uppercase();
            let digit = ALPHABET
                .iter()
                .position(|&c| char::from(c) == upper)
                .ok_or(MessageIdError::BadCharacter { ch, at })?;
            if at == 0 && digit > 7 {
                return Err(MessageIdError::Overflow);
            }
            value = value << 5 | digit as u128;
        }
        Ok(MessageId(value))
    }

    /// The id as a number.
    pub fn as_u128(&self) -> u128 {
        self.0
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = [0u8; TEXT_LEN];
        for (i, c) in text.iter_mut().enumerate() {
            let shift = 5 * (TEXT_LEN - 1 - i);
            *c = ALPHABET[(self.0 >> shift) as usize & 31];
        }
        // Every byte comes from ALPHABET, which is ASCII.
        f.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)
    }
}

impl FromStr for MessageId {
    type Err = MessageIdError;
    fn from_str(text: &str) -> Result<MessageId, MessageIdError> {
        MessageId::parse(text)
    }
}

/// Hands out increasing ids. A std mutex and not an atomic: `u128` atomics
/// are not stable, and the critical section is a compare and an add.
struct Generator {
    last: Mutex<u128>,
}

impl Generator {
    const fn new() -> Generator {
        Generator { last: Mutex::new(0) }
    }

    /// The id for `now_ms` and `random`, unless that is not above the last
    /// one (same millisecond, or the clock went back): then the last one
    /// plus one, as ULID's monotonic mode does. Another node in the same
    /// millisecond started from its own random point, so incrementing does
    /// not make collisions likely.
    fn next(&self, now_ms: u64, random: u128) -> MessageId {
        let candidate = MessageId::from_parts(now_ms, random).0;
        // The guarded value is a plain number, valid even if a holder
        // panicked.
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        // `last + 1` overflows only after the year 10889.
        let next = if candidate > *last { candidate } else { last.checked_add(1).unwrap_or(candidate) };
        *last = next;
        MessageId(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_over_many_generations() {
        let mut prev = MessageId::new();
        for _ in 0..100_000 {
            let id = MessageId::new();
            assert!(id > prev, "{id} after {prev}");
            assert!(id.to_string() > prev.to_string());
            prev = id;
        }
    }

    #[test]
    fn monotonic_when_the_clock_goes_back() {
        let generator = Generator::new();
        let first = generator.next(1_000_000, 7);
        let back = generator.next(999_000, 0);
        let same = generator.next(1_000_000, 0);
        assert!(back > first && same > back);
        assert_eq!(back.timestamp_ms(), 1_000_000, "keeps the last time, not the earlier clock");
        let later = generator.next(1_000_001, 5);
        assert_eq!(later, MessageId::from_parts(1_000_001, 5));
    }

    #[test]
    fn text_order_is_numeric_order() {
        let samples = [0, 1, 31, 32, RANDOM_MASK, RANDOM_MASK + 1, u128::MAX >> 1, u128::MAX - 1, u128::MAX];
        let mut ids: Vec<MessageId> = samples.iter().map(|&v| MessageId(v)).collect();
        for _ in 0..1000 {
            ids.push(MessageId(fastrand::u128(..) >> fastrand::u32(0..128)));
        }
        let mut by_text = ids.clone();
        by_text.sort_by_key(|id| id.to_string());
        ids.sort();
        assert_eq!(ids, by_text);
    }

    #[test]
    fn round_trips() {
        for id in [
            MessageId(0),
            MessageId(u128::MAX),
            MessageId::new(),
            MessageId::from_parts(1_700_000_000_000, 42),
        ] {
            let text = id.to_string();
            assert_eq!(text.len(), TEXT_LEN);
            assert_eq!(MessageId::parse(&text), Ok(id));
            assert_eq!(text.to_ascii_lowercase().parse(), Ok(id));
        }
        assert_eq!(MessageId(0).to_string(), "00000000000000000000000000");
        assert_eq!(MessageId(u128::MAX).to_string(), "7ZZZZZZZZZZZZZZZZZZZZZZZZZ");
        let id = MessageId::from_parts(1_700_000_000_000, 42);
        assert_eq!(id.timestamp_ms(), 1_700_000_000_000);
        assert_eq!(id.as_u128() & RANDOM_MASK, 42);
    }

    #[test]
    fn rejects_garbage() {
        let cases: &[(&str, MessageIdError)] = &[
            ("", MessageIdError::Length { len: 0 }),
            ("01ARZ3NDEKTSV4RRFFQ69G5FA", MessageIdError::Length { len: 25 }),
            ("01ARZ3NDEKTSV4RRFFQ69G5FAVV", MessageIdError::Length { len: 27 }),
            ("01ARZ3NDEKTSV4RRFFQ69G5FAU", MessageIdError::BadCharacter { ch: 'U', at: 25 }),
            ("01ARZ3NDEKTSV4RRFFQ69G5F-V", MessageIdError::BadCharacter { ch: '-', at: 24 }),
            ("I1ARZ3NDEKTSV4RRFFQ69G5FAV", MessageIdError::BadCharacter { ch: 'I', at: 0 }),
            ("81ARZ3NDEKTSV4RRFFQ69G5FAV", MessageIdError::Overflow),
            ("01ARZ3NDEKTSV4RRFFQ69G5FAé", MessageIdError::BadCharacter { ch: 'é', at: 25 }),
        ];
        for (text, want) in cases {
            assert_eq!(MessageId::parse(text).as_ref(), Err(want), "{text:?}");
        }
        assert!(MessageId::parse("01ARZ3NDEKTSV4RRFFQ69G5FAV").is_ok());
    }
}
