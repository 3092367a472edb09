//! `trellis node` end to end, as root, in network namespaces: real control
//! plane, real eBPF redirect, real proxy, Python clients and targets (see
//! tests/harness/node.rs).

mod harness;

use harness::node::{Env, SNAT_IP};
use std::time::{Duration, Instant};

fn shop(blue_weight: u32, green_weight: u32, blue_targets: &[u16], extra_tg: &str) -> String {
    let targets: Vec<String> = blue_targets
        .iter()
        .map(|p| format!("{{address: {}, port: {p}}}", harness::node::TARGET_IP))
        .collect();
    format!(
        r#"apiVersion: trellis.dev/v1alpha1
kind: Network
metadata: {{name: east}}
spec: {{}}
---
apiVersion: trellis.dev/v1alpha1
kind: ServiceNetwork
metadata: {{name: shop}}
spec: {{networks: [east]}}
---
apiVersion: trellis.dev/v1alpha1
kind: TargetGroup
metadata: {{name: blue}}
spec:
  network: east
  healthCheck: {{intervalSeconds: 1, timeoutSeconds: 1, path: /health, unhealthyThreshold: 2, healthyThreshold: 2}}
  drainSeconds: 5
  targets: [{targets}]
---
apiVersion: trellis.dev/v1alpha1
kind: TargetGroup
metadata: {{name: green}}
spec:
  network: east
  healthCheck: {{intervalSeconds: 1, timeoutSeconds: 1, path: /health}}
  targets: [{{address: {ip}, port: 8082}}]
{extra_tg}---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {{name: checkout}}
spec:
  serviceNetworks: [shop]
  listeners:
    - name: web
      protocol: HTTP
      timeouts: {{headerReadSeconds: 1, idleSeconds: 2}}
      defaultAction:
        forward:
          - {{targetGroup: blue, weight: {blue_weight}}}
          - {{targetGroup: green, weight: {green_weight}}}
      rules:
        - name: beta
          priority: 10
          match: {{headers: [{{name: x-beta, exact: "true"}}]}}
          action: {{forward: [{{targetGroup: green}}]}}
        - name: teapot
          priority: 20
          match: {{path: {{exact: /teapot}}}}
          action: {{fixedResponse: {{statusCode: 418}}}}
"#,
        targets = targets.join(", "),
        ip = harness::node::TARGET_IP,
    )
}

fn count(v: &serde_json::Value, name: &str) -> u64 {
    v["names"][name].as_u64().unwrap_or(0)
}

#[test]
fn weighted_rules_through_the_ebpf_redirect_from_the_snat_address() {
    let Some(mut env) = Env::new("weighted_rules") else {
        return;
    };
    env.start_backends(&["http:8081:blue", "http:8082:green"]);
    env.apply(&shop(90, 10, &[8081], ""));
    env.start_node(&[]);
    let vip = env.vip("checkout");
    let url = format!("http://{vip}/");

    // 10,000 requests at 90/10: exact shares, well within ±1.5 points.
    let started = Instant::now();
    let r = env.client(&[
        "count",
        &url,
        "10000",
        "x-trellis-source-network=forged",
        "X-Amzn-Lattice-Identity=forged",
    ]);
    eprintln!(
        "10,000 requests through the proxy in {:?}",
        started.elapsed()
    );
    assert_eq!(r["errors"], 0, "{r}");
    let (blue, green) = (count(&r, "blue"), count(&r, "green"));
    assert_eq!(blue + green, 10_000, "{r}");
    let share = green as f64 / 100.0;
    assert!((share - 10.0).abs() <= 1.5, "green got {share}%");

    // What the target saw: the node's SNAT address, the proxy's headers,
    // none of the forged ones.
    let last = &r["last"];
    assert_eq!(last["peer"], SNAT_IP, "{last}");
    let h = &last["headers"];
    assert_eq!(h["x-trellis-source-network"], "east", "{h}");
    assert_eq!(h["x-trellis-service"], "checkout");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-for-proto"], "http");
    assert!(
        h["x-forwarded-for-port"]
            .as_str()
            .is_some_and(|p| p.parse::<u16>().is_ok())
    );
    assert_eq!(h["x-trellis-request-id"].as_str().map(str::len), Some(32));
    assert!(h.get("x-amzn-lattice-identity").is_none(), "{h}");

    // Rules: a header sends to green, a path gets a fixed response.
    let beta = env.client(&["count", &url, "20", "x-beta=true"]);
    assert_eq!(count(&beta, "green"), 20, "{beta}");
    let teapot = env.client(&["count", &format!("{url}teapot"), "1"]);
    assert_eq!(teapot["statuses"]["418"], 1, "{teapot}");

    // Blue/green cut-over: 0/100, effective for the next requests.
    env.apply(&shop(0, 100, &[8081], ""));
    let t = Instant::now();
    loop {
        let r = env.client(&["count", &url, "1"]);
        if count(&r, "green") == 1 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "the new weights never applied"
        );
    }
    let after = env.client(&["count", &url, "500"]);
    assert_eq!(count(&after, "green"), 500, "{after}");

    // Observability: metrics, config, access log.
    let (status, metrics) = env.admin_get("/metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("trellis_proxy_requests_total{service=\"checkout\",listener=\"web\",target_group=\"green\",code=\"200\"}"),
        "{metrics}"
    );
    assert!(
        metrics
            .contains("trellis_target_healthy{target_group=\"blue\",target=\"10.200.0.2:8081\"} 1"),
        "{metrics}"
    );
    let (_, config) = env.admin_get("/config");
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(config["network"], "east");
    assert!(config["revision"].as_u64().unwrap() >= 2);
    std::thread::sleep(Duration::from_millis(300));
    let log = env.access_log();
    let line: serde_json::Value =
        serde_json::from_str(log.lines().last().expect("access log lines")).unwrap();
    assert_eq!(line["service"], "checkout");
    assert_eq!(line["target_group"], "green");
    assert_eq!(line["status"], 200);
    assert_eq!(line["source_network"], "east");
    assert!(log.lines().count() >= 10_521, "one line per request");
}

