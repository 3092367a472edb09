//! SigV4 auth end to end, as root, through the real eBPF redirect and
//! proxy: identities issued by the control plane, requests signed by two
//! independent signers (`curl --aws-sigv4`, and the `aws-sigv4` crate for
//! SigV4 and SigV4A),
//! each way a signature can be wrong, body hashes, and policies.

mod harness;

use aws_sigv4::http_request::{
    PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings, sign,
};
use aws_sigv4::sign::{v4, v4a};
use harness::node::Env;
use std::time::{Duration, Instant, SystemTime};

const REGION: &str = "us-east-1";
const SERVICE: &str = "vpc-lattice-svcs";

fn shop() -> String {
    format!(
        r#"apiVersion: trellis.dev/v1alpha1
kind: Network
metadata: {{name: east}}
spec: {{}}
---
apiVersion: trellis.dev/v1alpha1
kind: ServiceNetwork
metadata: {{name: shop}}
spec:
  networks: [east]
  authType: SIGV4
  # The network lets everything through; the service decides.
  authPolicy:
    Version: "2012-10-17"
    Statement:
      - {{Effect: Allow, Principal: "*", Action: "vpc-lattice-svcs:Invoke", Resource: "*"}}
---
apiVersion: trellis.dev/v1alpha1
kind: Identity
metadata: {{name: bob}}
spec: {{}}
---
apiVersion: trellis.dev/v1alpha1
kind: TargetGroup
metadata: {{name: blue}}
spec:
  network: east
  healthCheck: {{enabled: false}}
  targets: [{{address: {ip}, port: 8081}}]
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {{name: orders}}
spec:
  serviceNetworks: [shop]
  authType: SIGV4
  authPolicy:
    Version: "2012-10-17"
    Statement:
      - Sid: alice-orders
        Effect: Allow
        Principal: {{AWS: "trellis:identity/alice"}}
        Action: "vpc-lattice-svcs:Invoke"
        Resource: "trellis:service/orders/orders/*"
      - Sid: public
        Effect: Allow
        Principal: "*"
        Action: "vpc-lattice-svcs:Invoke"
        Resource: "trellis:service/orders/public/*"
      - Sid: no-admin
        Effect: Deny
        Principal: "*"
        Action: "vpc-lattice-svcs:Invoke"
        Resource: "trellis:service/orders/orders/admin*"
  listeners:
    - name: web
      protocol: HTTP
      defaultAction: {{forward: [{{targetGroup: blue}}]}}
"#,
        ip = harness::node::TARGET_IP
    )
}

/// A signature by the `aws-sigv4` crate: the headers to send.
#[derive(Clone, Copy)]
struct Signer<'a> {
    key: &'a str,
    secret: &'a str,
    region: &'a str,
    service: &'a str,
    time: SystemTime,
    sign_body_hash: bool,
    /// SigV4A instead, for this region set.
    v4a: Option<&'a str>,
}

