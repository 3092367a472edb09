//! A request against its service's auth: the signature (with the body,
//! when it is signed, buffered and compared with its hash), then the
//! policies. What `auth` decides, read from a hyper request.

use crate::auth::policy::Principal;
use crate::auth::{self, Guard, Inbound, Place, sigv4};
use crate::config::{Config, Listener};
use crate::proxy::Conn;
use crate::refusal::Refusal;
use crate::upstream::{Body, empty};
use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Body as _;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

/// Checks a request against its service's auth: the signature (with the
/// body, when it is signed, buffered and compared with its hash) and then
/// the policies. Returns the request to forward, with its body buffered if
/// it had to be read, and who called.
pub(crate) async fn guard_request<'g>(
    config: &Config,
    listener: &Listener,
    guard: &'g Guard,
    conn: &Conn,
    sent: &Uri,
    req: Request<Body>,
) -> Result<(Request<Body>, Decided<'g>), Denied> {
    let (parts, body) = req.into_parts();
    let wait = listener.timeouts.request;
    let mut body = Some(body);
    let mut buffered = None;
    if auth::needs_body_first(&parts.headers) && body.as_ref().is_some_and(|b| !b.is_end_stream()) {
        buffered = Some(
            read_body(body.take(), wait)
                .await
                .map_err(Denied::reading)?,
        );
    }
    let body_sha = buffered.as_deref().map(sigv4::sha256_hex);
    let inbound = Inbound {
        method: &parts.method,
        path: parts.uri.path(),
        query: parts.uri.query(),
        signed_path: sent.path(),
        signed_query: sent.query(),
        headers: &parts.headers,
        authority: sent.authority().map(|a| a.as_str()),
        body_sha256: body_sha.as_deref(),
    };
    let signed = decide(config, listener, guard, conn, &inbound)?;
    if let Some(want) = &signed.body_hash {
        if buffered.is_none() {
            buffered = Some(
                read_body(body.take(), wait)
                    .await
                    .map_err(Denied::reading)?,
            );
        }
        body_matches(want, buffered.as_deref().unwrap_or_default())?;
    }
    let body = match (buffered, body) {
        (Some(b), _) => Full::new(b)
            .map_err(|never: Infallible| match never {})
            .boxed_unsync(),
        (None, Some(b)) => b,
        (None, None) => empty(),
    };
    Ok((Request::from_parts(parts, body), signed))
}

/// What auth let through: who signed (if anyone), the statement that
/// allowed it, and the payload hash the signature covers when the body
/// must be checked against it.
pub(crate) struct Decided<'g> {
    pub principal: Option<Arc<Principal>>,
    /// How the caller was known: `sigv4`, `sigv4a`, `workload`, `anonymous`.
    pub via: &'static str,
    pub allowed: auth::Allowed<'g>,
    pub body_hash: Option<String>,
}

