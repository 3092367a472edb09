//! Named API tokens with roles, through the CLI as operators use them: an
//! editor changes what is in its scope and nothing else, a viewer reads
//! without secrets, a key manager handles its identities' keys, and a
//! revoked or expired token is refused on its next request.

mod harness;

use harness::local::{ControlPlane, trellis};
use std::path::PathBuf;
use std::process::Output;

const YAML: &str = r#"
apiVersion: trellis.dev/v1alpha1
kind: Network
metadata: {name: east}
spec: {}
---
apiVersion: trellis.dev/v1alpha1
kind: Network
metadata: {name: west}
spec: {}
---
apiVersion: trellis.dev/v1alpha1
kind: ServiceNetwork
metadata: {name: shop}
spec: {networks: [east]}
---
apiVersion: trellis.dev/v1alpha1
kind: ServiceNetwork
metadata: {name: pay}
spec: {networks: [west]}
---
apiVersion: trellis.dev/v1alpha1
kind: TargetGroup
metadata: {name: cart}
spec: {network: east, port: 8080, targets: [{address: 10.0.1.10}]}
---
apiVersion: trellis.dev/v1alpha1
kind: TargetGroup
metadata: {name: ledger}
spec: {network: west, port: 8080, targets: [{address: 10.0.2.10}]}
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: cart}
spec:
  serviceNetworks: [shop]
  listeners:
    - {name: web, protocol: HTTP, defaultAction: {forward: [{targetGroup: cart}]}}
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: ledger}
spec:
  serviceNetworks: [pay]
  listeners:
    - {name: web, protocol: HTTP, defaultAction: {forward: [{targetGroup: ledger}]}}
---
apiVersion: trellis.dev/v1alpha1
kind: Identity
metadata: {name: alice}
spec: {}
---
apiVersion: trellis.dev/v1alpha1
kind: Identity
metadata: {name: bob}
spec: {}
"#;

