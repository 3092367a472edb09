//! The API's own TLS: a serving certificate (issued at start by the node CA
//! for the names the control plane is told, or the operator's), and client
//! certificates checked against the node CA when a caller shows one. A
//! caller without one (an operator with a token, a node joining) is let
//! through the handshake; the API then decides by route what it may do.

use crate::ca::Authority;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use trellis_api::trust::sha256;

/// How long a self-issued serving certificate lives; a new one is issued at
/// every start and every [`RENEW_EVERY`].
pub const SERVING_LIFETIME: Duration = Duration::from_secs(30 * 86_400);
pub const RENEW_EVERY: Duration = Duration::from_secs(86_400);

#[derive(Debug, thiserror::Error)]
pub enum ApiTlsError {
    #[error("{0}: {1}")]
    Read(String, String),
    #[error("issuing the API certificate: {0}")]
    Issue(String),
    #[error("TLS: {0}")]
    Tls(String),
}

/// Where the serving certificate comes from.
pub enum Serving<'a> {
    /// Issued by the node CA for these DNS names and IP addresses.
    Issued(&'a [String]),
    /// The operator's PEM chain (leaf first) and key files.
    Files { cert: &'a Path, key: &'a Path },
}

/// The certificate the API serves, replaced whole when renewed: the next
/// handshake gets the new one, open connections keep theirs.
#[derive(Debug)]
pub struct ServingCert(RwLock<Arc<CertifiedKey>>);

impl ServingCert {
    fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<ServingCert, ApiTlsError> {
        Ok(ServingCert(RwLock::new(certified(chain, key)?)))
    }

    /// Serves `chain` (DER, leaf first) with `key` (PKCS#8 DER) from now on.
    pub fn replace(&self, chain: Vec<Vec<u8>>, key: Vec<u8>) -> Result<(), ApiTlsError> {
        let chain = chain.into_iter().map(CertificateDer::from).collect();
        let next = certified(chain, PrivateKeyDer::Pkcs8(key.into()))?;
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = next;
        Ok(())
    }
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

fn certified(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<CertifiedKey>, ApiTlsError> {
    let signer = rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| ApiTlsError::Tls(format!("the certificate's key: {e}")))?;
    Ok(Arc::new(CertifiedKey::new(chain, signer)))
}

/// What the API serves TLS with.
pub struct ApiTls {
    pub config: Arc<ServerConfig>,
    /// The SHA-256 of the trust anchor (the last certificate of the served
    /// chain): what join tokens carry.
    pub anchor: [u8; 32],
    /// The certificate served, for renewal.
    pub served: Arc<ServingCert>,
}

pub fn server_config(ca: &Authority, serving: Serving<'_>) -> Result<ApiTls, ApiTlsError> {
    let (chain, key): (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) = match serving {
        Serving::Issued(names) => {
            let (chain, key) = ca
                .serving_certificate(names, SERVING_LIFETIME)
                .map_err(|e| ApiTlsError::Issue(e.to_string()))?;
            (
                chain.into_iter().map(CertificateDer::from).collect(),
                PrivateKeyDer::Pkcs8(key.into()),
            )
        }
        Serving::Files { cert, key } => {
            let read = |p: &Path, e: &dyn std::fmt::Display| {
                ApiTlsError::Read(p.display().to_string(), e.to_string())
            };
            let chain: Vec<_> = CertificateDer::pem_file_iter(cert)
                .map_err(|e| read(cert, &e))?
                .collect::<Result<_, _>>()
                .map_err(|e| read(cert, &e))?;
            if chain.is_empty() {
                return Err(read(cert, &"no certificate in it"));
            }
            (
                chain,
                PrivateKeyDer::from_pem_file(key).map_err(|e| read(key, &e))?,
            )
        }
    };
    let anchor = sha256(chain.last().map(|c| c.as_ref()).unwrap_or_default());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(ca.ca_der().to_vec()))
        .map_err(|e| ApiTlsError::Tls(e.to_string()))?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| ApiTlsError::Tls(e.to_string()))?;
    let served = Arc::new(ServingCert::new(chain, key)?);
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| ApiTlsError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(served.clone());
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(ApiTls {
        config: Arc::new(config),
        anchor,
        served,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_renewed_certificate_is_served_from_the_next_handshake() {
        let dir = tempfile::tempdir().unwrap();
        let keyring =
            crate::keys::Keyring::open_or_create(&dir.path().join("secrets.key")).unwrap();
        let docs = Authority::generate(&keyring).unwrap();
        let ca = Authority::open(&docs, Duration::from_secs(60), &keyring).unwrap();
        let names = vec!["127.0.0.1".to_string()];
        let ApiTls { anchor, served, .. } = server_config(&ca, Serving::Issued(&names)).unwrap();
        assert_eq!(anchor, sha256(ca.ca_der()), "join tokens pin the node CA");
        let leaf = |s: &ServingCert| s.0.read().unwrap().cert[0].to_vec();
        let first = leaf(&served);
        let (chain, key) = ca.serving_certificate(&names, SERVING_LIFETIME).unwrap();
        let next = chain[0].clone();
        served.replace(chain, key).unwrap();
        assert_ne!(leaf(&served), first);
        assert_eq!(leaf(&served), next);
        // A key that is not one is refused, and the served one stays.
        assert!(served.replace(vec![next.clone()], vec![1, 2, 3]).is_err());
        assert_eq!(leaf(&served), next);
    }
}
