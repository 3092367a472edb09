//! The declarative resource model: `Network`, `ServiceNetwork`, `Service`,
//! `TargetGroup` and `Identity`.
//!
//! Specs are strict (unknown fields are rejected) and defaults are filled in on
//! decode, so a stored spec is the normalized, effective one: what `get -o
//! yaml` shows is what nodes run. Field-level and cross-reference validation
//! live in the control plane; this module only decodes.

use crate::error::FieldError;
use crate::secret::Secret;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

pub const API_VERSION: &str = "trellis.dev/v1alpha1";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Kind {
    Network,
    ServiceNetwork,
    Service,
    TargetGroup,
    Identity,
}

impl Kind {
    /// In dependency order: a kind only references kinds listed before it
    /// (Identity is referenced by policies, by name, not structurally).
    pub const ALL: [Kind; 5] = [
        Kind::Network,
        Kind::ServiceNetwork,
        Kind::TargetGroup,
        Kind::Service,
        Kind::Identity,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Network => "Network",
            Kind::ServiceNetwork => "ServiceNetwork",
            Kind::Service => "Service",
            Kind::TargetGroup => "TargetGroup",
            Kind::Identity => "Identity",
        }
    }

    /// The path segment of the kind in the API (`/v1/servicenetworks`).
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Network => "networks",
            Kind::ServiceNetwork => "servicenetworks",
            Kind::Service => "services",
            Kind::TargetGroup => "targetgroups",
            Kind::Identity => "identities",
        }
    }

    /// Parses the names users type: `Service`, `service`, `services`, `svc`.
    pub fn parse(s: &str) -> Option<Kind> {
        let k = match s.to_ascii_lowercase().as_str() {
            "network" | "networks" | "net" => Kind::Network,
            "servicenetwork" | "servicenetworks" | "sn" => Kind::ServiceNetwork,
            "service" | "services" | "svc" => Kind::Service,
            "targetgroup" | "targetgroups" | "tg" => Kind::TargetGroup,
            "identity" | "identities" | "id" => Kind::Identity,
            _ => return None,
        };
        Some(k)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    pub name: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// A resource as declared by an operator: what `apply` takes.
#[derive(Clone, Debug, PartialEq)]
pub struct Resource {
    pub metadata: Metadata,
    pub spec: Spec,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Spec {
    Network(NetworkSpec),
    ServiceNetwork(ServiceNetworkSpec),
    Service(ServiceSpec),
    TargetGroup(TargetGroupSpec),
    Identity(IdentitySpec),
}

impl Spec {
    pub fn kind(&self) -> Kind {
        match self {
            Spec::Network(_) => Kind::Network,
            Spec::ServiceNetwork(_) => Kind::ServiceNetwork,
            Spec::Service(_) => Kind::Service,
            Spec::TargetGroup(_) => Kind::TargetGroup,
            Spec::Identity(_) => Kind::Identity,
        }
    }

    fn to_value(&self) -> Value {
        let v = match self {
            Spec::Network(s) => serde_json::to_value(s),
            Spec::ServiceNetwork(s) => serde_json::to_value(s),
            Spec::Service(s) => serde_json::to_value(s),
            Spec::TargetGroup(s) => serde_json::to_value(s),
            Spec::Identity(s) => serde_json::to_value(s),
        };
        // Serializing plain data structs with string keys cannot fail.
        v.unwrap_or(Value::Null)
    }
}

impl Resource {
    pub fn kind(&self) -> Kind {
        self.spec.kind()
    }

    pub fn name(&self) -> &str {
        &self.metadata.name
    }

    /// Decodes one document (`apiVersion`, `kind`, `metadata`, `spec`; a
    /// `status` is accepted and ignored so that `get -o yaml` output can be
    /// applied again). Every problem found is returned, each with its path.
    pub fn from_value(document: usize, value: &Value) -> Result<Resource, Vec<FieldError>> {
        let err = |path: &str, msg: String| FieldError::new(document, path, msg);
        let Some(obj) = value.as_object() else {
            return Err(vec![err("", "a document must be a mapping".into())]);
        };
        let mut errors = Vec::new();
        for key in obj.keys() {
            if !matches!(
                key.as_str(),
                "apiVersion" | "kind" | "metadata" | "spec" | "status"
            ) {
                errors.push(err(
                    key,
                    format!(
                        "unknown field `{key}`, expected one of `apiVersion`, `kind`, `metadata`, `spec`"
                    ),
                ));
            }
        }
        match obj.get("apiVersion") {
            Some(Value::String(v)) if v == API_VERSION => {}
            Some(other) => errors.push(err(
                "apiVersion",
                format!("unsupported apiVersion {other}, expected \"{API_VERSION}\""),
            )),
            None => errors.push(err("apiVersion", "missing field `apiVersion`".into())),
        }
        let kind = match obj.get("kind") {
            Some(Value::String(k)) => match Kind::ALL.iter().find(|c| c.as_str() == k) {
                Some(kind) => Some(*kind),
                None => {
                    errors.push(err(
                        "kind",
                        format!(
                            "unknown kind \"{k}\", expected one of Network, ServiceNetwork, Service, TargetGroup, Identity"
                        ),
                    ));
                    None
                }
            },
            Some(other) => {
                errors.push(err("kind", format!("expected a string, found {other}")));
                None
            }
            None => {
                errors.push(err("kind", "missing field `kind`".into()));
                None
            }
        };
        let metadata = match obj.get("metadata") {
            Some(m) => decode::<Metadata>(document, "metadata", m)
                .map_err(|e| errors.push(e))
                .ok(),
            None => {
                errors.push(err("metadata", "missing field `metadata`".into()));
                None
            }
        };
        let spec = match (kind, obj.get("spec")) {
            (None, _) => None,
            (Some(_), None) => {
                errors.push(err("spec", "missing field `spec`".into()));
                None
            }
            (Some(kind), Some(v)) => {
                let spec = match kind {
                    Kind::Network => decode(document, "spec", v).map(Spec::Network),
                    Kind::ServiceNetwork => decode(document, "spec", v).map(Spec::ServiceNetwork),
                    Kind::Service => decode(document, "spec", v).map(Spec::Service),
                    Kind::TargetGroup => decode(document, "spec", v).map(Spec::TargetGroup),
                    Kind::Identity => decode(document, "spec", v).map(Spec::Identity),
                };
                spec.map_err(|e| errors.push(e)).ok()
            }
        };
        match (metadata, spec) {
            (Some(metadata), Some(spec)) if errors.is_empty() => Ok(Resource { metadata, spec }),
            _ => Err(errors),
        }
    }

    /// The document form, as `apply` sends it.
    pub fn to_value(&self) -> Value {
        serde_json::json!({
            "apiVersion": API_VERSION,
            "kind": self.kind().as_str(),
            "metadata": self.metadata,
            "spec": self.spec.to_value(),
        })
    }
}

/// Decodes `value` as `T`, naming the failing field by its full path.
fn decode<T: DeserializeOwned>(
    document: usize,
    prefix: &str,
    value: &Value,
) -> Result<T, FieldError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.path().to_string();
        let path = if inner == "." {
            prefix.to_string()
        } else {
            format!("{prefix}.{inner}")
        };
        FieldError::new(document, path, e.into_inner().to_string())
    })
}

