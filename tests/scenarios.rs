//! Two of the things users come for, done as a user does them (the third,
//! cross-cluster access by name, is tests/cross_cluster.rs): services
//! declared in YAML and applied with the CLI, names resolved by the system
//! resolver (`/etc/netns/NS/resolv.conf` pointing at the node-local DNS),
//! requests made with curl from a client whose connections the eBPF
//! datapath redirects. One cluster: a control plane in its own namespace, a
//! node namespace, and a targets namespace behind it.

mod harness;

use harness::{ControlPlane, Node, Topology};
use std::time::{Duration, Instant};

const SAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/samples");

struct Cluster {
    topo: Topology,
    cp: ControlPlane,
    node: Node,
}

/// The topology, with backends `(address, specs)` in the targets namespace
/// and the node agent not yet started.
fn setup(test: &str, backends: &[(&str, &str)]) -> Option<Cluster> {
    let mut topo = Topology::new(test)?;
    let (cp_ns, node_ns, targets) = (topo.netns("cp"), topo.netns("node"), topo.netns("targets"));
    topo.link(&cp_ns, "10.250.1.1/30", &node_ns, "10.250.1.2/30");
    topo.link(&node_ns, "10.0.1.1/24", &targets, "10.0.1.10/24");
    for (addr, specs) in backends {
        if *addr != "10.0.1.10" {
            topo.address(&targets, addr);
        }
        topo.backends(&targets, addr, specs);
    }
    let cp = topo.control_plane(&cp_ns, "");
    let node = topo.node("east", &node_ns);
    Some(Cluster { topo, cp, node })
}

impl Cluster {
    fn start_node(&mut self) {
        self.topo.start_node(
            &mut self.node,
            &self.cp,
            "https://10.250.1.1:7070",
            "10.0.1.1",
            "",
        );
    }

    fn apply(&self, file: &str) -> u64 {
        self.topo.apply(&self.cp, file)
    }

    /// What the system resolver of a client says for `name` (A records).
    fn resolve(&self, name: &str) -> String {
        self.topo
            .client(&self.node, &format!("dig +short +time=2 +tries=1 {name}"))
    }

    fn vip(&self, service: &str) -> String {
        let svc = harness::json(
            &self
                .topo
                .trellis(&self.cp, &format!("get service {service} -o json")),
        );
        svc["status"]["vip"].as_str().expect("a VIP").to_string()
    }
}

