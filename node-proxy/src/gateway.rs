//! The gateway role (`--gateway-listen`): where other networks' proxies
//! reach this network's targets. Mutual TLS 1.3 with the Trellis CA on both
//! sides; the caller's network is read from its certificate. Each
//! connection is HTTP/2 and carries many tunnelled requests (handled in
//! `handle_tunnelled` below, which checks what the caller may reach and
//! sends it on as any request).

use crate::config::Config;
use crate::forward::{Attempts, ForwardError, to_target};
use crate::headers;
use crate::metrics::ReasonLabels;
use crate::proxy::Proxy;
use crate::record::{Record, finish, refuse};
use crate::refusal::Refusal;
use crate::targets::Group;
use crate::upstream::{Body, HttpClient, empty, full};
use http::{HeaderValue, Method, Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::ServerConfig;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use trellis_api::resource::Timeouts;

/// A peer that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in flight at once; more wait their turn in the backlog.
const MAX_HANDSHAKES: usize = 256;

pub async fn serve(
    proxy: Arc<Proxy>,
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    shutdown: CancellationToken,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    let defaults = Timeouts::default().limits();
    let connect = defaults.connect;
    let (http1, http2) = (
        proxy.clients.get(false, connect),
        proxy.clients.get(true, connect),
    );
    let (request_timeout, idle_timeout) = (defaults.request, defaults.idle);
    loop {
        let (stream, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "gateway accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let Ok(permit) = handshakes.clone().acquire_owned().await else {
            break;
        };
        let (acceptor, proxy) = (acceptor.clone(), proxy.clone());
        let (http1, http2) = (http1.clone(), http2.clone());
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let refused = |reason: &'static str| {
                proxy
                    .metrics
                    .refused
                    .get_or_create(&ReasonLabels { reason })
                    .inc();
            };
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::info!(peer = %addr, error = %e, "gateway handshake refused");
                    return refused("gateway-handshake");
                }
                Err(_) => {
                    tracing::info!(peer = %addr, "gateway handshake timed out");
                    return refused("gateway-handshake-timeout");
                }
            };
            drop(permit);
            // The verifier checked the chain; the network is in the SAN.
            let network = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| trellis_api::pki::network_of(c));
            let Some(network) = network else {
                tracing::info!(peer = %addr, "gateway peer's certificate names no network");
                return refused("gateway-no-network");
            };
            tracing::debug!(peer = %addr, network, "gateway connection");
            let peer = Arc::new(Peer {
                network: Arc::from(network.as_str()),
                addr,
                http1,
                http2,
                request_timeout,
                connect_timeout: connect,
                idle_timeout,
            });
            let service = hyper::service::service_fn(move |req| {
                handle_tunnelled(proxy.clone(), peer.clone(), req)
            });
            let served = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(5))
                .max_header_list_size(crate::proxy::MAX_HEADER_BYTES as u32)
                .serve_connection(TokioIo::new(tls), service)
                .await;
            if let Err(e) = served {
                tracing::debug!(peer = %addr, error = %e, "gateway connection ended");
            }
        });
    }
}

/// A gateway's caller: the network its certificate names, and the clients
/// the gateway reaches its own targets with.
pub struct Peer {
    pub network: Arc<str>,
    pub addr: std::net::SocketAddr,
    pub http1: HttpClient,
    pub http2: HttpClient,
    pub request_timeout: Duration,
    /// For CONNECT streams (TCP listeners of other networks).
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
}

