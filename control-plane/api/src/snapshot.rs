//! The per-network config snapshot: everything one network may see, compiled
//! by the control plane. Node agents and DNS servers swap it in whole.

use crate::resource::{AuthType, Gateway, Listener, TargetGroupSpec};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    pub network: String,
    /// The store revision at which this network's view last changed. A
    /// watcher passes it back as `since` to wait for the next change.
    pub revision: u64,
    /// The region SigV4 clients sign for.
    pub region: String,
    /// The DNS zone of service names, e.g. `trellis.internal`.
    pub dns_zone: String,
    /// Services visible to this network, by name.
    pub services: Vec<ServiceView>,
    /// The service networks this network belongs to.
    pub service_networks: Vec<ServiceNetworkView>,
    /// Target groups referenced by the visible services.
    pub target_groups: Vec<TargetGroupView>,
    /// Gateways of the other networks that host those target groups.
    pub gateways: BTreeMap<String, Vec<Gateway>>,
    /// Identities that can sign requests, with what verifying them takes
    /// (never a secret). Sent only to networks that see a SIGV4 service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identities: Vec<IdentityView>,
    /// What this network's gateways may serve to other networks: services
    /// with target groups here, and who may call them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inbound: Vec<InboundView>,
}

impl Snapshot {
    /// The snapshot with HTTPS listeners' private keys replaced by their
    /// hashes: what a node shows of it.
    pub fn redacted(&self) -> Snapshot {
        let mut s = self.clone();
        for cert in s
            .services
            .iter_mut()
            .flat_map(|svc| svc.listeners.iter_mut())
            .flat_map(Listener::certificates_mut)
        {
            *cert = cert.redacted();
        }
        s
    }
}

/// A service whose target groups (some of them) live in this network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InboundView {
    pub service: String,
    /// Networks that see the service (through its service networks).
    pub networks: Vec<String>,
    /// Its target groups in this network; they are in `target_groups`.
    pub target_groups: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IdentityView {
    pub name: String,
    /// `trellis:identity/NAME`, then the identity's aliases: what policies
    /// may name it by.
    pub principals: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Active keys only.
    pub keys: Vec<KeyView>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyView {
    pub access_key_id: String,
    /// `YYYYMMDD` to the hex SigV4 signing key for that date, the snapshot's
    /// region and the `vpc-lattice-svcs` service: yesterday, today, tomorrow.
    pub signing_keys: BTreeMap<String, String>,
    /// Hex uncompressed P-256 point that verifies the key's SigV4A
    /// signatures (any region, any date).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sigv4a_public_key: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceView {
    pub name: String,
    pub vip: Ipv4Addr,
    pub vip_v6: Ipv6Addr,
    /// `<name>.<zone>` first, then the custom domain name if any.
    pub dns_names: Vec<String>,
    /// The service networks through which this network sees the service.
    pub via: Vec<String>,
    pub auth_type: AuthType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_policy: Option<Value>,
    /// Send VPC Lattice's header names too.
    #[serde(default)]
    pub lattice_compat: bool,
    pub listeners: Vec<Listener>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceNetworkView {
    pub name: String,
    pub auth_type: AuthType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_policy: Option<Value>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetGroupView {
    pub name: String,
    #[serde(flatten)]
    pub spec: TargetGroupSpec,
}
