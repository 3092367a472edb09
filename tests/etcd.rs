//! The control plane on etcd (issue 24): several `trellis control-plane`
//! replicas on one three-member etcd cluster, all on loopback. Applies go
//! to every replica at once (each allocating a VIP), node-style watches run
//! against every replica, an etcd member and a replica are SIGKILLed and
//! brought back; afterwards every acknowledged apply is there, no VIP is
//! held twice, every watcher holds the final revision and none ever saw
//! its revision go backwards. A replica cut off from etcd refuses applies
//! with 503 and keeps answering reads.

mod harness;

use harness::etcd::{self, Etcd};
use harness::local::{ControlPlane, client, client_at, documents, trellis_env};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use trellis_api::Kind;

const BASE: &str = "
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
metadata: {name: web}
spec: {network: east, port: 8080, targets: [{address: 10.0.0.1}]}
";

fn service(name: &str) -> String {
    format!(
        "apiVersion: trellis.dev/v1alpha1\nkind: Service\nmetadata: {{name: {name}}}\n\
         spec: {{serviceNetworks: [shop], listeners: [{{name: web, protocol: HTTP, \
         defaultAction: {{forward: [{{targetGroup: web}}]}}}}]}}\n"
    )
}

/// Flags of a replica on `etcd` under `prefix`.
fn flags(endpoints: &str, prefix: &str) -> Vec<String> {
    let mut flags = etcd_flags(endpoints, prefix);
    // Room for every service the appliers make.
    flags.extend(["--vip-pool-v4".into(), "169.254.128.0/17".into()]);
    flags
}

/// How to reach `etcd` under `prefix` (what `migrate` takes too).
fn etcd_flags(endpoints: &str, prefix: &str) -> Vec<String> {
    vec![
        "--etcd-endpoints".into(),
        endpoints.into(),
        "--etcd-prefix".into(),
        prefix.into(),
        "--etcd-max-txn-ops".into(),
        etcd::MAX_TXN_OPS.to_string(),
        "--etcd-max-request-bytes".into(),
        etcd::MAX_REQUEST_BYTES.to_string(),
        "--etcd-timeout".into(),
        "2s".into(),
    ]
}

