//! Service VIP allocation: one IPv4 and one IPv6 address per service, from
//! configured pools.
//!
//! Guarantees: a service keeps its VIPs across re-applies and restarts (the
//! allocator's state is stored with every commit); no two services ever hold
//! the same address; a deleted service's addresses are held back for a
//! quarantine period, because clients may still have them cached from DNS
//! (re-creating the same service within that period gives them back);
//! exhaustion is an error naming the pool. Time is passed in, never read.

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, Ipv6Addr};
use thiserror::Error;

/// Link-local addresses that are someone's well-known endpoint: never a
/// VIP, whatever the pool. RFC 3927 keeps the first and last /24 of
/// 169.254/16 for future use; the rest are documented cloud endpoints.
const RESERVED_V4: [(Ipv4Addr, u8); 8] = [
    (Ipv4Addr::new(169, 254, 0, 0), 24), // RFC 3927 (also OCI's iSCSI 169.254.0.2-4)
    (Ipv4Addr::new(169, 254, 255, 0), 24), // RFC 3927
    (Ipv4Addr::new(169, 254, 169, 254), 32), // instance metadata (AWS, GCP, Azure, OCI, OpenStack)
    (Ipv4Addr::new(169, 254, 169, 253), 32), // Amazon DNS (Route 53 Resolver)
    (Ipv4Addr::new(169, 254, 169, 123), 32), // Amazon Time Sync
    (Ipv4Addr::new(169, 254, 170, 2), 32), // ECS task metadata and credentials
    (Ipv4Addr::new(169, 254, 170, 23), 32), // EKS Pod Identity Agent
    (Ipv4Addr::new(169, 254, 20, 10), 32), // Kubernetes NodeLocal DNSCache
];

/// The IPv6 forms of the same endpoints (EC2's, EKS Pod Identity's).
const RESERVED_V6: [Ipv6Addr; 4] = [
    Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254),
    Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x253),
    Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x123),
    Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x23),
];

/// Whether `a` is never handed out.
pub fn reserved_v4(a: Ipv4Addr) -> bool {
    RESERVED_V4
        .iter()
        .any(|&(net, len)| Ipv4Net::new(net, len).is_ok_and(|n| n.contains(&a)))
}

pub fn reserved_v6(a: Ipv6Addr) -> bool {
    RESERVED_V6.contains(&a)
}

/// How many services an IPv4 pool holds: its addresses less the network
/// and broadcast addresses and the reserved ones.
pub fn capacity_v4(pool: Ipv4Net) -> u128 {
    let pool = pool.trunc();
    let size = 1u128 << (32 - pool.prefix_len());
    let (first, count) = if size > 2 { (1, size - 2) } else { (0, size) };
    let base = u32::from(pool.network()) as u128;
    let reserved: u128 = RESERVED_V4
        .iter()
        .filter_map(|&(net, len)| Ipv4Net::new(net, len).ok())
        .map(|r| {
            // The reserved range's overlap with the usable offsets.
            let (lo, hi) = (
                u32::from(r.network()) as u128,
                u32::from(r.broadcast()) as u128,
            );
            let (from, to) = (lo.max(base + first), hi.min(base + first + count - 1));
            if from <= to { to - from + 1 } else { 0 }
        })
        .sum();
    count.saturating_sub(reserved)
}

#[derive(Debug, Error, PartialEq, Eq)]
#[error(
    "VIP pool {pool} is exhausted: it holds {capacity} services, {assigned} assigned, {held} held back after deletes \
     (the next is free at unix time {next_free}); widen it with {flag} (e.g. {wider}) or wait"
)]
pub struct Exhausted {
    pub pool: IpNet,
    pub capacity: u128,
    pub assigned: usize,
    pub held: usize,
    pub next_free: u64,
    /// The flag that sets the pool.
    pub flag: &'static str,
    /// A wider pool to suggest, with what it holds.
    pub wider: String,
}

/// The VIPs of one service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vips {
    pub v4: Ipv4Addr,
    pub v6: Ipv6Addr,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Held {
    vips: Vips,
    /// Unix seconds after which the addresses may go to another service.
    until: u64,
}

/// What is persisted: assignments and the quarantine, not the pools (those
/// are configuration, and may change between restarts).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocations {
    assigned: BTreeMap<String, Vips>,
    held: BTreeMap<String, Held>,
}

