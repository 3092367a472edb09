//! Header hygiene between client and target: what a client may not send
//! (`x-trellis-*`, `x-amzn-lattice-*`: identity and provenance are the
//! proxy's to say), hop-by-hop headers (RFC 9110 7.6.1), and what the proxy
//! adds for the target.

use crate::auth::policy::Principal;
use crate::config::Listener;
use crate::proxy::Conn;
use http::header::{CONNECTION, HeaderMap, HeaderName, HeaderValue, TE, UPGRADE};

/// Hop-by-hop headers that never cross the proxy, whatever `Connection` says.
pub const HOP_BY_HOP: [&str; 9] = [
    "connection",
    // h2c's upgrade settings (RFC 7540 3.2.1): h2c never reaches a target.
    "http2-settings",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
];

/// Removes what a client may not send. Returns how many headers went.
pub fn strip_reserved(headers: &mut HeaderMap) -> usize {
    let reserved: Vec<HeaderName> = headers
        .keys()
        .filter(|k| {
            let k = k.as_str();
            k.starts_with("x-trellis-") || k.starts_with("x-amzn-lattice-")
        })
        .cloned()
        .collect();
    for k in &reserved {
        headers.remove(k);
    }
    reserved.len()
}

/// Whether the request asks to switch to WebSocket, in which case
/// `Connection: upgrade` and `Upgrade` must reach the target. No other
/// upgrade is passed on: an `h2c` target would carry the rest of the
/// connection past the per-request rules and auth, so its `Upgrade` is
/// stripped and the request goes on as plain HTTP/1.1.
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    let mut upgrades = headers.get_all(UPGRADE).iter();
    let websocket = match (upgrades.next(), upgrades.next()) {
        (Some(v), None) => v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"websocket"),
        _ => false,
    };
    websocket
        && headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Removes hop-by-hop headers, including those `Connection` names. With
/// `upgrade`, `Connection: upgrade` and `Upgrade` are kept. `TE: trailers`
/// is kept (alone): it is the one TE value HTTP/2 allows, and gRPC
/// servers refuse a call without it.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    let trailers = headers
        .get_all(TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let token = t.split(';').next().unwrap_or_default();
            token.trim().eq_ignore_ascii_case("trailers")
        });
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named {
        if !(upgrade && name == UPGRADE) {
            headers.remove(name);
        }
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    if upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(UPGRADE);
    }
    if trailers {
        headers.insert(TE, HeaderValue::from_static("trailers"));
    }
}

/// Sets a header from a string; a value that is not a valid header value
/// (it cannot be, from our own names, but never panic) is left out.
pub fn set(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(HeaderName::from_static(name), v);
    }
}

/// The AWS account id in the ARNs of Lattice-compatible headers; Trellis
/// resources belong to no AWS account.
pub const LATTICE_ACCOUNT: &str = "000000000000";

/// How the caller named in `x-trellis-identity` was known.
pub(crate) const AUTHN_HEADER: &str = "x-trellis-authn";

/// The headers a target gets about the connection a request came on;
/// `set` writes one (replacing any of that name).
pub(crate) fn connection_headers(
    conn: &Conn,
    listener: &Listener,
    network: &str,
    region: &str,
    set: &mut dyn FnMut(&'static str, &str),
) {
    set("x-forwarded-for", &conn.client.ip().to_string());
    set("x-forwarded-for-port", &conn.client.port().to_string());
    let proto = match listener.protocol {
        trellis_api::resource::ListenerProtocol::Https => "https",
        _ => "http",
    };
    set("x-forwarded-for-proto", proto);
    set("x-trellis-source-network", network);
    set("x-trellis-service", &listener.service);
    if listener.lattice_compat {
        set(
            "x-amzn-lattice-network",
            &format!("SourceVpcArn=arn:aws:ec2:{region}:{LATTICE_ACCOUNT}:vpc/{network}"),
        );
    }
}

/// The headers a target gets about one request: its id, who called and how
/// that was known (`x-trellis-authn`: `sigv4`, `sigv4a`, `workload`; another
/// network's gateway checks a workload's claim by it), and with Lattice
/// compatibility the group it went to.
pub(crate) fn request_headers(
    listener: &Listener,
    region: &str,
    request_id: &str,
    group: &str,
    caller: Option<(&Principal, &'static str)>,
    set: &mut dyn FnMut(&'static str, &str),
) {
    set("x-trellis-request-id", request_id);
    let identity = caller.and_then(|(p, _)| p.names.first());
    if let (Some(name), Some((_, via))) = (identity, caller) {
        set("x-trellis-identity", name);
        set(AUTHN_HEADER, via);
    }
    if listener.lattice_compat {
        set(
            "x-amzn-lattice-identity",
            &match identity {
                Some(name) => format!("Principal={name}; Type=Trellis::Identity"),
                None => "Type=Anonymous".to_string(),
            },
        );
        let arn = |kind: &str, name: &str| {
            format!("arn:aws:vpc-lattice:{region}:{LATTICE_ACCOUNT}:{kind}/{name}")
        };
        set(
            "x-amzn-lattice-target",
            &format!(
                "ServiceArn={};ServiceNetworkArn={};TargetGroupArn={}",
                arn("service", &listener.service),
                arn("servicenetwork", &listener.service_network),
                arn("targetgroup", group)
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn clients_cannot_send_reserved_headers() {
        let mut h = map(&[
            ("X-Trellis-Identity", "trellis:identity/admin"),
            ("x-trellis-source-network", "prod"),
            ("x-amzn-lattice-identity", "Principal=arn:aws:iam::1:root"),
            ("x-trellish", "kept"),
            ("accept", "*/*"),
        ]);
        assert_eq!(strip_reserved(&mut h), 3);
        assert_eq!(h.len(), 2);
        assert!(h.contains_key("x-trellish"));
    }

    #[test]
    fn hop_by_hop_headers_stop_here() {
        let mut h = map(&[
            ("connection", "keep-alive, x-private"),
            ("keep-alive", "timeout=5"),
            ("x-private", "1"),
            ("te", "trailers"),
            ("upgrade", "h2c"),
            ("accept", "*/*"),
        ]);
        assert!(!is_upgrade(&h));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(
            h.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
            ["accept", "te"]
        );
        assert_eq!(h["te"], "trailers");
        // Only `trailers` of what TE asks, even when Connection names it.
        let mut h = map(&[("connection", "te"), ("te", "gzip, trailers;q=1")]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1);
        assert_eq!(h["te"], "trailers");
        let mut h = map(&[("te", "gzip, deflate")]);
        strip_hop_by_hop(&mut h, false);
        assert!(h.is_empty());

        let mut ws = map(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "k"),
        ]);
        assert!(is_upgrade(&ws));
        strip_hop_by_hop(&mut ws, true);
        assert_eq!(ws["connection"], "upgrade");
        assert_eq!(ws["upgrade"], "websocket");
        assert!(ws.contains_key("sec-websocket-key"));
    }
}
