//! The proxy every redirected connection reaches: the accept loop, the
//! per-connection classification (original VIP:port to service and
//! listener), and graceful drain. HTTP requests are handled in `http`, TCP
//! connections in `tcp`.

use crate::access_log::AccessLog;
use crate::config::{Config, DEFAULT_RULE, Listener};
use crate::h1;
use crate::metrics::{Metrics, ProtocolLabels, ReasonLabels};
use crate::socket::{self, OrigDstAddr};
use crate::targets::Target;
use crate::tcp::Routed;
use crate::tunnel::Tunnels;
use crate::upstream::Clients;
use arc_swap::ArcSwap;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::Watcher;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use trellis_api::resource::ListenerProtocol;
use trellis_api::snapshot::Snapshot;

/// Largest request head (request line and headers) a client may send;
/// beyond it, 431.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// What every connection shares: the live config and where results go.
pub struct Proxy {
    config: ArcSwap<Config>,
    pub metrics: Metrics,
    pub access_log: AccessLog,
    pub clients: Arc<Clients>,
    /// Idle HTTP/1.1 target connections between client connections.
    pub(crate) pool: h1::Pool,
    /// Set when the node has an identity: groups of other networks are
    /// reached through their gateways.
    tunnels: OnceLock<Arc<Tunnels>>,
    next_conn: AtomicU64,
    /// TLS handshakes in flight on HTTPS listeners.
    handshakes: Arc<Semaphore>,
}

/// TLS handshakes in flight at once; beyond, new connections are refused.
pub const MAX_HANDSHAKES: usize = 256;

/// One client connection, as far as requests on it need to know.
#[derive(Debug)]
pub struct Conn {
    pub id: u64,
    pub client: SocketAddr,
    pub dst: OrigDstAddr,
}

impl Proxy {
    pub fn new(network: &str, clients: Arc<Clients>, access_log: AccessLog) -> Arc<Proxy> {
        Arc::new(Proxy {
            config: ArcSwap::from_pointee(Config::empty(network)),
            metrics: Metrics::default(),
            access_log,
            clients,
            pool: h1::Pool::default(),
            tunnels: OnceLock::new(),
            next_conn: AtomicU64::new(1),
            handshakes: Arc::new(Semaphore::new(MAX_HANDSHAKES)),
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

    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    /// Compiles `snapshot` against the current config and swaps it in: the
    /// next request sees all of it, none sees half. Targets that left their
    /// groups start draining.
    pub fn apply(&self, snapshot: Snapshot) -> Arc<Config> {
        let previous = self.config.load_full();
        let next = Arc::new(Config::compile(snapshot, &previous, &self.clients));
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

    fn refuse(&self, reason: &'static str, client: SocketAddr, dst: Option<OrigDstAddr>) {
        tracing::debug!(%client, dst = ?dst.map(|d| d.0), reason, "connection refused");
        self.metrics
            .refused
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// Accepts on `listener` until `shutdown`, then stops accepting and
    /// gives open connections `drain` to finish (HTTP/1 connections close
    /// after their current request, HTTP/2 ones get GOAWAY).
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: CancellationToken,
        drain: Duration,
    ) {
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let tunnels = TaskTracker::new();
        loop {
            let (stream, client) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = shutdown.cancelled() => break,
            };
            let Some(dst) = socket::original_dst(&stream) else {
                self.refuse("not-redirected", client, None);
                continue;
            };
            let config = self.config();
            let Some(l) = config.listener(dst.0) else {
                // No service this network may see: refused even though
                // the connection got here.
                self.refuse("no-service", client, Some(dst));
                continue;
            };
            let conn = Arc::new(Conn {
                id: self.next_conn.fetch_add(1, Ordering::Relaxed),
                client,
                dst,
            });
            let protocol = l.protocol.as_str();
            let _ = stream.set_nodelay(true);
            match l.protocol {
                ListenerProtocol::Http => {
                    let (proxy, watcher, l) = (self.clone(), graceful.watcher(), l.clone());
                    let stop = shutdown.clone();
                    tokio::spawn(async move {
                        let _active = proxy.track(protocol);
                        proxy.serve_http(&l, conn, stream, watcher, &stop).await;
                    });
                }
                ListenerProtocol::Https => {
                    let Some(tls) = l.tls.clone() else {
                        self.refuse("no-certificate", client, Some(dst));
                        continue;
                    };
                    // A bound on handshakes in flight: they cost CPU
                    // before a client has shown it is one.
                    let Ok(permit) = self.handshakes.clone().try_acquire_owned() else {
                        self.refuse("tls-handshakes-full", client, Some(dst));
                        continue;
                    };
                    let (proxy, watcher, l) = (self.clone(), graceful.watcher(), l.clone());
                    let stop = shutdown.clone();
                    tokio::spawn(async move {
                        let _active = proxy.track(protocol);
                        let limit =
                            Duration::from_secs(u64::from(l.timeouts.header_read_seconds.max(1)));
                        let stream = match tokio::time::timeout(limit, tls.acceptor.accept(stream))
                            .await
                        {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                tracing::debug!(conn = conn.id, client = %conn.client, error = %e, "TLS handshake failed");
                                return proxy.refuse("tls-handshake", client, Some(dst));
                            }
                            Err(_) => {
                                return proxy.refuse("tls-handshake-timeout", client, Some(dst));
                            }
                        };
                        drop(permit);
                        if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                            proxy.serve_hyper(&l, conn, stream, watcher).await;
                        } else {
                            proxy.serve_http(&l, conn, stream, watcher, &stop).await;
                        }
                    });
                }
                ListenerProtocol::Tcp => {
                    let (proxy, l) = (self.clone(), l.clone());
                    let stop = shutdown.clone();
                    tunnels.spawn(async move {
                        let _active = proxy.track(protocol);
                        let routed = Routed {
                            rule: &DEFAULT_RULE,
                            action: &l.default,
                            replay: Vec::new(),
                        };
                        crate::tcp::forward(&proxy, &conn, &l, routed, stream, stop, drain).await;
                    });
                }
                ListenerProtocol::TlsPassthrough => {
                    let (proxy, l) = (self.clone(), l.clone());
                    let stop = shutdown.clone();
                    tunnels.spawn(async move {
                        let _active = proxy.track(protocol);
                        let mut stream = stream;
                        let limit = Duration::from_secs(u64::from(l.timeouts.header_read_seconds.max(1)));
                        let hello = tokio::time::timeout(limit, crate::tls::read_client_hello(&mut stream)).await;
                        let (replay, name) = match hello {
                            Ok(Ok(h)) => h,
                            Ok(Err(e)) => {
                                tracing::debug!(conn = conn.id, client = %conn.client, error = ?e, "no usable ClientHello");
                                return proxy.refuse("tls-client-hello", client, Some(dst));
                            }
                            Err(_) => return proxy.refuse("tls-handshake-timeout", client, Some(dst)),
                        };
                        let (rule, action) = l.route_server_name(name.as_deref());
                        let routed = Routed { rule, action, replay };
                        crate::tcp::forward(&proxy, &conn, &l, routed, stream, stop, drain).await;
                    });
                }
            }
        }
        tracing::info!(drain = ?drain, "proxy stopped accepting; draining connections");
        tunnels.close();
        let drained = async {
            graceful.shutdown().await;
            tunnels.wait().await;
        };
        if tokio::time::timeout(drain, drained).await.is_err() {
            tracing::warn!("drain time over; closing what is left");
        }
    }

    /// Serves HTTP on `io` (a plain or a TLS stream): HTTP/1.1 on this task
    /// (`h1`) while its requests are the common kind, hyper for the rest of
    /// the connection from the first that is not.
    async fn serve_http<I>(
        self: &Arc<Self>,
        l: &Listener,
        conn: Arc<Conn>,
        io: I,
        watcher: Watcher,
        stop: &CancellationToken,
    ) where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        if let h1::Served::HandOver(io) = h1::serve(self, &conn, io, stop).await {
            self.serve_hyper(l, conn, io, watcher).await;
        }
    }

