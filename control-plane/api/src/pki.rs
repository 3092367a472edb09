//! How nodes prove which network they belong to: certificates issued by the
//! control plane's CA, naming the network twice — as a URI SAN
//! (`spiffe://trellis/network/NAME`, what a gateway reads to learn who
//! calls) and as a DNS SAN (`NAME.network.trellis`, what a caller verifies
//! as the gateway's server name). A standalone DNS server's certificate
//! names its network as `spiffe://trellis/network/NAME/dns` and nothing
//! else: it may read the network's names, never call as the network. Also
//! the API's request and answer shapes, and the join token's text.

use serde::{Deserialize, Serialize};

const URI_PREFIX: &str = "spiffe://trellis/network/";
const NAME_SUFFIX: &str = ".network.trellis";
const DNS_SUFFIX: &str = "/dns";
const JOIN_PREFIX: &str = "trellis-join-";

/// What a certificate lets its holder be.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A node agent: reads its network's snapshot, calls and serves
    /// gateways as the network.
    #[default]
    Node,
    /// A standalone DNS server: reads its network's names, no secret.
    Dns,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Node => "node",
            Role::Dns => "dns",
        }
    }
}

/// Who a certificate names: a network, and in which role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subject {
    pub network: String,
    pub role: Role,
}

/// The URI SAN of a node certificate for `network`.
pub fn network_uri(network: &str) -> String {
    format!("{URI_PREFIX}{network}")
}

/// The URI SAN of a certificate for `network` in `role`.
pub fn subject_uri(network: &str, role: Role) -> String {
    match role {
        Role::Node => network_uri(network),
        Role::Dns => format!("{URI_PREFIX}{network}{DNS_SUFFIX}"),
    }
}

/// The TLS server name a gateway of `network` presents.
pub fn server_name(network: &str) -> String {
    format!("{network}{NAME_SUFFIX}")
}

/// The network a DER node certificate names in its URI SAN. `None` when
/// it names none, more than one, or is not a node's. Says nothing about who
/// signed it: verify the chain first.
pub fn network_of(cert_der: &[u8]) -> Option<String> {
    subject_of(cert_der)
        .filter(|s| s.role == Role::Node)
        .map(|s| s.network)
}

/// Whom a DER certificate names in its one Trellis URI SAN. `None` when it
/// names none or more than one. Verify the chain first.
pub fn subject_of(cert_der: &[u8]) -> Option<Subject> {
    use x509_parser::extensions::GeneralName;
    use x509_parser::prelude::FromDer;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(cert_der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    let mut found = san.value.general_names.iter().filter_map(|n| match n {
        GeneralName::URI(u) => u.strip_prefix(URI_PREFIX),
        _ => None,
    });
    let rest = match (found.next(), found.next()) {
        (Some(rest), None) => rest,
        _ => return None,
    };
    let (network, role) = match rest.strip_suffix(DNS_SUFFIX) {
        Some(net) => (net, Role::Dns),
        None => (rest, Role::Node),
    };
    // Network names are DNS labels: a '/' left over is no subject of ours.
    (!network.is_empty() && !network.contains('/')).then(|| Subject {
        network: network.to_string(),
        role,
    })
}

/// A join token as an operator passes it: `trellis-join-SECRET.CAHASH`,
/// where CAHASH is the hex SHA-256 of the API's trust anchor (its DER
/// certificate). A node trusts only a control plane that proves it holds
/// that CA (as kubeadm's `--discovery-token-ca-cert-hash`), so a token
/// sent to a stranger joins nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinSecret {
    /// `trellis-join-SECRET`: what the control plane keeps the hash of.
    pub secret: String,
    pub ca_sha256: [u8; 32],
}

impl JoinSecret {
    pub fn new(secret: String, ca_sha256: [u8; 32]) -> JoinSecret {
        JoinSecret { secret, ca_sha256 }
    }

    pub fn parse(text: &str) -> Result<JoinSecret, String> {
        let text = text.trim();
        let (secret, hash) = text
            .split_once('.')
            .filter(|(s, _)| s.starts_with(JOIN_PREFIX) && s.len() > JOIN_PREFIX.len())
            .ok_or("not a join token (trellis-join-SECRET.CAHASH); create one with `trellis network join-token`")?;
        let bytes = crate::trust::parse_sha256(hash)
            .ok_or("the join token's CA hash is not 64 hex digits")?;
        Ok(JoinSecret::new(secret.to_string(), bytes))
    }
}

impl std::fmt::Display for JoinSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hash = data_encoding::HEXLOWER.encode(&self.ca_sha256);
        write!(f, "{}.{hash}", self.secret)
    }
}

/// `POST /v1/networks/NAME/join-tokens`: the answer, shown once.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinToken {
    /// `trellis-join-SECRET.CAHASH` (see [`JoinSecret`]).
    pub token: String,
    pub network: String,
    /// The role of the certificates it gets.
    #[serde(default)]
    pub role: Role,
    /// Unix seconds.
    pub expires_at: u64,
}

/// `POST /v1/certificates`: a PEM CSR, with either a join token (a first
/// certificate) or the node's current, still valid certificate for the same
/// key (a renewal).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CertificateRequest {
    pub csr: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IssuedCertificate {
    pub network: String,
    #[serde(default)]
    pub role: Role,
    /// PEM.
    pub certificate: String,
    /// The CA certificate, PEM: what peers are verified against.
    pub ca: String,
    /// Unix seconds.
    pub not_before: u64,
    pub not_after: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(network_uri("west"), "spiffe://trellis/network/west");
        assert_eq!(
            subject_uri("west", Role::Dns),
            "spiffe://trellis/network/west/dns"
        );
        assert_eq!(server_name("west"), "west.network.trellis");
    }

    #[test]
    fn join_tokens_carry_the_ca_hash() {
        let t = JoinSecret::new("trellis-join-00ff".into(), [7; 32]);
        let text = t.to_string();
        assert_eq!(JoinSecret::parse(&format!(" {text}\n")).unwrap(), t);
        for bad in [
            "trellis-join-00ff",
            "trellis-join-.0707",
            "join-00ff.0707070707070707070707070707070707070707070707070707070707070707",
            "trellis-join-00ff.07",
            "trellis-join-00ff.zz07070707070707070707070707070707070707070707070707070707070707",
        ] {
            assert!(JoinSecret::parse(bad).is_err(), "{bad}");
        }
    }
}
