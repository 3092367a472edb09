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
use std::collections::HashMap;
use trellis_api::snapshot::Snapshot;

/// SOA timers (seconds); the negative-caching TTL is the record TTL.
const REFRESH: i32 = 3600;
const RETRY: i32 = 600;
const EXPIRE: i32 = 86_400;

#[derive(Debug, PartialEq)]
pub enum Answer<'a> {
    /// NOERROR with these records.
    Records(Vec<&'a Record>),
    /// NOERROR, no records of that type: the SOA goes in the authority section.
    NoData(&'a Record),
    /// NXDOMAIN, with the SOA.
    NxDomain(&'a Record),
    /// Not a zone of ours.
    Refused,
}

#[derive(Debug)]
struct Zone {
    soa: Record,
    ns: Record,
}

#[derive(Debug, Default)]
struct Names {
    a: Vec<Record>,
    aaaa: Vec<Record>,
}

/// An immutable view: built once per snapshot, swapped in whole.
#[derive(Debug, Default)]
pub struct View {
    zones: HashMap<LowerName, Zone>,
    names: HashMap<LowerName, Names>,
    pub revision: u64,
}

fn name(s: &str) -> Option<Name> {
    let mut n = Name::from_ascii(s).ok()?;
    n.set_fqdn(true);
    Some(n)
}

impl View {
    /// Builds the view; names that are not valid DNS names are skipped (the
    /// control plane validates them, so this only guards against bad input).
    pub fn build(snapshot: &Snapshot, ttl: u32) -> View {
        let mut view = View {
            revision: snapshot.revision,
            ..View::default()
        };
        let serial = (snapshot.revision & u64::from(u32::MAX)) as u32;
        let add_zone = |apex: &Name, zones: &mut HashMap<LowerName, Zone>| {
            let (Some(mname), Some(rname)) = (
                name(&format!("ns.{apex}")),
                name(&format!("hostmaster.{apex}")),
            ) else {
                return;
            };
            let soa = SOA::new(mname.clone(), rname, serial, REFRESH, RETRY, EXPIRE, ttl);
            zones.insert(
                LowerName::from(apex.clone()),
                Zone {
                    soa: Record::from_rdata(apex.clone(), ttl, RData::SOA(soa)),
                    ns: Record::from_rdata(apex.clone(), ttl, RData::NS(NS(mname))),
                },
            );
        };
        if let Some(zone) = name(&snapshot.dns_zone) {
            add_zone(&zone, &mut view.zones);
        }
        for svc in &snapshot.services {
            for (i, dns) in svc.dns_names.iter().enumerate() {
                let Some(n) = name(dns) else { continue };
                // Custom domain names (after the first) are zones of their own.
                if i > 0 {
                    add_zone(&n, &mut view.zones);
                }
                let entry = view.names.entry(LowerName::from(n.clone())).or_default();
                entry
                    .a
                    .push(Record::from_rdata(n.clone(), ttl, RData::A(A(svc.vip))));
                entry
                    .aaaa
                    .push(Record::from_rdata(n, ttl, RData::AAAA(AAAA(svc.vip_v6))));
            }
        }
        view
    }

    /// The zone holding `qname`: the longest apex it is in.
    fn zone_of(&self, qname: &LowerName) -> Option<(&LowerName, &Zone)> {
        let mut n = qname.clone();
        loop {
            if let Some((apex, zone)) = self.zones.get_key_value(&n) {
                return Some((apex, zone));
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

    pub fn lookup(&self, qname: &LowerName, qtype: RecordType) -> Answer<'_> {
        // The common case, a service name's A or AAAA: one hash lookup, no
        // walk up the labels to find the zone.
        if let Some(names) = self.names.get(qname) {
            let records: &[Record] = match qtype {
                RecordType::A => &names.a,
                RecordType::AAAA => &names.aaaa,
                _ => &[],
            };
            if !records.is_empty() {
                return Answer::Records(records.iter().collect());
            }
        }
        let Some((apex, zone)) = self.zone_of(qname) else {
            return Answer::Refused;
        };
        let at_apex = apex == qname;
        let names = self.names.get(qname);
        let mut out: Vec<&Record> = Vec::new();
        let a = || names.map(|n| n.a.iter()).into_iter().flatten();
        let aaaa = || names.map(|n| n.aaaa.iter()).into_iter().flatten();
        match qtype {
            RecordType::A => out.extend(a()),
            RecordType::AAAA => out.extend(aaaa()),
            RecordType::SOA if at_apex => out.push(&zone.soa),
            RecordType::NS if at_apex => out.push(&zone.ns),
            RecordType::ANY => {
                out.extend(a());
                out.extend(aaaa());
                if at_apex {
                    out.push(&zone.soa);
                    out.push(&zone.ns);
                }
            }
            _ => {}
        }
        match (out.is_empty(), names.is_some() || at_apex) {
            (false, _) => Answer::Records(out),
            (true, true) => Answer::NoData(&zone.soa),
            (true, false) => Answer::NxDomain(&zone.soa),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trellis_api::resource::AuthType;
    use trellis_api::snapshot::ServiceView;

    fn snapshot() -> Snapshot {
        let svc = |n: &str, v4: &str, v6: &str, names: &[&str]| ServiceView {
            name: n.into(),
            vip: v4.parse().unwrap(),
            vip_v6: v6.parse().unwrap(),
            dns_names: names.iter().map(|s| s.to_string()).collect(),
            via: vec!["shop".into()],
            auth_type: AuthType::None,
            auth_policy: None,
            lattice_compat: false,
            listeners: vec![],
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

    fn rdata(a: &Answer<'_>) -> Vec<String> {
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
