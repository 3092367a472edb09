//! Sending a request or a connection on: to a target of a group of this
//! network, or through a gateway of the group's network. Every path (the
//! HTTP/1.1 path, hyper's, TCP, the gateway's CONNECT streams) reaches a
//! target through [`with_retry`], and says why it could not in a
//! [`ForwardError`], which becomes a [`Refusal`] in one place.

use crate::headers;
use crate::proxy::Proxy;
use crate::record::Record;
use crate::refusal::Refusal;
use crate::resilience::RetryPolicy;
use crate::targets::{Group, Lease, Target};
use crate::tunnel::TunnelError;
use crate::upstream::{Body, HttpClient, TargetClient, empty, error_chain, tls_failed};
use http::uri::PathAndQuery;
use http::{Request, Response, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Incoming};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use trellis_api::resilience::RetryOn;

/// Methods a retry cannot make happen twice (RFC 9110 9.2.2).
pub(crate) fn idempotent(m: &str) -> bool {
    matches!(m, "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE")
}

/// Why a request or connection did not reach a target, with its context.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ForwardError {
    #[error("target group {0} has no target to send to")]
    NoTarget(Arc<str>),
    #[error("{addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("no response from {addr} within {after:?}")]
    Timeout { addr: SocketAddr, after: Duration },
    #[error("the target left its group and its drain time ran out")]
    Drained { addr: SocketAddr },
    /// A kept connection was found closed before any of the response.
    #[error("{addr}: connection closed before the response")]
    Stale { addr: SocketAddr },
    #[error("{addr}: {why}")]
    Failed { addr: SocketAddr, why: String },
    /// The TLS handshake with an HTTPS group's target, or its settings.
    #[error("{0}")]
    Tls(String),
    /// The client's body broke off malformed: the client's fault.
    #[error("the request body is malformed: {0}")]
    MalformedBody(String),
    #[error("the request body did not arrive")]
    ClientGone,
    #[error(
        "target group {group} is in network {network}, and this node has no identity to reach its gateways (start it with --join-token)"
    )]
    NoIdentity { group: String, network: String },
    #[error(
        "target group {group} in network {network} has no healthy target, as its gateways report"
    )]
    RemoteUnavailable { group: String, network: String },
    #[error(transparent)]
    Tunnel(#[from] TunnelError),
    #[error("no response through network {network}'s gateway within {after:?}")]
    GatewayTimeout { network: String, after: Duration },
    #[error("network {0}'s gateway refused the stream")]
    TunnelRefused(String),
}

impl ForwardError {
    /// What the client is answered.
    pub(crate) fn refusal(&self) -> Refusal {
        self.into()
    }
}

impl From<&ForwardError> for Refusal {
    fn from(e: &ForwardError) -> Refusal {
        match e {
            ForwardError::NoTarget(_) | ForwardError::RemoteUnavailable { .. } => {
                Refusal::NoHealthyTarget
            }
            ForwardError::Connect { .. } => Refusal::ConnectFailed,
            ForwardError::Timeout { .. } | ForwardError::GatewayTimeout { .. } => {
                Refusal::UpstreamTimeout
            }
            ForwardError::Drained { .. } => Refusal::TargetDrained,
            ForwardError::Stale { .. } | ForwardError::Failed { .. } => Refusal::UpstreamFailed,
            ForwardError::Tls(_) => Refusal::TargetTls,
            ForwardError::MalformedBody(_) => Refusal::BadRequest,
            ForwardError::ClientGone => Refusal::RequestTimeout,
            ForwardError::NoIdentity { .. } => Refusal::GatewayUnreachable,
            ForwardError::Tunnel(TunnelError::NoGateway(_) | TunnelError::Unreachable { .. }) => {
                Refusal::GatewayUnreachable
            }
            ForwardError::Tunnel(_) => Refusal::UpstreamFailed,
            ForwardError::TunnelRefused(_) => Refusal::TunnelRefused,
        }
    }
}

