//! The shared store: etcd v3, for several control planes and no single
//! machine. Every key lives under one prefix, so installations can share an
//! etcd cluster:
//!
//! ```text
//! <prefix>state/meta/revision     the Trellis revision, in decimal
//! <prefix>state/meta/vips         the VIP allocator's state (JSON)
//! <prefix>state/objects/Kind/name an object (JSON, HTTPS keys sealed)
//! <prefix>state/keys/<id>         an access key's sealed record
//! <prefix>state/docs/<name>       an installation document (the node CA, tokens)
//! <prefix>audit/<time>-<nanos>-<random>  an audit record (JSON)
//! ```
//!
//! A commit is one etcd transaction guarded by `meta/revision` (compare and
//! swap), so of two control planes committing on the same base one wins and
//! the other is told [`StoreError::Conflict`]; the VIP allocations are in
//! the same transaction, so no VIP is handed out twice. Each transaction is
//! one etcd revision: a watch on the prefix yields the commits whole, which
//! is how each control plane follows the others ([`Store::follow`]).

use super::{AuditStore, Commit, Followed, Loaded, Pending, Store, StoreError};
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, GetResponse,
    Identity, KvClient, TlsOptions, Txn, TxnOp, TxnResponse, WatchClient, WatchOptions,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;

const REVISION: &str = "meta/revision";
const VIPS: &str = "meta/vips";
const OBJECTS: &str = "objects/";
const KEYS: &str = "keys/";
const DOCS: &str = "docs/";
/// Keys read per range request at load.
const PAGE: i64 = 1000;
/// Commits a follower may hold before the control plane takes them.
const FOLLOW_QUEUE: usize = 64;

/// How to reach etcd, as its own clients take it.
#[derive(Clone, Debug)]
pub struct EtcdOptions {
    pub endpoints: Vec<String>,
    /// Every key's prefix; ends with `/`.
    pub prefix: String,
    /// PEM of the CA that signed the members' certificates.
    pub ca: Option<Vec<u8>>,
    /// PEM certificate and key this control plane authenticates with.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// etcd user and password (etcd's own authentication).
    pub user: Option<(String, String)>,
    /// etcd's `--max-txn-ops`: the most operations one transaction may hold.
    pub max_txn_ops: usize,
    /// etcd's `--max-request-bytes`: the largest transaction it takes.
    pub max_request_bytes: usize,
    /// Every request's deadline: an unreachable or leaderless etcd fails a
    /// commit after this, it does not hang it.
    pub timeout: Duration,
    /// The largest response read (a load page, a watch message).
    pub max_response_bytes: usize,
    /// How long audit records are kept.
    pub audit_retention: Duration,
}

impl EtcdOptions {
    pub fn new(endpoints: Vec<String>, prefix: &str) -> EtcdOptions {
        let mut prefix = prefix.to_string();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        EtcdOptions {
            endpoints,
            prefix,
            ca: None,
            identity: None,
            user: None,
            max_txn_ops: 128,
            max_request_bytes: 1536 * 1024,
            timeout: Duration::from_secs(5),
            max_response_bytes: 64 << 20,
            audit_retention: Duration::from_secs(90 * 86_400),
        }
    }
}

pub struct EtcdStore {
    members: Arc<Members>,
    options: EtcdOptions,
    /// `<prefix>state/`: everything a commit writes.
    state: String,
    audit: Arc<EtcdAudit>,
}

/// A client per member, and the one requests go to until it fails: a
/// request that finds its member gone moves on to the next. (One client
/// balancing over all members keeps picking a member that refuses
/// connections: it never has requests in flight.)
struct Members {
    endpoints: Vec<String>,
    kv: Vec<KvClient>,
    watch: Vec<WatchClient>,
    current: AtomicUsize,
    /// How long a request may keep moving on.
    deadline: Duration,
}

