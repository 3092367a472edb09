//! Query counters by network, query type and response code. Counting is a
//! relaxed atomic add into a fixed table: nothing is allocated or locked on
//! the query path; a scrape reads the table through [`collector`].

use crate::forward::Forwarder;
use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::rr::RecordType;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

const TYPES: [&str; 7] = ["A", "AAAA", "SOA", "NS", "ANY", "other", "-"];
const RCODES: [&str; 7] = [
    "NOERROR", "NXDOMAIN", "REFUSED", "FORMERR", "NOTIMP", "SERVFAIL", "other",
];

struct Table {
    networks: Vec<String>,
    /// networks (+1 for "-") x TYPES x RCODES
    counts: Vec<AtomicU64>,
    malformed: AtomicU64,
    tcp_refused: AtomicU64,
}

static TABLE: OnceLock<Table> = OnceLock::new();

/// Sets the networks counted by name; others count as "-". Call once at start.
pub fn init(networks: &[String]) {
    let mut networks = networks.to_vec();
    networks.push("-".into());
    let n = networks.len() * TYPES.len() * RCODES.len();
    let _ = TABLE.set(Table {
        networks,
        counts: (0..n).map(|_| AtomicU64::new(0)).collect(),
        malformed: AtomicU64::new(0),
        tcp_refused: AtomicU64::new(0),
    });
}

fn type_index(t: Option<RecordType>) -> usize {
    match t {
        Some(RecordType::A) => 0,
        Some(RecordType::AAAA) => 1,
        Some(RecordType::SOA) => 2,
        Some(RecordType::NS) => 3,
        Some(RecordType::ANY) => 4,
        Some(_) => 5,
        None => 6,
    }
}

fn rcode_index(r: ResponseCode) -> usize {
    match r {
        ResponseCode::NoError => 0,
        ResponseCode::NXDomain => 1,
        ResponseCode::Refused => 2,
        ResponseCode::FormErr => 3,
        ResponseCode::NotImp => 4,
        ResponseCode::ServFail => 5,
        _ => 6,
    }
}

pub fn record(network: Option<&str>, qtype: Option<RecordType>, rcode: ResponseCode) {
    let Some(t) = TABLE.get() else { return };
    let last = t.networks.len() - 1;
    let n = network
        .and_then(|n| t.networks[..last].iter().position(|x| x == n))
        .unwrap_or(last);
    let i = (n * TYPES.len() + type_index(qtype)) * RCODES.len() + rcode_index(rcode);
    t.counts[i].fetch_add(1, Ordering::Relaxed);
}

pub fn malformed() {
    if let Some(t) = TABLE.get() {
        t.malformed.fetch_add(1, Ordering::Relaxed);
    }
}

pub fn tcp_refused() {
    if let Some(t) = TABLE.get() {
        t.tcp_refused.fetch_add(1, Ordering::Relaxed);
    }
}

/// The DNS counters (and the forwarder's, if any) as a prometheus-client
/// collector: read from the table at each scrape, into whichever registry
/// serves them (the node's, or `trellis dns`'s own).
pub fn collector(forwarder: Option<Arc<Forwarder>>) -> Box<dyn Collector> {
    Box::new(Counters { forwarder })
}

#[derive(Debug)]
struct Counters {
    forwarder: Option<Arc<Forwarder>>,
}

fn counter(encoder: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> fmt::Result {
    encoder
        .encode_descriptor(name, help, None, MetricType::Counter)?
        .encode_counter::<NoLabelSet, _, u64>(&v, None)
}

impl Collector for Counters {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let Some(t) = TABLE.get() else {
            return Ok(());
        };
        let mut queries = encoder.encode_descriptor(
            "trellis_dns_queries",
            "DNS queries answered, by network, type and response code",
            None,
            MetricType::Counter,
        )?;
        for (ni, network) in t.networks.iter().enumerate() {
            for (ti, qtype) in TYPES.iter().enumerate() {
                for (ri, rcode) in RCODES.iter().enumerate() {
                    let v = t.counts[(ni * TYPES.len() + ti) * RCODES.len() + ri]
                        .load(Ordering::Relaxed);
                    if v > 0 {
                        let labels = [
                            ("network", network.as_str()),
                            ("type", qtype),
                            ("rcode", rcode),
                        ];
                        queries
                            .encode_family(&labels)?
                            .encode_counter::<NoLabelSet, _, u64>(&v, None)?;
                    }
                }
            }
        }
        counter(
            &mut encoder,
            "trellis_dns_malformed",
            "Datagrams dropped because they did not decode",
            t.malformed.load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "trellis_dns_tcp_refused",
            "TCP connections closed at once because the connection limit was reached",
            t.tcp_refused.load(Ordering::Relaxed),
        )?;
        if let Some(f) = &self.forwarder {
            let (forwarded, failed) = f.counts();
            counter(
                &mut encoder,
                "trellis_dns_forwarded",
                "Queries forwarded upstream",
                forwarded,
            )?;
            counter(
                &mut encoder,
                "trellis_dns_forward_failures",
                "Forwarded queries answered SERVFAIL because the upstream did not answer",
                failed,
            )?;
        }
        Ok(())
    }
}
