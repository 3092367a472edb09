//! Durable state behind one small trait.
//!
//! The control plane keeps its state in memory and writes every change
//! through [`Store::commit`] as one transaction: a revision, the objects put
//! and deleted, and the VIP allocations. The embedded implementation is redb
//! (ACID, copy-on-write, fsync on commit), so a `kill -9` at any point leaves
//! the previous or the new revision, never a mix. A store on etcd would
//! implement the same trait with one etcd transaction per commit.

use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("{0} is in use by another control plane (the store is locked)")]
    Locked(PathBuf),
    #[error("cannot open the store {0}: {1}")]
    Open(PathBuf, #[source] redb::Error),
    #[error("store read failed: {0}")]
    Read(#[source] redb::Error),
    #[error("store commit failed: {0}")]
    Commit(#[source] redb::Error),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

/// One atomic change.
#[derive(Debug, Default)]
pub struct Commit {
    pub revision: u64,
    /// `Kind/name` to the object's JSON.
    pub put: Vec<(String, Vec<u8>)>,
    pub delete: Vec<String>,
    /// The VIP allocator's state, as JSON.
    pub vips: Vec<u8>,
    /// Access key id to its sealed record.
    pub keys_put: Vec<(String, Vec<u8>)>,
    pub keys_delete: Vec<String>,
}

/// Everything a store holds, read at start.
#[derive(Debug, Default)]
pub struct Loaded {
    pub revision: u64,
    pub objects: Vec<(String, Vec<u8>)>,
    pub vips: Option<Vec<u8>>,
    pub keys: Vec<(String, Vec<u8>)>,
}

pub trait Store: Send + Sync + 'static {
    fn load(&self) -> Result<Loaded, StoreError>;
    fn commit(&self, commit: &Commit) -> Result<(), StoreError>;
}

const OBJECTS: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("objects");
const META: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("meta");
/// Access keys, apart from the objects: `get` never lists them.
const KEYS: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("keys");
const REVISION: &str = "revision";
const VIPS: &str = "vips";

/// The embedded store: one redb file, `<data-dir>/state.redb`.
pub struct RedbStore {
    db: redb::Database,
}

impl RedbStore {
    pub fn open(data_dir: &Path) -> Result<RedbStore, StoreError> {
        let path = data_dir.join("state.redb");
        let db = redb::Database::create(&path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Locked(path.clone()),
            e => StoreError::Open(path.clone(), e.into()),
        })?;
        // Create the tables so that reads never meet a missing table.
        let init = || -> Result<(), redb::Error> {
            let txn = db.begin_write()?;
            txn.open_table(OBJECTS)?;
            txn.open_table(META)?;
            txn.open_table(KEYS)?;
            txn.commit()?;
            Ok(())
        };
        init().map_err(|e| StoreError::Open(path.clone(), e))?;
        Ok(RedbStore { db })
    }
}

impl Store for RedbStore {
    fn load(&self) -> Result<Loaded, StoreError> {
        use redb::{ReadableDatabase, ReadableTable};
        let read = || -> Result<Loaded, redb::Error> {
            let txn = self.db.begin_read()?;
            let meta = txn.open_table(META)?;
            let revision = match meta.get(REVISION)? {
                Some(v) => {
                    let bytes: [u8; 8] = v.value().try_into().unwrap_or([0; 8]);
                    u64::from_be_bytes(bytes)
                }
                None => 0,
            };
            let vips = meta.get(VIPS)?.map(|v| v.value().to_vec());
            let table = txn.open_table(OBJECTS)?;
            let mut objects = Vec::new();
            for entry in table.iter()? {
                let (k, v) = entry?;
                objects.push((k.value().to_string(), v.value().to_vec()));
            }
            let mut keys = Vec::new();
            for entry in txn.open_table(KEYS)?.iter()? {
                let (k, v) = entry?;
                keys.push((k.value().to_string(), v.value().to_vec()));
            }
            Ok(Loaded {
                revision,
                objects,
                vips,
                keys,
            })
        };
        read().map_err(StoreError::Read)
    }

    fn commit(&self, c: &Commit) -> Result<(), StoreError> {
        let write = || -> Result<(), redb::Error> {
            let txn = self.db.begin_write()?;
            {
                let mut objects = txn.open_table(OBJECTS)?;
                for (k, v) in &c.put {
                    objects.insert(k.as_str(), v.as_slice())?;
                }
                for k in &c.delete {
                    objects.remove(k.as_str())?;
                }
                let mut keys = txn.open_table(KEYS)?;
                for (k, v) in &c.keys_put {
                    keys.insert(k.as_str(), v.as_slice())?;
                }
                for k in &c.keys_delete {
                    keys.remove(k.as_str())?;
                }
                let mut meta = txn.open_table(META)?;
                meta.insert(REVISION, c.revision.to_be_bytes().as_slice())?;
                meta.insert(VIPS, c.vips.as_slice())?;
            }
            txn.commit()?;
            Ok(())
        };
        write().map_err(StoreError::Commit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_then_reload() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = RedbStore::open(dir.path()).unwrap();
            assert_eq!(s.load().unwrap().revision, 0);
            s.commit(&Commit {
                revision: 1,
                put: vec![
                    ("Network/a".into(), b"{}".to_vec()),
                    ("Network/b".into(), b"{}".to_vec()),
                ],
                delete: vec![],
                vips: b"{}".to_vec(),
                keys_put: vec![("TKIA1".into(), b"sealed".to_vec())],
                keys_delete: vec![],
            })
            .unwrap();
            s.commit(&Commit {
                revision: 2,
                put: vec![],
                delete: vec!["Network/a".into()],
                vips: b"{\"x\":1}".to_vec(),
                ..Commit::default()
            })
            .unwrap();
        }
        let s = RedbStore::open(dir.path()).unwrap();
        let l = s.load().unwrap();
        assert_eq!(l.revision, 2);
        assert_eq!(l.objects, vec![("Network/b".to_string(), b"{}".to_vec())]);
        assert_eq!(l.vips.as_deref(), Some(&b"{\"x\":1}"[..]));
        assert_eq!(l.keys, vec![("TKIA1".to_string(), b"sealed".to_vec())]);
    }

    #[test]
    fn second_opener_is_told_the_store_is_locked() {
        let dir = tempfile::tempdir().unwrap();
        let _first = RedbStore::open(dir.path()).unwrap();
        let err = RedbStore::open(dir.path()).err().unwrap();
        assert!(matches!(err, StoreError::Locked(_)), "{err}");
    }
}
