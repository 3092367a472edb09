//! One HTTP request: route it by the listener's rules, pick a target group
//! by weight and a target by health and load, forward it from the node's
//! SNAT address with the proxy's headers, and log it when its response
//! body ends. Trellis's own answers (no route, no healthy target, target
//! failed or too slow) carry `x-trellis-error` and a one-line reason.

use crate::access_log::{Entry, now_rfc3339};
use crate::auth::policy::Principal;
use crate::auth::{self, Guard, Inbound, Place, sigv4};
use crate::canonical::{self, Target};
use crate::config::Config;
use crate::config::{Action, Listener};
use crate::headers::{self, LATTICE_ACCOUNT};
use crate::metrics::{RequestLabels, ServiceLabels};
use crate::proxy::{Conn, Proxy};
use crate::route::RequestParts;
use crate::targets::Group;
use crate::targets::{Lease, random};
use crate::tunnel::TunnelError;
use crate::upstream::{Body, HttpClient, TargetClient};
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// What `OPTIONS *` answers: the methods a service behind the proxy may take.
const ALLOWED: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";

/// Why Trellis answered itself; the `x-trellis-error` header value.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Refusal {
    NoService,
    NoTargetGroup,
    NoHealthyTarget,
    ConnectFailed,
    /// The TLS handshake with an HTTPS group's target failed (most often:
    /// its certificate is not trusted or not for the configured name).
    TargetTls,
    UpstreamFailed,
    UpstreamTimeout,
    TargetDrained,
    AuthDenied,
    BodyTooLarge,
    BadRequest,
    RequestTimeout,
    /// A gateway refused a tunnelled request (not visible, wrong network).
    TunnelRefused,
    /// No gateway of the group's network could be reached.
    GatewayUnreachable,
}

impl Refusal {
    pub(crate) fn status(self) -> StatusCode {
        match self {
            Refusal::NoService
            | Refusal::NoTargetGroup
            | Refusal::NoHealthyTarget
            | Refusal::GatewayUnreachable => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::ConnectFailed
            | Refusal::TargetTls
            | Refusal::UpstreamFailed
            | Refusal::TargetDrained => StatusCode::BAD_GATEWAY,
            Refusal::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Refusal::AuthDenied | Refusal::TunnelRefused => StatusCode::FORBIDDEN,
            Refusal::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::BadRequest => StatusCode::BAD_REQUEST,
            Refusal::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
        }
    }

    pub(crate) fn code(self) -> &'static str {
        match self {
            Refusal::NoService => "no-service",
            Refusal::NoTargetGroup => "no-target-group",
            Refusal::NoHealthyTarget => "no-healthy-target",
            Refusal::ConnectFailed => "connect-failed",
            Refusal::TargetTls => "target-tls",
            Refusal::UpstreamFailed => "upstream-failed",
            Refusal::UpstreamTimeout => "upstream-timeout",
            Refusal::TargetDrained => "target-drained",
            Refusal::AuthDenied => "auth-denied",
            Refusal::BodyTooLarge => "body-too-large",
            Refusal::BadRequest => "bad-request",
            Refusal::RequestTimeout => "request-timeout",
            Refusal::TunnelRefused => "tunnel-refused",
            Refusal::GatewayUnreachable => "gateway-unreachable",
        }
    }

    fn response(self, detail: &str) -> Response<Body> {
        let mut r = Response::new(full(format!("{}: {detail}\n", self.code())));
        *r.status_mut() = self.status();
        r.headers_mut()
            .insert("x-trellis-error", HeaderValue::from_static(self.code()));
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        r
    }
}

