//! The Trellis eBPF datapath: makes a TCP connection to a service VIP land
//! on the node-local proxy, at connect() time, for the processes of one
//! cgroup v2 subtree, and lets the proxy recover the original VIP:port with
//! `getsockopt(SO_ORIGINAL_DST)` as it would after an nftables redirect.
//!
//! The kernel side is C (`bpf/`, compiled by `build.rs` with clang); this
//! crate loads it with aya, pins maps and links under a bpffs directory so
//! that redirection survives a restart of the agent, and reconciles the
//! services map with each snapshot. See docs/datapath.md.
#![forbid(unsafe_code)]

pub mod abi;
mod ebpf;
pub mod mounts;
mod nft;
mod select;

pub use ebpf::{Callers, EbpfDatapath, Options};
pub use nft::{NftDatapath, NftOptions};
pub use select::{Choice, MIN_KERNEL, open, probe_ebpf, probe_nftables};

use std::net::IpAddr;

/// One service as the datapath sees it: a VIP and the ports it listens on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceEntry {
    pub vip: IpAddr,
    pub ports: Vec<u16>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reconciled {
    pub added: usize,
    pub removed: usize,
    pub unchanged: usize,
}

/// What the node agent needs from a datapath, whichever it is: connections
/// to the services' VIP:ports reach the proxy, which recovers the original
/// destination with SO_ORIGINAL_DST.
pub trait Datapath: Send {
    fn name(&self) -> &'static str;
    /// Makes the datapath redirect exactly `services`; established
    /// connections are never disturbed.
    fn reconcile(&mut self, services: &[ServiceEntry]) -> Result<Reconciled, Error>;

    /// The control plane's VIP pools (CIDRs), for a datapath that needs
    /// routes to them; called with every snapshot.
    fn route_pools(&mut self, _pools: &[String]) -> Result<(), Error> {
        Ok(())
    }

    /// Who made each redirected connection, where the datapath knows it.
    fn callers(&self) -> Option<Callers> {
        None
    }
}

use std::path::PathBuf;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    #[error("cannot mount bpffs on {0}: {1}")]
    Mount(PathBuf, String),
    #[error(
        "{0} is not a cgroup v2 directory (it is on {1}); mount one with `mount -t cgroup2 none DIR` and pass that"
    )]
    NotCgroup2(PathBuf, String),
    #[error("{0}: {1}")]
    Io(PathBuf, #[source] std::io::Error),
    #[error("loading the eBPF object: {0}")]
    Load(#[source] Box<aya::EbpfError>),
    #[error("eBPF program {0}: {1}")]
    Program(&'static str, #[source] Box<aya::programs::ProgramError>),
    #[error("eBPF map {0}: {1}")]
    Map(&'static str, #[source] Box<aya::maps::MapError>),
    #[error("pinning {0}: {1}")]
    Pin(PathBuf, String),
    #[error("more than {0} services")]
    TooManyServices(u32),
    #[error("nftables: {0}")]
    Nft(String),
    #[error("the {0} datapath cannot run here: {1}")]
    Unsupported(&'static str, String),
}
