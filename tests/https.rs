//! HTTPS listeners, as a user runs them: certificates in PEM files next to
//! the YAML, applied with the CLI; clients (curl --cacert, Python's ssl)
//! reach the service by name through the eBPF redirect, and the node proxy
//! terminates TLS, picks the certificate by SNI, negotiates HTTP/2 or
//! HTTP/1.1 by ALPN, and takes new certificates without dropping open
//! connections.

mod harness;

use harness::{ControlPlane, HELPERS, Node, Topology};
use std::path::Path;
use std::time::{Duration, Instant};

const YAML: &str = r#"
apiVersion: trellis.dev/v1alpha1
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
metadata: {name: shop}
spec: {network: east, port: 8080, targets: [{address: 10.0.1.10}]}
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: shop}
spec:
  serviceNetworks: [shop]
  customDomainName: shop.example.com
  listeners:
    - name: secure
      protocol: HTTPS
      timeouts: {headerReadSeconds: 2}
      defaultAction: {forward: [{targetGroup: shop}]}
      tls:
        certificates:
          - {certificateFile: certs/internal.pem, keyFile: certs/internal.key}
          - {certificateFile: certs/example.pem, keyFile: certs/example.key}
"#;

/// A test CA and what it signs.
struct Ca {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pem: String,
}

impl Ca {
    fn new() -> Ca {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "test CA");
        let pem = params.self_signed(&key).unwrap().pem();
        Ca {
            issuer: rcgen::Issuer::new(params, key),
            pem,
        }
    }

    /// Writes `NAME.pem` and `NAME.key` into `dir`: a certificate with
    /// common name `cn` for `names`.
    fn issue(&self, dir: &Path, name: &str, cn: &str, names: &[&str]) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    }
}

struct Env {
    topo: Topology,
    cp: ControlPlane,
    node: Node,
    yaml: String,
    ca: String,
}

impl Env {
    /// curl -v over HTTPS as a client of the node: (status, HTTP version,
    /// body, the served certificate's subject line).
    fn curl(&self, args: &str) -> (u16, String, String, String) {
        let out = self.topo.exec(
            &self.node.ns,
            Some(&self.node.clients),
            &format!(
                "curl -sv -m 10 --cacert {} -w '\\n=%{{http_code}} %{{http_version}}' {args}",
                self.ca
            ),
        );
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, tail) = text.rsplit_once('=').unwrap_or(("", "0 0"));
        let (code, version) = tail.split_once(' ').unwrap_or(("0", ""));
        let subject = String::from_utf8_lossy(&out.stderr)
            .lines()
            .find_map(|l| l.trim().strip_prefix("*  subject: "))
            .unwrap_or_default()
            .to_string();
        (
            code.trim().parse().unwrap_or(0),
            version.trim().to_string(),
            body.trim().to_string(),
            subject,
        )
    }

    fn apply(&self) -> u64 {
        self.topo.apply(&self.cp, &self.yaml)
    }
}

fn setup(test: &str) -> Option<(Env, Ca)> {
    let mut topo = Topology::new(test)?;
    let (cp_ns, node_ns, targets) = (topo.netns("cp"), topo.netns("node"), topo.netns("targets"));
    topo.link(&cp_ns, "10.250.1.1/30", &node_ns, "10.250.1.2/30");
    topo.link(&node_ns, "10.0.1.1/24", &targets, "10.0.1.10/24");
    let ca = Ca::new();
    // Targets behind the passthrough listener terminate TLS themselves.
    ca.issue(&topo.run, "pt-a", "target-a", &["pt.trellis.internal"]);
    ca.issue(&topo.run, "pt-b", "target-b", &["pt.example.com"]);
    topo.backends(
        &targets,
        "10.0.1.10",
        "http:8080:shop https:8443:pt-a https:8444:pt-b",
    );
    let cp = topo.control_plane(&cp_ns, "");
    let node = topo.node("east", &node_ns);
    let certs = topo.run.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    ca.issue(
        &certs,
        "internal",
        "shop-internal",
        &["shop.trellis.internal"],
    );
    ca.issue(&certs, "example", "shop-example", &["shop.example.com"]);
    std::fs::write(topo.run.join("ca.pem"), &ca.pem).unwrap();
    let yaml = topo.run.join("shop.yaml");
    std::fs::write(&yaml, YAML).unwrap();
    let env = Env {
        yaml: yaml.display().to_string(),
        ca: topo.run.join("ca.pem").display().to_string(),
        topo,
        cp,
        node,
    };
    Some((env, ca))
}

