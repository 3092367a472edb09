//! IAM-style policy evaluation over `trellis_api::policy` documents.
//!
//! One document: an explicit `Deny` whose statement matches wins; else a
//! matching `Allow` allows; else it denies (nothing matched). A statement
//! matches when its principal, action, resource and every condition do.
//! The request's action is `vpc-lattice-svcs:Invoke` (`trellis:Invoke` is
//! an alias); its resources are the service and request path, written as
//! Lattice does (`arn:aws:vpc-lattice:REGION:000000000000:service/NAME/PATH`)
//! and as Trellis does (`trellis:service/NAME/PATH`); the account field of a
//! pasted ARN matches any account. Condition semantics
//! follow IAM: a missing key fails a positive operator and satisfies a
//! negated one; `...IfExists` is satisfied by a missing key; `Null` tests
//! presence; `ForAnyValue:`/`ForAllValues:` quantify over a key's values.

use std::borrow::Cow;
use std::net::IpAddr;
use trellis_api::policy::{
    Condition, Effect, Key, Matching, Operator, PolicyDocument, Principal as PolicyPrincipal,
    SetQualifier, Statement, epoch_seconds,
};

pub const ACTION: &str = "vpc-lattice-svcs:Invoke";

/// Who signed the request, as policies see it.
#[derive(Debug, Default)]
pub struct Principal {
    /// `trellis:identity/NAME`, then aliases.
    pub names: Vec<String>,
    pub tags: std::collections::BTreeMap<String, String>,
}

/// Everything a condition key or a resource may refer to.
pub struct Request<'a> {
    /// `None` for an unsigned request.
    pub principal: Option<&'a Principal>,
    pub region: &'a str,
    pub source_network: &'a str,
    pub service: &'a str,
    pub service_network: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a http::HeaderMap,
    pub port: u16,
    pub source_ip: IpAddr,
    /// `aws:SecureTransport`: the client's connection is TLS.
    pub secure: bool,
    /// Seconds since the epoch.
    pub now: u64,
    /// The caller's cgroup path, where the datapath records it.
    pub workload: Option<&'a str>,
}

/// The account in ARNs Trellis writes: its resources belong to no AWS account.
const ACCOUNT: &str = "000000000000";

impl Request<'_> {
    /// The values of a condition key; empty when the request lacks it.
    fn values(&self, key: &Key) -> Vec<Cow<'_, str>> {
        let one = |s: String| vec![Cow::Owned(s)];
        match key {
            Key::PrincipalType => one(match self.principal {
                Some(_) => "Authenticated",
                None => "Anonymous",
            }
            .into()),
            Key::Principal => self
                .principal
                .map(|p| p.names.iter().map(|n| Cow::Borrowed(n.as_str())).collect())
                .unwrap_or_default(),
            Key::PrincipalTag(tag) => self
                .principal
                .and_then(|p| p.tags.get(tag))
                .map(|v| vec![Cow::Borrowed(v.as_str())])
                .unwrap_or_default(),
            Key::SourceIp => one(self.source_ip.to_string()),
            Key::SecureTransport => one(self.secure.to_string()),
            Key::CurrentTime => one(humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(self.now),
            )
            .to_string()),
            Key::EpochTime => one(self.now.to_string()),
            Key::SourceNetwork => vec![Cow::Borrowed(self.source_network)],
            Key::SourceVpcOwnerAccount => vec![Cow::Borrowed(ACCOUNT)],
            Key::RequestMethod => vec![Cow::Borrowed(self.method)],
            Key::RequestPath => vec![Cow::Borrowed(self.path)],
            Key::RequestHeader(name) => self
                .headers
                .get_all(name.as_str())
                .iter()
                .filter_map(|v| v.to_str().ok())
                .map(Cow::Borrowed)
                .collect(),
            Key::RequestQueryString(name) => self
                .query
                .unwrap_or_default()
                .split('&')
                .filter_map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (k == name).then_some(Cow::Borrowed(v))
                })
                .collect(),
            Key::ServiceArn => one(self.arn("service", self.service)),
            Key::ServiceNetworkArn => one(self.arn("servicenetwork", self.service_network)),
            Key::Service => vec![Cow::Borrowed(self.service)],
            Key::ServiceNetwork => vec![Cow::Borrowed(self.service_network)],
            Key::Port => one(self.port.to_string()),
            Key::Workload => self.workload.map(Cow::Borrowed).into_iter().collect(),
            Key::WorkloadUnit => self
                .workload
                .and_then(trellis_api::workload::unit)
                .map(Cow::Borrowed)
                .into_iter()
                .collect(),
            Key::WorkloadContainer => self
                .workload
                .and_then(trellis_api::workload::container)
                .map(Cow::Borrowed)
                .into_iter()
                .collect(),
            Key::WorkloadPod => self
                .workload
                .and_then(trellis_api::workload::pod)
                .map(Cow::Owned)
                .into_iter()
                .collect(),
        }
    }

    fn arn(&self, kind: &str, name: &str) -> String {
        format!(
            "arn:aws:vpc-lattice:{}:{ACCOUNT}:{kind}/{name}",
            self.region
        )
    }

    /// The request's resources, as a Lattice ARN and as Trellis names them.
    fn resources(&self) -> [String; 2] {
        let join = |parts: &[&str]| {
            let mut s = String::with_capacity(parts.iter().map(|p| p.len()).sum());
            parts.iter().for_each(|p| s.push_str(p));
            s
        };
        [
            join(&[
                "arn:aws:vpc-lattice:",
                self.region,
                ":",
                ACCOUNT,
                ":service/",
                self.service,
                self.path,
            ]),
            join(&["trellis:service/", self.service, self.path]),
        ]
    }
}

