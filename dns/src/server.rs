//! One listener: UDP and TCP on the same address and port.

use crate::forward::Forwarder;
use crate::handler::{Handler, Networks, Views};
use crate::tcp::Limits;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;
use trellis_api::handover::Listeners;

/// Names of the DNS's sockets in a handover (and systemd's
/// `FileDescriptorName=`).
const UDP: &str = "dns-udp";
const TCP: &str = "dns-tcp";

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

/// The UDP socket and TCP listener at `addr`: a previous process's (or
/// systemd's), named `dns-udp` and `dns-tcp`, else bound; both offered to
/// the next process.
pub async fn listen(
    listeners: &mut Listeners,
    addr: SocketAddr,
) -> std::io::Result<(UdpSocket, TcpListener)> {
    let inherited = listeners.inherited();
    let (udp, tcp) = match (inherited.udp(UDP, addr), inherited.tcp(TCP, addr)) {
        (Some(u), Some(t)) => (UdpSocket::from_std(u)?, TcpListener::from_std(t)?),
        _ => bind(addr).await?,
    };
    listeners.offer(UDP, udp.as_fd())?;
    listeners.offer(TCP, tcp.as_fd())?;
    Ok((udp, tcp))
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
    let (stop_tcp, tcp_stopped) = watch::channel(false);
    let tcp = tokio::spawn(crate::tcp::serve(tcp, handler, options.tcp, tcp_stopped));
    shutdown.await;
    stop.store(true, Ordering::Relaxed);
    let _ = stop_tcp.send(true);
    let _ = tcp.await;
    let _ =
        tokio::task::spawn_blocking(move || threads.into_iter().for_each(|t| drop(t.join()))).await;
}
