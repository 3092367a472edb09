//! Scale benchmark: 10,000 services with two target groups each (20,000
//! target groups), applied in one batch, and one network's snapshot compiled
//! and serialized, and its digest computed from scratch (what a holder does
//! once, on a whole snapshot). Targets (issue 2): apply < 5 s, snapshot < 200 ms.
//! The whole-program numbers (CLI + HTTP + fsync + RSS) come from
//! `scripts/bench-control-plane.sh`.

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};
use std::time::Duration;
use trellis_control_plane::snapshot::compile;
use trellis_control_plane::state::{Settings, State};

const SERVICES: usize = 10_000;

fn settings() -> Settings {
    Settings {
        zone: "trellis.internal".into(),
        vip_pool_v4: "169.254.128.0/17".parse().unwrap(),
        vip_pool_v6: "fd00:7472:6c73::/112".parse().unwrap(),
        vip_hold_secs: 900,
        max_state_bytes: usize::MAX,
    }
}

fn doc(kind: &str, name: String, spec: Value) -> Value {
    json!({"apiVersion": "trellis.dev/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec})
}

fn documents() -> Vec<Value> {
    let mut docs = vec![
        doc("Network", "east".into(), json!({})),
        doc(
            "ServiceNetwork",
            "shop".into(),
            json!({"networks": ["east"]}),
        ),
    ];
    for i in 0..SERVICES {
        for colour in ["blue", "green"] {
            docs.push(doc(
                "TargetGroup",
                format!("s{i}-{colour}"),
                json!({"network": "east", "port": 8080, "targets": [
                    {"address": format!("10.{}.{}.10", i / 250, i % 250)},
                    {"address": format!("10.{}.{}.11", i / 250, i % 250)}]}),
            ));
        }
        docs.push(doc(
            "Service",
            format!("s{i}"),
            json!({"serviceNetworks": ["shop"], "listeners": [{"name": "web", "protocol": "HTTP",
                "defaultAction": {"forward": [
                    {"targetGroup": format!("s{i}-blue"), "weight": 90},
                    {"targetGroup": format!("s{i}-green"), "weight": 10}]},
                "rules": [{"name": "v2", "priority": 10, "match": {"path": {"prefix": "/v2"}},
                    "action": {"forward": [{"targetGroup": format!("s{i}-green")}]}}]}]}),
        ));
    }
    docs
}

fn bench(c: &mut Criterion) {
    let s = settings();
    let docs = documents();
    let mut g = c.benchmark_group("scale_10k_services");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.bench_function("apply_batch", |b| {
        b.iter(|| State::empty(&s).apply(&docs, &s, 0, false).unwrap())
    });
    let state = State::empty(&s).apply(&docs, &s, 0, false).unwrap().state;
    g.bench_function("snapshot_compile_and_serialize", |b| {
        b.iter(|| {
            let snap = compile(&state, "east", &s.zone, "us-east-1", 20_413, "").unwrap();
            assert_eq!(snap.services.len(), SERVICES);
            serde_json::to_vec(&snap).unwrap()
        })
    });
    let snap = compile(&state, "east", &s.zone, "us-east-1", 20_413, "").unwrap();
    g.bench_function("snapshot_digest", |b| b.iter(|| snap.digest()));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
