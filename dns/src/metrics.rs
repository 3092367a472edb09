//! Query counters by network, query type and response code, rendered in the
//! Prometheus text format.

use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::rr::RecordType;
use std::collections::BTreeMap;
use std::sync::Mutex;

type Key = (String, String, String);

static QUERIES: Mutex<BTreeMap<Key, u64>> = Mutex::new(BTreeMap::new());

/// Counts one answered query. Networks and types are bounded sets (the
/// configured networks, "-", and record types), so the map stays small.
pub fn record(network: &str, qtype: Option<RecordType>, rcode: ResponseCode) {
    let qtype = qtype.map(|t| t.to_string()).unwrap_or_else(|| "-".into());
    let key = (network.to_string(), qtype, rcode.to_str().to_string());
    let mut q = QUERIES.lock().unwrap_or_else(|e| e.into_inner());
    *q.entry(key).or_default() += 1;
}

pub fn render() -> String {
    let q = QUERIES.lock().unwrap_or_else(|e| e.into_inner());
    let mut out = String::from(
        "# HELP trellis_dns_queries_total DNS queries answered, by network, type and response code.\n\
         # TYPE trellis_dns_queries_total counter\n",
    );
    for ((network, qtype, rcode), n) in q.iter() {
        out.push_str(&format!(
            "trellis_dns_queries_total{{network=\"{network}\",type=\"{qtype}\",rcode=\"{rcode}\"}} {n}\n"
        ));
    }
    out
}