impl Members {
    /// Runs `op` against the current member, moving on to the next while
    /// it fails in a way that says the member is gone or cut off, until
    /// `deadline`.
    async fn call<T, F, Fut>(&self, mut op: F) -> Result<T, etcd_client::Error>
    where
        F: FnMut(usize) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let until = tokio::time::Instant::now() + self.deadline;
        let mut pause = Duration::from_millis(10);
        loop {
            let at = self.current.load(Ordering::Relaxed);
            match op(at).await {
                Err(e) if gone(&e) && tokio::time::Instant::now() + pause < until => {
                    let next = (at + 1) % self.endpoints.len();
                    if self
                        .current
                        .compare_exchange(at, next, Ordering::Relaxed, Ordering::Relaxed)
                        .is_ok()
                    {
                        tracing::info!(from = self.endpoints[at], to = self.endpoints[next], error = %e, "etcd member unavailable; moving on");
                    }
                    // Once round all members: wait a little before the next.
                    if next == 0 {
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_millis(500));
                    }
                }
                done => return done,
            }
        }
    }

    /// A range read, on whichever member answers.
    async fn get(&self, from: &[u8], options: &GetOptions) -> Result<GetResponse, StoreError> {
        self.call(|at| {
            let (mut kv, from, options) = (self.kv[at].clone(), from.to_vec(), options.clone());
            async move { kv.get(from, Some(options)).await }
        })
        .await
        .map_err(etcd)
    }

    /// A transaction, on whichever member answers.
    async fn txn(&self, txn: &Txn) -> Result<TxnResponse, StoreError> {
        self.call(|at| {
            let (mut kv, txn) = (self.kv[at].clone(), txn.clone());
            async move { kv.txn(txn).await }
        })
        .await
        .map_err(etcd)
    }
}

fn etcd(e: etcd_client::Error) -> StoreError {
    StoreError::Etcd(e)
}

/// Whether the member is gone or cut off: it refused the connection, has
/// no leader, or the connection broke. Trying another member is safe for
/// every request this store makes: reads, and transactions guarded by the
/// revision (one that did land makes the next try fail its guard).
fn gone(e: &etcd_client::Error) -> bool {
    use tonic::Code;
    match e {
        // Cancelled: this member did not answer within its share of the
        // deadline (a member that died without closing the connection).
        etcd_client::Error::GRpcStatus(s) => matches!(
            s.code(),
            Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded
        ),
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        _ => false,
    }
}

/// The first key after every key that starts with `prefix`.
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

impl EtcdStore {
    /// Connects to the members in `options` (and checks that one answers).
    pub async fn connect(options: EtcdOptions) -> Result<EtcdStore, StoreError> {
        // A member gets half the deadline, so that one that hangs leaves
        // time to try another (a 20 MB transaction of 30,000 objects takes
        // about a second: docs/benchmarks.md).
        let per_member = (options.timeout / 2).max(Duration::from_secs(1));
        let mut connect = ConnectOptions::new()
            .with_timeout(per_member)
            .with_connect_timeout(per_member)
            .with_keep_alive(Duration::from_secs(10), options.timeout)
            // A member cut off from the others answers "no leader" at once
            // instead of serving what may be stale.
            .with_require_leader(true);
        if options.ca.is_some() || options.identity.is_some() {
            let mut tls = TlsOptions::new();
            if let Some(ca) = &options.ca {
                tls = tls.ca_certificate(Certificate::from_pem(ca));
            }
            if let Some((cert, key)) = &options.identity {
                tls = tls.identity(Identity::from_pem(cert, key));
            }
            connect = connect.with_tls(tls);
        }
        if let Some((user, password)) = &options.user {
            connect = connect.with_user(user, password);
        }
        let (mut kv, mut watch) = (Vec::new(), Vec::new());
        for endpoint in &options.endpoints {
            // Connects lazily: a member down now is tried when its turn comes.
            let client = Client::connect([endpoint], Some(connect.clone()))
                .await
                .map_err(etcd)?;
            kv.push(
                client
                    .kv_client()
                    .max_decoding_message_size(options.max_response_bytes),
            );
            watch.push(
                client
                    .watch_client()
                    .max_decoding_message_size(options.max_response_bytes),
            );
        }
        let members = Arc::new(Members {
            endpoints: options.endpoints.clone(),
            kv,
            watch,
            current: AtomicUsize::new(0),
            deadline: options.timeout,
        });
        // The revision exists from the start (0 in a new store), so that
        // every commit's guard compares it; this also proves a member
        // answers and the credentials hold.
        let state = format!("{}state/", options.prefix);
        let revision = format!("{state}{REVISION}");
        let new = Txn::new()
            .when([Compare::create_revision(
                revision.as_str(),
                CompareOp::Equal,
                0,
            )])
            .and_then([TxnOp::put(revision.as_str(), "0", None)]);
        members.txn(&new).await?;
        let audit = Arc::new(EtcdAudit {
            members: members.clone(),
            prefix: format!("{}audit/", options.prefix),
            retention: options.audit_retention,
            pruned_at: AtomicU64::new(0),
        });
        Ok(EtcdStore {
            members,
            options,
            state,
            audit,
        })
    }

