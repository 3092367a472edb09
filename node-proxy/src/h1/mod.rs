//! HTTP/1.1 proxied on the client connection's own task. The common
//! request (HTTP/1.1, origin form, no body or a `Content-Length` one, on a
//! service without auth, routed to local plain-HTTP/1.1 target groups) is
//! parsed with httparse, its head rewritten into one buffer and written to
//! a target connection this task holds, and the response relayed as the
//! target framed it: no task hop, no header map, one write each way.
//!
//! Anything else (HTTP/2 prior knowledge, upgrades, chunked or `Expect`
//! requests, auth, fixed responses, TLS, HTTP/2 or remote groups, a head
//! httparse refuses, a config without the service) hands the connection,
//! with the bytes read so far, to hyper (`Proxy::http`) for the rest of its
//! life, before anything of that request went anywhere. hyper's path stays
//! the one place that answers the unusual; this one stays small.

pub(crate) mod head;
mod pool;
mod rewind;

pub use pool::Pool;
pub use rewind::Rewind;

use crate::access_log::Entry;
use crate::config::{Action, Config, Listener};
use crate::http::{self, Record, Refusal};
use crate::proxy::{Conn, MAX_HEADER_BYTES, Proxy};
use crate::targets::{Group, Lease, Target};
use bytes::{Buf, BytesMut};
use head::{Body, Chunked};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout_at;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};
use trellis_api::resource::{ProtocolVersion, TargetProtocol, Timeouts};

/// Room made for each read from a socket.
const READ_CHUNK: usize = 16 * 1024;
/// Target connections a client connection keeps between its requests.
const HELD: usize = 4;
/// A closing client gets this long to take our FIN.
const SHUTDOWN: Duration = Duration::from_secs(1);

pub enum Served<I> {
    Closed,
    /// The rest is hyper's.
    HandOver(Rewind<I>),
}

/// Serves requests on `io` until the client closes, a timeout, `stop`, or
/// a request for hyper.
pub async fn serve<I>(proxy: &Arc<Proxy>, conn: &Conn, io: I, stop: &CancellationToken) -> Served<I>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let mut s = Session {
        proxy,
        conn,
        io,
        buf: BytesMut::with_capacity(READ_CHUNK),
        out: Vec::with_capacity(1024),
        rbuf: BytesMut::new(),
        held: Vec::new(),
        fixed: None,
    };
    let mut stopped = std::pin::pin!(stop.cancelled());
    let step = loop {
        match s.exchange(stop, stopped.as_mut()).await {
            Step::Next => {}
            step => break step,
        }
    };
    for (addr, stream) in s.held.drain(..) {
        proxy.pool.put(addr, stream);
    }
    match step {
        Step::HandOver(reason) => {
            let labels = crate::metrics::ReasonLabels { reason };
            proxy.metrics.handovers.get_or_create(&labels).inc();
            tracing::debug!(conn = conn.id, reason, "HTTP connection handed to hyper");
            Served::HandOver(Rewind::new(s.buf.freeze(), s.io))
        }
        _ => {
            let _ = tokio::time::timeout(SHUTDOWN, s.io.shutdown()).await;
            Served::Closed
        }
    }
}

enum Step {
    Next,
    Close,
    /// Why, a metric label.
    HandOver(&'static str),
}

struct Session<'a, I> {
    proxy: &'a Arc<Proxy>,
    conn: &'a Conn,
    io: I,
    /// Client bytes not yet handled.
    buf: BytesMut,
    /// What goes out next: a head for the target, then one for the client.
    out: Vec<u8>,
    /// Target bytes not yet relayed.
    rbuf: BytesMut,
    held: Vec<(std::net::SocketAddr, TcpStream)>,
    /// The headers every request of this connection gets, for the listener
    /// they were made for (a new snapshot brings a new listener).
    fixed: Option<(Arc<Listener>, Vec<u8>)>,
}

