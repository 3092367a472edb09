//! Flow records: what happened to one HTTP request or TCP connection, as a
//! node saw it, gathered by the control plane from every node and read by
//! `trellis observe`. A flow is the node's access-log line in a shape every
//! party shares, with its verdict: allowed, or why not.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// One request or connection.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Flow {
    /// Unix milliseconds, when it began.
    pub time_ms: u64,
    /// The node that proxied it, and the network it is a node of.
    pub node: String,
    pub network: String,
    /// "http" or "tcp".
    pub kind: String,
    pub client: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// How the caller was known: `sigv4`, `sigv4a`, `workload`, `anonymous`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authn: Option<String>,
    pub service: String,
    pub listener: String,
    pub rule: String,
    pub target_group: String,
    pub target: String,
    pub method: String,
    pub path: String,
    pub status: u16,
    pub verdict: Verdict,
    /// Why: the deciding policy statement (allowed or denied), or the
    /// refusal (`no-healthy-target`, `connect-failed`, ...).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub duration_ms: f64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Forwarded (whatever the target answered).
    #[default]
    Allowed,
    /// Refused by auth: a policy, a signature, a key.
    Denied,
    /// Trellis answered itself for another reason (no target, no route,
    /// connect failed, timeout...).
    Error,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allowed => "allowed",
            Verdict::Denied => "denied",
            Verdict::Error => "error",
        }
    }
}

/// A class of statuses: `5xx`, or one status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusFilter {
    Class(u16),
    Exact(u16),
}

impl std::str::FromStr for StatusFilter {
    type Err = String;
    fn from_str(s: &str) -> Result<StatusFilter, String> {
        let bad = || format!("{s:?}: a status (404) or a class (5xx)");
        match s.strip_suffix("xx") {
            Some(c) => match c.parse::<u16>() {
                Ok(c @ 1..=5) => Ok(StatusFilter::Class(c)),
                _ => Err(bad()),
            },
            None => match s.parse::<u16>() {
                Ok(n @ 100..=599) => Ok(StatusFilter::Exact(n)),
                _ => Err(bad()),
            },
        }
    }
}

impl std::fmt::Display for StatusFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StatusFilter::Class(c) => write!(f, "{c}xx"),
            StatusFilter::Exact(n) => write!(f, "{n}"),
        }
    }
}

/// Which flows a reader wants; every field given must match.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FlowFilter {
    pub network: Option<String>,
    pub service: Option<String>,
    pub from_identity: Option<String>,
    pub target_group: Option<String>,
    pub verdict: Option<Verdict>,
    pub status: Option<StatusFilter>,
    /// Unix milliseconds: flows from then on.
    pub since_ms: Option<u64>,
}

impl FlowFilter {
    pub fn matches(&self, f: &Flow) -> bool {
        let eq = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        eq(&self.network, &f.network)
            && eq(&self.service, &f.service)
            && eq(&self.target_group, &f.target_group)
            && self
                .from_identity
                .as_deref()
                .is_none_or(|w| f.identity.as_deref() == Some(w))
            && self.verdict.is_none_or(|v| v == f.verdict)
            && self.status.is_none_or(|s| match s {
                StatusFilter::Class(c) => f.status / 100 == c,
                StatusFilter::Exact(n) => f.status == n,
            })
            && self.since_ms.is_none_or(|t| f.time_ms >= t)
    }

    /// As query parameters (`&`-joined, each value percent-encoded).
    pub fn to_query(&self) -> String {
        let mut out = Vec::new();
        let mut put = |k: &str, v: &str| out.push(format!("{k}={}", encode(v)));
        if let Some(v) = &self.network {
            put("network", v);
        }
        if let Some(v) = &self.service {
            put("service", v);
        }
        if let Some(v) = &self.from_identity {
            put("fromIdentity", v);
        }
        if let Some(v) = &self.target_group {
            put("targetGroup", v);
        }
        if let Some(v) = self.verdict {
            put("verdict", v.as_str());
        }
        if let Some(v) = self.status {
            put("status", &v.to_string());
        }
        if let Some(v) = self.since_ms {
            put("sinceMs", &v.to_string());
        }
        out.join("&")
    }