    fn key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.state)
    }

    async fn load_now(&self) -> Result<Loaded, StoreError> {
        let prefix = self.state.as_str();
        let end = prefix_end(prefix);
        let mut loaded = Loaded::default();
        let mut from = prefix.as_bytes().to_vec();
        // Pages read at the first page's etcd revision: one consistent cut.
        let mut at = 0;
        loop {
            let mut options = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
            if at > 0 {
                options = options.with_revision(at);
            }
            let page = self.members.get(&from, &options).await?;
            if at == 0 {
                at = page.header().map_or(0, |h| h.revision());
            }
            for kv in page.kvs() {
                let key = kv.key_str().map_err(etcd)?;
                let Some(suffix) = key.strip_prefix(prefix) else {
                    continue;
                };
                match Entry::of(suffix) {
                    Some(Entry::Revision) => loaded.revision = revision_of(kv.value())?,
                    Some(Entry::Vips) => loaded.vips = Some(kv.value().to_vec()),
                    Some(Entry::Object(name)) => {
                        loaded.objects.push((name.to_string(), kv.value().to_vec()))
                    }
                    Some(Entry::Key(id)) => loaded.keys.push((id.to_string(), kv.value().to_vec())),
                    Some(Entry::Doc(name)) => {
                        loaded.docs.push((name.to_string(), kv.value().to_vec()))
                    }
                    None => {
                        return Err(StoreError::Corrupt(format!(
                            "{key}: not a Trellis key (is another program writing under {prefix}?)"
                        )));
                    }
                }
            }
            match page.kvs().last() {
                Some(last) if page.more() => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => break,
            }
        }
        loaded.position = u64::try_from(at).unwrap_or(0);
        Ok(loaded)
    }

    async fn commit_now(&self, base: u64, c: &Commit) -> Result<(), StoreError> {
        let ops = 2
            + c.put.len()
            + c.delete.len()
            + c.keys_put.len()
            + c.keys_delete.len()
            + c.docs_put.len();
        if ops > self.options.max_txn_ops {
            return Err(StoreError::TooLarge(format!(
                "this change is {ops} etcd operations and etcd takes at most {} in one \
                 transaction: raise --max-txn-ops on every etcd member and \
                 --etcd-max-txn-ops here, or apply in smaller parts",
                self.options.max_txn_ops
            )));
        }
        let bytes: usize = c
            .put
            .iter()
            .chain(&c.keys_put)
            .chain(&c.docs_put)
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>()
            + c.vips.len();
        if bytes > self.options.max_request_bytes {
            return Err(StoreError::TooLarge(format!(
                "this change is {bytes} bytes and etcd takes at most {} in one request: \
                 raise --max-request-bytes on every etcd member and --etcd-max-request-bytes \
                 here, or apply in smaller parts",
                self.options.max_request_bytes
            )));
        }
        let revision_key = self.key(REVISION);
        let guard = Compare::value(revision_key.as_str(), CompareOp::Equal, base.to_string());
        let mut then = Vec::with_capacity(ops);
        then.push(TxnOp::put(
            revision_key.as_str(),
            c.revision.to_string(),
            None,
        ));
        then.push(TxnOp::put(self.key(VIPS), c.vips.clone(), None));
        let put = |dir: &str, entries: &[super::Entry]| {
            entries
                .iter()
                .map(|(n, v)| TxnOp::put(self.key(&format!("{dir}{n}")), v.clone(), None))
                .collect::<Vec<_>>()
        };
        let delete = |dir: &str, names: &[String]| {
            names
                .iter()
                .map(|n| TxnOp::delete(self.key(&format!("{dir}{n}")), None))
                .collect::<Vec<_>>()
        };
        then.extend(put(OBJECTS, &c.put));
        then.extend(delete(OBJECTS, &c.delete));
        then.extend(put(KEYS, &c.keys_put));
        then.extend(delete(KEYS, &c.keys_delete));
        then.extend(put(DOCS, &c.docs_put));
        self.guarded(guard, then, base).await
    }
}

