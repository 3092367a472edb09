//! TCP listeners: each connection goes, whole, to one target of a group
//! picked by weight (the listener's default action), with the same health
//! rules as HTTP; bytes are spliced both ways until either side closes or
//! nothing moves for the idle timeout.

use crate::access_log::Entry;
use crate::config::{Action, Listener};
use crate::forward::{Attempts, ForwardError};
use crate::proxy::{Conn, Proxy};
use crate::record::Record;
use crate::refusal::Refusal;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

const BUF: usize = 16 * 1024;

/// Copies both ways; returns (bytes a to b, bytes b to a). Ends when both
/// sides have closed (each close is passed on as a shutdown), or with
/// `TimedOut` after `idle` with no byte either way.
pub async fn splice<A, B>(a: A, b: B, idle: Duration) -> std::io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut ar, mut aw) = tokio::io::split(a);
    let (mut br, mut bw) = tokio::io::split(b);
    let (mut abuf, mut bbuf) = (vec![0u8; BUF], vec![0u8; BUF]);
    let (mut a_open, mut b_open) = (true, true);
    let (mut a_to_b, mut b_to_a) = (0u64, 0u64);
    while a_open || b_open {
        tokio::select! {
            r = ar.read(&mut abuf), if a_open => {
                let n = r?;
                if n == 0 {
                    a_open = false;
                    let _ = bw.shutdown().await;
                } else {
                    bw.write_all(&abuf[..n]).await?;
                    a_to_b += n as u64;
                }
            }
            r = br.read(&mut bbuf), if b_open => {
                let n = r?;
                if n == 0 {
                    b_open = false;
                    let _ = aw.shutdown().await;
                } else {
                    aw.write_all(&bbuf[..n]).await?;
                    b_to_a += n as u64;
                }
            }
            _ = tokio::time::sleep(idle) => {
                return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, format!("idle for {idle:?}")));
            }
        }
    }
    Ok((a_to_b, b_to_a))
}

/// What a connection is sent on with: the rule that chose it and the bytes
/// already read from the client (a passthrough listener's ClientHello),
/// which the target gets first.
pub struct Routed<'a> {
    pub rule: &'a Arc<str>,
    pub action: &'a Action,
    pub replay: Vec<u8>,
}

pub async fn forward(
    proxy: &Arc<Proxy>,
    conn: &Conn,
    listener: &Arc<Listener>,
    routed: Routed<'_>,
    client: TcpStream,
    shutdown: CancellationToken,
    drain: Duration,
) {
    let start = Instant::now();
    let config = proxy.config();
    let mut rec = Record::begin(proxy, "tcp", config.network.clone(), conn.client, start)
        .by(proxy, conn)
        .on(listener);
    rec.entry.rule = routed.rule.clone();
    let log = |rec: Record, error: Option<&'static str>| rec.closed(proxy, error);
    if let Some(guard) = &listener.guard {
        match crate::guard::decide_stream(&config, listener, guard, conn) {
            Ok(decided) => {
                proxy
                    .metrics
                    .auth_decisions(&listener.service, "allow", decided.via);
                rec.entry.identity = decided.principal.and_then(|p| p.names.first().cloned());
                rec.entry.authn = Some(decided.via);
                rec.entry.auth = Some(format!("allow {}", decided.allowed));
            }
            Err(denied) => {
                proxy
                    .metrics
                    .auth_decisions(&listener.service, denied.code, "");
                tracing::debug!(detail = denied.detail, "stream refused by auth");
                rec.entry.auth = Some(format!("deny {}", denied.detail));
                return log(rec, Some(denied.refusal.code()));
            }
        }
    }
    let no_group = Some(Refusal::NoTargetGroup.code());
    let Action::Forward(split, _) = routed.action else {
        return log(rec, no_group);
    };
    let name = split.pick().clone();
    rec.entry.target_group = name.clone();
    let Some(group) = config.groups.get(&name).cloned() else {
        return log(rec, no_group);
    };
    let idle = listener.timeouts.idle;
    let stopping = async {
        shutdown.cancelled().await;
        tokio::time::sleep(drain).await;
    };
    if let Some(network) = &group.remote {
        rec.entry.target = format!("gateway:{network}");
        let timeout = listener.timeouts.connect;
        let mut stream = match through_gateway(proxy, conn, listener, network, &name, timeout).await
        {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "no stream through the gateway");
                return log(rec, Some(e.refusal().code()));
            }
        };
        if stream.write_all(&routed.replay).await.is_err() {
            return log(rec, Some(Refusal::GatewayUnreachable.code()));
        }
        rec.entry.upstream_ms = start.elapsed().as_secs_f64() * 1000.0;
        let error = relay(
            client,
            stream,
            idle,
            std::future::pending(),
            stopping,
            &mut rec.entry,
        )
        .await;
        return log(rec, error);
    }
    let connect_timeout = listener.timeouts.connect;
    let upstream = proxy.clients.upstream();
    // A failed connect is retried once on another target: nothing was sent yet.
    let mut attempts = Attempts::new(&group, true);
    let (lease, stream) = loop {
        let (target, lease) = match attempts.next() {
            Ok(next) => next,
            Err(e) => return log(rec, Some(e.refusal().code())),
        };
        let addr = target.addr;
        rec.entry.target = addr.to_string();
        let failed = match upstream.connect(addr, connect_timeout).await {
            Ok(mut s) => match s.write_all(&routed.replay).await {
                Ok(()) => {
                    crate::forward::observe(proxy, &group, target, true);
                    break (lease, s);
                }
                Err(source) => {
                    tracing::debug!(target = %addr, error = %source, "target closed at once");
                    return log(rec, Some(Refusal::ConnectFailed.code()));
                }
            },
            Err(source) => {
                crate::forward::observe(proxy, &group, target, false);
                ForwardError::Connect { addr, source }
            }
        };
        if let Err(e) = attempts.retry(proxy, failed) {
            tracing::debug!(error = %e, "connect failed");
            return log(rec, Some(e.refusal().code()));
        }
    };
    rec.entry.upstream_ms = start.elapsed().as_secs_f64() * 1000.0;
    let error = relay(
        client,
        stream,
        idle,
        lease.target().drained(),
        stopping,
        &mut rec.entry,
    )
    .await;
    log(rec, error)
}