#[test]
fn https_listeners_terminate_tls_by_sni_and_alpn() {
    let Some((mut env, ca)) = setup("https_listeners_terminate_tls_by_sni_and_alpn") else {
        return;
    };
    env.apply();
    env.topo.start_node(
        &mut env.node,
        &env.cp,
        "https://10.250.1.1:7070",
        "10.0.1.1",
        "",
    );

    // `get` shows the chain and its expiry, never a key.
    let shown = env.topo.trellis(&env.cp, "get service shop -o json");
    assert!(!shown.contains("PRIVATE KEY"), "{shown}");
    let svc = harness::json(&shown);
    let certs = svc["status"]["certificates"]
        .as_array()
        .expect("certificates");
    assert_eq!(certs.len(), 2, "{shown}");
    assert_eq!(certs[0]["dnsNames"][0], "shop.trellis.internal");
    let days = certs[0]["daysToExpiry"].as_i64().unwrap();
    assert!(days > 300, "{days} days");
    let tls = &svc["spec"]["listeners"][0]["tls"]["certificates"][0];
    assert_eq!(tls["privateKeySha256"].as_str().map(str::len), Some(64));
    assert!(tls.get("privateKey").is_none());
    // What `get -o yaml` prints applies back unchanged: the key stays.
    let again = env.topo.run.join("again.yaml");
    std::fs::write(
        &again,
        env.topo.trellis(&env.cp, "get service shop -o yaml"),
    )
    .unwrap();
    let out = env
        .topo
        .trellis(&env.cp, &format!("apply -f {}", again.display()));
    assert!(out.contains("service/shop unchanged"), "{out}");
    let config = env.topo.admin(&env.node, "/config");
    assert!(
        !config.contains("PRIVATE KEY"),
        "the node's /config shows a key"
    );

    // HTTP/2 by ALPN, the certificate for the name asked, the proxy's
    // headers say https.
    let (code, version, body, subject) = env.curl("https://shop.trellis.internal/");
    assert_eq!((code, version.as_str()), (200, "2"), "{body}");
    assert!(subject.contains("CN=shop-internal"), "{subject}");
    let answer = harness::json(&body);
    assert_eq!(answer["name"], "shop");
    assert_eq!(answer["headers"]["x-forwarded-for-proto"], "https");
    // HTTP/2's :authority reaches the HTTP/1.1 target as Host.
    assert_eq!(answer["headers"]["host"], "shop.trellis.internal");
    // HTTP/1.1 when the client offers only that; SNI picks the custom
    // domain's certificate.
    let (code, version, _, subject) = env.curl("--http1.1 https://shop.example.com/");
    assert_eq!((code, version.as_str()), (200, "1.1"));
    assert!(subject.contains("CN=shop-example"), "{subject}");
    // No SNI (by address): the first certificate.
    let vip = svc["status"]["vip"].as_str().unwrap().to_string();
    let (code, _, _, subject) = env.curl(&format!("-k https://{vip}/"));
    assert_eq!(code, 200);
    assert!(subject.contains("CN=shop-internal"), "{subject}");

    // A Rust client (hyper over rustls, examples/https_client.rs) by name
    // through the redirect: HTTP/2 when offered, else HTTP/1.1; three
    // requests each.
    let example = std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("examples/https_client");
    assert!(
        example.exists(),
        "{} is missing: `cargo test` builds it (or `cargo build --examples`)",
        example.display()
    );
    for (offer, expected) in [("any", "HTTP/2.0"), ("http1", "HTTP/1.1")] {
        let said = env.topo.client(
            &env.node,
            &format!(
                "{} https://shop.trellis.internal/rust {} {offer} 3",
                example.display(),
                env.ca
            ),
        );
        let lines: Vec<_> = said.lines().map(harness::json).collect();
        assert_eq!(lines.len(), 3, "{offer}: {said}");
        for line in lines {
            assert_eq!(line["status"], 200, "{offer}: {line}");
            assert_eq!(line["version"], expected, "{offer}");
            let answer = harness::json(line["body"].as_str().unwrap());
            assert_eq!(answer["path"], "/rust");
            assert_eq!(answer["headers"]["host"], "shop.trellis.internal");
            assert_eq!(answer["headers"]["x-forwarded-for-proto"], "https");
        }
    }

    // Garbage instead of a ClientHello: refused at once. A client that
    // sends nothing: cut off at headerReadSeconds (2 s).
    for (bytes, at_most) in [("GET / HTTP/1.1\r\n\r\n", 1.0), ("", 3.5)] {
        let said = env.topo.client(
            &env.node,
            &format!("python3 {HELPERS}/client.py slow shop.trellis.internal 443 '{bytes}'"),
        );
        let secs = harness::json(&said)["closed_after"].as_f64().unwrap();
        assert!(secs < at_most, "{bytes:?}: closed after {secs:.1}s");
    }

    let metrics = env.topo.admin(&env.node, "/metrics");
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with("trellis_tls_certificate_expiry_days{service=\"shop\"")
                && l.contains("shop-internal")
        })
        .unwrap_or_else(|| panic!("no expiry metric:\n{metrics}"));
    let days: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(days > 300.0, "{line}");

    // A new certificate: open connections keep theirs and keep working,
    // new ones get the new one.
    let flag = env.topo.run.join("go");
    let held = env.topo.run.join("held.json");
    env.topo.spawn(
        "held",
        &env.node.ns.clone(),
        Some(&env.node.clients.clone()),
        &format!(
            "python3 {HELPERS}/client.py tls-hold https://shop.trellis.internal/ {} {} {}",
            env.ca,
            flag.display(),
            held.display()
        ),
        "held",
    );
    ca.issue(
        &env.topo.run.join("certs"),
        "internal",
        "shop-internal-2",
        &["shop.trellis.internal"],
    );
    let revision = env.apply();
    env.topo.wait_revision(&env.node, revision);
    let (code, _, _, subject) = env.curl("https://shop.trellis.internal/");
    assert_eq!(code, 200);
    assert!(subject.contains("CN=shop-internal-2"), "{subject}");
    std::fs::write(&flag, "").unwrap();
    let t = Instant::now();
    while !held.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "the held client never finished"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let held = harness::json(&std::fs::read_to_string(&held).unwrap());
    for at in ["first", "second"] {
        assert_eq!(held[at]["status"], 200, "{held}");
        assert_eq!(held[at]["cn"], "shop-internal", "{held}");
    }
}

