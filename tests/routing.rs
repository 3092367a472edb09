//! Gateway-API-style routing through the real proxy (as root, in the node
//! test's namespaces): path regex, query parameters, header presence, a
//! listener ordering its rules by specificity rather than priority,
//! redirects, rewrites, header changes on requests and responses, CORS,
//! and Trellis's refusals as gRPC statuses for gRPC clients.

mod harness;

use harness::node::{Env, shop_network};

fn catalog(order: &str) -> String {
    let base = shop_network(
        &[("blue", 8081), ("green", 8082), ("nowhere", 8099)],
        "{enabled: false}",
    );
    format!(
        r#"{base}---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {{name: orders-grpc}}
spec:
  serviceNetworks: [shop]
  listeners:
    - name: web
      protocol: HTTP
      defaultAction: {{forward: [{{targetGroup: nowhere}}]}}
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
        - name: moved
          priority: 5
          match: {{path: {{prefix: /old}}}}
          action: {{redirect: {{path: {{full: /new}}, statusCode: 301}}}}
        - name: secure
          priority: 6
          match: {{path: {{prefix: /login}}}}
          action: {{redirect: {{scheme: https, hostname: login.example.com}}}}
        - name: tagged
          priority: 7
          match: {{path: {{prefix: /tagged}}}}
          action:
            forward: [{{targetGroup: green}}]
            requestHeaders:
              remove: [x-drop]
              set: [{{name: x-env, value: canary}}]
            responseHeaders:
              add: [{{name: x-served-by, value: rule-tagged}}]
        - name: api-v1
          priority: 8
          match: {{path: {{prefix: /api/v1}}}}
          action:
            forward: [{{targetGroup: green}}]
            rewrite: {{hostname: internal.example, path: {{prefix: /v2}}}}
        - name: shared
          priority: 9
          match: {{path: {{prefix: /shared}}}}
          action:
            forward: [{{targetGroup: green}}]
            cors: {{allowOrigins: ["https://app.example.com"], allowMethods: [GET, PUT], maxAgeSeconds: 60}}
"#
    )
}

#[test]
fn gateway_style_matches_filters_and_specificity_through_the_proxy() {
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
    // Redirects: the query kept, the port the scheme's own.
    let redirected = env.curl(&[
        "-o /dev/null -w '%{http_code} %{redirect_url}'",
        &format!("'http://{vip}/old/page?x=1'"),
    ]);
    assert_eq!(redirected, format!("301 http://{vip}/new?x=1"));
    let redirected = env.curl(&[
        "-o /dev/null -w '%{http_code} %{redirect_url}'",
        &format!("'http://{vip}/login?next=/cart'"),
    ]);
    assert_eq!(redirected, "302 https://login.example.com/login?next=/cart");
    // Header changes on the way in and out (hyper's side makes them: the
    // HTTP/1.1 path hands such requests over).
    let r = env.client(&[
        "count",
        &format!("'http://{vip}/tagged'"),
        "1",
        "x-env=prod",
        "x-drop=1",
    ]);
    let seen = &r["last"]["headers"];
    assert_eq!(seen["x-env"], "canary", "{seen}");
    assert!(seen.get("x-drop").is_none(), "{seen}");
    let head = env.curl(&["-D - -o /dev/null", &format!("'http://{vip}/tagged'")]);
    assert!(
        head.to_ascii_lowercase()
            .contains("x-served-by: rule-tagged"),
        "{head}"
    );

    // A rewrite: the target is sent another host and, in place of the
    // matched prefix, another path; the query is kept.
    let r = env.client(&["count", &format!("'http://{vip}/api/v1/users?id=7'"), "1"]);
    assert_eq!(r["last"]["path"], "/v2/users?id=7", "{r}");
    assert_eq!(r["last"]["headers"]["host"], "internal.example", "{r}");

    // CORS: the proxy answers the preflight (the target never sees it) and
    // marks an allowed origin's response; another origin gets no grant.
    let url = format!("'http://{vip}/shared/doc'");
    let pre = env
        .curl(&[
            "-X OPTIONS -D - -o /dev/null",
            "-H 'Origin: https://app.example.com' -H 'Access-Control-Request-Method: PUT'",
            &url,
        ])
        .to_ascii_lowercase();
    assert!(pre.starts_with("http/1.1 204"), "{pre}");
    assert!(
        pre.contains("access-control-allow-origin: https://app.example.com"),
        "{pre}"
    );
    assert!(
        pre.contains("access-control-allow-methods: get, put"),
        "{pre}"
    );
    assert!(pre.contains("access-control-max-age: 60"), "{pre}");
    let allowed = env
        .curl(&[
            "-D - -o /dev/null -H 'Origin: https://app.example.com'",
            &url,
        ])
        .to_ascii_lowercase();
    assert!(allowed.starts_with("http/1.1 200"), "{allowed}");
    assert!(
        allowed.contains("access-control-allow-origin: https://app.example.com"),
        "{allowed}"
    );
    let other = env
        .curl(&["-D - -o /dev/null -H 'Origin: https://evil.example'", &url])
        .to_ascii_lowercase();
    assert!(other.starts_with("http/1.1 200"), "{other}");
    assert!(!other.contains("access-control-allow-origin"), "{other}");

    // A gRPC call Trellis cannot deliver (nothing listens on the target)
    // is answered as gRPC clients read it: 200, trailers-only,
    // grpc-status 14 (UNAVAILABLE); a plain request gets the HTTP status.
    let grpc = env.vip("orders-grpc");
    let url = format!("'http://{grpc}/shop.Orders/Get'");
    let head = env
        .curl(&[
            "--http2-prior-knowledge -D - -o /dev/null -d ''",
            "-H 'content-type: application/grpc' -H 'te: trailers'",
            &url,
        ])
        .to_ascii_lowercase();
    assert!(head.starts_with("http/2 200"), "{head}");
    assert!(head.contains("grpc-status: 14"), "{head}");
    assert!(head.contains("grpc-message: connect-failed"), "{head}");
    let plain = env.curl(&["-o /dev/null -w '%{http_code}'", &url]);
    assert_eq!(plain, "502");

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
