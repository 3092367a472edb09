//! Request authentication (SigV4, SigV4A) and authorization (IAM-style policies),
//! decided before any byte of a request reaches a target.
//!
//! [`Keys`] is compiled from the snapshot's identities (derived signing keys,
//! never secrets) and [`Guard`] from a service's and its service network's
//! auth settings; both live in the config and are swapped with it.
//! SigV4A public keys come with the keys: parsed once per snapshot, checked
//! per request.

pub mod policy;
pub mod sigv4;

use http::{HeaderMap, Method};
use policy::{Outcome, Policy, Principal};
use ring::{hmac, signature};
use sigv4::{Algorithm, Failure, Verifier, fail};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use trellis_api::keys::SIGNING_SERVICE;
use trellis_api::policy::PolicyDocument;
use trellis_api::resource::AuthType;
use trellis_api::snapshot::Snapshot;

/// How far a request's `x-amz-date` may be from the node's clock.
pub const CLOCK_SKEW_SECONDS: i64 = 300;

/// Largest request body buffered to check it against its signed hash;
/// beyond it, 413.
pub const MAX_SIGNED_BODY: usize = 1 << 20;

struct KeyEntry {
    principal: Arc<Principal>,
    /// `YYYYMMDD` to the signing key for that day.
    by_date: Vec<(String, hmac::Key)>,
    /// Verifies SigV4A signatures.
    public: Option<signature::UnparsedPublicKey<[u8; 65]>>,
}

/// Every active access key this node can verify, by id.
pub struct Keys {
    region: String,
    by_id: HashMap<String, KeyEntry>,
    /// Each identity's workload selectors (of this network), compiled.
    workloads: Vec<(regex::Regex, Arc<Principal>)>,
    /// By principal name: the networks whose nodes may name a workload it.
    workload_networks: HashMap<String, Vec<String>>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Key ids only: signing keys are not for logs.
        let mut ids: Vec<&String> = self.by_id.keys().collect();
        ids.sort();
        f.debug_struct("Keys")
            .field("region", &self.region)
            .field("ids", &ids)
            .finish()
    }
}

impl Keys {
    pub fn empty() -> Keys {
        Keys {
            region: String::new(),
            by_id: HashMap::new(),
            workloads: Vec::new(),
            workload_networks: HashMap::new(),
        }
    }

    pub fn compile(snapshot: &Snapshot) -> Keys {
        let mut by_id = HashMap::new();
        let mut workloads = Vec::new();
        let mut workload_networks = HashMap::new();
        for identity in &snapshot.identities {
            if let Some(name) = identity.principals.first() {
                workload_networks.insert(name.clone(), identity.workload_networks.clone());
            }
            let principal = Arc::new(Principal {
                names: identity.principals.clone(),
                tags: identity.tags.clone(),
            });
            for w in &identity.workloads {
                match w.compiled() {
                    Ok(re) => workloads.push((re, principal.clone())),
                    // The control plane validates selectors; one that does
                    // not compile here selects nothing.
                    Err(e) => {
                        tracing::warn!(identity = identity.name, error = %e, "workload selector unusable")
                    }
                }
            }
            for key in &identity.keys {
                let by_date = key
                    .signing_keys
                    .iter()
                    .filter_map(|(date, hex)| {
                        let raw = data_encoding::HEXLOWER
                            .decode(hex.expose().as_bytes())
                            .ok()?;
                        Some((date.clone(), hmac::Key::new(hmac::HMAC_SHA256, &raw)))
                    })
                    .collect();
                let public = key.sigv4a_public_key.as_ref().and_then(|hex| {
                    let mut point = [0u8; 65];
                    data_encoding::HEXLOWER
                        .decode_mut(hex.as_bytes(), &mut point)
                        .ok()?;
                    Some(signature::UnparsedPublicKey::new(
                        &signature::ECDSA_P256_SHA256_ASN1,
                        point,
                    ))
                });
                by_id.insert(
                    key.access_key_id.clone(),
                    KeyEntry {
                        principal: principal.clone(),
                        by_date,
                        public,
                    },
                );
            }
        }
        Keys {
            region: snapshot.region.clone(),
            by_id,
            workloads,
            workload_networks,
        }
    }

