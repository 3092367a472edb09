//! The caller's side of the cross-network tunnel: requests for target
//! groups of another network go to one of that network's gateways, over
//! one pooled HTTP/2 connection per gateway (mutual TLS, TLS 1.3), with
//! many requests in flight on it at once. A gateway that cannot be reached
//! is set aside for a moment and the next one is tried; when none answers,
//! the caller gets an error at once instead of a hang. Every few seconds
//! each network's gateways are asked for the health of their target
//! groups, so a group with nothing healthy behind it is not sent to.

use crate::socket::Upstream;
use crate::upstream::Body;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls_pki_types::ServerName;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio_rustls::TlsConnector;
use trellis_api::identity::Identity;
use trellis_api::resource::Gateway as GatewaySpec;

/// The path on which a gateway reports its target groups' health.
pub const HEALTH_PATH: &str = "/.trellis/health";
/// The tunnel's own request header: which target group the caller chose.
pub const GROUP_HEADER: &str = "x-trellis-tunnel-group";

/// A gateway that could not be reached is skipped for this long.
const DOWN_FOR: Duration = Duration::from_secs(2);
/// Gateways are asked for their groups' health this often.
pub const HEALTH_INTERVAL: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    #[error("no gateway is declared for network {0}: list one in the Network's spec.gateways")]
    NoGateway(String),
    #[error("no gateway of network {network} answered: {last}")]
    Unreachable { network: String, last: String },
    #[error("the gateway failed the request: {0}")]
    Request(String),
}

/// A group's health as its network's gateways last reported it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GroupHealth {
    pub healthy: usize,
    /// Targets not checked yet (they count: they may well be fine).
    pub unknown: usize,
    pub total: usize,
}

struct Gateway {
    address: String,
    conn: tokio::sync::Mutex<Option<SendRequest<Body>>>,
    /// Milliseconds since `Tunnels::epoch` until which it is skipped.
    down_until: AtomicU64,
}

struct Remote {
    spec: Vec<GatewaySpec>,
    server_name: ServerName<'static>,
    gateways: Vec<Arc<Gateway>>,
    next: AtomicUsize,
    /// `None` until a gateway has reported (or when none could).
    health: Mutex<Option<HashMap<String, GroupHealth>>>,
}

pub struct Tunnels {
    /// Presents this node's certificate (its identity) to gateways.
    tls: TlsConnector,
    /// Marked like every proxy socket, but from the kernel's address: the
    /// SNAT address belongs to the targets' side of this node.
    upstream: Upstream,
    connect_timeout: Duration,
    remotes: RwLock<HashMap<String, Arc<Remote>>>,
    epoch: Instant,
}

