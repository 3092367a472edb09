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

mod authorize;
mod exchange;
pub(crate) mod head;
mod rewind;

pub use rewind::Rewind;

use crate::config::{Action, Config, Listener};
use crate::forward::idempotent;
use crate::guard::Denied;
use crate::headers::{connection_headers, request_headers};
use crate::proxy::{Conn, MAX_HEADER_BYTES, Proxy};
use crate::record::Record;
use crate::refusal::Refusal;
use crate::targets::Group;
use bytes::{Buf, BytesMut};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout_at;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};
use tracing::Instrument;
use trellis_api::resource::{ProtocolVersion, TargetProtocol};

/// Room made for each read from a socket.
const READ_CHUNK: usize = 16 * 1024;
/// Target connections a client connection keeps between its requests.
const HELD: usize = 4;
/// A client connection idle this long gives back what only a request
/// needs: its buffers, and its target connections to the node's pool.
const SHED_AFTER: Duration = Duration::from_secs(1);
/// A closing client gets this long to take our FIN.
const SHUTDOWN: Duration = Duration::from_secs(1);
/// How long a connection idle at a drain waits for its next request.
const DRAIN_IDLE_GRACE: Duration = Duration::from_secs(1);

pub enum Served<I> {
    Closed,
    /// The rest is hyper's.
    HandOver(Rewind<I>),
}

/// Serves requests on `io` until the client closes, a timeout, `stop`, or
/// a request for hyper.
///
/// Not an `async fn`: its future would hold the arguments and then the
/// session made of them (an `async fn` keeps its arguments apart from the
/// locals they move to); this block holds the session alone, in every idle
/// connection's task.
pub fn serve<'a, I>(
    proxy: &'a Arc<Proxy>,
    conn: &'a Conn,
    io: I,
    stop: &'a CancellationToken,
) -> impl Future<Output = Served<I>> + 'a
where
    I: AsyncRead + AsyncWrite + Unpin + 'a,
{
    let mut session = Session {
        proxy,
        conn,
        io,
        buf: BytesMut::with_capacity(READ_CHUNK),
        out: Vec::with_capacity(1024),
        rbuf: BytesMut::new(),
        held: Vec::new(),
        fixed: None,
        shed: false,
    };
    async move {
        let s = &mut session;
        let mut stopped = std::pin::pin!(stop.cancelled());
        let step = loop {
            // Busy: requests one after another. Their state (parse slots, a
            // forward's timers, the record) is boxed once per busy spell, so an
            // idle connection's task carries only what waiting needs.
            match Box::pin(s.busy(stop, stopped.as_mut())).await {
                // Idle, its buffers and target connections given back: the
                // next bytes are awaited with the small state, then busy again.
                Step::Idle => {
                    let Some(limit) = proxy
                        .config()
                        .listener(conn.dst.0)
                        .map(|l| l.timeouts.header_read)
                    else {
                        break Step::HandOver("no-service");
                    };
                    if let Some(step) = s.read_head(limit, stopped.as_mut()).await {
                        break step;
                    }
                }
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
                tracing::debug!(reason, "HTTP connection handed to hyper");
                Served::HandOver(Rewind::new(session.buf.freeze(), session.io))
            }
            _ => {
                let _ = tokio::time::timeout(SHUTDOWN, session.io.shutdown()).await;
                Served::Closed
            }
        }
    }
}

enum Step {
    Next,
    /// Idle long enough to have shed what it held.
    Idle,
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
    /// Idle since it gave its buffers and target connections back: reads
    /// start small again.
    shed: bool,
}

