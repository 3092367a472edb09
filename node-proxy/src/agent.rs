//! The node agent's reaction to a snapshot: swap the proxy's config, keep
//! the health checks in step, and make the datapath redirect exactly the
//! services this network may see.

use crate::health::Checks;
use crate::proxy::Proxy;
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use trellis_api::snapshot::Snapshot;
use trellis_datapath::{Datapath, ServiceEntry};

pub struct Agent {
    proxy: Arc<Proxy>,
    checks: Checks,
    datapath: Option<Box<dyn Datapath>>,
    ready: Arc<AtomicBool>,
}

/// What the datapath must redirect: each VIP (v4 and v6) with its ports.
pub fn entries(s: &Snapshot) -> Vec<ServiceEntry> {
    let mut out = Vec::new();
    for svc in &s.services {
        let ports: BTreeSet<u16> = svc.listeners.iter().map(|l| l.effective_port()).collect();
        if ports.is_empty() {
            continue;
        }
        for vip in [IpAddr::V4(svc.vip), IpAddr::V6(svc.vip_v6)] {
            out.push(ServiceEntry {
                vip,
                ports: ports.iter().copied().collect(),
            });
        }
    }
    out
}

impl Agent {
    pub fn new(proxy: Arc<Proxy>, datapath: Option<Box<dyn Datapath>>) -> Agent {
        Agent {
            proxy,
            checks: Checks::default(),
            datapath,
            ready: Arc::new(AtomicBool::new(false)),
        }
    }

    /// True once a config (persisted or fresh) is in place and programmed.
    pub fn ready(&self) -> Arc<AtomicBool> {
        self.ready.clone()
    }

    pub fn apply(&mut self, snapshot: Snapshot) {
        let entries = entries(&snapshot);
        let revision = snapshot.revision;
        let pools = snapshot.pools();
        let config = self.proxy.apply(snapshot);
        self.checks
            .reconcile(&config.groups, self.proxy.clients.upstream());
        let mut programmed = true;
        if let Some(dp) = self.datapath.as_mut() {
            if let Err(e) = dp.route_pools(&pools) {
                programmed = false;
                tracing::error!(datapath = dp.name(), revision, error = %e, "could not route the VIP pools");
            }
            match dp.reconcile(&entries) {
                Ok(r) => tracing::info!(
                    datapath = dp.name(),
                    revision,
                    added = r.added,
                    removed = r.removed,
                    unchanged = r.unchanged,
                    "datapath programmed"
                ),
                Err(e) => {
                    programmed = false;
                    tracing::error!(datapath = dp.name(), revision, error = %e, "could not program the datapath");
                }
            }
        }
        tracing::info!(
            revision,
            listeners = config.listener_count(),
            target_groups = config.groups.len(),
            "config applied"
        );
        if programmed {
            self.ready.store(true, Ordering::Relaxed);
        }
    }
}
