//! The control plane's HTTP/JSON API on hyper, over TLS only.
//!
//! Every request is read as a [`Route`], its caller as a [`Caller`], and
//! [`Caller::may`] decides before anything runs: operators hold the
//! bootstrap token or a named token with a role (editors' changes are then
//! checked object by object against their scopes); nodes and DNS servers
//! show their certificate (mutual TLS), which lets them read their own
//! network's snapshot and renew, nothing else.
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
//! | `POST /v1/tokens`                        | a named API token with a role; the only answer with its text (201) |
//! | `GET /v1/tokens`                         | `{"items": [...]}`: names, roles, scopes, expiry |
//! | `DELETE /v1/tokens/{name}`               | revoke a token, at once                     |
//! | `POST /v1/networks/{name}/join-tokens`   | a join token (`{"ttlSeconds": N, "role": "node" or "dns"}`) |
//! | `POST /v1/certificates`                  | a certificate for a CSR with a join token or the current certificate |
//! | `GET /v1/ca`                             | the CA certificate (PEM)                    |
//! | `POST /v1/ca/certificates`               | a server certificate for an HTTPS target (`{"csr": PEM, "ttlSeconds": N}`; admin) |
//! | `GET /v1/traffic`                        | the nodes' rates, splits, health and recent refusals (`follow=true`: every second, as server-sent events) |
//! | `GET /ui/`                               | the web console (its files only: it reads the API with the token its user gives) |
//! | `GET /healthz`                           | liveness |

use crate::operators::EditScope;
use crate::{ControlPlane, Encoded, Error, SnapshotView, audit};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
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
use trellis_api::client::{
    ApiToken, ApplyRequest, ApplyResponse, ChangeAction, DeleteResponse, NewApiToken, TokenRole,
};
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
    TooLarge(String),
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
                    "missing, wrong, expired or revoked bearer token; pass --token-file <data-dir>/api-token or TRELLIS_TOKEN".into(),
                ),
            ),
            HttpError::Forbidden(m) => (StatusCode::FORBIDDEN, e("forbidden", m)),
            HttpError::NotFound(m) => (StatusCode::NOT_FOUND, e("not_found", m)),
            HttpError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                e("method_not_allowed", "method not allowed on this path".into()),
            ),
            HttpError::Conflict(m) => (StatusCode::CONFLICT, e("conflict", m)),
            HttpError::TooLarge(m) => (StatusCode::PAYLOAD_TOO_LARGE, e("too_large", m)),
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

/// The one place domain errors become statuses.
impl From<Error> for HttpError {
    fn from(e: Error) -> Self {
        match e {
            Error::NotFound(m) => HttpError::NotFound(m),
            Error::Conflict(m) => HttpError::Conflict(m),
            Error::Invalid(errors) => HttpError::Invalid(errors),
            Error::Denied(m) => HttpError::Forbidden(m),
            Error::BadRequest(m) => HttpError::BadRequest(m),
            Error::Unavailable(m) => HttpError::Unavailable(m),
            Error::TooLarge(m) => HttpError::TooLarge(m),
            Error::Internal(m) => HttpError::Internal(m),
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

/// Whether the request's `Accept-Encoding` takes gzip.
fn accepts_gzip(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            parts.next().is_some_and(|c| c.eq_ignore_ascii_case("gzip"))
                && parts.all(|p| p.replace(' ', "") != "q=0")
        })
}

/// Bodies shorter than this are sent as they are: a one-service delta
/// shrinks by a few hundred bytes, within the same TCP segment, while
/// every node would pay for inflating it.
const GZIP_MIN_BYTES: usize = 1024;

/// A watch's answer: a whole snapshot (`application/json`) or a delta,
/// gzip-encoded when the watcher takes it and it is worth it.
async fn snapshot_response(answer: &Encoded, gzip: bool) -> Response<Full<Bytes>> {
    let gzip = gzip && answer.plain.len() >= GZIP_MIN_BYTES;
    let body = if gzip {
        answer.gzip().await
    } else {
        answer.plain.clone()
    };
    let mut resp = raw_json(StatusCode::OK, body);
    if answer.delta {
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(trellis_api::delta::CONTENT_TYPE),
        );
    }
    if gzip {
        resp.headers_mut().insert(
            header::CONTENT_ENCODING,
            header::HeaderValue::from_static("gzip"),
        );
    }
    resp
}