/// Blue/green as in samples/blue-green.yaml, applied unchanged: 90/10
/// between two target groups, then the weights edited in the file and
/// re-applied, and every later request goes to green.
#[test]
fn blue_green_traffic_shifts_with_trellis_apply() {
    let Some(mut c) = setup(
        "blue_green_traffic_shifts_with_trellis_apply",
        &[
            ("10.0.1.10", "http:8080:blue-1"),
            ("10.0.1.11", "http:8080:blue-2"),
            ("10.0.1.20", "http:8080:green"),
        ],
    ) else {
        return;
    };
    let sample = std::fs::read_to_string(format!("{SAMPLES}/blue-green.yaml")).unwrap();
    let file = c.topo.run.join("blue-green.yaml");
    std::fs::write(&file, &sample).unwrap();
    let file = file.display().to_string();
    c.apply(&file);
    c.start_node();

    // The name resolves, through the system resolver, to the service's VIP.
    let vip = c.vip("checkout");
    assert!(vip.starts_with("169.254.171."), "{vip}");
    assert_eq!(c.resolve("checkout.trellis.internal"), vip);

    let r = c.topo.curl(&c.node, "http://checkout.trellis.internal/");
    assert_eq!(r.code, 200, "{}", r.body);
    // SNAT: the target sees the node, not the client.
    assert_eq!(r.json()["peer"], "10.0.1.1");

    // 90/10: the schedule is exact, so 2,000 requests land within the
    // binomial bound (±1.5 points) with room to spare; blue's two targets
    // share blue's part.
    let counts = c
        .topo
        .count(&c.node, "http://checkout.trellis.internal/", 2000);
    assert_eq!(counts["errors"], 0, "{counts}");
    let n = |name: &str| counts["names"][name].as_u64().unwrap_or(0);
    assert_eq!(n("blue-1") + n("blue-2") + n("green"), 2000, "{counts}");
    let green = n("green") as f64 / 2000.0;
    assert!((green - 0.10).abs() <= 0.015, "green {green}: {counts}");
    assert!(n("blue-1") > 0 && n("blue-2") > 0, "{counts}");

    // The user edits the weights to 0/100 and applies the file again.
    let shifted = sample
        .replace("weight: 90", "weight: 0")
        .replace("weight: 10", "weight: 100");
    assert_ne!(shifted, sample, "the sample's weights are 90 and 10");
    std::fs::write(&file, &shifted).unwrap();
    let diff = c.topo.trellis(&c.cp, &format!("diff -f {file}"));
    assert!(diff.contains("1 to change"), "{diff}");
    let t = Instant::now();
    let revision = c.apply(&file);
    c.topo.wait_revision(&c.node, revision);
    let took = t.elapsed();
    let counts = c
        .topo
        .count(&c.node, "http://checkout.trellis.internal/", 300);
    assert_eq!(counts["names"]["green"], 300, "{counts}");
    assert!(took < Duration::from_secs(2), "the shift took {took:?}");

    // And back to blue: a weight of 0 gets nothing.
    std::fs::write(
        &file,
        sample
            .replace("weight: 10", "weight: 0")
            .replace("weight: 90", "weight: 100"),
    )
    .unwrap();
    let revision = c.apply(&file);
    c.topo.wait_revision(&c.node, revision);
    let counts = c
        .topo
        .count(&c.node, "http://checkout.trellis.internal/", 300);
    let n = |name: &str| counts["names"][name].as_u64().unwrap_or(0);
    assert_eq!(n("blue-1") + n("blue-2"), 300, "{counts}");
}

/// Declaring services: two services in YAML, one in a service network
/// this network belongs to and one that is not; names resolve only where
/// they are visible, rules route by path, header and method, a custom
/// domain name works, and a service added or deleted later appears and
/// disappears by name.
#[test]
fn declared_services_are_reached_by_name_where_visible() {
    let Some(mut c) = setup(
        "declared_services_are_reached_by_name_where_visible",
        &[
            ("10.0.1.10", "http:8080:catalog-v1 http:8081:reviews"),
            ("10.0.1.20", "http:8080:catalog-v2 http:8082:ledger"),
        ],
    ) else {
        return;
    };
    let file = c.topo.run.join("services.yaml");
    std::fs::write(&file, SERVICES).unwrap();
    c.apply(&file.display().to_string());
    c.start_node();

    // `trellis get services` lists both, with their VIPs and names.
    let table = c.topo.trellis(&c.cp, "get services");
    for name in ["catalog.trellis.internal", "ledger.trellis.internal"] {
        assert!(table.contains(name), "{table}");
    }
    assert_eq!(c.resolve("catalog.trellis.internal"), c.vip("catalog"));
    assert_eq!(c.resolve("catalog.example.com"), c.vip("catalog"));
    // ledger is in a service network east does not belong to: no name, and
    // its VIP leads nowhere from here.
    assert_eq!(c.resolve("ledger.trellis.internal"), "");
    let r = c.topo.curl(&c.node, "http://ledger.trellis.internal/");
    assert_eq!(r.code, 0, "ledger answered: {}", r.body);
    let r = c
        .topo
        .curl(&c.node, &format!("-m 3 http://{}/", c.vip("ledger")));
    assert_ne!(r.code, 200, "ledger answered by VIP: {}", r.body);

    let route = |args: &str| -> String {
        let r = c.topo.curl(&c.node, args);
        match r.code {
            200 => r.json()["name"].as_str().unwrap_or_default().to_string(),
            code => code.to_string(),
        }
    };
    assert_eq!(route("http://catalog.trellis.internal/items"), "catalog-v1");
    assert_eq!(
        route("http://catalog.trellis.internal/api/v2/items"),
        "catalog-v2"
    );
    assert_eq!(
        route("-H 'x-beta: true' http://catalog.trellis.internal/"),
        "catalog-v2"
    );
    assert_eq!(
        route("-X DELETE http://catalog.trellis.internal/Admin/users"),
        "403"
    );
    assert_eq!(
        route("-X GET http://catalog.trellis.internal/Admin/users"),
        "catalog-v1"
    );
    assert_eq!(route("http://catalog.example.com/api/v2/"), "catalog-v2");

    // A service declared later is reached by name once applied, and gone
    // once deleted.
    let more = c.topo.run.join("reviews.yaml");
    std::fs::write(&more, REVIEWS).unwrap();
    let revision = c.apply(&more.display().to_string());
    c.topo.wait_revision(&c.node, revision);
    wait_until(|| route("http://reviews.trellis.internal/") == "reviews");
    c.topo.trellis(&c.cp, "delete service reviews");
    wait_until(|| c.resolve("reviews.trellis.internal").is_empty());
    assert_eq!(route("http://reviews.trellis.internal/"), "0");
}

