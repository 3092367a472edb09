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