#[derive(Clone, Debug)]
pub struct VipAllocator {
    v4: Ipv4Net,
    v6: Ipv6Net,
    hold_secs: u64,
    state: Allocations,
    /// Addresses assigned or held, for O(log n) free checks.
    used_v4: BTreeSet<Ipv4Addr>,
    used_v6: BTreeSet<Ipv6Addr>,
    /// Next-fit cursors (offsets into the pools), so allocation is O(1) on average.
    cursor_v4: u128,
    cursor_v6: u128,
}

impl VipAllocator {
    pub fn new(v4: Ipv4Net, v6: Ipv6Net, hold_secs: u64, state: Allocations) -> VipAllocator {
        let used_v4 = state
            .assigned
            .values()
            .chain(state.held.values().map(|h| &h.vips))
            .map(|v| v.v4)
            .collect();
        let used_v6 = state
            .assigned
            .values()
            .chain(state.held.values().map(|h| &h.vips))
            .map(|v| v.v6)
            .collect();
        VipAllocator {
            v4: v4.trunc(),
            v6: v6.trunc(),
            hold_secs,
            state,
            used_v4,
            used_v6,
            cursor_v4: 0,
            cursor_v6: 0,
        }
    }

    pub fn allocations(&self) -> &Allocations {
        &self.state
    }

    pub fn get(&self, service: &str) -> Option<Vips> {
        self.state.assigned.get(service).copied()
    }

    /// The service's VIPs: its current ones, those it held before a recent
    /// delete, or fresh ones.
    pub fn allocate(&mut self, service: &str, now: u64) -> Result<Vips, Exhausted> {
        if let Some(v) = self.state.assigned.get(service) {
            return Ok(*v);
        }
        if let Some(h) = self.state.held.remove(service) {
            self.state.assigned.insert(service.to_string(), h.vips);
            return Ok(h.vips);
        }
        self.expire(now);
        let v4 = self.free_v4()?;
        let v6 = self.free_v6()?;
        let vips = Vips {
            v4: Ipv4Addr::from(v4),
            v6: Ipv6Addr::from(v6),
        };
        self.used_v4.insert(vips.v4);
        self.used_v6.insert(vips.v6);
        self.state.assigned.insert(service.to_string(), vips);
        Ok(vips)
    }

    /// Moves the service's VIPs to the quarantine.
    pub fn release(&mut self, service: &str, now: u64) {
        if let Some(vips) = self.state.assigned.remove(service) {
            let until = now.saturating_add(self.hold_secs);
            self.state
                .held
                .insert(service.to_string(), Held { vips, until });
        }
    }

    fn expire(&mut self, now: u64) {
        let expired: Vec<String> = self
            .state
            .held
            .iter()
            .filter(|(_, h)| h.until <= now)
            .map(|(name, _)| name.clone())
            .collect();
        for name in expired {
            if let Some(h) = self.state.held.remove(&name) {
                self.used_v4.remove(&h.vips.v4);
                self.used_v6.remove(&h.vips.v6);
            }
        }
    }

    fn exhausted(&self, pool: IpNet, capacity: u128) -> Exhausted {
        let (flag, wider) = match pool {
            IpNet::V4(p) => {
                // 169.254.128.0/17 is clear of every reserved address but one
                // /24; past it, the whole link-local /16.
                let w: Ipv4Net = if p.prefix_len() > 17 {
                    Ipv4Net::new(Ipv4Addr::new(169, 254, 128, 0), 17)
                } else {
                    Ipv4Net::new(Ipv4Addr::new(169, 254, 0, 0), 16)
                }
                .unwrap_or(p);
                (
                    "--vip-pool-v4",
                    format!("{w}, which holds {} services", capacity_v4(w)),
                )
            }
            IpNet::V6(_) => ("--vip-pool-v6", "a /96".to_string()),
        };
        Exhausted {
            pool,
            flag,
            wider,
            capacity,
            assigned: self.state.assigned.len(),
            held: self.state.held.len(),
            next_free: self.state.held.values().map(|h| h.until).min().unwrap_or(0),
        }
    }

    fn free_v4(&mut self) -> Result<u32, Exhausted> {
        // Skip the network and broadcast addresses of the pool.
        let base = u32::from(self.v4.network()) as u128;
        let size = 1u128 << (32 - self.v4.prefix_len());
        let (first, count) = if size > 2 { (1, size - 2) } else { (0, size) };
        let used = &self.used_v4;
        match next_free(&mut self.cursor_v4, first, count, |off| {
            let a = Ipv4Addr::from((base + off) as u32);
            used.contains(&a) || reserved_v4(a)
        }) {
            Some(off) => Ok((base + off) as u32),
            None => Err(self.exhausted(IpNet::V4(self.v4), capacity_v4(self.v4))),
        }
    }

