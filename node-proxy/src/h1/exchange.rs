//! One planned request on the HTTP/1.1 path: sent to a target (a failed
//! connect retried once elsewhere, a kept connection found closed retried
//! once on a new one, both only for requests that may be sent again), the
//! response relayed as the target framed it, the target connection kept
//! when it can carry another request; or Trellis's own answer.

use super::head::{self, Body, Chunked};
use super::{HELD, Plan, READ_CHUNK, Session, Step};
use crate::config::Listener;
use crate::forward::{Attempts, ForwardError};
use crate::pool;
use crate::proxy::MAX_HEADER_BYTES;
use crate::record::Record;
use crate::refusal::Refusal;
use crate::targets::{Lease, Target};
use bytes::Buf;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout_at;
use tokio_util::sync::CancellationToken;
use trellis_api::resource::TimeLimits;

impl<I: AsyncRead + AsyncWrite + Unpin> Session<'_, I> {
    /// Sends the request to a target of the plan's group (a connect failure
    /// retried once elsewhere, a kept connection found closed retried once
    /// on a new one, both only for requests that may be sent again) and
    /// relays the response.
    pub(super) async fn forward(
        &mut self,
        listener: &Listener,
        mut plan: Plan,
        stop: &CancellationToken,
    ) -> Step {
        let t = &listener.timeouts;
        let deadline = tokio::time::Instant::now() + t.request;
        // The body's first bytes go out with the head.
        let first = plan.body_left.min(self.buf.len() as u64) as usize;
        self.out.extend_from_slice(&self.buf[..first]);
        self.buf.advance(first);
        plan.body_left -= first as u64;

        let group = plan.group.clone();
        let mut attempts = Attempts::new(&group, plan.retryable);
        let mut fresh = false;
        let (lease, stream) = loop {
            let (target, lease) = match attempts.next() {
                Ok(next) => next,
                Err(e) => return self.refuse_plan(plan, t, e).await,
            };
            if self.proxy.access_log.enabled() {
                plan.rec.entry.target = target.addr.to_string();
            }
            match self.attempt(target, fresh, deadline, t, &mut plan).await {
                Ok(stream) => break (lease, stream),
                Err(ForwardError::Stale { addr }) if plan.retryable && !fresh => {
                    tracing::debug!(target = %addr, "kept connection was closed; sending again on a new one");
                    self.proxy.metrics.retries.inc();
                    fresh = true;
                }
                Err(e) => {
                    if crate::forward::target_failed(&e) && !matches!(e, ForwardError::Stale { .. })
                    {
                        crate::forward::observe(self.proxy, &group, target, false);
                    }
                    if let Err(e) = attempts.retry(self.proxy, e) {
                        return self.refuse_plan(plan, t, e).await;
                    }
                }
            }
        };
        plan.rec.entry.upstream_ms = plan.rec.start.elapsed().as_secs_f64() * 1000.0;
        self.relay(listener, plan, lease, stream, stop).await
    }

    /// One try on `target`: the head (and body) sent, and a response head
    /// in `rbuf` (informational ones passed on to the client on the way).
    async fn attempt(
        &mut self,
        target: &Target,
        fresh: bool,
        deadline: tokio::time::Instant,
        t: &TimeLimits,
        plan: &mut Plan,
    ) -> Result<TcpStream, ForwardError> {
        let addr = target.addr;
        let after = t.request;
        let failed = |why: String| ForwardError::Failed { addr, why };
        let kept = if fresh { None } else { self.checkout(addr) };
        let reused = kept.is_some();
        let mut stream = match kept {
            Some(s) => s,
            None => {
                let upstream = self.proxy.clients.upstream();
                match timeout_at(deadline, upstream.connect(addr, t.connect)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(source)) => return Err(ForwardError::Connect { addr, source }),
                    Err(_) => return Err(ForwardError::Timeout { addr, after }),
                }
            }
        };
        match timeout_at(deadline, stream.write_all(&self.out)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) if reused => return Err(ForwardError::Stale { addr }),
            Ok(Err(e)) => return Err(failed(e.to_string())),
            Err(_) => return Err(ForwardError::Timeout { addr, after }),
        }
        // The rest of the body, client to target, as it comes.
        while plan.body_left > 0 {
            self.buf.reserve(READ_CHUNK);
            let read = tokio::time::timeout(t.idle, self.io.read_buf(&mut self.buf));
            match read.await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return Err(ForwardError::ClientGone),
            }
            let n = plan.body_left.min(self.buf.len() as u64) as usize;
            match timeout_at(deadline, stream.write_all(&self.buf[..n])).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(failed(e.to_string())),
                Err(_) => return Err(ForwardError::Timeout { addr, after }),
            }
            self.buf.advance(n);
            plan.body_left -= n as u64;
        }
        self.rbuf.clear();
        loop {
            self.rbuf.reserve(READ_CHUNK);
            let read = tokio::select! {
                biased;
                r = timeout_at(deadline, stream.read_buf(&mut self.rbuf)) => r,
                _ = target.drained() => return Err(ForwardError::Drained { addr }),
            };
            match read {
                Err(_) => return Err(ForwardError::Timeout { addr, after }),
                Ok(Ok(0)) | Ok(Err(_)) if reused && self.rbuf.is_empty() => {
                    return Err(ForwardError::Stale { addr });
                }
                Ok(Ok(0)) => return Err(failed("closed before its response".into())),
                Ok(Err(e)) => return Err(failed(e.to_string())),
                Ok(Ok(_)) => {}
            }
            // Scoped: the parse slots never live across the await below.
            let len = {
                let mut headers = head::uninit();
                match head::Response::parse(&self.rbuf, &mut headers) {
                    Ok(None) if self.rbuf.len() < MAX_HEADER_BYTES => continue,
                    Ok(None) => return Err(failed("response head too large".into())),
                    Err(e) => return Err(failed(format!("malformed response head: {e}"))),
                    // 1xx: the client gets it, then the final response
                    // follows. (Nothing is sent again once a response began:
                    // `out` is free.)
                    Ok(Some((resp, len))) if matches!(resp.status, 100 | 102..=199) => {
                        self.out.clear();
                        resp.write(&mut self.out, false);
                        len
                    }
                    Ok(Some(_)) => return Ok(stream),
                }
            };
            self.rbuf.advance(len);
            if send(&mut self.io, &self.out, t).await.is_err() {
                return Err(ForwardError::ClientGone);
            }
        }
    }

    /// The target's response, head then body, to the client; the target
    /// connection kept if it can carry another request.
    async fn relay(
        &mut self,
        listener: &Listener,
        mut plan: Plan,
        lease: Lease,
        mut stream: TcpStream,
        stop: &CancellationToken,
    ) -> Step {
        let t = &listener.timeouts;
        let addr = lease.target().addr;
        // The head is parsed and written out in this block: its parse slots
        // (a few KB) never live across an await, so the request's future
        // does not carry them.
        let head = {
            let mut headers = head::uninit();
            match head::Response::parse(&self.rbuf, &mut headers) {
                Ok(Some((resp, len))) => {
                    let (status, body) = (resp.status, resp.body(plan.head_request));
                    match body {
                        Some(body) if status != 101 => {
                            let keep = resp.keep_alive && body != Body::UntilClose;
                            let close =
                                plan.close || body == Body::UntilClose || stop.is_cancelled();
                            self.out.clear();
                            resp.write(&mut self.out, close);
                            self.rbuf.advance(len);
                            Ok((status, body, keep, close))
                        }
                        _ => Err("a response this proxy cannot frame"),
                    }
                }
                _ => Err("no response head"),
            }
        };
        let (status, body, keep, close) = match head {
            Ok(head) => head,
            Err(why) => {
                // No head, or one this proxy cannot frame: the target failed.
                crate::forward::observe(self.proxy, &plan.group, lease.target(), false);
                let why = why.into();
                return self
                    .refuse_plan(plan, t, ForwardError::Failed { addr, why })
                    .await;
            }
        };
        crate::forward::observe(self.proxy, &plan.group, lease.target(), status < 500);
        plan.rec.entry.status = status;

        let mut relayed = Relayed {
            body,
            chunked: Chunked::default(),
            left: match body {
                Body::Length(n) => n,
                _ => 0,
            },
            done: body == Body::Empty,
        };
        // Whatever of the body came with the head goes with it.
        let mut ok = match relayed.take(&self.rbuf) {
            Ok(n) => {
                self.out.extend_from_slice(&self.rbuf[..n]);
                self.rbuf.advance(n);
                plan.rec.entry.bytes_sent += n as u64;
                true
            }
            Err(_) => false,
        };
        ok = ok && send(&mut self.io, &self.out, t).await.is_ok();
        while ok && !relayed.done {
            self.rbuf.reserve(READ_CHUNK);
            let read = tokio::time::timeout(t.idle, stream.read_buf(&mut self.rbuf));
            ok = match read.await {
                Ok(Ok(0)) if body == Body::UntilClose => {
                    relayed.done = true;
                    true
                }
                Ok(Ok(n)) if n > 0 => match relayed.take(&self.rbuf) {
                    Ok(n) => {
                        let sent = send(&mut self.io, &self.rbuf[..n], t).await;
                        self.rbuf.advance(n);
                        plan.rec.entry.bytes_sent += n as u64;
                        sent.is_ok()
                    }
                    Err(_) => false,
                },
                _ => false,
            };
        }
        if !ok {
            // Part of a response went out: all the client can be told is
            // that the connection ends.
            plan.rec.entry.error = Some(Refusal::UpstreamFailed.code());
            drop(lease);
            plan.rec.done(self.proxy);
            return Step::Close;
        }
        if keep && self.rbuf.is_empty() {
            self.hold(lease.target().addr, stream);
        }
        drop(lease);
        plan.rec.done(self.proxy);
        if close { Step::Close } else { Step::Next }
    }

    /// Trellis's own answer (`x-trellis-error` and a one-line reason),
    /// counted and logged like any. A request whose body was not all read
    /// closes the connection after it.
    async fn refuse_plan(&mut self, plan: Plan, t: &TimeLimits, e: ForwardError) -> Step {
        let close = plan.close || plan.body_left > 0;
        self.refuse(plan.rec, close, t, e.refusal(), &e.to_string())
            .await
    }

    /// Trellis's own answer for a request no plan was made for, or whose
    /// plan failed; the connection closes after it when `close`.
    pub(super) async fn refuse(
        &mut self,
        mut rec: Record,
        close: bool,
        t: &TimeLimits,
        refusal: Refusal,
        detail: &str,
    ) -> Step {
        tracing::debug!(code = refusal.code(), detail, "refused");
        let (out, body_len) = refusal.h1_bytes(detail, close);
        rec.entry.status = refusal.status().as_u16();
        rec.entry.error = Some(refusal.code());
        rec.entry.bytes_sent = body_len as u64;
        let sent = send(&mut self.io, &out, t).await;
        rec.done(self.proxy);
        if close || sent.is_err() {
            Step::Close
        } else {
            Step::Next
        }
    }

    /// A kept connection to `addr`: this client's own, else the pool's.
    fn checkout(&mut self, addr: std::net::SocketAddr) -> Option<TcpStream> {
        while let Some(i) = self.held.iter().position(|(a, _)| *a == addr) {
            let (_, stream) = self.held.swap_remove(i);
            if pool::open(&stream) {
                return Some(stream);
            }
        }
        self.proxy.pool.take(addr)
    }

    fn hold(&mut self, addr: std::net::SocketAddr, stream: TcpStream) {
        if self.held.len() >= HELD {
            let (a, s) = self.held.remove(0);
            self.proxy.pool.put(a, s);
        }
        self.held.push((addr, stream));
    }
}

/// Writes to the client, within `idleSeconds`.
async fn send<I: AsyncWrite + Unpin>(
    io: &mut I,
    bytes: &[u8],
    t: &TimeLimits,
) -> std::io::Result<()> {
    let write = async {
        io.write_all(bytes).await?;
        io.flush().await
    };
    match tokio::time::timeout(t.idle, write).await {
        Ok(r) => r,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

/// Where a response body stands.
struct Relayed {
    body: Body,
    chunked: Chunked,
    /// `Length`: bytes still to come.
    left: u64,
    done: bool,
}

impl Relayed {
    /// How much of `buf` is body; sets `done` at its end.
    fn take(&mut self, buf: &[u8]) -> Result<usize, head::BadChunk> {
        Ok(match self.body {
            Body::Empty => 0,
            Body::Length(_) => {
                let n = self.left.min(buf.len() as u64);
                self.left -= n;
                self.done = self.left == 0;
                n as usize
            }
            Body::Chunked => {
                let (n, done) = self.chunked.scan(buf)?;
                self.done = done;
                n
            }
            Body::UntilClose => buf.len(),
        })
    }
}
