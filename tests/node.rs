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

    // A dual-stack client reaches the v4 VIP through an IPv6 socket
    // (::ffff:VIP; the kernel runs no connect4 for it) and sees the VIP as
    // its peer.
    let mapped = env.client(&["mapped", &vip, "80", "/"]);
    assert_eq!(mapped["status"], 200, "{mapped}");
    assert!(
        ["blue", "green"].contains(&mapped["name"].as_str().unwrap_or_default()),
        "{mapped}"
    );
    assert_eq!(mapped["peer"], format!("::ffff:{vip}"), "{mapped}");

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
        metrics
            .lines()
            .any(|l| l.starts_with(
                "trellis_proxy_requests_total{service=\"checkout\",listener=\"web\",rule=\""
            ) && l.contains("target_group=\"green\",code=\"200\",verdict=\"allowed\"}")),
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
    // Stamped when written (RFC 3339, UTC, milliseconds).
    let time = line["time"].as_str().unwrap_or_default();
    assert!(time.len() == 24 && time.ends_with('Z'), "{line}");
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
    let out = load.output();
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
    // Blue's second target never answers: its health checks fail.
    env.apply(&shop(90, 10, &[8081, 8089], ""));
    env.start_node(&["--dns-listen", "127.0.0.1:5353"]);
    let url = format!("http://{}/", env.vip("checkout"));
    let dead = |env: &Env| {
        let (_, metrics) = env.admin_get("/metrics");
        let line = metrics
            .lines()
            .find(|l| l.starts_with("trellis_target_healthy{") && l.contains(":8089\""))
            .map(str::to_string);
        line.unwrap_or_else(|| panic!("no health of :8089 in {metrics}"))
    };
    let t = Instant::now();
    while !dead(&env).ends_with(" 0") {
        assert!(t.elapsed() < Duration::from_secs(10), "{}", dead(&env));
        std::thread::sleep(Duration::from_millis(100));
    }
    let load = env.steady_load(&url, "checkout.trellis.internal");
    std::thread::sleep(Duration::from_secs(2));
    let mut took = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        env.restart_node();
        took.push(t.elapsed());
        // The new node knows from the old one that :8089 is down: it never
        // counts it as unchecked, so no request is sent its way.
        assert!(dead(&env).ends_with(" 0"), "{}", dead(&env));
        std::thread::sleep(Duration::from_millis(700));
    }
    std::thread::sleep(Duration::from_secs(2));
    let report = load.stop();
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

/// What a node told the `NOTIFY_SOCKET` (systemd's, here the test's) in its
/// next datagram: the `MAINPID`, once `READY=1` was said with it.
fn notified_main_pid(socket: &std::os::unix::net::UnixDatagram) -> u32 {
    let mut buf = [0u8; 512];
    let n = socket
        .recv(&mut buf)
        .expect("a notification within the timeout");
    let text = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(text.lines().any(|l| l == "READY=1"), "{text}");
    text.lines()
        .find_map(|l| l.strip_prefix("MAINPID="))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no MAINPID in {text:?}"))
}

