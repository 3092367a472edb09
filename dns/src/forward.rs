//! Forwarding of names outside every Trellis zone to an upstream resolver
//! (`--forward ADDR`), so the node's DNS can be a host's only resolver. The
//! query goes upstream byte for byte (its ID, flags and EDNS unchanged) over
//! the transport it arrived on, each on a socket of its own, so answers need
//! no demultiplexing; the upstream's answer comes back byte for byte too.
//! An upstream that does not answer in time gets the client a SERVFAIL.

use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::{Message, ResponseCode};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::Semaphore;

/// How long the upstream has to answer.
pub const TIMEOUT: Duration = Duration::from_secs(2);
/// Forwarded queries in flight at once; beyond this, SERVFAIL at once
/// rather than unbounded memory (each holds a 64 KiB receive buffer).
pub const MAX_IN_FLIGHT: usize = 256;

#[derive(Debug)]
pub struct Forwarder {
    upstream: SocketAddr,
    in_flight: Arc<Semaphore>,
    forwarded: AtomicU64,
    failed: AtomicU64,
}

impl Forwarder {
    pub fn new(upstream: SocketAddr) -> Forwarder {
        Forwarder {
            upstream,
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            forwarded: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }

    /// The upstream's answer to `query`, or a SERVFAIL; `None` only when the
    /// query is too broken to answer at all.
    pub async fn exchange(&self, query: &[u8], protocol: Protocol) -> Option<Vec<u8>> {
        self.forwarded.fetch_add(1, Ordering::Relaxed);
        let result = match self.in_flight.try_acquire() {
            Ok(_permit) => {
                let exchange = async {
                    match protocol {
                        Protocol::Udp => self.udp(query).await,
                        _ => self.tcp(query).await,
                    }
                };
                tokio::time::timeout(TIMEOUT, exchange)
                    .await
                    .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
            }
            Err(_) => Err(std::io::Error::other(
                "too many forwarded queries in flight",
            )),
        };
        match result {
            Ok(answer) => Some(answer),
            Err(e) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(upstream = %self.upstream, error = %e, "forwarding failed");
                servfail(query)
            }
        }
    }

    async fn udp(&self, query: &[u8]) -> std::io::Result<Vec<u8>> {
        let local: SocketAddr = match self.upstream {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let socket = UdpSocket::bind(local).await?;
        socket.connect(self.upstream).await?;
        socket.send(query).await?;
        let mut buf = vec![0u8; usize::from(u16::MAX)];
        loop {
            let n = socket.recv(&mut buf).await?;
            // Only the upstream can reach a connected socket; still, the
            // answer must be to this query.
            if n >= 12 && buf[..2] == query[..2] {
                buf.truncate(n);
                return Ok(buf);
            }
        }
    }

    async fn tcp(&self, query: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut stream = TcpStream::connect(self.upstream).await?;
        let len = u16::try_from(query.len()).map_err(std::io::Error::other)?;
        let mut framed = Vec::with_capacity(query.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(query);
        stream.write_all(&framed).await?;
        let n = stream.read_u16().await?;
        let mut buf = vec![0u8; usize::from(n)];
        stream.read_exact(&mut buf).await?;
        Ok(buf)
    }

    /// Queries forwarded, and those answered SERVFAIL because the upstream
    /// did not answer.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.forwarded.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

fn servfail(query: &[u8]) -> Option<Vec<u8>> {
    let q = Message::from_vec(query).ok()?;
    let mut m = Message::error_msg(q.metadata.id, q.metadata.op_code, ResponseCode::ServFail);
    m.metadata.recursion_desired = q.metadata.recursion_desired;
    m.add_queries(q.queries);
    m.to_vec().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query() -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in ["example", "org"] {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
        q
    }

    #[tokio::test]
    async fn a_silent_upstream_gets_the_client_a_servfail_in_time() {
        // A bound socket that never answers.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let f = Forwarder::new(silent.local_addr().unwrap());
        let started = std::time::Instant::now();
        let answer = f.exchange(&query(), Protocol::Udp).await.unwrap();
        assert!(started.elapsed() < TIMEOUT + Duration::from_secs(1));
        let m = Message::from_vec(&answer).unwrap();
        assert_eq!(m.metadata.id, 0x1234);
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
        assert_eq!(m.queries.len(), 1);
        assert_eq!(f.counts().1, 1);
    }

    #[tokio::test]
    async fn the_upstream_answer_comes_back_byte_for_byte() {
        let upstream = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let at = upstream.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            let (n, from) = upstream.recv_from(&mut buf).await.unwrap();
            // A stray datagram with another ID first: it must be ignored.
            let mut stray = buf[..n].to_vec();
            stray[0] ^= 0xff;
            upstream.send_to(&stray, from).await.unwrap();
            let mut reply = buf[..n].to_vec();
            reply[2] |= 0x80;
            upstream.send_to(&reply, from).await.unwrap();
        });
        let f = Forwarder::new(at);
        let answer = f.exchange(&query(), Protocol::Udp).await.unwrap();
        let mut expected = query();
        expected[2] |= 0x80;
        assert_eq!(answer, expected);
    }
}
