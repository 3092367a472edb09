//! `trellis dns`: the authoritative DNS server on its own.

use anyhow::{Context, Result, anyhow, bail};
use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use trellis_api::handover::{self, Offer};
use trellis_api::pki::Role;
use trellis_dns::forward::Forwarder;
use trellis_dns::handler::{Networks, Views};
use trellis_dns::server::Options;
use trellis_dns::tcp::Limits;

/// How long a server taking over may take to have every view in place.
const TAKEOVER_READY_LIMIT: Duration = Duration::from_secs(60);
/// How long a starting server holds queries for views it has not got yet.
const VIEWS_WAIT: Duration = Duration::from_secs(10);

#[derive(clap::Args)]
pub struct Args {
    /// Address to answer on (UDP and TCP). `ADDR=NETWORK` answers queries
    /// received there as NETWORK. Repeatable.
    #[arg(long, required = true)]
    listen: Vec<String>,
    /// The network queries are answered as, unless --listen or --source says otherwise.
    #[arg(long)]
    network: Option<String>,
    /// `CIDR=NETWORK`: queries from this source prefix are answered as
    /// NETWORK (the longest prefix wins). Repeatable.
    #[arg(long = "source")]
    sources: Vec<String>,
    /// Control plane URL.
    #[arg(long, env = "TRELLIS_SERVER", default_value = "https://127.0.0.1:7070")]
    control_plane: String,
    /// A join token of role dns (`trellis network join-token NETWORK --role
    /// dns`), as `NETWORK=TOKEN`, or TOKEN alone when one network is
    /// answered. Needed once per network: the certificate is kept in
    /// --data-dir. Repeatable.
    #[arg(long)]
    join_token: Vec<String>,
    /// The CA of the API's certificate, when the control plane serves one
    /// of the operator's; by default the node CA.
    #[arg(long)]
    control_plane_ca: Option<PathBuf>,
    /// Where this server's certificates and the last snapshot of each
    /// network are kept, so that a restart with the control plane down
    /// serves it.
    #[arg(long, default_value = "/var/lib/trellis/dns")]
    data_dir: PathBuf,
    /// TTL of answers, and of negative answers (SOA minimum), in seconds.
    #[arg(long, default_value_t = 30)]
    ttl: u32,
    #[command(flatten)]
    serving: Serving,
    /// Serve Prometheus metrics on http://ADDR/metrics.
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
}

/// How the DNS serves, shared by `trellis dns` and `trellis node`.
#[derive(clap::Args, Clone, Debug)]
pub struct Serving {
    /// Upstream resolver (IP:PORT) for names outside every Trellis zone;
    /// without it they are REFUSED.
    #[arg(long)]
    forward: Option<SocketAddr>,
    /// Open DNS-over-TCP connections at once; more are closed at once.
    #[arg(long, default_value_t = 512)]
    dns_tcp_max_connections: usize,
    /// Seconds a DNS TCP connection may stay without a complete query.
    #[arg(long, default_value_t = 10)]
    dns_tcp_idle_seconds: u64,
}

impl Serving {
    pub fn options(&self) -> Options {
        Options {
            // One UDP thread per runtime worker thread.
            udp_threads: tokio::runtime::Handle::current().metrics().num_workers(),
            forwarder: self.forward.map(|a| Arc::new(Forwarder::new(a))),
            tcp: Limits {
                max_connections: self.dns_tcp_max_connections.max(1),
                idle_timeout: Duration::from_secs(self.dns_tcp_idle_seconds.max(1)),
            },
        }
    }
}

/// `--join-token`s by network: `NETWORK=TOKEN`, or a bare TOKEN when only
/// one network is answered.
fn join_tokens(given: &[String], networks: &BTreeSet<String>) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for t in given {
        let (network, token) = match (t.split_once('='), networks.len()) {
            (Some((n, t)), _) => (n.to_string(), t.to_string()),
            (None, 1) => (
                networks.iter().next().cloned().unwrap_or_default(),
                t.clone(),
            ),
            (None, _) => bail!("--join-token: several networks are answered; give NETWORK=TOKEN"),
        };
        if !networks.contains(&network) {
            bail!("--join-token for {network:?}, a network this server does not answer");
        }
        out.insert(network, token);
    }
    Ok(out)
}

fn split(s: &str) -> (&str, Option<&str>) {
    match s.split_once('=') {
        Some((a, n)) => (a, Some(n)),
        None => (s, None),
    }
}

