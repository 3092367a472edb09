//! Following one network's snapshot, as node agents and DNS servers do: a
//! long-poll watch on the control plane, each new snapshot persisted
//! atomically before it is handed on, and the persisted one handed on first
//! at start, so a restart with the control plane down serves the last config
//! (static stability).

use crate::client::Client;
use crate::snapshot::Snapshot;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long one watch call waits on the control plane before asking again.
const WATCH_WAIT: Duration = Duration::from_secs(30);
/// Pause after a failed call, so a control plane that is down is not spun on.
const RETRY: Duration = Duration::from_secs(1);

/// Reads a persisted snapshot; an unreadable one is logged and ignored.
fn load(path: &Path) -> Option<Snapshot> {
    let bytes = std::fs::read(path).ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "ignoring an unreadable persisted snapshot");
            None
        }
    }
}

/// Atomically: a crash leaves the old snapshot or the new one.
fn persist(path: &Path, s: &Snapshot) -> std::io::Result<()> {
    let json = serde_json::to_vec(s).map_err(std::io::Error::other)?;
    // 0600: HTTPS listeners' private keys are in it.
    crate::persist::write_atomic(path, &json, 0o600)
}

/// Follows `network` until the task is dropped, calling `apply` with each
/// snapshot: the persisted one at `store` (if any) first, then every change.
pub async fn follow(
    client: Client,
    network: String,
    store: Option<PathBuf>,
    mut apply: impl FnMut(Snapshot),
) {
    let mut since = None;
    if let Some(s) = store.as_deref().and_then(load) {
        tracing::info!(
            network,
            revision = s.revision,
            "serving the persisted snapshot until the control plane answers"
        );
        since = Some(s.revision);
        apply(s);
    }
    let mut down = false;
    loop {
        match client.snapshot(&network, since, WATCH_WAIT).await {
            Ok(Some(s)) => {
                if let Some(path) = &store {
                    if let Err(e) = persist(path, &s) {
                        tracing::warn!(network, error = %e, "could not persist the snapshot");
                    }
                }
                tracing::info!(
                    network,
                    revision = s.revision,
                    services = s.services.len(),
                    "snapshot received"
                );
                since = Some(s.revision);
                down = false;
                apply(s);
            }
            Ok(None) => down = false,
            Err(e) => {
                // Once per outage at warn, then quietly.
                if down {
                    tracing::debug!(network, error = %e, "control plane still unavailable");
                } else {
                    tracing::warn!(network, error = %e, "control plane unavailable; serving the last snapshot");
                }
                down = true;
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}
