//! HTTPS client for the control plane's API, shared by the CLI, node agents
//! and DNS servers. It speaks only TLS, and trusts only the control plane it
//! was told about: a CA certificate, or a CA hash from a join token
//! ([`Trust`]). Operators add a bearer token; nodes and DNS servers show
//! their certificate instead. Every call is bounded by a timeout.
//!
//! With several control-plane replicas (the etcd store), a client is given
//! all their URLs, comma-separated: calls go to one until it cannot answer
//! (no connection, no answer in time, 503), then move on to the next. A
//! watch resumes from the revision its caller holds, so moving on never
//! takes a node back.

use crate::delta::Delta;
use crate::error::ApiError;
use crate::keys::{AccessKeyInfo, KeyStatus, NewAccessKey};
use crate::resource::{Kind, Object};
use crate::snapshot::Snapshot;
use bytes::Bytes;
use http::{Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{Client as HyperClient, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;
use rustls::client::ResolvesClientCert;
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

pub use crate::trust::Trust;

/// On every answer of a control plane cut off from its shared store: how
/// long, and the revision its answers are as of.
pub const STALE_HEADER: &str = "x-trellis-stale";

/// Largest response body the client reads (a full listing of 10,000 services
/// is about 10 MiB).
const MAX_RESPONSE_BYTES: usize = 256 << 20;

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("invalid server URL {0:?}: {1}")]
    Url(String, String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("cannot reach the control plane at {0}: {1}")]
    Connect(String, String),
    #[error("no answer from the control plane at {0} within {1:?}")]
    Timeout(String, Duration),
    #[error("{}", .error.message)]
    Api { status: StatusCode, error: ApiError },
    #[error("unexpected answer from the control plane ({status}): {detail}")]
    Protocol { status: StatusCode, detail: String },
}

impl ClientError {
    /// Whether another replica may answer where this one could not: no
    /// connection, no answer in time, or 503 (cut off from its store,
    /// handing over, at its most watchers).
    fn replica_unavailable(&self) -> bool {
        match self {
            ClientError::Connect(..) | ClientError::Timeout(..) => true,
            ClientError::Api { status, .. } | ClientError::Protocol { status, .. } => {
                *status == StatusCode::SERVICE_UNAVAILABLE
            }
            ClientError::Url(..) | ClientError::Tls(_) => false,
        }
    }
}

/// What an apply did (or, on a dry run, would do) to one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeAction {
    Created,
    Configured,
    Unchanged,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    pub kind: Kind,
    pub name: String,
    pub action: ChangeAction,
    /// Dry runs only: the stored spec before and the spec after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Value>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplyResponse {
    /// The store revision after the apply (unchanged when nothing changed).
    pub revision: u64,
    pub changes: Vec<Change>,
}

/// One mutating API call, as the audit log keeps it (`GET /v1/audit`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    /// Unix seconds.
    pub time: u64,
    /// Who: `admin` (the bootstrap token), `token/NAME` (a named token),
    /// `node/NETWORK` or `dns/NETWORK` (a certificate shown in the TLS
    /// handshake), `join-token` or `certificate` (a CSR's own proof),
    /// `anonymous` (no valid credential).
    pub actor: String,
    /// The client's address.
    pub peer: String,
    pub method: String,
    pub path: String,
    /// The HTTP status answered.
    pub status: u16,
    /// The store revision the call produced, when it changed the state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
    /// What changed: `Service/checkout configured`, `key TKIA... of
    /// identity/alice created`, ...
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<String>,
}

/// What a named API token lets its holder do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TokenRole {
    /// Everything, as the bootstrap token.
    Admin,
    /// Apply and delete services and target groups within its scopes
    /// (`servicenetwork/NAME`, `network/NAME`); read.
    Editor,
    /// Issue, deactivate and delete access keys of its scopes'
    /// identities (`identity/NAME`); read.
    KeyManager,
    /// Read, never a secret.
    Viewer,
}

impl TokenRole {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenRole::Admin => "admin",
            TokenRole::Editor => "editor",
            TokenRole::KeyManager => "key-manager",
            TokenRole::Viewer => "viewer",
        }
    }
}

