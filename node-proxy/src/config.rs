//! The node's config: one snapshot compiled for the request path, an
//! immutable value swapped in whole. Compiling does all the work a request
//! should not: rule conditions compiled, weight schedules built, targets
//! parsed, and each target carried over from the previous config when it
//! is still there (so health and load survive a swap).

use crate::auth::{Guard, Keys};
use crate::canonical::PathRules;
use crate::filters::{Edits, Redirect};
use crate::resilience::RoutePolicy;
use crate::route::{Matcher, RequestParts, RequestView};
use crate::split::Split;
use crate::targets::{Group, Health, Target};
use crate::tls::Terminator;
use crate::upstream::{Clients, HttpClient, TargetTls};
use http::StatusCode;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use trellis_api::resource::{
    Action as ActionSpec, AuthType, ListenerProtocol, ProtocolVersion, TargetProtocol, TimeLimits,
};
use trellis_api::snapshot::Snapshot;

#[derive(Debug)]
pub enum Action {
    /// To a target group of the split, with the action's changes and
    /// policies.
    Forward(Split, Box<Forwarding>),
    Fixed(StatusCode),
    Redirect(Redirect),
    /// A forward whose weights are all 0, or a bad status: nothing to do.
    Unroutable,
}

/// What a forwarding action does besides choosing the group.
#[derive(Debug)]
pub struct Forwarding {
    pub edits: Edits,
    pub policy: RoutePolicy,
}

impl Forwarding {
    /// Nothing but the choice of a group: the HTTP/1.1 path's to carry.
    pub fn is_plain(&self) -> bool {
        self.edits.is_empty() && self.policy.is_empty()
    }
}

impl Action {
    /// `a` on a listener of `protocol` on `port`, for a rule whose path
    /// prefix condition is `matched` bytes long, if it has one.
    fn compile(
        a: &ActionSpec,
        protocol: ListenerProtocol,
        port: u16,
        matched: Option<usize>,
    ) -> Action {
        if let Some(f) = &a.fixed_response {
            return StatusCode::from_u16(f.status_code).map_or(Action::Unroutable, Action::Fixed);
        }
        if let Some(r) = &a.redirect {
            return Action::Redirect(Redirect::compile(r, protocol, port, matched));
        }
        let choices: Vec<(&str, u32)> = a
            .forward
            .iter()
            .flatten()
            .map(|w| (w.target_group.as_str(), w.weight))
            .collect();
        let edits = Edits::compile(
            a.request_headers.as_ref(),
            a.response_headers.as_ref(),
            a.rewrite.as_ref(),
            a.cors.as_ref(),
            matched,
        );
        let policy = RoutePolicy::compile(a);
        Split::new(&choices).map_or(Action::Unroutable, |split| {
            Action::Forward(split, Box::new(Forwarding { edits, policy }))
        })
    }
}

#[derive(Debug)]
pub struct Rule {
    pub name: Arc<str>,
    matcher: Matcher,
    pub action: Action,
}

#[derive(Debug)]
pub struct Listener {
    pub service: Arc<str>,
    pub name: Arc<str>,
    pub protocol: ListenerProtocol,
    /// In the order they are tried (the listener's `ruleOrder`).
    pub rules: Vec<Rule>,
    pub default: Action,
    pub timeouts: TimeLimits,
    /// How request targets are made canonical.
    pub paths: PathRules,
    pub lattice_compat: bool,
    /// The service network through which this network sees the service.
    pub service_network: Arc<str>,
    /// The service's auth, when it or its service network asks for SIGV4.
    pub guard: Option<Arc<Guard>>,
    /// Pooled clients to targets, with this listener's connect timeout.
    pub http1: HttpClient,
    pub http2: HttpClient,
    /// HTTPS listeners: the TLS side. `None` on an HTTPS listener means its
    /// certificates could not be loaded; its connections are refused.
    pub tls: Option<Arc<Terminator>>,
}

/// The name `route` reports when the default action applies: one shared
/// `Arc`, so a request's log entry takes a rule name without allocating.
pub static DEFAULT_RULE: std::sync::LazyLock<Arc<str>> =
    std::sync::LazyLock::new(|| Arc::from("default"));

impl Listener {
    /// The first rule, in order, whose conditions all hold; else the
    /// default action.
    pub fn route(&self, req: &impl RequestView) -> (&Arc<str>, &Action) {
        self.rules
            .iter()
            .find(|r| r.matcher.matches(req))
            .map_or((&DEFAULT_RULE, &self.default), |r| (&r.name, &r.action))
    }