    /// Whether nodes of `network` may name a caller `principal` by its
    /// workload: a gateway's check of another network's claim.
    pub fn workload_of(&self, principal: &str, network: &str) -> bool {
        self.workload_networks
            .get(principal)
            .is_some_and(|n| n.iter().any(|n| n == network))
    }

    /// The identity whose workload selectors select `cgroup`. None when none
    /// does, and when two identities' do (validation refuses selectors that
    /// visibly overlap; a pair it could not see is no one, not a guess).
    pub fn workload(&self, cgroup: &str) -> Option<Arc<Principal>> {
        let mut found: Option<&Arc<Principal>> = None;
        for (re, principal) in &self.workloads {
            if !re.is_match(cgroup) {
                continue;
            }
            match found {
                Some(f) if f.names != principal.names => {
                    tracing::warn!(cgroup, a = %f.names[0], b = %principal.names[0], "a workload two identities select: neither");
                    return None;
                }
                _ => found = Some(principal),
            }
        }
        found.cloned()
    }
}

/// A service's auth: the policies that must each allow a request.
#[derive(Debug)]
pub struct Guard {
    /// `(which, policy)`; `None` for a SIGV4 level without a policy, which
    /// allows nothing (as in VPC Lattice).
    levels: Vec<(&'static str, Option<Policy>)>,
}

impl Guard {
    /// `None` when neither the service nor its service network asks for auth.
    pub fn compile(
        service: (AuthType, Option<&serde_json::Value>),
        network: (AuthType, Option<&serde_json::Value>),
    ) -> Option<Guard> {
        let mut levels = Vec::new();
        for (which, (kind, doc)) in [("service-network", network), ("service", service)] {
            if kind != AuthType::SigV4 {
                continue;
            }
            let doc = doc.and_then(|d| match PolicyDocument::parse(d) {
                Ok(p) => Some(Policy::compile(&p)),
                Err(e) => {
                    // The control plane validates policies; a bad one here
                    // denies everything rather than allow by accident.
                    tracing::warn!(level = which, error = %e, "auth policy unusable; denying");
                    None
                }
            });
            levels.push((which, doc));
        }
        (!levels.is_empty()).then_some(Guard { levels })
    }
}

/// What the signature check found.
pub struct Signed {
    pub principal: Option<Arc<Principal>>,
    /// `sigv4` or `sigv4a`; `anonymous` without a signature.
    pub via: &'static str,
    /// The payload hash the signature covers, when the body must match it.
    pub body_hash: Option<String>,
}

/// The request as the auth checks see it.
pub struct Inbound<'a> {
    pub method: &'a Method,
    /// The canonical path and query (crate::canonical): what policies read.
    pub path: &'a str,
    pub query: Option<&'a str>,
    /// The path and query as sent: what the client signed.
    pub signed_path: &'a str,
    pub signed_query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub authority: Option<&'a str>,
    /// The body's hash, when it was buffered before the check (a request
    /// that signs its body without `x-amz-content-sha256`).
    pub body_sha256: Option<&'a str>,
}

/// Whether checking the signature needs the body's hash first: a signed
/// request without `x-amz-content-sha256` signs the hash of its body.
pub fn needs_body_first(headers: &HeaderMap) -> bool {
    headers.contains_key(http::header::AUTHORIZATION)
        && !headers.contains_key("x-amz-content-sha256")
}