impl EtcdStore {
    /// Copies `everything` (another store's content) into this prefix,
    /// which must be empty: the objects, keys and documents in
    /// transactions of at most `--etcd-max-txn-ops`, each guarded by the
    /// revision still being 0, then the VIPs and the revision in a last one.
    /// Until that last one lands, a control plane sees an empty store.
    /// Control planes must not run against the prefix meanwhile.
    pub async fn import(&self, everything: Loaded) -> Result<(), StoreError> {
        let current = self.load_now().await?;
        if current.revision != 0 || !current.objects.is_empty() || !current.docs.is_empty() {
            return Err(StoreError::Corrupt(format!(
                "{} already holds a store (revision {}); import only into an empty prefix",
                self.options.prefix, current.revision
            )));
        }
        let revision_key = self.key(REVISION);
        let guard = || Compare::value(revision_key.as_str(), CompareOp::Equal, "0");
        let mut ops: Vec<TxnOp> = Vec::new();
        let entries = everything
            .objects
            .iter()
            .map(|(n, v)| (format!("{OBJECTS}{n}"), v))
            .chain(
                everything
                    .keys
                    .iter()
                    .map(|(n, v)| (format!("{KEYS}{n}"), v)),
            )
            .chain(
                everything
                    .docs
                    .iter()
                    .map(|(n, v)| (format!("{DOCS}{n}"), v)),
            );
        let (mut batch_bytes, most) = (0, self.options.max_txn_ops.max(1));
        let mut written = 0;
        for (key, value) in entries {
            let size = key.len() + value.len();
            if !ops.is_empty()
                && (ops.len() == most || batch_bytes + size > self.options.max_request_bytes)
            {
                written += ops.len();
                self.guarded(guard(), std::mem::take(&mut ops), 0).await?;
                tracing::info!(written, "imported");
                batch_bytes = 0;
            }
            batch_bytes += size;
            ops.push(TxnOp::put(self.key(&key), value.clone(), None));
        }
        if !ops.is_empty() {
            self.guarded(guard(), ops, 0).await?;
        }
        let last = vec![
            TxnOp::put(self.key(VIPS), everything.vips.unwrap_or_default(), None),
            TxnOp::put(revision_key.as_str(), everything.revision.to_string(), None),
        ];
        self.guarded(guard(), last, 0).await
    }

    /// `ops` in one transaction if `guard` holds; a conflict on `base` if
    /// it does not.
    async fn guarded(&self, guard: Compare, ops: Vec<TxnOp>, base: u64) -> Result<(), StoreError> {
        let txn = Txn::new().when([guard]).and_then(ops);
        let done = self.members.txn(&txn).await?;
        if !done.succeeded() {
            return Err(StoreError::Conflict { base });
        }
        Ok(())
    }
}

/// The audit log in etcd: a key per record, named by its time so a range
/// read returns them in order; records older than the retention are
/// deleted by whichever replica appends first each hour.
struct EtcdAudit {
    members: Arc<Members>,
    prefix: String,
    retention: Duration,
    /// When records were last pruned (Unix seconds).
    pruned_at: AtomicU64,
}

/// Most audit records one read returns.
const AUDIT_READ_MOST: usize = 100_000;

impl EtcdAudit {
    fn key(&self, time: u64, nanos: u32, tag: u32) -> String {
        format!("{}{time:020}-{nanos:09}-{tag:08x}", self.prefix)
    }

