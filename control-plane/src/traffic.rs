//! What the nodes count, brought together for the console: each node's
//! report (its `trellis_proxy_requests_total` series and its targets'
//! health, about once a second) is kept for a minute, and a view is the
//! difference between reports: request and error rates over the last
//! [`RATE_WINDOW`], and each rule's measured split since the later of a
//! minute ago and the revision that last changed its service, as each node
//! ran it. The counters are whole (flows are sampled), so a split is the
//! nodes' own count, to the request.

use serde::Serialize;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use trellis_api::flow::{NodeReport, RequestCount, TargetHealth, Verdict};
use trellis_api::resource::TargetStatus;

/// Rates are over this much of the newest reports.
pub const RATE_WINDOW: Duration = Duration::from_secs(10);
/// Splits are over at most this much.
pub const SPLIT_WINDOW: Duration = Duration::from_secs(60);
/// A node not heard from for this long is shown as stale...
const STALE: Duration = Duration::from_secs(5);
/// ... and forgotten after this.
const FORGET: Duration = Duration::from_secs(300);

struct Sample {
    at: Instant,
    revision: u64,
    counts: Vec<RequestCount>,
}

struct NodeSeries {
    started_ms: u64,
    samples: VecDeque<Sample>,
    health: Vec<TargetHealth>,
}

impl NodeSeries {
    fn newest(&self) -> Option<&Sample> {
        self.samples.back()
    }

    /// The oldest sample since `from` that ran `revision` or later.
    fn base(&self, from: Instant, revision: u64) -> Option<&Sample> {
        self.samples
            .iter()
            .find(|s| s.at >= from && s.revision >= revision)
    }
}

/// How a node sees a target, in a word.
fn health_word(h: &TargetHealth) -> String {
    if h.ejected {
        "ejected".into()
    } else {
        h.health.clone()
    }
}

/// Every node's recent reports, by (network, node).
#[derive(Default)]
pub struct Traffic {
    nodes: Mutex<HashMap<(String, String), NodeSeries>>,
}