/// A request that came through the tunnel to this node's gateway. The
/// caller's network is the one its certificate names, never what a header
/// says; the service must be visible to that network and the target group
/// one of the service's groups here. Then it goes to a target like any
/// request, from this node's SNAT address.
pub async fn handle_tunnelled(
    proxy: Arc<Proxy>,
    peer: Arc<Peer>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let mut req = req.map(BodyExt::boxed_unsync);
    let config = proxy.config();
    if req.uri().path() == crate::tunnel::HEALTH_PATH {
        return Ok(health_report(&config, &peer.network));
    }
    let header = |h: &http::HeaderMap, name: &str| {
        h.get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let (claimed, service, group_name) = (
        header(req.headers(), "x-trellis-source-network"),
        header(req.headers(), "x-trellis-service"),
        header(req.headers(), crate::tunnel::GROUP_HEADER),
    );
    let mut rec = Record::begin(
        &proxy,
        "tunnel",
        peer.network.clone(),
        peer.addr,
        Instant::now(),
    );
    // The caller's request id: one id end to end.
    rec.entry.request_id = header(req.headers(), "x-trellis-request-id");
    rec.entry.service = Arc::from(service.as_str());
    rec.entry.target_group = Arc::from(group_name.as_str());
    rec.request(&proxy, req.method().as_str(), req.uri().path());
    if proxy.access_log.enabled() {
        rec.entry.identity =
            Some(header(req.headers(), "x-trellis-identity")).filter(|i| !i.is_empty());
    }
    let refused = |rec, detail: String| Ok(refuse(&proxy, rec, Refusal::TunnelRefused, &detail));
    if *claimed != *peer.network {
        return refused(
            rec,
            format!(
                "the caller's certificate names network {}, the request claims {claimed:?}",
                peer.network
            ),
        );
    }
    // A workload identity is the calling node's word for what runs on it:
    // taken only for an identity whose workloads may be on that network.
    let identity = header(req.headers(), "x-trellis-identity");
    if header(req.headers(), crate::headers::AUTHN_HEADER) == "workload"
        && !config.keys.workload_of(&identity, &peer.network)
    {
        return refused(
            rec,
            format!(
                "network {} names a caller {identity}, which is no workload of that network",
                peer.network
            ),
        );
    }
    let allowed = config
        .inbound
        .get(service.as_str())
        .is_some_and(|i| i.allows(&peer.network, &group_name));
    let group = config
        .groups
        .get(group_name.as_str())
        .filter(|g| g.remote.is_none());
    let (true, Some(group)) = (allowed, group) else {
        return refused(
            rec,
            format!(
                "network {} may not reach service {service:?} through target group {group_name:?} here",
                peer.network
            ),
        );
    };
    if req.method() == Method::CONNECT {
        return Ok(connect_target(&proxy, &peer, group, req, rec).await);
    }
    req.headers_mut().remove(crate::tunnel::GROUP_HEADER);
    headers::strip_hop_by_hop(req.headers_mut(), false);
    let (parts, body) = req.into_parts();
    let clients = (&peer.http1, &peer.http2, peer.connect_timeout);
    let sent = to_target(
        &proxy,
        clients,
        group,
        parts,
        body,
        crate::forward::Limits::listener(peer.request_timeout),
        &mut rec,
    )
    .await;
    Ok(match sent {
        Ok((lease, resp)) => {
            let (mut parts, body) = resp.into_parts();
            headers::strip_hop_by_hop(&mut parts.headers, false);
            let resp = Response::from_parts(parts, body.boxed_unsync());
            finish(&proxy, rec, resp, None, Some(lease))
        }
        Err(e) => refuse(&proxy, rec, e.refusal(), &e.to_string()),
    })
}

/// A CONNECT stream for a TCP listener of another network: a target of
/// `group` is connected from this node's SNAT address (the next one if the
/// connect fails), then the stream and the target are spliced.
async fn connect_target(
    proxy: &Arc<Proxy>,
    peer: &Peer,
    group: &Group,
    req: Request<Body>,
    mut rec: Record,
) -> Response<Body> {
    let upstream = proxy.clients.upstream();
    let mut attempts = Attempts::new(group, true);
    let connected = loop {
        let (target, lease) = match attempts.next() {
            Ok(next) => next,
            Err(e) => break Err(e),
        };
        rec.entry.target = target.addr.to_string();
        match upstream.connect(target.addr, peer.connect_timeout).await {
            Ok(s) => {
                crate::forward::observe(proxy, group, target, true);
                break Ok((lease, s));
            }
            Err(source) => {
                crate::forward::observe(proxy, group, target, false);
                let addr = target.addr;
                if let Err(e) = attempts.retry(proxy, ForwardError::Connect { addr, source }) {
                    break Err(e);
                }
            }
        }
    };
    let (lease, stream) = match connected {
        Ok(ok) => ok,
        Err(e) => return refuse(proxy, rec, e.refusal(), &e.to_string()),
    };
    rec.entry.upstream_ms = rec.start.elapsed().as_secs_f64() * 1000.0;
    let idle = peer.idle_timeout;
    tokio::spawn(async move {
        let Ok(upgraded) = hyper::upgrade::on(req).await else {
            return;
        };
        tokio::select! {
            r = crate::tcp::splice(hyper_util::rt::TokioIo::new(upgraded), stream, idle) => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "tunnelled TCP stream ended");
                }
            }
            _ = lease.target().drained() => {}
        }
    });
    finish(proxy, rec, Response::new(empty()), None, None)
}

/// The health of the groups `network` may reach through this gateway.
fn health_report(config: &Config, network: &str) -> Response<Body> {
    let mut report = std::collections::BTreeMap::new();
    for inbound in config.inbound.values() {
        if !inbound.networks.iter().any(|n| n == network) {
            continue;
        }
        for name in &inbound.groups {
            if let Some(g) = config.groups.get(name.as_str()) {
                let (healthy, unknown) = g.health_counts();
                let total = g.targets.len();
                report.insert(
                    name.clone(),
                    crate::tunnel::GroupHealth {
                        healthy,
                        unknown,
                        total,
                    },
                );
            }
        }
    }
    let mut r = Response::new(full(serde_json::to_string(&report).unwrap_or_default()));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}
