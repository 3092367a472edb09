//! Installation documents: what every control plane sharing a store must
//! agree on besides the resources: the node CA, the admin API token, and
//! the tables of join tokens and named API tokens (hashes only). They live
//! in the store beside the resources and are committed like them (guarded
//! by the revision, followed by the other replicas); their secrets are
//! sealed with the secrets key, which never enters the store.
//!
//! Older versions kept them as files in the data dir; the first start of
//! this one reads those into the store. The data dir keeps copies for
//! clients on the same host: `ca.pem` and `api-token`.

use crate::ca::{Authority, CaDocs, CaError};
use crate::keys::{KeyError, Keyring};
use crate::state::State;
use crate::store::Entry;
use std::path::{Path, PathBuf};

pub const CA_KEY: &str = "ca.key";
pub const CA_PEM: &str = "ca.pem";
/// The admin token, sealed.
pub const ADMIN_TOKEN: &str = "api-token";
pub const JOIN_TOKENS: &str = "join-tokens.json";
pub const API_TOKENS: &str = "api-tokens.json";

#[derive(Debug, thiserror::Error)]
pub enum DocsError {
    #[error(transparent)]
    Ca(#[from] CaError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("the store holds no {0}")]
    Missing(&'static str),
}

fn text(state: &State, name: &'static str) -> Result<String, DocsError> {
    let bytes = state.docs.get(name).ok_or(DocsError::Missing(name))?;
    Ok(String::from_utf8_lossy(bytes).into_owned())
}

/// The CA `state` holds.
pub fn ca(state: &State) -> Result<CaDocs, DocsError> {
    Ok(CaDocs {
        sealed_key: text(state, CA_KEY)?,
        pem: text(state, CA_PEM)?,
    })
}

/// The admin token `state` holds, unsealed.
pub fn admin_token(state: &State, keyring: &Keyring) -> Result<String, DocsError> {
    Ok(keyring.open_text(ADMIN_TOKEN, text(state, ADMIN_TOKEN)?.trim())?)
}

/// What `state` lacks of the documents: read from the files of an older
/// version in `data_dir`, or made new.
pub fn missing(state: &State, data_dir: &Path, keyring: &Keyring) -> Result<Vec<Entry>, DocsError> {
    let mut out = Vec::new();
    let has = |name: &str| state.docs.contains_key(name);
    if !has(CA_KEY) || !has(CA_PEM) {
        let ca = match Authority::legacy(data_dir, keyring)? {
            Some(ca) => {
                tracing::info!(data_dir = %data_dir.display(), "moving the node CA into the store");
                ca
            }
            None => Authority::generate(keyring)?,
        };
        out.push((CA_KEY.to_string(), ca.sealed_key.into_bytes()));
        out.push((CA_PEM.to_string(), ca.pem.into_bytes()));
    }
    if !has(ADMIN_TOKEN) {
        // The token clients on this host already use, or a new one.
        let file = data_dir.join(ADMIN_TOKEN);
        let token =
            trellis_api::token::load_or_create(&file).map_err(|e| DocsError::Io(file, e))?;
        out.push((
            ADMIN_TOKEN.to_string(),
            keyring.seal_text(ADMIN_TOKEN, &token)?.into_bytes(),
        ));
    }
    for table in [JOIN_TOKENS, API_TOKENS] {
        if has(table) {
            continue;
        }
        let file = data_dir.join(table);
        match std::fs::read(&file) {
            Ok(bytes) => out.push((table.to_string(), bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(DocsError::Io(file, e)),
        }
    }
    Ok(out)
}

/// Writes the copies clients on this host read, `ca.pem` and `api-token`,
/// where they differ from the store's.
pub fn export(state: &State, data_dir: &Path, keyring: &Keyring) -> Result<(), DocsError> {
    let token = format!("{}\n", admin_token(state, keyring)?);
    for (name, contents) in [(CA_PEM, text(state, CA_PEM)?), (ADMIN_TOKEN, token)] {
        let file = data_dir.join(name);
        if std::fs::read(&file).is_ok_and(|b| b == contents.as_bytes()) {
            continue;
        }
        crate::token::write_private(&file, contents.as_bytes())
            .map_err(|e| DocsError::Io(file.clone(), e))?;
        tracing::info!(file = %file.display(), "wrote the store's copy");
    }
    Ok(())
}
