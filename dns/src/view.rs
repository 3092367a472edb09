//! One network's view of the Trellis zones, built from its snapshot, and the
//! answer rules of an authoritative server (those of hickory's in-memory
//! store): a name that exists without the asked type is NODATA, a name that
//! does not exist in the zone is NXDOMAIN, both with the zone's SOA for
//! negative caching; a name outside every zone is REFUSED.
//!
//! Services the network may not see are simply absent, so to that network
//! they do not exist, exactly like names that were never declared.

use hickory_server::proto::rr::rdata::{A, AAAA, NS, SOA};
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordType};
use smallvec::SmallVec;
use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use trellis_api::delta::Delta;
use trellis_api::snapshot::{ServiceView, Snapshot};

/// SOA timers (seconds); the negative-caching TTL is the record TTL.
const REFRESH: i32 = 3600;
const RETRY: i32 = 600;
const EXPIRE: i32 = 86_400;

#[derive(Debug, PartialEq)]
pub enum Answer {
    /// NOERROR with these records.
    Records(Vec<Record>),
    /// NOERROR, no records of that type: the SOA goes in the authority section.
    NoData(Record),
    /// NXDOMAIN, with the SOA.
    NxDomain(Record),
    /// Not a zone of ours.
    Refused,
}

/// An immutable view: built once per snapshot, swapped in whole.
///
/// It keeps only what answers are made of (each name's two addresses, each
/// zone's apex) and makes the records per answer: at 100,000 names, owned
/// hickory records (an SOA and NS per custom-domain zone) cost several
/// kilobytes a name, and a view is briefly held twice while its successor
/// is built. Each name and custom-domain zone knows its service, so a delta
/// updates a copy of the view instead of building one from the snapshot.
#[derive(Clone, Debug, Default)]
pub struct View {
    /// Apex to the services whose custom domain it is (none: the zone of
    /// service names).
    zones: Arc<Zones>,
    /// Name to its services' addresses: one, as the control plane keeps
    /// names unique, though a name held by several answers with all.
    names: Arc<Names>,
    ttl: u32,
    pub revision: u64,
}

#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub v4: Ipv4Addr,
    pub v6: Ipv6Addr,
    service: Arc<str>,
}

fn name(s: &str) -> Option<Name> {
    let mut n = Name::from_ascii(s).ok()?;
    n.set_fqdn(true);
    Some(n)
}

type Zones = HashMap<LowerName, SmallVec<[Arc<str>; 1]>>;
type Names = HashMap<LowerName, SmallVec<[Entry; 1]>>;

/// Adds `svc`'s names (and its custom domains as zones). Names that are not
/// valid DNS names are skipped (the control plane validates them, so this
/// only guards against bad input).
fn add(svc: &ServiceView, zones: &mut Zones, names: &mut Names) {
    let service: Arc<str> = Arc::from(svc.name.as_str());
    for (i, dns) in svc.dns_names.iter().enumerate() {
        let Some(n) = name(dns).map(LowerName::from) else {
            continue;
        };
        // Custom domain names (after the first) are zones of their own.
        if i > 0 {
            zones.entry(n.clone()).or_default().push(service.clone());
        }
        names.entry(n).or_default().push(Entry {
            v4: svc.vip,
            v6: svc.vip_v6,
            service: service.clone(),
        });
    }
}

impl View {
    /// Builds the view of `snapshot`.
    pub fn build(snapshot: &Snapshot, ttl: u32) -> View {
        let count = snapshot.services.iter().map(|s| s.dns_names.len()).sum();
        let custom = count - snapshot.services.len().min(count);
        let mut zones = HashMap::with_capacity(1 + custom);
        let mut names = HashMap::with_capacity(count);
        if let Some(zone) = name(&snapshot.dns_zone) {
            zones.insert(LowerName::from(zone), SmallVec::new());
        }
        for svc in &snapshot.services {
            add(svc, &mut zones, &mut names);
        }
        View {
            zones: Arc::new(zones),
            names: Arc::new(names),
            ttl,
            revision: snapshot.revision,
        }
    }

