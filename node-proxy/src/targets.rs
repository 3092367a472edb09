//! Target groups at run time: each target's health and load, kept across
//! snapshot swaps (a target in the old and the new snapshot is the same
//! object, so its health and in-flight count carry over), and the choice of
//! a target for one request or connection.
//!
//! Eligible, in order: healthy targets; else targets not checked yet; else,
//! when the group fails open (the default, as VPC Lattice does), every
//! target. A target removed from its group is in no tier: it gets nothing
//! new while its in-flight requests finish (`drain`). With outlier
//! detection, a target ejected for failing in a row is in neither of the
//! first two tiers until its ejection is over.

use crate::upstream::TargetTls;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use trellis_api::resilience::OutlierDetection;
use trellis_api::resource::{HealthCheck, LoadBalancing, ProtocolVersion, TargetProtocol};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Health {
    Unknown = 0,
    Healthy = 1,
    Unhealthy = 2,
}

impl Health {
    pub fn parse(s: &str) -> Option<Health> {
        Some(match s {
            "unknown" => Health::Unknown,
            "healthy" => Health::Healthy,
            "unhealthy" => Health::Unhealthy,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
        }
    }
}

#[derive(Debug)]
pub struct Target {
    pub addr: SocketAddr,
    /// `addr` as a URI's authority, made once (hyper's path needs one in
    /// every request's URI).
    pub authority: http::uri::Authority,
    health: AtomicU8,
    in_flight: AtomicUsize,
    /// Set when the target left its group and the drain time is over:
    /// whatever still runs on it is cut.
    drained: CancellationToken,
    removed: AtomicBool,
    outlier: Outlier,
}

/// A target's passive health: its failures in a row, until when it is
/// ejected (ms on [`now_ms`]'s clock; 0: never), and how often it was.
#[derive(Debug, Default)]
struct Outlier {
    failures: AtomicU32,
    ejected_until: AtomicU64,
    ejections: AtomicU32,
}

/// Milliseconds since the process started: the clock ejections run on.
pub fn now_ms() -> u64 {
    static START: LazyLock<Instant> = LazyLock::new(Instant::now);
    // Never 0, which means "never ejected".
    START.elapsed().as_millis() as u64 + 1
}

impl Target {
    pub fn new(addr: SocketAddr, health: Health) -> Target {
        Target {
            addr,
            authority: http::uri::Authority::try_from(addr.to_string())
                .expect("a socket address is an authority"),
            health: AtomicU8::new(health as u8),
            in_flight: AtomicUsize::new(0),
            drained: CancellationToken::new(),
            removed: AtomicBool::new(false),
            outlier: Outlier::default(),
        }
    }

    pub fn health(&self) -> Health {
        match self.health.load(Ordering::Relaxed) {
            1 => Health::Healthy,
            2 => Health::Unhealthy,
            _ => Health::Unknown,
        }
    }

    pub fn set_health(&self, h: Health) {
        self.health.store(h as u8, Ordering::Relaxed);
    }

    /// Whether passive health keeps it out at `now` (see [`now_ms`]).
    pub fn ejected_at(&self, now: u64) -> bool {
        now < self.outlier.ejected_until.load(Ordering::Relaxed)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Resolves when the target's drain time is over.
    pub fn drained(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.drained.cancelled()
    }

    /// Counts one request or connection on the target until dropped.
    pub fn lease(self: &Arc<Self>) -> Lease {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Lease(self.clone())
    }

    /// The target left its group: in-flight work has `drain` to finish,
    /// then it is cut. Returns at once; the wait runs on its own task.
    pub fn remove(self: &Arc<Self>, drain: Duration) {
        if self.removed.swap(true, Ordering::Relaxed) {
            return;
        }
        let target = self.clone();
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + drain;
            while target.in_flight() > 0 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if target.in_flight() > 0 {
                tracing::info!(target = %target.addr, in_flight = target.in_flight(), "drain time over; cutting what is left");
            }
            target.drained.cancel();
        });
    }
}

