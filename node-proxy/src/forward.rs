//! Sending a request on: to a target of a group of this network (picked by
//! health and load, a failed connect retried once elsewhere when the
//! request may be sent again), or through a gateway of the group's network.

use crate::headers;
use crate::proxy::Proxy;
use crate::record::Record;
use crate::refusal::Refusal;
use crate::targets::{Group, Lease};
use crate::tunnel::TunnelError;
use crate::upstream::{Body, HttpClient, TargetClient, empty, error_chain, tls_failed};
use http::{Request, Response, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Incoming};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Methods a retry cannot make happen twice (RFC 9110 9.2.2).
pub(crate) fn idempotent(m: &str) -> bool {
    matches!(m, "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE")
}

/// Sends a request to a target of `group` (of this network): a connect
/// failure of an idempotent request without a body is retried once on
/// another target. The target's in-flight count is held by the lease.
pub(crate) async fn to_target(
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
pub(crate) async fn through_gateway(
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
