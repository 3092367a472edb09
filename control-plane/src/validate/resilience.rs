//! Checks of what the Gateway API brought to rules besides the Lattice
//! ones: gRPC matches; what a route does on failure and what it copies
//! (mirrors, per-route timeouts, retries); a target group's outlier
//! detection.

use super::Validator;
use trellis_api::Kind;
use trellis_api::resilience::{OutlierDetection, Retry};
use trellis_api::resource::{
    Action, GrpcMatch, GrpcMatchType, ListenerProtocol, Spec, TargetProtocol,
};

pub const MAX_MIRRORS: usize = 4;
pub const MAX_RETRIES: u32 = 5;
/// An hour: longer waits are the listener's `requestSeconds` business.
pub const MAX_ROUTE_TIMEOUT_MS: u32 = 3_600_000;

impl Validator<'_> {
    /// `mirrors`, `timeouts` and `retry` of the action at `path`.
    pub(super) fn route_policy(&mut self, protocol: ListenerProtocol, a: &Action, path: &str) {
        let forwards = a.forward.is_some() && protocol.is_http();
        for (field, set, what) in [
            ("mirrors", !a.mirrors.is_empty(), "mirrors go"),
            ("timeouts", a.timeouts.is_some(), "timeouts go"),
            ("retry", a.retry.is_some(), "a retry goes"),
        ] {
            if set && !forwards {
                self.problem(
                    format!("{path}.{field}"),
                    format!("{what} with forward, on HTTP and HTTPS listeners"),
                );
            }
        }
        if !forwards {
            return;
        }
        self.mirrors(a, path);
        if let Some(t) = &a.timeouts {
            let tp = format!("{path}.timeouts");
            for (field, v) in [("requestMs", t.request_ms), ("perTryMs", t.per_try_ms)] {
                if v.is_some_and(|ms| !(1..=MAX_ROUTE_TIMEOUT_MS).contains(&ms)) {
                    self.problem(
                        format!("{tp}.{field}"),
                        format!("out of range 1..={MAX_ROUTE_TIMEOUT_MS}"),
                    );
                }
            }
            if let (Some(req), Some(try_)) = (t.request_ms, t.per_try_ms) {
                if try_ > req {
                    self.problem(
                        format!("{tp}.perTryMs"),
                        format!("{try_} is longer than requestMs ({req}): no try could use it"),
                    );
                }
            }
            if t.request_ms.is_none() && t.per_try_ms.is_none() {
                self.problem(tp, "set requestMs, perTryMs or both");
            }
        }
        if let Some(r) = &a.retry {
            self.retry(r, &format!("{path}.retry"));
        }
    }

    fn mirrors(&mut self, a: &Action, path: &str) {
        if a.mirrors.len() > MAX_MIRRORS {
            self.too_many(&format!("{path}.mirrors"), a.mirrors.len(), MAX_MIRRORS);
        }
        for (i, m) in a.mirrors.iter().enumerate() {
            let mp = format!("{path}.mirrors[{i}]");
            if m.percent > 100 {
                self.problem(
                    format!("{mp}.percent"),
                    format!("{} is out of range 0..=100", m.percent),
                );
            }
            let forwarded = a.forward.iter().flatten();
            if forwarded.clone().any(|w| w.target_group == m.target_group) {
                // Its targets would take each request twice.
                self.problem(
                    format!("{mp}.targetGroup"),
                    format!(
                        "the rule forwards to \"{}\" already; a mirror goes elsewhere",
                        m.target_group
                    ),
                );
                continue;
            }
            if a.mirrors[..i]
                .iter()
                .any(|o| o.target_group == m.target_group)
            {
                self.problem(
                    format!("{mp}.targetGroup"),
                    format!("target group \"{}\" is mirrored to twice", m.target_group),
                );
            }
            let key = (Kind::TargetGroup, m.target_group.clone());
            match self.objects.get(&key).map(|o| &o.resource.spec) {
                Some(Spec::TargetGroup(tg)) if tg.protocol == TargetProtocol::Tcp => self.problem(
                    format!("{mp}.targetGroup"),
                    format!(
                        "target group \"{}\" speaks TCP; only HTTP requests are mirrored",
                        m.target_group
                    ),
                ),
                Some(_) => {}
                None => self.reference(
                    format!("{mp}.targetGroup"),
                    Kind::TargetGroup,
                    &m.target_group,
                ),
            }
        }
    }

    fn retry(&mut self, r: &Retry, path: &str) {
        if !(1..=MAX_RETRIES).contains(&r.attempts) {
            self.problem(
                format!("{path}.attempts"),
                format!("{} is out of range 1..={MAX_RETRIES}", r.attempts),
            );
        }
        if r.on.is_empty() && r.codes.is_empty() {
            self.problem(
                path,
                "name what is retried: `on` (connectFailure, reset, timeout, 5xx, gatewayError) or `codes`",
            );
        }
        for (i, c) in r.codes.iter().enumerate() {
            if !(400..=599).contains(c) {
                self.problem(
                    format!("{path}.codes[{i}]"),
                    format!("{c} is out of range 400..=599"),
                );
            }
        }
        if !(1..=10_000).contains(&r.backoff_ms) {
            self.problem(
                format!("{path}.backoffMs"),
                format!("{} is out of range 1..=10000", r.backoff_ms),
            );
        }
        if r.budget_percent > 100 {
            self.problem(
                format!("{path}.budgetPercent"),
                format!("{} is out of range 0..=100", r.budget_percent),
            );
        }
    }

    pub(super) fn outlier_detection(&mut self, o: &OutlierDetection) {
        let ranges = [
            ("consecutiveFailures", o.consecutive_failures, 1, 1000),
            ("baseEjectionSeconds", o.base_ejection_seconds, 1, 3600),
            ("maxEjectedPercent", o.max_ejected_percent, 0, 100),
        ];
        for (field, value, lo, hi) in ranges {
            if !(lo..=hi).contains(&value) {
                self.problem(
                    format!("spec.outlierDetection.{field}"),
                    format!("{value} is out of range {lo}..={hi}"),
                );
            }
        }
    }

    pub(super) fn grpc_match(&mut self, g: &GrpcMatch, with_path: bool, path: &str) {
        if with_path {
            self.problem(path, "grpc is a path condition: not with path");
        }
        if g.service.is_none() && g.method.is_none() {
            self.problem(path, "set service, method or both");
        }
        for (field, value, dots) in [("service", &g.service, true), ("method", &g.method, false)] {
            let Some(v) = value else { continue };
            let fp = format!("{path}.{field}");
            match g.kind {
                GrpcMatchType::Exact => {
                    // protobuf names: letters, digits, `_`; a service is
                    // qualified by its package with dots.
                    let ok = !v.is_empty()
                        && v.len() <= 1024
                        && !v.starts_with(|c: char| c.is_ascii_digit() || c == '.')
                        && !v.ends_with('.')
                        && !v.contains("..")
                        && v.chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || (dots && c == '.'));
                    if !ok {
                        let what = if dots {
                            "a gRPC service such as shop.v1.Orders"
                        } else {
                            "a gRPC method such as GetOrder"
                        };
                        self.problem(fp, format!("\"{v}\" is not {what}"));
                    }
                }
                GrpcMatchType::RegularExpression => {
                    // Each on its own, so the error names its field.
                    let alone = GrpcMatch {
                        service: dots.then(|| v.clone()),
                        method: (!dots).then(|| v.clone()),
                        kind: g.kind,
                    };
                    if let Some(Err(why)) = alone.compiled() {
                        self.problem(fp, format!("invalid regex: {why}"));
                    }
                }
            }
        }
    }
}