fn full(s: String) -> Body {
    Full::new(Bytes::from(s))
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

pub(crate) fn empty() -> Body {
    Empty::new()
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

pub(crate) fn request_id() -> String {
    format!("{:016x}{:016x}", random() as u64, random() as u64)
}

/// Methods a retry cannot make happen twice (RFC 9110 9.2.2).
pub(crate) fn idempotent(m: &str) -> bool {
    matches!(m, "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE")
}

/// What the log line and the metrics need, filled in as the request goes.
pub(crate) struct Record {
    pub entry: Entry,
    pub start: Instant,
}

impl Record {
    /// The request is over: counted, timed and logged.
    pub(crate) fn done(mut self, proxy: &Proxy) {
        let elapsed = self.start.elapsed();
        self.entry.duration_ms = elapsed.as_secs_f64() * 1000.0;
        let m = &proxy.metrics;
        m.requests
            .get_or_create(&RequestLabels {
                service: self.entry.service.clone(),
                listener: self.entry.listener.clone(),
                target_group: self.entry.target_group.clone(),
                code: self.entry.status,
            })
            .inc();
        m.duration
            .get_or_create(&ServiceLabels {
                service: self.entry.service.clone(),
            })
            .observe(elapsed.as_secs_f64());
        if proxy.access_log.enabled() {
            self.entry.time = now_rfc3339();
            proxy.access_log.log(self.entry);
        }
    }
}

pub async fn handle(
    proxy: Arc<Proxy>,
    conn: Arc<Conn>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let mut req = req.map(BodyExt::boxed_unsync);
    let start = Instant::now();
    let config = proxy.config();
    let mut rec = Record {
        entry: Entry {
            kind: "http",
            request_id: request_id(),
            source_network: config.network.clone(),
            ..Entry::default()
        },
        start,
    };
    // Strings only the access log reads are made only when it is on.
    if proxy.access_log.enabled() {
        rec.entry.client = conn.client.to_string();
        rec.entry.method = req.method().to_string();
        rec.entry.path = req.uri().path().to_string();
    }
    let Some(listener) = config.listener(conn.dst.0).cloned() else {
        // The service went away while the connection was open.
        return Ok(refuse(
            &proxy,
            rec,
            Refusal::NoService,
            "the service no longer exists",
        ));
    };
    rec.entry.service = listener.service.clone();
    rec.entry.listener = listener.name.clone();

    // From here on every stage reads the canonical target and the one Host;
    // only the signature check reads what was sent (`sent`).
    let (method, uri, version) = (req.method(), req.uri(), req.version());
    let (path_and_query, host) =
        match canonical::request(method, uri, version, req.headers(), listener.paths) {
            Ok((Target::Origin(pq), host)) => (pq, host),
            Ok((Target::Asterisk, _)) => {
                let mut r = Response::new(empty());
                r.headers_mut()
                    .insert(http::header::ALLOW, HeaderValue::from_static(ALLOWED));
                return Ok(finish(&proxy, rec, r, None, None));
            }
            Err(e) => return Ok(refuse(&proxy, rec, Refusal::BadRequest, &e.to_string())),
        };
    // What the client signed, for the signature check (`Uri`'s parts are
    // shared bytes: the clone copies none).
    let sent = req.uri().clone();
    match Uri::try_from(path_and_query) {
        Ok(canonical) => *req.uri_mut() = canonical,
        Err(e) => return Ok(refuse(&proxy, rec, Refusal::BadRequest, &e.to_string())),
    }
    if proxy.access_log.enabled() {
        rec.entry.path = req.uri().path().to_string();
    }
    if let Some(host) = host {
        req.headers_mut().insert(http::header::HOST, host);
    }
    // hyper refuses a length list ("3, 3") itself; repeated lines, equal
    // or not, and both framings are refused here (and on the HTTP/1.1 path).
    let lengths = req
        .headers()
        .get_all(http::header::CONTENT_LENGTH)
        .iter()
        .count();
    if lengths > 1 {
        let detail = "more than one Content-Length";
        return Ok(refuse(&proxy, rec, Refusal::BadRequest, detail));
    }
    if lengths == 1 && req.headers().contains_key(http::header::TRANSFER_ENCODING) {
        let detail = "both Content-Length and Transfer-Encoding";
        return Ok(refuse(&proxy, rec, Refusal::BadRequest, detail));
    }

    headers::strip_reserved(req.headers_mut());
    // Auth comes first: no byte of a refused request reaches a target.
    let mut principal = None;
    if let Some(guard) = &listener.guard {
        match guard_request(&config, &listener, guard, &conn, &sent, req).await {
            Ok((r, p, allowed)) => {
                proxy.metrics.auth_decisions(&listener.service, "allow");
                req = r;
                if proxy.access_log.enabled() {
                    if let Some(p) = &p {
                        rec.entry.identity = p.names.first().cloned();
                    }
                    rec.entry.auth = Some(format!("allow {allowed}"));
                }
                principal = p;
            }
            Err(Denied {
                refusal,
                code,
                detail,
            }) => {
                proxy.metrics.auth_decisions(&listener.service, code);
                rec.entry.auth = Some(format!("deny {detail}"));
                return Ok(refuse(&proxy, rec, refusal, &detail));
            }
        }
    }
    let (rule, action) = listener.route(&RequestParts {
        method: req.method(),
        uri: req.uri(),
        headers: req.headers(),
    });
    rec.entry.rule = rule.clone();
    let split = match action {
        Action::Fixed(status) => {
            let mut r = Response::new(empty());
            *r.status_mut() = *status;
            return Ok(finish(&proxy, rec, r, None, None));
        }
        Action::Unroutable => {
            let detail = "the rule forwards nowhere";
            return Ok(refuse(&proxy, rec, Refusal::NoTargetGroup, detail));
        }
        Action::Forward(split) => split,
    };
    let group_name = split.pick().clone();
    rec.entry.target_group = group_name.clone();
    let Some(group) = config.groups.get(&group_name).cloned() else {
        let detail = format!("target group {group_name} is unknown here");
        return Ok(refuse(&proxy, rec, Refusal::NoTargetGroup, &detail));
    };

    // The tunnel to other networks carries requests, not upgraded connections.
    let upgrade = group.remote.is_none()
        && req.version() == Version::HTTP_11
        && headers::is_upgrade(req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers, upgrade);
    let region = &config.snapshot.region;
    let set = &mut |name, value: &str| headers::set(&mut parts.headers, name, value);
    connection_headers(&conn, &listener, &config.network, region, set);
    request_headers(
        &listener,
        region,
        &rec.entry.request_id,
        &group_name,
        principal.as_deref(),
        set,
    );
    let timeout = Duration::from_secs(u64::from(listener.timeouts.request_seconds.max(1)));
    if let Some(network) = &group.remote {
        let resp =
            through_gateway(&proxy, network, &group_name, parts, body, timeout, &mut rec).await;
        return Ok(match resp {
            Ok(resp) => finish(&proxy, rec, resp, None, None),
            Err((refusal, detail)) => refuse(&proxy, rec, refusal, &detail),
        });
    }
    let connect_timeout = Duration::from_millis(u64::from(listener.timeouts.connect_ms.max(1)));
    let clients = (&listener.http1, &listener.http2, connect_timeout);
    let sent = to_target(&proxy, clients, &group, parts, body, timeout, &mut rec).await;
    let (lease, mut resp) = match sent {
        Ok(ok) => ok,
        Err((refusal, detail)) => return Ok(refuse(&proxy, rec, refusal, &detail)),
    };
    let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    headers::strip_hop_by_hop(resp.headers_mut(), switching && upgrade);
    if switching {
        if let Some(client_upgrade) = client_upgrade {
            let target_upgrade = hyper::upgrade::on(&mut resp);
            let idle = Duration::from_secs(u64::from(listener.timeouts.idle_seconds.max(1)));
            tokio::spawn(upgraded(
                client_upgrade,
                target_upgrade,
                idle,
                lease,
                conn.id,
            ));
            let (parts, _) = resp.into_parts();
            return Ok(finish(
                &proxy,
                rec,
                Response::from_parts(parts, empty()),
                None,
                None,
            ));
        }
    }
    let (parts, body) = resp.into_parts();
    Ok(finish(
        &proxy,
        rec,
        Response::from_parts(parts, body.boxed_unsync()),
        None,
        Some(lease),
    ))
}

/// Sends a request to a target of `group` (of this network): a connect
/// failure of an idempotent request without a body is retried once on
/// another target. The target's in-flight count is held by the lease.
async fn to_target(
    proxy: &Proxy,
    (http1, http2_client, connect_timeout): (&HttpClient, &HttpClient, Duration),
    group: &Group,
    mut parts: http::request::Parts,
    body: Body,
    timeout: Duration,
    rec: &mut Record,
) -> Result<(Lease, Response<Incoming>), (Refusal, String)> {
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
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
            return Err((
                Refusal::TargetTls,
                format!("target group {}: {why}", group.name),
            ));
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
    let mut tried = None;
    let mut attempt = 0;
    let (lease, result) = loop {
        attempt += 1;
        let Some(target) = group.pick(tried) else {
            return Err((
                Refusal::NoHealthyTarget,
                format!("target group {} has no target to send to", group.name),
            ));
        };
        let lease = target.lease();
        if proxy.access_log.enabled() {
            rec.entry.target = target.addr.to_string();
        }
        let uri = Uri::try_from(format!(
            "{}://{}{path_and_query}",
            client.scheme(),
            target.addr
        ))
        .map_err(|e| (Refusal::UpstreamFailed, e.to_string()))?;
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
        let sent = tokio::select! {
            r = tokio::time::timeout(timeout, client.request(upstream)) => r,
            _ = lease.target().drained() => {
                return Err((Refusal::TargetDrained, "the target left its group and its drain time ran out".into()));
            }
        };
        match sent {
            Ok(Err(e))
                if e.is_connect() && retryable && attempt == 1 && group.targets.len() > 1 =>
            {
                tracing::debug!(target = %lease.target().addr, error = %e, "connect failed; retrying on another target");
                proxy.metrics.retries.inc();
                tried = Some(lease.target().addr);
            }
            other => break (lease, other),
        }
    };
    rec.entry.upstream_ms = rec.start.elapsed().as_secs_f64() * 1000.0;
    match result {
        Ok(Ok(resp)) => Ok((lease, resp)),
        Ok(Err(e))
            if malformed
                .as_ref()
                .is_some_and(|f| f.load(Ordering::Relaxed)) =>
        {
            Err((
                Refusal::BadRequest,
                format!("the request body is malformed: {}", error_chain(&e)),
            ))
        }
        Ok(Err(e)) => {
            let refusal = if tls_failed(&e) {
                Refusal::TargetTls
            } else if e.is_connect() {
                Refusal::ConnectFailed
            } else {
                Refusal::UpstreamFailed
            };
            Err((
                refusal,
                format!("{}: {}", lease.target().addr, error_chain(&e)),
            ))
        }
        Err(_) => Err((
            Refusal::UpstreamTimeout,
            format!(
                "no response from {} within {timeout:?}",
                lease.target().addr
            ),
        )),
    }
}

/// Sends a request for `group` of `network` through one of its gateways,
/// unless they last reported nothing healthy in it.
async fn through_gateway(
    proxy: &Proxy,
    network: &str,
    group: &str,
    mut parts: http::request::Parts,
    body: Body,
    timeout: Duration,
    rec: &mut Record,
) -> Result<Response<Body>, (Refusal, String)> {
    let Some(tunnels) = proxy.tunnels() else {
        return Err((
            Refusal::GatewayUnreachable,
            format!(
                "target group {group} is in network {network}, and this node has no identity to reach its gateways (start it with --join-token)"
            ),
        ));
    };
    if !tunnels.available(network, group) {
        return Err((
            Refusal::NoHealthyTarget,
            format!(
                "target group {group} in network {network} has no healthy target, as its gateways report"
            ),
        ));
    }
    if proxy.access_log.enabled() {
        rec.entry.target = format!("gateway:{network}");
    }
    headers::set(&mut parts.headers, crate::tunnel::GROUP_HEADER, group);
    let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    parts.uri = Uri::try_from(format!(
        "https://{}{path_and_query}",
        trellis_api::pki::server_name(network)
    ))
    .map_err(|e| (Refusal::UpstreamFailed, e.to_string()))?;
    parts.version = Version::HTTP_2;
    let req = Request::from_parts(parts, body);
    let sent = tokio::time::timeout(timeout, tunnels.send(network, req)).await;
    rec.entry.upstream_ms = rec.start.elapsed().as_secs_f64() * 1000.0;
    match sent {
        Ok(Ok(resp)) => {
            let (mut parts, body) = resp.into_parts();
            headers::strip_hop_by_hop(&mut parts.headers, false);
            Ok(Response::from_parts(parts, body.boxed_unsync()))
        }
        Ok(Err(e @ (TunnelError::NoGateway(_) | TunnelError::Unreachable { .. }))) => {
            Err((Refusal::GatewayUnreachable, e.to_string()))
        }
        Ok(Err(e)) => Err((Refusal::UpstreamFailed, e.to_string())),
        Err(_) => Err((
            Refusal::UpstreamTimeout,
            format!("no response through network {network}'s gateway within {timeout:?}"),
        )),
    }
}

/// A gateway's caller: the network its certificate names, and the clients
/// the gateway reaches its own targets with.
pub struct Peer {
    pub network: Arc<str>,
    pub addr: std::net::SocketAddr,
    pub http1: HttpClient,
    pub http2: HttpClient,
    pub request_timeout: Duration,
    /// For CONNECT streams (TCP listeners of other networks).
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
}

/// A request that came through the tunnel to this node's gateway. The
/// caller's network is the one its certificate names, never what a header
/// says; the service must be visible to that network and the target group
/// one of the service's groups here. Then it goes to a target like any
/// request, from this node's SNAT address.
pub async fn handle_tunnelled(
    proxy: Arc<Proxy>,
    peer: Arc<Peer>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let mut req = req.map(BodyExt::boxed_unsync);
    let config = proxy.config();
    if req.uri().path() == crate::tunnel::HEALTH_PATH {
        return Ok(health_report(&config, &peer.network));
    }
    let header = |h: &http::HeaderMap, name: &str| {
        h.get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let (claimed, service, group_name) = (
        header(req.headers(), "x-trellis-source-network"),
        header(req.headers(), "x-trellis-service"),
        header(req.headers(), crate::tunnel::GROUP_HEADER),
    );
    let mut rec = Record {
        entry: Entry {
            kind: "tunnel",
            request_id: header(req.headers(), "x-trellis-request-id"),
            source_network: peer.network.clone(),
            service: Arc::from(service.as_str()),
            target_group: Arc::from(group_name.as_str()),
            ..Entry::default()
        },
        start: Instant::now(),
    };
    if proxy.access_log.enabled() {
        rec.entry.client = peer.addr.to_string();
        rec.entry.method = req.method().to_string();
        rec.entry.path = req.uri().path().to_string();
        rec.entry.identity =
            Some(header(req.headers(), "x-trellis-identity")).filter(|i| !i.is_empty());
    }
    let refused = |rec, detail: String| Ok(refuse(&proxy, rec, Refusal::TunnelRefused, &detail));
    if *claimed != *peer.network {
        return refused(
            rec,
            format!(
                "the caller's certificate names network {}, the request claims {claimed:?}",
                peer.network
            ),
        );
    }
    let allowed = config
        .inbound
        .get(service.as_str())
        .is_some_and(|i| i.allows(&peer.network, &group_name));
    let group = config
        .groups
        .get(group_name.as_str())
        .filter(|g| g.remote.is_none());
    let (true, Some(group)) = (allowed, group) else {
        return refused(
            rec,
            format!(
                "network {} may not reach service {service:?} through target group {group_name:?} here",
                peer.network
            ),
        );
    };
    if req.method() == Method::CONNECT {
        return Ok(connect_target(&proxy, &peer, group, req, rec).await);
    }
    req.headers_mut().remove(crate::tunnel::GROUP_HEADER);
    headers::strip_hop_by_hop(req.headers_mut(), false);
    let (parts, body) = req.into_parts();
    let clients = (&peer.http1, &peer.http2, peer.connect_timeout);
    let sent = to_target(
        &proxy,
        clients,
        group,
        parts,
        body,
        peer.request_timeout,
        &mut rec,
    )
    .await;
    Ok(match sent {
        Ok((lease, resp)) => {
            let (mut parts, body) = resp.into_parts();
            headers::strip_hop_by_hop(&mut parts.headers, false);
            let resp = Response::from_parts(parts, body.boxed_unsync());
            finish(&proxy, rec, resp, None, Some(lease))
        }
        Err((refusal, detail)) => refuse(&proxy, rec, refusal, &detail),
    })
}

/// A CONNECT stream for a TCP listener of another network: a target of
/// `group` is connected from this node's SNAT address (the next one if the
/// connect fails), then the stream and the target are spliced.
async fn connect_target(
    proxy: &Arc<Proxy>,
    peer: &Peer,
    group: &Group,
    req: Request<Body>,
    mut rec: Record,
) -> Response<Body> {
    let upstream = proxy.clients.upstream();
    let mut tried = None;
    let (lease, stream) = loop {
        let Some(target) = group.pick(tried) else {
            let detail = format!("target group {} has no target to send to", group.name);
            return refuse(proxy, rec, Refusal::NoHealthyTarget, &detail);
        };
        let lease = target.lease();
        rec.entry.target = target.addr.to_string();
        match upstream.connect(target.addr, peer.connect_timeout).await {
            Ok(s) => break (lease, s),
            Err(_) if tried.is_none() && group.targets.len() > 1 => tried = Some(target.addr),
            Err(e) => {
                let detail = format!("{}: {e}", target.addr);
                return refuse(proxy, rec, Refusal::ConnectFailed, &detail);
            }
        }
    };
    rec.entry.upstream_ms = rec.start.elapsed().as_secs_f64() * 1000.0;
    let idle = peer.idle_timeout;
    tokio::spawn(async move {
        let Ok(upgraded) = hyper::upgrade::on(req).await else {
            return;
        };
        tokio::select! {
            r = crate::tcp::splice(hyper_util::rt::TokioIo::new(upgraded), stream, idle) => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "tunnelled TCP stream ended");
                }
            }
            _ = lease.target().drained() => {}
        }
    });
    finish(proxy, rec, Response::new(empty()), None, None)
}

