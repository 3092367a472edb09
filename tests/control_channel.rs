//! The channel between the control plane and its nodes: TLS only, nodes
//! and DNS servers known by their certificates and scoped to their own
//! network, a join token that names the one control plane to trust, and
//! nothing secret readable on the wire.

mod harness;

use harness::local::{BIN, ControlPlane, private_dir, trellis};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/samples/auth-policy.yaml");

fn ok(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Networks east and west; a SIGV4 service east sees, an identity with a
/// key, and an HTTPS listener with its private key: a snapshot of east
/// carries signing keys and a private key. The access key's secret.
fn with_secrets(cp: &ControlPlane, dir: &Path) -> String {
    ok(trellis(cp, &["apply", "-f", SAMPLE]));
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["vault.trellis.internal".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(dir.join("vault.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("vault.key"), key.serialize_pem()).unwrap();
    let yaml = dir.join("vault.yaml");
    std::fs::write(
        &yaml,
        r#"
apiVersion: trellis.dev/v1alpha1
kind: Network
metadata: {name: west}
spec: {}
---
apiVersion: trellis.dev/v1alpha1
kind: TargetGroup
metadata: {name: vault}
spec: {network: east, port: 8443, targets: [{address: 127.0.0.1}]}
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: vault}
spec:
  serviceNetworks: [payments]
  listeners:
    - name: secure
      protocol: HTTPS
      defaultAction: {forward: [{targetGroup: vault}]}
      tls:
        certificates:
          - {certificateFile: vault.pem, keyFile: vault.key}
"#,
    )
    .unwrap();
    ok(trellis(cp, &["apply", "-f", yaml.to_str().unwrap()]));
    let created: Value = serde_json::from_str(&ok(trellis(
        cp,
        &["identity", "create", "billing-job", "-o", "json"],
    )))
    .unwrap();
    created["SecretAccessKey"].as_str().unwrap().to_string()
}

/// A TCP relay to `to` that keeps every byte it passes, both ways.
struct Relay {
    addr: String,
    seen: Arc<Mutex<Vec<u8>>>,
}

impl Relay {
    fn start(to: &str) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (to, kept) = (to.to_string(), seen.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(&to) else {
                    continue;
                };
                for (mut from, mut into) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let kept = kept.clone();
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16384];
                        while let Ok(n @ 1..) = from.read(&mut buf) {
                            kept.lock().unwrap().extend_from_slice(&buf[..n]);
                            if into.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = into.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Relay { addr, seen }
    }

    fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    fn seen(&self) -> Vec<u8> {
        self.seen.lock().unwrap().clone()
    }
}

/// A child killed on drop.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits for a line starting with `prefix` on the child's stdout; the rest
/// of it.
fn wait_line(child: &mut Child, prefix: &str) -> String {
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let wanted = prefix.to_string();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix(&wanted) {
                let _ = tx.send(rest.to_string());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("no line {prefix:?}"))
}

/// `trellis node` with no datapath and no admin token anywhere in its
/// environment, its stdout piped.
fn node(url: &str, dir: &Path, token: &str) -> Command {
    let mut c = Command::new(BIN);
    c.args(["node", "--network", "east", "--no-datapath"])
        .args(["--control-plane", url, "--join-token", token])
        .arg("--data-dir")
        .arg(dir)
        .args(["--proxy-listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--admin-listen", "127.0.0.1:0", "--access-log", "off"])
        .env_remove("TRELLIS_TOKEN")
        .env_remove("TRELLIS_TOKEN_FILE")
        .env("TRELLIS_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Every string of a JSON value, recursively.
fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|v| strings(v, out)),
        Value::Object(o) => o.values().for_each(|v| strings(v, out)),
        _ => {}
    }
}

/// A node and a DNS server join, watch and get a snapshot that carries
/// keys through a relay that records every byte: no credential, key or
/// snapshot text is in them.
#[test]
fn nothing_secret_crosses_the_wire_in_clear() {
    let cp = ControlPlane::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let access_secret = with_secrets(&cp, dir.path());
    let relay = Relay::start(cp.url.trim_start_matches("https://"));

    // The secrets of east's snapshot: what its view for people hides.
    let full: Value = serde_json::from_slice(
        &harness::local::curl(
            &cp,
            &["-s", &format!("{}/v1/networks/east/snapshot", cp.url)],
        )
        .stdout,
    )
    .unwrap();
    let snapshot: trellis_api::snapshot::Snapshot = serde_json::from_value(full.clone()).unwrap();
    let (mut all, mut shown) = (Vec::new(), Vec::new());
    strings(&full, &mut all);
    strings(&snapshot.shown(), &mut shown);
    let secrets: Vec<String> = all.into_iter().filter(|s| !shown.contains(s)).collect();
    assert!(
        secrets.iter().any(|s| s.contains("PRIVATE KEY")) && secrets.len() >= 2,
        "east's snapshot should carry a listener key and signing keys: {secrets:?}"
    );

    let node_token = cp.join_token("east", "node");
    let dns_token = cp.join_token("east", "dns");
    let node_dir = private_dir();
    let mut n = node(&relay.url(), node_dir.path(), &node_token)
        .spawn()
        .unwrap();
    let admin = wait_line(&mut n, "trellis node admin listening on ");
    let _node = Running(n);
    let dns_dir = private_dir();
    let mut d = Command::new(BIN)
        .args(["dns", "--listen", "127.0.0.1:0", "--network", "east"])
        .args(["--control-plane", &relay.url(), "--join-token", &dns_token])
        .arg("--data-dir")
        .arg(dns_dir.path())
        .env_remove("TRELLIS_TOKEN_FILE")
        .env("TRELLIS_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_line(&mut d, "trellis dns listening on ");
    let _dns = Running(d);
    let node_snapshot = node_dir.path().join("node-snapshot-east.json");
    let dns_snapshot = dns_dir.path().join("dns-snapshot-east.json");
    let t = Instant::now();
    while !(node_snapshot.exists() && dns_snapshot.exists()) {
        assert!(t.elapsed() < Duration::from_secs(20), "no snapshot arrived");
        std::thread::sleep(Duration::from_millis(50));
    }
    // A change while they watch: a new key, so new signing keys.
    let revision = |p: &Path| -> u64 {
        serde_json::from_slice::<Value>(&std::fs::read(p).unwrap()).unwrap()["revision"]
            .as_u64()
            .unwrap()
    };
    let before = revision(&node_snapshot);
    ok(trellis(
        &cp,
        &["identity", "create", "billing-job", "-o", "json"],
    ));
    let t = Instant::now();
    while revision(&node_snapshot) == before {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the watch saw no change"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // The node holds the keys it needs; the DNS server none of them.
    let node_has = std::fs::read_to_string(&node_snapshot).unwrap();
    let dns_has = std::fs::read_to_string(&dns_snapshot).unwrap();
    assert!(node_has.contains("PRIVATE KEY"));
    for s in &secrets {
        assert!(!dns_has.contains(s.as_str()), "the DNS server holds a key");
    }
    assert!(dns_has.contains("vault.trellis.internal"), "{dns_has}");
    let _ = admin;

    let wire = relay.seen();
    assert!(wire.len() > 4000, "the relay saw {} bytes", wire.len());
    let api_token = std::fs::read_to_string(cp.token_file()).unwrap();
    let join_secret = |t: &str| t.split('.').next().unwrap().to_string();
    let mut clear = vec![
        api_token.trim().to_string(),
        access_secret,
        join_secret(&node_token),
        join_secret(&dns_token),
        "PRIVATE KEY".into(),
        "BEGIN CERTIFICATE".into(),
        "dnsZone".into(),
        "trellis.internal".into(),
        "snapshot".into(),
        "east".into(),
    ];
    clear.extend(secrets);
    harness::assert_not_in_clear(&wire, clear);
}

/// The join token names the CA: pointed at another control plane, a node
/// or DNS server refuses it, whatever the token.
#[test]
fn a_join_token_trusts_only_the_control_plane_it_names() {
    let ours = ControlPlane::start(&[]);
    let theirs = ControlPlane::start(&[]);
    for cp in [&ours, &theirs] {
        ok(trellis(cp, &["apply", "-f", SAMPLE]));
    }
    let token = ours.join_token("east", "dns");
    // Their own valid token, with our CA's hash in it.
    let their_secret = theirs.join_token("east", "dns");
    let hash = token.split_once('.').unwrap().1;
    let mixed = format!("{}.{hash}", their_secret.split_once('.').unwrap().0);
    for token in [&token, &mixed] {
        let dir = private_dir();
        let out = Command::new(BIN)
            .args(["dns", "--listen", "127.0.0.1:0", "--network", "east"])
            .args(["--control-plane", &theirs.url, "--join-token", token])
            .arg("--data-dir")
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(
                "the control plane's CA is not the pinned one (the join token's or --ca-hash)"
            ),
            "{stderr}"
        );
        assert!(!dir.path().join("identity/east/identity.json").exists());
    }
    // The node agent likewise.
    let dir = private_dir();
    let out = node(&theirs.url, dir.path(), &ours.join_token("east", "node"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not the pinned one"), "{stderr}");
    // The CLI pinned by the same hash: ours answers, theirs is refused.
    let pinned = |cp: &ControlPlane| {
        Command::new(BIN)
            .args(["get", "networks", "--server", &cp.url, "--ca-hash", hash])
            .arg("--token-file")
            .arg(cp.token_file())
            .env_remove("TRELLIS_CA_FILE")
            .output()
            .unwrap()
    };
    ok(pinned(&ours));
    let out = pinned(&theirs);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not the pinned one"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Audit: the stranger issued nothing.
    let audit = ok(trellis(&theirs, &["audit"]));
    assert!(!audit.contains("/v1/certificates"), "{audit}");
}

/// A certificate issued with `token` for a fresh key: (cert, key) files.
fn member_certificate(cp: &ControlPlane, dir: &Path, name: &str, token: &str) -> (String, String) {
    let (key, csr) = harness::key_and_csr();
    let secret = token.split('.').next().unwrap();
    let body = serde_json::json!({"csr": csr, "joinToken": secret}).to_string();
    let out = harness::local::curl_anonymous(
        cp,
        &[
            "-s",
            "-X",
            "POST",
            "--data",
            &body,
            &format!("{}/v1/certificates", cp.url),
        ],
    );
    let issued: Value = serde_json::from_slice(&out.stdout).unwrap();
    harness::keep_certificate(dir, name, &issued, &key)
}

/// A node's certificate reads its own network's snapshot and renews itself;
/// every other call is 403 with the reason. A DNS server's reads the same
/// snapshot with every key replaced by its fingerprint.
#[test]
fn members_read_their_own_network_and_nothing_else() {
    let cp = ControlPlane::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    with_secrets(&cp, dir.path());
    let node = member_certificate(&cp, dir.path(), "node", &cp.join_token("east", "node"));
    let dns = member_certificate(&cp, dir.path(), "dns", &cp.join_token("east", "dns"));
    let call = |who: &(String, String), method: &str, path: &str, body: &str| -> (String, String) {
        let url = format!("{}{path}", cp.url);
        let mut args = vec![
            "-s",
            "-w",
            "\n%{http_code}",
            "--cert",
            &who.0,
            "--key",
            &who.1,
        ];
        args.extend(["-X", method, &url]);
        if !body.is_empty() {
            args.extend(["--data", body]);
        }
        let out = harness::local::curl_anonymous(&cp, &args);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (code.to_string(), body.to_string())
    };
    let apply = r#"{"documents":[{"apiVersion":"trellis.dev/v1alpha1","kind":"Network","metadata":{"name":"x"},"spec":{}}]}"#;
    for (who, role) in [(&node, "node"), (&dns, "dns")] {
        for (method, path, body) in [
            ("GET", "/v1/networks/west/snapshot", ""),
            ("POST", "/v1/apply", apply),
            ("PUT", "/v1/networks/x", r#"{"kind":"Network"}"#),
            ("DELETE", "/v1/services/vault", ""),
            ("POST", "/v1/identities/billing-job/keys", ""),
            ("GET", "/v1/identities/billing-job/keys", ""),
            ("POST", "/v1/networks/east/join-tokens", "{}"),
            ("POST", "/v1/networks/west/join-tokens", "{}"),
            ("GET", "/v1/services", ""),
            ("GET", "/v1/audit", ""),
        ] {
            let (code, answer) = call(who, method, path, body);
            assert_eq!(code, "403", "{role} {method} {path}: {answer}");
            assert!(
                answer.contains(&format!(
                    "a {role} certificate of network east may read only that network's snapshot"
                )),
                "{answer}"
            );
        }
    }
    let (code, full) = call(&node, "GET", "/v1/networks/east/snapshot", "");
    assert_eq!(code, "200", "{full}");
    assert!(full.contains("PRIVATE KEY"));
    let (code, public) = call(&dns, "GET", "/v1/networks/east/snapshot", "");
    assert_eq!(code, "200", "{public}");
    assert!(
        !public.contains("PRIVATE KEY") && public.contains("sha256:"),
        "{public}"
    );
    let public: Value = serde_json::from_str(&public).unwrap();
    let full: Value = serde_json::from_str(&full).unwrap();
    assert_eq!(
        public["services"].as_array().unwrap().len(),
        full["services"].as_array().unwrap().len()
    );

    // Renewal with the node's own certificate, shown in the TLS handshake.
    let (_, csr_for_other_key) = harness::key_and_csr();
    let cert = std::fs::read_to_string(&node.0).unwrap();
    let body = serde_json::json!({"csr": csr_for_other_key, "certificate": cert}).to_string();
    let (code, answer) = call(&node, "POST", "/v1/certificates", &body);
    assert_eq!(code, "403", "another key renews nothing: {answer}");

    // Every refusal is in the audit log, by who asked.
    let audit = ok(trellis(&cp, &["audit", "--actor", "node/east"]));
    assert!(audit.contains("POST /v1/apply -> 403"), "{audit}");
    let audit = ok(trellis(&cp, &["audit", "--actor", "dns/east"]));
    assert!(
        audit.contains("POST /v1/networks/west/join-tokens -> 403"),
        "{audit}"
    );
}

/// An operator's certificate and key serve the API instead of the self-issued
/// one: the CLI trusts it by --ca-file, a join token names its CA, and the
/// control plane refuses an address that is not loopback without TLS
/// (there is no plain HTTP at all).
#[test]
fn an_operators_certificate_serves_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    let leaf = params.signed_by(&key, &issuer).unwrap();
    let chain = dir.path().join("api.pem");
    std::fs::write(&chain, format!("{}{}", leaf.pem(), ca_cert.pem())).unwrap();
    std::fs::write(dir.path().join("api.key"), key.serialize_pem()).unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).unwrap();
    let cp = ControlPlane::start(&[
        "--tls-cert-file",
        chain.to_str().unwrap(),
        "--tls-key-file",
        dir.path().join("api.key").to_str().unwrap(),
    ]);
    // The node CA does not verify this server; the operator's CA does.
    let out = trellis(&cp, &["get", "networks"]);
    assert!(!out.status.success());
    let ca = dir.path().join("ca.pem");
    let out = harness::local::trellis_env(
        &cp,
        &["apply", "-f", SAMPLE],
        &[("TRELLIS_CA_FILE", ca.to_str().unwrap())],
    );
    ok(out);
    let token = String::from_utf8_lossy(
        &harness::local::trellis_env(
            &cp,
            &["network", "join-token", "east", "--role", "dns"],
            &[("TRELLIS_CA_FILE", ca.to_str().unwrap())],
        )
        .stdout,
    )
    .trim()
    .to_string();
    let want: String = trellis_api::trust::sha256(ca_cert.der())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(token.ends_with(&format!(".{want}")), "{token}");
    // A DNS server trusts it by --control-plane-ca.
    let data = private_dir();
    let mut d = Command::new(BIN)
        .args(["dns", "--listen", "127.0.0.1:0", "--network", "east"])
        .args(["--control-plane", &cp.url, "--join-token", &token])
        .arg("--control-plane-ca")
        .arg(&ca)
        .arg("--data-dir")
        .arg(data.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_line(&mut d, "trellis dns listening on ");
    let _dns = Running(d);
    let snapshot = data.path().join("dns-snapshot-east.json");
    let t = Instant::now();
    while !snapshot.exists() {
        assert!(t.elapsed() < Duration::from_secs(10), "no snapshot");
        std::thread::sleep(Duration::from_millis(50));
    }
}