/// What the console draws, at one moment.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TrafficView {
    /// The store revision: the console reads the objects again when it
    /// moves.
    pub revision: u64,
    pub rate_window_seconds: u64,
    pub nodes: Vec<NodeView>,
    pub services: Vec<ServiceTraffic>,
    pub health: Vec<HealthView>,
    /// Who calls whom: requests per second from a network's nodes to a
    /// service.
    pub edges: Vec<Edge>,
    /// The newest refused requests (denied or answered by Trellis), newest
    /// last.
    pub refused: Vec<trellis_api::flow::Flow>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeView {
    pub network: String,
    pub node: String,
    pub revision: u64,
    pub seconds_since_report: f64,
    pub stale: bool,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceTraffic {
    pub service: String,
    /// Requests per second over the rate window.
    pub rate: f64,
    /// Of those, the share answered 5xx (by the target or by Trellis).
    pub error_ratio: f64,
    /// Of those, the share denied by auth.
    pub denied_ratio: f64,
    pub splits: Vec<Split>,
}

/// One rule's forwarded requests by target group.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Split {
    pub listener: String,
    pub rule: String,
    /// Seconds the counts cover (the longest of any node's).
    pub window_seconds: f64,
    pub groups: BTreeMap<String, u64>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthView {
    pub target_group: String,
    pub target: String,
    /// `network/node` -> `healthy`, `unhealthy` or `unknown` as its
    /// checks say, or `ejected` while its passive health keeps it out.
    pub by_node: BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Edge {
    pub network: String,
    pub service: String,
    pub rate: f64,
}

impl Traffic {
    /// Keeps `report` from a node of `network`, received now.
    pub fn record(&self, network: &str, report: NodeReport) {
        self.record_at(network, report, Instant::now());
    }

    fn record_at(&self, network: &str, report: NodeReport, now: Instant) {
        let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        nodes.retain(|_, s| s.newest().is_some_and(|n| now - n.at < FORGET));
        let series = nodes
            .entry((network.to_string(), report.node.clone()))
            .or_insert_with(|| NodeSeries {
                started_ms: report.started_ms,
                samples: VecDeque::new(),
                health: Vec::new(),
            });
        if series.started_ms != report.started_ms {
            // A new process (a restart, a handover): its counters began
            // again at zero, and differences across it mean nothing.
            series.started_ms = report.started_ms;
            series.samples.clear();
        }
        while series
            .samples
            .front()
            .is_some_and(|s| now - s.at > SPLIT_WINDOW + STALE)
        {
            series.samples.pop_front();
        }
        series.samples.push_back(Sample {
            at: now,
            revision: report.revision,
            counts: report.requests,
        });
        series.health = report.health;
    }

    /// The targets of `group` as the nodes reporting now see them, for
    /// `trellis get targetgroup`.
    pub fn targets(&self, group: &str) -> Vec<TargetStatus> {
        let nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: BTreeMap<&str, TargetStatus> = BTreeMap::new();
        for ((network, node), series) in nodes.iter() {
            for h in series.health.iter().filter(|h| h.target_group == group) {
                let t = out.entry(&h.target).or_insert_with(|| TargetStatus {
                    target: h.target.clone(),
                    ..TargetStatus::default()
                });
                t.by_node
                    .insert(format!("{network}/{node}"), health_word(h));
            }
        }
        out.into_values().collect()
    }

    /// The view now; `changed_at(service)` is the revision that last
    /// changed a service (its splits count from there).
    pub fn view(&self, changed_at: impl Fn(&str) -> Option<u64>) -> TrafficView {
        self.view_at(changed_at, Instant::now())
    }

    fn view_at(&self, changed_at: impl Fn(&str) -> Option<u64>, now: Instant) -> TrafficView {
        let nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        let mut view = TrafficView {
            rate_window_seconds: RATE_WINDOW.as_secs(),
            ..TrafficView::default()
        };
        let mut services: BTreeMap<String, ServiceTraffic> = BTreeMap::new();
        let mut splits: BTreeMap<(String, String, String), Split> = BTreeMap::new();
        let mut edges: BTreeMap<(String, String), f64> = BTreeMap::new();
        let mut health: BTreeMap<(String, String), BTreeMap<String, String>> = BTreeMap::new();
        let mut keys: Vec<_> = nodes.keys().collect();
        keys.sort();
        for key in keys {
            let series = &nodes[key];
            let Some(newest) = series.newest() else {
                continue;
            };
            let (network, node) = key;
            view.nodes.push(NodeView {
                network: network.clone(),
                node: node.clone(),
                revision: newest.revision,
                seconds_since_report: (now - newest.at).as_secs_f64(),
                stale: now - newest.at > STALE,
            });
            for h in &series.health {
                health
                    .entry((h.target_group.clone(), h.target.clone()))
                    .or_default()
                    .insert(format!("{network}/{node}"), health_word(h));
            }
            // Rates: newest against the oldest report in the window.
            let old = match newest.at.checked_sub(RATE_WINDOW) {
                Some(from) => series.base(from, 0),
                None => series.samples.front(),
            };
            if let Some(old) = old {
                let secs = (newest.at - old.at).as_secs_f64();
                let before = index(&old.counts);
                if secs > 0.0 {
                    for c in newest.counts.iter().filter(|c| at_caller(c)) {
                        let n = c
                            .count
                            .saturating_sub(before.get(&id(c)).copied().unwrap_or(0));
                        if n == 0 {
                            continue;
                        }
                        let s = services.entry(c.service.clone()).or_default();
                        let per_second = n as f64 / secs;
                        s.rate += per_second;
                        if c.code >= 500 {
                            s.error_ratio += per_second;
                        }
                        if c.verdict == Verdict::Denied {
                            s.denied_ratio += per_second;
                        }
                        *edges
                            .entry((network.clone(), c.service.clone()))
                            .or_default() += per_second;
                    }
                }
            }
            // Splits: each service from the first report that ran its
            // latest change.
            let from = now
                .checked_sub(SPLIT_WINDOW)
                .unwrap_or_else(|| series.samples.front().map_or(newest.at, |s| s.at));
            let mut bases: HashMap<&str, Option<(&Sample, Index)>> = HashMap::new();
            for c in newest.counts.iter().filter(|c| at_caller(c)) {
                if c.verdict != Verdict::Allowed || c.target_group.is_empty() {
                    continue;
                }
                let base = bases.entry(&c.service).or_insert_with(|| {
                    series
                        .base(from, changed_at(&c.service).unwrap_or(0))
                        .map(|b| (b, index(&b.counts)))
                });
                let Some((base, counts)) = base else { continue };
                let before = counts.get(&id(c)).copied().unwrap_or(0);
                let split = splits
                    .entry((c.service.clone(), c.listener.clone(), c.rule.clone()))
                    .or_insert_with(|| Split {
                        listener: c.listener.clone(),
                        rule: c.rule.clone(),
                        ..Split::default()
                    });
                split.window_seconds = split
                    .window_seconds
                    .max((newest.at - base.at).as_secs_f64());
                *split.groups.entry(c.target_group.clone()).or_default() +=
                    c.count.saturating_sub(before);
            }
        }
        for s in services.values_mut() {
            if s.rate > 0.0 {
                s.error_ratio /= s.rate;
                s.denied_ratio /= s.rate;
            }
        }
        for ((service, _, _), split) in splits {
            services
                .entry(service.clone())
                .or_insert_with(|| ServiceTraffic {
                    service,
                    ..ServiceTraffic::default()
                })
                .splits
                .push(split);
        }
        view.services = services
            .into_iter()
            .map(|(name, mut s)| {
                s.service = name;
                s
            })
            .collect();
        view.edges = edges
            .into_iter()
            .map(|((network, service), rate)| Edge {
                network,
                service,
                rate,
            })
            .collect();
        view.health = health
            .into_iter()
            .map(|((target_group, target), by_node)| HealthView {
                target_group,
                target,
                by_node,
            })
            .collect();
        view
    }
}

/// Whether a series was counted at the caller's node: a gateway counts
/// what it serves for other networks without a listener, and counting it
/// again would double every cross-network request.
fn at_caller(c: &RequestCount) -> bool {
    !c.listener.is_empty()
}

/// A series' labels, borrowed.
type Id<'a> = (&'a str, &'a str, &'a str, &'a str, u16, Verdict);
type Index<'a> = HashMap<Id<'a>, u64>;

fn id(c: &RequestCount) -> Id<'_> {
    (
        &c.service,
        &c.listener,
        &c.rule,
        &c.target_group,
        c.code,
        c.verdict,
    )
}

/// A report's counts by series.
fn index(counts: &[RequestCount]) -> Index<'_> {
    counts.iter().map(|c| (id(c), c.count)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(group: &str, code: u16, verdict: Verdict, n: u64) -> RequestCount {
        RequestCount {
            service: "shop".into(),
            listener: if group == "via-gateway" { "" } else { "web" }.into(),
            rule: "default".into(),
            target_group: group.into(),
            code,
            verdict,
            count: n,
        }
    }

    fn report(started_ms: u64, revision: u64, blue: u64, green: u64) -> NodeReport {
        NodeReport {
            node: "n1".into(),
            started_ms,
            revision,
            requests: vec![
                count("blue", 200, Verdict::Allowed, blue),
                count("green", 200, Verdict::Allowed, green),
            ],
            health: vec![TargetHealth {
                target_group: "blue".into(),
                target: "10.0.0.1:80".into(),
                health: "healthy".into(),
                ejected: false,
            }],
        }
    }

    #[test]
    fn a_split_counts_from_the_first_report_that_ran_the_change() {
        let traffic = Traffic::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        traffic.record_at("east", report(1, 1, 100, 0), at(0));
        traffic.record_at("east", report(1, 1, 190, 10), at(1));
        // The service changed at revision 2; the node runs it from here.
        traffic.record_at("east", report(1, 2, 200, 20), at(2));
        traffic.record_at("east", report(1, 2, 250, 70), at(3));
        let view = traffic.view_at(|_| Some(2), at(3));
        let split = &view.services[0].splits[0];
        assert_eq!(
            (split.listener.as_str(), split.rule.as_str()),
            ("web", "default")
        );
        assert_eq!(split.groups["blue"], 50);
        assert_eq!(split.groups["green"], 50);
        assert_eq!(split.window_seconds, 1.0);
        // Not changed since revision 1: the whole minute.
        let view = traffic.view_at(|_| Some(1), at(3));
        assert_eq!(view.services[0].splits[0].groups["blue"], 150);
        // A change no report has run yet: nothing measured.
        let view = traffic.view_at(|_| Some(3), at(3));
        assert!(view.services[0].splits.is_empty());
        // Rates over the window: 220 requests in 3 s.
        assert!((view.services[0].rate - 220.0 / 3.0).abs() < 1e-9);
        assert_eq!(view.edges.len(), 1);
        assert_eq!(view.health[0].by_node["east/n1"], "healthy");
    }

    #[test]
    fn errors_denials_and_gateway_hops_are_told_apart() {
        let traffic = Traffic::default();
        let t0 = Instant::now();
        let with = |n: u64| NodeReport {
            requests: vec![
                count("blue", 200, Verdict::Allowed, 6 * n),
                count("blue", 503, Verdict::Error, 2 * n),
                count("", 403, Verdict::Denied, 2 * n),
                // The same requests again, as a gateway served them.
                count("via-gateway", 200, Verdict::Allowed, 100 * n),
            ],
            ..report(1, 1, 0, 0)
        };
        traffic.record_at("east", with(0), t0);
        traffic.record_at("east", with(1), t0 + Duration::from_secs(2));
        let view = traffic.view_at(|_| Some(1), t0 + Duration::from_secs(2));
        let s = &view.services[0];
        assert_eq!(s.rate, 5.0);
        assert!((s.error_ratio - 0.2).abs() < 1e-9);
        assert!((s.denied_ratio - 0.2).abs() < 1e-9);
        assert_eq!(s.splits[0].groups.len(), 1, "{:?}", s.splits);
        assert_eq!(s.splits[0].groups["blue"], 6);
    }

    #[test]
    fn a_restarted_node_starts_its_differences_again() {
        let traffic = Traffic::default();
        let t0 = Instant::now();
        traffic.record_at("east", report(1, 1, 500, 500), t0);
        // A new process: its counters began at zero.
        let later = t0 + Duration::from_secs(1);
        traffic.record_at("east", report(2, 1, 10, 0), later);
        let view = traffic.view_at(|_| Some(1), later);
        assert_eq!(view.services[0].rate, 0.0, "one report is no rate");
        assert_eq!(view.services[0].splits[0].groups["blue"], 0);
        // Silent nodes are stale, then forgotten.
        let view = traffic.view_at(|_| None, later + STALE + Duration::from_secs(1));
        assert!(view.nodes[0].stale);
        traffic.record_at(
            "west",
            report(1, 1, 0, 0),
            later + FORGET + Duration::from_secs(1),
        );
        let view = traffic.view_at(|_| None, later + FORGET + Duration::from_secs(1));
        assert_eq!(view.nodes.len(), 1);
        assert_eq!(view.nodes[0].network, "west");
    }
}
