//! Rule matching (`route.rs`) as documented, and against a plain reference
//! reading of the conditions on random requests, through both request views
//! (hyper's and the HTTP/1.1 path's own head).

use crate::route::{Matcher, RequestParts};
use http::{HeaderMap, HeaderName, Method, Uri};

fn rule(yaml: serde_json::Value) -> Matcher {
    Matcher::compile(&serde_json::from_value(yaml).unwrap()).unwrap()
}

fn request(method: &str, uri: &str, headers: &[(&str, &str)]) -> (Method, Uri, HeaderMap) {
    let mut h = HeaderMap::new();
    for (k, v) in headers {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    (method.parse().unwrap(), uri.parse().unwrap(), h)
}

/// (conditions, (method, uri, headers), expected)
type Case<'a> = (
    serde_json::Value,
    (&'a str, &'a str, Vec<(&'a str, &'a str)>),
    bool,
);

#[test]
fn conditions_match_as_documented() {
    use serde_json::json;
    let cases: Vec<Case<'_>> = vec![
        // path exact: whole path, query ignored, case-sensitive by default
        (
            json!({"path": {"exact": "/api"}}),
            ("GET", "/api?x=1", vec![]),
            true,
        ),
        (
            json!({"path": {"exact": "/api"}}),
            ("GET", "/api/", vec![]),
            false,
        ),
        (
            json!({"path": {"exact": "/api"}}),
            ("GET", "/API", vec![]),
            false,
        ),
        (
            json!({"path": {"exact": "/api", "caseSensitive": false}}),
            ("GET", "/API", vec![]),
            true,
        ),
        // path prefix: a string prefix
        (
            json!({"path": {"prefix": "/api/v2"}}),
            ("GET", "/api/v2/items", vec![]),
            true,
        ),
        (
            json!({"path": {"prefix": "/api/v2"}}),
            ("GET", "/api/v2", vec![]),
            true,
        ),
        (
            json!({"path": {"prefix": "/api/v2"}}),
            ("GET", "/api/v1", vec![]),
            false,
        ),
        (
            json!({"path": {"prefix": "/Api", "caseSensitive": false}}),
            ("GET", "/aPI/x", vec![]),
            true,
        ),
        // method: exact
        (json!({"method": "DELETE"}), ("DELETE", "/", vec![]), true),
        (json!({"method": "DELETE"}), ("GET", "/", vec![]), false),
        // headers: name case-insensitive, value case-insensitive by default
        (
            json!({"headers": [{"name": "X-Beta", "exact": "true"}]}),
            ("GET", "/", vec![("x-beta", "TRUE")]),
            true,
        ),
        (
            json!({"headers": [{"name": "x-beta", "exact": "true", "caseSensitive": true}]}),
            ("GET", "/", vec![("x-beta", "TRUE")]),
            false,
        ),
        (
            json!({"headers": [{"name": "x-beta", "exact": "true"}]}),
            ("GET", "/", vec![]),
            false,
        ),
        (
            json!({"headers": [{"name": "user-agent", "prefix": "curl/"}]}),
            ("GET", "/", vec![("user-agent", "curl/8.1")]),
            true,
        ),
        (
            json!({"headers": [{"name": "cookie", "contains": "canary=1"}]}),
            ("GET", "/", vec![("cookie", "a=b; canary=1")]),
            true,
        ),
        (
            json!({"headers": [{"name": "x-v", "regex": "v[0-9]+"}]}),
            ("GET", "/", vec![("x-v", "v12")]),
            true,
        ),
        // a regex matches the whole value
        (
            json!({"headers": [{"name": "x-v", "regex": "v[0-9]+"}]}),
            ("GET", "/", vec![("x-v", "v12x")]),
            false,
        ),
        // any value of a repeated header
        (
            json!({"headers": [{"name": "x-t", "exact": "b"}]}),
            ("GET", "/", vec![("x-t", "a"), ("x-t", "b")]),
            true,
        ),
        // every header condition must hold
        (
            json!({"headers": [{"name": "a", "exact": "1"}, {"name": "b", "exact": "2"}]}),
            ("GET", "/", vec![("a", "1")]),
            false,
        ),
        // host: exact, port and case ignored; wildcard below only
        (
            json!({"host": "shop.example.com"}),
            ("GET", "/", vec![("host", "Shop.Example.com:8080")]),
            true,
        ),
        (
            json!({"host": "*.example.com"}),
            ("GET", "/", vec![("host", "a.b.example.com")]),
            true,
        ),
        (
            json!({"host": "*.example.com"}),
            ("GET", "/", vec![("host", "example.com")]),
            false,
        ),
        (
            json!({"host": "shop.example.com"}),
            ("GET", "http://shop.example.com/x", vec![]),
            true,
        ),
        (
            json!({"host": "shop.example.com"}),
            ("GET", "/", vec![]),
            false,
        ),
        // all conditions together
        (
            json!({"path": {"prefix": "/admin"}, "method": "DELETE"}),
            ("DELETE", "/admin/x", vec![]),
            true,
        ),
        (
            json!({"path": {"prefix": "/admin"}, "method": "DELETE"}),
            ("GET", "/admin/x", vec![]),
            false,
        ),
        // gRPC service and method: exact names (dots are dots), or regexes
        // each matching the whole name
        (
            json!({"grpc": {"service": "shop.Orders", "method": "Get"}}),
            ("POST", "/shop.Orders/Get", vec![]),
            true,
        ),
        (
            json!({"grpc": {"service": "shop.Orders", "method": "Get"}}),
            ("POST", "/shop.Orders/GetAll", vec![]),
            false,
        ),
        (
            json!({"grpc": {"service": "shop.Orders", "method": "Get"}}),
            ("POST", "/shop.orders/Get", vec![]),
            false,
        ),
        (
            json!({"grpc": {"service": "shop.Orders"}}),
            ("POST", "/shop.Orders/List", vec![]),
            true,
        ),
        (
            json!({"grpc": {"service": "shop.Orders"}}),
            ("POST", "/shop.OrdersX/List", vec![]),
            false,
        ),
        (
            json!({"grpc": {"method": "Get"}}),
            ("POST", "/any.Service/Get", vec![]),
            true,
        ),
        (
            json!({"grpc": {"method": "Get"}}),
            ("POST", "/a/b/Get", vec![]),
            false,
        ),
        (
            json!({"grpc": {"service": "shop.x"}}),
            ("POST", "/shopAx/Get", vec![]),
            false,
        ),
        (
            json!({"grpc": {"type": "RegularExpression", "service": "shop\\.(Orders|Carts)", "method": "Get.*"}}),
            ("POST", "/shop.Carts/GetOne", vec![]),
            true,
        ),
        (
            json!({"grpc": {"type": "RegularExpression", "service": "shop\\.(Orders|Carts)", "method": "Get.*"}}),
            ("POST", "/shop.Carts/List", vec![]),
            false,
        ),
        (
            json!({"grpc": {"type": "RegularExpression", "service": "shop\\.(Orders|Carts)", "method": "Get.*"}}),
            ("POST", "/x/shop.Carts/Get", vec![]),
            false,
        ),
        // no conditions: matches everything
        (json!({}), ("PATCH", "/anything", vec![]), true),
        // path regex: the whole path, case as configured
        (
            json!({"path": {"regex": "/v[0-9]+/items"}}),
            ("GET", "/v12/items?x=1", vec![]),
            true,
        ),
        (
            json!({"path": {"regex": "/v[0-9]+/items"}}),
            ("GET", "/v12/items/3", vec![]),
            false,
        ),
        (
            json!({"path": {"regex": "/v[0-9]+/items"}}),
            ("GET", "/V1/ITEMS", vec![]),
            false,
        ),
        (
            json!({"path": {"regex": "/v[0-9]+/items", "caseSensitive": false}}),
            ("GET", "/V1/ITEMS", vec![]),
            true,
        ),
        // header present / absent, whatever the value
        (
            json!({"headers": [{"name": "x-debug", "present": true}]}),
            ("GET", "/", vec![("x-debug", "")]),
            true,
        ),
        (
            json!({"headers": [{"name": "x-debug", "present": true}]}),
            ("GET", "/", vec![]),
            false,
        ),
        (
            json!({"headers": [{"name": "x-debug", "present": false}]}),
            ("GET", "/", vec![("x-other", "1")]),
            true,
        ),
        (
            json!({"headers": [{"name": "X-Debug", "present": false}]}),
            ("GET", "/", vec![("x-debug", "1")]),
            false,
        ),
        // query: exact on the decoded value, names case-sensitive
        (
            json!({"query": [{"name": "animal", "exact": "whale"}]}),
            ("GET", "/?animal=whale", vec![]),
            true,
        ),
        (
            json!({"query": [{"name": "animal", "exact": "whale"}]}),
            ("GET", "/?Animal=whale", vec![]),
            false,
        ),
        (
            json!({"query": [{"name": "animal", "exact": "Whale"}]}),
            ("GET", "/?animal=whale", vec![]),
            false,
        ),
        (
            json!({"query": [{"name": "q", "exact": "a b/c"}]}),
            ("GET", "/?x=1&q=a%20b%2Fc", vec![]),
            true,
        ),
        (
            json!({"query": [{"name": "animal", "exact": "whale"}]}),
            ("GET", "/whale", vec![]),
            false,
        ),
        // a repeated parameter: every value must match
        (
            json!({"query": [{"name": "animal", "exact": "whale"}]}),
            ("GET", "/?animal=whale&animal=dolphin", vec![]),
            false,
        ),
        (
            json!({"query": [{"name": "animal", "exact": "whale"}]}),
            ("GET", "/?animal=whale&animal=whale", vec![]),
            true,
        ),
        // regex on the whole value; present; absent; no value at all
        (
            json!({"query": [{"name": "v", "regex": "[0-9]+"}]}),
            ("GET", "/?v=42", vec![]),
            true,
        ),
        (
            json!({"query": [{"name": "v", "regex": "[0-9]+"}]}),
            ("GET", "/?v=42a", vec![]),
            false,
        ),
        (
            json!({"query": [{"name": "debug", "present": true}]}),
            ("GET", "/?debug", vec![]),
            true,
        ),
        (
            json!({"query": [{"name": "debug", "present": false}]}),
            ("GET", "/?debugx=1", vec![]),
            true,
        ),
        (
            json!({"query": [{"name": "debug", "present": false}]}),
            ("GET", "/?a=1&debug=0", vec![]),
            false,
        ),
        // a value that does not decode to UTF-8 matches no value
        (
            json!({"query": [{"name": "q", "regex": ".*"}]}),
            ("GET", "/?q=%FF", vec![]),
            false,
        ),
        // every kind at once
        (
            json!({"path": {"prefix": "/api"}, "method": "GET", "host": "shop.example",
                   "headers": [{"name": "x-canary", "present": true}],
                   "query": [{"name": "v", "exact": "2"}]}),
            (
                "GET",
                "/api/x?v=2",
                vec![("host", "shop.example"), ("x-canary", "1")],
            ),
            true,
        ),
        (
            json!({"path": {"prefix": "/api"}, "method": "GET", "host": "shop.example",
                   "headers": [{"name": "x-canary", "present": true}],
                   "query": [{"name": "v", "exact": "2"}]}),
            (
                "GET",
                "/api/x?v=3",
                vec![("host", "shop.example"), ("x-canary", "1")],
            ),
            false,
        ),
    ];
    for (cond, (method, uri, headers), expected) in cases {
        let m = rule(cond.clone());
        let (method, uri, headers) = request(method, uri, &headers);
        let view = RequestParts {
            method: &method,
            uri: &uri,
            headers: &headers,
        };
        assert_eq!(
            m.matches(&view),
            expected,
            "{cond} against {method} {uri} {headers:?}"
        );
    }
}

