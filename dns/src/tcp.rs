//! DNS over TCP (RFC 7766): length-prefixed messages, answered in order,
//! through the same [`wire::answer`] as UDP. Written here rather than on
//! hickory's `Server` for two limits that one lacks: a cap on open
//! connections (past it, new connections are closed at once, so a flood of
//! idle clients cannot exhaust file descriptors) and an idle timeout that
//! also bounds how long one message may take to arrive. On a stop (a
//! hitless restart hands the listener to a successor) it stops accepting
//! and lets the connections it has finish what they were sent: one
//! accepted in the last moment is answered, not reset.

use crate::handler::Handler;
use crate::wire::{self, Reply};
use hickory_server::net::xfer::Protocol;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

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

/// After a stop, how long a connection may take to send its next message
/// (a client that connected just before, to the process now stopping,
/// is answered, not reset).
const STOP_GRACE: Duration = Duration::from_millis(250);
/// After a stop, how long connections have to finish before they are cut.
const DRAIN: Duration = Duration::from_secs(2);

/// Accepts until `stop` turns true, then lets the connections it accepted
/// finish what they were sent (up to [`DRAIN`]): in a hitless restart the
/// successor holds the same listener and takes every later connection.
pub async fn serve(
    listener: TcpListener,
    handler: Handler,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) {
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let mut connections = JoinSet::new();
    loop {
        let (stream, src) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "DNS TCP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            Some(_) = connections.join_next() => continue,
            () = stopped(&mut stop) => break,
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            tracing::debug!(%src, "DNS TCP connection limit reached; closing");
            crate::metrics::tcp_refused();
            continue;
        };
        let (handler, stop) = (handler.clone(), stop.clone());
        connections.spawn(async move {
            if let Err(e) = connection(stream, src, &handler, limits, stop).await {
                tracing::debug!(%src, error = %e, "DNS TCP connection ended");
            }
            drop(permit);
        });
    }
    drop(listener);
    let drained = tokio::time::timeout(DRAIN, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::debug!(
            left = connections.len(),
            "DNS TCP connections cut after the drain"
        );
    }
}

/// Resolves once `stop` is true (or its sender is gone: nobody is left to
/// say otherwise).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn connection(
    mut stream: TcpStream,
    src: SocketAddr,
    handler: &Handler,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let out = Arc::new(Mutex::new(Vec::with_capacity(512)));
    let mut message = Vec::new();
    loop {
        let mut stopping = *stop.borrow();
        let grace = |deadline: Instant| deadline.min(Instant::now() + STOP_GRACE);
        let mut deadline = Instant::now() + limits.idle_timeout;
        if stopping {
            deadline = grace(deadline);
        }
        let read = async {
            let len = stream.read_u16().await?;
            message.resize(usize::from(len), 0);
            stream.read_exact(&mut message).await
        };
        let mut read = std::pin::pin!(read);
        // A stop shortens the wait for this message without losing what
        // has arrived of it.
        let read = loop {
            tokio::select! {
                r = &mut read => break r,
                () = tokio::time::sleep_until(deadline) => {
                    return if stopping {
                        Ok(())
                    } else {
                        Err(std::io::ErrorKind::TimedOut.into())
                    };
                }
                () = stopped(&mut stop), if !stopping => {
                    stopping = true;
                    deadline = grace(deadline);
                }
            }
        };
        match read {
            Ok(_) => {}
            // EOF between messages is the normal end.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
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