/// The one way every path reaches a target of `group` (of this network):
/// [`Attempts::next`] gives a target picked by health and load, leased (its
/// in-flight count held for as long as the caller keeps the lease); after a
/// failed try, [`Attempts::retry`] says whether to try another. Without a
/// route's retry policy: only after a connect failure, when the request may
/// be sent again (`retryable`: nothing of it went out) and the group has
/// another target, once. With one: on the policy's conditions (statuses
/// too, [`Attempts::retry_status`]), up to its attempts, within its budget,
/// after [`Attempts::backoff`]; on another target when there is one.
///
/// The caller's loop, the same on every path:
/// `loop { let (t, lease) = a.next()?; match try(t) { Ok(x) => break, Err(e) => a.retry(proxy, e)? } }`
pub(crate) struct Attempts<'g> {
    group: &'g Group,
    retryable: bool,
    tried: Option<SocketAddr>,
    policy: Option<&'g RetryPolicy>,
    retries: u32,
}

impl<'g> Attempts<'g> {
    pub(crate) fn new(group: &'g Group, retryable: bool) -> Attempts<'g> {
        Attempts::with(group, retryable, None)
    }

    pub(crate) fn with(
        group: &'g Group,
        retryable: bool,
        policy: Option<&'g RetryPolicy>,
    ) -> Attempts<'g> {
        if let Some(p) = policy {
            p.budget.request();
        }
        Attempts {
            group,
            retryable,
            tried: None,
            policy,
            retries: 0,
        }
    }

    /// Under a policy: whether another try is due for `what` (the budget
    /// counts it when it is).
    fn policy_allows(&self, what: Option<RetryOn>, status: Option<u16>) -> bool {
        let Some(p) = self.policy else { return false };
        let wanted =
            what.is_some_and(|w| p.retries_on(w)) || status.is_some_and(|s| p.retries_status(s));
        self.retryable && wanted && self.retries < p.attempts() && p.budget.admit()
    }

    /// Under a policy: whether a target's `status` from `addr` is to be
    /// tried again (the caller drops the response).
    pub(crate) fn retry_status(&mut self, proxy: &Proxy, addr: SocketAddr, status: u16) -> bool {
        if !self.policy_allows(None, Some(status)) {
            return false;
        }
        tracing::debug!(target = %addr, status, "retrying on the route's policy");
        self.count(proxy, addr);
        true
    }

    fn count(&mut self, proxy: &Proxy, addr: SocketAddr) {
        proxy.metrics.retries.inc();
        self.retries += 1;
        self.tried = Some(addr);
    }

    /// The wait before the retry just allowed: none without a policy.
    pub(crate) fn backoff(&self) -> Duration {
        self.policy
            .map_or(Duration::ZERO, |p| p.backoff(self.retries))
    }

    /// The next target to try, leased.
    pub(crate) fn next(&mut self) -> Result<(&'g Arc<Target>, Lease), ForwardError> {
        let target = self
            .group
            .pick(self.tried)
            .ok_or_else(|| ForwardError::NoTarget(self.group.name.clone()))?;
        Ok((target, target.lease()))
    }

    /// After a failed try: `Ok` when another target is to be tried, else
    /// the failure.
    pub(crate) fn retry(&mut self, proxy: &Proxy, e: ForwardError) -> Result<(), ForwardError> {
        let (addr, what) = match &e {
            ForwardError::Connect { addr, .. } => (*addr, RetryOn::ConnectFailure),
            ForwardError::Stale { addr } | ForwardError::Failed { addr, .. } => {
                (*addr, RetryOn::Reset)
            }
            ForwardError::Timeout { addr, .. } => (*addr, RetryOn::Timeout),
            _ => return Err(e),
        };
        let again = match self.policy {
            Some(_) => self.policy_allows(Some(what), None),
            None => {
                what == RetryOn::ConnectFailure
                    && self.retryable
                    && self.tried.is_none()
                    && self.group.targets.len() > 1
            }
        };
        if !again {
            return Err(e);
        }
        tracing::debug!(target = %addr, error = %e, "retrying on another target");
        self.count(proxy, addr);
        Ok(())
    }
}

/// One try's outcome on `target`, for the group's passive health: `ok`
/// when it answered, and not with a 5xx.
pub(crate) fn observe(proxy: &Proxy, group: &Group, target: &Target, ok: bool) {
    if group.observe(target, ok) {
        proxy.metrics.ejected(&group.name);
        tracing::warn!(target_group = %group.name, target = %target.addr, "target ejected: it failed too often in a row");
    }
}

