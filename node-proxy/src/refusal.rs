//! Why Trellis answered a request itself, in one vocabulary for every path
//! (hyper's, the HTTP/1.1 path, TCP, the gateway): the status, the
//! `x-trellis-error` code and a one-line reason, rendered in one place per
//! protocol. TCP connections have no answer to carry it: their code goes to
//! the access log.

use crate::upstream::{Body, full};
use http::{HeaderValue, Response, StatusCode};

/// Why Trellis answered itself; the `x-trellis-error` header value.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Refusal {
    NoService,
    NoTargetGroup,
    NoHealthyTarget,
    ConnectFailed,
    /// The TLS handshake with an HTTPS group's target failed (most often:
    /// its certificate is not trusted or not for the configured name).
    TargetTls,
    UpstreamFailed,
    UpstreamTimeout,
    TargetDrained,
    AuthDenied,
    BodyTooLarge,
    BadRequest,
    RequestTimeout,
    /// A gateway refused a tunnelled request (not visible, wrong network).
    TunnelRefused,
    /// No gateway of the group's network could be reached.
    GatewayUnreachable,
}

impl Refusal {
    const ALL: [Refusal; 14] = [
        Refusal::NoService,
        Refusal::NoTargetGroup,
        Refusal::NoHealthyTarget,
        Refusal::ConnectFailed,
        Refusal::TargetTls,
        Refusal::UpstreamFailed,
        Refusal::UpstreamTimeout,
        Refusal::TargetDrained,
        Refusal::AuthDenied,
        Refusal::BodyTooLarge,
        Refusal::BadRequest,
        Refusal::RequestTimeout,
        Refusal::TunnelRefused,
        Refusal::GatewayUnreachable,
    ];

