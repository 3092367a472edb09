//! A node's (or a standalone DNS server's) identity: a P-256 key that never
//! leaves the host and a short-lived certificate from the control plane's CA
//! naming its network and role ([`crate::pki`]). It is what the holder shows
//! the control plane (mutual TLS) and, for a node, other networks' gateways. The first certificate
//! takes a join token; after that the node renews on its own at two thirds
//! of the lifetime, proving itself with the current certificate. Both are
//! kept in the data dir, so a restart needs no new token while the
//! certificate is valid. rustls reads the current certificate on every
//! handshake, so a renewal needs no restart and cuts no connection.

use crate::client::Client;
use crate::pki::{CertificateRequest, IssuedCertificate, Role};
use arc_swap::ArcSwap;
use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Both ends speak HTTP/2 in the tunnel.
pub const ALPN: &[u8] = b"h2";

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "no valid certificate for network {0} in the data dir: start with --join-token (create one with `trellis network join-token {0}`)"
    )]
    NeedToken(String),
    #[error("the control plane refused the certificate request: {0}")]
    Refused(String),
    #[error("the issued certificate names network {got}, not {want}")]
    WrongNetwork { got: String, want: String },
    #[error("the join token is for a {got} certificate; this is a {want}")]
    WrongRole {
        got: &'static str,
        want: &'static str,
    },
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("{0}")]
    Tls(String),
}

struct Current {
    certified: Arc<CertifiedKey>,
    issued: IssuedCertificate,
    /// When this node got (or loaded) it: renewal is due two thirds of the
    /// way from here to expiry (`not_before` is backdated for clock skew).
    since: u64,
}

