//! Access keys: issued here, kept here. A key's secret is sealed at rest
//! with AES-256-GCM under a master key kept in its own file (mode 0600,
//! outside the store by default: `--secrets-key-file`), so a copy of the
//! store alone reveals no secret. The sealed record names its key id as
//! associated data, so a sealed secret cannot be moved to another key.
//!
//! Secrets leave the control plane once, in the answer to the create call.
//! Nodes get derived signing keys instead (`trellis_api::keys`).

use data_encoding::BASE64;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use thiserror::Error;
use trellis_api::keys::{self, AccessKeyInfo, KeyStatus};

#[derive(Debug, Error)]
pub enum KeyError {
    #[error("secrets key file {0}: {1}")]
    MasterKey(PathBuf, String),
    #[error("{0}: cannot unseal its secret (wrong secrets key file?)")]
    Unseal(String),
    #[error("sealed record of {0} is corrupt: {1}")]
    Corrupt(String, String),
    #[error("no randomness available")]
    Random,
}

pub use trellis_api::secret::Secret;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessKey {
    pub id: String,
    pub identity: String,
    pub created: u64,
    pub status: KeyStatus,
    pub secret: Secret,
    /// Derived once: the derivation costs a P-256 scalar multiplication.
    pub sigv4a_public: Option<[u8; 65]>,
    /// The stored record's sealed secret, kept to re-store the key without
    /// sealing again.
    sealed: String,
}

/// How a key is stored.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Record {
    identity: String,
    created: u64,
    status: KeyStatus,
    /// base64(nonce || ciphertext || tag)
    sealed: String,
}

impl AccessKey {
    pub fn info(&self) -> AccessKeyInfo {
        AccessKeyInfo {
            access_key_id: self.id.clone(),
            identity: self.identity.clone(),
            status: self.status,
            create_date: self.created,
        }
    }

    pub fn with_status(&self, status: KeyStatus) -> AccessKey {
        AccessKey {
            status,
            ..self.clone()
        }
    }

    /// The stored form.
    pub fn record(&self) -> Vec<u8> {
        serde_json::to_vec(&Record {
            identity: self.identity.clone(),
            created: self.created,
            status: self.status,
            sealed: self.sealed.clone(),
        })
        .unwrap_or_default()
    }
}

/// Issues keys and seals and unseals their secrets.
pub struct Keyring {
    key: LessSafeKey,
    rng: SystemRandom,
}

const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