/// Verifies the request's signature, if it has one. `now` in seconds since
/// the epoch.
pub fn authenticate(keys: &Keys, req: &Inbound<'_>, now: i64) -> Result<Signed, Failure> {
    let Some(value) = req.headers.get(http::header::AUTHORIZATION) else {
        return Ok(Signed {
            principal: None,
            via: "anonymous",
            body_hash: None,
        });
    };
    if req.headers.contains_key("x-amz-security-token") {
        return Err(fail(
            "UnrecognizedClientException",
            "temporary credentials (x-amz-security-token) are not accepted; sign with a Trellis access key",
        ));
    }
    let value = value.to_str().map_err(|_| {
        fail(
            "IncompleteSignatureException",
            "Authorization header is not text",
        )
    })?;
    let auth = sigv4::Authorization::parse(value)?;
    match auth.region {
        Some(region) if region != keys.region => {
            return Err(fail(
                "InvalidSignatureException",
                format!(
                    "credential scope names region {region}, this service network signs for {}",
                    keys.region
                ),
            ));
        }
        Some(_) => {}
        None => check_region_set(&auth, req.headers, &keys.region)?,
    }
    if auth.service != SIGNING_SERVICE {
        return Err(fail(
            "InvalidSignatureException",
            format!(
                "credential scope names service {}, expected {SIGNING_SERVICE}",
                auth.service
            ),
        ));
    }
    if !auth.signed_headers.contains(&"host") {
        return Err(fail(
            "IncompleteSignatureException",
            "SignedHeaders must include host",
        ));
    }
    let timestamp = req
        .headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            fail(
                "IncompleteSignatureException",
                "x-amz-date header is missing",
            )
        })?;
    let at = sigv4::parse_timestamp(timestamp).ok_or_else(|| {
        fail(
            "IncompleteSignatureException",
            "x-amz-date must be YYYYMMDDTHHMMSSZ",
        )
    })?;
    if !timestamp.starts_with(auth.date) {
        return Err(fail(
            "InvalidSignatureException",
            "credential scope date is not the x-amz-date's date",
        ));
    }
    if (now - at).abs() > CLOCK_SKEW_SECONDS {
        return Err(fail(
            "InvalidSignatureException",
            format!(
                "signature expired or not yet valid: x-amz-date {timestamp} is more than {CLOCK_SKEW_SECONDS} s from the node's clock"
            ),
        ));
    }
    let entry = keys.by_id.get(auth.access_key_id).ok_or_else(|| {
        fail(
            "InvalidClientTokenId",
            format!("access key {} is unknown or inactive", auth.access_key_id),
        )
    })?;
    let verifier = match auth.algorithm {
        Algorithm::HmacSha256 => entry
            .by_date
            .iter()
            .find(|(d, _)| d == auth.date)
            .map(|(_, k)| Verifier::Hmac(k))
            .ok_or_else(|| {
                fail(
                    "InvalidSignatureException",
                    format!(
                        "no signing key for {} on this node: its snapshot is more than a day old (is the node reaching the control plane?) or the client's date is wrong",
                        auth.date
                    ),
                )
            })?,
        Algorithm::EcdsaP256Sha256 => entry.public.as_ref().map(Verifier::Ecdsa).ok_or_else(|| {
            fail(
                "InvalidSignatureException",
                format!("access key {} has no SigV4A public key on this node", auth.access_key_id),
            )
        })?,
    };
    let header_hash = req
        .headers
        .get("x-amz-content-sha256")
        .map(|v| v.to_str().unwrap_or_default());
    let (payload_hash, body_hash) = match header_hash {
        Some(sigv4::UNSIGNED_PAYLOAD) => (sigv4::UNSIGNED_PAYLOAD.to_string(), None),
        Some(h) if h.starts_with("STREAMING-") => {
            return Err(fail(
                "InvalidSignatureException",
                "streaming (chunk-signed) payloads are not supported; use UNSIGNED-PAYLOAD or the body's hash",
            ));
        }
        Some(h) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => {
            (h.to_ascii_lowercase(), Some(h.to_ascii_lowercase()))
        }
        Some(_) => {
            return Err(fail(
                "InvalidSignatureException",
                "x-amz-content-sha256 must be UNSIGNED-PAYLOAD or a SHA-256 hex digest",
            ));
        }
        None => match req.body_sha256 {
            Some(h) => (h.to_string(), None),
            None => (sigv4::EMPTY_SHA256.to_string(), None),
        },
    };
    let request = sigv4::Request {
        method: req.method,
        path: req.signed_path,
        query: req.signed_query,
        headers: req.headers,
        authority: req.authority,
    };
    sigv4::verify(&request, &auth, timestamp, &payload_hash, verifier)?;
    Ok(Signed {
        principal: Some(entry.principal.clone()),
        via: match auth.algorithm {
            Algorithm::EcdsaP256Sha256 => "sigv4a",
            _ => "sigv4",
        },
        body_hash,
    })
}

