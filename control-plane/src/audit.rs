//! The audit log: one record per mutating API call (apply, delete, access
//! keys, join tokens, node certificates), refused ones included, with who,
//! when, from where, what changed and the outcome, never a secret (no
//! request or response body is recorded, only kinds, names, ids and the
//! revision). Kept as JSON lines in `<data-dir>/audit.log` (mode 0600), each
//! record synced before the call is answered, so it survives a crash and a
//! restart.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub use trellis_api::client::AuditRecord as Record;

pub const FILE: &str = "audit.log";

#[derive(Debug, thiserror::Error)]
#[error("audit log {0}: {1}")]
pub struct AuditError(PathBuf, std::io::Error);

pub struct AuditLog {
    path: PathBuf,
    file: Mutex<File>,
}

impl AuditLog {
    pub fn open(data_dir: &Path) -> Result<AuditLog, AuditError> {
        let path = data_dir.join(FILE);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| AuditError(path.clone(), e))?;
        Ok(AuditLog {
            path,
            file: Mutex::new(file),
        })
    }

    /// Appends `record` and syncs it to disk.
    pub fn append(&self, record: &Record) -> Result<(), AuditError> {
        let mut line = serde_json::to_vec(record).unwrap_or_default();
        line.push(b'\n');
        let file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        (&*file)
            .write_all(&line)
            .and_then(|()| file.sync_data())
            .map_err(|e| AuditError(self.path.clone(), e))
    }

    /// The records from `since` (Unix seconds) on, of `actor` if given, in
    /// order. A line that does not parse (a torn last write) is skipped.
    pub fn read(&self, since: u64, actor: Option<&str>) -> Result<Vec<Record>, AuditError> {
        let file = File::open(&self.path).map_err(|e| AuditError(self.path.clone(), e))?;
        Ok(BufReader::new(file)
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| serde_json::from_str::<Record>(&l).ok())
            .filter(|r| r.time >= since && actor.is_none_or(|a| r.actor == a))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn records_survive_reopening_and_filter_by_time_and_actor() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path()).unwrap();
        let rec = |time, actor: &str| Record {
            time,
            actor: actor.into(),
            method: "POST".into(),
            path: "/v1/apply".into(),
            status: 200,
            ..Record::default()
        };
        log.append(&rec(10, "admin")).unwrap();
        log.append(&rec(20, "anonymous")).unwrap();
        drop(log);
        let log = AuditLog::open(dir.path()).unwrap();
        log.append(&rec(30, "admin")).unwrap();
        let times = |rs: Vec<Record>| rs.iter().map(|r| r.time).collect::<Vec<_>>();
        assert_eq!(times(log.read(0, None).unwrap()), [10, 20, 30]);
        assert_eq!(times(log.read(15, Some("admin")).unwrap()), [30]);
        let mode = std::fs::metadata(dir.path().join(FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