    async fn append_now(&self, time: u64, record: Vec<u8>) -> Result<(), StoreError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let mut tag = [0u8; 4];
        let _ = getrandom::fill(&mut tag);
        let key = self.key(time, now.subsec_nanos(), u32::from_le_bytes(tag));
        self.members
            .call(|at| {
                let (mut kv, key, record) =
                    (self.members.kv[at].clone(), key.clone(), record.clone());
                async move { kv.put(key, record, None).await }
            })
            .await
            .map_err(etcd)?;
        let pruned = self.pruned_at.load(Ordering::Relaxed);
        if time >= pruned + 3600
            && self
                .pruned_at
                .compare_exchange(pruned, time, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let before = self.key(time.saturating_sub(self.retention.as_secs()), 0, 0);
            let from = self.prefix.clone();
            let pruned = self
                .members
                .call(|at| {
                    let mut kv = self.members.kv[at].clone();
                    let options = etcd_client::DeleteOptions::new().with_range(before.clone());
                    let from = from.clone();
                    async move { kv.delete(from, Some(options)).await }
                })
                .await
                .map_err(etcd)?;
            if pruned.deleted() > 0 {
                tracing::info!(
                    records = pruned.deleted(),
                    "audit records past the retention deleted"
                );
            }
        }
        Ok(())
    }

    async fn read_now(&self, since: u64) -> Result<Vec<Vec<u8>>, StoreError> {
        let end = prefix_end(&self.prefix);
        let mut from = self.key(since, 0, 0).into_bytes();
        let mut out = Vec::new();
        loop {
            let options = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
            let page = self.members.get(&from, &options).await?;
            out.extend(page.kvs().iter().map(|kv| kv.value().to_vec()));
            match page.kvs().last() {
                Some(last) if page.more() && out.len() < AUDIT_READ_MOST => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => break,
            }
        }
        out.truncate(AUDIT_READ_MOST);
        Ok(out)
    }
}

impl AuditStore for EtcdAudit {
    fn append(&self, time: u64, record: Vec<u8>) -> Pending<'_, ()> {
        Box::pin(self.append_now(time, record))
    }

    fn read(&self, since: u64) -> Pending<'_, Vec<Vec<u8>>> {
        Box::pin(self.read_now(since))
    }
}

/// What a key under the prefix is.
enum Entry<'a> {
    Revision,
    Vips,
    Object(&'a str),
    Key(&'a str),
    Doc(&'a str),
}

impl Entry<'_> {
    fn of(suffix: &str) -> Option<Entry<'_>> {
        match suffix {
            REVISION => Some(Entry::Revision),
            VIPS => Some(Entry::Vips),
            s => s
                .strip_prefix(OBJECTS)
                .map(Entry::Object)
                .or_else(|| s.strip_prefix(KEYS).map(Entry::Key))
                .or_else(|| s.strip_prefix(DOCS).map(Entry::Doc)),
        }
    }
}

fn revision_of(value: &[u8]) -> Result<u64, StoreError> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| StoreError::Corrupt(format!("{REVISION} is {value:?}, not a number")))
}