/// What the control plane writes about an object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// Store revision at which the object was created.
    pub created_revision: u64,
    /// Store revision at which the object last changed.
    pub revision: u64,
    /// Creation time, seconds since the Unix epoch.
    pub created_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vip: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vip_v6: Option<Ipv6Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_name: Option<String>,
    /// HTTPS listeners' certificates as of the read: never stored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<crate::tls::CertificateInfo>,
    /// A target group's targets as the nodes reporting to this control
    /// plane see them, as of the read: never stored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<TargetStatus>,
}

/// One target as the nodes see it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetStatus {
    /// `address:port`.
    pub target: String,
    /// `network/node` -> `healthy`, `unhealthy` or `unknown` as the node's
    /// checks say, or `ejected` while its passive health keeps it out.
    pub by_node: BTreeMap<String, String>,
}

/// A stored resource: the declared resource plus the control plane's status.
#[derive(Clone, Debug, PartialEq)]
pub struct Object {
    pub resource: Resource,
    pub status: Status,
}

impl Object {
    pub fn to_value(&self) -> Value {
        let mut v = self.resource.to_value();
        v["status"] = serde_json::to_value(&self.status).unwrap_or(Value::Null);
        v
    }

    pub fn from_value(value: &Value) -> Result<Object, Vec<FieldError>> {
        let resource = Resource::from_value(0, value)?;
        let status = match value.get("status") {
            Some(s) => decode::<Status>(0, "status", s).map_err(|e| vec![e])?,
            None => Status::default(),
        };
        Ok(Object { resource, status })
    }
}

impl Object {
    /// What the API shows at `now`: private keys replaced by their hashes,
    /// and the certificates described in the status.
    pub fn shown(&self, now: i64) -> Object {
        let mut status = self.status.clone();
        if let Spec::Service(svc) = &self.resource.spec {
            for l in &svc.listeners {
                for cert in l.certificates() {
                    status.certificates.extend(
                        cert.certificate
                            .as_deref()
                            .and_then(|pem| crate::tls::CertificateInfo::of(&l.name, pem, now)),
                    );
                }
            }
        }
        Object {
            resource: self.resource.redacted(),
            status,
        }
    }
}

impl Resource {
    /// The resource with every private key replaced by its hash.
    pub fn redacted(&self) -> Resource {
        let mut r = self.clone();
        if let Spec::Service(svc) = &mut r.spec {
            for cert in svc
                .listeners
                .iter_mut()
                .flat_map(Listener::certificates_mut)
            {
                *cert = cert.redacted();
            }
        }
        r
    }
}

impl Serialize for Object {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_value().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Object {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        Object::from_value(&v).map_err(|errs| {
            let msg: Vec<String> = errs
                .iter()
                .map(|e| format!("{}: {}", e.path, e.message))
                .collect();
            serde::de::Error::custom(msg.join("; "))
        })
    }
}

