//! The IAM policy grammar (Version, Statement, Effect, Principal, Action,
//! Resource, Condition), so that a VPC Lattice auth policy can be pasted in.
//!
//! This module parses and checks documents; it takes them from JSON values
//! (YAML mappings are converted to JSON first) or from JSON strings, and names
//! the offending element by its path (`Statement[1].Condition.StringLike`).

use serde_json::Value;
use std::collections::BTreeMap;
use thiserror::Error;

/// The largest accepted policy, in bytes of compact JSON (VPC Lattice's limit).
pub const MAX_POLICY_BYTES: usize = 10_000;

pub const ACTION_PREFIXES: [&str; 2] = ["vpc-lattice-svcs:", "trellis:"];

const VERSIONS: [&str; 2] = ["2012-10-17", "2008-10-17"];

/// A condition operator, without its set qualifier or `IfExists`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operator {
    StringEquals,
    StringNotEquals,
    StringEqualsIgnoreCase,
    StringNotEqualsIgnoreCase,
    StringLike,
    StringNotLike,
    NumericEquals,
    NumericNotEquals,
    NumericLessThan,
    NumericLessThanEquals,
    NumericGreaterThan,
    NumericGreaterThanEquals,
    DateEquals,
    DateNotEquals,
    DateLessThan,
    DateGreaterThan,
    Bool,
    IpAddress,
    NotIpAddress,
    ArnEquals,
    ArnLike,
    Null,
}

impl Operator {
    const ALL: [(&'static str, Operator); 22] = [
        ("StringEquals", Operator::StringEquals),
        ("StringNotEquals", Operator::StringNotEquals),
        ("StringEqualsIgnoreCase", Operator::StringEqualsIgnoreCase),
        (
            "StringNotEqualsIgnoreCase",
            Operator::StringNotEqualsIgnoreCase,
        ),
        ("StringLike", Operator::StringLike),
        ("StringNotLike", Operator::StringNotLike),
        ("NumericEquals", Operator::NumericEquals),
        ("NumericNotEquals", Operator::NumericNotEquals),
        ("NumericLessThan", Operator::NumericLessThan),
        ("NumericLessThanEquals", Operator::NumericLessThanEquals),
        ("NumericGreaterThan", Operator::NumericGreaterThan),
        (
            "NumericGreaterThanEquals",
            Operator::NumericGreaterThanEquals,
        ),
        ("DateEquals", Operator::DateEquals),
        ("DateNotEquals", Operator::DateNotEquals),
        ("DateLessThan", Operator::DateLessThan),
        ("DateGreaterThan", Operator::DateGreaterThan),
        ("Bool", Operator::Bool),
        ("IpAddress", Operator::IpAddress),
        ("NotIpAddress", Operator::NotIpAddress),
        ("ArnEquals", Operator::ArnEquals),
        ("ArnLike", Operator::ArnLike),
        ("Null", Operator::Null),
    ];

    fn parse(name: &str) -> Option<Operator> {
        Operator::ALL
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, o)| *o)
    }

    /// Operators that hold when no value matches.
    pub fn negated(self) -> bool {
        matches!(
            self,
            Operator::StringNotEquals
                | Operator::StringNotEqualsIgnoreCase
                | Operator::StringNotLike
                | Operator::NumericNotEquals
                | Operator::DateNotEquals
                | Operator::NotIpAddress
        )
    }

    /// The values this operator compares: `None` for the string operators
    /// (IAM compares any key as text) and `Null` (presence).
    fn kind(self) -> Option<Kind> {
        use Operator::*;
        match self {
            NumericEquals
            | NumericNotEquals
            | NumericLessThan
            | NumericLessThanEquals
            | NumericGreaterThan
            | NumericGreaterThanEquals => Some(Kind::Number),
            DateEquals | DateNotEquals | DateLessThan | DateGreaterThan => Some(Kind::Date),
            Bool => Some(Kind::Bool),
            IpAddress | NotIpAddress => Some(Kind::Ip),
            ArnEquals | ArnLike => Some(Kind::Arn),
            _ => None,
        }
    }
}

/// What a condition key's values are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Text,
    Arn,
    Number,
    Date,
    Bool,
    Ip,
}

