//! `trellis token`: named API tokens with roles, for operators and CI.

use super::resources::ServerArgs;
use anyhow::{Context, Result};
use std::time::{Duration, UNIX_EPOCH};
use trellis_api::client::{NewApiToken, TokenRole};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Create a token; its text is printed once (keep it: only its hash is stored).
    Create {
        name: String,
        #[arg(long, value_enum)]
        role: Role,
        /// Where the role applies: `servicenetwork/NAME` or `network/NAME`
        /// (editor), `identity/NAME` (key-manager). Repeatable.
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// How long it is accepted.
        #[arg(long, default_value = "30d", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// `text` prints the token alone (for `$(...)`); `json` the whole record.
        #[arg(short = 'o', long, value_enum, default_value_t = super::identity::KeyOutput::Text)]
        output: super::identity::KeyOutput,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List tokens: names, roles, scopes, expiry (never the tokens).
    List {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Revoke a token: refused from the next request on.
    Revoke {
        name: String,
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Role {
    Admin,
    Editor,
    KeyManager,
    Viewer,
}

impl From<Role> for TokenRole {
    fn from(r: Role) -> TokenRole {
        match r {
            Role::Admin => TokenRole::Admin,
            Role::Editor => TokenRole::Editor,
            Role::KeyManager => TokenRole::KeyManager,
            Role::Viewer => TokenRole::Viewer,
        }
    }
}

pub async fn run(cmd: Command) -> Result<()> {
    match cmd {
        Command::Create {
            name,
            role,
            scopes,
            ttl,
            output,
            server,
        } => {
            let req = NewApiToken {
                name: name.clone(),
                role: role.into(),
                scopes,
                ttl_seconds: ttl.as_secs(),
            };
            let created = server
                .client()?
                .create_token(&req)
                .await
                .with_context(|| format!("creating token {name}"))?;
            match output {
                super::identity::KeyOutput::Text => {
                    println!("{}", created.token.unwrap_or_default())
                }
                super::identity::KeyOutput::Json => {
                    println!("{}", serde_json::to_string_pretty(&created)?)
                }
            }
        }
        Command::List { server } => {
            let tokens = server.client()?.list_tokens().await?;
            println!("{:<20} {:<12} {:<40} EXPIRES", "NAME", "ROLE", "SCOPES");
            for t in tokens {
                let expires = humantime::format_rfc3339_seconds(
                    UNIX_EPOCH + Duration::from_secs(t.expires_at),
                );
                let scopes = if t.scopes.is_empty() {
                    "-".to_string()
                } else {
                    t.scopes.join(",")
                };
                println!(
                    "{:<20} {:<12} {scopes:<40} {expires}",
                    t.name,
                    t.role.as_str()
                );
            }
        }
        Command::Revoke { name, server } => {
            server
                .client()?
                .revoke_token(&name)
                .await
                .with_context(|| format!("revoking token {name}"))?;
            println!("token {name} revoked");
        }
    }
    Ok(())
}
