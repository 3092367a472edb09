//! Named API tokens for operators, each with a role and scopes: who may do
//! what besides the bootstrap admin token. Tokens are shown once; only
//! their SHA-256 is kept, in `<data-dir>/api-tokens.json` (0600, written
//! atomically), so a copy of the data dir authenticates no one. A revoked
//! token is gone from the table the moment the call returns; an expired one
//! is refused by the clock.
//!
//! Scopes say where a role applies: `servicenetwork/NAME` and
//! `network/NAME` for editors, `identity/NAME` for key managers.

use crate::state::State;
use crate::token::write_private;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use trellis_api::client::{ApiToken, NewApiToken, TokenRole};
use trellis_api::{Kind, Resource, Spec};

const FILE: &str = "api-tokens.json";
const PREFIX: &str = "trellis-token-";
/// A token lives at most this long: a forgotten one dies on its own.
pub const MAX_TTL_SECS: u64 = 366 * 86_400;

#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("{0}")]
    Invalid(String),
    #[error("a token named {0:?} exists; revoke it first or pick another name")]
    Exists(String),
    #[error("no token named {0:?}")]
    NotFound(String),
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Stored {
    sha256: String,
    #[serde(flatten)]
    info: ApiToken,
}

pub struct Operators {
    file: PathBuf,
    tokens: RwLock<Vec<Stored>>,
}

fn sha256_hex(s: &str) -> String {
    trellis_api::secret::sha256_hex(s.as_bytes())
}

/// What a scope names: `(kind, name)`.
fn parse_scope(s: &str) -> Option<(&str, &str)> {
    let (kind, name) = s.split_once('/')?;
    let ok = matches!(kind, "servicenetwork" | "network" | "identity")
        && crate::validate::dns_label(name).is_ok();
    ok.then_some((kind, name))
}

impl Operators {
    /// The tokens in `data_dir`; none if the file does not exist yet.
    pub fn open(data_dir: &Path) -> Result<Operators, OperatorError> {
        let file = data_dir.join(FILE);
        let tokens = match std::fs::read(&file) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                OperatorError::Io(file.clone(), std::io::Error::other(e.to_string()))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(OperatorError::Io(file, e)),
        };
        Ok(Operators {
            file,
            tokens: RwLock::new(tokens),
        })
    }

    fn save(&self, tokens: &[Stored]) -> Result<(), OperatorError> {
        let body = serde_json::to_vec_pretty(tokens).unwrap_or_default();
        write_private(&self.file, &body).map_err(|e| OperatorError::Io(self.file.clone(), e))
    }

    /// A new token; its text is in the answer and nowhere else.
    pub fn create(&self, req: &NewApiToken, now: u64) -> Result<ApiToken, OperatorError> {
        let invalid = |m: String| Err(OperatorError::Invalid(m));
        if let Err(why) = crate::validate::dns_label(&req.name) {
            return invalid(format!("name {:?}: {why}", req.name));
        }
        if req.ttl_seconds == 0 || req.ttl_seconds > MAX_TTL_SECS {
            return invalid(format!(
                "ttl: between 1 second and {} days",
                MAX_TTL_SECS / 86_400
            ));
        }
        let wanted: &[&str] = match req.role {
            TokenRole::Admin | TokenRole::Viewer => &[],
            TokenRole::Editor => &["servicenetwork", "network"],
            TokenRole::KeyManager => &["identity"],
        };
        for scope in &req.scopes {
            match parse_scope(scope) {
                Some((kind, _)) if wanted.contains(&kind) => {}
                _ if wanted.is_empty() => {
                    return invalid(format!("a {} token takes no scope", req.role.as_str()));
                }
                _ => {
                    return invalid(format!(
                        "scope {scope:?}: a {} token is scoped by {}",
                        req.role.as_str(),
                        wanted
                            .iter()
                            .map(|k| format!("{k}/NAME"))
                            .collect::<Vec<_>>()
                            .join(" or ")
                    ));
                }
            }
        }
        if !wanted.is_empty() && req.scopes.is_empty() {
            return invalid(format!(
                "a {} token needs at least one --scope",
                req.role.as_str()
            ));
        }
        let mut raw = [0u8; 24];
        getrandom::fill(&mut raw).map_err(|e| {
            OperatorError::Io(self.file.clone(), std::io::Error::other(e.to_string()))
        })?;
        let text = format!("{PREFIX}{}", data_encoding::HEXLOWER.encode(&raw));
        let mut info = ApiToken {
            name: req.name.clone(),
            role: req.role,
            scopes: req.scopes.clone(),
            created_at: now,
            expires_at: now + req.ttl_seconds,
            token: None,
        };
        let mut tokens = self.tokens.write().unwrap_or_else(|e| e.into_inner());
        if tokens
            .iter()
            .any(|t| t.info.name == req.name && t.info.expires_at > now)
        {
            return Err(OperatorError::Exists(req.name.clone()));
        }
        // Expired tokens leave the table when the next one is made.
        let mut next: Vec<Stored> = tokens
            .iter()
            .filter(|t| t.info.expires_at > now)
            .cloned()
            .collect();
        next.push(Stored {
            sha256: sha256_hex(&text),
            info: info.clone(),
        });
        self.save(&next)?;
        *tokens = next;
        info.token = Some(text);
        Ok(info)
    }

    pub fn list(&self) -> Vec<ApiToken> {
        let tokens = self.tokens.read().unwrap_or_else(|e| e.into_inner());
        tokens.iter().map(|t| t.info.clone()).collect()
    }

    pub fn revoke(&self, name: &str) -> Result<(), OperatorError> {
        let mut tokens = self.tokens.write().unwrap_or_else(|e| e.into_inner());
        let next: Vec<Stored> = tokens
            .iter()
            .filter(|t| t.info.name != name)
            .cloned()
            .collect();
        if next.len() == tokens.len() {
            return Err(OperatorError::NotFound(name.to_string()));
        }
        self.save(&next)?;
        *tokens = next;
        Ok(())
    }

    /// The valid token whose text is `given`. Hashes are compared, so the
    /// time taken says nothing of any token.
    pub fn authenticate(&self, given: &str, now: u64) -> Option<Arc<ApiToken>> {
        if !given.starts_with(PREFIX) {
            return None;
        }
        let want = sha256_hex(given);
        let tokens = self.tokens.read().unwrap_or_else(|e| e.into_inner());
        tokens
            .iter()
            .find(|t| t.sha256 == want && t.info.expires_at > now)
            .map(|t| Arc::new(t.info.clone()))
    }
}

