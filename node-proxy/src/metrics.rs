//! The node's Prometheus metrics, all through one prometheus-client
//! registry: counters and histograms the proxy updates as it goes, and
//! [`Live`] metrics read when scraped (target health and certificate expiry
//! from the live config, counts other parts keep).

use crate::config::Config;
use crate::traffic::{Exposed, RequestCounts};
use arc_swap::ArcSwap;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::{Arc, Mutex};

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
pub struct GroupLabels {
    pub target_group: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MirrorLabels {
    pub target_group: Arc<str>,
    /// `answered` (any status), `failed` (no answer), `skipped` (too many
    /// copies in flight).
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthLabels {
    pub service: Arc<str>,
    /// `allow`, or why not: an AWS-style code (`InvalidSignatureException`,
    /// `AccessDeniedException`, ...) or a refusal reason.
    pub outcome: &'static str,
    /// How an allowed caller was known: `sigv4`, `sigv4a`, `workload`,
    /// `anonymous`; empty for a refusal.
    pub authn: &'static str,
}

pub struct Metrics {
    /// Unprefixed; the proxy's own counters are in its `trellis_proxy`
    /// sub-registry. Live metrics may be added after start (the node's
    /// certificate), hence the lock, taken only to add and to scrape.
    registry: Mutex<Registry>,
    pub auth: Family<AuthLabels, Counter>,
    pub requests: Arc<RequestCounts>,
    pub duration: Family<ServiceLabels, Histogram>,
    pub active: Family<ProtocolLabels, Gauge>,
    pub connections: Family<ProtocolLabels, Counter>,
    pub refused: Family<ReasonLabels, Counter>,
    pub retries: Counter,
    pub handovers: Family<ReasonLabels, Counter>,
    pub ejections: Family<GroupLabels, Counter>,
    pub mirrored: Family<MirrorLabels, Counter>,
}

fn latency_buckets() -> Histogram {
    // 0.5 ms to ~30 s.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.0005, 2.0, 17,
    ))
}

impl Default for Metrics {
    fn default() -> Metrics {
        let mut root = Registry::default();
        let registry = root.sub_registry_with_prefix("trellis_proxy");
        let requests = Arc::new(RequestCounts::default());
        registry.register_collector(Box::new(Exposed(requests.clone())));
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
            "Requests sent again: after a connect failure, on a new connection when a kept one was closed, or on a route's retry policy",
            retries.clone(),
        );
        let ejections = Family::<GroupLabels, Counter>::default();
        registry.register(
            "ejections",
            "Targets ejected by passive health (outlier detection), by target group",
            ejections.clone(),
        );
        let mirrored = Family::<MirrorLabels, Counter>::default();
        registry.register(
            "mirrored_requests",
            "Copies of requests sent to a rule's mirrors, by target group and outcome",
            mirrored.clone(),
        );
        registry.register(
            "http_handovers",
            "HTTP connections the HTTP/1.1 path handed to hyper, by the first request's reason",
            handovers.clone(),
        );
        Metrics {
            registry: Mutex::new(root),
            auth,
            requests,
            duration,
            active,
            connections,
            refused,
            retries,
            handovers,
            ejections,
            mirrored,
        }
    }
}

impl Metrics {
    /// One auth decision: `allow` with how the caller was known, or the
    /// refusal's code (and `authn` empty).
    pub fn auth_decisions(&self, service: &Arc<str>, outcome: &'static str, authn: &'static str) {
        self.auth
            .get_or_create(&AuthLabels {
                service: service.clone(),
                outcome,
                authn,
            })
            .inc();
    }

    pub fn ejected(&self, group: &Arc<str>) {
        let labels = GroupLabels {
            target_group: group.clone(),
        };
        self.ejections.get_or_create(&labels).inc();
    }

    pub fn mirrored(&self, group: &Arc<str>, outcome: &'static str) {
        let labels = MirrorLabels {
            target_group: group.clone(),
            outcome,
        };
        self.mirrored.get_or_create(&labels).inc();
    }

    /// Adds a metric read at each scrape.
    pub fn register_live(&self, live: Live) {
        self.register_collector(Box::new(live));
    }

    /// Adds metrics another part keeps (the node-local DNS's counters).
    pub fn register_collector(&self, collector: Box<dyn Collector>) {
        let mut registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        registry.register_collector(collector);
    }

