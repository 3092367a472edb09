//! Cross-cluster access by name, as a user does it: two clusters, east and
//! west, whose targets share one address (10.0.1.10 in each); only their
//! gateways can reach each other (192.168.77.0/30). A control plane in a
//! namespace of its own is reached by both nodes. Services are declared in
//! YAML with the CLI, nodes join with join tokens, clients resolve names
//! with the system resolver (`/etc/netns/NS/resolv.conf` pointing at the
//! node-local DNS) and call with curl.

mod topology;

use std::time::{Duration, Instant};
use topology::{BIN, Topology};

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

const HERE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/node");

struct Cluster {
    node_ns: String,
    clients: std::path::PathBuf,
    proxy_cg: std::path::PathBuf,
    pins: std::path::PathBuf,
    admin: String,
}

struct Scenario {
    topo: Topology,
    cp_ns: String,
    cp_data: std::path::PathBuf,
    east: Cluster,
    west: Cluster,
}

impl Scenario {
    /// The CLI against the control plane, from its namespace.
    fn trellis(&self, args: &str) -> String {
        let out = self.topo.exec(
            &self.cp_ns,
            None,
            &format!(
                "{BIN} {args} --server http://127.0.0.1:7070 --token-file {}/api-token",
                self.cp_data.display()
            ),
        );
        assert!(
            out.status.success(),
            "trellis {args}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn cluster(&self, name: &str) -> &Cluster {
        if name == "east" {
            &self.east
        } else {
            &self.west
        }
    }

    fn start_node(&mut self, name: &str, join_token: Option<&str>) {
        let (cp_addr, gw) = if name == "east" {
            ("10.250.1.1", "192.168.77.1")
        } else {
            ("10.250.2.1", "192.168.77.2")
        };
        let c = self.cluster(name);
        let token = join_token
            .map(|t| format!("--join-token {t}"))
            .unwrap_or_default();
        let cmd = format!(
            "{BIN} node --network {name} --control-plane http://{cp_addr}:7070 \
             --token-file {}/api-token --data-dir {}/{name} --cgroup {} --proxy-cgroup {} \
             --bpf-pin-dir {} --datapath ebpf --snat-address 10.0.1.1 \
             --admin-listen 127.0.0.1:0 --dns-listen 127.0.0.53:53 \
             --gateway-listen {gw}:15008 --access-log {}/{name}-access.log --drain-seconds 1 {token}",
            self.cp_data.display(),
            self.topo.run.display(),
            c.clients.display(),
            c.proxy_cg.display(),
            c.pins.display(),
            self.topo.run.display(),
        );
        let (ns, proxy_cg) = (c.node_ns.clone(), c.proxy_cg.clone());
        let admin = self.topo.spawn(
            &format!("node-{name}"),
            &ns,
            Some(&proxy_cg),
            &cmd,
            "trellis node admin listening on ",
        );
        if name == "east" {
            self.east.admin = admin;
        } else {
            self.west.admin = admin;
        }
        self.wait_for(name, "/ready", |body| body.starts_with("ready"));
    }

    /// GET on a node's admin endpoint.
    fn admin(&self, name: &str, path: &str) -> String {
        let c = self.cluster(name);
        let out = self.topo.exec(
            &c.node_ns,
            None,
            &format!("curl -s -m 5 http://{}{path}", c.admin),
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    fn wait_for(&self, name: &str, path: &str, ok: impl Fn(&str) -> bool) {
        let t = Instant::now();
        loop {
            let body = self.admin(name, path);
            if ok(&body) {
                return;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "{name}{path} never got there: {body}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// curl from a client of cluster `name`, by service name through the
    /// system resolver: (status, x-trellis-error, body, seconds).
    fn curl(&self, name: &str, url: &str) -> (u16, String, String, f64) {
        let c = self.cluster(name);
        let headers = self
            .topo
            .run
            .join(format!("h-{name}-{}", std::process::id()));
        let t = Instant::now();
        let out = self.topo.exec(
            &c.node_ns,
            Some(&c.clients),
            &format!(
                "curl -s -m 10 -D {} -w '\\n%{{http_code}}' {url}",
                headers.display()
            ),
        );
        let secs = t.elapsed().as_secs_f64();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        let head = std::fs::read_to_string(&headers).unwrap_or_default();
        let error = head
            .lines()
            .find_map(|l| l.strip_prefix("x-trellis-error: "))
            .unwrap_or_default()
            .trim()
            .to_string();
        (
            code.trim().parse().unwrap_or(0),
            error,
            body.to_string(),
            secs,
        )
    }

    /// `count URL N` with the Python client in cluster `name`'s client cgroup.
    fn count(&self, name: &str, url: &str, n: usize) -> serde_json::Value {
        let c = self.cluster(name);
        let out = self.topo.exec(
            &c.node_ns,
            Some(&c.clients),
            &format!("python3 {HERE}/client.py count {url} {n}"),
        );
        let text = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("client said {text:?}: {e}"))
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
    for ns in [&e, &w] {
        topo.resolver(ns, "127.0.0.53");
    }
    let cp_data = topo.run.join("cp");
    topo.spawn(
        "cp",
        &cp_ns,
        None,
        // Short-lived certificates: the nodes renew during the test.
        &format!(
            "{BIN} control-plane --data-dir {} --listen 0.0.0.0:7070 --node-cert-ttl 15s",
            cp_data.display()
        ),
        "trellis control plane listening on ",
    );
    for (ns, names) in [
        (&et, "http:8080:checkout-east http:8081:inventory-east"),
        (
            &wt,
            "http:8080:orders-west http:8081:inventory-west tcp:9000:echo",
        ),
    ] {
        let run = topo.run.display().to_string();
        topo.spawn(
            &format!("backends-{ns}"),
            ns,
            None,
            &format!("python3 {HERE}/backend.py {run} 10.0.1.10 {names}"),
            "ready",
        );
    }
    let east = Cluster {
        node_ns: e,
        clients: topo.cgroup("east-clients"),
        proxy_cg: topo.cgroup("east-proxy"),
        pins: topo.pin_dir("east"),
        admin: String::new(),
    };
    let west = Cluster {
        node_ns: w,
        clients: topo.cgroup("west-clients"),
        proxy_cg: topo.cgroup("west-proxy"),
        pins: topo.pin_dir("west"),
        admin: String::new(),
    };
    Some(Scenario {
        topo,
        cp_ns,
        cp_data,
        east,
        west,
    })
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[test]
fn services_are_reached_across_clusters_by_name() {
    let Some(mut s) = setup("services_are_reached_across_clusters_by_name") else {
        return;
    };
    let yaml = s.topo.run.join("two-clusters.yaml");
    std::fs::write(&yaml, YAML).unwrap();
    s.trellis(&format!("apply -f {}", yaml.display()));
    let east_token = s.trellis("network join-token east --ttl 5m");
    let west_token = s.trellis("network join-token west --ttl 5m");
    assert!(east_token.starts_with("trellis-join-"), "{east_token}");
    s.start_node("east", Some(&east_token));
    s.start_node("west", Some(&west_token));

    // East calls orders (targets in west) by name and gets west's answer,
    // from west's node address: the target never sees east.
    let (code, _, body, _) = s.curl("east", "http://orders.trellis.internal/where");
    assert_eq!(code, 200, "{body}");
    let answer = json(&body);
    assert_eq!(answer["name"], "orders-west");
    assert_eq!(answer["peer"], "10.0.1.1");
    assert_eq!(answer["headers"]["x-trellis-source-network"], "east");
    assert_eq!(answer["headers"]["x-trellis-service"], "orders");
    assert_eq!(answer["headers"]["host"], "orders.trellis.internal");
    assert!(answer["headers"].get("x-trellis-tunnel-group").is_none());

    // West calls checkout (in east) and gets east's answer, though both
    // targets are 10.0.1.10.
    let (code, _, body, _) = s.curl("west", "http://checkout.trellis.internal/");
    assert_eq!(code, 200, "{body}");
    assert_eq!(json(&body)["name"], "checkout-east");

    // 90/10 across the clusters, exactly (the schedule is exact, the
    // binomial bound holds a fortiori).
    let counts = s.count("east", "http://inventory.trellis.internal/", 2000);
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
    let out = s.topo.exec(
        &s.east.node_ns,
        Some(&s.east.clients),
        &format!("python3 {HERE}/client.py tcp echo.trellis.internal 5432 hello"),
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "10.0.1.1:9000:hello",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A peer that is not a Trellis node of the network it claims is refused.
    refuses_strangers(&mut s);

    // West's gateway stops: east's calls to west fail fast with a reason;
    // east-local services keep working.
    s.topo.kill("node-west");
    let (code, error, body, secs) = s.curl("east", "http://orders.trellis.internal/");
    assert_eq!(code, 503, "{body}");
    assert_eq!(error, "gateway-unreachable", "{body}");
    assert!(secs < 3.0, "took {secs:.1}s to fail");
    let (code, error, _, secs) = s.curl("east", "http://orders.trellis.internal/");
    assert_eq!((code, error.as_str()), (503, "gateway-unreachable"));
    assert!(secs < 3.0, "took {secs:.1}s to fail");
    let (code, _, body, _) = s.curl("east", "http://checkout.trellis.internal/");
    assert_eq!(code, 200, "{body}");

    // West restarts without a token (its certificate is in its data dir):
    // east reaches it again.
    s.start_node("west", None);
    let t = Instant::now();
    loop {
        let (code, _, body, _) = s.curl("east", "http://orders.trellis.internal/");
        if code == 200 {
            assert_eq!(json(&body)["name"], "orders-west");
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(15), "{code}: {body}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // Certificates live 15 s here: east has renewed on its own by now, or
    // does within the next seconds.
    s.wait_for("east", "/metrics", |m| {
        m.lines().any(|l| {
            l.starts_with("trellis_node_certificate_renewals_total ") && !l.ends_with(" 0")
        })
    });
    let (code, _, _, _) = s.curl("west", "http://checkout.trellis.internal/");
    assert_eq!(code, 200);
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
        &s.cp_ns.clone(),
        None,
        &format!(
            "{BIN} control-plane --data-dir {} --listen 127.0.0.1:7071",
            other.display()
        ),
        "trellis control plane listening on ",
    );
    let dir = s.topo.run.join("certs");
    std::fs::create_dir_all(&dir).unwrap();
    let issue = |server: &str, token: &str, name: &str| -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let csr = rcgen::CertificateParams::default()
            .serialize_request(&key)
            .unwrap()
            .pem()
            .unwrap();
        let req = dir.join(format!("{name}.json"));
        std::fs::write(
            &req,
            serde_json::json!({"csr": csr, "joinToken": token}).to_string(),
        )
        .unwrap();
        let out = s.topo.exec(
            &s.cp_ns,
            None,
            &format!(
                "curl -s -m 5 -X POST --data-binary @{} {server}/v1/certificates",
                req.display()
            ),
        );
        let issued = json(&String::from_utf8_lossy(&out.stdout));
        let (cert, keyf) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(
            &cert,
            issued["certificate"].as_str().expect("a certificate"),
        )
        .unwrap();
        std::fs::write(&keyf, key.serialize_pem()).unwrap();
        (cert.display().to_string(), keyf.display().to_string())
    };
    let ca = dir.join("ca.pem");
    std::fs::copy(s.cp_data.join("ca.pem"), &ca).unwrap();
    let gateway = |cert: &(String, String), headers: &str| -> (u16, String) {
        let out = s.topo.exec(
            &s.east.node_ns,
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
        &s.cp_ns,
        None,
        &format!(
            "{BIN} apply -f {} --server http://127.0.0.1:7071",
            net.display()
        ),
    );
    let foreign_token = s.topo.exec(
        &s.cp_ns,
        None,
        &format!("{BIN} network join-token east --server http://127.0.0.1:7071"),
    );
    let foreign_token = String::from_utf8_lossy(&foreign_token.stdout)
        .trim()
        .to_string();
    assert!(
        foreign_token.starts_with("trellis-join-"),
        "{foreign_token} (apply: {})",
        String::from_utf8_lossy(&apply.stderr)
    );
    let foreign = issue("http://127.0.0.1:7071", &foreign_token, "foreign");
    let proper = "-H 'x-trellis-source-network: east' -H 'x-trellis-service: orders' \
                  -H 'x-trellis-tunnel-group: orders-west'";
    let (code, body) = gateway(&foreign, proper);
    assert_eq!(code, 0, "another CA's certificate got an answer: {body}");

    let token = s.trellis("network join-token east --ttl 1m");
    let east = issue("http://127.0.0.1:7070", &token, "east");
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
    // inventory-east is not west's to serve.
    let (code, body) = gateway(
        &east,
        "-H 'x-trellis-source-network: east' -H 'x-trellis-service: inventory' \
         -H 'x-trellis-tunnel-group: inventory-east'",
    );
    assert_eq!(code, 403, "{body}");
    s.topo.kill("other-cp");
}
