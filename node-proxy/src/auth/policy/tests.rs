//! A table of documents and requests with the expected decision and the
//! statement that took it. The first documents are VPC Lattice's own
//! examples, pasted as they are.

use super::*;
use http::HeaderMap;
use serde_json::json;

/// "Allow authenticated access from a specific VPC" (VPC Lattice docs).
const LATTICE_VPC: &str = r#"{
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": "*",
            "Action": "vpc-lattice-svcs:Invoke",
            "Resource": "*",
            "Condition": {
                "StringNotEqualsIgnoreCase": {
                    "aws:PrincipalType": "anonymous"
                },
                "StringEquals": {
                    "vpc-lattice-svcs:SourceVpc": "vpc-1a2b3c4d"
                }
            }
        }
    ]
}"#;

/// "Allow access to authenticated principals" (VPC Lattice docs).
const LATTICE_AUTHENTICATED: &str = r#"{
   "Version": "2012-10-17",
   "Statement": [
      {
         "Effect": "Allow",
         "Principal": "*",
         "Action": "vpc-lattice-svcs:Invoke",
         "Resource": "*",
         "Condition": {
            "StringNotEqualsIgnoreCase": {
               "aws:PrincipalType": "anonymous"
            }
         }
      }
   ]
}"#;

/// "Allow access to a specific organization" (VPC Lattice docs): Trellis has
/// no organizations, so the policy is refused where it is applied, by name,
/// instead of reading the key as absent (`lattice_org_policy_is_refused`).
const LATTICE_ORG: &str = r#"{
   "Version": "2012-10-17",
   "Statement": [
      {
         "Effect": "Allow",
         "Principal": "*",
         "Action": "vpc-lattice-svcs:Invoke",
         "Resource": "*",
         "Condition": {
            "StringEquals": {
               "aws:PrincipalOrgID": [
                  "o-123456example"
               ]
            }
         }
      }
   ]
}"#;

/// A principal by ARN, GET only, on one service's paths (the shape of the
/// VPC Lattice docs' example, with the Trellis service name for the id).
const LATTICE_ROLE_GET: &str = r#"{
   "Version":"2012-10-17",
   "Statement":[
      {
         "Effect": "Allow",
         "Principal": {
            "AWS": [
               "arn:aws:iam::123456789012:role/rates-client"
            ]
         },
         "Action": "vpc-lattice-svcs:Invoke",
         "Resource": [
            "arn:aws:vpc-lattice:us-west-2:123456789012:service/orders/*"
         ],
         "Condition": {
            "StringEquals": {
               "vpc-lattice-svcs:RequestMethod": "GET"
            }
         }
      }
   ]
}"#;

struct Case {
    doc: serde_json::Value,
    principal: Option<&'static str>,
    method: &'static str,
    path: &'static str,
    query: Option<&'static str>,
    network: &'static str,
    headers: &'static [(&'static str, &'static str)],
    want: Outcome<'static>,
}

fn base(doc: serde_json::Value) -> Case {
    Case {
        doc,
        principal: Some("alice"),
        method: "GET",
        path: "/orders/1",
        query: None,
        network: "vpc-1a2b3c4d",
        headers: &[],
        want: Outcome::NoMatch,
    }
}

fn text(s: &str) -> serde_json::Value {
    serde_json::Value::String(s.into())
}

fn allow(s: &'static str) -> Outcome<'static> {
    Outcome::Allow(s)
}

fn deny(s: &'static str) -> Outcome<'static> {
    Outcome::Deny(s)
}

fn principals() -> Vec<(&'static str, Principal)> {
    vec![
        (
            "alice",
            Principal {
                names: vec![
                    "trellis:identity/alice".into(),
                    "arn:aws:iam::123456789012:role/rates-client".into(),
                ],
                tags: [("team".to_string(), "payments".to_string())].into(),
            },
        ),
        (
            "bob",
            Principal {
                names: vec!["trellis:identity/bob".into()],
                tags: Default::default(),
            },
        ),
    ]
}

/// The request every case starts from: GET /orders/1 to service orders of
/// service network shop, from 10.1.2.3 in network vpc-1a2b3c4d, port 80,
/// not TLS.
fn request<'a>(principal: Option<&'a Principal>, headers: &'a HeaderMap) -> Request<'a> {
    Request {
        principal,
        region: "us-west-2",
        source_network: "vpc-1a2b3c4d",
        service: "orders",
        service_network: "shop",
        method: "GET",
        path: "/orders/1",
        query: None,
        headers,
        port: 80,
        source_ip: "10.1.2.3".parse().unwrap(),
        secure: false,
        now: 1_800_000_000,
        workload: Some(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1f2e3d4c_5b6a.slice/cri-containerd-4f0c5b7e2a1d.scope",
        ),
    }
}

fn stmt(extra: serde_json::Value) -> serde_json::Value {
    let mut s = json!({"Effect": "Allow", "Principal": "*", "Action": "vpc-lattice-svcs:Invoke", "Resource": "*"});
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            s.as_object_mut().unwrap().remove(k);
        } else {
            s[k] = v.clone();
        }
    }
    s
}