/// The rule's conditions read the plainest way, per request, with no
/// compilation: what `Matcher` must agree with.
mod reference {
    use trellis_api::resource::RuleMatch;

    pub struct Req<'a> {
        pub method: &'a str,
        pub path: &'a str,
        pub query: Option<&'a str>,
        pub headers: &'a [(&'a str, &'a str)],
    }

    fn decode(s: &str) -> Option<String> {
        let b = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' && i + 2 < b.len() {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            } else {
                out.push(b[i]);
            }
            i += 1;
        }
        String::from_utf8(out).ok()
    }

    fn whole(re: &str, value: &str, case_sensitive: bool) -> bool {
        regex::RegexBuilder::new(&format!("^(?:{re})$"))
            .case_insensitive(!case_sensitive)
            .build()
            .unwrap()
            .is_match(value)
    }

    pub fn matches(m: &RuleMatch, r: &Req<'_>) -> bool {
        if m.method.as_deref().is_some_and(|x| x != r.method) {
            return false;
        }
        if let Some(p) = &m.path {
            let fold = |s: &str| {
                if p.case_sensitive {
                    s.to_string()
                } else {
                    s.to_lowercase()
                }
            };
            let ok = if let Some(e) = &p.exact {
                fold(r.path) == fold(e)
            } else if let Some(pre) = &p.prefix {
                fold(r.path).starts_with(&fold(pre))
            } else {
                whole(p.regex.as_deref().unwrap(), r.path, p.case_sensitive)
            };
            if !ok {
                return false;
            }
        }
        if let Some(g) = &m.grpc {
            // `/Service/Method`, as gRPC names a call.
            let exact = g.kind == trellis_api::resource::GrpcMatchType::Exact;
            let ok = match (r.path.strip_prefix('/'), &g.service, &g.method) {
                (None, _, _) => false,
                (Some(rest), Some(s), None) if exact => rest.starts_with(&format!("{s}/")),
                (Some(rest), s, m) => match rest.split('/').collect::<Vec<_>>()[..] {
                    [service, method] if !service.is_empty() && !method.is_empty() => {
                        let fits = |want: &Option<String>, got: &str| match want {
                            None => true,
                            Some(w) if exact => w == got,
                            Some(w) => whole(w, got, true),
                        };
                        fits(s, service) && fits(m, method)
                    }
                    _ => false,
                },
            };
            if !ok {
                return false;
            }
        }
        for h in &m.headers {
            let values: Vec<&str> = r
                .headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(&h.name))
                .map(|(_, v)| *v)
                .collect();
            let fold = |s: &str| {
                if h.case_sensitive {
                    s.to_string()
                } else {
                    s.to_lowercase()
                }
            };
            let ok = match h.present {
                Some(true) => !values.is_empty(),
                Some(false) => values.is_empty(),
                None => values.iter().any(|v| {
                    let v = fold(v);
                    if let Some(e) = &h.exact {
                        v == fold(e)
                    } else if let Some(x) = &h.prefix {
                        v.starts_with(&fold(x))
                    } else if let Some(x) = &h.contains {
                        v.contains(&fold(x))
                    } else {
                        whole(h.regex.as_deref().unwrap(), &v, h.case_sensitive)
                    }
                }),
            };
            if !ok {
                return false;
            }
        }
        for q in &m.query {
            let values: Vec<Option<String>> = r
                .query
                .unwrap_or("")
                .split('&')
                .filter(|p| !p.is_empty())
                .filter_map(|p| {
                    let (n, v) = p.split_once('=').unwrap_or((p, ""));
                    (decode(n).as_deref() == Some(q.name.as_str())).then(|| decode(v))
                })
                .collect();
            let ok = match q.present {
                Some(true) => !values.is_empty(),
                Some(false) => values.is_empty(),
                None => {
                    !values.is_empty()
                        && values.iter().all(|v| match v {
                            None => false,
                            Some(v) => match &q.exact {
                                Some(e) => v == e,
                                None => whole(q.regex.as_deref().unwrap(), v, true),
                            },
                        })
                }
            };
            if !ok {
                return false;
            }
        }
        true
    }
}