/// The health of the groups `network` may reach through this gateway.
fn health_report(config: &Config, network: &str) -> Response<Body> {
    let mut report = std::collections::BTreeMap::new();
    for inbound in config.inbound.values() {
        if !inbound.networks.iter().any(|n| n == network) {
            continue;
        }
        for name in &inbound.groups {
            if let Some(g) = config.groups.get(name.as_str()) {
                let (healthy, unknown) = g.health_counts();
                let total = g.targets.len();
                report.insert(
                    name.clone(),
                    crate::tunnel::GroupHealth {
                        healthy,
                        unknown,
                        total,
                    },
                );
            }
        }
    }
    let mut r = Response::new(full(serde_json::to_string(&report).unwrap_or_default()));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// Checks a request against its service's auth: the signature (with the
/// body, when it is signed, buffered and compared with its hash) and then
/// the policies. Returns the request to forward, with its body buffered if
/// it had to be read, and who signed it.
async fn guard_request<'g>(
    config: &Config,
    listener: &Listener,
    guard: &'g Guard,
    conn: &Conn,
    sent: &Uri,
    req: Request<Body>,
) -> Result<(Request<Body>, Option<Arc<Principal>>, auth::Allowed<'g>), Denied> {
    let (parts, body) = req.into_parts();
    let wait = Duration::from_secs(u64::from(listener.timeouts.request_seconds.max(1)));
    let mut body = Some(body);
    let mut buffered = None;
    if auth::needs_body_first(&parts.headers) && body.as_ref().is_some_and(|b| !b.is_end_stream()) {
        buffered = Some(
            read_body(body.take(), wait)
                .await
                .map_err(Denied::reading)?,
        );
    }
    let body_sha = buffered.as_deref().map(sigv4::sha256_hex);
    let inbound = Inbound {
        method: &parts.method,
        path: parts.uri.path(),
        query: parts.uri.query(),
        signed_path: sent.path(),
        signed_query: sent.query(),
        headers: &parts.headers,
        authority: sent.authority().map(|a| a.as_str()),
        body_sha256: body_sha.as_deref(),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let denied = |f: sigv4::Failure| Denied {
        refusal: Refusal::AuthDenied,
        code: f.code,
        detail: format!("{}: {}", f.code, f.message),
    };
    let signed =
        auth::authenticate(&config.keys, &inbound, now.as_secs() as i64).map_err(denied)?;
    let place = Place {
        region: &config.snapshot.region,
        source_network: &config.network,
        service: &listener.service,
        service_network: &listener.service_network,
        client: conn.client,
        port: conn.dst.0.port(),
        now: now.as_secs(),
    };
    let statement =
        auth::authorize(guard, signed.principal.as_deref(), &inbound, &place).map_err(denied)?;
    if let Some(want) = &signed.body_hash {
        if buffered.is_none() {
            buffered = Some(
                read_body(body.take(), wait)
                    .await
                    .map_err(Denied::reading)?,
            );
        }
        let got = sigv4::sha256_hex(buffered.as_deref().unwrap_or_default());
        if got != *want {
            return Err(Denied {
                refusal: Refusal::AuthDenied,
                code: "XAmzContentSHA256Mismatch",
                detail: "XAmzContentSHA256Mismatch: the body does not match x-amz-content-sha256"
                    .into(),
            });
        }
    }
    let body = match (buffered, body) {
        (Some(b), _) => Full::new(b)
            .map_err(|never: Infallible| match never {})
            .boxed_unsync(),
        (None, Some(b)) => b,
        (None, None) => empty(),
    };
    Ok((
        Request::from_parts(parts, body),
        signed.principal,
        statement,
    ))
}

/// Why auth refused a request: the answer, the AWS-style code (a metric
/// label) and the reason for the client and the access log.
struct Denied {
    refusal: Refusal,
    code: &'static str,
    detail: String,
}

impl Denied {
    /// The body could not be read to check its hash.
    fn reading((refusal, detail): (Refusal, String)) -> Denied {
        Denied {
            refusal,
            code: refusal.code(),
            detail,
        }
    }
}

/// A request body, whole, up to [`auth::MAX_SIGNED_BODY`].
async fn read_body(body: Option<Body>, wait: Duration) -> Result<Bytes, (Refusal, String)> {
    let Some(body) = body else {
        return Ok(Bytes::new());
    };
    let limited = http_body_util::Limited::new(body, auth::MAX_SIGNED_BODY).collect();
    match tokio::time::timeout(wait, limited).await {
        Err(_) => Err((
            Refusal::RequestTimeout,
            format!("the request body did not arrive within {wait:?}"),
        )),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err((
            Refusal::BodyTooLarge,
            format!(
                "a body signed by its hash is buffered to check it, up to {} bytes",
                auth::MAX_SIGNED_BODY
            ),
        )),
        Ok(Err(e)) => Err((
            Refusal::BadRequest,
            format!("reading the request body: {e}"),
        )),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

/// Whether rustls is at the root of `e`: a target's handshake failed.
fn tls_failed(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(inner) = source {
        if inner.is::<rustls::Error>() {
            return true;
        }
        // An io::Error's source() skips what it wraps: look inside.
        let wrapped = inner
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref());
        if wrapped.is_some_and(|w| tls_failed(w)) {
            return true;
        }
        source = inner.source();
    }
    false
}

pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// The headers a target gets about the connection a request came on;
/// `set` writes one (replacing any of that name).
pub(crate) fn connection_headers(
    conn: &Conn,
    listener: &Listener,
    network: &str,
    region: &str,
    set: &mut dyn FnMut(&'static str, &str),
) {
    set("x-forwarded-for", &conn.client.ip().to_string());
    set("x-forwarded-for-port", &conn.client.port().to_string());
    let proto = match listener.protocol {
        trellis_api::resource::ListenerProtocol::Https => "https",
        _ => "http",
    };
    set("x-forwarded-for-proto", proto);
    set("x-trellis-source-network", network);
    set("x-trellis-service", &listener.service);
    if listener.lattice_compat {
        set(
            "x-amzn-lattice-network",
            &format!("SourceVpcArn=arn:aws:ec2:{region}:{LATTICE_ACCOUNT}:vpc/{network}"),
        );
    }
}

/// The headers a target gets about one request: its id, who signed it, and
/// with Lattice compatibility the group it went to.
pub(crate) fn request_headers(
    listener: &Listener,
    region: &str,
    request_id: &str,
    group: &str,
    principal: Option<&Principal>,
    set: &mut dyn FnMut(&'static str, &str),
) {
    set("x-trellis-request-id", request_id);
    let identity = principal.and_then(|p| p.names.first());
    if let Some(name) = identity {
        set("x-trellis-identity", name);
    }
    if listener.lattice_compat {
        set(
            "x-amzn-lattice-identity",
            &match identity {
                Some(name) => format!("Principal={name}; Type=Trellis::Identity"),
                None => "Type=Anonymous".to_string(),
            },
        );
        let arn = |kind: &str, name: &str| {
            format!("arn:aws:vpc-lattice:{region}:{LATTICE_ACCOUNT}:{kind}/{name}")
        };
        set(
            "x-amzn-lattice-target",
            &format!(
                "ServiceArn={};ServiceNetworkArn={};TargetGroupArn={}",
                arn("service", &listener.service),
                arn("servicenetwork", &listener.service_network),
                arn("targetgroup", group)
            ),
        );
    }
}

/// Trellis's own answer, with its reason, logged and counted like any.
fn refuse(proxy: &Arc<Proxy>, rec: Record, refusal: Refusal, detail: &str) -> Response<Body> {
    finish(proxy, rec, refusal.response(detail), Some(refusal), None)
}

/// Wraps the response body so the request is logged and counted when the
/// body ends (or the client goes away), with its size and full duration.
fn finish(
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

/// A switched (WebSocket) connection: bytes both ways until either side
/// closes or nothing moves for `idle`. No cap on its lifetime.
async fn upgraded(
    client: hyper::upgrade::OnUpgrade,
    target: hyper::upgrade::OnUpgrade,
    idle: Duration,
    lease: Lease,
    conn: u64,
) {
    let (client, target) = match tokio::try_join!(client, target) {
        Ok(both) => both,
        Err(e) => {
            tracing::debug!(conn, error = %e, "upgrade failed");
            return;
        }
    };
    let splice = crate::tcp::splice(
        hyper_util::rt::TokioIo::new(client),
        hyper_util::rt::TokioIo::new(target),
        idle,
    );
    tokio::select! {
        r = splice => if let Err(e) = r {
            tracing::debug!(conn, error = %e, "upgraded connection ended");
        },
        _ = lease.target().drained() => {
            tracing::debug!(conn, "upgraded connection cut: its target finished draining");
        }
    }
}
