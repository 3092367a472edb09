//! Compiles one network's view of the state: the services it may reach
//! (those of the service networks it belongs to), the target groups they
//! forward to, and the gateways of the other networks hosting those groups.
//! Visibility is decided here, once, not on every node.

use crate::state::State;
use data_encoding::HEXLOWER;
use std::collections::{BTreeMap, BTreeSet};
use trellis_api::Kind;
use trellis_api::keys::{self, IDENTITY_PREFIX, KeyStatus};
use trellis_api::resource::Spec;
use trellis_api::resource::{AuthType, ServiceSpec, TargetProtocol};
use trellis_api::secret::Secret;
use trellis_api::snapshot::{
    IdentityView, InboundView, KeyView, ServiceNetworkView, ServiceView, Snapshot, TargetGroupView,
};

/// `None` when the network does not exist. `revision` is left 0: the caller
/// sets it to the revision at which the content last changed. `day` (UTC
/// days since the epoch) dates the derived signing keys. `trellis_ca` (PEM)
/// is what HTTPS target groups without a CA of their own verify targets
/// against.
pub fn compile(
    state: &State,
    network: &str,
    zone: &str,
    region: &str,
    day: i64,
    trellis_ca: &str,
) -> Option<Snapshot> {
    state.get(Kind::Network, network)?;
    let mut service_networks = Vec::new();
    for obj in state.list(Kind::ServiceNetwork) {
        if let Spec::ServiceNetwork(sn) = &obj.resource.spec {
            if sn.networks.iter().any(|n| n == network) {
                service_networks.push(ServiceNetworkView {
                    name: obj.resource.name().to_string(),
                    auth_type: sn.auth_type,
                    auth_policy: sn.auth_policy.clone(),
                });
            }
        }
    }
    let joined: BTreeSet<&str> = service_networks.iter().map(|s| s.name.as_str()).collect();

    let mut services = Vec::new();
    let mut groups = BTreeSet::new();
    for obj in state.list(Kind::Service) {
        let Spec::Service(s) = &obj.resource.spec else {
            continue;
        };
        let via: Vec<String> = s
            .service_networks
            .iter()
            .filter(|sn| joined.contains(sn.as_str()))
            .cloned()
            .collect();
        let (Some(vip), Some(vip_v6)) = (obj.status.vip, obj.status.vip_v6) else {
            continue;
        };
        if via.is_empty() {
            continue;
        }
        groups.extend(forwards_to(s));
        let mut dns_names = vec![crate::state::dns_name(obj.resource.name(), zone)];
        dns_names.extend(
            s.custom_domain_name
                .iter()
                .map(|d| d.trim_end_matches('.').to_ascii_lowercase()),
        );
        services.push(ServiceView {
            name: obj.resource.name().to_string(),
            vip,
            vip_v6,
            dns_names,
            via,
            auth_type: s.auth_type,
            auth_policy: s.auth_policy.clone(),
            lattice_compat: s.lattice_compat,
            listeners: s.listeners.clone(),
        });
    }

    let inbound = inbound(state, network);
    groups.extend(
        inbound
            .iter()
            .flat_map(|i| i.target_groups.iter().map(String::as_str)),
    );

    let mut target_groups = Vec::new();
    let mut gateways = BTreeMap::new();
    for name in groups {
        let Some(obj) = state.get(Kind::TargetGroup, name) else {
            continue;
        };
        let Spec::TargetGroup(tg) = &obj.resource.spec else {
            continue;
        };
        if tg.network != network && !gateways.contains_key(&tg.network) {
            if let Some(Spec::Network(n)) = state
                .get(Kind::Network, &tg.network)
                .map(|o| &o.resource.spec)
            {
                gateways.insert(tg.network.clone(), n.gateways.clone());
            }
        }
        let mut spec = tg.clone();
        if spec.protocol == TargetProtocol::Https {
            let tls = spec.tls.get_or_insert_with(Default::default);
            tls.ca.get_or_insert_with(|| trellis_ca.to_string());
        }
        target_groups.push(TargetGroupView {
            name: name.to_string(),
            spec,
        });
    }

    let signed = services.iter().any(|s| s.auth_type == AuthType::SigV4)
        || service_networks
            .iter()
            .any(|s| s.auth_type == AuthType::SigV4);
    let identities = if signed {
        identities(state, network, region, day)
    } else if !inbound.is_empty() {
        // A gateway checks the workload identities other networks' nodes
        // claim: names and scopes, no keys.
        identities(state, network, region, day)
            .into_iter()
            .map(|i| IdentityView {
                keys: Vec::new(),
                ..i
            })
            .collect()
    } else {
        Vec::new()
    };

    Some(Snapshot {
        network: network.to_string(),
        revision: 0,
        region: region.to_string(),
        dns_zone: zone.trim_end_matches('.').to_string(),
        vip_pools: Vec::new(),
        services,
        service_networks,
        target_groups,
        gateways,
        identities,
        inbound,
    })
}

