//! Pooled HTTP clients to targets (hyper-util's pool), one per protocol
//! version and connect timeout, all connecting through [`Upstream`] (SNAT
//! address, mark); HTTPS target groups have their own, which verify the
//! targets (hyper-rustls over the same connector).

use crate::socket::Upstream;
use bytes::Bytes;
use http::Uri;
use http_body_util::combinators::UnsyncBoxBody;
use hyper_rustls::{
    DefaultServerNameResolver, FixedServerNameResolver, HttpsConnector, ResolveServerName,
};
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;

pub type Body = UnsyncBoxBody<Bytes, hyper::Error>;

pub(crate) fn full(s: String) -> Body {
    use http_body_util::BodyExt;
    http_body_util::Full::new(Bytes::from(s))
        .map_err(|never: std::convert::Infallible| match never {})
        .boxed_unsync()
}

pub(crate) fn empty() -> Body {
    use http_body_util::BodyExt;
    http_body_util::Empty::new()
        .map_err(|never: std::convert::Infallible| match never {})
        .boxed_unsync()
}
pub type HttpClient = Client<Connector, Body>;
pub type TlsClient = Client<HttpsConnector<Connector>, Body>;

/// Idle pooled connections to a target are closed after this.
const POOL_IDLE: Duration = Duration::from_secs(90);

#[derive(Clone, Debug)]
pub struct Connector {
    upstream: Upstream,
    timeout: Duration,
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<TcpStream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<TokioIo<TcpStream>>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let (upstream, timeout) = (self.upstream, self.timeout);
        Box::pin(async move {
            // Targets are addresses: the authority is IP:port.
            let addr: SocketAddr = uri
                .authority()
                .and_then(|a| a.as_str().parse().ok())
                .ok_or_else(|| std::io::Error::other(format!("not an address: {uri}")))?;
            upstream.connect(addr, timeout).await.map(TokioIo::new)
        })
    }
}

/// The clients, created on first use per (HTTP/2?, connect timeout) and
/// shared by every listener with those settings.
pub struct Clients {
    upstream: Upstream,
    made: Mutex<HashMap<(bool, Duration), HttpClient>>,
}

impl Clients {
    pub fn new(upstream: Upstream) -> Arc<Clients> {
        Arc::new(Clients {
            upstream,
            made: Mutex::default(),
        })
    }

    pub fn upstream(&self) -> Upstream {
        self.upstream
    }

    /// Called when a config is compiled, never per request.
    pub fn get(&self, http2: bool, connect_timeout: Duration) -> HttpClient {
        let mut made = self.made.lock().unwrap_or_else(|e| e.into_inner());
        made.entry((http2, connect_timeout))
            .or_insert_with(|| {
                let connector = Connector {
                    upstream: self.upstream,
                    timeout: connect_timeout,
                };
                builder(http2).build(connector)
            })
            .clone()
    }
}

/// The client a request to a target goes out on.
pub enum TargetClient<'a> {
    Plain(&'a HttpClient),
    Tls(Arc<TlsClient>),
}

impl TargetClient<'_> {
    pub fn scheme(&self) -> http::uri::Scheme {
        match self {
            TargetClient::Plain(_) => http::uri::Scheme::HTTP,
            TargetClient::Tls(_) => http::uri::Scheme::HTTPS,
        }
    }

    pub fn request(&self, req: http::Request<Body>) -> ResponseFuture {
        match self {
            TargetClient::Plain(c) => c.request(req),
            TargetClient::Tls(c) => c.request(req),
        }
    }
}

fn builder(http2: bool) -> hyper_util::client::legacy::Builder {
    let mut b = Client::builder(TokioExecutor::new());
    b.timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(POOL_IDLE)
        .http2_only(http2)
        // A pooled connection the target closed is retried on a new one:
        // that is not a failed request.
        .retry_canceled_requests(true)
        .set_host(false);
    b
}

/// TLS to the targets of one HTTPS target group: the CA its targets are
/// verified against, the server name, and the pooled clients that use
/// them (one per connect timeout of the listeners that forward here).
/// Kept across configs while the group's TLS settings stay the same, so
/// its pooled connections survive a snapshot swap.
pub struct TargetTls {
    spec: (trellis_api::resource::TargetTls, bool),
    config: Arc<ClientConfig>,
    /// `None`: the target's IP address, verified against the certificate's
    /// IP addresses (and no SNI, which cannot carry an address).
    server_name: Option<ServerName<'static>>,
    clients: Mutex<HashMap<Duration, Arc<TlsClient>>>,
}

impl std::fmt::Debug for TargetTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TargetTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl PartialEq for TargetTls {
    fn eq(&self, other: &Self) -> bool {
        self.spec == other.spec
    }
}

impl TargetTls {
    /// `before` is reused when it was built from the same settings. The
    /// control plane fills in `ca` (the Trellis CA when the group gives
    /// none), so one missing here is an error, never "trust anything".
    pub fn compile(
        spec: &trellis_api::resource::TargetTls,
        http2: bool,
        before: Option<&Arc<TargetTls>>,
    ) -> Result<Arc<TargetTls>, String> {
        let key = (spec.clone(), http2);
        if let Some(before) = before.filter(|b| b.spec == key) {
            return Ok(before.clone());
        }
        let pem = spec
            .ca
            .as_deref()
            .ok_or("no CA to verify targets against")?;
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let cert = cert.map_err(|e| format!("CA: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("CA certificate: {e}"))?;
        }
        if roots.is_empty() {
            return Err("CA: no certificate".into());
        }
        let server_name = spec
            .server_name
            .as_deref()
            .map(|n| ServerName::try_from(n.to_string()).map_err(|e| format!("serverName: {e}")))
            .transpose()?;
        let mut config =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth();
        config.alpn_protocols = vec![if http2 {
            b"h2".to_vec()
        } else {
            b"http/1.1".to_vec()
        }];
        Ok(Arc::new(TargetTls {
            spec: key,
            config: Arc::new(config),
            server_name,
            clients: Mutex::default(),
        }))
    }

    /// The pooled client for this group's targets; requests to it use
    /// `https://` URIs.
    pub fn client(&self, upstream: Upstream, connect_timeout: Duration) -> Arc<TlsClient> {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        clients
            .entry(connect_timeout)
            .or_insert_with(|| {
                let connector = Connector {
                    upstream,
                    timeout: connect_timeout,
                };
                let names: Arc<dyn ResolveServerName + Send + Sync> = match &self.server_name {
                    Some(name) => Arc::new(FixedServerNameResolver::new(name.clone())),
                    None => Arc::new(DefaultServerNameResolver::default()),
                };
                let https = HttpsConnector::new(connector, self.config.clone(), true, names);
                Arc::new(builder(self.spec.1).build(https))
            })
            .clone()
    }

    /// A TLS session with `target` on `stream` (health checks).
    pub async fn handshake(
        &self,
        stream: TcpStream,
        target: IpAddr,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let name = self
            .server_name
            .clone()
            .unwrap_or_else(|| ServerName::IpAddress(target.into()));
        tokio_rustls::TlsConnector::from(self.config.clone())
            .connect(name, stream)
            .await
    }
}

/// Whether rustls is at the root of `e`: a target's handshake failed.
pub(crate) fn tls_failed(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(inner) = source {
        if inner.is::<rustls::Error>() {
            return true;
        }
        // An io::Error's source() skips what it wraps: look inside.
        let wrapped = inner
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref());
        if wrapped.is_some_and(|w| tls_failed(w)) {
            return true;
        }
        source = inner.source();
    }
    false
}

pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}