    /// The gRPC status a gRPC client is given for it (the codes of
    /// grpc/doc/statuscodes.md).
    fn grpc_status(self) -> &'static str {
        match self {
            Refusal::UpstreamTimeout | Refusal::RequestTimeout => "4", // DEADLINE_EXCEEDED
            Refusal::AuthDenied | Refusal::TunnelRefused => "7",       // PERMISSION_DENIED
            Refusal::BodyTooLarge => "8",                              // RESOURCE_EXHAUSTED
            Refusal::BadRequest => "13",                               // INTERNAL (HTTP 400)
            Refusal::NoService
            | Refusal::NoTargetGroup
            | Refusal::NoHealthyTarget
            | Refusal::ConnectFailed
            | Refusal::TargetTls
            | Refusal::UpstreamFailed
            | Refusal::TargetDrained
            | Refusal::GatewayUnreachable => "14", // UNAVAILABLE
        }
    }

    pub(crate) fn status(self) -> StatusCode {
        match self {
            Refusal::NoService
            | Refusal::NoTargetGroup
            | Refusal::NoHealthyTarget
            | Refusal::GatewayUnreachable => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::ConnectFailed
            | Refusal::TargetTls
            | Refusal::UpstreamFailed
            | Refusal::TargetDrained => StatusCode::BAD_GATEWAY,
            Refusal::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Refusal::AuthDenied | Refusal::TunnelRefused => StatusCode::FORBIDDEN,
            Refusal::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::BadRequest => StatusCode::BAD_REQUEST,
            Refusal::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
        }
    }

    pub(crate) fn code(self) -> &'static str {
        match self {
            Refusal::NoService => "no-service",
            Refusal::NoTargetGroup => "no-target-group",
            Refusal::NoHealthyTarget => "no-healthy-target",
            Refusal::ConnectFailed => "connect-failed",
            Refusal::TargetTls => "target-tls",
            Refusal::UpstreamFailed => "upstream-failed",
            Refusal::UpstreamTimeout => "upstream-timeout",
            Refusal::TargetDrained => "target-drained",
            Refusal::AuthDenied => "auth-denied",
            Refusal::BodyTooLarge => "body-too-large",
            Refusal::BadRequest => "bad-request",
            Refusal::RequestTimeout => "request-timeout",
            Refusal::TunnelRefused => "tunnel-refused",
            Refusal::GatewayUnreachable => "gateway-unreachable",
        }
    }

    /// The answer on hyper's side (HTTP/1.1 and HTTP/2).
    pub(crate) fn response(self, detail: &str) -> Response<Body> {
        let mut r = Response::new(full(format!("{}: {detail}\n", self.code())));
        *r.status_mut() = self.status();
        r.headers_mut()
            .insert("x-trellis-error", HeaderValue::from_static(self.code()));
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        r
    }

    /// The same answer as HTTP/1.1 bytes, for the HTTP/1.1 path; with
    /// `close`, the connection ends after it. The body's length second.
    pub(crate) fn h1_bytes(self, detail: &str, close: bool) -> (Vec<u8>, usize) {
        let status = self.status();
        let body = format!("{}: {detail}\n", self.code());
        let mut out = Vec::with_capacity(256 + body.len());
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(status.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
        out.extend_from_slice(b"\r\ncontent-type: text/plain; charset=utf-8\r\nx-trellis-error: ");
        out.extend_from_slice(self.code().as_bytes());
        out.extend_from_slice(format!("\r\ncontent-length: {}\r\n", body.len()).as_bytes());
        if close {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(body.as_bytes());
        (out, body.len())
    }
}

/// Whether a request is gRPC: its client reads Trellis's refusals as gRPC
/// statuses, not HTTP ones.
pub(crate) fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// A refusal of Trellis's (it carries `x-trellis-error`) as a gRPC client
/// reads one: HTTP 200 and no body, `grpc-status` and `grpc-message` in the
/// headers (a trailers-only response), the HTTP status in
/// `x-trellis-status`. Anything else goes as it is.
pub(crate) fn for_grpc(resp: Response<Body>) -> Response<Body> {
    let Some(refusal) = resp
        .headers()
        .get("x-trellis-error")
        .and_then(|v| Refusal::ALL.into_iter().find(|r| v == r.code()))
    else {
        return resp;
    };
    let (mut parts, _) = resp.into_parts();
    parts
        .headers
        .insert("x-trellis-status", HeaderValue::from(parts.status.as_u16()));
    parts.status = StatusCode::OK;
    parts.headers.remove(http::header::CONTENT_LENGTH);
    parts.headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    parts.headers.insert(
        "grpc-status",
        HeaderValue::from_static(refusal.grpc_status()),
    );
    parts
        .headers
        .insert("grpc-message", HeaderValue::from_static(refusal.code()));
    Response::from_parts(parts, crate::upstream::empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_clients_get_grpc_statuses_for_refusals_only() {
        let resp = for_grpc(Refusal::NoHealthyTarget.response("nothing healthy"));
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["grpc-status"], "14");
        assert_eq!(resp.headers()["grpc-message"], "no-healthy-target");
        assert_eq!(resp.headers()["x-trellis-status"], "503");
        assert_eq!(resp.headers()["content-type"], "application/grpc");
        for (r, code) in [
            (Refusal::AuthDenied, "7"),
            (Refusal::UpstreamTimeout, "4"),
            (Refusal::BodyTooLarge, "8"),
        ] {
            assert_eq!(for_grpc(r.response("x")).headers()["grpc-status"], code);
        }
        // Every refusal has a status, and reads back from its code.
        for r in Refusal::ALL {
            assert!(!r.grpc_status().is_empty());
            assert!(
                for_grpc(r.response("x"))
                    .headers()
                    .contains_key("grpc-status")
            );
        }
        // A target's own answer is the target's.
        let mut own = Response::new(crate::upstream::empty());
        *own.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        let own = for_grpc(own);
        assert_eq!(own.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(!own.headers().contains_key("grpc-status"));
        let mut h = http::HeaderMap::new();
        h.insert(
            "content-type",
            HeaderValue::from_static("application/grpc+proto"),
        );
        assert!(is_grpc(&h));
    }
}