// ---------------------------------------------------------------------------
// Specs

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Where other networks' proxies reach this network's targets.
    #[serde(default)]
    pub gateways: Vec<Gateway>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Gateway {
    /// `HOST:PORT`.
    pub address: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthType {
    #[default]
    #[serde(rename = "NONE")]
    None,
    #[serde(rename = "SIGV4")]
    SigV4,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceNetworkSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Networks whose clients may reach the services of this service network.
    #[serde(default)]
    pub networks: Vec<String>,
    #[serde(default)]
    pub auth_type: AuthType,
    /// An IAM-grammar policy document, as a mapping or a JSON string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_policy: Option<Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub service_networks: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_domain_name: Option<String>,
    #[serde(default)]
    pub auth_type: AuthType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_policy: Option<Value>,
    /// Also send VPC Lattice's own request headers to targets
    /// (`x-amzn-lattice-*`), so applications written for Lattice keep working.
    #[serde(default, skip_serializing_if = "is_false")]
    pub lattice_compat: bool,
    #[serde(default)]
    pub listeners: Vec<Listener>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ListenerProtocol {
    Http,
    Https,
    TlsPassthrough,
    Tcp,
}

impl ListenerProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            ListenerProtocol::Http => "HTTP",
            ListenerProtocol::Https => "HTTPS",
            ListenerProtocol::TlsPassthrough => "TLS_PASSTHROUGH",
            ListenerProtocol::Tcp => "TCP",
        }
    }

    pub fn default_port(self) -> u16 {
        match self {
            ListenerProtocol::Http => 80,
            ListenerProtocol::Https | ListenerProtocol::TlsPassthrough => 443,
            ListenerProtocol::Tcp => 0,
        }
    }

    pub fn is_http(self) -> bool {
        matches!(self, ListenerProtocol::Http | ListenerProtocol::Https)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Listener {
    pub name: String,
    pub protocol: ListenerProtocol,
    /// Defaults to 80 for HTTP and 443 for HTTPS and TLS_PASSTHROUGH;
    /// required for TCP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    pub default_action: Action,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
    #[serde(default, skip_serializing_if = "Timeouts::is_default")]
    pub timeouts: Timeouts,
    /// HTTP and HTTPS listeners: how request paths are read before routing,
    /// auth and forwarding (docs/routing.md, "Canonical requests").
    #[serde(default, skip_serializing_if = "PathNormalization::is_default")]
    pub path_normalization: PathNormalization,
    /// HTTPS listeners: the certificates the node proxy terminates TLS with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ListenerTls>,
    /// The order rules are tried in (docs/routing.md "Rule order").
    #[serde(default, skip_serializing_if = "RuleOrder::is_default")]
    pub rule_order: RuleOrder,
}

/// How a listener orders its rules.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub enum RuleOrder {
    /// By `priority`, lowest first: VPC Lattice's order.
    #[default]
    Priority,
    /// Most specific match first, as the Gateway API orders an HTTPRoute's
    /// matches: an exact path, then the longest prefix, then a regular
    /// expression; then a method; then more header matches; then more
    /// query matches; `priority` breaks ties.
    Specificity,
}

impl RuleOrder {
    fn is_default(&self) -> bool {
        *self == RuleOrder::Priority
    }
}

impl Listener {
    /// Its rules in the order they are tried (its [`RuleOrder`]).
    pub fn ordered_rules(&self) -> Vec<&Rule> {
        let mut rules: Vec<&Rule> = self.rules.iter().collect();
        match self.rule_order {
            RuleOrder::Priority => rules.sort_by_key(|r| r.priority),
            RuleOrder::Specificity => rules.sort_by(|a, b| {
                b.matches
                    .specificity()
                    .cmp(&a.matches.specificity())
                    .then(a.priority.cmp(&b.priority))
            }),
        }
        rules
    }

    /// Its certificates (HTTPS listeners), in declared order.
    pub fn certificates(&self) -> &[TlsCertificate] {
        self.tls.as_ref().map_or(&[], |t| &t.certificates)
    }

    pub fn certificates_mut(&mut self) -> &mut [TlsCertificate] {
        self.tls.as_mut().map_or(&mut [], |t| &mut t.certificates)
    }
}

/// What a listener does with paths beyond RFC 3986's normalization.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PathNormalization {
    /// `//a///b` is `/a/b` (as Envoy's `merge_slashes`).
    #[serde(default = "yes")]
    pub merge_slashes: bool,
    /// `%2F` and `%5C` in a path: refused with 400, or kept as they are.
    #[serde(default)]
    pub escaped_slashes: EscapedSlashes,
}

impl Default for PathNormalization {
    fn default() -> Self {
        PathNormalization {
            merge_slashes: true,
            escaped_slashes: EscapedSlashes::Reject,
        }
    }
}

impl PathNormalization {
    fn is_default(&self) -> bool {
        *self == PathNormalization::default()
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EscapedSlashes {
    /// 400: a target that decodes them would see another path than the
    /// rules did.
    #[default]
    Reject,
    /// Opaque: rules, policies and the target see `%2F` as it is.
    Keep,
}

/// An HTTPS listener's certificates: SNI picks among them, the first is
/// served to clients that send no (or an unknown) name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListenerTls {
    pub certificates: Vec<TlsCertificate>,
}

/// A certificate chain and its key. In YAML, `certificateFile` and
/// `keyFile` name PEM files that `trellis apply` reads (relative to the
/// YAML file) and sends as `certificate` and `privateKey`. The key is never
/// shown back: `get` prints `privateKeySha256` in its place, and a spec
/// that gives only that hash keeps the key already stored for it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsCertificate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
    /// PEM, leaf first, then intermediates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    /// PEM (PKCS#8, PKCS#1 or SEC1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<Secret>,
    /// Hex SHA-256 of `privateKey`'s PEM text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key_sha256: Option<String>,
}

