//! `trellis network`: what operating a network's nodes takes beyond its YAML.

use super::resources::ServerArgs;
use anyhow::{Context, Result};
use trellis_api::pki::Role;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Create a join token: a node (or, with `--role dns`, a standalone DNS
    /// server) started with `--join-token` gets its first certificate for
    /// NETWORK with it. It names the control plane's CA, so the node trusts
    /// no other. Printed once; it expires.
    JoinToken {
        network: String,
        /// What the certificates it gets may do: `node` (a node agent and
        /// gateway) or `dns` (read the network's names, no key).
        #[arg(long, value_enum, default_value_t = JoinRole::Node)]
        role: JoinRole,
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

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum JoinRole {
    Node,
    Dns,
}

pub async fn run(cmd: Command) -> Result<()> {
    match cmd {
        Command::JoinToken {
            network,
            role,
            ttl,
            output,
            server,
        } => {
            let token = server
                .client()?
                .create_join_token(&network, role.into(), ttl)
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

impl From<JoinRole> for Role {
    fn from(r: JoinRole) -> Role {
        match r {
            JoinRole::Node => Role::Node,
            JoinRole::Dns => Role::Dns,
        }
    }
}
