//! Clients in network namespaces of their own ("containers", issue 21), as
//! root: each has a veth pair to a bridge in the node's namespace, its own
//! address, cgroup and resolv.conf. The node's proxy and DNS listen on the
//! bridge address, where containers reach them and host processes too.
//! (Docker's engine cannot run on this machine; tests/README.md says why.)

mod harness;

use harness::node::{BRIDGE_IP, Env, SNAT_IP, TARGET_IP};
use std::time::{Duration, Instant};

const SERVICES: &str = r#"apiVersion: trellis.dev/v1alpha1
kind: Network
metadata: {name: east}
spec: {}
---
apiVersion: trellis.dev/v1alpha1
kind: ServiceNetwork
metadata: {name: shop}
spec: {networks: [east]}
---
apiVersion: trellis.dev/v1alpha1
kind: TargetGroup
metadata: {name: blue}
spec: {network: east, targets: [{address: TARGET, port: 8081}]}
---
apiVersion: trellis.dev/v1alpha1
kind: TargetGroup
metadata: {name: green}
spec: {network: east, targets: [{address: TARGET, port: 8082}]}
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: checkout}
spec:
  serviceNetworks: [shop]
  listeners:
    - name: web
      protocol: HTTP
      defaultAction:
        forward: [{targetGroup: blue, weight: 90}, {targetGroup: green, weight: 10}]
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: ledger}
spec:
  serviceNetworks: [shop]
  authType: SIGV4
  authPolicy:
    Version: "2012-10-17"
    Statement:
      - Effect: Allow
        Principal: "*"
        Action: "vpc-lattice-svcs:Invoke"
        Resource: "*"
        Condition:
          IpAddress: {"aws:SourceIp": "10.88.0.2/32"}
  listeners:
    - name: web
      protocol: HTTP
      defaultAction: {forward: [{targetGroup: blue}]}
"#;

fn count(v: &serde_json::Value, name: &str) -> u64 {
    v["names"][name].as_u64().unwrap_or(0)
}

fn parse(out: &str) -> serde_json::Value {
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("client said {out:?}: {e}"))
}