impl TlsCertificate {
    /// The same certificate with its key replaced by the key's hash.
    pub fn redacted(&self) -> TlsCertificate {
        TlsCertificate {
            private_key: None,
            private_key_sha256: self
                .private_key
                .as_ref()
                .map(key_sha256)
                .or_else(|| self.private_key_sha256.clone()),
            ..self.clone()
        }
    }
}

/// Hex SHA-256 of a private key's PEM text (what `get` shows of a key).
pub fn key_sha256(pem: &Secret) -> String {
    crate::secret::sha256_hex(pem.expose().as_bytes())
}

impl fmt::Debug for TlsCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never a key in a log line.
        f.debug_struct("TlsCertificate")
            .field("certificate_file", &self.certificate_file)
            .field("key_file", &self.key_file)
            .field("private_key_sha256", &self.redacted().private_key_sha256)
            .finish_non_exhaustive()
    }
}

/// A listener's limits on clients and targets (docs/routing.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Timeouts {
    /// A client must send a request's headers within this (slow clients are cut off).
    #[serde(default = "default_header_read")]
    pub header_read_seconds: u32,
    /// Connecting to a target.
    #[serde(default = "default_connect_ms")]
    pub connect_ms: u32,
    /// From sending a request to a target to its response headers.
    #[serde(default = "default_request")]
    pub request_seconds: u32,
    /// An upgraded (WebSocket) or TCP connection with no byte either way for
    /// this long is closed; traffic resets it, so there is no lifetime cap.
    #[serde(default = "default_idle")]
    pub idle_seconds: u32,
}

/// [`Timeouts`] as the proxy waits with them: compiled once per config,
/// each at least one of its unit (a 0 in a spec would wait for nothing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeLimits {
    pub header_read: std::time::Duration,
    pub connect: std::time::Duration,
    pub request: std::time::Duration,
    pub idle: std::time::Duration,
}

impl Timeouts {
    pub fn limits(&self) -> TimeLimits {
        use std::time::Duration;
        let secs = |s: u32| Duration::from_secs(u64::from(s.max(1)));
        TimeLimits {
            header_read: secs(self.header_read_seconds),
            connect: Duration::from_millis(u64::from(self.connect_ms.max(1))),
            request: secs(self.request_seconds),
            idle: secs(self.idle_seconds),
        }
    }
}

fn default_header_read() -> u32 {
    10
}
fn default_connect_ms() -> u32 {
    2000
}
fn default_request() -> u32 {
    60
}
fn default_idle() -> u32 {
    300
}

impl Timeouts {
    fn is_default(&self) -> bool {
        *self == Timeouts::default()
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            header_read_seconds: default_header_read(),
            connect_ms: default_connect_ms(),
            request_seconds: default_request(),
            idle_seconds: default_idle(),
        }
    }
}

impl Listener {
    /// The port the listener answers on, after defaults.
    pub fn effective_port(&self) -> u16 {
        self.port.unwrap_or_else(|| self.protocol.default_port())
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    pub name: String,
    /// Lower is evaluated first; unique per listener; 1..=100.
    pub priority: u32,
    #[serde(rename = "match")]
    pub matches: RuleMatch,
    pub action: Action,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderMatch>,
    /// Query parameters of the request target.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query: Vec<QueryMatch>,
    /// A host name, or `*.example.com` for any name below example.com.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The gRPC service and method (`/package.Service/Method`): a path
    /// condition in gRPC's words, so not with `path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<GrpcMatch>,
}

/// A gRPC call's service and method, the Gateway API's GRPCRoute match.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcMatch {
    /// `package.Service`; any when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// `Method`; any when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, rename = "type")]
    pub kind: GrpcMatchType,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum GrpcMatchType {
    #[default]
    Exact,
    /// `service` and `method` are regular expressions, each matching the
    /// whole name.
    RegularExpression,
}

impl GrpcMatch {
    /// The path condition exact names stand for: `/S/M` exactly, `/S/` as a
    /// prefix, or `/[^/]+/M`. `None` for regular expressions, which match
    /// each name on its own ([`GrpcMatch::compiled`]): one regex over the
    /// path would let a service's `.*` run into the method.
    pub fn path(&self) -> Option<PathMatch> {
        if self.kind != GrpcMatchType::Exact {
            return None;
        }
        let mut path = PathMatch {
            exact: None,
            prefix: None,
            regex: None,
            case_sensitive: true,
        };
        match (self.service.as_deref(), self.method.as_deref()) {
            (Some(s), Some(m)) => path.exact = Some(format!("/{s}/{m}")),
            (Some(s), None) => path.prefix = Some(format!("/{s}/")),
            (None, m) => {
                let m = m.map_or_else(|| "[^/]+".to_string(), regex::escape);
                path.regex = Some(format!("/[^/]+/{m}"));
            }
        }
        Some(path)
    }

    /// Regular expressions: the service's and the method's, each matching
    /// the whole name, compiled as the node matches them.
    #[allow(clippy::type_complexity)]
    pub fn compiled(&self) -> Option<Result<(Option<regex::Regex>, Option<regex::Regex>), String>> {
        if self.kind != GrpcMatchType::RegularExpression {
            return None;
        }
        let one = |p: &Option<String>| p.as_deref().map(|p| compile_regex(p, true)).transpose();
        Some(one(&self.service).and_then(|s| Ok((s, one(&self.method)?))))
    }
}

impl RuleMatch {
    /// The path condition: `path`, or the one `grpc` stands for.
    pub fn path_condition(&self) -> Option<std::borrow::Cow<'_, PathMatch>> {
        match (&self.path, &self.grpc) {
            (Some(p), _) => Some(std::borrow::Cow::Borrowed(p)),
            (None, Some(g)) => g.path().map(std::borrow::Cow::Owned),
            (None, None) => None,
        }
    }

