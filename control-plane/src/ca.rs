//! The control plane as the certificate authority of node identity. Nodes
//! keep their private keys: they send a CSR and get back a short-lived
//! certificate naming their network (see `trellis_api::pki`). A first
//! certificate takes a join token, which an operator creates for one network
//! and which expires soon; a renewal takes the node's current certificate,
//! still valid and for the CSR's own key, so a node renews on its own for as
//! long as it keeps renewing in time.
//!
//! The store keeps it as installation documents (`crate::docs`), shared by
//! every replica: `ca.key`, sealed with the secrets key like access-key
//! secrets, `ca.pem`, and `join-tokens.json` ([`JoinTokens`]), which keeps
//! only the SHA-256 of each token: a copy of the store without the secrets
//! key mints no identity and joins no one. Older versions kept the three as
//! files in the data dir; [`Authority::legacy`] reads them for the store.
//!
//! Operators get certificates for HTTPS targets from it through the API
//! ([`Authority::sign_server`]), never by reading the key.

use crate::keys::Keyring;
use data_encoding::HEXLOWER;
use rcgen::{
    CertificateParams, CertificateSigningRequestParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber,
};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;
use trellis_api::pki::{self, CertificateRequest, IssuedCertificate, JoinSecret, JoinToken, Role};

/// Clocks of nodes may run a little behind the control plane's.
const BACKDATE_SECS: u64 = 300;

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("the CSR is not valid: {0}")]
    BadCsr(String),
    #[error(
        "the join token is unknown or has expired; create another with `trellis network join-token`"
    )]
    BadToken,
    #[error("the certificate to renew is not valid: {0}")]
    BadCertificate(String),
    #[error("the CSR's key is not the certificate's key")]
    KeyMismatch,
    #[error("give either a join token or the current certificate")]
    NoProof,
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("{0}: {1}")]
    Crypto(&'static str, rcgen::Error),
    #[error("ca.key: {0}")]
    Sealed(#[from] crate::keys::KeyError),
    #[error("{0}")]
    Refused(String),
    #[error("no randomness: {0}")]
    Random(String),
}

/// What the sealed key is bound to (AEAD associated data).
const SEALED_OWNER: &str = "ca.key";

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredToken {
    sha256: String,
    network: String,
    #[serde(default)]
    role: Role,
    expires_at: u64,
}

/// The live join tokens, as `join-tokens.json` holds them: hashes only.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JoinTokens(Vec<StoredToken>);

impl JoinTokens {
    /// The table in `bytes`; none when absent or unreadable (a token lost
    /// is made again, a control plane that does not start is worse).
    pub fn parse(bytes: Option<&[u8]>) -> JoinTokens {
        let Some(bytes) = bytes else {
            return JoinTokens::default();
        };
        serde_json::from_slice(bytes).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "join-tokens.json is unreadable; starting without tokens");
            JoinTokens::default()
        })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// A token that lets `role`s of `network` get their first certificate
    /// until it expires, naming the API's CA by `api_ca_sha256`; and the
    /// table with it (and without the expired ones). The caller has
    /// checked that the network exists.
    pub fn with_new(
        &self,
        network: &str,
        role: Role,
        ttl: Duration,
        api_ca_sha256: [u8; 32],
    ) -> Result<(JoinToken, JoinTokens), CaError> {
        let mut raw = [0u8; 20];
        getrandom::fill(&mut raw).map_err(|e| CaError::Random(e.to_string()))?;
        let token = format!("trellis-join-{}", HEXLOWER.encode(&raw));
        let expires_at = now() + ttl.as_secs();
        let mut next: Vec<StoredToken> = self
            .0
            .iter()
            .filter(|t| t.expires_at > now())
            .cloned()
            .collect();
        next.push(StoredToken {
            sha256: sha256_hex(&token),
            network: network.to_string(),
            role,
            expires_at,
        });
        let created = JoinToken {
            token: JoinSecret::new(token, api_ca_sha256).to_string(),
            network: network.to_string(),
            role,
            expires_at,
        };
        Ok((created, JoinTokens(next)))
    }

    fn redeem(&self, token: &str) -> Result<(String, Role), CaError> {
        // Nodes send the secret; the CA hash after it, if sent, is theirs.
        let secret = token.trim().split('.').next().unwrap_or_default();
        let want = sha256_hex(secret);
        // Hashes are compared, not tokens: timing says nothing of a token.
        self.0
            .iter()
            .find(|t| t.sha256 == want)
            .filter(|t| t.expires_at > now())
            .map(|t| (t.network.clone(), t.role))
            .ok_or(CaError::BadToken)
    }
}