    /// The view of `snapshot`, which `delta` made from the snapshot of this
    /// view: this view with the names of the services the delta removes or
    /// puts replaced, or, when the delta is not from this view's revision
    /// or changes the zone, built anew.
    pub fn with(&self, snapshot: &Snapshot, delta: &Delta) -> View {
        let services = &delta.services;
        let zone_kept = name(&delta.dns_zone)
            .map(LowerName::from)
            .is_some_and(|zone| self.zones.get(&zone).is_some_and(|o| o.is_empty()));
        if delta.base != self.revision || !zone_kept {
            return View::build(snapshot, self.ttl);
        }
        let mut view = View {
            revision: snapshot.revision,
            ..self.clone()
        };
        if services.is_empty() {
            // Only the SOA serial moves.
            return view;
        }
        let gone: HashSet<&str> = services
            .removed
            .iter()
            .map(String::as_str)
            .chain(services.put.iter().map(|s| s.name.as_str()))
            .collect();
        let zones = Arc::make_mut(&mut view.zones);
        let names = Arc::make_mut(&mut view.names);
        zones.retain(|_, owners| {
            // No owner: the zone of service names, which stays.
            if owners.is_empty() {
                return true;
            }
            owners.retain(|s| !gone.contains(&**s));
            !owners.is_empty()
        });
        names.retain(|_, entries| {
            entries.retain(|e| !gone.contains(&*e.service));
            !entries.is_empty()
        });
        for svc in &services.put {
            add(svc, zones, names);
        }
        view
    }

    /// The addresses of service name `qname`, if it is one.
    pub(crate) fn addresses(&self, qname: &LowerName) -> Option<&[Entry]> {
        self.names.get(qname).map(|e| &e[..])
    }

    /// The TTL of its records.
    pub(crate) fn ttl(&self) -> u32 {
        self.ttl
    }

    /// How many names it answers for.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The zone holding `qname`: the longest apex it is in.
    fn zone_of(&self, qname: &LowerName) -> Option<&LowerName> {
        let mut n = qname.clone();
        loop {
            if let Some((apex, _)) = self.zones.get_key_value(&n) {
                return Some(apex);
            }
            if n.is_root() {
                return None;
            }
            n = n.base_name();
        }
    }

    /// Whether `qname` is a service name or inside one of this view's zones.
    pub fn in_zone(&self, qname: &LowerName) -> bool {
        self.names.contains_key(qname) || self.zone_of(qname).is_some()
    }

    fn record(&self, owner: &LowerName, data: RData) -> Record {
        Record::from_rdata(Name::from(owner), self.ttl, data)
    }

    fn soa(&self, apex: &LowerName) -> Record {
        let apex = Name::from(apex);
        let host = |label: &str| {
            Name::from_ascii(label)
                .and_then(|l| l.append_domain(&apex))
                .unwrap_or_else(|_| apex.clone())
        };
        let serial = (self.revision & u64::from(u32::MAX)) as u32;
        let soa = SOA::new(
            host("ns"),
            host("hostmaster"),
            serial,
            REFRESH,
            RETRY,
            EXPIRE,
            self.ttl,
        );
        Record::from_rdata(apex, self.ttl, RData::SOA(soa))
    }

    fn ns(&self, apex: &LowerName) -> Record {
        let ns = Name::from_ascii("ns")
            .and_then(|l| l.append_domain(apex))
            .unwrap_or_else(|_| Name::from(apex));
        self.record(apex, RData::NS(NS(ns)))
    }