    /// Whether it has no condition at all.
    pub fn is_empty(&self) -> bool {
        self.path.is_none()
            && self.grpc.is_none()
            && self.method.is_none()
            && self.headers.is_empty()
            && self.query.is_empty()
            && self.host.is_none()
    }

    /// Its place in [`RuleOrder::Specificity`]: greater is tried first.
    pub fn specificity(&self) -> (u8, usize, bool, usize, usize) {
        let path = self.path_condition();
        let grpc_regex = self
            .grpc
            .as_ref()
            .is_some_and(|g| g.kind == GrpcMatchType::RegularExpression);
        let (kind, length) = match path.as_deref() {
            // A regular expression, as a path regex ranks.
            None if grpc_regex => (1, 0),
            Some(PathMatch { exact: Some(e), .. }) => (3, e.len()),
            Some(PathMatch {
                prefix: Some(p), ..
            }) => (2, p.len()),
            Some(PathMatch { regex: Some(_), .. }) => (1, 0),
            _ => (0, 0),
        };
        (
            kind,
            length,
            self.method.is_some(),
            self.headers.len(),
            self.query.len(),
        )
    }
}

/// A query parameter condition: the parameter `name` (case-sensitive)
/// with a value `exact` or matching `regex` (the whole value,
/// percent-decoded), or `present` (true) or absent (false). A parameter
/// the request repeats must satisfy the condition with every value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QueryMatch {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub present: Option<bool>,
}

impl QueryMatch {
    /// The `regex` condition compiled as it is matched (whole value,
    /// case-sensitive, within [`MAX_REGEX_BYTES`]).
    pub fn compiled_regex(&self) -> Option<Result<regex::Regex, String>> {
        self.regex.as_deref().map(|r| compile_regex(r, true))
    }
}

/// `r` compiled to match a whole value, within [`MAX_REGEX_BYTES`]; the
/// one compilation the validator (which reports the error) and the node
/// (which matches) share.
fn compile_regex(r: &str, case_sensitive: bool) -> Result<regex::Regex, String> {
    regex::RegexBuilder::new(&format!("^(?:{r})$"))
        .case_insensitive(!case_sensitive)
        .size_limit(MAX_REGEX_BYTES)
        .build()
        .map_err(|e| {
            // regex's message ends with the reason on its own line.
            e.to_string()
                .lines()
                .last()
                .unwrap_or_default()
                .trim()
                .to_string()
        })
}

fn yes() -> bool {
    true
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PathMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// A regular expression the whole path must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    #[serde(default = "yes")]
    pub case_sensitive: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderMatch {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contains: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// `true`: the header is sent (any value); `false`: it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub present: Option<bool>,
    #[serde(default)]
    pub case_sensitive: bool,
}

/// The most memory a compiled header regex may take.
pub const MAX_REGEX_BYTES: usize = 1 << 20;

impl HeaderMatch {
    /// The `regex` condition compiled as it is matched: against the whole
    /// value, case-insensitively unless `caseSensitive`, within
    /// [`MAX_REGEX_BYTES`]. The one compilation both the validator (which
    /// reports the error) and the node (which matches) use.
    pub fn compiled_regex(&self) -> Option<Result<regex::Regex, String>> {
        self.regex
            .as_deref()
            .map(|r| compile_regex(r, self.case_sensitive))
    }
}

impl PathMatch {
    /// The `regex` condition compiled as it is matched (the whole path,
    /// case-insensitively unless `caseSensitive`).
    pub fn compiled_regex(&self) -> Option<Result<regex::Regex, String>> {
        self.regex
            .as_deref()
            .map(|r| compile_regex(r, self.case_sensitive))
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Action {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward: Option<Vec<WeightedTargetGroup>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_response: Option<FixedResponse>,
    /// Answer with a redirect (the Gateway API's RequestRedirect).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<Redirect>,
    /// With `forward`: headers changed on the request to the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_headers: Option<HeaderModifier>,
    /// With `forward`: headers changed on the response to the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_headers: Option<HeaderModifier>,
    /// With `forward`: the host and path the target is sent (the Gateway
    /// API's URLRewrite).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<Rewrite>,
    /// With `forward`: cross-origin requests from browsers, answered and
    /// marked by the proxy (the Gateway API's CORS filter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<Cors>,
    /// With `forward`: copies of the requests, sent elsewhere.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<crate::resilience::Mirror>,
    /// With `forward`: the route's time limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<crate::resilience::RouteTimeouts>,
    /// With `forward`: when a failed try is tried again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<crate::resilience::Retry>,
}

impl Action {
    /// Every target group the action sends requests to: those it forwards
    /// to, then its mirrors.
    pub fn target_groups(&self) -> impl Iterator<Item = &str> {
        let forwarded = self
            .forward
            .iter()
            .flatten()
            .map(|w| w.target_group.as_str());
        forwarded.chain(self.mirrors.iter().map(|m| m.target_group.as_str()))
    }
}

/// Which other origins' pages may call the service, and how.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Cors {
    /// `https://app.example.com`, `https://*.example.com` (any name below),
    /// or `*` (any origin).
    pub allow_origins: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_credentials: bool,
}

/// A new path: `full`, the whole of it; or `prefix`, in place of the path
/// prefix the rule matched (rules with a `path.prefix` match only).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PathReplace {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rewrite {
    /// The `Host` the target is sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathReplace>,
}

/// Header changes, applied in this order: `remove`, `set` (replaces every
/// value), `add` (appends a value).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderModifier {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<HeaderPair>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<HeaderPair>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderPair {
    pub name: String,
    pub value: String,
}