mod agreement {
    use super::reference::{self, Req};
    use crate::route::{Matcher, RequestParts};
    use proptest::prelude::*;
    use serde_json::{Value, json};
    use trellis_api::resource::RuleMatch;

    fn path_cond() -> impl Strategy<Value = Option<Value>> {
        prop_oneof![
            Just(None),
            (
                prop::option::of(prop::sample::select(vec!["a.B", "a", "a.*", "B"])),
                prop::option::of(prop::sample::select(vec!["Get", "b", "G.t", "[ab]"])),
                prop::sample::select(vec!["Exact", "RegularExpression"]),
            )
                .prop_filter("a service or a method", |(s, m, _)| s.is_some()
                    || m.is_some())
                .prop_map(|(s, m, t)| Some(
                    json!({"grpc": {"service": s, "method": m, "type": t}})
                )),
            (
                prop::sample::select(vec!["exact", "prefix", "regex"]),
                prop::sample::select(vec!["/a", "/a/b", "/A", "/b", "/a.*", "/[ab]+"]),
                any::<bool>()
            )
                .prop_map(|(k, v, cs)| Some(json!({k: v, "caseSensitive": cs}))),
        ]
    }

    fn header_cond() -> impl Strategy<Value = Value> {
        (
            prop::sample::select(vec!["x-a", "X-B"]),
            prop::sample::select(vec![
                "exact", "prefix", "contains", "regex", "present", "absent",
            ]),
            prop::sample::select(vec!["1", "12", "a", "A", "[0-9]+"]),
            any::<bool>(),
        )
            .prop_map(|(name, kind, v, cs)| match kind {
                "present" => json!({"name": name, "present": true}),
                "absent" => json!({"name": name, "present": false}),
                k => json!({"name": name, k: v, "caseSensitive": cs}),
            })
    }

