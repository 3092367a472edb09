//! The node as one value. [`App::start`] builds and runs everything a node
//! serves from a typed [`Config`] and the node's [`Member`]ship: the proxy's
//! listeners (bound before the datapath sends anything their way), the
//! datapath, the tunnels to other networks' gateways, the snapshot follower,
//! the node-local DNS, the gateway role and the admin endpoint. `trellis
//! node` only turns flags into a `Config`.

use crate::access_log::AccessLog;
use crate::agent::Agent;
use crate::metrics::Live;
use crate::proxy::Proxy;
use crate::socket::Upstream;
use crate::targets::Health;
use crate::tunnel::Tunnels;
use crate::upstream::Clients;
use crate::workload::Workloads;
use http::StatusCode;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use trellis_api::admin::{self, Access, Page};
use trellis_api::client::Client;
use trellis_api::handover::{self, HandoverError, Listeners, Offer};
use trellis_api::identity::{Identity, IdentityError};
use trellis_datapath::{Choice, NftOptions, Options};
use trellis_dns::handler::{Networks, Views};

/// How often freed memory is handed back to the OS.
const TRIM_INTERVAL: Duration = Duration::from_secs(5);
/// How long a process taking over may take to have a config in place; the
/// process it takes over from serves meanwhile.
const TAKEOVER_READY_LIMIT: Duration = Duration::from_secs(60);

/// Everything a node is told at start.
pub struct Config {
    /// The network this node is in.
    pub network: String,
    /// Where the last snapshot and the admin token are kept.
    pub data_dir: PathBuf,
    /// Where redirected connections land; IPv6 ones on `[::1]` at the same
    /// port.
    pub proxy_listen: SocketAddrV4,
    /// How connections to targets are made (SNAT addresses, mark).
    pub upstream: Upstream,
    /// `None`: nothing on this host is redirected (a gateway-only node).
    pub datapath: Option<DatapathConfig>,
    /// The node-local DNS, if any.
    pub dns: Option<DnsConfig>,
    pub admin_listen: SocketAddr,
    pub access_log: AccessLog,
    /// How long open connections have to finish at stop.
    pub drain: Duration,
    /// Serve the gateway role here (mutual TLS, HTTP/2).
    pub gateway_listen: Option<SocketAddr>,
    /// Connect timeout to other networks' gateways.
    pub gateway_connect_timeout: Duration,
    /// Hands freed memory back to the OS (the allocator is the binary's
    /// choice); called every few seconds.
    pub trim: fn(),
}

/// Which datapath, and how it is attached.
pub struct DatapathConfig {
    pub choice: Choice,
    pub ebpf: Options,
    pub nft: NftOptions,
}

pub struct DnsConfig {
    /// UDP and TCP on each, answering as the node's network.
    pub listen: Vec<SocketAddr>,
    /// TTL of answers, in seconds.
    pub ttl: u32,
    pub options: trellis_dns::server::Options,
}