/// Splices until either side is done, the target drains or the proxy
/// stops; the reason it ended, if not a clean close.
async fn relay<S>(
    client: TcpStream,
    stream: S,
    idle: Duration,
    drained: impl std::future::Future<Output = ()>,
    stopping: impl std::future::Future<Output = ()>,
    entry: &mut Entry,
) -> Option<&'static str>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    tokio::select! {
        r = splice(client, stream, idle) => match r {
            Ok((sent, received)) => {
                entry.bytes_sent = sent;
                entry.bytes_received = received;
                None
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => Some("idle-timeout"),
            Err(_) => Some("reset"),
        },
        _ = drained => Some("target-drained"),
        _ = stopping => Some("proxy-stopped"),
    }
}

/// A stream to a target of `group` in `network`: an HTTP/2 CONNECT stream
/// through one of its gateways.
async fn through_gateway(
    proxy: &Proxy,
    conn: &Conn,
    listener: &Listener,
    network: &str,
    group: &str,
    timeout: Duration,
) -> Result<TokioIo<hyper::upgrade::Upgraded>, ForwardError> {
    use crate::tunnel::{GROUP_HEADER, TunnelError};
    let tunnels = crate::forward::gateways(proxy, network, group)?;
    let req = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(format!(
            "{}:{}",
            trellis_api::pki::server_name(network),
            conn.dst.0.port()
        ))
        .header("x-trellis-source-network", &*proxy.config().network)
        .header("x-trellis-service", &*listener.service)
        .header("x-forwarded-for", conn.client.ip().to_string())
        .header(GROUP_HEADER, group)
        .body(crate::upstream::empty())
        .map_err(|e| TunnelError::Request(e.to_string()))?;
    let resp = tokio::time::timeout(timeout * 2, tunnels.send(network, req))
        .await
        .map_err(|_| ForwardError::GatewayTimeout {
            network: network.to_string(),
            after: timeout * 2,
        })??;
    match resp.status() {
        s if s.is_success() => {}
        http::StatusCode::FORBIDDEN => return Err(ForwardError::TunnelRefused(network.into())),
        http::StatusCode::SERVICE_UNAVAILABLE => {
            return Err(ForwardError::RemoteUnavailable {
                group: group.to_string(),
                network: network.to_string(),
            });
        }
        s => return Err(TunnelError::Request(format!("the gateway answered {s}")).into()),
    }
    hyper::upgrade::on(resp)
        .await
        .map(TokioIo::new)
        .map_err(|e| TunnelError::Request(e.to_string()).into())
}
