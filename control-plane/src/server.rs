//! The control plane's HTTP/JSON API on hyper.
//!
//! | method and path                          | what                                        |
//! |------------------------------------------|---------------------------------------------|
//! | `POST /v1/apply`                         | batch apply (`{"documents": [...], "dryRun": bool}`) |
//! | `GET /v1/{kinds}`                        | `{"items": [...]}`                          |
//! | `GET /v1/{kinds}/{name}`                 | one object                                  |
//! | `PUT /v1/{kinds}/{name}`                 | create or replace one object                |
//! | `DELETE /v1/{kinds}/{name}`              | delete, refused while referenced            |
//! | `GET /v1/networks/{name}/snapshot`       | the network's snapshot; with `since=REV` a long-poll of up to `waitSeconds` (304 if nothing changed) |
//! | `POST /v1/identities/{name}/keys`        | issue an access key; the only answer with its secret (201) |
//! | `GET /v1/identities/{name}/keys`         | `{"items": [...]}`: key ids, status, creation time |
//! | `PATCH /v1/identities/{name}/keys/{id}`  | `{"Status": "Active" or "Inactive"}`        |
//! | `DELETE /v1/identities/{name}/keys/{id}` | delete a key                                |
//! | `GET /v1/audit?since=S&actor=A`          | the audit log (`{"items": [...]}`)          |
//! | `GET /healthz`                           | liveness (no token, like `GET /v1/ca` and `POST /v1/certificates`; everything else needs it on every address) |

use crate::state::DeleteError;
use crate::{ControlPlane, audit};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use trellis_api::client::{ApplyRequest, ApplyResponse, ChangeAction, DeleteResponse};
use trellis_api::keys::KeyStatus;
use trellis_api::{ApiError, FieldError, Kind};

/// Longest a watch may wait before answering 304.
pub const MAX_WAIT: Duration = Duration::from_secs(60);
/// A client must send its request headers within this time.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A request body must arrive within this time.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Every way a request can fail, mapped to a status in one place.
#[derive(Debug)]
pub enum HttpError {
    BadRequest(String),
    Unauthorized,
    Forbidden(String),
    NotFound(String),
    MethodNotAllowed,
    Conflict(String),
    TooLarge(usize),
    Invalid(Vec<FieldError>),
    Unavailable(String),
    Internal(String),
}

impl HttpError {
    fn parts(self) -> (StatusCode, ApiError) {
        let e = |code: &str, message: String| ApiError {
            code: code.into(),
            message,
            errors: Vec::new(),
        };
        match self {
            HttpError::BadRequest(m) => (StatusCode::BAD_REQUEST, e("bad_request", m)),
            HttpError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                e(
                    "unauthorized",
                    "missing or wrong bearer token; pass --token-file <data-dir>/api-token or TRELLIS_TOKEN".into(),
                ),
            ),
            HttpError::Forbidden(m) => (StatusCode::FORBIDDEN, e("forbidden", m)),
            HttpError::NotFound(m) => (StatusCode::NOT_FOUND, e("not_found", m)),
            HttpError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                e("method_not_allowed", "method not allowed on this path".into()),
            ),
            HttpError::Conflict(m) => (StatusCode::CONFLICT, e("conflict", m)),
            HttpError::TooLarge(limit) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                e("too_large", format!("request body is larger than {limit} bytes")),
            ),
            HttpError::Invalid(errors) => {
                let n = errors.len();
                let message = match errors.first() {
                    Some(first) if n == 1 => format!("invalid input: {first}"),
                    _ => format!("invalid input: {n} problems; nothing was applied"),
                };
                (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    ApiError {
                        code: "invalid".into(),
                        message,
                        errors,
                    },
                )
            }
            HttpError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, e("unavailable", m)),
            HttpError::Internal(m) => (StatusCode::INTERNAL_SERVER_ERROR, e("internal", m)),
        }
    }

    fn into_response(self) -> Response<Full<Bytes>> {
        let (status, body) = self.parts();
        json_response(status, &body)
    }
}

impl From<DeleteError> for HttpError {
    fn from(e: DeleteError) -> Self {
        match e {
            DeleteError::NotFound(..) => HttpError::NotFound(e.to_string()),
            DeleteError::InUse { .. } => HttpError::Conflict(e.to_string()),
        }
    }
}

fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response<Full<Bytes>> {
    raw_json(
        status,
        Bytes::from(serde_json::to_vec(body).unwrap_or_default()),
    )
}

fn raw_json(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}

/// Serves the API on `listener` until `shutdown` resolves, then lets
/// in-flight requests finish (up to 10 s).
pub async fn serve(
    cp: Arc<ControlPlane>,
    listener: TcpListener,
    token: String,
    max_connections: usize,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(max_connections));
    let token: Arc<str> = token.into();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(%peer, max_connections, "connection limit reached, closing new connection");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let cp = cp.clone();
        let token = token.clone();
        let svc = service_fn(move |req| {
            let cp = cp.clone();
            let token = token.clone();
            async move { Ok::<_, std::convert::Infallible>(handle(cp, token, peer, req).await) }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .serve_connection(TokioIo::new(stream), svc);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    if tokio::time::timeout(Duration::from_secs(10), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after 10 s; closing them");
    }
}

async fn handle(
    cp: Arc<ControlPlane>,
    token: Arc<str>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    // A CSR carries its own proof (a join token or the current
    // certificate); the CA certificate is public; liveness says nothing.
    let open = matches!(path.as_str(), "/v1/certificates" | "/v1/ca" | "/healthz");
    let mut summary = Summary {
        actor: "admin",
        ..Summary::default()
    };
    // Everything else needs the token on every address: any local user
    // can reach loopback.
    let resp = if !open && !authorized(&req, &token) {
        tracing::info!(%peer, %method, %path, "rejected request without a valid token");
        summary.actor = "anonymous";
        HttpError::Unauthorized.into_response()
    } else {
        route(&cp, req, &mut summary)
            .await
            .unwrap_or_else(HttpError::into_response)
    };
    tracing::debug!(%peer, %method, %path, status = resp.status().as_u16(), "request");
    if !matches!(method, Method::GET | Method::HEAD) {
        let record = audit::Record {
            time: crate::now(),
            actor: summary.actor.to_string(),
            peer: peer.to_string(),
            method: method.to_string(),
            path,
            status: resp.status().as_u16(),
            revision: summary.revision,
            changes: summary.changes,
        };
        if let Err(e) = cp.audit.append(&record) {
            // The change is made; the operator must learn the trail is not.
            tracing::error!(error = %e, "could not write the audit record");
        }
    }
    resp
}

/// What a mutating call did, for its audit record: names and ids only.
#[derive(Default)]
struct Summary {
    actor: &'static str,
    revision: Option<u64>,
    changes: Vec<String>,
}

fn authorized(req: &Request<Incoming>, token: &str) -> bool {
    let header = req.headers().get(header::AUTHORIZATION);
    trellis_api::token::is_bearer(header.and_then(|v| v.to_str().ok()), token)
}

async fn route(
    cp: &Arc<ControlPlane>,
    req: Request<Incoming>,
    summary: &mut Summary,
) -> Result<Response<Full<Bytes>>, HttpError> {
    let path = req.uri().path().to_string();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let method = req.method().clone();
    match (method, segments.as_slice()) {
        (Method::GET, ["healthz"]) => Ok(json_response(
            StatusCode::OK,
            &serde_json::json!({"status": "ok"}),
        )),
        (Method::POST, ["v1", "apply"]) => {
            let body: ApplyRequest = read_json(cp, req).await?;
            let dry_run = body.dry_run;
            let applied = cp.apply(body.documents, dry_run).await?;
            if !dry_run {
                summary.applied(&applied);
            }
            Ok(json_response(StatusCode::OK, &applied))
        }
        (Method::GET, ["v1", "networks", name, "snapshot"]) => {
            let query = Query::parse(req.uri().query())?;
            let wait = Duration::from_secs(query.wait_seconds.unwrap_or(30)).min(MAX_WAIT);
            match cp.watch_snapshot(name, query.since, wait).await? {
                Some(body) => Ok(raw_json(StatusCode::OK, body)),
                None => Ok(raw_json(StatusCode::NOT_MODIFIED, Bytes::new())),
            }
        }
        (Method::POST, ["v1", "networks", name, "join-tokens"]) => {
            let body: JoinTokenRequest = read_json(cp, req).await?;
            let ttl = Duration::from_secs(body.ttl_seconds.unwrap_or(3600).clamp(1, 7 * 86_400));
            let token = cp.create_join_token(name, ttl)?;
            summary
                .changes
                .push(format!("join token for network/{name} created"));
            Ok(json_response(StatusCode::CREATED, &token))
        }
        (Method::POST, ["v1", "certificates"]) => {
            let body: trellis_api::pki::CertificateRequest = read_json(cp, req).await?;
            summary.actor = match body.join_token {
                Some(_) => "join-token",
                None => "node-certificate",
            };
            let issued = cp.issue_certificate(&body)?;
            summary.changes.push(format!(
                "certificate for a node of network/{} issued",
                issued.network
            ));
            Ok(json_response(StatusCode::CREATED, &issued))
        }
        (Method::GET, ["v1", "ca"]) => {
            let mut r = Response::new(Full::new(Bytes::from(cp.ca_pem().to_string())));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/x-pem-file"),
            );
            Ok(r)
        }
        (Method::POST, ["v1", "identities", name, "keys"]) => {
            let created = cp.create_key(name).await?;
            summary.changes.push(format!(
                "key {} of identity/{name} created",
                created.access_key_id
            ));
            Ok(json_response(StatusCode::CREATED, &created))
        }
        (Method::GET, ["v1", "identities", name, "keys"]) => Ok(json_response(
            StatusCode::OK,
            &serde_json::json!({ "items": cp.list_keys(name)? }),
        )),
        (Method::PATCH, ["v1", "identities", name, "keys", id]) => {
            let change: KeyStatusChange = read_json(cp, req).await?;
            let info = cp.set_key_status(name, id, change.status).await?;
            summary.changes.push(format!(
                "key {id} of identity/{name} set {:?}",
                change.status
            ));
            Ok(json_response(StatusCode::OK, &info))
        }
        (Method::DELETE, ["v1", "identities", name, "keys", id]) => {
            let revision = cp.delete_key(name, id).await?;
            summary.revision = Some(revision);
            summary
                .changes
                .push(format!("key {id} of identity/{name} deleted"));
            Ok(json_response(StatusCode::OK, &DeleteResponse { revision }))
        }
        (Method::GET, ["v1", "audit"]) => {
            let query = AuditQuery::parse(req.uri().query())?;
            let items = cp
                .audit
                .read(query.since, query.actor.as_deref())
                .map_err(|e| HttpError::Unavailable(e.to_string()))?;
            Ok(json_response(
                StatusCode::OK,
                &serde_json::json!({ "items": items }),
            ))
        }
        (Method::GET, ["v1", kind]) => {
            let kind = parse_kind(kind)?;
            Ok(raw_json(StatusCode::OK, cp.list(kind)))
        }
        (Method::GET, ["v1", kind, name]) => {
            let kind = parse_kind(kind)?;
            let obj = cp
                .get(kind, name)
                .ok_or_else(|| HttpError::NotFound(format!("{kind} \"{name}\" does not exist")))?;
            Ok(json_response(StatusCode::OK, &obj))
        }
        (Method::PUT, ["v1", kind, name]) => {
            let kind = parse_kind(kind)?;
            let doc: serde_json::Value = read_json(cp, req).await?;
            if doc.get("kind").and_then(|k| k.as_str()) != Some(kind.as_str())
                || doc.pointer("/metadata/name").and_then(|n| n.as_str()) != Some(*name)
            {
                return Err(HttpError::BadRequest(format!(
                    "the body must be a {kind} named \"{name}\", as the path says"
                )));
            }
            let applied = cp.apply(vec![doc], false).await?;
            summary.applied(&applied);
            Ok(json_response(StatusCode::OK, &applied))
        }
        (Method::DELETE, ["v1", kind, name]) => {
            let kind = parse_kind(kind)?;
            let revision = cp.delete(kind, name).await?;
            summary.revision = Some(revision);
            summary.changes.push(format!("{kind}/{name} deleted"));
            Ok(json_response(StatusCode::OK, &DeleteResponse { revision }))
        }
        (_, segs) if known_path(segs) => Err(HttpError::MethodNotAllowed),
        _ => Err(HttpError::NotFound(format!("no such path {path}"))),
    }
}

