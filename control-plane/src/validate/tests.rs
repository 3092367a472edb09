//! Every validation error kind, each with its exact location and message, as
//! the CLI prints them. BASE is applied first, as a user would have; each
//! case is then applied on its own, so line numbers count from its first line.

use crate::state::{Settings, State};
use trellis_api::manifest;

/// Valid objects the cases refer to.
const BASE: &str = "
---
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
metadata: {name: blue}
spec: {network: east, targets: [{address: 10.0.0.1}]}
---
apiVersion: trellis.dev/v1alpha1
kind: TargetGroup
metadata: {name: pool}
spec: {network: east, protocol: TCP, port: 5432}
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: taken}
spec: {serviceNetworks: [shop], customDomainName: taken.example.com, listeners: []}
";

pub(crate) fn settings(pool: &str) -> Settings {
    Settings {
        zone: "trellis.internal".into(),
        vip_pool_v4: pool.parse().unwrap(),
        vip_pool_v6: "fd00:7472:6c73::/112".parse().unwrap(),
        vip_hold_secs: 60,
        max_state_bytes: 1 << 20,
    }
}

fn values(docs: &[manifest::Document]) -> Vec<serde_json::Value> {
    docs.iter().map(|d| d.value.clone()).collect()
}

fn errors_with_pool(case: &str, pool: &str) -> Vec<String> {
    let s = settings(pool);
    let base = manifest::parse("base.yaml", BASE).expect("BASE is valid YAML");
    let state = State::empty(&s)
        .apply(&values(&base), &s, 0, false)
        .expect("BASE is valid")
        .state;
    let docs = manifest::parse("t.yaml", case).expect("cases are valid YAML");
    match state.apply(&values(&docs), &s, 0, false) {
        Ok(_) => Vec::new(),
        Err(errs) => errs
            .iter()
            .map(|e| {
                docs[e.document.expect("submitted")]
                    .error(&e.path, e.message.clone())
                    .to_string()
            })
            .collect(),
    }
}

fn errors(case: &str) -> Vec<String> {
    errors_with_pool(case, "169.254.171.0/24")
}

/// A service with one HTTP listener whose default action is `action`.
fn service(listener_extra: &str) -> String {
    format!(
        "apiVersion: trellis.dev/v1alpha1
kind: Service
metadata:
  name: checkout
spec:
  serviceNetworks: [shop]
  listeners:
    - name: web
      protocol: HTTP
{listener_extra}"
    )
}

const FORWARD_BLUE: &str = "      defaultAction: {forward: [{targetGroup: blue}]}\n";

fn check(cases: &[(&str, String, &[&str])]) {
    for (what, yaml, expected) in cases {
        assert_eq!(errors(yaml), *expected, "case: {what}\n{yaml}");
    }
}

#[test]
fn base_is_valid() {
    assert_eq!(errors(""), Vec::<String>::new());
}

#[test]
fn envelope_and_decoding() {
    check(&[
        (
            "wrong apiVersion and kind",
            "apiVersion: v1\nkind: Gizmo\nmetadata: {name: a}\nspec: {}\n".into(),
            &[
                "t.yaml:1:1: apiVersion: unsupported apiVersion \"v1\", expected \"trellis.dev/v1alpha1\"",
                "t.yaml:2:1: kind: unknown kind \"Gizmo\", expected one of Network, ServiceNetwork, Service, TargetGroup, Identity",
            ],
        ),
        (
            "unknown field",
            service(&format!("{FORWARD_BLUE}      colour: red\n")),
            &["t.yaml:11:7: spec.listeners[0].colour: unknown field `colour`, expected one of `name`, `protocol`, `port`, `defaultAction`, `rules`, `timeouts`, `pathNormalization`, `tls`, `ruleOrder`"],
        ),
        (
            "wrong type",
            service(&format!("{FORWARD_BLUE}      port: eighty\n")),
            &["t.yaml:11:7: spec.listeners[0].port: invalid type: string \"eighty\", expected u16"],
        ),
        (
            "missing field is placed at its parent",
            "apiVersion: trellis.dev/v1alpha1\nkind: TargetGroup\nmetadata: {name: x}\nspec:\n  port: 80\n".into(),
            &["t.yaml:4:1: spec: missing field `network`"],
        ),
        (
            "same object twice in one batch",
            "apiVersion: trellis.dev/v1alpha1\nkind: Network\nmetadata: {name: west}\nspec: {}\n---\n\
             apiVersion: trellis.dev/v1alpha1\nkind: Network\nmetadata: {name: west}\nspec: {}\n"
                .into(),
            &["t.yaml:8:12: metadata.name: Network \"west\" is also declared in document 0"],
        ),
        (
            "name is not a DNS label",
            "apiVersion: trellis.dev/v1alpha1\nkind: Network\nmetadata:\n  name: West_1\nspec: {}\n".into(),
            &["t.yaml:4:3: metadata.name: \"West_1\" is not a valid name: use lowercase letters, digits and '-'"],
        ),
    ]);
}