/// Whether a failed try says something about the target itself (rather
/// than the client or the settings).
pub(crate) fn target_failed(e: &ForwardError) -> bool {
    matches!(
        e,
        ForwardError::Connect { .. }
            | ForwardError::Timeout { .. }
            | ForwardError::Stale { .. }
            | ForwardError::Failed { .. }
    )
}

/// A request's time limits on its way to a target: the whole of it, and
/// each try; and the route's retry policy, if any.
pub(crate) struct Limits<'a> {
    pub total: Duration,
    pub per_try: Option<Duration>,
    pub retry: Option<&'a RetryPolicy>,
}

impl Limits<'_> {
    /// A listener's limit alone, no retry policy.
    pub(crate) fn listener(total: Duration) -> Limits<'static> {
        Limits {
            total,
            per_try: None,
            retry: None,
        }
    }
}

/// Sends a request to a target of `group` (of this network) with hyper's
/// pooled clients, tried again as [`Attempts`] says (an idempotent request
/// without a body only), within `limits`. The target's in-flight count is
/// held by the lease.
pub(crate) async fn to_target(
    proxy: &Proxy,
    (http1, http2_client, connect_timeout): (&HttpClient, &HttpClient, Duration),
    group: &Group,
    mut parts: http::request::Parts,
    body: Body,
    limits: Limits<'_>,
    rec: &mut Record,
) -> Result<(Lease, Response<Incoming>), ForwardError> {
    let deadline = tokio::time::Instant::now() + limits.total;
    let path_and_query = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let http2 = group.version != trellis_api::resource::ProtocolVersion::Http1;
    parts.version = if http2 {
        Version::HTTP_2
    } else {
        Version::HTTP_11
    };
    let client = match &group.tls {
        Ok(None) => TargetClient::Plain(if http2 { http2_client } else { http1 }),
        Ok(Some(tls)) => TargetClient::Tls(tls.client(proxy.clients.upstream(), connect_timeout)),
        Err(why) => {
            return Err(ForwardError::Tls(format!(
                "target group {}: {why}",
                group.name
            )));
        }
    };
    // A request without a body can be sent again: on a connect failure, an
    // idempotent one is retried once on another target.
    let retryable = idempotent(parts.method.as_str()) && body.is_end_stream();
    // A client body that breaks off malformed (a bad chunk size) is the
    // client's fault, not the target's: 400, and hyper drops the target
    // connection it was half-written to.
    let malformed = (!body.is_end_stream()).then(|| Arc::new(AtomicBool::new(false)));
    let body = match &malformed {
        None => body,
        Some(flag) => {
            let flag = flag.clone();
            body.map_err(move |e| {
                flag.store(true, Ordering::Relaxed);
                e
            })
            .boxed_unsync()
        }
    };
    let mut body = Some(body);
    let mut attempts = Attempts::with(group, retryable, limits.retry);
    let sent = loop {
        let (target, lease) = match attempts.next() {
            Ok(next) => next,
            Err(e) => break Err(e),
        };
        let addr = target.addr;
        if proxy.access_log.enabled() {
            rec.entry.target = addr.to_string();
        }
        // From parts made once (the target's authority, the request's
        // path): no string formatted and parsed again per request.
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(client.scheme());
        uri.authority = Some(target.authority.clone());
        uri.path_and_query = Some(path_and_query.clone());
        let uri = match Uri::from_parts(uri) {
            Ok(uri) => uri,
            Err(e) => {
                let why = e.to_string();
                break Err(ForwardError::Failed { addr, why });
            }
        };
        let mut upstream = Request::new(match (retryable, body.take()) {
            (false, Some(b)) => b,
            _ => empty(),
        });
        *upstream.method_mut() = parts.method.clone();
        *upstream.uri_mut() = uri;
        *upstream.version_mut() = parts.version;
        // Only a request that may be retried needs its headers twice.
        *upstream.headers_mut() = if retryable {
            parts.headers.clone()
        } else {
            std::mem::take(&mut parts.headers)
        };
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let timeout = limits.per_try.map_or(left, |t| t.min(left));
        let sent = tokio::select! {
            r = tokio::time::timeout(timeout, client.request(upstream)) => r,
            _ = target.drained() => break Err(ForwardError::Drained { addr }),
        };
        let failed = match sent {
            Ok(Ok(resp)) => {
                let status = resp.status().as_u16();
                observe(proxy, group, target, status < 500);
                if !attempts.retry_status(proxy, addr, status) {
                    break Ok((lease, resp));
                }
                drop(resp);
                drop(lease);
                if !backoff(&attempts, deadline).await {
                    break Err(ForwardError::Timeout {
                        addr,
                        after: limits.total,
                    });
                }
                continue;
            }
            Ok(Err(e))
                if malformed
                    .as_ref()
                    .is_some_and(|f| f.load(Ordering::Relaxed)) =>
            {
                ForwardError::MalformedBody(error_chain(&e))
            }
            Ok(Err(e)) if tls_failed(&e) => {
                ForwardError::Tls(format!("{addr}: {}", error_chain(&e)))
            }
            Ok(Err(e)) if e.is_connect() => ForwardError::Connect {
                addr,
                source: std::io::Error::other(error_chain(&e)),
            },
            Ok(Err(e)) => ForwardError::Failed {
                addr,
                why: error_chain(&e),
            },
            Err(_) => ForwardError::Timeout {
                addr,
                after: timeout,
            },
        };
        if target_failed(&failed) {
            observe(proxy, group, target, false);
        }
        if let Err(e) = attempts.retry(proxy, failed) {
            break Err(e);
        }
        drop(lease);
        if !backoff(&attempts, deadline).await {
            break Err(ForwardError::Timeout {
                addr,
                after: limits.total,
            });
        }
    };
    rec.entry.upstream_ms = rec.start.elapsed().as_secs_f64() * 1000.0;
    sent
}