/// `*` any run of characters, `?` any one.
pub fn glob(pattern: &str, text: &str, ignore_case: bool) -> bool {
    let eq = |a: u8, b: u8| {
        if ignore_case {
            a.eq_ignore_ascii_case(&b)
        } else {
            a == b
        }
    };
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == b'?' || (p[pi] != b'*' && eq(p[pi], t[ti]))) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// The outcome of one document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome<'p> {
    /// Allowed by this statement (its Sid, else `Statement[i]`).
    Allow(&'p str),
    Deny(&'p str),
    /// No statement matched.
    NoMatch,
}

/// A document made ready for evaluation, once per snapshot: statement names
/// fixed, `trellis:` actions and pasted Lattice ARNs rewritten, so a request
/// costs no rewriting (condition keys come parsed, `trellis_api::policy::Key`).
#[derive(Debug)]
pub struct Policy {
    statements: Vec<(String, Statement)>,
}

impl Policy {
    pub fn compile(doc: &PolicyDocument) -> Policy {
        let statements = doc
            .statements
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let name = s.sid.clone().unwrap_or_else(|| format!("Statement[{i}]"));
                let mut s = s.clone();
                for a in matching_list(&mut s.action) {
                    if let Some(rest) = a.strip_prefix("trellis:") {
                        *a = format!("vpc-lattice-svcs:{rest}");
                    }
                }
                for r in matching_list(&mut s.resource) {
                    *r = any_account(r).into_owned();
                }
                (name, s)
            })
            .collect();
        Policy { statements }
    }
}

fn matching_list(m: &mut Matching<Vec<String>>) -> &mut Vec<String> {
    match m {
        Matching::Is(l) | Matching::Not(l) => l,
    }
}

pub fn evaluate<'p>(policy: &'p Policy, req: &Request<'_>) -> Outcome<'p> {
    let resources = req.resources();
    let mut allowed = None;
    for (name, s) in &policy.statements {
        if !statement_matches(s, req, &resources) {
            continue;
        }
        match s.effect {
            Effect::Deny => return Outcome::Deny(name),
            Effect::Allow => {
                allowed.get_or_insert(name);
            }
        }
    }
    allowed.map_or(Outcome::NoMatch, |n| Outcome::Allow(n))
}

fn statement_matches(s: &Statement, req: &Request<'_>, resources: &[String; 2]) -> bool {
    let principal = match &s.principal {
        Matching::Is(p) => principal_matches(p, req),
        Matching::Not(p) => !principal_matches(p, req),
    };
    let action = |list: &Vec<String>| list.iter().any(|a| glob(a, ACTION, true));
    let action = match &s.action {
        Matching::Is(l) => action(l),
        Matching::Not(l) => !action(l),
    };
    let resource = |list: &Vec<String>| {
        list.iter()
            .any(|r| resources.iter().any(|have| glob(r, have, false)))
    };
    let resource = match &s.resource {
        Matching::Is(l) => resource(l),
        Matching::Not(l) => !resource(l),
    };
    principal && action && resource && s.conditions.iter().all(|c| condition_holds(c, req))
}

