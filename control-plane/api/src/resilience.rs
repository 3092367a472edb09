//! What a route does when its targets fail or are slow, and what it copies
//! elsewhere: per-route timeouts and retries, request mirroring, and a
//! target group's passive health (outlier ejection). The Gateway API's
//! `timeouts`, `retry` and `RequestMirror`, and Envoy's outlier detection,
//! in Trellis's words.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A copy of the requests a rule forwards, sent to another target group;
/// its answer is thrown away (the client only ever sees the primary's).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Mirror {
    pub target_group: String,
    /// The share of requests copied, 0..=100.
    #[serde(default = "hundred")]
    pub percent: u32,
}

fn hundred() -> u32 {
    100
}

/// A route's own time limits; unset ones are the listener's.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteTimeouts {
    /// From the request's arrival to the target's response head, every
    /// try and backoff included (the Gateway API's `timeouts.request`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_ms: Option<u32>,
    /// One try's limit (the Gateway API's `timeouts.backendRequest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_ms: Option<u32>,
}

impl RouteTimeouts {
    pub fn request(&self) -> Option<Duration> {
        self.request_ms
            .map(|ms| Duration::from_millis(u64::from(ms)))
    }

    pub fn per_try(&self) -> Option<Duration> {
        self.per_try_ms
            .map(|ms| Duration::from_millis(u64::from(ms)))
    }
}

/// What makes a try worth another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RetryOn {
    /// The target could not be connected to.
    ConnectFailure,
    /// The connection broke before the response head.
    Reset,
    /// No response head within the per-try time.
    Timeout,
    /// Any 5xx from the target.
    #[serde(rename = "5xx")]
    ServerError,
    /// 502, 503 or 504 from the target.
    GatewayError,
}

impl RetryOn {
    pub fn as_str(self) -> &'static str {
        match self {
            RetryOn::ConnectFailure => "connectFailure",
            RetryOn::Reset => "reset",
            RetryOn::Timeout => "timeout",
            RetryOn::ServerError => "5xx",
            RetryOn::GatewayError => "gatewayError",
        }
    }
}

/// Retries of a route's requests. Only requests without a body and of an
/// idempotent method are tried again (a streamed body cannot be sent
/// twice), each on another target when the group has one, after a
/// jittered backoff, and only within the budget.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Retry {
    /// Tries after the first, 1..=5.
    #[serde(default = "two")]
    pub attempts: u32,
    #[serde(default = "default_on", skip_serializing_if = "Vec::is_empty")]
    pub on: Vec<RetryOn>,
    /// Target statuses (400..=599) retried besides those `on` names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub codes: Vec<u16>,
    /// The first backoff's ceiling; each further try doubles it, up to ten
    /// times this. The wait is drawn uniformly below the ceiling.
    #[serde(default = "default_backoff")]
    pub backoff_ms: u32,
    /// Retries may add at most this share to the route's load, counted
    /// over the last ten seconds on each node (a floor of three retries
    /// lets a quiet route retry at all).
    #[serde(default = "default_budget")]
    pub budget_percent: u32,
}

fn two() -> u32 {
    2
}

fn default_on() -> Vec<RetryOn> {
    vec![RetryOn::ConnectFailure, RetryOn::Reset]
}

fn default_backoff() -> u32 {
    25
}

fn default_budget() -> u32 {
    20
}

impl Retry {
    /// Whether a target's `status` is worth another try.
    pub fn retries_status(&self, status: u16) -> bool {
        self.codes.contains(&status)
            || (status >= 500 && self.on.contains(&RetryOn::ServerError))
            || (matches!(status, 502..=504) && self.on.contains(&RetryOn::GatewayError))
    }
}

/// Passive health: a target whose answers fail `consecutiveFailures`
/// times in a row (a 5xx, or no answer at all) gets no requests for a
/// while, longer each time it is ejected again; never more than
/// `maxEjectedPercent` of a group's targets at once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutlierDetection {
    #[serde(default = "five")]
    pub consecutive_failures: u32,
    /// The first ejection's length; the n-th lasts n times this (at most
    /// ten times).
    #[serde(default = "thirty")]
    pub base_ejection_seconds: u32,
    #[serde(default = "fifty")]
    pub max_ejected_percent: u32,
}

fn five() -> u32 {
    5
}

fn thirty() -> u32 {
    30
}

fn fifty() -> u32 {
    50
}

impl OutlierDetection {
    pub fn base_ejection(&self) -> Duration {
        Duration::from_secs(u64::from(self.base_ejection_seconds))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_status_conditions() {
        let r: Retry = serde_json::from_value(serde_json::json!({})).unwrap();
        assert_eq!(r.attempts, 2);
        assert_eq!(r.on, [RetryOn::ConnectFailure, RetryOn::Reset]);
        assert!(!r.retries_status(503));
        let r: Retry =
            serde_json::from_value(serde_json::json!({"on": ["gatewayError"], "codes": [429]}))
                .unwrap();
        assert!(r.retries_status(503) && r.retries_status(429));
        assert!(!r.retries_status(500) && !r.retries_status(404));
        let r: Retry = serde_json::from_value(serde_json::json!({"on": ["5xx"]})).unwrap();
        assert!(r.retries_status(500) && r.retries_status(599) && !r.retries_status(499));
        let bad = serde_json::from_value::<Retry>(serde_json::json!({"on": ["sometimes"]}));
        assert!(bad.is_err());
        let o: OutlierDetection = serde_json::from_value(serde_json::json!({})).unwrap();
        assert_eq!(
            (
                o.consecutive_failures,
                o.base_ejection(),
                o.max_ejected_percent
            ),
            (5, Duration::from_secs(30), 50)
        );
    }
}
