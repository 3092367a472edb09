//! Listening sockets handed from one process to the next, so a restart or
//! an upgrade never leaves a moment where nothing accepts.
//!
//! The running process offers its listeners on a Unix socket in its data
//! dir ([`Offer`]). A new process started with the same data dir connects
//! ([`take_over`]), receives the listening sockets themselves (`SCM_RIGHTS`:
//! the same kernel sockets, with their accept queues) and the state the
//! role carries over, starts accepting, and says so ([`Takeover::ready`]).
//! Only then does the old process stop accepting and drain: a connection
//! that arrives in between waits in the one shared queue and is accepted by
//! whichever process calls `accept` first. If the new process dies before
//! it is ready, the old one never stopped.
//!
//! Under systemd, sockets may instead come from socket activation
//! (`LISTEN_FDS`, [`Inherited::from_systemd`]); the unit's socket then
//! outlives a crashed process, and connections wait in its backlog until
//! the next one accepts them.
//!
//! Sockets are matched by name and address: the name the old process gave
//! (`proxy`, `admin`, ...; systemd's `FileDescriptorName=`), and the local
//! address the new one is configured with (port 0 matches any port).
#![allow(unsafe_code)]

use nix::sys::socket::{
    self, ControlMessage, ControlMessageOwned, MsgFlags, SockType, SockaddrStorage, sockopt,
};
use serde::{Deserialize, Serialize};
use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The first line a taker sends, so a stray client is told apart.
const HELLO: &[u8] = b"TRELLIS-HANDOVER 1\n";
const READY: &[u8] = b"READY\n";
const RELEASE: &[u8] = b"RELEASE\n";
const RELEASED: &[u8] = b"RELEASED\n";
/// More listeners than any role has.
const MAX_FDS: usize = 64;
/// The carried-over state is small (health of each target); a bound keeps
/// a confused peer from making us allocate without end.
const MAX_STATE: usize = 16 << 20;
/// Every read and write of the exchange.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// A taker loading its config, or a giver draining before it releases.
const TAKER_LIMIT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    #[error("the handover socket {path}: {source}")]
    Socket {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("handover exchange: {0}")]
    Io(#[from] std::io::Error),
    #[error("handover exchange: {0}")]
    Sys(#[from] nix::Error),
    #[error("handover exchange: {0}")]
    Protocol(&'static str),
    #[error("handover state: {0}")]
    State(#[from] serde_json::Error),
    #[error("handover refused: the other process runs as uid {0}, not as this one")]
    Stranger(u32),
}

/// Listening sockets from a previous process (or systemd), not yet claimed.
#[derive(Default)]
pub struct Inherited {
    sockets: Vec<(String, OwnedFd)>,
}

impl std::fmt::Debug for Inherited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.sockets.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Inherited")
            .field("sockets", &names)
            .finish()
    }
}

impl Inherited {
    /// The sockets systemd passed (`LISTEN_PID`, `LISTEN_FDS`,
    /// `LISTEN_FDNAMES`); none when it passed none to this process, and
    /// none on a second call (the first one owns them).
    pub fn from_systemd() -> Inherited {
        static CLAIMED: AtomicBool = AtomicBool::new(false);
        let mine = std::env::var("LISTEN_PID")
            .ok()
            .and_then(|p| p.parse::<u32>().ok())
            == Some(std::process::id());
        let count = std::env::var("LISTEN_FDS")
            .ok()
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(0);
        if !mine || count == 0 || count > MAX_FDS || CLAIMED.swap(true, Ordering::SeqCst) {
            return Inherited::default();
        }
        let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
        let mut names = names.split(':');
        let mut sockets = Vec::new();
        for fd in 3..3 + count as RawFd {
            // SAFETY: sd_listen_fds(3): systemd passes exactly LISTEN_FDS
            // descriptors from 3 up to this process (LISTEN_PID checked
            // above), and nothing else in this process claims them (the
            // flag above makes this the only adoption). The variables stay
            // set: a child has another pid, so LISTEN_PID keeps it from
            // adopting them too.
            if !is_socket(fd) {
                // A manager that passed less than it said: adopting the
                // descriptor would close whatever this process has there.
                tracing::warn!(
                    fd,
                    "LISTEN_FDS names a descriptor that is not a socket; ignored"
                );
                continue;
            }
            let owned = unsafe { OwnedFd::from_raw_fd(fd) };
            let _ = nix::fcntl::fcntl(
                &owned,
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
            );
            let name = names.next().unwrap_or("unknown").to_string();
            sockets.push((name, owned));
        }
        tracing::info!(sockets = sockets.len(), "listening sockets from systemd");
        Inherited { sockets }
    }

    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }

    /// The listening TCP socket `name` at `addr`, if one was passed.
    pub fn tcp(&mut self, name: &str, addr: SocketAddr) -> Option<std::net::TcpListener> {
        let fd = self.claim(name, addr, SockType::Stream)?;
        let listener = std::net::TcpListener::from(fd);
        listener.set_nonblocking(true).ok()?;
        Some(listener)
    }

    /// The UDP socket `name` at `addr`, if one was passed.
    pub fn udp(&mut self, name: &str, addr: SocketAddr) -> Option<std::net::UdpSocket> {
        let fd = self.claim(name, addr, SockType::Datagram)?;
        let socket = std::net::UdpSocket::from(fd);
        socket.set_nonblocking(true).ok()?;
        Some(socket)
    }

    fn claim(&mut self, name: &str, addr: SocketAddr, kind: SockType) -> Option<OwnedFd> {
        let at = self.sockets.iter().position(|(n, fd)| {
            (n == name || n == "unknown")
                && socket::getsockopt(fd, sockopt::SockType).ok() == Some(kind)
                && local_addr(fd.as_fd()).is_some_and(|a| {
                    a.ip() == addr.ip() && (addr.port() == 0 || a.port() == addr.port())
                })
        })?;
        Some(self.sockets.swap_remove(at).1)
    }
}

