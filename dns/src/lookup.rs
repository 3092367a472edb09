//! A one-question client for the node-local DNS: what `trellis demo` uses to
//! show a name resolving, as `dig` would.

use hickory_server::proto::op::{Message, ResponseCode};
use hickory_server::proto::rr::RData;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;
use tokio::net::UdpSocket;

#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("{0} is not a DNS name")]
    Name(String),
    #[error("asking {0}: {1}")]
    Io(SocketAddr, std::io::Error),
    #[error("no answer from {0} within {1:?}")]
    Timeout(SocketAddr, Duration),
    #[error("{0} answered {1}")]
    Refused(SocketAddr, ResponseCode),
    #[error("{0} sent an unreadable answer")]
    Malformed(SocketAddr),
}

/// The A records of `name`, asked over UDP.
pub async fn a(
    server: SocketAddr,
    name: &str,
    wait: Duration,
) -> Result<Vec<Ipv4Addr>, LookupError> {
    // Header: id, RD, one question.
    let id = 0x7472u16;
    let mut query = Vec::with_capacity(32 + name.len());
    query.extend_from_slice(&id.to_be_bytes());
    query.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        let len = u8::try_from(label.len())
            .ok()
            .filter(|l| (1..64).contains(l))
            .ok_or_else(|| LookupError::Name(name.to_string()))?;
        query.push(len);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1]);
    let io = |e| LookupError::Io(server, e);
    let bind: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::LOCALHOST, 0).into()
    } else {
        (std::net::Ipv6Addr::LOCALHOST, 0).into()
    };
    let socket = UdpSocket::bind(bind).await.map_err(io)?;
    socket.connect(server).await.map_err(io)?;
    socket.send(&query).await.map_err(io)?;
    let mut buf = [0u8; 1232];
    let n = tokio::time::timeout(wait, socket.recv(&mut buf))
        .await
        .map_err(|_| LookupError::Timeout(server, wait))?
        .map_err(io)?;
    let answer = Message::from_vec(&buf[..n]).map_err(|_| LookupError::Malformed(server))?;
    if answer.metadata.id != id {
        return Err(LookupError::Malformed(server));
    }
    if answer.metadata.response_code != ResponseCode::NoError {
        return Err(LookupError::Refused(server, answer.metadata.response_code));
    }
    Ok(answer
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect())
}