struct Env {
    cp: ControlPlane,
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let env = Env {
            cp: ControlPlane::start(&[]),
            dir: tempfile::tempdir().unwrap(),
        };
        let out = env.apply_as(None, YAML);
        assert!(out.status.success(), "{}", stderr(&out));
        env
    }

    /// Creates a token with the bootstrap token; the file holding it.
    fn token(&self, name: &str, args: &[&str]) -> PathBuf {
        let out = trellis(&self.cp, &[&["token", "create", name], args].concat());
        assert!(out.status.success(), "{}", stderr(&out));
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(text.starts_with("trellis-token-"), "{text}");
        let file = self.dir.path().join(name);
        std::fs::write(&file, text).unwrap();
        file
    }

    /// The CLI with the token in `file` (the bootstrap one if `None`).
    fn run_as(&self, file: Option<&PathBuf>, args: &[&str]) -> Output {
        let file = file.cloned().unwrap_or_else(|| self.cp.token_file());
        harness::local::trellis_env(
            &self.cp,
            args,
            &[("TRELLIS_TOKEN_FILE", file.to_str().unwrap())],
        )
    }

    fn apply_as(&self, file: Option<&PathBuf>, yaml: &str) -> Output {
        let path = self.dir.path().join("apply.yaml");
        std::fs::write(&path, yaml).unwrap();
        self.run_as(file, &["apply", "-f", path.to_str().unwrap()])
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// The documents of YAML named `kind/name`, with `from` replaced by `to`.
fn edited(kind: &str, name: &str, from: &str, to: &str) -> String {
    YAML.split("---")
        .find(|d| d.contains(&format!("kind: {kind}\n")) && d.contains(&format!("name: {name}}}")))
        .unwrap_or_else(|| panic!("{kind}/{name}"))
        .replace(from, to)
}

#[test]
fn an_editor_changes_its_scope_and_nothing_else() {
    let env = Env::new();
    let editor = env.token(
        "shop-team",
        &["--role", "editor", "--scope", "servicenetwork/shop"],
    );
    let refused = |out: Output, why: &str| {
        assert!(!out.status.success(), "allowed");
        let e = stderr(&out);
        assert!(e.contains(why), "{e}");
    };
    // Its own service and its network's target group: yes.
    let out = env.apply_as(
        Some(&editor),
        &edited("Service", "cart", "name: web", "name: www"),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let moved_port = edited("TargetGroup", "cart", "port: 8080", "port: 8081");
    let out = env.apply_as(Some(&editor), &moved_port);
    assert!(out.status.success(), "{}", stderr(&out));
    let blue = edited("TargetGroup", "cart", "name: cart", "name: cart-blue");
    let out = env.apply_as(Some(&editor), &blue);
    assert!(out.status.success(), "{}", stderr(&out));
    // Another service network's service, another network's target group.
    refused(
        env.apply_as(
            Some(&editor),
            &edited("TargetGroup", "ledger", "8080", "8081"),
        ),
        "TargetGroup/ledger is in network west, outside this token's scope",
    );
    refused(
        env.apply_as(
            Some(&editor),
            &edited("Service", "ledger", "name: web", "name: www"),
        ),
        "Service/ledger is in service network pay, outside this token's scope",
    );
    // Moving its service into another service network, or taking one over.
    refused(
        env.apply_as(
            Some(&editor),
            &edited("Service", "cart", "[shop]", "[shop, pay]"),
        ),
        "is in service network pay",
    );
    refused(
        env.apply_as(
            Some(&editor),
            &edited("Service", "ledger", "[pay]", "[shop]"),
        ),
        "Service/ledger is in service network pay",
    );
    // Networks, service networks, identities: never.
    refused(
        env.apply_as(
            Some(&editor),
            "apiVersion: trellis.dev/v1alpha1\nkind: Network\nmetadata: {name: north}\nspec: {}\n",
        ),
        "an editor changes only services and target groups",
    );
    refused(
        env.run_as(Some(&editor), &["delete", "svc", "ledger"]),
        "Service/ledger is in service network pay",
    );
    refused(
        env.run_as(Some(&editor), &["delete", "identity", "bob"]),
        "may not delete Identity/bob",
    );
    refused(
        env.run_as(Some(&editor), &["identity", "create", "alice"]),
        "may not",
    );
    refused(
        env.run_as(Some(&editor), &["network", "join-token", "east"]),
        "may not create join tokens",
    );
    refused(
        env.run_as(
            Some(&editor),
            &["token", "create", "mine", "--role", "admin"],
        ),
        "may not manage API tokens",
    );
    // Its own: delete.
    let out = env.run_as(Some(&editor), &["delete", "targetgroup", "cart-blue"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Nothing refused changed anything.
    let ledger =
        String::from_utf8_lossy(&trellis(&env.cp, &["get", "svc", "ledger", "-o", "json"]).stdout)
            .to_string();
    assert!(
        ledger.contains("\"pay\"") && !ledger.contains("www"),
        "{ledger}"
    );
    // Who did what is in the audit log.
    let audit =
        String::from_utf8_lossy(&trellis(&env.cp, &["audit", "--actor", "token/shop-team"]).stdout)
            .to_string();
    assert!(audit.contains("POST /v1/apply -> 200"), "{audit}");
    assert!(audit.contains("POST /v1/apply -> 403"), "{audit}");
}

#[test]
fn a_viewer_reads_without_secrets_and_a_key_manager_keeps_to_its_identities() {
    let env = Env::new();
    let viewer = env.token("auditor", &["--role", "viewer"]);
    let out = env.run_as(Some(&viewer), &["get", "svc"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("cart"));
    let out = env.run_as(Some(&viewer), &["identity", "create", "alice"]);
    assert!(
        stderr(&out).contains("may not issue keys"),
        "{}",
        stderr(&out)
    );
    let out = env.apply_as(Some(&viewer), YAML);
    assert!(
        stderr(&out).contains("(viewer) may not apply"),
        "{}",
        stderr(&out)
    );

    let keys = env.token(
        "alice-keys",
        &["--role", "key-manager", "--scope", "identity/alice"],
    );
    let out = env.run_as(Some(&keys), &["identity", "create", "alice", "-o", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let created: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = created["AccessKeyId"].as_str().unwrap();
    let secret = created["SecretAccessKey"].as_str().unwrap();
    let out = env.run_as(Some(&keys), &["identity", "create", "bob"]);
    assert!(
        stderr(&out).contains("may not issue keys for identity bob"),
        "{}",
        stderr(&out)
    );
    let out = env.run_as(Some(&keys), &["identity", "deactivate", "alice", id]);
    assert!(out.status.success(), "{}", stderr(&out));

    // A viewer's snapshot, list and audit hold no secret.
    let token = std::fs::read_to_string(&viewer).unwrap();
    let auth = format!("authorization: Bearer {token}");
    for path in [
        "/v1/networks/east/snapshot",
        "/v1/identities/alice/keys",
        "/v1/services",
        "/v1/audit",
    ] {
        let out = harness::local::curl_anonymous(
            &env.cp,
            &["-s", "-H", &auth, &format!("{}{path}", env.cp.url)],
        );
        let body = String::from_utf8_lossy(&out.stdout);
        assert!(body.starts_with('{'), "{path}: {body}");
        assert!(!body.contains(secret), "{path} shows a secret");
    }
}

#[test]
fn revoked_and_expired_tokens_are_refused_at_once() {
    let env = Env::new();
    let ci = env.token("ci", &["--role", "viewer"]);
    let brief = env.token("brief", &["--role", "viewer", "--ttl", "1s"]);
    assert!(env.run_as(Some(&ci), &["get", "svc"]).status.success());

    // The list shows no token; the store holds only hashes.
    let list = String::from_utf8_lossy(&trellis(&env.cp, &["token", "list"]).stdout).to_string();
    assert!(list.contains("ci ") && list.contains("viewer"), "{list}");
    let stored =
        String::from_utf8_lossy(&std::fs::read(env.cp.data_dir.path().join("state.redb")).unwrap())
            .into_owned();
    for f in [&ci, &brief] {
        let text = std::fs::read_to_string(f).unwrap();
        assert!(!list.contains(&text) && !stored.contains(&text));
    }

    let out = trellis(&env.cp, &["token", "revoke", "ci"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = env.run_as(Some(&ci), &["get", "svc"]);
    assert!(
        stderr(&out).contains("expired or revoked"),
        "{}",
        stderr(&out)
    );
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let out = env.run_as(Some(&brief), &["get", "svc"]);
    assert!(
        stderr(&out).contains("expired or revoked"),
        "{}",
        stderr(&out)
    );

    // Bad requests change nothing.
    for (args, why) in [
        (
            &["token", "create", "x", "--role", "editor"][..],
            "needs at least one --scope",
        ),
        (
            &[
                "token",
                "create",
                "x",
                "--role",
                "editor",
                "--scope",
                "identity/alice",
            ][..],
            "scoped by servicenetwork/NAME or network/NAME",
        ),
        (
            &[
                "token",
                "create",
                "x",
                "--role",
                "viewer",
                "--scope",
                "network/east",
            ][..],
            "takes no scope",
        ),
        (&["token", "create", "brief", "--role", "viewer"][..], ""),
        (
            &["token", "create", "brief", "--role", "viewer"][..],
            "exists",
        ),
        (&["token", "revoke", "nobody"][..], "no token named"),
    ] {
        let out = trellis(&env.cp, args);
        if why.is_empty() {
            // The expired "brief" is gone, so the name is free again.
            assert!(out.status.success(), "{}", stderr(&out));
        } else {
            assert!(
                !out.status.success() && stderr(&out).contains(why),
                "{args:?}: {}",
                stderr(&out)
            );
        }
    }
}