    /// TLS passthrough: the rules (host conditions only) against the
    /// ClientHello's server name; none given matches only the default.
    pub fn route_server_name(&self, name: Option<&str>) -> (&Arc<str>, &Action) {
        let Some(host) = name.and_then(|n| http::HeaderValue::from_str(n).ok()) else {
            return (&DEFAULT_RULE, &self.default);
        };
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::HOST, host);
        self.route(&RequestParts {
            method: &http::Method::GET,
            uri: &http::Uri::from_static("/"),
            headers: &headers,
        })
    }
}

#[derive(Debug)]
pub struct Config {
    pub snapshot: Arc<Snapshot>,
    /// The snapshot's network, shared by every request's log entry.
    pub network: Arc<str>,
    listeners: HashMap<SocketAddr, Arc<Listener>>,
    pub groups: HashMap<Arc<str>, Arc<Group>>,
    /// Access keys this node verifies signatures with.
    pub keys: Keys,
    /// What this network's gateways serve other networks, by service.
    pub inbound: HashMap<Arc<str>, Inbound>,
}

/// A service a gateway may serve: to which networks, from which groups.
#[derive(Debug)]
pub struct Inbound {
    pub networks: Vec<String>,
    pub groups: Vec<String>,
}

impl Inbound {
    /// Whether `network` may reach `group` of this service.
    pub fn allows(&self, network: &str, group: &str) -> bool {
        self.networks.iter().any(|n| n == network) && self.groups.iter().any(|g| g == group)
    }
}

impl Config {
    pub fn empty(network: &str) -> Config {
        Config {
            network: Arc::from(network),
            snapshot: Arc::new(Snapshot {
                network: network.to_string(),
                revision: 0,
                region: String::new(),
                dns_zone: String::new(),
                vip_pools: Vec::new(),
                services: vec![],
                service_networks: vec![],
                target_groups: vec![],
                gateways: Default::default(),
                identities: Vec::new(),
                inbound: Vec::new(),
            }),
            listeners: HashMap::new(),
            groups: HashMap::new(),
            keys: Keys::empty(),
            inbound: HashMap::new(),
        }
    }

    pub fn revision(&self) -> u64 {
        self.snapshot.revision
    }

    /// The listener a connection to `dst` (a VIP:port) is for. `None` means
    /// no service this network may see: the connection is refused.
    pub fn listener(&self, dst: SocketAddr) -> Option<&Arc<Listener>> {
        self.listeners.get(&dst)
    }

    /// Every listener once (each is reachable on its IPv4 and IPv6 VIP).
    pub fn each_listener(&self) -> impl Iterator<Item = &Arc<Listener>> {
        self.listeners
            .iter()
            .filter(|(addr, _)| addr.is_ipv4())
            .map(|(_, l)| l)
    }

    pub fn listener_count(&self) -> usize {
        self.listeners.len()
    }