/// Where an editor may change things.
#[derive(Clone, Debug, Default)]
pub struct EditScope {
    service_networks: BTreeSet<String>,
    networks: BTreeSet<String>,
}

impl EditScope {
    pub fn of(token: &ApiToken) -> EditScope {
        let mut out = EditScope::default();
        for (kind, name) in token.scopes.iter().filter_map(|s| parse_scope(s)) {
            match kind {
                "servicenetwork" => out.service_networks.insert(name.to_string()),
                "network" => out.networks.insert(name.to_string()),
                _ => false,
            };
        }
        out
    }

    /// Whether a change of `kind` NAME from `old` to `new` (either absent)
    /// stays within the scope, read against `state` (the state after it).
    /// A service is in scope when every service network it is in, before
    /// and after, is; a target group when its network, before and after,
    /// is a scoped network or a member of a scoped service network.
    pub fn allows(
        &self,
        kind: Kind,
        name: &str,
        old: Option<&Resource>,
        new: Option<&Resource>,
        state: &State,
    ) -> Result<(), String> {
        let outside =
            |what: String| Err(format!("{kind}/{name} {what}, outside this token's scope"));
        for r in old.into_iter().chain(new) {
            match &r.spec {
                Spec::Service(svc) => {
                    if svc.service_networks.is_empty() {
                        return outside("is in no service network".into());
                    }
                    if let Some(sn) = svc
                        .service_networks
                        .iter()
                        .find(|sn| !self.service_networks.contains(*sn))
                    {
                        return outside(format!("is in service network {sn}"));
                    }
                }
                Spec::TargetGroup(tg) => {
                    if !self.networks.contains(&tg.network)
                        && !self.service_networks.iter().any(|sn| {
                            matches!(
                                state.get(Kind::ServiceNetwork, sn).map(|o| &o.resource.spec),
                                Some(Spec::ServiceNetwork(s)) if s.networks.contains(&tg.network)
                            )
                        })
                    {
                        return outside(format!("is in network {}", tg.network));
                    }
                }
                _ => {
                    return Err(format!(
                        "{kind}/{name}: an editor changes only services and target groups"
                    ));
                }
            }
        }
        Ok(())
    }
}
