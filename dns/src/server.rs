//! UDP and TCP listeners on hickory's `Server`.

use crate::handler::{Handler, Networks, Views};
use hickory_server::Server;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;

/// Idle TCP connections are closed after this.
pub const TCP_TIMEOUT: Duration = Duration::from_secs(10);

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

/// Serves one listener until `shutdown` resolves: UDP on `udp_threads`
/// batching threads sharing the socket, TCP on hickory's server.
pub async fn serve(
    udp: UdpSocket,
    tcp: TcpListener,
    views: watch::Receiver<Arc<Views>>,
    networks: Networks,
    udp_threads: usize,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let handler = Handler::new(views, networks);
    let stop = Arc::new(AtomicBool::new(false));
    let threads = match udp
        .into_std()
        .and_then(|u| crate::udp::spawn(u, handler.clone(), udp_threads, stop.clone()))
    {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the UDP threads");
            Vec::new()
        }
    };
    let mut server = Server::new(handler);
    server.register_listener(tcp, TCP_TIMEOUT, 64);
    shutdown.await;
    stop.store(true, Ordering::Relaxed);
    let _ =
        tokio::task::spawn_blocking(move || threads.into_iter().for_each(|t| drop(t.join()))).await;
    if let Err(e) = server.shutdown_gracefully().await {
        tracing::warn!(error = %e, "DNS server did not stop cleanly");
    }
}
