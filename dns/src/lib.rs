//! The Trellis authoritative DNS server: answers service names with their
//! VIPs, to each network only the services it may see, from snapshots the
//! control plane compiles, swapped in whole as they change.
//!
//! `view` holds the answer rules (a pure function of a snapshot and a
//! question), `handler` picks the asking network, `wire` turns one message
//! into its answer for both transports, `fast` answers the common A and
//! AAAA query over UDP without decoding it, `server` runs UDP (`udp`, batched
//! with recvmmsg/sendmmsg) and TCP (`tcp`), `forward` sends names outside
//! every zone upstream, `feed` follows the control plane, and `lookup` asks
//! one question (for `trellis demo`).
#![forbid(unsafe_code)]

mod fast;
pub mod feed;
pub mod forward;
pub mod handler;
pub mod lookup;
pub mod metrics;
pub mod server;
pub mod tcp;
mod udp;
pub mod view;
mod wire;

/// What the fuzz targets in `fuzz/` drive: the message handler behind both
/// transports.
#[cfg(fuzzing)]
pub mod fuzzing {
    pub use crate::fast::answer as fast_answer;
    pub use crate::wire::{Reply, answer};
    pub use hickory_server::net::xfer::Protocol;
}