/// Bad certificates are refused at apply with the file, line and field,
/// and nothing changes.
#[test]
fn bad_certificates_are_refused_where_they_are_declared() {
    let Some((env, ca)) = setup("bad_certificates_are_refused_where_they_are_declared") else {
        return;
    };
    let certs = env.topo.run.join("certs");
    let apply = |yaml: &str| -> String {
        std::fs::write(&env.yaml, yaml).unwrap();
        let out = env.topo.exec(
            &env.cp.ns,
            None,
            &format!(
                "{} apply -f {} --server https://127.0.0.1:7070 --token-file {2}/api-token --ca-file {2}/ca.pem",
                harness::BIN,
                env.yaml,
                env.cp.data.display()
            ),
        );
        assert!(!out.status.success(), "applied: {yaml}");
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    // A key of another certificate.
    ca.issue(&certs, "other", "other", &["other.example.com"]);
    let err = apply(&YAML.replace("keyFile: certs/internal.key", "keyFile: certs/other.key"));
    let line = 1 + YAML
        .lines()
        .position(|l| l.contains("certs/internal.pem"))
        .unwrap();
    assert!(
        err.contains(&format!("shop.yaml:{line}:"))
            && err.contains("spec.listeners[0].tls.certificates[0].privateKey: does not belong"),
        "{err}"
    );
    // A missing file.
    let err = apply(&YAML.replace("certs/example.pem", "certs/nope.pem"));
    assert!(
        err.contains("spec.listeners[0].tls.certificates[1].certificateFile: certs/nope.pem:"),
        "{err}"
    );
    // No certificate for the custom domain name.
    let err = apply(&YAML.replace(
        "          - {certificateFile: certs/example.pem, keyFile: certs/example.key}\n",
        "",
    ));
    assert!(
        err.contains("no certificate covers the custom domain name shop.example.com"),
        "{err}"
    );
    // An HTTPS listener without certificates.
    let err = apply(YAML.split("      tls:\n").next().unwrap());
    assert!(
        err.contains("spec.listeners[0].tls.certificates: an HTTPS listener needs"),
        "{err}"
    );
    let got = env.topo.exec(
        &env.cp.ns,
        None,
        &format!(
            "{} get services --server https://127.0.0.1:7070 --token-file {1}/api-token --ca-file {1}/ca.pem",
            harness::BIN,
            env.cp.data.display()
        ),
    );
    assert!(
        !String::from_utf8_lossy(&got.stdout).contains("shop"),
        "something was applied"
    );
    // Target groups: a CA file that holds no certificate, a missing one,
    // TLS settings on a group that does not speak TLS.
    std::fs::write(env.topo.run.join("not-a-ca.pem"), "not a certificate\n").unwrap();
    let group = |protocol: &str, tls: &str| {
        format!(
            "{YAML}---\napiVersion: trellis.dev/v1alpha1\nkind: TargetGroup\nmetadata: {{name: tls-up}}\n\
             spec: {{network: east, protocol: {protocol}, tls: {tls}, targets: [{{address: 10.0.1.10}}]}}\n"
        )
    };
    for (yaml, expected) in [
        (
            group("HTTPS", "{caFile: not-a-ca.pem}"),
            "spec.tls.ca: no certificate",
        ),
        (
            group("HTTPS", "{caFile: nope.pem}"),
            "spec.tls.caFile: nope.pem:",
        ),
        (
            group("HTTPS", "{serverName: \"a b\"}"),
            "spec.tls.serverName:",
        ),
        (
            group("HTTP", "{serverName: a.example}"),
            "spec.tls: only HTTPS target groups",
        ),
    ] {
        let err = apply(&yaml);
        assert!(err.contains(expected), "{expected}: {err}");
    }
}

const PASSTHROUGH: &str = r#"
apiVersion: trellis.dev/v1alpha1
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
metadata: {name: pt-a}
spec: {network: east, protocol: TCP, port: 8443, targets: [{address: 10.0.1.10}]}
---
apiVersion: trellis.dev/v1alpha1
kind: TargetGroup
metadata: {name: pt-b}
spec: {network: east, protocol: TCP, port: 8444, targets: [{address: 10.0.1.10}]}
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: pt}
spec:
  serviceNetworks: [shop]
  customDomainName: pt.example.com
  listeners:
    - name: tls
      protocol: TLS_PASSTHROUGH
      timeouts: {headerReadSeconds: 2}
      defaultAction: {forward: [{targetGroup: pt-a}]}
      rules:
        - name: example
          priority: 1
          match: {host: pt.example.com}
          action: {forward: [{targetGroup: pt-b}]}