/// After the last accept, how long connections have to send a request
/// before idle ones are closed.
const DRAIN_GRACE: Duration = Duration::from_millis(500);

/// How many connections the API holds, by who holds them. Nodes and DNS
/// servers (by their certificates) keep a watch open each; operators' calls
/// come and go: each has its own budget, so a fleet of watchers never
/// refuses `trellis apply`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budgets {
    /// Operators' and anonymous (joining) connections.
    pub operators: usize,
    /// Nodes' and DNS servers' connections.
    pub members: usize,
    /// Connections still in their TLS handshake (not yet known as either).
    pub handshakes: usize,
}

impl Budgets {
    /// Descriptors kept for the store, logs, the handover socket and the
    /// like.
    const RESERVE: u64 = 256;

    /// The budgets that fit `open_files` descriptors: `operators` and the
    /// handshakes as given, members what is left.
    pub fn fitting(open_files: u64, operators: usize) -> Budgets {
        let handshakes = 1024;
        let taken = Budgets::RESERVE + operators as u64 + handshakes as u64;
        Budgets {
            operators,
            members: usize::try_from(open_files.saturating_sub(taken))
                .unwrap_or(usize::MAX)
                .max(64),
            handshakes,
        }
    }
}

/// Past their budget, connections are answered this and closed; clients
/// come back after a jittered backoff of at least `Retry-After`.
fn over_budget(who: &str, budget: usize) -> Response<Full<Bytes>> {
    let mut resp = HttpError::Unavailable(format!(
        "the control plane holds its most {who} connections ({budget}); retry later"
    ))
    .into_response();
    resp.headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    resp.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    resp
}

/// Serves the API over TLS (`tls`) on `listener` until `shutdown`
/// resolves, then lets in-flight requests finish (up to 10 s). When it
/// returns, no connection task holds `cp` any more.
pub async fn serve(
    cp: Arc<ControlPlane>,
    listener: Arc<TcpListener>,
    tls: Arc<rustls::ServerConfig>,
    token: String,
    budgets: Budgets,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let handshakes = Arc::new(Semaphore::new(budgets.handshakes));
    let operators = Arc::new(Semaphore::new(budgets.operators));
    let members = Arc::new(Semaphore::new(budgets.members));
    let token: Arc<str> = token.into();
    let acceptor = TlsAcceptor::from(tls);
    tokio::pin!(shutdown);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
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
        let Ok(handshake) = handshakes.clone().try_acquire_owned() else {
            tracing::warn!(%peer, budget = budgets.handshakes, "too many TLS handshakes in flight, closing new connection");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (cp, token, acceptor) = (cp.clone(), token.clone(), acceptor.clone());
        let (operators, members) = (operators.clone(), members.clone());
        let watcher = graceful.watcher();
        connections.spawn(async move {
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
            drop(handshake);
            // The verifier checked the chain against the CA: what it names is so.
            let member = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| trellis_api::pki::subject_of(c));
            let (who, budget, pool) = match member {
                Some(_) => ("member", budgets.members, members),
                None => ("operator", budgets.operators, operators),
            };
            let mut http = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .clone();
            let Ok(permit) = pool.try_acquire_owned() else {
                tracing::warn!(%peer, who, budget, "connection budget reached, answering 503");
                let svc = service_fn(move |_req| async move {
                    Ok::<_, std::convert::Infallible>(over_budget(who, budget).map(BodyExt::boxed))
                });
                let conn = http
                    .keep_alive(false)
                    .serve_connection(TokioIo::new(stream), svc);
                let _ = tokio::time::timeout(HEADER_READ_TIMEOUT, conn).await;
                return;
            };
            let svc = service_fn(move |req| {
                let (cp, token, member) = (cp.clone(), token.clone(), member.clone());
                async move {
                    Ok::<_, std::convert::Infallible>(handle(cp, token, member, peer, req).await)
                }
            });
            let conn = http.serve_connection(TokioIo::new(stream), svc);
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    // A connection accepted just now has not sent its request yet, and a
    // graceful shutdown would close it as idle: give such requests a moment
    // to arrive (they are answered with `Connection: close`).
    tokio::time::sleep(DRAIN_GRACE).await;
    if tokio::time::timeout(Duration::from_secs(10), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after 10 s; closing them");
    }
    connections.shutdown().await;
}

/// Who calls, as the API sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// The bootstrap API token (`<data-dir>/api-token`).
    Admin,
    /// A named token, with its role and scopes.
    Operator(Arc<ApiToken>),
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
            Caller::Operator(t) => format!("token/{}", t.name),
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
            Caller::Operator(t) => operator_may(t, route),
            Caller::Anonymous => Err(HttpError::Unauthorized),
            Caller::Member(s) => match route {
                Route::Snapshot { network } if *network == s.network => Ok(()),
                Route::PushFlows { network } if *network == s.network && s.role == Role::Node => {
                    Ok(())
                }
                _ => Err(HttpError::Forbidden(format!(
                    "a {} certificate of network {} may read only that network's snapshot, send its flows and renew itself",
                    s.role.as_str(),
                    s.network
                ))),
            },
        }
    }
}

