//! The API bearer token: generated on first start, kept in
//! `<data-dir>/api-token` with mode 0600.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

pub const TOKEN_FILE: &str = "api-token";

pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(TOKEN_FILE)
}

/// Reads the token, creating it if missing. Creation writes a temporary
/// file and renames it, so a crash never leaves a partial token.
pub fn load_or_create(data_dir: &Path) -> io::Result<String> {
    let file = path(data_dir);
    match fs::read_to_string(&file) {
        Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(|e| io::Error::other(e.to_string()))?;
    let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let mut contents = token.clone().into_bytes();
    contents.push(b'\n');
    write_private(&file, &contents)?;
    Ok(token)
}

/// Mode 0600, atomically (see [`trellis_api::persist::write_atomic`]).
pub(crate) fn write_private(file: &Path, contents: &[u8]) -> io::Result<()> {
    trellis_api::persist::write_atomic(file, contents, 0o600)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn created_once_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create(dir.path()).unwrap();
        assert_eq!(a.len(), 64);
        let mode = fs::metadata(path(dir.path())).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(load_or_create(dir.path()).unwrap(), a);
    }
}
