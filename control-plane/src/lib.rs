//! The Trellis control plane: it takes declarative resources, validates them
//! as a whole, allocates service VIPs, stores every change atomically with a
//! monotonically increasing revision, and compiles per-network snapshots that
//! node agents and DNS servers watch.
//!
//! The state lives in memory as an immutable [`state::State`] behind an
//! `Arc`, replaced whole after each successful commit; readers never wait on
//! writers, and writers are serialized.
#![forbid(unsafe_code)]

pub mod api_tls;
pub mod audit;
pub mod ca;
pub mod console;
pub mod docs;
mod error;
pub mod flows;
pub mod keys;
pub mod operators;
mod reach;
mod sealed;
pub mod server;
pub mod snapshot;
pub mod state;
pub mod store;
pub mod tls;
mod token;
pub mod traffic;
pub mod validate;
mod views;
pub mod vip;

use bytes::Bytes;
pub use error::Error;
use keys::Keyring;
use serde_json::Value;
use state::{Settings, State};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use store::{Commit, Store};
use tokio::sync::watch;
use trellis_api::Kind;
use trellis_api::client::{ApplyResponse, ChangeAction};
use trellis_api::keys::{AccessKeyInfo, KeyStatus, NewAccessKey};
pub use views::Encoded;

#[derive(Clone, Debug)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub settings: Settings,
    /// The SigV4 region clients sign for; nodes learn it from snapshots.
    pub region: String,
    pub max_body_bytes: usize,
    /// The SHA-256 of the API's trust anchor (DER): join tokens carry it.
    pub api_ca_sha256: [u8; 32],
}

fn ca_error(e: ca::CaError) -> Error {
    use ca::CaError;
    match e {
        CaError::BadCsr(_) | CaError::NoProof | CaError::Refused(_) => {
            Error::BadRequest(e.to_string())
        }
        CaError::BadToken | CaError::BadCertificate(_) | CaError::KeyMismatch => {
            Error::Denied(e.to_string())
        }
        CaError::Io(..) | CaError::Crypto(..) | CaError::Sealed(_) | CaError::Random(_) => {
            Error::Internal(e.to_string())
        }
    }
}