/// Why the HTTP/1.1 path does not take a request.
enum NoPlan {
    /// hyper's side is to have it: why, a metric label.
    HandOver(&'static str),
    /// Nobody is: a 400 with this reason, and the connection closed.
    Refuse(&'static str),
}

impl From<&'static str> for NoPlan {
    fn from(reason: &'static str) -> NoPlan {
        NoPlan::HandOver(reason)
    }
}

impl From<head::Unusual> for NoPlan {
    fn from(u: head::Unusual) -> NoPlan {
        match u {
            head::Unusual::HandOver => NoPlan::HandOver("framing"),
            head::Unusual::Refuse(detail) => NoPlan::Refuse(detail),
        }
    }
}

/// One request, decided.
struct Plan {
    group: Arc<Group>,
    /// Request body bytes still to come from the client.
    body_left: u64,
    close: bool,
    head_request: bool,
    /// Idempotent and without a body: it may be sent again.
    retryable: bool,
    rec: Record,
}

/// Why a target did not answer.
enum Failure {
    Connect(std::io::Error),
    /// A kept connection turned out closed before any of the response.
    Stale,
    Failed(String),
    Timeout,
    Drained,
    /// The client stopped sending its body.
    Client,
}

impl<I: AsyncRead + AsyncWrite + Unpin> Session<'_, I> {
    async fn exchange(
        &mut self,
        stop: &CancellationToken,
        stopped: Pin<&mut WaitForCancellationFuture<'_>>,
    ) -> Step {
        let timeouts = match self.proxy.config().listener(self.conn.dst.0) {
            Some(l) => l.timeouts,
            None => return Step::HandOver("no-service"),
        };
        if let Some(step) = self.read_head(&timeouts, stopped).await {
            return step;
        }
        let start = Instant::now();
        let config = self.proxy.config();
        let Some(listener) = config.listener(self.conn.dst.0).cloned() else {
            return Step::HandOver("no-service");
        };
        let plan = match self.plan(&config, &listener, start) {
            Ok(plan) => plan,
            Err(NoPlan::HandOver(reason)) => return Step::HandOver(reason),
            Err(NoPlan::Refuse(detail)) => {
                let rec = Record {
                    entry: Entry {
                        kind: "http",
                        request_id: http::request_id(),
                        source_network: config.network.clone(),
                        service: listener.service.clone(),
                        listener: listener.name.clone(),
                        ..Entry::default()
                    },
                    start,
                };
                drop(config);
                let t = listener.timeouts;
                return self
                    .refuse(rec, true, &t, Refusal::BadRequest, detail)
                    .await;
            }
        };
        drop(config);
        self.forward(&listener, plan, stop).await
    }

    /// Reads until `buf` holds a whole head. `None`: it does; else what to
    /// do instead. As hyper does, `headerReadSeconds` runs from the end of
    /// the previous response: an idle connection and a slow head alike are
    /// closed when it is over.
    async fn read_head(
        &mut self,
        t: &Timeouts,
        mut stopped: Pin<&mut WaitForCancellationFuture<'_>>,
    ) -> Option<Step> {
        let deadline = tokio::time::Instant::now() + secs(t.header_read_seconds);
        loop {
            if !self.buf.is_empty() {
                let mut headers = head::uninit();
                let mut req = httparse::Request::new(&mut []);
                match req.parse_with_uninit_headers(&self.buf, &mut headers) {
                    Ok(httparse::Status::Complete(_)) => return None,
                    Ok(httparse::Status::Partial) if self.buf.len() < MAX_HEADER_BYTES => {}
                    // hyper answers (431, 400) or speaks HTTP/2.
                    _ if self.buf.starts_with(b"PRI * HTTP/2.0") => {
                        return Some(Step::HandOver("http2"));
                    }
                    _ => return Some(Step::HandOver("head")),
                }
            }
            let idle = self.buf.is_empty();
            self.buf.reserve(READ_CHUNK);
            let read = timeout_at(deadline, self.io.read_buf(&mut self.buf));
            let read = if idle {
                // Between requests, a drain closes the connection at once.
                tokio::select! {
                    r = read => r,
                    _ = stopped.as_mut() => return Some(Step::Close),
                }
            } else {
                read.await
            };
            match read {
                Ok(Ok(n)) if n > 0 => {}
                _ => return Some(Step::Close),
            }
        }
    }

