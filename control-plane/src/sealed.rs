//! What the store holds sealed besides access-key secrets: HTTPS listeners'
//! private keys. The control plane and the nodes need them in the clear, the
//! store does not, so a copy of the store (a backup, a disk) without the
//! secrets key file reveals none. A key is stored as `sealed:` and the
//! AES-256-GCM box of its PEM (`Keyring::seal_text`), bound to its service's
//! name; the commit is sealed on its way to the store and the loaded objects
//! opened on their way back, so everything in memory stays as declared.

use crate::keys::{KeyError, Keyring};
use crate::store::{Commit, Loaded};
use serde_json::Value;

const SEALED: &str = "sealed:";
const SERVICE: &str = "Service/";

/// Every `privateKey` of a stored service object.
fn private_keys(object: &mut Value) -> impl Iterator<Item = &mut Value> {
    object["spec"]["listeners"]
        .as_array_mut()
        .into_iter()
        .flatten()
        .filter_map(|l| l.get_mut("tls")?.get_mut("certificates")?.as_array_mut())
        .flatten()
        .filter_map(|c| c.get_mut("privateKey"))
}

/// Rewrites `bytes` (a stored object) with `f` applied to each private key.
fn rewrite(
    key: &str,
    bytes: &mut Vec<u8>,
    mut f: impl FnMut(&str) -> Result<Option<String>, KeyError>,
) -> Result<(), KeyError> {
    if !key.starts_with(SERVICE) {
        return Ok(());
    }
    let mut object: Value = serde_json::from_slice(bytes)
        .map_err(|e| KeyError::Corrupt(key.to_string(), e.to_string()))?;
    let mut changed = false;
    for k in private_keys(&mut object) {
        if let Some(text) = k.as_str() {
            if let Some(new) = f(text)? {
                *k = Value::String(new);
                changed = true;
            }
        }
    }
    if changed {
        *bytes = serde_json::to_vec(&object)
            .map_err(|e| KeyError::Corrupt(key.to_string(), e.to_string()))?;
    }
    Ok(())
}

/// Seals the private keys of the service objects `commit` puts.
pub fn seal(keyring: &Keyring, commit: &mut Commit) -> Result<(), KeyError> {
    for (key, bytes) in &mut commit.put {
        rewrite(key, bytes, |pem| {
            Ok(Some(format!("{SEALED}{}", keyring.seal_text(key, pem)?)))
        })?;
    }
    Ok(())
}

/// Opens the sealed private keys of the loaded service objects. Returns the
/// objects that held a key in the clear (stored by a version before
/// sealing), for the caller to store again sealed.
pub fn open(keyring: &Keyring, loaded: &mut Loaded) -> Result<Vec<(String, Vec<u8>)>, KeyError> {
    open_objects(keyring, &mut loaded.objects)
}

/// [`open`] for stored objects as `Kind/name` and JSON.
pub fn open_objects(
    keyring: &Keyring,
    objects: &mut [(String, Vec<u8>)],
) -> Result<Vec<(String, Vec<u8>)>, KeyError> {
    let mut clear = Vec::new();
    for (key, bytes) in objects.iter_mut() {
        let mut in_clear = false;
        rewrite(key, bytes, |text| match text.strip_prefix(SEALED) {
            Some(sealed) => keyring.open_text(key, sealed).map(Some),
            None => {
                in_clear = true;
                Ok(None)
            }
        })?;
        if in_clear {
            clear.push((key.clone(), bytes.clone()));
        }
    }
    Ok(clear)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{RedbStore, Store};

    const KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIK3y0nEVERSECRETKEYMATERIAL0000000000000\n-----END PRIVATE KEY-----\n";

    fn service(key: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "apiVersion": "trellis.dev/v1alpha1", "kind": "Service",
            "metadata": {"name": "shop"},
            "spec": {"listeners": [{"name": "tls", "protocol": "HTTPS",
                "tls": {"certificates": [{"certificate": "CERT", "privateKey": key}]}}]}
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn keys_are_sealed_in_the_store_and_opened_on_load() {
        let dir = tempfile::tempdir().unwrap();
        let keyring = Keyring::open_or_create(&dir.path().join("secrets.key")).unwrap();
        let store = RedbStore::open(dir.path()).unwrap();
        let mut commit = Commit {
            revision: 1,
            put: vec![("Service/shop".into(), service(KEY_PEM))],
            ..Commit::default()
        };
        seal(&keyring, &mut commit).unwrap();
        store.commit(0, &commit).await.unwrap();
        drop(store);

        let on_disk = std::fs::read(dir.path().join("state.redb")).unwrap();
        let secret = b"VERSECRETKEYMATERIAL";
        assert!(!on_disk.windows(secret.len()).any(|w| w == secret));

        let store = RedbStore::open(dir.path()).unwrap();
        let mut loaded = store.load().await.unwrap();
        let clear = open(&keyring, &mut loaded).unwrap();
        assert!(clear.is_empty());
        assert_eq!(
            loaded.objects,
            [("Service/shop".to_string(), service(KEY_PEM))]
        );

        // Another secrets key opens nothing; a box moved to another service
        // does not open either.
        let other = Keyring::open_or_create(&dir.path().join("other.key")).unwrap();
        let e = open(&other, &mut store.load().await.unwrap()).unwrap_err();
        assert!(e.to_string().contains("Service/shop: cannot unseal"), "{e}");
        let mut moved = store.load().await.unwrap();
        moved.objects[0].0 = "Service/other".into();
        assert!(open(&keyring, &mut moved).is_err());
    }

    #[test]
    fn keys_stored_in_the_clear_are_reported_for_sealing() {
        let dir = tempfile::tempdir().unwrap();
        let keyring = Keyring::open_or_create(&dir.path().join("secrets.key")).unwrap();
        let mut loaded = Loaded {
            objects: vec![
                ("Service/shop".into(), service(KEY_PEM)),
                ("Network/east".into(), b"{\"spec\": {}}".to_vec()),
            ],
            ..Loaded::default()
        };
        let clear = open(&keyring, &mut loaded).unwrap();
        assert_eq!(clear, [("Service/shop".to_string(), service(KEY_PEM))]);
    }
}
