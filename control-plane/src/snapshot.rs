//! Compiles one network's view of the state: the services it may reach
//! (those of the service networks it belongs to), the target groups they
//! forward to, and the gateways of the other networks hosting those groups.
//! Visibility is decided here, once, not on every node.
//!
//! A view is compiled whole ([`compile`]) or patched from the previous one
//! ([`patch`]) when only services and target groups changed since: then
//! only the items those changes can reach are made again, and every other
//! item is shared with the previous view, so a weight change in a network
//! of 10,000 services costs what one service costs.

use crate::state::State;
use data_encoding::HEXLOWER;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use trellis_api::Kind;
use trellis_api::Object;
use trellis_api::delta::Keyed;
use trellis_api::keys::{self, IDENTITY_PREFIX, KeyStatus};
use trellis_api::resource::{AuthType, Listener, ServiceSpec, Spec, TargetProtocol};
use trellis_api::secret::Secret;
use trellis_api::snapshot::{
    IdentityView, InboundView, KeyView, ServiceNetworkView, ServiceView, Snapshot, TargetGroupView,
};

/// Which view to compile, and what it depends on besides the state.
#[derive(Clone, Copy, Debug)]
pub struct Scope<'a> {
    pub network: &'a str,
    /// The DNS zone of service names.
    pub zone: &'a str,
    pub region: &'a str,
    /// UTC days since the epoch: dates the derived signing keys.
    pub day: i64,
    /// PEM: what HTTPS target groups without a CA of their own verify
    /// targets against.
    pub trellis_ca: &'a str,
}

/// The services and target groups (by name) changed since a view was
/// compiled.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changed {
    pub services: BTreeSet<String>,
    pub target_groups: BTreeSet<String>,
}

impl Changed {
    pub fn is_empty(&self) -> bool {
        self.services.is_empty() && self.target_groups.is_empty()
    }
}

/// `None` when the network does not exist. `revision` is left 0: the caller
/// sets it to the revision at which the content last changed.
pub fn compile(state: &State, scope: &Scope<'_>) -> Option<Snapshot> {
    let c = Compiler::new(state, scope)?;
    let services: Vec<_> = state
        .list(Kind::Service)
        .filter_map(|o| c.service(o))
        .map(Arc::new)
        .collect();
    let inbound: Vec<_> = state
        .list(Kind::Service)
        .filter_map(|o| c.inbound(o))
        .map(Arc::new)
        .collect();
    let groups: BTreeSet<&str> = references(&services, &inbound).collect();
    let target_groups = groups
        .into_iter()
        .filter_map(|name| c.target_group(name))
        .map(Arc::new)
        .collect();
    Some(c.finish(services, target_groups, inbound, None))
}

