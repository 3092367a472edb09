//! The accept loop every redirected connection reaches: the original
//! VIP:port read back (`socket`), the service's listener found in the
//! current config, and the connection handed to its protocol's path —
//! HTTP (`h1`, then hyper's `http` for the unusual), HTTPS (TLS first),
//! TCP and TLS passthrough (`tcp`) — until the proxy drains.

use crate::config::{DEFAULT_RULE, Listener};
use crate::h1;
use crate::metrics::{ProtocolLabels, ReasonLabels};
use crate::proxy::{Conn, MAX_HEADER_BYTES, Proxy};
use crate::socket::{self, OrigDstAddr};
use crate::streams::Streams;
use crate::tcp::Routed;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::Watcher;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use trellis_api::resource::ListenerProtocol;

impl Proxy {
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
            let conn = Arc::new(self.conn(client, dst));
            let protocol = l.protocol.as_str();
            let _ = stream.set_nodelay(true);
            // Every log line of the connection carries who and what.
            let span = tracing::info_span!(
                "conn",
                id = conn.id,
                client = %client,
                service = %l.service,
                listener = %l.name
            );
            match l.protocol {
                ListenerProtocol::Http => {
                    let (proxy, watcher, l) = (self.clone(), graceful.watcher(), l.clone());
                    let stop = shutdown.clone();
                    tokio::spawn(
                        async move {
                            let _active = proxy.track(protocol);
                            proxy.serve_http(&l, conn, stream, watcher, &stop).await;
                        }
                        .instrument(span),
                    );
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
                    tokio::spawn(
                        async move {
                            let _active = proxy.track(protocol);
                            let limit = l.timeouts.header_read;
                            let stream = match tokio::time::timeout(
                                limit,
                                tls.acceptor.accept(stream),
                            )
                            .await
                            {
                                Ok(Ok(s)) => s,
                                Ok(Err(e)) => {
                                    tracing::debug!(error = %e, "TLS handshake failed");
                                    return proxy.refuse("tls-handshake", client, Some(dst));
                                }
                                Err(_) => {
                                    return proxy.refuse(
                                        "tls-handshake-timeout",
                                        client,
                                        Some(dst),
                                    );
                                }
                            };
                            drop(permit);
                            if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                                proxy.serve_hyper(&l, conn, stream, watcher).await;
                            } else {
                                proxy.serve_http(&l, conn, stream, watcher, &stop).await;
                            }
                        }
                        .instrument(span),
                    );
                }
                ListenerProtocol::Tcp => {
                    let (proxy, l) = (self.clone(), l.clone());
                    let stop = shutdown.clone();
                    self.streams.spawn(
                        async move {
                            let _active = proxy.track(protocol);
                            let routed = Routed {
                                rule: &DEFAULT_RULE,
                                action: &l.default,
                                replay: Vec::new(),
                            };
                            crate::tcp::forward(&proxy, &conn, &l, routed, stream, stop, drain)
                                .await;
                        }
                        .instrument(span),
                    );
                }
                ListenerProtocol::TlsPassthrough => {
                    let (proxy, l) = (self.clone(), l.clone());
                    let stop = shutdown.clone();
                    self.streams.spawn(
                        async move {
                            let _active = proxy.track(protocol);
                            let mut stream = stream;
                            let limit = l.timeouts.header_read;
                            let hello = tokio::time::timeout(
                                limit,
                                crate::tls::read_client_hello(&mut stream),
                            )
                            .await;
                            let (replay, name) = match hello {
                                Ok(Ok(h)) => h,
                                Ok(Err(e)) => {
                                    tracing::debug!(error = ?e, "no usable ClientHello");
                                    return proxy.refuse("tls-client-hello", client, Some(dst));
                                }
                                Err(_) => {
                                    return proxy.refuse(
                                        "tls-handshake-timeout",
                                        client,
                                        Some(dst),
                                    );
                                }
                            };
                            let (rule, action) = l.route_server_name(name.as_deref());
                            let routed = Routed {
                                rule,
                                action,
                                replay,
                            };
                            crate::tcp::forward(&proxy, &conn, &l, routed, stream, stop, drain)
                                .await;
                        }
                        .instrument(span),
                    );
                }
            }
        }
        tracing::info!(drain = ?drain, "proxy stopped accepting; draining connections");
        self.streams.close();
        let drained = async {
            graceful.shutdown().await;
            self.streams.wait().await;
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
            // Boxed: hyper's connection state is allocated for the
            // connections handed to it, not reserved in every one's task.
            Box::pin(self.serve_hyper(l, conn, io, watcher)).await;
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
        let streams = Streams::default();
        let served = watcher.watch(self.http(l, conn, io, streams.clone()));
        if let Err(e) = streams.drive(served).await {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    }

    /// Serves HTTP/1.1 and HTTP/2 on `io` with hyper, with the listener's
    /// limits; HTTP/2 streams go to `streams`, polled on this task.
    fn http<I>(
        self: &Arc<Self>,
        l: &Listener,
        conn: Arc<Conn>,
        io: I,
        streams: Streams,
    ) -> impl hyper_util::server::graceful::GracefulConnection<
        Error = Box<dyn std::error::Error + Send + Sync>,
    > + use<I>
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let mut builder = auto::Builder::new(streams);
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(l.timeouts.header_read)
            .max_buf_size(MAX_HEADER_BYTES);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(MAX_HEADER_BYTES as u32);
        let proxy = self.clone();
        // HTTP/2 streams are polled apart from the connection's future:
        // each request's span is a child of the connection's all the same.
        let conn_span = tracing::Span::current();
        let service = hyper::service::service_fn(move |req| {
            let span = tracing::debug_span!(parent: &conn_span, "request");
            crate::http::handle(proxy.clone(), conn.clone(), req).instrument(span)
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
