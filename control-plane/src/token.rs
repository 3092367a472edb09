//! Files only their owner reads: the data dir's copy of the admin API token
//! (`crate::docs`) and the legacy files it replaces.

use std::io;
use std::path::Path;

/// Mode 0600, atomically (see [`trellis_api::persist::write_atomic`]).
pub(crate) fn write_private(file: &Path, contents: &[u8]) -> io::Result<()> {
    trellis_api::persist::write_atomic(file, contents, 0o600)
}
