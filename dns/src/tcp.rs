//! DNS over TCP (RFC 7766): length-prefixed messages, answered in order,
//! through the same [`wire::answer`] as UDP. Written here rather than on
//! hickory's `Server` for two limits that one lacks: a cap on open
//! connections (past it, new connections are closed at once, so a flood of
//! idle clients cannot exhaust file descriptors) and an idle timeout that
//! also bounds how long one message may take to arrive.

use crate::handler::Handler;
use crate::wire::{self, Reply};
use hickory_server::net::xfer::Protocol;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// TCP limits; `Default` gives the documented defaults.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Open connections at once.
    pub max_connections: usize,
    /// A connection with no complete message for this long is closed.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 512,
            idle_timeout: Duration::from_secs(10),
        }
    }
}

/// Accepts until the task is dropped.
pub async fn serve(listener: TcpListener, handler: Handler, limits: Limits) {
    let open = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let (stream, src) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors and the like: back off, keep serving.
                tracing::warn!(error = %e, "DNS TCP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            tracing::debug!(%src, "DNS TCP connection limit reached; closing");
            crate::metrics::tcp_refused();
            continue;
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(stream, src, &handler, limits).await {
                tracing::debug!(%src, error = %e, "DNS TCP connection ended");
            }
            drop(permit);
        });
    }
}

async fn connection(
    mut stream: TcpStream,
    src: SocketAddr,
    handler: &Handler,
    limits: Limits,
) -> std::io::Result<()> {
    let out = Arc::new(Mutex::new(Vec::with_capacity(512)));
    let mut message = Vec::new();
    loop {
        let read = async {
            let len = stream.read_u16().await?;
            message.resize(usize::from(len), 0);
            stream.read_exact(&mut message).await
        };
        match tokio::time::timeout(limits.idle_timeout, read).await {
            Ok(Ok(_)) => {}
            // EOF between messages is the normal end.
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(std::io::ErrorKind::TimedOut.into()),
        }
        let answer = match wire::answer(handler, &message, src, Protocol::Tcp, &out) {
            Reply::Answer(bytes) => bytes,
            Reply::Forward => match handler.forwarder() {
                Some(f) => match f.exchange(&message, Protocol::Tcp).await {
                    Some(bytes) => bytes,
                    None => continue,
                },
                None => continue,
            },
            // Undecodable: nothing to say, and the stream may be out of
            // step, so end it.
            Reply::Drop => return Ok(()),
        };
        let Ok(len) = u16::try_from(answer.len()) else {
            continue;
        };
        let mut framed = Vec::with_capacity(answer.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&answer);
        tokio::time::timeout(limits.idle_timeout, stream.write_all(&framed))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    }
}