    fn free_v6(&mut self) -> Result<u128, Exhausted> {
        let base = u128::from(self.v6.network());
        let bits = 128 - u32::from(self.v6.prefix_len());
        // Skip the subnet-router anycast address (offset 0).
        let count = if bits >= 127 {
            u128::MAX
        } else {
            (1u128 << bits) - 1
        };
        let used = &self.used_v6;
        match next_free(&mut self.cursor_v6, 1, count, |off| {
            let a = Ipv6Addr::from(base + off);
            used.contains(&a) || reserved_v6(a)
        }) {
            Some(off) => Ok(base + off),
            None => Err(self.exhausted(IpNet::V6(self.v6), count)),
        }
    }
}

/// Next-fit search over offsets `first..first+count`, starting at the cursor.
/// Bounded by the number of used addresses + 1 probes past the cursor.
fn next_free(
    cursor: &mut u128,
    first: u128,
    count: u128,
    used: impl Fn(u128) -> bool,
) -> Option<u128> {
    if count == 0 {
        return None;
    }
    let start = *cursor % count;
    let mut i = 0u128;
    while i < count {
        let off = first + (start + i) % count;
        if !used(off) {
            *cursor = (start + i + 1) % count;
            return Some(off);
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pool(v4: &str, hold: u64) -> VipAllocator {
        VipAllocator::new(
            v4.parse().unwrap(),
            "fd00:7472:6c73::/112".parse().unwrap(),
            hold,
            Allocations::default(),
        )
    }

    #[test]
    fn first_address_skips_the_network_address() {
        let mut a = pool("169.254.171.0/24", 60);
        let v = a.allocate("checkout", 0).unwrap();
        assert_eq!(v.v4, Ipv4Addr::new(169, 254, 171, 1));
        assert_eq!(v.v6, "fd00:7472:6c73::1".parse::<Ipv6Addr>().unwrap());
    }

    #[test]
    fn exhaustion_names_the_pool() {
        let mut a = pool("169.254.171.0/30", 60); // two usable addresses
        a.allocate("a", 0).unwrap();
        a.allocate("b", 0).unwrap();
        a.release("b", 10);
        let e = a.allocate("c", 20).unwrap_err();
        assert_eq!(e.pool.to_string(), "169.254.171.0/30");
        assert_eq!((e.capacity, e.assigned, e.held, e.next_free), (2, 1, 1, 70));
        let text = e.to_string();
        assert!(text.contains("it holds 2 services"), "{text}");
        assert!(
            text.contains(
                "widen it with --vip-pool-v4 (e.g. 169.254.128.0/17, which holds 32506 services)"
            ),
            "{text}"
        );
        // After the quarantine, the address is free again.
        assert_eq!(
            a.allocate("c", 70).unwrap().v4,
            Ipv4Addr::new(169, 254, 171, 2)
        );
    }

    #[derive(Clone, Debug)]
    enum Op {
        Allocate(u8),
        Release(u8),
        Advance(u16),
        Restart,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..12).prop_map(Op::Allocate),
            2 => (0u8..12).prop_map(Op::Release),
            1 => (0u16..200).prop_map(Op::Advance),
            1 => Just(Op::Restart),
        ]
    }

    /// Every address a pool can give, by allocating until it is
    /// exhausted.
    fn drain(pool_v4: Ipv4Net) -> (Vec<Ipv4Addr>, Exhausted) {
        let mut a = VipAllocator::new(
            pool_v4,
            "fd00:ec2::/112".parse().unwrap(),
            60,
            Allocations::default(),
        );
        let mut got = Vec::new();
        loop {
            match a.allocate(&format!("s{}", got.len()), 0) {
                Ok(v) => {
                    assert!(!reserved_v6(v.v6), "{} handed out", v.v6);
                    got.push(v.v4);
                }
                Err(e) => return (got, e),
            }
        }
    }

    #[test]
    fn the_whole_link_local_range_never_yields_a_reserved_address() {
        let (got, e) = drain("169.254.0.0/16".parse().unwrap());
        assert!(got.iter().all(|a| !reserved_v4(*a)));
        for a in [
            [169, 254, 169, 254],
            [169, 254, 169, 253],
            [169, 254, 169, 123],
            [169, 254, 170, 2],
            [169, 254, 170, 23],
        ] {
            assert!(!got.contains(&Ipv4Addr::from(a)));
        }
        assert_eq!(
            got.len() as u128,
            capacity_v4("169.254.0.0/16".parse().unwrap())
        );
        assert_eq!(e.capacity, got.len() as u128);
        // 65,534 usable, less the usable parts of two /24s and six single
        // addresses.
        assert_eq!(got.len(), 65_534 - 2 * 255 - 6);
        let distinct: BTreeSet<_> = got.iter().collect();
        assert_eq!(distinct.len(), got.len());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any pool inside (or around) the link-local range gives exactly
        /// its capacity, never a reserved address.
        #[test]
        fn no_pool_yields_a_reserved_address(third in 0u8..=255, len in 18u8..=30) {
            let pool = Ipv4Net::new(Ipv4Addr::new(169, 254, third, 0), len).unwrap().trunc();
            let (got, e) = drain(pool);
            prop_assert!(got.iter().all(|a| !reserved_v4(*a) && pool.contains(a)));
            prop_assert_eq!(got.len() as u128, capacity_v4(pool));
            prop_assert_eq!(e.capacity, capacity_v4(pool));
        }
    }

    proptest! {
        /// Any sequence of operations on a small pool (6 usable addresses, so
        /// exhaustion happens often) keeps every invariant.
        #[test]
        fn invariants_hold(ops in proptest::collection::vec(op(), 1..200)) {
            const HOLD: u64 = 100;
            let mut a = pool("169.254.171.0/29", HOLD);
            let mut now = 0u64;
            // Every address ever given to a name, with when it was released.
            let mut last: BTreeMap<String, Vips> = BTreeMap::new();
            let mut released_at: BTreeMap<Ipv4Addr, (String, u64)> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Allocate(n) => {
                        let name = format!("s{n}");
                        let before = a.get(&name);
                        match a.allocate(&name, now) {
                            Ok(v) => {
                                // Stability: an assigned service keeps its VIPs.
                                if let Some(b) = before { prop_assert_eq!(b, v); }
                                // Quarantine: a released address goes to no other
                                // service before its hold expires.
                                if let Some((owner, at)) = released_at.get(&v.v4) {
                                    prop_assert!(owner == &name || now >= at + HOLD,
                                        "{} reused for {} at {} (released by {} at {})", v.v4, name, now, owner, at);
                                }
                                // Coming back within the hold restores the old VIP.
                                let old = last.get(&name).filter(|_| before.is_none());
                                if let Some(old) = old {
                                    if let Some((owner, at)) = released_at.get(&old.v4) {
                                        if owner == &name && now < at + HOLD {
                                            prop_assert_eq!(*old, v);
                                        }
                                    }
                                }
                                prop_assert!(a.v4.contains(&v.v4) && a.v6.contains(&v.v6));
                                last.insert(name, v);
                            }
                            Err(e) => {
                                // Exhaustion only when every usable address is taken.
                                prop_assert_eq!(e.assigned + e.held, 6, "{}", e);
                            }
                        }
                    }
                    Op::Release(n) => {
                        let name = format!("s{n}");
                        if let Some(v) = a.get(&name) {
                            released_at.insert(v.v4, (name.clone(), now));
                        }
                        a.release(&name, now);
                    }
                    Op::Advance(secs) => now += u64::from(secs),
                    Op::Restart => {
                        // Persist and reload, as a restart does.
                        let bytes = serde_json::to_vec(a.allocations()).unwrap();
                        let state: Allocations = serde_json::from_slice(&bytes).unwrap();
                        let reloaded = VipAllocator::new(a.v4, a.v6, HOLD, state);
                        prop_assert_eq!(reloaded.allocations(), a.allocations());
                        a = reloaded;
                    }
                }
                // No address is ever held by two services.
                let s = a.allocations();
                let all: Vec<Vips> = s.assigned.values().chain(s.held.values().map(|h| &h.vips)).copied().collect();
                let v4: BTreeSet<_> = all.iter().map(|v| v.v4).collect();
                let v6: BTreeSet<_> = all.iter().map(|v| v.v6).collect();
                prop_assert_eq!(v4.len(), all.len());
                prop_assert_eq!(v6.len(), all.len());
            }
        }
    }
}