    /// Target health and HTTPS listeners' certificate expiry, read from the
    /// config current at each scrape.
    pub fn register_config(&self, config: Arc<ArcSwap<Config>>) {
        let health = config.clone();
        self.register_live(Live::gauge(
            "trellis_target_healthy",
            "Whether a target is healthy (1), unhealthy (0) or not checked yet (-1)",
            move || {
                let config = health.load();
                let mut groups: Vec<_> = config.groups.values().collect();
                groups.sort_by(|a, b| a.name.cmp(&b.name));
                groups
                    .iter()
                    .flat_map(|g| {
                        g.targets.iter().map(|t| {
                            let v = match t.health() {
                                crate::targets::Health::Healthy => 1.0,
                                crate::targets::Health::Unhealthy => 0.0,
                                crate::targets::Health::Unknown => -1.0,
                            };
                            let labels = vec![
                                ("target_group", g.name.to_string()),
                                ("target", t.addr.to_string()),
                            ];
                            (labels, v)
                        })
                    })
                    .collect()
            },
        ));
        let ejected = config.clone();
        self.register_live(Live::gauge(
            "trellis_target_ejected",
            "Whether passive health keeps a target out now (1) or not (0), for groups with outlier detection",
            move || {
                let config = ejected.load();
                let now = crate::targets::now_ms();
                let mut groups: Vec<_> = config
                    .groups
                    .values()
                    .filter(|g| g.outlier.is_some())
                    .collect();
                groups.sort_by(|a, b| a.name.cmp(&b.name));
                groups
                    .iter()
                    .flat_map(|g| {
                        g.targets.iter().map(move |t| {
                            let labels = vec![
                                ("target_group", g.name.to_string()),
                                ("target", t.addr.to_string()),
                            ];
                            (labels, if t.ejected_at(now) { 1.0 } else { 0.0 })
                        })
                    })
                    .collect()
            },
        ));
        self.register_live(Live::gauge(
            "trellis_tls_certificate_expiry_days",
            "Days until an HTTPS listener's certificate expires",
            move || {
                let config = config.load();
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64());
                let mut tls: Vec<_> = config
                    .each_listener()
                    .filter_map(|l| Some((l, l.tls.as_ref()?)))
                    .collect();
                tls.sort_by(|a, b| (&a.0.service, &a.0.name).cmp(&(&b.0.service, &b.0.name)));
                tls.iter()
                    .flat_map(|(l, t)| {
                        t.expiry.iter().map(move |(subject, not_after)| {
                            let labels = vec![
                                ("service", l.service.to_string()),
                                ("listener", l.name.to_string()),
                                ("subject", subject.replace(['\\', '"'], "_")),
                            ];
                            (labels, (*not_after as f64 - now) / 86_400.0)
                        })
                    })
                    .collect()
            },
        ));
    }

    /// The text exposition of everything registered.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        if prometheus_client::encoding::text::encode_registry(&mut out, &registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Label pairs and a value: one sample of a [`Live`] metric.
pub type Sample = (Vec<(&'static str, String)>, f64);

/// A metric whose samples are read when it is scraped.
pub struct Live {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    read: Box<dyn Fn() -> Vec<Sample> + Send + Sync>,
}

impl Live {
    pub fn gauge(
        name: &'static str,
        help: &'static str,
        read: impl Fn() -> Vec<Sample> + Send + Sync + 'static,
    ) -> Live {
        Live {
            name,
            help,
            kind: MetricType::Gauge,
            read: Box::new(read),
        }
    }

    /// A counter kept elsewhere (its name without `_total`).
    pub fn counter(
        name: &'static str,
        help: &'static str,
        read: impl Fn() -> u64 + Send + Sync + 'static,
    ) -> Live {
        Live {
            name,
            help,
            kind: MetricType::Counter,
            read: Box::new(move || vec![(Vec::new(), read() as f64)]),
        }
    }
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live").field("name", &self.name).finish()
    }
}

/// Whole numbers print as such (`1`, not `1.0`).
fn gauge(m: &mut MetricEncoder<'_>, value: f64) -> Result<(), std::fmt::Error> {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        m.encode_gauge(&(value as i64))
    } else {
        m.encode_gauge(&value)
    }
}

impl Collector for Live {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut metric = encoder.encode_descriptor(self.name, self.help, None, self.kind)?;
        for (labels, value) in (self.read)() {
            if matches!(self.kind, MetricType::Counter) {
                metric.encode_counter::<NoLabelSet, _, f64>(&(value as u64), None)?;
            } else if labels.is_empty() {
                gauge(&mut metric, value)?;
            } else {
                gauge(&mut metric.encode_family(&labels)?, value)?;
            }
        }
        Ok(())
    }
}
