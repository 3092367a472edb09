//! The query a DNS server of service names mostly gets, answered without
//! decoding a message or encoding one: a standard query with one question,
//! an A or AAAA of a service name in lowercase, no EDNS or EDNS without
//! options. Its answer is the query's header and question followed by
//! fixed-size records, so it is written in place: only the ID, flags and
//! question are echoed per query, and the name is found with one hash
//! lookup. Everything else (and anything unusual in these) takes the
//! general path (`wire`: hickory's decoder, the handler, hickory's encoder),
//! and a property test checks the two agree byte for byte.

use crate::handler::Handler;
use hickory_server::proto::op::{Query, ResponseCode};
use hickory_server::proto::rr::{DNSClass, LowerName, RecordType};
use hickory_server::proto::serialize::binary::{BinDecodable, BinDecoder};
use std::net::IpAddr;

const HEADER: usize = 12;
/// Header flags: QR, the opcode, AA, TC, RD (first byte); RA, Z, AD, CD,
/// RCODE (second).
const QR: u8 = 0x80;
const OPCODE: u8 = 0x78;
const AA: u8 = 0x04;
const RD: u8 = 0x01;
const AD: u8 = 0x20;
const CD: u8 = 0x10;
const OPT: u16 = 41;
/// Most addresses one name answers with here (the control plane keeps
/// names unique); more take the general path.
const MAX_ANSWERS: usize = 8;

/// The answer to `query` from `src`, or `None` when the query is not one
/// this path answers (nothing is allocated then).
pub fn answer(handler: &Handler, query: &[u8], src: IpAddr) -> Option<Vec<u8>> {
    let q = Question::parse(query)?;
    let (network, view) = handler.view_of(src);
    let view = view?;
    let entries = view.addresses(&q.name).filter(|e| e.len() <= MAX_ANSWERS)?;
    // Header and question, then per record its owner (the question's name),
    // 10 bytes of type, class, TTL and length, and at most 16 of address;
    // then an OPT of 11.
    let owner_len = q.end - 4 - HEADER;
    let mut out = Vec::with_capacity(q.end + entries.len() * (owner_len + 26) + 11);
    out.extend_from_slice(&query[..2]);
    out.push(QR | AA | (query[2] & RD));
    out.push(query[3] & CD);
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&(entries.len() as u16).to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&u16::from(q.edns.is_some()).to_be_bytes());
    out.extend_from_slice(&query[HEADER..q.end]);
    // The owner is the question's name, written out as hickory's encoder
    // writes it (no compression pointer), so both paths send the same bytes.
    let owner = &query[HEADER..HEADER + owner_len];
    for e in entries {
        out.extend_from_slice(owner);
        out.extend_from_slice(&u16::from(q.qtype).to_be_bytes());
        out.extend_from_slice(&u16::from(DNSClass::IN).to_be_bytes());
        out.extend_from_slice(&view.ttl().to_be_bytes());
        match q.qtype {
            RecordType::A => {
                out.extend_from_slice(&4u16.to_be_bytes());
                out.extend_from_slice(&e.v4.octets());
            }
            _ => {
                out.extend_from_slice(&16u16.to_be_bytes());
                out.extend_from_slice(&e.v6.octets());
            }
        }
    }
    if let Some(payload) = q.edns {
        // The root name, OPT, the payload size, extended RCODE, version
        // and flags all zero, no options: what the general path answers.
        out.push(0);
        out.extend_from_slice(&OPT.to_be_bytes());
        out.extend_from_slice(&payload.max(512).to_be_bytes());
        out.extend_from_slice(&[0; 6]);
    }
    crate::metrics::record(network, Some(q.qtype), ResponseCode::NoError);
    tracing::debug!(%src, network = network.unwrap_or("-"), qtype = ?q.qtype, "query answered");
    Some(out)
}

/// What this path reads of a query.
struct Question {
    name: LowerName,
    qtype: RecordType,
    /// Where the question ends.
    end: usize,
    /// The EDNS payload size, when the query has an OPT record.
    edns: Option<u16>,
}

