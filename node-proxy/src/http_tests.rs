//! Hyper's path against real sockets, as `h1/tests.rs` does for the
//! HTTP/1.1 path: requests the HTTP/1.1 path hands over (a chunked body, a
//! `Connection` naming a header) through the accept loop's own connection
//! handling to scripted targets on 127.0.0.1, asserting what the target got
//! and what the client was answered, refusals included.

use crate::h1::tests::{Seen, applied, header, send_raw, target};
use crate::proxy::Proxy;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

const VIP: &str = "169.254.171.20:80";

/// `/two*` to a group whose first target refuses connections, `/slow*` to a
/// target that never answers, `/none*` to an empty group, the rest to
/// `live`; requests time out after a second.
fn proxy(live: SocketAddr, dead: SocketAddr, silent: SocketAddr) -> Arc<Proxy> {
    let rule = |name: &str, group: &str| {
        serde_json::json!({"name": name, "priority": 1 + name.len(),
            "match": {"path": {"prefix": format!("/{name}")}},
            "action": {"forward": [{"targetGroup": group, "weight": 1}]}})
    };
    let target =
        |a: SocketAddr| serde_json::json!({"address": a.ip().to_string(), "port": a.port()});
    let group = |name: &str, targets: Vec<serde_json::Value>| {
        serde_json::json!({"name": name, "network": "east", "port": 1,
            "healthCheck": {"enabled": false}, "targets": targets})
    };
    applied(serde_json::json!({
        "network": "east", "revision": 1, "region": "local", "dnsZone": "trellis.internal",
        "services": [{
            "name": "shop", "vip": "169.254.171.20", "vipV6": "fd00::20", "dnsNames": [],
            "via": ["net"], "authType": "NONE",
            "listeners": [{
                "name": "web", "protocol": "HTTP", "port": 80,
                "timeouts": {"requestSeconds": 1},
                "defaultAction": {"forward": [{"targetGroup": "live", "weight": 1}]},
                "rules": [rule("two", "two"), rule("slow", "slow"), rule("none", "none")]
            }]
        }],
        "serviceNetworks": [{"name": "net", "authType": "NONE"}],
        "targetGroups": [
            group("live", vec![target(live)]),
            group("two", vec![target(dead), target(live)]),
            group("slow", vec![target(silent)]),
            group("none", vec![])
        ],
        "gateways": {}
    }))
}

/// A port nothing listens on.
async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

/// A target that accepts and never answers.
async fn silent() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    addr
}

/// `raw` on a new client connection; the first response's head and body.
async fn send(proxy: &Arc<Proxy>, raw: &[u8]) -> (String, String) {
    let (head, body) = send_raw(proxy, VIP, raw).await;
    (head, String::from_utf8_lossy(&body).to_string())
}

fn metric(proxy: &Proxy, line: &str) -> bool {
    proxy.metrics.render().lines().any(|l| l == line)
}

fn last(seen: &Seen) -> String {
    seen.lock()
        .unwrap()
        .last()
        .map(|(_, h)| h.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn handed_over_requests_are_forwarded_retried_and_refused_on_hypers_side() {
    let (live, seen) = target().await;
    let proxy = proxy(live, closed_port().await, silent().await);

    // `Connection` naming a header: hyper's side. The body and its length
    // reach the target, the hop-by-hop header does not, proxy headers are
    // set and forged ones dropped.
    let hand_over = "Connection: x-custom\r\nX-Custom: 1\r\n";
    let req = format!(
        "POST /post HTTP/1.1\r\nHost: shop\r\n{hand_over}X-Trellis-Identity: forged\r\nContent-Length: 4\r\n\r\nabcd"
    );
    let (head, body) = send(&proxy, req.as_bytes()).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, "got 4");
    let got = last(&seen);
    assert!(got.starts_with("POST /post HTTP/1.1\r\n"), "{got}");
    assert_eq!(header(&got, "x-trellis-service"), Some("shop"));
    assert_eq!(
        header(&got, "x-custom"),
        None,
        "a hop-by-hop header went through"
    );
    assert_eq!(
        header(&got, "x-trellis-identity"),
        None,
        "a forged header went through"
    );
    assert!(metric(
        &proxy,
        "trellis_proxy_http_handovers_total{reason=\"framing\"} 1"
    ));

    // A connect failure of an idempotent request: sent again elsewhere.
    // Which target comes first is the picker's choice: asked until the
    // dead one was (half the time, so at once, or a failure 2^-20 of runs).
    let retries = |p: &Proxy| {
        p.metrics
            .render()
            .lines()
            .find_map(|l| {
                l.strip_prefix("trellis_proxy_retries_total ")?
                    .parse::<u64>()
                    .ok()
            })
            .unwrap_or(0)
    };
    for _ in 0..20 {
        let req = format!("GET /two HTTP/1.1\r\nHost: shop\r\n{hand_over}\r\n");
        let (head, _) = send(&proxy, req.as_bytes()).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        if retries(&proxy) > 0 {
            break;
        }
    }
    assert!(retries(&proxy) > 0, "the dead target was never tried first");

    // Trellis's own answers, each with its code and reason.
    for (path, status, code) in [
        ("/slow", "504", "upstream-timeout"),
        ("/none", "503", "no-healthy-target"),
    ] {
        let req = format!("GET {path} HTTP/1.1\r\nHost: shop\r\n{hand_over}\r\n");
        let (head, body) = send(&proxy, req.as_bytes()).await;
        assert!(
            head.starts_with(&format!("HTTP/1.1 {status}")),
            "{path}: {head}"
        );
        assert_eq!(
            header(&head, "x-trellis-error"),
            Some(code),
            "{path}: {head}"
        );
        assert!(body.starts_with(&format!("{code}: ")), "{path}: {body}");
    }
}