/// A named token's rights: every role reads (secrets hidden); an editor
/// changes services and target groups (each object then checked against
/// its scopes); a key manager handles its identities' keys; an admin does
/// everything.
fn operator_may(t: &ApiToken, route: &Route) -> Result<(), HttpError> {
    let reads = matches!(
        route,
        Route::List { .. }
            | Route::Get { .. }
            | Route::Audit
            | Route::ListKeys { .. }
            | Route::Snapshot { .. }
            | Route::Flows
            | Route::Traffic
    );
    let edits = |kind: &Kind| matches!(kind, Kind::Service | Kind::TargetGroup);
    let allowed = reads
        || match t.role {
            TokenRole::Admin => true,
            TokenRole::Viewer => false,
            TokenRole::Editor => match route {
                Route::Apply => true,
                Route::Put { kind, .. } | Route::Delete { kind, .. } => edits(kind),
                _ => false,
            },
            TokenRole::KeyManager => match route {
                Route::CreateKey { identity }
                | Route::SetKeyStatus { identity, .. }
                | Route::DeleteKey { identity, .. } => {
                    t.scopes.contains(&format!("identity/{identity}"))
                }
                _ => false,
            },
        };
    if allowed {
        return Ok(());
    }
    Err(HttpError::Forbidden(format!(
        "token {} ({}{}) may not {}",
        t.name,
        t.role.as_str(),
        if t.scopes.is_empty() {
            String::new()
        } else {
            format!(" of {}", t.scopes.join(", "))
        },
        route.describe()
    )))
}

/// What the API answers with: whole bodies, or the console's stream.
pub type Body = BoxBody<Bytes, std::convert::Infallible>;

