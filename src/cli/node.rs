//! `trellis node`: the node agent's flags, turned into a
//! `trellis_node::app::Config`. The node follows the network's snapshot (the
//! persisted one first, so a restart with the control plane down serves the
//! last config), programs the datapath, runs the proxy, optionally the
//! node-local DNS and the gateway role, and the admin endpoint.

use super::datapath::{DatapathKind, NftArgs};
use super::dns::Serving;
use anyhow::{Context, Result, bail};
use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use trellis_api::pki::Role;
use trellis_node::App;
use trellis_node::access_log::AccessLog;
use trellis_node::app::{Config, DnsConfig, Member};
use trellis_node::flows::FlowQueue;
use trellis_node::socket::Upstream;

#[derive(clap::Args)]
pub struct Args {
    /// The network this node is in.
    #[arg(long)]
    network: String,
    #[command(flatten)]
    member: super::MemberArgs,
    /// Where the last snapshot is kept (served at start until the control
    /// plane answers).
    #[arg(long, default_value = "/var/lib/trellis/node")]
    data_dir: PathBuf,
    #[arg(long, value_enum, default_value_t = DatapathKind::Auto)]
    datapath: DatapathKind,
    /// cgroup v2 directory whose processes are redirected (eBPF); default
    /// the unified root, mounted under /run/trellis/cgroup2 if absent.
    #[arg(long)]
    cgroup: Option<PathBuf>,
    /// cgroup v2 directory the proxy runs in (its SO_ORIGINAL_DST lookups are
    /// answered there); default --cgroup.
    #[arg(long)]
    proxy_cgroup: Option<PathBuf>,
    /// bpffs directory of this agent's pins (two agents on a host use two).
    #[arg(long, default_value = "/sys/fs/bpf/trellis")]
    bpf_pin_dir: PathBuf,
    /// The proxy's listener; redirected connections land here (IPv6 ones
    /// on [::1] at the same port).
    #[arg(long, default_value = "127.0.0.1:15001")]
    proxy_listen: SocketAddrV4,
    /// SO_MARK of the proxy's upstream sockets, which are never redirected.
    #[arg(long, default_value_t = 0x7472)]
    proxy_mark: u32,
    /// Source address of connections to targets (SNAT); default the
    /// kernel's choice for the route. Repeat for one v4 and one v6.
    #[arg(long = "snat-address")]
    snat_addresses: Vec<IpAddr>,
    /// Run the node-local DNS here (UDP and TCP), answering as --network.
    /// Repeatable.
    #[arg(long)]
    dns_listen: Vec<SocketAddr>,
    /// TTL of DNS answers, in seconds.
    #[arg(long, default_value_t = 30)]
    dns_ttl: u32,
    #[command(flatten)]
    dns: Serving,
    /// Admin endpoint: /ready and /metrics for anyone who can connect,
    /// /config with the token in <data-dir>/admin-token.
    #[arg(long, default_value = "127.0.0.1:15000")]
    admin_listen: SocketAddr,
    /// Access log: `stdout`, `off`, or a file path (appended).
    #[arg(long, default_value = "stdout")]
    access_log: String,
    /// Send flow records to the control plane for `trellis observe`.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    flows: bool,
    /// Allowed flows sent per second, at most (refusals are always sent).
    #[arg(long, default_value_t = 100)]
    flow_allowed_per_second: u64,
    /// This node's name in flow records (default: the host name).
    #[arg(long)]
    node_name: Option<String>,
    /// On SIGTERM, how long open connections have to finish, in seconds.
    #[arg(long, default_value_t = 10)]
    drain_seconds: u64,
    /// Run the gateway role here: other networks' proxies reach this
    /// network's targets through it (mutual TLS, HTTP/2). The address
    /// others dial is the Network's `spec.gateways`.
    #[arg(long)]
    gateway_listen: Option<SocketAddr>,
    /// Connect timeout to other networks' gateways, in milliseconds; a
    /// gateway that does not answer in time is skipped for the next.
    #[arg(long, default_value_t = 1000)]
    gateway_connect_timeout_ms: u64,
    /// Attach no datapath: nothing on this host is redirected to the proxy.
    /// For a node that only serves as its network's gateway.
    #[arg(long, conflicts_with = "cleanup")]
    no_datapath: bool,
    /// Detach and unpin the datapath (and delete its nftables table), then exit.
    #[arg(long)]
    cleanup: bool,
    #[command(flatten)]
    nft: NftArgs,
}