/// A named API token (`/v1/tokens`); `token` only in the answer that
/// creates it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiToken {
    pub name: String,
    pub role: TokenRole,
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Unix seconds.
    pub created_at: u64,
    pub expires_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// `POST /v1/tokens`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewApiToken {
    pub name: String,
    pub role: TokenRole,
    #[serde(default)]
    pub scopes: Vec<String>,
    pub ttl_seconds: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplyRequest {
    pub documents: Vec<Value>,
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct List {
    pub items: Vec<Object>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteResponse {
    pub revision: u64,
}

/// What a watch brought: a whole snapshot or what changed.
#[derive(Debug)]
pub enum Update {
    Whole(Snapshot),
    Delta(Delta),
}

/// A watch's answer and its size on the wire (compressed).
#[derive(Debug)]
pub struct Watched {
    pub update: Update,
    pub wire_bytes: usize,
}

#[derive(Clone)]
pub struct Client {
    /// Every replica's URL; clones share which one is `current`.
    bases: Arc<[String]>,
    current: Arc<std::sync::atomic::AtomicUsize>,
    token: Option<String>,
    timeout: Duration,
    trust: Trust,
    http: HyperClient<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

/// How a [`Client`] proves who calls: an operator's bearer token, or a
/// node's certificate (mutual TLS).
#[derive(Clone, Default)]
pub enum Credential {
    #[default]
    None,
    Token(String),
    Certificate(Arc<dyn ResolvesClientCert>),
}

impl Client {
    /// A client of the control plane at `base` (`https://HOST:PORT`, or
    /// several replicas' URLs comma-separated) that trusts it as `trust`
    /// says and calls with `credential`.
    pub fn new(
        base: &str,
        trust: Trust,
        credential: Credential,
        timeout: Duration,
    ) -> Result<Client, ClientError> {
        let mut bases = Vec::new();
        for base in base.split(',').map(str::trim).filter(|b| !b.is_empty()) {
            let base = base.trim_end_matches('/').to_string();
            let uri: Uri = base.parse().map_err(|e: http::uri::InvalidUri| {
                ClientError::Url(base.clone(), e.to_string())
            })?;
            if uri.scheme_str() != Some("https") || uri.authority().is_none() {
                return Err(ClientError::Url(
                    base,
                    "expected https://HOST:PORT (the API speaks only TLS)".into(),
                ));
            }
            bases.push(base);
        }
        if bases.is_empty() {
            return Err(ClientError::Url(
                base.to_string(),
                "expected https://HOST:PORT[,https://HOST:PORT...]".into(),
            ));
        }
        let (token, resolver) = match credential {
            Credential::None => (None, None),
            Credential::Token(t) => (Some(t), None),
            Credential::Certificate(r) => (None, Some(r)),
        };
        let tls = trust.client_config(resolver).map_err(ClientError::Tls)?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        connector.set_nodelay(true);
        connector.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .wrap_connector(connector);
        let http = HyperClient::builder(TokioExecutor::new()).build(https);
        Ok(Client {
            bases: bases.into(),
            current: Default::default(),
            token,
            timeout,
            trust,
            http,
        })
    }

    /// The CA certificate the server proved it holds, once a call has
    /// succeeded: what a node keeps after joining by a CA hash.
    pub fn anchor(&self) -> Option<CertificateDer<'static>> {
        self.trust.anchor()
    }

    /// The URL calls go to now.
    pub fn base(&self) -> &str {
        &self.bases[self.at()]
    }

    fn at(&self) -> usize {
        self.current.load(std::sync::atomic::Ordering::Relaxed) % self.bases.len()
    }

    /// Applies `documents` (JSON values, or anything that serializes as
    /// one) as one change.
    pub async fn apply<D: Serialize>(
        &self,
        documents: &[D],
        dry_run: bool,
    ) -> Result<ApplyResponse, ClientError> {
        /// [`ApplyRequest`], borrowed.
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Request<'a, D> {
            documents: &'a [D],
            dry_run: bool,
        }
        let body = serde_json::to_vec(&Request { documents, dry_run }).unwrap_or_default();
        let (_, bytes) = self
            .call(Method::POST, "/v1/apply", Some(body), self.timeout)
            .await?;
        decode(&bytes)
    }

    pub async fn list(&self, kind: Kind) -> Result<List, ClientError> {
        let path = format!("/v1/{}", kind.plural());
        let (_, bytes) = self.call(Method::GET, &path, None, self.timeout).await?;
        decode(&bytes)
    }

    pub async fn get(&self, kind: Kind, name: &str) -> Result<Object, ClientError> {
        let path = format!("/v1/{}/{}", kind.plural(), name);
        let (_, bytes) = self.call(Method::GET, &path, None, self.timeout).await?;
        decode(&bytes)
    }

    pub async fn delete(&self, kind: Kind, name: &str) -> Result<DeleteResponse, ClientError> {
        let path = format!("/v1/{}/{}", kind.plural(), name);
        let (_, bytes) = self.call(Method::DELETE, &path, None, self.timeout).await?;
        decode(&bytes)
    }

    /// The audit records from `since` (Unix seconds) on, of `actor` if given.
    pub async fn audit(
        &self,
        since: u64,
        actor: Option<&str>,
    ) -> Result<Vec<AuditRecord>, ClientError> {
        let mut path = format!("/v1/audit?since={since}");
        if let Some(a) = actor {
            path.push_str(&format!("&actor={a}"));
        }
        let (_, bytes) = self.call(Method::GET, &path, None, self.timeout).await?;
        #[derive(Deserialize)]
        struct Items {
            items: Vec<AuditRecord>,
        }
        decode::<Items>(&bytes).map(|i| i.items)
    }

    /// A server certificate (PEM) for the CSR's names, from the node CA.
    pub async fn sign_certificate(&self, csr: &str, ttl: Duration) -> Result<String, ClientError> {
        let body =
            serde_json::to_vec(&serde_json::json!({ "csr": csr, "ttlSeconds": ttl.as_secs() }))
                .unwrap_or_default();
        let (_, bytes) = self
            .call(
                Method::POST,
                "/v1/ca/certificates",
                Some(body),
                self.timeout,
            )
            .await?;
        #[derive(Deserialize)]
        struct Signed {
            certificate: String,
        }
        decode::<Signed>(&bytes).map(|s| s.certificate)
    }

    /// Creates a named API token: the only time its text is seen.
    pub async fn create_token(&self, req: &NewApiToken) -> Result<ApiToken, ClientError> {
        let body = serde_json::to_vec(req).unwrap_or_default();
        let (_, bytes) = self
            .call(Method::POST, "/v1/tokens", Some(body), self.timeout)
            .await?;
        decode(&bytes)
    }

    pub async fn list_tokens(&self) -> Result<Vec<ApiToken>, ClientError> {
        #[derive(Deserialize)]
        struct Items {
            items: Vec<ApiToken>,
        }
        let (_, bytes) = self
            .call(Method::GET, "/v1/tokens", None, self.timeout)
            .await?;
        decode::<Items>(&bytes).map(|i| i.items)
    }

    pub async fn revoke_token(&self, name: &str) -> Result<(), ClientError> {
        let path = format!("/v1/tokens/{name}");
        self.call(Method::DELETE, &path, None, self.timeout).await?;
        Ok(())
    }

    /// Issues an access key for `identity`: the only time its secret is seen.
    pub async fn create_key(&self, identity: &str) -> Result<NewAccessKey, ClientError> {
        let path = format!("/v1/identities/{identity}/keys");
        let (_, bytes) = self.call(Method::POST, &path, None, self.timeout).await?;
        decode(&bytes)
    }

    pub async fn list_keys(&self, identity: &str) -> Result<Vec<AccessKeyInfo>, ClientError> {
        #[derive(Deserialize)]
        struct Items {
            items: Vec<AccessKeyInfo>,
        }
        let path = format!("/v1/identities/{identity}/keys");
        let (_, bytes) = self.call(Method::GET, &path, None, self.timeout).await?;
        decode::<Items>(&bytes).map(|i| i.items)
    }

    pub async fn set_key_status(
        &self,
        identity: &str,
        id: &str,
        status: KeyStatus,
    ) -> Result<AccessKeyInfo, ClientError> {
        let path = format!("/v1/identities/{identity}/keys/{id}");
        let body = serde_json::to_vec(&serde_json::json!({ "Status": status })).unwrap_or_default();
        let (_, bytes) = self
            .call(Method::PATCH, &path, Some(body), self.timeout)
            .await?;
        decode(&bytes)
    }

    pub async fn delete_key(
        &self,
        identity: &str,
        id: &str,
    ) -> Result<DeleteResponse, ClientError> {
        let path = format!("/v1/identities/{identity}/keys/{id}");
        let (_, bytes) = self.call(Method::DELETE, &path, None, self.timeout).await?;
        decode(&bytes)
    }

    /// A join token for `role`s of `network`, valid for `ttl`.
    pub async fn create_join_token(
        &self,
        network: &str,
        role: crate::pki::Role,
        ttl: Duration,
    ) -> Result<crate::pki::JoinToken, ClientError> {
        let path = format!("/v1/networks/{network}/join-tokens");
        let body =
            serde_json::to_vec(&serde_json::json!({ "ttlSeconds": ttl.as_secs(), "role": role }))
                .unwrap_or_default();
        let (_, bytes) = self
            .call(Method::POST, &path, Some(body), self.timeout)
            .await?;
        decode(&bytes)
    }

    /// A node certificate for a CSR (see [`crate::pki`]).
    pub async fn issue_certificate(
        &self,
        req: &crate::pki::CertificateRequest,
    ) -> Result<crate::pki::IssuedCertificate, ClientError> {
        let body = serde_json::to_vec(req).unwrap_or_default();
        let (_, bytes) = self
            .call(Method::POST, "/v1/certificates", Some(body), self.timeout)
            .await?;
        decode(&bytes)
    }

    /// Sends a node's batch of flow records for `network` (its own).
    pub async fn push_flows(
        &self,
        network: &str,
        batch: &crate::flow::FlowBatch,
    ) -> Result<(), ClientError> {
        let body = serde_json::to_vec(batch).unwrap_or_default();
        let path = format!("/v1/networks/{network}/flows");
        self.call(Method::POST, &path, Some(body), self.timeout)
            .await
            .map(|_| ())
    }

    /// Flow records matching `filter`: after the cursor `after` (waiting
    /// up to `wait` for one), or the `last` ones.
    pub async fn flows(
        &self,
        filter: &crate::flow::FlowFilter,
        after: Option<u64>,
        last: usize,
        wait: Duration,
    ) -> Result<crate::flow::FlowPage, ClientError> {
        let mut path = format!("/v1/flows?last={last}&waitSeconds={}", wait.as_secs());
        if let Some(a) = after {
            path.push_str(&format!("&after={a}"));
        }
        let query = filter.to_query();
        if !query.is_empty() {
            path.push('&');
            path.push_str(&query);
        }
        let (_, bytes) = self
            .call(Method::GET, &path, None, wait + self.timeout)
            .await?;
        decode(&bytes)
    }

    /// Fetches `network`'s snapshot. With `since`, waits up to `wait` for a
    /// snapshot newer than that revision and returns `None` if none came.
    pub async fn snapshot(
        &self,
        network: &str,
        since: Option<u64>,
        wait: Duration,
    ) -> Result<Option<Snapshot>, ClientError> {
        let path = match since {
            Some(rev) => format!(
                "/v1/networks/{network}/snapshot?since={rev}&waitSeconds={}",
                wait.as_secs()
            ),
            None => format!("/v1/networks/{network}/snapshot"),
        };
        let (status, bytes) = self
            .call(Method::GET, &path, None, wait + self.timeout)
            .await?;
        if status == StatusCode::NOT_MODIFIED {
            return Ok(None);
        }
        decode(&bytes).map(Some)
    }

    /// Watches `network` as a node does: holding the snapshot at `since`,
    /// waits up to `wait` for a newer one, and takes only what changed
    /// (a [`Delta`]) when the control plane can tell, gzip-compressed on
    /// the wire. `None` if nothing changed.
    pub async fn watch(
        &self,
        network: &str,
        since: Option<u64>,
        wait: Duration,
    ) -> Result<Option<Watched>, ClientError> {
        let path = match since {
            Some(rev) => format!(
                "/v1/networks/{network}/snapshot?since={rev}&waitSeconds={}&delta=true",
                wait.as_secs()
            ),
            None => format!("/v1/networks/{network}/snapshot"),
        };
        let (status, headers, bytes) = self
            .send(Method::GET, &path, None, true, wait + self.timeout)
            .await?;
        if status == StatusCode::NOT_MODIFIED {
            return Ok(None);
        }
        let wire_bytes = bytes.len();
        let gzipped = headers
            .get(header::CONTENT_ENCODING)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
        let body = if gzipped { gunzip(&bytes)? } else { bytes };
        let delta = headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes() == crate::delta::CONTENT_TYPE.as_bytes());
        let update = if delta {
            Update::Delta(decode(&body)?)
        } else {
            Update::Whole(decode(&body)?)
        };
        Ok(Some(Watched { update, wire_bytes }))
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let (status, _, bytes) = self.send(method, path, body, false, timeout).await?;
        Ok((status, bytes))
    }

    /// One exchange, with the current replica or, when it cannot answer,
    /// the next ones in turn; `gzip` asks for a gzip-encoded answer.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        gzip: bool,
        timeout: Duration,
    ) -> Result<(StatusCode, http::HeaderMap, Bytes), ClientError> {
        let body = Bytes::from(body.unwrap_or_default());
        let mut tried = 0;
        loop {
            let at = self.at();
            let sent = self
                .send_to(
                    &self.bases[at],
                    method.clone(),
                    path,
                    body.clone(),
                    gzip,
                    timeout,
                )
                .await;
            tried += 1;
            match sent {
                Err(e) if e.replica_unavailable() && tried < self.bases.len() => {
                    let next = (at + 1) % self.bases.len();
                    let _ = self.current.compare_exchange(
                        at,
                        next,
                        std::sync::atomic::Ordering::Relaxed,
                        std::sync::atomic::Ordering::Relaxed,
                    );
                    tracing::info!(from = %self.bases[at], to = %self.bases[next], error = %e, "control plane unavailable; trying the next");
                }
                done => return done,
            }
        }
    }

    async fn send_to(
        &self,
        base: &str,
        method: Method,
        path: &str,
        body: Bytes,
        gzip: bool,
        timeout: Duration,
    ) -> Result<(StatusCode, http::HeaderMap, Bytes), ClientError> {
        let url = format!("{base}{path}");
        let mut req = Request::builder().method(method).uri(&url);
        if gzip {
            req = req.header(header::ACCEPT_ENCODING, "gzip");
        }
        if let Some(token) = &self.token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if !body.is_empty() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| ClientError::Url(url.clone(), e.to_string()))?;
        let exchange = async {
            let resp = self
                .http
                .request(req)
                .await
                .map_err(|e| ClientError::Connect(base.to_string(), error_chain(&e)))?;
            let (parts, body) = resp.into_parts();
            let bytes = Limited::new(body, MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| ClientError::Connect(base.to_string(), e.to_string()))?
                .to_bytes();
            Ok::<_, ClientError>((parts.status, parts.headers, bytes))
        };
        let (status, headers, bytes) = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| ClientError::Timeout(base.to_string(), timeout))??;
        if let Some(stale) = headers.get(STALE_HEADER).and_then(|v| v.to_str().ok()) {
            tracing::warn!(control_plane = base, "the answer may be stale: {stale}");
        }
        if status.is_success() || status == StatusCode::NOT_MODIFIED {
            return Ok((status, headers, bytes));
        }
        match serde_json::from_slice::<ApiError>(&bytes) {
            Ok(error) => Err(ClientError::Api { status, error }),
            Err(_) => Err(ClientError::Protocol {
                status,
                detail: String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned(),
            }),
        }
    }
}

/// A gzip body, decompressed up to the same bound as any response.
fn gunzip(bytes: &[u8]) -> Result<Bytes, ClientError> {
    use std::io::Read;
    let mut out = Vec::with_capacity(bytes.len() * 8);
    flate2::read::GzDecoder::new(bytes)
        .take(MAX_RESPONSE_BYTES as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| ClientError::Protocol {
            status: StatusCode::OK,
            detail: format!("gzip: {e}"),
        })?;
    if out.len() > MAX_RESPONSE_BYTES {
        return Err(ClientError::Protocol {
            status: StatusCode::OK,
            detail: format!("response larger than {MAX_RESPONSE_BYTES} bytes"),
        });
    }
    Ok(Bytes::from(out))
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ClientError> {
    serde_json::from_slice(bytes).map_err(|e| ClientError::Protocol {
        status: StatusCode::OK,
        detail: e.to_string(),
    })
}

/// hyper's errors say "client error (Connect)" at the top; the cause is below.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg = format!("{msg}: {s}");
        source = s.source();
    }
    msg
}