impl Question {
    fn parse(query: &[u8]) -> Option<Question> {
        let header = query.get(..HEADER)?;
        let count = |i: usize| u16::from_be_bytes([header[i], header[i + 1]]);
        // A query (not a response), opcode QUERY; of the second byte's
        // flags only AD and CD, which the answer treats as the general
        // path does.
        if header[2] & (QR | OPCODE) != 0 || header[3] & !(AD | CD) != 0 {
            return None;
        }
        let additional = count(10);
        if count(4) != 1 || count(6) != 0 || count(8) != 0 || additional > 1 {
            return None;
        }
        // Labels in lowercase, no compression pointer: the echoed question
        // and the answers' owner then read as the general path writes them.
        let mut at = HEADER;
        loop {
            let len = usize::from(*query.get(at)?);
            if len == 0 {
                break;
            }
            if len > 63 {
                return None;
            }
            let label = query.get(at + 1..at + 1 + len)?;
            if label.iter().any(u8::is_ascii_uppercase) {
                return None;
            }
            at += 1 + len;
        }
        let mut decoder = BinDecoder::new(&query[HEADER..]);
        let q = Query::read(&mut decoder).ok()?;
        if q.query_class() != DNSClass::IN
            || !matches!(q.query_type(), RecordType::A | RecordType::AAAA)
        {
            return None;
        }
        let end = HEADER + decoder.index();
        let edns = match additional {
            0 if end == query.len() => None,
            1 => Some(opt(query.get(end..)?)?),
            _ => return None,
        };
        Some(Question {
            qtype: q.query_type(),
            name: LowerName::new(q.name()),
            end,
            edns,
        })
    }
}

