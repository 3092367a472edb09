//! `trellis import`: the samples of Gateway API documents and of the AWS
//! CLI's VPC Lattice output, printed (with what does not carry over,
//! located) and applied to a real control plane.

mod harness;

use harness::local::{ControlPlane, trellis};
use serde_json::Value;
use std::process::Output;

const SAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/samples");

fn ok(out: Output) -> (String, String) {
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    (stdout, stderr)
}

fn get(cp: &ControlPlane, kind: &str, name: &str) -> Value {
    let (out, _) = ok(trellis(cp, &["get", kind, name, "-o", "json"]));
    serde_json::from_str(&out).unwrap()
}

#[test]
fn gateway_api_documents_are_printed_noted_and_applied() {
    let cp = ControlPlane::start(&[]);
    let yaml = cp.data_dir.path().join("east.yaml");
    std::fs::write(
        &yaml,
        "apiVersion: trellis.dev/v1alpha1\nkind: Network\nmetadata: {name: east}\nspec: {}\n",
    )
    .unwrap();
    ok(trellis(&cp, &["apply", "-f", yaml.to_str().unwrap()]));
    let dir = format!("{SAMPLES}/gateway-api");
    let (printed, notes) = ok(trellis(
        &cp,
        &["import", "gateway-api", "-f", &dir, "--network", "east"],
    ));
    // Printed, not applied.
    assert!(printed.contains("kind: Service"), "{printed}");
    assert!(printed.contains("ruleOrder: Specificity"), "{printed}");
    let listed = ok(trellis(&cp, &["get", "svc"])).0;
    assert!(!listed.contains("checkout"), "{listed}");
    // What does not carry over, where it was written.
    let file = format!("{dir}/shop.yaml");
    assert!(
        notes.contains(&format!("{file}:29:7: spec.rules[1].sessionPersistence: `sessionPersistence` is not expressed in Trellis; left out")),
        "{notes}"
    );
    assert!(
        notes.contains("target group checkout-v1-8080: Kubernetes endpoints are not known here"),
        "{notes}"
    );

    let (applied, _) = ok(trellis(
        &cp,
        &[
            "import",
            "gateway-api",
            "-f",
            &dir,
            "--network",
            "east",
            "--apply",
        ],
    ));
    assert!(applied.contains("service/checkout created"), "{applied}");
    let checkout = get(&cp, "svc", "checkout");
    let spec = &checkout["spec"];
    assert_eq!(spec["serviceNetworks"], serde_json::json!(["shop"]));
    assert_eq!(spec["customDomainName"], "checkout.shop.example.com");
    let l = &spec["listeners"][0];
    assert_eq!(
        (l["protocol"].as_str(), l["port"].as_u64()),
        (Some("HTTP"), Some(80))
    );
    assert_eq!(l["ruleOrder"], "Specificity");
    // PathPrefix /api: the path itself and the path below it.
    // PathPrefix /api: the path below it, and the path itself (which
    // ranks as an exact path, so it comes after the route's own exacts).
    let rules = l["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 5, "{rules:?}");
    assert_eq!(rules[0]["match"]["path"]["prefix"], "/api/");
    assert_eq!(rules[0]["match"]["headers"][0]["name"], "x-canary");
    assert_eq!(rules[2]["match"]["path"]["exact"], "/old-cart");
    assert_eq!(rules[3]["match"]["path"]["exact"], "/api");
    assert_eq!(rules[3]["match"]["headers"][0]["name"], "x-canary");
    let split = l["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["match"]["path"]["prefix"] == "/api/" && r["match"].get("headers").is_none())
        .unwrap();
    assert_eq!(
        split["action"]["forward"][0],
        serde_json::json!({"targetGroup": "checkout-v1-8080", "weight": 90})
    );
    assert_eq!(
        split["action"]["timeouts"],
        serde_json::json!({"requestMs": 5000, "perTryMs": 1000})
    );
    assert_eq!(split["action"]["retry"]["codes"], serde_json::json!([503]));
    let redirect = l["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["match"]["path"]["exact"] == "/old-cart")
        .unwrap();
    assert_eq!(redirect["action"]["redirect"]["statusCode"], 301);

    let orders = get(&cp, "svc", "orders");
    let rules = &orders["spec"]["listeners"][0]["rules"];
    assert_eq!(
        rules[0]["match"]["grpc"],
        serde_json::json!({"service": "shop.v1.Orders", "method": "Get", "type": "Exact"})
    );
    let tg = get(&cp, "tg", "orders-9000");
    assert_eq!(tg["spec"]["protocolVersion"], "GRPC");
    assert_eq!(tg["spec"]["healthCheck"]["path"], "/healthz");
    assert_eq!(
        get(&cp, "svc", "vault")["spec"]["listeners"][0]["protocol"],
        "TLS_PASSTHROUGH"
    );
    let db = get(&cp, "svc", "ledger-db");
    assert_eq!(db["spec"]["listeners"][0]["protocol"], "TCP");
    assert_eq!(db["spec"]["listeners"][0]["port"], 5432);
    assert_eq!(get(&cp, "tg", "ledger-db-5432")["spec"]["protocol"], "TCP");
    let shop = get(&cp, "sn", "shop");
    assert_eq!(shop["spec"]["authType"], "SIGV4");

    // Again: existing target groups (with whatever targets were added
    // since) are left as they are; the rest is unchanged.
    let (again, _) = ok(trellis(
        &cp,
        &[
            "import",
            "gateway-api",
            "-f",
            &dir,
            "--network",
            "east",
            "--apply",
        ],
    ));
    assert!(
        again.contains("targetgroup/orders-9000 exists: left as it is"),
        "{again}"
    );
    assert!(again.contains("service/checkout unchanged"), "{again}");
}

#[test]
fn a_lattice_service_moves_with_its_rules_policy_and_targets() {
    let cp = ControlPlane::start(&[]);
    let yaml = cp.data_dir.path().join("base.yaml");
    std::fs::write(
        &yaml,
        "apiVersion: trellis.dev/v1alpha1\nkind: Network\nmetadata: {name: east}\nspec: {}\n---\n\
         apiVersion: trellis.dev/v1alpha1\nkind: ServiceNetwork\nmetadata: {name: shop}\nspec: {networks: [east]}\n---\n\
         apiVersion: trellis.dev/v1alpha1\nkind: Identity\nmetadata: {name: billing}\n\
         spec: {aliases: [\"arn:aws:iam::123456789012:role/billing\"]}\n",
    )
    .unwrap();
    ok(trellis(&cp, &["apply", "-f", yaml.to_str().unwrap()]));
    let d = format!("{SAMPLES}/lattice");
    let f = |name: &str| format!("{d}/{name}");
    let files = [
        f("get-service.json"),
        f("list-listeners.json"),
        f("get-listener.json"),
        f("list-rules.json"),
        f("get-rule-invoices-v2.json"),
        f("get-auth-policy.json"),
        f("get-target-group-blue.json"),
        f("get-target-group-green.json"),
        format!("tg-0123456789abcdef0={}", f("list-targets-blue.json")),
        format!("tg-0fedcba9876543210={}", f("list-targets-green.json")),
    ];
    let mut args = vec![
        "import",
        "lattice",
        "--network",
        "east",
        "--service-network",
        "shop",
        "--apply",
    ];
    for file in &files {
        args.extend(["-f", file.as_str()]);
    }
    let (applied, notes) = ok(trellis(&cp, &args));
    assert!(
        applied.contains("service/billing created"),
        "{applied}\n{notes}"
    );
    let billing = get(&cp, "svc", "billing");
    let spec = &billing["spec"];
    assert_eq!(spec["authType"], "SIGV4");
    assert_eq!(
        spec["authPolicy"]["Statement"][0]["Principal"]["AWS"][0],
        "arn:aws:iam::123456789012:role/billing"
    );
    let web = &spec["listeners"][0];
    assert_eq!(
        web["defaultAction"]["forward"],
        serde_json::json!([{"targetGroup": "billing-blue", "weight": 90}, {"targetGroup": "billing-green", "weight": 10}])
    );
    let rule = &web["rules"][0];
    assert_eq!(
        (rule["name"].as_str(), rule["priority"].as_u64()),
        (Some("invoices-v2"), Some(10))
    );
    assert_eq!(rule["match"]["path"]["prefix"], "/invoices");
    assert_eq!(rule["match"]["method"], "GET");
    assert_eq!(rule["match"]["headers"][0]["exact"], "v2");
    let blue = get(&cp, "tg", "billing-blue");
    assert_eq!(blue["spec"]["targets"].as_array().unwrap().len(), 2);
    assert_eq!(
        blue["spec"]["healthCheck"]["matcher"]["httpCode"],
        "200-299"
    );
    // Without get-rule's output a rule's match is unknown: said, not guessed.
    let (_, notes) = ok(trellis(
        &cp,
        &[
            "import",
            "lattice",
            "--network",
            "east",
            "-f",
            &f("get-service.json"),
            "-f",
            &f("list-rules.json"),
        ],
    ));
    assert!(
        notes.contains(
            "rule rule-0aa11bb22cc33dd44: list-rules does not print a rule's match and action"
        ),
        "{notes}"
    );
    assert!(notes.contains("give --service-network"), "{notes}");
}
