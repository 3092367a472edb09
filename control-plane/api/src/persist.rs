//! Files that must never be seen half-written.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Writes `contents` to `path` with `mode` through a temporary file that is
/// synced and renamed over it: a crash leaves the old file or the new one,
/// never half of one.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(contents)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// A directory that holds keys, tokens or snapshots is open to its owner
/// only: created 0700, and refused, with the fix, when it or a file in it
/// is open to group or others (a node's snapshot carries signing keys).
#[derive(Debug, thiserror::Error)]
pub enum Exposed {
    #[error(
        "{path} is open to group or others (mode {mode:03o}); it holds keys: run `chmod {want:o} {path}`"
    )]
    Mode { path: PathBuf, mode: u32, want: u32 },
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
}

/// Creates `dir` (mode 0700) if missing, then checks it and the files in it.
pub fn private_dir(dir: &Path) -> Result<(), Exposed> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |e| Exposed::Io(p, e)
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(dir))?;
    check_mode(dir, 0o700)?;
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        let meta = std::fs::symlink_metadata(&path).map_err(io(&path))?;
        if meta.is_file() {
            check_mode(&path, 0o600)?;
        }
    }
    Ok(())
}

fn check_mode(path: &Path, want: u32) -> Result<(), Exposed> {
    let meta = std::fs::metadata(path).map_err(|e| Exposed::Io(path.to_path_buf(), e))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Exposed::Mode {
            path: path.to_path_buf(),
            mode,
            want,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn private_dirs_are_created_0700_and_open_ones_refused_with_the_fix() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/node");
        private_dir(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);

        write_atomic(&dir.join("snapshot.json"), b"{}", 0o600).unwrap();
        private_dir(&dir).unwrap();

        set(&dir.join("snapshot.json"), 0o644);
        let e = private_dir(&dir).unwrap_err().to_string();
        assert!(
            e.contains("snapshot.json is open to group or others (mode 644)"),
            "{e}"
        );
        assert!(e.contains("chmod 600"), "{e}");
        set(&dir.join("snapshot.json"), 0o600);

        set(&dir, 0o755);
        let e = private_dir(&dir).unwrap_err().to_string();
        assert!(e.contains("chmod 700"), "{e}");
    }
}
