//! What changed in one network's snapshot between two revisions: the watch's
//! answer to a node that already holds the older one. Every collection of
//! the snapshot is a list of named items kept sorted by name, so a delta is,
//! per collection, the items put (added or changed) and the names removed.
//! The result carries the digest of the snapshot it must produce: a holder
//! that ends anywhere else asks for the whole snapshot instead.
//!
//! The digest is made of one SHA-256 per item (of its JSON) and the fields
//! outside the collections, so a holder that keeps its items' digests
//! checks a delta by hashing what the delta changes, not the whole snapshot,
//! and the control plane hashes each changed item once.

use crate::resource::Gateway;
use crate::snapshot::{
    IdentityView, InboundView, ServiceNetworkView, ServiceView, Snapshot, TargetGroupView,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

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

impl<T: Keyed> Keyed for Arc<T> {
    fn key(&self) -> &str {
        (**self).key()
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

impl<T: Keyed + Clone + Serialize> Changes<T> {
    /// Applies these changes to `items`, kept sorted by name, and to their
    /// digests, kept alongside.
    fn apply_to(&self, items: &mut Vec<T>, digests: &mut Vec<ItemDigest>) {
        for name in &self.removed {
            if let Ok(i) = items.binary_search_by(|x| x.key().cmp(name)) {
                items.remove(i);
                digests.remove(i);
            }
        }
        for item in &self.put {
            let digest = item_digest(item, false);
            match items.binary_search_by(|x| x.key().cmp(item.key())) {
                Ok(i) => {
                    items[i] = item.clone();
                    digests[i] = digest;
                }
                Err(i) => {
                    items.insert(i, item.clone());
                    digests.insert(i, digest);
                }
            }
        }
    }
}

/// SHA-256 of one item's JSON.
pub type ItemDigest = [u8; 32];

/// The digest of `item`; with `shown`, of the item as a DNS server is sent
/// it (each secret as its fingerprint).
pub fn item_digest<T: Serialize>(item: &T, shown: bool) -> ItemDigest {
    // Serializing these types cannot fail; were it to, the digest would
    // not match and the holder would ask for the whole snapshot.
    crate::secret::sha256_json(item, shown).unwrap_or_default()
}

/// The digests of a snapshot's items, collection by collection, in the
/// snapshot's order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Digests {
    pub services: Vec<ItemDigest>,
    pub service_networks: Vec<ItemDigest>,
    pub target_groups: Vec<ItemDigest>,
    pub gateways: Vec<ItemDigest>,
    pub identities: Vec<ItemDigest>,
    pub inbound: Vec<ItemDigest>,
}

impl Digests {
    /// Whether there is one digest per item of `snapshot`, collection by
    /// collection.
    fn fit(&self, snapshot: &Snapshot) -> bool {
        self.services.len() == snapshot.services.len()
            && self.service_networks.len() == snapshot.service_networks.len()
            && self.target_groups.len() == snapshot.target_groups.len()
            && self.gateways.len() == snapshot.gateways.len()
            && self.identities.len() == snapshot.identities.len()
            && self.inbound.len() == snapshot.inbound.len()
    }

    /// Every item of `snapshot` hashed; with `shown`, as a DNS server is
    /// sent it.
    pub fn of(snapshot: &Snapshot, shown: bool) -> Digests {
        fn each<T: Serialize>(items: &[T], shown: bool) -> Vec<ItemDigest> {
            items.iter().map(|i| item_digest(i, shown)).collect()
        }
        Digests {
            services: each(&snapshot.services, shown),
            service_networks: each(&snapshot.service_networks, shown),
            target_groups: each(&snapshot.target_groups, shown),
            gateways: each(&snapshot.gateway_items(), shown),
            identities: each(&snapshot.identities, shown),
            inbound: each(&snapshot.inbound, shown),
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
    pub services: Changes<Arc<ServiceView>>,
    #[serde(default, skip_serializing_if = "Changes::is_empty")]
    pub service_networks: Changes<Arc<ServiceNetworkView>>,
    #[serde(default, skip_serializing_if = "Changes::is_empty")]
    pub target_groups: Changes<Arc<TargetGroupView>>,
    #[serde(default, skip_serializing_if = "Changes::is_empty")]
    pub gateways: Changes<Gateways>,
    #[serde(default, skip_serializing_if = "Changes::is_empty")]
    pub identities: Changes<Arc<IdentityView>>,
    #[serde(default, skip_serializing_if = "Changes::is_empty")]
    pub inbound: Changes<Arc<InboundView>>,
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
    /// The snapshot's digest (hex): SHA-256 over its fields outside the
    /// collections and, per collection, the number of items and each
    /// item's digest. Equal snapshots, built whole or by deltas, have equal
    /// digests.
    pub fn digest(&self) -> String {
        self.digest_with(&Digests::of(self, false))
    }

    /// [`Snapshot::digest`] from the digests of its items.
    pub fn digest_with(&self, items: &Digests) -> String {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Fields<'a> {
            network: &'a str,
            revision: u64,
            region: &'a str,
            dns_zone: &'a str,
            vip_pools: &'a [ipnet::IpNet],
        }
        let fields = Fields {
            network: &self.network,
            revision: self.revision,
            region: &self.region,
            dns_zone: &self.dns_zone,
            vip_pools: &self.vip_pools,
        };
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(&crate::secret::sha256_json(&fields, false).unwrap_or_default());
        for collection in [
            &items.services,
            &items.service_networks,
            &items.target_groups,
            &items.gateways,
            &items.identities,
            &items.inbound,
        ] {
            ctx.update(&(collection.len() as u64).to_be_bytes());
            for item in collection {
                ctx.update(item);
            }
        }
        data_encoding::HEXLOWER.encode(ctx.finish().as_ref())
    }

    /// The snapshot `delta` leads to from this one. Nothing is changed
    /// unless all of it applies and the result has the promised digest.
    pub fn with(&self, delta: &Delta) -> Result<Snapshot, DeltaError> {
        let mut next = self.clone();
        next.apply(&mut Digests::of(self, false), delta)?;
        Ok(next)
    }

    /// Applies `delta` in place, keeping `digests` (this snapshot's item
    /// digests) in step, and checks the result against the digest the
    /// delta promised. On an error other than the first two (wrong network
    /// or base, when nothing is changed), the snapshot is left part-changed:
    /// its holder drops it and asks for the whole snapshot.
    pub fn apply(&mut self, digests: &mut Digests, delta: &Delta) -> Result<(), DeltaError> {
        if delta.network != self.network {
            return Err(DeltaError::Network {
                held: self.network.clone(),
                delta: delta.network.clone(),
            });
        }
        if delta.base != self.revision {
            return Err(DeltaError::Base {
                held: self.revision,
                base: delta.base,
            });
        }
        // Digests out of step with the items (a caller's mistake) would
        // misplace every later one: hash them again instead.
        if !digests.fit(self) {
            *digests = Digests::of(self, false);
        }
        self.revision = delta.revision;
        self.region.clone_from(&delta.region);
        self.dns_zone.clone_from(&delta.dns_zone);
        self.vip_pools.clone_from(&delta.vip_pools);
        delta
            .services
            .apply_to(&mut self.services, &mut digests.services);
        delta
            .service_networks
            .apply_to(&mut self.service_networks, &mut digests.service_networks);
        delta
            .target_groups
            .apply_to(&mut self.target_groups, &mut digests.target_groups);
        delta
            .identities
            .apply_to(&mut self.identities, &mut digests.identities);
        delta
            .inbound
            .apply_to(&mut self.inbound, &mut digests.inbound);
        let mut gateways = self.gateway_items();
        delta
            .gateways
            .apply_to(&mut gateways, &mut digests.gateways);
        self.gateways = gateways
            .into_iter()
            .map(|g| (g.network, g.gateways))
            .collect();
        let got = self.digest_with(digests);
        if got != delta.digest {
            return Err(DeltaError::Digest {
                got,
                expected: delta.digest.clone(),
            });
        }
        Ok(())
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