/// A condition key Trellis evaluates. The node's evaluator reads requests
/// by this type and the control plane's validator parses keys into it, so
/// a key is valid at apply exactly when the node can evaluate it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Key {
    PrincipalType,
    /// `aws:PrincipalArn`, `aws:PrincipalId`, `trellis:Principal`.
    Principal,
    PrincipalTag(String),
    SourceIp,
    SecureTransport,
    CurrentTime,
    EpochTime,
    /// `vpc-lattice-svcs:SourceVpc`, `trellis:SourceNetwork`.
    SourceNetwork,
    SourceVpcOwnerAccount,
    RequestMethod,
    RequestPath,
    RequestHeader(String),
    RequestQueryString(String),
    ServiceArn,
    ServiceNetworkArn,
    Service,
    ServiceNetwork,
    Port,
    /// `trellis:Workload`: the caller's cgroup path (issue 22).
    Workload,
    /// `trellis:WorkloadUnit`: the systemd unit it runs in.
    WorkloadUnit,
    /// `trellis:WorkloadContainer`: its container's id.
    WorkloadContainer,
    /// `trellis:WorkloadPod`: its Kubernetes pod's UID.
    WorkloadPod,
}

/// Keys by their lowercase name; `/` ends the ones that take a name after
/// it (a tag, a header, a query parameter).
const KEYS: [(&str, Kind); 30] = [
    ("aws:PrincipalType", Kind::Text),
    ("aws:PrincipalArn", Kind::Arn),
    ("aws:PrincipalId", Kind::Text),
    ("trellis:Principal", Kind::Text),
    ("aws:PrincipalTag/", Kind::Text),
    ("aws:SourceIp", Kind::Ip),
    ("aws:SecureTransport", Kind::Bool),
    ("aws:CurrentTime", Kind::Date),
    ("aws:EpochTime", Kind::Date),
    ("vpc-lattice-svcs:SourceVpc", Kind::Text),
    ("trellis:SourceNetwork", Kind::Text),
    ("vpc-lattice-svcs:SourceVpcOwnerAccount", Kind::Text),
    ("vpc-lattice-svcs:RequestMethod", Kind::Text),
    ("trellis:RequestMethod", Kind::Text),
    ("vpc-lattice-svcs:RequestPath", Kind::Text),
    ("trellis:RequestPath", Kind::Text),
    ("vpc-lattice-svcs:RequestHeader/", Kind::Text),
    ("trellis:RequestHeader/", Kind::Text),
    ("vpc-lattice-svcs:RequestQueryString/", Kind::Text),
    ("trellis:RequestQueryString/", Kind::Text),
    ("vpc-lattice-svcs:ServiceArn", Kind::Arn),
    ("vpc-lattice-svcs:ServiceNetworkArn", Kind::Arn),
    ("trellis:Service", Kind::Text),
    ("trellis:ServiceNetwork", Kind::Text),
    ("vpc-lattice-svcs:Port", Kind::Number),
    ("trellis:Port", Kind::Number),
    ("trellis:Workload", Kind::Text),
    ("trellis:WorkloadUnit", Kind::Text),
    ("trellis:WorkloadContainer", Kind::Text),
    ("trellis:WorkloadPod", Kind::Text),
];

/// Every condition key a policy may use, as written in one (a name after
/// the `/` of those that end with one: a tag, a header, a query parameter).
/// What tests walk to cover every key the evaluator reads.
pub fn condition_keys() -> impl Iterator<Item = &'static str> {
    KEYS.iter().map(|(k, _)| *k)
}

/// AWS global condition keys that mean nothing here: refused by name, since
/// a condition on one would silently never (or, negated, always) hold.
const UNMODELLED: [&str; 22] = [
    "aws:CalledVia",
    "aws:CalledViaFirst",
    "aws:CalledViaLast",
    "aws:FederatedProvider",
    "aws:MultiFactorAuthAge",
    "aws:MultiFactorAuthPresent",
    "aws:PrincipalAccount",
    "aws:PrincipalIsAWSService",
    "aws:PrincipalOrgID",
    "aws:PrincipalOrgPaths",
    "aws:PrincipalServiceName",
    "aws:Referer",
    "aws:RequestedRegion",
    "aws:RequestTag/",
    "aws:ResourceAccount",
    "aws:ResourceTag/",
    "aws:SourceAccount",
    "aws:SourceArn",
    "aws:SourceVpc",
    "aws:SourceVpce",
    "aws:UserAgent",
    "aws:userid",
];

