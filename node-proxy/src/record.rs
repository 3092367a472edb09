//! The record of one request or connection: what the access log line and
//! the metrics get, filled in as it goes and closed once, when the response
//! body ends (or the client goes away).

use crate::access_log::Entry;
use crate::config::Listener;
use crate::metrics::ServiceLabels;
use crate::proxy::{Conn, Proxy};
use crate::refusal::Refusal;
use crate::targets::{Lease, random};
use crate::upstream::Body;
use bytes::Bytes;
use http::Response;
use http_body_util::BodyExt;
use hyper::body::{Frame, SizeHint};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

fn request_id() -> String {
    // By hand, not `format!`: made for every request.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let n = (u128::from(random() as u64) << 64) | u128::from(random() as u64);
    (0..32)
        .rev()
        .map(|i| char::from(HEX[(n >> (i * 4)) as usize & 15]))
        .collect()
}

/// What the log line and the metrics need, filled in as the request goes.
pub(crate) struct Record {
    pub entry: Entry,
    pub start: Instant,
}

impl Record {
    /// The one way a record begins: a request (or connection) of `kind`,
    /// from `client`, as a node of `network` sees it, begun at `start`.
    /// Strings only the access log reads are made only when it is on.
    pub(crate) fn begin(
        proxy: &Proxy,
        kind: &'static str,
        network: Arc<str>,
        client: SocketAddr,
        start: Instant,
    ) -> Record {
        let mut entry = Entry {
            kind,
            request_id: request_id(),
            source_network: network,
            ..Entry::default()
        };
        if proxy.access_log.enabled() {
            entry.client = client.to_string();
        }
        Record { entry, start }
    }

    /// Made by the caller of `conn` (its workload, when the log is on).
    pub(crate) fn by(mut self, proxy: &Proxy, conn: &Conn) -> Record {
        if proxy.access_log.enabled() {
            self.entry.workload = conn.workload();
        }
        self
    }

    /// On `listener`: its service's name and its own.
    pub(crate) fn on(mut self, listener: &Listener) -> Record {
        self.entry.service = listener.service.clone();
        self.entry.listener = listener.name.clone();
        self
    }

    /// The request's method and path, when the access log is on.
    pub(crate) fn request(&mut self, proxy: &Proxy, method: &str, path: &str) {
        if proxy.access_log.enabled() {
            self.entry.method = method.to_string();
            self.entry.path = path.to_string();
        }
    }

    /// A TCP connection is over: logged, with why it ended if not cleanly
    /// (its metrics are the connection counters).
    pub(crate) fn closed(mut self, proxy: &Proxy, error: Option<&'static str>) {
        self.entry.error = error;
        self.entry.duration_ms = self.start.elapsed().as_secs_f64() * 1000.0;
        if proxy.access_log.enabled() {
            proxy.access_log.log(self.entry);
        }
    }

    /// The request is over: counted, timed and logged.
    pub(crate) fn done(mut self, proxy: &Proxy) {
        let elapsed = self.start.elapsed();
        self.entry.duration_ms = elapsed.as_secs_f64() * 1000.0;
        let m = &proxy.metrics;
        m.requests
            .count(&self.entry, crate::traffic::verdict(&self.entry));
        m.duration
            .get_or_create(&ServiceLabels {
                service: self.entry.service.clone(),
            })
            .observe(elapsed.as_secs_f64());
        if proxy.access_log.enabled() {
            proxy.access_log.log(self.entry);
        }
    }
}

/// Trellis's own answer, with its reason, logged and counted like any.
pub(crate) fn refuse(
    proxy: &Arc<Proxy>,
    rec: Record,
    refusal: Refusal,
    detail: &str,
) -> Response<Body> {
    tracing::debug!(code = refusal.code(), detail, "refused");
    finish(proxy, rec, refusal.response(detail), Some(refusal), None)
}

/// Wraps the response body so the request is logged and counted when the
/// body ends (or the client goes away), with its size and full duration.
pub(crate) fn finish(
    proxy: &Arc<Proxy>,
    mut rec: Record,
    resp: Response<Body>,
    error: Option<Refusal>,
    lease: Option<Lease>,
) -> Response<Body> {
    rec.entry.status = resp.status().as_u16();
    rec.entry.error = error.map(Refusal::code);
    let (parts, body) = resp.into_parts();
    let observed = Observed {
        inner: body,
        record: Some(rec),
        proxy: proxy.clone(),
        _lease: lease,
    };
    Response::from_parts(parts, observed.boxed_unsync())
}

struct Observed {
    inner: Body,
    record: Option<Record>,
    proxy: Arc<Proxy>,
    /// Holds the target's in-flight count until the body is done.
    _lease: Option<Lease>,
}

impl hyper::body::Body for Observed {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let (Some(data), Some(rec)) = (frame.data_ref(), self.record.as_mut()) {
                rec.entry.bytes_sent += data.len() as u64;
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        if let Some(rec) = self.record.take() {
            rec.done(&self.proxy);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn request_ids_are_32_hex_digits_and_differ() {
        let (a, b) = (super::request_id(), super::request_id());
        for id in [&a, &b] {
            assert_eq!(id.len(), 32, "{id}");
            assert!(
                id.bytes()
                    .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)),
                "{id}"
            );
        }
        assert_ne!(a, b);
    }
}
