//! The gateway role (`--gateway-listen`): where other networks' proxies
//! reach this network's targets. Mutual TLS 1.3 with the Trellis CA on both
//! sides; the caller's network is read from its certificate. Each
//! connection is HTTP/2 and carries many tunnelled requests (handled in
//! `http::handle_tunnelled`).

use crate::http::Peer;
use crate::metrics::ReasonLabels;
use crate::proxy::Proxy;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::ServerConfig;
use std::sync::Arc;
use std::time::Duration;
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
    let defaults = Timeouts::default();
    let connect = Duration::from_millis(u64::from(defaults.connect_ms.max(1)));
    let (http1, http2) = (
        proxy.clients.get(false, connect),
        proxy.clients.get(true, connect),
    );
    let request_timeout = Duration::from_secs(u64::from(defaults.request_seconds.max(1)));
    let idle_timeout = Duration::from_secs(u64::from(defaults.idle_seconds.max(1)));
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
                crate::http::handle_tunnelled(proxy.clone(), peer.clone(), req)
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
