//! The control plane's HTTP/JSON API on hyper, over TLS only.
//!
//! Every request is read as a [`Route`], its caller as a [`Caller`], and
//! [`Caller::may`] decides before anything runs: operators hold the API
//! token; nodes and DNS servers show their certificate (mutual TLS), which
//! lets them read their own network's snapshot and renew, nothing else.
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
//! | `POST /v1/networks/{name}/join-tokens`   | a join token (`{"ttlSeconds": N, "role": "node" or "dns"}`) |
//! | `POST /v1/certificates`                  | a certificate for a CSR with a join token or the current certificate |
//! | `GET /v1/ca`                             | the CA certificate (PEM)                    |
//! | `GET /healthz`                           | liveness |

use crate::state::DeleteError;
use crate::{ControlPlane, SnapshotView, audit};
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
use tokio_rustls::TlsAcceptor;
use trellis_api::client::{ApplyRequest, ApplyResponse, ChangeAction, DeleteResponse};
use trellis_api::keys::KeyStatus;
use trellis_api::pki::{Role, Subject};
use trellis_api::{ApiError, FieldError, Kind};

/// Longest a watch may wait before answering 304.
pub const MAX_WAIT: Duration = Duration::from_secs(60);
/// A client must finish its TLS handshake, and send its request headers,
/// within this time.
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

