//! Weighted choice among target groups, exact rather than approximate: the
//! weights become a schedule, built once per snapshot, in which each group
//! appears exactly as often as its weight (reduced by their common divisor)
//! and interleaved as evenly as possible (nginx's smooth weighted round
//! robin). Each request takes the next slot with one atomic add, so any
//! run of `len` consecutive requests splits exactly 90/10 for weights 90/10,
//! and weight 0 never gets one.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Debug)]
pub struct Split {
    groups: Vec<Arc<str>>,
    schedule: Box<[u16]>,
    next: AtomicUsize,
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Longest schedule kept; weights are at most 999 each, so this holds any
/// realistic action whole (the reduction by the gcd usually shrinks it a lot).
const MAX_SLOTS: u32 = 1 << 16;

impl Split {
    /// `None` when no group has a positive weight.
    pub fn new(choices: &[(&str, u32)]) -> Option<Split> {
        let choices: Vec<(&str, u32)> = choices.iter().copied().filter(|c| c.1 > 0).collect();
        let divisor = choices.iter().fold(0, |g, c| gcd(g, c.1));
        if divisor == 0 {
            return None;
        }
        let mut weights: Vec<u32> = choices.iter().map(|c| c.1 / divisor).collect();
        let total: u32 = weights.iter().sum();
        if total > MAX_SLOTS {
            // Keep the proportions to within 1/65536.
            weights = weights
                .iter()
                .map(|w| ((u64::from(*w) * u64::from(MAX_SLOTS)) / u64::from(total)).max(1) as u32)
                .collect();
        }
        Some(Split {
            groups: choices.iter().map(|c| Arc::from(c.0)).collect(),
            schedule: schedule(&weights).into_boxed_slice(),
            next: AtomicUsize::new(0),
        })
    }

    /// The groups with a positive weight.
    pub fn groups(&self) -> &[Arc<str>] {
        &self.groups
    }

    /// The group for the next request.
    pub fn pick(&self) -> &Arc<str> {
        let slot = self.next.fetch_add(1, Ordering::Relaxed) % self.schedule.len();
        &self.groups[usize::from(self.schedule[slot])]
    }
}

/// Smooth weighted round robin over one full cycle of `sum(weights)` slots.
fn schedule(weights: &[u32]) -> Vec<u16> {
    let total: i64 = weights.iter().map(|w| i64::from(*w)).sum();
    let mut current = vec![0i64; weights.len()];
    (0..total)
        .map(|_| {
            for (c, w) in current.iter_mut().zip(weights) {
                *c += i64::from(*w);
            }
            let (best, _) = current
                .iter()
                .enumerate()
                .max_by_key(|(i, c)| (**c, std::cmp::Reverse(*i)))
                .unwrap_or((0, &0));
            current[best] -= total;
            best as u16
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(split: &Split, n: usize) -> Vec<(String, usize)> {
        let mut c: Vec<(String, usize)> = Vec::new();
        for _ in 0..n {
            let g = split.pick().to_string();
            match c.iter_mut().find(|(name, _)| *name == g) {
                Some((_, k)) => *k += 1,
                None => c.push((g, 1)),
            }
        }
        c.sort();
        c
    }

    /// (weights, requests, expected counts)
    type Case<'a> = (&'a [(&'a str, u32)], usize, &'a [(&'a str, usize)]);

    #[test]
    fn shares_are_exact_over_every_cycle() {
        let cases: &[Case<'_>] = &[
            (
                &[("blue", 90), ("green", 10)],
                10_000,
                &[("blue", 9000), ("green", 1000)],
            ),
            (&[("blue", 0), ("green", 100)], 1000, &[("green", 1000)]),
            (
                &[("a", 1), ("b", 1), ("c", 1)],
                300,
                &[("a", 100), ("b", 100), ("c", 100)],
            ),
            (&[("a", 999), ("b", 1)], 1000, &[("a", 999), ("b", 1)]),
            (&[("a", 3), ("b", 0), ("c", 7)], 20, &[("a", 6), ("c", 14)]),
        ];
        for (weights, n, expected) in cases {
            let split = Split::new(weights).unwrap();
            let expected: Vec<(String, usize)> =
                expected.iter().map(|(g, k)| (g.to_string(), *k)).collect();
            assert_eq!(counts(&split, *n), expected, "{weights:?}");
        }
    }

    #[test]
    fn the_minority_group_is_spread_out_not_bunched() {
        // 90/10 reduces to 9/1: green once in every 10, never twice in a row.
        let split = Split::new(&[("blue", 90), ("green", 10)]).unwrap();
        let picks: Vec<bool> = (0..100).map(|_| &**split.pick() == "green").collect();
        for window in picks.chunks(10) {
            assert_eq!(window.iter().filter(|g| **g).count(), 1);
        }
        let split = Split::new(&[("a", 2), ("b", 1)]).unwrap();
        let seq: String = (0..6).map(|_| split.pick().to_string()).collect();
        assert_eq!(seq, "abaaba");
    }

    #[test]
    fn all_zero_or_empty_has_no_split() {
        assert!(Split::new(&[("a", 0), ("b", 0)]).is_none());
        assert!(Split::new(&[]).is_none());
    }
}
