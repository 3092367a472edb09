//! Durable state behind one small trait.
//!
//! The control plane keeps its state in memory and writes every change
//! through [`Store::commit`] as one transaction: a revision, the objects put
//! and deleted, the VIP allocations, the sealed access keys and the
//! installation documents every replica shares (the node CA, the admin
//! token, the join and API token tables, see `docs`). A commit
//! names the revision it was validated against and lands only if the store
//! is still there, so two writers never both commit on the same base.
//!
//! Two implementations: [`RedbStore`], one file one process owns (the
//! default), and [`EtcdStore`], which any number of control planes share;
//! each follows the others' commits through [`Store::follow`].

mod etcd;
mod redb;

pub use self::etcd::{EtcdOptions, EtcdStore};
pub use self::redb::RedbStore;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use thiserror::Error;
use tokio::sync::mpsc;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("{0} is in use by another control plane (the store is locked)")]
    Locked(PathBuf),
    #[error("cannot open the store {0}: {1}")]
    Open(PathBuf, #[source] ::redb::Error),
    #[error("store read failed: {0}")]
    Read(#[source] ::redb::Error),
    #[error("store commit failed: {0}")]
    Commit(#[source] ::redb::Error),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// Another writer committed since the revision this commit was made
    /// from; nothing was written.
    #[error("the store moved past revision {base} (another control plane committed first)")]
    Conflict { base: u64 },
    #[error("etcd: {0}")]
    Etcd(#[source] etcd_client::Error),
    /// A commit larger than the store takes in one transaction.
    #[error("{0}")]
    TooLarge(String),
}

/// A stored name and its bytes.
pub type Entry = (String, Vec<u8>);

/// One atomic change.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Commit {
    pub revision: u64,
    /// `Kind/name` to the object's JSON.
    pub put: Vec<Entry>,
    pub delete: Vec<String>,
    /// The VIP allocator's state, as JSON.
    pub vips: Vec<u8>,
    /// Access key id to its sealed record.
    pub keys_put: Vec<Entry>,
    pub keys_delete: Vec<String>,
    /// Installation documents (the node CA, token tables), each whole.
    pub docs_put: Vec<Entry>,
}

/// Everything a store holds, read at start.
#[derive(Debug, Default)]
pub struct Loaded {
    pub revision: u64,
    pub objects: Vec<Entry>,
    pub vips: Option<Vec<u8>>,
    pub keys: Vec<Entry>,
    pub docs: Vec<Entry>,
    /// Where in the store this was read: [`Store::follow`] goes on from it.
    pub position: u64,
}

impl From<Loaded> for Commit {
    /// Everything a store holds as one commit: a copy into an empty store.
    fn from(l: Loaded) -> Commit {
        Commit {
            revision: l.revision,
            put: l.objects,
            delete: Vec::new(),
            vips: l.vips.unwrap_or_default(),
            keys_put: l.keys,
            keys_delete: Vec::new(),
            docs_put: l.docs,
        }
    }
}

/// A commit another control plane made, and where the store is after it.
#[derive(Debug)]
pub struct Followed {
    pub commit: Commit,
    pub position: u64,
}

/// What a store's operations return.
pub type Pending<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

pub trait Store: Send + Sync + 'static {
    fn load(&self) -> Pending<'_, Loaded>;
    /// Writes `commit` if the store is still at revision `base`, or fails
    /// with [`StoreError::Conflict`] and writes nothing.
    fn commit<'a>(&'a self, base: u64, commit: &'a Commit) -> Pending<'a, ()>;
    /// The commits made after `position` by whoever shares the store, in
    /// order, until an error (then load again and follow from there).
    /// `None` for a store only this process writes.
    fn follow(&self, position: u64) -> Option<mpsc::Receiver<Result<Followed, StoreError>>>;
    /// Where a store several control planes share keeps the audit log, so
    /// that one log holds every replica's calls; `None` for a store one
    /// process owns (its data dir keeps the log).
    fn audit(&self) -> Option<Arc<dyn AuditStore>> {
        None
    }
}

/// Audit records kept in a shared store.
pub trait AuditStore: Send + Sync + 'static {
    /// Keeps one record (JSON) made at `time` (Unix seconds).
    fn append(&self, time: u64, record: Vec<u8>) -> Pending<'_, ()>;
    /// The records from `since` (Unix seconds) on, oldest first.
    fn read(&self, since: u64) -> Pending<'_, Vec<Vec<u8>>>;
}
