//! Idle connections to targets, shared by client connections (the
//! HTTP/1.1 path's). A client
//! connection keeps the few target connections it uses between its own
//! requests (no lock, no hop); when it ends they come here, for the next
//! client connection that needs one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Idle connections older than this are closed (hyper-util's pool: 90 s).
const IDLE_FOR: Duration = Duration::from_secs(90);
/// Idle connections kept per target; beyond, the oldest are closed. Idle
/// client connections give theirs back here (`h1`), so this bounds what a
/// node holds open to a target however many clients sit idle (nginx's
/// `keepalive` is per worker and often 32-128).
const PER_TARGET: usize = 64;

#[derive(Default)]
pub struct Pool {
    idle: Mutex<HashMap<SocketAddr, Vec<(TcpStream, Instant)>>>,
}

impl Pool {
    /// An idle connection to `target` that is still open, newest first.
    pub fn take(&self, target: SocketAddr) -> Option<TcpStream> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let conns = idle.get_mut(&target)?;
        while let Some((stream, since)) = conns.pop() {
            if since.elapsed() < IDLE_FOR && open(&stream) {
                return Some(stream);
            }
        }
        None
    }

    pub fn put(&self, target: SocketAddr, stream: TcpStream) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let conns = idle.entry(target).or_default();
        conns.retain(|(_, since)| since.elapsed() < IDLE_FOR);
        if conns.len() >= PER_TARGET {
            conns.remove(0);
        }
        conns.push((stream, Instant::now()));
    }

    /// Closes connections to targets no group has any more.
    pub fn retain(&self, keep: impl Fn(SocketAddr) -> bool) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.retain(|addr, conns| {
            conns.retain(|(_, since)| since.elapsed() < IDLE_FOR);
            keep(*addr) && !conns.is_empty()
        });
    }
}

/// Whether an idle connection can still carry a request: nothing arrived
/// on it since its last response (a close, a stray byte). Costs no system
/// call unless the reactor saw it become readable.
pub fn open(stream: &TcpStream) -> bool {
    let mut probe = [0u8; 1];
    matches!(stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}
