//! `trellis datapath`: attach the eBPF datapath by hand (pinned, so it stays
//! after the command exits) or remove it. The node agent does the same from
//! its snapshot; this is for operators and benchmarks.

use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::path::PathBuf;
use trellis_datapath::{Datapath, EbpfDatapath, Options, ServiceEntry};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Attach to a cgroup and program services; links and maps stay pinned.
    /// SO_ORIGINAL_DST is answered only while a process holding the datapath
    /// (the node agent) runs.
    Attach(AttachArgs),
    /// Detach everything pinned under --pin-dir and remove the pins.
    Cleanup {
        #[arg(long, default_value = "/sys/fs/bpf/trellis")]
        pin_dir: PathBuf,
    },
}

#[derive(clap::Args)]
pub struct AttachArgs {
    /// cgroup v2 directory whose processes' connections are redirected.
    #[arg(long)]
    cgroup: PathBuf,
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
}

pub fn run(cmd: Command) -> Result<()> {
    match cmd {
        Command::Cleanup { pin_dir } => {
            EbpfDatapath::cleanup(&pin_dir)?;
            println!("detached and unpinned {}", pin_dir.display());
            Ok(())
        }
        Command::Attach(a) => attach(a),
    }
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
    let opts = Options {
        proxy_cgroup: a.proxy_cgroup.clone().unwrap_or_else(|| a.cgroup.clone()),
        cgroup: a.cgroup,
        pin_dir: a.pin_dir,
        proxy_v4: a.proxy,
        proxy_v6: SocketAddrV6::new(std::net::Ipv6Addr::LOCALHOST, a.proxy.port(), 0, 0),
        proxy_mark: a.proxy_mark,
    };
    let mut dp = EbpfDatapath::attach(&opts).context("attaching the eBPF datapath")?;
    let r = dp.reconcile(&services)?;
    println!(
        "attached to {} ({} services: {} map entries added, {} removed, {} unchanged)",
        opts.cgroup.display(),
        services.len(),
        r.added,
        r.removed,
        r.unchanged
    );
    Ok(())
}
