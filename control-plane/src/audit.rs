//! The audit log: one record per mutating API call (apply, delete, access
//! keys, join tokens, node certificates), refused ones included, with who,
//! when, from where, what changed and the outcome, never a secret (no
//! request or response body is recorded, only kinds, names, ids and the
//! revision). Kept as JSON lines in `<data-dir>/audit.log` (mode 0600), each
//! record synced before the call is answered, so it survives a crash and a
//! restart; or, on a store several control planes share (etcd), in that
//! store, so one log holds every replica's calls.

use crate::store::{AuditStore, StoreError};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use trellis_api::client::AuditRecord as Record;

pub const FILE: &str = "audit.log";

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log {0}: {1}")]
    File(PathBuf, std::io::Error),
    #[error("audit log in the store: {0}")]
    Store(#[from] StoreError),
}

pub enum AuditLog {
    File { path: PathBuf, file: Mutex<File> },
    Shared(Arc<dyn AuditStore>),
}

impl AuditLog {
    /// The log in `shared` when the store keeps one, else the data dir's.
    pub fn open(
        data_dir: &Path,
        shared: Option<Arc<dyn AuditStore>>,
    ) -> Result<AuditLog, AuditError> {
        if let Some(shared) = shared {
            return Ok(AuditLog::Shared(shared));
        }
        let path = data_dir.join(FILE);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| AuditError::File(path.clone(), e))?;
        Ok(AuditLog::File {
            path,
            file: Mutex::new(file),
        })
    }

    /// Appends `record` durably (synced to disk, or committed by the store).
    pub async fn append(&self, record: &Record) -> Result<(), AuditError> {
        let mut line = serde_json::to_vec(record).unwrap_or_default();
        match self {
            AuditLog::File { path, file } => {
                line.push(b'\n');
                let file = file.lock().unwrap_or_else(|e| e.into_inner());
                (&*file)
                    .write_all(&line)
                    .and_then(|()| file.sync_data())
                    .map_err(|e| AuditError::File(path.clone(), e))
            }
            AuditLog::Shared(store) => Ok(store.append(record.time, line).await?),
        }
    }

    /// The records from `since` (Unix seconds) on, of `actor` if given, in
    /// order. A record that does not parse (a torn last write) is skipped.
    pub async fn read(&self, since: u64, actor: Option<&str>) -> Result<Vec<Record>, AuditError> {
        let keep = |r: &Record| r.time >= since && actor.is_none_or(|a| r.actor == a);
        match self {
            AuditLog::File { path, .. } => {
                let file = File::open(path).map_err(|e| AuditError::File(path.clone(), e))?;
                Ok(BufReader::new(file)
                    .lines()
                    .map_while(Result::ok)
                    .filter_map(|l| serde_json::from_str::<Record>(&l).ok())
                    .filter(keep)
                    .collect())
            }
            AuditLog::Shared(store) => Ok(store
                .read(since)
                .await?
                .iter()
                .filter_map(|b| serde_json::from_slice::<Record>(b).ok())
                .filter(keep)
                .collect()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[tokio::test]
    async fn records_survive_reopening_and_filter_by_time_and_actor() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path(), None).unwrap();
        let rec = |time, actor: &str| Record {
            time,
            actor: actor.into(),
            method: "POST".into(),
            path: "/v1/apply".into(),
            status: 200,
            ..Record::default()
        };
        log.append(&rec(10, "admin")).await.unwrap();
        log.append(&rec(20, "anonymous")).await.unwrap();
        drop(log);
        let log = AuditLog::open(dir.path(), None).unwrap();
        log.append(&rec(30, "admin")).await.unwrap();
        let times = |rs: Vec<Record>| rs.iter().map(|r| r.time).collect::<Vec<_>>();
        assert_eq!(times(log.read(0, None).await.unwrap()), [10, 20, 30]);
        assert_eq!(times(log.read(15, Some("admin")).await.unwrap()), [30]);
        let mode = std::fs::metadata(dir.path().join(FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