    /// Routes the head in `buf` and writes the target's head into `out`;
    /// else why hyper is to have the request. Nothing is consumed then, not
    /// even a turn of the weighted schedule.
    fn plan(
        &mut self,
        config: &Config,
        listener: &Arc<Listener>,
        start: Instant,
    ) -> Result<Plan, NoPlan> {
        let mut headers = head::uninit();
        let (req, len) = head::Request::parse(&self.buf, &mut headers).ok_or("head")?;
        // Refusals first: they hold on every listener, auth or not.
        let framing = req.framing()?;
        // Anything but a canonical target goes to hyper's side, which makes
        // it canonical or refuses it (crate::canonical).
        if !crate::canonical::is_canonical(req.target) {
            return Err(NoPlan::HandOver("target"));
        }
        if listener.guard.is_some() {
            return Err(NoPlan::HandOver("auth"));
        }
        if !self
            .fixed
            .as_ref()
            .is_some_and(|(l, _)| Arc::ptr_eq(l, listener))
        {
            let mut bytes = Vec::new();
            let region = &config.snapshot.region;
            let set = &mut |name: &str, value: &str| put(&mut bytes, name, value);
            http::connection_headers(self.conn, listener, &config.network, region, set);
            self.fixed = Some((listener.clone(), bytes));
        }
        let (rule, action) = listener.route(&req);
        let Action::Forward(split) = action else {
            return Err(NoPlan::HandOver("action"));
        };
        if !split
            .groups()
            .iter()
            .all(|g| config.groups.get(g).is_some_and(|g| plain_http1(g)))
        {
            return Err(NoPlan::HandOver("target-group"));
        }
        let group_name = split.pick();
        let group = config.groups.get(group_name).ok_or("target-group")?.clone();
        let mut entry = Entry {
            kind: "http",
            request_id: http::request_id(),
            source_network: config.network.clone(),
            service: listener.service.clone(),
            listener: listener.name.clone(),
            rule: rule.clone(),
            target_group: group_name.clone(),
            bytes_received: framing.content_length,
            ..Entry::default()
        };
        if self.proxy.access_log.enabled() {
            entry.client = self.conn.client.to_string();
            entry.method = req.method.to_string();
            entry.path = crate::route::RequestView::path(&req).to_string();
        }
        self.out.clear();
        let fixed = self.fixed.as_ref().map_or(&[][..], |(_, b)| b);
        req.write(&mut self.out, |out| {
            out.extend_from_slice(fixed);
            let region = &config.snapshot.region;
            let set = &mut |name: &str, value: &str| put(out, name, value);
            http::request_headers(listener, region, &entry.request_id, group_name, None, set);
        });
        let plan = Plan {
            group,
            body_left: framing.content_length,
            close: framing.close,
            head_request: req.method == "HEAD",
            retryable: http::idempotent(req.method) && framing.content_length == 0,
            rec: Record { entry, start },
        };
        self.buf.advance(len);
        Ok(plan)
    }

