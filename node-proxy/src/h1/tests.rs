//! The HTTP/1.1 path against real sockets: a client and a scripted target
//! on 127.0.0.1, the proxy between them with a snapshot applied, bytes
//! checked as they arrive on each side.

use super::{Served, serve};
use crate::access_log::AccessLog;
use crate::proxy::{Conn, Proxy};
use crate::socket::{OrigDstAddr, Upstream};
use crate::upstream::Clients;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const VIP: &str = "169.254.171.9:80";

/// What the target saw: per request, its connection's port and its head.
pub(crate) type Seen = Arc<Mutex<Vec<(u16, String)>>>;

/// A target that answers by path: `/len` echoes the head it got,
/// `/chunked` answers in chunks, `/close` without a length, `/early` with a
/// 103 first, `/bye` closes the connection after answering, `/post`
/// counts the body.
pub(crate) async fn target() -> (SocketAddr, Seen) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Seen::default();
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, peer)) = l.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let Some(end) = read_until_head(&mut s, &mut buf).await else {
                        return;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_string();
                    let length: usize =
                        header(&head, "content-length").map_or(0, |v| v.parse().unwrap());
                    while buf.len() < end + length {
                        let mut chunk = [0u8; 65536];
                        let n = s.read(&mut chunk).await.unwrap();
                        assert!(n > 0, "body cut short");
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    buf.drain(..end + length);
                    log.lock().unwrap().push((peer.port(), head.clone()));
                    let path = head.split(' ').nth(1).unwrap_or("").to_string();
                    match path.as_str() {
                        "/chunked" => {
                            s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n").await.unwrap();
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            s.write_all(b"6\r\n world\r\n0\r\n\r\n").await.unwrap();
                        }
                        "/close" => {
                            s.write_all(b"HTTP/1.1 200 OK\r\n\r\nuntil the end")
                                .await
                                .unwrap();
                            return;
                        }
                        "/early" => {
                            s.write_all(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n")
                                .await
                                .unwrap();
                            s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
                                .await
                                .unwrap();
                        }
                        "/bye" => {
                            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nbye")
                                .await
                                .unwrap();
                            return;
                        }
                        "/post" => {
                            let body = format!("got {length}");
                            let r = format!(
                                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                                body.len()
                            );
                            s.write_all(r.as_bytes()).await.unwrap();
                        }
                        _ => {
                            let r = format!(
                                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: x-hop\r\nx-hop: 1\r\n\r\n{head}",
                                head.len()
                            );
                            s.write_all(r.as_bytes()).await.unwrap();
                        }
                    }
                }
            });
        }
    });
    (addr, seen)
}

