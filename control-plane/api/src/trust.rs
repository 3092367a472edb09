//! Which control plane a client trusts. An operator's CLI trusts a CA
//! certificate (the control plane's `ca.pem`, or `--ca-file`). A node that
//! joins has only its join token, which carries the SHA-256 of that CA: the
//! server must send the CA in its chain, and the chain must verify against
//! it — a control plane with another CA is refused, whatever it says. After
//! the first call the node keeps the CA it was shown ([`Trust::anchor`]).

use rustls::client::ResolvesClientCert;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use std::sync::{Arc, Mutex};

#[derive(Clone, Debug)]
pub enum Trust {
    /// CA certificates, any of which may have issued the server's.
    Roots(Vec<CertificateDer<'static>>),
    /// The SHA-256 of the one CA certificate (DER) the server must chain to.
    Pin(Arc<Pinned>),
}

pub fn sha256(der: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, der);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// A SHA-256 written as 64 hex digits (either case).
pub fn parse_sha256(hex: &str) -> Option<[u8; 32]> {
    data_encoding::HEXLOWER_PERMISSIVE
        .decode(hex.as_bytes())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
}

impl Trust {
    /// The CA certificates of a PEM text.
    pub fn from_pem(pem: &str) -> Result<Trust, String> {
        let roots: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("not PEM certificates: {e}"))?;
        if roots.is_empty() {
            return Err("no certificate in it".into());
        }
        Ok(Trust::Roots(roots))
    }

    pub fn pin(ca_sha256: [u8; 32]) -> Trust {
        Trust::Pin(Arc::new(Pinned {
            sha256: ca_sha256,
            seen: Mutex::new(None),
        }))
    }

    /// The CA a pinned server proved it holds (after a handshake), or the
    /// first of the given roots.
    pub fn anchor(&self) -> Option<CertificateDer<'static>> {
        match self {
            Trust::Roots(r) => r.first().cloned(),
            Trust::Pin(p) => p.seen.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        }
    }

    /// TLS 1.3 to the API, verifying the server as `self` says and showing
    /// `identity`'s certificate if given.
    pub fn client_config(
        &self,
        identity: Option<Arc<dyn ResolvesClientCert>>,
    ) -> Result<ClientConfig, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| e.to_string())?;
        let builder = match self {
            Trust::Roots(certs) => {
                let mut roots = RootCertStore::empty();
                for c in certs {
                    roots
                        .add(c.clone())
                        .map_err(|e| format!("a CA certificate rustls cannot use: {e}"))?;
                }
                builder.with_root_certificates(roots)
            }
            Trust::Pin(pinned) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinVerifier {
                    pinned: pinned.clone(),
                    provider,
                })),
        };
        Ok(match identity {
            Some(r) => builder.with_client_cert_resolver(r),
            None => builder.with_no_client_auth(),
        })
    }
}

/// A CA hash and the CA certificate a server proved to match it.
#[derive(Debug)]
pub struct Pinned {
    sha256: [u8; 32],
    seen: Mutex<Option<CertificateDer<'static>>>,
}

#[derive(Debug)]
struct PinVerifier {
    pinned: Arc<Pinned>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|c| sha256(c) == self.pinned.sha256)
            .ok_or_else(|| {
                rustls::Error::General(
                    "the control plane's CA is not the pinned one (the join token's or --ca-hash)"
                        .into(),
                )
            })?
            .clone()
            .into_owned();
        let mut roots = RootCertStore::empty();
        roots
            .add(ca.clone())
            .map_err(|e| rustls::Error::General(format!("the pinned CA: {e}")))?;
        // The chain itself is checked as for any CA: the hash only says which.
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)?;
        *self.pinned.seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(ca);
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