/// Whether `fd` is an open socket (sd_is_socket(3)), found out without
/// touching it.
fn is_socket(fd: RawFd) -> bool {
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"))
}

fn local_addr(fd: BorrowedFd<'_>) -> Option<SocketAddr> {
    let a: SockaddrStorage = socket::getsockname(fd.as_raw_fd()).ok()?;
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::from(*v4));
    }
    a.as_sockaddr_in6().map(|v6| SocketAddr::from(*v6))
}

/// A process's listening sockets as it gets them at start (inherited or
/// bound), and the duplicates it will offer the next process.
#[derive(Default)]
pub struct Listeners {
    inherited: Inherited,
    offered: Vec<(&'static str, OwnedFd)>,
}

impl Listeners {
    pub fn new(inherited: Inherited) -> Listeners {
        Listeners {
            inherited,
            offered: Vec::new(),
        }
    }

    /// The TCP listener `name` at `addr`: the inherited one, else bound.
    pub async fn tcp(
        &mut self,
        name: &'static str,
        addr: SocketAddr,
    ) -> std::io::Result<tokio::net::TcpListener> {
        let listener = match self.inherited.tcp(name, addr) {
            Some(l) => tokio::net::TcpListener::from_std(l)?,
            None => tokio::net::TcpListener::bind(addr).await?,
        };
        self.offer(name, listener.as_fd())?;
        Ok(listener)
    }

    /// Sockets not claimed yet, for a listener that binds its own way.
    pub fn inherited(&mut self) -> &mut Inherited {
        &mut self.inherited
    }

    /// Offers `fd` to the next process as `name`.
    pub fn offer(&mut self, name: &'static str, fd: BorrowedFd<'_>) -> std::io::Result<()> {
        self.offered.push((name, fd.try_clone_to_owned()?));
        Ok(())
    }

    /// What the next process is to get.
    pub fn into_offered(self) -> Vec<(&'static str, OwnedFd)> {
        self.offered
    }
}

/// How a process starts: from the running process's sockets and state when
/// one offers them at `path` (then it must say [`Takeover::ready`] once it
/// accepts), else from systemd's sockets if it passed any, else from none.
pub async fn begin(
    path: &Path,
) -> Result<(Listeners, serde_json::Value, Option<Takeover>), HandoverError> {
    let from = path.to_path_buf();
    let taken = tokio::task::spawn_blocking(move || take_over(&from))
        .await
        .map_err(|_| HandoverError::Protocol("handover task failed"))??;
    Ok(match taken {
        Some((inherited, state, takeover)) => (Listeners::new(inherited), state, Some(takeover)),
        None => (
            Listeners::new(Inherited::from_systemd()),
            serde_json::Value::Null,
            None,
        ),
    })
}

/// What the old process sends after the descriptors.
#[derive(Serialize, Deserialize)]
struct Manifest {
    /// `names[i]` is the name of the i-th descriptor.
    names: Vec<String>,
    state: serde_json::Value,
}

/// The new process's side, between receiving the sockets and serving.
pub struct Takeover {
    stream: UnixStream,
}

impl Takeover {
    /// Asks the old process to stop serving and release what only one
    /// process may hold; returns once it has.
    pub async fn release(&mut self) -> Result<(), HandoverError> {
        let mut stream = self.stream.try_clone()?;
        blocking(move || {
            stream.write_all(RELEASE)?;
            stream.set_read_timeout(Some(TAKER_LIMIT))?;
            let mut line = [0u8; RELEASED.len()];
            stream.read_exact(&mut line)?;
            if line != *RELEASED {
                return Err(HandoverError::Protocol("the old process did not release"));
            }
            Ok(())
        })
        .await
    }