/// Why the HTTP/1.1 path does not take a request.
enum NoPlan {
    /// hyper's side is to have it: why, a metric label.
    HandOver(&'static str),
    /// Nobody is: a 400 with this reason, and the connection closed.
    Refuse(&'static str),
    /// Auth refused it: a 403 with the reason, and the connection closed;
    /// with the request's method and path when the access log is on.
    Denied(Denied, Option<(String, String)>),
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

impl<I: AsyncRead + AsyncWrite + Unpin> Session<'_, I> {
    /// Exchanges until the connection ends, is handed over, or idles.
    async fn busy(
        &mut self,
        stop: &CancellationToken,
        mut stopped: Pin<&mut WaitForCancellationFuture<'_>>,
    ) -> Step {
        loop {
            match self.exchange(stop, stopped.as_mut()).await {
                Step::Next => {}
                step => return step,
            }
        }
    }

    async fn exchange(
        &mut self,
        stop: &CancellationToken,
        stopped: Pin<&mut WaitForCancellationFuture<'_>>,
    ) -> Step {
        let header_read = match self.proxy.config().listener(self.conn.dst.0) {
            Some(l) => l.timeouts.header_read,
            None => return Step::HandOver("no-service"),
        };
        if let Some(step) = self.read_head(header_read, stopped).await {
            return step;
        }
        // The rest of the exchange is one request's: its log lines say so.
        let span = tracing::debug_span!("request");
        self.request(stop).instrument(span).await
    }

    /// The request whose head is in `buf`: planned and forwarded, refused,
    /// or left to hyper.
    async fn request(&mut self, stop: &CancellationToken) -> Step {
        let start = Instant::now();
        let config = self.proxy.config();
        let Some(listener) = config.listener(self.conn.dst.0).cloned() else {
            return Step::HandOver("no-service");
        };
        let refused = match self.plan(&config, &listener, start) {
            Ok(plan) => {
                drop(config);
                return self.forward(&listener, plan, stop).await;
            }
            Err(NoPlan::HandOver(reason)) => return Step::HandOver(reason),
            Err(NoPlan::Refuse(detail)) => (Refusal::BadRequest, detail.to_string(), None),
            Err(NoPlan::Denied(denied, seen)) => (
                denied.refusal,
                denied.detail,
                Some((denied.code, denied.identity, seen)),
            ),
        };
        // Refused before a plan: the head stays unread, so the connection
        // closes after the answer.
        let (refusal, detail, auth) = refused;
        let mut rec = Record::begin(
            self.proxy,
            "http",
            config.network.clone(),
            self.conn.client,
            start,
        )
        .by(self.proxy, self.conn)
        .on(&listener);
        drop(config);
        if let Some((code, identity, seen)) = auth {
            self.proxy
                .metrics
                .auth_decisions(&listener.service, code, "");
            rec.entry.auth = Some(format!("deny {detail}"));
            rec.entry.identity = identity;
            if let Some((method, path)) = seen {
                rec.entry.method = method;
                rec.entry.path = path;
            }
        }
        let t = listener.timeouts;
        self.refuse(rec, true, &t, refusal, &detail).await
    }

    /// Reads until `buf` holds a whole head. `None`: it does; else what to
    /// do instead. As hyper does, `headerReadSeconds` runs from the end of
    /// the previous response: an idle connection and a slow head alike are
    /// closed when it is over.
    async fn read_head(
        &mut self,
        header_read: Duration,
        mut stopped: Pin<&mut WaitForCancellationFuture<'_>>,
    ) -> Option<Step> {
        let started = tokio::time::Instant::now();
        let mut deadline = started + header_read;
        let mut draining = false;
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
            if !self.shed {
                self.buf.reserve(READ_CHUNK);
            }
            // One timer: the head's deadline, or sooner the moment an idle
            // connection sheds what it holds.
            let shed_at = (idle && !self.shed && !draining)
                .then(|| started + SHED_AFTER)
                .filter(|at| *at < deadline);
            let read = timeout_at(shed_at.unwrap_or(deadline), self.io.read_buf(&mut self.buf));
            let read = if idle && !draining {
                tokio::select! {
                    r = read => r,
                    _ = stopped.as_mut() => {
                        // Draining: a request that comes soon is still
                        // served, its response saying `Connection: close`
                        // (the client reconnects, to whoever accepts now),
                        // rather than racing our close; after the grace
                        // the connection closes.
                        draining = true;
                        deadline = deadline.min(tokio::time::Instant::now() + DRAIN_IDLE_GRACE);
                        continue;
                    }
                }
            } else {
                read.await
            };
            match read {
                Ok(Ok(n)) if n > 0 => self.shed = false,
                Err(_) if shed_at.is_some() => {
                    self.shed();
                    return Some(Step::Idle);
                }
                _ => return Some(Step::Close),
            }
        }
    }

    /// An idle connection keeps the socket and this small state: its
    /// buffers and the connection's header bytes go (the next read starts
    /// with a few bytes' room, then grows to a chunk) and its target
    /// connections go to the node's pool for whichever client connection
    /// needs one next.
    fn shed(&mut self) {
        for (addr, stream) in std::mem::take(&mut self.held) {
            self.proxy.pool.put(addr, stream);
        }
        self.buf = BytesMut::new();
        self.rbuf = BytesMut::new();
        self.out = Vec::new();
        // Made again for the next request's listener.
        self.fixed = None;
        self.shed = true;
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
        // So is a Host it would not take (hyper's side refuses it).
        let host = req
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("host"));
        if !host.is_some_and(|h| crate::canonical::valid_host(h.value)) {
            return Err(NoPlan::HandOver("host"));
        }
        if !self
            .fixed
            .as_ref()
            .is_some_and(|(l, _)| Arc::ptr_eq(l, listener))
        {
            let mut bytes = Vec::new();
            let region = &config.snapshot.region;
            let set = &mut |name: &str, value: &str| put(&mut bytes, name, value);
            connection_headers(self.conn, listener, &config.network, region, set);
            self.fixed = Some((listener.clone(), bytes));
        }
        let (rule, action) = listener.route(&req);
        // Header changes, redirects, retries and mirrors are hyper's side's
        // to make.
        let Action::Forward(split, forwarding) = action else {
            return Err(NoPlan::HandOver("action"));
        };
        if !forwarding.is_plain() {
            return Err(NoPlan::HandOver("action"));
        }
        if !split
            .groups()
            .iter()
            .all(|g| config.groups.get(g).is_some_and(|g| plain_http1(g)))
        {
            return Err(NoPlan::HandOver("target-group"));
        }
        // Auth after routing (which is pure: nothing is consumed by it),
        // so a request is decided once, here or on hyper's side.
        let decided = match &listener.guard {
            Some(guard) => Some(self.authorize(config, listener, guard, &req, &framing)?),
            None => None,
        };
        let group_name = split.pick();
        let group = config.groups.get(group_name).ok_or("target-group")?.clone();
        let mut rec = Record::begin(
            self.proxy,
            "http",
            config.network.clone(),
            self.conn.client,
            start,
        )
        .by(self.proxy, self.conn)
        .on(listener);
        rec.request(
            self.proxy,
            req.method,
            crate::route::RequestView::path(&req),
        );
        rec.entry.rule = rule.clone();
        rec.entry.target_group = group_name.clone();
        rec.entry.bytes_received = framing.content_length;
        let caller = decided
            .as_ref()
            .and_then(|d| d.principal.as_deref().map(|p| (p, d.via)));
        let principal = caller.map(|(p, _)| p);
        if let Some(d) = &decided {
            self.proxy
                .metrics
                .auth_decisions(&listener.service, "allow", d.via);
            if self.proxy.access_log.enabled() {
                rec.entry.identity = principal.and_then(|p| p.names.first().cloned());
                rec.entry.authn = Some(d.via);
                rec.entry.auth = Some(format!("allow {}", d.allowed));
            }
        }
        self.out.clear();
        let fixed = self.fixed.as_ref().map_or(&[][..], |(_, b)| b);
        req.write(&mut self.out, |out| {
            out.extend_from_slice(fixed);
            let region = &config.snapshot.region;
            let set = &mut |name: &str, value: &str| put(out, name, value);
            request_headers(
                listener,
                region,
                &rec.entry.request_id,
                group_name,
                caller,
                set,
            );
        });
        let plan = Plan {
            group,
            body_left: framing.content_length,
            close: framing.close,
            head_request: req.method == "HEAD",
            retryable: idempotent(req.method) && framing.content_length == 0,
            rec,
        };
        self.buf.advance(len);
        Ok(plan)
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

#[cfg(test)]
pub(crate) mod tests;
