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
