//! Filters (`filters.rs`): redirect locations, prefix replacement, header
//! changes and CORS, against the Gateway API's examples.

use crate::filters::*;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::json;
use trellis_api::resource::ListenerProtocol;

fn redirect(spec: serde_json::Value, protocol: ListenerProtocol, port: u16) -> Redirect {
    Redirect::compile(
        &serde_json::from_value(spec).unwrap(),
        protocol,
        port,
        Some(4),
    )
}

#[test]
fn locations_keep_what_the_redirect_does_not_replace() {
    use ListenerProtocol::{Http, Https};
    let cases = [
        // (redirect, listener, request host, path, query, location)
        (
            json!({}),
            Http,
            80,
            "a.example",
            "/x",
            Some("q=1"),
            "http://a.example/x?q=1",
        ),
        (
            json!({"scheme": "https"}),
            Http,
            80,
            "a.example",
            "/x",
            None,
            "https://a.example/x",
        ),
        // A scheme given: that scheme's port, not the listener's.
        (
            json!({"scheme": "https"}),
            Http,
            8080,
            "a.example",
            "/",
            None,
            "https://a.example/",
        ),
        (
            json!({}),
            Http,
            8080,
            "a.example",
            "/",
            None,
            "http://a.example:8080/",
        ),
        (
            json!({"hostname": "b.example", "port": 8443, "scheme": "https"}),
            Http,
            80,
            "a.example",
            "/x",
            None,
            "https://b.example:8443/x",
        ),
        (
            json!({"path": {"full": "/new"}, "statusCode": 301}),
            Https,
            443,
            "a.example",
            "/old",
            Some("v=2"),
            "https://a.example/new?v=2",
        ),
        // In place of the rule's 4-byte prefix (`/old`).
        (
            json!({"path": {"prefix": "/new"}}),
            Http,
            80,
            "a.example",
            "/old/x",
            None,
            "http://a.example/new/x",
        ),
        (
            json!({"port": 80}),
            Https,
            443,
            "a.example",
            "/",
            None,
            "https://a.example:80/",
        ),
        (
            json!({}),
            Http,
            80,
            "fd00::1",
            "/",
            None,
            "http://[fd00::1]/",
        ),
    ];
    for (spec, protocol, port, host, path, query, want) in cases {
        let r = redirect(spec.clone(), protocol, port);
        assert_eq!(
            r.location(Some(host), path, query).as_deref(),
            Some(want),
            "{spec}"
        );
    }
    assert_eq!(
        redirect(json!({}), Http, 80).location(None, "/", None),
        None
    );
    assert_eq!(
        redirect(json!({"hostname": "b.example"}), Http, 80)
            .location(None, "/", None)
            .as_deref(),
        Some("http://b.example/")
    );
    assert_eq!(redirect(json!({"statusCode": 308}), Http, 80).status, 308);
}

#[test]
fn prefixes_are_replaced_as_the_gateway_api_does() {
    let prefix = |matched: &str, with: &str, path: &str| {
        PathRewrite::Prefix {
            matched: matched.len(),
            with: with.into(),
        }
        .apply(path)
    };
    assert_eq!(prefix("/foo", "/xyz", "/foo/bar"), "/xyz/bar");
    assert_eq!(prefix("/foo", "/xyz", "/foo"), "/xyz");
    assert_eq!(prefix("/foo", "/", "/foo/bar"), "/bar");
    assert_eq!(prefix("/foo", "/", "/foo"), "/");
    assert_eq!(prefix("/foo/", "/xyz/", "/foo/bar"), "/xyz/bar");
    assert_eq!(prefix("/foo/", "/xyz", "/foo/bar"), "/xyzbar");
    assert_eq!(prefix("/foo", "/xyz/", "/foobar"), "/xyz/bar");
    assert_eq!(PathRewrite::Full("/a".into()).apply("/b/c"), "/a");
}

