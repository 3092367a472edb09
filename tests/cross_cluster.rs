//! Cross-cluster access by name, as a user does it: two clusters, east and
//! west, whose targets share one address (10.0.1.10 in each); only their
//! gateways can reach each other (192.168.77.0/30). A control plane in a
//! namespace of its own is reached by both nodes. Services are declared in
//! YAML with the CLI, nodes join with join tokens, clients resolve names
//! with the system resolver (`/etc/netns/NS/resolv.conf` pointing at the
//! node-local DNS) and call with curl.

mod harness;

use harness::{BIN, ControlPlane, HELPERS, Node, Topology, json};
use std::time::{Duration, Instant};

const YAML: &str = r#"
apiVersion: trellis.dev/v1alpha1
kind: Network
metadata: {name: east}
spec:
  gateways: [{address: "192.168.77.1:15008"}]
---
apiVersion: trellis.dev/v1alpha1
kind: Network
metadata: {name: west}
spec:
  gateways: [{address: "192.168.77.2:15008"}]
---
apiVersion: trellis.dev/v1alpha1
kind: ServiceNetwork
metadata: {name: global}
spec: {networks: [east, west]}
---
apiVersion: trellis.dev/v1alpha1
kind: TargetGroup
metadata: {name: checkout-east}
spec: {network: east, port: 8080, targets: [{address: 10.0.1.10}]}
---
apiVersion: trellis.dev/v1alpha1
kind: TargetGroup
metadata: {name: orders-west}
spec: {network: west, port: 8080, targets: [{address: 10.0.1.10}]}
---
apiVersion: trellis.dev/v1alpha1
kind: TargetGroup
metadata: {name: inventory-east}
spec: {network: east, port: 8081, targets: [{address: 10.0.1.10}]}
---
apiVersion: trellis.dev/v1alpha1
kind: TargetGroup
metadata: {name: inventory-west}
spec: {network: west, port: 8081, targets: [{address: 10.0.1.10}]}
---
apiVersion: trellis.dev/v1alpha1
kind: TargetGroup
metadata: {name: echo-west}
spec: {network: west, protocol: TCP, port: 9000, targets: [{address: 10.0.1.10}]}
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: echo}
spec:
  serviceNetworks: [global]
  listeners:
    - {name: tcp, protocol: TCP, port: 5432, defaultAction: {forward: [{targetGroup: echo-west}]}}
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: checkout}
spec:
  serviceNetworks: [global]
  listeners:
    - name: web
      protocol: HTTP
      defaultAction: {forward: [{targetGroup: checkout-east}]}
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: orders}
spec:
  serviceNetworks: [global]
  listeners:
    - name: web
      protocol: HTTP
      defaultAction: {forward: [{targetGroup: orders-west}]}
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: inventory}
spec:
  serviceNetworks: [global]
  listeners:
    - name: web
      protocol: HTTP
      defaultAction:
        forward:
          - {targetGroup: inventory-east, weight: 90}
          - {targetGroup: inventory-west, weight: 10}
"#;

struct Scenario {
    topo: Topology,
    cp: ControlPlane,
    east: Node,
    west: Node,
}

impl Scenario {
    fn trellis(&self, args: &str) -> String {
        self.topo.trellis(&self.cp, args)
    }

    fn start_node(&mut self, name: &str, join_token: Option<&str>) {
        let (cp_addr, gw) = if name == "east" {
            ("10.250.1.1", "192.168.77.1")
        } else {
            ("10.250.2.1", "192.168.77.2")
        };
        let token = join_token
            .map(|t| format!("--join-token {t}"))
            .unwrap_or_default();
        // East reaches the control plane through a relay in its namespace
        // that keeps every byte: what an observer of that link would see.
        let cp_url = if name == "east" {
            if !self.topo.run.join("east-wire.bin").exists() {
                let cmd = format!(
                    "python3 {HELPERS}/relay.py 127.0.0.1:17070 {cp_addr}:7070 {}/east-wire.bin",
                    self.topo.run.display()
                );
                let ns = self.east.ns.clone();
                self.topo.spawn("relay-east", &ns, None, &cmd, "relaying");
            }
            "https://127.0.0.1:17070".to_string()
        } else {
            format!("https://{cp_addr}:7070")
        };
        let node = if name == "east" {
            &mut self.east
        } else {
            &mut self.west
        };
        self.topo.start_node(
            node,
            &self.cp,
            &cp_url,
            "10.0.1.1",
            &format!("--gateway-listen {gw}:15008 {token}"),
        );
    }
}

