//! How nodes prove which network they belong to: certificates issued by the
//! control plane's CA, naming the network twice — as a URI SAN
//! (`spiffe://trellis/network/NAME`, what a gateway reads to learn who
//! calls) and as a DNS SAN (`NAME.network.trellis`, what a caller verifies
//! as the gateway's server name). Also the API's request and answer shapes.

use serde::{Deserialize, Serialize};

const URI_PREFIX: &str = "spiffe://trellis/network/";
const NAME_SUFFIX: &str = ".network.trellis";

/// The URI SAN of a certificate for `network`.
pub fn network_uri(network: &str) -> String {
    format!("{URI_PREFIX}{network}")
}

/// The TLS server name a gateway of `network` presents.
pub fn server_name(network: &str) -> String {
    format!("{network}{NAME_SUFFIX}")
}

/// The network a DER certificate names in its URI SAN. `None` when it names
/// none, or more than one. Says nothing about who signed it: verify the
/// chain first.
pub fn network_of(cert_der: &[u8]) -> Option<String> {
    use x509_parser::extensions::GeneralName;
    use x509_parser::prelude::FromDer;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(cert_der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    let mut found = san.value.general_names.iter().filter_map(|n| match n {
        GeneralName::URI(u) => u.strip_prefix(URI_PREFIX),
        _ => None,
    });
    match (found.next(), found.next()) {
        (Some(net), None) if !net.is_empty() => Some(net.to_string()),
        _ => None,
    }
}

/// `POST /v1/networks/NAME/join-tokens`: the answer, shown once.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinToken {
    pub token: String,
    pub network: String,
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
    #[test]
    fn names_round_trip() {
        assert_eq!(super::network_uri("west"), "spiffe://trellis/network/west");
        assert_eq!(super::server_name("west"), "west.network.trellis");
    }
}