    fn query_cond(name: &'static str) -> impl Strategy<Value = Option<Value>> {
        prop_oneof![
            Just(None),
            (
                prop::sample::select(vec!["exact", "regex", "present", "absent"]),
                prop::sample::select(vec!["1", "a", "A", "a b", "[0-9]+"])
            )
                .prop_map(move |(kind, v)| Some(match kind {
                    "present" => json!({"name": name, "present": true}),
                    "absent" => json!({"name": name, "present": false}),
                    k => json!({"name": name, k: v}),
                })),
        ]
    }

    fn rule() -> impl Strategy<Value = RuleMatch> {
        (
            path_cond(),
            prop::option::of(prop::sample::select(vec!["GET", "POST"])),
            prop::collection::vec(header_cond(), 0..3),
            query_cond("q"),
            query_cond("r"),
        )
            .prop_map(|(path, method, headers, q, r)| {
                let mut m = json!({"headers": headers});
                match path {
                    Some(g) if g.get("grpc").is_some() => m["grpc"] = g["grpc"].clone(),
                    Some(p) => m["path"] = p,
                    None => {}
                }
                if let Some(x) = method {
                    m["method"] = json!(x);
                }
                m["query"] = json!([q, r].into_iter().flatten().collect::<Vec<_>>());
                serde_json::from_value(m).unwrap()
            })
    }