fn setup(test: &str) -> Option<Scenario> {
    let mut topo = Topology::new(test)?;
    let cp_ns = topo.netns("cp");
    let (e, et, w, wt) = (
        topo.netns("east"),
        topo.netns("east-targets"),
        topo.netns("west"),
        topo.netns("west-targets"),
    );
    topo.link(&cp_ns, "10.250.1.1/30", &e, "10.250.1.2/30");
    topo.link(&cp_ns, "10.250.2.1/30", &w, "10.250.2.2/30");
    // Only the gateways reach each other.
    topo.link(&e, "192.168.77.1/30", &w, "192.168.77.2/30");
    // The same target address in both clusters.
    topo.link(&e, "10.0.1.1/24", &et, "10.0.1.10/24");
    topo.link(&w, "10.0.1.1/24", &wt, "10.0.1.10/24");
    // Short-lived certificates: the nodes renew during the test.
    let cp = topo.control_plane(&cp_ns, "--node-cert-ttl 15s");
    topo.backends(
        &et,
        "10.0.1.10",
        "http:8080:checkout-east http:8081:inventory-east",
    );
    topo.backends(
        &wt,
        "10.0.1.10",
        "http:8080:orders-west http:8081:inventory-west tcp:9000:echo",
    );
    let east = topo.node("east", &e);
    let west = topo.node("west", &w);
    Some(Scenario {
        topo,
        cp,
        east,
        west,
    })
}

/// Workload identities (issue 22): `east-app` is whatever runs in east's
/// client cgroup (CLIENTS), `west-app` a workload of west only; `vault`'s
/// target is in west and its policy allows east-app alone.
const WORKLOADS: &str = r#"---
apiVersion: trellis.dev/v1alpha1
kind: Identity
metadata: {name: east-app}
spec: {workloads: [{network: east, cgroup: "/**/CLIENTS"}]}
---
apiVersion: trellis.dev/v1alpha1
kind: Identity
metadata: {name: west-app}
spec: {workloads: [{network: west, cgroup: "/west-app"}]}
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: vault}
spec:
  serviceNetworks: [global]
  authType: SIGV4
  authPolicy:
    Version: "2012-10-17"
    Statement:
      - Effect: Allow
        Principal: {AWS: "trellis:identity/east-app"}
        Action: "vpc-lattice-svcs:Invoke"
        Resource: "*"
  listeners:
    - name: web
      protocol: HTTP
      defaultAction: {forward: [{targetGroup: orders-west}]}
"#;