impl Tunnels {
    pub fn new(
        identity: &Arc<Identity>,
        upstream: Upstream,
        connect_timeout: Duration,
    ) -> Result<Arc<Tunnels>, trellis_api::identity::IdentityError> {
        Ok(Arc::new(Tunnels {
            tls: TlsConnector::from(identity.client_config()?),
            upstream: Upstream {
                snat_v4: None,
                snat_v6: None,
                ..upstream
            },
            connect_timeout,
            remotes: RwLock::default(),
            epoch: Instant::now(),
        }))
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Follows a snapshot's gateways: networks whose gateway list did not
    /// change keep their connections and health.
    pub fn update(&self, gateways: &BTreeMap<String, Vec<GatewaySpec>>) {
        let mut remotes = self.remotes.write().unwrap_or_else(|e| e.into_inner());
        remotes.retain(|net, r| gateways.get(net).is_some_and(|g| *g == r.spec));
        for (net, spec) in gateways {
            if remotes.contains_key(net) {
                continue;
            }
            let Ok(server_name) = ServerName::try_from(trellis_api::pki::server_name(net)) else {
                tracing::warn!(network = net, "network name is not usable as a TLS name");
                continue;
            };
            remotes.insert(
                net.clone(),
                Arc::new(Remote {
                    spec: spec.clone(),
                    server_name,
                    gateways: spec
                        .iter()
                        .map(|g| {
                            Arc::new(Gateway {
                                address: g.address.clone(),
                                conn: tokio::sync::Mutex::new(None),
                                down_until: AtomicU64::new(0),
                            })
                        })
                        .collect(),
                    next: AtomicUsize::new(0),
                    health: Mutex::new(None),
                }),
            );
        }
    }

    fn remote(&self, network: &str) -> Option<Arc<Remote>> {
        self.remotes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(network)
            .cloned()
    }

    /// False when `network`'s gateways last said `group` has no target to
    /// send to; true when they said otherwise or have not said.
    pub fn available(&self, network: &str, group: &str) -> bool {
        let Some(remote) = self.remote(network) else {
            return true;
        };
        let health = remote.health.lock().unwrap_or_else(|e| e.into_inner());
        match health.as_ref().and_then(|h| h.get(group)) {
            Some(h) => h.healthy + h.unknown > 0,
            None => true,
        }
    }

    /// Sends `req` to a gateway of `network`: the next one in turn that is
    /// not set aside, over its pooled connection (dialled if need be).
    /// Gateways set aside are tried last rather than skipped: when all of
    /// them are (a peer that came up a moment ago), the request still gets
    /// its chance instead of failing untried.
    pub async fn send(
        &self,
        network: &str,
        req: Request<Body>,
    ) -> Result<Response<Incoming>, TunnelError> {
        let remote = self
            .remote(network)
            .filter(|r| !r.gateways.is_empty())
            .ok_or_else(|| TunnelError::NoGateway(network.to_string()))?;
        let n = remote.gateways.len();
        let first = remote.next.fetch_add(1, Ordering::Relaxed);
        let now = self.now_ms();
        let (up, aside): (Vec<_>, Vec<_>) = (0..n)
            .map(|i| &remote.gateways[(first + i) % n])
            .partition(|gw| gw.down_until.load(Ordering::Relaxed) <= now);
        let mut last = String::new();
        for gw in up.into_iter().chain(aside) {
            match self.sender(&remote, gw).await {
                Ok(mut sender) => {
                    return sender
                        .send_request(req)
                        .await
                        .map_err(|e| TunnelError::Request(crate::upstream::error_chain(&e)));
                }
                Err(e) => {
                    tracing::debug!(gateway = gw.address, error = %e, "gateway unreachable; trying the next");
                    gw.down_until.store(
                        self.now_ms() + DOWN_FOR.as_millis() as u64,
                        Ordering::Relaxed,
                    );
                    last = format!("{}: {e}", gw.address);
                }
            }
        }
        Err(TunnelError::Unreachable {
            network: network.to_string(),
            last,
        })
    }

    /// The gateway's connection, dialled when there is none or it closed.
    /// Concurrent callers wait for the one dial.
    async fn sender(&self, remote: &Remote, gw: &Gateway) -> Result<SendRequest<Body>, String> {
        let mut conn = gw.conn.lock().await;
        if let Some(s) = conn.as_ref().filter(|s| !s.is_closed()) {
            return Ok(s.clone());
        }
        *conn = None;
        let dial = async {
            let addr = resolve(&gw.address).await?;
            let tcp = self
                .upstream
                .connect(addr, self.connect_timeout)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            let _ = tcp.set_nodelay(true);
            let tls = self
                .tls
                .connect(remote.server_name.clone(), tcp)
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            let (sender, connection) =
                hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                    .timer(TokioTimer::new())
                    // A gateway that vanishes without a word is noticed.
                    .keep_alive_interval(Duration::from_secs(10))
                    .keep_alive_timeout(Duration::from_secs(5))
                    .handshake(TokioIo::new(tls))
                    .await
                    .map_err(|e| format!("HTTP/2: {e}"))?;
            let address = gw.address.clone();
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(gateway = address, error = %e, "tunnel connection ended");
                }
            });
            Ok::<_, String>(sender)
        };
        // The TLS handshake is bounded too, not only the TCP connect.
        let sender = tokio::time::timeout(self.connect_timeout * 2, dial)
            .await
            .map_err(|_| "timed out".to_string())??;
        *conn = Some(sender.clone());
        Ok(sender)
    }

    /// Asks each network's gateways for their groups' health, forever.
    pub async fn watch_health(self: Arc<Self>) {
        let mut tick = tokio::time::interval(HEALTH_INTERVAL);
        loop {
            tick.tick().await;
            let remotes: Vec<(String, Arc<Remote>)> = self
                .remotes
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            for (network, remote) in remotes {
                let report = tokio::time::timeout(HEALTH_INTERVAL, self.health_of(&network)).await;
                let report = match report {
                    Ok(Ok(r)) => Some(r),
                    Ok(Err(e)) => {
                        tracing::debug!(network, error = %e, "no health report");
                        None
                    }
                    Err(_) => None,
                };
                *remote.health.lock().unwrap_or_else(|e| e.into_inner()) = report;
            }
        }
    }

    async fn health_of(&self, network: &str) -> Result<HashMap<String, GroupHealth>, String> {
        let req = Request::get(format!(
            "https://{}{HEALTH_PATH}",
            trellis_api::pki::server_name(network)
        ))
        .body(crate::upstream::empty())
        .map_err(|e| e.to_string())?;
        let resp = self.send(network, req).await.map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("status {}", resp.status()));
        }
        let body: Bytes = http_body_util::Limited::new(resp.into_body(), 1 << 20)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        serde_json::from_slice(&body).map_err(|e| e.to_string())
    }
}

async fn resolve(address: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = address.parse() {
        return Ok(a);
    }
    tokio::net::lookup_host(address)
        .await
        .map_err(|e| format!("resolving {address}: {e}"))?
        .next()
        .ok_or_else(|| format!("{address} resolves to nothing"))
}
