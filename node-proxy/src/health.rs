//! Active health checks: one task per target of every group with checks
//! enabled, restarted when the group's check settings change.
//!
//! A new target is `unknown` and checked at once. unknown -> healthy on the
//! first pass (so a target that is up gets traffic within one check rather
//! than `healthyThreshold` intervals); unknown -> unhealthy after
//! `unhealthyThreshold` failures in a row; healthy -> unhealthy after
//! `unhealthyThreshold` failures in a row; unhealthy -> healthy after
//! `healthyThreshold` passes in a row. A check fails on a connect error, a
//! timeout (`timeoutSeconds`) or, for HTTP, a status outside the matcher;
//! for HTTPS also on a TLS handshake that does not verify the target as
//! requests to it do.

use crate::socket::Upstream;
use crate::targets::{Group, Health, Target};
use crate::upstream::TargetTls;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use trellis_api::resource::{HealthCheck, HealthCheckProtocol, ProtocolVersion, TargetProtocol};

/// Status codes that pass: "200", "200,204", "200-299".
#[derive(Clone, Debug, PartialEq)]
pub struct Codes(Vec<(u16, u16)>);

impl Codes {
    pub fn parse(s: &str) -> Codes {
        let ranges = s
            .split(',')
            .filter_map(|part| {
                let part = part.trim();
                let (lo, hi) = part.split_once('-').unwrap_or((part, part));
                Some((lo.trim().parse().ok()?, hi.trim().parse().ok()?))
            })
            .collect::<Vec<_>>();
        if ranges.is_empty() {
            Codes(vec![(200, 200)])
        } else {
            Codes(ranges)
        }
    }

    pub fn contains(&self, code: StatusCode) -> bool {
        let c = code.as_u16();
        self.0.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c))
    }
}

#[derive(Clone, Debug, PartialEq)]
struct Plan {
    protocol: HealthCheckProtocol,
    http2: bool,
    path: String,
    port: Option<u16>,
    interval: Duration,
    timeout: Duration,
    healthy: u32,
    unhealthy: u32,
    codes: Codes,
    /// HTTPS checks: the group's TLS to its targets.
    tls: Result<Option<Arc<TargetTls>>, Arc<str>>,
}

impl Plan {
    fn of(group: &Group) -> Plan {
        let hc: &HealthCheck = &group.health_check;
        Plan {
            protocol: hc.protocol.unwrap_or(match group.protocol {
                TargetProtocol::Http => HealthCheckProtocol::Http,
                TargetProtocol::Https => HealthCheckProtocol::Https,
                TargetProtocol::Tcp => HealthCheckProtocol::Tcp,
            }),
            http2: group.version != ProtocolVersion::Http1,
            path: hc.path.clone(),
            port: hc.port,
            interval: Duration::from_secs(u64::from(hc.interval_seconds.max(1))),
            timeout: Duration::from_secs(u64::from(hc.timeout_seconds.max(1))),
            healthy: hc.healthy_threshold.max(1),
            unhealthy: hc.unhealthy_threshold.max(1),
            codes: Codes::parse(&hc.matcher.http_code),
            tls: group.tls.clone(),
        }
    }
}

/// A target's running check: what it checks and its task.
type Running = (Plan, Arc<Target>, JoinHandle<()>);

/// The running checks, by (group, target), reconciled with each snapshot.
#[derive(Default)]
pub struct Checks {
    running: HashMap<(Arc<str>, SocketAddr), Running>,
}

impl Checks {
    pub fn reconcile(&mut self, groups: &HashMap<Arc<str>, Arc<Group>>, upstream: Upstream) {
        let mut wanted = HashMap::new();
        for group in groups.values().filter(|g| g.health_check.enabled) {
            let plan = Plan::of(group);
            for t in &group.targets {
                wanted.insert((group.name.clone(), t.addr), (plan.clone(), t.clone()));
            }
        }
        self.running.retain(|key, (plan, target, task)| {
            let keep = wanted
                .get(key)
                .is_some_and(|(p, t)| p == plan && Arc::ptr_eq(t, target));
            if !keep {
                task.abort();
            }
            keep
        });
        for (key, (plan, target)) in wanted {
            if self.running.contains_key(&key) {
                continue;
            }
            let task = tokio::spawn(run(key.0.clone(), plan.clone(), target.clone(), upstream));
            self.running.insert(key, (plan, target, task));
        }
    }
}

impl Drop for Checks {
    fn drop(&mut self) {
        for (_, _, task) in self.running.values() {
            task.abort();
        }
    }
}

async fn run(group: Arc<str>, plan: Plan, target: Arc<Target>, upstream: Upstream) {
    let (mut passes, mut failures) = (0u32, 0u32);
    loop {
        let result = tokio::time::timeout(plan.timeout, check(&plan, target.addr, upstream))
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {:?}", plan.timeout)));
        let before = target.health();
        let after = match &result {
            Ok(()) => {
                passes += 1;
                failures = 0;
                match before {
                    Health::Unknown => Health::Healthy,
                    Health::Unhealthy if passes >= plan.healthy => Health::Healthy,
                    h => h,
                }
            }
            Err(_) => {
                failures += 1;
                passes = 0;
                if failures >= plan.unhealthy {
                    Health::Unhealthy
                } else {
                    before
                }
            }
        };
        if after != before {
            target.set_health(after);
            match &result {
                Ok(()) => {
                    tracing::info!(%group, target = %target.addr, health = after.as_str(), "target health changed")
                }
                Err(reason) => {
                    tracing::warn!(%group, target = %target.addr, health = after.as_str(), reason, "target health changed")
                }
            }
        }
        tokio::time::sleep(plan.interval).await;
    }
}

async fn check(plan: &Plan, addr: SocketAddr, upstream: Upstream) -> Result<(), String> {
    let to = SocketAddr::new(addr.ip(), plan.port.unwrap_or(addr.port()));
    let stream = upstream
        .connect(to, plan.timeout)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    match plan.protocol {
        // The connect is the check.
        HealthCheckProtocol::Tcp => Ok(()),
        HealthCheckProtocol::Http => ask(plan, to, stream).await,
        HealthCheckProtocol::Https => {
            let tls = match &plan.tls {
                Ok(Some(tls)) => tls,
                Ok(None) => return Err("HTTPS check of a group without TLS settings".into()),
                Err(why) => return Err(why.to_string()),
            };
            let stream = tls
                .handshake(stream, to.ip())
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            ask(plan, to, stream).await
        }
    }
}

/// One HTTP request on `io`; passes when the status is in the matcher.
async fn ask<IO>(plan: &Plan, to: SocketAddr, io: IO) -> Result<(), String>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let request = Request::get(plan.path.as_str())
        .header(http::header::HOST, to.to_string())
        .header(http::header::USER_AGENT, "trellis-health-check")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let io = TokioIo::new(io);
    let status = if plan.http2 {
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        send.send_request(request)
            .await
            .map_err(|e| e.to_string())?
            .status()
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        send.send_request(request)
            .await
            .map_err(|e| e.to_string())?
            .status()
    };
    if plan.codes.contains(status) {
        Ok(())
    } else {
        Err(format!("status {status}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matcher_codes() {
        let c = Codes::parse("200,204, 300-302");
        for (code, ok) in [
            (200, true),
            (204, true),
            (301, true),
            (201, false),
            (303, false),
        ] {
            assert_eq!(
                c.contains(StatusCode::from_u16(code).unwrap()),
                ok,
                "{code}"
            );
        }
        assert_eq!(Codes::parse("junk"), Codes(vec![(200, 200)]));
    }
}