/// `previous` (compiled by [`compile`] or [`patch`] for the same scope) with
/// `changed` applied: what [`compile`] would make of `state`, made from the
/// items the changes can reach. Only services and target groups may have
/// changed between the two states.
pub fn patch(
    state: &State,
    scope: &Scope<'_>,
    previous: &Snapshot,
    changed: &Changed,
) -> Option<Snapshot> {
    let c = Compiler::new(state, scope)?;
    let mut services = previous.services.clone();
    for name in &changed.services {
        let next = state.get(Kind::Service, name).and_then(|o| c.service(o));
        put(&mut services, name, next.map(Arc::new));
    }

    // A service's inbound entry follows its own spec and its target groups'
    // networks: those of changed groups are found by what forwards to them.
    let mut affected: BTreeSet<&str> = changed.services.iter().map(String::as_str).collect();
    if !changed.target_groups.is_empty() {
        affected.extend(
            state
                .list(Kind::Service)
                .filter(|o| match &o.resource.spec {
                    Spec::Service(s) => forwards_to(s).any(|tg| changed.target_groups.contains(tg)),
                    _ => false,
                })
                .map(|o| o.resource.name()),
        );
    }
    let mut inbound = previous.inbound.clone();
    for &name in &affected {
        let next = state.get(Kind::Service, name).and_then(|o| c.inbound(o));
        put(&mut inbound, name, next.map(Arc::new));
    }

    // The target groups whose presence or content may differ: the changed
    // ones and every one the changed items referred to, before or after.
    let (old, new) = (
        references_of(&previous.services, &previous.inbound, &affected),
        references_of(&services, &inbound, &affected),
    );
    let mut candidates: BTreeSet<&str> = changed.target_groups.iter().map(String::as_str).collect();
    candidates.extend(old.iter().copied());
    candidates.extend(new.iter().copied());
    // A group the changed items no longer name may still be named by others.
    let mut referenced: BTreeSet<&str> = new;
    if candidates.iter().any(|name| !referenced.contains(name)) {
        referenced.extend(references(&services, &inbound).filter(|n| candidates.contains(n)));
    }
    let mut target_groups = previous.target_groups.clone();
    for name in candidates {
        let next = referenced
            .contains(name)
            .then(|| c.target_group(name))
            .flatten();
        put(&mut target_groups, name, next.map(Arc::new));
    }
    Some(c.finish(services, target_groups, inbound, Some(previous)))
}

/// Puts `item` as `name` in `items` (sorted by name), or removes `name`.
fn put<T: Keyed>(items: &mut Vec<T>, name: &str, item: Option<T>) {
    match (items.binary_search_by(|x| x.key().cmp(name)), item) {
        (Ok(i), Some(item)) => items[i] = item,
        (Ok(i), None) => {
            items.remove(i);
        }
        (Err(i), Some(item)) => items.insert(i, item),
        (Err(_), None) => {}
    }
}

/// Every target group named by `services` or `inbound`.
fn references<'a>(
    services: &'a [Arc<ServiceView>],
    inbound: &'a [Arc<InboundView>],
) -> impl Iterator<Item = &'a str> {
    services.iter().flat_map(|s| forwarded(&s.listeners)).chain(
        inbound
            .iter()
            .flat_map(|i| i.target_groups.iter().map(String::as_str)),
    )
}

/// The target groups named by the items of `services` and `inbound` called
/// one of `names`.
fn references_of<'a>(
    services: &'a [Arc<ServiceView>],
    inbound: &'a [Arc<InboundView>],
    names: &BTreeSet<&str>,
) -> BTreeSet<&'a str> {
    let services = names.iter().filter_map(|n| find(services, n));
    let inbound = names.iter().filter_map(|n| find(inbound, n));
    services
        .flat_map(|s| forwarded(&s.listeners))
        .chain(inbound.flat_map(|i| i.target_groups.iter().map(String::as_str)))
        .collect()
}

fn find<'a, T: Keyed>(items: &'a [T], name: &str) -> Option<&'a T> {
    let i = items.binary_search_by(|x| x.key().cmp(name)).ok()?;
    items.get(i)
}

/// The target groups `service` forwards or mirrors to, in any listener or
/// rule.
pub(crate) fn forwards_to(service: &ServiceSpec) -> impl Iterator<Item = &str> {
    forwarded(&service.listeners)
}

fn forwarded(listeners: &[Listener]) -> impl Iterator<Item = &str> {
    listeners
        .iter()
        .flat_map(|l| std::iter::once(&l.default_action).chain(l.rules.iter().map(|r| &r.action)))
        .flat_map(|a| a.target_groups())
}

/// What a network is sent of the identities: their keys where it sees a
/// SIGV4 service, their names and scopes where only its gateways check
/// them, nothing otherwise.
#[derive(Clone, Copy, PartialEq, Eq)]
enum IdentityMode {
    Keys,
    Names,
    Nothing,
}