/// Where a redirect sends the client: each part given replaces the
/// request's (the query is kept).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Redirect {
    /// `http` or `https`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathReplace>,
    /// 301, 302, 303, 307 or 308.
    #[serde(default = "found")]
    pub status_code: u16,
}

fn found() -> u16 {
    302
}

fn one() -> u32 {
    1
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WeightedTargetGroup {
    pub target_group: String,
    /// 0..=999; a share of the sum of the action's weights.
    #[serde(default = "one")]
    pub weight: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FixedResponse {
    pub status_code: u16,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TargetProtocol {
    #[default]
    Http,
    Https,
    Tcp,
}

impl TargetProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetProtocol::Http => "HTTP",
            TargetProtocol::Https => "HTTPS",
            TargetProtocol::Tcp => "TCP",
        }
    }

    pub fn default_port(self) -> u16 {
        match self {
            TargetProtocol::Http => 80,
            TargetProtocol::Https => 443,
            TargetProtocol::Tcp => 0,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ProtocolVersion {
    #[default]
    #[serde(rename = "HTTP1")]
    Http1,
    #[serde(rename = "HTTP2")]
    Http2,
    Grpc,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TargetGroupSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The network the targets live in.
    pub network: String,
    #[serde(default)]
    pub protocol: TargetProtocol,
    #[serde(default)]
    pub protocol_version: ProtocolVersion,
    /// Default port of the targets: 80 for HTTP, 443 for HTTPS; required for TCP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default)]
    pub health_check: HealthCheck,
    #[serde(default)]
    pub load_balancing: LoadBalancing,
    /// With every target unhealthy, send to all of them (VPC Lattice's
    /// behaviour) rather than answer 503.
    #[serde(default = "yes")]
    pub fail_open: bool,
    /// A removed or failing target gets no new requests; its in-flight ones
    /// have this long to finish.
    #[serde(default = "default_drain")]
    pub drain_seconds: u32,
    /// HTTPS groups: how targets are verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TargetTls>,
    /// Passive health: targets failing in a row are ejected for a while.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<crate::resilience::OutlierDetection>,
    #[serde(default)]
    pub targets: Vec<Target>,
}

/// TLS to the targets of an HTTPS target group. Targets are always
/// verified: against `ca` when given, else against the Trellis CA.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TargetTls {
    /// Sent as SNI and verified in the target's certificate. Without it
    /// the target's IP address is verified (an IP SAN) and no SNI is sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// A PEM file of CA certificates, read by `trellis apply` relative to
    /// the YAML file and sent as `ca`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// PEM CA certificates the targets' certificates must chain to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
}

fn default_drain() -> u32 {
    30
}

/// How a target is picked among the healthy ones.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LoadBalancing {
    #[default]
    RoundRobin,
    /// Power of two choices: the less busy of two random targets.
    LeastRequest,
}

impl TargetGroupSpec {
    pub fn effective_port(&self) -> u16 {
        self.port.unwrap_or_else(|| self.protocol.default_port())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum HealthCheckProtocol {
    Http,
    Https,
    Tcp,
}

fn default_hc_path() -> String {
    "/".into()
}
fn default_interval() -> u32 {
    30
}
fn default_timeout() -> u32 {
    5
}
fn default_healthy() -> u32 {
    5
}
fn default_unhealthy() -> u32 {
    2
}

/// Active health checking; defaults are VPC Lattice's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthCheck {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Defaults to the target group's protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<HealthCheckProtocol>,
    #[serde(default = "default_hc_path")]
    pub path: String,
    /// Defaults to the target's port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default = "default_interval")]
    pub interval_seconds: u32,
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u32,
    #[serde(default = "default_healthy")]
    pub healthy_threshold: u32,
    #[serde(default = "default_unhealthy")]
    pub unhealthy_threshold: u32,
    #[serde(default)]
    pub matcher: Matcher,
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            enabled: true,
            protocol: None,
            path: default_hc_path(),
            port: None,
            interval_seconds: default_interval(),
            timeout_seconds: default_timeout(),
            healthy_threshold: default_healthy(),
            unhealthy_threshold: default_unhealthy(),
            matcher: Matcher::default(),
        }
    }
}

/// HTTP status codes that count as healthy: `"200"`, `"200,204"`, `"200-299"`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Matcher {
    pub http_code: String,
}

