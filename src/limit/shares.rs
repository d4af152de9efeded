//! Concurrent things per client: connections per address
//! (`limits.max_connections_per_ip`) and live sessions per user
//! (`rate_limits.max_sessions_per_user`).
//!
//! `limits.max_connections` alone lets one client take every slot: with
//! slowloris holding more connections than the cap, each new visitor waits
//! in the kernel backlog behind the attacker's reconnections for as many
//! header timeouts as it takes to reach the front. A share per address
//! keeps room for everyone else. IPv6 clients are counted by /64
//! ([`ip_key`]), the smallest block a site is usually given, so an
//! attacker cannot step through the addresses of its own prefix.
//!
//! The map holds one entry per client with something open, removed when
//! its last one closes, so it never outgrows what is open.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// What a connection refused for its address's share is told before it is
/// closed; written once, without reading the request, on plain HTTP
/// listeners only (TLS would need a handshake first, which is the cost
/// being refused).
pub const REFUSAL: &[u8] = b"HTTP/1.1 429 Too Many Requests\r\nconnection: close\r\ncontent-type: text/plain\r\ncontent-length: 45\r\n\r\ntoo many connections from your address (429)\n";

/// At most `max` held at once per key.
#[derive(Debug)]
pub struct Shares<K: Hash + Eq> {
    max: usize,
    open: Mutex<HashMap<K, usize>>,
}

/// One place in a key's share; released on drop.
#[derive(Debug)]
pub struct Share<K: Hash + Eq> {
    owner: Arc<Shares<K>>,
    key: K,
}

/// Connections per address: keys from [`ip_key`].
pub type PerIp = Shares<u128>;
pub type IpSlot = Share<u128>;

impl<K: Hash + Eq + Clone> Shares<K> {
    pub fn new(max: usize) -> Arc<Shares<K>> {
        Arc::new(Shares { max, open: Mutex::new(HashMap::new()) })
    }

    /// A place for `key`, or `None` when its share is taken.
    pub fn try_take(self: &Arc<Self>, key: K) -> Option<Share<K>> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(key.clone()).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(Share { owner: self.clone(), key })
    }

    /// Places held by `key` now.
    pub fn held(&self, key: &K) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).get(key).copied().unwrap_or(0)
    }
}

impl<K: Hash + Eq> Drop for Share<K> {
    fn drop(&mut self) {
        let mut open = self.owner.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// IPv4 (and IPv4-mapped IPv6) addresses as themselves, in a range of
/// their own; IPv6 by /64.
pub fn ip_key(ip: IpAddr) -> u128 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => (u128::from(v6) & !((1u128 << 64) - 1)) | (1 << 32),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_gets_its_share_and_gets_it_back() {
        let per_ip = PerIp::new(2);
        let a = ip_key("192.0.2.1".parse().unwrap());
        let b = ip_key("192.0.2.2".parse().unwrap());
        let first = per_ip.try_take(a).unwrap();
        let _second = per_ip.try_take(a).unwrap();
        assert!(per_ip.try_take(a).is_none());
        assert!(per_ip.try_take(b).is_some(), "another address is not affected");
        drop(first);
        assert!(per_ip.try_take(a).is_some());
    }

    #[test]
    fn entries_are_removed_with_their_last_place() {
        let per_user = Shares::<Arc<str>>::new(2);
        let slot = per_user.try_take("42".into()).unwrap();
        assert_eq!(per_user.held(&"42".into()), 1);
        drop(slot);
        assert!(per_user.open.lock().unwrap().is_empty());
    }

    /// IPv6 by /64; IPv4-mapped IPv6 is the IPv4 address.
    #[test]
    fn keys() {
        let key = |s: &str| ip_key(s.parse().unwrap());
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:192.0.2.1"), key("192.0.2.1"));
        assert_ne!(key("::c000:201"), key("192.0.2.1"));
    }
}