/// A pasted Lattice resource ARN names its AWS account; Trellis services
/// have none, so the account field matches any.
fn any_account(pattern: &str) -> Cow<'_, str> {
    let Some(rest) = pattern.strip_prefix("arn:aws:vpc-lattice:") else {
        return Cow::Borrowed(pattern);
    };
    let mut fields = rest.splitn(3, ':');
    match (fields.next(), fields.next(), fields.next()) {
        (Some(region), Some(_account), Some(resource)) => {
            Cow::Owned(format!("arn:aws:vpc-lattice:{region}:*:{resource}"))
        }
        _ => Cow::Borrowed(pattern),
    }
}

fn principal_matches(p: &PolicyPrincipal, req: &Request<'_>) -> bool {
    match p {
        PolicyPrincipal::Any => true,
        PolicyPrincipal::Named(names) => req
            .principal
            .is_some_and(|who| who.names.iter().any(|n| names.contains(n))),
    }
}

fn condition_holds(c: &Condition, req: &Request<'_>) -> bool {
    let values = req.values(&c.key);
    if c.operator == Operator::Null {
        let wants_absent = c.values.iter().any(|v| v == "true");
        return values.is_empty() == wants_absent;
    }
    if values.is_empty() {
        return match c.qualifier {
            SetQualifier::ForAllValues => true,
            _ => c.if_exists || (c.qualifier == SetQualifier::None && c.operator.negated()),
        };
    }
    let one = |v: &str| matches_any(c.operator, v, &c.values);
    match c.qualifier {
        SetQualifier::ForAllValues => values.iter().all(|v| one(v)),
        SetQualifier::ForAnyValue => values.iter().any(|v| one(v)),
        // A plain operator on a multi-valued key: any value will do for a
        // positive operator, every value must stay clear for a negated one.
        SetQualifier::None if c.operator.negated() => values.iter().all(|v| one(v)),
        SetQualifier::None => values.iter().any(|v| one(v)),
    }
}

/// Whether `have` satisfies `op` against the condition's values (for a
/// negated operator: matches none of them).
fn matches_any(op: Operator, have: &str, wanted: &[String]) -> bool {
    use Operator::*;
    let positive = |w: &str| -> bool {
        match op {
            StringEquals | StringNotEquals | ArnEquals => have == w,
            StringEqualsIgnoreCase | StringNotEqualsIgnoreCase => have.eq_ignore_ascii_case(w),
            StringLike | StringNotLike | ArnLike => glob(w, have, false),
            Bool => have.eq_ignore_ascii_case(w),
            IpAddress | NotIpAddress => in_network(have, w),
            NumericEquals | NumericNotEquals => number(have, w, |a, b| a == b),
            NumericLessThan => number(have, w, |a, b| a < b),
            NumericLessThanEquals => number(have, w, |a, b| a <= b),
            NumericGreaterThan => number(have, w, |a, b| a > b),
            NumericGreaterThanEquals => number(have, w, |a, b| a >= b),
            DateEquals | DateNotEquals => date(have, w, |a, b| a == b),
            DateLessThan => date(have, w, |a, b| a < b),
            DateGreaterThan => date(have, w, |a, b| a > b),
            Null => false,
        }
    };
    let any = wanted.iter().any(|w| positive(w));
    if op.negated() { !any } else { any }
}

fn in_network(ip: &str, cidr: &str) -> bool {
    let Ok(ip) = ip.parse::<IpAddr>() else {
        return false;
    };
    match cidr.parse::<ipnet::IpNet>() {
        Ok(net) => net.contains(&ip),
        Err(_) => cidr.parse::<IpAddr>().is_ok_and(|one| one == ip),
    }
}

fn number(a: &str, b: &str, f: impl Fn(f64, f64) -> bool) -> bool {
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(a), Ok(b)) => f(a, b),
        _ => false,
    }
}

fn date(a: &str, b: &str, f: impl Fn(u64, u64) -> bool) -> bool {
    match (epoch_seconds(a), epoch_seconds(b)) {
        (Some(a), Some(b)) => f(a, b),
        _ => false,
    }
}

#[cfg(test)]
mod tests;