/// SigV4A names its regions in a signed `x-amz-region-set` (comma-separated,
/// `*` wildcards); one of them must cover the node's region.
fn check_region_set(
    auth: &sigv4::Authorization<'_>,
    headers: &HeaderMap,
    region: &str,
) -> Result<(), Failure> {
    let set = headers
        .get("x-amz-region-set")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            fail(
                "IncompleteSignatureException",
                "SigV4A requests must carry x-amz-region-set",
            )
        })?;
    if !auth.signed_headers.contains(&"x-amz-region-set") {
        return Err(fail(
            "IncompleteSignatureException",
            "SignedHeaders must include x-amz-region-set",
        ));
    }
    if set.split(',').any(|r| policy::glob(r.trim(), region, true)) {
        Ok(())
    } else {
        Err(fail(
            "InvalidSignatureException",
            format!(
                "x-amz-region-set {set} does not include {region}, the region this service network signs for"
            ),
        ))
    }
}

/// Where the request comes from and goes, for policy condition keys.
pub struct Place<'a> {
    pub region: &'a str,
    pub source_network: &'a str,
    pub service: &'a str,
    pub service_network: &'a str,
    pub client: SocketAddr,
    pub port: u16,
    /// The client's connection is TLS (an HTTPS listener).
    pub secure: bool,
    pub now: u64,
    /// The caller's cgroup path, where known.
    pub workload: Option<&'a str>,
}

/// What allowed a request: the statement of the last level's policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Allowed<'g> {
    pub level: &'static str,
    pub statement: &'g str,
}

impl std::fmt::Display for Allowed<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.level, self.statement)
    }
}

/// The policy decision: allowed with the statement that allowed it at the
/// last level, or refused with the one that denied (or no match).
pub fn authorize<'g>(
    guard: &'g Guard,
    principal: Option<&Principal>,
    req: &Inbound<'_>,
    place: &Place<'_>,
) -> Result<Allowed<'g>, Failure> {
    let request = policy::Request {
        principal,
        region: place.region,
        source_network: place.source_network,
        service: place.service,
        service_network: place.service_network,
        method: req.method.as_str(),
        path: req.path,
        query: req.query,
        headers: req.headers,
        port: place.port,
        source_ip: place.client.ip(),
        secure: place.secure,
        now: place.now,
        workload: place.workload,
    };
    let mut decided = Allowed {
        level: "",
        statement: "",
    };
    for (which, doc) in &guard.levels {
        let Some(doc) = doc else {
            return Err(fail(
                "AccessDeniedException",
                format!(
                    "the {which} requires SIGV4 auth and has no auth policy, which allows nothing"
                ),
            ));
        };
        match policy::evaluate(doc, &request) {
            Outcome::Allow(statement) => {
                decided = Allowed {
                    level: which,
                    statement,
                }
            }
            Outcome::Deny(s) => {
                return Err(fail(
                    "AccessDeniedException",
                    format!("denied by the {which} auth policy, statement {s}"),
                ));
            }
            Outcome::NoMatch => {
                let who = if principal.is_some() {
                    "this principal"
                } else {
                    "an unsigned request"
                };
                return Err(fail(
                    "AccessDeniedException",
                    format!("no statement of the {which} auth policy allows {who}"),
                ));
            }
        }
    }
    Ok(decided)
}
