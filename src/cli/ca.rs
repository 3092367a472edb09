//! `trellis ca`: certificates from the control plane's CA for HTTPS targets
//! (target groups that trust the Trellis CA). The key is made here and
//! never leaves this host; the CA key never leaves the control plane.

use super::resources::ServerArgs;
use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Issue a server certificate for DNS names and IP addresses: writes
    /// OUT.pem (the certificate) and OUT.key (its key, mode 0600).
    Issue {
        /// DNS names and IP addresses the certificate is for.
        #[arg(required = true)]
        names: Vec<String>,
        /// Path prefix of the files written.
        #[arg(long)]
        out: PathBuf,
        /// How long it is valid (1 hour to 366 days).
        #[arg(long, default_value = "90d", value_parser = humantime::parse_duration)]
        ttl: Duration,
        #[command(flatten)]
        server: ServerArgs,
    },
}

pub async fn run(cmd: Command) -> Result<()> {
    let Command::Issue {
        names,
        out,
        ttl,
        server,
    } = cmd;
    let (cert_file, key_file) = (out.with_extension("pem"), out.with_extension("key"));
    for f in [&cert_file, &key_file] {
        if f.exists() {
            bail!("{} exists; pick another --out", f.display());
        }
    }
    let key = rcgen::KeyPair::generate().context("generating a key")?;
    let csr = rcgen::CertificateParams::new(names.clone())
        .and_then(|p| p.serialize_request(&key))
        .and_then(|c| c.pem())
        .with_context(|| format!("a request for {names:?}"))?;
    let certificate = server
        .client()?
        .sign_certificate(&csr, ttl)
        .await
        .context("signing the certificate")?;
    trellis_api::persist::write_atomic(&key_file, key.serialize_pem().as_bytes(), 0o600)
        .with_context(|| format!("writing {}", key_file.display()))?;
    trellis_api::persist::write_atomic(&cert_file, certificate.as_bytes(), 0o644)
        .with_context(|| format!("writing {}", cert_file.display()))?;
    println!("{} and {} written", cert_file.display(), key_file.display());
    Ok(())
}
