//! Auth policies: any JSON is refused with a path or parsed, and what
//! parses compiles and evaluates on the node without a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trellis_api::policy::PolicyDocument;
use trellis_node::auth::policy::{Policy, Principal, Request, evaluate};

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let Ok(doc) = PolicyDocument::parse(&value) else {
        return;
    };
    let policy = Policy::compile(&doc);
    let mut headers = http::HeaderMap::new();
    headers.insert("x-team", http::HeaderValue::from_static("red"));
    let principal = Principal {
        names: vec!["trellis:identity/alice".into()],
        tags: [("team".to_string(), "red".to_string())].into(),
    };
    for (who, secure) in [(None, false), (Some(&principal), true)] {
        let req = Request {
            principal: who,
            region: "us-east-1",
            source_network: "east",
            service: "orders",
            service_network: "shop",
            method: "GET",
            path: "/orders/1",
            query: Some("a=1&b"),
            headers: &headers,
            port: 80,
            source_ip: "10.0.0.1".parse().unwrap(),
            secure,
            now: 1_800_000_000,
            // Both readings of the workload keys: none, and a pod's.
            workload: who.map(|_| "/kubepods.slice/kubepods-pod1f2e3d4c_5b6a.slice/cri-containerd-4f0c5b7e2a1d.scope"),
        };
        let _ = evaluate(&policy, &req);
    }
});