fn known_path(segments: &[&str]) -> bool {
    match segments {
        ["healthz"] | ["v1", "apply"] | ["v1", "certificates"] | ["v1", "ca"] => true,
        ["v1", "audit"] => true,
        ["v1", kind] | ["v1", kind, _] => Kind::parse(kind).is_some(),
        ["v1", "networks", _, "snapshot"] | ["v1", "networks", _, "join-tokens"] => true,
        ["v1", "identities", _, "keys"] | ["v1", "identities", _, "keys", _] => true,
        _ => false,
    }
}

fn parse_kind(s: &str) -> Result<Kind, HttpError> {
    Kind::parse(s).ok_or_else(|| {
        HttpError::NotFound(format!(
            "unknown kind \"{s}\"; use networks, servicenetworks, services, targetgroups or identities"
        ))
    })
}

async fn read_json<T: serde::de::DeserializeOwned>(
    cp: &ControlPlane,
    req: Request<Incoming>,
) -> Result<T, HttpError> {
    let limit = cp.config.max_body_bytes;
    let collect = Limited::new(req.into_body(), limit).collect();
    let bytes = match tokio::time::timeout(BODY_READ_TIMEOUT, collect).await {
        Err(_) => {
            return Err(HttpError::BadRequest(
                "request body did not arrive in time".into(),
            ));
        }
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(HttpError::TooLarge(limit));
        }
        Ok(Err(e)) => return Err(HttpError::BadRequest(format!("reading the body: {e}"))),
        Ok(Ok(c)) => c.to_bytes(),
    };
    serde_json::from_slice(&bytes)
        .map_err(|e| HttpError::BadRequest(format!("body is not valid JSON for this call: {e}")))
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct KeyStatusChange {
    status: KeyStatus,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct JoinTokenRequest {
    #[serde(default)]
    ttl_seconds: Option<u64>,
}

#[derive(Default)]
struct Query {
    since: Option<u64>,
    wait_seconds: Option<u64>,
}

/// A query string's `key=value` pairs.
fn query_pairs(q: Option<&str>) -> impl Iterator<Item = (&str, &str)> {
    q.unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
}

fn unknown_parameter(k: &str) -> HttpError {
    HttpError::BadRequest(format!("unknown query parameter {k}"))
}

impl Query {
    fn parse(q: Option<&str>) -> Result<Query, HttpError> {
        let mut out = Query::default();
        for (k, v) in query_pairs(q) {
            let n = v.parse::<u64>().map_err(|_| {
                HttpError::BadRequest(format!("query parameter {k}: \"{v}\" is not a number"))
            })?;
            match k {
                "since" => out.since = Some(n),
                "waitSeconds" => out.wait_seconds = Some(n),
                _ => return Err(unknown_parameter(k)),
            }
        }
        Ok(out)
    }
}

impl Summary {
    fn applied(&mut self, applied: &ApplyResponse) {
        self.changes.extend(
            applied
                .changes
                .iter()
                .filter(|c| c.action != ChangeAction::Unchanged)
                .map(|c| format!("{}/{} {:?}", c.kind, c.name, c.action).to_ascii_lowercase()),
        );
        if !self.changes.is_empty() {
            self.revision = Some(applied.revision);
        }
    }
}

/// `GET /v1/audit?since=UNIX_SECONDS&actor=NAME`.
#[derive(Default)]
struct AuditQuery {
    since: u64,
    actor: Option<String>,
}

impl AuditQuery {
    fn parse(q: Option<&str>) -> Result<AuditQuery, HttpError> {
        let mut out = AuditQuery::default();
        for (k, v) in query_pairs(q) {
            match k {
                "since" => {
                    out.since = v.parse().map_err(|_| {
                        HttpError::BadRequest(format!("since: \"{v}\" is not Unix seconds"))
                    })?;
                }
                "actor" => out.actor = Some(v.to_string()),
                _ => return Err(unknown_parameter(k)),
            }
        }
        Ok(out)
    }
}
