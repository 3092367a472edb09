//! Pooled HTTP clients to targets (hyper-util's pool), one per protocol
//! version and connect timeout, all connecting through [`Upstream`] (SNAT
//! address, mark).

use crate::socket::Upstream;
use bytes::Bytes;
use http::Uri;
use http_body_util::combinators::UnsyncBoxBody;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;

pub type Body = UnsyncBoxBody<Bytes, hyper::Error>;
pub type HttpClient = Client<Connector, Body>;

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
                Client::builder(TokioExecutor::new())
                    .timer(TokioTimer::new())
                    .pool_timer(TokioTimer::new())
                    .pool_idle_timeout(POOL_IDLE)
                    .http2_only(http2)
                    // A pooled connection the target closed is retried on a
                    // new one: that is not a failed request.
                    .retry_canceled_requests(true)
                    .set_host(false)
                    .build(connector)
            })
            .clone()
    }
}
