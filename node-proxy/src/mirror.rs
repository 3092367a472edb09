//! Copies of requests for a rule's mirrors: each sent on its own task to
//! its target group, marked `x-trellis-mirrored: true`, its answer thrown
//! away. A copy is never waited for and never slows the request it copies:
//! its body is teed frame by frame into a short queue, and a copy that
//! falls behind is cut (abandoned mid-request), never buffered and never
//! sent short.

use crate::config::{Config, Listener};
use crate::forward::{Limits, through_gateway, to_target};
use crate::headers;
use crate::proxy::Proxy;
use crate::record::Record;
use crate::resilience::MirrorTo;
use crate::targets::Group;
use crate::upstream::{Body, empty};
use bytes::Bytes;
use http::request::Parts;
use http_body_util::BodyExt;
use hyper::body::{Body as _, Frame, SizeHint};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Body frames a copy may fall behind its original before it is cut.
const LAG: usize = 16;
pub const MARK: &str = "x-trellis-mirrored";

/// Starts a copy of the request for each of `mirrors` that picks it.
/// `parts` are as the target gets them (the rule's changes and the proxy's
/// headers made); the returned body replaces `body` on the way to the
/// target, feeding the copies as it goes.
pub(crate) fn start(
    proxy: &Arc<Proxy>,
    config: &Config,
    listener: &Arc<Listener>,
    mirrors: &[MirrorTo],
    parts: &Parts,
    client: SocketAddr,
    body: Body,
) -> Body {
    let mut copies = Vec::new();
    for m in mirrors.iter().filter(|m| m.chosen()) {
        let Some(group) = config.groups.get(&m.group).cloned() else {
            continue;
        };
        let Ok(permit) = proxy.mirrors.clone().try_acquire_owned() else {
            proxy.metrics.mirrored(&m.group, "skipped");
            continue;
        };
        let mut copy = http::Request::new(());
        *copy.method_mut() = parts.method.clone();
        *copy.uri_mut() = parts.uri.clone();
        *copy.version_mut() = parts.version;
        *copy.headers_mut() = parts.headers.clone();
        headers::set(copy.headers_mut(), MARK, "true");
        let cut = CancellationToken::new();
        let copy_body = if body.is_end_stream() {
            empty()
        } else {
            let (tx, rx) = mpsc::channel(LAG);
            copies.push((tx, cut.clone()));
            Copy {
                rx,
                hint: body.size_hint(),
                ended: false,
            }
            .boxed_unsync()
        };
        let (copy, ()) = copy.into_parts();
        let send = send(
            proxy.clone(),
            config.network.clone(),
            client,
            listener.clone(),
            group,
            (copy, copy_body),
            (cut, permit),
        );
        tokio::spawn(send.in_current_span());
    }
    if copies.is_empty() {
        body
    } else {
        Tee {
            inner: body,
            copies,
        }
        .boxed_unsync()
    }
}

async fn send(
    proxy: Arc<Proxy>,
    network: Arc<str>,
    client: SocketAddr,
    listener: Arc<Listener>,
    group: Arc<Group>,
    (parts, body): (Parts, Body),
    (cut, _permit): (CancellationToken, OwnedSemaphorePermit),
) {
    let start = std::time::Instant::now();
    let mut rec = Record::begin(&proxy, "mirror", network, client, start);
    let timeout = listener.timeouts.request;
    let answered = async {
        match &group.remote {
            Some(net) => {
                let sent =
                    through_gateway(&proxy, net, &group.name, parts, body, timeout, &mut rec);
                sent.await.map(|r| r.status())
            }
            None => {
                let clients = (&listener.http1, &listener.http2, listener.timeouts.connect);
                let limits = Limits::listener(timeout);
                let sent = to_target(&proxy, clients, &group, parts, body, limits, &mut rec);
                sent.await.map(|(_, r)| r.status())
            }
        }
    };
    let outcome = tokio::select! {
        r = answered => match r {
            Ok(_) => "answered",
            Err(e) => {
                tracing::debug!(target_group = %group.name, error = %e, "mirrored copy failed");
                "failed"
            }
        },
        _ = cut.cancelled() => "cut",
    };
    proxy.metrics.mirrored(&group.name, outcome);
}

enum Piece {
    Data(Bytes),
    End,
}

/// The original body, each data frame also offered to the copies.
struct Tee {
    inner: Body,
    copies: Vec<(mpsc::Sender<Piece>, CancellationToken)>,
}

impl Tee {
    /// Offers `piece` to every copy; one that cannot take it is cut.
    fn offer(&mut self, piece: impl Fn() -> Piece) {
        self.copies.retain(|(tx, cut)| {
            let taken = tx.try_send(piece()).is_ok();
            if !taken {
                cut.cancel();
            }
            taken
        });
    }

    /// The original is whole: so are the copies still keeping up.
    fn end(&mut self) {
        self.offer(|| Piece::End);
        self.copies.clear();
    }
}

/// The original given up before its end (the client left, the target
/// failed): the copies still waiting for the rest are cut.
impl Drop for Tee {
    fn drop(&mut self) {
        for (_, cut) in &self.copies {
            cut.cancel();
        }
    }
}

impl hyper::body::Body for Tee {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        match &frame {
            Some(Ok(f)) => {
                if let Some(data) = f.data_ref() {
                    let data = data.clone();
                    self.offer(|| Piece::Data(data.clone()));
                }
                if self.inner.is_end_stream() {
                    self.end();
                }
            }
            None => self.end(),
            // The client's body broke: so do the copies.
            Some(Err(_)) => {
                for (_, cut) in self.copies.drain(..) {
                    cut.cancel();
                }
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A copy's body, as the tee hands it over. It ends only when the original
/// did; a tee gone without saying so leaves it pending (its copy is being
/// cut), so a copy is never sent short.
struct Copy {
    rx: mpsc::Receiver<Piece>,
    hint: SizeHint,
    ended: bool,
}

impl hyper::body::Body for Copy {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        match ready!(self.rx.poll_recv(cx)) {
            Some(Piece::Data(d)) => Poll::Ready(Some(Ok(Frame::data(d)))),
            Some(Piece::End) => {
                self.ended = true;
                Poll::Ready(None)
            }
            None => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }

    fn size_hint(&self) -> SizeHint {
        self.hint
    }
}