/// The target groups `service` forwards to, in any listener or rule.
pub(crate) fn forwards_to(service: &ServiceSpec) -> impl Iterator<Item = &str> {
    service
        .listeners
        .iter()
        .flat_map(|l| std::iter::once(&l.default_action).chain(l.rules.iter().map(|r| &r.action)))
        .flat_map(|a| a.forward.iter().flatten())
        .map(|w| w.target_group.as_str())
}

/// Services, visible anywhere, that forward to target groups of `network`:
/// what its gateways serve, and to which networks.
fn inbound(state: &State, network: &str) -> Vec<InboundView> {
    let members: BTreeMap<&str, &[String]> = state
        .list(Kind::ServiceNetwork)
        .filter_map(|o| match &o.resource.spec {
            Spec::ServiceNetwork(sn) => Some((o.resource.name(), sn.networks.as_slice())),
            _ => None,
        })
        .collect();
    let mut out = Vec::new();
    for obj in state.list(Kind::Service) {
        let Spec::Service(s) = &obj.resource.spec else {
            continue;
        };
        let local: BTreeSet<String> = forwards_to(s)
            .filter(|tg| {
                matches!(state.get(Kind::TargetGroup, tg).map(|o| &o.resource.spec),
                    Some(Spec::TargetGroup(t)) if t.network == network)
            })
            .map(str::to_string)
            .collect();
        if local.is_empty() {
            continue;
        }
        let networks: BTreeSet<String> = s
            .service_networks
            .iter()
            .filter_map(|sn| members.get(sn.as_str()))
            .flat_map(|n| n.iter().cloned())
            .collect();
        out.push(InboundView {
            service: obj.resource.name().to_string(),
            networks: networks.into_iter().collect(),
            target_groups: local.into_iter().collect(),
        });
    }
    out
}

/// Every identity with its active keys, as signing keys derived for
/// yesterday, today and tomorrow: a request signed a few minutes either side
/// of midnight, by a clock within the allowed skew, finds its key.
fn identities(state: &State, network: &str, region: &str, day: i64) -> Vec<IdentityView> {
    let dates: Vec<String> = (day - 1..=day + 1).map(keys::date_of_day).collect();
    let mut out = Vec::new();
    for obj in state.list(Kind::Identity) {
        let Spec::Identity(spec) = &obj.resource.spec else {
            continue;
        };
        let name = obj.resource.name();
        let mut principals = vec![format!("{IDENTITY_PREFIX}{name}")];
        principals.extend(spec.aliases.iter().cloned());
        let keys = state
            .keys
            .values()
            .filter(|k| k.identity == name && k.status == KeyStatus::Active)
            .map(|k| KeyView {
                access_key_id: k.id.clone(),
                signing_keys: dates
                    .iter()
                    .map(|d| {
                        let key =
                            keys::signing_key(k.secret.expose(), d, region, keys::SIGNING_SERVICE);
                        (d.clone(), Secret::new(HEXLOWER.encode(&key)))
                    })
                    .collect(),
                sigv4a_public_key: k.sigv4a_public.map(|p| HEXLOWER.encode(&p)),
            })
            .collect();
        out.push(IdentityView {
            name: name.to_string(),
            principals,
            tags: spec.tags.clone(),
            keys,
            workloads: spec
                .workloads
                .iter()
                .filter(|w| w.network == network)
                .cloned()
                .collect(),
            workload_networks: spec
                .workloads
                .iter()
                .map(|w| w.network.clone())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect(),
        });
    }
    out
}