/// Which snapshot a watcher gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SnapshotView {
    /// All of it: a node signs, verifies and serves TLS with its keys.
    Full,
    /// Every key replaced by its fingerprint: what a DNS server needs.
    Public,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Key(#[from] keys::KeyError),
    #[error(transparent)]
    Audit(#[from] audit::AuditError),
    #[error(transparent)]
    Docs(#[from] docs::DocsError),
}

/// Most access keys one identity may hold (two let it rotate; a few more let
/// several clients rotate independently).
pub const MAX_KEYS_PER_IDENTITY: usize = 5;

/// How often a change is validated again after other control planes
/// committed first, before the caller is told to try again.
const CONFLICT_RETRIES: u32 = 10;
/// How long a change that lost a race waits for this process to follow
/// the winner before loading the store whole.
const FOLLOW_WAIT: Duration = Duration::from_secs(1);
/// Flows kept for observers, from all nodes together.
const FLOWS_KEPT: usize = 50_000;
/// Refused requests the console lists.
const REFUSED_SHOWN: usize = 25;

/// How long a replica cut off from its store still answers watches: past
/// it, nodes are sent to another replica (503).
const STALE_WATCH: Duration = Duration::from_secs(3);
const FOLLOW_BACKOFF_MIN: Duration = Duration::from_millis(100);
const FOLLOW_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The state `loaded` holds, its keys unsealed, and the objects that held
/// an HTTPS key in the clear (for the caller to store again sealed).
fn load_state(
    mut loaded: store::Loaded,
    keyring: &Keyring,
    settings: &Settings,
) -> Result<(State, Vec<store::Entry>), OpenError> {
    let mut keys = state::Keys::new();
    for (id, record) in &loaded.keys {
        keys.insert(id.clone(), Arc::new(keyring.load(id, record)?));
    }
    let clear = sealed::open(keyring, &mut loaded)?;
    let mut state = State::load(loaded, settings)?;
    state.keys = keys;
    Ok((state, clear))
}

/// One network's current view.
#[derive(Default)]
struct ViewSlot {
    /// Read without waiting: ten thousand watchers woken by one change must
    /// not queue behind each other for it.
    current: Mutex<Option<Arc<views::View>>>,
    /// Held by the one caller compiling a newer view.
    compiling: tokio::sync::Mutex<()>,
}

impl ViewSlot {
    fn current(&self) -> Option<Arc<views::View>> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

pub struct ControlPlane {
    config: Config,
    state: RwLock<Arc<State>>,
    /// Serializes writers; readers use `state` and never wait on this.
    writer: tokio::sync::Mutex<()>,
    store: Arc<dyn Store>,
    revision: watch::Sender<u64>,
    /// Per network: a single-flight slot, so that a thousand nodes woken by
    /// one apply cause one compilation, not a thousand.
    snapshots: Mutex<HashMap<String, Arc<ViewSlot>>>,
    /// Which networks each recent commit reached: a view no commit since
    /// its compilation reached is carried forward, not compiled again.
    reach: Mutex<reach::Log>,
    /// Views compiled since start (the others were carried forward).
    views_compiled: std::sync::atomic::AtomicU64,
    keyring: Arc<Keyring>,
    /// Signs node certificates (cross-network mTLS).
    ca: ca::Authority,
    /// Every mutating API call this process served (the server writes it).
    pub audit: audit::AuditLog,
    /// Recent flows from every node.
    pub flows: flows::Flows,
    /// Nodes' recent counters and health, for the console.
    pub traffic: traffic::Traffic,
    /// The named API tokens as last parsed, and the document they came
    /// from: every call is authenticated against it.
    api_tokens: Mutex<ParsedTokens>,
    /// Set when this process hands over: watches answer at once.
    draining: std::sync::atomic::AtomicBool,
    /// Where in the store the state was last read or followed to.
    position: std::sync::atomic::AtomicU64,
    /// When following a shared store failed and has not recovered since
    /// (Unix milliseconds; 0 while in contact).
    cut_off_since: std::sync::atomic::AtomicU64,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// UTC days since the epoch.
fn today() -> i64 {
    i64::try_from(now() / 86_400).unwrap_or(0)
}

/// The named API tokens, and the document they were parsed from.
type ParsedTokens = (Option<Arc<[u8]>>, Arc<operators::ApiTokens>);

/// What a store holds, ready to serve: its state and the node CA. The
/// caller sets up the API's TLS with the CA, then makes the control plane
/// ([`ControlPlane::new`]).
pub struct Opened {
    state: State,
    position: u64,
    pub ca: ca::Authority,
    /// The admin API token every replica shares.
    pub admin_token: String,
}

impl ControlPlane {
    /// Loads the state from `store`, unsealing access keys with `keyring`;
    /// on the first start, puts the installation documents in it (those an
    /// older version kept in `data_dir`, or new ones) and writes the local
    /// copies clients read (`ca.pem`, `api-token`). `cert_ttl` is the
    /// lifetime of node certificates.
    pub async fn load(
        store: &dyn Store,
        keyring: &Keyring,
        settings: &Settings,
        data_dir: &std::path::Path,
        cert_ttl: Duration,
    ) -> Result<Opened, OpenError> {
        let mut attempt = 0;
        let (state, position) = loop {
            let loaded = store.load().await?;
            let position = loaded.position;
            let (state, clear) = load_state(loaded, keyring, settings)?;
            if !clear.is_empty() {
                // Same revision, same VIPs: only the keys' form on disk changes.
                let mut commit = store::Commit {
                    revision: state.revision,
                    put: clear,
                    vips: serde_json::to_vec(state.vips.allocations()).unwrap_or_default(),
                    ..store::Commit::default()
                };
                sealed::seal(keyring, &mut commit)?;
                store.commit(state.revision, &commit).await?;
                tracing::info!(
                    services = commit.put.len(),
                    "sealed HTTPS listener keys an older version stored in the clear"
                );
            }
            let missing = docs::missing(&state, data_dir, keyring)?;
            if missing.is_empty() {
                break (state, position);
            }
            let (next, commit) = state.install_docs(missing);
            match store.commit(state.revision, &commit).await {
                Ok(()) => break (next, position),
                // Another replica started at the same time and put its
                // documents first: take those.
                Err(store::StoreError::Conflict { .. }) if attempt < CONFLICT_RETRIES => {
                    attempt += 1
                }
                Err(e) => return Err(e.into()),
            }
        };
        docs::export(&state, data_dir, keyring)?;
        Ok(Opened {
            ca: ca::Authority::open(&docs::ca(&state)?, cert_ttl, keyring)
                .map_err(docs::DocsError::from)?,
            admin_token: docs::admin_token(&state, keyring)?,
            state,
            position,
        })
    }

    pub fn new(
        config: Config,
        store: Arc<dyn Store>,
        keyring: Keyring,
        opened: Opened,
    ) -> Result<ControlPlane, OpenError> {
        let (revision, _) = watch::channel(opened.state.revision);
        Ok(ControlPlane {
            keyring: Arc::new(keyring),
            audit: audit::AuditLog::open(&config.data_dir, store.audit())?,
            flows: flows::Flows::new(FLOWS_KEPT),
            traffic: traffic::Traffic::default(),
            api_tokens: Mutex::new((None, Arc::default())),
            ca: opened.ca,
            config,
            state: RwLock::new(Arc::new(opened.state)),
            writer: tokio::sync::Mutex::new(()),
            store,
            revision,
            snapshots: Mutex::new(HashMap::new()),
            reach: Mutex::default(),
            views_compiled: Default::default(),
            draining: std::sync::atomic::AtomicBool::new(false),
            position: opened.position.into(),
            cut_off_since: 0.into(),
        })
    }

    pub fn ca_pem(&self) -> &str {
        self.ca.ca_pem()
    }

    /// A join token for `role`s of `network` (which must exist), valid for
    /// `ttl`.
    pub async fn create_join_token(
        &self,
        network: &str,
        role: trellis_api::pki::Role,
        ttl: Duration,
    ) -> Result<trellis_api::pki::JoinToken, Error> {
        let (token, _) = self
            .commit(|current| {
                if current.get(Kind::Network, network).is_none() {
                    return Err(Error::NotFound(format!(
                        "Network \"{network}\" does not exist"
                    )));
                }
                let tokens =
                    ca::JoinTokens::parse(current.docs.get(docs::JOIN_TOKENS).map(|b| &b[..]));
                let (token, next) = tokens
                    .with_new(network, role, ttl, self.config.api_ca_sha256)
                    .map_err(|e| Error::Internal(e.to_string()))?;
                let change =
                    current.put_docs(vec![(docs::JOIN_TOKENS.to_string(), next.to_bytes())]);
                Ok((token, Some(change)))
            })
            .await?;
        Ok(token)
    }

    /// A node certificate, for a CSR with a join token or a current
    /// certificate as proof.
    pub fn issue_certificate(
        &self,
        req: &trellis_api::pki::CertificateRequest,
    ) -> Result<trellis_api::pki::IssuedCertificate, Error> {
        let state = self.current();
        let tokens = ca::JoinTokens::parse(state.docs.get(docs::JOIN_TOKENS).map(|b| &b[..]));
        self.ca
            .issue(req, &tokens, |n| state.get(Kind::Network, n).is_some())
            .map_err(ca_error)
    }

    /// The named API tokens, parsed again only when their document changed.
    pub fn api_tokens(&self) -> Arc<operators::ApiTokens> {
        let doc = self.current().docs.get(docs::API_TOKENS).cloned();
        let mut cached = self.api_tokens.lock().unwrap_or_else(|e| e.into_inner());
        let same = match (&cached.0, &doc) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        if !same {
            let parsed = operators::ApiTokens::parse(doc.as_deref()).unwrap_or_else(|e| {
                tracing::error!(error = %e, "named API tokens unreadable: none authenticates");
                operators::ApiTokens::default()
            });
            *cached = (doc, Arc::new(parsed));
        }
        cached.1.clone()
    }

    /// Makes a named API token; its text is in the answer only.
    pub async fn create_api_token(
        &self,
        req: &trellis_api::client::NewApiToken,
    ) -> Result<trellis_api::client::ApiToken, Error> {
        self.change_api_tokens(|tokens| tokens.with_new(req, now()))
            .await
    }

    pub async fn revoke_api_token(&self, name: &str) -> Result<(), Error> {
        self.change_api_tokens(|tokens| Ok(((), tokens.without(name)?)))
            .await
    }

    async fn change_api_tokens<T>(
        &self,
        change: impl Fn(
            &operators::ApiTokens,
        ) -> Result<(T, operators::ApiTokens), operators::OperatorError>,
    ) -> Result<T, Error> {
        use operators::OperatorError;
        let (answer, _) = self
            .commit(|current| {
                let tokens =
                    operators::ApiTokens::parse(current.docs.get(docs::API_TOKENS).map(|b| &b[..]))
                        .map_err(|e| Error::Internal(e.to_string()))?;
                let (answer, next) = change(&tokens).map_err(|e| match e {
                    OperatorError::Invalid(m) => Error::BadRequest(m),
                    OperatorError::Exists(_) => Error::Conflict(e.to_string()),
                    OperatorError::NotFound(_) => Error::NotFound(e.to_string()),
                    OperatorError::Corrupt(_) | OperatorError::Random(_) => {
                        Error::Internal(e.to_string())
                    }
                })?;
                let change =
                    current.put_docs(vec![(docs::API_TOKENS.to_string(), next.to_bytes())]);
                Ok((answer, Some(change)))
            })
            .await?;
        Ok(answer)
    }

    /// A new serving certificate for the API (DER chain, PKCS#8 key).
    pub fn serving_certificate(
        &self,
        names: &[String],
        lifetime: Duration,
    ) -> Result<(Vec<Vec<u8>>, Vec<u8>), Error> {
        self.ca
            .serving_certificate(names, lifetime)
            .map_err(|e| Error::Internal(e.to_string()))
    }

    /// A certificate for an HTTPS target, from the node CA (PEM).
    pub fn sign_server_certificate(&self, csr: &str, lifetime: Duration) -> Result<String, Error> {
        self.ca.sign_server(csr, lifetime).map_err(ca_error)
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// What the console draws now: the nodes' rates, splits and health,
    /// and the newest refusals.
    pub fn traffic(&self) -> traffic::TrafficView {
        let state = self.current();
        let mut view = self
            .traffic
            .view(|service| state.get(Kind::Service, service).map(|o| o.status.revision));
        view.revision = state.revision;
        view.refused = self.flows.newest_refused(REFUSED_SHOWN);
        view
    }

    pub fn current(&self) -> Arc<State> {
        self.state.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Makes `next` current; `reach` is what its commit reached.
    fn publish(&self, next: State, reach: reach::Reach) {
        let rev = next.revision;
        self.reach
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(rev, reach);
        *self.state.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
        self.revision.send_replace(rev);
    }

    /// Validates and applies `documents` as one change. With `scope`, every
    /// object the change touches must be within it (checked under the
    /// writer lock, against the state the change starts from).
    pub async fn apply(
        &self,
        documents: Vec<Value>,
        dry_run: bool,
        scope: Option<operators::EditScope>,
    ) -> Result<ApplyResponse, Error> {
        let count = documents.len();
        let (documents, scope) = (Arc::new(documents), Arc::new(scope));
        let mut attempt = 0;
        loop {
            let writer = self.writer.lock().await;
            let current = self.current();
            let settings = self.config.settings.clone();
            let keyring = self.keyring.clone();
            let (documents, scope) = (documents.clone(), scope.clone());
            // Validation is blocking work.
            let base = current.clone();
            let mut applied = tokio::task::spawn_blocking(move || {
                let mut applied = base
                    .apply(&documents, &settings, now(), dry_run)
                    .map_err(Error::Invalid)?;
                if let Some(scope) = scope.as_ref() {
                    for c in applied
                        .changes
                        .iter()
                        .filter(|c| c.action != ChangeAction::Unchanged)
                    {
                        let old = base.get(c.kind, &c.name).map(|o| &o.resource);
                        let new = applied.state.get(c.kind, &c.name).map(|o| &o.resource);
                        scope
                            .allows(c.kind, &c.name, old, new, &applied.state)
                            .map_err(Error::Denied)?;
                    }
                }
                if let (Some(commit), false) = (&mut applied.commit, dry_run) {
                    sealed::seal(&keyring, commit).map_err(|e| Error::Internal(e.to_string()))?;
                }
                Ok::<_, Error>(applied)
            })
            .await
            .map_err(|e| Error::Internal(format!("apply task failed: {e}")))??;
            let commit = match applied.commit.take() {
                Some(commit) if !dry_run => commit,
                _ => {
                    return Ok(ApplyResponse {
                        revision: current.revision,
                        changes: applied.changes,
                    });
                }
            };
            match self.store.commit(current.revision, &commit).await {
                Ok(()) => {
                    let reach = reach::Reach::of(&current, &applied.state, &commit);
                    let revision = applied.state.revision;
                    self.publish(applied.state, reach);
                    tracing::info!(revision, documents = count, "applied");
                    return Ok(ApplyResponse {
                        revision,
                        changes: applied.changes,
                    });
                }
                Err(e) => {
                    drop(writer);
                    self.after_failed_commit(e, current.revision, &mut attempt)
                        .await?
                }
            }
        }
    }

    /// After a commit on `base` the store refused: on a conflict (another
    /// control plane committed first) wait until this process has followed
    /// that commit, or load the store if following does not bring it soon,
    /// so the caller validates again on the new state, a few times; any
    /// other failure is the caller's error. The caller does not hold the
    /// writer lock (the follower needs it).
    async fn after_failed_commit(
        &self,
        e: store::StoreError,
        base: u64,
        attempt: &mut u32,
    ) -> Result<(), Error> {
        match e {
            store::StoreError::Conflict { .. } if *attempt < CONFLICT_RETRIES => {
                *attempt += 1;
                tracing::debug!(
                    base,
                    attempt,
                    "another control plane committed first; validating again on its state"
                );
                let mut revisions = self.revision.subscribe();
                let followed = tokio::time::timeout(FOLLOW_WAIT, revisions.wait_for(|r| *r > base))
                    .await
                    .is_ok_and(|r| r.is_ok());
                if !followed {
                    let _writer = self.writer.lock().await;
                    self.catch_up().await?;
                }
                // A random pause, growing with the attempts, so that
                // replicas racing in step fall out of step.
                let mut r = [0u8; 2];
                let _ = getrandom::fill(&mut r);
                let most = 5 * u64::from(*attempt);
                let pause = u64::from(u16::from_le_bytes(r)) % (most + 1);
                tokio::time::sleep(Duration::from_millis(pause)).await;
                Ok(())
            }
            store::StoreError::Conflict { base } => Err(Error::Conflict(format!(
                "other control planes kept committing first (the store moved past revision {base} {CONFLICT_RETRIES} times); try again"
            ))),
            store::StoreError::TooLarge(m) => Err(Error::TooLarge(m)),
            e => {
                tracing::error!(error = %e, "commit failed; state unchanged");
                Err(Error::Unavailable(e.to_string()))
            }
        }
    }

    /// Deletes an object; with `scope`, only one within it.
    pub async fn delete(
        &self,
        kind: Kind,
        name: &str,
        scope: Option<&operators::EditScope>,
    ) -> Result<u64, Error> {
        let ((), revision) = self
            .commit(|current| {
                if let (Some(scope), Some(old)) = (scope, current.get(kind, name)) {
                    scope
                        .allows(kind, name, Some(&old.resource), None, current)
                        .map_err(Error::Denied)?;
                }
                Ok(((), Some(current.delete(kind, name, now())?)))
            })
            .await?;
        tracing::info!(revision, %kind, name, "deleted");
        Ok(revision)
    }

    /// An object as the API shows it (keys hidden, certificates described).
    pub fn get(&self, kind: Kind, name: &str) -> Option<trellis_api::Object> {
        let now = now() as i64;
        self.current().get(kind, name).map(|o| o.shown(now))
    }

    /// `{"items": [...]}`, serialized.
    pub fn list(&self, kind: Kind) -> Bytes {
        let state = self.current();
        let now = now() as i64;
        let items: Vec<trellis_api::Object> = state.list(kind).map(|o| o.shown(now)).collect();
        Bytes::from(serde_json::to_vec(&serde_json::json!({ "items": items })).unwrap_or_default())
    }

    /// Makes what `change` makes of the current state durable, then
    /// current: `change` gives its answer and the next state with its
    /// commit, or none when there is nothing to commit. Made again on the
    /// new state when another control plane committed first.
    async fn commit<T>(
        &self,
        change: impl Fn(&Arc<State>) -> Result<(T, Option<(State, Commit)>), Error>,
    ) -> Result<(T, u64), Error> {
        let mut attempt = 0;
        loop {
            let writer = self.writer.lock().await;
            let current = self.current();
            let (answer, next) = change(&current)?;
            let Some((next, commit)) = next else {
                return Ok((answer, current.revision));
            };
            match self.store.commit(current.revision, &commit).await {
                Ok(()) => {
                    let reach = reach::Reach::of(&current, &next, &commit);
                    let revision = next.revision;
                    self.publish(next, reach);
                    return Ok((answer, revision));
                }
                Err(e) => {
                    drop(writer);
                    self.after_failed_commit(e, current.revision, &mut attempt)
                        .await?
                }
            }
        }
    }

    /// Follows the commits other control planes make to a shared store,
    /// for as long as the process runs: each becomes current here as it
    /// lands, and wakes this process's watchers. When following fails
    /// (etcd down, its history compacted), loads the whole state again and
    /// follows from there. Returns at once for a store only this process
    /// writes.
    pub async fn follow_store(self: Arc<Self>) {
        use std::sync::atomic::Ordering;
        let mut backoff = FOLLOW_BACKOFF_MIN;
        loop {
            let position = self.position.load(Ordering::SeqCst);
            let Some(mut commits) = self.store.follow(position) else {
                return;
            };
            while let Some(followed) = commits.recv().await {
                match followed {
                    Ok(f) => {
                        backoff = FOLLOW_BACKOFF_MIN;
                        self.in_contact(true);
                        let _writer = self.writer.lock().await;
                        if let Err(e) = self.absorb(f.commit) {
                            tracing::warn!(error = %e, "a commit from another control plane did not apply; loading the store again");
                            break;
                        }
                        self.position.fetch_max(f.position, Ordering::SeqCst);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "following the store failed; loading it again");
                        self.in_contact(false);
                        break;
                    }
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(FOLLOW_BACKOFF_MAX);
            let _writer = self.writer.lock().await;
            match self.catch_up().await {
                Ok(()) => self.in_contact(true),
                Err(e) => {
                    self.in_contact(false);
                    tracing::warn!(error = %e, "loading the store failed; trying again");
                }
            }
        }
    }

    fn in_contact(&self, yes: bool) {
        use std::sync::atomic::Ordering;
        if yes {
            if self.cut_off_since.swap(0, Ordering::SeqCst) != 0 {
                tracing::info!("in contact with the store again");
            }
        } else {
            let ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| d.as_millis().max(1) as u64);
            let _ = self
                .cut_off_since
                .compare_exchange(0, ms, Ordering::SeqCst, Ordering::SeqCst);
        }
    }

    /// How long this process has been cut off from a shared store (its
    /// state may be that much behind the others'), or `None` while it
    /// follows it.
    pub fn cut_off(&self) -> Option<Duration> {
        let since = self.cut_off_since.load(std::sync::atomic::Ordering::SeqCst);
        if since == 0 {
            return None;
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Some(Duration::from_millis(now.saturating_sub(since)))
    }

    /// Makes a commit another control plane made current here. One this
    /// process made (or already has) is skipped; one that does not follow
    /// on from the current revision is an error (load the store again).
    fn absorb(&self, commit: Commit) -> Result<(), store::StoreError> {
        let current = self.current();
        if commit.revision <= current.revision {
            return Ok(());
        }
        if commit.revision != current.revision + 1 {
            return Err(store::StoreError::Corrupt(format!(
                "revision {} follows {}, not {}",
                commit.revision,
                current.revision + 1,
                current.revision
            )));
        }
        let mut commit = commit;
        sealed::open_objects(&self.keyring, &mut commit.put)
            .map_err(|e| store::StoreError::Corrupt(e.to_string()))?;
        let mut keys = Vec::with_capacity(commit.keys_put.len());
        for (id, record) in &commit.keys_put {
            let key = self
                .keyring
                .load(id, record)
                .map_err(|e| store::StoreError::Corrupt(e.to_string()))?;
            keys.push(Arc::new(key));
        }
        let next = current.follow(commit.clone(), keys, &self.config.settings)?;
        let reach = reach::Reach::of(&current, &next, &commit);
        let revision = next.revision;
        self.publish(next, reach);
        tracing::info!(revision, "followed a commit from another control plane");
        Ok(())
    }

    /// Loads the whole state from the store and makes it current, if it is
    /// newer than what this process has. The caller holds the writer lock.
    async fn catch_up(&self) -> Result<(), Error> {
        let loaded = self
            .store
            .load()
            .await
            .map_err(|e| Error::Unavailable(e.to_string()))?;
        let position = loaded.position;
        let (next, _) = load_state(loaded, &self.keyring, &self.config.settings)
            .map_err(|e| Error::Internal(e.to_string()))?;
        self.position
            .fetch_max(position, std::sync::atomic::Ordering::SeqCst);
        if next.revision > self.current().revision {
            let revision = next.revision;
            self.publish(next, reach::Reach::All);
            tracing::info!(revision, "caught up with the store");
        }
        Ok(())
    }

    fn identity_exists(state: &State, identity: &str) -> Result<(), Error> {
        match state.get(Kind::Identity, identity) {
            Some(_) => Ok(()),
            None => Err(Error::NotFound(format!(
                "Identity \"{identity}\" does not exist"
            ))),
        }
    }

    /// Issues a key for `identity`. The answer is the only place its secret
    /// ever appears.
    pub async fn create_key(&self, identity: &str) -> Result<NewAccessKey, Error> {
        let (created, revision) = self
            .commit(|current| {
                Self::identity_exists(current, identity)?;
                let held = current
                    .keys
                    .values()
                    .filter(|k| k.identity == identity)
                    .count();
                if held >= MAX_KEYS_PER_IDENTITY {
                    return Err(Error::Conflict(format!(
                        "Identity \"{identity}\" already has {held} access keys, the most allowed; delete one first"
                    )));
                }
                let key = self
                    .keyring
                    .issue(identity, now())
                    .map_err(|e| Error::Internal(e.to_string()))?;
                let created = NewAccessKey {
                    access_key_id: key.id.clone(),
                    secret_access_key: key.secret.expose().to_string(),
                    identity: identity.to_string(),
                    create_date: key.created,
                };
                Ok((created, Some(current.put_key(key))))
            })
            .await?;
        tracing::info!(
            revision,
            identity,
            access_key_id = created.access_key_id,
            "access key created"
        );
        Ok(created)
    }

    pub fn list_keys(&self, identity: &str) -> Result<Vec<AccessKeyInfo>, Error> {
        let state = self.current();
        Self::identity_exists(&state, identity)?;
        Ok(state
            .keys
            .values()
            .filter(|k| k.identity == identity)
            .map(|k| k.info())
            .collect())
    }

    fn key_of(state: &State, identity: &str, id: &str) -> Result<Arc<keys::AccessKey>, Error> {
        state
            .keys
            .get(id)
            .filter(|k| k.identity == identity)
            .cloned()
            .ok_or_else(|| {
                Error::NotFound(format!("Identity \"{identity}\" has no access key {id}"))
            })
    }

    /// Activates or deactivates a key; a deactivated key stops verifying at
    /// the nodes' next snapshot.
    pub async fn set_key_status(
        &self,
        identity: &str,
        id: &str,
        status: KeyStatus,
    ) -> Result<AccessKeyInfo, Error> {
        let (info, revision) = self
            .commit(|current| {
                let key = Self::key_of(current, identity, id)?;
                if key.status == status {
                    return Ok((key.info(), None));
                }
                let changed = key.with_status(status);
                Ok((changed.info(), Some(current.put_key(changed))))
            })
            .await?;
        tracing::info!(
            revision,
            identity,
            access_key_id = id,
            ?status,
            "access key status changed"
        );
        Ok(info)
    }

    pub async fn delete_key(&self, identity: &str, id: &str) -> Result<u64, Error> {
        let ((), revision) = self
            .commit(|current| {
                Self::key_of(current, identity, id)?;
                match current.remove_key(id) {
                    Some(change) => Ok(((), Some(change))),
                    None => Err(Error::NotFound(format!("no access key {id}"))),
                }
            })
            .await?;
        tracing::info!(revision, identity, access_key_id = id, "access key deleted");
        Ok(revision)
    }

    /// Moves the revision on at start and at each UTC midnight while keys
    /// exist, so that every node gets signing keys derived for the new day
    /// (it holds yesterday's, today's and tomorrow's).
    pub async fn rotate_daily(self: Arc<Self>) {
        let mut derived_for = None;
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            let day = today();
            if derived_for == Some(day) {
                continue;
            }
            // Control planes sharing a store each move it once a day: a
            // few bumps where one would do, and none missed.
            let bumped = self
                .commit(|current| Ok(((), (!current.keys.is_empty()).then(|| current.bump()))))
                .await;
            match bumped {
                Ok(((), revision)) => {
                    tracing::info!(
                        revision,
                        date = trellis_api::keys::date_of_day(day),
                        "signing keys derived for a new day"
                    );
                    derived_for = Some(day);
                }
                Err(e) => {
                    tracing::warn!(error = ?e, "signing key rotation not committed; retrying")
                }
            }
        }
    }

    /// The network's snapshot; with `since`, waits up to `wait` for one whose
    /// revision is newer and returns `None` if none came. With `deltas`,
    /// a watcher holding `since` may be sent only what changed after it.
    pub async fn watch_snapshot(
        &self,
        network: &str,
        since: Option<u64>,
        wait: Duration,
        view: SnapshotView,
        deltas: bool,
    ) -> Result<Option<Arc<Encoded>>, Error> {
        if let Some(cut) = self.cut_off().filter(|c| *c >= STALE_WATCH) {
            // Nodes keep the snapshot they have and ask another replica.
            return Err(Error::Unavailable(format!(
                "this control plane has been cut off from its store for {}s: ask another replica",
                cut.as_secs()
            )));
        }
        let mut changes = self.revision.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let current = self.snapshot(network).await?;
            if since.is_none_or(|s| current.revision() > s) {
                let base = since.filter(|_| deltas);
                let answer = current
                    .answer(base, view)
                    .await
                    .map_err(|e| Error::Internal(format!("snapshot: {e}")))?;
                return Ok(Some(answer));
            }
            if self.draining() {
                return Ok(None);
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => continue,
                _ => return Ok(None),
            }
        }
    }

    /// How many network views this process has compiled: one per network a
    /// commit reaches, when it is next watched.
    pub fn views_compiled(&self) -> u64 {
        self.views_compiled
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Ends every watch now (nothing changed, ask again) and every later
    /// one at once: this process is handing over, and the watchers' next
    /// ask goes to the process that takes over.
    pub fn drain_watches(&self) {
        self.draining
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.revision.send_modify(|_| {});
    }

    /// Whether this process is handing over ([`ControlPlane::drain_watches`]).
    pub fn draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The network's view, compiled at most once per revision (and day).
    async fn snapshot(&self, network: &str) -> Result<Arc<views::View>, Error> {
        let state = self.current();
        if state.get(Kind::Network, network).is_none() {
            // Don't keep slots for networks that don't exist (or no longer do).
            self.snapshots
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(network);
            return Err(Error::NotFound(format!(
                "Network \"{network}\" does not exist"
            )));
        }
        let slot = self
            .snapshots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(network.to_string())
            .or_default()
            .clone();
        let day = today();
        let fresh = |v: &Arc<views::View>| v.compiled_at >= state.revision && v.day == day;
        if let Some(v) = slot.current().filter(fresh) {
            return Ok(v);
        }
        let _compiling = slot.compiling.lock().await;
        let previous = slot.current();
        if let Some(v) = previous.clone().filter(fresh) {
            return Ok(v);
        }
        // What changed for this network since the view it holds: nothing
        // (carry it), services and target groups (patch it), or more than
        // the log can say (compile it whole).
        let changes = previous.as_ref().filter(|v| v.day == day).and_then(|v| {
            self.reach
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .changes(network, v.compiled_at, state.revision)
        });
        if let (Some(v), Some(changed)) = (&previous, &changes) {
            if changed.is_empty() {
                let carried = Arc::new(v.carried(state.revision, day));
                *slot.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(carried.clone());
                tracing::debug!(
                    network,
                    revision = state.revision,
                    "view carried: no commit since reached this network"
                );
                return Ok(carried);
            }
        }
        let started = std::time::Instant::now();
        let at = state.revision;
        let patched = changes.is_some();
        let next = Arc::new(self.compile(network, state, day, previous, changes).await?);
        self.views_compiled
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(
            network,
            revision = at,
            services = next.services(),
            patched,
            elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
            "view compiled"
        );
        *slot.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(next.clone());
        Ok(next)
    }

    /// Compiles `network`'s view of `state`, following `previous`: patched
    /// with `changed` when given (what changed since `previous`), whole
    /// otherwise.
    async fn compile(
        &self,
        network: &str,
        state: Arc<State>,
        day: i64,
        previous: Option<Arc<views::View>>,
        changed: Option<snapshot::Changed>,
    ) -> Result<views::View, Error> {
        let unknown = || Error::NotFound(format!("Network \"{network}\" does not exist"));
        let (zone, region, name, ca) = (
            self.config.settings.zone.clone(),
            self.config.region.clone(),
            network.to_string(),
            self.ca_pem().to_string(),
        );
        let pools = vec![
            ipnet::IpNet::V4(self.config.settings.vip_pool_v4),
            ipnet::IpNet::V6(self.config.settings.vip_pool_v6),
        ];
        tokio::task::spawn_blocking(move || {
            let scope = snapshot::Scope {
                network: &name,
                zone: &zone,
                region: &region,
                day,
                trellis_ca: &ca,
            };
            let mut snap = match (&previous, &changed) {
                (Some(p), Some(changed)) => snapshot::patch(&state, &scope, p.snapshot(), changed),
                _ => snapshot::compile(&state, &scope),
            }?;
            snap.vip_pools = pools;
            Some(views::View::next(
                previous.as_deref(),
                snap,
                state.revision,
                day,
            ))
        })
        .await
        .map_err(|e| Error::Internal(format!("snapshot task failed: {e}")))?
        .ok_or_else(unknown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(kind: &str, name: &str, spec: Value) -> Value {
        json!({"apiVersion": "trellis.dev/v1alpha1", "kind": kind,
            "metadata": {"name": name}, "spec": spec})
    }

    /// Network `net` with its service network, a target group and a service
    /// forwarding to it with weight `w` (and 100 - w to a second group).
    fn network(net: &str, w: u32) -> Vec<Value> {
        let mut docs = vec![
            doc("Network", net, json!({})),
            doc(
                "ServiceNetwork",
                &format!("{net}-sn"),
                json!({"networks": [net]}),
            ),
        ];
        for g in ["a", "b"] {
            docs.push(doc(
                "TargetGroup",
                &format!("{net}-{g}"),
                json!({"network": net, "port": 8080, "targets": [{"address": "10.0.0.1"}]}),
            ));
        }
        docs.push(doc(
            "Service",
            &format!("{net}-web"),
            json!({"serviceNetworks": [format!("{net}-sn")], "listeners": [{"name": "web",
                "protocol": "HTTP", "defaultAction": {"forward": [
                    {"targetGroup": format!("{net}-a"), "weight": w},
                    {"targetGroup": format!("{net}-b"), "weight": 100 - w}]}}]}),
        ));
        docs
    }

    #[tokio::test]
    async fn a_change_compiles_only_the_views_it_reaches() {
        let dir = tempfile::tempdir().unwrap();
        let keyring = Keyring::open_or_create(&dir.path().join("secrets.key")).unwrap();
        let store = Arc::new(store::RedbStore::open(dir.path()).unwrap());
        let config = Config {
            data_dir: dir.path().to_path_buf(),
            listen: "127.0.0.1:0".parse().unwrap(),
            settings: state::Settings {
                zone: "trellis.internal".into(),
                vip_pool_v4: "169.254.171.0/24".parse().unwrap(),
                vip_pool_v6: "fd00:7472:6c73::/112".parse().unwrap(),
                vip_hold_secs: 900,
                max_state_bytes: usize::MAX,
            },
            region: "us-east-1".into(),
            max_body_bytes: 1 << 20,
            api_ca_sha256: [0; 32],
        };
        let opened = ControlPlane::load(
            store.as_ref(),
            &keyring,
            &config.settings,
            dir.path(),
            Duration::from_secs(3600),
        )
        .await
        .unwrap();
        let cp = ControlPlane::new(config, store, keyring, opened).unwrap();
        let nets = ["east", "west", "north"];
        let all: Vec<Value> = nets.iter().flat_map(|n| network(n, 90)).collect();
        cp.apply(all, false, None).await.unwrap();
        let first: Vec<_> = {
            let mut v = Vec::new();
            for n in nets {
                v.push(cp.snapshot(n).await.unwrap());
            }
            v
        };
        assert_eq!(cp.views_compiled(), 3);

        // A weight in east: east is compiled again, the others carried.
        cp.apply(network("east", 50), false, None).await.unwrap();
        for (n, before) in nets.iter().zip(&first) {
            let after = cp.snapshot(n).await.unwrap();
            assert_eq!(after.compiled_at, cp.current().revision);
            if *n == "east" {
                assert!(after.revision() > before.revision());
            } else {
                assert_eq!(after.revision(), before.revision());
            }
        }
        assert_eq!(cp.views_compiled(), 4);

        // An identity reaches every network.
        cp.apply(vec![doc("Identity", "ci", json!({}))], false, None)
            .await
            .unwrap();
        for n in nets {
            cp.snapshot(n).await.unwrap();
        }
        assert_eq!(cp.views_compiled(), 7);
    }
}
