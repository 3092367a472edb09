//! Keeps the views current: each network followed on the control plane
//! (`trellis_api::follow`: long-poll watch, persisted copy served first) and
//! its view rebuilt and swapped in whole on every snapshot.

use crate::handler::Views;
use crate::view::View;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::watch;
use trellis_api::client::Client;
use trellis_api::delta::Delta;
use trellis_api::snapshot::Snapshot;

/// Where `network`'s last snapshot is kept under a data dir.
fn store_path(dir: &std::path::Path, network: &str) -> PathBuf {
    dir.join(format!("dns-snapshot-{network}.json"))
}

/// Swaps `network`'s view for the one of `snapshot`: the current view
/// updated by `delta`, when that is what made the snapshot, or one built
/// whole.
pub fn publish(
    tx: &watch::Sender<Arc<Views>>,
    snapshot: &Snapshot,
    delta: Option<&Delta>,
    ttl: u32,
) {
    let started = std::time::Instant::now();
    let current = tx.borrow().get(&snapshot.network).cloned();
    let view = Arc::new(match (current, delta) {
        (Some(view), Some(delta)) => view.with(snapshot, delta),
        _ => View::build(snapshot, ttl),
    });
    tracing::info!(
        network = snapshot.network,
        revision = snapshot.revision,
        names = view.len(),
        elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
        "DNS view built"
    );
    tx.send_modify(|views| {
        let mut next = (**views).clone();
        next.insert(snapshot.network.clone(), view);
        *views = Arc::new(next);
    });
}

/// Follows `networks` until the process ends.
pub async fn follow(
    networks: Vec<(String, Client)>,
    data_dir: PathBuf,
    ttl: u32,
    tx: watch::Sender<Arc<Views>>,
) {
    let mut tasks = tokio::task::JoinSet::new();
    for (network, client) in networks {
        let store = Some(store_path(&data_dir, &network));
        let tx = tx.clone();
        tasks.spawn(trellis_api::follow::follow(
            client,
            network,
            store,
            move |s, d| publish(&tx, s, d, ttl),
        ));
    }
    while tasks.join_next().await.is_some() {}
}