async fn handle(
    cp: Arc<ControlPlane>,
    token: Arc<str>,
    member: Option<Subject>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    // A bearer token speaks for whoever sends it, on any connection.
    let caller = match req.headers().get(header::AUTHORIZATION) {
        Some(h) if trellis_api::token::is_bearer(h.to_str().ok(), &token) => Caller::Admin,
        Some(h) => h
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .and_then(|v| cp.api_tokens().authenticate(v, crate::now()))
            .map_or(Caller::Anonymous, Caller::Operator),
        None => member.map_or(Caller::Anonymous, Caller::Member),
    };
    let mut summary = Summary {
        actor: caller.actor(),
        ..Summary::default()
    };
    let resp = match Route::parse(&method, &path).and_then(|r| caller.may(&r).map(|()| r)) {
        Ok(Route::Traffic) if crate::console::follows(req.uri().query()) => {
            crate::console::follow(cp.clone())
        }
        Ok(route) => run(&cp, &caller, route, req, &mut summary)
            .await
            .unwrap_or_else(HttpError::into_response)
            .map(BodyExt::boxed),
        Err(e) => {
            tracing::info!(%peer, %method, %path, actor = summary.actor, "refused");
            e.into_response().map(BodyExt::boxed)
        }
    };
    tracing::debug!(%peer, %method, %path, status = resp.status().as_u16(), "request");
    // Nodes send flows every moment: a record each would drown the log.
    let pushed_flows = method == Method::POST && path.ends_with("/flows");
    if !matches!(method, Method::GET | Method::HEAD) && !pushed_flows {
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
        if let Err(e) = cp.audit.append(&record).await {
            // The change is made; the operator must learn the trail is not.
            tracing::error!(error = %e, "could not write the audit record");
        }
    }
    let mut resp = resp;
    if let Some(cut) = cp.cut_off() {
        // Reads still answer, from the last state this replica has: say
        // how old it may be.
        let stale = format!(
            "cut off from the store for {}s; as of revision {}",
            cut.as_secs(),
            cp.current().revision
        );
        if let Ok(v) = header::HeaderValue::from_str(&stale) {
            resp.headers_mut()
                .insert(trellis_api::client::STALE_HEADER, v);
        }
    }
    if cp.draining() {
        // Handing over: the client's next request goes on a new
        // connection, which the next process accepts.
        resp.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
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
    Snapshot {
        network: String,
    },
    /// A node's batch of flow records.
    PushFlows {
        network: String,
    },
    /// Flow records, for `trellis observe`.
    Flows,
    /// The console's live numbers.
    Traffic,
    /// One of the console's files.
    Console {
        asset: crate::console::Asset,
    },
    JoinToken {
        network: String,
    },
    CreateKey {
        identity: String,
    },
    ListKeys {
        identity: String,
    },
    SetKeyStatus {
        identity: String,
        id: String,
    },
    DeleteKey {
        identity: String,
        id: String,
    },
    List {
        kind: Kind,
    },
    Get {
        kind: Kind,
        name: String,
    },
    Put {
        kind: Kind,
        name: String,
    },
    Delete {
        kind: Kind,
        name: String,
    },
    CreateToken,
    ListTokens,
    RevokeToken {
        name: String,
    },
    SignCertificate,
}

impl Route {
    pub fn parse(method: &Method, path: &str) -> Result<Route, HttpError> {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let s = |x: &&str| x.to_string();
        let route = match (method, segments.as_slice()) {
            (&Method::GET, ["healthz"]) => Route::Healthz,
            (&Method::GET, ["v1", "ca"]) => Route::Ca,
            (&Method::POST, ["v1", "ca", "certificates"]) => Route::SignCertificate,
            (&Method::POST, ["v1", "certificates"]) => Route::Certificates,
            (&Method::POST, ["v1", "apply"]) => Route::Apply,
            (&Method::GET, ["v1", "audit"]) => Route::Audit,
            (&Method::GET, ["v1", "networks", n, "snapshot"]) => Route::Snapshot { network: s(n) },
            (&Method::POST, ["v1", "networks", n, "flows"]) => Route::PushFlows { network: s(n) },
            (&Method::GET, ["v1", "flows"]) => Route::Flows,
            (&Method::GET, ["v1", "traffic"]) => Route::Traffic,
            (&Method::GET, ["" | "ui"]) => Route::Console {
                asset: crate::console::Asset::Page,
            },
            (&Method::GET, ["ui", file]) => Route::Console {
                asset: crate::console::Asset::named(file)
                    .ok_or_else(|| HttpError::NotFound(format!("no such path {path}")))?,
            },
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
            (&Method::POST, ["v1", "tokens"]) => Route::CreateToken,
            (&Method::GET, ["v1", "tokens"]) => Route::ListTokens,
            (&Method::DELETE, ["v1", "tokens", n]) => Route::RevokeToken { name: s(n) },
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
        matches!(
            self,
            Route::Healthz | Route::Ca | Route::Certificates | Route::Console { .. }
        )
    }

    /// What it does, for a refusal.
    fn describe(&self) -> String {
        match self {
            Route::Healthz | Route::Ca | Route::Certificates | Route::Console { .. } => {
                "call this".into()
            }
            Route::Apply => "apply".into(),
            Route::Audit => "read the audit log".into(),
            Route::Snapshot { network } => format!("read network {network}'s snapshot"),
            Route::PushFlows { network } => format!("send network {network}'s flows"),
            Route::Flows => "read flows".into(),
            Route::Traffic => "read traffic".into(),
            Route::JoinToken { network } => format!("create join tokens for network {network}"),
            Route::CreateKey { identity } => format!("issue keys for identity {identity}"),
            Route::ListKeys { identity } => format!("list identity {identity}'s keys"),
            Route::SetKeyStatus { identity, .. } | Route::DeleteKey { identity, .. } => {
                format!("change identity {identity}'s keys")
            }
            Route::List { kind } => format!("list {}", kind.plural()),
            Route::Get { kind, name } => format!("read {kind}/{name}"),
            Route::Put { kind, name } => format!("change {kind}/{name}"),
            Route::Delete { kind, name } => format!("delete {kind}/{name}"),
            Route::CreateToken | Route::ListTokens | Route::RevokeToken { .. } => {
                "manage API tokens".into()
            }
            Route::SignCertificate => "have the CA sign certificates".into(),
        }
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
            let applied = cp
                .apply(body.documents, dry_run, edit_scope(caller))
                .await?;
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
                Caller::Admin => SnapshotView::Full,
                Caller::Member(s) if s.role == Role::Node => SnapshotView::Full,
                Caller::Operator(t) if t.role == TokenRole::Admin => SnapshotView::Full,
                _ => SnapshotView::Public,
            };
            let gzip = accepts_gzip(req.headers());
            match cp
                .watch_snapshot(&network, query.since, wait, view, query.delta)
                .await?
            {
                Some(answer) => Ok(snapshot_response(&answer, gzip).await),
                None => Ok(raw_json(StatusCode::NOT_MODIFIED, Bytes::new())),
            }
        }
        Route::JoinToken { network } => {
            let body: JoinTokenRequest = read_json(cp, req).await?;
            let ttl = Duration::from_secs(body.ttl_seconds.unwrap_or(3600).clamp(1, 7 * 86_400));
            let role = body.role.unwrap_or_default();
            let token = cp.create_join_token(&network, role, ttl).await?;
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
        Route::SignCertificate => {
            let body: SignRequest = read_json(cp, req).await?;
            let ttl = Duration::from_secs(body.ttl_seconds.clamp(3600, 366 * 86_400));
            let certificate = cp.sign_server_certificate(&body.csr, ttl)?;
            summary
                .changes
                .push("a target certificate signed by the CA".into());
            Ok(json_response(
                StatusCode::CREATED,
                &serde_json::json!({ "certificate": certificate, "ca": cp.ca_pem() }),
            ))
        }
        Route::CreateToken => {
            let body: NewApiToken = read_json(cp, req).await?;
            let created = cp.create_api_token(&body).await?;
            summary.changes.push(format!(
                "token {} ({}) created",
                created.name,
                created.role.as_str()
            ));
            Ok(json_response(StatusCode::CREATED, &created))
        }
        Route::ListTokens => Ok(json_response(
            StatusCode::OK,
            &serde_json::json!({ "items": cp.api_tokens().list() }),
        )),
        Route::RevokeToken { name } => {
            cp.revoke_api_token(&name).await?;
            summary.changes.push(format!("token {name} revoked"));
            Ok(json_response(
                StatusCode::OK,
                &serde_json::json!({ "revoked": name }),
            ))
        }
        Route::PushFlows { network } => {
            let batch: trellis_api::flow::FlowBatch = read_json(cp, req).await?;
            let mut items = batch.items;
            // The network is the certificate's, whatever the batch says.
            for f in &mut items {
                f.network.clone_from(&network);
            }
            if batch.dropped > 0 {
                tracing::debug!(network, dropped = batch.dropped, "a node dropped flows");
            }
            let accepted = items.len();
            cp.flows.push(items);
            if let Some(report) = batch.report {
                cp.traffic.record(&network, report);
            }
            Ok(json_response(
                StatusCode::ACCEPTED,
                &serde_json::json!({ "accepted": accepted }),
            ))
        }
        Route::Flows => {
            let q = FlowQuery::parse(req.uri().query())?;
            let page = cp.flows.read(&q.filter, q.after, q.last, q.wait).await;
            Ok(json_response(StatusCode::OK, &page))
        }
        Route::Traffic => Ok(json_response(StatusCode::OK, &cp.traffic())),
        Route::Console { asset } => Ok(asset.response()),
        Route::Audit => {
            let query = AuditQuery::parse(req.uri().query())?;
            let items = cp
                .audit
                .read(query.since, query.actor.as_deref())
                .await
                .map_err(|e| HttpError::Unavailable(e.to_string()))?;
            Ok(json_response(
                StatusCode::OK,
                &serde_json::json!({ "items": items }),
            ))
        }
        Route::List { kind } => Ok(raw_json(StatusCode::OK, cp.list(kind))),
        Route::Get { kind, name } => {
            let mut obj = cp
                .get(kind, &name)
                .ok_or_else(|| HttpError::NotFound(format!("{kind} \"{name}\" does not exist")))?;
            if kind == Kind::TargetGroup {
                obj.status.targets = cp.traffic.targets(&name);
            }
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
            let applied = cp.apply(vec![doc], false, edit_scope(caller)).await?;
            summary.applied(&applied);
            Ok(json_response(StatusCode::OK, &applied))
        }
        Route::Delete { kind, name } => {
            let revision = cp.delete(kind, &name, edit_scope(caller).as_ref()).await?;
            summary.revision = Some(revision);
            summary.changes.push(format!("{kind}/{name} deleted"));
            Ok(json_response(StatusCode::OK, &DeleteResponse { revision }))
        }
    }
}

/// An editor's scope; `None` (no limit) for everyone else `may` let in.
fn edit_scope(caller: &Caller) -> Option<EditScope> {
    match caller {
        Caller::Operator(t) if t.role == TokenRole::Editor => Some(EditScope::of(t)),
        _ => None,
    }
}

fn known_path(segments: &[&str]) -> bool {
    match segments {
        ["healthz"] | ["v1", "apply"] | ["v1", "certificates"] | ["v1", "ca"] => true,
        ["v1", "ca", "certificates"] => true,
        ["v1", "audit"] | ["v1", "tokens"] | ["v1", "tokens", _] | ["v1", "flows"] => true,
        ["v1", "traffic"] | [""] | ["ui"] | ["ui", _] => true,
        ["v1", kind] | ["v1", kind, _] => Kind::parse(kind).is_some(),
        ["v1", "networks", _, "snapshot"] | ["v1", "networks", _, "join-tokens"] => true,
        ["v1", "networks", _, "flows"] => true,
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
            return Err(HttpError::TooLarge(format!(
                "request body is larger than {limit} bytes"
            )));
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

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SignRequest {
    csr: String,
    ttl_seconds: u64,
}

#[derive(Default)]
struct Query {
    since: Option<u64>,
    wait_seconds: Option<u64>,
    /// The watcher applies deltas (`delta=true`).
    delta: bool,
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
            if k == "delta" {
                out.delta = v.parse().map_err(|_| {
                    HttpError::BadRequest(format!(
                        "query parameter delta: \"{v}\" is not true or false"
                    ))
                })?;
                continue;
            }
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

/// `GET /v1/flows`: a cursor or a count, how long to wait, and filters.
struct FlowQuery {
    filter: trellis_api::flow::FlowFilter,
    after: Option<u64>,
    last: usize,
    wait: Duration,
}

impl FlowQuery {
    fn parse(q: Option<&str>) -> Result<FlowQuery, HttpError> {
        let mut out = FlowQuery {
            filter: Default::default(),
            after: None,
            last: 20,
            wait: Duration::ZERO,
        };
        for (k, v) in query_pairs(q) {
            let number = || {
                v.parse::<u64>().map_err(|_| {
                    HttpError::BadRequest(format!("query parameter {k}: \"{v}\" is not a number"))
                })
            };
            match k {
                "after" => out.after = Some(number()?),
                "last" => out.last = usize::try_from(number()?).unwrap_or(usize::MAX),
                "waitSeconds" => out.wait = Duration::from_secs(number()?).min(MAX_WAIT),
                _ => {
                    if !out.filter.set(k, v).map_err(HttpError::BadRequest)? {
                        return Err(unknown_parameter(k));
                    }
                }
            }
        }
        Ok(out)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// One of every route: the match makes a new route fail to compile
    /// here until it is listed (and so judged below).
    fn every_route() -> Vec<Route> {
        let s = |x: &str| x.to_string();
        let all = vec![
            Route::Healthz,
            Route::Ca,
            Route::Certificates,
            Route::Apply,
            Route::Audit,
            Route::Snapshot { network: s("east") },
            Route::JoinToken { network: s("east") },
            Route::CreateKey {
                identity: s("alice"),
            },
            Route::ListKeys {
                identity: s("alice"),
            },
            Route::SetKeyStatus {
                identity: s("alice"),
                id: s("K"),
            },
            Route::DeleteKey {
                identity: s("alice"),
                id: s("K"),
            },
            Route::List {
                kind: Kind::Service,
            },
            Route::Get {
                kind: Kind::Service,
                name: s("shop"),
            },
            Route::Put {
                kind: Kind::Service,
                name: s("shop"),
            },
            Route::Put {
                kind: Kind::Network,
                name: s("east"),
            },
            Route::Delete {
                kind: Kind::TargetGroup,
                name: s("blue"),
            },
            Route::Delete {
                kind: Kind::Identity,
                name: s("alice"),
            },
            Route::CreateToken,
            Route::ListTokens,
            Route::RevokeToken { name: s("ci") },
            Route::SignCertificate,
            Route::PushFlows { network: s("east") },
            Route::Flows,
            Route::Traffic,
            Route::Console {
                asset: crate::console::Asset::Script,
            },
        ];
        for r in &all {
            match r {
                Route::Healthz
                | Route::Ca
                | Route::Certificates
                | Route::Apply
                | Route::Audit
                | Route::Snapshot { .. }
                | Route::JoinToken { .. }
                | Route::CreateKey { .. }
                | Route::ListKeys { .. }
                | Route::SetKeyStatus { .. }
                | Route::DeleteKey { .. }
                | Route::List { .. }
                | Route::Get { .. }
                | Route::Put { .. }
                | Route::Delete { .. }
                | Route::CreateToken
                | Route::ListTokens
                | Route::RevokeToken { .. }
                | Route::SignCertificate
                | Route::PushFlows { .. }
                | Route::Flows
                | Route::Traffic
                | Route::Console { .. } => {}
            }
        }
        all
    }

    /// The request that takes each route of `every_route`, in order.
    #[test]
    fn every_route_is_read_from_its_request() {
        let requests = [
            ("GET", "/healthz"),
            ("GET", "/v1/ca"),
            ("POST", "/v1/certificates"),
            ("POST", "/v1/apply"),
            ("GET", "/v1/audit"),
            ("GET", "/v1/networks/east/snapshot"),
            ("POST", "/v1/networks/east/join-tokens"),
            ("POST", "/v1/identities/alice/keys"),
            ("GET", "/v1/identities/alice/keys"),
            ("PATCH", "/v1/identities/alice/keys/K"),
            ("DELETE", "/v1/identities/alice/keys/K"),
            ("GET", "/v1/services"),
            ("GET", "/v1/services/shop"),
            ("PUT", "/v1/services/shop"),
            ("PUT", "/v1/networks/east"),
            ("DELETE", "/v1/targetgroups/blue"),
            ("DELETE", "/v1/identities/alice"),
            ("POST", "/v1/tokens"),
            ("GET", "/v1/tokens"),
            ("DELETE", "/v1/tokens/ci"),
            ("POST", "/v1/ca/certificates"),
            ("POST", "/v1/networks/east/flows"),
            ("GET", "/v1/flows"),
            ("GET", "/v1/traffic"),
            ("GET", "/ui/app.js"),
        ];
        let routes = every_route();
        assert_eq!(requests.len(), routes.len());
        for ((method, path), want) in requests.iter().zip(routes) {
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            assert_eq!(
                Route::parse(&method, path).unwrap(),
                want,
                "{method} {path}"
            );
        }
        assert!(matches!(
            Route::parse(&Method::PATCH, "/v1/tokens"),
            Err(HttpError::MethodNotAllowed)
        ));
        assert!(matches!(
            Route::parse(&Method::GET, "/v1/nothing/here/at/all"),
            Err(HttpError::NotFound(_))
        ));
    }

    fn token(role: TokenRole, scopes: &[&str]) -> Caller {
        Caller::Operator(Arc::new(ApiToken {
            name: "t".into(),
            role,
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            created_at: 0,
            expires_at: u64::MAX,
            token: None,
        }))
    }

    /// (caller, the routes it may take, by index in `every_route`); every
    /// other route is refused. Editors' applies are further checked object
    /// by object (tests/roles.rs).
    #[test]
    fn every_caller_against_every_route() {
        let routes = every_route();
        let open = [0, 1, 2, 24];
        let reads = [4, 5, 8, 11, 12, 22, 23];
        let member = |role| {
            Caller::Member(Subject {
                network: "east".into(),
                role,
            })
        };
        let west = Caller::Member(Subject {
            network: "west".into(),
            role: Role::Node,
        });
        let everything: Vec<usize> = (0..routes.len()).collect();
        let with = |extra: &[usize]| -> Vec<usize> {
            let mut v: Vec<usize> = open.iter().chain(extra).copied().collect();
            v.sort();
            v.dedup();
            v
        };
        let table: Vec<(&str, Caller, Vec<usize>)> = vec![
            ("bootstrap admin", Caller::Admin, everything.clone()),
            ("anonymous", Caller::Anonymous, with(&[])),
            ("node of east", member(Role::Node), with(&[5, 21])),
            ("dns of east", member(Role::Dns), with(&[5])),
            ("node of west", west, with(&[])),
            ("admin token", token(TokenRole::Admin, &[]), everything),
            ("viewer", token(TokenRole::Viewer, &[]), with(&reads)),
            (
                "editor of shop",
                token(TokenRole::Editor, &["servicenetwork/shop"]),
                with(&[&reads[..], &[3, 13, 15]].concat()),
            ),
            (
                "key manager of alice",
                token(TokenRole::KeyManager, &["identity/alice"]),
                with(&[&reads[..], &[7, 9, 10]].concat()),
            ),
            (
                "key manager of bob",
                token(TokenRole::KeyManager, &["identity/bob"]),
                with(&reads),
            ),
        ];
        for (who, caller, allowed) in table {
            for (i, route) in routes.iter().enumerate() {
                let got = caller.may(route);
                match (allowed.contains(&i), got) {
                    (true, Ok(())) => {}
                    (false, Err(HttpError::Unauthorized)) if caller == Caller::Anonymous => {}
                    (false, Err(HttpError::Forbidden(why))) => {
                        assert!(!why.is_empty(), "{who} {route:?}")
                    }
                    (want, got) => panic!("{who} {route:?}: allowed={want}, got {got:?}"),
                }
            }
        }
    }
}