/// The payload size of `rr`, an OPT record with version 0, no extended
/// RCODE and no options, ending the message (the DO flag is allowed: the
/// answer has no signatures either way).
fn opt(rr: &[u8]) -> Option<u16> {
    let [0, t0, t1, p0, p1, 0, 0, f0, f1, 0, 0] = *rr else {
        return None;
    };
    (u16::from_be_bytes([t0, t1]) == OPT && f0 & 0x7f == 0 && f1 == 0)
        .then_some(u16::from_be_bytes([p0, p1]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::{Networks, Views};
    use crate::view::View;
    use crate::wire::{self, Reply};
    use hickory_server::net::xfer::Protocol;
    use hickory_server::proto::op::Message;
    use proptest::prelude::*;
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};
    use tokio::sync::watch;
    use trellis_api::snapshot::Snapshot;

    fn handler() -> Handler {
        let snapshot: Snapshot = serde_json::from_value(serde_json::json!({
            "network": "east", "revision": 3, "region": "us-east-1", "dnsZone": "trellis.internal",
            "services": [
                {"name": "catalog", "vip": "169.254.171.2", "vipV6": "fd00::2",
                 "dnsNames": ["catalog.trellis.internal", "shop.example.com"], "via": ["sn"],
                 "authType": "NONE", "listeners": []},
                {"name": "checkout", "vip": "169.254.171.1", "vipV6": "fd00::1",
                 "dnsNames": ["checkout.trellis.internal"], "via": ["sn"],
                 "authType": "NONE", "listeners": []}],
            "serviceNetworks": [], "targetGroups": [], "gateways": {}
        }))
        .unwrap();
        let mut views = Views::new();
        views.insert("east".into(), Arc::new(View::build(&snapshot, 30)));
        let (_tx, rx) = watch::channel(Arc::new(views));
        let networks = Networks {
            listener: Some("east".into()),
            sources: vec![("10.9.0.0/16".parse().unwrap(), "nowhere".into())],
        };
        Handler::new(rx, networks, None)
    }

    /// A query: header flags, one question, then `rest` (an OPT record,
    /// trailing bytes) counted as `additional` records.
    fn query(
        id: u16,
        flags: [u8; 2],
        name: &str,
        qtype: u16,
        qclass: u16,
        additional: u16,
        rest: &[u8],
    ) -> Vec<u8> {
        let mut q = id.to_be_bytes().to_vec();
        q.extend_from_slice(&flags);
        q.extend_from_slice(&[0, 1, 0, 0, 0, 0]);
        q.extend_from_slice(&additional.to_be_bytes());
        for label in name.split('.').filter(|l| !l.is_empty()) {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&qclass.to_be_bytes());
        q.extend_from_slice(rest);
        q
    }

    fn opt(payload: u16, ttl: [u8; 4], options: &[u8]) -> Vec<u8> {
        let mut r = vec![0, 0, 41];
        r.extend_from_slice(&payload.to_be_bytes());
        r.extend_from_slice(&ttl);
        r.extend_from_slice(&(options.len() as u16).to_be_bytes());
        r.extend_from_slice(options);
        r
    }

    fn general(h: &Handler, q: &[u8], src: SocketAddr) -> Reply {
        wire::answer(h, q, src, Protocol::Udp, &Arc::new(Mutex::new(Vec::new())))
    }

    fn fast(h: &Handler, q: &[u8], src: SocketAddr) -> Option<Vec<u8>> {
        answer(h, q, src.ip())
    }

    #[test]
    fn the_common_queries_are_answered_here_as_the_general_path_would() {
        let h = handler();
        let src: SocketAddr = "127.0.0.1:5353".parse().unwrap();
        for (q, addresses) in [
            (
                query(7, [1, 0], "checkout.trellis.internal", 1, 1, 0, &[]),
                vec!["169.254.171.1"],
            ),
            (
                query(8, [0, 0], "catalog.trellis.internal", 28, 1, 0, &[]),
                vec!["fd00::2"],
            ),
            (
                query(
                    9,
                    [1, 0x30],
                    "shop.example.com",
                    1,
                    1,
                    1,
                    &opt(1232, [0, 0, 0x80, 0], &[]),
                ),
                vec!["169.254.171.2"],
            ),
        ] {
            let fast = fast(&h, &q, src).expect("answered by the fast path");
            assert_eq!(general(&h, &q, src), Reply::Answer(fast.clone()));
            let m = Message::from_vec(&fast).unwrap();
            let got: Vec<String> = m.answers.iter().map(|r| r.data.to_string()).collect();
            assert_eq!(got, addresses);
            assert!(m.metadata.authoritative);
        }
        // Left to the general path: an unknown name, another type, mixed
        // case, EDNS options, a network without a view.
        for q in [
            query(1, [1, 0], "nope.trellis.internal", 1, 1, 0, &[]),
            query(1, [1, 0], "checkout.trellis.internal", 16, 1, 0, &[]),
            query(1, [1, 0], "CheckOut.trellis.internal", 1, 1, 0, &[]),
            query(
                1,
                [1, 0],
                "checkout.trellis.internal",
                1,
                1,
                1,
                &opt(1232, [0; 4], &[0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]),
            ),
        ] {
            assert_eq!(fast(&h, &q, src), None);
        }
        let q = query(1, [1, 0], "checkout.trellis.internal", 1, 1, 0, &[]);
        assert_eq!(fast(&h, &q, "10.9.1.1:53".parse().unwrap()), None);
    }

    fn names() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("checkout.trellis.internal".to_string()),
            Just("catalog.trellis.internal".to_string()),
            Just("shop.example.com".to_string()),
            Just("Checkout.trellis.internal".to_string()),
            Just("x.shop.example.com".to_string()),
            Just("trellis.internal".to_string()),
            Just("example.org".to_string()),
            "[a-z]{1,8}\\.trellis\\.internal",
        ]
    }

    fn payload() -> impl Strategy<Value = u16> {
        prop_oneof![Just(1232u16), Just(4096), 0..1024u16, any::<u16>()]
    }

    fn additional() -> impl Strategy<Value = (u16, Vec<u8>)> {
        prop_oneof![
            4 => Just((0, Vec::new())),
            3 => (payload(), prop_oneof![Just([0u8; 4]), Just([0, 0, 0x80, 0]), any::<[u8; 4]>()])
                .prop_map(|(p, ttl)| (1, opt(p, ttl, &[]))),
            1 => (any::<u16>(), proptest::collection::vec(any::<u8>(), 0..12))
                .prop_map(|(p, o)| (1, opt(p, [0; 4], &o))),
            1 => (0..3u16, proptest::collection::vec(any::<u8>(), 0..16)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        /// Whatever the query, what the fast path answers is byte for byte
        /// what the general path answers.
        #[test]
        fn the_fast_path_answers_as_the_general_path(
            id in any::<u16>(),
            flags in prop_oneof![
                3 => Just([1u8, 0]), 1 => Just([0, 0]), 1 => Just([1, 0x20]), 1 => Just([1, 0x10]),
                1 => Just([5, 0x30]), 2 => any::<[u8; 2]>(),
            ],
            name in names(),
            qtype in prop_oneof![3 => Just(1u16), 3 => Just(28), 1 => Just(15), 1 => Just(255), 1 => any::<u16>()],
            qclass in prop_oneof![4 => Just(1u16), 1 => Just(3), 1 => any::<u16>()],
            (count, rest) in additional(),
        ) {
            let h = handler();
            let src: SocketAddr = "127.0.0.1:5353".parse().unwrap();
            let q = query(id, flags, &name, qtype, qclass, count, &rest);
            if let Some(fast) = fast(&h, &q, src) {
                prop_assert_eq!(general(&h, &q, src), Reply::Answer(fast));
            }
        }
    }
}