pub struct Identity {
    network: String,
    role: Role,
    key_pem: String,
    dir: PathBuf,
    provider: Arc<CryptoProvider>,
    roots: Arc<RootCertStore>,
    current: ArcSwap<Current>,
    renewals: AtomicU64,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("network", &self.network)
            .field("role", &self.role)
            .field("not_after", &self.not_after())
            .finish_non_exhaustive()
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls(e: impl std::fmt::Display) -> IdentityError {
    IdentityError::Tls(e.to_string())
}

fn certified(
    provider: &CryptoProvider,
    key_pem: &str,
    issued: &IssuedCertificate,
) -> Result<Arc<CertifiedKey>, IdentityError> {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(issued.certificate.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(tls)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(tls)?;
    let signer = provider.key_provider.load_private_key(key).map_err(tls)?;
    Ok(Arc::new(CertifiedKey::new(chain, signer)))
}

fn csr(key_pem: &str) -> Result<String, IdentityError> {
    let key = rcgen::KeyPair::from_pem(key_pem).map_err(tls)?;
    rcgen::CertificateParams::default()
        .serialize_request(&key)
        .and_then(|c| c.pem())
        .map_err(tls)
}

impl Identity {
    /// The identity of a `role` of `network`: the one kept in `dir` while
    /// its certificate is valid, else a new key and a certificate got with
    /// `join_token`. `client` carries no credential: the token (or, to
    /// renew, the certificate) is the proof.
    pub async fn enroll(
        client: &Client,
        role: Role,
        network: &str,
        dir: &Path,
        join_token: Option<&str>,
    ) -> Result<Arc<Identity>, IdentityError> {
        let (key_file, cert_file) = (dir.join("identity.key"), dir.join("identity.json"));
        let kept = std::fs::read_to_string(&key_file).ok().zip(
            std::fs::read(&cert_file)
                .ok()
                .and_then(|b| serde_json::from_slice::<IssuedCertificate>(&b).ok()),
        );
        let (key_pem, issued) = match kept {
            // An expired one without a token to replace it still starts the
            // host: it serves its last snapshot (the control plane will
            // refuse it until it joins again).
            Some((key, issued))
                if issued.network == network
                    && issued.role == role
                    && (issued.not_after > now() || join_token.is_none()) =>
            {
                if issued.not_after > now() {
                    tracing::info!(
                        network,
                        not_after = issued.not_after,
                        "certificate loaded from the data dir"
                    );
                } else {
                    tracing::error!(
                        network,
                        not_after = issued.not_after,
                        "the certificate in the data dir has expired: the control plane refuses this host until it joins again with --join-token; serving the last snapshot meanwhile"
                    );
                }
                (key, issued)
            }
            _ => {
                let token = join_token.ok_or_else(|| IdentityError::NeedToken(network.into()))?;
                let key = rcgen::KeyPair::generate().map_err(tls)?.serialize_pem();
                let req = CertificateRequest {
                    csr: csr(&key)?,
                    join_token: Some(token.trim().to_string()),
                    certificate: None,
                };
                let issued = client
                    .issue_certificate(&req)
                    .await
                    .map_err(|e| IdentityError::Refused(e.to_string()))?;
                crate::persist::write_atomic(&key_file, key.as_bytes(), 0o600)
                    .map_err(|e| IdentityError::Io(key_file.clone(), e))?;
                tracing::info!(
                    network,
                    not_after = issued.not_after,
                    "joined with a join token"
                );
                (key, issued)
            }
        };
        if issued.network != network {
            return Err(IdentityError::WrongNetwork {
                got: issued.network,
                want: network.into(),
            });
        }
        if issued.role != role {
            return Err(IdentityError::WrongRole {
                got: issued.role.as_str(),
                want: role.as_str(),
            });
        }
        let provider = provider();
        let mut roots = RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(issued.ca.as_bytes()) {
            roots.add(ca.map_err(tls)?).map_err(tls)?;
        }
        let identity = Identity {
            network: network.to_string(),
            role,
            dir: dir.to_path_buf(),
            current: ArcSwap::from_pointee(Current {
                certified: certified(&provider, &key_pem, &issued)?,
                issued,
                since: now(),
            }),
            key_pem,
            provider,
            roots: Arc::new(roots),
            renewals: AtomicU64::new(0),
        };
        identity.persist()?;
        Ok(Arc::new(identity))
    }

    fn persist(&self) -> Result<(), IdentityError> {
        let file = self.dir.join("identity.json");
        let json = serde_json::to_vec_pretty(&self.current.load().issued).map_err(tls)?;
        crate::persist::write_atomic(&file, &json, 0o600).map_err(|e| IdentityError::Io(file, e))
    }

    /// The CA certificates (PEM) of the control plane that issued this.
    pub fn ca_pem(&self) -> String {
        self.current.load().issued.ca.clone()
    }

    /// What shows this identity's current certificate on each handshake:
    /// the credential of its [`Client`].
    pub fn credential(self: &Arc<Self>) -> crate::client::Credential {
        crate::client::Credential::Certificate(Arc::new(Resolver(self.clone())))
    }

    /// Unix seconds.
    pub fn not_after(&self) -> u64 {
        self.current.load().issued.not_after
    }

    pub fn renewals(&self) -> u64 {
        self.renewals.load(Ordering::Relaxed)
    }

    /// Renews the certificate at two thirds of its lifetime, and retries
    /// every few seconds when the control plane does not answer, until the
    /// task is dropped.
    pub async fn renew_forever(self: Arc<Self>, client: Client) {
        loop {
            let (since, na) = {
                let c = self.current.load();
                (c.since, c.issued.not_after)
            };
            let due = since + na.saturating_sub(since) * 2 / 3;
            tokio::time::sleep(Duration::from_secs(due.saturating_sub(now()))).await;
            match self.renew(&client).await {
                Ok(()) => {
                    self.renewals.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(
                        network = self.network,
                        not_after = self.not_after(),
                        role = self.role.as_str(),
                        "certificate renewed"
                    );
                }
                Err(e) => {
                    tracing::warn!(error = %e, expires_in = na.saturating_sub(now()), "renewing the certificate failed; retrying");
                    // Past expiry only a new join token helps: ask less often.
                    let pause = if na > now() { 5 } else { 60 };
                    tokio::time::sleep(Duration::from_secs(pause)).await;
                }
            }
        }
    }

    async fn renew(&self, client: &Client) -> Result<(), IdentityError> {
        let req = CertificateRequest {
            csr: csr(&self.key_pem)?,
            join_token: None,
            certificate: Some(self.current.load().issued.certificate.clone()),
        };
        let issued = client
            .issue_certificate(&req)
            .await
            .map_err(|e| IdentityError::Refused(e.to_string()))?;
        if issued.network != self.network || issued.role != self.role {
            return Err(IdentityError::WrongNetwork {
                got: format!("{} ({})", issued.network, issued.role.as_str()),
                want: format!("{} ({})", self.network, self.role.as_str()),
            });
        }
        let certified = certified(&self.provider, &self.key_pem, &issued)?;
        self.current.store(Arc::new(Current {
            certified,
            issued,
            since: now(),
        }));
        self.persist()
    }

    /// The gateway's side: TLS 1.3 only, a client certificate from the
    /// Trellis CA required, HTTP/2.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<ServerConfig>, IdentityError> {
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            self.roots.clone(),
            self.provider.clone(),
        )
        .build()
        .map_err(tls)?;
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls)?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(Arc::new(Resolver(self.clone())));
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(Arc::new(config))
    }

    /// The caller's side: the gateway must show a certificate from the
    /// Trellis CA for the network it is dialled as.
    pub fn client_config(self: &Arc<Self>) -> Result<Arc<ClientConfig>, IdentityError> {
        let mut config = ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls)?
            .with_root_certificates(self.roots.clone())
            .with_client_cert_resolver(Arc::new(Resolver(self.clone())));
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(Arc::new(config))
    }
}

/// Hands rustls the current certificate on each handshake.
#[derive(Debug)]
struct Resolver(Arc<Identity>);

impl Resolver {
    fn current(&self) -> Arc<CertifiedKey> {
        self.0.current.load().certified.clone()
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl ResolvesClientCert for Resolver {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}
