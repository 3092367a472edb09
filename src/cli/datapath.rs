//! `trellis datapath`: attach the eBPF datapath by hand (pinned, so it stays
//! after the command exits) or remove it. The node agent does the same from
//! its snapshot; this is for operators and benchmarks.

use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::path::{Path, PathBuf};
use trellis_api::snapshot::{DEFAULT_VIP_POOL_V4, DEFAULT_VIP_POOL_V6};
use trellis_datapath::{Choice, EbpfDatapath, NftDatapath, NftOptions, Options, ServiceEntry};
use trellis_node::app::DatapathConfig;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Attach to a cgroup and program services; links and maps stay pinned.
    /// SO_ORIGINAL_DST is answered only while a process holding the datapath
    /// (the node agent) runs.
    Attach(AttachArgs),
    /// Remove a datapath: eBPF detaches and unpins everything under
    /// --pin-dir; nftables deletes the table and the VIP-pool routes; auto
    /// does both.
    Cleanup {
        #[arg(long, value_enum, default_value_t = DatapathKind::Auto)]
        datapath: DatapathKind,
        #[arg(long, default_value = "/sys/fs/bpf/trellis")]
        pin_dir: PathBuf,
        #[command(flatten)]
        nft: NftArgs,
    },
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum DatapathKind {
    Ebpf,
    Nftables,
    /// eBPF when every probe passes, else nftables (the log says why).
    Auto,
}

#[derive(clap::Args)]
pub struct NftArgs {
    /// nftables table (family inet) of the fallback datapath.
    #[arg(long, default_value = "trellis")]
    nft_table: String,
}

impl NftArgs {
    fn options(&self, proxy_port: u16, proxy_mark: u32) -> NftOptions {
        NftOptions {
            table: self.nft_table.clone(),
            netns: None,
            proxy_port,
            proxy_mark,
            // A node routes its snapshot's pools.
            vip_pools: Vec::new(),
        }
    }
}

#[derive(clap::Args)]
pub struct AttachArgs {
    #[arg(long, value_enum, default_value_t = DatapathKind::Auto)]
    datapath: DatapathKind,
    /// cgroup v2 directory whose processes' connections are redirected
    /// (eBPF); default the unified hierarchy's root, mounted if absent.
    #[arg(long)]
    cgroup: Option<PathBuf>,
    /// cgroup v2 directory of the proxy; defaults to --cgroup.
    #[arg(long)]
    proxy_cgroup: Option<PathBuf>,
    #[arg(long, default_value = "/sys/fs/bpf/trellis")]
    pin_dir: PathBuf,
    /// The proxy's IPv4 listener.
    #[arg(long, default_value = "127.0.0.1:15001")]
    proxy: SocketAddrV4,
    /// SO_MARK of the proxy's upstream sockets (never redirected).
    #[arg(long, default_value_t = 0x7472)]
    proxy_mark: u32,
    /// A service VIP:PORT to redirect (repeatable; [v6]:port works too).
    #[arg(long = "service")]
    services: Vec<SocketAddr>,
    /// Also install N unrelated VIPs (169.254.180.0 onwards, port 80), to
    /// measure the cost of a large map.
    #[arg(long, default_value_t = 0)]
    dummy_vips: u32,
    /// VIP pools routed `local` on lo in nftables mode (repeatable; a node
    /// routes the control plane's pools from its snapshot instead).
    #[arg(long = "vip-pool", default_values = [DEFAULT_VIP_POOL_V4, DEFAULT_VIP_POOL_V6])]
    vip_pools: Vec<String>,
    #[command(flatten)]
    nft: NftArgs,
}

pub fn run(cmd: Command) -> Result<()> {
    match cmd {
        Command::Cleanup {
            datapath,
            pin_dir,
            nft,
        } => remove(datapath, &pin_dir, &nft),
        Command::Attach(a) => attach(a),
    }
}

/// Removes a datapath: eBPF detaches and unpins everything under `pin_dir`;
/// nftables (where it runs) deletes the table and the VIP-pool routes.
pub fn remove(kind: DatapathKind, pin_dir: &Path, nft: &NftArgs) -> Result<()> {
    if !matches!(kind, DatapathKind::Nftables) {
        EbpfDatapath::cleanup(pin_dir)?;
        println!("detached and unpinned {}", pin_dir.display());
    }
    if !matches!(kind, DatapathKind::Ebpf) && trellis_datapath::probe_nftables().is_empty() {
        NftDatapath::cleanup(&nft.options(0, 0))?;
        println!("removed nftables table inet {}", nft.nft_table);
    }
    Ok(())
}

/// The datapath `kind` names, to redirect connections from `cgroup`
/// (default: the unified root, mounted if absent) to `proxy` (and to [::1]
/// on the same port for IPv6); the proxy runs in `proxy_cgroup` (default
/// `cgroup`).
pub fn config(
    kind: DatapathKind,
    cgroup: Option<PathBuf>,
    proxy_cgroup: Option<PathBuf>,
    pin_dir: PathBuf,
    proxy: SocketAddrV4,
    proxy_mark: u32,
    nft: &NftArgs,
) -> Result<DatapathConfig> {
    let cgroup = match cgroup {
        Some(c) => c,
        None => trellis_datapath::mounts::default_cgroup2()?,
    };
    let ebpf = Options {
        proxy_cgroup: proxy_cgroup.unwrap_or_else(|| cgroup.clone()),
        cgroup,
        pin_dir,
        proxy_v4: proxy,
        proxy_v6: SocketAddrV6::new(Ipv6Addr::LOCALHOST, proxy.port(), 0, 0),
        proxy_mark,
    };
    let choice = match kind {
        DatapathKind::Ebpf => Choice::Ebpf,
        DatapathKind::Nftables => Choice::Nftables,
        DatapathKind::Auto => Choice::Auto,
    };
    Ok(DatapathConfig {
        choice,
        ebpf,
        nft: nft.options(proxy.port(), proxy_mark),
    })
}

fn attach(a: AttachArgs) -> Result<()> {
    if a.dummy_vips > 60_000 {
        bail!("--dummy-vips is at most 60000");
    }
    let mut ports: BTreeMap<IpAddr, Vec<u16>> = BTreeMap::new();
    for s in &a.services {
        ports.entry(s.ip()).or_default().push(s.port());
    }
    for i in 0..a.dummy_vips {
        let vip = Ipv4Addr::new(169, 254, 180 + (i / 256) as u8, (i % 256) as u8);
        ports.entry(IpAddr::V4(vip)).or_default().push(80);
    }
    let services: Vec<ServiceEntry> = ports
        .into_iter()
        .map(|(vip, ports)| ServiceEntry { vip, ports })
        .collect();
    let c = config(
        a.datapath,
        a.cgroup,
        a.proxy_cgroup,
        a.pin_dir,
        a.proxy,
        a.proxy_mark,
        &a.nft,
    )?;
    let mut dp =
        trellis_datapath::open(c.choice, &c.ebpf, &c.nft).context("attaching the datapath")?;
    dp.route_pools(&a.vip_pools)?;
    let r = dp.reconcile(&services)?;
    println!(
        "{} datapath attached ({} services: {} entries added, {} removed, {} unchanged)",
        dp.name(),
        services.len(),
        r.added,
        r.removed,
        r.unchanged
    );
    Ok(())
}