pub async fn run(args: Args) -> Result<()> {
    if args.cleanup {
        return super::datapath::remove(args.datapath, &args.bpf_pin_dir, &args.nft);
    }
    if args.proxy_listen.port() == 0 {
        bail!("--proxy-listen needs a fixed port: the datapath redirects to it");
    }
    // The snapshot carries signing keys, the identity a private key.
    trellis_api::persist::private_dir(&args.data_dir)?;
    let mut upstream = Upstream {
        snat_v4: None,
        snat_v6: None,
        mark: args.proxy_mark,
    };
    for a in &args.snat_addresses {
        match a {
            IpAddr::V4(v4) => upstream.snat_v4 = Some(*v4),
            IpAddr::V6(v6) => upstream.snat_v6 = Some(*v6),
        }
    }
    let datapath = match args.no_datapath {
        true => None,
        false => Some(super::datapath::config(
            args.datapath,
            args.cgroup.clone(),
            args.proxy_cgroup.clone(),
            args.bpf_pin_dir.clone(),
            args.proxy_listen,
            args.proxy_mark,
            &args.nft,
        )?),
    };
    let dns = (!args.dns_listen.is_empty()).then(|| DnsConfig {
        listen: args.dns_listen.clone(),
        ttl: args.dns_ttl,
        options: args.dns.options(),
    });
    // The node's certificate: what it shows the control plane, and other
    // networks' gateways.
    let (identity, client) = args
        .member
        .join(Role::Node, &args.network, &args.data_dir)
        .await?;
    let flows = args.flows.then(|| {
        let name = args.node_name.clone().unwrap_or_else(host_name);
        Arc::new(FlowQueue::new(
            &name,
            &args.network,
            args.flow_allowed_per_second,
        ))
    });
    let sink = flows
        .clone()
        .map(|q| -> trellis_node::access_log::Sink { Arc::new(move |entry| q.offer(entry)) });
    let access_log = AccessLog::open(&args.access_log, sink)
        .with_context(|| format!("opening the access log {}", args.access_log))?;
    let config = Config {
        network: args.network,
        data_dir: args.data_dir,
        proxy_listen: args.proxy_listen,
        upstream,
        datapath,
        dns,
        admin_listen: args.admin_listen,
        access_log,
        drain: Duration::from_secs(args.drain_seconds),
        gateway_listen: args.gateway_listen,
        gateway_connect_timeout: Duration::from_millis(args.gateway_connect_timeout_ms.max(1)),
        trim: crate::release_free_memory,
    };
    let mut successor = super::reload::Successor::new()?;
    let app = App::start(
        config,
        Member {
            identity,
            client: client.clone(),
        },
    )
    .await?;
    let uploading =
        flows.map(|q| tokio::spawn(trellis_node::flows::upload(q, client, app.proxy().clone())));
    // Scripts and tests learn the ports from these lines.
    for addr in app.dns_addrs() {
        println!("trellis node dns listening on {addr}");
    }
    if let Some(addr) = app.gateway_addr() {
        println!("trellis node gateway listening on {addr}");
    }
    println!("trellis node admin listening on {}", app.admin_addr());
    super::reload::ready();

    tokio::select! {
        () = super::control_plane::shutdown() => super::reload::stopping(),
        () = app.replaced() => {}
        () = successor.on_hangup() => {}
    }
    if let Some(task) = uploading {
        task.abort();
    }
    app.stop().await;
    Ok(())
}

/// The kernel's host name (`uname -n`).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "node".into())
}
