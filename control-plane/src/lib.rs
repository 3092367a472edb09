//! The Trellis control plane: it takes declarative resources, validates them
//! as a whole, allocates service VIPs, stores every change atomically with a
//! monotonically increasing revision, and compiles per-network snapshots that
//! node agents and DNS servers watch.
//!
//! The state lives in memory as an immutable [`state::State`] behind an
//! `Arc`, replaced whole after each successful commit; readers never wait on
//! writers, and writers are serialized.
#![forbid(unsafe_code)]

pub mod manifest;
pub mod server;
pub mod snapshot;
pub mod state;
pub mod store;
pub mod token;
pub mod validate;
pub mod vip;

use bytes::Bytes;
use serde_json::Value;
use server::HttpError;
use state::{Settings, State};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use store::Store;
use tokio::sync::watch;
use trellis_api::Kind;
use trellis_api::client::ApplyResponse;

#[derive(Clone, Debug)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub settings: Settings,
    /// The SigV4 region clients sign for; nodes learn it from snapshots.
    pub region: String,
    pub max_body_bytes: usize,
    pub max_connections: usize,
}

/// One network's compiled snapshot, cached until the state moves on.
struct CachedSnapshot {
    /// The state revision it was compiled from.
    compiled_at: u64,
    /// The revision at which its content last changed (the snapshot's revision).
    changed_at: u64,
    /// The snapshot serialized with revision 0, to tell real changes apart.
    content: Bytes,
    /// What is served.
    body: Bytes,
}

pub struct ControlPlane {
    config: Config,
    state: RwLock<Arc<State>>,
    /// Serializes writers; readers use `state` and never wait on this.
    writer: tokio::sync::Mutex<()>,
    store: Arc<dyn Store>,
    revision: watch::Sender<u64>,
    /// Per network: a single-flight slot, so that a thousand nodes woken by
    /// one apply cause one compilation, not a thousand.
    snapshots: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<CachedSnapshot>>>>>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl ControlPlane {
    /// Loads the state from `store`.
    pub fn open(config: Config, store: Arc<dyn Store>) -> Result<ControlPlane, store::StoreError> {
        let state = State::load(store.load()?, &config.settings)?;
        let (revision, _) = watch::channel(state.revision);
        Ok(ControlPlane {
            config,
            state: RwLock::new(Arc::new(state)),
            writer: tokio::sync::Mutex::new(()),
            store,
            revision,
            snapshots: Mutex::new(HashMap::new()),
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn current(&self) -> Arc<State> {
        self.state.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn publish(&self, next: State) {
        let rev = next.revision;
        *self.state.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
        self.revision.send_replace(rev);
    }

    pub async fn apply(
        &self,
        documents: Vec<Value>,
        dry_run: bool,
    ) -> Result<ApplyResponse, HttpError> {
        let _writer = self.writer.lock().await;
        let current = self.current();
        let settings = self.config.settings.clone();
        let store = self.store.clone();
        let count = documents.len();
        // Validation and the fsync'ed commit are blocking work.
        let outcome = tokio::task::spawn_blocking(move || {
            let applied = current
                .apply(&documents, &settings, now(), dry_run)
                .map_err(HttpError::Invalid)?;
            if let (Some(commit), false) = (&applied.commit, dry_run) {
                store.commit(commit).map_err(|e| {
                    tracing::error!(error = %e, "commit failed; state unchanged");
                    HttpError::Unavailable(e.to_string())
                })?;
            }
            Ok::<_, HttpError>(applied)
        })
        .await
        .map_err(|e| HttpError::Internal(format!("apply task failed: {e}")))?;
        let applied = outcome?;
        let revision = applied.state.revision;
        let changed = applied.commit.is_some();
        if changed && !dry_run {
            self.publish(applied.state);
            tracing::info!(revision, documents = count, "applied");
        }
        let revision = if dry_run {
            self.current().revision
        } else {
            revision
        };
        Ok(ApplyResponse {
            revision,
            changes: applied.changes,
        })
    }

    pub async fn delete(&self, kind: Kind, name: &str) -> Result<u64, HttpError> {
        let _writer = self.writer.lock().await;
        let (next, commit) = self.current().delete(kind, name, now())?;
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.commit(&commit))
            .await
            .map_err(|e| HttpError::Internal(format!("delete task failed: {e}")))?
            .map_err(|e| HttpError::Unavailable(e.to_string()))?;
        let revision = next.revision;
        self.publish(next);
        tracing::info!(revision, %kind, name, "deleted");
        Ok(revision)
    }

    pub fn get(&self, kind: Kind, name: &str) -> Option<Arc<trellis_api::Object>> {
        self.current().get(kind, name).cloned()
    }

    /// `{"items": [...]}`, serialized.
    pub fn list(&self, kind: Kind) -> Bytes {
        let state = self.current();
        let items: Vec<&trellis_api::Object> = state.list(kind).map(|o| o.as_ref()).collect();
        Bytes::from(serde_json::to_vec(&serde_json::json!({ "items": items })).unwrap_or_default())
    }

    /// The network's snapshot; with `since`, waits up to `wait` for one whose
    /// revision is newer and returns `None` if none came.
    pub async fn watch_snapshot(
        &self,
        network: &str,
        since: Option<u64>,
        wait: Duration,
    ) -> Result<Option<Bytes>, HttpError> {
        let mut changes = self.revision.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let (changed_at, body) = self.snapshot(network).await?;
            if since.is_none_or(|s| changed_at > s) {
                return Ok(Some(body));
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => continue,
                _ => return Ok(None),
            }
        }
    }

    async fn snapshot(&self, network: &str) -> Result<(u64, Bytes), HttpError> {
        let state = self.current();
        let unknown = || HttpError::NotFound(format!("Network \"{network}\" does not exist"));
        if state.get(Kind::Network, network).is_none() {
            // Don't keep slots for networks that don't exist (or no longer do).
            self.snapshots
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(network);
            return Err(unknown());
        }
        let slot = self
            .snapshots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(network.to_string())
            .or_default()
            .clone();
        let mut slot = slot.lock().await;
        if let Some(c) = slot.as_ref().filter(|c| c.compiled_at >= state.revision) {
            return Ok((c.changed_at, c.body.clone()));
        }
        let previous = slot.as_ref().map(|c| (c.changed_at, c.content.clone()));
        let (zone, region, name) = (
            self.config.settings.zone.clone(),
            self.config.region.clone(),
            network.to_string(),
        );
        let compiled = tokio::task::spawn_blocking(move || {
            let mut snap = snapshot::compile(&state, &name, &zone, &region)?;
            let content = Bytes::from(serde_json::to_vec(&snap).ok()?);
            let changed_at = match previous {
                Some((at, old)) if old == content => at,
                _ => state.revision,
            };
            snap.revision = changed_at;
            let body = Bytes::from(serde_json::to_vec(&snap).ok()?);
            Some(CachedSnapshot {
                compiled_at: state.revision,
                changed_at,
                content,
                body,
            })
        })
        .await
        .map_err(|e| HttpError::Internal(format!("snapshot task failed: {e}")))?
        .ok_or_else(unknown)?;
        let out = (compiled.changed_at, compiled.body.clone());
        *slot = Some(compiled);
        Ok(out)
    }
}
