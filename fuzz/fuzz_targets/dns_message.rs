//! DNS messages as they arrive on either transport: answered or dropped,
//! never a panic, whatever the bytes; and what the UDP fast path answers is
//! byte for byte what the general path answers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, Mutex, OnceLock};
use trellis_dns::fuzzing::{Reply, answer, fast_answer};
use trellis_dns::handler::{Handler, Networks, Views};

fn handler() -> &'static Handler {
    static HANDLER: OnceLock<Handler> = OnceLock::new();
    HANDLER.get_or_init(|| {
        let snapshot = serde_json::from_value(serde_json::json!({
            "network": "east", "revision": 1, "region": "us-east-1", "dnsZone": "trellis.internal",
            "services": [{"name": "shop", "vip": "169.254.171.1", "vipV6": "fd00::1",
                "dnsNames": ["shop.trellis.internal", "shop.example.com"], "via": ["sn"],
                "authType": "NONE", "listeners": []}],
            "serviceNetworks": [], "targetGroups": [], "gateways": {}
        }))
        .unwrap();
        let (tx, rx) = tokio::sync::watch::channel(Arc::new(Views::new()));
        trellis_dns::feed::publish(&tx, &snapshot, None, 30);
        // The receiver keeps the last value; the sender may go.
        let networks = Networks {
            listener: Some("east".into()),
            sources: Vec::new(),
        };
        Handler::new(rx, networks, None)
    })
}

fuzz_target!(|data: &[u8]| {
    let out = Arc::new(Mutex::new(Vec::with_capacity(512)));
    let src: std::net::SocketAddr = "127.0.0.1:5300".parse().unwrap();
    let fast = fast_answer(handler(), data, src.ip());
    for protocol in [
        trellis_dns::fuzzing::Protocol::Udp,
        trellis_dns::fuzzing::Protocol::Tcp,
    ] {
        let general = answer(handler(), data, src, protocol, &out);
        if let (Some(fast), trellis_dns::fuzzing::Protocol::Udp) = (&fast, protocol) {
            assert_eq!(general, Reply::Answer(fast.clone()));
        }
    }
});
