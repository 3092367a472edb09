//! `trellis_proxy_requests_total`: HTTP requests by service, listener,
//! rule, target group, status and verdict. One table serves the Prometheus
//! scrape and the report the node sends the control plane with its flows,
//! so the console's rates and splits are the metric's, to the request.

use crate::access_log::Entry;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use trellis_api::flow::{RequestCount, Verdict};

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct Key {
    service: Arc<str>,
    listener: Arc<str>,
    rule: Arc<str>,
    target_group: Arc<str>,
    code: u16,
    verdict: Verdict,
}

/// The counters, one per series; a series is made on its first request
/// and kept (the label sets are bounded by the config's rules and the
/// statuses seen, as with any Prometheus counter family).
#[derive(Debug, Default)]
pub struct RequestCounts {
    /// foldhash, not SipHash: looked up for every request, with keys
    /// the config names (nothing a client chooses).
    table: RwLock<HashMap<Key, AtomicU64, foldhash::fast::RandomState>>,
}

impl RequestCounts {
    /// Counts the request `entry` describes, with its verdict.
    pub fn count(&self, entry: &Entry, verdict: Verdict) {
        let key = Key {
            service: entry.service.clone(),
            listener: entry.listener.clone(),
            rule: entry.rule.clone(),
            target_group: entry.target_group.clone(),
            code: entry.status,
            verdict,
        };
        let table = self.table.read().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = table.get(&key) {
            n.fetch_add(1, Ordering::Relaxed);
            return;
        }
        drop(table);
        let mut table = self.table.write().unwrap_or_else(|e| e.into_inner());
        table
            .entry(key)
            .or_default()
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Every series and its count now.
    pub fn read(&self) -> Vec<RequestCount> {
        let table = self.table.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<RequestCount> = table
            .iter()
            .map(|(k, n)| RequestCount {
                service: k.service.to_string(),
                listener: k.listener.to_string(),
                rule: k.rule.to_string(),
                target_group: k.target_group.to_string(),
                code: k.code,
                verdict: k.verdict,
                count: n.load(Ordering::Relaxed),
            })
            .collect();
        drop(table);
        out.sort_by(|a, b| {
            (&a.service, &a.listener, &a.rule, &a.target_group, a.code).cmp(&(
                &b.service,
                &b.listener,
                &b.rule,
                &b.target_group,
                b.code,
            ))
        });
        out
    }
}

/// What the entry says happened: refused by auth, answered by Trellis
/// itself, or forwarded (no allocation: it is asked of every request).
pub fn verdict(entry: &Entry) -> Verdict {
    match (&entry.auth, entry.error) {
        (Some(a), _) if a.starts_with("deny") => Verdict::Denied,
        (_, Some(_)) => Verdict::Error,
        _ => Verdict::Allowed,
    }
}

/// The table as a Prometheus counter, `requests_total` (registered in the
/// proxy's `trellis_proxy` sub-registry).
#[derive(Debug)]
pub struct Exposed(pub Arc<RequestCounts>);

impl Collector for Exposed {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut metric = encoder.encode_descriptor(
            "requests",
            "HTTP requests answered, by service, listener, rule, target group, status and verdict (allowed, denied, error)",
            None,
            MetricType::Counter,
        )?;
        for c in self.0.read() {
            let labels = [
                ("service", c.service),
                ("listener", c.listener),
                ("rule", c.rule),
                ("target_group", c.target_group),
                ("code", c.code.to_string()),
                ("verdict", c.verdict.as_str().to_string()),
            ];
            metric
                .encode_family(&labels.to_vec())?
                .encode_counter::<NoLabelSet, _, u64>(&c.count, None)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(rule: &str, group: &str, status: u16) -> Entry {
        Entry {
            service: "shop".into(),
            listener: "web".into(),
            rule: rule.into(),
            target_group: group.into(),
            status,
            ..Entry::default()
        }
    }

    #[test]
    fn the_scrape_and_the_report_read_the_same_counts() {
        let counts = Arc::new(RequestCounts::default());
        for _ in 0..3 {
            counts.count(&entry("split", "blue", 200), Verdict::Allowed);
        }
        counts.count(&entry("split", "green", 200), Verdict::Allowed);
        counts.count(&entry("split", "", 403), Verdict::Denied);
        let read = counts.read();
        assert_eq!(read.len(), 3);
        assert_eq!(
            read.iter().map(|c| c.count).collect::<Vec<_>>(),
            [1, 3, 1],
            "sorted by target group: the denied one has none"
        );
        let mut registry = prometheus_client::registry::Registry::default();
        registry
            .sub_registry_with_prefix("trellis_proxy")
            .register_collector(Box::new(Exposed(counts.clone())));
        let mut text = String::new();
        prometheus_client::encoding::text::encode_registry(&mut text, &registry).unwrap();
        assert!(
            text.contains(r#"trellis_proxy_requests_total{service="shop",listener="web",rule="split",target_group="blue",code="200",verdict="allowed"} 3"#),
            "{text}"
        );
        assert!(
            text.contains(r#"target_group="",code="403",verdict="denied"} 1"#),
            "{text}"
        );
    }
}