#[test]
fn a_hangup_starts_a_successor_that_takes_over_and_systemd_follows() {
    let Some(mut env) = Env::new("hangup_reload") else {
        return;
    };
    env.node_drain = 30;
    let notify = env.run.join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&notify).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    env.node_env = format!("NOTIFY_SOCKET={}", notify.display());
    env.start_backends(&["http:8081:blue", "http:8082:green"]);
    env.apply(&shop(100, 0, &[8081], ""));
    env.start_node(&["--dns-listen", "127.0.0.1:5353"]);
    let first = notified_main_pid(&socket);
    let url = format!("http://{}/", env.vip("checkout"));
    let load = env.steady_load(&url, "checkout.trellis.internal");
    std::thread::sleep(Duration::from_secs(1));

    // systemd's `ExecReload=/bin/kill -HUP $MAINPID`.
    harness::must(&format!("kill -HUP {first}"));
    let second = notified_main_pid(&socket);
    env.adopt_node(second);
    assert_ne!(
        first, second,
        "the successor reports itself as the main process"
    );
    let mut old = env.take_node().expect("the first node");
    assert_eq!(old.id(), first, "the node's own pid was notified");
    std::thread::sleep(Duration::from_secs(1));
    let report = load.stop();
    assert_eq!(report["error_count"], 0, "{report}");
    let t = Instant::now();
    let status = loop {
        if let Some(s) = old.try_wait().unwrap() {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the replaced node never exited"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    // Only the successor is left, and it serves.
    env.wait_ready();
    assert_eq!(count(&env.client(&["count", &url, "10"]), "blue"), 10);
}

/// Reads the pid a supervisor wrote.
fn supervised_pid(file: &std::path::Path) -> u32 {
    let t = Instant::now();
    loop {
        if let Some(pid) = std::fs::read_to_string(file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            return pid;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "no pid in {file:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Only requests a process had taken may fail at a crash: never a refused
/// connection (when `refused_too` is false).
fn only_in_flight_failures(report: &serde_json::Value, refused_too: bool) {
    for e in report["errors"].as_array().unwrap() {
        let e = e.as_str().unwrap();
        let in_flight = [
            "ConnectionResetError",
            "RemoteDisconnected",
            "echo None",
            "timed out",
            "BrokenPipe",
        ]
        .iter()
        .any(|k| e.contains(k));
        let refused = e.contains("ConnectionRefusedError");
        assert!(in_flight || (refused_too && refused), "{e}: {report}");
    }
}

#[test]
fn a_crash_refuses_nothing_where_a_supervisor_holds_the_sockets() {
    let Some(mut env) = Env::new("crash_restart") else {
        return;
    };
    env.start_backends(&["http:8081:blue", "http:8082:green"]);
    env.apply(&shop(100, 0, &[8081], ""));
    let url = |env: &Env| format!("http://{}/", env.vip("checkout"));
    let load = |env: &Env| env.steady_load(&url(env), "checkout.trellis.internal");

    // As systemd with a .socket unit and Restart=always: the sockets are
    // the supervisor's, restarts 100 ms after each crash.
    let pidfile = env.run.join("node.pid");
    env.node_wrapper = format!(
        "python3 {}/supervise.py {} 0.1 proxy=tcp:127.0.0.1:15001 admin=tcp:127.0.0.1:15000 \
         dns-udp=udp:127.0.0.1:5353 dns-tcp=tcp:127.0.0.1:5353 --",
        harness::HELPERS,
        pidfile.display()
    );
    env.start_node(&["--dns-listen", "127.0.0.1:5353"]);
    let supervised = load(&env);
    std::thread::sleep(Duration::from_secs(1));
    for _ in 0..5 {
        let pid = supervised_pid(&pidfile);
        std::fs::remove_file(&pidfile).unwrap();
        harness::must(&format!("kill -9 {pid}"));
        let next = supervised_pid(&pidfile);
        assert_ne!(pid, next);
        std::thread::sleep(Duration::from_millis(1500));
    }
    let supervised = supervised.stop();
    println!("five crashes under a supervisor: {supervised}");
    assert_eq!(supervised["refused"], 0, "{supervised}");
    only_in_flight_failures(&supervised, false);
    env.wait_ready();
    assert_eq!(count(&env.client(&["count", &url(&env), "10"]), "blue"), 10);
    env.stop_node();

    // By hand, nothing holds the sockets: connections are refused for as
    // long as the next process takes to start (recorded, not asserted).
    env.node_wrapper.clear();
    env.start_node(&["--dns-listen", "127.0.0.1:5353"]);
    let by_hand = load(&env);
    std::thread::sleep(Duration::from_secs(1));
    let mut crashed = env.take_node().unwrap();
    crashed.kill().unwrap();
    crashed.wait().unwrap();
    env.start_node(&["--dns-listen", "127.0.0.1:5353"]);
    std::thread::sleep(Duration::from_secs(1));
    let by_hand = by_hand.stop();
    println!("one crash, started again by hand: {by_hand}");
    only_in_flight_failures(&by_hand, true);
    assert_eq!(count(&env.client(&["count", &url(&env), "10"]), "blue"), 10);
}
