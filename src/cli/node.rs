//! `trellis node`: the node agent. Follows the network's snapshot (the
//! persisted one first, so a restart with the control plane down serves the
//! last config), programs the datapath, runs the proxy, optionally the
//! node-local DNS, and the admin endpoint.

use super::datapath::{DatapathKind, NftArgs};
use super::dns::Serving;
use crate::admin::{self, Access, Page};
use anyhow::{Context, Result, bail};
use http::StatusCode;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use trellis_api::pki::Role;
use trellis_dns::handler::{Networks, Views};
use trellis_node::access_log::AccessLog;
use trellis_node::metrics::Live;
use trellis_node::socket::Upstream;
use trellis_node::tunnel::Tunnels;
use trellis_node::upstream::Clients;
use trellis_node::{Agent, Proxy};

/// How often freed memory is handed back to the OS.
const TRIM_INTERVAL: Duration = Duration::from_secs(5);

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

fn access_log(spec: &str) -> Result<AccessLog> {
    Ok(match spec {
        "off" => AccessLog::off(),
        "stdout" => AccessLog::to(Box::new(std::io::stdout())),
        path => AccessLog::to(Box::new(
            // Owner and group (a log shipper's): it names clients and paths,
            // never a credential (docs/security.md).
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o640)
                .open(path)
                .with_context(|| format!("opening the access log {path}"))?,
        )),
    })
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
    let admin_token = args.data_dir.join("admin-token");
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
    let proxy = Proxy::new(
        &args.network,
        Clients::new(upstream),
        access_log(&args.access_log)?,
    );

    // The proxy listens before the datapath sends anything its way.
    let proxy_v6 = SocketAddrV6::new(Ipv6Addr::LOCALHOST, args.proxy_listen.port(), 0, 0);
    let listener_v4 = tokio::net::TcpListener::bind(args.proxy_listen)
        .await
        .with_context(|| format!("binding the proxy on {}", args.proxy_listen))?;
    let listener_v6 = match tokio::net::TcpListener::bind(proxy_v6).await {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::warn!(error = %e, "no IPv6 proxy listener; IPv6 VIPs will not work");
            None
        }
    };

    let datapath = if args.no_datapath {
        tracing::info!("no datapath: nothing on this host is redirected");
        None
    } else {
        let datapath = super::datapath::open(
            args.datapath,
            args.cgroup.clone(),
            args.proxy_cgroup.clone(),
            args.bpf_pin_dir.clone(),
            args.proxy_listen,
            args.proxy_mark,
            &args.nft,
        )?;
        tracing::info!(datapath = datapath.name(), "datapath attached");
        Some(datapath)
    };

    let mut agent = Agent::new(proxy.clone(), datapath);
    let ready = agent.ready();
    // The node's certificate: what it shows the control plane, and other
    // networks' gateways.
    let (identity, client) = args
        .member
        .join(Role::Node, &args.network, &args.data_dir)
        .await?;
    let expiry = identity.clone();
    proxy.metrics.register_live(Live::gauge(
        "trellis_node_certificate_expiry_timestamp_seconds",
        "When this node's certificate expires (Unix time)",
        move || vec![(Vec::new(), expiry.not_after() as f64)],
    ));
    let renewals = identity.clone();
    proxy.metrics.register_live(Live::counter(
        "trellis_node_certificate_renewals",
        "Node certificate renewals since start",
        move || renewals.renewals(),
    ));
    let connect = Duration::from_millis(args.gateway_connect_timeout_ms.max(1));
    let tunnels = Tunnels::new(&identity, upstream, connect)?;
    proxy.set_tunnels(tunnels.clone());
    tokio::spawn(tunnels.watch_health());
    tokio::spawn(identity.clone().renew_forever(client.clone()));

    // The DNS, if any, follows the same snapshots.
    let dns_options = args.dns.options();
    let (views_tx, views_rx) = watch::channel(Arc::new(Views::new()));
    let dns_on = !args.dns_listen.is_empty();
    if dns_on {
        trellis_dns::metrics::init(std::slice::from_ref(&args.network));
        proxy
            .metrics
            .register_collector(trellis_dns::metrics::collector(
                dns_options.forwarder.clone(),
            ));
    }
    let ttl = args.dns_ttl;
    let store = args
        .data_dir
        .join(format!("node-snapshot-{}.json", args.network));
    tokio::spawn(trellis_api::follow::follow(
        client,
        args.network.clone(),
        Some(store),
        move |snapshot| {
            if dns_on {
                trellis_dns::feed::publish(&views_tx, &snapshot, ttl);
            }
            agent.apply(snapshot);
        },
    ));
    // Memory freed by one-off work (a snapshot's JSON, its compilation, an
    // admin `/config`) goes back to the OS on the next tick, not whenever the
    // allocator next happens to run its purge.
    tokio::spawn(async {
        let mut tick = tokio::time::interval(TRIM_INTERVAL);
        loop {
            tick.tick().await;
            crate::release_free_memory();
        }
    });

    let shutdown = CancellationToken::new();
    let stop = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    for addr in &args.dns_listen {
        let (udp, tcp) = trellis_dns::server::bind(*addr)
            .await
            .with_context(|| format!("binding the DNS on {addr}"))?;
        println!("trellis node dns listening on {}", udp.local_addr()?);
        let networks = Networks {
            listener: Some(args.network.clone()),
            sources: Vec::new(),
        };
        let stop = stop.clone();
        tasks.spawn(trellis_dns::server::serve(
            udp,
            tcp,
            views_rx.clone(),
            networks,
            dns_options.clone(),
            async move { stop.cancelled().await },
        ));
    }

    let admin_listener = tokio::net::TcpListener::bind(args.admin_listen)
        .await
        .with_context(|| format!("binding the admin endpoint on {}", args.admin_listen))?;
    let admin_addr = admin_listener.local_addr()?;
    {
        let proxy = proxy.clone();
        let access = Access::with_token_file(&["/ready", "/metrics"], &admin_token)
            .with_context(|| format!("creating the admin token {}", admin_token.display()))?;
        tasks.spawn(admin::serve(
            admin_listener,
            access,
            move |path| match path {
                "/ready" if ready.load(Ordering::Relaxed) => {
                    Some(Page::text(StatusCode::OK, "ready\n"))
                }
                "/ready" => Some(Page::text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no config yet\n",
                )),
                "/config" => {
                    let config = proxy.config();
                    let body = serde_json::json!({
                        "revision": config.revision(),
                        "network": config.snapshot.network,
                        "snapshot": config.snapshot.shown(),
                    });
                    Some(Page::json(
                        serde_json::to_string_pretty(&body).unwrap_or_default(),
                    ))
                }
                "/metrics" => Some(Page::metrics(proxy.metrics.render())),
                _ => None,
            },
        ));
    }
    if let Some(addr) = args.gateway_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the gateway on {addr}"))?;
        println!(
            "trellis node gateway listening on {}",
            listener.local_addr()?
        );
        tasks.spawn(trellis_node::gateway::serve(
            proxy.clone(),
            listener,
            identity.server_config()?,
            shutdown.clone(),
        ));
    }
    let drain = Duration::from_secs(args.drain_seconds);
    let mut proxies = tokio::task::JoinSet::new();
    proxies.spawn(proxy.clone().serve(listener_v4, shutdown.clone(), drain));
    if let Some(l) = listener_v6 {
        proxies.spawn(proxy.clone().serve(l, shutdown.clone(), drain));
    }
    tracing::info!(network = args.network, proxy = %args.proxy_listen, admin = %admin_addr, "node agent running");
    // Scripts and tests learn the admin port from this line.
    println!("trellis node admin listening on {admin_addr}");

    super::control_plane::shutdown().await;
    // The proxies stop accepting and drain (bounded by `drain`); the DNS
    // and the admin endpoint answer until they are done.
    shutdown.cancel();
    while proxies.join_next().await.is_some() {}
    stop.cancel();
    tasks.abort_all();
    Ok(())
}