#[test]
fn services_are_reached_across_clusters_by_name() {
    let Some(mut s) = setup("services_are_reached_across_clusters_by_name") else {
        return;
    };
    let yaml = s.topo.run.join("two-clusters.yaml");
    let clients = s
        .east
        .clients
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_string();
    std::fs::write(
        &yaml,
        format!("{YAML}{}", WORKLOADS.replace("CLIENTS", &clients)),
    )
    .unwrap();
    s.trellis(&format!("apply -f {}", yaml.display()));
    let east_token = s.trellis("network join-token east --ttl 5m");
    let west_token = s.trellis("network join-token west --ttl 5m");
    assert!(east_token.starts_with("trellis-join-"), "{east_token}");
    s.start_node("east", Some(&east_token));
    s.start_node("west", Some(&west_token));

    // East calls orders (targets in west) by name and gets west's answer,
    // from west's node address: the target never sees east.
    let r = s.topo.curl(&s.east, "http://orders.trellis.internal/where");
    assert_eq!(r.code, 200, "{}", r.body);
    let answer = r.json();
    assert_eq!(answer["name"], "orders-west");
    assert_eq!(answer["peer"], "10.0.1.1");
    assert_eq!(answer["headers"]["x-trellis-source-network"], "east");
    assert_eq!(answer["headers"]["x-trellis-service"], "orders");
    assert_eq!(answer["headers"]["host"], "orders.trellis.internal");
    assert!(answer["headers"].get("x-trellis-tunnel-group").is_none());

    // An unmodified curl in east's client cgroup is east-app, through
    // west's gateway too; from west's own clients the same call is no one.
    let r = s.topo.curl(&s.east, "http://vault.trellis.internal/");
    assert_eq!(r.code, 200, "{}", r.body);
    assert_eq!(
        r.json()["headers"]["x-trellis-identity"],
        "trellis:identity/east-app"
    );
    assert_eq!(r.json()["headers"]["x-trellis-authn"], "workload");
    let r = s.topo.curl(&s.west, "http://vault.trellis.internal/");
    assert_eq!(r.code, 403, "{}", r.body);

    // West calls checkout (in east) and gets east's answer, though both
    // targets are 10.0.1.10.
    let r = s.topo.curl(&s.west, "http://checkout.trellis.internal/");
    assert_eq!(r.code, 200, "{}", r.body);
    assert_eq!(r.json()["name"], "checkout-east");

    // One `trellis observe` stream holds both networks' nodes' flows:
    // east's call to orders and west's refused call to vault.
    let t = Instant::now();
    loop {
        let flows: Vec<serde_json::Value> = s
            .trellis("observe --last 1000 -o json")
            .lines()
            .map(json)
            .collect();
        let seen = |network: &str, service: &str, verdict: &str| {
            flows.iter().any(|f| {
                f["network"] == network && f["service"] == service && f["verdict"] == verdict
            })
        };
        if seen("east", "orders", "allowed") && seen("west", "vault", "denied") {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "not both networks' flows in one stream: {flows:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // 90/10 across the clusters, exactly (the schedule is exact, the
    // binomial bound holds a fortiori).
    let counts = s
        .topo
        .count(&s.east, "http://inventory.trellis.internal/", 2000);
    assert_eq!(counts["errors"], 0, "{counts}");
    let east_n = counts["names"]["inventory-east"].as_u64().unwrap_or(0);
    let west_n = counts["names"]["inventory-west"].as_u64().unwrap_or(0);
    assert_eq!(east_n + west_n, 2000, "{counts}");
    let share = west_n as f64 / 2000.0;
    assert!(
        (share - 0.10).abs() <= 0.015,
        "west share {share}: {counts}"
    );

    // A TCP listener whose targets are in west: an HTTP/2 CONNECT stream
    // through west's gateway, which connects from its own address.
    let echoed = s.topo.client(
        &s.east,
        &format!("python3 {HELPERS}/client.py tcp echo.trellis.internal 5432 hello"),
    );
    assert_eq!(echoed, "10.0.1.1:9000:hello");

    // The link between east's node and the control plane carried its join,
    // its watch and renewals (15 s certificates), all of it TLS: no token,
    // certificate, key or snapshot text in the clear.
    let wire = std::fs::read(s.topo.run.join("east-wire.bin")).unwrap();
    assert!(wire.len() > 4000, "the relay saw {} bytes", wire.len());
    let api_token = std::fs::read_to_string(s.cp.data.join("api-token")).unwrap();
    let secret = east_token.split('.').next().unwrap().to_string();
    harness::assert_not_in_clear(
        &wire,
        [
            api_token.trim(),
            secret.as_str(),
            "BEGIN",
            "PRIVATE KEY",
            "joinToken",
            "dnsZone",
            "checkout.trellis.internal",
            "/v1/networks",
        ],
    );

    // A peer that is not a Trellis node of the network it claims is refused.
    refuses_strangers(&mut s);

    // West's gateway stops: east's calls to west fail fast with a reason;
    // east-local services keep working.
    s.topo.kill("node-west");
    for _ in 0..2 {
        let r = s.topo.curl(&s.east, "http://orders.trellis.internal/");
        assert_eq!(
            (r.code, r.error.as_str()),
            (503, "gateway-unreachable"),
            "{}",
            r.body
        );
        assert!(r.secs < 3.0, "took {:.1}s to fail", r.secs);
    }
    let r = s.topo.curl(&s.east, "http://checkout.trellis.internal/");
    assert_eq!(r.code, 200, "{}", r.body);

    // West restarts without a token (its certificate is in its data dir):
    // east reaches it again.
    s.start_node("west", None);
    let t = Instant::now();
    loop {
        let r = s.topo.curl(&s.east, "http://orders.trellis.internal/");
        if r.code == 200 {
            assert_eq!(r.json()["name"], "orders-west");
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "{}: {}",
            r.code,
            r.body
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Certificates live 15 s here: east has renewed on its own by now, or
    // does within the next seconds.
    s.topo.wait_for(&s.east, "/metrics", |m| {
        m.lines().any(|l| {
            l.starts_with("trellis_node_certificate_renewals_total ") && !l.ends_with(" 0")
        })
    });
    assert_eq!(
        s.topo
            .curl(&s.west, "http://checkout.trellis.internal/")
            .code,
        200
    );
    let log = std::fs::read_to_string(s.topo.run.join("west-access.log")).unwrap_or_default();
    assert!(
        log.lines()
            .any(|l| l.contains("\"kind\":\"tunnel\"") && l.contains("\"service\":\"orders\"")),
        "west's access log shows the tunnelled requests"
    );
}

/// curl with a client certificate straight at west's gateway, from east's
/// node: a certificate of another CA fails the handshake; a real east
/// certificate claiming to be west, or asking for what east may not reach,
/// gets 403; the same certificate asking properly gets through.
fn refuses_strangers(s: &mut Scenario) {
    // Another control plane, another CA, a certificate for "east" from it.
    let other = s.topo.run.join("other-cp");
    s.topo.spawn(
        "other-cp",
        &s.cp.ns.clone(),
        None,
        &format!(
            "{BIN} control-plane --data-dir {} --listen 127.0.0.1:7071",
            other.display()
        ),
        "trellis control plane listening on ",
    );
    let dir = s.topo.run.join("certs");
    std::fs::create_dir_all(&dir).unwrap();
    let issue = |server: &str, data: &std::path::Path, token: &str, name: &str| {
        let (key, csr) = harness::key_and_csr();
        let req = dir.join(format!("{name}.json"));
        std::fs::write(
            &req,
            serde_json::json!({"csr": csr, "joinToken": token}).to_string(),
        )
        .unwrap();
        let out = s.topo.exec(
            &s.cp.ns,
            None,
            &format!(
                "curl -s -m 5 --cacert {}/ca.pem -X POST --data-binary @{} {server}/v1/certificates",
                data.display(),
                req.display()
            ),
        );
        let issued = json(&String::from_utf8_lossy(&out.stdout));
        harness::keep_certificate(&dir, name, &issued, &key)
    };
    let cp_data = s.cp.data.clone();
    let ca = dir.join("ca.pem");
    std::fs::copy(s.cp.data.join("ca.pem"), &ca).unwrap();
    let gateway = |cert: &(String, String), headers: &str| -> (u16, String) {
        let out = s.topo.exec(
            &s.east.ns,
            None,
            &format!(
                "curl -s -m 5 --http2 --cert {} --key {} --cacert {} \
                 --resolve west.network.trellis:15008:192.168.77.2 -w '\\n%{{http_code}}' {headers} \
                 https://west.network.trellis:15008/",
                cert.0,
                cert.1,
                ca.display()
            ),
        );
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    };

    let net = dir.join("east-only.yaml");
    std::fs::write(
        &net,
        "apiVersion: trellis.dev/v1alpha1\nkind: Network\nmetadata: {name: east}\nspec: {}\n",
    )
    .unwrap();
    let apply = s.topo.exec(
        &s.cp.ns,
        None,
        &format!(
            "{BIN} apply -f {} --server https://127.0.0.1:7071 --token-file {1}/api-token --ca-file {1}/ca.pem",
            net.display(),
            other.display()
        ),
    );
    let foreign_token = s.topo.exec(
        &s.cp.ns,
        None,
        &format!(
            "{BIN} network join-token east --server https://127.0.0.1:7071 --token-file {0}/api-token --ca-file {0}/ca.pem",
            other.display()
        ),
    );
    let foreign_token = String::from_utf8_lossy(&foreign_token.stdout)
        .trim()
        .to_string();
    assert!(
        foreign_token.starts_with("trellis-join-"),
        "{foreign_token} (apply: {})",
        String::from_utf8_lossy(&apply.stderr)
    );
    let foreign = issue("https://127.0.0.1:7071", &other, &foreign_token, "foreign");
    let proper = "-H 'x-trellis-source-network: east' -H 'x-trellis-service: orders' \
                  -H 'x-trellis-tunnel-group: orders-west'";
    let (code, body) = gateway(&foreign, proper);
    assert_eq!(code, 0, "another CA's certificate got an answer: {body}");

    let token = s.trellis("network join-token east --ttl 1m");
    let east = issue("https://127.0.0.1:7070", &cp_data, &token, "east");
    let (code, body) = gateway(&east, proper);
    assert_eq!(code, 200, "{body}");
    assert_eq!(json(&body)["name"], "orders-west");
    let (code, body) = gateway(
        &east,
        "-H 'x-trellis-source-network: west' -H 'x-trellis-service: orders' \
         -H 'x-trellis-tunnel-group: orders-west'",
    );
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("tunnel-refused"), "{body}");
    // East's node may name its own workloads, not west's.
    let claim = |who: &str| {
        format!(
            "{proper} -H 'x-trellis-identity: trellis:identity/{who}' -H 'x-trellis-authn: workload'"
        )
    };
    let (code, body) = gateway(&east, &claim("east-app"));
    assert_eq!(code, 200, "{body}");
    let (code, body) = gateway(&east, &claim("west-app"));
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("no workload of that network"), "{body}");
    // inventory-east is not west's to serve.
    let (code, body) = gateway(
        &east,
        "-H 'x-trellis-source-network: east' -H 'x-trellis-service: inventory' \
         -H 'x-trellis-tunnel-group: inventory-east'",
    );
    assert_eq!(code, 403, "{body}");
    s.topo.kill("other-cp");
}