/// Waits out the backoff before a retry; `false` when the request's
/// deadline comes first (or leaves no time for another try).
async fn backoff(attempts: &Attempts<'_>, deadline: tokio::time::Instant) -> bool {
    let wait = attempts.backoff();
    if tokio::time::Instant::now() + wait >= deadline {
        return false;
    }
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
    true
}

/// Sends a request for `group` of `network` through one of its gateways,
/// unless they last reported nothing healthy in it.
pub(crate) async fn through_gateway(
    proxy: &Proxy,
    network: &str,
    group: &str,
    mut parts: http::request::Parts,
    body: Body,
    timeout: Duration,
    rec: &mut Record,
) -> Result<Response<Body>, ForwardError> {
    let tunnels = gateways(proxy, network, group)?;
    if proxy.access_log.enabled() {
        rec.entry.target = format!("gateway:{network}");
    }
    headers::set(&mut parts.headers, crate::tunnel::GROUP_HEADER, group);
    let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    parts.uri = Uri::try_from(format!(
        "https://{}{path_and_query}",
        trellis_api::pki::server_name(network)
    ))
    .map_err(|e| ForwardError::Tunnel(TunnelError::Request(e.to_string())))?;
    parts.version = Version::HTTP_2;
    let req = Request::from_parts(parts, body);
    // Boxed: a tunnel's send (6.4 KB of state) would otherwise be carried,
    // and copied at every move, by every request's future.
    let sent = tokio::time::timeout(timeout, Box::pin(tunnels.send(network, req))).await;
    rec.entry.upstream_ms = rec.start.elapsed().as_secs_f64() * 1000.0;
    match sent {
        Ok(Ok(resp)) => {
            let (mut parts, body) = resp.into_parts();
            headers::strip_hop_by_hop(&mut parts.headers, false);
            Ok(Response::from_parts(parts, body.boxed_unsync()))
        }
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(ForwardError::GatewayTimeout {
            network: network.to_string(),
            after: timeout,
        }),
    }
}

/// The tunnels to `network`'s gateways, when this node has an identity and
/// they last reported something healthy in `group`.
pub(crate) fn gateways<'p>(
    proxy: &'p Proxy,
    network: &str,
    group: &str,
) -> Result<&'p Arc<crate::tunnel::Tunnels>, ForwardError> {
    let tunnels = proxy.tunnels().ok_or_else(|| ForwardError::NoIdentity {
        group: group.to_string(),
        network: network.to_string(),
    })?;
    if !tunnels.available(network, group) {
        return Err(ForwardError::RemoteUnavailable {
            group: group.to_string(),
            network: network.to_string(),
        });
    }
    Ok(tunnels)
}