impl Key {
    /// Parses a key as policies write it: case-insensitive up to the `/`,
    /// the name after it kept as written.
    pub fn parse(key: &str) -> Result<Key, String> {
        let (prefix, name) = match key.find('/') {
            Some(i) => (&key[..=i], &key[i + 1..]),
            None => (key, ""),
        };
        let is = |known: &str| known.eq_ignore_ascii_case(prefix);
        if UNMODELLED.iter().any(|k| is(k)) {
            return Err(format!(
                "{key} is an AWS key Trellis does not model; a condition on it would never hold. Keys: {}",
                Key::names()
            ));
        }
        let Some((known, _)) = KEYS.iter().find(|(k, _)| is(k)) else {
            return Err(format!(
                "unknown condition key {key}; keys: {}",
                Key::names()
            ));
        };
        if known.ends_with('/') && name.is_empty() {
            return Err(format!("{key} needs a name after the /"));
        }
        let lower = known.to_ascii_lowercase();
        Ok(match lower.as_str() {
            "aws:principaltype" => Key::PrincipalType,
            "aws:principalarn" | "aws:principalid" | "trellis:principal" => Key::Principal,
            "aws:principaltag/" => Key::PrincipalTag(name.into()),
            "aws:sourceip" => Key::SourceIp,
            "aws:securetransport" => Key::SecureTransport,
            "aws:currenttime" => Key::CurrentTime,
            "aws:epochtime" => Key::EpochTime,
            "vpc-lattice-svcs:sourcevpc" | "trellis:sourcenetwork" => Key::SourceNetwork,
            "vpc-lattice-svcs:sourcevpcowneraccount" => Key::SourceVpcOwnerAccount,
            "vpc-lattice-svcs:requestmethod" | "trellis:requestmethod" => Key::RequestMethod,
            "vpc-lattice-svcs:requestpath" | "trellis:requestpath" => Key::RequestPath,
            "vpc-lattice-svcs:requestheader/" | "trellis:requestheader/" => {
                Key::RequestHeader(name.to_ascii_lowercase())
            }
            "vpc-lattice-svcs:requestquerystring/" | "trellis:requestquerystring/" => {
                Key::RequestQueryString(name.into())
            }
            "vpc-lattice-svcs:servicearn" => Key::ServiceArn,
            "vpc-lattice-svcs:servicenetworkarn" => Key::ServiceNetworkArn,
            "trellis:service" => Key::Service,
            "trellis:servicenetwork" => Key::ServiceNetwork,
            "trellis:workload" => Key::Workload,
            "trellis:workloadunit" => Key::WorkloadUnit,
            "trellis:workloadcontainer" => Key::WorkloadContainer,
            "trellis:workloadpod" => Key::WorkloadPod,
            _ => Key::Port,
        })
    }

    fn kind(&self) -> Kind {
        match self {
            Key::Principal | Key::ServiceArn | Key::ServiceNetworkArn => Kind::Arn,
            Key::SourceIp => Kind::Ip,
            Key::SecureTransport => Kind::Bool,
            Key::CurrentTime | Key::EpochTime => Kind::Date,
            Key::Port => Kind::Number,
            _ => Kind::Text,
        }
    }

    fn names() -> String {
        let names: Vec<String> = KEYS
            .iter()
            .map(|(k, _)| match k.strip_suffix('/') {
                Some(p) => format!("{p}/NAME"),
                None => k.to_string(),
            })
            .collect();
        names.join(", ")
    }
}

/// Seconds since the epoch of a policy date: epoch seconds or RFC 3339.
pub fn epoch_seconds(s: &str) -> Option<u64> {
    s.parse::<u64>().ok().or_else(|| {
        humantime::parse_rfc3339_weak(s)
            .ok()?
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs())
    })
}

