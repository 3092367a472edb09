//! Named API tokens for operators, each with a role and scopes: who may do
//! what besides the bootstrap admin token. Tokens are shown once; only
//! their SHA-256 is kept, in the store's `api-tokens.json` document
//! ([`ApiTokens`], shared by every replica), so a copy of the store
//! authenticates no one. A revoked token is gone from the table the moment
//! the call returns (on other replicas, when they follow that commit); an
//! expired one is refused by the clock.
//!
//! Scopes say where a role applies: `servicenetwork/NAME` and
//! `network/NAME` for editors, `identity/NAME` for key managers.

use crate::state::State;
use std::collections::BTreeSet;
use std::sync::Arc;
use trellis_api::client::{ApiToken, NewApiToken, TokenRole};
use trellis_api::{Kind, Resource, Spec};

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
    #[error("api-tokens.json is unreadable: {0}")]
    Corrupt(String),
    #[error("no randomness: {0}")]
    Random(String),
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Stored {
    sha256: String,
    #[serde(flatten)]
    info: ApiToken,
}

/// The named tokens, as `api-tokens.json` holds them: hashes only.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct ApiTokens(Vec<Stored>);

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

impl ApiTokens {
    /// The table in `bytes`; empty when absent.
    pub fn parse(bytes: Option<&[u8]>) -> Result<ApiTokens, OperatorError> {
        match bytes {
            Some(b) => serde_json::from_slice(b).map_err(|e| OperatorError::Corrupt(e.to_string())),
            None => Ok(ApiTokens::default()),
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// A new token, and the table with it (and without expired ones). Its
    /// text is in the answer and nowhere else.
    pub fn with_new(
        &self,
        req: &NewApiToken,
        now: u64,
    ) -> Result<(ApiToken, ApiTokens), OperatorError> {
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
        getrandom::fill(&mut raw).map_err(|e| OperatorError::Random(e.to_string()))?;
        let text = format!("{PREFIX}{}", data_encoding::HEXLOWER.encode(&raw));
        let mut info = ApiToken {
            name: req.name.clone(),
            role: req.role,
            scopes: req.scopes.clone(),
            created_at: now,
            expires_at: now + req.ttl_seconds,
            token: None,
        };
        if self
            .0
            .iter()
            .any(|t| t.info.name == req.name && t.info.expires_at > now)
        {
            return Err(OperatorError::Exists(req.name.clone()));
        }
        // Expired tokens leave the table when the next one is made.
        let mut next: Vec<Stored> = self
            .0
            .iter()
            .filter(|t| t.info.expires_at > now)
            .cloned()
            .collect();
        next.push(Stored {
            sha256: sha256_hex(&text),
            info: info.clone(),
        });
        info.token = Some(text);
        Ok((info, ApiTokens(next)))
    }

    pub fn list(&self) -> Vec<ApiToken> {
        self.0.iter().map(|t| t.info.clone()).collect()
    }

    /// The table without the token `name`.
    pub fn without(&self, name: &str) -> Result<ApiTokens, OperatorError> {
        let next: Vec<Stored> = self
            .0
            .iter()
            .filter(|t| t.info.name != name)
            .cloned()
            .collect();
        if next.len() == self.0.len() {
            return Err(OperatorError::NotFound(name.to_string()));
        }
        Ok(ApiTokens(next))
    }

    /// The valid token whose text is `given`. Hashes are compared, so the
    /// time taken says nothing of any token.
    pub fn authenticate(&self, given: &str, now: u64) -> Option<Arc<ApiToken>> {
        if !given.starts_with(PREFIX) {
            return None;
        }
        let want = sha256_hex(given);
        self.0
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
