//! Flow records for `trellis observe`: made from the access-log entries on
//! the request's thread, queued, and sent to the control plane in batches
//! over the node's own connection to it. Every refusal is kept; allowed
//! flows at most `--flow-allowed-per-second` (a busy node would otherwise
//! spend a third of its time describing its traffic: measured, see
//! docs/benchmarks.md). The queue is bounded: when the control plane cannot
//! take them, flows are dropped and counted, never buffered without bound,
//! and the proxy never waits for an observer.

use crate::access_log::Entry;
use crate::proxy::Proxy;
use crate::traffic::verdict;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use trellis_api::flow::{Flow, FlowBatch, NodeReport, TargetHealth, Verdict};

/// Flows held for the next batch, at most.
const QUEUE: usize = 10_000;
/// Most flows in one batch.
const BATCH: usize = 1_000;
/// How often batches go out: a refusal reaches observers within this and
/// one long-poll round trip.
const EVERY: Duration = Duration::from_millis(200);
/// How often the node's counters and health go with a batch: the console's
/// measured split follows a weight change within this and its own refresh.
pub const REPORT_EVERY: Duration = Duration::from_secs(1);

pub struct FlowQueue {
    node: String,
    network: String,
    /// Allowed flows kept per second, at most.
    allowed_per_second: u64,
    /// The second being counted (Unix seconds) in the high bits, allowed
    /// flows kept in it in the low 24.
    window: AtomicU64,
    queue: Mutex<VecDeque<Flow>>,
    dropped: AtomicU64,
    /// When this process began counting (Unix milliseconds).
    started_ms: u64,
}

const COUNT_BITS: u32 = 24;

impl FlowQueue {
    pub fn new(node: &str, network: &str, allowed_per_second: u64) -> FlowQueue {
        FlowQueue {
            node: node.to_string(),
            network: network.to_string(),
            allowed_per_second: allowed_per_second.min((1 << COUNT_BITS) - 1),
            window: AtomicU64::new(0),
            queue: Mutex::new(VecDeque::new()),
            dropped: AtomicU64::new(0),
            started_ms: trellis_api::flow::ago_ms(Duration::ZERO),
        }
    }

    /// Whether one more allowed flow fits in this second's budget.
    fn allowed_fits(&self, second: u64) -> bool {
        let mut seen = self.window.load(Ordering::Relaxed);
        loop {
            let (at, count) = (seen >> COUNT_BITS, seen & ((1 << COUNT_BITS) - 1));
            let count = if at == second { count } else { 0 };
            if count >= self.allowed_per_second {
                return false;
            }
            let next = (second << COUNT_BITS) | (count + 1);
            match self.window.compare_exchange_weak(
                seen,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => seen = now,
            }
        }
    }

    /// Takes `entry` as a flow: every refusal, allowed ones within the
    /// budget.
    pub fn offer(&self, entry: &Entry) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let verdict = verdict(entry);
        if verdict == Verdict::Allowed && !self.allowed_fits(now.as_secs()) {
            return;
        }
        let reason = reason(entry, verdict);
        let flow = Flow {
            time_ms: (now.as_millis() as u64).saturating_sub(entry.duration_ms as u64),
            node: self.node.clone(),
            network: self.network.clone(),
            kind: entry.kind.to_string(),
            client: entry.client.clone(),
            workload: entry.workload.as_deref().map(String::from),
            identity: entry.identity.clone(),
            authn: entry.authn.map(String::from),
            service: entry.service.to_string(),
            listener: entry.listener.to_string(),
            rule: entry.rule.to_string(),
            target_group: entry.target_group.to_string(),
            target: entry.target.clone(),
            method: entry.method.clone(),
            path: entry.path.clone(),
            status: entry.status,
            verdict,
            reason,
            bytes_sent: entry.bytes_sent,
            bytes_received: entry.bytes_received,
            duration_ms: entry.duration_ms,
        };
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        if queue.len() >= QUEUE {
            // The oldest allowed flow makes room; refusals are kept first.
            match queue.iter().position(|f| f.verdict == Verdict::Allowed) {
                Some(i) => {
                    queue.remove(i);
                }
                None => {
                    queue.pop_front();
                }
            }
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        queue.push_back(flow);
    }

