//! Scale benchmark: 10,000 services with two target groups each (20,000
//! target groups), applied in one batch, and one network's snapshot compiled
//! and serialized, its digest computed from scratch (what a holder does
//! once, on a whole snapshot), and the snapshot patched after one service's
//! weights changed (what the control plane does per change). Targets
//! (issue 2): apply < 5 s, snapshot < 200 ms; (issue 23) a patch costs what
//! the change costs.
//! The whole-program numbers (CLI + HTTP + fsync + RSS) come from
//! `scripts/bench-control-plane.sh`.

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};
use std::time::Duration;
use trellis_control_plane::snapshot::{Changed, Scope, compile, patch};
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

fn service(i: usize, blue: u32, green: u32) -> Value {
    doc(
        "Service",
        format!("s{i}"),
        json!({"serviceNetworks": ["shop"], "listeners": [{"name": "web", "protocol": "HTTP",
            "defaultAction": {"forward": [
                {"targetGroup": format!("s{i}-blue"), "weight": blue},
                {"targetGroup": format!("s{i}-green"), "weight": green}]},
            "rules": [{"name": "v2", "priority": 10, "match": {"path": {"prefix": "/v2"}},
                "action": {"forward": [{"targetGroup": format!("s{i}-green")}]}}]}]}),
    )
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
        docs.push(service(i, 90, 10));
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
    let scope = Scope {
        network: "east",
        zone: &s.zone,
        region: "us-east-1",
        day: 20_413,
        trellis_ca: "",
    };
    g.bench_function("snapshot_compile_and_serialize", |b| {
        b.iter(|| {
            let snap = compile(&state, &scope).unwrap();
            assert_eq!(snap.services.len(), SERVICES);
            serde_json::to_vec(&snap).unwrap()
        })
    });
    let snap = compile(&state, &scope).unwrap();
    g.bench_function("snapshot_digest", |b| b.iter(|| snap.digest()));
    let weighted = state
        .apply(&[service(7, 50, 50)], &s, 0, false)
        .unwrap()
        .state;
    let changed = Changed {
        services: ["s7".to_string()].into(),
        ..Changed::default()
    };
    let s7 = snap.services.iter().position(|x| x.name == "s7").unwrap();
    g.bench_function("snapshot_patch_one_weight", |b| {
        b.iter(|| {
            let next = patch(&weighted, &scope, &snap, &changed).unwrap();
            assert_ne!(next.services[s7], snap.services[s7]);
            next
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