/// A CA as the store keeps it: its key sealed with the secrets key, and its
/// certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaDocs {
    pub sealed_key: String,
    pub pem: String,
}

pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    ca_pem: String,
    ca_der: Vec<u8>,
    ttl: Duration,
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn time_at(unix: u64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(i64::try_from(unix).unwrap_or(i64::MAX))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

fn random_serial() -> SerialNumber {
    let mut raw = [0u8; 16];
    let _ = getrandom::fill(&mut raw);
    raw[0] &= 0x7f; // a positive INTEGER
    SerialNumber::from_slice(&raw)
}

fn sha256_hex(s: &str) -> String {
    HEXLOWER.encode(ring::digest::digest(&ring::digest::SHA256, s.as_bytes()).as_ref())
}

/// A leaf certificate's parameters: `cn`, valid from a little before now
/// (clock skew) until `not_after`, a random serial, this CA's key id, for
/// `usages`. The caller adds the names.
fn leaf(cn: &str, not_after: u64, usages: Vec<ExtendedKeyUsagePurpose>) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = usages;
    params.not_before = time_at(now() - BACKDATE_SECS);
    params.not_after = time_at(not_after);
    params.serial_number = Some(random_serial());
    params.use_authority_key_identifier_extension = true;
    params
}

fn pem_der(pem: &str) -> Option<Vec<u8>> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
    Some(p.contents)
}