impl Default for Matcher {
    fn default() -> Self {
        Matcher {
            http_code: "200".into(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Target {
    /// An IPv4 or IPv6 address in the target group's network.
    pub address: String,
    /// Defaults to the target group's port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IdentitySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Other principal names (e.g. IAM role ARNs) that policies may use for
    /// this identity, so that pasted VPC Lattice policies match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// Principal tags, matched by `aws:PrincipalTag/KEY` conditions.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Workloads that are this identity without signing anything: the
    /// processes a node of their network sees connecting, by their cgroup.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workloads: Vec<WorkloadSelector>,
}

/// Callers on the nodes of `network` whose cgroup this selects (and the
/// cgroups below it), by exactly one of: a `cgroup` path glob (`*` within a
/// segment, `**` for any number of segments), a `systemdUnit`, or a
/// `dockerContainer` id.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSelector {
    pub network: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub systemd_unit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_container: Option<String>,
}

/// A segment of a cgroup path, as a regex.
const SEGMENT: &str = "/[^/]+";

impl WorkloadSelector {
    /// The cgroup paths this selects, as the one anchored regex both the
    /// validator (which reports the error) and the node (which matches)
    /// compile; the error names what is wrong.
    pub fn compiled(&self) -> Result<regex::Regex, String> {
        let below = format!("(?:{SEGMENT})*");
        let source = match (&self.cgroup, &self.systemd_unit, &self.docker_container) {
            (Some(glob), None, None) => {
                let Some(rest) = glob.strip_prefix('/') else {
                    return Err("a cgroup path starts with /".into());
                };
                let mut re = String::from("^");
                for seg in rest.split('/') {
                    match seg {
                        "" => return Err("a cgroup path has no empty segment".into()),
                        "**" => re.push_str(&below),
                        _ => {
                            let parts: Vec<String> = seg.split('*').map(regex::escape).collect();
                            re.push('/');
                            re.push_str(&parts.join("[^/]*"));
                        }
                    }
                }
                format!("{re}{below}$")
            }
            (None, Some(unit), None) => {
                let known = [".service", ".scope", ".slice"];
                if unit.contains('/') || !known.iter().any(|s| unit.ends_with(s)) {
                    return Err("a systemd unit is NAME.service, NAME.scope or NAME.slice".into());
                }
                format!("^{below}/{}{below}$", regex::escape(unit))
            }
            (None, None, Some(id)) => {
                if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(
                        "a Docker container id is its 64 hex digits (docker inspect -f '{{.Id}}')"
                            .into(),
                    );
                }
                let id = id.to_ascii_lowercase();
                format!("^{below}/(?:docker-{id}\\.scope|docker/{id}){below}$")
            }
            _ => return Err("give exactly one of cgroup, systemdUnit, dockerContainer".into()),
        };
        regex::Regex::new(&source).map_err(|e| e.to_string())
    }

    /// A cgroup path this selects, its wildcards filled in: one selector
    /// matching another's example is how two that could select one
    /// workload are found.
    pub fn example(&self) -> String {
        if let Some(glob) = &self.cgroup {
            return glob.replace("**", "x").replace('*', "x");
        }
        if let Some(unit) = &self.systemd_unit {
            return format!("/system.slice/{unit}");
        }
        let id = self.docker_container.as_deref().unwrap_or_default();
        format!("/system.slice/docker-{}.scope", id.to_ascii_lowercase())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Both orders over the same rules: Lattice's priorities as written;
    /// the Gateway API's specificity (exact path, longest prefix, regex,
    /// then method, header count, query count; priority breaks ties).
    #[test]
    fn rules_are_tried_in_the_listeners_order() {
        let h = json!([{"name": "a", "exact": "1"}, {"name": "b", "present": true}]);
        let mut rules = json!([
            {"name": "any-get", "priority": 1, "match": {"method": "GET"}},
            {"name": "prefix-short", "priority": 2, "match": {"path": {"prefix": "/a"}}},
            {"name": "prefix-long", "priority": 3, "match": {"path": {"prefix": "/a/b"}}},
            {"name": "exact", "priority": 4, "match": {"path": {"exact": "/a/b"}}},
            {"name": "regex", "priority": 5, "match": {"path": {"regex": "/a.*"}}},
            {"name": "long-get", "priority": 6, "match": {"path": {"prefix": "/a/b"}, "method": "GET"}},
            {"name": "headers", "priority": 7, "match": {"path": {"prefix": "/a/b"}, "method": "GET", "headers": h}},
            {"name": "query", "priority": 8, "match": {"path": {"prefix": "/a/b"}, "method": "GET", "headers": h,
                                                      "query": [{"name": "v", "exact": "2"}]}},
            {"name": "tie", "priority": 9, "match": {"path": {"prefix": "/a/c"}}},
        ]);
        for r in rules.as_array_mut().unwrap() {
            r["action"] = json!({"fixedResponse": {"statusCode": 200}});
        }
        let listener = |order: &str| -> Listener {
            serde_json::from_value(json!({
                "name": "web", "protocol": "HTTP", "ruleOrder": order, "rules": rules,
                "defaultAction": {"fixedResponse": {"statusCode": 404}},
            }))
            .unwrap()
        };
        let names = |l: Listener| -> Vec<String> {
            l.ordered_rules().iter().map(|r| r.name.clone()).collect()
        };
        assert_eq!(
            names(listener("Priority")),
            [
                "any-get",
                "prefix-short",
                "prefix-long",
                "exact",
                "regex",
                "long-get",
                "headers",
                "query",
                "tie"
            ]
        );
        assert_eq!(
            names(listener("Specificity")),
            [
                "exact",
                "query",
                "headers",
                "long-get",
                "prefix-long",
                "tie",
                "prefix-short",
                "regex",
                "any-get"
            ]
        );
    }

    #[test]
    fn decodes_with_defaults_filled_in() {
        let doc = json!({
            "apiVersion": API_VERSION, "kind": "TargetGroup",
            "metadata": {"name": "blue"},
            "spec": {"network": "east", "targets": [{"address": "10.0.0.1"}]}
        });
        let r = Resource::from_value(0, &doc).unwrap();
        let Spec::TargetGroup(tg) = &r.spec else {
            panic!("wrong kind")
        };
        assert_eq!(tg.health_check.interval_seconds, 30);
        assert_eq!(tg.health_check.matcher.http_code, "200");
        assert_eq!(tg.effective_port(), 80);
        // The normalized form decodes to the same resource.
        assert_eq!(Resource::from_value(0, &r.to_value()).unwrap(), r);
    }

    #[test]
    fn unknown_field_is_reported_with_its_path() {
        let doc = json!({
            "apiVersion": API_VERSION, "kind": "Service",
            "metadata": {"name": "a"},
            "spec": {"listeners": [{"name": "l", "protocol": "HTTP",
                "defaultAction": {"fixedResponse": {"statusCode": 404}}, "colour": 1}]}
        });
        let errs = Resource::from_value(3, &doc).unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].document, Some(3));
        assert_eq!(errs[0].path, "spec.listeners[0].colour");
        assert!(
            errs[0].message.starts_with("unknown field `colour`"),
            "{}",
            errs[0].message
        );
    }

    #[test]
    fn envelope_errors_are_all_reported() {
        let doc = json!({"apiVersion": "v2", "kind": "Gizmo", "spec": {}});
        let errs = Resource::from_value(0, &doc).unwrap_err();
        let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["apiVersion", "kind", "metadata"]);
    }