"#;

/// TLS passthrough: the proxy reads the ClientHello's server name without
/// terminating, routes by it, and the client's TLS session is with the
/// target (the target's certificate is what the client sees).
#[test]
fn tls_passthrough_routes_by_server_name() {
    let Some((mut env, _ca)) = setup("tls_passthrough_routes_by_server_name") else {
        return;
    };
    std::fs::write(&env.yaml, PASSTHROUGH).unwrap();
    env.apply();
    env.topo.start_node(
        &mut env.node,
        &env.cp,
        "https://10.250.1.1:7070",
        "10.0.1.1",
        "",
    );
    for (url, cn, name) in [
        ("https://pt.trellis.internal/", "CN=target-a", "pt-a"),
        ("https://pt.example.com/", "CN=target-b", "pt-b"),
    ] {
        let (code, _, body, subject) = env.curl(url);
        assert_eq!(code, 200, "{url}: {body}");
        assert!(subject.contains(cn), "{url}: {subject}");
        let answer = harness::json(&body);
        assert_eq!(answer["name"], name);
        // Spliced, not proxied: no headers added, the node's address seen.
        assert!(
            answer["headers"].get("x-trellis-service").is_none(),
            "{body}"
        );
        assert_eq!(answer["peer"], "10.0.1.1");
    }
    // Not TLS: refused at once. Nothing sent: cut off at headerReadSeconds.
    for (bytes, at_most) in [("GET / HTTP/1.1\r\n\r\n", 1.0), ("", 3.5)] {
        let said = env.topo.client(
            &env.node,
            &format!("python3 {HELPERS}/client.py slow pt.trellis.internal 443 '{bytes}'"),
        );
        let secs = harness::json(&said)["closed_after"].as_f64().unwrap();
        assert!(secs < at_most, "{bytes:?}: closed after {secs:.1}s");
    }
    let metrics = env.topo.admin(&env.node, "/metrics");
    assert!(
        metrics.lines().any(|l| l
            .starts_with("trellis_proxy_refused_connections_total{reason=\"tls-client-hello\"}")),
        "{metrics}"
    );
    let log = std::fs::read_to_string(env.topo.run.join("east-access.log")).unwrap_or_default();
    assert!(
        log.lines()
            .any(|l| l.contains("\"rule\":\"example\"") && l.contains("\"target_group\":\"pt-b\"")),
        "{log}"
    );
}

