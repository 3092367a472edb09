//! The proxy's Prometheus metrics (prometheus-client), plus target health
//! rendered from the live config at scrape time.

use crate::config::Config;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::fmt::Write;
use std::sync::Arc;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub service: Arc<str>,
    pub listener: Arc<str>,
    pub target_group: Arc<str>,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    pub service: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtocolLabels {
    pub protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthLabels {
    pub service: Arc<str>,
    /// `allow`, or why not: an AWS-style code (`InvalidSignatureException`,
    /// `AccessDeniedException`, ...) or a refusal reason.
    pub outcome: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub auth: Family<AuthLabels, Counter>,
    pub requests: Family<RequestLabels, Counter>,
    pub duration: Family<ServiceLabels, Histogram>,
    pub active: Family<ProtocolLabels, Gauge>,
    pub connections: Family<ProtocolLabels, Counter>,
    pub refused: Family<ReasonLabels, Counter>,
    pub retries: Counter,
    pub handovers: Family<ReasonLabels, Counter>,
}

fn latency_buckets() -> Histogram {
    // 0.5 ms to ~30 s.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.0005, 2.0, 17,
    ))
}

impl Default for Metrics {
    fn default() -> Metrics {
        let mut registry = Registry::with_prefix("trellis_proxy");
        let requests = Family::<RequestLabels, Counter>::default();
        let duration = Family::<ServiceLabels, Histogram>::new_with_constructor(
            latency_buckets as fn() -> Histogram,
        );
        let active = Family::<ProtocolLabels, Gauge>::default();
        let connections = Family::<ProtocolLabels, Counter>::default();
        let refused = Family::<ReasonLabels, Counter>::default();
        let retries = Counter::default();
        let handovers = Family::<ReasonLabels, Counter>::default();
        let auth = Family::<AuthLabels, Counter>::default();
        registry.register(
            "auth_decisions",
            "Requests to SIGV4 services, by service and outcome (allow, or the refusal's code)",
            auth.clone(),
        );
        registry.register(
            "requests",
            "HTTP requests answered, by service, listener, target group and status",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from request to the end of the response body",
            duration.clone(),
        );
        registry.register(
            "active_connections",
            "Client connections open now",
            active.clone(),
        );
        registry.register(
            "connections",
            "Client connections accepted",
            connections.clone(),
        );
        registry.register(
            "refused_connections",
            "Connections closed at once, by reason",
            refused.clone(),
        );
        registry.register(
            "retries",
            "Requests sent again: on another target after a connect failure, or on a new connection when a kept one was closed",
            retries.clone(),
        );
        registry.register(
            "http_handovers",
            "HTTP connections the HTTP/1.1 path handed to hyper, by the first request's reason",
            handovers.clone(),
        );
        Metrics {
            registry,
            auth,
            requests,
            duration,
            active,
            connections,
            refused,
            retries,
            handovers,
        }
    }
}

impl Metrics {
    pub fn auth_decisions(&self, service: &Arc<str>, outcome: &'static str) {
        self.auth
            .get_or_create(&AuthLabels {
                service: service.clone(),
                outcome,
            })
            .inc();
    }

    /// The text exposition, with target health from `config`.
    pub fn render(&self, config: &Config) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode_registry(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out.push_str(
            "# HELP trellis_target_healthy Whether a target is healthy (1), unhealthy (0) or not checked yet (-1).\n\
             # TYPE trellis_target_healthy gauge\n",
        );
        let mut groups: Vec<_> = config.groups.values().collect();
        groups.sort_by(|a, b| a.name.cmp(&b.name));
        for g in groups {
            for t in &g.targets {
                let v = match t.health() {
                    crate::targets::Health::Healthy => 1,
                    crate::targets::Health::Unhealthy => 0,
                    crate::targets::Health::Unknown => -1,
                };
                let _ = writeln!(
                    out,
                    "trellis_target_healthy{{target_group=\"{}\",target=\"{}\"}} {v}",
                    g.name, t.addr
                );
            }
        }
        out.push_str(
            "# HELP trellis_tls_certificate_expiry_days Days until an HTTPS listener's certificate expires.\n\
             # TYPE trellis_tls_certificate_expiry_days gauge\n",
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let mut tls: Vec<_> = config
            .each_listener()
            .filter_map(|l| Some((l, l.tls.as_ref()?)))
            .collect();
        tls.sort_by(|a, b| (&a.0.service, &a.0.name).cmp(&(&b.0.service, &b.0.name)));
        for (l, t) in tls {
            for (subject, not_after) in &t.expiry {
                let subject = subject.replace(['\\', '"'], "_");
                let _ = writeln!(
                    out,
                    "trellis_tls_certificate_expiry_days{{service=\"{}\",listener=\"{}\",subject=\"{subject}\"}} {:.3}",
                    l.service,
                    l.name,
                    (*not_after as f64 - now) / 86_400.0
                );
            }
        }
        out
    }
}