#[test]
fn containers_reach_services_by_name_with_their_own_addresses() {
    let Some(mut env) = Env::new("containers") else {
        return;
    };
    env.start_backends(&["http:8081:blue", "http:8082:green"]);
    env.apply(&SERVICES.replace("TARGET", TARGET_IP));
    let one = env.add_container(2, true);
    let two = env.add_container(3, true);
    let outside = env.add_container(4, false);
    let proxy = format!("{BRIDGE_IP}:15001");
    let dns = format!("{BRIDGE_IP}:53");
    env.start_node(&["--proxy-listen", &proxy, "--dns-listen", &dns]);
    let url = "http://checkout.trellis.internal/";

    // Both containers, by name through their own resolv.conf, with Python
    // and with curl: the split, the SNAT address at the target, and each
    // container's own address in x-forwarded-for.
    for c in [&one, &two] {
        let v = parse(&env.container_client(c, &["count", url, "200"]));
        let (blue, green) = (count(&v, "blue"), count(&v, "green"));
        assert_eq!(blue + green, 200, "{v}");
        assert!((160..=195).contains(&blue), "about 90/10: {v}");
        assert_eq!(v["last"]["peer"], SNAT_IP, "{v}");
        assert_eq!(
            v["last"]["headers"]["x-forwarded-for"],
            c.ip.as_str(),
            "{v}"
        );
        let out = env
            .in_container(c, &format!("curl -s -m 5 {url}"))
            .output()
            .unwrap();
        let body = parse(&String::from_utf8_lossy(&out.stdout));
        assert_eq!(body["headers"]["x-forwarded-for"], c.ip.as_str(), "{body}");
    }
    // The client's socket still names the VIP as its peer.
    let vip = env.vip("checkout");
    let out = env
        .in_container(
            &one,
            &format!(
                "python3 -c \"import socket; s = socket.create_connection(('{vip}', 80), 5); print(s.getpeername()[0])\""
            ),
        )
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), vip);

    // A host process on the same node reaches the same service.
    let host = env.client(&["count", &format!("http://{}/", env.vip("checkout")), "20"]);
    assert_eq!(count(&host, "blue") + count(&host, "green"), 20, "{host}");
    assert_eq!(
        host["last"]["headers"]["x-forwarded-for"], BRIDGE_IP,
        "{host}"
    );

    // The access log names each caller's cgroup: the container's own, and
    // the host process's.
    let log = env.access_log();
    let cg_root = env.client_cg.parent().unwrap();
    for (c, ip) in [(&one, &one.ip), (&two, &two.ip)] {
        let workload = format!("/{}", c.cgroup.strip_prefix(cg_root).unwrap().display());
        let line = log
            .lines()
            .find(|l| l.contains(&format!("\"workload\":\"{workload}\"")))
            .unwrap_or_else(|| panic!("no request from {workload} in the access log"));
        assert!(line.contains(&format!("\"client\":\"{ip}:")), "{line}");
    }
    let host_cg = format!(
        "/{}",
        env.client_cg.strip_prefix(cg_root).unwrap().display()
    );
    assert!(
        log.contains(&format!("\"workload\":\"{host_cg}\"")),
        "{host_cg}"
    );

    // aws:SourceIp tells the containers apart.
    let ledger = "http://ledger.trellis.internal/";
    let allowed = parse(&env.container_client(&one, &["count", ledger, "3"]));
    assert_eq!(count(&allowed, "blue"), 3, "{allowed}");
    let denied = parse(&env.container_client(&two, &["count", ledger, "3"]));
    assert_eq!(denied["statuses"]["403"], 3, "{denied}");

    // A container outside the client cgroup is not redirected: the VIP
    // leads nowhere from it.
    let out = env
        .in_container(
            &outside,
            &format!("curl -s -m 2 -o /dev/null -w '%{{http_code}}' http://{vip}/"),
        )
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "000");
    // A direct connection to the proxy from a container is refused, and
    // counted.
    let refused_before = refused(&env);
    let direct = env.container_client(
        &one,
        &[
            "raw",
            BRIDGE_IP,
            "15001",
            "474554202f20485454502f312e310d0a486f73743a20780d0a0d0a",
        ],
    );
    assert!(!direct.contains("\"status\": 200"), "{direct}");
    let t = Instant::now();
    while refused(&env) == refused_before {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "not counted as refused"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // A container made after the node started works at once.
    let late = env.add_container(5, true);
    let v = parse(&env.container_client(&late, &["count", url, "10"]));
    assert_eq!(count(&v, "blue") + count(&v, "green"), 10, "{v}");
    assert_eq!(v["last"]["headers"]["x-forwarded-for"], "10.88.0.5", "{v}");

    // A container deleted under load leaves no entry behind in the maps.
    let settle = |env: &Env| {
        let t = Instant::now();
        loop {
            let n = env.map_entries("trellis_peer_orig");
            if n == 0 || t.elapsed() > Duration::from_secs(10) {
                return n;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    assert_eq!(settle(&env), 0, "no connection open, no entry");
    let mut load = env
        .in_container(
            &late,
            &format!("python3 {}/client.py load {url} 30", harness::HELPERS),
        )
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        env.map_entries("trellis_peer_orig") > 0,
        "the load's connections are tracked"
    );
    env.remove_container(&late);
    let _ = load.kill();
    let _ = load.wait();
    assert_eq!(
        settle(&env),
        0,
        "entries left after the container went away"
    );
}

/// The proxy's refused connections, all reasons.
fn refused(env: &Env) -> u64 {
    let (_, metrics) = env.admin_get("/metrics");
    metrics
        .lines()
        .filter(|l| l.starts_with("trellis_proxy_refused_connections_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[test]
fn a_workload_is_its_identity_without_signing_anything() {
    let Some(mut env) = Env::new("workload_identity") else {
        return;
    };
    env.start_backends(&["http:8081:blue", "http:8082:green", "tcp:5432:db"]);
    let orders = env.add_container(2, true);
    let other = env.add_container(3, true);
    let vault = format!(
        r#"---
apiVersion: trellis.dev/v1alpha1
kind: Identity
metadata: {{name: orders-app}}
spec:
  workloads:
    - {{network: east, cgroup: "/**/{}-cg"}}
---
apiVersion: trellis.dev/v1alpha1
kind: Identity
metadata: {{name: bob}}
spec: {{}}
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {{name: vault}}
spec:
  serviceNetworks: [shop]
  authType: SIGV4
  authPolicy:
    Version: "2012-10-17"
    Statement:
      - Sid: orders-reads
        Effect: Allow
        Principal: {{AWS: "trellis:identity/orders-app"}}
        Action: "vpc-lattice-svcs:Invoke"
        Resource: "*"
  listeners:
    - name: web
      protocol: HTTP
      defaultAction: {{forward: [{{targetGroup: blue}}]}}
---
apiVersion: trellis.dev/v1alpha1
kind: TargetGroup
metadata: {{name: db}}
spec: {{network: east, protocol: TCP, port: 5432, targets: [{{address: {TARGET_IP}}}]}}
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {{name: db}}
spec:
  serviceNetworks: [shop]
  authType: SIGV4
  authPolicy:
    Version: "2012-10-17"
    Statement:
      - Sid: orders-db
        Effect: Allow
        Principal: {{AWS: "trellis:identity/orders-app"}}
        Action: "vpc-lattice-svcs:Invoke"
        Resource: "*"
  listeners:
    - name: sql
      protocol: TCP
      port: 5432
      defaultAction: {{forward: [{{targetGroup: db}}]}}
"#,
        orders.ns
    );
    env.apply(&format!("{}{vault}", SERVICES.replace("TARGET", TARGET_IP)));
    let proxy = format!("{BRIDGE_IP}:15001");
    let dns = format!("{BRIDGE_IP}:53");
    env.start_node(&["--proxy-listen", &proxy, "--dns-listen", &dns]);
    let url = "http://vault.trellis.internal/";

    // The orders container, with an unmodified client, is orders-app: the
    // target learns who called.
    let v = parse(&env.container_client(&orders, &["count", url, "3"]));
    assert_eq!(count(&v, "blue"), 3, "{v}");
    assert_eq!(
        v["last"]["headers"]["x-trellis-identity"], "trellis:identity/orders-app",
        "{v}"
    );
    let out = env
        .in_container(
            &orders,
            &format!("curl -s -m 5 -o /dev/null -w '%{{http_code}}' {url}"),
        )
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
    // Another container is no one, even claiming to be orders-app; so is a
    // host process outside every selector.
    let v = parse(&env.container_client(
        &other,
        &[
            "count",
            url,
            "3",
            "x-trellis-identity=trellis:identity/orders-app",
        ],
    ));
    assert_eq!(v["statuses"]["403"], 3, "{v}");
    let host = env.client(&["count", &format!("http://{}/", env.vip("vault")), "2"]);
    assert_eq!(host["statuses"]["403"], 2, "{host}");
    // A TCP listener decides at connect, before a byte reaches the target.
    let db = |c: &harness::node::Container| {
        env.container_client(c, &["tcp", "db.trellis.internal", "5432", "select"])
    };
    assert!(
        db(&orders).trim().ends_with(":5432:select"),
        "{}",
        db(&orders)
    );
    assert_eq!(
        db(&other).trim(),
        "",
        "the other container's stream is closed unanswered"
    );

    // A request signed as another identity from the orders container: the
    // signature and the workload disagree, so it is refused.
    let bob: serde_json::Value =
        serde_json::from_str(&env.trellis("identity add-key bob -o json")).unwrap();
    let out = env
        .in_container(
            &orders,
            &format!(
                "curl -s -m 5 -i --aws-sigv4 aws:amz:us-east-1:vpc-lattice-svcs --user {}:{} {url}",
                bob["AccessKeyId"].as_str().unwrap(),
                bob["SecretAccessKey"].as_str().unwrap()
            ),
        )
        .output()
        .unwrap();
    let answer = String::from_utf8_lossy(&out.stdout);
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(answer.contains("IdentityMismatch"), "{answer}");

    // The container goes, another comes in the same cgroup path: the new
    // cgroup (another id) is learnt, and is the path's identity.
    env.remove_container(&orders);
    let again = env.add_container(2, true);
    let v = parse(&env.container_client(&again, &["count", url, "2"]));
    assert_eq!(count(&v, "blue"), 2, "{v}");

    // The access log says who each caller was, and which statement allowed.
    let log = env.access_log();
    let allowed = log
        .lines()
        .find(|l| l.contains("\"identity\":\"trellis:identity/orders-app\""))
        .unwrap_or_else(|| panic!("no request as orders-app in {log}"));
    assert!(allowed.contains("orders-reads"), "{allowed}");
    assert!(allowed.contains("\"authn\":\"workload\""), "{allowed}");
    let (_, metrics) = env.admin_get("/metrics");
    assert!(
        metrics.contains("trellis_proxy_auth_decisions_total{service=\"vault\",outcome=\"allow\",authn=\"workload\"} 6"),
        "{metrics}"
    );
    assert!(allowed.contains(&format!("{}-cg", orders.ns)), "{allowed}");
}
