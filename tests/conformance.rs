//! The Gateway API conformance suite's HTTPRoute cases as data
//! (tests/conformance/*.yaml, each naming the upstream cases it covers):
//! each case's routes imported with `trellis import gateway-api --apply`,
//! then its requests sent through the real proxy to echo targets, with the
//! upstream suite's expectations (the backend reached, the path and headers
//! it saw, the status, `Location`, response headers). Which upstream cases
//! are covered and which are not, and why: docs/routing.md "Gateway API
//! conformance".

mod harness;

use harness::node::{Env, shop_network};
use serde_json::Value;
use std::time::{Duration, Instant};

const CASES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/conformance");

fn expectations(case: &str) -> Value {
    let path = format!("{CASES}/{case}.expect.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let docs = trellis_api::manifest::parse(&path, &text).unwrap();
    docs.into_iter().next().unwrap().value
}

/// One request as client.py's `request` prints it.
fn send(env: &Env, vip: &str, r: &Value) -> Value {
    let method = r["method"].as_str().unwrap_or("GET");
    let url = format!("'http://{vip}{}'", r["path"].as_str().unwrap());
    let mut args = vec!["request".to_string(), method.to_string(), url];
    for (k, v) in r["headers"].as_object().into_iter().flatten() {
        args.push(format!("'{k}={}'", v.as_str().unwrap()));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    env.client(&args)
}

/// Whether `got` is what `want` expects; why not, if it is not.
fn check(vip: &str, want: &Value, got: &Value) -> Result<(), String> {
    let status = got["status"].as_u64().unwrap_or(0);
    let body = &got["body"];
    let expected_status = want["status"].as_u64().unwrap_or(200);
    if status != expected_status {
        return Err(format!("status {status}, expected {expected_status}"));
    }
    if let Some(b) = want["backend"].as_str() {
        if body["name"] != b {
            return Err(format!("reached {}, expected {b}", body["name"]));
        }
    }
    if let Some(p) = want["backendPath"].as_str() {
        if body["path"] != p {
            return Err(format!("the target saw {}, expected {p}", body["path"]));
        }
    }
    for (k, v) in want["backendHeaders"].as_object().into_iter().flatten() {
        if body["headers"][k] != *v {
            return Err(format!(
                "the target saw {k}: {}, expected {v}",
                body["headers"][k]
            ));
        }
    }
    for k in want["absentBackendHeaders"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let k = k.as_str().unwrap();
        if body["headers"].get(k).is_some() {
            return Err(format!("the target saw {k}"));
        }
    }
    for (k, v) in want["responseHeaders"].as_object().into_iter().flatten() {
        if got["headers"][k] != *v {
            return Err(format!("response {k}: {}, expected {v}", got["headers"][k]));
        }
    }
    for k in want["absentResponseHeaders"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if got["headers"].get(k.as_str().unwrap()).is_some() {
            return Err(format!("the response has {k}"));
        }
    }
    if let Some(l) = want["location"].as_str() {
        let l = l.replace("{host}", vip);
        if got["headers"]["location"] != l.as_str() {
            return Err(format!(
                "location {}, expected {l}",
                got["headers"]["location"]
            ));
        }
    }
    Ok(())
}

fn run_case(env: &Env, case: &str) {
    let out = env.trellis(&format!(
        "import gateway-api -f {CASES}/gateway.yaml -f {CASES}/{case}.yaml --network east --apply"
    ));
    assert!(out.contains("exists: left as it is"), "{case}: {out}");
    let expect = expectations(case);
    let vip = env.vip(expect["service"].as_str().unwrap());
    let requests = expect["requests"].as_array().unwrap();
    // Eventually consistent, as upstream: the first request waits for the
    // node to have the service.
    let t = Instant::now();
    while let Err(why) = check(&vip, &requests[0], &send(env, &vip, &requests[0])) {
        assert!(t.elapsed() < Duration::from_secs(10), "{case}: {why}");
        std::thread::sleep(Duration::from_millis(200));
    }
    for r in requests {
        let what = format!(
            "{case}: {} {}",
            r["method"].as_str().unwrap_or("GET"),
            r["path"]
        );
        if let Some(split) = r["split"].as_object() {
            let n = r["repeat"].as_u64().unwrap();
            let url = format!("'http://{vip}{}'", r["path"].as_str().unwrap());
            let got = env.client(&["count", &url, &n.to_string()]);
            assert_eq!(got["names"], Value::Object(split.clone()), "{what}");
            continue;
        }
        let start = Instant::now();
        let got = send(env, &vip, r);
        let took = start.elapsed();
        if let Err(why) = check(&vip, r, &got) {
            panic!("{what}: {why}\n{got}");
        }
        if let Some(ms) = r["withinMs"].as_u64() {
            assert!(took < Duration::from_millis(ms), "{what}: took {took:?}");
        }
        if let Some(mirror) = r["mirroredTo"].as_str() {
            let port = 8100
                + mirror
                    .trim_start_matches("infra-backend-v")
                    .parse::<u16>()
                    .unwrap();
            let t = Instant::now();
            loop {
                let c = env.backend_counts(port);
                if c["lastMirrored"]["path"] == r["path"] {
                    break;
                }
                assert!(
                    t.elapsed() < Duration::from_secs(3),
                    "{what}: no copy at {mirror}: {c}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

#[test]
fn gateway_api_httproute_conformance_cases_through_the_proxy() {
    let Some(mut env) = Env::new("conformance") else {
        return;
    };
    env.start_backends(&[
        "http:8101:infra-backend-v1",
        "http:8102:infra-backend-v2",
        "http:8103:infra-backend-v3",
    ]);
    // The backends' target groups, with their targets: what an import
    // cannot know (it leaves existing groups as they are).
    env.apply(&shop_network(
        &[
            ("infra-backend-v1-8080", 8101),
            ("infra-backend-v2-8080", 8102),
            ("infra-backend-v3-8080", 8103),
        ],
        "{enabled: false}",
    ));
    env.start_node(&[]);
    for case in ["matching", "query", "filters", "weights"] {
        run_case(&env, case);
    }
}