    /// Tells the old process this one accepts: it stops, and drains.
    pub async fn ready(self) -> Result<(), HandoverError> {
        let mut stream = self.stream;
        blocking(move || Ok(stream.write_all(READY)?)).await
    }
}

/// Takes the listeners of the process offering them at `path`, with the
/// state it carries over. `None` when no process offers (the first start,
/// or after a crash): then sockets come from systemd if it passed any.
pub fn take_over(
    path: &Path,
) -> Result<Option<(Inherited, serde_json::Value, Takeover)>, HandoverError> {
    let mut stream = match UnixStream::connect(path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None);
        }
        Err(source) => {
            return Err(HandoverError::Socket {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    same_user(&stream)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.write_all(HELLO)?;

    let mut len = [0u8; 4];
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let mut fds = Vec::new();
    let got = {
        let mut iov = [IoSliceMut::new(&mut len)];
        let msg = socket::recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        for c in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(raw) = c {
                for fd in raw {
                    // SAFETY: SCM_RIGHTS: the kernel installed these
                    // descriptors in this process's table for this message;
                    // nothing else refers to them.
                    fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
        if msg.flags.contains(MsgFlags::MSG_CTRUNC) {
            return Err(HandoverError::Protocol("more sockets than expected"));
        }
        msg.bytes
    };
    if got != 4 {
        return Err(HandoverError::Protocol("short header"));
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_STATE {
        return Err(HandoverError::Protocol("state too large"));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body)?;
    let manifest: Manifest = serde_json::from_slice(&body)?;
    if manifest.names.len() != fds.len() {
        return Err(HandoverError::Protocol(
            "names and sockets differ in number",
        ));
    }
    let inherited = Inherited {
        sockets: manifest.names.into_iter().zip(fds).collect(),
    };
    tracing::info!(sockets = inherited.sockets.len(), from = %path.display(), "took over the listening sockets of the running process");
    Ok(Some((inherited, manifest.state, Takeover { stream })))
}

/// The running process's side: offers its listeners to the next process.
pub struct Offer {
    listener: tokio::net::UnixListener,
    path: PathBuf,
}

impl Offer {
    /// Listens at `path`, replacing a stale socket file (a crashed
    /// process's, or the one this process just took over from).
    pub fn bind(path: &Path) -> Result<Offer, HandoverError> {
        let socket_err = |source| HandoverError::Socket {
            path: path.to_path_buf(),
            source,
        };
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(socket_err(e)),
        }
        let listener = tokio::net::UnixListener::bind(path).map_err(socket_err)?;
        Ok(Offer {
            listener,
            path: path.to_path_buf(),
        })
    }

    /// Waits for a process to take the `sockets` (named), hands them over
    /// with `state`, and returns once it said it accepts. An exchange that
    /// fails (a stray client, a taker that died) is logged and the wait
    /// goes on: this process keeps serving.
    pub async fn handed_over<S>(&self, sockets: &[(&'static str, OwnedFd)], state: S)
    where
        S: Fn() -> serde_json::Value,
    {
        self.asked(sockets, state, Ask::Ready).await;
        tracing::info!(socket = %self.path.display(), "the next process accepts: handed over");
    }

    /// Waits for a process that takes the `sockets` and `state` and then
    /// asks `want` (what this role answers: `Ready` for one that runs beside
    /// its successor, `Release` for one that must let go first). A taker
    /// that asks anything else, or fails, is logged; this process serves on.
    pub async fn asked<S>(&self, sockets: &[(&'static str, OwnedFd)], state: S, want: Ask) -> Taker
    where
        S: Fn() -> serde_json::Value,
    {
        loop {
            let mut taker = self.taker(sockets, &state).await;
            match taker.next().await {
                Ok(ask) if ask == want => return taker,
                Ok(ask) => tracing::warn!(
                    ?ask,
                    ?want,
                    "the next process asked what this role does not do; still serving"
                ),
                Err(e) => tracing::warn!(error = %e, "handover failed; still serving"),
            }
        }
    }

    /// Waits for a process to take the `sockets` and `state`, and hands
    /// them over; what it asks next is [`Taker::next`]. Failed exchanges
    /// are logged and the wait goes on.
    pub async fn taker<S>(&self, sockets: &[(&'static str, OwnedFd)], state: S) -> Taker
    where
        S: Fn() -> serde_json::Value,
    {
        loop {
            let stream = match self.listener.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "handover socket accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let names: Vec<String> = sockets.iter().map(|(n, _)| n.to_string()).collect();
            let fds: Result<Vec<OwnedFd>, _> =
                sockets.iter().map(|(_, fd)| fd.try_clone()).collect();
            let fds = match fds {
                Ok(fds) => fds,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot duplicate a listener for handover");
                    continue;
                }
            };
            let manifest = Manifest {
                names,
                state: state(),
            };
            let exchange = async {
                let s = stream.into_std()?;
                s.set_nonblocking(false)?;
                blocking(move || offer(s, &fds, &manifest)).await
            };
            match exchange.await {
                Ok(stream) => return Taker { stream },
                Err(e) => tracing::warn!(error = %e, "handover failed; still serving"),
            }
        }
    }
}

/// What a taker asks once it has the sockets.
#[derive(Debug, PartialEq, Eq)]
pub enum Ask {
    /// It accepts: stop accepting and drain.
    Ready,
    /// It needs what this process holds exclusively (the control plane's
    /// store): stop serving, release it, and say [`Taker::released`].
    Release,
}

/// The old process's side of one exchange, after the sockets went over.
pub struct Taker {
    stream: UnixStream,
}

impl Taker {
    /// What the taker asks next (it may take its time loading its config);
    /// an error when it went away.
    pub async fn next(&mut self) -> Result<Ask, HandoverError> {
        let mut stream = self.stream.try_clone()?;
        blocking(move || {
            // The taker loads its config before it asks: allow it that long.
            stream.set_read_timeout(Some(TAKER_LIMIT))?;
            let mut line = [0u8; RELEASE.len()];
            stream.read_exact(&mut line[..READY.len()])?;
            if line[..READY.len()] == *READY {
                return Ok(Ask::Ready);
            }
            stream.read_exact(&mut line[READY.len()..])?;
            if line == *RELEASE {
                return Ok(Ask::Release);
            }
            Err(HandoverError::Protocol("the taker said something else"))
        })
        .await
    }

    /// Tells the taker what it asked for is released.
    pub async fn released(&mut self) -> Result<(), HandoverError> {
        let mut stream = self.stream.try_clone()?;
        blocking(move || Ok(stream.write_all(RELEASED)?)).await
    }
}

/// Runs blocking exchange steps off the runtime's threads.
async fn blocking<T, F>(f: F) -> Result<T, HandoverError>
where
    F: FnOnce() -> Result<T, HandoverError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or(Err(HandoverError::Protocol("handover task failed")))
}

/// Sends the sockets and the manifest; the stream, for what comes next.
fn offer(
    mut stream: UnixStream,
    fds: &[OwnedFd],
    manifest: &Manifest,
) -> Result<UnixStream, HandoverError> {
    same_user(&stream)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut hello = [0u8; HELLO.len()];
    stream.read_exact(&mut hello)?;
    if hello != HELLO {
        return Err(HandoverError::Protocol("not a Trellis handover"));
    }
    let body = serde_json::to_vec(manifest)?;
    let len = u32::try_from(body.len())
        .map_err(|_| HandoverError::Protocol("state too large"))?
        .to_le_bytes();
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let cmsg = [ControlMessage::ScmRights(&raw)];
    let sent = socket::sendmsg::<()>(
        stream.as_raw_fd(),
        &[IoSlice::new(&len)],
        &cmsg,
        MsgFlags::empty(),
        None,
    )?;
    if sent != len.len() {
        return Err(HandoverError::Protocol("short header"));
    }
    stream.write_all(&body)?;
    Ok(stream)
}

/// Only a process of the same user may take (or give) listeners.
fn same_user(stream: &UnixStream) -> Result<(), HandoverError> {
    let peer = socket::getsockopt(stream, sockopt::PeerCredentials)?;
    let me = nix::unistd::geteuid().as_raw();
    if peer.uid() != me {
        return Err(HandoverError::Stranger(peer.uid()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};

    #[tokio::test]
    async fn listeners_and_state_pass_to_the_next_process_which_says_when_it_accepts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("handover.sock");
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let (tcp_addr, udp_addr) = (tcp.local_addr().unwrap(), udp.local_addr().unwrap());
        let offer = Offer::bind(&path).unwrap();
        let giver = tokio::spawn(async move {
            let sockets = [
                ("proxy", OwnedFd::from(tcp)),
                ("dns-udp", OwnedFd::from(udp)),
            ];
            offer
                .handed_over(&sockets, || serde_json::json!({"revision": 7}))
                .await;
        });
        let taker_path = path.clone();
        let (mut inherited, state, takeover) =
            tokio::task::spawn_blocking(move || take_over(&taker_path))
                .await
                .unwrap()
                .unwrap()
                .expect("a process offers");
        assert_eq!(state, serde_json::json!({"revision": 7}));
        assert!(!giver.is_finished(), "the giver waits for READY");
        // Wrong name or type: not claimed.
        assert!(inherited.tcp("admin", tcp_addr).is_none());
        assert!(inherited.udp("proxy", tcp_addr).is_none());
        let listener = inherited.tcp("proxy", tcp_addr).expect("the proxy socket");
        let udp_socket = inherited.udp("dns-udp", udp_addr).expect("the DNS socket");
        assert!(inherited.is_empty());
        // The same kernel socket: a connection made to the old address is
        // accepted here.
        let client = std::net::TcpStream::connect(tcp_addr).unwrap();
        listener.set_nonblocking(false).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        assert_eq!(accepted.peer_addr().unwrap(), client.local_addr().unwrap());
        assert_eq!(udp_socket.local_addr().unwrap(), udp_addr);
        takeover.ready().await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), giver)
            .await
            .expect("the giver returns once the taker is ready")
            .unwrap();
    }

    #[tokio::test]
    async fn a_taker_may_ask_for_a_release_before_it_accepts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("handover.sock");
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let offer = Offer::bind(&path).unwrap();
        let giver = tokio::spawn(async move {
            let sockets = [("api", OwnedFd::from(tcp))];
            let mut taker = offer.taker(&sockets, || serde_json::Value::Null).await;
            assert_eq!(taker.next().await.unwrap(), Ask::Release);
            // ... stop serving, close the store ...
            taker.released().await.unwrap();
            taker.next().await.unwrap()
        });
        let taker = path.clone();
        let (_, _, mut takeover) = tokio::task::spawn_blocking(move || take_over(&taker))
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        takeover.release().await.unwrap();
        takeover.ready().await.unwrap();
        assert_eq!(giver.await.unwrap(), Ask::Ready);
    }

    #[tokio::test]
    async fn nothing_offers_nothing_taken_and_a_stray_client_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("handover.sock");
        assert!(take_over(&path).unwrap().is_none());
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let offer = Offer::bind(&path).unwrap();
        let giver = tokio::spawn(async move {
            offer
                .handed_over(&[("proxy", OwnedFd::from(tcp))], || serde_json::Value::Null)
                .await;
        });
        // A client that speaks something else is refused; the offer stays.
        let stray = path.clone();
        tokio::task::spawn_blocking(move || {
            let mut s = UnixStream::connect(&stray).unwrap();
            s.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
            s.shutdown(std::net::Shutdown::Write).unwrap();
            let mut line = String::new();
            let _ = BufReader::new(s).read_line(&mut line);
            assert!(line.is_empty(), "no answer to a stray client");
        })
        .await
        .unwrap();
        assert!(!giver.is_finished());
        // A taker that vanishes before READY: the giver keeps waiting.
        let quitter = path.clone();
        tokio::task::spawn_blocking(move || drop(take_over(&quitter).unwrap().unwrap()))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !giver.is_finished(),
            "a taker that never said READY took nothing over"
        );
        let taker = path.clone();
        let (_, _, takeover) = tokio::task::spawn_blocking(move || take_over(&taker))
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        takeover.ready().await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), giver)
            .await
            .unwrap()
            .unwrap();
    }
}
