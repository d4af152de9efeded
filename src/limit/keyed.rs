//! A rate per client (address, user): governor's keyed GCRA limiter, with
//! the memory it keeps bounded however many distinct clients come.
//!
//! A client's entry is only worth keeping while its allowance is not full
//! again, at most `burst / rate` seconds after its last request; governor's
//! `retain_recent` drops the rest. Every [`SWEEP_EVERY`] checks, a limiter
//! sweeps if a second has passed since the last sweep or it holds more
//! than `tracked` entries; if they are all recent (a flood from more
//! addresses than `tracked` within one window) it starts afresh and counts
//! a reset, since a flood that wide defeats a per-address limit anyway,
//! and memory stays bounded.

use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Checks between two looks at a limiter's size.
pub const SWEEP_EVERY: usize = 4096;

/// Least time between two sweeps of a limiter within its size.
const TIDY_INTERVAL: Duration = Duration::from_secs(1);

pub struct Keyed<K: Hash + Eq + Clone> {
    limiter: RwLock<DefaultKeyedRateLimiter<K>>,
    quota: Quota,
    tracked: usize,
    checks: AtomicUsize,
    /// When the limiter was made, and the last sweep, in ms since then.
    born: Instant,
    swept_ms: AtomicU64,
    /// Times the limiter started afresh (a flood wider than `tracked`).
    pub resets: AtomicU64,
}

/// A request over its client's rate; it may try again after this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub retry_after: Duration,
}

impl Limited {
    /// Whole seconds for `Retry-After` (RFC 9110 §10.2.3), at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        let secs = self.retry_after.as_nanos().div_ceil(1_000_000_000);
        u64::try_from(secs).unwrap_or(u64::MAX).max(1)
    }
}

/// `per_second` sustained with `burst` at once; `None` when the rate is 0
/// (off). Validation makes sure the burst of a rate that is on is not 0.
pub fn quota(per_second: u32, burst: u32) -> Option<Quota> {
    let rate = NonZeroU32::new(per_second)?;
    Some(Quota::per_second(rate).allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN)))
}

impl<K: Hash + Eq + Clone> Keyed<K> {
    pub fn new(quota: Quota, tracked: usize) -> Keyed<K> {
        Keyed {
            limiter: RwLock::new(RateLimiter::keyed(quota)),
            quota,
            tracked,
            checks: AtomicUsize::new(0),
            born: Instant::now(),
            swept_ms: AtomicU64::new(0),
            resets: AtomicU64::new(0),
        }
    }

    /// Spends one of `key`'s allowance, or says when there is one again.
    pub fn check(&self, key: &K) -> Result<(), Limited> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.sweep();
        }
        let limiter = self.limiter.read().unwrap_or_else(|e| e.into_inner());
        limiter
            .check_key(key)
            .map_err(|not_until| Limited { retry_after: not_until.wait_time_from(limiter.clock().now()) })
    }

    /// Bounds the memory: drops clients whose allowance is full again once
    /// a second, or at once when there are more than `tracked`, and starts
    /// afresh if that is not enough.
    fn sweep(&self) {
        {
            let limiter = self.limiter.read().unwrap_or_else(|e| e.into_inner());
            let now_ms = self.born.elapsed().as_millis() as u64;
            let due = now_ms.saturating_sub(self.swept_ms.load(Ordering::Relaxed))
                >= TIDY_INTERVAL.as_millis() as u64;
            if !due && limiter.len() <= self.tracked {
                return;
            }
            self.swept_ms.store(now_ms, Ordering::Relaxed);
            limiter.retain_recent();
            limiter.shrink_to_fit();
            if limiter.len() <= self.tracked {
                return;
            }
        }
        *self.limiter.write().unwrap_or_else(|e| e.into_inner()) = RateLimiter::keyed(self.quota);
        self.resets.fetch_add(1, Ordering::Relaxed);
    }

    /// Clients remembered now.
    pub fn len(&self) -> usize {
        self.limiter.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_gets_its_burst_then_waits() {
        let limit = Keyed::new(quota(10, 3).unwrap(), 100);
        for _ in 0..3 {
            assert!(limit.check(&1u32).is_ok());
        }
        let limited = limit.check(&1u32).unwrap_err();
        assert!(limited.retry_after <= Duration::from_millis(100), "{limited:?}");
        assert_eq!(limited.retry_after_secs(), 1);
        assert!(limit.check(&2u32).is_ok(), "another client has its own allowance");
        std::thread::sleep(Duration::from_millis(110));
        assert!(limit.check(&1u32).is_ok(), "recovered after 1/rate");
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let secs = |ms| Limited { retry_after: Duration::from_millis(ms) }.retry_after_secs();
        assert_eq!([secs(0), secs(1), secs(999), secs(1000), secs(1001), secs(2500)], [1, 1, 1, 1, 2, 3]);
    }

    #[test]
    fn zero_is_off() {
        assert!(quota(0, 10).is_none());
        assert!(quota(1, 0).is_some(), "validation refuses it; here it is a burst of 1");
    }

    /// A million distinct clients, each once, as a flood from a botnet or
    /// a scan of an IPv6 range: memory stays bounded by `tracked` (plus
    /// what arrives between two sweeps), and the limit still works after.
    #[test]
    fn a_million_clients_keep_memory_bounded() {
        let tracked = 50_000;
        // The default HTTP limit: one request keeps an entry recent for
        // 1/200 s, so sweeps keep up with the flood.
        let limit = Keyed::new(quota(200, 400).unwrap(), tracked);
        let mut most = 0;
        for client in 0..1_000_000u128 {
            assert!(limit.check(&client).is_ok());
            if client % 1024 == 0 {
                most = most.max(limit.len());
            }
        }
        assert!(most <= tracked + SWEEP_EVERY, "held {most} entries");
        for _ in 0..400 {
            let _ = limit.check(&7u128);
        }
        assert!(limit.check(&7u128).is_err(), "still limits a client after the flood");
    }

    /// A flood wider than `tracked` within one window (entries that stay
    /// recent for a second) cannot be swept: the limiter starts afresh.
    #[test]
    fn a_flood_wider_than_tracked_resets() {
        let limit = Keyed::new(quota(1, 1).unwrap(), 1000);
        let mut most = 0;
        for client in 0..20_000u32 {
            assert!(limit.check(&client).is_ok());
            most = most.max(limit.len());
        }
        assert!(most <= 1000 + SWEEP_EVERY, "held {most} entries");
        assert!(limit.resets.load(Ordering::Relaxed) > 0);
    }

    /// Clients whose allowance is full again are swept, not reset.
    #[test]
    fn quiet_clients_are_swept() {
        let limit = Keyed::new(quota(1000, 1).unwrap(), 100);
        for client in 0..1000u32 {
            let _ = limit.check(&client);
        }
        assert_eq!(limit.len(), 1000);
        std::thread::sleep(TIDY_INTERVAL);
        // The next sweep is due: a second passed.
        for _ in 0..SWEEP_EVERY {
            let _ = limit.check(&0);
        }
        assert_eq!(limit.len(), 1, "only the client still sending is left");
        assert_eq!(limit.resets.load(Ordering::Relaxed), 0);
    }
}
