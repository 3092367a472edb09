//! The UDP path, in batches. hickory's server spawns a task per datagram and
//! sends every response through a channel to a writer task, one syscall per
//! datagram each way; measured under load, most of the server's CPU was then
//! in the kernel. Here each thread reads up to [`BATCH`] datagrams with one
//! `recvmmsg`, answers each (the common A or AAAA query in place, [`fast`]; any
//! other through the same [`Handler`] and hickory's encoder, so truncation and
//! TC follow hickory's rule: the client's EDNS payload size, or 512 bytes
//! without EDNS), and sends all answers with one `sendmmsg`.
//! Queries for the forwarder go to a tokio task, which answers on its own.

use crate::fast;
use crate::handler::Handler;
use crate::wire::{self, Reply};
use hickory_server::net::xfer::Protocol;
use nix::errno::Errno;
use nix::sys::socket::{
    ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg,
};
use std::io::{IoSlice, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Datagrams read per `recvmmsg`.
pub const BATCH: usize = 32;
/// Largest query accepted (RFC 9715's recommended EDNS payload size); longer
/// datagrams arrive truncated and are dropped.
const MAX_QUERY: usize = 1232;
/// How often a thread waiting for datagrams checks whether to stop.
const STOP_CHECK: Duration = Duration::from_millis(250);

fn socket_addr(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::from(*v4)));
    }
    a.as_sockaddr_in6()
        .map(|v6| SocketAddr::V6(SocketAddrV6::from(*v6)))
}

/// Starts `threads` threads answering on `socket` until `stop` is set.
pub fn spawn(
    socket: UdpSocket,
    handler: Handler,
    threads: usize,
    stop: Arc<AtomicBool>,
) -> std::io::Result<Vec<std::thread::JoinHandle<()>>> {
    socket.set_nonblocking(false)?;
    socket.set_read_timeout(Some(STOP_CHECK))?;
    let runtime = tokio::runtime::Handle::current();
    (0..threads.max(1))
        .map(|i| {
            let (socket, handler, stop) = (socket.try_clone()?, handler.clone(), stop.clone());
            let runtime = runtime.clone();
            std::thread::Builder::new()
                .name(format!("dns-udp-{i}"))
                .spawn(move || run(Arc::new(socket), &handler, &stop, &runtime))
        })
        .collect()
}