    /// Sends the request to a target of the plan's group (a connect failure
    /// retried once elsewhere, a kept connection found closed retried once
    /// on a new one, both only for requests that may be sent again) and
    /// relays the response.
    async fn forward(
        &mut self,
        listener: &Listener,
        mut plan: Plan,
        stop: &CancellationToken,
    ) -> Step {
        let t = &listener.timeouts;
        let deadline = tokio::time::Instant::now() + secs(t.request_seconds);
        // The body's first bytes go out with the head.
        let first = plan.body_left.min(self.buf.len() as u64) as usize;
        self.out.extend_from_slice(&self.buf[..first]);
        self.buf.advance(first);
        plan.body_left -= first as u64;

        let group = plan.group.clone();
        let mut tried = None;
        let mut fresh = false;
        let (lease, stream) = loop {
            let Some(target) = group.pick(tried) else {
                let detail = format!("target group {} has no target to send to", group.name);
                return self
                    .refuse_plan(plan, t, Refusal::NoHealthyTarget, &detail)
                    .await;
            };
            let lease = target.lease();
            if self.proxy.access_log.enabled() {
                plan.rec.entry.target = target.addr.to_string();
            }
            match self.attempt(target, fresh, deadline, t, &mut plan).await {
                Ok(stream) => break (lease, stream),
                Err(Failure::Connect(e))
                    if plan.retryable && tried.is_none() && group.targets.len() > 1 =>
                {
                    tracing::debug!(target = %target.addr, error = %e, "connect failed; retrying on another target");
                    self.proxy.metrics.retries.inc();
                    tried = Some(target.addr);
                }
                Err(Failure::Stale) if plan.retryable && !fresh => {
                    tracing::debug!(target = %target.addr, "kept connection was closed; sending again on a new one");
                    self.proxy.metrics.retries.inc();
                    fresh = true;
                }
                Err(f) => {
                    let addr = target.addr;
                    let (refusal, detail) = match f {
                        Failure::Connect(e) => (Refusal::ConnectFailed, format!("{addr}: {e}")),
                        Failure::Timeout => (
                            Refusal::UpstreamTimeout,
                            format!(
                                "no response from {addr} within {:?}",
                                secs(t.request_seconds)
                            ),
                        ),
                        Failure::Drained => (
                            Refusal::TargetDrained,
                            "the target left its group and its drain time ran out".into(),
                        ),
                        Failure::Client => (
                            Refusal::RequestTimeout,
                            "the request body did not arrive".into(),
                        ),
                        Failure::Failed(why) => (Refusal::UpstreamFailed, format!("{addr}: {why}")),
                        Failure::Stale => (
                            Refusal::UpstreamFailed,
                            format!("{addr}: connection closed before the response"),
                        ),
                    };
                    return self.refuse_plan(plan, t, refusal, &detail).await;
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
        t: &Timeouts,
        plan: &mut Plan,
    ) -> Result<TcpStream, Failure> {
        let addr = target.addr;
        let kept = if fresh { None } else { self.checkout(addr) };
        let reused = kept.is_some();
        let mut stream = match kept {
            Some(s) => s,
            None => {
                let upstream = self.proxy.clients.upstream();
                match timeout_at(deadline, upstream.connect(addr, ms(t.connect_ms))).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => return Err(Failure::Connect(e)),
                    Err(_) => return Err(Failure::Timeout),
                }
            }
        };
        match timeout_at(deadline, stream.write_all(&self.out)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) if reused => return Err(Failure::Stale),
            Ok(Err(e)) => return Err(Failure::Failed(e.to_string())),
            Err(_) => return Err(Failure::Timeout),
        }
        // The rest of the body, client to target, as it comes.
        while plan.body_left > 0 {
            self.buf.reserve(READ_CHUNK);
            let read = tokio::time::timeout(secs(t.idle_seconds), self.io.read_buf(&mut self.buf));
            match read.await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return Err(Failure::Client),
            }
            let n = plan.body_left.min(self.buf.len() as u64) as usize;
            match timeout_at(deadline, stream.write_all(&self.buf[..n])).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(Failure::Failed(e.to_string())),
                Err(_) => return Err(Failure::Timeout),
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
                _ = target.drained() => return Err(Failure::Drained),
            };
            match read {
                Err(_) => return Err(Failure::Timeout),
                Ok(Ok(0)) | Ok(Err(_)) if reused && self.rbuf.is_empty() => {
                    return Err(Failure::Stale);
                }
                Ok(Ok(0)) => return Err(Failure::Failed("closed before its response".into())),
                Ok(Err(e)) => return Err(Failure::Failed(e.to_string())),
                Ok(Ok(_)) => {}
            }
            let mut headers = head::uninit();
            let len = match head::Response::parse(&self.rbuf, &mut headers) {
                Ok(None) if self.rbuf.len() < MAX_HEADER_BYTES => continue,
                Ok(None) => return Err(Failure::Failed("response head too large".into())),
                Err(e) => return Err(Failure::Failed(format!("malformed response head: {e}"))),
                // 1xx: the client gets it, then the final response follows.
                // (Nothing is sent again once a response began: `out` is free.)
                Ok(Some((resp, len))) if matches!(resp.status, 100 | 102..=199) => {
                    self.out.clear();
                    resp.write(&mut self.out, false);
                    len
                }
                Ok(Some(_)) => return Ok(stream),
            };
            self.rbuf.advance(len);
            if send(&mut self.io, &self.out, t).await.is_err() {
                return Err(Failure::Client);
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
        let mut headers = head::uninit();
        let Ok(Some((resp, len))) = head::Response::parse(&self.rbuf, &mut headers) else {
            return self
                .refuse_plan(plan, t, Refusal::UpstreamFailed, "no response head")
                .await;
        };
        let (status, body) = (resp.status, resp.body(plan.head_request));
        let body = match body {
            Some(b) if status != 101 => b,
            _ => {
                let detail = format!(
                    "{}: a response this proxy cannot frame",
                    lease.target().addr
                );
                return self
                    .refuse_plan(plan, t, Refusal::UpstreamFailed, &detail)
                    .await;
            }
        };
        let keep = resp.keep_alive && body != Body::UntilClose;
        let close = plan.close || body == Body::UntilClose || stop.is_cancelled();
        self.out.clear();
        resp.write(&mut self.out, close);
        self.rbuf.advance(len);
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
            let read = tokio::time::timeout(secs(t.idle_seconds), stream.read_buf(&mut self.rbuf));
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
    async fn refuse_plan(
        &mut self,
        plan: Plan,
        t: &Timeouts,
        refusal: Refusal,
        detail: &str,
    ) -> Step {
        let close = plan.close || plan.body_left > 0;
        self.refuse(plan.rec, close, t, refusal, detail).await
    }

    /// Trellis's own answer for a request no plan was made for, or whose
    /// plan failed; the connection closes after it when `close`.
    async fn refuse(
        &mut self,
        mut rec: Record,
        close: bool,
        t: &Timeouts,
        refusal: Refusal,
        detail: &str,
    ) -> Step {
        let status = refusal.status();
        let body = format!("{}: {detail}\n", refusal.code());
        let mut out = Vec::with_capacity(256 + body.len());
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(status.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
        out.extend_from_slice(b"\r\ncontent-type: text/plain; charset=utf-8\r\n");
        put(&mut out, "x-trellis-error", refusal.code());
        put(&mut out, "content-length", &body.len().to_string());
        if close {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(body.as_bytes());
        rec.entry.status = status.as_u16();
        rec.entry.error = Some(refusal.code());
        rec.entry.bytes_sent = body.len() as u64;
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
    t: &Timeouts,
) -> std::io::Result<()> {
    let write = async {
        io.write_all(bytes).await?;
        io.flush().await
    };
    match tokio::time::timeout(secs(t.idle_seconds), write).await {
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

/// A group this path can reach: of this network, plain HTTP/1.1.
fn plain_http1(g: &Group) -> bool {
    g.remote.is_none()
        && g.protocol == TargetProtocol::Http
        && g.version == ProtocolVersion::Http1
        && matches!(g.tls, Ok(None))
}

/// Writes one header; a value that could break the head is left out.
fn put(out: &mut Vec<u8>, name: &str, value: &str) {
    if head::valid_value(value.as_bytes()) {
        head::put(out, name.as_bytes(), value.as_bytes());
    }
}

fn secs(s: u32) -> Duration {
    Duration::from_secs(u64::from(s.max(1)))
}

fn ms(m: u32) -> Duration {
    Duration::from_millis(u64::from(m.max(1)))
}

#[cfg(test)]
pub(crate) mod tests;