/// One request's or connection's hold on a target.
#[derive(Debug)]
pub struct Lease(Arc<Target>);

impl Lease {
    pub fn target(&self) -> &Arc<Target> {
        &self.0
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A target group as one snapshot declares it, with its live targets.
#[derive(Debug)]
pub struct Group {
    pub name: Arc<str>,
    pub protocol: TargetProtocol,
    pub version: ProtocolVersion,
    pub health_check: HealthCheck,
    pub load_balancing: LoadBalancing,
    pub fail_open: bool,
    pub drain: Duration,
    pub targets: Vec<Arc<Target>>,
    /// The network the group lives in when it is not this node's: its
    /// targets are reached through that network's gateways.
    pub remote: Option<Arc<str>>,
    /// HTTPS groups of this network: TLS to the targets. `Err` holds why
    /// the settings could not be loaded; such a group is never reached.
    pub tls: Result<Option<Arc<TargetTls>>, Arc<str>>,
    /// Passive health, when the group asks for it.
    pub outlier: Option<OutlierDetection>,
    next: AtomicUsize,
}

impl Group {
    pub fn new(
        name: &str,
        spec: &trellis_api::resource::TargetGroupSpec,
        targets: Vec<Arc<Target>>,
    ) -> Group {
        Group {
            name: Arc::from(name),
            protocol: spec.protocol,
            version: spec.protocol_version,
            health_check: spec.health_check.clone(),
            load_balancing: spec.load_balancing,
            fail_open: spec.fail_open,
            drain: Duration::from_secs(u64::from(spec.drain_seconds)),
            targets,
            remote: None,
            tls: Ok(None),
            outlier: spec.outlier_detection.clone(),
            next: AtomicUsize::new(0),
        }
    }

    /// A group of another network: no targets here.
    pub fn remote(
        name: &str,
        spec: &trellis_api::resource::TargetGroupSpec,
        network: &str,
    ) -> Group {
        Group {
            remote: Some(Arc::from(network)),
            ..Group::new(name, spec, Vec::new())
        }
    }

    /// Healthy and not-yet-checked targets: what a gateway reports.
    pub fn health_counts(&self) -> (usize, usize) {
        let count = |h: Health| self.targets.iter().filter(|t| t.health() == h).count();
        (count(Health::Healthy), count(Health::Unknown))
    }

    /// A target for the next request, other than `not` if another is
    /// eligible (a retry goes elsewhere). `None`: nothing eligible.
    pub fn pick(&self, not: Option<SocketAddr>) -> Option<&Arc<Target>> {
        // The clock is read only for groups with passive health.
        let now = self.outlier.as_ref().map(|_| now_ms());
        let in_ = |t: &Target| !now.is_some_and(|now| t.ejected_at(now));
        let tiers: [&dyn Fn(&Target) -> bool; 3] = [
            &|t| t.health() == Health::Healthy && in_(t),
            &|t| t.health() == Health::Unknown && in_(t),
            &|_| self.fail_open,
        ];
        for eligible in tiers {
            let ok = |t: &&Arc<Target>| eligible(t) && Some(t.addr) != not;
            let n = self.targets.iter().filter(ok).count();
            if n == 0 {
                continue;
            }
            let nth = |i: usize| self.targets.iter().filter(ok).nth(i % n);
            return match self.load_balancing {
                LoadBalancing::RoundRobin => nth(self.next.fetch_add(1, Ordering::Relaxed)),
                LoadBalancing::LeastRequest => {
                    // Power of two choices: the less busy of two at random.
                    let (a, b) = (nth(random()), nth(random()));
                    match (a, b) {
                        (Some(a), Some(b)) if b.in_flight() < a.in_flight() => Some(b),
                        (a, _) => a,
                    }
                }
            };
        }
        // Only the excluded target is eligible: better it than nothing.
        not.and_then(|addr| self.targets.iter().find(|t| t.addr == addr))
            .filter(|t| (t.health() != Health::Unhealthy && in_(t)) || self.fail_open)
    }

    /// One answer from `target` (`ok`: not a 5xx, and an answer at all),
    /// for passive health. `true` when this ejected the target.
    pub fn observe(&self, target: &Target, ok: bool) -> bool {
        match &self.outlier {
            Some(o) => self.observe_at(o, target, ok, now_ms()),
            None => false,
        }
    }

    fn observe_at(&self, o: &OutlierDetection, target: &Target, ok: bool, now: u64) -> bool {
        let state = &target.outlier;
        let base = o.base_ejection().as_millis() as u64;
        if ok {
            state.failures.store(0, Ordering::Relaxed);
            // A base ejection's time served well since it came back: the
            // next ejection is short again.
            let until = state.ejected_until.load(Ordering::Relaxed);
            if until != 0 && now >= until + base {
                state.ejections.store(0, Ordering::Relaxed);
            }
            return false;
        }
        let failures = state.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures < o.consecutive_failures || target.ejected_at(now) {
            return false;
        }
        let out = self.targets.iter().filter(|t| t.ejected_at(now)).count();
        let allowed = usize::try_from(o.max_ejected_percent).unwrap_or(0) * self.targets.len();
        if (out + 1) * 100 > allowed {
            return false;
        }
        let before = state.ejected_until.load(Ordering::Relaxed);
        let times = u64::from(state.ejections.load(Ordering::Relaxed) + 1).min(10);
        // One caller ejects it, however many saw the failure that did.
        let ejected = state
            .ejected_until
            .compare_exchange(
                before,
                now + base * times,
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_ok();
        if ejected {
            state.ejections.fetch_add(1, Ordering::Relaxed);
            state.failures.store(0, Ordering::Relaxed);
        }
        ejected
    }
}

/// A cheap thread-local random number (xorshift), for choices only.
pub fn random() -> usize {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let mut seed = [0u8; 8];
            let _ = getrandom::fill(&mut seed);
            u64::from_ne_bytes(seed) | 1
        });
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        x as usize
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(healths: &[Health], fail_open: bool, lb: LoadBalancing) -> Group {
        let mut spec: trellis_api::resource::TargetGroupSpec =
            serde_json::from_value(serde_json::json!({"network": "east"})).unwrap();
        spec.fail_open = fail_open;
        spec.load_balancing = lb;
        let targets = healths
            .iter()
            .enumerate()
            .map(|(i, h)| {
                Arc::new(Target::new(
                    format!("10.0.0.{}:80", i + 1).parse().unwrap(),
                    *h,
                ))
            })
            .collect();
        Group::new("g", &spec, targets)
    }

    fn picks(g: &Group, n: usize) -> Vec<u8> {
        (0..n)
            .map(|_| match g.pick(None).map(|t| t.addr.ip()) {
                Some(std::net::IpAddr::V4(ip)) => ip.octets()[3],
                _ => 0,
            })
            .collect()
    }

    #[test]
    fn healthy_first_then_unchecked_then_fail_open() {
        use Health::*;
        let rr = LoadBalancing::RoundRobin;
        assert_eq!(
            picks(&group(&[Healthy, Unhealthy, Healthy], true, rr), 4),
            [1, 3, 1, 3]
        );
        assert_eq!(picks(&group(&[Unhealthy, Unknown], true, rr), 2), [2, 2]);
        assert_eq!(
            picks(&group(&[Unhealthy, Unhealthy], true, rr), 4),
            [1, 2, 1, 2]
        );
        assert_eq!(picks(&group(&[Unhealthy, Unhealthy], false, rr), 2), [0, 0]);
        assert_eq!(picks(&group(&[], true, rr), 1), [0]);
    }

    #[test]
    fn a_retry_goes_to_another_target_when_there_is_one() {
        let g = group(
            &[Health::Healthy, Health::Healthy],
            true,
            LoadBalancing::RoundRobin,
        );
        let first = g.targets[0].addr;
        for _ in 0..4 {
            assert_ne!(g.pick(Some(first)).unwrap().addr, first);
        }
        let single = group(&[Health::Healthy], true, LoadBalancing::RoundRobin);
        let only = single.targets[0].addr;
        assert_eq!(single.pick(Some(only)).unwrap().addr, only);
    }

    #[test]
    fn least_request_avoids_the_busy_target() {
        let g = group(
            &[Health::Healthy, Health::Healthy],
            true,
            LoadBalancing::LeastRequest,
        );
        let _busy: Vec<Lease> = (0..10).map(|_| g.targets[0].lease()).collect();
        // Two random draws agree on the busy one a quarter of the time at
        // most; over 400 picks it must get far fewer than half.
        let to_busy = picks(&g, 400).iter().filter(|t| **t == 1).count();
        assert!(to_busy < 150, "{to_busy} of 400 to the busy target");
        assert_eq!(g.targets[0].in_flight(), 10);
    }

    #[test]
    fn failing_targets_are_ejected_for_longer_each_time_within_the_share() {
        let mut g = group(
            &[Health::Healthy, Health::Healthy, Health::Healthy],
            false,
            LoadBalancing::RoundRobin,
        );
        let o = OutlierDetection {
            consecutive_failures: 3,
            base_ejection_seconds: 10,
            max_ejected_percent: 34,
        };
        g.outlier = Some(o.clone());
        let (a, b) = (&g.targets[0], &g.targets[1]);
        let t0 = now_ms();
        // A success in between starts the count again.
        for ok in [false, false, true, false, false] {
            assert!(!g.observe_at(&o, a, ok, t0));
        }
        assert!(g.observe_at(&o, a, false, t0), "third failure in a row");
        assert!(a.ejected_at(t0) && a.ejected_at(t0 + 9_999) && !a.ejected_at(t0 + 10_000));
        // One of three is 33%: a second ejection would pass 34%.
        for _ in 0..5 {
            assert!(!g.observe_at(&o, b, false, t0));
        }
        assert!(!b.ejected_at(t0));
        // Back, failing again at once: twice as long.
        let t1 = t0 + 10_000;
        for _ in 0..2 {
            assert!(!g.observe_at(&o, a, false, t1));
        }
        assert!(g.observe_at(&o, a, false, t1));
        assert!(a.ejected_at(t1 + 19_999) && !a.ejected_at(t1 + 20_000));
        // Served well for a base interval after coming back: forgiven.
        let t2 = t1 + 30_000;
        assert!(!g.observe_at(&o, a, true, t2));
        for _ in 0..2 {
            g.observe_at(&o, a, false, t2);
        }
        assert!(g.observe_at(&o, a, false, t2));
        assert!(!a.ejected_at(t2 + 10_000));
    }

    #[test]
    fn an_ejected_target_gets_nothing_unless_the_group_fails_open() {
        let mut g = group(
            &[Health::Healthy, Health::Healthy],
            false,
            LoadBalancing::RoundRobin,
        );
        let o = OutlierDetection {
            consecutive_failures: 1,
            base_ejection_seconds: 60,
            max_ejected_percent: 100,
        };
        g.outlier = Some(o);
        assert!(g.observe(&g.targets[0], false));
        assert_eq!(picks(&g, 4), [2, 2, 2, 2]);
        assert!(g.observe(&g.targets[1], false));
        assert_eq!(picks(&g, 1), [0], "every target ejected, failing closed");
        g.fail_open = true;
        assert_eq!(picks(&g, 2), [1, 2]);
        // A group without passive health never ejects.
        let plain = group(&[Health::Healthy], false, LoadBalancing::RoundRobin);
        assert!(!plain.observe(&plain.targets[0], false));
    }

    #[tokio::test(start_paused = true)]
    async fn a_removed_target_is_cut_after_its_drain_time() {
        let t = Arc::new(Target::new("10.0.0.1:80".parse().unwrap(), Health::Healthy));
        let lease = t.lease();
        t.remove(Duration::from_secs(5));
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert!(!t.drained.is_cancelled(), "still draining");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(t.drained.is_cancelled());
        drop(lease);
        assert_eq!(t.in_flight(), 0);
    }
}