/// Replicas sharing one installation: each is given the secrets key file
/// (as an operator hands it to every replica) and finds the rest (the node
/// CA, the admin token) in etcd, where the first one put it.
fn replicas(endpoints: &str, prefix: &str, n: usize) -> Vec<ControlPlane> {
    let flags = flags(endpoints, prefix);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let first = ControlPlane::start(&flags);
    let mut all = vec![first];
    for _ in 1..n {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(
            all[0].data_dir.path().join("secrets.key"),
            dir.path().join("secrets.key"),
        )
        .unwrap();
        all.push(ControlPlane::start_in(dir, "127.0.0.1:0", &flags));
    }
    all
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A node of `east` watching through `c` (its certificate), as `trellis
/// node` does: the whole snapshot first, then deltas applied to it and
/// checked against the digest they promise (a delta made by one replica
/// against what another sent must fit). Records every revision it holds,
/// until it holds `until` (or 20 s after `until` is set, to end a test
/// that fails).
fn watcher(
    c: trellis_api::client::Client,
    until: Arc<AtomicU64>,
) -> std::thread::JoinHandle<Vec<u64>> {
    use trellis_api::client::Update;
    std::thread::spawn(move || {
        runtime().block_on(async {
            let mut seen: Vec<u64> = Vec::new();
            let mut held: Option<trellis_api::snapshot::Snapshot> = None;
            let mut told: Option<Instant> = None;
            loop {
                let want = until.load(Ordering::Relaxed);
                if want != u64::MAX {
                    let since = *told.get_or_insert_with(Instant::now);
                    if seen.last().is_some_and(|r| *r >= want)
                        || since.elapsed() > Duration::from_secs(20)
                    {
                        break;
                    }
                }
                let since = held.as_ref().map(|s| s.revision);
                match c.watch("east", since, Duration::from_secs(1)).await {
                    Ok(Some(w)) => {
                        let next = match (w.update, &held) {
                            (Update::Whole(s), _) => s,
                            (Update::Delta(d), Some(h)) => h
                                .with(&d)
                                .unwrap_or_else(|e| panic!("a delta that does not fit: {e}")),
                            (Update::Delta(_), None) => panic!("a delta with nothing held"),
                        };
                        seen.push(next.revision);
                        held = Some(next);
                    }
                    Ok(None) => {}
                    // The replica is down for a while: ask again.
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
            seen
        })
    })
}

/// A client with a node certificate of `east`, joined through `cp`, of the
/// replicas at `urls`.
fn node(cp: &ControlPlane, urls: &str, dir: &std::path::Path) -> trellis_api::client::Client {
    use trellis_api::client::{Client, Credential, Trust};
    let ca = Trust::from_pem(&std::fs::read_to_string(cp.ca_file()).unwrap()).unwrap();
    let token = trellis_api::pki::JoinSecret::parse(&cp.join_token("east", "node")).unwrap();
    let enroll = Client::new(
        &cp.url,
        ca.clone(),
        Credential::None,
        Duration::from_secs(10),
    )
    .unwrap();
    let identity = runtime()
        .block_on(trellis_api::identity::Identity::enroll(
            &enroll,
            trellis_api::pki::Role::Node,
            "east",
            dir,
            Some(&token.secret),
        ))
        .expect("a node certificate");
    Client::new(urls, ca, identity.credential(), Duration::from_secs(10)).unwrap()
}

/// Waits until `cp` has every service in `names`; returns its services'
/// VIPs and its revision.
fn converged(cp: &ControlPlane, names: &BTreeSet<String>) -> (BTreeMap<String, String>, u64) {
    let c = client(cp);
    runtime().block_on(async {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let listed = c.list(Kind::Service).await.expect("list services");
            let vips: BTreeMap<String, String> = listed
                .items
                .iter()
                .map(|o| {
                    let vip = o.status.vip.map(|v| v.to_string()).unwrap_or_default();
                    (o.resource.name().to_string(), vip)
                })
                .collect();
            let have: BTreeSet<String> = vips.keys().cloned().collect();
            if names.is_subset(&have) {
                let revision = listed
                    .items
                    .iter()
                    .map(|o| o.status.revision)
                    .max()
                    .unwrap_or(0);
                return (vips, revision);
            }
            assert!(
                Instant::now() < deadline,
                "{} is missing {:?}",
                cp.url,
                names.difference(&have).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}

/// Applies one new service after another through `c` until `stop`,
/// returning the names whose apply was acknowledged.
fn applier(
    c: trellis_api::client::Client,
    tag: String,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<String>> {
    std::thread::spawn(move || {
        runtime().block_on(async {
            let mut acknowledged = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let name = format!("{tag}-{i}");
                i += 1;
                match c.apply(&documents(&service(&name)), false).await {
                    Ok(_) => acknowledged.push(name),
                    Err(e) => {
                        eprintln!("{tag}: {name} not applied: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
            acknowledged
        })
    })
}

#[test]
fn replicas_on_etcd_share_one_truth_through_kills() {
    if !etcd::available("replicas_on_etcd_share_one_truth_through_kills") {
        return;
    }
    let mut etcd = Etcd::cluster(3);
    let prefix = "/t-kills/";
    let mut cps = replicas(&etcd.endpoints(), prefix, 3);
    let c0 = client(&cps[0]);
    runtime()
        .block_on(c0.apply(&documents(BASE), false))
        .expect("the base applies");

    let stop = Arc::new(AtomicBool::new(false));
    // A watcher and an applier on each replica, and one of each given
    // every replica's URL, starting with the one that will be killed.
    let all = [2, 0, 1].map(|i| cps[i].url.clone()).join(",");
    let node_dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let until = Arc::new(AtomicU64::new(u64::MAX));
    let mut watchers: Vec<_> = cps
        .iter()
        .zip(&node_dirs)
        .map(|(cp, dir)| watcher(node(cp, &cp.url, dir.path()), until.clone()))
        .collect();
    watchers.push(watcher(
        node(&cps[0], &all, node_dirs[3].path()),
        until.clone(),
    ));
    let mut appliers: Vec<_> = cps
        .iter()
        .enumerate()
        .map(|(i, cp)| applier(client(cp), format!("r{i}"), stop.clone()))
        .collect();
    appliers.push(applier(
        client_at(&cps[0], &all),
        "any".into(),
        stop.clone(),
    ));

    std::thread::sleep(Duration::from_secs(2));
    // One etcd member and one replica die.
    etcd.kill(1);
    cps[2].kill9();
    std::thread::sleep(Duration::from_secs(2));
    etcd.start(1);
    cps[2].start_again();
    etcd.wait_healthy(&[0, 1, 2]);
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);

    let results: Vec<Vec<String>> = appliers.into_iter().map(|a| a.join().unwrap()).collect();
    // The applier given every URL kept going past the replica's death.
    assert!(
        results[3].len() >= 5,
        "the failing-over applier: {:?}",
        results[3]
    );
    let acknowledged: BTreeSet<String> = results.into_iter().flatten().collect();
    assert!(
        acknowledged.len() >= 20,
        "only {} applies were acknowledged",
        acknowledged.len()
    );
    // Every replica has every acknowledged apply, at the same revision.
    let mut views = Vec::new();
    for cp in &cps {
        views.push(converged(cp, &acknowledged));
    }
    let (vips, revision) = &views[0];
    for (other, r) in &views[1..] {
        assert_eq!(other, vips, "the replicas disagree");
        assert_eq!(r, revision);
    }
    // No VIP held by two services.
    let distinct: BTreeSet<&String> = vips.values().collect();
    assert_eq!(
        distinct.len(),
        vips.len(),
        "a VIP handed out twice: {vips:?}"
    );
    assert!(vips.values().all(|v| !v.is_empty()));

    // Watchers: each comes to hold the final revision, and none ever
    // went backwards on the way.
    let final_revision = runtime()
        .block_on(c0.snapshot("east", None, Duration::ZERO))
        .unwrap()
        .unwrap()
        .revision;
    until.store(final_revision, Ordering::Relaxed);
    for (i, w) in watchers.into_iter().enumerate() {
        let seen = w.join().unwrap();
        assert!(
            seen.windows(2).all(|p| p[0] < p[1]),
            "watcher {i} went backwards: {seen:?}"
        );
        assert_eq!(
            seen.last(),
            Some(&final_revision),
            "watcher {i} does not hold the final revision"
        );
    }
    eprintln!(
        "{} applies acknowledged across 3 replicas; final revision {final_revision}",
        acknowledged.len()
    );
}

#[test]
fn a_replica_cut_off_from_etcd_refuses_applies_and_serves_reads() {
    if !etcd::available("a_replica_cut_off_from_etcd_refuses_applies_and_serves_reads") {
        return;
    }
    let mut etcd = Etcd::cluster(3);
    // This replica talks to member 2 only.
    let only = etcd.members[2].client.clone();
    let cps = replicas(&only, "/t-cut/", 1);
    let c = client(&cps[0]);
    let rt = runtime();
    rt.block_on(c.apply(&documents(BASE), false)).unwrap();
    rt.block_on(c.apply(&documents(&service("before")), false))
        .unwrap();
    etcd.kill(2);
    let started = Instant::now();
    let refused = rt
        .block_on(c.apply(&documents(&service("after")), false))
        .unwrap_err();
    let took = started.elapsed();
    match &refused {
        trellis_api::client::ClientError::Api { status, error } => {
            assert_eq!(status.as_u16(), 503, "{}", error.message);
            assert!(error.message.contains("etcd"), "{}", error.message);
        }
        e => panic!("expected a 503, got {e}"),
    }
    assert!(took < Duration::from_secs(10), "refused after {took:?}");
    // Reads still answer, from what the replica last had, and say so.
    let listed = rt.block_on(c.list(Kind::Service)).unwrap();
    let names: Vec<&str> = listed.items.iter().map(|o| o.resource.name()).collect();
    assert_eq!(names, ["before"]);
    let out = harness::local::curl(&cps[0], &["-si", &format!("{}/v1/services", cps[0].url)]);
    let answer = String::from_utf8_lossy(&out.stdout);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let stale = answer
        .lines()
        .find(|l| l.starts_with("x-trellis-stale:"))
        .unwrap_or_else(|| panic!("no staleness said: {answer}"));
    assert!(stale.contains("as of revision 2"), "{stale}");
    // Watches are sent to another replica once the cut lasts.
    std::thread::sleep(Duration::from_secs(3));
    let watched = rt.block_on(c.snapshot("east", Some(1), Duration::from_secs(1)));
    match watched {
        Err(trellis_api::client::ClientError::Api { status, error }) => {
            assert_eq!(status.as_u16(), 503);
            assert!(
                error.message.contains("another replica"),
                "{}",
                error.message
            );
        }
        other => panic!("a watch on a cut-off replica: {other:?}"),
    }
    // The other members never saw "after".
    let keys = etcd.keys("/t-cut/state/objects/Service/");
    assert_eq!(keys, ["/t-cut/state/objects/Service/before"]);
}

#[test]
fn clients_given_every_replica_move_past_a_dead_one() {
    if !etcd::available("clients_given_every_replica_move_past_a_dead_one") {
        return;
    }
    let etcd = Etcd::cluster(1);
    let mut cps = replicas(&etcd.endpoints(), "/t-failover/", 2);
    let all = format!("{},{}", cps[0].url, cps[1].url);
    let env = [("TRELLIS_SERVER", all.as_str())];
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), format!("{BASE}---\n{}", service("shop-web"))).unwrap();
    let path = file.path().to_str().unwrap();
    let out = trellis_env(&cps[0], &["apply", "-f", path], &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The first URL's replica dies: the CLI moves on to the second.
    cps[0].kill9();
    let started = Instant::now();
    let out = trellis_env(&cps[0], &["get", "services", "-o", "json"], &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("shop-web"));
    std::fs::write(file.path(), service("shop-api")).unwrap();
    let out = trellis_env(&cps[0], &["apply", "-f", path], &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "moving on took {:?}",
        started.elapsed()
    );
    // The dead one, back, catches up from etcd.
    cps[0].start_again();
    let names: BTreeSet<String> = ["shop-web", "shop-api"].map(String::from).into();
    assert_eq!(converged(&cps[0], &names).1, converged(&cps[1], &names).1);
}

#[test]
fn replicas_share_the_ca_and_every_token_through_etcd() {
    use trellis_api::client::{Client, Credential, NewApiToken, TokenRole, Trust};
    if !etcd::available("replicas_share_the_ca_and_every_token_through_etcd") {
        return;
    }
    let etcd = Etcd::cluster(1);
    let cps = replicas(&etcd.endpoints(), "/t-docs/", 2);
    let read = |cp: &ControlPlane, f: &str| std::fs::read(cp.data_dir.path().join(f)).unwrap();
    assert_eq!(read(&cps[0], "ca.pem"), read(&cps[1], "ca.pem"));
    assert_eq!(read(&cps[0], "api-token"), read(&cps[1], "api-token"));
    // The secrets stay sealed in etcd: no key or token in the clear.
    let dump = std::process::Command::new("etcdctl")
        .args([
            "--endpoints",
            &etcd.endpoints(),
            "get",
            "--prefix",
            "/t-docs/state/docs/",
        ])
        .output()
        .unwrap()
        .stdout;
    let dump = String::from_utf8_lossy(&dump);
    assert!(dump.contains("/t-docs/state/docs/ca.key") && dump.contains("BEGIN CERTIFICATE"));
    assert!(!dump.contains("PRIVATE KEY"));
    let admin = String::from_utf8(read(&cps[0], "api-token")).unwrap();
    assert!(!dump.contains(admin.trim()));

    let rt = runtime();
    let (c0, c1) = (client(&cps[0]), client(&cps[1]));
    rt.block_on(c0.apply(&documents(BASE), false)).unwrap();
    // One audit log: the apply made through one replica is in the log
    // read through the other.
    let trail = rt.block_on(c1.audit(0, Some("admin"))).unwrap();
    assert!(
        trail
            .iter()
            .any(|r| r.path == "/v1/apply" && r.status == 200 && r.revision == Some(1)),
        "{trail:?}"
    );

    // A join token made on one replica lets a node join through the other.
    let token = trellis_api::pki::JoinSecret::parse(&cps[0].join_token("east", "node")).unwrap();
    let ca = Trust::from_pem(&String::from_utf8(read(&cps[1], "ca.pem")).unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let enroll = Client::new(&cps[1].url, ca, Credential::None, Duration::from_secs(10)).unwrap();
    let joined = rt.block_on(trellis_api::identity::Identity::enroll(
        &enroll,
        trellis_api::pki::Role::Node,
        "east",
        dir.path(),
        Some(&token.secret),
    ));
    assert!(joined.is_ok(), "{:?}", joined.err());

    // A named token made on one replica works on the other; revoked on
    // the other, it stops working on the first.
    let viewer = rt
        .block_on(c0.create_token(&NewApiToken {
            name: "watcher".into(),
            role: TokenRole::Viewer,
            scopes: vec![],
            ttl_seconds: 3600,
        }))
        .unwrap();
    let text = viewer.token.unwrap();
    let as_viewer = |cp: &ControlPlane| {
        let ca = Trust::from_pem(&String::from_utf8(read(cp, "ca.pem")).unwrap()).unwrap();
        Client::new(
            &cp.url,
            ca,
            Credential::Token(text.clone()),
            Duration::from_secs(10),
        )
        .unwrap()
    };
    assert!(rt.block_on(as_viewer(&cps[1]).list(Kind::Service)).is_ok());
    rt.block_on(c1.revoke_token("watcher")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match rt.block_on(as_viewer(&cps[0]).list(Kind::Service)) {
            Err(trellis_api::client::ClientError::Api { status, .. }) if status.as_u16() == 401 => {
                break;
            }
            other => assert!(
                Instant::now() < deadline,
                "still accepted on the other replica: {other:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_embedded_store_moves_to_etcd_and_back() {
    if !etcd::available("an_embedded_store_moves_to_etcd_and_back") {
        return;
    }
    let etcd = Etcd::cluster(1);
    let rt = runtime();
    // An embedded control plane with services, a join token and keys.
    let mut embedded = ControlPlane::start(&[]);
    let c = client(&embedded);
    rt.block_on(c.apply(&documents(BASE), false)).unwrap();
    for name in ["a", "b", "c"] {
        rt.block_on(c.apply(&documents(&service(name)), false))
            .unwrap();
    }
    let token = embedded.join_token("east", "node");
    let state = |cp: &ControlPlane| {
        let names: BTreeSet<String> = ["a", "b", "c"].map(String::from).into();
        converged(cp, &names)
    };
    let before = state(&embedded);
    let revision = rt
        .block_on(c.snapshot("east", None, Duration::ZERO))
        .unwrap()
        .unwrap()
        .revision;
    embedded.kill9();

    // Into etcd: the same revision, VIPs, CA and admin token.
    let flags = etcd_flags(&etcd.endpoints(), "/t-migrate/");
    let migrate = |to: &str, dir: &std::path::Path| {
        let out = std::process::Command::new(harness::BIN)
            .args(["control-plane", "migrate", "--to", to, "--data-dir"])
            .arg(dir)
            .args(&flags)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let said = migrate("etcd", embedded.data_dir.path());
    assert!(
        said.contains(&format!("copied revision {revision}")),
        "{said}"
    );
    // Into a non-empty prefix: refused, nothing changed.
    let out = std::process::Command::new(harness::BIN)
        .args(["control-plane", "migrate", "--to", "etcd", "--data-dir"])
        .arg(embedded.data_dir.path())
        .args(&flags)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already holds a store"));

    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        embedded.data_dir.path().join("secrets.key"),
        dir.path().join("secrets.key"),
    )
    .unwrap();
    let flags_ref: Vec<&str> = flags.iter().map(String::as_str).collect();
    let replica = ControlPlane::start_in(dir, "127.0.0.1:0", &flags_ref);
    assert_eq!(state(&replica), before);
    let read = |cp: &ControlPlane, f: &str| std::fs::read(cp.data_dir.path().join(f)).unwrap();
    assert_eq!(read(&replica, "ca.pem"), read(&embedded, "ca.pem"));
    assert_eq!(read(&replica, "api-token"), read(&embedded, "api-token"));
    // The join token made before the move still joins.
    let joined = {
        use trellis_api::client::{Client, Credential, Trust};
        let secret = trellis_api::pki::JoinSecret::parse(&token).unwrap();
        let ca = Trust::from_pem(&String::from_utf8(read(&replica, "ca.pem")).unwrap()).unwrap();
        let enroll =
            Client::new(&replica.url, ca, Credential::None, Duration::from_secs(10)).unwrap();
        let node_dir = tempfile::tempdir().unwrap();
        rt.block_on(trellis_api::identity::Identity::enroll(
            &enroll,
            trellis_api::pki::Role::Node,
            "east",
            node_dir.path(),
            Some(&secret.secret),
        ))
    };
    assert!(joined.is_ok(), "{:?}", joined.err());
    drop(replica);

    // And back into a new data dir, for a backup or a move off etcd.
    let back = tempfile::tempdir().unwrap();
    std::fs::copy(
        embedded.data_dir.path().join("secrets.key"),
        back.path().join("secrets.key"),
    )
    .unwrap();
    let said = migrate("data-dir", back.path());
    assert!(
        said.contains(&format!("copied revision {revision}")),
        "{said}"
    );
    let restored = ControlPlane::start_in(back, "127.0.0.1:0", &[]);
    assert_eq!(state(&restored), before);
    assert_eq!(read(&restored, "ca.pem"), read(&embedded, "ca.pem"));
}

#[test]
fn replicas_reach_etcd_over_tls_and_with_a_password() {
    if !etcd::available("replicas_reach_etcd_over_tls_and_with_a_password") {
        return;
    }
    // etcd's own PKI: a CA, the member's certificate for 127.0.0.1, and a
    // client certificate the members require.
    let pki = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let p = pki.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, &ca_key);
    let leaf = |names: Vec<String>, cn: &str| {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let cert = params.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_pem, server_key) = leaf(vec!["127.0.0.1".into(), "localhost".into()], "etcd");
    let (client_pem, client_key) = leaf(vec![], "trellis");
    let ca = file("ca.pem", &ca_cert.pem());
    let (server_pem, server_key) = (
        file("server.pem", &server_pem),
        file("server.key", &server_key),
    );
    let (client_pem, client_key) = (
        file("client.pem", &client_pem),
        file("client.key", &client_key),
    );
    let member_flags = [
        "--cert-file",
        &server_pem,
        "--key-file",
        &server_key,
        "--trusted-ca-file",
        &ca,
        "--client-cert-auth",
    ]
    .map(String::from);
    let ctl_flags =
        ["--cacert", &ca, "--cert", &client_pem, "--key", &client_key].map(String::from);
    let etcd = Etcd::cluster_with(1, "https", &member_flags, &ctl_flags);

    // Over TLS with the client certificate: serves.
    let mut tls = etcd_flags(&etcd.endpoints(), "/t-tls/");
    tls.extend(ctl_flags.iter().map(|f| f.replacen("--", "--etcd-", 1)));
    let tls: Vec<&str> = tls.iter().map(String::as_str).collect();
    let cp = ControlPlane::start(&tls);
    runtime()
        .block_on(client(&cp).apply(&documents(BASE), false))
        .expect("an apply over TLS");
    drop(cp);

    // Etcd's own users: with the right password it serves, with a wrong
    // one it does not start, and says why.
    let ctl: Vec<&str> = ctl_flags.iter().map(String::as_str).collect();
    let with = |args: &[&str]| etcd.ctl(&[&ctl[..], args].concat());
    with(&["user", "add", "root", "--new-user-password", "s3cret"]);
    with(&["auth", "enable"]);
    let password = file("password", "s3cret\n");
    let wrong = file("wrong", "guess\n");
    let mut auth = etcd_flags(&etcd.endpoints(), "/t-auth/");
    auth.extend(ctl_flags.iter().map(|f| f.replacen("--", "--etcd-", 1)));
    auth.extend([
        "--etcd-user".into(),
        "root".into(),
        "--etcd-password-file".into(),
        password,
    ]);
    let auth_ref: Vec<&str> = auth.iter().map(String::as_str).collect();
    let cp = ControlPlane::start(&auth_ref);
    runtime()
        .block_on(client(&cp).apply(&documents(BASE), false))
        .expect("an apply as an etcd user");
    drop(cp);
    let last = auth.len() - 1;
    auth[last] = wrong;
    let out = std::process::Command::new(harness::BIN)
        .args(["control-plane", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(pki.path().join("other"))
        .args(&auth)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("connecting to etcd"), "{said}");
    assert!(
        said.to_lowercase().contains("authentication failed"),
        "{said}"
    );
}
