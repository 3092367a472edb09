//! What changed in one network's snapshot between two revisions: the watch's
//! answer to a node that already holds the older one. Every collection of
//! the snapshot is a list of named items kept sorted by name, so a delta is,
//! per collection, the items put (added or changed) and the names removed.
//! The result carries the digest of the snapshot it must produce: a holder
//! that ends anywhere else asks for the whole snapshot instead.

use crate::resource::Gateway;
use crate::snapshot::{
    IdentityView, InboundView, ServiceNetworkView, ServiceView, Snapshot, TargetGroupView,
};
use serde::{Deserialize, Serialize};

/// The media type of a delta on the wire; a whole snapshot is
/// `application/json`.
pub const CONTENT_TYPE: &str = "application/vnd.trellis.delta+json";

/// An item of a snapshot collection, known by its name.
pub trait Keyed {
    fn key(&self) -> &str;
}

impl Keyed for ServiceView {
    fn key(&self) -> &str {
        &self.name
    }
}

impl Keyed for ServiceNetworkView {
    fn key(&self) -> &str {
        &self.name
    }
}

impl Keyed for TargetGroupView {
    fn key(&self) -> &str {
        &self.name
    }
}

impl Keyed for IdentityView {
    fn key(&self) -> &str {
        &self.name
    }
}

impl Keyed for InboundView {
    fn key(&self) -> &str {
        &self.service
    }
}

/// One network's gateways, as the snapshot's `gateways` map holds them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Gateways {
    pub network: String,
    pub gateways: Vec<Gateway>,
}

impl Keyed for Gateways {
    fn key(&self) -> &str {
        &self.network
    }
}

/// One collection's changes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Changes<T> {
    /// Items added or changed, whole.
    #[serde(default = "Vec::new", skip_serializing_if = "Vec::is_empty")]
    pub put: Vec<T>,
    /// Names of items removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<String>,
}

impl<T> Default for Changes<T> {
    fn default() -> Self {
        Changes {
            put: Vec::new(),
            removed: Vec::new(),
        }
    }
}

impl<T> Changes<T> {
    pub fn is_empty(&self) -> bool {
        self.put.is_empty() && self.removed.is_empty()
    }

    pub fn len(&self) -> usize {
        self.put.len() + self.removed.len()
    }
}

impl<T: Keyed> Changes<T> {
    /// Applies these changes to `items`, kept sorted by name.
    fn apply_to(self, items: &mut Vec<T>) {
        for name in &self.removed {
            if let Ok(i) = items.binary_search_by(|x| x.key().cmp(name)) {
                items.remove(i);
            }
        }
        for item in self.put {
            match items.binary_search_by(|x| x.key().cmp(item.key())) {
                Ok(i) => items[i] = item,
                Err(i) => items.insert(i, item),
            }
        }
    }
}

/// From the snapshot at `base` to the one at `revision`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Delta {
    pub network: String,
    pub base: u64,
    pub revision: u64,
    /// [`Snapshot::digest`] of the snapshot this delta produces.
    pub digest: String,
    pub region: String,
    pub dns_zone: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vip_pools: Vec<ipnet::IpNet>,
    #[serde(default, skip_serializing_if = "Changes::is_empty")]
    pub services: Changes<ServiceView>,
    #[serde(default, skip_serializing_if = "Changes::is_empty")]
    pub service_networks: Changes<ServiceNetworkView>,
    #[serde(default, skip_serializing_if = "Changes::is_empty")]
    pub target_groups: Changes<TargetGroupView>,
    #[serde(default, skip_serializing_if = "Changes::is_empty")]
    pub gateways: Changes<Gateways>,
    #[serde(default, skip_serializing_if = "Changes::is_empty")]
    pub identities: Changes<IdentityView>,
    #[serde(default, skip_serializing_if = "Changes::is_empty")]
    pub inbound: Changes<InboundView>,
}

impl Delta {
    /// How many items it puts or removes.
    pub fn len(&self) -> usize {
        self.services.len()
            + self.service_networks.len()
            + self.target_groups.len()
            + self.gateways.len()
            + self.identities.len()
            + self.inbound.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeltaError {
    #[error("the delta is for network {delta}, the snapshot of {held}")]
    Network { held: String, delta: String },
    #[error("the delta starts at revision {base}, the snapshot held is at {held}")]
    Base { held: u64, base: u64 },
    #[error("the snapshot the delta produced has digest {got}, expected {expected}")]
    Digest { got: String, expected: String },
}

impl Snapshot {
    /// SHA-256 (hex) of the snapshot as it goes on the wire: equal
    /// snapshots, built whole or by deltas, have equal digests.
    pub fn digest(&self) -> String {
        crate::secret::sha256_hex(&serde_json::to_vec(self).unwrap_or_default())
    }

    /// The snapshot `delta` leads to from this one. Nothing is changed
    /// unless all of it applies and the result has the promised digest.
    pub fn with(&self, delta: Delta) -> Result<Snapshot, DeltaError> {
        if delta.network != self.network {
            return Err(DeltaError::Network {
                held: self.network.clone(),
                delta: delta.network,
            });
        }
        if delta.base != self.revision {
            return Err(DeltaError::Base {
                held: self.revision,
                base: delta.base,
            });
        }
        let mut next = self.clone();
        next.revision = delta.revision;
        next.region = delta.region;
        next.dns_zone = delta.dns_zone;
        next.vip_pools = delta.vip_pools;
        delta.services.apply_to(&mut next.services);
        delta.service_networks.apply_to(&mut next.service_networks);
        delta.target_groups.apply_to(&mut next.target_groups);
        delta.identities.apply_to(&mut next.identities);
        delta.inbound.apply_to(&mut next.inbound);
        for name in delta.gateways.removed {
            next.gateways.remove(&name);
        }
        for g in delta.gateways.put {
            next.gateways.insert(g.network, g.gateways);
        }
        let got = next.digest();
        if got != delta.digest {
            return Err(DeltaError::Digest {
                got,
                expected: delta.digest,
            });
        }
        Ok(next)
    }

    /// The gateways map as a sorted list of items.
    pub fn gateway_items(&self) -> Vec<Gateways> {
        self.gateways
            .iter()
            .map(|(network, gateways)| Gateways {
                network: network.clone(),
                gateways: gateways.clone(),
            })
            .collect()
    }
}
