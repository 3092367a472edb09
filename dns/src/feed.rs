//! Keeps the views current: one long-poll watch per network on the control
//! plane, each new snapshot persisted (so a restart with the control plane
//! down serves the last one) and swapped in whole.

use crate::handler::Views;
use crate::view::View;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use trellis_api::client::Client;
use trellis_api::snapshot::Snapshot;

const WATCH_WAIT: Duration = Duration::from_secs(30);
const RETRY: Duration = Duration::from_secs(1);

fn file(dir: &Path, network: &str) -> PathBuf {
    dir.join(format!("dns-snapshot-{network}.json"))
}

fn load(dir: &Path, network: &str) -> Option<Snapshot> {
    let bytes = std::fs::read(file(dir, network)).ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(network, error = %e, "ignoring an unreadable persisted snapshot");
            None
        }
    }
}

/// Writes a temporary file and renames it: a crash leaves the old or the new.
fn persist(dir: &Path, s: &Snapshot) -> std::io::Result<()> {
    let path = file(dir, &s.network);
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(s).unwrap_or_default())?;
    std::fs::rename(tmp, path)
}

fn publish(tx: &watch::Sender<Arc<Views>>, network: &str, view: View) {
    let view = Arc::new(view);
    tx.send_modify(|views| {
        let mut next = (**views).clone();
        next.insert(network.to_string(), view);
        *views = Arc::new(next);
    });
}

/// Follows `networks` until the process ends.
pub async fn follow(
    client: Client,
    networks: Vec<String>,
    data_dir: Option<PathBuf>,
    ttl: u32,
    tx: watch::Sender<Arc<Views>>,
) {
    let mut tasks = tokio::task::JoinSet::new();
    for network in networks {
        let mut since = None;
        if let Some(s) = data_dir.as_deref().and_then(|d| load(d, &network)) {
            tracing::info!(
                network,
                revision = s.revision,
                "serving the persisted snapshot until the control plane answers"
            );
            since = Some(s.revision);
            publish(&tx, &network, View::build(&s, ttl));
        }
        let (client, tx, data_dir) = (client.clone(), tx.clone(), data_dir.clone());
        tasks.spawn(async move {
            loop {
                match client.snapshot(&network, since, WATCH_WAIT).await {
                    Ok(Some(s)) => {
                        if let Some(dir) = &data_dir {
                            if let Err(e) = persist(dir, &s) {
                                tracing::warn!(network, error = %e, "could not persist the snapshot");
                            }
                        }
                        tracing::info!(network, revision = s.revision, services = s.services.len(), "zone updated");
                        since = Some(s.revision);
                        publish(&tx, &network, View::build(&s, ttl));
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(network, error = %e, "control plane unavailable; serving the last snapshot");
                        tokio::time::sleep(RETRY).await;
                    }
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}
