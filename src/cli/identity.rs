//! `trellis identity`: identities and their access keys.

use super::resources::ServerArgs;
use anyhow::Result;
use trellis_api::client::ClientError;
use trellis_api::keys::KeyStatus;
use trellis_api::{API_VERSION, Kind};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Create an identity (if it does not exist) and issue it an access key.
    /// The secret is printed now and never again.
    Create {
        name: String,
        #[arg(short = 'o', long, value_enum, default_value_t = KeyOutput::Text)]
        output: KeyOutput,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Issue another access key to an existing identity (for rotation).
    AddKey {
        name: String,
        #[arg(short = 'o', long, value_enum, default_value_t = KeyOutput::Text)]
        output: KeyOutput,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List an identity's access keys: ids, status, creation time. No secrets.
    Keys {
        name: String,
        #[arg(short = 'o', long, value_enum, default_value_t = KeyOutput::Text)]
        output: KeyOutput,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Stop a key from verifying (it can be activated again).
    Deactivate {
        name: String,
        key_id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Let a deactivated key verify again.
    Activate {
        name: String,
        key_id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Delete a key for good.
    DeleteKey {
        name: String,
        key_id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum KeyOutput {
    Text,
    Json,
}

pub async fn run(cmd: Command) -> Result<()> {
    match cmd {
        Command::Create {
            name,
            output,
            server,
        } => {
            let client = server.client()?;
            match client.get(Kind::Identity, &name).await {
                Ok(_) => {}
                Err(ClientError::Api { status, .. }) if status == http::StatusCode::NOT_FOUND => {
                    let doc = serde_json::json!({
                        "apiVersion": API_VERSION, "kind": "Identity",
                        "metadata": {"name": name}, "spec": {}
                    });
                    client.apply(&[doc], false).await?;
                }
                Err(e) => return Err(e.into()),
            }
            issue(&server, &name, output).await
        }
        Command::AddKey {
            name,
            output,
            server,
        } => issue(&server, &name, output).await,
        Command::Keys {
            name,
            output,
            server,
        } => {
            let keys = server.client()?.list_keys(&name).await?;
            match output {
                KeyOutput::Json => {
                    println!("{}", serde_json::json!({ "items": keys }));
                }
                KeyOutput::Text => {
                    println!("{:<22} {:<9} CREATED", "ACCESS KEY ID", "STATUS");
                    for k in keys {
                        let created = humantime::format_rfc3339_seconds(
                            std::time::UNIX_EPOCH + std::time::Duration::from_secs(k.create_date),
                        );
                        println!(
                            "{:<22} {:<9} {created}",
                            k.access_key_id,
                            format!("{:?}", k.status)
                        );
                    }
                }
            }
            Ok(())
        }
        Command::Deactivate {
            name,
            key_id,
            server,
        } => status(&server, &name, &key_id, KeyStatus::Inactive).await,
        Command::Activate {
            name,
            key_id,
            server,
        } => status(&server, &name, &key_id, KeyStatus::Active).await,
        Command::DeleteKey {
            name,
            key_id,
            server,
        } => {
            server.client()?.delete_key(&name, &key_id).await?;
            println!("access key {key_id} of identity {name} deleted");
            Ok(())
        }
    }
}

async fn issue(server: &ServerArgs, name: &str, output: KeyOutput) -> Result<()> {
    let key = server.client()?.create_key(name).await?;
    match output {
        KeyOutput::Json => println!(
            "{}",
            serde_json::json!({
                "AccessKeyId": key.access_key_id,
                "SecretAccessKey": key.secret_access_key,
            })
        ),
        KeyOutput::Text => {
            println!("identity:          {name}");
            println!(
                "principal:         {}{name}",
                trellis_api::keys::IDENTITY_PREFIX
            );
            println!("AccessKeyId:       {}", key.access_key_id);
            println!("SecretAccessKey:   {}", key.secret_access_key);
            println!("The secret is shown this once; store it now.");
        }
    }
    Ok(())
}

async fn status(server: &ServerArgs, name: &str, key_id: &str, status: KeyStatus) -> Result<()> {
    let info = server
        .client()?
        .set_key_status(name, key_id, status)
        .await?;
    println!(
        "access key {} of identity {name} is {:?}",
        info.access_key_id, info.status
    );
    Ok(())
}
