//! Process limits a server needs at scale.

/// Raises the open-file soft limit to the hard limit (a control plane holds
/// one descriptor per watching node; the default soft limit is often
/// 1,024) and returns the limit now in force.
pub fn raise_open_files() -> std::io::Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(hard)
}
