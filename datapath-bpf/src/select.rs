//! Choosing a datapath at start: probe what eBPF needs, fail with what is
//! missing and what to do, or (under `auto`) fall back to nftables and say so.

use crate::{Datapath, EbpfDatapath, Error, NftDatapath, NftOptions, Options, mounts};
use std::path::Path;

/// Linux capabilities, by bit number (linux/capability.h).
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

/// The oldest kernel with every hook and link type the programs use.
pub const MIN_KERNEL: (u32, u32) = (5, 8);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    Ebpf,
    Nftables,
    Auto,
}

/// `6.18.44-fc-v657` -> (6, 18).
pub fn parse_kernel(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

fn effective_caps() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

fn has(caps: u64, cap: u32) -> bool {
    caps & (1 << cap) != 0
}

/// What keeps the eBPF datapath from running here, each with what to do.
pub fn probe_ebpf(cgroup: &Path) -> Vec<String> {
    let mut missing = Vec::new();
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    match parse_kernel(release.trim()) {
        Some(v) if v >= MIN_KERNEL => {}
        _ => missing.push(format!(
            "kernel {} is older than {}.{} (cgroup getpeername hooks, bpf_link); upgrade or use --datapath nftables",
            release.trim(),
            MIN_KERNEL.0,
            MIN_KERNEL.1
        )),
    }
    let caps = effective_caps();
    if !has(caps, CAP_BPF) && !has(caps, CAP_SYS_ADMIN) {
        missing.push(
            "no CAP_BPF (or CAP_SYS_ADMIN): run as root or grant CAP_BPF and CAP_NET_ADMIN".into(),
        );
    }
    if let Err(e) = mounts::check_cgroup2(cgroup) {
        missing.push(e.to_string());
    }
    missing
}

/// What keeps the nftables datapath from running here.
pub fn probe_nftables() -> Vec<String> {
    let mut missing = Vec::new();
    if !std::process::Command::new("nft")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        missing.push("the nft command is missing: install the nftables package".into());
    }
    if !has(effective_caps(), CAP_NET_ADMIN) {
        missing.push("no CAP_NET_ADMIN: run as root or grant it".into());
    }
    missing
}

/// Opens the chosen datapath; `auto` prefers eBPF and says why it did not
/// get it.
pub fn open(choice: Choice, ebpf: &Options, nft: &NftOptions) -> Result<Box<dyn Datapath>, Error> {
    let nftables = || -> Result<Box<dyn Datapath>, Error> {
        let missing = probe_nftables();
        if !missing.is_empty() {
            return Err(Error::Unsupported("nftables", missing.join("; ")));
        }
        Ok(Box::new(NftDatapath::attach(nft)?))
    };
    match choice {
        Choice::Nftables => nftables(),
        Choice::Ebpf => {
            let missing = probe_ebpf(&ebpf.cgroup);
            if !missing.is_empty() {
                return Err(Error::Unsupported("ebpf", missing.join("; ")));
            }
            Ok(Box::new(EbpfDatapath::attach(ebpf)?))
        }
        Choice::Auto => {
            let missing = probe_ebpf(&ebpf.cgroup);
            let why = if missing.is_empty() {
                match EbpfDatapath::attach(ebpf) {
                    Ok(dp) => {
                        tracing::info!("datapath auto: chose ebpf (every probe passed)");
                        return Ok(Box::new(dp));
                    }
                    Err(e) => e.to_string(),
                }
            } else {
                missing.join("; ")
            };
            tracing::warn!(reason = %why, "datapath auto: eBPF unavailable, falling back to nftables");
            nftables()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions() {
        assert_eq!(parse_kernel("6.18.44-fc-v657"), Some((6, 18)));
        assert_eq!(parse_kernel("5.4.0-150-generic"), Some((5, 4)));
        assert!(parse_kernel("5.4.0").unwrap() < MIN_KERNEL);
        assert_eq!(parse_kernel("garbage"), None);
    }

    #[test]
    fn a_directory_that_is_not_cgroup2_is_named_with_the_fix() {
        let dir = std::env::temp_dir();
        let missing = probe_ebpf(&dir);
        let cg = missing
            .iter()
            .find(|m| m.contains("is not a cgroup v2 directory"))
            .expect("reported");
        assert!(cg.contains("mount -t cgroup2"), "{cg}");
    }
}
