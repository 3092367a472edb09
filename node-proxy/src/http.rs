//! One HTTP request: route it by the listener's rules, pick a target group
//! by weight and a target by health and load, forward it from the node's
//! SNAT address with the proxy's headers, and log it when its response
//! body ends. Trellis's own answers (no route, no healthy target, target
//! failed or too slow) carry `x-trellis-error` and a one-line reason.

use crate::canonical::{self, Target};
use crate::config::Action;
use crate::filters::{Cors, Edits};
use crate::forward::{Limits, through_gateway, to_target};
use crate::guard::{Denied, guard_request};
use crate::headers::{self, connection_headers, request_headers};
use crate::proxy::{Conn, Proxy};
use crate::record::{Record, finish, refuse};
use crate::refusal::Refusal;
use crate::route::RequestParts;
use crate::targets::Lease;
use crate::upstream::{Body, empty};
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

/// What `OPTIONS *` answers: the methods a service behind the proxy may take.
const ALLOWED: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";

pub async fn handle(
    proxy: Arc<Proxy>,
    conn: Arc<Conn>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    // gRPC clients read Trellis's refusals as gRPC statuses.
    let grpc = crate::refusal::is_grpc(req.headers());
    // The request's state is boxed once: hyper moves the future it gets
    // several times (into its stream, into a task), and each move copies
    // all of it (about 9 KB; 13% of an HTTP/2 proxy's CPU went to memmove).
    let resp = Box::pin(answer(proxy, conn, req)).await?;
    Ok(if grpc {
        crate::refusal::for_grpc(resp)
    } else {
        resp
    })
}