/// Whether `v` is a value `kind`'s operators can compare.
fn valid_value(kind: Kind, v: &str) -> Result<(), String> {
    let ok = match kind {
        Kind::Number => v.parse::<f64>().is_ok_and(f64::is_finite),
        Kind::Date => epoch_seconds(v).is_some(),
        Kind::Bool => v == "true" || v == "false",
        Kind::Ip => v.parse::<ipnet::IpNet>().is_ok() || v.parse::<std::net::IpAddr>().is_ok(),
        Kind::Text | Kind::Arn => true,
    };
    if ok {
        return Ok(());
    }
    Err(match kind {
        Kind::Number => format!("{v:?} is not a number"),
        Kind::Date => format!("{v:?} is not a date (RFC 3339, or seconds since 1970)"),
        Kind::Bool => format!("{v:?} is neither true nor false"),
        _ => format!("{v:?} is not an IP address or CIDR (such as 10.0.0.0/8)"),
    })
}

#[derive(Debug, Error, PartialEq, Eq)]
#[error("{path}: {message}")]
pub struct PolicyError {
    /// Path inside the policy document, empty for the document itself.
    pub path: String,
    pub message: String,
}

fn perr(path: impl Into<String>, message: impl Into<String>) -> PolicyError {
    PolicyError {
        path: path.into(),
        message: message.into(),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    Allow,
    Deny,
}

/// `Principal: "*"` or `Principal: {AWS: [...]}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    Any,
    Named(Vec<String>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Matching<T> {
    Is(T),
    Not(T),
}

/// Set qualifier of a condition on a multi-valued key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetQualifier {
    None,
    ForAnyValue,
    ForAllValues,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Condition {
    pub qualifier: SetQualifier,
    pub operator: Operator,
    pub if_exists: bool,
    pub key: Key,
    pub values: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Statement {
    pub sid: Option<String>,
    pub effect: Effect,
    pub principal: Matching<Principal>,
    pub action: Matching<Vec<String>>,
    pub resource: Matching<Vec<String>>,
    pub conditions: Vec<Condition>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyDocument {
    pub version: String,
    pub id: Option<String>,
    pub statements: Vec<Statement>,
}

impl PolicyDocument {
    /// Parses a policy given as a mapping or as a JSON string.
    pub fn parse(value: &Value) -> Result<PolicyDocument, PolicyError> {
        let owned;
        let value = match value {
            Value::String(s) => {
                owned = serde_json::from_str::<Value>(s)
                    .map_err(|e| perr("", format!("not a JSON policy document: {e}")))?;
                &owned
            }
            v => v,
        };
        let size = value.to_string().len();
        if size > MAX_POLICY_BYTES {
            return Err(perr(
                "",
                format!("policy is {size} bytes, more than the {MAX_POLICY_BYTES} allowed"),
            ));
        }
        let obj = value
            .as_object()
            .ok_or_else(|| perr("", "a policy must be a mapping with Version and Statement"))?;
        for key in obj.keys() {
            if !matches!(key.as_str(), "Version" | "Id" | "Statement") {
                return Err(perr(
                    key,
                    "unknown policy element, expected Version, Id or Statement",
                ));
            }
        }
        let version = match obj.get("Version") {
            Some(Value::String(v)) if VERSIONS.contains(&v.as_str()) => v.clone(),
            Some(v) => {
                return Err(perr(
                    "Version",
                    format!("unsupported version {v}, expected \"2012-10-17\""),
                ));
            }
            None => return Err(perr("Version", "missing; use \"2012-10-17\"")),
        };
        let id = optional_string(obj.get("Id"), "Id")?;
        let statements = match obj.get("Statement") {
            Some(Value::Array(items)) if !items.is_empty() => items
                .iter()
                .enumerate()
                .map(|(i, s)| parse_statement(s, &format!("Statement[{i}]")))
                .collect::<Result<Vec<_>, _>>()?,
            Some(Value::Array(_)) => return Err(perr("Statement", "must not be empty")),
            Some(s @ Value::Object(_)) => vec![parse_statement(s, "Statement")?],
            Some(_) => {
                return Err(perr(
                    "Statement",
                    "must be a statement or a list of statements",
                ));
            }
            None => return Err(perr("Statement", "missing")),
        };
        Ok(PolicyDocument {
            version,
            id,
            statements,
        })
    }
}

fn optional_string(v: Option<&Value>, path: &str) -> Result<Option<String>, PolicyError> {
    match v {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(perr(path, "must be a string")),
    }
}

/// A string or a non-empty list of strings.
fn string_list(v: &Value, path: &str) -> Result<Vec<String>, PolicyError> {
    match v {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(s) => Ok(s.clone()),
                _ => Err(perr(format!("{path}[{i}]"), "must be a string")),
            })
            .collect(),
        Value::Array(_) => Err(perr(path, "must not be empty")),
        _ => Err(perr(path, "must be a string or a list of strings")),
    }
}

/// Exactly one of `Element` and `NotElement`.
fn one_of<'a>(
    obj: &'a serde_json::Map<String, Value>,
    name: &str,
    path: &str,
) -> Result<Matching<(&'a Value, String)>, PolicyError> {
    let not = format!("Not{name}");
    match (obj.get(name), obj.get(&not)) {
        (Some(v), None) => Ok(Matching::Is((v, format!("{path}.{name}")))),
        (None, Some(v)) => Ok(Matching::Not((v, format!("{path}.{not}")))),
        (Some(_), Some(_)) => Err(perr(path, format!("has both {name} and {not}; use one"))),
        (None, None) => Err(perr(path, format!("needs {name} or {not}"))),
    }
}

fn parse_statement(v: &Value, path: &str) -> Result<Statement, PolicyError> {
    let obj = v
        .as_object()
        .ok_or_else(|| perr(path, "a statement must be a mapping"))?;
    for key in obj.keys() {
        if !matches!(
            key.as_str(),
            "Sid"
                | "Effect"
                | "Principal"
                | "NotPrincipal"
                | "Action"
                | "NotAction"
                | "Resource"
                | "NotResource"
                | "Condition"
        ) {
            return Err(perr(format!("{path}.{key}"), "unknown statement element"));
        }
    }
    let sid = optional_string(obj.get("Sid"), &format!("{path}.Sid"))?;
    let effect = match obj.get("Effect") {
        Some(Value::String(e)) if e == "Allow" => Effect::Allow,
        Some(Value::String(e)) if e == "Deny" => Effect::Deny,
        Some(e) => {
            return Err(perr(
                format!("{path}.Effect"),
                format!("{e} is neither \"Allow\" nor \"Deny\""),
            ));
        }
        None => {
            return Err(perr(
                format!("{path}.Effect"),
                "missing; use \"Allow\" or \"Deny\"",
            ));
        }
    };
    let principal = match one_of(obj, "Principal", path)? {
        Matching::Is((v, p)) => Matching::Is(parse_principal(v, &p)?),
        Matching::Not((v, p)) => Matching::Not(parse_principal(v, &p)?),
    };
    let action = match one_of(obj, "Action", path)? {
        Matching::Is((v, p)) => Matching::Is(parse_actions(v, &p)?),
        Matching::Not((v, p)) => Matching::Not(parse_actions(v, &p)?),
    };
    let resource = match one_of(obj, "Resource", path)? {
        Matching::Is((v, p)) => Matching::Is(parse_resources(v, &p)?),
        Matching::Not((v, p)) => Matching::Not(parse_resources(v, &p)?),
    };
    let conditions = match obj.get("Condition") {
        None => Vec::new(),
        Some(c) => parse_conditions(c, &format!("{path}.Condition"))?,
    };
    Ok(Statement {
        sid,
        effect,
        principal,
        action,
        resource,
        conditions,
    })
}

fn parse_principal(v: &Value, path: &str) -> Result<Principal, PolicyError> {
    match v {
        Value::String(s) if s == "*" => Ok(Principal::Any),
        Value::Object(m) if !m.is_empty() => {
            let mut names = Vec::new();
            for (key, list) in m {
                if key != "AWS" && key != "Trellis" {
                    return Err(perr(
                        format!("{path}.{key}"),
                        "unsupported principal type, expected AWS (or Trellis)",
                    ));
                }
                let list = string_list(list, &format!("{path}.{key}"))?;
                if list.iter().any(|p| p == "*") {
                    return Ok(Principal::Any);
                }
                names.extend(list);
            }
            Ok(Principal::Named(names))
        }
        _ => Err(perr(
            path,
            "must be \"*\" or a mapping such as {AWS: [ARN, ...]}",
        )),
    }
}

fn parse_actions(v: &Value, path: &str) -> Result<Vec<String>, PolicyError> {
    let actions = string_list(v, path)?;
    for (i, a) in actions.iter().enumerate() {
        if a != "*" && !ACTION_PREFIXES.iter().any(|p| a.starts_with(p)) {
            return Err(perr(
                format!("{path}[{i}]"),
                format!(
                    "action \"{a}\" is not a service-network action; use \"vpc-lattice-svcs:Invoke\""
                ),
            ));
        }
    }
    Ok(actions)
}

/// `*`, or a service: `trellis:service/NAME[/PATH]` or VPC Lattice's
/// `arn:aws:vpc-lattice:REGION:ACCOUNT:service/NAME[/PATH]` (globs allowed).
/// Anything else would match no request, silently.
fn parse_resources(v: &Value, path: &str) -> Result<Vec<String>, PolicyError> {
    let resources = string_list(v, path)?;
    for (i, r) in resources.iter().enumerate() {
        let service = |rest: &str| rest.starts_with("service/") || rest == "*";
        let ok = r == "*"
            || r.strip_prefix("trellis:").is_some_and(service)
            || r.strip_prefix("arn:aws:vpc-lattice:").is_some_and(|rest| {
                let fields: Vec<&str> = rest.splitn(3, ':').collect();
                fields.len() == 3 && service(fields[2])
            });
        if !ok {
            return Err(perr(
                format!("{path}[{i}]"),
                format!(
                    "resource \"{r}\" names no service; use \"*\", \"trellis:service/NAME/PATH\" \
                     or \"arn:aws:vpc-lattice:REGION:ACCOUNT:service/NAME/PATH\""
                ),
            ));
        }
    }
    Ok(resources)
}

fn parse_conditions(v: &Value, path: &str) -> Result<Vec<Condition>, PolicyError> {
    let ops = v
        .as_object()
        .ok_or_else(|| perr(path, "must be a mapping of operator to {key: values}"))?;
    let mut out = Vec::new();
    for (op, keys) in ops {
        let op_path = format!("{path}.{op}");
        let (qualifier, rest) = if let Some(r) = op.strip_prefix("ForAnyValue:") {
            (SetQualifier::ForAnyValue, r)
        } else if let Some(r) = op.strip_prefix("ForAllValues:") {
            (SetQualifier::ForAllValues, r)
        } else {
            (SetQualifier::None, op.as_str())
        };
        let (base, if_exists) = match rest.strip_suffix("IfExists") {
            Some(b) if b != "Null" => (b, true),
            _ => (rest, false),
        };
        let Some(operator) = Operator::parse(base) else {
            let known: Vec<&str> = Operator::ALL.iter().map(|(n, _)| *n).collect();
            return Err(perr(
                op_path,
                format!(
                    "unknown condition operator; operators: {}",
                    known.join(", ")
                ),
            ));
        };
        let keys = keys
            .as_object()
            .filter(|k| !k.is_empty())
            .ok_or_else(|| perr(&op_path, "must be a non-empty mapping of key to values"))?;
        let mut by_key: BTreeMap<&str, (Key, Vec<String>)> = BTreeMap::new();
        for (key, values) in keys {
            let key_path = format!("{op_path}.{key}");
            let parsed = Key::parse(key).map_err(|m| perr(&key_path, m))?;
            let values_given = values;
            let values = match values {
                Value::Array(items) if !items.is_empty() => items
                    .iter()
                    .enumerate()
                    .map(|(i, x)| scalar(x, &format!("{key_path}[{i}]")))
                    .collect::<Result<Vec<_>, _>>()?,
                Value::Array(_) => return Err(perr(key_path, "must not be empty")),
                x => vec![scalar(x, &key_path)?],
            };
            if operator == Operator::Null && values.iter().any(|v| v != "true" && v != "false") {
                return Err(perr(key_path, "Null takes true or false"));
            }
            if let Some(kind) = operator.kind() {
                if kind != parsed.kind() && !(kind == Kind::Arn && parsed.kind() == Kind::Text) {
                    return Err(perr(
                        key_path,
                        format!(
                            "{base} does not apply to {key}, whose values are {:?}",
                            parsed.kind()
                        ),
                    ));
                }
                for (i, v) in values.iter().enumerate() {
                    let at = || match values_given {
                        Value::Array(_) => format!("{key_path}[{i}]"),
                        _ => key_path.clone(),
                    };
                    valid_value(kind, v).map_err(|m| perr(at(), m))?;
                }
            }
            by_key.insert(key, (parsed, values));
        }
        for (_, (key, values)) in by_key {
            out.push(Condition {
                qualifier,
                operator,
                if_exists,
                key,
                values,
            });
        }
    }
    Ok(out)
}

/// IAM compares condition values as strings; numbers and booleans are written
/// without quotes as often as with.
fn scalar(v: &Value, path: &str) -> Result<String, PolicyError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Number(n) => Ok(n.to_string()),
        _ => Err(perr(
            path,
            "condition values must be strings, numbers or booleans",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// An example from the VPC Lattice documentation, pasted as it is.
    const LATTICE_EXAMPLE: &str = r#"{
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": "*",
                "Action": "vpc-lattice-svcs:Invoke",
                "Resource": "*",
                "Condition": {
                    "StringNotEqualsIgnoreCase": {
                        "aws:PrincipalType": "anonymous"
                    },
                    "StringEquals": {
                        "vpc-lattice-svcs:SourceVpc": "vpc-1a2b3c4d"
                    }
                }
            }
        ]
    }"#;

    #[test]
    fn parses_a_lattice_policy_given_as_json_string() {
        let p = PolicyDocument::parse(&Value::String(LATTICE_EXAMPLE.into())).unwrap();
        assert_eq!(p.statements.len(), 1);
        let s = &p.statements[0];
        assert_eq!(s.effect, Effect::Allow);
        assert_eq!(s.principal, Matching::Is(Principal::Any));
        assert_eq!(s.conditions.len(), 2);
        assert!(
            s.conditions
                .iter()
                .any(|c| c.operator == Operator::StringNotEqualsIgnoreCase
                    && c.key == Key::PrincipalType
                    && c.values == ["anonymous"])
        );
    }

    #[test]
    fn qualifiers_and_if_exists_are_split_off() {
        let p = PolicyDocument::parse(&json!({
            "Version": "2012-10-17",
            "Statement": {"Effect": "Deny", "Principal": {"AWS": ["trellis:identity/a"]},
                "NotAction": "trellis:Invoke", "Resource": "*",
                "Condition": {"ForAnyValue:StringLikeIfExists": {
                    "trellis:RequestHeader/X-Team": ["a*", 3, true]}}}
        }))
        .unwrap();
        let c = &p.statements[0].conditions[0];
        assert_eq!(c.qualifier, SetQualifier::ForAnyValue);
        assert_eq!(c.operator, Operator::StringLike);
        assert_eq!(c.key, Key::RequestHeader("x-team".into()));
        assert!(c.if_exists);
        assert_eq!(c.values, ["a*", "3", "true"]);
    }

    #[test]
    fn errors_name_the_element() {
        let cases = [
            (json!({"Statement": []}), "Version"),
            (
                json!({"Version": "2012-10-17", "Statement": []}),
                "Statement",
            ),
            (
                json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": "*",
                    "Action": "s3:GetObject", "Resource": "*"}]}),
                "Statement[0].Action[0]",
            ),
            (
                json!({"Version": "2012-10-17", "Statement": [{"Effect": "Maybe", "Principal": "*",
                    "Action": "*", "Resource": "*"}]}),
                "Statement[0].Effect",
            ),
            (
                json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": "*",
                    "Action": "*", "Resource": "*", "Condition": {"StringSorta": {"k": "v"}}}]}),
                "Statement[0].Condition.StringSorta",
            ),
            (
                json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
                    "Action": "*", "Resource": "*"}]}),
                "Statement[0]",
            ),
        ];
        for (doc, path) in cases {
            let e = PolicyDocument::parse(&doc).unwrap_err();
            assert_eq!(e.path, path, "{doc}: {e}");
        }
    }

    #[test]
    fn oversized_policy_is_refused() {
        let big: Vec<String> = (0..2000)
            .map(|i| format!("trellis:identity/n{i}"))
            .collect();
        let e = PolicyDocument::parse(&json!({"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"AWS": big}, "Action": "*", "Resource": "*"}]}))
        .unwrap_err();
        assert!(e.message.contains("more than the 10000 allowed"), "{e}");
    }
}
