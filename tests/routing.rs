//! Gateway-API-style routing through the real proxy (as root, in the node
//! test's namespaces): path regex, query parameters, header presence, a
//! listener ordering its rules by specificity rather than priority,
//! redirects, rewrites, header changes on requests and responses, CORS,
//! and Trellis's refusals as gRPC statuses for gRPC clients.

mod harness;

use harness::node::{Env, TARGET_IP, shop_network};

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

/// Target groups on ports of their own (each test target counts what
/// reaches it), and a service whose rules mirror, retry, time out and
/// forward to a group with outlier detection.
fn resilient() -> String {
    let base = shop_network(
        &[
            ("blue", 8081),
            ("shadow", 8083),
            ("flaky", 8086),
            ("sleepy", 8090),
        ],
        "{enabled: false}",
    );
    let two = |name: &str, a: u16, b: u16, extra: &str| {
        format!(
            "---\napiVersion: trellis.dev/v1alpha1\nkind: TargetGroup\nmetadata: {{name: {name}}}\n\
             spec: {{network: east, healthCheck: {{enabled: false}}{extra}, targets: \
             [{{address: {TARGET_IP}, port: {a}}}, {{address: {TARGET_IP}, port: {b}}}]}}\n"
        )
    };
    let outlier = ", outlierDetection: {consecutiveFailures: 3, baseEjectionSeconds: 2}";
    format!(
        r#"{base}{pool}{mixed}---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {{name: resilient}}
spec:
  serviceNetworks: [shop]
  listeners:
    - name: web
      protocol: HTTP
      defaultAction: {{forward: [{{targetGroup: blue}}]}}
      rules:
        - name: all
          priority: 1
          match: {{path: {{prefix: /all}}}}
          action: {{forward: [{{targetGroup: blue}}], mirrors: [{{targetGroup: shadow}}]}}
        - name: half
          priority: 2
          match: {{path: {{prefix: /half}}}}
          action: {{forward: [{{targetGroup: blue}}], mirrors: [{{targetGroup: shadow, percent: 50}}]}}
        - name: flaky
          priority: 3
          match: {{path: {{prefix: /flaky}}}}
          action:
            forward: [{{targetGroup: flaky}}]
            retry: {{attempts: 3, on: [5xx], backoffMs: 1, budgetPercent: 20}}
        - name: mixed
          priority: 4
          match: {{path: {{prefix: /mixed}}}}
          action:
            forward: [{{targetGroup: mixed}}]
            retry: {{attempts: 1, on: [gatewayError], backoffMs: 1, budgetPercent: 100}}
        - name: pool
          priority: 5
          match: {{path: {{prefix: /pool}}}}
          action: {{forward: [{{targetGroup: pool}}]}}
        - name: slow
          priority: 6
          match: {{path: {{prefix: /sleep}}}}
          action:
            forward: [{{targetGroup: sleepy}}]
            timeouts: {{requestMs: 2000, perTryMs: 300}}
            retry: {{attempts: 1, on: [timeout], backoffMs: 1}}
"#,
        pool = two("pool", 8084, 8085, outlier),
        mixed = two("mixed", 8087, 8088, ""),
    )
}