async fn answer(
    proxy: Arc<Proxy>,
    conn: Arc<Conn>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let mut req = req.map(BodyExt::boxed_unsync);
    let start = Instant::now();
    let config = proxy.config();
    let mut rec =
        Record::begin(&proxy, "http", config.network.clone(), conn.client, start).by(&proxy, &conn);
    rec.request(&proxy, req.method().as_str(), req.uri().path());
    let Some(listener) = config.listener(conn.dst.0).cloned() else {
        // The service went away while the connection was open.
        return Ok(refuse(
            &proxy,
            rec,
            Refusal::NoService,
            "the service no longer exists",
        ));
    };
    let mut rec = rec.on(&listener);

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
    // A browser's CORS preflight carries no credentials: the proxy answers
    // it before auth, from the rule's `cors` (nothing reaches a target).
    if Cors::is_preflight(req.method(), req.headers()) {
        let (rule, action) = listener.route(&RequestParts {
            method: req.method(),
            uri: req.uri(),
            headers: req.headers(),
        });
        if let Action::Forward(_, fwd) = action
            && let Some(cors) = &fwd.edits.cors
        {
            rec.entry.rule = rule.clone();
            let mut r = Response::new(empty());
            *r.status_mut() = StatusCode::NO_CONTENT;
            *r.headers_mut() = cors.preflight(req.headers());
            return Ok(finish(&proxy, rec, r, None, None));
        }
    }
    // Auth comes first: no byte of a refused request reaches a target.
    let mut caller = None;
    if let Some(guard) = &listener.guard {
        match guard_request(&config, &listener, guard, &conn, &sent, req).await {
            Ok((r, decided)) => {
                proxy
                    .metrics
                    .auth_decisions(&listener.service, "allow", decided.via);
                req = r;
                if proxy.access_log.enabled() {
                    if let Some(p) = &decided.principal {
                        rec.entry.identity = p.names.first().cloned();
                    }
                    rec.entry.authn = Some(decided.via);
                    rec.entry.auth = Some(format!("allow {}", decided.allowed));
                }
                caller = decided.principal.map(|p| (p, decided.via));
            }
            Err(Denied {
                refusal,
                code,
                detail,
                identity,
            }) => {
                proxy.metrics.auth_decisions(&listener.service, code, "");
                rec.entry.auth = Some(format!("deny {detail}"));
                rec.entry.identity = identity;
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
    let (split, fwd) = match action {
        Action::Fixed(status) => {
            let mut r = Response::new(empty());
            *r.status_mut() = *status;
            return Ok(finish(&proxy, rec, r, None, None));
        }
        Action::Redirect(redirect) => {
            let parts = RequestParts {
                method: req.method(),
                uri: req.uri(),
                headers: req.headers(),
            };
            let host = crate::route::RequestView::host(&parts);
            let location = redirect.location(host, req.uri().path(), req.uri().query());
            let Some(location) = location.and_then(|l| http::HeaderValue::from_str(&l).ok()) else {
                let detail = "no host to redirect to";
                return Ok(refuse(&proxy, rec, Refusal::BadRequest, detail));
            };
            let mut r = Response::new(empty());
            *r.status_mut() = redirect.status;
            r.headers_mut().insert(http::header::LOCATION, location);
            return Ok(finish(&proxy, rec, r, None, None));
        }
        Action::Unroutable => {
            let detail = "the rule forwards nowhere";
            return Ok(refuse(&proxy, rec, Refusal::NoTargetGroup, detail));
        }
        Action::Forward(split, fwd) => (split, fwd),
    };
    let edits = &fwd.edits;
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
    let origin = edits
        .cors
        .as_ref()
        .and_then(|_| req.headers().get(http::header::ORIGIN).cloned());
    let (mut parts, body) = req.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers, upgrade);
    // The rule's changes first: the proxy's own headers come after, and
    // the control plane refused rules that name them.
    if let Some(e) = &edits.request {
        e.apply(&mut parts.headers);
    }
    // After routing and auth, which read the request as the client sent it.
    if let Some(rw) = &edits.rewrite {
        rewrite(rw, &mut parts);
    }
    let region = &config.snapshot.region;
    let set = &mut |name, value: &str| headers::set(&mut parts.headers, name, value);
    connection_headers(&conn, &listener, &config.network, region, set);
    request_headers(
        &listener,
        region,
        &rec.entry.request_id,
        &group_name,
        caller.as_ref().map(|(p, via)| (&**p, *via)),
        set,
    );
    let timeout = fwd.policy.request.unwrap_or(listener.timeouts.request);
    let body = match &*fwd.policy.mirrors {
        [] => body,
        mirrors => crate::mirror::start(
            &proxy,
            &config,
            &listener,
            mirrors,
            &parts,
            conn.client,
            body,
        ),
    };
    if let Some(network) = &group.remote {
        let resp =
            through_gateway(&proxy, network, &group_name, parts, body, timeout, &mut rec).await;
        return Ok(match resp {
            Ok(mut resp) => {
                respond(edits, origin.as_ref(), resp.headers_mut());
                finish(&proxy, rec, resp, None, None)
            }
            Err(e) => refuse(&proxy, rec, e.refusal(), &e.to_string()),
        });
    }
    let connect_timeout = listener.timeouts.connect;
    let clients = (&listener.http1, &listener.http2, connect_timeout);
    let limits = Limits {
        total: timeout,
        per_try: fwd.policy.per_try,
        retry: fwd.policy.retry.as_ref(),
    };
    let sent = to_target(&proxy, clients, &group, parts, body, limits, &mut rec).await;
    let (lease, mut resp) = match sent {
        Ok(ok) => ok,
        Err(e) => return Ok(refuse(&proxy, rec, e.refusal(), &e.to_string())),
    };
    let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    headers::strip_hop_by_hop(resp.headers_mut(), switching && upgrade);
    respond(edits, origin.as_ref(), resp.headers_mut());
    if switching {
        if let Some(client_upgrade) = client_upgrade {
            let target_upgrade = hyper::upgrade::on(&mut resp);
            let idle = listener.timeouts.idle;
            proxy
                .streams
                .spawn(upgraded(client_upgrade, target_upgrade, idle, lease).in_current_span());
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

/// The rule's changes to a target's response: its header changes, then
/// the CORS grant for the request's `origin`.
fn respond(edits: &Edits, origin: Option<&HeaderValue>, headers: &mut http::HeaderMap) {
    if let Some(e) = &edits.response {
        e.apply(headers);
    }
    if let Some(c) = &edits.cors {
        c.mark(origin, headers);
    }
}

/// The host and path the target is sent, as the rule's rewrite says; the
/// query is kept.
fn rewrite(rw: &crate::filters::Rewrite, parts: &mut http::request::Parts) {
    if let Some(host) = &rw.host {
        parts.headers.insert(http::header::HOST, host.clone());
    }
    if let Some(p) = &rw.path {
        let path = p.apply(parts.uri.path());
        let target = match parts.uri.query() {
            Some(q) => format!("{path}?{q}"),
            None => path,
        };
        let mut uri = parts.uri.clone().into_parts();
        uri.path_and_query = target.parse().ok();
        if let Ok(u) = http::Uri::from_parts(uri) {
            parts.uri = u;
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
) {
    let (client, target) = match tokio::try_join!(client, target) {
        Ok(both) => both,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade failed");
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
            tracing::debug!(error = %e, "upgraded connection ended");
        },
        _ = lease.target().drained() => {
            tracing::debug!("upgraded connection cut: its target finished draining");
        }
    }
}
