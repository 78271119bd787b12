//! Pod IP addresses: each pod gets its own loopback address from 127.10.0.0/16.
//!
//! Every address in 127.0.0.0/8 is local on Linux without configuration, so a pod's processes bind
//! their `POD_IP` and other pods, probes and tests on the host reach them there. Addresses are handed
//! out per pod UID and reused after the pod is gone, lowest first.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Mutex;

/// Hands out loopback addresses to pods.
#[derive(Debug, Default)]
pub struct Ipam {
    by_uid: Mutex<BTreeMap<String, Ipv4Addr>>,
}

/// First and last host numbers of the range (127.10.0.2 ..= 127.10.255.254).
const FIRST: u32 = 2;
const LAST: u32 = 0xfffe;

fn addr(n: u32) -> Ipv4Addr {
    Ipv4Addr::new(127, 10, (n >> 8) as u8, (n & 0xff) as u8)
}

impl Ipam {
    /// The address of pod `uid`, allocated on first use; `None` when the range is exhausted.
    pub fn allocate(&self, uid: &str) -> Option<Ipv4Addr> {
        let mut map = self.by_uid.lock().expect("ipam lock");
        if let Some(ip) = map.get(uid) {
            return Some(*ip);
        }
        let used: std::collections::BTreeSet<Ipv4Addr> = map.values().copied().collect();
        let ip = (FIRST..=LAST)
            .map(addr)
            .find(|ip| ip.octets()[3] != 0 && ip.octets()[3] != 255 && !used.contains(ip))?;
        map.insert(uid.to_string(), ip);
        Some(ip)
    }

    /// Frees the address of pod `uid`.
    pub fn release(&self, uid: &str) {
        self.by_uid.lock().expect("ipam lock").remove(uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_stable_and_reused() {
        let ipam = Ipam::default();
        let a = ipam.allocate("a").unwrap();
        let b = ipam.allocate("b").unwrap();
        assert_ne!(a, b);
        assert_eq!(ipam.allocate("a"), Some(a));
        assert!(a.is_loopback() && b.is_loopback());
        ipam.release("a");
        assert_eq!(ipam.allocate("c"), Some(a));
    }

    #[test]
    fn skips_network_and_broadcast_like_octets() {
        let ipam = Ipam::default();
        for i in 0..600 {
            let ip = ipam.allocate(&i.to_string()).unwrap();
            assert!(ip.octets()[3] != 0 && ip.octets()[3] != 255, "{ip}");
        }
    }
}
