//! Request-path hardening, end to end in process: raw client bytes through
//! the proxy's own connection handling (the HTTP/1.1 path and hyper's) to
//! scripted targets on 127.0.0.1. Each case asserts the routing decision
//! (which target group's target got it), the policy decision (an auth
//! service denying `/admin*`), and the exact request line and `Host` the
//! target received: one reading of each request for every stage.

use crate::h1::tests::{Seen, applied, header, send_raw, target};
use crate::proxy::Proxy;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A service without auth, and one whose policy denies `/admin*` to all.
const OPEN: &str = "169.254.171.10:80";
const GUARDED: &str = "169.254.171.11:80";

fn proxy(public: SocketAddr, rest: SocketAddr) -> Arc<Proxy> {
    let listener = serde_json::json!({
        "name": "web", "protocol": "HTTP", "port": 80,
        "defaultAction": {"forward": [{"targetGroup": "rest", "weight": 1}]},
        "rules": [{"name": "public", "priority": 1, "match": {"path": {"prefix": "/public/"}},
                   "action": {"forward": [{"targetGroup": "public", "weight": 1}]}}]
    });
    let policy = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": "*", "Action": "vpc-lattice-svcs:Invoke", "Resource": "*"},
            {"Effect": "Deny", "Principal": "*", "Action": "vpc-lattice-svcs:Invoke",
             "Resource": "trellis:service/guarded/admin*"}
        ]
    });
    let snapshot = serde_json::json!({
        "network": "east", "revision": 1, "region": "us-east-1", "dnsZone": "trellis.internal",
        "services": [
            {"name": "open", "vip": "169.254.171.10", "vipV6": "fd00::10", "dnsNames": [],
             "via": ["net"], "authType": "NONE", "listeners": [listener]},
            {"name": "guarded", "vip": "169.254.171.11", "vipV6": "fd00::11", "dnsNames": [],
             "via": ["net"], "authType": "SIGV4", "authPolicy": policy, "listeners": [listener]}
        ],
        "serviceNetworks": [{"name": "net", "authType": "NONE"}],
        "targetGroups": [
            {"name": "public", "network": "east", "port": public.port(),
             "healthCheck": {"enabled": false}, "targets": [{"address": "127.0.0.1"}]},
            {"name": "rest", "network": "east", "port": rest.port(),
             "healthCheck": {"enabled": false}, "targets": [{"address": "127.0.0.1"}]}
        ],
        "gateways": {}
    });
    applied(snapshot)
}

/// Sends `raw` on a new connection to `vip`; the first response's status
/// and head.
async fn send(proxy: &Arc<Proxy>, vip: &str, raw: &[u8]) -> (u16, String) {
    let (head, _) = send_raw(proxy, vip, raw).await;
    (head[9..12].parse().unwrap(), head)
}

