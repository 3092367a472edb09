//! The nftables fallback for hosts without eBPF: a DNAT (`redirect`) of
//! VIP:port to the proxy in the nat output hook, matched against two sets, and
//! SO_ORIGINAL_DST answered by conntrack, so the proxy makes the same call as
//! with the eBPF datapath.
//!
//! Differences from eBPF, documented in docs/datapath.md: it applies to the
//! whole network namespace, not one cgroup (nft resolves `socket cgroupv2`
//! paths under /sys/fs/cgroup, which need not be cgroup v2); the VIP pools
//! need a `local` route on lo, because for local traffic the route lookup
//! comes before the nat hook; connections to unknown VIPs are then refused
//! (RST) rather than unreachable. Everything lives in one table of our own,
//! replaced atomically by one `nft -f` transaction.

use crate::{Datapath, Error, Reconciled, ServiceEntry};
use std::collections::BTreeSet;
use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};

#[derive(Clone, Debug)]
pub struct NftOptions {
    /// Name of our table (family `inet`), e.g. `trellis`.
    pub table: String,
    /// Run nft inside this network namespace (`ip netns exec`); `None` = ours.
    pub netns: Option<String>,
    /// The proxy's listener port (redirect goes to the local address).
    pub proxy_port: u16,
    /// SO_MARK of the proxy's upstream sockets: never redirected.
    pub proxy_mark: u32,
    /// VIP pools (CIDRs) routed `local` on lo at attach, so that connects to
    /// VIPs reach the nat hook at all; a node routes its snapshot's pools
    /// instead ([`Datapath::route_pools`]). Removed on cleanup.
    pub vip_pools: Vec<String>,
}

/// The routing protocol number our routes are tagged with, so cleanup
/// removes exactly ours (whichever pools they were for) and no one else's.
const ROUTE_PROTO: &str = "116";

pub struct NftDatapath {
    opts: NftOptions,
    current: BTreeSet<(IpAddr, u16)>,
    /// Pools routed by this process.
    routed: BTreeSet<String>,
}

/// Runs `ip ARGS`, inside the options' netns if any.
fn ip(opts: &NftOptions, args: &[&str]) -> Result<(), Error> {
    let mut cmd = Command::new("ip");
    if let Some(ns) = &opts.netns {
        cmd.args(["-n", ns]);
    }
    let out = cmd
        .args(args)
        .output()
        .map_err(|e| Error::Nft(format!("running ip: {e}")))?;
    if !out.status.success() {
        return Err(Error::Nft(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

fn route(opts: &NftOptions, verb: &str, pool: &str) -> Result<(), Error> {
    let family = if pool.contains(':') { "-6" } else { "-4" };
    ip(
        opts,
        &[
            family,
            "route",
            verb,
            "local",
            pool,
            "dev",
            "lo",
            "proto",
            ROUTE_PROTO,
        ],
    )
}

fn nft(opts: &NftOptions, script: &str) -> Result<(), Error> {
    let mut cmd = match &opts.netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "nft", "-f", "-"]);
            c
        }
        None => {
            let mut c = Command::new("nft");
            c.args(["-f", "-"]);
            c
        }
    };
    let fail = |m: String| Error::Nft(m);
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("running nft: {e} (install the nftables package)")))?;
    child
        .stdin
        .take()
        .ok_or_else(|| fail("nft has no stdin".into()))?
        .write_all(script.as_bytes())
        .map_err(|e| fail(e.to_string()))?;
    let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        return Err(fail(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(())
}

impl NftDatapath {
    /// Creates (or replaces) our table with empty service sets.
    pub fn attach(opts: &NftOptions) -> Result<NftDatapath, Error> {
        let mut dp = NftDatapath {
            opts: opts.clone(),
            current: BTreeSet::new(),
            routed: BTreeSet::new(),
        };
        nft(opts, &dp.ruleset(&BTreeSet::new()))?;
        dp.route_pools(&opts.vip_pools)?;
        tracing::info!(table = %opts.table, "nftables datapath attached");
        Ok(dp)
    }

    fn ruleset(&self, entries: &BTreeSet<(IpAddr, u16)>) -> String {
        let (t, port, mark) = (&self.opts.table, self.opts.proxy_port, self.opts.proxy_mark);
        let elements = |v6: bool| {
            let e: Vec<String> = entries
                .iter()
                .filter(|(ip, _)| ip.is_ipv6() == v6)
                .map(|(ip, p)| format!("{ip} . {p}"))
                .collect();
            if e.is_empty() {
                String::new()
            } else {
                format!("elements = {{ {} }}", e.join(", "))
            }
        };
        // `add` then `delete` makes the script work whether or not the table
        // exists; the whole file is one atomic transaction.
        format!(
            "add table inet {t}
delete table inet {t}
table inet {t} {{
  set svc4 {{ type ipv4_addr . inet_service; {v4} }}
  set svc6 {{ type ipv6_addr . inet_service; {v6} }}
  chain output {{
    type nat hook output priority -100; policy accept;
    meta mark {mark:#x} return
    meta l4proto tcp ip daddr . tcp dport @svc4 redirect to :{port}
    meta l4proto tcp ip6 daddr . tcp dport @svc6 redirect to :{port}
  }}
}}
",
            v4 = elements(false),
            v6 = elements(true),
        )
    }

    /// Removes our table and every route we tagged.
    pub fn cleanup(opts: &NftOptions) -> Result<(), Error> {
        nft(
            opts,
            &format!(
                "add table inet {t}\ndelete table inet {t}\n",
                t = opts.table
            ),
        )?;
        for family in ["-4", "-6"] {
            ip(
                opts,
                &[
                    family,
                    "route",
                    "flush",
                    "table",
                    "local",
                    "proto",
                    ROUTE_PROTO,
                ],
            )?;
        }
        Ok(())
    }
}

impl Datapath for NftDatapath {
    fn name(&self) -> &'static str {
        "nftables"
    }

    /// Routes exactly `pools` (added before the old ones go, so a pool that
    /// moves is never unrouted in between).
    fn route_pools(&mut self, pools: &[String]) -> Result<(), Error> {
        let wanted: BTreeSet<String> = pools.iter().cloned().collect();
        for pool in wanted.difference(&self.routed) {
            route(&self.opts, "replace", pool)?;
            tracing::info!(pool, "VIP pool routed local on lo");
        }
        for pool in self.routed.difference(&wanted) {
            // Gone already (an operator, a cleanup) is as good.
            if let Err(e) = route(&self.opts, "del", pool) {
                tracing::debug!(pool, error = %e, "removing a VIP pool route");
            }
        }
        self.routed = wanted;
        Ok(())
    }

    /// Makes the sets hold exactly `services`, in one transaction. Existing
    /// connections keep their conntrack NAT mapping.
    fn reconcile(&mut self, services: &[ServiceEntry]) -> Result<Reconciled, Error> {
        let wanted: BTreeSet<(IpAddr, u16)> = services
            .iter()
            .flat_map(|s| s.ports.iter().map(move |p| (s.vip, *p)))
            .collect();
        let out = Reconciled {
            added: wanted.difference(&self.current).count(),
            removed: self.current.difference(&wanted).count(),
            unchanged: wanted.intersection(&self.current).count(),
        };
        if out.added + out.removed > 0 {
            nft(&self.opts, &self.ruleset(&wanted))?;
            self.current = wanted;
        }
        Ok(out)
    }
}
