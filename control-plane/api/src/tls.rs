//! Certificates of HTTPS listeners: PEM chains read and described the same
//! way by the control plane (validation, `get`) and the node (SNI).

use serde::{Deserialize, Serialize};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

/// The DER certificates of a PEM chain, in order; an error when there is
/// none or a block is not a certificate.
pub fn chain(pem: &str) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    for block in x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes()) {
        let block = block.map_err(|e| format!("not PEM: {e}"))?;
        if block.label != "CERTIFICATE" {
            return Err(format!(
                "a {:?} block where certificates were expected",
                block.label
            ));
        }
        out.push(block.contents);
    }
    if out.is_empty() {
        return Err("no certificate in it (PEM \"BEGIN CERTIFICATE\" blocks)".into());
    }
    Ok(out)
}

/// What one certificate says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Described {
    pub subject: String,
    pub issuer: String,
    /// DNS subject alternative names, lowercase.
    pub dns_names: Vec<String>,
    /// Seconds since the Unix epoch.
    pub not_after: i64,
    /// The DER SubjectPublicKeyInfo, to check a key belongs to it.
    pub spki: Vec<u8>,
}

pub fn describe(der: &[u8]) -> Result<Described, String> {
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der)
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let dns_names = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    Ok(Described {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        dns_names,
        not_after: cert.validity().not_after.timestamp(),
        spki: cert.tbs_certificate.subject_pki.raw.to_vec(),
    })
}

/// Whether a certificate for `names` is valid for `host`: an exact match,
/// or a wildcard `*.example.com` for one more label (RFC 6125).
pub fn covers(names: &[String], host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    names.iter().any(|n| {
        if *n == host {
            return true;
        }
        match (n.strip_prefix("*."), host.split_once('.')) {
            (Some(parent), Some((label, rest))) => !label.is_empty() && rest == parent,
            _ => false,
        }
    })
}

/// A listener certificate as `get` shows it, in the service's status.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateInfo {
    pub listener: String,
    pub subject: String,
    pub issuer: String,
    pub dns_names: Vec<String>,
    /// Seconds since the Unix epoch.
    pub not_after: i64,
    /// Whole days left; negative once expired.
    pub days_to_expiry: i64,
    /// Certificates in the chain, the leaf included.
    pub chain_length: usize,
}

impl CertificateInfo {
    /// Describes a PEM chain at `now` (seconds since the epoch).
    pub fn of(listener: &str, pem: &str, now: i64) -> Option<CertificateInfo> {
        let chain = chain(pem).ok()?;
        let leaf = describe(chain.first()?).ok()?;
        Some(CertificateInfo {
            listener: listener.to_string(),
            subject: leaf.subject,
            issuer: leaf.issuer,
            dns_names: leaf.dns_names,
            not_after: leaf.not_after,
            days_to_expiry: (leaf.not_after - now).div_euclid(86_400),
            chain_length: chain.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_cover_one_label() {
        let names = vec!["shop.example.com".to_string(), "*.example.org".to_string()];
        for (host, ok) in [
            ("shop.example.com", true),
            ("SHOP.example.com.", true),
            ("www.shop.example.com", false),
            ("a.example.org", true),
            ("example.org", false),
            ("a.b.example.org", false),
            (".example.org", false),
        ] {
            assert_eq!(covers(&names, host), ok, "{host}");
        }
    }

    #[test]
    fn chains_refuse_what_is_not_a_certificate() {
        assert!(chain("hello").unwrap_err().contains("no certificate"));
        let key = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert!(chain(key).unwrap_err().contains("PRIVATE KEY"));
    }
}