fn doc(statements: Vec<serde_json::Value>) -> serde_json::Value {
    json!({"Version": "2012-10-17", "Statement": statements})
}

#[test]
fn decisions() {
    let cases = vec![
        // Lattice's examples, as pasted.
        Case {
            doc: text(LATTICE_VPC),
            want: allow("Statement[0]"),
            ..base(json!(null))
        },
        Case {
            doc: text(LATTICE_VPC),
            principal: None,
            ..base(json!(null))
        },
        Case {
            doc: text(LATTICE_VPC),
            network: "vpc-other",
            ..base(json!(null))
        },
        Case {
            doc: text(LATTICE_AUTHENTICATED),
            want: allow("Statement[0]"),
            ..base(json!(null))
        },
        Case {
            doc: text(LATTICE_AUTHENTICATED),
            principal: None,
            ..base(json!(null))
        },
        Case {
            doc: text(LATTICE_ROLE_GET),
            want: allow("Statement[0]"),
            ..base(json!(null))
        },
        Case {
            doc: text(LATTICE_ROLE_GET),
            method: "POST",
            ..base(json!(null))
        },
        Case {
            doc: text(LATTICE_ROLE_GET),
            principal: Some("bob"),
            ..base(json!(null))
        },
        // "service/orders/*" covers the root path too.
        Case {
            doc: text(LATTICE_ROLE_GET),
            path: "/",
            want: allow("Statement[0]"),
            ..base(json!(null))
        },
        // Anonymous access: only Principal "*" without conditions on it.
        Case {
            principal: None,
            want: allow("Statement[0]"),
            ..base(doc(vec![stmt(json!({}))]))
        },
        Case {
            principal: None,
            ..base(doc(vec![stmt(
                json!({"Principal": {"AWS": "trellis:identity/alice"}}),
            )]))
        },
        // An explicit Deny wins over any Allow, whatever the order.
        Case {
            want: deny("no-deletes"),
            method: "DELETE",
            ..base(doc(vec![
                stmt(json!({})),
                stmt(
                    json!({"Sid": "no-deletes", "Effect": "Deny", "Condition": {"StringEquals": {"vpc-lattice-svcs:RequestMethod": "DELETE"}}}),
                ),
            ]))
        },
        Case {
            want: allow("Statement[0]"),
            ..base(doc(vec![
                stmt(json!({})),
                stmt(
                    json!({"Sid": "no-deletes", "Effect": "Deny", "Condition": {"StringEquals": {"vpc-lattice-svcs:RequestMethod": "DELETE"}}}),
                ),
            ]))
        },
        // GET /orders/* only, as Trellis resources.
        Case {
            want: allow("orders-read"),
            ..base(doc(vec![stmt(
                json!({"Sid": "orders-read", "Resource": "trellis:service/orders/orders/*", "Condition": {"StringEquals": {"vpc-lattice-svcs:RequestMethod": "GET"}}}),
            )]))
        },
        Case {
            path: "/admin",
            ..base(doc(vec![stmt(
                json!({"Resource": "trellis:service/orders/orders/*"}),
            )]))
        },
        Case {
            path: "/ORDERS/1",
            ..base(doc(vec![stmt(
                json!({"Resource": "trellis:service/orders/orders/*"}),
            )]))
        },
        Case {
            want: allow("Statement[0]"),
            path: "/orders/12",
            ..base(doc(vec![stmt(
                json!({"Resource": "trellis:service/orders/orders/1?"}),
            )]))
        },
        // NotPrincipal, NotAction, NotResource.
        Case {
            principal: Some("bob"),
            want: allow("Statement[0]"),
            ..base(doc(vec![stmt(
                json!({"Principal": null, "NotPrincipal": {"AWS": "trellis:identity/alice"}}),
            )]))
        },
        Case {
            ..base(doc(vec![stmt(
                json!({"Principal": null, "NotPrincipal": {"AWS": "trellis:identity/alice"}}),
            )]))
        },
        Case {
            ..base(doc(vec![stmt(
                json!({"Action": null, "NotAction": "trellis:Invoke"}),
            )]))
        },
        Case {
            want: allow("Statement[0]"),
            ..base(doc(vec![stmt(json!({"Action": "trellis:*"}))]))
        },
        Case {
            want: allow("Statement[0]"),
            path: "/public",
            ..base(doc(vec![stmt(
                json!({"Resource": null, "NotResource": "trellis:service/orders/admin*"}),
            )]))
        },
        Case {
            path: "/admin/x",
            ..base(doc(vec![stmt(
                json!({"Resource": null, "NotResource": "trellis:service/orders/admin*"}),
            )]))
        },
        // Headers and query strings: multi-valued keys.
        Case {
            want: allow("Statement[0]"),
            headers: &[("x-env", "prod")],
            ..base(doc(vec![stmt(
                json!({"Condition": {"StringEquals": {"vpc-lattice-svcs:RequestHeader/x-env": "prod"}}}),
            )]))
        },
        // Condition keys ignore case, header names included.
        Case {
            want: allow("Statement[0]"),
            headers: &[("x-env", "prod")],
            ..base(doc(vec![stmt(
                json!({"Condition": {"StringEquals": {"VPC-Lattice-Svcs:requestHeader/X-Env": "prod"}}}),
            )]))
        },
        Case {
            headers: &[("x-env", "dev")],
            ..base(doc(vec![stmt(
                json!({"Condition": {"StringEquals": {"vpc-lattice-svcs:RequestHeader/x-env": "prod"}}}),
            )]))
        },
        Case {
            ..base(doc(vec![stmt(
                json!({"Condition": {"StringEquals": {"vpc-lattice-svcs:RequestHeader/x-env": "prod"}}}),
            )]))
        },
        Case {
            want: allow("Statement[0]"),
            ..base(doc(vec![stmt(
                json!({"Condition": {"StringEqualsIfExists": {"vpc-lattice-svcs:RequestHeader/x-env": "prod"}}}),
            )]))
        },
        Case {
            want: allow("Statement[0]"),
            ..base(doc(vec![stmt(
                json!({"Condition": {"StringNotEquals": {"vpc-lattice-svcs:RequestHeader/x-env": "prod"}}}),
            )]))
        },
        Case {
            want: allow("Statement[0]"),
            query: Some("a=1&b=2&b=3"),
            ..base(doc(vec![stmt(
                json!({"Condition": {"ForAnyValue:StringEquals": {"vpc-lattice-svcs:RequestQueryString/b": "3"}}}),
            )]))
        },
        Case {
            query: Some("a=1&b=2&b=3"),
            ..base(doc(vec![stmt(
                json!({"Condition": {"ForAllValues:StringEquals": {"vpc-lattice-svcs:RequestQueryString/b": "3"}}}),
            )]))
        },
        Case {
            want: allow("Statement[0]"),
            query: Some("b=2&b=3"),
            ..base(doc(vec![stmt(
                json!({"Condition": {"ForAllValues:StringLike": {"vpc-lattice-svcs:RequestQueryString/b": ["2", "3"]}}}),
            )]))
        },
        // Null, Bool, numbers, addresses, tags, dates.
        Case {
            want: allow("Statement[0]"),
            ..base(doc(vec![stmt(
                json!({"Condition": {"Null": {"vpc-lattice-svcs:RequestHeader/x-debug": "true"}}}),
            )]))
        },
        Case {
            headers: &[("x-debug", "1")],
            ..base(doc(vec![stmt(
                json!({"Condition": {"Null": {"vpc-lattice-svcs:RequestHeader/x-debug": "true"}}}),
            )]))
        },
        Case {
            want: allow("Statement[0]"),
            ..base(doc(vec![stmt(
                json!({"Condition": {"Bool": {"aws:SecureTransport": false}}}),
            )]))
        },
        Case {
            want: allow("Statement[0]"),
            ..base(doc(vec![stmt(
                json!({"Condition": {"NumericLessThan": {"vpc-lattice-svcs:Port": 1024}}}),
            )]))
        },
        Case {
            ..base(doc(vec![stmt(
                json!({"Condition": {"NumericGreaterThan": {"vpc-lattice-svcs:Port": 1024}}}),
            )]))
        },
        Case {
            want: allow("Statement[0]"),
            ..base(doc(vec![stmt(
                json!({"Condition": {"IpAddress": {"aws:SourceIp": "10.1.0.0/16"}}}),
            )]))
        },
        Case {
            ..base(doc(vec![stmt(
                json!({"Condition": {"NotIpAddress": {"aws:SourceIp": ["10.1.0.0/16"]}}}),
            )]))
        },
        Case {
            want: allow("Statement[0]"),
            ..base(doc(vec![stmt(
                json!({"Condition": {"StringEquals": {"aws:PrincipalTag/team": "payments"}}}),
            )]))
        },
        Case {
            principal: Some("bob"),
            ..base(doc(vec![stmt(
                json!({"Condition": {"StringEquals": {"aws:PrincipalTag/team": "payments"}}}),
            )]))
        },
        Case {
            want: allow("Statement[0]"),
            ..base(doc(vec![stmt(
                json!({"Condition": {"DateGreaterThan": {"aws:CurrentTime": "2020-01-01T00:00:00Z"}}}),
            )]))
        },
        Case {
            want: allow("Statement[0]"),
            ..base(doc(vec![stmt(
                json!({"Condition": {"StringLike": {"aws:PrincipalArn": "arn:aws:iam::*:role/rates-*"}}}),
            )]))
        },
        Case {
            want: allow("Statement[0]"),
            ..base(doc(vec![stmt(
                json!({"Condition": {"StringEquals": {"trellis:ServiceNetwork": "shop", "trellis:Service": "orders"}}}),
            )]))
        },
        Case {
            want: allow("Statement[0]"),
            ..base(doc(vec![stmt(
                json!({"Condition": {"ArnLike": {"vpc-lattice-svcs:ServiceArn": "arn:aws:vpc-lattice:*:*:service/orders"}}}),
            )]))
        },
    ];
    let people = principals();
    let headers_of = |pairs: &[(&str, &str)]| {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    };
    for (i, c) in cases.iter().enumerate() {
        let doc = PolicyDocument::parse(&c.doc).unwrap_or_else(|e| panic!("case {i}: {e}"));
        let headers = headers_of(c.headers);
        let principal = c
            .principal
            .map(|name| &people.iter().find(|(n, _)| *n == name).unwrap().1);
        let req = Request {
            source_network: c.network,
            method: c.method,
            path: c.path,
            query: c.query,
            ..request(principal, &headers)
        };
        assert_eq!(
            evaluate(&Policy::compile(&doc), &req),
            c.want,
            "case {i}: {}",
            c.doc
        );
    }
}

