//! bpffs and cgroup2: finding them in /proc/self/mountinfo and mounting
//! bpffs where pins should go. Mounting is done with mount(8), so this crate
//! needs no unsafe code.

use crate::Error;
use std::path::{Path, PathBuf};
use std::process::Command;

/// One line of /proc/self/mountinfo.
struct Mount {
    /// The mounted subtree of the filesystem (`/` for a whole filesystem).
    root: String,
    point: PathBuf,
    fstype: String,
}

fn mounts() -> Vec<Mount> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let sep = fields.iter().position(|f| *f == "-")?;
            Some(Mount {
                root: fields.get(3)?.to_string(),
                point: PathBuf::from(fields.get(4)?.replace("\\040", " ")),
                fstype: fields.get(sep + 1)?.to_string(),
            })
        })
        .collect()
}

/// The filesystem type of the mount that holds `path` (the last, deepest
/// mount whose mount point contains it).
pub fn fstype(path: &Path) -> Option<String> {
    let path = std::fs::canonicalize(path).ok()?;
    mounts()
        .into_iter()
        .filter(|m| path.starts_with(&m.point))
        .fold(None::<Mount>, |best, m| match best {
            Some(b) if b.point.components().count() > m.point.components().count() => Some(b),
            _ => Some(m),
        })
        .map(|m| m.fstype)
}

/// Makes sure `dir` exists on a bpffs, mounting one on its parent if needed
/// (`/sys/fs/bpf` on hosts where nothing mounted it).
pub fn ensure_bpffs(dir: &Path) -> Result<(), Error> {
    let parent = dir.parent().unwrap_or(dir);
    std::fs::create_dir_all(parent).map_err(|e| Error::Io(parent.to_path_buf(), e))?;
    if fstype(parent).as_deref() != Some("bpf") {
        let out = Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(parent)
            .output()
            .map_err(|e| Error::Mount(parent.to_path_buf(), e.to_string()))?;
        if !out.status.success() {
            return Err(Error::Mount(
                parent.to_path_buf(),
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ));
        }
        tracing::info!(path = %parent.display(), "mounted bpffs");
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::Io(dir.to_path_buf(), e))
}

/// Fails unless `dir` is a directory of a cgroup v2 hierarchy.
pub fn check_cgroup2(dir: &Path) -> Result<(), Error> {
    match fstype(dir) {
        Some(fs) if fs == "cgroup2" => Ok(()),
        found => Err(Error::NotCgroup2(
            dir.to_path_buf(),
            found.unwrap_or_else(|| "nothing".into()),
        )),
    }
}

/// Where the unified cgroup v2 hierarchy is mounted; mounts one at
/// `/run/trellis/cgroup2` when the host has none (hosts with only v1
/// controllers mounted, as some CI machines).
pub fn default_cgroup2() -> Result<PathBuf, Error> {
    // The hierarchy's root, not a bind mount of a subtree.
    if let Some(m) = mounts()
        .into_iter()
        .find(|m| m.fstype == "cgroup2" && m.root == "/")
    {
        return Ok(m.point);
    }
    let dir = PathBuf::from("/run/trellis/cgroup2");
    std::fs::create_dir_all(&dir).map_err(|e| Error::Io(dir.clone(), e))?;
    let out = Command::new("mount")
        .args(["-t", "cgroup2", "none"])
        .arg(&dir)
        .output()
        .map_err(|e| Error::Mount(dir.clone(), e.to_string()))?;
    if !out.status.success() {
        return Err(Error::Mount(
            dir,
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    tracing::info!(path = %dir.display(), "mounted a cgroup2 hierarchy");
    Ok(dir)
}
