//! Following one network's snapshot, as node agents and DNS servers do: a
//! long-poll watch on the control plane, each new snapshot handed on and
//! then persisted atomically, and the persisted one handed on first at
//! start, so a restart with the control plane down serves the last config
//! (static stability). A crash between the two only means the restart
//! starts from the snapshot before, and catches up at its first watch.

use crate::client::{Client, Update};
use crate::delta::{Delta, Digests};
use crate::snapshot::Snapshot;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How long one watch call waits on the control plane before asking again.
const WATCH_WAIT: Duration = Duration::from_secs(30);
/// Pause after a first failed call; it doubles with each failure in a row
/// up to [`MAX_RETRY`], jittered, so a control plane that is down, or at its
/// most watchers, is not stampeded by a fleet coming back at once.
const RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(30);

/// The pause after `failures` failed calls in a row: between half and all
/// of the doubled delay.
fn backoff(failures: u32) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let full = RETRY
        .saturating_mul(1 << failures.min(8).saturating_sub(1))
        .min(MAX_RETRY);
    // A fresh RandomState is randomly keyed: enough randomness for jitter.
    let noise = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    full / 2 + full.mul_f64((noise % 1000) as f64 / 2000.0)
}

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
/// snapshot (and, when it came as one, the delta that made it from the one
/// before): the persisted one at `store` (if any) first, then every change.
/// Changes come as deltas on the snapshot held; one that does not lead to
/// the snapshot the control plane promised is dropped and the whole
/// snapshot asked for instead.
pub async fn follow(
    client: Client,
    network: String,
    store: Option<PathBuf>,
    mut apply: impl FnMut(&Snapshot, Option<&Delta>),
) {
    // The snapshot held and its items' digests: a delta is checked by
    // hashing what it changes.
    let mut held: Option<(Arc<Snapshot>, Digests)> = None;
    let mut persisting: Option<tokio::task::JoinHandle<()>> = None;
    if let Some(s) = store.as_deref().and_then(load) {
        tracing::info!(
            network,
            revision = s.revision,
            "serving the persisted snapshot until the control plane answers"
        );
        apply(&s, None);
        let digests = Digests::of(&s, false);
        held = Some((Arc::new(s), digests));
    }
    let mut failures = 0u32;
    loop {
        let since = held.as_ref().map(|(s, _)| s.revision);
        let (next, delta) = match client.watch(&network, since, WATCH_WAIT).await {
            Ok(Some(w)) => {
                failures = 0;
                match (w.update, held.take()) {
                    (Update::Whole(s), _) => {
                        tracing::info!(
                            network,
                            revision = s.revision,
                            services = s.services.len(),
                            bytes = w.wire_bytes,
                            "snapshot received"
                        );
                        let digests = Digests::of(&s, false);
                        ((Arc::new(s), digests), None)
                    }
                    (Update::Delta(d), Some((mut snapshot, mut digests))) => {
                        let started = std::time::Instant::now();
                        // In place, unless the last snapshot is still being
                        // written out.
                        match Arc::make_mut(&mut snapshot).apply(&mut digests, &d) {
                            Ok(()) => {
                                tracing::info!(
                                    network,
                                    base = d.base,
                                    revision = d.revision,
                                    items = d.len(),
                                    bytes = w.wire_bytes,
                                    elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
                                    "snapshot delta applied"
                                );
                                ((snapshot, digests), Some(d))
                            }
                            Err(e) => {
                                tracing::warn!(network, error = %e, "dropping a delta; asking for the whole snapshot");
                                continue;
                            }
                        }
                    }
                    (Update::Delta(_), None) => {
                        // Not asked for: without a base, only whole snapshots are.
                        tracing::warn!(network, "a delta came without a snapshot to apply it to");
                        tokio::time::sleep(backoff(1)).await;
                        continue;
                    }
                }
            }
            Ok(None) => {
                failures = 0;
                continue;
            }
            Err(e) => {
                // Once per outage at warn, then quietly.
                if failures > 0 {
                    tracing::debug!(network, error = %e, "control plane still unavailable");
                } else {
                    tracing::warn!(network, error = %e, "control plane unavailable; serving the last snapshot");
                }
                failures = failures.saturating_add(1);
                tokio::time::sleep(backoff(failures)).await;
                continue;
            }
        };
        apply(&next.0, delta.as_ref());
        if let Some(path) = &store {
            // Written out after it is served, off the runtime: a large
            // snapshot takes tens of milliseconds to encode and write. One
            // write at a time, in order.
            if let Some(previous) = persisting.take() {
                let _ = previous.await;
            }
            let (path, snapshot, network) = (path.clone(), next.0.clone(), network.clone());
            persisting = Some(tokio::task::spawn_blocking(move || {
                if let Err(e) = persist(&path, &snapshot) {
                    tracing::warn!(network, error = %e, "could not persist the snapshot");
                }
            }));
        }
        held = Some(next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap_and_is_jittered() {
        for failures in 1..12 {
            let full = RETRY
                .saturating_mul(1 << (failures - 1).min(7))
                .min(MAX_RETRY);
            let pauses: Vec<Duration> = (0..50).map(|_| backoff(failures)).collect();
            assert!(
                pauses.iter().all(|p| *p >= full / 2 && *p <= full),
                "{failures}: {pauses:?}"
            );
            let distinct: std::collections::BTreeSet<_> = pauses.iter().collect();
            assert!(distinct.len() > 10, "jittered: {pauses:?}");
        }
    }
}
