//! Who made a connection: the calling process's cgroup, which the datapath
//! records at `connect()` (`trellis_datapath::Callers`), named by its path
//! in the cgroup v2 hierarchy as `/proc/PID/cgroup` shows it
//! (`/system.slice/nginx.service`, `/system.slice/docker-<id>.scope`,
//! `/kubepods.slice/.../cri-containerd-<id>.scope`): the systemd unit, the
//! container or the pod it runs in.
//!
//! cgroup ids are the inode numbers of the cgroup directories, so the path of
//! an id is found by walking the redirected subtree; the walk is cached and
//! redone when an id is not known, which is how cgroups made after the last
//! walk are learnt (a redirected caller's cgroup is always in the subtree, so
//! a miss means a new cgroup). Walks take turns, and a connection that
//! waited for another's walk looks again before walking itself. A walk
//! rebuilds the whole index, so a removed cgroup is forgotten with it; ids
//! are not reused while the system runs.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use trellis_datapath::Callers;

/// A bound on the index, whatever the tree holds.
const MAX_CGROUPS: usize = 100_000;

impl std::fmt::Debug for Workloads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workloads")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

pub struct Workloads {
    callers: Callers,
    /// The redirected subtree (`--cgroup`).
    root: PathBuf,
    /// `root`'s own path in the hierarchy ("" for the hierarchy's root).
    prefix: String,
    index: RwLock<HashMap<u64, Arc<str>>>,
    /// Held while walking: one walk at a time.
    walking: Mutex<()>,
}

impl Workloads {
    /// Callers found under `root`, a cgroup v2 directory.
    pub fn new(callers: Callers, root: &Path) -> std::io::Result<Workloads> {
        let w = Workloads {
            callers,
            root: root.to_path_buf(),
            prefix: hierarchy_path(root)?,
            index: RwLock::default(),
            walking: Mutex::default(),
        };
        w.walk();
        Ok(w)
    }

    /// The cgroup of the process that connected from `peer`, while the
    /// connection is open; `None` when the datapath has no record of it.
    pub fn of(&self, peer: SocketAddr) -> Option<Arc<str>> {
        let id = self.callers.cgroup(peer)?;
        if let Some(path) = self.known(id) {
            return Some(path);
        }
        let _turn = self.walking.lock().unwrap_or_else(|e| e.into_inner());
        // Another connection's walk, while this one waited, may have found it.
        if let Some(path) = self.known(id) {
            return Some(path);
        }
        self.walk();
        self.known(id)
    }

    fn known(&self, id: u64) -> Option<Arc<str>> {
        let index = self.index.read().unwrap_or_else(|e| e.into_inner());
        index.get(&id).cloned()
    }

    /// Indexes every cgroup under the root by id.
    fn walk(&self) {
        let mut index = HashMap::new();
        let mut stack = vec![(self.root.clone(), self.prefix.clone())];
        while let Some((dir, path)) = stack.pop() {
            let Ok(meta) = std::fs::metadata(&dir) else {
                continue; // removed meanwhile
            };
            let name = if path.is_empty() { "/" } else { path.as_str() };
            index.insert(meta.ino(), Arc::from(name));
            if index.len() >= MAX_CGROUPS {
                tracing::warn!(
                    max = MAX_CGROUPS,
                    "cgroup tree too large; callers beyond it stay unnamed"
                );
                break;
            }
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    let child = format!("{path}/{}", e.file_name().to_string_lossy());
                    stack.push((e.path(), child));
                }
            }
        }
        *self.index.write().unwrap_or_else(|e| e.into_inner()) = index;
    }
}

/// `dir`'s path inside its cgroup v2 hierarchy: the part below the mount
/// point, found as the highest ancestor on the same filesystem.
fn hierarchy_path(dir: &Path) -> std::io::Result<String> {
    let dir = dir.canonicalize()?;
    let dev = std::fs::metadata(&dir)?.dev();
    let mut mount = dir.as_path();
    while let Some(parent) = mount.parent() {
        if std::fs::metadata(parent)?.dev() != dev {
            break;
        }
        mount = parent;
    }
    let below = dir.strip_prefix(mount).unwrap_or(Path::new(""));
    Ok(match below.to_string_lossy().as_ref() {
        "" => String::new(),
        p => format!("/{p}"),
    })
}