/// The signature, then the policies: the one decision both HTTP paths take
/// (the body's hash, when signed, is the caller's to compare).
pub(crate) fn decide<'g>(
    config: &Config,
    listener: &Listener,
    guard: &'g Guard,
    conn: &Conn,
    inbound: &Inbound<'_>,
) -> Result<Decided<'g>, Denied> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let denied = |f: sigv4::Failure| Denied {
        refusal: Refusal::AuthDenied,
        code: f.code,
        detail: format!("{}: {}", f.code, f.message),
        identity: None,
    };
    let signed = auth::authenticate(&config.keys, inbound, now.as_secs() as i64).map_err(denied)?;
    // The calling workload's identity, without a signature; with one, the
    // two must agree.
    let cgroup = conn.workload();
    let workload = cgroup.as_deref().and_then(|w| config.keys.workload(w));
    let via = match (&signed.principal, &workload) {
        (None, Some(_)) => "workload",
        _ => signed.via,
    };
    let principal = match (signed.principal, workload) {
        (Some(s), Some(w)) if s.names != w.names => {
            return Err(Denied {
                refusal: Refusal::AuthDenied,
                code: "IdentityMismatch",
                detail: format!(
                    "IdentityMismatch: the request is signed as {} but comes from a workload of {}",
                    s.names[0], w.names[0]
                ),
                identity: s.names.first().cloned(),
            });
        }
        (Some(s), _) => Some(s),
        (None, w) => w,
    };
    let place = Place {
        region: &config.snapshot.region,
        source_network: &config.network,
        service: &listener.service,
        service_network: &listener.service_network,
        client: conn.client,
        port: conn.dst.0.port(),
        secure: listener.protocol == trellis_api::resource::ListenerProtocol::Https,
        now: now.as_secs(),
        workload: cgroup.as_deref(),
    };
    // A caller known but not allowed: who it was goes with the refusal.
    let allowed =
        auth::authorize(guard, principal.as_deref(), inbound, &place).map_err(|f| Denied {
            identity: principal.as_ref().and_then(|p| p.names.first().cloned()),
            ..denied(f)
        })?;
    Ok(Decided {
        principal,
        via,
        allowed,
        body_hash: signed.body_hash,
    })
}

/// A stream listener's connection (TCP, TLS passthrough) against its
/// service's auth, before any byte reaches a target. Nothing in a stream
/// is signed, so the caller is its workload or no one; the request policies
/// see is `CONNECT /` with no headers.
pub(crate) fn decide_stream<'g>(
    config: &Config,
    listener: &Listener,
    guard: &'g Guard,
    conn: &Conn,
) -> Result<Decided<'g>, Denied> {
    let headers = http::HeaderMap::new();
    let inbound = Inbound {
        method: &http::Method::CONNECT,
        path: "/",
        query: None,
        signed_path: "/",
        signed_query: None,
        headers: &headers,
        authority: None,
        body_sha256: None,
    };
    decide(config, listener, guard, conn, &inbound)
}

/// Whether `body` is what the signature's payload hash `want` says.
pub(crate) fn body_matches(want: &str, body: &[u8]) -> Result<(), Denied> {
    if sigv4::sha256_hex(body) == want {
        return Ok(());
    }
    Err(Denied {
        refusal: Refusal::AuthDenied,
        code: "XAmzContentSHA256Mismatch",
        detail: "XAmzContentSHA256Mismatch: the body does not match x-amz-content-sha256".into(),
        identity: None,
    })
}

/// Why auth refused a request: the answer, the AWS-style code (a metric
/// label) and the reason for the client and the access log.
pub(crate) struct Denied {
    pub refusal: Refusal,
    pub code: &'static str,
    pub detail: String,
    /// The caller, when it was authenticated and a policy refused it.
    pub identity: Option<String>,
}

impl Denied {
    /// The body could not be read to check its hash.
    fn reading((refusal, detail): (Refusal, String)) -> Denied {
        Denied {
            refusal,
            code: refusal.code(),
            detail,
            identity: None,
        }
    }
}

/// A request body, whole, up to [`auth::MAX_SIGNED_BODY`].
async fn read_body(body: Option<Body>, wait: Duration) -> Result<Bytes, (Refusal, String)> {
    let Some(body) = body else {
        return Ok(Bytes::new());
    };
    let limited = http_body_util::Limited::new(body, auth::MAX_SIGNED_BODY).collect();
    match tokio::time::timeout(wait, limited).await {
        Err(_) => Err((
            Refusal::RequestTimeout,
            format!("the request body did not arrive within {wait:?}"),
        )),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err((
            Refusal::BodyTooLarge,
            format!(
                "a body signed by its hash is buffered to check it, up to {} bytes",
                auth::MAX_SIGNED_BODY
            ),
        )),
        Ok(Err(e)) => Err((
            Refusal::BadRequest,
            format!("reading the request body: {e}"),
        )),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}