/// Serves the API over TLS (`tls`) on `listener` until `shutdown`
/// resolves, then lets in-flight requests finish (up to 10 s).
pub async fn serve(
    cp: Arc<ControlPlane>,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    token: String,
    max_connections: usize,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(max_connections));
    let token: Arc<str> = token.into();
    let acceptor = TlsAcceptor::from(tls);
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
        let (cp, token, acceptor) = (cp.clone(), token.clone(), acceptor.clone());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let stream =
                match tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
            // The verifier checked the chain against the CA: what it names is so.
            let member = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| trellis_api::pki::subject_of(c));
            let svc = service_fn(move |req| {
                let (cp, token, member) = (cp.clone(), token.clone(), member.clone());
                async move {
                    Ok::<_, std::convert::Infallible>(handle(cp, token, member, peer, req).await)
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc);
            if let Err(e) = watcher.watch(conn).await {
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

/// Who calls, as the API sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// The bootstrap API token (`<data-dir>/api-token`).
    Admin,
    /// A node or DNS server, by its certificate.
    Member(Subject),
    /// No valid credential.
    Anonymous,
}

impl Caller {
    /// The actor of its audit records.
    fn actor(&self) -> String {
        match self {
            Caller::Admin => "admin".into(),
            Caller::Member(s) => format!("{}/{}", s.role.as_str(), s.network),
            Caller::Anonymous => "anonymous".into(),
        }
    }

    /// Whether this caller may take `route`, and if not, why.
    pub fn may(&self, route: &Route) -> Result<(), HttpError> {
        if route.is_open() {
            return Ok(());
        }
        match self {
            Caller::Admin => Ok(()),
            Caller::Anonymous => Err(HttpError::Unauthorized),
            Caller::Member(s) => match route {
                Route::Snapshot { network } if *network == s.network => Ok(()),
                _ => Err(HttpError::Forbidden(format!(
                    "a {} certificate of network {} may read only that network's snapshot and renew itself",
                    s.role.as_str(),
                    s.network
                ))),
            },
        }
    }
}

async fn handle(
    cp: Arc<ControlPlane>,
    token: Arc<str>,
    member: Option<Subject>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    // A bearer token speaks for whoever sends it, on any connection.
    let caller = match req.headers().get(header::AUTHORIZATION) {
        Some(h) if trellis_api::token::is_bearer(h.to_str().ok(), &token) => Caller::Admin,
        Some(_) => Caller::Anonymous,
        None => member.map_or(Caller::Anonymous, Caller::Member),
    };
    let mut summary = Summary {
        actor: caller.actor(),
        ..Summary::default()
    };
    let resp = match Route::parse(&method, &path).and_then(|r| caller.may(&r).map(|()| r)) {
        Ok(route) => run(&cp, &caller, route, req, &mut summary)
            .await
            .unwrap_or_else(HttpError::into_response),
        Err(e) => {
            tracing::info!(%peer, %method, %path, actor = summary.actor, "refused");
            e.into_response()
        }
    };
    tracing::debug!(%peer, %method, %path, status = resp.status().as_u16(), "request");
    if !matches!(method, Method::GET | Method::HEAD) {
        let record = audit::Record {
            time: crate::now(),
            actor: summary.actor,
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
    actor: String,
    revision: Option<u64>,
    changes: Vec<String>,
}

/// Every call the API knows, read from its method and path before anyone
/// is let in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    Healthz,
    Ca,
    Certificates,
    Apply,
    Audit,
    Snapshot { network: String },
    JoinToken { network: String },
    CreateKey { identity: String },
    ListKeys { identity: String },
    SetKeyStatus { identity: String, id: String },
    DeleteKey { identity: String, id: String },
    List { kind: Kind },
    Get { kind: Kind, name: String },
    Put { kind: Kind, name: String },
    Delete { kind: Kind, name: String },
}

impl Route {
    pub fn parse(method: &Method, path: &str) -> Result<Route, HttpError> {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let s = |x: &&str| x.to_string();
        let route = match (method, segments.as_slice()) {
            (&Method::GET, ["healthz"]) => Route::Healthz,
            (&Method::GET, ["v1", "ca"]) => Route::Ca,
            (&Method::POST, ["v1", "certificates"]) => Route::Certificates,
            (&Method::POST, ["v1", "apply"]) => Route::Apply,
            (&Method::GET, ["v1", "audit"]) => Route::Audit,
            (&Method::GET, ["v1", "networks", n, "snapshot"]) => Route::Snapshot { network: s(n) },
            (&Method::POST, ["v1", "networks", n, "join-tokens"]) => {
                Route::JoinToken { network: s(n) }
            }
            (&Method::POST, ["v1", "identities", i, "keys"]) => Route::CreateKey { identity: s(i) },
            (&Method::GET, ["v1", "identities", i, "keys"]) => Route::ListKeys { identity: s(i) },
            (&Method::PATCH, ["v1", "identities", i, "keys", id]) => Route::SetKeyStatus {
                identity: s(i),
                id: s(id),
            },
            (&Method::DELETE, ["v1", "identities", i, "keys", id]) => Route::DeleteKey {
                identity: s(i),
                id: s(id),
            },
            (&Method::GET, ["v1", k]) => Route::List {
                kind: parse_kind(k)?,
            },
            (&Method::GET, ["v1", k, n]) => Route::Get {
                kind: parse_kind(k)?,
                name: s(n),
            },
            (&Method::PUT, ["v1", k, n]) => Route::Put {
                kind: parse_kind(k)?,
                name: s(n),
            },
            (&Method::DELETE, ["v1", k, n]) => Route::Delete {
                kind: parse_kind(k)?,
                name: s(n),
            },
            (_, segs) if known_path(segs) => return Err(HttpError::MethodNotAllowed),
            _ => return Err(HttpError::NotFound(format!("no such path {path}"))),
        };
        Ok(route)
    }

    /// Needs no credential: a CSR carries its own proof (a join token or
    /// the current certificate); the CA certificate is public; liveness
    /// says nothing.
    fn is_open(&self) -> bool {
        matches!(self, Route::Healthz | Route::Ca | Route::Certificates)
    }
}

async fn run(
    cp: &Arc<ControlPlane>,
    caller: &Caller,
    route: Route,
    req: Request<Incoming>,
    summary: &mut Summary,
) -> Result<Response<Full<Bytes>>, HttpError> {
    match route {
        Route::Healthz => Ok(json_response(
            StatusCode::OK,
            &serde_json::json!({"status": "ok"}),
        )),
        Route::Apply => {
            let body: ApplyRequest = read_json(cp, req).await?;
            let dry_run = body.dry_run;
            let applied = cp.apply(body.documents, dry_run).await?;
            if !dry_run {
                summary.applied(&applied);
            }
            Ok(json_response(StatusCode::OK, &applied))
        }
        Route::Snapshot { network } => {
            let query = Query::parse(req.uri().query())?;
            let wait = Duration::from_secs(query.wait_seconds.unwrap_or(30)).min(MAX_WAIT);
            // A DNS server needs names, never a key.
            let view = match caller {
                Caller::Member(s) if s.role == Role::Dns => SnapshotView::Public,
                _ => SnapshotView::Full,
            };
            match cp.watch_snapshot(&network, query.since, wait, view).await? {
                Some(body) => Ok(raw_json(StatusCode::OK, body)),
                None => Ok(raw_json(StatusCode::NOT_MODIFIED, Bytes::new())),
            }
        }
        Route::JoinToken { network } => {
            let body: JoinTokenRequest = read_json(cp, req).await?;
            let ttl = Duration::from_secs(body.ttl_seconds.unwrap_or(3600).clamp(1, 7 * 86_400));
            let role = body.role.unwrap_or_default();
            let token = cp.create_join_token(&network, role, ttl)?;
            summary.changes.push(format!(
                "{} join token for network/{network} created",
                role.as_str()
            ));
            Ok(json_response(StatusCode::CREATED, &token))
        }
        Route::Certificates => {
            let body: trellis_api::pki::CertificateRequest = read_json(cp, req).await?;
            if *caller == Caller::Anonymous {
                summary.actor = match body.join_token {
                    Some(_) => "join-token",
                    None => "certificate",
                }
                .into();
            }
            let issued = cp.issue_certificate(&body)?;
            summary.changes.push(format!(
                "certificate for a {} of network/{} issued",
                issued.role.as_str(),
                issued.network
            ));
            Ok(json_response(StatusCode::CREATED, &issued))
        }
        Route::Ca => {
            let mut r = Response::new(Full::new(Bytes::from(cp.ca_pem().to_string())));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/x-pem-file"),
            );
            Ok(r)
        }
        Route::CreateKey { identity: name } => {
            let created = cp.create_key(&name).await?;
            summary.changes.push(format!(
                "key {} of identity/{name} created",
                created.access_key_id
            ));
            Ok(json_response(StatusCode::CREATED, &created))
        }
        Route::ListKeys { identity: name } => Ok(json_response(
            StatusCode::OK,
            &serde_json::json!({ "items": cp.list_keys(&name)? }),
        )),
        Route::SetKeyStatus { identity: name, id } => {
            let change: KeyStatusChange = read_json(cp, req).await?;
            let info = cp.set_key_status(&name, &id, change.status).await?;
            summary.changes.push(format!(
                "key {id} of identity/{name} set {:?}",
                change.status
            ));
            Ok(json_response(StatusCode::OK, &info))
        }
        Route::DeleteKey { identity: name, id } => {
            let revision = cp.delete_key(&name, &id).await?;
            summary.revision = Some(revision);
            summary
                .changes
                .push(format!("key {id} of identity/{name} deleted"));
            Ok(json_response(StatusCode::OK, &DeleteResponse { revision }))
        }
        Route::Audit => {
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
        Route::List { kind } => Ok(raw_json(StatusCode::OK, cp.list(kind))),
        Route::Get { kind, name } => {
            let obj = cp
                .get(kind, &name)
                .ok_or_else(|| HttpError::NotFound(format!("{kind} \"{name}\" does not exist")))?;
            Ok(json_response(StatusCode::OK, &obj))
        }
        Route::Put { kind, name } => {
            let doc: serde_json::Value = read_json(cp, req).await?;
            if doc.get("kind").and_then(|k| k.as_str()) != Some(kind.as_str())
                || doc.pointer("/metadata/name").and_then(|n| n.as_str()) != Some(name.as_str())
            {
                return Err(HttpError::BadRequest(format!(
                    "the body must be a {kind} named \"{name}\", as the path says"
                )));
            }
            let applied = cp.apply(vec![doc], false).await?;
            summary.applied(&applied);
            Ok(json_response(StatusCode::OK, &applied))
        }
        Route::Delete { kind, name } => {
            let revision = cp.delete(kind, &name).await?;
            summary.revision = Some(revision);
            summary.changes.push(format!("{kind}/{name} deleted"));
            Ok(json_response(StatusCode::OK, &DeleteResponse { revision }))
        }
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
    #[serde(default)]
    role: Option<Role>,
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