#[test]
fn references() {
    check(&[
        (
            "missing service network and target group",
            "apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: checkout}
spec:
  serviceNetworks: [shop, nope]
  listeners:
    - name: web
      protocol: HTTP
      defaultAction:
        forward:
          - targetGroup: ghost
"
            .into(),
            &[
                "t.yaml:5:27: spec.serviceNetworks[1]: ServiceNetwork \"nope\" does not exist",
                "t.yaml:11:13: spec.listeners[0].defaultAction.forward[0].targetGroup: TargetGroup \"ghost\" does not exist",
            ],
        ),
        (
            "missing network of a target group and of a service network",
            "apiVersion: trellis.dev/v1alpha1
kind: TargetGroup
metadata: {name: red}
spec:
  network: west
---
apiVersion: trellis.dev/v1alpha1
kind: ServiceNetwork
metadata: {name: sn2}
spec:
  networks: [east, east, west]
"
            .into(),
            &[
                "t.yaml:5:3: spec.network: Network \"west\" does not exist",
                "t.yaml:11:26: spec.networks[2]: Network \"west\" does not exist",
                "t.yaml:11:20: spec.networks[1]: network \"east\" is listed twice",
            ],
        ),
    ]);
}

#[test]
fn rules_and_actions() {
    check(&[
        (
            "priority already used (the example in the issue)",
            service(&format!(
                "{FORWARD_BLUE}      rules:
        - name: latest
          priority: 10
          match: {{path: {{prefix: /v2}}}}
          action: {{forward: [{{targetGroup: blue}}]}}
        - name: beta
          priority: 10
          match: {{method: POST}}
          action: {{fixedResponse: {{statusCode: 404}}}}
"
            )),
            &["t.yaml:17:11: spec.listeners[0].rules[1].priority: 10 is already used by rule \"latest\""],
        ),
        (
            "priority out of range, empty match, bad path and method",
            service(&format!(
                "{FORWARD_BLUE}      rules:
        - name: a
          priority: 101
          match: {{}}
          action: {{fixedResponse: {{statusCode: 404}}}}
        - name: b
          priority: 2
          match: {{path: {{exact: v2}}, method: get}}
          action: {{fixedResponse: {{statusCode: 404}}}}
"
            )),
            &[
                "t.yaml:13:11: spec.listeners[0].rules[0].priority: 101 is out of range 1..=100",
                "t.yaml:14:11: spec.listeners[0].rules[0].match: a match needs at least one of path, grpc, method, headers, query, host",
                "t.yaml:18:19: spec.listeners[0].rules[1].match.path: \"v2\" must start with / and be at most 2048 bytes",
                "t.yaml:18:38: spec.listeners[0].rules[1].match.method: \"get\" is not an HTTP method such as GET",
            ],
        ),
        (
            "header matches",
            service(&format!(
                "{FORWARD_BLUE}      rules:
        - name: a
          priority: 1
          match:
            headers:
              - {{name: x-canary, exact: \"1\", prefix: \"1\"}}
              - {{name: \"bad header\", exact: a}}
              - {{name: x-re, regex: \"(\"}}
          action: {{forward: [{{targetGroup: blue}}]}}
"
            )),
            &[
                "t.yaml:16:17: spec.listeners[0].rules[0].match.headers[0]: set exactly one of exact, prefix, contains, regex, present",
                "t.yaml:17:18: spec.listeners[0].rules[0].match.headers[1].name: \"bad header\" is not a valid header name",
                "t.yaml:18:30: spec.listeners[0].rules[0].match.headers[2].regex: invalid regex: error: unclosed group",
            ],
        ),
        (
            "path regex, header presence and query matches",
            service(&format!(
                "{FORWARD_BLUE}      rules:
        - name: a
          priority: 1
          match:
            path: {{regex: \"/v[0-9\", prefix: /v}}
            headers: [{{name: x-debug, present: true, exact: \"1\"}}]
            query:
              - {{name: q, exact: a, regex: b}}
              - {{name: q, present: true}}
              - {{name: \"\", regex: \"(\"}}
          action: {{forward: [{{targetGroup: blue}}]}}
        - name: b
          priority: 2
          match: {{path: {{regex: \"/v[0-9\"}}}}
          action: {{forward: [{{targetGroup: blue}}]}}
"
            )),
            &[
                "t.yaml:15:13: spec.listeners[0].rules[0].match.path: set exactly one of exact, prefix, regex",
                "t.yaml:16:23: spec.listeners[0].rules[0].match.headers[0]: set exactly one of exact, prefix, contains, regex, present",
                "t.yaml:18:17: spec.listeners[0].rules[0].match.query[0]: set exactly one of exact, regex, present",
                "t.yaml:19:18: spec.listeners[0].rules[0].match.query[1].name: parameter \"q\" has a condition already",
                "t.yaml:20:18: spec.listeners[0].rules[0].match.query[2].name: a query parameter name is 1 to 256 bytes",
                "t.yaml:20:28: spec.listeners[0].rules[0].match.query[2].regex: invalid regex: error: unclosed group",
                "t.yaml:24:26: spec.listeners[0].rules[1].match.path.regex: invalid regex: error: unclosed character class",
            ],
        ),
        (
            "too many header matches and a bad host",
            service(&format!(
                "{FORWARD_BLUE}      rules:
        - name: a
          priority: 1
          match:
            host: \"*.-bad\"
            headers: [{{name: a, exact: x}}, {{name: b, exact: x}}, {{name: c, exact: x}}, {{name: d, exact: x}}, {{name: e, exact: x}}, {{name: f, exact: x}}]
          action: {{forward: [{{targetGroup: blue}}]}}
"
            )),
            &[
                "t.yaml:16:13: spec.listeners[0].rules[0].match.headers: 6 header matches, at most 5 allowed",
                "t.yaml:15:13: spec.listeners[0].rules[0].match.host: \"*.-bad\" is not a host name: needs at least two labels, e.g. checkout.example.com",
            ],
        ),
        (
            "weights",
            service(
                "      defaultAction:
        forward:
          - {targetGroup: blue, weight: 0}
          - {targetGroup: blue, weight: 1000}
",
            ),
            &[
                "t.yaml:13:33: spec.listeners[0].defaultAction.forward[1].weight: 1000 is out of range 0..=999",
                "t.yaml:13:14: spec.listeners[0].defaultAction.forward[1].targetGroup: target group \"blue\" is listed twice",
            ],
        ),
        (
            "all weights zero",
            service("      defaultAction: {forward: [{targetGroup: blue, weight: 0}]}\n"),
            &["t.yaml:10:23: spec.listeners[0].defaultAction.forward: all weights are 0; at least one target group must get traffic"],
        ),
        (
            "forward and fixed response together",
            service("      defaultAction: {forward: [{targetGroup: blue}], fixedResponse: {statusCode: 700}}\n"),
            &["t.yaml:10:7: spec.listeners[0].defaultAction: set exactly one of forward, fixedResponse, redirect"],
        ),
        (
            "redirects, rewrites and header changes",
            service(&format!(
                "{FORWARD_BLUE}      rules:
        - name: a
          priority: 1
          match: {{path: {{prefix: /old}}}}
          action: {{redirect: {{scheme: ftp, hostname: \"-x\", port: 0, path: {{full: old}}, statusCode: 200}}}}
        - name: b
          priority: 2
          match: {{path: {{prefix: /b}}}}
          action:
            forward: [{{targetGroup: blue}}]
            requestHeaders:
              set: [{{name: x-trellis-identity, value: admin}}, {{name: x-env, value: a}}]
              remove: [host, x-env]
            responseHeaders: {{add: [{{name: \"bad name\", value: x}}, {{name: x-ctl, value: \"a\\u0001\"}}]}}
        - name: c
          priority: 3
          match: {{path: {{prefix: /c}}}}
          action: {{fixedResponse: {{statusCode: 404}}, responseHeaders: {{remove: [x-a]}}}}
        - name: d
          priority: 4
          match: {{path: {{exact: /d}}}}
          action: {{forward: [{{targetGroup: blue}}], rewrite: {{path: {{prefix: /e}}}}}}
        - name: e
          priority: 5
          match: {{path: {{prefix: /e}}}}
          action: {{forward: [{{targetGroup: blue}}], rewrite: {{hostname: \"a b\", path: {{full: /x, prefix: /y}}}}}}
"
            )),
            &[
                "t.yaml:15:88: spec.listeners[0].rules[0].action.redirect.statusCode: 200 is not 301, 302, 303, 307 or 308",
                "t.yaml:15:31: spec.listeners[0].rules[0].action.redirect.scheme: \"ftp\" is not http or https",
                "t.yaml:15:44: spec.listeners[0].rules[0].action.redirect.hostname: \"-x\" is not a host name: needs at least two labels, e.g. checkout.example.com",
                "t.yaml:15:60: spec.listeners[0].rules[0].action.redirect.port: port must be 1..=65535",
                "t.yaml:15:69: spec.listeners[0].rules[0].action.redirect.path: \"old\" must start with /, be visible ASCII without ? or #, at most 2048 bytes",
                "t.yaml:23:24: spec.listeners[0].rules[1].action.requestHeaders.remove[0]: request header host is the proxy's to set",
                "t.yaml:22:22: spec.listeners[0].rules[1].action.requestHeaders.set[0].name: request header x-trellis-identity is the proxy's to set",
                "t.yaml:22:64: spec.listeners[0].rules[1].action.requestHeaders.set[1].name: header x-env is changed twice",
                "t.yaml:24:38: spec.listeners[0].rules[1].action.responseHeaders.add[0].name: \"bad name\" is not a valid header name",
                "t.yaml:24:81: spec.listeners[0].rules[1].action.responseHeaders.add[1].value: a header value is visible ASCII, at most 4096 bytes",
                "t.yaml:28:54: spec.listeners[0].rules[2].action.responseHeaders: header changes go with forward, on HTTP and HTTPS listeners",
                "t.yaml:32:69: spec.listeners[0].rules[3].action.rewrite.path.prefix: replacing the matched prefix needs a rule matching a path prefix",
                "t.yaml:36:62: spec.listeners[0].rules[4].action.rewrite.hostname: \"a b\" is not a host name or address",
                "t.yaml:36:79: spec.listeners[0].rules[4].action.rewrite.path: set exactly one of full, prefix",
            ],
        ),
        (
            "cors",
            service(&format!(
                "{FORWARD_BLUE}      rules:
        - name: a
          priority: 1
          match: {{path: {{prefix: /a}}}}
          action:
            forward: [{{targetGroup: blue}}]
            cors: {{allowOrigins: [\"*\", \"ftp://x.example\"], allowMethods: [get], allowHeaders: [\"bad header\"], maxAgeSeconds: 100000, allowCredentials: true}}
        - name: b
          priority: 2
          match: {{path: {{prefix: /b}}}}
          action: {{fixedResponse: {{statusCode: 404}}, cors: {{allowOrigins: [\"https://a.example\"]}}}}
"
            )),
            &[
                "t.yaml:17:35: spec.listeners[0].rules[0].action.cors.allowOrigins[0]: \"*\" cannot go with allowCredentials: name the origins",
                "t.yaml:17:40: spec.listeners[0].rules[0].action.cors.allowOrigins[1]: \"ftp://x.example\" is not *, nor scheme://host[:port] with an optional *. before the host",
                "t.yaml:17:75: spec.listeners[0].rules[0].action.cors.allowMethods[0]: \"get\" is not an HTTP method such as GET",
                "t.yaml:17:96: spec.listeners[0].rules[0].action.cors.allowHeaders[0]: \"bad header\" is not a valid header name",
                "t.yaml:17:111: spec.listeners[0].rules[0].action.cors.maxAgeSeconds: at most 86400 (a day)",
                "t.yaml:21:54: spec.listeners[0].rules[1].action.cors: cors goes with forward, on HTTP and HTTPS listeners",
            ],
        ),
        (
            "mirrors, timeouts, retries",
            service(&format!(
                "{FORWARD_BLUE}      rules:
        - name: a
          priority: 1
          match: {{path: {{prefix: /a}}}}
          action:
            forward: [{{targetGroup: blue}}]
            mirrors: [{{targetGroup: blue}}, {{targetGroup: pool}}, {{targetGroup: gone, percent: 101}}]
            timeouts: {{requestMs: 100, perTryMs: 200}}
            retry: {{attempts: 9, on: [], codes: [200], backoffMs: 0, budgetPercent: 150}}
        - name: b
          priority: 2
          match: {{path: {{prefix: /b}}}}
          action: {{fixedResponse: {{statusCode: 404}}, mirrors: [{{targetGroup: blue}}], timeouts: {{}}, retry: {{}}}}
"
            )),
            &[
                "t.yaml:17:24: spec.listeners[0].rules[0].action.mirrors[0].targetGroup: the rule forwards to \"blue\" already; a mirror goes elsewhere",
                "t.yaml:17:45: spec.listeners[0].rules[0].action.mirrors[1].targetGroup: target group \"pool\" speaks TCP; only HTTP requests are mirrored",
                "t.yaml:17:85: spec.listeners[0].rules[0].action.mirrors[2].percent: 101 is out of range 0..=100",
                "t.yaml:17:66: spec.listeners[0].rules[0].action.mirrors[2].targetGroup: TargetGroup \"gone\" does not exist",
                "t.yaml:18:40: spec.listeners[0].rules[0].action.timeouts.perTryMs: 200 is longer than requestMs (100): no try could use it",
                "t.yaml:19:21: spec.listeners[0].rules[0].action.retry.attempts: 9 is out of range 1..=5",
                "t.yaml:19:50: spec.listeners[0].rules[0].action.retry.codes[0]: 200 is out of range 400..=599",
                "t.yaml:19:56: spec.listeners[0].rules[0].action.retry.backoffMs: 0 is out of range 1..=10000",
                "t.yaml:19:70: spec.listeners[0].rules[0].action.retry.budgetPercent: 150 is out of range 0..=100",
                "t.yaml:23:54: spec.listeners[0].rules[1].action.mirrors: mirrors go with forward, on HTTP and HTTPS listeners",
                "t.yaml:23:86: spec.listeners[0].rules[1].action.timeouts: timeouts go with forward, on HTTP and HTTPS listeners",
                "t.yaml:23:100: spec.listeners[0].rules[1].action.retry: a retry goes with forward, on HTTP and HTTPS listeners",
            ],
        ),
        (
            "grpc matches",
            service(&format!(
                "{FORWARD_BLUE}      rules:
        - name: a
          priority: 1
          match: {{grpc: {{service: \"shop..x\", method: \"Get.One\"}}, path: {{prefix: /a}}}}
          action: {{forward: [{{targetGroup: blue}}]}}
        - name: b
          priority: 2
          match: {{grpc: {{type: RegularExpression, service: \"shop.(\", method: \"Get.*\"}}}}
          action: {{forward: [{{targetGroup: blue}}]}}
        - name: c
          priority: 3
          match: {{grpc: {{}}}}
          action: {{forward: [{{targetGroup: blue}}]}}
"
            )),
            &[
                "t.yaml:14:19: spec.listeners[0].rules[0].match.grpc: grpc is a path condition: not with path",
                "t.yaml:14:26: spec.listeners[0].rules[0].match.grpc.service: \"shop..x\" is not a gRPC service such as shop.v1.Orders",
                "t.yaml:14:46: spec.listeners[0].rules[0].match.grpc.method: \"Get.One\" is not a gRPC method such as GetOrder",
                "t.yaml:18:51: spec.listeners[0].rules[1].match.grpc.service: invalid regex: error: unclosed group",
                "t.yaml:22:19: spec.listeners[0].rules[2].match.grpc: set service, method or both",
            ],
        ),
        (
            "outlier detection out of range",
            "apiVersion: trellis.dev/v1alpha1
kind: TargetGroup
metadata: {name: green}
spec: {network: east, outlierDetection: {consecutiveFailures: 0, baseEjectionSeconds: 7200, maxEjectedPercent: 101}}
"
            .to_string(),
            &[
                "t.yaml:4:42: spec.outlierDetection.consecutiveFailures: 0 is out of range 1..=1000",
                "t.yaml:4:66: spec.outlierDetection.baseEjectionSeconds: 7200 is out of range 1..=3600",
                "t.yaml:4:93: spec.outlierDetection.maxEjectedPercent: 101 is out of range 0..=100",
            ],
        ),
        (
            "fixed response status out of range",
            service("      defaultAction: {fixedResponse: {statusCode: 700}}\n"),
            &["t.yaml:10:39: spec.listeners[0].defaultAction.fixedResponse.statusCode: 700 is out of range 200..=599"],
        ),
    ]);
}

#[test]
fn listeners() {
    let yaml = "apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: db}
spec:
  serviceNetworks: [shop]
  listeners:
    - name: pg
      protocol: TCP
      defaultAction: {forward: [{targetGroup: blue}]}
      rules:
        - {name: r, priority: 1, match: {method: GET}, action: {fixedResponse: {statusCode: 404}}}
    - name: web
      protocol: HTTP
      defaultAction: {fixedResponse: {statusCode: 404}}
    - name: web
      protocol: HTTPS
      port: 80
      defaultAction: {forward: [{targetGroup: pool}]}
    - name: raw
      protocol: TLS_PASSTHROUGH
      defaultAction: {fixedResponse: {statusCode: 404}}
      tls: {certificates: []}
      pathNormalization: {escapedSlashes: KEEP}
";
    check(&[(
        "ports, names, protocols",
        yaml.into(),
        &[
            "t.yaml:7:7: spec.listeners[0].port: a TCP listener needs a port",
            "t.yaml:9:34: spec.listeners[0].defaultAction.forward[0].targetGroup: target group \"blue\" speaks HTTP, which this listener cannot forward to",
            "t.yaml:10:7: spec.listeners[0].rules: TCP listeners route by their default action only; rules need HTTP, HTTPS or TLS_PASSTHROUGH",
            "t.yaml:15:7: spec.listeners[2].name: listener \"web\" is declared twice",
            "t.yaml:17:7: spec.listeners[2].port: port 80 is already used by listener \"web\"",
            "t.yaml:18:34: spec.listeners[2].defaultAction.forward[0].targetGroup: target group \"pool\" speaks TCP, which this listener cannot forward to",
            "t.yaml:15:7: spec.listeners[2].tls.certificates: an HTTPS listener needs at least one certificate (certificateFile and keyFile)",
            "t.yaml:21:23: spec.listeners[3].defaultAction.fixedResponse: fixed responses need an HTTP or HTTPS listener",
            "t.yaml:23:7: spec.listeners[3].pathNormalization: only HTTP and HTTPS listeners read request paths",
            "t.yaml:22:7: spec.listeners[3].tls: only HTTPS listeners take certificates",
        ],
    )]);
}

#[test]
fn domains() {
    let svc = |name: &str, domain: &str| {
        format!(
            "apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {{name: {name}}}
spec:
  customDomainName: {domain}
---
"
        )
    };
    check(&[
        (
            "invalid",
            svc("a", "nodots"),
            &[
                "t.yaml:5:3: spec.customDomainName: \"nodots\" is not a valid domain name: needs at least two labels, e.g. checkout.example.com",
            ],
        ),
        (
            "inside the service zone",
            svc("a", "x.trellis.internal"),
            &[
                "t.yaml:5:3: spec.customDomainName: \"x.trellis.internal\" is inside the service zone trellis.internal; pick a name outside it",
            ],
        ),
        (
            "already used",
            svc("a", "Taken.Example.com."),
            &[
                "t.yaml:5:3: spec.customDomainName: \"taken.example.com\" is already the custom domain name of service \"taken\"",
            ],
        ),
    ]);
}

#[test]
fn target_groups() {
    let yaml = "apiVersion: trellis.dev/v1alpha1
kind: TargetGroup
metadata: {name: red}
spec:
  network: east
  protocol: TCP
  healthCheck:
    intervalSeconds: 4
    timeoutSeconds: 5
    healthyThreshold: 11
    path: healthz
    matcher: {httpCode: \"300-200\"}
  targets:
    - address: web-1
    - address: 224.0.0.1
      port: 80
    - address: 10.0.0.1
      port: 80
    - {address: 10.0.0.1, port: 80}
";
    check(&[(
        "ports, health check, targets",
        yaml.into(),
        &[
            "t.yaml:4:1: spec.port: a TCP target group needs a port",
            "t.yaml:10:5: spec.healthCheck.healthyThreshold: 11 is out of range 2..=10",
            "t.yaml:9:5: spec.healthCheck.timeoutSeconds: 5 must not exceed intervalSeconds (4)",
            "t.yaml:11:5: spec.healthCheck.path: \"healthz\" must start with / and be at most 2048 bytes",
            "t.yaml:12:15: spec.healthCheck.matcher.httpCode: \"300-200\": the range is empty",
            "t.yaml:14:7: spec.targets[0].address: \"web-1\" is not an IP address",
            "t.yaml:15:7: spec.targets[1].address: 224.0.0.1 cannot be a target (unspecified or multicast)",
            "t.yaml:19:7: spec.targets[3]: target 10.0.0.1:80 is listed twice",
        ],
    )]);
}

#[test]
fn networks_and_identities() {
    check(&[
        (
            "gateway addresses",
            "apiVersion: trellis.dev/v1alpha1
kind: Network
metadata: {name: west}
spec:
  gateways:
    - address: 10.1.0.1
    - address: gw.west.example:15008
    - address: gw.west.example:15008
"
            .into(),
            &[
                "t.yaml:6:7: spec.gateways[0].address: \"10.1.0.1\" is not HOST:PORT: missing :PORT",
                "t.yaml:8:7: spec.gateways[2].address: gateway \"gw.west.example:15008\" is listed twice",
            ],
        ),
        (
            "identity alias",
            "apiVersion: trellis.dev/v1alpha1
kind: Identity
metadata: {name: ci}
spec:
  aliases: [\"arn:aws:iam::123456789012:role/ci\", \"two words\"]
"
            .into(),
            &["t.yaml:5:50: spec.aliases[1]: an alias is a principal name such as an IAM role ARN"],
        ),
    ]);
}

#[test]
fn auth_policies() {
    check(&[
        (
            "policy without SIGV4, and a grammar error",
            "apiVersion: trellis.dev/v1alpha1
kind: ServiceNetwork
metadata: {name: sn2}
spec:
  networks: [east]
  authPolicy:
    Version: \"2012-10-17\"
    Statement:
      - Effect: Allow
        Principal: \"*\"
        Action: s3:GetObject
        Resource: \"*\"
"
            .into(),
            &[
                "t.yaml:6:3: spec.authPolicy: an auth policy is only enforced with authType SIGV4; set authType: SIGV4 or remove the policy",
                "t.yaml:11:9: spec.authPolicy.Statement[0].Action[0]: action \"s3:GetObject\" is not a service-network action; use \"vpc-lattice-svcs:Invoke\"",
            ],
        ),
        (
            "policy as a JSON string",
            "apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: a}
spec:
  authType: SIGV4
  authPolicy: '{\"Version\": \"2012-10-17\", \"Statement\": {\"Effect\": \"Allow\", \"Action\": \"*\", \"Resource\": \"*\"}}'
"
            .into(),
            &["t.yaml:6:3: spec.authPolicy.Statement: needs Principal or NotPrincipal"],
        ),
    ]);
}

/// The condition keys a policy may use, as refusals list them.
const KEYS: &str = "aws:PrincipalType, aws:PrincipalArn, aws:PrincipalId, trellis:Principal, aws:PrincipalTag/NAME, aws:SourceIp, aws:SecureTransport, aws:CurrentTime, aws:EpochTime, vpc-lattice-svcs:SourceVpc, trellis:SourceNetwork, vpc-lattice-svcs:SourceVpcOwnerAccount, vpc-lattice-svcs:RequestMethod, trellis:RequestMethod, vpc-lattice-svcs:RequestPath, trellis:RequestPath, vpc-lattice-svcs:RequestHeader/NAME, trellis:RequestHeader/NAME, vpc-lattice-svcs:RequestQueryString/NAME, trellis:RequestQueryString/NAME, vpc-lattice-svcs:ServiceArn, vpc-lattice-svcs:ServiceNetworkArn, trellis:Service, trellis:ServiceNetwork, vpc-lattice-svcs:Port, trellis:Port, trellis:Workload, trellis:WorkloadUnit, trellis:WorkloadContainer, trellis:WorkloadPod";

/// Every policy element the node could not evaluate as written is refused
/// where it is written: a misspelt key read as absent would make a negated
/// condition grant access.
#[test]
fn policy_elements_are_checked_at_apply() {
    let doc = |statement: &str| {
        format!(
            "apiVersion: trellis.dev/v1alpha1
kind: ServiceNetwork
metadata: {{name: sn2}}
spec:
  networks: [east]
  authType: SIGV4
  authPolicy:
    Version: \"2012-10-17\"
    Statement:
      - Effect: Allow
        Principal: \"*\"
        Action: vpc-lattice-svcs:Invoke
{statement}"
        )
    };
    // Every refusal of a key lists the keys there are.
    let unknown: Vec<String> = [
        "t.yaml:16:13: spec.authPolicy.Statement[0].Condition.StringNotEquals.aws:PrincipalTagg/team: unknown condition key aws:PrincipalTagg/team; keys: {KEYS}",
        "t.yaml:16:13: spec.authPolicy.Statement[0].Condition.StringEquals.foo:Bar: unknown condition key foo:Bar; keys: {KEYS}",
        "t.yaml:16:13: spec.authPolicy.Statement[0].Condition.StringEquals.aws:PrincipalOrgID: aws:PrincipalOrgID is an AWS key Trellis does not model; a condition on it would never hold. Keys: {KEYS}",
    ]
    .iter()
    .map(|m| m.replace("{KEYS}", KEYS))
    .collect();
    let any = "        Resource: \"*\"\n";
    let cond = |op: &str, key: &str, value: &str| {
        doc(&format!(
            "{any}        Condition:\n          {op}:\n            {key}: {value}\n"
        ))
    };
    check(&[
        (
            "a misspelt key",
            cond("StringNotEquals", "aws:PrincipalTagg/team", "red"),
            &[unknown[0].as_str()],
        ),
        (
            "an unknown namespace",
            cond("StringEquals", "foo:Bar", "x"),
            &[unknown[1].as_str()],
        ),
        (
            "an AWS key Trellis does not model",
            cond("StringEquals", "aws:PrincipalOrgID", "o-1"),
            &[unknown[2].as_str()],
        ),
        (
            "a bad CIDR",
            cond("IpAddress", "aws:SourceIp", "10.0.0.0/33"),
            &["t.yaml:16:13: spec.authPolicy.Statement[0].Condition.IpAddress.aws:SourceIp: \"10.0.0.0/33\" is not an IP address or CIDR (such as 10.0.0.0/8)"],
        ),
        (
            "a bad date",
            cond("DateLessThan", "aws:CurrentTime", "2026-13-45"),
            &["t.yaml:16:13: spec.authPolicy.Statement[0].Condition.DateLessThan.aws:CurrentTime: \"2026-13-45\" is not a date (RFC 3339, or seconds since 1970)"],
        ),
        (
            "a bad number",
            cond("NumericLessThan", "vpc-lattice-svcs:Port", "eighty"),
            &["t.yaml:16:13: spec.authPolicy.Statement[0].Condition.NumericLessThan.vpc-lattice-svcs:Port: \"eighty\" is not a number"],
        ),
        (
            "an operator for another kind of value",
            cond("IpAddress", "vpc-lattice-svcs:RequestPath", "10.0.0.0/8"),
            &["t.yaml:16:13: spec.authPolicy.Statement[0].Condition.IpAddress.vpc-lattice-svcs:RequestPath: IpAddress does not apply to vpc-lattice-svcs:RequestPath, whose values are Text"],
        ),
        (
            "a key without its name",
            cond("StringEquals", "aws:PrincipalTag/", "x"),
            &["t.yaml:16:13: spec.authPolicy.Statement[0].Condition.StringEquals.aws:PrincipalTag/: aws:PrincipalTag/ needs a name after the /"],
        ),
        (
            "a resource that names no service",
            doc("        Resource: \"trellis:services/orders/*\"\n"),
            &["t.yaml:13:9: spec.authPolicy.Statement[0].Resource[0]: resource \"trellis:services/orders/*\" names no service; use \"*\", \"trellis:service/NAME/PATH\" or \"arn:aws:vpc-lattice:REGION:ACCOUNT:service/NAME/PATH\""],
        ),
        (
            "what is valid stays valid",
            doc("        Resource: [\"trellis:service/orders/*\", \"arn:aws:vpc-lattice:us-east-1:123456789012:service/orders/*\"]
        Condition:
          IpAddress: {aws:SourceIp: [10.0.0.0/8, 192.0.2.1]}
          DateLessThan: {aws:CurrentTime: \"2030-01-01T00:00:00Z\"}
          NumericLessThan: {vpc-lattice-svcs:Port: 8080}
          StringEquals: {aws:principaltag/Team: red, trellis:RequestHeader/X-Env: prod}
"),
            &[],
        ),
    ]);
}

#[test]
fn vip_pool_exhaustion_rejects_the_apply() {
    // A /30 has two usable addresses; BASE's service takes one.
    let two = "apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: a}
spec: {}
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: b}
spec: {}
";
    assert_eq!(
        errors_with_pool(two, "169.254.171.0/30"),
        [
            "t.yaml:8:12: metadata.name: cannot allocate a VIP: VIP pool 169.254.171.0/30 is exhausted: it holds 2 services, 2 assigned, 0 held back after deletes (the next is free at unix time 0); widen it with --vip-pool-v4 (e.g. 169.254.128.0/17, which holds 32506 services) or wait"
        ]
    );
}

#[test]
fn remaining_ranges_and_duplicates() {
    let many_targets: String = (0..1001)
        .map(|i| format!("{{address: 10.1.{}.{}}}, ", i / 250, i % 250))
        .collect();
    let eleven: String = (0..11)
        .map(|i| format!("{{targetGroup: g{i}}}, "))
        .collect();
    check(&[
        (
            "zero ports",
            "apiVersion: trellis.dev/v1alpha1
kind: TargetGroup
metadata: {name: red}
spec:
  network: east
  port: 0
  healthCheck: {port: 0}
  targets: [{address: 10.0.0.1, port: 0}]
"
            .into(),
            &[
                "t.yaml:6:3: spec.port: port must be 1..=65535",
                "t.yaml:7:17: spec.healthCheck.port: port must be 1..=65535",
                "t.yaml:8:33: spec.targets[0].port: port must be 1..=65535",
            ],
        ),
        (
            "too many targets",
            format!("apiVersion: trellis.dev/v1alpha1\nkind: TargetGroup\nmetadata: {{name: red}}\nspec:\n  network: east\n  targets: [{many_targets}]\n"),
            &["t.yaml:6:3: spec.targets: 1001 targets, at most 1000 allowed"],
        ),
        (
            "listener port 0, rule named twice, path with exact and prefix",
            service(&format!(
                "      port: 0
{FORWARD_BLUE}      rules:
        - {{name: a, priority: 1, match: {{path: {{exact: /a, prefix: /a}}}}, action: {{forward: [{{targetGroup: blue}}]}}}}
        - {{name: a, priority: 2, match: {{method: GET}}, action: {{forward: [{{targetGroup: blue}}]}}}}
"
            )),
            &[
                "t.yaml:10:7: spec.listeners[0].port: port must be 1..=65535",
                "t.yaml:13:42: spec.listeners[0].rules[0].match.path: set exactly one of exact, prefix, regex",
                "t.yaml:14:12: spec.listeners[0].rules[1].name: rule \"a\" is declared twice",
            ],
        ),
        (
            "forward to no target group",
            service("      defaultAction: {forward: []}\n"),
            &["t.yaml:10:23: spec.listeners[0].defaultAction.forward: forward to 1..=10 target groups"],
        ),
        (
            "forward to eleven target groups",
            service(&format!("      defaultAction: {{forward: [{eleven}]}}\n")),
            &["t.yaml:10:23: spec.listeners[0].defaultAction.forward: forward to 1..=10 target groups"],
        ),
        (
            "identity tag too long",
            format!(
                "apiVersion: trellis.dev/v1alpha1\nkind: Identity\nmetadata: {{name: ci}}\nspec:\n  tags: {{team: {}}}\n",
                "x".repeat(257)
            ),
            &["t.yaml:5:10: spec.tags.team: tag keys are 1..=128 bytes, values at most 256"],
        ),
    ]);
}

#[test]
fn every_list_and_free_text_has_a_maximum() {
    let labels: String = (0..70).map(|i| format!("l{i}: v\n    ")).collect();
    let tags: String = (0..51).map(|i| format!("t{i}: v, ")).collect();
    check(&[
        (
            "labels, tags, description",
            format!(
                "apiVersion: trellis.dev/v1alpha1
kind: Identity
metadata:
  name: alice
  labels:
    {labels}
spec:
  description: \"{}\"
  tags: {{{tags}}}
",
                "x".repeat(1025)
            ),
            &[
                "t.yaml:5:3: metadata.labels: 70 entries, at most 64 allowed",
                "t.yaml:78:3: spec.description: 1025 bytes, at most 1024 allowed",
                "t.yaml:79:3: spec.tags: 51 entries, at most 50 allowed",
            ],
        ),
        (
            "a header match value",
            service(&format!(
                "      defaultAction: {{forward: [{{targetGroup: blue}}]}}
      rules:
        - name: r
          priority: 1
          match: {{headers: [{{name: x-a, exact: \"{}\"}}]}}
          action: {{forward: [{{targetGroup: blue}}]}}
",
                "v".repeat(1025)
            )),
            &[
                "t.yaml:14:29: spec.listeners[0].rules[0].match.headers[0]: 1025 bytes, at most 1024 allowed",
            ],
        ),
    ]);
}

fn identity(name: &str, workloads: &str) -> String {
    format!(
        "apiVersion: trellis.dev/v1alpha1\nkind: Identity\nmetadata: {{name: {name}}}\nspec:\n  workloads:\n{workloads}"
    )
}

#[test]
fn workload_selectors_are_checked_and_never_select_one_workload_twice() {
    let docker = "a".repeat(64);
    check(&[
        (
            "each kind of selector",
            identity(
                "app",
                &format!(
                    "    - {{network: east, cgroup: /kubepods.slice/**/cri-containerd-*.scope}}\n    - {{network: east, systemdUnit: nginx.service}}\n    - {{network: east, dockerContainer: {docker}}}\n"
                ),
            ),
            &[],
        ),
        (
            "unknown network, two kinds at once, a bad path, a bad unit, a short id",
            identity(
                "app",
                "    - {network: north, cgroup: /a}\n    - {network: east, cgroup: /a, systemdUnit: a.service}\n    - {network: east, cgroup: a//b}\n    - {network: east, systemdUnit: nginx}\n    - {network: east, dockerContainer: 3f2a}\n",
            ),
            &[
                "t.yaml:6:8: spec.workloads[0].network: Network \"north\" does not exist",
                "t.yaml:7:7: spec.workloads[1]: give exactly one of cgroup, systemdUnit, dockerContainer",
                "t.yaml:8:7: spec.workloads[2]: a cgroup path starts with /",
                "t.yaml:9:7: spec.workloads[3]: a systemd unit is NAME.service, NAME.scope or NAME.slice",
                "t.yaml:10:7: spec.workloads[4]: a Docker container id is its 64 hex digits (docker inspect -f '{{.Id}}')",
            ],
        ),
        (
            "a unit inside another identity's glob",
            format!(
                "{}---\n{}",
                identity("web", "    - {network: east, cgroup: /system.slice/**}\n"),
                identity("api", "    - {network: east, systemdUnit: api.service}\n"),
            ),
            &[
                "t.yaml:6:7: spec.workloads[0]: selects workloads of network \"east\" that identity \"api\" (spec.workloads[0]) selects too: one workload, two identities",
            ],
        ),
    ]);
}