/// Target groups that speak TLS to their targets, all on one target host,
/// each reached by its path.
fn upstream_yaml() -> String {
    let hc = "{protocol: HTTPS, path: /health, intervalSeconds: 1, timeoutSeconds: 1, healthyThreshold: 2, unhealthyThreshold: 2}";
    let groups = [
        // (name, port, tls)
        (
            "verified",
            8445,
            "{serverName: backend.shop.internal, caFile: ca.pem}",
        ),
        ("by-address", 8446, "{caFile: ca.pem}"),
        ("trellis-ca", 8447, "{serverName: backend.shop.internal}"),
        (
            "untrusted",
            8448,
            "{serverName: backend.shop.internal, caFile: ca.pem}",
        ),
        (
            "wrong-name",
            8445,
            "{serverName: other.shop.internal, caFile: ca.pem}",
        ),
    ];
    let mut yaml = String::from(
        "apiVersion: trellis.dev/v1alpha1\nkind: Network\nmetadata: {name: east}\nspec: {}\n---\n\
         apiVersion: trellis.dev/v1alpha1\nkind: ServiceNetwork\nmetadata: {name: shop}\nspec: {networks: [east]}\n",
    );
    let mut rules = String::new();
    for (i, (name, port, tls)) in groups.iter().enumerate() {
        yaml += &format!(
            "---\napiVersion: trellis.dev/v1alpha1\nkind: TargetGroup\nmetadata: {{name: {name}}}\n\
             spec: {{network: east, protocol: HTTPS, port: {port}, tls: {tls}, healthCheck: {hc}, targets: [{{address: 10.0.1.11}}]}}\n"
        );
        rules += &format!(
            "        - {{name: {name}, priority: {p}, match: {{path: {{prefix: /{name}/}}}}, action: {{forward: [{{targetGroup: {name}}}]}}}}\n",
            p = i + 1
        );
    }
    yaml += &format!(
        "---\napiVersion: trellis.dev/v1alpha1\nkind: Service\nmetadata: {{name: upstream}}\n\
         spec:\n  serviceNetworks: [shop]\n  listeners:\n    - name: web\n      protocol: HTTP\n      rules:\n{rules}      \
         defaultAction: {{fixedResponse: {{statusCode: 404}}}}\n"
    );
    yaml
}

