//! A route's answer to failure, compiled: its time limits, its retry
//! policy (conditions, attempts, jittered backoff and a budget that keeps
//! retries from multiplying the load on a failing group), and the groups
//! its requests are copied to.

use crate::targets::random;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use trellis_api::resilience::{Retry, RetryOn};
use trellis_api::resource::Action as ActionSpec;

/// What a forwarding rule does besides choosing the group.
#[derive(Debug, Default)]
pub struct RoutePolicy {
    pub mirrors: Box<[MirrorTo]>,
    pub retry: Option<RetryPolicy>,
    /// The whole request's limit, in place of the listener's.
    pub request: Option<Duration>,
    pub per_try: Option<Duration>,
}

/// Mirrored copies in flight on a node at once; beyond, copies are
/// skipped (counted as `skipped`).
pub const MAX_MIRRORS_IN_FLIGHT: usize = 256;

#[derive(Debug)]
pub struct MirrorTo {
    pub group: Arc<str>,
    pub percent: u32,
}

impl MirrorTo {
    /// Whether this request is one of the copied share.
    pub fn chosen(&self) -> bool {
        self.percent >= 100 || (random() % 100) < self.percent as usize
    }
}

impl RoutePolicy {
    pub fn compile(a: &ActionSpec) -> RoutePolicy {
        let timeouts = a.timeouts.as_ref();
        RoutePolicy {
            mirrors: a
                .mirrors
                .iter()
                .map(|m| MirrorTo {
                    group: Arc::from(m.target_group.as_str()),
                    percent: m.percent,
                })
                .collect(),
            retry: a.retry.as_ref().map(RetryPolicy::compile),
            request: timeouts.and_then(|t| t.request()),
            per_try: timeouts.and_then(|t| t.per_try()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.mirrors.is_empty()
            && self.retry.is_none()
            && self.request.is_none()
            && self.per_try.is_none()
    }
}

#[derive(Debug)]
pub struct RetryPolicy {
    spec: Retry,
    pub budget: Budget,
}

impl RetryPolicy {
    fn compile(r: &Retry) -> RetryPolicy {
        RetryPolicy {
            spec: r.clone(),
            budget: Budget::new(r.budget_percent),
        }
    }

    /// Retries after the first try.
    pub fn attempts(&self) -> u32 {
        self.spec.attempts
    }

    pub fn retries_on(&self, what: RetryOn) -> bool {
        self.spec.on.contains(&what)
    }

    pub fn retries_status(&self, status: u16) -> bool {
        self.spec.retries_status(status)
    }

    /// The wait before retry `n` (1-based): drawn uniformly below a
    /// ceiling that starts at `backoffMs` and doubles, up to ten times it
    /// ("full jitter": retries of many clients spread out).
    pub fn backoff(&self, n: u32) -> Duration {
        let base = u64::from(self.spec.backoff_ms) * 1000;
        let ceiling = (base << n.saturating_sub(1).min(4)).min(base * 10);
        Duration::from_micros(random() as u64 % ceiling.max(1))
    }
}

/// How many retries a route may make: at most `percent` of its requests
/// over the last ten seconds (two five-second windows), and at least
/// [`Budget::FLOOR`] in that time.
#[derive(Debug)]
pub struct Budget {
    percent: u64,
    windows: Mutex<Windows>,
}

#[derive(Debug)]
struct Windows {
    started: Instant,
    /// (requests, retries) now and in the window before.
    now: (u64, u64),
    before: (u64, u64),
}

const WINDOW: Duration = Duration::from_secs(5);

impl Budget {
    /// Retries allowed however few the requests: a quiet route may retry.
    pub const FLOOR: u64 = 3;

    pub fn new(percent: u32) -> Budget {
        Budget {
            percent: u64::from(percent),
            windows: Mutex::new(Windows {
                started: Instant::now(),
                now: (0, 0),
                before: (0, 0),
            }),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Windows) -> T) -> T {
        let mut w = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let age = w.started.elapsed();
        if age >= WINDOW {
            w.before = if age >= WINDOW * 2 { (0, 0) } else { w.now };
            w.now = (0, 0);
            w.started = Instant::now();
        }
        f(&mut w)
    }

    /// One request of the route, retried or not.
    pub fn request(&self) {
        self.with(|w| w.now.0 += 1);
    }

    /// Whether one more retry fits; counted when it does.
    pub fn admit(&self) -> bool {
        let percent = self.percent;
        self.with(|w| {
            let requests = w.now.0 + w.before.0;
            let retries = w.now.1 + w.before.1;
            let allowed = (requests * percent / 100).max(Budget::FLOOR);
            let fits = retries < allowed;
            if fits {
                w.now.1 += 1;
            }
            fits
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(json: serde_json::Value) -> RetryPolicy {
        RetryPolicy::compile(&serde_json::from_value(json).unwrap())
    }

    #[test]
    fn the_budget_holds_retries_to_their_share_of_requests() {
        let b = Budget::new(20);
        // A quiet route still gets its floor.
        let floor = (0..10).filter(|_| b.admit()).count() as u64;
        assert_eq!(floor, Budget::FLOOR);
        for _ in 0..100 {
            b.request();
        }
        let more = (0..100).filter(|_| b.admit()).count() as u64;
        assert_eq!(floor + more, 20, "20% of 100 requests, floor included");
        let none = Budget::new(0);
        for _ in 0..1000 {
            none.request();
        }
        assert_eq!(
            (0..10).filter(|_| none.admit()).count() as u64,
            Budget::FLOOR
        );
    }

    #[test]
    fn backoff_is_jittered_below_a_doubling_ceiling() {
        let p = policy(serde_json::json!({"backoffMs": 10}));
        for (n, ceiling_ms) in [(1, 10), (2, 20), (3, 40), (4, 80), (5, 100), (9, 100)] {
            let waits: Vec<Duration> = (0..200).map(|_| p.backoff(n)).collect();
            let max = waits.iter().max().unwrap();
            assert!(
                *max < Duration::from_millis(ceiling_ms),
                "retry {n}: {max:?}"
            );
            // Jittered: not all the same, and some above half the ceiling.
            assert!(waits.iter().any(|w| *w != waits[0]));
            assert!(
                *max > Duration::from_millis(ceiling_ms / 2),
                "retry {n}: {max:?}"
            );
        }
    }

    #[test]
    fn a_mirror_copies_its_share() {
        let m = MirrorTo {
            group: Arc::from("shadow"),
            percent: 25,
        };
        let copied = (0..10_000).filter(|_| m.chosen()).count();
        assert!((2_200..2_800).contains(&copied), "{copied} of 10000 at 25%");
        let none = MirrorTo {
            group: Arc::from("shadow"),
            percent: 0,
        };
        assert!(!(0..1000).any(|_| none.chosen()));
    }
}
