//! The map layouts of `bpf/trellis.h`, encoded as byte arrays (aya reads and
//! writes `[u8; N]` directly, so no `unsafe` Pod impls are needed). The sizes
//! are checked against the loaded object's maps when they are opened.
//! Addresses and service ports are in network byte order, ids and flags in
//! host order, exactly as the C structs have them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Must equal `TRELLIS_ABI_VERSION` in `bpf/trellis.h`.
pub const ABI_VERSION: u32 = 2;

pub const AF_INET: u8 = 2;
pub const AF_INET6: u8 = 10;

/// `TRELLIS_MAX_SERVICES`: entries of the services and stats maps.
pub const MAX_SERVICES: u32 = 65_536;

/// `TRELLIS_SVC_VIP_ONLY`.
pub const SVC_VIP_ONLY: u32 = 1;

/// `struct trellis_svc_key`.
pub type SvcKeyBytes = [u8; 20];
/// `struct trellis_svc_value`.
pub type SvcValueBytes = [u8; 8];
/// `struct trellis_config`.
pub type ConfigBytes = [u8; 28];
/// `struct trellis_stats`.
pub type StatsBytes = [u8; 16];
/// `struct trellis_orig`: the original destination (laid out as
/// `trellis_svc_key`) and, at byte 24, the caller's cgroup id.
pub type OrigBytes = [u8; 32];
/// `struct trellis_peer`.
pub type PeerBytes = [u8; 24];

/// The caller's cgroup id in a `trellis_orig`.
pub fn orig_cgroup(b: &OrigBytes) -> u64 {
    let mut id = [0u8; 8];
    id.copy_from_slice(&b[24..32]);
    u64::from_ne_bytes(id)
}

/// The `trellis_peer` key of a client endpoint as the proxy sees it:
/// address in network order, port and family in host order.
pub fn peer_key(peer: std::net::SocketAddr) -> PeerBytes {
    let (addr, family) = addr_bytes(peer.ip());
    let mut b = [0u8; 24];
    b[..16].copy_from_slice(&addr);
    b[16..20].copy_from_slice(&u32::from(peer.port()).to_ne_bytes());
    b[20..24].copy_from_slice(&u32::from(family).to_ne_bytes());
    b
}

fn addr_bytes(ip: IpAddr) -> ([u8; 16], u8) {
    match ip {
        IpAddr::V4(v4) => {
            let mut a = [0u8; 16];
            a[..4].copy_from_slice(&v4.octets());
            (a, AF_INET)
        }
        IpAddr::V6(v6) => (v6.octets(), AF_INET6),
    }
}

/// A VIP and port; port 0 is the VIP's own entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SvcKey {
    pub vip: IpAddr,
    pub port: u16,
}

impl SvcKey {
    pub fn encode(&self) -> SvcKeyBytes {
        let (addr, family) = addr_bytes(self.vip);
        let mut b = [0u8; 20];
        b[..16].copy_from_slice(&addr);
        b[16..18].copy_from_slice(&self.port.to_be_bytes());
        b[18] = family;
        b
    }

    pub fn decode(b: &SvcKeyBytes) -> Option<SvcKey> {
        let vip = match b[18] {
            AF_INET => IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3])),
            AF_INET6 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&b[..16]).ok()?)),
            _ => return None,
        };
        Some(SvcKey {
            vip,
            port: u16::from_be_bytes([b[16], b[17]]),
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SvcValue {
    pub id: u32,
    pub flags: u32,
}

impl SvcValue {
    pub fn encode(&self) -> SvcValueBytes {
        let mut b = [0u8; 8];
        b[..4].copy_from_slice(&self.id.to_ne_bytes());
        b[4..].copy_from_slice(&self.flags.to_ne_bytes());
        b
    }

    pub fn decode(b: &SvcValueBytes) -> SvcValue {
        SvcValue {
            id: u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
            flags: u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
        }
    }
}

/// `struct trellis_config`: where redirected connections go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    pub proxy_v4: Ipv4Addr,
    pub proxy_v6: Ipv6Addr,
    pub proxy_port: u16,
    pub proxy_mark: u32,
}

impl Config {
    pub fn encode(&self) -> ConfigBytes {
        let mut b = [0u8; 28];
        b[..4].copy_from_slice(&self.proxy_v4.octets());
        b[4..20].copy_from_slice(&self.proxy_v6.octets());
        b[20..22].copy_from_slice(&self.proxy_port.to_be_bytes());
        b[24..28].copy_from_slice(&self.proxy_mark.to_ne_bytes());
        b
    }
}

/// `struct trellis_meta`.
pub type MetaBytes = [u8; 24];

/// Who owns the pins; see `struct trellis_meta`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    pub abi: u32,
    pub object: u64,
    pub cgroup_id: u64,
}

impl Meta {
    pub fn encode(&self) -> MetaBytes {
        let mut b = [0u8; 24];
        b[..4].copy_from_slice(&self.abi.to_ne_bytes());
        b[8..16].copy_from_slice(&self.object.to_ne_bytes());
        b[16..24].copy_from_slice(&self.cgroup_id.to_ne_bytes());
        b
    }

    pub fn decode(b: &MetaBytes) -> Meta {
        let word = |i: usize| u64::from_ne_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
        Meta {
            abi: u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
            object: word(8),
            cgroup_id: word(16),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub redirected: u64,
    pub refused: u64,
}

impl Stats {
    pub fn decode(b: &StatsBytes) -> Stats {
        let word = |i: usize| u64::from_ne_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
        Stats {
            redirected: word(0),
            refused: word(8),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_in_network_order() {
        let k = SvcKey {
            vip: "169.254.171.10".parse().unwrap(),
            port: 80,
        };
        let b = k.encode();
        assert_eq!(&b[..4], &[169, 254, 171, 10]);
        assert_eq!(&b[16..19], &[0, 80, AF_INET]);
        assert_eq!(SvcKey::decode(&b), Some(k));
        let k6 = SvcKey {
            vip: "fd00:7472:6c73::1".parse().unwrap(),
            port: 8443,
        };
        assert_eq!(SvcKey::decode(&k6.encode()), Some(k6));
    }
}
