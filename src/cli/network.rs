//! `trellis network`: what operating a network's nodes takes beyond its YAML.

use super::resources::ServerArgs;
use anyhow::{Context, Result};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Create a join token: a node started with `--join-token` gets its
    /// first certificate for NETWORK with it. Printed once; it expires.
    JoinToken {
        network: String,
        /// How long the token is accepted.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
        /// `text` prints the token alone (for `$(...)`); `json` adds the
        /// network and expiry.
        #[arg(short = 'o', long, value_enum, default_value_t = super::identity::KeyOutput::Text)]
        output: super::identity::KeyOutput,
        #[command(flatten)]
        server: ServerArgs,
    },
}

pub async fn run(cmd: Command) -> Result<()> {
    match cmd {
        Command::JoinToken {
            network,
            ttl,
            output,
            server,
        } => {
            let token = server
                .client()?
                .create_join_token(&network, ttl)
                .await
                .with_context(|| format!("creating a join token for network {network}"))?;
            match output {
                super::identity::KeyOutput::Text => println!("{}", token.token),
                super::identity::KeyOutput::Json => {
                    println!("{}", serde_json::to_string_pretty(&token)?)
                }
            }
            Ok(())
        }
    }
}
