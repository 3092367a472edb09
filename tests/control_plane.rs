//! The real `trellis control-plane` binary on a free port, driven by the real
//! CLI (`trellis apply/get/delete/diff`), curl and the API client.

mod harness;

use harness::local::{ControlPlane, trellis};
use serde_json::Value;
use std::time::{Duration, Instant};

const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/samples/blue-green.yaml");

fn json(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn apply_is_idempotent_and_a_restart_keeps_revision_and_vips() {
    let mut cp = ControlPlane::start(&[]);
    let out = trellis(&cp, &["apply", "-f", SAMPLE]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("service/checkout created"), "{stdout}");
    assert!(stdout.ends_with("revision 1\n"), "{stdout}");

    let svc = json(&trellis(&cp, &["get", "service", "checkout", "-o", "json"]));
    let vip = svc["status"]["vip"].as_str().unwrap().to_string();
    assert!(vip.starts_with("169.254.171."), "{vip}");
    assert_eq!(svc["status"]["dnsName"], "checkout.trellis.internal");
    assert_eq!(svc["kind"], "Service");
    let list = json(&trellis(&cp, &["get", "tg", "-o", "json"]));
    assert_eq!(list["items"].as_array().unwrap().len(), 2);

    // The same file again: nothing changes, the revision stays.
    let again = trellis(&cp, &["apply", "-f", SAMPLE]);
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(
        stdout.contains("service/checkout unchanged") && stdout.ends_with("revision 1\n"),
        "{stdout}"
    );

    let table = String::from_utf8_lossy(&trellis(&cp, &["get", "svc"]).stdout).into_owned();
    assert!(table.starts_with("NAME"), "{table}");
    assert!(
        table.contains(&vip) && table.contains("checkout.trellis.internal"),
        "{table}"
    );

    cp.restart();
    let after = json(&trellis(&cp, &["get", "service", "checkout", "-o", "json"]));
    assert_eq!(after["status"]["vip"], vip.as_str());
    assert_eq!(after["status"]["revision"], 1);
    let yaml =
        String::from_utf8_lossy(&trellis(&cp, &["get", "svc", "checkout", "-o", "yaml"]).stdout)
            .into_owned();
    assert!(
        yaml.starts_with("apiVersion: trellis.dev/v1alpha1\nkind: Service\n"),
        "{yaml}"
    );
}

#[test]
fn errors_are_located_and_nothing_is_applied() {
    let cp = ControlPlane::start(&[]);
    assert!(trellis(&cp, &["apply", "-f", SAMPLE]).status.success());
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: trellis.dev/v1alpha1
kind: Service
metadata:
  name: orders
spec:
  serviceNetworks: [shop]
  listeners:
    - name: web
      protocol: HTTP
      defaultAction:
        forward: [{targetGroup: checkout-blue}]
      rules:
        - name: latest
          priority: 10
          match: {path: {prefix: /v2}}
          action: {forward: [{targetGroup: checkout-green}]}
        - name: beta
          priority: 10
          match: {method: POST}
          action: {forward: [{targetGroup: nowhere}]}
",
    )
    .unwrap();
    let out = trellis(&cp, &["apply", "-f", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let f = bad.display();
    assert!(
        stderr.contains(&format!(
            "{f}:18:11: spec.listeners[0].rules[1].priority: 10 is already used by rule \"latest\"\n"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{f}:20:31: spec.listeners[0].rules[1].action.forward[0].targetGroup: TargetGroup \"nowhere\" does not exist\n"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("error: 2 problem(s) in the input; nothing was applied"),
        "{stderr}"
    );
    // Nothing changed.
    let list = json(&trellis(&cp, &["get", "svc", "-o", "json"]));
    assert_eq!(list["items"].as_array().unwrap().len(), 1);

    // A YAML syntax error is located too.
    std::fs::write(&bad, "kind: [Service\nmetadata: x\n").unwrap();
    let out = trellis(&cp, &["apply", "-f", bad.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.starts_with(&format!("{f}:")),
        "{stderr}"
    );

    // Deleting something still referenced is refused with the referrers named.
    let out = trellis(&cp, &["delete", "tg", "checkout-blue"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert_eq!(
        stderr,
        "error: TargetGroup \"checkout-blue\" is still used by Service/checkout (listener web, default action); \
         change or delete those first\n"
    );
}

/// Free text and lists have a maximum, and the store as a whole has one:
/// what would pass them is refused, located, and changes nothing.
#[test]
fn sizes_are_limited_field_by_field_and_in_total() {
    let cp = ControlPlane::start(&["--max-state-bytes", "6000"]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.yaml");
    let network = |name: &str, description: &str| {
        format!(
            "apiVersion: trellis.dev/v1alpha1\nkind: Network\nmetadata: {{name: {name}}}\n\
             spec:\n  description: \"{description}\"\n"
        )
    };
    // 60 MB was accepted once; now anything over 1024 bytes is refused.
    std::fs::write(&file, network("east", &"x".repeat(5000))).unwrap();
    let out = trellis(&cp, &["apply", "-f", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!(
            "{}:5:3: spec.description: 5000 bytes, at most 1024 allowed",
            file.display()
        )),
        "{stderr}"
    );

    // Objects of 1000 bytes each: the sixth passes 6000 bytes in total.
    let docs: Vec<String> = (0..5)
        .map(|i| network(&format!("n{i}"), &"d".repeat(900)))
        .collect();
    std::fs::write(&file, docs.join("---\n")).unwrap();
    let out = trellis(&cp, &["apply", "-f", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&file, network("n5", &"d".repeat(900))).unwrap();
    let out = trellis(&cp, &["apply", "-f", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("over the limit of 6000 (--max-state-bytes)"),
        "{stderr}"
    );
    let list = json(&trellis(&cp, &["get", "networks", "-o", "json"]));
    assert_eq!(list["items"].as_array().unwrap().len(), 5);
    // Deleting makes room again.
    assert!(trellis(&cp, &["delete", "network", "n0"]).status.success());
    assert!(
        trellis(&cp, &["apply", "-f", file.to_str().unwrap()])
            .status
            .success()
    );
}

/// Every mutating call lands in the audit log with its actor, what changed
/// and the outcome, refused ones too, never a secret, and the log outlives
/// a restart.
#[test]
fn every_mutating_call_is_audited_across_a_restart() {
    let mut cp = ControlPlane::start(&[]);
    let ok = |out: std::process::Output| {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    ok(trellis(&cp, &["apply", "-f", SAMPLE]));
    let created: Value = serde_json::from_str(&ok(trellis(
        &cp,
        &["identity", "create", "alice", "-o", "json"],
    )))
    .unwrap();
    let key = created["AccessKeyId"].as_str().unwrap().to_string();
    let secret = created["SecretAccessKey"].as_str().unwrap().to_string();
    let join = ok(trellis(&cp, &["network", "join-token", "east"]));
    ok(trellis(&cp, &["delete", "identity", "alice"]));
    // No token: refused, and recorded as such.
    let refused = harness::local::curl_anonymous(
        &cp,
        &[
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "POST",
            "--data",
            "{}",
            &format!("{}/v1/apply", cp.url),
        ],
    );
    assert_eq!(String::from_utf8_lossy(&refused.stdout), "401");
    cp.restart();

    let audit = json(&trellis(&cp, &["audit", "-o", "json"]));
    let items = audit["items"].as_array().unwrap();
    let line = |i: usize| {
        let r = &items[i];
        format!(
            "{} {} {} {} {} {}",
            r["actor"].as_str().unwrap(),
            r["method"].as_str().unwrap(),
            r["path"].as_str().unwrap(),
            r["status"],
            r["revision"],
            r["changes"]
        )
    };
    let lines: Vec<String> = (0..items.len()).map(line).collect();
    assert_eq!(items.len(), 6, "{lines:#?}");
    assert!(
        lines[0].starts_with("admin POST /v1/apply 200 "),
        "{}",
        lines[0]
    );
    assert!(
        lines[0].contains("service/checkout created"),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].contains("admin POST /v1/apply 200"),
        "{}",
        lines[1]
    );
    assert!(lines[1].contains("identity/alice created"), "{}", lines[1]);
    assert!(
        lines[2].contains(&format!("key {key} of identity/alice created")),
        "{}",
        lines[2]
    );
    assert!(
        lines[3].contains("join token for network/east created"),
        "{}",
        lines[3]
    );
    assert!(
        lines[4].contains("admin DELETE /v1/identities/alice 200"),
        "{}",
        lines[4]
    );
    assert!(lines[4].contains("Identity/alice deleted"), "{}", lines[4]);
    assert!(
        lines[5].starts_with("anonymous POST /v1/apply 401"),
        "{}",
        lines[5]
    );
    for r in items {
        assert!(
            r["time"].as_u64().unwrap() > 0
                && r["peer"].as_str().unwrap().starts_with("127.0.0.1:")
        );
    }
    // Filters.
    let anonymous = json(&trellis(
        &cp,
        &["audit", "--actor", "anonymous", "-o", "json"],
    ));
    assert_eq!(anonymous["items"].as_array().unwrap().len(), 1);
    // Nothing secret in it.
    let file = std::fs::read_to_string(cp.data_dir.path().join("audit.log")).unwrap();
    assert!(
        !file.contains(&secret) && !file.contains(join.trim()),
        "{file}"
    );
}

#[test]
fn diff_shows_a_weight_shift_without_applying_it() {
    let cp = ControlPlane::start(&[]);
    assert!(trellis(&cp, &["apply", "-f", SAMPLE]).status.success());
    let dir = tempfile::tempdir().unwrap();
    let shifted = dir.path().join("shifted.yaml");
    let text = std::fs::read_to_string(SAMPLE).unwrap();
    std::fs::write(
        &shifted,
        text.replace("weight: 90", "weight: 0")
            .replace("weight: 10", "weight: 100"),
    )
    .unwrap();
    let out = trellis(&cp, &["diff", "-f", shifted.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("-            weight: 90\n+            weight: 0\n"),
        "{stdout}"
    );
    assert!(
        stdout.ends_with("1 to change, 4 unchanged (at revision 1)\n"),
        "{stdout}"
    );
    let svc = json(&trellis(&cp, &["get", "svc", "checkout", "-o", "json"]));
    assert_eq!(
        svc["spec"]["listeners"][0]["defaultAction"]["forward"][0]["weight"],
        90
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_watch_returns_within_100ms_of_an_apply() {
    let cp = ControlPlane::start(&[]);
    assert!(trellis(&cp, &["apply", "-f", SAMPLE]).status.success());
    let client = harness::local::client(&cp);
    let first = client
        .snapshot("east", None, Duration::ZERO)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.services.len(), 1);
    assert_eq!(first.services[0].dns_names, ["checkout.trellis.internal"]);

    // A change that east cannot see does not wake east's watchers.
    let west =
        "apiVersion: trellis.dev/v1alpha1\nkind: Network\nmetadata: {name: west}\nspec: {}\n";
    let docs = harness::local::documents(west);
    let watcher = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .snapshot("east", Some(first.revision), Duration::from_secs(1))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    client.apply(&docs, false).await.unwrap();
    assert_eq!(
        watcher.await.unwrap().unwrap(),
        None,
        "east's view did not change"
    );

    // Clients that stall (a TLS handshake never finished; a watch whose
    // answer is never read) must not hold up anyone else.
    use std::io::Write;
    let addr = cp.url.trim_start_matches("https://").to_string();
    let half = std::net::TcpStream::connect(&addr).unwrap();
    let tls = trellis_api::client::Trust::from_pem(&std::fs::read_to_string(cp.ca_file()).unwrap())
        .unwrap()
        .client_config(None)
        .unwrap();
    let conn = rustls::ClientConnection::new(
        std::sync::Arc::new(tls),
        rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap(),
    )
    .unwrap();
    let mut deaf = rustls::StreamOwned::new(conn, std::net::TcpStream::connect(&addr).unwrap());
    let since = first.revision;
    let token = std::fs::read_to_string(cp.token_file()).unwrap();
    write!(
        deaf,
        "GET /v1/networks/east/snapshot?since={since}&waitSeconds=60 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
        token.trim()
    )
    .unwrap();
    deaf.flush().unwrap();

    // A weight change does, at once.
    let text = std::fs::read_to_string(SAMPLE)
        .unwrap()
        .replace("weight: 90", "weight: 0");
    let docs = harness::local::documents(&text);
    let watcher = {
        let client = client.clone();
        let since = first.revision;
        tokio::spawn(async move {
            let snap = client
                .snapshot("east", Some(since), Duration::from_secs(10))
                .await;
            (Instant::now(), snap)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let applied = client.apply(&docs, false).await.unwrap();
    let applied_at = Instant::now();
    let (woke_at, snap) = watcher.await.unwrap();
    let snap = snap.unwrap().expect("a new snapshot");
    let lag = woke_at.saturating_duration_since(applied_at);
    assert!(
        lag < Duration::from_millis(100),
        "watch returned {lag:?} after the apply"
    );
    assert_eq!(snap.revision, applied.revision);
    let fwd = snap.services[0].listeners[0]
        .default_action
        .forward
        .as_ref()
        .unwrap();
    assert_eq!(fwd[0].weight, 0);
    drop((half, deaf));
}

#[test]
fn api_answers_bad_requests_with_4xx_and_a_message() {
    let cp = ControlPlane::start(&["--max-body-bytes", "2000"]);
    let curl = |args: &[&str]| -> (String, String) {
        let out = harness::local::curl(&cp, &[&["-sS", "-w", "\n%{http_code}"], args].concat());
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (code.to_string(), body.to_string())
    };
    let url = |p: &str| format!("{}{p}", cp.url);

    let (code, body) = curl(&["-X", "POST", "--data", "{not json", &url("/v1/apply")]);
    assert_eq!(code, "400", "{body}");
    assert!(body.contains("\"code\":\"bad_request\""), "{body}");

    let big = format!("{{\"documents\": [\"{}\"]}}", "x".repeat(5000));
    let (code, body) = curl(&["-X", "POST", "--data", &big, &url("/v1/apply")]);
    assert_eq!(code, "413", "{body}");
    assert!(body.contains("larger than 2000 bytes"), "{body}");

    let (code, body) = curl(&[&url("/v1/gizmos")]);
    assert_eq!(code, "404", "{body}");
    assert!(body.contains("unknown kind \\\"gizmos\\\""), "{body}");

    let (code, _) = curl(&["-X", "PATCH", &url("/v1/services")]);
    assert_eq!(code, "405");

    let doc = r#"{"documents":[{"apiVersion":"trellis.dev/v1alpha1","kind":"Network","metadata":{"name":"e"},"spec":{"gateways":[{"adress":"x"}]}}]}"#;
    let (code, body) = curl(&["-X", "POST", "--data", doc, &url("/v1/apply")]);
    assert_eq!(code, "422", "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["errors"][0]["path"], "spec.gateways[0].adress");
    assert_eq!(v["errors"][0]["document"], 0);

    let (code, body) = curl(&[&url("/v1/networks/nowhere/snapshot")]);
    assert_eq!(code, "404", "{body}");
    let (code, body) = curl(&[&url("/v1/networks/nowhere/snapshot?since=x")]);
    assert_eq!(code, "400", "{body}");
}

#[test]
fn every_request_needs_the_token_loopback_included() {
    let token_less = |cp: &ControlPlane| {
        let out = std::process::Command::new(harness::local::BIN)
            .args(["get", "svc", "--server", &cp.url])
            .env("TRELLIS_CA_FILE", cp.ca_file())
            .env_remove("TRELLIS_TOKEN")
            .env_remove("TRELLIS_TOKEN_FILE")
            .output()
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(
            stderr.contains("missing, wrong, expired or revoked bearer token"),
            "{stderr}"
        );
    };
    let status = |cp: &ControlPlane, path: &str| {
        let url = format!("{}{path}", cp.url);
        let out = harness::local::curl_anonymous(
            cp,
            &["-s", "-o", "/dev/null", "-w", "%{http_code}", &url],
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    // Any local user can reach loopback: it is no credential.
    let local = ControlPlane::start(&[]);
    token_less(&local);
    assert_eq!(status(&local, "/v1/services"), "401");

    let cp = ControlPlane::start_at("0.0.0.0:0", &[]);
    let token_file = cp.token_file();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    token_less(&cp);
    // Probes need none.
    assert_eq!(status(&cp, "/healthz"), "200");

    let out = trellis(
        &cp,
        &["get", "svc", "--token-file", token_file.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = std::fs::read_to_string(&token_file).unwrap();
    let out = harness::local::trellis_env(&cp, &["get", "svc"], &[("TRELLIS_TOKEN", token.trim())]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn kill_9_mid_apply_leaves_the_old_or_the_new_state() {
    // A batch big enough that the kill lands inside it: 3,000 services.
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.yaml");
    let mut text = std::fs::read_to_string(SAMPLE).unwrap();
    for i in 0..3000 {
        text.push_str(&format!(
            "---\napiVersion: trellis.dev/v1alpha1\nkind: Service\nmetadata: {{name: s{i}}}\n\
             spec: {{serviceNetworks: [shop], listeners: [{{name: web, protocol: HTTP, \
             defaultAction: {{forward: [{{targetGroup: checkout-blue}}]}}}}]}}\n"
        ));
    }
    std::fs::write(&big, &text).unwrap();
    let pool = ["--vip-pool-v4", "169.254.0.0/16"];
    // Time one full apply, then kill at fractions of that time, so that kills
    // land while the CLI parses, while the server validates, and around the commit.
    let full = {
        let cp = ControlPlane::start(&pool);
        assert!(trellis(&cp, &["apply", "-f", SAMPLE]).status.success());
        let t = Instant::now();
        let out = trellis(&cp, &["apply", "-f", big.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        t.elapsed().as_millis() as u64
    };
    let mut outcomes = Vec::new();
    for pct in [30u64, 60, 80, 90, 95, 100, 110] {
        let delay_ms = full * pct / 100;
        let mut cp = ControlPlane::start(&pool);
        assert!(trellis(&cp, &["apply", "-f", SAMPLE]).status.success());
        let mut apply = harness::local::spawn_trellis(&cp, &["apply", "-f", big.to_str().unwrap()]);
        std::thread::sleep(Duration::from_millis(delay_ms));
        cp.kill9();
        let _ = apply.wait();
        cp.start_again();
        let list = json(&trellis(&cp, &["get", "svc", "-o", "json"]));
        let n = list["items"].as_array().unwrap().len();
        let revisions: std::collections::BTreeSet<u64> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["status"]["revision"].as_u64().unwrap())
            .collect();
        match n {
            1 => assert_eq!(revisions.into_iter().collect::<Vec<_>>(), [1]),
            3001 => assert_eq!(revisions.into_iter().collect::<Vec<_>>(), [1, 2]),
            n => panic!("after kill -9 at {delay_ms} ms: {n} services, a mix of old and new"),
        }
        outcomes.push((delay_ms, n));
    }
    eprintln!("full apply {full} ms; (kill at ms, services after restart): {outcomes:?}");
}

#[test]
fn every_sample_applies_cleanly_and_reapplies_unchanged() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/samples");
    let mut samples: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    samples.sort();
    assert!(samples.len() >= 5, "{samples:?}");
    for sample in samples {
        let cp = ControlPlane::start(&[]);
        let path = sample.to_str().unwrap();
        let out = trellis(&cp, &["apply", "-f", path]);
        assert!(
            out.status.success(),
            "{path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let again =
            String::from_utf8_lossy(&trellis(&cp, &["apply", "-f", path]).stdout).into_owned();
        assert!(
            again
                .lines()
                .filter(|l| l.contains('/'))
                .all(|l| l.ends_with(" unchanged")),
            "{path}: {again}"
        );
    }
}

#[test]
fn multi_cluster_snapshots_carry_the_other_networks_gateways() {
    let cp = ControlPlane::start(&[]);
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/samples/multi-cluster.yaml");
    assert!(trellis(&cp, &["apply", "-f", sample]).status.success());
    let east = harness::local::curl(
        &cp,
        &["-s", &format!("{}/v1/networks/east/snapshot", cp.url)],
    );
    let east: Value = serde_json::from_slice(&east.stdout).unwrap();
    let names: Vec<&str> = east["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["checkout", "orders"]);
    // east reaches orders-west through west's gateways; its own are not listed.
    assert_eq!(
        east["gateways"]["west"][1]["address"],
        "198.51.100.11:15008"
    );
    assert!(east["gateways"].get("east").is_none());

    // What west's gateways serve: orders' west group, to both networks;
    // the group itself comes along so the gateway can check and pick.
    let west = harness::local::curl(
        &cp,
        &["-s", &format!("{}/v1/networks/west/snapshot", cp.url)],
    );
    let west: Value = serde_json::from_slice(&west.stdout).unwrap();
    let orders = west["inbound"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["service"] == "orders")
        .expect("orders is served by west's gateways");
    assert_eq!(orders["networks"], serde_json::json!(["east", "west"]));
    assert_eq!(orders["targetGroups"], serde_json::json!(["orders-west"]));
    assert!(
        west["inbound"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["service"] != "checkout"),
        "checkout has no target group in west"
    );
    assert!(
        west["targetGroups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["name"] == "orders-west")
    );
}

#[test]
fn ten_handovers_fail_no_apply_and_no_watch() {
    let mut cp = ControlPlane::start(&[]);
    assert!(trellis(&cp, &["apply", "-f", SAMPLE]).status.success());
    let sample = std::fs::read_to_string(SAMPLE).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));

    // A node's watch: long-polls of the snapshot, one after the other.
    let client = harness::local::client(&cp);
    let watching = stop.clone();
    let watcher = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (mut since, mut polls, mut failed) = (0u64, 0u32, Vec::new());
            while !watching.load(std::sync::atomic::Ordering::Relaxed) {
                match client
                    .snapshot("east", Some(since), Duration::from_secs(2))
                    .await
                {
                    Ok(Some(s)) => since = s.revision,
                    Ok(None) => {}
                    Err(e) => failed.push(e.to_string()),
                }
                polls += 1;
            }
            (since, polls, failed)
        })
    });
    // An operator shifting weights, apply after apply.
    let applying = stop.clone();
    let (url, token, ca) = (cp.url.clone(), cp.token_file(), cp.ca_file());
    let dir = tempfile::tempdir().unwrap();
    let applier = std::thread::spawn(move || {
        let (mut applied, mut failed, mut weight) = (0u32, Vec::new(), 90);
        while !applying.load(std::sync::atomic::Ordering::Relaxed) {
            weight = if weight == 90 { 80 } else { 90 };
            let file = dir.path().join("shift.yaml");
            let shifted = sample
                .replace("weight: 90", &format!("weight: {weight}"))
                .replace("weight: 10", &format!("weight: {}", 100 - weight));
            std::fs::write(&file, shifted).unwrap();
            let out = std::process::Command::new(harness::BIN)
                .args(["apply", "-f"])
                .arg(&file)
                .args(["--server", &url])
                .env("TRELLIS_TOKEN_FILE", &token)
                .env("TRELLIS_CA_FILE", &ca)
                .output()
                .unwrap();
            match out.status.success() {
                true => applied += 1,
                false => failed.push(String::from_utf8_lossy(&out.stderr).to_string()),
            }
        }
        (applied, failed)
    });

    std::thread::sleep(Duration::from_millis(500));
    for _ in 0..10 {
        cp.hand_over();
        std::thread::sleep(Duration::from_millis(300));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (applied, apply_failures) = applier.join().unwrap();
    let (seen, polls, watch_failures) = watcher.join().unwrap();
    println!("{applied} applies, {polls} watch polls across ten handovers");
    assert!(apply_failures.is_empty(), "{apply_failures:?}");
    assert!(watch_failures.is_empty(), "{watch_failures:?}");
    assert!(applied >= 10, "{applied}");
    // The watch followed the applies through every handover.
    assert!(
        seen > u64::from(applied / 2),
        "revision {seen} after {applied} applies"
    );
}

/// Issue 23: a watcher holding a revision is sent only what changed since,
/// gzip-compressed; one holding nothing, or a revision the control plane
/// cannot vouch for, the whole snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weight_change_reaches_a_watcher_as_a_small_delta() {
    use trellis_api::client::Update;
    let mut cp = ControlPlane::start(&[]);
    let mut yaml = String::from(
        "apiVersion: trellis.dev/v1alpha1\nkind: Network\nmetadata: {name: east}\nspec: {}\n---\n\
         apiVersion: trellis.dev/v1alpha1\nkind: ServiceNetwork\nmetadata: {name: shop}\nspec: {networks: [east]}\n",
    );
    let service = |i: usize, weight: u32| {
        format!(
            "---\napiVersion: trellis.dev/v1alpha1\nkind: Service\nmetadata: {{name: s{i}}}\n\
             spec:\n  serviceNetworks: [shop]\n  listeners:\n    - name: web\n      protocol: HTTP\n\
             \x20     defaultAction: {{forward: [{{targetGroup: g{i}-blue, weight: {weight}}}, {{targetGroup: g{i}-green, weight: {}}}]}}\n",
            100 - weight
        )
    };
    for i in 0..200 {
        for colour in ["blue", "green"] {
            yaml.push_str(&format!(
                "---\napiVersion: trellis.dev/v1alpha1\nkind: TargetGroup\nmetadata: {{name: g{i}-{colour}}}\n\
                 spec: {{network: east, port: 8080, targets: [{{address: 10.0.{}.{}}}]}}\n",
                i / 100,
                i % 100 + 1
            ));
        }
        yaml.push_str(&service(i, 90));
    }
    let client = harness::local::client(&cp);
    client
        .apply(&harness::local::documents(&yaml), false)
        .await
        .unwrap();

    let whole = client
        .watch("east", None, Duration::ZERO)
        .await
        .unwrap()
        .unwrap();
    let Update::Whole(held) = whole.update else {
        panic!("a first watch is answered whole");
    };
    assert_eq!(held.services.len(), 200);
    let plain = serde_json::to_vec(&held).unwrap().len();
    assert!(
        whole.wire_bytes * 5 < plain,
        "compressed: {} of {plain} bytes",
        whole.wire_bytes
    );

    let watcher = {
        let (client, since) = (client.clone(), held.revision);
        tokio::spawn(async move {
            client
                .watch("east", Some(since), Duration::from_secs(10))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    client
        .apply(&harness::local::documents(&service(7, 50)), false)
        .await
        .unwrap();
    let delta = watcher.await.unwrap().unwrap().expect("a change");
    assert!(
        delta.wire_bytes < 2048,
        "{} bytes on the wire",
        delta.wire_bytes
    );
    let Update::Delta(d) = delta.update else {
        panic!("a watcher holding a revision is sent a delta");
    };
    assert_eq!(d.len(), 1);
    assert_eq!(d.services.put[0].name, "s7");
    let next = held.with(&d).expect("the delta applies");
    let fresh = client
        .snapshot("east", None, Duration::ZERO)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next, fresh, "delta and whole snapshot agree");

    // A revision from before this control plane's memory (it restarted, or
    // the watcher is from elsewhere): the whole snapshot.
    cp.restart();
    let client = harness::local::client(&cp);
    client
        .apply(&harness::local::documents(&service(8, 40)), false)
        .await
        .unwrap();
    let after = client
        .watch("east", Some(next.revision), Duration::from_secs(10))
        .await
        .unwrap()
        .expect("a change");
    assert!(matches!(after.update, Update::Whole(ref s) if s.services.len() == 200));
}

/// Issue 23: nodes' watches have their own connection budget. With room
/// for one, a second node is told to come back later (503, Retry-After)
/// while `trellis apply` still works, and is served once the first leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_have_their_own_budget_and_never_crowd_out_operators() {
    let cp = ControlPlane::start(&["--max-watchers", "1"]);
    assert!(trellis(&cp, &["apply", "-f", SAMPLE]).status.success());
    let (a, b) = (harness::local::private_dir(), harness::local::private_dir());
    let first = harness::local::node_client(&cp, "east", a.path()).await;
    let second = harness::local::node_client(&cp, "east", b.path()).await;
    let held = first
        .snapshot("east", None, Duration::ZERO)
        .await
        .unwrap()
        .unwrap();
    // The first node's connection is kept (keep-alive): the budget is full.
    let refused = second.snapshot("east", None, Duration::ZERO).await;
    match refused {
        Err(trellis_api::client::ClientError::Api { status, error }) => {
            assert_eq!(status, 503);
            assert!(error.message.contains("retry later"), "{error:?}");
        }
        other => panic!("expected 503, got {other:?}"),
    }
    let unrelated =
        "apiVersion: trellis.dev/v1alpha1\nkind: Network\nmetadata: {name: other}\nspec: {}\n";
    let applied = harness::local::client(&cp)
        .apply(&harness::local::documents(unrelated), false)
        .await
        .expect("operators have their own budget");
    assert!(applied.revision > held.revision);

    drop(first);
    let mut served = None;
    for _ in 0..50 {
        match second.snapshot("east", None, Duration::ZERO).await {
            Ok(s) => {
                served = s;
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert_eq!(
        served.expect("served once the first left").services,
        held.services
    );
}