    type Request = (
        &'static str,
        &'static str,
        Vec<(&'static str, &'static str)>,
        Vec<(&'static str, &'static str)>,
    );

    fn request() -> impl Strategy<Value = Request> {
        (
            prop::sample::select(vec!["GET", "POST"]),
            prop::sample::select(vec![
                "/a",
                "/a/b",
                "/A/B",
                "/b",
                "/ab",
                "/",
                "/a.B/Get",
                "/a.B/Get/x",
                "/aXB/Get",
                "/a.B/",
                "/a/b/c",
            ]),
            prop::collection::vec(
                (
                    prop::sample::select(vec!["q", "r", "Q", "%71"]),
                    prop::sample::select(vec!["1", "a", "A", "%31", "", "a%20b", "%ff"]),
                ),
                0..4,
            ),
            prop::collection::vec(
                (
                    prop::sample::select(vec!["x-a", "X-A", "x-b"]),
                    prop::sample::select(vec!["1", "12", "a", "A", "B1"]),
                ),
                0..4,
            ),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        /// The compiled matcher, through hyper's request and through
        /// the HTTP/1.1 path's own head, says what the reference says.
        #[test]
        fn the_matcher_agrees_with_the_reference(m in rule(), (method, path, query, headers) in request()) {
            let query_text: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let query_text = query_text.join("&");
            let target = if query.is_empty() { path.to_string() } else { format!("{path}?{query_text}") };
            let want = reference::matches(&m, &Req {
                method,
                path,
                query: (!query.is_empty()).then_some(query_text.as_str()),
                headers: &headers,
            });
            let matcher = Matcher::compile(&m).unwrap();
            let (hm, hu, hh) = super::request(method, &target, &headers);
            let parts = RequestParts { method: &hm, uri: &hu, headers: &hh };
            prop_assert_eq!(matcher.matches(&parts), want, "hyper's view of {} {}", method, target);
            let mut head = format!("{method} {target} HTTP/1.1\r\nhost: x\r\n");
            for (k, v) in &headers {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
            head.push_str("\r\n");
            let mut slots = crate::h1::head::uninit();
            let (h1, _) = crate::h1::head::Request::parse(head.as_bytes(), &mut slots).unwrap();
            prop_assert_eq!(matcher.matches(&h1), want, "the HTTP/1.1 view of {} {}", method, target);
        }
    }
}
