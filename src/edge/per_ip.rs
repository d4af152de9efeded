//! Open connections per client address (`limits.max_connections_per_ip`).
//!
//! `limits.max_connections` alone lets one client take every slot: with
//! slowloris holding more connections than the cap, each new visitor waits
//! in the kernel backlog behind the attacker's reconnections for as many
//! header timeouts as it takes to reach the front. A share per address
//! keeps room for everyone else. IPv6 clients are counted by /64, the
//! smallest block a site is usually given, so an attacker cannot step
//! through the addresses of its own prefix.
//!
//! The map holds one entry per address with a connection open, removed
//! when its last connection closes, so it never outgrows
//! `max_connections`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// What a refused connection is told before it is closed; written once,
/// without reading the request, on plain HTTP listeners only (TLS would
/// need a handshake first, which is the cost being refused).
pub const REFUSAL: &[u8] = b"HTTP/1.1 429 Too Many Requests\r\nconnection: close\r\ncontent-type: text/plain\r\ncontent-length: 45\r\n\r\ntoo many connections from your address (429)\n";

#[derive(Debug)]
pub struct PerIp {
    max: usize,
    open: Mutex<HashMap<u128, usize>>,
}

/// One connection's place in its address's share; released on drop.
#[derive(Debug)]
pub struct IpSlot {
    owner: Arc<PerIp>,
    key: u128,
}

impl PerIp {
    pub fn new(max: usize) -> Arc<PerIp> {
        Arc::new(PerIp { max, open: Mutex::new(HashMap::new()) })
    }

    /// A slot for `ip`, or `None` when its share is taken.
    pub fn try_take(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        let key = key(ip);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(key).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(IpSlot { owner: self.clone(), key })
    }

    /// Connections open from `ip`'s address (or /64).
    pub fn open(&self, ip: IpAddr) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).get(&key(ip)).copied().unwrap_or(0)
    }
}

impl Drop for IpSlot {
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
fn key(ip: IpAddr) -> u128 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => (u128::from(v6) & !((1u128 << 64) - 1)) | (1 << 32),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_gets_its_share_and_gets_it_back() {
        let per_ip = PerIp::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = per_ip.try_take(a).unwrap();
        let _second = per_ip.try_take(a).unwrap();
        assert!(per_ip.try_take(a).is_none());
        assert!(per_ip.try_take(b).is_some(), "another address is not affected");
        drop(first);
        assert!(per_ip.try_take(a).is_some());
    }

    #[test]
    fn entries_are_removed_with_their_last_connection() {
        let per_ip = PerIp::new(2);
        let slot = per_ip.try_take("192.0.2.1".parse().unwrap()).unwrap();
        drop(slot);
        assert!(per_ip.open.lock().unwrap().is_empty());
    }

    /// IPv6 by /64; IPv4-mapped IPv6 is the IPv4 address.
    #[test]
    fn keys() {
        let same = ["2001:db8:1:2::1", "2001:db8:1:2:ffff::9"];
        assert_eq!(key(same[0].parse().unwrap()), key(same[1].parse().unwrap()));
        assert_ne!(key("2001:db8:1:2::1".parse().unwrap()), key("2001:db8:1:3::1".parse().unwrap()));
        assert_eq!(key("::ffff:192.0.2.1".parse().unwrap()), key("192.0.2.1".parse().unwrap()));
        assert_ne!(key("::c000:201".parse().unwrap()), key("192.0.2.1".parse().unwrap()));
    }
}
