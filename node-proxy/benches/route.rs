//! Routing one request through a listener's rules, as the proxy does it
//! (issue 25: 100 rules with regexes against 1, at least 0.9 of the
//! throughput end to end, scripts/bench-rules.sh). The rules are those of
//! that script (a third path regexes, a third prefixes with a header, a
//! third header regexes with a query parameter); the request misses them
//! all, the most matching can cost.

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, Method, Uri};
use std::hint::black_box;
use trellis_api::resource::RuleMatch;
use trellis_node::route::{Matcher, RequestParts};

fn rules(n: usize) -> Vec<Matcher> {
    (1..=n)
        .map(|i| {
            let m = match i % 3 {
                0 => serde_json::json!({"path": {"regex": format!("/api/v[0-9]+/item-{i}/.*")}}),
                1 => serde_json::json!({"path": {"prefix": format!("/svc-{i}/")},
                    "headers": [{"name": "x-tenant", "exact": format!("t{i}")}]}),
                _ => serde_json::json!({"headers": [{"name": "x-build", "regex": format!("b-{i}-[a-f0-9]+")}],
                    "query": [{"name": "v", "exact": i.to_string()}]}),
            };
            let m: RuleMatch = serde_json::from_value(m).unwrap();
            Matcher::compile(&m).unwrap()
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let method = Method::GET;
    let uri: Uri = "/".parse().unwrap();
    let mut headers = HeaderMap::new();
    headers.insert("host", "checkout.example".parse().unwrap());
    headers.insert("user-agent", "wrk".parse().unwrap());
    let req = RequestParts {
        method: &method,
        uri: &uri,
        headers: &headers,
    };
    for n in [1, 100] {
        let table = rules(n);
        c.bench_function(&format!("route_miss_{n}_rules"), |b| {
            b.iter(|| black_box(table.iter().position(|m| m.matches(black_box(&req)))))
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