#[test]
fn cors_answers_preflights_and_marks_allowed_origins_only() {
    let cors = |spec: serde_json::Value| Cors::compile(&serde_json::from_value(spec).unwrap());
    let c = cors(json!({
        "allowOrigins": ["https://app.example.com", "https://*.shop.example:8443"],
        "allowMethods": ["GET", "PUT"], "allowHeaders": ["*"], "exposeHeaders": ["x-total"],
        "maxAgeSeconds": 600, "allowCredentials": true,
    }));
    let headers = |pairs: &[(&str, &str)]| {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    };
    let pre = headers(&[
        ("origin", "https://App.Example.com"),
        ("access-control-request-method", "PUT"),
        ("access-control-request-headers", "x-a, content-type"),
    ]);
    assert!(Cors::is_preflight(&http::Method::OPTIONS, &pre));
    assert!(!Cors::is_preflight(&http::Method::PUT, &pre));
    let got = c.preflight(&pre);
    assert_eq!(got[ALLOW_ORIGIN], "https://App.Example.com");
    assert_eq!(got["access-control-allow-methods"], "GET, PUT");
    assert_eq!(
        got["access-control-allow-headers"], "x-a, content-type",
        "* echoes"
    );
    assert_eq!(got["access-control-max-age"], "600");
    assert_eq!(got["access-control-allow-credentials"], "true");
    // Wildcards: below the name only, on the given port only.
    for (origin, allowed) in [
        ("https://a.shop.example:8443", true),
        ("https://a.b.shop.example:8443", true),
        ("https://shop.example:8443", false),
        ("https://a.shop.example", false),
        ("http://a.shop.example:8443", false),
        ("https://evil.example.com", false),
        ("https://app.example.com.evil.example", false),
    ] {
        let got = c.preflight(&headers(&[
            ("origin", origin),
            ("access-control-request-method", "GET"),
        ]));
        assert_eq!(got.contains_key(ALLOW_ORIGIN), allowed, "{origin}");
    }
    // An actual request: marked when allowed, only `Vary` when not.
    let mut resp = HeaderMap::new();
    c.mark(
        Some(&HeaderValue::from_static("https://app.example.com")),
        &mut resp,
    );
    assert_eq!(resp[ALLOW_ORIGIN], "https://app.example.com");
    assert_eq!(resp["access-control-expose-headers"], "x-total");
    let mut resp = HeaderMap::new();
    c.mark(
        Some(&HeaderValue::from_static("https://evil.example.com")),
        &mut resp,
    );
    assert!(!resp.contains_key(ALLOW_ORIGIN));
    assert_eq!(resp["vary"], "Origin");
    // `*` without credentials says `*`.
    let open = cors(json!({"allowOrigins": ["*"]}));
    let mut resp = HeaderMap::new();
    open.mark(
        Some(&HeaderValue::from_static("https://x.example")),
        &mut resp,
    );
    assert_eq!(resp[ALLOW_ORIGIN], "*");
    let got = open.preflight(&headers(&[
        ("origin", "https://x.example"),
        ("access-control-request-method", "DELETE"),
    ]));
    assert_eq!(got["access-control-allow-methods"], "GET, HEAD, POST");
}

#[test]
fn header_edits_remove_then_set_then_add() {
    let edits = HeaderEdits::compile(
        &serde_json::from_value(json!({
            "remove": ["x-drop"],
            "set": [{"name": "x-env", "value": "canary"}],
            "add": [{"name": "x-tag", "value": "b"}],
        }))
        .unwrap(),
    );
    let mut h = HeaderMap::new();
    h.insert("x-drop", HeaderValue::from_static("1"));
    h.append("x-env", HeaderValue::from_static("prod"));
    h.append("x-env", HeaderValue::from_static("dev"));
    h.insert("x-tag", HeaderValue::from_static("a"));
    edits.apply(&mut h);
    assert!(h.get("x-drop").is_none());
    assert_eq!(h.get_all("x-env").iter().collect::<Vec<_>>(), ["canary"]);
    assert_eq!(h.get_all("x-tag").iter().collect::<Vec<_>>(), ["a", "b"]);
}