/// Polls `ok` for up to 5 s (DNS answers and redirects follow a new
/// snapshot within a second).
fn wait_until(ok: impl Fn() -> bool) {
    let t = Instant::now();
    while !ok() {
        assert!(t.elapsed() < Duration::from_secs(5), "never happened");
        std::thread::sleep(Duration::from_millis(100));
    }
}

const SERVICES: &str = r#"
apiVersion: trellis.dev/v1alpha1
kind: Network
metadata: {name: east}
spec: {}
---
apiVersion: trellis.dev/v1alpha1
kind: Network
metadata: {name: finance}
spec: {}
---
apiVersion: trellis.dev/v1alpha1
kind: ServiceNetwork
metadata: {name: shop}
spec: {networks: [east]}
---
apiVersion: trellis.dev/v1alpha1
kind: ServiceNetwork
metadata: {name: books}
spec: {networks: [finance]}
---
apiVersion: trellis.dev/v1alpha1
kind: TargetGroup
metadata: {name: catalog-v1}
spec: {network: east, port: 8080, targets: [{address: 10.0.1.10}]}
---
apiVersion: trellis.dev/v1alpha1
kind: TargetGroup
metadata: {name: catalog-v2}
spec: {network: east, port: 8080, targets: [{address: 10.0.1.20}]}
---
apiVersion: trellis.dev/v1alpha1
kind: TargetGroup
metadata: {name: ledger}
spec: {network: east, port: 8082, targets: [{address: 10.0.1.20}]}
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: catalog}
spec:
  serviceNetworks: [shop]
  customDomainName: catalog.example.com
  listeners:
    - name: web
      protocol: HTTP
      defaultAction: {forward: [{targetGroup: catalog-v1}]}
      rules:
        - name: api-v2
          priority: 10
          match: {path: {prefix: /api/v2/}}
          action: {forward: [{targetGroup: catalog-v2}]}
        - name: beta-testers
          priority: 20
          match: {headers: [{name: x-beta, exact: "true"}]}
          action: {forward: [{targetGroup: catalog-v2}]}
        - name: no-deletes
          priority: 30
          match: {method: DELETE, path: {prefix: /admin, caseSensitive: false}}
          action: {fixedResponse: {statusCode: 403}}
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: ledger}
spec:
  serviceNetworks: [books]
  listeners:
    - name: web
      protocol: HTTP
      defaultAction: {forward: [{targetGroup: ledger}]}
"#;

const REVIEWS: &str = r#"
apiVersion: trellis.dev/v1alpha1
kind: TargetGroup
metadata: {name: reviews}
spec: {network: east, port: 8081, targets: [{address: 10.0.1.10}]}
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: reviews}
spec:
  serviceNetworks: [shop]
  listeners:
    - name: web
      protocol: HTTP
      defaultAction: {forward: [{targetGroup: reviews}]}
"#;
