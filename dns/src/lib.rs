//! The Trellis authoritative DNS server: answers service names with their
//! VIPs, to each network only the services it may see, from snapshots the
//! control plane compiles, swapped in whole as they change.
#![forbid(unsafe_code)]

pub mod view;