    /// The next batch, and how many flows were dropped since the last one.
    fn take(&self) -> FlowBatch {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let n = queue.len().min(BATCH);
        FlowBatch {
            items: queue.drain(..n).collect(),
            dropped: self.dropped.swap(0, Ordering::Relaxed),
            report: None,
        }
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Why: the deciding statement or signature problem, or the refusal.
fn reason(entry: &Entry, verdict: Verdict) -> String {
    let auth = entry.auth.as_deref().unwrap_or_default();
    match verdict {
        Verdict::Denied => auth.trim_start_matches("deny").trim().to_string(),
        Verdict::Error => entry.error.unwrap_or_default().to_string(),
        Verdict::Allowed => auth.trim_start_matches("allow").trim().to_string(),
    }
}

/// What the node counted and checked, for the console.
fn report(queue: &FlowQueue, proxy: &Proxy) -> NodeReport {
    let config = proxy.config();
    let mut health = Vec::new();
    let now = crate::targets::now_ms();
    for (name, group) in &config.groups {
        for t in &group.targets {
            health.push(TargetHealth {
                target_group: name.to_string(),
                target: t.addr.to_string(),
                health: t.health().as_str().to_string(),
                ejected: t.ejected_at(now),
            });
        }
    }
    NodeReport {
        node: queue.node.clone(),
        started_ms: queue.started_ms,
        revision: config.revision(),
        requests: proxy.metrics.requests.read(),
        health,
    }
}

/// Sends the queue's batches to the control plane through `client`, with
/// `proxy`'s report every [`REPORT_EVERY`], until the task is dropped. A
/// batch the control plane does not take is lost (and counted by the
/// control plane as nothing): flows are for now, and the next report
/// carries the counters whole.
pub async fn upload(
    queue: std::sync::Arc<FlowQueue>,
    client: trellis_api::client::Client,
    proxy: std::sync::Arc<Proxy>,
) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    let mut last_report: Option<tokio::time::Instant> = None;
    loop {
        tick.tick().await;
        loop {
            let mut batch = queue.take();
            if last_report.is_none_or(|at| at.elapsed() >= REPORT_EVERY) {
                batch.report = Some(report(&queue, &proxy));
                last_report = Some(tokio::time::Instant::now());
            }
            if batch.items.is_empty() && batch.dropped == 0 && batch.report.is_none() {
                break;
            }
            let full = batch.items.len() == BATCH;
            if let Err(e) = client.push_flows(&queue.network, &batch).await {
                // Once per failure streak: the control plane may be away
                // for a while, and the node keeps working without it.
                if !failing {
                    tracing::warn!(error = %e, flows = batch.items.len(), "flows not sent; dropping them until the control plane takes them");
                }
                failing = true;
                break;
            }
            failing = false;
            if !full {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(status: u16, auth: Option<&str>, error: Option<&'static str>) -> Entry {
        Entry {
            kind: "http",
            service: "shop".into(),
            status,
            auth: auth.map(String::from),
            error,
            ..Entry::default()
        }
    }

    #[test]
    fn verdicts_and_reasons_and_the_budget_spares_refusals() {
        let q = FlowQueue::new("n1", "east", 2);
        for _ in 0..6 {
            q.offer(&entry(200, Some("allow service:AllowCi"), None));
        }
        q.offer(&entry(403, Some("deny service:DenyOthers"), None));
        q.offer(&entry(503, None, Some("no-healthy-target")));
        let batch = q.take();
        let got: Vec<(Verdict, &str)> = batch
            .items
            .iter()
            .map(|f| (f.verdict, f.reason.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (Verdict::Allowed, "service:AllowCi"),
                (Verdict::Allowed, "service:AllowCi"),
                (Verdict::Denied, "service:DenyOthers"),
                (Verdict::Error, "no-healthy-target"),
            ],
            "two allowed flows this second, every refusal"
        );
        assert!(
            batch
                .items
                .iter()
                .all(|f| f.node == "n1" && f.network == "east")
        );
    }

    #[test]
    fn a_full_queue_drops_allowed_flows_first_and_counts() {
        let q = FlowQueue::new("n1", "east", u64::MAX);
        q.offer(&entry(403, Some("deny x"), None));
        for _ in 0..QUEUE {
            q.offer(&entry(200, None, None));
        }
        assert_eq!(q.dropped(), 1);
        let first = q.take();
        assert_eq!(
            first.items[0].verdict,
            Verdict::Denied,
            "the refusal stayed"
        );
        assert_eq!(first.dropped, 1);
        assert_eq!(first.items.len(), BATCH);
    }
}