    /// One client connection to `conn.dst`, served as the accept loop
    /// would (the HTTP/1.1 path, then hyper), for in-process tests.
    #[cfg(test)]
    pub(crate) async fn serve_connection(
        self: &Arc<Self>,
        conn: Conn,
        stream: tokio::net::TcpStream,
    ) {
        let config = self.config();
        let Some(l) = config.listener(conn.dst.0).cloned() else {
            return;
        };
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let stop = CancellationToken::new();
        self.serve_http(&l, Arc::new(conn), stream, graceful.watcher(), &stop)
            .await;
    }

    async fn serve_hyper<I>(
        self: &Arc<Self>,
        l: &Listener,
        conn: Arc<Conn>,
        io: I,
        watcher: Watcher,
    ) where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (id, client) = (conn.id, conn.client);
        if let Err(e) = watcher.watch(self.http(l, conn, io)).await {
            tracing::debug!(conn = id, %client, error = %e, "connection ended with an error");
        }
    }

    /// Serves HTTP/1.1 and HTTP/2 on `io` with hyper, with the listener's
    /// limits.
    fn http<I>(
        self: &Arc<Self>,
        l: &Listener,
        conn: Arc<Conn>,
        io: I,
    ) -> impl hyper_util::server::graceful::GracefulConnection<
        Error = Box<dyn std::error::Error + Send + Sync>,
    > + use<I>
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(u64::from(
                l.timeouts.header_read_seconds.max(1),
            )))
            .max_buf_size(MAX_HEADER_BYTES);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(MAX_HEADER_BYTES as u32);
        let proxy = self.clone();
        let service = hyper::service::service_fn(move |req| {
            crate::http::handle(proxy.clone(), conn.clone(), req)
        });
        builder
            .serve_connection_with_upgrades(TokioIo::new(io), service)
            .into_owned()
    }

    /// Counts a connection as active until the guard drops.
    fn track(&self, protocol: &'static str) -> Active<'_> {
        let labels = ProtocolLabels { protocol };
        self.metrics.connections.get_or_create(&labels).inc();
        self.metrics.active.get_or_create(&labels).inc();
        Active(self, labels)
    }
}

struct Active<'a>(&'a Proxy, ProtocolLabels);

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.metrics.active.get_or_create(&self.1).dec();
    }
}
