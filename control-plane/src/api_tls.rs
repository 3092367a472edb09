//! The API's own TLS: a serving certificate (issued at start by the node CA
//! for the names the control plane is told, or the operator's), and client
//! certificates checked against the node CA when a caller shows one. A
//! caller without one (an operator with a token, a node joining) is let
//! through the handshake; the API then decides by route what it may do.

use crate::ca::Authority;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use trellis_api::trust::sha256;

/// How long a self-issued serving certificate lives: it is issued again at
/// every start.
const SERVING_LIFETIME: Duration = Duration::from_secs(365 * 86_400);

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

/// The API's TLS configuration, and the SHA-256 of its trust anchor (the
/// last certificate of the served chain) that join tokens carry.
pub fn server_config(
    ca: &Authority,
    serving: Serving<'_>,
) -> Result<(Arc<ServerConfig>, [u8; 32]), ApiTlsError> {
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
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| ApiTlsError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| ApiTlsError::Tls(format!("the certificate and key: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((Arc::new(config), anchor))
}
