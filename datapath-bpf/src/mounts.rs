//! bpffs and cgroup2: finding them in /proc/self/mountinfo and mounting
//! bpffs where pins should go. Mounting is done with mount(8), so this crate
//! needs no unsafe code.

use crate::Error;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The filesystem type of the mount that holds `path`.
pub fn fstype(path: &Path) -> Option<String> {
    let path = std::fs::canonicalize(path).ok()?;
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut best: Option<(usize, String)> = None;
    for line in info.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(mount_point) = fields.get(4) else {
            continue;
        };
        let mount_point = PathBuf::from(mount_point.replace("\\040", " "));
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let Some(fs) = fields.get(sep + 1) else {
            continue;
        };
        if path.starts_with(&mount_point) {
            let depth = mount_point.components().count();
            if best.as_ref().is_none_or(|(d, _)| depth >= *d) {
                best = Some((depth, fs.to_string()));
            }
        }
    }
    best.map(|(_, fs)| fs)
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