/// What one target got since the last call: request lines with their Host.
fn took(seen: &Seen) -> Vec<(String, Option<String>)> {
    seen.lock()
        .unwrap()
        .drain(..)
        .map(|(_, head)| {
            let line = head.lines().next().unwrap_or("").to_string();
            (line, header(&head, "host").map(str::to_string))
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum To {
    Public,
    Rest,
    Nowhere,
}

#[tokio::test]
async fn every_stage_reads_a_request_one_way() {
    use To::*;
    let (public_addr, public) = target().await;
    let (rest_addr, rest) = target().await;
    let proxy = proxy(public_addr, rest_addr);
    let h = "Host: shop\r\n";
    // (request, status on the open service, where it went there, the
    // request line the target got, its Host; status on the guarded one).
    let cases: Vec<(String, u16, To, &str, &str, u16)> = vec![
        (
            format!("GET /public/x?a=%2f HTTP/1.1\r\n{h}\r\n"),
            200,
            Public,
            "GET /public/x?a=%2F HTTP/1.1",
            "shop",
            200,
        ),
        (
            format!("GET /public/./x//y HTTP/1.1\r\n{h}\r\n"),
            200,
            Public,
            "GET /public/x/y HTTP/1.1",
            "shop",
            200,
        ),
        (
            format!("GET /public/../admin HTTP/1.1\r\n{h}\r\n"),
            200,
            Rest,
            "GET /admin HTTP/1.1",
            "shop",
            403,
        ),
        (
            format!("GET /public/%2e%2e/admin HTTP/1.1\r\n{h}\r\n"),
            200,
            Rest,
            "GET /admin HTTP/1.1",
            "shop",
            403,
        ),
        (
            format!("GET /public/.%2E/admin/x HTTP/1.1\r\n{h}\r\n"),
            200,
            Rest,
            "GET /admin/x HTTP/1.1",
            "shop",
            403,
        ),
        (
            format!("GET //admin HTTP/1.1\r\n{h}\r\n"),
            200,
            Rest,
            "GET /admin HTTP/1.1",
            "shop",
            403,
        ),
        (
            format!("GET /%61dmin HTTP/1.1\r\n{h}\r\n"),
            200,
            Rest,
            "GET /admin HTTP/1.1",
            "shop",
            403,
        ),
        (
            format!("GET /%70ublic/%78 HTTP/1.1\r\n{h}\r\n"),
            200,
            Public,
            "GET /public/x HTTP/1.1",
            "shop",
            200,
        ),
        (
            format!("GET /public/%2fadmin HTTP/1.1\r\n{h}\r\n"),
            400,
            Nowhere,
            "",
            "",
            400,
        ),
        (
            format!("GET /public/..%5Cadmin HTTP/1.1\r\n{h}\r\n"),
            400,
            Nowhere,
            "",
            "",
            400,
        ),
        (
            format!("GET /public/..;/admin HTTP/1.1\r\n{h}\r\n"),
            400,
            Nowhere,
            "",
            "",
            400,
        ),
        (
            format!("GET /public/%zz HTTP/1.1\r\n{h}\r\n"),
            400,
            Nowhere,
            "",
            "",
            400,
        ),
        // The absolute form's authority is the host, for rules and target.
        (
            "GET http://a.example/public/x HTTP/1.1\r\nHost: b.example\r\n\r\n".into(),
            200,
            Public,
            "GET /public/x HTTP/1.1",
            "a.example",
            200,
        ),
        (
            "GET http://a.example/admin HTTP/1.1\r\nHost: b.example\r\n\r\n".into(),
            200,
            Rest,
            "GET /admin HTTP/1.1",
            "a.example",
            403,
        ),
        (
            "GET /public/x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".into(),
            400,
            Nowhere,
            "",
            "",
            400,
        ),
        (
            "GET /public/x HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n".into(),
            400,
            Nowhere,
            "",
            "",
            400,
        ),
        (
            "GET /public/x HTTP/1.1\r\n\r\n".into(),
            400,
            Nowhere,
            "",
            "",
            400,
        ),
        (
            format!("GET admin HTTP/1.1\r\n{h}\r\n"),
            400,
            Nowhere,
            "",
            "",
            400,
        ),
        (
            format!("GET * HTTP/1.1\r\n{h}\r\n"),
            400,
            Nowhere,
            "",
            "",
            400,
        ),
        (
            format!("OPTIONS * HTTP/1.1\r\n{h}\r\n"),
            200,
            Nowhere,
            "",
            "",
            200,
        ),
        // h2c is never offered to a target; the request goes on as HTTP/1.1.
        (
            format!(
                "GET /public/x HTTP/1.1\r\n{h}Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n"
            ),
            200,
            Public,
            "GET /public/x HTTP/1.1",
            "shop",
            200,
        ),
        // A repeated Content-Length, in any form, equal or not.
        (
            format!(
                "POST /public/p HTTP/1.1\r\n{h}Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc"
            ),
            400,
            Nowhere,
            "",
            "",
            400,
        ),
        (
            format!("POST /public/p HTTP/1.1\r\n{h}Content-Length: 3, 3\r\n\r\nabc"),
            400,
            Nowhere,
            "",
            "",
            400,
        ),
        (
            format!("POST /public/p HTTP/1.1\r\n{h}Content-Length: 3\r\n\r\nabc"),
            200,
            Public,
            "POST /public/p HTTP/1.1",
            "shop",
            200,
        ),
        (
            format!(
                "POST /public/p HTTP/1.1\r\n{h}Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"
            ),
            400,
            Nowhere,
            "",
            "",
            400,
        ),
        // Both framings: the classic smuggling shape.
        (
            format!(
                "POST /public/p HTTP/1.1\r\n{h}Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
            ),
            400,
            Nowhere,
            "",
            "",
            400,
        ),
    ];
    for (raw, status, to, line, host, guarded) in &cases {
        let (got, head) = send(&proxy, OPEN, raw.as_bytes()).await;
        assert_eq!(got, *status, "{raw:?}: {head}");
        let (p, r) = (took(&public), took(&rest));
        let (went, seen) = match (p.len(), r.len()) {
            (1, 0) => (Public, &p[0]),
            (0, 1) => (Rest, &r[0]),
            (0, 0) => (Nowhere, &(String::new(), None)),
            _ => panic!("{raw:?} reached {p:?} and {r:?}"),
        };
        assert_eq!(went, *to, "{raw:?}");
        assert_eq!(seen.0, *line, "{raw:?}");
        if *to != Nowhere {
            assert_eq!(seen.1.as_deref(), Some(*host), "{raw:?}");
        }
        let (got, head) = send(&proxy, GUARDED, raw.as_bytes()).await;
        assert_eq!(got, *guarded, "guarded {raw:?}: {head}");
        let reached = took(&public).len() + took(&rest).len();
        assert_eq!(
            reached,
            usize::from(*guarded == 200 && *to != Nowhere),
            "{raw:?}"
        );
    }
}

/// h2c is never offered to a target: its headers are gone, the request
/// goes on as HTTP/1.1.
#[tokio::test]
async fn h2c_never_reaches_a_target() {
    let (public_addr, public) = target().await;
    let (rest_addr, _) = target().await;
    let proxy = proxy(public_addr, rest_addr);
    let raw = "GET /public/x HTTP/1.1\r\nHost: shop\r\nConnection: Upgrade, HTTP2-Settings\r\n\
               Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n";
    for vip in [OPEN, GUARDED] {
        let (status, _) = send(&proxy, vip, raw.as_bytes()).await;
        assert_eq!(status, 200);
        let (_, head) = public.lock().unwrap().pop().expect("the target got it");
        let lower = head.to_ascii_lowercase();
        assert!(
            !lower.contains("upgrade") && !lower.contains("http2-settings"),
            "{head}"
        );
    }
}

/// A chunked body that breaks off malformed is the client's error: 400,
/// not 502, and the target connection it was half-sent on is not reused.
#[tokio::test]
async fn a_malformed_chunked_body_is_a_400() {
    // A target that reads the head and then waits for the body to end.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = connections.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                loop {
                    match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
                        Ok(Ok(n)) if n > 0 => {
                            if buf[..n].windows(5).any(|w| w == b"0\r\n\r\n") {
                                let _ = s
                                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                                    .await;
                            }
                        }
                        _ => return,
                    }
                }
            });
        }
    });
    let proxy = proxy(addr, addr);
    let bad = "POST /public/p HTTP/1.1\r\nHost: shop\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n";
    let (status, head) = send(&proxy, OPEN, bad.as_bytes()).await;
    assert_eq!(status, 400, "{head}");
    assert_eq!(
        header(&head, "x-trellis-error"),
        Some("bad-request"),
        "{head}"
    );
    let good = "POST /public/p HTTP/1.1\r\nHost: shop\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
    let (status, head) = send(&proxy, OPEN, good.as_bytes()).await;
    assert_eq!(status, 200, "{head}");
    assert_eq!(
        connections.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "the half-sent connection was reused"
    );
}