#[test]
fn mirrors_retries_timeouts_and_outlier_ejection_through_the_proxy() {
    let Some(mut env) = Env::new("resilience") else {
        return;
    };
    env.start_backends(&[
        "http:8081:blue",
        "http:8083:shadow",
        "http:8084:pool-a",
        "http:8085:pool-b",
        "http:8086:flaky",
        "http:8087:mixed-bad",
        "http:8088:mixed-good",
        "http:8090:sleepy",
    ]);
    for port in [8086, 8087] {
        std::fs::write(env.run.join(format!("fail-{port}")), "").unwrap();
    }
    env.apply(&resilient());
    env.start_node(&[]);
    let vip = env.vip("resilient");
    let count = |env: &Env, path: &str, n: u32| -> serde_json::Value {
        env.client(&["count", &format!("'http://{vip}{path}'"), &n.to_string()])
    };
    let metric = |env: &Env, name: &str| -> f64 {
        let (_, text) = env.admin_get("/metrics");
        text.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };

    // Mirrors: every copy reaches the shadow, marked, body and all; the
    // client sees only the primary's answers.
    let r = count(&env, "/all/a", 20);
    assert_eq!(r["names"], serde_json::json!({"blue": 20}), "{r}");
    let file = env.run.join("body");
    std::fs::write(&file, vec![b'x'; 100_000]).unwrap();
    let posted = env.curl(&[
        "-o /dev/null -w '%{http_code}'",
        &format!("--data-binary @{}", file.display()),
        &format!("'http://{vip}/all/upload'"),
    ]);
    assert_eq!(posted, "200");
    let t = std::time::Instant::now();
    let shadow = loop {
        let c = env.backend_counts(8083);
        if c["mirrored"] == 21 || t.elapsed() > std::time::Duration::from_secs(5) {
            break c;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(shadow["mirrored"], 21, "{shadow}");
    assert_eq!(shadow["count"], 21, "only marked copies: {shadow}");
    assert_eq!(
        shadow["lastMirrored"],
        serde_json::json!({"path": "/all/upload", "method": "POST", "body": 100_000}),
    );
    // Half of them, at random.
    let r = count(&env, "/half", 200);
    assert_eq!(r["names"], serde_json::json!({"blue": 200}), "{r}");
    std::thread::sleep(std::time::Duration::from_millis(500));
    let halved = env.backend_counts(8083)["mirrored"].as_u64().unwrap() - 21;
    assert!(
        (70..=130).contains(&halved),
        "{halved} of 200 copied at 50%"
    );
    let answered =
        "trellis_proxy_mirrored_requests_total{target_group=\"shadow\",outcome=\"answered\"}";
    assert_eq!(metric(&env, answered), (21 + halved) as f64);

    // Retries: a request the bad target fails is answered by the good one.
    let r = count(&env, "/mixed", 20);
    assert_eq!(r["names"], serde_json::json!({"mixed-good": 20}), "{r}");
    // A target failing everything: retries stay within 20% of the load
    // (and the floor), where 3 retries each would have quadrupled it.
    let r = count(&env, "/flaky", 100);
    assert_eq!(r["statuses"], serde_json::json!({"503": 100}), "{r}");
    let reached = env.backend_counts(8086)["count"].as_u64().unwrap();
    assert!(
        (110..=123).contains(&reached),
        "{reached} requests reached the failing target for 100 sent"
    );
    // A request with a body is never sent twice.
    let posted = env.curl(&[
        "-o /dev/null -w '%{http_code}' -d 'x=1'",
        &format!("'http://{vip}/flaky'"),
    ]);
    assert_eq!(posted, "503");
    assert_eq!(env.backend_counts(8086)["count"], reached + 1);

    // Per-try timeouts: two tries of 300 ms, then 504 well before the
    // target's 1 s.
    let t = std::time::Instant::now();
    let slow = env.curl(&[
        "-o /dev/null -w '%{http_code}'",
        &format!("'http://{vip}/sleep/1000'"),
    ]);
    let took = t.elapsed();
    assert_eq!(slow, "504");
    assert!(took < std::time::Duration::from_millis(950), "{took:?}");
    assert_eq!(env.backend_counts(8090)["count"], 2);

    // Outlier ejection: pool-b fails three in a row and is out; all goes
    // to pool-a until its two seconds are over.
    assert_eq!(
        count(&env, "/pool", 4)["names"],
        serde_json::json!({"pool-a": 2, "pool-b": 2})
    );
    std::fs::write(env.run.join("fail-8085"), "").unwrap();
    let r = count(&env, "/pool", 20);
    assert_eq!(
        r["statuses"],
        serde_json::json!({"200": 17, "503": 3}),
        "{r}"
    );
    assert_eq!(metric(&env, "trellis_proxy_ejections_total{"), 1.0);
    assert_eq!(
        metric(
            &env,
            &format!(
                "trellis_target_ejected{{target_group=\"pool\",target=\"{}:8085\"}}",
                TARGET_IP
            )
        ),
        1.0
    );
    // As the node reports it, in the target group's status.
    let t = std::time::Instant::now();
    loop {
        let yaml = env.trellis("get targetgroup pool -o yaml");
        if yaml.contains("ejected") {
            assert!(yaml.contains(":8085"), "{yaml}");
            break;
        }
        assert!(
            t.elapsed() < std::time::Duration::from_secs(5),
            "never reported ejected: {yaml}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    std::fs::remove_file(env.run.join("fail-8085")).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let r = count(&env, "/pool", 4);
    assert_eq!(
        r["names"],
        serde_json::json!({"pool-a": 2, "pool-b": 2}),
        "back: {r}"
    );
}

#[test]
fn grpc_calls_are_routed_by_service_and_method() {
    let Some(mut env) = Env::new("grpc-route") else {
        return;
    };
    env.start_backends(&["grpc:9101:get", "grpc:9102:orders"]);
    let group = |name: &str, port: u16, extra: &str| {
        format!(
            "---\napiVersion: trellis.dev/v1alpha1\nkind: TargetGroup\nmetadata: {{name: {name}}}\n\
             spec: {{network: east, protocolVersion: GRPC{extra}, targets: [{{address: {TARGET_IP}, port: {port}}}]}}\n"
        )
    };
    let off = ", healthCheck: {enabled: false}";
    let checked =
        ", failOpen: false, healthCheck: {protocol: TCP, intervalSeconds: 1, timeoutSeconds: 1}";
    env.apply(&format!(
        r#"{base}{get}{any}{dead}---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {{name: orders}}
spec:
  serviceNetworks: [shop]
  listeners:
    - name: grpc
      protocol: HTTP
      defaultAction: {{fixedResponse: {{statusCode: 404}}}}
      rules:
        - name: get
          priority: 1
          match: {{grpc: {{service: shop.Orders, method: Get}}}}
          action: {{forward: [{{targetGroup: orders-get}}]}}
        - name: orders
          priority: 2
          match: {{grpc: {{service: shop.Orders}}}}
          action: {{forward: [{{targetGroup: orders-any}}]}}
        - name: carts
          priority: 3
          match: {{grpc: {{type: RegularExpression, service: "shop\\.Carts(V2)?"}}}}
          action: {{forward: [{{targetGroup: dead}}]}}
"#,
        base = shop_network(&[], ""),
        get = group("orders-get", 9101, off),
        any = group("orders-any", 9102, off),
        dead = group("dead", 9199, checked),
    ));
    env.start_node(&[]);
    let vip = env.vip("orders");
    let at = format!("{vip}:80");
    // A real gRPC core client (grpcio) on one HTTP/2 channel.
    let r = env.client(&[
        "grpc",
        &at,
        "/shop.Orders/Get",
        "/shop.Orders/List",
        "/shop.Orders/GetAll",
    ]);
    let names: Vec<&str> = (0..3)
        .map(|i| r[i]["reply"]["name"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(names, ["get", "orders", "orders"], "{r}");
    assert_eq!(r[0]["reply"]["method"], "/shop.Orders/Get");
    // No healthy target behind the method's rule: UNAVAILABLE, with why.
    let t = std::time::Instant::now();
    loop {
        let r = env.client(&["grpc", &at, "/shop.CartsV2/Get", "/shop.Carts/Put"]);
        assert_eq!(r[0]["code"], "UNAVAILABLE", "{r}");
        assert_eq!(r[1]["code"], "UNAVAILABLE", "{r}");
        if r[0]["details"] == "no-healthy-target" {
            break;
        }
        assert!(
            t.elapsed() < std::time::Duration::from_secs(6),
            "never no-healthy-target: {r}"
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
}
