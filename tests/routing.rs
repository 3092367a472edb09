//! Gateway-API-style matches through the real proxy (as root, in the node
//! test's namespaces): path regex, query parameters, header presence, and a
//! listener ordering its rules by specificity rather than priority.

mod harness;

use harness::node::{Env, TARGET_IP};

fn catalog(order: &str) -> String {
    format!(
        r#"apiVersion: trellis.dev/v1alpha1
kind: Network
metadata: {{name: east}}
spec: {{}}
---
apiVersion: trellis.dev/v1alpha1
kind: ServiceNetwork
metadata: {{name: shop}}
spec: {{networks: [east]}}
---
apiVersion: trellis.dev/v1alpha1
kind: TargetGroup
metadata: {{name: blue}}
spec: {{network: east, healthCheck: {{enabled: false}}, targets: [{{address: {TARGET_IP}, port: 8081}}]}}
---
apiVersion: trellis.dev/v1alpha1
kind: TargetGroup
metadata: {{name: green}}
spec: {{network: east, healthCheck: {{enabled: false}}, targets: [{{address: {TARGET_IP}, port: 8082}}]}}
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {{name: catalog}}
spec:
  serviceNetworks: [shop]
  listeners:
    - name: web
      protocol: HTTP
      ruleOrder: {order}
      defaultAction: {{forward: [{{targetGroup: blue}}]}}
      rules:
        - name: items
          priority: 1
          match: {{path: {{prefix: /items}}}}
          action: {{forward: [{{targetGroup: blue}}]}}
        - name: items-v2
          priority: 2
          match: {{path: {{prefix: /items}}, query: [{{name: v, exact: "2"}}]}}
          action: {{forward: [{{targetGroup: green}}]}}
        - name: versioned
          priority: 3
          match: {{path: {{regex: "/v[0-9]+/items"}}}}
          action: {{forward: [{{targetGroup: green}}]}}
        - name: debug
          priority: 4
          match: {{headers: [{{name: x-debug, present: true}}]}}
          action: {{forward: [{{targetGroup: green}}]}}
"#
    )
}

#[test]
fn gateway_style_matches_and_specificity_route_through_the_proxy() {
    let Some(mut env) = Env::new("routing") else {
        return;
    };
    env.start_backends(&["http:8081:blue", "http:8082:green"]);
    env.apply(&catalog("Specificity"));
    env.start_node(&[]);
    let vip = env.vip("catalog");
    let to = |env: &Env, path: &str, headers: &[&str]| -> String {
        // Quoted: the harness runs the client through `sh -c`.
        let url = format!("'http://{vip}{path}'");
        let mut args = vec!["count", url.as_str(), "1"];
        args.extend_from_slice(headers);
        let r = env.client(&args);
        assert_eq!(r["errors"], 0, "{path}: {r}");
        r["last"]["name"].as_str().unwrap_or_default().to_string()
    };
    let cases: [(&str, &[&str], &str); 9] = [
        ("/items", &[], "blue"),
        // More specific than `items`, though later by priority.
        ("/items?v=2", &[], "green"),
        ("/items?x=1&v=%32", &[], "green"),
        // A second value that does not match: the rule does not hold.
        ("/items?v=2&v=3", &[], "blue"),
        ("/items?v=3", &[], "blue"),
        ("/v12/items", &[], "green"),
        ("/v12/items/3", &[], "blue"),
        ("/other", &["x-debug="], "green"),
        ("/other", &[], "blue"),
    ];
    for (path, headers, want) in cases {
        assert_eq!(
            to(&env, path, headers),
            want,
            "Specificity: {path} {headers:?}"
        );
    }
    // By priority, `items` comes first and takes every /items request.
    env.apply(&catalog("Priority"));
    let t = std::time::Instant::now();
    while to(&env, "/items?v=2", &[]) != "blue" {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(5),
            "the Priority order never applied"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(to(&env, "/v12/items", &[]), "green");
}