pub(crate) async fn read_until_head(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(i + 4);
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

pub(crate) fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// A proxy whose service routes `/none*` to a group without targets and
/// everything else to `target`.
pub(crate) fn proxy(target: SocketAddr) -> Arc<Proxy> {
    let snapshot = serde_json::json!({
        "network": "east", "revision": 1, "region": "local", "dnsZone": "trellis.internal",
        "services": [{
            "name": "shop", "vip": "169.254.171.9", "vipV6": "fd00::9", "dnsNames": [],
            "via": ["net"], "authType": "NONE",
            "listeners": [{
                "name": "web", "protocol": "HTTP", "port": 80,
                "defaultAction": {"forward": [{"targetGroup": "web", "weight": 1}]},
                "rules": [{"name": "none", "priority": 1, "match": {"path": {"prefix": "/none"}},
                           "action": {"forward": [{"targetGroup": "empty", "weight": 1}]}}]
            }]
        }],
        "serviceNetworks": [{"name": "net", "authType": "NONE"}],
        "targetGroups": [
            {"name": "web", "network": "east", "port": target.port(),
             "targets": [{"address": target.ip().to_string()}]},
            {"name": "empty", "network": "east", "port": 1, "targets": []}
        ],
        "gateways": {}
    });
    applied(snapshot)
}

/// A proxy of network east, without SNAT or marks, with `snapshot` applied.
pub(crate) fn applied(snapshot: serde_json::Value) -> Arc<Proxy> {
    let upstream = Upstream {
        snat_v4: None,
        snat_v6: None,
        mark: 0,
    };
    let proxy = Proxy::new("east", Clients::new(upstream), AccessLog::off());
    proxy.apply(serde_json::from_value(snapshot).unwrap());
    proxy
}

/// A client connection, served by `h1::serve` on the other end.
async fn connect(proxy: &Arc<Proxy>) -> (TcpStream, JoinHandle<Served<TcpStream>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
    let (server, peer) = l.accept().await.unwrap();
    let conn = Conn::new(1, peer, OrigDstAddr(VIP.parse().unwrap()));
    let proxy = proxy.clone();
    let served =
        tokio::spawn(async move { serve(&proxy, &conn, server, &CancellationToken::new()).await });
    (client, served)
}

/// Sends `raw` on a new client connection to `vip`, served as the accept
/// loop serves it (the HTTP/1.1 path, then hyper's); the first response's
/// head and body.
pub(crate) async fn send_raw(proxy: &Arc<Proxy>, vip: &str, raw: &[u8]) -> (String, Vec<u8>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
    let (server, peer) = l.accept().await.unwrap();
    let conn = Conn::new(1, peer, OrigDstAddr(vip.parse().unwrap()));
    let p = proxy.clone();
    tokio::spawn(async move { p.serve_connection(conn, server).await });
    client.write_all(raw).await.unwrap();
    let mut buf = Vec::new();
    response(&mut client, &mut buf).await
}

/// Reads one response: its head, and its body by its framing.
pub(crate) async fn response(c: &mut TcpStream, buf: &mut Vec<u8>) -> (String, Vec<u8>) {
    let end = read_until_head(c, buf).await.expect("a response head");
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    buf.drain(..end);
    let status: u16 = head[9..12].parse().unwrap();
    // None: chunked, or until the close.
    let want = if (100..200).contains(&status) || status == 204 {
        Some(0)
    } else {
        header(&head, "content-length").map(|n| n.parse::<usize>().unwrap())
    };
    loop {
        let complete = match want {
            Some(n) => buf.len() >= n,
            None if header(&head, "transfer-encoding").is_some() => buf.ends_with(b"0\r\n\r\n"),
            None => false,
        };
        if complete {
            let n = want.unwrap_or(buf.len());
            return (head, buf.drain(..n).collect());
        }
        let mut chunk = [0u8; 65536];
        let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        if n == 0 {
            assert!(want.is_none(), "closed mid-body: {head}");
            return (head, std::mem::take(buf));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test]
async fn requests_are_rewritten_relayed_and_kept_alive() {
    let (addr, seen) = target().await;
    let proxy = proxy(addr);
    let (mut c, _) = connect(&proxy).await;
    let mut buf = Vec::new();

    // Two pipelined requests, one write.
    c.write_all(b"GET /len?x=1 HTTP/1.1\r\nHost: shop\r\nX-Trellis-Identity: forged\r\nX-Forwarded-For: 6.6.6.6\r\n\r\nGET /chunked HTTP/1.1\r\nHost: shop\r\n\r\n").await.unwrap();
    let (head, body) = response(&mut c, &mut buf).await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        header(&head, "x-hop").is_none() && header(&head, "connection").is_none(),
        "{head}"
    );
    let sent = String::from_utf8(body).unwrap();
    assert!(
        sent.starts_with("GET /len?x=1 HTTP/1.1\r\nHost: shop\r\n"),
        "{sent}"
    );
    assert_eq!(header(&sent, "x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(header(&sent, "x-trellis-service"), Some("shop"));
    assert_eq!(header(&sent, "x-trellis-source-network"), Some("east"));
    assert_eq!(
        header(&sent, "x-trellis-request-id").map(str::len),
        Some(32)
    );
    assert!(header(&sent, "x-trellis-identity").is_none(), "{sent}");
    assert!(!sent.contains("6.6.6.6"), "{sent}");

    let (head, body) = response(&mut c, &mut buf).await;
    assert!(header(&head, "transfer-encoding").is_some(), "{head}");
    assert_eq!(body, b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");

    // A body in pieces, larger than one read.
    let body = vec![b'x'; 300_000];
    c.write_all(
        format!(
            "POST /post HTTP/1.1\r\nHost: shop\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    for piece in body.chunks(70_000) {
        c.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (_, got) = response(&mut c, &mut buf).await;
    assert_eq!(got, b"got 300000");

    // 1xx passes, then the final answer.
    c.write_all(b"GET /early HTTP/1.1\r\nHost: shop\r\n\r\n")
        .await
        .unwrap();
    let (early, _) = response(&mut c, &mut buf).await;
    assert!(
        early.starts_with("HTTP/1.1 103 Early Hints\r\n") && early.contains("Link: </a.css>"),
        "{early}"
    );
    let (last, _) = response(&mut c, &mut buf).await;
    assert!(last.starts_with("HTTP/1.1 204"), "{last}");

    // Every request went over one target connection.
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 4);
    assert!(seen.iter().all(|(port, _)| *port == seen[0].0), "{seen:?}");
}

#[tokio::test]
async fn closed_target_connections_and_refusals() {
    let (addr, seen) = target().await;
    let proxy = proxy(addr);
    let (mut c, _) = connect(&proxy).await;
    let mut buf = Vec::new();

    // The target closes after answering: the next GET goes on a new
    // connection, the client never sees it.
    for path in ["/bye", "/len"] {
        c.write_all(format!("GET {path} HTTP/1.1\r\nHost: shop\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let (head, _) = response(&mut c, &mut buf).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        // Let the target's FIN arrive before the next request.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    {
        let seen = seen.lock().unwrap();
        assert_ne!(seen[0].0, seen[1].0, "a new connection after the close");
    }

    // No target: Trellis answers, and the connection stays usable.
    c.write_all(b"GET /none HTTP/1.1\r\nHost: shop\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = response(&mut c, &mut buf).await;
    assert!(
        head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{head}"
    );
    assert_eq!(header(&head, "x-trellis-error"), Some("no-healthy-target"));
    assert!(
        String::from_utf8(body)
            .unwrap()
            .starts_with("no-healthy-target: ")
    );

    // No length: relayed until the target closes, then the client is closed.
    c.write_all(b"GET /close HTTP/1.1\r\nHost: shop\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = response(&mut c, &mut buf).await;
    assert_eq!(header(&head, "connection"), Some("close"), "{head}");
    assert_eq!(body, b"until the end");
}

#[tokio::test]
async fn the_first_unusual_request_hands_the_connection_to_hyper() {
    let (addr, _) = target().await;
    let proxy = proxy(addr);
    let (mut c, served) = connect(&proxy).await;
    let mut buf = Vec::new();
    c.write_all(b"GET /len HTTP/1.1\r\nHost: shop\r\n\r\n")
        .await
        .unwrap();
    let (head, _) = response(&mut c, &mut buf).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let upgrade =
        b"GET /ws HTTP/1.1\r\nHost: shop\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n";
    c.write_all(upgrade).await.unwrap();
    let Served::HandOver(mut rest) = served.await.unwrap() else {
        panic!("not handed over");
    };
    let mut replay = vec![0u8; upgrade.len()];
    rest.read_exact(&mut replay).await.unwrap();
    assert_eq!(replay, upgrade);
    let text = proxy.metrics.render();
    assert!(
        text.contains("trellis_proxy_http_handovers_total{reason=\"framing\"} 1"),
        "{text}"
    );
}

#[test]
fn the_empty_payload_hash_is_sha256_of_nothing() {
    assert_eq!(
        crate::auth::sigv4::sha256_hex(b""),
        super::authorize::EMPTY_SHA256
    );
}

#[tokio::test]
async fn an_idle_client_gives_its_target_connection_to_the_next() {
    let (addr, seen) = target().await;
    let proxy = proxy(addr);
    let (mut first, _) = connect(&proxy).await;
    let mut buf = Vec::new();
    first
        .write_all(b"GET /len HTTP/1.1\r\nHost: shop\r\n\r\n")
        .await
        .unwrap();
    assert!(
        response(&mut first, &mut buf)
            .await
            .0
            .starts_with("HTTP/1.1 200")
    );
    // Idle past SHED_AFTER: its target connection goes to the pool...
    tokio::time::sleep(super::SHED_AFTER + Duration::from_millis(300)).await;
    let (mut second, _) = connect(&proxy).await;
    let mut buf2 = Vec::new();
    second
        .write_all(b"GET /len HTTP/1.1\r\nHost: shop\r\n\r\n")
        .await
        .unwrap();
    assert!(
        response(&mut second, &mut buf2)
            .await
            .0
            .starts_with("HTTP/1.1 200")
    );
    // ...where another client connection's request found it.
    let ports: Vec<u16> = seen.lock().unwrap().iter().map(|(p, _)| *p).collect();
    assert_eq!(ports.len(), 2);
    assert_eq!(ports[0], ports[1], "one target connection for both clients");
    // The idle one, woken, is served as before (its buffers grow back).
    first
        .write_all(b"GET /len?again HTTP/1.1\r\nHost: shop\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = response(&mut first, &mut buf).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(String::from_utf8_lossy(&body).contains("/len?again"));
}

/// What every idle client connection carries is the task waiting for its
/// next bytes: a request's state is boxed per busy spell (docs/benchmarks.md,
/// "Memory per idle connection"). A regression guard on that size.
#[tokio::test]
async fn an_idle_connection_task_stays_small() {
    let (addr, _) = target().await;
    let proxy = proxy(addr);
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let _client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
    let (server, peer) = l.accept().await.unwrap();
    let conn = Conn::new(1, peer, OrigDstAddr(VIP.parse().unwrap()));
    let stop = CancellationToken::new();
    let serving = serve(&proxy, &conn, server, &stop);
    let size = std::mem::size_of_val(&serving);
    assert!(size <= 640, "h1::serve's future is {size} bytes");
}
