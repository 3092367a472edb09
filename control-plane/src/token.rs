//! The API bearer token: generated on first start, kept in
//! `<data-dir>/api-token` with mode 0600.

use std::io;
use std::path::{Path, PathBuf};

pub const TOKEN_FILE: &str = "api-token";

pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(TOKEN_FILE)
}

/// Reads the token, creating it if missing.
pub fn load_or_create(data_dir: &Path) -> io::Result<String> {
    trellis_api::token::load_or_create(&path(data_dir))
}

/// Mode 0600, atomically (see [`trellis_api::persist::write_atomic`]).
pub(crate) fn write_private(file: &Path, contents: &[u8]) -> io::Result<()> {
    trellis_api::persist::write_atomic(file, contents, 0o600)
}
