//! The per-network config snapshot: everything one network may see, compiled
//! by the control plane. Node agents and DNS servers swap it in whole.

use crate::resource::{AuthType, Gateway, Listener, TargetGroupSpec};
use crate::secret::Secret;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

/// The control plane's default VIP pools: Lattice's link-local /24, and a
/// ULA /112.
pub const DEFAULT_VIP_POOL_V4: &str = "169.254.171.0/24";
pub const DEFAULT_VIP_POOL_V6: &str = "fd00:7472:6c73::/112";

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
    /// The control plane's VIP pools: what the nftables datapath routes
    /// `local` on lo, so no node has a pool flag to keep in step.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vip_pools: Vec<ipnet::IpNet>,
    /// Services visible to this network, by name.
    pub services: Vec<Arc<ServiceView>>,
    /// The service networks this network belongs to.
    pub service_networks: Vec<Arc<ServiceNetworkView>>,
    /// Target groups referenced by the visible services.
    pub target_groups: Vec<Arc<TargetGroupView>>,
    /// Gateways of the other networks that host those target groups.
    pub gateways: BTreeMap<String, Vec<Gateway>>,
    /// Identities that can sign requests, with what verifying them takes
    /// (never a secret). Sent only to networks that see a SIGV4 service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identities: Vec<Arc<IdentityView>>,
    /// What this network's gateways may serve to other networks: services
    /// with target groups here, and who may call them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inbound: Vec<Arc<InboundView>>,
}

impl Snapshot {
    /// The VIP pools to route: the snapshot's, or the defaults for one from
    /// a control plane older than the field.
    pub fn pools(&self) -> Vec<String> {
        if self.vip_pools.is_empty() {
            vec![DEFAULT_VIP_POOL_V4.into(), DEFAULT_VIP_POOL_V6.into()]
        } else {
            self.vip_pools.iter().map(ToString::to_string).collect()
        }
    }

