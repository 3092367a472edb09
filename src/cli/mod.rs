//! Subcommands of the `trellis` binary.

pub mod audit;
pub mod control_plane;
pub mod datapath;
pub mod demo;
pub mod dns;
pub mod identity;
pub mod network;
pub mod node;
pub mod resources;

use anyhow::Context;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// The control plane's data dir unless `--data-dir` says otherwise.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/trellis";

/// The API token: from `--token-file`, else `TRELLIS_TOKEN`, else the
/// default data dir's `api-token` when this user may read it (root, or the
/// control plane's own user), so local use needs no flag. Else none, and the
/// control plane answers 401 with what to pass.
pub fn read_token(file: Option<&Path>) -> anyhow::Result<Option<String>> {
    if let Some(file) = file {
        let t = std::fs::read_to_string(file)
            .with_context(|| format!("reading the token file {}", file.display()))?;
        return Ok(Some(t.trim().to_string()));
    }
    if let Some(t) = std::env::var("TRELLIS_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
    {
        return Ok(Some(t));
    }
    let local = Path::new(DEFAULT_DATA_DIR).join("api-token");
    Ok(std::fs::read_to_string(local)
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty()))
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Logs go to stderr, so that command output on stdout stays machine-readable.
pub fn init_logging(filter: &str, format: LogFormat) {
    // hickory logs every query at info; our own per-query line is at debug.
    let filter = if filter.contains("hickory") {
        filter.to_string()
    } else {
        format!("{filter},hickory_server=warn")
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