    /// Reads one query parameter into the filter; `false` if `key` is not
    /// a filter's.
    pub fn set(&mut self, key: &str, value: &str) -> Result<bool, String> {
        let text = || Some(value.to_string());
        match key {
            "network" => self.network = text(),
            "service" => self.service = text(),
            "fromIdentity" => self.from_identity = text(),
            "targetGroup" => self.target_group = text(),
            "verdict" => {
                self.verdict = Some(match value {
                    "allowed" => Verdict::Allowed,
                    "denied" => Verdict::Denied,
                    "error" => Verdict::Error,
                    v => return Err(format!("verdict: {v:?} is not allowed, denied or error")),
                })
            }
            "status" => self.status = Some(value.parse()?),
            "sinceMs" => {
                self.since_ms = Some(
                    value
                        .parse()
                        .map_err(|_| format!("sinceMs: {value:?} is not Unix milliseconds"))?,
                )
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' | b':' => {
                (b as char).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
}

/// A page of flows from the control plane: those after `after`, and the
/// cursor to ask from next.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FlowPage {
    pub items: Vec<Flow>,
    pub next: u64,
}

/// A batch a node sends.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FlowBatch {
    pub items: Vec<Flow>,
    /// Flows the node dropped (queue full) since its last batch.
    #[serde(default)]
    pub dropped: u64,
    /// The node's counters and health, about once a second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<NodeReport>,
}

/// What a node counted and checked, as its Prometheus metrics say it: the
/// console's rates, splits and health come from these, whole, not from
/// the sampled flows.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeReport {
    pub node: String,
    /// When the node process started (Unix milliseconds): counters begin
    /// at zero with each process.
    pub started_ms: u64,
    /// The snapshot revision the node runs.
    pub revision: u64,
    /// `trellis_proxy_requests_total`, every series, since `started_ms`.
    pub requests: Vec<RequestCount>,
    /// `trellis_target_healthy`, every target of every group the node
    /// reaches.
    pub health: Vec<TargetHealth>,
}

/// One series of `trellis_proxy_requests_total`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestCount {
    pub service: String,
    pub listener: String,
    pub rule: String,
    pub target_group: String,
    pub code: u16,
    pub verdict: Verdict,
    pub count: u64,
}

/// A target's health as one node's checks see it: `healthy`,
/// `unhealthy` or `unknown` (not checked yet); and whether the node's
/// passive health (outlier detection) keeps it out now.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetHealth {
    pub target_group: String,
    pub target: String,
    pub health: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ejected: bool,
}

/// How long ago `d` was, as Unix milliseconds.
pub fn ago_ms(d: Duration) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    now.saturating_sub(d).as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(service: &str, verdict: Verdict, status: u16, identity: Option<&str>) -> Flow {
        Flow {
            time_ms: 1_000,
            network: "east".into(),
            service: service.into(),
            target_group: format!("{service}-blue"),
            verdict,
            status,
            identity: identity.map(String::from),
            ..Flow::default()
        }
    }

    #[test]
    fn filters_select_what_they_say() {
        let flows = [
            flow("shop", Verdict::Allowed, 200, Some("ci")),
            flow("shop", Verdict::Denied, 403, None),
            flow("cart", Verdict::Error, 503, None),
            flow("cart", Verdict::Allowed, 502, Some("ci")),
        ];
        let picked = |f: FlowFilter| -> Vec<usize> {
            (0..flows.len()).filter(|&i| f.matches(&flows[i])).collect()
        };
        let all = FlowFilter::default();
        assert_eq!(picked(all.clone()), [0, 1, 2, 3]);
        let table: [(&str, &str, &[usize]); 10] = [
            ("service", "shop", &[0, 1]),
            ("verdict", "denied", &[1]),
            ("verdict", "error", &[2]),
            ("status", "5xx", &[2, 3]),
            ("status", "403", &[1]),
            ("fromIdentity", "ci", &[0, 3]),
            ("targetGroup", "cart-blue", &[2, 3]),
            ("network", "west", &[]),
            ("sinceMs", "1000", &[0, 1, 2, 3]),
            ("sinceMs", "1001", &[]),
        ];
        for (key, value, want) in table {
            let mut f = FlowFilter::default();
            assert!(f.set(key, value).unwrap(), "{key}");
            assert_eq!(picked(f.clone()), want, "{key}={value}");
            // The query form reads back to the same filter.
            let mut back = FlowFilter::default();
            for pair in f.to_query().split('&') {
                let (k, v) = pair.split_once('=').unwrap();
                back.set(k, v).unwrap();
            }
            assert_eq!(back, f);
        }
        let mut both = FlowFilter::default();
        both.set("service", "cart").unwrap();
        both.set("status", "5xx").unwrap();
        both.set("verdict", "allowed").unwrap();
        assert_eq!(picked(both), [3]);
        let mut f = FlowFilter::default();
        assert!(f.set("verdict", "maybe").is_err());
        assert!(f.set("status", "6xx").is_err());
        assert!(f.set("status", "99").is_err());
        assert!(!f.set("other", "x").unwrap());
    }
}
