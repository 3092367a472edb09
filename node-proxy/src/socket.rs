//! Socket-level work, in one place: recovering a redirected connection's
//! original destination (`SO_ORIGINAL_DST`, answered by the eBPF datapath's
//! getsockopt hook or by conntrack after the nftables redirect), and opening
//! upstream connections from the node's SNAT address with the proxy's mark,
//! which the datapath never redirects.

use nix::sys::socket::{getsockopt, setsockopt, sockopt};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::time::Duration;
use tokio::net::{TcpSocket, TcpStream};

/// The VIP:port a redirected connection was made to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OrigDstAddr(pub SocketAddr);

/// `None` when the connection was not redirected (nothing to answer).
pub fn original_dst(stream: &TcpStream) -> Option<OrigDstAddr> {
    let local = stream.local_addr().ok()?;
    let addr = match local {
        SocketAddr::V4(_) => {
            let sin = getsockopt(stream, sockopt::OriginalDst).ok()?;
            SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                u16::from_be(sin.sin_port),
            ))
        }
        SocketAddr::V6(_) => {
            let sin6 = getsockopt(stream, sockopt::Ip6tOriginalDst).ok()?;
            SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                0,
                0,
            ))
        }
    };
    Some(OrigDstAddr(addr))
}

/// How upstream connections are made.
#[derive(Clone, Copy, Debug)]
pub struct Upstream {
    /// Source address of upstream connections (SNAT); `None`: the kernel's
    /// choice for the route.
    pub snat_v4: Option<Ipv4Addr>,
    pub snat_v6: Option<Ipv6Addr>,
    /// SO_MARK on upstream sockets (0: none).
    pub mark: u32,
}

impl Upstream {
    pub async fn connect(&self, to: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
        let socket = match to {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        if self.mark != 0 {
            socket2::SockRef::from(&socket).set_mark(self.mark)?;
        }
        let snat: Option<IpAddr> = match to {
            SocketAddr::V4(_) => self.snat_v4.map(IpAddr::V4),
            SocketAddr::V6(_) => self.snat_v6.map(IpAddr::V6),
        };
        if let Some(ip) = snat {
            // Port 0 late: the kernel picks the port at connect time, so
            // the four-tuple, not the port alone, must be unique.
            if ip.is_ipv4() {
                setsockopt(&socket, sockopt::IpBindAddressNoPort, &true)?;
            }
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        socket.set_nodelay(true)?;
        match tokio::time::timeout(timeout, socket.connect(to)).await {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("connect to {to} timed out after {timeout:?}"),
            )),
        }
    }
}
