//! The embedded store: one redb file, `<data-dir>/state.redb` (ACID,
//! copy-on-write, fsync on commit), so a `kill -9` at any point leaves the
//! previous or the new revision, never a mix. One process holds it at a time.

use super::{Commit, Loaded, Pending, Store, StoreError};
use std::path::Path;
use std::sync::Arc;

const OBJECTS: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("objects");
const META: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("meta");
/// Access keys, apart from the objects: `get` never lists them.
const KEYS: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("keys");
/// Installation documents, by name.
const DOCS: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("docs");
const REVISION: &str = "revision";
const VIPS: &str = "vips";

/// The embedded store: one redb file, `<data-dir>/state.redb`.
pub struct RedbStore {
    db: Arc<redb::Database>,
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
            txn.open_table(DOCS)?;
            txn.commit()?;
            Ok(())
        };
        init().map_err(|e| StoreError::Open(path.clone(), e))?;
        Ok(RedbStore { db: Arc::new(db) })
    }
}

impl RedbStore {
    fn load_now(db: &redb::Database) -> Result<Loaded, StoreError> {
        use redb::{ReadableDatabase, ReadableTable};
        let read = || -> Result<Loaded, redb::Error> {
            let txn = db.begin_read()?;
            let meta = txn.open_table(META)?;
            let revision = stored_revision(&meta)?;
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
            let mut docs = Vec::new();
            for entry in txn.open_table(DOCS)?.iter()? {
                let (k, v) = entry?;
                docs.push((k.value().to_string(), v.value().to_vec()));
            }
            Ok(Loaded {
                revision,
                objects,
                vips,
                keys,
                docs,
                position: revision,
            })
        };
        read().map_err(StoreError::Read)
    }

    fn commit_now(db: &redb::Database, base: u64, c: &Commit) -> Result<(), StoreError> {
        let write = || -> Result<Result<(), StoreError>, redb::Error> {
            let txn = db.begin_write()?;
            {
                let mut meta = txn.open_table(META)?;
                // One process owns the file, so this holds unless the
                // caller lost track of its own revisions.
                if stored_revision(&meta)? != base {
                    return Ok(Err(StoreError::Conflict { base }));
                }
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
                let mut docs = txn.open_table(DOCS)?;
                for (k, v) in &c.docs_put {
                    docs.insert(k.as_str(), v.as_slice())?;
                }
                meta.insert(REVISION, c.revision.to_be_bytes().as_slice())?;
                meta.insert(VIPS, c.vips.as_slice())?;
            }
            txn.commit()?;
            Ok(Ok(()))
        };
        write().map_err(StoreError::Commit)?
    }
}

fn stored_revision(
    meta: &impl redb::ReadableTable<&'static str, &'static [u8]>,
) -> Result<u64, redb::Error> {
    Ok(match meta.get(REVISION)? {
        Some(v) => u64::from_be_bytes(v.value().try_into().unwrap_or([0; 8])),
        None => 0,
    })
}

/// Reads and fsyncs are blocking work: they run on tokio's blocking pool.
impl Store for RedbStore {
    fn load(&self) -> Pending<'_, Loaded> {
        let db = self.db.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || Self::load_now(&db))
                .await
                .map_err(|e| StoreError::Corrupt(format!("store read task failed: {e}")))?
        })
    }

    fn commit<'a>(&'a self, base: u64, commit: &'a Commit) -> Pending<'a, ()> {
        let db = self.db.clone();
        let commit = commit.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || Self::commit_now(&db, base, &commit))
                .await
                .map_err(|e| StoreError::Corrupt(format!("store commit task failed: {e}")))?
        })
    }

    fn follow(
        &self,
        _position: u64,
    ) -> Option<tokio::sync::mpsc::Receiver<Result<super::Followed, StoreError>>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn commit_then_reload() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = RedbStore::open(dir.path()).unwrap();
            assert_eq!(s.load().await.unwrap().revision, 0);
            s.commit(
                0,
                &Commit {
                    revision: 1,
                    put: vec![
                        ("Network/a".into(), b"{}".to_vec()),
                        ("Network/b".into(), b"{}".to_vec()),
                    ],
                    delete: vec![],
                    vips: b"{}".to_vec(),
                    keys_put: vec![("TKIA1".into(), b"sealed".to_vec())],
                    keys_delete: vec![],
                    docs_put: vec![("ca.pem".into(), b"PEM".to_vec())],
                },
            )
            .await
            .unwrap();
            s.commit(
                1,
                &Commit {
                    revision: 2,
                    put: vec![],
                    delete: vec!["Network/a".into()],
                    vips: b"{\"x\":1}".to_vec(),
                    ..Commit::default()
                },
            )
            .await
            .unwrap();
        }
        let s = RedbStore::open(dir.path()).unwrap();
        let l = s.load().await.unwrap();
        assert_eq!(l.position, 2);
        assert_eq!(l.revision, 2);
        assert_eq!(l.objects, vec![("Network/b".to_string(), b"{}".to_vec())]);
        assert_eq!(l.vips.as_deref(), Some(&b"{\"x\":1}"[..]));
        assert_eq!(l.keys, vec![("TKIA1".to_string(), b"sealed".to_vec())]);
        assert_eq!(l.docs, vec![("ca.pem".to_string(), b"PEM".to_vec())]);
    }

    #[tokio::test]
    async fn a_commit_on_a_stale_base_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = RedbStore::open(dir.path()).unwrap();
        let one = Commit {
            revision: 1,
            put: vec![("Network/a".into(), b"{}".to_vec())],
            ..Commit::default()
        };
        s.commit(0, &one).await.unwrap();
        let err = s.commit(0, &one).await.unwrap_err();
        assert!(matches!(err, StoreError::Conflict { base: 0 }), "{err}");
        assert_eq!(s.load().await.unwrap().revision, 1);
    }

    #[test]
    fn second_opener_is_told_the_store_is_locked() {
        let dir = tempfile::tempdir().unwrap();
        let _first = RedbStore::open(dir.path()).unwrap();
        let err = RedbStore::open(dir.path()).err().unwrap();
        assert!(matches!(err, StoreError::Locked(_)), "{err}");
    }
}
