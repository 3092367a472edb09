//! Flows from every node, kept for `trellis observe`: nodes push batches of
//! flow records over the connection they already hold to the control plane
//! (no port of theirs need be reachable), and observers read them by
//! cursor, long-polling for new ones as watches do. A bounded ring: the
//! oldest flows go first, and a reader that falls behind skips what was
//! dropped rather than holding anything up. In memory only: flows are for
//! what is happening now; access logs are the record.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::watch;
use trellis_api::flow::{Flow, FlowFilter, FlowPage};

/// Most flows one read returns.
pub const PAGE_MOST: usize = 1000;

pub struct Flows {
    ring: Mutex<VecDeque<(u64, Flow)>>,
    capacity: usize,
    /// The last sequence number given.
    last: watch::Sender<u64>,
}

impl Flows {
    pub fn new(capacity: usize) -> Flows {
        Flows {
            ring: Mutex::new(VecDeque::with_capacity(capacity.min(1 << 16))),
            capacity: capacity.max(1),
            last: watch::channel(0).0,
        }
    }

    /// Keeps `flows`, each with the next sequence number.
    pub fn push(&self, flows: Vec<Flow>) {
        if flows.is_empty() {
            return;
        }
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let mut seq = *self.last.borrow();
        for f in flows {
            if ring.len() == self.capacity {
                ring.pop_front();
            }
            seq += 1;
            ring.push_back((seq, f));
        }
        drop(ring);
        self.last.send_replace(seq);
    }

    /// The flows matching `filter`: after the cursor `after`, waiting up to
    /// `wait` for one if there is none yet; or, without a cursor, the `last`
    /// ones. `next` is the cursor to ask from next.
    pub async fn read(
        &self,
        filter: &FlowFilter,
        after: Option<u64>,
        last: usize,
        wait: Duration,
    ) -> FlowPage {
        let mut changes = self.last.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let page = self.page(filter, after, last);
            if !page.items.is_empty() || after.is_none() {
                return page;
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => continue,
                _ => return page,
            }
        }
    }

    /// The newest `n` flows that were not allowed, oldest first.
    pub fn newest_refused(&self, n: usize) -> Vec<Flow> {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<Flow> = ring
            .iter()
            .rev()
            .filter(|(_, f)| f.verdict != trellis_api::flow::Verdict::Allowed)
            .take(n)
            .map(|(_, f)| f.clone())
            .collect();
        out.reverse();
        out
    }

    fn page(&self, filter: &FlowFilter, after: Option<u64>, last: usize) -> FlowPage {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let next = ring.back().map_or(*self.last.borrow(), |(s, _)| *s);
        let items = match after {
            Some(after) => ring
                .iter()
                .filter(|(s, f)| *s > after && filter.matches(f))
                .take(PAGE_MOST)
                .map(|(_, f)| f.clone())
                .collect::<Vec<_>>(),
            None => {
                let mut newest: Vec<Flow> = ring
                    .iter()
                    .rev()
                    .filter(|(_, f)| filter.matches(f))
                    .take(last.min(PAGE_MOST))
                    .map(|(_, f)| f.clone())
                    .collect();
                newest.reverse();
                newest
            }
        };
        // A page cut at PAGE_MOST goes on from its last flow's number.
        let next = match after {
            Some(after) if items.len() == PAGE_MOST => ring
                .iter()
                .filter(|(s, f)| *s > after && filter.matches(f))
                .nth(PAGE_MOST - 1)
                .map_or(next, |(s, _)| *s),
            _ => next,
        };
        FlowPage { items, next }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trellis_api::flow::Verdict;

    fn flow(service: &str, verdict: Verdict) -> Flow {
        Flow {
            service: service.into(),
            verdict,
            ..Flow::default()
        }
    }

    #[tokio::test]
    async fn readers_follow_by_cursor_and_the_ring_is_bounded() {
        let flows = Flows::new(3);
        let denied = FlowFilter {
            verdict: Some(Verdict::Denied),
            ..FlowFilter::default()
        };
        // Nothing yet: a cursor read waits, then answers empty.
        let empty = flows
            .read(&denied, Some(0), 10, Duration::from_millis(20))
            .await;
        assert!(empty.items.is_empty());
        flows.push(vec![
            flow("a", Verdict::Allowed),
            flow("b", Verdict::Denied),
        ]);
        let page = flows.read(&denied, Some(0), 10, Duration::ZERO).await;
        assert_eq!(page.items, [flow("b", Verdict::Denied)]);
        assert_eq!(page.next, 2);
        // A cursor past everything: nothing new.
        let none = flows.read(&denied, Some(2), 10, Duration::ZERO).await;
        assert!(none.items.is_empty());
        assert_eq!(none.next, 2);
    }

    #[tokio::test]
    async fn a_push_wakes_a_waiting_reader_and_old_flows_leave() {
        let flows = std::sync::Arc::new(Flows::new(3));
        let reader = {
            let flows = flows.clone();
            tokio::spawn(async move {
                flows
                    .read(&FlowFilter::default(), Some(0), 10, Duration::from_secs(5))
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        flows.push(vec![flow("a", Verdict::Allowed)]);
        let page = reader.await.unwrap();
        assert_eq!(page.items, [flow("a", Verdict::Allowed)]);

        flows.push(
            (0..5)
                .map(|i| flow(&format!("s{i}"), Verdict::Error))
                .collect(),
        );
        let all = flows
            .read(&FlowFilter::default(), None, 10, Duration::ZERO)
            .await;
        let names: Vec<&str> = all.items.iter().map(|f| f.service.as_str()).collect();
        assert_eq!(names, ["s2", "s3", "s4"], "the ring keeps the newest three");
        assert_eq!(all.next, 6);
        let last = flows
            .read(&FlowFilter::default(), None, 1, Duration::ZERO)
            .await;
        assert_eq!(last.items, [flow("s4", Verdict::Error)]);
    }
}