    pub fn lookup(&self, qname: &LowerName, qtype: RecordType) -> Answer {
        let addrs = self.names.get(qname);
        // The common case, a service name's A or AAAA: one hash lookup, no
        // walk up the labels to find the zone.
        if let Some(entries) = addrs {
            match qtype {
                RecordType::A => {
                    return Answer::Records(
                        entries
                            .iter()
                            .map(|e| self.record(qname, RData::A(A(e.v4))))
                            .collect(),
                    );
                }
                RecordType::AAAA => {
                    return Answer::Records(
                        entries
                            .iter()
                            .map(|e| self.record(qname, RData::AAAA(AAAA(e.v6))))
                            .collect(),
                    );
                }
                _ => {}
            }
        }
        let Some(apex) = self.zone_of(qname) else {
            return Answer::Refused;
        };
        let at_apex = apex == qname;
        let mut out = Vec::new();
        let a = |out: &mut Vec<Record>| {
            let entries = addrs.into_iter().flatten();
            out.extend(
                entries
                    .clone()
                    .map(|e| self.record(qname, RData::A(A(e.v4)))),
            );
            out.extend(entries.map(|e| self.record(qname, RData::AAAA(AAAA(e.v6)))));
        };
        match qtype {
            RecordType::SOA if at_apex => out.push(self.soa(apex)),
            RecordType::NS if at_apex => out.push(self.ns(apex)),
            RecordType::ANY => {
                a(&mut out);
                if at_apex {
                    out.push(self.soa(apex));
                    out.push(self.ns(apex));
                }
            }
            _ => {}
        }
        match (out.is_empty(), addrs.is_some() || at_apex) {
            (false, _) => Answer::Records(out),
            (true, true) => Answer::NoData(self.soa(apex)),
            (true, false) => Answer::NxDomain(self.soa(apex)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trellis_api::resource::AuthType;
    use trellis_api::snapshot::ServiceView;

    fn snapshot() -> Snapshot {
        let svc = |n: &str, v4: &str, v6: &str, names: &[&str]| {
            Arc::new(ServiceView {
                name: n.into(),
                vip: v4.parse().unwrap(),
                vip_v6: v6.parse().unwrap(),
                dns_names: names.iter().map(|s| s.to_string()).collect(),
                via: vec!["shop".into()],
                auth_type: AuthType::None,
                auth_policy: None,
                lattice_compat: false,
                listeners: vec![],
            })
        };
        Snapshot {
            network: "east".into(),
            revision: 7,
            region: "us-east-1".into(),
            dns_zone: "trellis.internal".into(),
            vip_pools: Vec::new(),
            services: vec![
                svc(
                    "checkout",
                    "169.254.171.1",
                    "fd00::1",
                    &["checkout.trellis.internal"],
                ),
                svc(
                    "catalog",
                    "169.254.171.2",
                    "fd00::2",
                    &["catalog.trellis.internal", "catalog.example.com"],
                ),
            ],
            service_networks: vec![],
            target_groups: vec![],
            gateways: Default::default(),
            identities: Vec::new(),
            inbound: Vec::new(),
        }
    }

    fn q(s: &str) -> LowerName {
        LowerName::from(Name::from_ascii(s).unwrap())
    }

    fn rdata(a: &Answer) -> Vec<String> {
        match a {
            Answer::Records(r) => r.iter().map(|r| r.data.to_string()).collect(),
            _ => vec![],
        }
    }

    #[test]
    fn answers_follow_the_authoritative_rules() {
        let v = View::build(&snapshot(), 30);
        assert_eq!(
            rdata(&v.lookup(&q("checkout.trellis.internal."), RecordType::A)),
            ["169.254.171.1"]
        );
        // Case-insensitive.
        assert_eq!(
            rdata(&v.lookup(&q("CheckOut.Trellis.Internal."), RecordType::AAAA)),
            ["fd00::1"]
        );
        // The custom domain is a zone of its own, answered at its apex.
        assert_eq!(
            rdata(&v.lookup(&q("catalog.example.com."), RecordType::A)),
            ["169.254.171.2"]
        );
        assert!(matches!(
            v.lookup(&q("catalog.example.com."), RecordType::SOA),
            Answer::Records(_)
        ));
        // Name exists, other type: NODATA with the SOA.
        let Answer::NoData(soa) = v.lookup(&q("checkout.trellis.internal."), RecordType::MX) else {
            panic!()
        };
        assert_eq!(soa.name.to_string(), "trellis.internal.");
        // No such name: NXDOMAIN with the zone's SOA.
        let Answer::NxDomain(soa) = v.lookup(&q("nope.trellis.internal."), RecordType::A) else {
            panic!()
        };
        assert_eq!(soa.record_type(), RecordType::SOA);
        assert!(matches!(
            v.lookup(&q("x.checkout.trellis.internal."), RecordType::A),
            Answer::NxDomain(_)
        ));
        // Apex: SOA and NS; A is NODATA.
        assert!(matches!(
            v.lookup(&q("trellis.internal."), RecordType::NS),
            Answer::Records(_)
        ));
        assert!(matches!(
            v.lookup(&q("trellis.internal."), RecordType::A),
            Answer::NoData(_)
        ));
        // Outside every zone.
        assert_eq!(v.lookup(&q("example.org."), RecordType::A), Answer::Refused);
        assert_eq!(
            v.lookup(&q("other.example.com."), RecordType::A),
            Answer::Refused
        );
    }

    /// What a view answers for, comparable.
    fn contents(v: &View) -> (u64, Vec<String>, Vec<String>) {
        let mut zones: Vec<String> = v.zones.iter().map(|(z, s)| format!("{z} {s:?}")).collect();
        let mut names: Vec<String> = v
            .names
            .iter()
            .flat_map(|(n, es)| {
                es.iter()
                    .map(move |e| format!("{n} {} {} {}", e.v4, e.v6, e.service))
            })
            .collect();
        zones.sort();
        names.sort();
        (v.revision, zones, names)
    }

    /// Service `i` at `vip`, with custom domain `domain` (unique to it, as
    /// the control plane keeps them).
    fn service(i: u8, vip: u8, domain: Option<u8>) -> ServiceView {
        let mut names = vec![format!("s{i}.trellis.internal")];
        names.extend(domain.map(|d| format!("d{d}.s{i}.example.com")));
        ServiceView {
            name: format!("s{i}"),
            dns_names: names,
            vip: [169, 254, 171, vip].into(),
            vip_v6: format!("fd00::{vip}").parse().unwrap(),
            ..(*snapshot().services[0]).clone()
        }
    }

    /// The delta from `old` to `new` (services only, as the view reads).
    fn delta(old: &Snapshot, new: &Snapshot) -> Delta {
        let mut d: Delta = serde_json::from_value(serde_json::json!({
            "network": new.network, "base": old.revision, "revision": new.revision,
            "digest": "", "region": new.region, "dnsZone": new.dns_zone,
        }))
        .unwrap();
        d.services.put = new
            .services
            .iter()
            .filter(|s| !old.services.contains(s))
            .cloned()
            .collect();
        d.services.removed = old
            .services
            .iter()
            .filter(|s| !new.services.iter().any(|n| n.name == s.name))
            .map(|s| s.name.clone())
            .collect();
        d
    }

    proptest::proptest! {
        /// Whatever the services added, removed, moved to other VIPs or
        /// given other custom domains, a view updated by each delta answers
        /// exactly as one built from the whole snapshot.
        #[test]
        fn a_view_updated_by_deltas_is_the_view_built_whole(
            steps in proptest::collection::vec(
                proptest::collection::btree_map(0..6u8, (1..4u8, proptest::option::of(0..3u8)), 0..6),
                1..12,
            )
        ) {
            let mut old = Snapshot { services: Vec::new(), ..snapshot() };
            let mut view = View::build(&old, 30);
            for (k, services) in steps.iter().enumerate() {
                let new = Snapshot {
                    revision: old.revision + 1 + k as u64,
                    services: services.iter().map(|(i, (vip, d))| Arc::new(service(*i, *vip, *d))).collect(),
                    ..old.clone()
                };
                view = view.with(&new, &delta(&old, &new));
                proptest::prop_assert_eq!(contents(&view), contents(&View::build(&new, 30)));
                old = new;
            }
        }
    }

    #[test]
    fn the_soa_serial_is_the_revision_and_its_minimum_the_ttl() {
        let v = View::build(&snapshot(), 30);
        let Answer::Records(r) = v.lookup(&q("trellis.internal."), RecordType::SOA) else {
            panic!()
        };
        assert!(
            r[0].data.to_string().contains(" 7 3600 600 86400 30"),
            "{}",
            r[0].data
        );
    }
}