impl Authority {
    /// A new CA: a P-256 key and a self-signed certificate valid ten
    /// years, its key sealed with `keyring`.
    pub fn generate(keyring: &Keyring) -> Result<CaDocs, CaError> {
        let key = KeyPair::generate().map_err(|e| CaError::Crypto("CA key", e))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "Trellis node CA");
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = time_at(now() - BACKDATE_SECS);
        params.not_after = time_at(now() + 10 * 365 * 86_400);
        params.serial_number = Some(random_serial());
        let cert = params
            .self_signed(&key)
            .map_err(|e| CaError::Crypto("CA certificate", e))?;
        tracing::info!("created the node CA");
        Ok(CaDocs {
            sealed_key: keyring.seal_text(SEALED_OWNER, &key.serialize_pem())?,
            pem: cert.pem(),
        })
    }

    /// The CA an older version kept in `data_dir` (`ca.key`, sealed or in
    /// the clear, and `ca.pem`), sealed for the store; `None` if there is
    /// none.
    pub fn legacy(data_dir: &Path, keyring: &Keyring) -> Result<Option<CaDocs>, CaError> {
        let (key_file, cert_file) = (data_dir.join("ca.key"), data_dir.join("ca.pem"));
        let stored = match std::fs::read_to_string(&key_file) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(CaError::Io(key_file, e)),
        };
        let pem = std::fs::read_to_string(&cert_file).map_err(|e| CaError::Io(cert_file, e))?;
        let sealed_key = match stored.starts_with("-----BEGIN") {
            true => keyring.seal_text(SEALED_OWNER, &stored)?,
            false => stored.trim().to_string(),
        };
        Ok(Some(CaDocs { sealed_key, pem }))
    }

    /// The CA of `docs`, opened with `keyring`. `ttl` is the lifetime of
    /// node certificates.
    pub fn open(docs: &CaDocs, ttl: Duration, keyring: &Keyring) -> Result<Authority, CaError> {
        let key_pem = keyring.open_text(SEALED_OWNER, docs.sealed_key.trim())?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| CaError::Crypto("ca.key", e))?;
        let ca_der = pem_der(&docs.pem).ok_or_else(|| {
            CaError::Io(
                PathBuf::from("ca.pem"),
                std::io::Error::other("not a PEM certificate"),
            )
        })?;
        let issuer =
            Issuer::from_ca_cert_pem(&docs.pem, key).map_err(|e| CaError::Crypto("ca.pem", e))?;
        Ok(Authority {
            issuer,
            ca_pem: docs.pem.clone(),
            ca_der,
            ttl,
        })
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Checks the request's proof (a join token of `tokens`, or a current
    /// certificate) and signs its key into a certificate for the network
    /// the proof names. `network_exists` rules out networks deleted since.
    pub fn issue(
        &self,
        req: &CertificateRequest,
        tokens: &JoinTokens,
        network_exists: impl Fn(&str) -> bool,
    ) -> Result<IssuedCertificate, CaError> {
        let csr = CertificateSigningRequestParams::from_pem(&req.csr)
            .map_err(|e| CaError::BadCsr(e.to_string()))?;
        let (network, role) = match (&req.join_token, &req.certificate) {
            (Some(token), _) => tokens.redeem(token)?,
            (None, Some(current)) => self.renewal(current, csr.public_key.der_bytes())?,
            (None, None) => return Err(CaError::NoProof),
        };
        if !network_exists(&network) {
            return Err(CaError::BadCertificate(format!(
                "network \"{network}\" no longer exists"
            )));
        }
        let (not_before, not_after) = (now() - BACKDATE_SECS, now() + self.ttl.as_secs());
        let mut params = leaf(
            &format!("trellis {} of {network}", role.as_str()),
            not_after,
            vec![ExtendedKeyUsagePurpose::ClientAuth],
        );
        let ia5 = |s: String| {
            rcgen::string::Ia5String::try_from(s).map_err(|e| CaError::Crypto("SAN", e))
        };
        params.subject_alt_names = vec![SanType::URI(ia5(pki::subject_uri(&network, role))?)];
        // Only a node serves: its network's gateway.
        if role == Role::Node {
            params
                .subject_alt_names
                .push(SanType::DnsName(ia5(pki::server_name(&network))?));
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        let cert = params
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(|e| CaError::Crypto("signing", e))?;
        tracing::info!(%network, role = role.as_str(), not_after, "issued a certificate");
        Ok(IssuedCertificate {
            network,
            role,
            certificate: cert.pem(),
            ca: self.ca_pem.clone(),
            not_before,
            not_after,
        })
    }

    /// The network and role of `current`, a certificate this CA signed,
    /// valid now, for the key `csr_key` (the CSR's signature proved its
    /// possession).
    fn renewal(&self, current: &str, csr_key: &[u8]) -> Result<(String, Role), CaError> {
        use x509_parser::prelude::FromDer;
        let bad = |m: &str| CaError::BadCertificate(m.to_string());
        let der = pem_der(current).ok_or_else(|| bad("not a PEM certificate"))?;
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&der)
            .map_err(|e| bad(&e.to_string()))?;
        let (_, ca) = x509_parser::certificate::X509Certificate::from_der(&self.ca_der)
            .map_err(|e| bad(&e.to_string()))?;
        cert.verify_signature(Some(ca.public_key()))
            .map_err(|_| bad("not signed by this control plane's CA"))?;
        if !cert.validity().is_valid() {
            return Err(bad(
                "expired (or not yet valid): join again with a join token",
            ));
        }
        if cert.public_key().subject_public_key.data.as_ref() != csr_key {
            return Err(CaError::KeyMismatch);
        }
        pki::subject_of(&der)
            .map(|s| (s.network, s.role))
            .ok_or_else(|| bad("names no network"))
    }

    /// The API's own serving certificate, for `names` (DNS names or IP
    /// addresses), with its fresh key: kept in memory only, issued again at
    /// every start, so it always names what the control plane was told.
    pub fn serving_certificate(
        &self,
        names: &[String],
        lifetime: Duration,
    ) -> Result<(Vec<Vec<u8>>, Vec<u8>), CaError> {
        let key = KeyPair::generate().map_err(|e| CaError::Crypto("API key", e))?;
        let mut params = leaf(
            "trellis control plane",
            now() + lifetime.as_secs(),
            vec![ExtendedKeyUsagePurpose::ServerAuth],
        );
        for name in names {
            let san = match name.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(
                    rcgen::string::Ia5String::try_from(name.as_str())
                        .map_err(|e| CaError::Crypto("--advertise", e))?,
                ),
            };
            params.subject_alt_names.push(san);
        }
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| CaError::Crypto("signing", e))?;
        Ok((
            vec![cert.der().to_vec(), self.ca_der.clone()],
            key.serialize_der(),
        ))
    }

    /// A server certificate for an operator's HTTPS target, for the CSR's
    /// own DNS names and IP addresses, valid for `lifetime`. Names under
    /// `.network.trellis` are refused: they are gateways' identities.
    pub fn sign_server(&self, csr_pem: &str, lifetime: Duration) -> Result<String, CaError> {
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| CaError::BadCsr(e.to_string()))?;
        let sans = std::mem::take(&mut csr.params.subject_alt_names);
        if sans.is_empty() {
            return Err(CaError::Refused(
                "the CSR names no DNS name or IP address".into(),
            ));
        }
        for san in &sans {
            match san {
                SanType::DnsName(d)
                    if d.as_str()
                        .to_ascii_lowercase()
                        .ends_with(".network.trellis") =>
                {
                    return Err(CaError::Refused(format!(
                        "{} is a gateway's name; only the control plane issues those",
                        d.as_str()
                    )));
                }
                SanType::DnsName(_) | SanType::IpAddress(_) => {}
                other => {
                    return Err(CaError::Refused(format!(
                        "only DNS names and IP addresses are signed, not {other:?}"
                    )));
                }
            }
        }
        let mut params = leaf(
            "trellis target",
            now() + lifetime.as_secs(),
            vec![ExtendedKeyUsagePurpose::ServerAuth],
        );
        params.subject_alt_names = sans;
        let cert = params
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(|e| CaError::Crypto("signing", e))?;
        Ok(cert.pem())
    }

    /// The CA certificate, DER.
    pub fn ca_der(&self) -> &[u8] {
        &self.ca_der
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The secrets key of a test data dir.
    fn keyring(dir: &Path) -> Keyring {
        Keyring::open_or_create(&dir.join("secrets.key")).unwrap()
    }

    /// A new CA, its key sealed with `dir`'s secrets key.
    fn authority(dir: &Path, ttl: Duration) -> Authority {
        let docs = Authority::generate(&keyring(dir)).unwrap();
        Authority::open(&docs, ttl, &keyring(dir)).unwrap()
    }

    fn issue_with(
        ca: &Authority,
        tokens: &JoinTokens,
        csr: String,
        join_token: Option<String>,
        certificate: Option<String>,
    ) -> Result<IssuedCertificate, CaError> {
        ca.issue(
            &CertificateRequest {
                csr,
                join_token,
                certificate,
            },
            tokens,
            |_| true,
        )
    }

    fn csr(key: &KeyPair) -> String {
        CertificateParams::default()
            .serialize_request(key)
            .unwrap()
            .pem()
            .unwrap()
    }

    #[test]
    fn join_then_renew_then_refuse_strangers() {
        let dir = tempfile::tempdir().unwrap();
        let ca = authority(dir.path(), Duration::from_secs(3600));
        let (token, tokens) = JoinTokens::default()
            .with_new("west", Role::Node, Duration::from_secs(60), [0; 32])
            .unwrap();
        let key = KeyPair::generate().unwrap();
        let first = issue_with(&ca, &tokens, csr(&key), Some(token.token.clone()), None).unwrap();
        assert_eq!(first.network, "west");
        assert_eq!(
            pki::network_of(&pem_der(&first.certificate).unwrap()).as_deref(),
            Some("west")
        );
        assert!(first.not_after - first.not_before >= 3600);

        // Renewal: the same key, the current certificate as proof.
        let none = JoinTokens::default();
        let renewed =
            issue_with(&ca, &none, csr(&key), None, Some(first.certificate.clone())).unwrap();
        assert_eq!(renewed.network, "west");

        // Another key cannot renew someone else's certificate.
        let other = KeyPair::generate().unwrap();
        let stolen = issue_with(
            &ca,
            &none,
            csr(&other),
            None,
            Some(first.certificate.clone()),
        );
        assert!(matches!(stolen, Err(CaError::KeyMismatch)), "{stolen:?}");

        // A certificate from another CA renews nothing.
        let dir2 = tempfile::tempdir().unwrap();
        let foreign = authority(dir2.path(), Duration::from_secs(3600));
        let theirs = issue_with(&foreign, &tokens, csr(&key), Some(token.token), None).unwrap();
        let r = issue_with(&ca, &none, csr(&key), None, Some(theirs.certificate));
        assert!(matches!(r, Err(CaError::BadCertificate(_))), "{r:?}");

        // Unknown tokens, and none at all.
        let r = issue_with(
            &ca,
            &tokens,
            csr(&key),
            Some("trellis-join-nope".into()),
            None,
        );
        assert!(matches!(r, Err(CaError::BadToken)));
        let r = issue_with(&ca, &tokens, csr(&key), None, None);
        assert!(matches!(r, Err(CaError::NoProof)));
    }

    #[test]
    fn tokens_are_kept_as_hashes_and_expire() {
        let (token, tokens) = JoinTokens::default()
            .with_new("east", Role::Node, Duration::from_secs(60), [0; 32])
            .unwrap();
        let stored = String::from_utf8(tokens.to_bytes()).unwrap();
        let secret = token.token.split('.').next().unwrap();
        assert!(!stored.contains(secret), "only the hash is stored");
        let again = JoinTokens::parse(Some(stored.as_bytes()));
        assert_eq!(
            again.redeem(&token.token).unwrap(),
            ("east".into(), Role::Node)
        );

        let (expired, tokens) = again
            .with_new("east", Role::Node, Duration::ZERO, [0; 32])
            .unwrap();
        assert!(matches!(
            tokens.redeem(&expired.token),
            Err(CaError::BadToken)
        ));
        // The next token made drops the expired one from the table.
        let (_, tokens) = tokens
            .with_new("east", Role::Dns, Duration::from_secs(60), [0; 32])
            .unwrap();
        assert_eq!(tokens.0.len(), 2);
        assert!(JoinTokens::parse(Some(b"not json")).0.is_empty());
    }

    #[test]
    fn the_ca_key_is_sealed_and_a_legacy_one_is_read_sealed() {
        let dir = tempfile::tempdir().unwrap();
        let docs = Authority::generate(&keyring(dir.path())).unwrap();
        assert!(
            !docs.sealed_key.contains("PRIVATE KEY"),
            "{}",
            docs.sealed_key
        );
        // Without the secrets key it opens to nothing.
        let other = Keyring::open_or_create(&dir.path().join("other.key")).unwrap();
        assert!(Authority::open(&docs, Duration::from_secs(60), &other).is_err());

        // No files: no legacy CA.
        assert!(
            Authority::legacy(dir.path(), &keyring(dir.path()))
                .unwrap()
                .is_none()
        );
        // A key an older version wrote in the clear: read sealed, same CA.
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        let cert = params.self_signed(&key).unwrap();
        let old = tempfile::tempdir().unwrap();
        std::fs::write(old.path().join("ca.key"), key.serialize_pem()).unwrap();
        std::fs::write(old.path().join("ca.pem"), cert.pem()).unwrap();
        let legacy = Authority::legacy(old.path(), &keyring(old.path()))
            .unwrap()
            .unwrap();
        assert!(!legacy.sealed_key.contains("PRIVATE KEY"));
        let b = Authority::open(&legacy, Duration::from_secs(60), &keyring(old.path())).unwrap();
        assert_eq!(b.ca_pem(), cert.pem());
        assert_ne!(docs.pem, cert.pem());
    }

    #[test]
    fn target_certificates_are_signed_for_their_own_names_only() {
        let dir = tempfile::tempdir().unwrap();
        let ca = authority(dir.path(), Duration::from_secs(60));
        let request = |names: &[&str]| {
            let key = KeyPair::generate().unwrap();
            let params =
                CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                    .unwrap();
            params.serialize_request(&key).unwrap().pem().unwrap()
        };
        let pem = ca
            .sign_server(
                &request(&["backend.shop.internal", "10.0.1.11"]),
                Duration::from_secs(3600),
            )
            .unwrap();
        let der = pem_der(&pem).unwrap();
        let described = trellis_api::tls::describe(&der).unwrap();
        assert_eq!(described.dns_names, ["backend.shop.internal"]);
        assert!(pki::subject_of(&der).is_none(), "no Trellis identity in it");
        for names in [&["west.network.trellis"][..], &[][..]] {
            let r = ca.sign_server(&request(names), Duration::from_secs(3600));
            assert!(matches!(r, Err(CaError::Refused(_))), "{names:?}: {r:?}");
        }
    }
}