fn run(
    socket: Arc<UdpSocket>,
    handler: &Handler,
    stop: &AtomicBool,
    runtime: &tokio::runtime::Handle,
) {
    let fd = socket.as_raw_fd();
    let mut bufs = vec![[0u8; MAX_QUERY]; BATCH];
    let mut recv_headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    let mut send_headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    let out = Arc::new(Mutex::new(Vec::with_capacity(512)));
    let mut answers: Vec<(Vec<u8>, SockaddrStorage)> = Vec::with_capacity(BATCH);
    while !stop.load(Ordering::Relaxed) {
        let received: Vec<(usize, Option<SockaddrStorage>, bool)> = {
            let mut iovs: Vec<[IoSliceMut<'_>; 1]> = bufs
                .iter_mut()
                .map(|b| [IoSliceMut::new(&mut b[..])])
                .collect();
            match recvmmsg(
                fd,
                &mut recv_headers,
                iovs.iter_mut(),
                MsgFlags::MSG_WAITFORONE,
                None,
            ) {
                Ok(msgs) => msgs
                    .map(|m| (m.bytes, m.address, m.flags.contains(MsgFlags::MSG_TRUNC)))
                    .collect(),
                // The receive timeout: time to look at the stop flag.
                Err(Errno::EAGAIN | Errno::EINTR) => continue,
                Err(e) => {
                    tracing::debug!(error = %e, "recvmmsg failed");
                    continue;
                }
            }
        };
        answers.clear();
        for (i, (n, addr, truncated)) in received.into_iter().enumerate() {
            let Some((addr, src)) = addr.and_then(|a| socket_addr(&a).map(|s| (a, s))) else {
                continue;
            };
            if truncated {
                crate::metrics::malformed();
                continue;
            }
            let query = &bufs[i][..n];
            if let Some(bytes) = fast::answer(handler, query, src.ip()) {
                answers.push((bytes, addr));
                continue;
            }
            match wire::answer(handler, query, src, Protocol::Udp, &out) {
                Reply::Answer(bytes) => answers.push((bytes, addr)),
                Reply::Forward => forward(runtime, handler, &socket, query, src),
                Reply::Drop => {}
            }
        }
        if answers.is_empty() {
            continue;
        }
        let iovs: Vec<[IoSlice<'_>; 1]> = answers.iter().map(|(b, _)| [IoSlice::new(b)]).collect();
        let addrs: Vec<Option<SockaddrStorage>> = answers.iter().map(|(_, a)| Some(*a)).collect();
        let no_cmsgs: [ControlMessage<'_>; 0] = [];
        match sendmmsg(
            fd,
            &mut send_headers,
            &iovs,
            addrs,
            no_cmsgs,
            MsgFlags::empty(),
        ) {
            Ok(sent) => {
                let n = sent.count();
                if n < answers.len() {
                    tracing::debug!(
                        sent = n,
                        of = answers.len(),
                        "sendmmsg sent part of a batch"
                    );
                }
            }
            Err(e) => tracing::debug!(error = %e, "sendmmsg failed"),
        }
    }
}

/// Forwards without holding up the batch: a task waits for the upstream
/// and answers the client itself.
fn forward(
    runtime: &tokio::runtime::Handle,
    handler: &Handler,
    socket: &Arc<UdpSocket>,
    query: &[u8],
    src: SocketAddr,
) {
    let Some(forwarder) = handler.forwarder().cloned() else {
        return;
    };
    let (socket, query) = (socket.clone(), query.to_vec());
    runtime.spawn(async move {
        if let Some(answer) = forwarder.exchange(&query, Protocol::Udp).await {
            if let Err(e) = socket.send_to(&answer, src) {
                tracing::debug!(%src, error = %e, "could not send a forwarded answer");
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::{Networks, Views};
    use crate::view::View;
    use hickory_server::proto::op::Message;
    use proptest::prelude::*;
    use tokio::sync::watch;
    use trellis_api::resource::AuthType;
    use trellis_api::snapshot::{ServiceView, Snapshot};

    fn handler() -> Handler {
        let snap = Snapshot {
            network: "east".into(),
            revision: 1,
            region: "us-east-1".into(),
            dns_zone: "trellis.internal".into(),
            vip_pools: Vec::new(),
            services: vec![Arc::new(ServiceView {
                name: "checkout".into(),
                vip: "169.254.171.1".parse().unwrap(),
                vip_v6: "fd00::1".parse().unwrap(),
                dns_names: vec!["checkout.trellis.internal".into()],
                via: vec![],
                auth_type: AuthType::None,
                auth_policy: None,
                lattice_compat: false,
                listeners: vec![],
            })],
            service_networks: vec![],
            target_groups: vec![],
            gateways: Default::default(),
            identities: Vec::new(),
            inbound: Vec::new(),
        };
        let mut views = Views::new();
        views.insert("east".into(), Arc::new(View::build(&snap, 30)));
        let (_tx, rx) = watch::channel(Arc::new(views));
        Handler::new(
            rx,
            Networks {
                listener: Some("east".into()),
                sources: vec![],
            },
            None,
        )
    }

    /// A valid query for checkout.trellis.internal A, to mutate.
    fn query() -> Vec<u8> {
        let mut q = vec![0xbe, 0xef, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in ["checkout", "trellis", "internal"] {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
        q
    }

    fn check(h: &Handler, bytes: &[u8]) -> Result<(), TestCaseError> {
        let out = Arc::new(Mutex::new(Vec::new()));
        let src: SocketAddr = "127.0.0.1:5353".parse().unwrap();
        if let Reply::Answer(answer) = wire::answer(h, bytes, src, Protocol::Udp, &out) {
            Message::from_vec(&answer)
                .map_err(|e| TestCaseError::fail(format!("undecodable answer: {e}")))?;
            prop_assert_eq!(
                &answer[..2],
                &bytes[..2],
                "the answer carries the query's ID"
            );
        }
        Ok(())
    }

    #[test]
    fn the_valid_query_is_answered() {
        let out = Arc::new(Mutex::new(Vec::new()));
        let src = "127.0.0.1:1".parse().unwrap();
        let Reply::Answer(answer) = wire::answer(&handler(), &query(), src, Protocol::Udp, &out)
        else {
            panic!("no answer")
        };
        let msg = Message::from_vec(&answer).unwrap();
        assert_eq!(msg.answers.len(), 1);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Arbitrary bytes never panic, and whatever is answered decodes.
        #[test]
        fn arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            check(&handler(), &bytes)?;
        }

        /// Single-byte mutations and truncations of a valid query.
        #[test]
        fn mutated_queries(at in 0usize..34, value in any::<u8>(), cut in 0usize..40) {
            let mut q = query();
            let n = q.len();
            q[at % n] = value;
            q.truncate(cut.max(1).min(q.len()));
            check(&handler(), &q)?;
        }
    }
}