    /// What a node shows of its snapshot (admin `/config`): every
    /// [`Secret`] in it (signing keys, listener private keys) replaced by
    /// its fingerprint.
    pub fn shown(&self) -> Value {
        crate::secret::shown(self)
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
    /// The identity's workload selectors for this snapshot's network.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workloads: Vec<crate::resource::WorkloadSelector>,
    /// Every network whose nodes may name callers this identity: what a
    /// gateway checks a workload claim from another network against.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workload_networks: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyView {
    pub access_key_id: String,
    /// `YYYYMMDD` to the hex SigV4 signing key for that date, the snapshot's
    /// region and the `vpc-lattice-svcs` service: yesterday, today, tomorrow.
    pub signing_keys: BTreeMap<String, Secret>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// What a field of the snapshot is, for the admin view.
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Field {
        /// Shown as it is.
        Public,
        /// Key material: shown as its fingerprint only.
        Secret,
        /// A subtree of a declared resource spec (listeners, target
        /// groups): what `trellis get` shows too. Its one secret, a
        /// listener's private key, is listed on its own.
        Declared,
    }
    use Field::*;

    /// Every field of the snapshot by path (`[]` an array element, `{}` a
    /// map's key). A field added to the snapshot fails the walk below until
    /// it is placed here: public, or a [`Secret`].
    const FIELDS: &[(&str, Field)] = &[
        ("network", Public),
        ("revision", Public),
        ("region", Public),
        ("dnsZone", Public),
        ("vipPools[]", Public),
        ("services[].name", Public),
        ("services[].vip", Public),
        ("services[].vipV6", Public),
        ("services[].dnsNames[]", Public),
        ("services[].via[]", Public),
        ("services[].authType", Public),
        ("services[].authPolicy", Declared),
        ("services[].latticeCompat", Public),
        (
            "services[].listeners[].tls.certificates[].privateKey",
            Secret,
        ),
        ("services[].listeners[]", Declared),
        ("serviceNetworks[].name", Public),
        ("serviceNetworks[].authType", Public),
        ("serviceNetworks[].authPolicy", Declared),
        ("targetGroups[].name", Public),
        ("targetGroups[]", Declared),
        ("gateways{}[].address", Public),
        ("identities[].name", Public),
        ("identities[].principals[]", Public),
        ("identities[].tags{}", Public),
        ("identities[].keys[].accessKeyId", Public),
        ("identities[].keys[].signingKeys{}", Secret),
        // A public key: it verifies SigV4A signatures, it cannot make one.
        ("identities[].keys[].sigv4aPublicKey", Public),
        ("inbound[].service", Public),
        ("inbound[].networks[]", Public),
        ("inbound[].targetGroups[]", Public),
    ];

    fn fixture() -> Snapshot {
        serde_json::from_value(json!({
            "network": "east", "revision": 7, "region": "us-east-1",
            "dnsZone": "trellis.internal",
            "vipPools": ["169.254.171.0/24", "fd00:7472:6c73::/112"],
            "services": [{
                "name": "shop", "vip": "169.254.171.1", "vipV6": "fd00::1",
                "dnsNames": ["shop.trellis.internal"], "via": ["sn"],
                "authType": "SIGV4", "authPolicy": {"Version": "2012-10-17"},
                "latticeCompat": true,
                "listeners": [{
                    "name": "web", "protocol": "HTTPS", "port": 443,
                    "defaultAction": {"forward": [{"targetGroup": "blue", "weight": 1}]},
                    "tls": {"certificates": [{
                        "certificate": "CERT PEM", "privateKey": "KEY PEM 1c0ffee"
                    }]}
                }]
            }],
            "serviceNetworks": [{"name": "sn", "authType": "SIGV4", "authPolicy": {"Version": "2012-10-17"}}],
            "targetGroups": [{"name": "blue", "network": "west", "targets": [{"address": "10.0.0.1"}]}],
            "gateways": {"west": [{"address": "gw.west:15008"}]},
            "identities": [{
                "name": "alice", "principals": ["trellis:identity/alice"],
                "tags": {"team": "a"},
                "keys": [{
                    "accessKeyId": "AKIA1",
                    "signingKeys": {"20261207": "5167c0de"},
                    "sigv4aPublicKey": "04ab"
                }]
            }],
            "inbound": [{"service": "shop", "networks": ["west"], "targetGroups": ["blue"]}]
        }))
        .unwrap()
    }

    /// Every leaf of `v` with its path, arrays as `[]`, maps of names as `{}`.
    fn leaves(v: &Value, path: String, out: &mut Vec<(String, Value)>) {
        let map_of_names = |path: &str| {
            [
                "gateways",
                "identities[].tags",
                "identities[].keys[].signingKeys",
            ]
            .contains(&path)
        };
        match v {
            Value::Array(items) => {
                for item in items {
                    leaves(item, format!("{path}[]"), out);
                }
            }
            Value::Object(fields) => {
                for (k, item) in fields {
                    let p = match (path.is_empty(), map_of_names(&path)) {
                        (_, true) => format!("{path}{{}}"),
                        (true, false) => k.clone(),
                        (false, false) => format!("{path}.{k}"),
                    };
                    leaves(item, p, out);
                }
            }
            _ => out.push((path, v.clone())),
        }
    }

    fn class(path: &str) -> Option<Field> {
        FIELDS
            .iter()
            .find(|(p, f)| *p == path || (*f == Declared && path.starts_with(p)))
            .map(|(_, f)| *f)
    }

    #[test]
    fn every_field_is_classified_and_no_secret_is_shown() {
        let snapshot = fixture();
        let wire = serde_json::to_value(&snapshot).unwrap();
        let mut on_wire = Vec::new();
        leaves(&wire, String::new(), &mut on_wire);
        let shown = snapshot.shown();
        let mut leaves_shown = Vec::new();
        leaves(&shown, String::new(), &mut leaves_shown);
        assert_eq!(on_wire.len(), leaves_shown.len());

        for ((path, raw), (_, seen)) in on_wire.iter().zip(&leaves_shown) {
            match class(path) {
                None => panic!("{path} is in no table row: add it to FIELDS, public or a Secret"),
                Some(Secret) => {
                    let seen = seen.as_str().unwrap_or_default();
                    assert!(seen.starts_with("sha256:"), "{path} shown as {seen}");
                    assert!(!shown.to_string().contains(raw.as_str().unwrap()), "{path}");
                }
                Some(Public | Declared) => assert_eq!(raw, seen, "{path}"),
            }
        }
        // The fixture fills every row, so the walk above saw each.
        for (row, _) in FIELDS {
            assert!(
                on_wire.iter().any(|(p, _)| p.starts_with(row)),
                "the fixture has no {row}"
            );
        }
    }
}