#[test]
fn a_failing_target_stops_receiving_traffic_and_a_rollout_loses_nothing() {
    let Some(mut env) = Env::new("health_and_rollout") else {
        return;
    };
    env.start_backends(&["http:8081:blue-1", "http:8083:blue-2", "http:8082:green"]);
    env.apply(&shop(100, 0, &[8081, 8083], ""));
    env.start_node(&[]);
    let url = format!("http://{}/", env.vip("checkout"));
    let r = env.client(&["count", &url, "100"]);
    assert_eq!((count(&r, "blue-1"), count(&r, "blue-2")), (50, 50), "{r}");

    // blue-2 fails its checks: out within interval x unhealthyThreshold (2 s).
    std::fs::write(env.run.join("unhealthy-8083"), "").unwrap();
    let t = Instant::now();
    loop {
        let r = env.client(&["count", &url, "20"]);
        if count(&r, "blue-2") == 0 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(4),
            "blue-2 still gets traffic: {r}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("unhealthy target out after {:?}", t.elapsed());
    let (_, metrics) = env.admin_get("/metrics");
    assert!(
        metrics
            .contains("trellis_target_healthy{target_group=\"blue\",target=\"10.200.0.2:8083\"} 0"),
        "{metrics}"
    );
    std::fs::remove_file(env.run.join("unhealthy-8083")).unwrap();

    // A rolling replacement of every blue target under steady load:
    // 8081+8083 -> 8083+8085 -> 8085+8086, new targets started first, old
    // ones deregistered. Not one request may fail.
    env.start_backends(&["http:8085:blue-3", "http:8086:blue-4"]);
    let load = env.spawn_client(&["load", &url, "6"]);
    std::thread::sleep(Duration::from_millis(1000));
    env.apply(&shop(100, 0, &[8083, 8085], ""));
    std::thread::sleep(Duration::from_millis(1500));
    env.apply(&shop(100, 0, &[8085, 8086], ""));
    let out = load.wait_with_output().unwrap();
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("rollout under load: {result}");
    assert_eq!(result["errors"], serde_json::json!([]), "{result}");
    assert!(result["ok"].as_u64().unwrap() > 500, "{result}");
    let r = env.client(&["count", &url, "40"]);
    assert_eq!((count(&r, "blue-3"), count(&r, "blue-4")), (20, 20), "{r}");
}

const DB: &str = r#"---
apiVersion: trellis.dev/v1alpha1
kind: TargetGroup
metadata: {name: db}
spec:
  network: east
  protocol: TCP
  port: 9000
  healthCheck: {intervalSeconds: 1, timeoutSeconds: 1}
  targets: [{address: 10.200.0.2}]
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: db}
spec:
  serviceNetworks: [shop]
  listeners:
    - {name: pg, protocol: TCP, port: 5432, defaultAction: {forward: [{targetGroup: db}]}}
"#;