#[test]
fn globs() {
    for (p, t, want) in [
        ("*", "", true),
        ("a*c", "abbbc", true),
        ("a?c", "abc", true),
        ("a?c", "ac", false),
        ("*/orders/*", "x/orders/1", true),
        ("a*b*c", "axxbyyc", true),
        ("a*b*c", "axxbyy", false),
    ] {
        assert_eq!(glob(p, t, false), want, "{p} vs {t}");
    }
    assert!(glob("VPC-LATTICE-SVCS:invoke", ACTION, true));
}

#[test]
fn lattice_org_policy_is_refused() {
    let e = PolicyDocument::parse(&text(LATTICE_ORG)).unwrap_err();
    assert_eq!(
        e.path,
        "Statement[0].Condition.StringEquals.aws:PrincipalOrgID"
    );
    assert!(
        e.message.contains("an AWS key Trellis does not model"),
        "{e}"
    );
}

/// Every condition key the control plane accepts, against one request: a
/// value that holds for it and one that does not. A key added to
/// `trellis_api::policy` fails here until it has its row.
#[test]
fn every_condition_key_reads_what_its_name_says() {
    // (key, operator, holds, does not hold); `/` keys take the name after it.
    let rows: &[(&str, &str, &str, &str)] = &[
        (
            "aws:PrincipalType",
            "StringEquals",
            "Authenticated",
            "Anonymous",
        ),
        (
            "aws:PrincipalArn",
            "ArnLike",
            "arn:aws:iam::123456789012:role/rates-*",
            "arn:aws:iam::*:role/other",
        ),
        (
            "aws:PrincipalId",
            "StringEquals",
            "trellis:identity/alice",
            "trellis:identity/bob",
        ),
        (
            "trellis:Principal",
            "StringEquals",
            "trellis:identity/alice",
            "trellis:identity/bob",
        ),
        ("aws:PrincipalTag/team", "StringEquals", "payments", "ops"),
        ("aws:SourceIp", "IpAddress", "10.1.0.0/16", "10.2.0.0/16"),
        ("aws:SecureTransport", "Bool", "false", "true"),
        (
            "aws:CurrentTime",
            "DateGreaterThan",
            "2020-01-01T00:00:00Z",
            "2100-01-01T00:00:00Z",
        ),
        (
            "aws:EpochTime",
            "DateGreaterThan",
            "2020-01-01T00:00:00Z",
            "2100-01-01T00:00:00Z",
        ),
        (
            "vpc-lattice-svcs:SourceVpc",
            "StringEquals",
            "vpc-1a2b3c4d",
            "vpc-other",
        ),
        (
            "trellis:SourceNetwork",
            "StringEquals",
            "vpc-1a2b3c4d",
            "vpc-other",
        ),
        (
            "vpc-lattice-svcs:SourceVpcOwnerAccount",
            "StringEquals",
            "000000000000",
            "123456789012",
        ),
        (
            "vpc-lattice-svcs:RequestMethod",
            "StringEquals",
            "GET",
            "POST",
        ),
        ("trellis:RequestMethod", "StringEquals", "GET", "POST"),
        (
            "vpc-lattice-svcs:RequestPath",
            "StringLike",
            "/orders/*",
            "/admin/*",
        ),
        ("trellis:RequestPath", "StringLike", "/orders/*", "/admin/*"),
        (
            "vpc-lattice-svcs:RequestHeader/x-team",
            "StringEquals",
            "payments",
            "ops",
        ),
        (
            "trellis:RequestHeader/x-team",
            "StringEquals",
            "payments",
            "ops",
        ),
        (
            "vpc-lattice-svcs:RequestQueryString/v",
            "StringEquals",
            "2",
            "3",
        ),
        ("trellis:RequestQueryString/v", "StringEquals", "2", "3"),
        (
            "vpc-lattice-svcs:ServiceArn",
            "ArnLike",
            "arn:aws:vpc-lattice:*:*:service/orders",
            "arn:aws:vpc-lattice:*:*:service/pay",
        ),
        (
            "vpc-lattice-svcs:ServiceNetworkArn",
            "ArnLike",
            "arn:aws:vpc-lattice:*:*:servicenetwork/shop",
            "arn:aws:vpc-lattice:*:*:servicenetwork/pay",
        ),
        ("trellis:Service", "StringEquals", "orders", "pay"),
        ("trellis:ServiceNetwork", "StringEquals", "shop", "pay"),
        ("vpc-lattice-svcs:Port", "NumericEquals", "80", "81"),
        ("trellis:Port", "NumericEquals", "80", "81"),
        (
            "trellis:Workload",
            "StringLike",
            "/kubepods.slice/*",
            "/system.slice/*",
        ),
        (
            "trellis:WorkloadUnit",
            "StringEquals",
            "cri-containerd-4f0c5b7e2a1d.scope",
            "nginx.service",
        ),
        (
            "trellis:WorkloadContainer",
            "StringEquals",
            "4f0c5b7e2a1d",
            "0000",
        ),
        (
            "trellis:WorkloadPod",
            "StringEquals",
            "1f2e3d4c-5b6a",
            "other",
        ),
    ];
    let people = principals();
    let mut headers = HeaderMap::new();
    headers.insert("x-team", "payments".parse().unwrap());
    let req = Request {
        query: Some("v=2"),
        ..request(Some(&people[0].1), &headers)
    };
    for key in trellis_api::policy::condition_keys() {
        let row = rows
            .iter()
            .find(|(k, ..)| {
                k.strip_prefix(key)
                    .is_some_and(|rest| key.ends_with('/') != rest.is_empty())
            })
            .unwrap_or_else(|| panic!("no row for condition key {key}"));
        let (name, op, holds, fails) = *row;
        for (value, want) in [(holds, allow("Statement[0]")), (fails, Outcome::NoMatch)] {
            let d = doc(vec![stmt(json!({"Condition": {op: {name: value}}}))]);
            let parsed = PolicyDocument::parse(&d).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                evaluate(&Policy::compile(&parsed), &req),
                want,
                "{name} {op} {value}"
            );
        }
    }
}

/// `aws:SecureTransport` says whether the client's connection is TLS.
#[test]
fn secure_transport_is_true_on_tls_connections() {
    let headers = HeaderMap::new();
    let d = doc(vec![stmt(
        json!({"Condition": {"Bool": {"aws:SecureTransport": "true"}}}),
    )]);
    let policy = Policy::compile(&PolicyDocument::parse(&d).unwrap());
    for (secure, want) in [(true, allow("Statement[0]")), (false, Outcome::NoMatch)] {
        let req = Request {
            port: 443,
            secure,
            ..request(None, &headers)
        };
        assert_eq!(evaluate(&policy, &req), want, "secure={secure}");
    }
}