    #[test]
    fn status_is_ignored_on_input_and_kept_on_objects() {
        let doc = json!({
            "apiVersion": API_VERSION, "kind": "Network", "metadata": {"name": "east"},
            "spec": {}, "status": {"createdRevision": 1, "revision": 2, "createdAt": 5}
        });
        let obj = Object::from_value(&doc).unwrap();
        assert_eq!(obj.status.revision, 2);
        assert_eq!(obj.to_value()["status"]["createdRevision"], 1);
        assert!(Resource::from_value(0, &doc).is_ok());
    }

    #[test]
    fn workload_selectors_against_real_cgroup_layouts() {
        let id = "4f0c5b7e2a1d9c8b7a6f5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a09";
        let glob = |g: &str| WorkloadSelector {
            network: "east".into(),
            cgroup: Some(g.into()),
            ..Default::default()
        };
        let unit = |u: &str| WorkloadSelector {
            network: "east".into(),
            systemd_unit: Some(u.into()),
            ..Default::default()
        };
        let docker = WorkloadSelector {
            network: "east".into(),
            docker_container: Some(id.into()),
            ..Default::default()
        };
        let systemd_docker = format!("/system.slice/docker-{id}.scope");
        let cgroupfs_docker = format!("/docker/{id}");
        let kubelet_systemd = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1f2e.slice/cri-containerd-9a8b.scope";
        let kubelet_cgroupfs = "/kubepods/besteffort/pod1f2e3d4c/9a8b7c6d";
        // (selector, path, selected)
        let table: Vec<(WorkloadSelector, &str, bool)> = vec![
            (unit("nginx.service"), "/system.slice/nginx.service", true),
            (
                unit("nginx.service"),
                "/system.slice/nginx.service/worker",
                true,
            ),
            (
                unit("nginx.service"),
                "/system.slice/nginx-old.service",
                false,
            ),
            (
                unit("nginx.service"),
                "/user.slice/user-1000.slice/user@1000.service/app.slice/nginx.service",
                true,
            ),
            (docker.clone(), &systemd_docker, true),
            (docker.clone(), &cgroupfs_docker, true),
            (docker.clone(), "/system.slice/docker.service", false),
            (
                glob("/kubepods.slice/**/cri-containerd-*.scope"),
                kubelet_systemd,
                true,
            ),
            (
                glob("/kubepods.slice/**/cri-containerd-*.scope"),
                kubelet_cgroupfs,
                false,
            ),
            (glob("/kubepods/*/pod1f2e3d4c/**"), kubelet_cgroupfs, true),
            (
                glob("/kubepods/*/pod1f2e3d4c/**"),
                "/kubepods/besteffort/pod1f2e3d4cX/9a8b",
                false,
            ),
            (
                glob("/system.slice/*.service"),
                "/system.slice/a.service",
                true,
            ),
            (
                glob("/system.slice/*.service"),
                "/system.slice/a.scope",
                false,
            ),
            // A selected cgroup's descendants are selected too.
            (glob("/app"), "/app/worker/1", true),
            (glob("/app"), "/apple", false),
        ];
        for (selector, path, selected) in &table {
            let re = selector.compiled().unwrap();
            assert_eq!(re.is_match(path), *selected, "{selector:?} on {path}");
        }
        // Each selector selects its own example.
        for s in [
            glob("/kubepods.slice/**/cri-containerd-*.scope"),
            unit("a.service"),
            docker,
        ] {
            assert!(s.compiled().unwrap().is_match(&s.example()), "{s:?}");
        }
    }
}
