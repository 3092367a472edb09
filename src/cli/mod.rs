//! Subcommands of the `trellis` binary.

pub mod audit;
pub mod ca;
pub mod control_plane;
pub mod datapath;
pub mod demo;
pub mod dns;
pub mod identity;
pub mod import;
pub mod network;
pub mod node;
pub mod observe;
pub mod reload;
pub mod resources;
pub mod token;

use anyhow::Context;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use std::time::{SystemTime, UNIX_EPOCH};
use trellis_api::client::{Client, Credential, Trust};
use trellis_api::identity::Identity;
use trellis_api::pki::{JoinSecret, Role};

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

/// The CA an operator's CLI verifies the control plane by: `file`, else the
/// default data dir's `ca.pem` (on the control plane's host).
pub fn read_trust(file: Option<&Path>) -> anyhow::Result<Trust> {
    let local = Path::new(DEFAULT_DATA_DIR).join("ca.pem");
    let path = file.unwrap_or(&local);
    let pem = std::fs::read_to_string(path).with_context(|| {
        format!(
            "reading the control plane's CA {} (pass --ca-file or TRELLIS_CA_FILE: the control plane's <data-dir>/ca.pem)",
            path.display()
        )
    })?;
    Trust::from_pem(&pem).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Trust in the one CA whose certificate has this SHA-256 (hex, optionally
/// `sha256:`-prefixed).
pub fn pinned_trust(hash: &str) -> anyhow::Result<Trust> {
    let hex = hash.trim().trim_start_matches("sha256:");
    let bytes = trellis_api::trust::parse_sha256(hex)
        .ok_or_else(|| anyhow::anyhow!("--ca-hash: expected 64 hex digits, got {hash:?}"))?;
    Ok(Trust::pin(bytes))
}

/// An operator's client: `trust` for the server, the token from
/// [`read_token`].
pub fn operator_client(
    server: &str,
    trust: Trust,
    token_file: Option<&Path>,
    timeout: std::time::Duration,
) -> anyhow::Result<Client> {
    let credential = match read_token(token_file)? {
        Some(t) => Credential::Token(t),
        None => Credential::None,
    };
    Ok(Client::new(server, trust, credential, timeout)?)
}

/// How a node or DNS server reaches the control plane: no token, only its
/// certificate.
#[derive(clap::Args, Clone, Debug)]
pub struct MemberArgs {
    /// Control plane URL.
    #[arg(long, env = "TRELLIS_SERVER", default_value = "https://127.0.0.1:7070")]
    pub control_plane: String,
    /// A join token (`trellis network join-token`): the first certificate
    /// is got with it, then renewed on its own. Needed once; the
    /// certificate is kept in --data-dir.
    #[arg(long, env = "TRELLIS_JOIN_TOKEN")]
    pub join_token: Option<String>,
    /// The CA of the API's certificate, when the control plane serves one
    /// of the operator's (--tls-cert-file); by default the node CA it
    /// issued this host's certificate with.
    #[arg(long)]
    pub control_plane_ca: Option<std::path::PathBuf>,
}

impl MemberArgs {
    /// This host's identity as `role` of `network` (kept in `dir`, or got
    /// with the join token from a control plane that proves it holds the
    /// CA the token names), and a client that shows it.
    pub async fn join(
        &self,
        role: Role,
        network: &str,
        dir: &Path,
    ) -> anyhow::Result<(Arc<Identity>, Client)> {
        let timeout = Duration::from_secs(10);
        let configured = match &self.control_plane_ca {
            Some(f) => Some(read_trust(Some(f))?),
            None => None,
        };
        let secret = match &self.join_token {
            Some(t) => {
                Some(JoinSecret::parse(t).map_err(|e| anyhow::anyhow!("--join-token: {e}"))?)
            }
            None => None,
        };
        let enroll_trust = match (&configured, &secret) {
            (Some(t), _) => t.clone(),
            (None, Some(s)) => Trust::pin(s.ca_sha256),
            // Nothing to call with: Identity::enroll needs a kept certificate.
            (None, None) => Trust::pin([0; 32]),
        };
        let enroll = Client::new(&self.control_plane, enroll_trust, Credential::None, timeout)?;
        let identity = Identity::enroll(
            &enroll,
            role,
            network,
            dir,
            secret.as_ref().map(|s| s.secret.as_str()),
        )
        .await?;
        let trust = match configured {
            Some(t) => t,
            None => Trust::from_pem(&identity.ca_pem())
                .map_err(|e| anyhow::anyhow!("the CA kept with this host's certificate: {e}"))?,
        };
        let client = Client::new(&self.control_plane, trust, identity.credential(), timeout)?;
        Ok((identity, client))
    }
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
    // Colours for a terminal only: a log file or journal gets plain text.
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
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