impl IdentityMode {
    fn of(
        services: &[Arc<ServiceView>],
        service_networks: &[Arc<ServiceNetworkView>],
        inbound: &[Arc<InboundView>],
    ) -> IdentityMode {
        let signed = services.iter().any(|s| s.auth_type == AuthType::SigV4)
            || service_networks
                .iter()
                .any(|s| s.auth_type == AuthType::SigV4);
        if signed {
            IdentityMode::Keys
        } else if !inbound.is_empty() {
            // A gateway checks the workload identities other networks'
            // nodes claim: names and scopes, no keys.
            IdentityMode::Names
        } else {
            IdentityMode::Nothing
        }
    }
}

/// One network's compilation: what every item of its view is made from.
struct Compiler<'a> {
    state: &'a State,
    scope: &'a Scope<'a>,
    /// The service networks it belongs to.
    service_networks: Vec<Arc<ServiceNetworkView>>,
    /// Every service network's networks.
    members: BTreeMap<&'a str, &'a [String]>,
}

impl<'a> Compiler<'a> {
    fn new(state: &'a State, scope: &'a Scope<'a>) -> Option<Compiler<'a>> {
        state.get(Kind::Network, scope.network)?;
        let mut service_networks = Vec::new();
        let mut members = BTreeMap::new();
        for obj in state.list(Kind::ServiceNetwork) {
            let Spec::ServiceNetwork(sn) = &obj.resource.spec else {
                continue;
            };
            members.insert(obj.resource.name(), sn.networks.as_slice());
            if sn.networks.iter().any(|n| n == scope.network) {
                service_networks.push(Arc::new(ServiceNetworkView {
                    name: obj.resource.name().to_string(),
                    auth_type: sn.auth_type,
                    auth_policy: sn.auth_policy.clone(),
                }));
            }
        }
        Some(Compiler {
            state,
            scope,
            service_networks,
            members,
        })
    }

    /// Service `obj` as this network sees it, if it sees it.
    fn service(&self, obj: &Object) -> Option<ServiceView> {
        let Spec::Service(s) = &obj.resource.spec else {
            return None;
        };
        let via: Vec<String> = s
            .service_networks
            .iter()
            .filter(|sn| find(&self.service_networks, sn).is_some())
            .cloned()
            .collect();
        let (Some(vip), Some(vip_v6)) = (obj.status.vip, obj.status.vip_v6) else {
            return None;
        };
        if via.is_empty() {
            return None;
        }
        let mut dns_names = vec![crate::state::dns_name(obj.resource.name(), self.scope.zone)];
        dns_names.extend(
            s.custom_domain_name
                .iter()
                .map(|d| d.trim_end_matches('.').to_ascii_lowercase()),
        );
        Some(ServiceView {
            name: obj.resource.name().to_string(),
            vip,
            vip_v6,
            dns_names,
            via,
            auth_type: s.auth_type,
            auth_policy: s.auth_policy.clone(),
            lattice_compat: s.lattice_compat,
            listeners: s.listeners.clone(),
        })
    }

    /// What this network's gateways serve of service `obj` (visible
    /// anywhere): its target groups here, and the networks that may call
    /// them.
    fn inbound(&self, obj: &Object) -> Option<InboundView> {
        let Spec::Service(s) = &obj.resource.spec else {
            return None;
        };
        let local: BTreeSet<String> = forwards_to(s)
            .filter(|tg| {
                matches!(self.state.get(Kind::TargetGroup, tg).map(|o| &o.resource.spec),
                    Some(Spec::TargetGroup(t)) if t.network == self.scope.network)
            })
            .map(str::to_string)
            .collect();
        if local.is_empty() {
            return None;
        }
        let networks: BTreeSet<String> = s
            .service_networks
            .iter()
            .filter_map(|sn| self.members.get(sn.as_str()))
            .flat_map(|n| n.iter().cloned())
            .collect();
        Some(InboundView {
            service: obj.resource.name().to_string(),
            networks: networks.into_iter().collect(),
            target_groups: local.into_iter().collect(),
        })
    }

    /// Target group `name`, if it exists.
    fn target_group(&self, name: &str) -> Option<TargetGroupView> {
        let Some(Spec::TargetGroup(tg)) = self
            .state
            .get(Kind::TargetGroup, name)
            .map(|o| &o.resource.spec)
        else {
            return None;
        };
        let mut spec = tg.clone();
        if spec.protocol == TargetProtocol::Https {
            let tls = spec.tls.get_or_insert_with(Default::default);
            tls.ca
                .get_or_insert_with(|| self.scope.trellis_ca.to_string());
        }
        Some(TargetGroupView {
            name: name.to_string(),
            spec,
        })
    }

    /// The snapshot of these items, with the gateways of the networks
    /// hosting its remote target groups and the identities it needs
    /// (`previous`'s when it needed the same: identities and keys are not
    /// patched, their changes compile the view whole).
    fn finish(
        self,
        services: Vec<Arc<ServiceView>>,
        target_groups: Vec<Arc<TargetGroupView>>,
        inbound: Vec<Arc<InboundView>>,
        previous: Option<&Snapshot>,
    ) -> Snapshot {
        let network = self.scope.network;
        let mut gateways = BTreeMap::new();
        for tg in target_groups.iter().filter(|tg| tg.spec.network != network) {
            if gateways.contains_key(&tg.spec.network) {
                continue;
            }
            if let Some(Spec::Network(n)) = self
                .state
                .get(Kind::Network, &tg.spec.network)
                .map(|o| &o.resource.spec)
            {
                gateways.insert(tg.spec.network.clone(), n.gateways.clone());
            }
        }
        let mode = IdentityMode::of(&services, &self.service_networks, &inbound);
        let identities = match previous {
            Some(p) if IdentityMode::of(&p.services, &p.service_networks, &p.inbound) == mode => {
                p.identities.clone()
            }
            _ => identities(self.state, self.scope, mode),
        };
        Snapshot {
            network: network.to_string(),
            revision: 0,
            region: self.scope.region.to_string(),
            dns_zone: self.scope.zone.trim_end_matches('.').to_string(),
            vip_pools: Vec::new(),
            services,
            service_networks: self.service_networks,
            target_groups,
            gateways,
            identities,
            inbound,
        }
    }
}

/// Every identity, as `mode` says: with its active keys as signing keys
/// derived for yesterday, today and tomorrow (a request signed a few
/// minutes either side of midnight, by a clock within the allowed skew,
/// finds its key), or with none.
fn identities(state: &State, scope: &Scope<'_>, mode: IdentityMode) -> Vec<Arc<IdentityView>> {
    if mode == IdentityMode::Nothing {
        return Vec::new();
    }
    let dates: Vec<String> = (scope.day - 1..=scope.day + 1)
        .map(keys::date_of_day)
        .collect();
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
            .filter(|k| mode == IdentityMode::Keys && k.identity == name)
            .filter(|k| k.status == KeyStatus::Active)
            .map(|k| KeyView {
                access_key_id: k.id.clone(),
                signing_keys: dates
                    .iter()
                    .map(|d| {
                        let key = keys::signing_key(
                            k.secret.expose(),
                            d,
                            scope.region,
                            keys::SIGNING_SERVICE,
                        );
                        (d.clone(), Secret::new(HEXLOWER.encode(&key)))
                    })
                    .collect(),
                sigv4a_public_key: k.sigv4a_public.map(|p| HEXLOWER.encode(&p)),
            })
            .collect();
        out.push(Arc::new(IdentityView {
            name: name.to_string(),
            principals,
            tags: spec.tags.clone(),
            keys,
            workloads: spec
                .workloads
                .iter()
                .filter(|w| w.network == scope.network)
                .cloned()
                .collect(),
            workload_networks: spec
                .workloads
                .iter()
                .map(|w| w.network.clone())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
        }));
    }
    out
}