/// Follows the prefix from etcd revision `after + 1`, sending each
/// transaction as the commit it was, until the watch fails or `tx` closes.
async fn follow(
    members: Arc<Members>,
    prefix: String,
    after: u64,
    tx: mpsc::Sender<Result<Followed, StoreError>>,
) {
    let start = i64::try_from(after).unwrap_or(i64::MAX).saturating_add(1);
    let options = WatchOptions::new().with_prefix().with_start_revision(start);
    let watch = members
        .call(|at| {
            let (mut w, prefix) = (members.watch[at].clone(), prefix.clone());
            let options = options.clone();
            async move { w.watch(prefix, Some(options)).await }
        })
        .await;
    let mut stream = match watch {
        Ok(s) => s,
        Err(e) => {
            let _ = tx.send(Err(etcd(e))).await;
            return;
        }
    };
    loop {
        let message = match stream.message().await {
            Ok(Some(m)) => m,
            Ok(None) => {
                let _ = tx
                    .send(Err(StoreError::Corrupt("the etcd watch ended".into())))
                    .await;
                return;
            }
            Err(e) => {
                let _ = tx.send(Err(etcd(e))).await;
                return;
            }
        };
        if message.canceled() {
            let why = match message.compact_revision() {
                0 => format!("the etcd watch was cancelled: {}", message.cancel_reason()),
                c => format!("etcd compacted its history past our position (to {c})"),
            };
            let _ = tx.send(Err(StoreError::Corrupt(why))).await;
            return;
        }
        // etcd sends a revision's events together, in order: each run of
        // one mod revision is one transaction, one commit.
        let mut pending: Option<(i64, Commit, bool)> = None;
        for event in message.events() {
            let Some(kv) = event.kv() else { continue };
            let at = kv.mod_revision();
            if pending.as_ref().is_some_and(|(r, ..)| *r != at) {
                if let Some(done) = pending.take() {
                    if tx.send(finish(done)).await.is_err() {
                        return;
                    }
                }
            }
            let (_, commit, seen_revision) =
                pending.get_or_insert_with(|| (at, Commit::default(), false));
            let key = String::from_utf8_lossy(kv.key());
            let Some(suffix) = key.strip_prefix(prefix.as_str()) else {
                continue;
            };
            let put = event.event_type() == EventType::Put;
            match (Entry::of(suffix), put) {
                (Some(Entry::Revision), true) => match revision_of(kv.value()) {
                    Ok(r) => {
                        commit.revision = r;
                        *seen_revision = true;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                },
                (Some(Entry::Vips), true) => commit.vips = kv.value().to_vec(),
                (Some(Entry::Object(name)), true) => {
                    commit.put.push((name.to_string(), kv.value().to_vec()))
                }
                (Some(Entry::Object(name)), false) => commit.delete.push(name.to_string()),
                (Some(Entry::Key(id)), true) => {
                    commit.keys_put.push((id.to_string(), kv.value().to_vec()))
                }
                (Some(Entry::Key(id)), false) => commit.keys_delete.push(id.to_string()),
                (Some(Entry::Doc(name)), true) => commit
                    .docs_put
                    .push((name.to_string(), kv.value().to_vec())),
                _ => {
                    let _ = tx
                        .send(Err(StoreError::Corrupt(format!(
                            "{key}: a write under the prefix that no control plane made"
                        ))))
                        .await;
                    return;
                }
            }
        }
        if let Some(done) = pending.take() {
            if tx.send(finish(done)).await.is_err() {
                return;
            }
        }
    }
}

/// A transaction's events as the commit they make; every commit moves
/// the revision, so one that does not was not written by a control plane.
fn finish((at, commit, seen_revision): (i64, Commit, bool)) -> Result<Followed, StoreError> {
    if !seen_revision {
        return Err(StoreError::Corrupt(format!(
            "etcd revision {at} changed Trellis keys without moving {REVISION}"
        )));
    }
    Ok(Followed {
        commit,
        position: u64::try_from(at).unwrap_or(0),
    })
}

impl Store for EtcdStore {
    fn load(&self) -> Pending<'_, Loaded> {
        Box::pin(self.load_now())
    }

    fn commit<'a>(&'a self, base: u64, commit: &'a Commit) -> Pending<'a, ()> {
        Box::pin(self.commit_now(base, commit))
    }

    fn follow(&self, position: u64) -> Option<mpsc::Receiver<Result<Followed, StoreError>>> {
        let (tx, rx) = mpsc::channel(FOLLOW_QUEUE);
        tokio::spawn(follow(
            self.members.clone(),
            self.state.clone(),
            position,
            tx,
        ));
        Some(rx)
    }

    fn audit(&self) -> Option<Arc<dyn AuditStore>> {
        Some(self.audit.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_told_apart() {
        assert!(matches!(Entry::of("meta/revision"), Some(Entry::Revision)));
        assert!(matches!(Entry::of("meta/vips"), Some(Entry::Vips)));
        assert!(matches!(
            Entry::of("objects/Service/web"),
            Some(Entry::Object("Service/web"))
        ));
        assert!(matches!(Entry::of("keys/TKIA1"), Some(Entry::Key("TKIA1"))));
        assert!(Entry::of("meta/other").is_none());
        assert_eq!(prefix_end("/trellis/"), b"/trellis0");
    }
}