impl Keyring {
    /// Opens the master key at `path`, creating it (32 random bytes, mode
    /// 0600) when it does not exist.
    pub fn open_or_create(path: &Path) -> Result<Keyring, KeyError> {
        let err = |m: String| KeyError::MasterKey(path.to_path_buf(), m);
        let rng = SystemRandom::new();
        let bytes = match std::fs::read(path) {
            Ok(b) => {
                let mode = std::fs::metadata(path)
                    .map_err(|e| err(e.to_string()))?
                    .permissions()
                    .mode();
                if mode & 0o077 != 0 {
                    return Err(err(format!(
                        "mode {:o} lets others read it; chmod 600 it",
                        mode & 0o777
                    )));
                }
                b
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut b = vec![0u8; 32];
                rng.fill(&mut b).map_err(|_| KeyError::Random)?;
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
                }
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(|e| err(e.to_string()))?;
                f.write_all(&b)
                    .and_then(|()| f.sync_all())
                    .map_err(|e| err(e.to_string()))?;
                tracing::info!(path = %path.display(), "created the secrets key");
                b
            }
            Err(e) => return Err(err(e.to_string())),
        };
        let unbound = UnboundKey::new(&AES_256_GCM, &bytes)
            .map_err(|_| err(format!("holds {} bytes, expected 32", bytes.len())))?;
        Ok(Keyring {
            key: LessSafeKey::new(unbound),
            rng,
        })
    }

    fn random_text(&self, len: usize, alphabet: &[u8]) -> Result<String, KeyError> {
        let mut raw = vec![0u8; len];
        self.rng.fill(&mut raw).map_err(|_| KeyError::Random)?;
        // 256 is a multiple of both alphabets' sizes: no modulo bias.
        Ok(raw
            .iter()
            .map(|b| alphabet[usize::from(*b) % alphabet.len()] as char)
            .collect())
    }

    /// A new active key for `identity`.
    pub fn issue(&self, identity: &str, now: u64) -> Result<AccessKey, KeyError> {
        const SECRET_ALPHABET: &[u8] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let id = format!("TKIA{}", self.random_text(16, ALPHABET)?);
        let secret = Secret::new(self.random_text(40, SECRET_ALPHABET)?);
        let sealed = self.seal(&id, &secret)?;
        let sigv4a_public = keys::sigv4a_public_key(&id, secret.expose());
        Ok(AccessKey {
            id,
            identity: identity.to_string(),
            created: now,
            status: KeyStatus::Active,
            secret,
            sigv4a_public,
            sealed,
        })
    }

    fn seal(&self, id: &str, secret: &Secret) -> Result<String, KeyError> {
        self.seal_text(id, secret.expose())
    }

    /// `text` sealed (base64 of nonce, ciphertext and tag), bound to `owner`:
    /// it opens only for the same owner.
    pub fn seal_text(&self, owner: &str, text: &str) -> Result<String, KeyError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| KeyError::Random)?;
        let mut buf = text.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(owner.as_bytes()),
                &mut buf,
            )
            .map_err(|_| KeyError::Random)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(BASE64.encode(&out))
    }

    /// The text [`Keyring::seal_text`] sealed for `owner`.
    pub fn open_text(&self, owner: &str, sealed: &str) -> Result<String, KeyError> {
        let corrupt = |m: String| KeyError::Corrupt(owner.to_string(), m);
        let raw = BASE64
            .decode(sealed.as_bytes())
            .map_err(|e| corrupt(e.to_string()))?;
        if raw.len() < NONCE_LEN {
            return Err(corrupt("too short".into()));
        }
        let (nonce, sealed) = raw.split_at(NONCE_LEN);
        let nonce =
            Nonce::try_assume_unique_for_key(nonce).map_err(|_| KeyError::Unseal(owner.into()))?;
        let mut buf = sealed.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(owner.as_bytes()), &mut buf)
            .map_err(|_| KeyError::Unseal(owner.to_string()))?;
        String::from_utf8(plain.to_vec()).map_err(|_| corrupt("not text".into()))
    }

    /// A stored key, its secret unsealed.
    pub fn load(&self, id: &str, record: &[u8]) -> Result<AccessKey, KeyError> {
        let r: Record = serde_json::from_slice(record)
            .map_err(|e| KeyError::Corrupt(id.to_string(), e.to_string()))?;
        let secret = self.open_text(id, &r.sealed)?;
        Ok(AccessKey {
            id: id.to_string(),
            identity: r.identity,
            created: r.created,
            status: r.status,
            sigv4a_public: keys::sigv4a_public_key(id, &secret),
            secret: Secret::new(secret),
            sealed: r.sealed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_keys_round_trip_through_their_sealed_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.key");
        let ring = Keyring::open_or_create(&path).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let k = ring.issue("alice", 7).unwrap();
        assert!(k.id.starts_with("TKIA") && k.id.len() == 20, "{}", k.id);
        assert_eq!(k.secret.expose().len(), 40);
        let record = k.record();
        assert!(
            !String::from_utf8_lossy(&record).contains(k.secret.expose()),
            "the secret is stored in the clear"
        );
        assert!(!format!("{k:?}").contains(k.secret.expose()));
        // A second opener of the same file reads the same key.
        let again = Keyring::open_or_create(&path).unwrap();
        assert_eq!(again.load(&k.id, &record).unwrap(), k);
        // Moved to another id, the record does not open.
        assert!(matches!(
            again.load("TKIAOTHER", &record),
            Err(KeyError::Unseal(_))
        ));
        // Another master key does not open it either.
        let other = Keyring::open_or_create(&dir.path().join("other.key")).unwrap();
        assert!(matches!(
            other.load(&k.id, &record),
            Err(KeyError::Unseal(_))
        ));
    }

    #[test]
    fn a_readable_master_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.key");
        std::fs::write(&path, [0u8; 32]).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Keyring::open_or_create(&path).err().unwrap();
        assert!(e.to_string().contains("chmod 600"), "{e}");
    }
}
