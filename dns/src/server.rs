//! One listener: UDP and TCP on the same address and port.

use crate::forward::Forwarder;
use crate::handler::{Handler, Networks, Views};
use crate::tcp::Limits;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;

/// Binds UDP and TCP on the same port; with port 0, a free one.
pub async fn bind(addr: SocketAddr) -> std::io::Result<(UdpSocket, TcpListener)> {
    let mut last = None;
    for _ in 0..20 {
        let udp = UdpSocket::bind(addr).await?;
        let port = udp.local_addr()?.port();
        match TcpListener::bind(SocketAddr::new(addr.ip(), port)).await {
            Ok(tcp) => return Ok((udp, tcp)),
            // Port 0 gave a UDP port whose TCP twin is taken: try another.
            Err(e) if addr.port() == 0 => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no free port")))
}

/// How one listener serves, beyond what it answers.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Threads answering UDP (at least one).
    pub udp_threads: usize,
    /// Where names outside every Trellis zone go; without it they are REFUSED.
    pub forwarder: Option<Arc<Forwarder>>,
    pub tcp: Limits,
}

/// Serves one listener until `shutdown` resolves: UDP on batching threads
/// sharing the socket, TCP on tokio tasks.
pub async fn serve(
    udp: UdpSocket,
    tcp: TcpListener,
    views: watch::Receiver<Arc<Views>>,
    networks: Networks,
    options: Options,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let handler = Handler::new(views, networks, options.forwarder);
    let stop = Arc::new(AtomicBool::new(false));
    let threads = match udp
        .into_std()
        .and_then(|u| crate::udp::spawn(u, handler.clone(), options.udp_threads, stop.clone()))
    {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the UDP threads");
            Vec::new()
        }
    };
    let tcp = tokio::spawn(crate::tcp::serve(tcp, handler, options.tcp));
    shutdown.await;
    tcp.abort();
    stop.store(true, Ordering::Relaxed);
    let _ =
        tokio::task::spawn_blocking(move || threads.into_iter().for_each(|t| drop(t.join()))).await;
}