/// The node's place in its network: its certificate and a client of the
/// control plane that shows it.
pub struct Member {
    pub identity: Arc<Identity>,
    pub client: Client,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("binding the {what} listener on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("attaching the datapath: {0}")]
    Datapath(#[from] trellis_datapath::Error),
    #[error("the node's certificate: {0}")]
    Identity(#[from] IdentityError),
    #[error("taking over from the running node: {0}")]
    Handover(#[from] HandoverError),
    #[error(
        "taking over from the running node: no config in place after {0:?}; the running node goes on serving"
    )]
    NotReady(Duration),
    #[error("the admin token {path}: {source}")]
    AdminToken {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A running node.
pub struct App {
    proxy: Arc<Proxy>,
    admin: SocketAddr,
    dns: Vec<SocketAddr>,
    gateway: Option<SocketAddr>,
    /// Cancelled once a new process took the listeners over.
    replaced: CancellationToken,
    /// Stops the proxies and the gateway accepting; they drain.
    shutdown: CancellationToken,
    /// Stops the DNS, after the drain (at once when replaced).
    stop: CancellationToken,
    follower: JoinHandle<()>,
    admin_task: AbortHandle,
    proxies: JoinSet<()>,
    tasks: JoinSet<()>,
}

impl App {
    /// Starts the node. When a node with the same data dir runs, this one
    /// takes its listening sockets over (`trellis_api::handover`): it has
    /// its config in place before it accepts, and the old one stops
    /// accepting only once this one does. Else sockets come from systemd if
    /// it passed any, or are bound here.
    pub async fn start(config: Config, member: Member) -> Result<App, Error> {
        let Member { identity, client } = member;
        let handover = config.data_dir.join("handover.sock");
        let (mut listeners, carried, takeover) = handover::begin(&handover).await?;
        if takeover.is_some() {
            tracing::info!(from_revision = %carried["revision"], "taking over from the running node");
        }
        let proxy = Proxy::new(
            &config.network,
            Clients::new(config.upstream),
            config.access_log,
        );
        proxy.carry_health(carried_health(&carried));

        // The proxy listens before the datapath sends anything its way.
        let listen_v4 = SocketAddr::V4(config.proxy_listen);
        let listener_v4 = listen(&mut listeners, "proxy", listen_v4).await?;
        let listen_v6 = SocketAddrV6::new(Ipv6Addr::LOCALHOST, config.proxy_listen.port(), 0, 0);
        let listener_v6 = match listen(&mut listeners, "proxy", listen_v6.into()).await {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::warn!(error = %e, "no IPv6 proxy listener; IPv6 VIPs will not work");
                None
            }
        };
        let datapath = match &config.datapath {
            None => {
                tracing::info!("no datapath: nothing on this host is redirected");
                None
            }
            Some(d) => {
                let datapath = trellis_datapath::open(d.choice, &d.ebpf, &d.nft)?;
                tracing::info!(datapath = datapath.name(), "datapath attached");
                if let Some(callers) = datapath.callers() {
                    match Workloads::new(callers, &d.ebpf.cgroup) {
                        Ok(w) => proxy.set_workloads(w),
                        Err(e) => {
                            tracing::warn!(error = %e, "callers' cgroups cannot be named")
                        }
                    }
                }
                Some(datapath)
            }
        };
        let mut agent = Agent::new(proxy.clone(), datapath);
        let ready = agent.ready();

        register_certificate_metrics(&proxy, &identity);
        let tunnels = Tunnels::new(&identity, config.upstream, config.gateway_connect_timeout)?;
        proxy.set_tunnels(tunnels.clone());
        tokio::spawn(tunnels.watch_health());
        tokio::spawn(identity.clone().renew_forever(client.clone()));

        // The DNS, if any, follows the same snapshots.
        let (views_tx, views_rx) = watch::channel(Arc::new(Views::new()));
        let dns_ttl = config.dns.as_ref().map(|d| d.ttl);
        if let Some(dns) = &config.dns {
            trellis_dns::metrics::init(std::slice::from_ref(&config.network));
            proxy
                .metrics
                .register_collector(trellis_dns::metrics::collector(
                    dns.options.forwarder.clone(),
                ));
        }
        let store = config
            .data_dir
            .join(format!("node-snapshot-{}.json", config.network));
        let follower = tokio::spawn(trellis_api::follow::follow(
            client,
            config.network.clone(),
            Some(store),
            move |snapshot, delta| {
                if let Some(ttl) = dns_ttl {
                    trellis_dns::feed::publish(&views_tx, snapshot, delta, ttl);
                }
                agent.apply(snapshot.clone());
            },
        ));
        // Memory freed by one-off work (a snapshot's JSON, its compilation,
        // an admin `/config`) goes back to the OS on the next tick, not
        // whenever the allocator next happens to run its purge.
        let trim = config.trim;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(TRIM_INTERVAL);
            loop {
                tick.tick().await;
                trim();
            }
        });

        let shutdown = CancellationToken::new();
        let stop = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let mut dns_addrs = Vec::new();
        if let Some(dns) = &config.dns {
            for addr in &dns.listen {
                let (udp, tcp) = trellis_dns::server::listen(&mut listeners, *addr)
                    .await
                    .map_err(|source| Error::Bind {
                        what: "DNS",
                        addr: *addr,
                        source,
                    })?;
                dns_addrs.push(udp.local_addr().unwrap_or(*addr));
                let networks = Networks {
                    listener: Some(config.network.clone()),
                    sources: Vec::new(),
                };
                let (stop, ready) = (stop.clone(), ready.clone());
                let serve = trellis_dns::server::serve(
                    udp,
                    tcp,
                    views_rx.clone(),
                    networks,
                    dns.options.clone(),
                    async move { stop.cancelled().await },
                );
                // Queries that came before the config wait in the socket,
                // to be answered, not refused.
                tasks.spawn(async move {
                    once(&ready).await;
                    serve.await
                });
            }
        }

        let admin_listener = listen(&mut listeners, "admin", config.admin_listen).await?;
        let admin_addr = admin_listener.local_addr().unwrap_or(config.admin_listen);
        let token_file = config.data_dir.join("admin-token");
        let access =
            Access::with_token_file(&["/ready", "/metrics"], &token_file).map_err(|source| {
                Error::AdminToken {
                    path: token_file,
                    source,
                }
            })?;
        let pages = proxy.clone();
        let node_ready = ready.clone();
        let admin_task = tasks.spawn(admin::serve(admin_listener, access, move |path| {
            admin_page(&pages, node_ready.load(Ordering::Relaxed), path)
        }));

        let mut gateway = None;
        if let Some(addr) = config.gateway_listen {
            let listener = listen(&mut listeners, "gateway", addr).await?;
            gateway = Some(listener.local_addr().unwrap_or(addr));
            tasks.spawn(crate::gateway::serve(
                proxy.clone(),
                listener,
                identity.server_config()?,
                shutdown.clone(),
            ));
        }
        if takeover.is_some() {
            // The old process serves until this one accepts: accept only
            // with a config in place.
            if tokio::time::timeout(TAKEOVER_READY_LIMIT, once(&ready))
                .await
                .is_err()
            {
                follower.abort();
                return Err(Error::NotReady(TAKEOVER_READY_LIMIT));
            }
        }
        let mut proxies = JoinSet::new();
        for listener in std::iter::once(listener_v4).chain(listener_v6) {
            // A connection redirected before there is a config (the
            // datapath's pins outlive a crash; systemd's socket held it)
            // waits in the backlog rather than be refused as unknown.
            let (serve, stop) = (
                proxy
                    .clone()
                    .serve(listener, shutdown.clone(), config.drain),
                shutdown.clone(),
            );
            let ready = ready.clone();
            proxies.spawn(async move {
                tokio::select! {
                    () = once(&ready) => serve.await,
                    () = stop.cancelled() => {}
                }
            });
        }
        if let Some(takeover) = takeover {
            takeover.ready().await?;
        }
        let replaced = CancellationToken::new();
        let offer = Offer::bind(&handover)?;
        let offered = listeners.into_offered();
        let (done, state) = (replaced.clone(), proxy.clone());
        tasks.spawn(async move {
            offer.handed_over(&offered, || handed_state(&state)).await;
            done.cancel();
        });
        tracing::info!(network = config.network, proxy = %config.proxy_listen, admin = %admin_addr, "node agent running");
        Ok(App {
            proxy,
            admin: admin_addr,
            dns: dns_addrs,
            gateway,
            replaced,
            shutdown,
            stop,
            follower,
            admin_task,
            proxies,
            tasks,
        })
    }

    pub fn proxy(&self) -> &Arc<Proxy> {
        &self.proxy
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    /// Where the node-local DNS answers (UDP and TCP), in `Config` order.
    pub fn dns_addrs(&self) -> &[SocketAddr] {
        &self.dns
    }

    pub fn gateway_addr(&self) -> Option<SocketAddr> {
        self.gateway
    }

    /// Resolves once a new process took this one's listeners over: then
    /// [`App::stop`] it.
    pub async fn replaced(&self) {
        self.replaced.cancelled().await
    }

    /// Stops accepting and lets open connections finish (bounded by the
    /// drain). The datapath is no longer programmed from here on: a process
    /// that took over does that. The DNS and the admin endpoint answer until
    /// the drain is done, or stop at once when another process answers on
    /// their sockets.
    pub async fn stop(mut self) {
        self.follower.abort();
        if self.replaced.is_cancelled() {
            self.admin_task.abort();
            self.stop.cancel();
        }
        self.shutdown.cancel();
        while self.proxies.join_next().await.is_some() {}
        self.stop.cancel();
        self.tasks.abort_all();
    }
}

/// Resolves once `flag` is set (the first config is in place).
async fn once(flag: &AtomicBool) {
    while !flag.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The TCP listener `name` at `addr`, inherited or bound.
async fn listen(
    listeners: &mut Listeners,
    name: &'static str,
    addr: SocketAddr,
) -> Result<TcpListener, Error> {
    listeners
        .tcp(name, addr)
        .await
        .map_err(|source| Error::Bind {
            what: name,
            addr,
            source,
        })
}

/// What a node hands the next one besides its sockets: its config
/// revision, and what its health checks decided. Idle target connections
/// are not handed over: a new one costs a connect, and a pooled one may be
/// half-closed by now.
fn handed_state(proxy: &Proxy) -> serde_json::Value {
    let targets: Vec<serde_json::Value> = proxy
        .known_health()
        .into_iter()
        .map(|(group, addr, health)| {
            serde_json::json!({"group": group, "target": addr.to_string(), "health": health.as_str()})
        })
        .collect();
    serde_json::json!({"revision": proxy.config().revision(), "targets": targets})
}

/// The health in what the previous node handed over; entries it cannot
/// read are skipped (those targets start unchecked, as on a fresh start).
fn carried_health(state: &serde_json::Value) -> Vec<crate::proxy::KnownHealth> {
    let Some(targets) = state["targets"].as_array() else {
        return Vec::new();
    };
    targets
        .iter()
        .filter_map(|t| {
            Some((
                t["group"].as_str()?.to_string(),
                t["target"].as_str()?.parse().ok()?,
                Health::parse(t["health"].as_str()?)?,
            ))
        })
        .collect()
}

/// The node's certificate in the metrics: when it expires, how often it was
/// renewed.
fn register_certificate_metrics(proxy: &Proxy, identity: &Arc<Identity>) {
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
}

/// The admin endpoint's pages: `/ready` and `/metrics` for anyone,
/// `/config` (the snapshot in force, secrets masked) with the token.
fn admin_page(proxy: &Proxy, ready: bool, path: &str) -> Option<Page> {
    Some(match path {
        "/ready" if ready => Page::text(StatusCode::OK, "ready\n"),
        "/ready" => Page::text(StatusCode::SERVICE_UNAVAILABLE, "no config yet\n"),
        "/config" => {
            let config = proxy.config();
            let body = serde_json::json!({
                "revision": config.revision(),
                "network": config.snapshot.network,
                "snapshot": config.snapshot.shown(),
            });
            Page::json(serde_json::to_string_pretty(&body).unwrap_or_default())
        }
        "/metrics" => Page::metrics(proxy.metrics.render()),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h1::tests::applied;

    #[test]
    fn the_health_a_node_knew_is_where_the_next_one_starts() {
        let snapshot = serde_json::json!({
            "network": "east", "revision": 3, "region": "local", "dnsZone": "trellis.internal",
            "services": [], "serviceNetworks": [], "gateways": {},
            "targetGroups": [{"name": "web", "network": "east", "port": 80, "targets": [
                {"address": "10.0.0.1"}, {"address": "10.0.0.2"}, {"address": "10.0.0.3"}
            ]}]
        });
        let old = applied(snapshot.clone());
        let group = old.config().groups["web"].clone();
        group.targets[0].set_health(Health::Unhealthy);
        group.targets[1].set_health(Health::Healthy);
        // Through the JSON the handover carries.
        let handed: serde_json::Value =
            serde_json::from_str(&handed_state(&old).to_string()).unwrap();
        assert_eq!(handed["revision"], 3);

        let new = Proxy::new("east", old.clients.clone(), AccessLog::off());
        new.carry_health(carried_health(&handed));
        new.apply(serde_json::from_value(snapshot).unwrap());
        let health: Vec<Health> = new.config().groups["web"]
            .targets
            .iter()
            .map(|t| t.health())
            .collect();
        assert_eq!(
            health,
            [Health::Unhealthy, Health::Healthy, Health::Unknown]
        );
        // An entry that cannot be read is skipped, not guessed.
        assert!(carried_health(&serde_json::json!({"targets": [{"group": "web"}]})).is_empty());
    }
}