    pub fn compile(snapshot: Snapshot, previous: &Config, clients: &Clients) -> Config {
        let mut listeners = HashMap::new();
        for svc in &snapshot.services {
            let service: Arc<str> = Arc::from(svc.name.as_str());
            let via: Arc<str> = Arc::from(svc.via.first().map_or("", String::as_str));
            let network = snapshot
                .service_networks
                .iter()
                .find(|n| *n.name == *via)
                .map_or((AuthType::None, None), |n| {
                    (n.auth_type, n.auth_policy.as_ref())
                });
            let guard =
                Guard::compile((svc.auth_type, svc.auth_policy.as_ref()), network).map(Arc::new);
            for l in &svc.listeners {
                let rules = l
                    .ordered_rules()
                    .into_iter()
                    .filter_map(|r| match Matcher::compile(&r.matches) {
                        Ok(matcher) => Some(Rule {
                            name: Arc::from(r.name.as_str()),
                            matcher,
                            action: Action::compile(
                                &r.action,
                                l.protocol,
                                l.effective_port(),
                                r.matches
                                    .path
                                    .as_ref()
                                    .and_then(|p| p.prefix.as_ref())
                                    .map(String::len),
                            ),
                        }),
                        Err(e) => {
                            tracing::warn!(service = %service, listener = l.name, rule = r.name, error = %e, "rule skipped");
                            None
                        }
                    })
                    .collect();
                let timeouts = l.timeouts.limits();
                let port = l.effective_port();
                let vip = SocketAddr::new(IpAddr::V4(svc.vip), port);
                let tls = l.tls.as_ref().and_then(|spec| {
                    let before = previous.listeners.get(&vip).and_then(|p| p.tls.as_ref());
                    Terminator::compile(spec, before)
                        .inspect_err(|e| tracing::error!(service = %service, listener = l.name, error = %e, "HTTPS listener without certificates; its connections are refused"))
                        .ok()
                });
                let listener = Arc::new(Listener {
                    service: service.clone(),
                    name: Arc::from(l.name.as_str()),
                    protocol: l.protocol,
                    rules,
                    default: Action::compile(&l.default_action, l.protocol, port, None),
                    timeouts,
                    paths: (&l.path_normalization).into(),
                    lattice_compat: svc.lattice_compat,
                    service_network: via.clone(),
                    guard: guard.clone(),
                    http1: clients.get(false, timeouts.connect),
                    http2: clients.get(true, timeouts.connect),
                    tls,
                });
                listeners.insert(vip, listener.clone());
                listeners.insert(SocketAddr::new(IpAddr::V6(svc.vip_v6), port), listener);
            }
        }
        let mut groups = HashMap::new();
        for tg in &snapshot.target_groups {
            if tg.spec.network != snapshot.network {
                let group = Group::remote(&tg.name, &tg.spec, &tg.spec.network);
                groups.insert(Arc::from(tg.name.as_str()), Arc::new(group));
                continue;
            }
            let old = previous.groups.get(tg.name.as_str());
            let initial = if tg.spec.health_check.enabled {
                Health::Unknown
            } else {
                Health::Healthy
            };
            let targets = tg
                .spec
                .targets
                .iter()
                .filter_map(|t| {
                    let ip: IpAddr = match t.address.parse() {
                        Ok(ip) => ip,
                        Err(_) => {
                            tracing::warn!(
                                group = tg.name,
                                address = t.address,
                                "target skipped: not an IP address"
                            );
                            return None;
                        }
                    };
                    let addr = SocketAddr::new(ip, t.port.unwrap_or(tg.spec.effective_port()));
                    let kept = old.and_then(|g| g.targets.iter().find(|x| x.addr == addr));
                    Some(match kept {
                        // Health carried over, unless checks were just
                        // switched off (then every target counts as healthy).
                        Some(t) => {
                            if initial == Health::Healthy {
                                t.set_health(Health::Healthy);
                            }
                            t.clone()
                        }
                        None => Arc::new(Target::new(addr, initial)),
                    })
                })
                .collect();
            let mut group = Group::new(&tg.name, &tg.spec, targets);
            if tg.spec.protocol == TargetProtocol::Https {
                let http2 = tg.spec.protocol_version != ProtocolVersion::Http1;
                let before = old.and_then(|g| g.tls.clone().ok().flatten());
                let spec = tg.spec.tls.clone().unwrap_or_default();
                group.tls = TargetTls::compile(&spec, http2, before.as_ref())
                    .map(Some)
                    .map_err(|e| {
                        tracing::error!(group = tg.name, error = %e, "TLS to targets cannot be set up; the group is not reached");
                        Arc::from(e)
                    });
            }
            groups.insert(Arc::from(tg.name.as_str()), Arc::new(group));
        }
        let inbound = snapshot
            .inbound
            .iter()
            .map(|i| {
                let entry = Inbound {
                    networks: i.networks.clone(),
                    groups: i.target_groups.clone(),
                };
                (Arc::from(i.service.as_str()), entry)
            })
            .collect();
        Config {
            network: Arc::from(snapshot.network.as_str()),
            keys: Keys::compile(&snapshot),
            inbound,
            snapshot: Arc::new(snapshot),
            listeners,
            groups,
        }
    }

    /// Targets of `previous` that are in no group of `self`: they drain.
    pub fn departed(&self, previous: &Config) -> Vec<(Arc<Target>, std::time::Duration)> {
        let mut out = Vec::new();
        for (name, group) in &previous.groups {
            let now = self.groups.get(name);
            for t in &group.targets {
                let stays = now.is_some_and(|g| g.targets.iter().any(|x| Arc::ptr_eq(x, t)));
                if !stays {
                    out.push((t.clone(), group.drain));
                }
            }
        }
        out
    }
}