impl Signer<'_> {
    fn headers(
        &self,
        method: &str,
        url: &str,
        extra: &[(&str, &str)],
        body: &[u8],
    ) -> Vec<(String, String)> {
        let identity =
            aws_credential_types::Credentials::new(self.key, self.secret, None, None, "test")
                .into();
        let mut settings = SigningSettings::default();
        if self.sign_body_hash {
            settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        }
        let params = match self.v4a {
            None => v4::SigningParams::builder()
                .identity(&identity)
                .region(self.region)
                .name(self.service)
                .time(self.time)
                .settings(settings)
                .build()
                .unwrap()
                .into(),
            Some(region_set) => v4a::SigningParams::builder()
                .identity(&identity)
                .region_set(region_set)
                .name(self.service)
                .time(self.time)
                .settings(settings)
                .build()
                .unwrap()
                .into(),
        };
        let host = url.split('/').nth(2).unwrap().to_string();
        let mut all: Vec<(&str, &str)> = vec![("host", host.as_str())];
        all.extend_from_slice(extra);
        let signable =
            SignableRequest::new(method, url, all.iter().copied(), SignableBody::Bytes(body))
                .unwrap();
        let (instructions, _) = sign(signable, &params).unwrap().into_parts();
        let mut req = http::Request::builder()
            .method(method)
            .uri(url)
            .body(())
            .unwrap();
        instructions.apply_to_request_http1x(&mut req);
        // What was signed besides the signature's own headers goes too.
        let mut out: Vec<(String, String)> = extra
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        out.extend(
            req.headers()
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string())),
        );
        out
    }
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// curl in the redirected cgroup: (status, body).
fn call(env: &Env, args: &[String]) -> (u16, String) {
    let mut all: Vec<String> = vec!["-w".into(), quote("\n%{http_code}")];
    all.extend(args.iter().cloned());
    let args: Vec<&str> = all.iter().map(String::as_str).collect();
    let out = env.curl(&args);
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn with_headers(
    method: &str,
    url: &str,
    headers: &[(String, String)],
    body: Option<&str>,
) -> Vec<String> {
    let mut args = vec!["-X".to_string(), method.to_string()];
    for (k, v) in headers {
        args.push("-H".into());
        args.push(quote(&format!("{k}: {v}")));
    }
    if let Some(b) = body {
        args.push("--data-binary".into());
        args.push(quote(b));
    }
    args.push(quote(url));
    args
}

/// The backends, `shop()` applied, and an access key issued to alice: its
/// id and secret.
fn shop_with_alice(env: &mut Env) -> (String, String) {
    env.start_backends(&["http:8081:blue"]);
    env.apply(&shop());
    let created: serde_json::Value =
        serde_json::from_str(&env.trellis("identity create alice -o json")).unwrap();
    let field = |k: &str| created[k].as_str().unwrap().to_string();
    (field("AccessKeyId"), field("SecretAccessKey"))
}

#[test]
fn sigv4_signed_requests_are_verified_and_policies_decide() {
    let Some(mut env) = Env::new("sigv4_auth") else {
        return;
    };
    let (key, secret) = shop_with_alice(&mut env);
    // `get` and the key listing never show the secret.
    let listed = env.trellis("identity keys alice -o json");
    assert!(
        listed.contains(&key) && !listed.contains(&secret),
        "{listed}"
    );
    let bob: serde_json::Value =
        serde_json::from_str(&env.trellis("identity add-key bob -o json")).unwrap();
    env.start_node(&[]);
    let vip = env.vip("orders");
    let base = format!("http://{vip}");
    let (_, config) = env.admin_get("/config");
    assert!(!config.contains(&secret), "a secret reached the node");

    // curl's own SigV4, GET and a POST whose body hash it signs.
    let curl_sig = |extra: &[&str]| {
        let mut args = vec![
            "--aws-sigv4".to_string(),
            quote(&format!("aws:amz:{REGION}:{SERVICE}")),
            "--user".into(),
            quote(&format!("{key}:{secret}")),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    // A signed GET (empty body) is decided and forwarded on the HTTP/1.1
    // path: no connection is handed to hyper for it.
    let handovers = |env: &Env| -> u64 {
        let (_, metrics) = env.admin_get("/metrics");
        metrics
            .lines()
            .filter(|l| l.starts_with("trellis_proxy_http_handovers_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    let before = handovers(&env);
    let (status, body) = call(&env, &curl_sig(&[&quote(&format!("{base}/orders/1"))]));
    assert_eq!(status, 200, "{body}");
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        seen["headers"]["x-trellis-identity"],
        "trellis:identity/alice"
    );
    let (_, metrics) = env.admin_get("/metrics");
    assert_eq!(
        handovers(&env),
        before,
        "a signed GET was handed to hyper: {metrics}"
    );
    let (status, body) = call(
        &env,
        &curl_sig(&[
            "--data-binary",
            "'{\"qty\": 2}'",
            &quote(&format!("{base}/orders/new")),
        ]),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["body"],
        10
    );
    // A body whose hash is signed is read on hyper's side, which buffers it.
    let (_, metrics) = env.admin_get("/metrics");
    assert!(
        metrics.contains("trellis_proxy_http_handovers_total{reason=\"auth-body\"} 1"),
        "{metrics}"
    );

    // The aws-sigv4 crate, as an AWS SDK signs.
    let now = SystemTime::now();
    let good = Signer {
        key: &key,
        secret: &secret,
        region: REGION,
        service: SERVICE,
        time: now,
        sign_body_hash: false,
        v4a: None,
    };
    let url = format!("{base}/orders/7?expand=items&a=1");
    let h = good.headers("GET", &url, &[("x-tenant", "acme")], b"");
    let (status, body) = call(&env, &with_headers("GET", &url, &h, None));
    assert_eq!(status, 200, "{body}");

    // Every way to get it wrong: 403 with the reason.
    let denied = |args: Vec<String>, reason: &str| {
        let (status, body) = call(&env, &args);
        assert_eq!(status, 403, "{reason}: {body}");
        assert!(body.contains(reason), "wanted {reason:?}, got {body:?}");
    };
    let h_tenant = h.clone();
    // Tampered after signing: path, query, a signed header.
    denied(
        with_headers(
            "GET",
            &format!("{base}/orders/8?expand=items&a=1"),
            &h,
            None,
        ),
        "signature does not match",
    );
    denied(
        with_headers("GET", &format!("{base}/orders/7?expand=all&a=1"), &h, None),
        "signature does not match",
    );
    let swapped: Vec<(String, String)> = h_tenant
        .iter()
        .map(|(k, v)| {
            if k == "x-tenant" {
                (k.clone(), "evil".into())
            } else {
                (k.clone(), v.clone())
            }
        })
        .collect();
    denied(
        with_headers("GET", &url, &swapped, None),
        "signature does not match",
    );
    let bad_secret = "x".repeat(40);
    let wrong = |s: Signer| with_headers("GET", &url, &s.headers("GET", &url, &[], b""), None);
    denied(
        wrong(Signer {
            secret: &bad_secret,
            ..good
        }),
        "signature does not match",
    );
    denied(
        wrong(Signer {
            key: "TKIAUNKNOWNUNKNOWN00",
            ..good
        }),
        "InvalidClientTokenId",
    );
    let hour = Duration::from_secs(3600);
    denied(
        wrong(Signer {
            time: now - hour,
            ..good
        }),
        "signature expired or not yet valid",
    );
    denied(
        wrong(Signer {
            time: now + hour,
            ..good
        }),
        "signature expired or not yet valid",
    );
    denied(
        wrong(Signer {
            region: "eu-west-1",
            ..good
        }),
        "names region eu-west-1",
    );
    denied(
        wrong(Signer {
            service: "execute-api",
            ..good
        }),
        "names service execute-api",
    );
    denied(
        with_headers(
            "GET",
            &url,
            &[(
                "authorization".into(),
                "AWS4-HMAC-SHA256 Credential=nope".into(),
            )],
            None,
        ),
        "IncompleteSignatureException",
    );
    // SigV4A (ECDSA P-256, as the AWS SDKs sign for multi-region): a
    // region set that covers the node's region, a wildcard, and one that
    // does not; a tampered path; a wrong secret (another public key).
    for set in [REGION, "*", "eu-west-1,us-*"] {
        let v4a = Signer {
            v4a: Some(set),
            ..good
        };
        let h = v4a.headers("GET", &url, &[("x-tenant", "acme")], b"");
        assert!(
            h.iter()
                .any(|(k, v)| k == "authorization" && v.starts_with("AWS4-ECDSA-P256-SHA256")),
            "{h:?}"
        );
        let (status, body) = call(&env, &with_headers("GET", &url, &h, None));
        assert_eq!(status, 200, "SigV4A for {set}: {body}");
        let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            seen["headers"]["x-trellis-identity"],
            "trellis:identity/alice"
        );
    }
    let v4a = Signer {
        v4a: Some(REGION),
        ..good
    };
    let h = v4a.headers("GET", &url, &[], b"");
    denied(
        with_headers("GET", &format!("{base}/orders/9"), &h, None),
        "signature does not match",
    );
    denied(
        wrong(Signer {
            v4a: Some("eu-west-1"),
            ..good
        }),
        "does not include us-east-1",
    );
    denied(
        wrong(Signer {
            secret: &bad_secret,
            ..v4a
        }),
        "signature does not match",
    );

    // A body that is not the one whose hash was signed never reaches the target.
    let hashed = Signer {
        sign_body_hash: true,
        ..good
    };
    let post = format!("{base}/orders/new");
    let h = hashed.headers("POST", &post, &[], b"{\"qty\": 2}");
    let (status, body) = call(&env, &with_headers("POST", &post, &h, Some("{\"qty\": 2}")));
    assert_eq!(status, 200, "{body}");
    denied(
        with_headers("POST", &post, &h, Some("{\"qty\": 200}")),
        "XAmzContentSHA256Mismatch",
    );

    // Policies: unsigned is denied unless a statement allows anonymous;
    // an explicit Deny wins; another identity is not alice.
    denied(
        vec![quote(&format!("{base}/orders/1"))],
        "no statement of the service auth policy allows an unsigned request",
    );
    let (status, _) = call(&env, &[quote(&format!("{base}/public/menu"))]);
    assert_eq!(status, 200);
    denied(
        curl_sig(&[&quote(&format!("{base}/orders/admin/users"))]),
        "statement no-admin",
    );
    let bob_key = bob["AccessKeyId"].as_str().unwrap();
    let bob_secret = bob["SecretAccessKey"].as_str().unwrap();
    let as_bob = Signer {
        key: bob_key,
        secret: bob_secret,
        ..good
    };
    denied(
        with_headers("GET", &url, &as_bob.headers("GET", &url, &[], b""), None),
        "allows this principal",
    );

    // Every refusal reaches `trellis observe` with its deciding statement:
    // one made now within a second, while following.
    /// Killed when dropped, also when an assertion fails first.
    struct Observer(std::process::Child);
    impl Drop for Observer {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut observer =
        Observer(env.spawn_trellis("observe --verdict denied --follow -o json --last 0"));
    let lines = {
        let out = observer.0.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        rx
    };
    std::thread::sleep(Duration::from_millis(500));
    let sent = Instant::now();
    denied(
        curl_sig(&[&quote(&format!("{base}/orders/admin/audit"))]),
        "statement no-admin",
    );
    let flow: serde_json::Value = loop {
        let Ok(line) = lines.recv_timeout(Duration::from_secs(3)) else {
            drop(observer);
            panic!(
                "no denied flow reached trellis observe; the last flows: {}",
                env.trellis("observe --last 20 -o json")
            );
        };
        let flow: serde_json::Value = serde_json::from_str(&line).unwrap();
        if flow["path"] == "/orders/admin/audit" {
            break flow;
        }
    };
    let took = sent.elapsed();
    drop(observer);
    assert!(
        took < Duration::from_secs(1),
        "the denied flow took {took:?}"
    );
    assert_eq!(flow["verdict"], "denied", "{flow}");
    assert_eq!(flow["service"], "orders", "{flow}");
    assert_eq!(flow["status"], 403, "{flow}");
    assert!(
        flow["reason"].as_str().unwrap().contains("no-admin"),
        "{flow}"
    );
    assert_eq!(flow["identity"], "trellis:identity/alice", "{flow}");
    // The last flows, filtered: allowed ones of alice, denied ones with
    // their reasons, none of another service.
    let allowed = env.trellis(
        "observe --verdict allowed --from-identity trellis:identity/alice --last 100 -o json",
    );
    assert!(allowed.lines().count() >= 1, "{allowed}");
    assert!(
        allowed
            .lines()
            .all(|l| l.contains("\"verdict\":\"allowed\"")),
        "{allowed}"
    );
    let compact = env.trellis("observe --verdict denied --service orders --last 100");
    assert!(
        compact
            .lines()
            .any(|l| l.contains("DENIED 403") && l.contains("no-admin")),
        "{compact}"
    );
    let other = env.trellis("observe --service nothing-here --last 100");
    assert!(other.trim().is_empty(), "{other}");

    // A deactivated key stops verifying once the node has the snapshot.
    env.trellis(&format!("identity deactivate alice {key}"));
    let t = Instant::now();
    loop {
        let (status, body) = call(&env, &curl_sig(&[&quote(&format!("{base}/orders/1"))]));
        if status == 403 {
            assert!(body.contains("unknown or inactive"), "{body}");
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "key still accepted: {status} {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // The access log records each decision and the deciding statement.
    let log = env.access_log();
    assert!(
        log.contains("\"auth\":\"allow service:alice-orders\""),
        "{log}"
    );
    assert!(
        log.contains("\"identity\":\"trellis:identity/alice\""),
        "{log}"
    );
    assert!(log.contains("\"authn\":\"sigv4\""), "{log}");
    assert!(log.contains("statement no-admin"), "{log}");
    assert!(!log.contains(&secret));

    // And the metrics count decisions by outcome.
    let (_, metrics) = env.admin_get("/metrics");
    for outcome in [
        "allow",
        "AccessDeniedException",
        "InvalidSignatureException",
        "InvalidClientTokenId",
        "XAmzContentSHA256Mismatch",
    ] {
        let authn = if outcome == "allow" { "sigv4" } else { "" };
        let line = format!(
            "trellis_proxy_auth_decisions_total{{service=\"orders\",outcome=\"{outcome}\",authn=\"{authn}\"}} "
        );
        assert!(metrics.contains(&line), "no {line} in {metrics}");
    }
}

/// Every signing key the node holds: the hex values in its persisted
/// snapshot, which only root can read.
fn signing_keys(env: &Env) -> Vec<String> {
    let file = env.run.join("node/node-snapshot-east.json");
    let snapshot: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).expect("the node's snapshot")).unwrap();
    let mut keys = Vec::new();
    for identity in snapshot["identities"].as_array().into_iter().flatten() {
        for key in identity["keys"].as_array().into_iter().flatten() {
            for hex in key["signingKeys"]
                .as_object()
                .into_iter()
                .flat_map(|m| m.values())
            {
                keys.push(hex.as_str().unwrap().to_string());
            }
        }
    }
    keys
}

/// A command in the node's namespace as uid/gid 65534 (nobody): what any
/// local process of a node may do. Its stdout, and whether it succeeded.
fn as_nobody(env: &Env, cmd: &str) -> (bool, String) {
    let out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &env.ns,
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
        ])
        .args(["--clear-groups", "sh", "-c", cmd])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
    )
}

#[test]
fn a_local_user_reads_no_key_material_from_the_node() {
    let Some(mut env) = Env::new("local_user_secrets") else {
        return;
    };
    let (key, secret) = shop_with_alice(&mut env);
    // The most the node says: every request, every header decision.
    env.node_log = "trace";
    env.start_node(&[]);
    let base = format!("http://{}", env.vip("orders"));

    // Credentials in every form a client sends them, each with a marker.
    let token = "sessiontoken7e57f00d";
    let forged = "5ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7";
    let signed = [
        "--aws-sigv4".to_string(),
        quote(&format!("aws:amz:{REGION}:{SERVICE}")),
        "--user".into(),
        quote(&format!("{key}:{secret}")),
    ];
    let (status, body) = call(
        &env,
        &[&signed[..], &[quote(&format!("{base}/orders/1"))]].concat(),
    );
    assert_eq!(status, 200, "{body}");
    // Temporary credentials are refused, and not written down either.
    let with_token = [
        "-H".into(),
        quote(&format!("x-amz-security-token: {token}")),
        quote(&format!("{base}/orders/3")),
    ];
    let (status, _) = call(&env, &[&signed[..], &with_token].concat());
    assert_eq!(status, 403);
    let curl_auth = |url: &str, authorization: &str| {
        with_headers(
            "GET",
            url,
            &[
                ("authorization".into(), authorization.into()),
                ("x-amz-date".into(), "20261207T000000Z".into()),
                ("x-amz-security-token".into(), token.into()),
            ],
            None,
        )
    };
    let forged_auth = format!(
        "AWS4-HMAC-SHA256 Credential={key}/20261207/{REGION}/{SERVICE}/aws4_request, \
         SignedHeaders=host;x-amz-date, Signature={forged}"
    );
    let (status, _) = call(&env, &curl_auth(&format!("{base}/orders/2"), &forged_auth));
    assert_eq!(status, 403);
    let (status, _) = call(
        &env,
        &curl_auth(
            &format!("{base}/public/x?X-Amz-Signature={forged}&X-Amz-Security-Token={token}"),
            &format!("Bearer {secret}"),
        ),
    );
    assert!(status >= 400, "{status}");

    let keys = signing_keys(&env);
    assert!(keys.len() >= 3, "the node holds alice's keys: {keys:?}");
    let mut markers = keys.clone();
    markers.extend([secret.clone(), forged.to_string(), token.to_string()]);

    // Root, with the documented means, sees the config (keys fingerprinted).
    let (status, config) = env.admin_get("/config");
    assert_eq!(status, 200);
    assert!(config.contains("\"sha256:"), "{config}");

    // Everything a local non-root process can read of the node.
    let admin = &env.admin;
    let mut readable = String::new();
    for path in ["/config", "/metrics", "/ready", "/config?x", "/nope"] {
        let (_, page) = as_nobody(&env, &format!("curl -s -m 5 http://{admin}{path}"));
        readable.push_str(&page);
    }
    let (_, page) = as_nobody(&env, &format!("curl -s -m 5 http://{admin}/config"));
    assert!(page.contains("needs the admin token"), "{page}");
    let (_, page) = as_nobody(&env, &format!("curl -s -m 5 http://{admin}/metrics"));
    assert!(page.contains("trellis_proxy"), "metrics stay open: {page}");
    let run = env.run.display();
    // find exits non-zero on the dirs nobody may enter; what it read
    // includes the YAML the harness left world-readable, so it did read.
    let (_, files) = as_nobody(
        &env,
        &format!("find {run} -type f -readable -exec cat {{}} +"),
    );
    readable.push_str(&files);
    assert!(
        files.contains("apiVersion: trellis.dev/v1alpha1"),
        "find read nothing"
    );
    for name in ["node-snapshot-east.json", "admin-token", "identity.key"] {
        let (ok, _) = as_nobody(&env, &format!("cat {run}/node/{name}"));
        assert!(!ok, "nobody read {name}");
    }
    for m in &keys {
        assert!(
            !readable.contains(m.as_str()),
            "a signing key is readable by nobody"
        );
    }

    // What the node wrote of requests and of itself (as root): no
    // credential in any form.
    let mut written = String::new();
    for name in ["node.log", "node.out", "access.log"] {
        written.push_str(&std::fs::read_to_string(env.run.join(name)).unwrap_or_default());
    }
    assert!(
        written.contains("/orders/1"),
        "the access log has the requests"
    );
    for m in &markers {
        assert!(
            !written.contains(m.as_str()),
            "the node's output carries {m}"
        );
    }
    assert!(
        !written.contains("AWS4-HMAC-SHA256 Credential"),
        "an Authorization header was logged"
    );
    // Log lines of a request carry its connection's and its own context,
    // from the spans: no field was added to them by hand.
    let log = std::fs::read_to_string(env.run.join("node.log")).unwrap_or_default();
    assert!(
        log.lines().any(|l| l.contains("conn{id=")
            && l.contains("service=orders")
            && l.contains("}:request: ")),
        "no log line with its connection's and request's spans"
    );
}

/// Raw bytes from the redirected cgroup to `vip`:80; the first response.
fn raw(env: &Env, vip: &str, request: &str) -> serde_json::Value {
    let hex: String = request.bytes().map(|b| format!("{b:02x}")).collect();
    env.client(&["raw", vip, "80", &hex])
}

/// Each way around a rule or a policy found by trying Trellis as an
/// attacker, sent byte for byte through the eBPF redirect: refused, or
/// read by its canonical form by the policy and the target alike.
#[test]
fn a_deny_holds_against_every_spelling_of_its_path() {
    let Some(mut env) = Env::new("canonical_requests") else {
        return;
    };
    env.start_backends(&["http:8081:blue"]);
    env.apply(&shop());
    env.start_node(&[]);
    let vip = env.vip("orders");
    let get = |target: &str, headers: &str| {
        raw(
            &env,
            &vip,
            &format!("GET {target} HTTP/1.1\r\n{headers}Connection: close\r\n\r\n"),
        )
    };
    let h = "Host: orders\r\n";

    // Unsigned callers may read /public/* and nobody /orders/admin*: every
    // spelling of the latter is denied.
    for spelling in [
        "/orders/admin",
        "/public/../orders/admin",
        "/public/%2e%2e/orders/admin",
        "/public/.%2E/orders/admin/x",
        "//orders/admin",
        "/orders//admin",
        "/%6frders/%61dmin",
        "/public/./../orders/admin",
    ] {
        let r = get(spelling, h);
        assert_eq!(r["status"], 403, "{spelling}: {r}");
        assert_eq!(r["error"], "auth-denied", "{spelling}: {r}");
    }
    // What is allowed reaches the target in its canonical form.
    for (spelling, canonical) in [
        ("/public/x", "/public/x"),
        ("/public/./a//b", "/public/a/b"),
        ("/%70ublic/%78?q=%2f", "/public/x?q=%2F"),
        ("/orders/../public/y", "/public/y"),
    ] {
        let r = get(spelling, h);
        assert_eq!(r["status"], 200, "{spelling}: {r}");
        assert_eq!(r["body"]["path"], canonical, "{spelling}");
    }
    // Refused outright: by Trellis with its reason, or by hyper's parser
    // before a request exists (no x-trellis-error then).
    let ours = serde_json::json!("bad-request");
    for (target, headers, error) in [
        ("/public/%2forders/admin", h, &ours),
        ("/public/..%5corders/admin", h, &ours),
        ("/public/..;/orders/admin", h, &ours),
        ("/public/%zz", h, &ours),
        ("*", h, &ours),
        ("public/x", h, &serde_json::Value::Null),
        ("/public/x", "Host: orders\r\nHost: other\r\n", &ours),
        ("/public/x", "", &ours),
    ] {
        let r = get(target, headers);
        assert_eq!(r["status"], 400, "{target} {headers:?}: {r}");
        assert_eq!(r["error"], *error, "{target}: {r}");
    }
    // The absolute form's authority is the one host.
    let r = get("http://orders.example/public/z", "Host: elsewhere\r\n");
    assert_eq!(r["status"], 200, "{r}");
    assert_eq!(r["body"]["path"], "/public/z");
    assert_eq!(r["body"]["headers"]["host"], "orders.example");
    // h2c never reaches a target.
    let r = get(
        "/public/h2c",
        "Host: orders\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n",
    );
    assert_eq!(r["status"], 200, "{r}");
    let seen = r["body"]["headers"].as_object().unwrap();
    assert!(
        !seen.contains_key("upgrade") && !seen.contains_key("http2-settings"),
        "{r}"
    );
    // One length, one framing.
    let r = raw(
        &env,
        &vip,
        "POST /public/p HTTP/1.1\r\nHost: orders\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab",
    );
    assert_eq!(r["status"], 400, "{r}");
    let r = raw(
        &env,
        &vip,
        "POST /public/p HTTP/1.1\r\nHost: orders\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n",
    );
    assert_eq!(r["status"], 400, "{r}");
}