#[test]
fn slow_clients_are_cut_off_websockets_outlive_the_idle_timeout_and_tcp_is_spliced() {
    let Some(mut env) = Env::new("limits_ws_tcp") else {
        return;
    };
    env.start_backends(&["http:8081:blue", "http:8082:green", "tcp:9000:echo"]);
    env.apply(&shop(100, 0, &[8081], DB));
    env.start_node(&[]);
    let vip = env.vip("checkout");

    // headerReadSeconds is 1: half a request head is cut off after it.
    let slow = env.client(&["slow", &vip, "80"]);
    let after = slow["closed_after"].as_f64().unwrap();
    assert!((0.8..3.0).contains(&after), "{slow}");

    // idleSeconds is 2; a WebSocket exchanging a message every 0.5 s for
    // 4 s stays open and working.
    let ws = env.client_raw(&["ws", &format!("http://{vip}/"), "8", "0.5"]);
    let lines: Vec<&str> = ws.lines().collect();
    assert_eq!(
        lines.first().copied(),
        Some("HTTP/1.1 101 Switching Protocols"),
        "{ws}"
    );
    assert_eq!(
        lines[1..],
        [
            "echo:m0", "echo:m1", "echo:m2", "echo:m3", "echo:m4", "echo:m5", "echo:m6", "echo:m7"
        ],
        "{ws}"
    );

    // HTTP/2 from the client (h2c, prior knowledge); HTTP/1.1 to the target.
    let h2 = env.curl(&[
        "--http2-prior-knowledge",
        "-o",
        "/dev/null",
        "-w",
        "'%{http_version} %{http_code}'",
        &format!("http://{vip}/"),
    ]);
    assert_eq!(h2.trim(), "2 200", "{h2}");

    // A TCP listener: the connection is spliced to the target, from the
    // SNAT address.
    let db = env.vip("db");
    let echoed = env.client_raw(&["tcp", &db, "5432", "hello"]);
    assert_eq!(echoed.trim(), format!("{SNAT_IP}:9000:hello"));
    std::thread::sleep(Duration::from_millis(300));
    let log = env.access_log();
    assert!(
        log.lines()
            .any(|l| l.contains("\"kind\":\"tcp\"") && l.contains("\"service\":\"db\"")),
        "{log}"
    );
}

#[test]
fn keeps_routing_and_resolving_without_the_control_plane_and_after_a_restart() {
    let Some(mut env) = Env::new("static_stability") else {
        return;
    };
    env.start_backends(&["http:8081:blue", "http:8082:green"]);
    env.apply(&shop(100, 0, &[8081], ""));
    env.start_node(&["--dns-listen", "127.0.0.1:5353"]);
    let vip = env.vip("checkout");
    let url = format!("http://{vip}/");
    let resolve = |env: &Env| {
        let out = env.dig(&[
            "@127.0.0.1",
            "-p",
            "5353",
            "+short",
            "checkout.trellis.internal",
            "A",
        ]);
        out.trim().to_string()
    };
    assert_eq!(resolve(&env), vip);
    assert_eq!(count(&env.client(&["count", &url, "10"]), "blue"), 10);

    // The control plane goes away: nothing changes for clients.
    env.stop_control_plane();
    assert_eq!(count(&env.client(&["count", &url, "10"]), "blue"), 10);
    // The node restarts while it is away: it serves its persisted snapshot.
    env.stop_node();
    env.start_node(&["--dns-listen", "127.0.0.1:5353"]);
    assert_eq!(count(&env.client(&["count", &url, "10"]), "blue"), 10);
    assert_eq!(resolve(&env), vip);
    let (_, config) = env.admin_get("/config");
    assert!(config.contains("\"checkout\""), "{config}");
}

#[test]
fn ten_restarts_under_steady_load_refuse_nothing() {
    let Some(mut env) = Env::new("hitless_restart") else {
        return;
    };
    // Long enough for every draining node to keep the WebSocket and the
    // uploads it holds until the load stops.
    env.node_drain = 60;
    env.start_backends(&["http:8081:blue", "http:8082:green"]);
    env.apply(&shop(90, 10, &[8081], ""));
    env.start_node(&["--dns-listen", "127.0.0.1:5353"]);
    let url = format!("http://{}/", env.vip("checkout"));
    let stop = env.run.join("stop-load");
    let stop_arg = stop.display().to_string();
    let load = env.spawn_script(
        "steady.py",
        &[
            &url,
            "127.0.0.1:5353",
            "checkout.trellis.internal",
            &stop_arg,
        ],
    );
    std::thread::sleep(Duration::from_secs(2));
    let mut took = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        env.restart_node();
        took.push(t.elapsed());
        std::thread::sleep(Duration::from_millis(700));
    }
    std::thread::sleep(Duration::from_secs(2));
    std::fs::write(&stop, b"").unwrap();
    let out = load.wait_with_output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "steady.py said {:?}: {e}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    println!("restarts took {took:?}; load: {report}");
    assert_eq!(report["error_count"], 0, "{report}");
    for kind in ["keep-alive", "per-request", "upload", "websocket", "dns"] {
        assert!(
            report["ok"][kind].as_u64().unwrap_or(0) > 0,
            "no {kind} succeeded: {report}"
        );
    }
    // The WebSocket stayed up on the node it was opened on, through all ten.
    assert_eq!(report["ws_clean_closes"], 0, "{report}");
    // Every replaced node drained and exited on its own, cleanly.
    let codes = env.wait_replaced(Duration::from_secs(30));
    assert_eq!(codes, vec![Some(0); 10]);
    // The one running now serves, and is the one the datapath feeds.
    let after = env.client(&["count", &url, "20"]);
    assert_eq!(
        count(&after, "blue") + count(&after, "green"),
        20,
        "{after}"
    );
}
