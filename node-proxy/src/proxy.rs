//! What every connection shares: the live config (compiled from the
//! network's snapshot and swapped whole), metrics, the access log, the
//! clients and idle connections to targets, the tunnels to other networks.
//! The accept loop is in `accept`; each stage of a request in its own
//! module (see lib.rs).

use crate::access_log::AccessLog;
use crate::config::Config;
use crate::metrics::{Live, Metrics};
use crate::pool::Pool;
use crate::socket::OrigDstAddr;
use crate::targets::{Health, Target};
use crate::tunnel::Tunnels;
use crate::upstream::Clients;
use crate::workload::Workloads;
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;
use trellis_api::snapshot::Snapshot;

/// Largest request head (request line and headers) a client may send;
/// beyond it, 431.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// What every connection shares: the live config and where results go.
pub struct Proxy {
    config: Arc<ArcSwap<Config>>,
    pub metrics: Metrics,
    pub access_log: AccessLog,
    pub clients: Arc<Clients>,
    /// Idle HTTP/1.1 target connections between client connections.
    pub(crate) pool: Pool,
    /// Set when the node has an identity: groups of other networks are
    /// reached through their gateways.
    tunnels: OnceLock<Arc<Tunnels>>,
    pub(crate) next_conn: AtomicU64,
    /// TLS handshakes in flight on HTTPS listeners.
    pub(crate) handshakes: Arc<Semaphore>,
    /// Mirrored copies in flight ([`crate::resilience::MAX_MIRRORS_IN_FLIGHT`]).
    pub(crate) mirrors: Arc<Semaphore>,
    /// Streams that outlive their request (TCP, TLS passthrough, upgraded
    /// connections): a drain waits for them, up to its limit.
    pub(crate) streams: TaskTracker,
    /// Who made each connection (the eBPF datapath knows).
    workloads: OnceLock<Arc<Workloads>>,
    /// Target health a previous process knew, for the first config.
    carried: Mutex<HashMap<(String, SocketAddr), Health>>,
}

/// A target's health as one process hands it to the next.
pub type KnownHealth = (String, SocketAddr, Health);

/// TLS handshakes in flight at once; beyond, new connections are refused.
pub const MAX_HANDSHAKES: usize = 256;

/// One client connection, as far as requests on it need to know.
#[derive(Debug)]
pub struct Conn {
    pub id: u64,
    pub client: SocketAddr,
    pub dst: OrigDstAddr,
    /// Where the caller's cgroup is looked up, with the eBPF datapath.
    workloads: Option<Arc<Workloads>>,
    /// The caller's cgroup: looked up on the connection's own task when
    /// first asked, not in the accept loop.
    workload: OnceLock<Option<Arc<str>>>,
}

impl Conn {
    pub fn new(id: u64, client: SocketAddr, dst: OrigDstAddr) -> Conn {
        Conn {
            id,
            client,
            dst,
            workloads: None,
            workload: OnceLock::new(),
        }
    }

    /// The cgroup of the process that made this connection, if known.
    pub fn workload(&self) -> Option<Arc<str>> {
        self.workload
            .get_or_init(|| self.workloads.as_ref()?.of(self.client))
            .clone()
    }
}

impl Proxy {
    pub fn new(network: &str, clients: Arc<Clients>, access_log: AccessLog) -> Arc<Proxy> {
        let config = Arc::new(ArcSwap::from_pointee(Config::empty(network)));
        let metrics = Metrics::default();
        metrics.register_config(config.clone());
        let log = access_log.clone();
        metrics.register_live(Live::counter(
            "trellis_access_log_dropped",
            "Access log lines dropped because the writer fell behind",
            move || log.dropped(),
        ));
        Arc::new(Proxy {
            config,
            metrics,
            access_log,
            clients,
            pool: Pool::default(),
            tunnels: OnceLock::new(),
            next_conn: AtomicU64::new(1),
            handshakes: Arc::new(Semaphore::new(MAX_HANDSHAKES)),
            mirrors: Arc::new(Semaphore::new(crate::resilience::MAX_MIRRORS_IN_FLIGHT)),
            streams: TaskTracker::new(),
            carried: Mutex::default(),
            workloads: OnceLock::new(),
        })
    }

    /// Gives the proxy its way to other networks (once, at start).
    pub fn set_tunnels(&self, tunnels: Arc<Tunnels>) {
        let config = self.config();
        tunnels.update(&config.snapshot.gateways);
        let _ = self.tunnels.set(tunnels);
    }

    pub fn tunnels(&self) -> Option<&Arc<Tunnels>> {
        self.tunnels.get()
    }

    /// What health checks have decided, target by target: for the process
    /// that takes over from this one.
    pub fn known_health(&self) -> Vec<KnownHealth> {
        let config = self.config();
        let mut known = Vec::new();
        for (name, group) in &config.groups {
            for t in group
                .targets
                .iter()
                .filter(|t| t.health() != Health::Unknown)
            {
                known.push((name.to_string(), t.addr, t.health()));
            }
        }
        known
    }

    /// Health a previous process knew: the first config starts from it
    /// instead of from "not checked yet", so no request goes to a target
    /// that process knew was down. The checks go on from there.
    pub fn carry_health(&self, known: Vec<KnownHealth>) {
        let map = known.into_iter().map(|(g, a, h)| ((g, a), h)).collect();
        *self.carried.lock().unwrap_or_else(|e| e.into_inner()) = map;
    }

    /// Names the caller of each connection from now on.
    pub fn set_workloads(&self, workloads: Workloads) {
        let _ = self.workloads.set(Arc::new(workloads));
    }

    /// A connection from `client` to `dst`, whose caller can be named.
    pub(crate) fn conn(&self, client: SocketAddr, dst: OrigDstAddr) -> Conn {
        Conn {
            workloads: self.workloads.get().cloned(),
            ..Conn::new(self.next_conn.fetch_add(1, Ordering::Relaxed), client, dst)
        }
    }

    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    /// Compiles `snapshot` against the current config and swaps it in: the
    /// next request sees all of it, none sees half. Targets that left their
    /// groups start draining.
    pub fn apply(&self, snapshot: Snapshot) -> Arc<Config> {
        let previous = self.config.load_full();
        let next = Arc::new(Config::compile(snapshot, &previous, &self.clients));
        let carried = std::mem::take(&mut *self.carried.lock().unwrap_or_else(|e| e.into_inner()));
        for (name, group) in &next.groups {
            for t in group
                .targets
                .iter()
                .filter(|t| t.health() == Health::Unknown)
            {
                if let Some(h) = carried.get(&(name.to_string(), t.addr)) {
                    t.set_health(*h);
                }
            }
        }
        if let Some(t) = self.tunnels() {
            t.update(&next.snapshot.gateways);
        }
        self.config.store(next.clone());
        let targets: std::collections::HashSet<SocketAddr> = next
            .groups
            .values()
            .flat_map(|g| g.targets.iter().map(|t| t.addr))
            .collect();
        self.pool.retain(|addr| targets.contains(&addr));
        for (target, drain) in next.departed(&previous) {
            tracing::info!(target = %target.addr, in_flight = target.in_flight(), drain = ?drain, "target left its group; draining");
            Target::remove(&target, drain);
        }
        next
    }
}