/// TLS to targets: each HTTPS group verifies its targets against its CA
/// (or the Trellis CA) and server name (or IP address); a target it cannot
/// verify gets no request, answers 502 `target-tls`, and fails its check.
#[test]
fn tls_to_targets_is_verified() {
    let Some((mut env, ca)) = setup("tls_to_targets_is_verified") else {
        return;
    };
    // Certificates for the targets: from the test CA (by name, by IP
    // address), from the control plane's own CA, and from a CA nobody trusts.
    let run = env.topo.run.clone();
    ca.issue(&run, "up-name", "up-name", &["backend.shop.internal"]);
    ca.issue(&run, "up-ip", "up-ip", &["10.0.1.11"]);
    // The Trellis CA's key is sealed: the control plane signs.
    env.topo.trellis(
        &env.cp,
        &format!(
            "ca issue backend.shop.internal --out {}/up-trellis",
            run.display()
        ),
    );
    Ca::new().issue(&run, "up-rogue", "up-rogue", &["backend.shop.internal"]);
    let targets = format!("{}-targets", env.topo.id);
    env.topo.address(&targets, "10.0.1.11");
    env.topo.backends(
        &targets,
        "10.0.1.11",
        "https:8445:up-name https:8446:up-ip https:8447:up-trellis https:8448:up-rogue",
    );
    std::fs::write(&env.yaml, upstream_yaml()).unwrap();
    env.apply();
    env.topo.start_node(
        &mut env.node,
        &env.cp,
        "https://10.250.1.1:7070",
        "10.0.1.1",
        "",
    );
    // Trusted targets become healthy over HTTPS checks; the others do not.
    env.topo.wait_for(&env.node, "/metrics", |m| {
        ["verified", "by-address", "trellis-ca"].iter().all(|g| {
            m.contains(&format!(
                "trellis_target_healthy{{target_group=\"{g}\",target=\"10.0.1.11:"
            )) && !m
                .lines()
                .any(|l| l.contains(&format!("target_group=\"{g}\"")) && !l.ends_with(" 1"))
        }) && ["untrusted", "wrong-name"].iter().all(|g| {
            m.lines()
                .any(|l| l.contains(&format!("target_group=\"{g}\"")) && l.ends_with(" 0"))
        })
    });
    for (group, name) in [
        ("verified", "up-name"),
        ("by-address", "up-ip"),
        ("trellis-ca", "up-trellis"),
    ] {
        let r = env.topo.curl(
            &env.node,
            &format!("http://upstream.trellis.internal/{group}/x"),
        );
        assert_eq!(r.code, 200, "{group}: {} {}", r.error, r.body);
        let answer = r.json();
        assert_eq!(answer["name"], name, "{group}");
        assert_eq!(answer["path"], format!("/{group}/x"));
        // Proxied, not spliced: the proxy's headers, from its SNAT address.
        assert_eq!(answer["headers"]["x-trellis-service"], "upstream");
        assert_eq!(answer["peer"], "10.0.1.1");
    }
    // Unhealthy everywhere, so failed open: still sent, and refused by TLS.
    for (group, why) in [
        ("untrusted", "invalid peer certificate"),
        ("wrong-name", "not valid for name \"other.shop.internal\""),
    ] {
        let r = env.topo.curl(
            &env.node,
            &format!("http://upstream.trellis.internal/{group}/x"),
        );
        assert_eq!(r.code, 502, "{group}: {}", r.body);
        assert_eq!(r.error, "target-tls", "{group}: {}", r.body);
        assert!(r.body.contains(why), "{group}: {}", r.body);
    }
}