pub async fn run(args: Args) -> Result<()> {
    let mut sources = Vec::new();
    for s in &args.sources {
        let (cidr, net) = split(s);
        let net = net.ok_or_else(|| anyhow!("--source {s:?}: expected CIDR=NETWORK"))?;
        let cidr: IpNet = cidr.parse().with_context(|| format!("--source {s:?}"))?;
        sources.push((cidr, net.to_string()));
    }
    let mut listeners = Vec::new();
    for l in &args.listen {
        let (addr, net) = split(l);
        let addr: SocketAddr = addr
            .parse()
            .with_context(|| format!("--listen {l:?}: expected ADDR:PORT[=NETWORK]"))?;
        let net = net.map(str::to_string).or_else(|| args.network.clone());
        listeners.push((addr, net));
    }
    let networks: BTreeSet<String> = listeners
        .iter()
        .filter_map(|(_, n)| n.clone())
        .chain(sources.iter().map(|(_, n)| n.clone()))
        .collect();
    if networks.is_empty() {
        return Err(anyhow!(
            "no network to answer as: pass --network, --listen ADDR=NETWORK or --source CIDR=NETWORK"
        ));
    }
    trellis_api::persist::private_dir(&args.data_dir)?;
    let mut successor = super::reload::Successor::new()?;
    let handover = args.data_dir.join("handover.sock");
    let (mut sockets, _, takeover) = handover::begin(&handover)
        .await
        .context("taking over from the running DNS server")?;
    let tokens = join_tokens(&args.join_token, &networks)?;
    // One certificate per network: each shows only what reads that network.
    let mut followed = Vec::new();
    for network in &networks {
        let dir = args.data_dir.join("identity").join(network);
        trellis_api::persist::private_dir(&dir)?;
        let member = super::MemberArgs {
            control_plane: args.control_plane.clone(),
            join_token: tokens.get(network).cloned(),
            control_plane_ca: args.control_plane_ca.clone(),
        };
        let (identity, client) = member
            .join(Role::Dns, network, &dir)
            .await
            .with_context(|| format!("the certificate for network {network}"))?;
        tokio::spawn(identity.renew_forever(client.clone()));
        followed.push((network.clone(), client));
    }
    let names: Vec<String> = networks.iter().cloned().collect();
    trellis_dns::metrics::init(&names);
    let (tx, rx) = watch::channel(Arc::new(Views::new()));
    let follow = trellis_dns::feed::follow(followed, args.data_dir.clone(), args.ttl, tx);
    tokio::spawn(follow);
    // A new view frees its predecessor and the snapshot it was built from:
    // give that memory back to the OS once the queries holding it are done.
    let mut swapped = rx.clone();
    tokio::spawn(async move {
        while swapped.changed().await.is_ok() {
            tokio::time::sleep(Duration::from_millis(200)).await;
            crate::release_free_memory();
        }
    });
    if takeover.is_some() {
        // The running server answers until this one can: every network's
        // view in place (its persisted snapshot, or the control plane's).
        let mut views = rx.clone();
        let all = views.wait_for(|v| networks.iter().all(|n| v.contains_key(n)));
        tokio::time::timeout(TAKEOVER_READY_LIMIT, all)
            .await
            .map_err(|_| anyhow!("taking over: no view of every network after {TAKEOVER_READY_LIMIT:?}; the running server goes on"))?
            .map_err(|_| anyhow!("taking over: the views ended"))?;
    }
    let options = args.serving.options();
    let networks_served = Arc::new(networks.clone());
    if let Some(addr) = args.metrics_listen {
        let listener = sockets
            .tcp("metrics", addr)
            .await
            .with_context(|| format!("binding the metrics listener {addr}"))?;
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(trellis_dns::metrics::collector(options.forwarder.clone()));
        let access = trellis_api::admin::Access::open_only(&["/metrics"]);
        tokio::spawn(trellis_api::admin::serve(listener, access, move |path| {
            (path == "/metrics").then(|| {
                let mut text = String::new();
                let _ = prometheus_client::encoding::text::encode_registry(&mut text, &registry);
                trellis_api::admin::Page::metrics(text)
            })
        }));
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut servers = tokio::task::JoinSet::new();
    for (addr, network) in listeners {
        let (udp, tcp) = trellis_dns::server::listen(&mut sockets, addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let bound = udp.local_addr()?;
        tracing::info!(%bound, network = network.as_deref().unwrap_or("-"), "DNS listening (UDP and TCP)");
        // Scripts and tests started with port 0 learn the port from this line.
        println!("trellis dns listening on {bound}");
        let networks = Networks {
            listener: network,
            sources: sources.clone(),
        };
        let mut stop = stop_rx.clone();
        let serve = trellis_dns::server::serve(
            udp,
            tcp,
            rx.clone(),
            networks,
            options.clone(),
            async move {
                let _ = stop.wait_for(|s| *s).await;
            },
        );
        // Queries already waiting in a socket systemd kept across a crash
        // are answered from the views, not refused for want of them; a
        // network the control plane cannot give yet holds the rest up
        // only so long.
        let mut views = rx.clone();
        let networks = networks_served.clone();
        servers.spawn(async move {
            let all = views.wait_for(|v| networks.iter().all(|n| v.contains_key(n)));
            let _ = tokio::time::timeout(VIEWS_WAIT, all).await;
            serve.await
        });
    }
    if let Some(takeover) = takeover {
        takeover.ready().await?;
    }
    let offer = Offer::bind(&handover)?;
    let offered = sockets.into_offered();
    super::reload::ready();
    tokio::select! {
        () = super::control_plane::shutdown() => super::reload::stopping(),
        () = offer.handed_over(&offered, || serde_json::Value::Null) => {}
        () = successor.on_hangup() => {}
    }
    let _ = stop_tx.send(true);
    while servers.join_next().await.is_some() {}
    Ok(())
}
