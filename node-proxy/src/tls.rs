//! HTTPS listeners: TLS terminated with the listener's certificates. SNI
//! picks the certificate (the first one when the client names none, or a
//! name none covers); ALPN offers HTTP/2 and HTTP/1.1; TLS 1.2 and 1.3
//! only. A new snapshot with new certificates builds a new acceptor for new
//! connections; open ones keep the session they have.

use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;
use trellis_api::resource::ListenerTls;

/// A listener's TLS side, compiled once per change of its certificates.
pub struct Terminator {
    spec: ListenerTls,
    pub acceptor: TlsAcceptor,
    /// (leaf subject, notAfter in seconds since the epoch), for the metric.
    pub expiry: Vec<(String, i64)>,
}

impl std::fmt::Debug for Terminator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Terminator")
            .field("expiry", &self.expiry)
            .finish_non_exhaustive()
    }
}

impl Terminator {
    /// Reuses `previous` when the certificates did not change.
    pub fn compile(
        spec: &ListenerTls,
        previous: Option<&Arc<Terminator>>,
    ) -> Result<Arc<Terminator>, String> {
        if let Some(p) = previous.filter(|p| p.spec == *spec) {
            return Ok(p.clone());
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut certs = Vec::new();
        let mut expiry = Vec::new();
        for (i, c) in spec.certificates.iter().enumerate() {
            let (Some(chain), Some(key)) = (&c.certificate, &c.private_key) else {
                return Err(format!("certificate {i} has no certificate or key"));
            };
            let chain: Vec<CertificateDer<'static>> = trellis_api::tls::chain(chain)
                .map_err(|e| format!("certificate {i}: {e}"))?
                .into_iter()
                .map(CertificateDer::from)
                .collect();
            let leaf = trellis_api::tls::describe(&chain[0])
                .map_err(|e| format!("certificate {i}: {e}"))?;
            let key = PrivateKeyDer::from_pem_slice(key.expose().as_bytes())
                .map_err(|e| format!("certificate {i}: key: {e}"))?;
            let key = provider
                .key_provider
                .load_private_key(key)
                .map_err(|e| format!("certificate {i}: key: {e}"))?;
            expiry.push((leaf.subject, leaf.not_after));
            certs.push((leaf.dns_names, Arc::new(CertifiedKey::new(chain, key))));
        }
        if certs.is_empty() {
            return Err("no certificate".into());
        }
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(BySni(certs)));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(Terminator {
            spec: spec.clone(),
            acceptor: TlsAcceptor::from(Arc::new(config)),
            expiry,
        }))
    }
}

/// Certificates with the DNS names they cover, in declared order.
#[derive(Debug)]
struct BySni(Vec<(Vec<String>, Arc<CertifiedKey>)>);

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let named = hello.server_name().and_then(|name| {
            self.0
                .iter()
                .find(|(names, _)| trellis_api::tls::covers(names, name))
        });
        named.or(self.0.first()).map(|(_, key)| key.clone())
    }
}

/// The largest ClientHello read for TLS passthrough.
pub const MAX_CLIENT_HELLO: usize = 16 * 1024;

/// Why a passthrough connection was closed before reaching a target.
#[derive(Debug, PartialEq, Eq)]
pub enum HelloError {
    /// Not TLS, or a malformed ClientHello: an alert was sent.
    Malformed,
    TooLarge,
    Closed,
}

/// Reads a ClientHello without terminating: the bytes read (to replay to
/// the target) and the server name it asks for. rustls parses it.
pub async fn read_client_hello<S>(s: &mut S) -> Result<(Vec<u8>, Option<String>), HelloError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut acceptor = rustls::server::Acceptor::default();
    let mut seen = Vec::new();
    let mut chunk = vec![0u8; 4096];
    loop {
        let n = s.read(&mut chunk).await.map_err(|_| HelloError::Closed)?;
        if n == 0 {
            return Err(HelloError::Closed);
        }
        seen.extend_from_slice(&chunk[..n]);
        if seen.len() > MAX_CLIENT_HELLO {
            return Err(HelloError::TooLarge);
        }
        let mut fresh = &chunk[..n];
        while !fresh.is_empty() {
            if acceptor.read_tls(&mut fresh).is_err() {
                return Err(HelloError::Malformed);
            }
        }
        match acceptor.accept() {
            Ok(None) => continue,
            Ok(Some(accepted)) => {
                let name = accepted.client_hello().server_name().map(str::to_string);
                return Ok((seen, name));
            }
            Err((_, mut alert)) => {
                let mut out = Vec::new();
                let _ = alert.write_all(&mut out);
                let _ = s.write_all(&out).await;
                return Err(HelloError::Malformed);
            }
        }
    }
}
