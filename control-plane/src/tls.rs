//! HTTPS listeners' certificates on the control plane's side: each is
//! checked before it is stored (a chain, a key that belongs to it, not
//! expired), and a re-applied spec that carries only a key's hash (what
//! `get` shows) keeps the key stored for that hash.

use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use trellis_api::resource::{Listener, Resource, Spec, TlsCertificate, key_sha256};
use trellis_api::secret::Secret;
use trellis_api::tls;

/// The leaf's DNS names, or the field at fault and why.
pub fn check(c: &TlsCertificate, now: i64) -> Result<Vec<String>, (&'static str, String)> {
    if c.certificate_file.is_some() || c.key_file.is_some() {
        let field = if c.certificate_file.is_some() {
            "certificateFile"
        } else {
            "keyFile"
        };
        return Err((
            field,
            "files are read by `trellis apply`; the API takes the PEM text as certificate and privateKey".into(),
        ));
    }
    let Some(pem) = &c.certificate else {
        return Err(("certificate", "missing (certificateFile in YAML)".into()));
    };
    let chain = tls::chain(pem).map_err(|e| ("certificate", e))?;
    let leaf = tls::describe(&chain[0]).map_err(|e| ("certificate", e))?;
    if leaf.not_after <= now {
        let days = (now - leaf.not_after) / 86_400;
        return Err((
            "certificate",
            format!(
                "{} expired {days} day(s) ago; renew it and apply again",
                leaf.subject
            ),
        ));
    }
    let Some(key) = &c.private_key else {
        return Err((
            "privateKeySha256",
            "no stored key has this hash; give the key (keyFile in YAML)".into(),
        ));
    };
    let key = PrivateKeyDer::from_pem_slice(key.expose().as_bytes())
        .map_err(|e| ("privateKey", format!("not a PEM private key: {e}")))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| ("privateKey", format!("unsupported key: {e}")))?;
    match signer.public_key() {
        Some(public) if public.as_ref() == leaf.spki.as_slice() => Ok(leaf.dns_names),
        _ => Err((
            "privateKey",
            format!("does not belong to the certificate of {}", leaf.subject),
        )),
    }
}

/// A target group's CA bundle: certificates rustls accepts as trust
/// anchors, at least one.
pub fn check_ca(pem: &str) -> Result<(), String> {
    let mut roots = rustls::RootCertStore::empty();
    let (added, refused) = roots.add_parsable_certificates(
        tls::chain(pem)?
            .into_iter()
            .map(rustls_pki_types::CertificateDer::from),
    );
    match (added, refused) {
        (0, _) => Err("no certificate in it can be a trust anchor".into()),
        (_, 0) => Ok(()),
        (_, n) => Err(format!("{n} of its certificates cannot be a trust anchor")),
    }
}

/// Fills in, from `stored`, the key of every certificate given by its hash
/// alone; a key given in full drops the redundant hash.
pub fn restore_keys(resource: &mut Resource, stored: Option<&Resource>) {
    let Spec::Service(svc) = &mut resource.spec else {
        return;
    };
    let known: Vec<&Secret> = match stored.map(|r| &r.spec) {
        Some(Spec::Service(old)) => old
            .listeners
            .iter()
            .flat_map(Listener::certificates)
            .filter_map(|c| c.private_key.as_ref())
            .collect(),
        _ => Vec::new(),
    };
    for cert in svc
        .listeners
        .iter_mut()
        .flat_map(Listener::certificates_mut)
    {
        if cert.private_key.is_none() {
            if let Some(hash) = &cert.private_key_sha256 {
                cert.private_key = known
                    .iter()
                    .find(|k| key_sha256(k) == *hash)
                    .map(|k| (*k).clone());
            }
        }
        if cert.private_key.is_some() {
            cert.private_key_sha256 = None;
        }
    }
}
