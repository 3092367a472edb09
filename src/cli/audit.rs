//! `trellis audit`: what was changed through the API, by whom, when.

use super::resources::ServerArgs;
use anyhow::{Context, Result};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(clap::Args)]
pub struct Args {
    /// Only records younger than this (`1h`, `7d`); default all.
    #[arg(long, value_parser = humantime::parse_duration)]
    since: Option<Duration>,
    /// Only records of this actor: `admin` (the bootstrap token),
    /// `token/NAME`, `node/NETWORK`, `dns/NETWORK`, `join-token`,
    /// `certificate` (a renewal), `anonymous`.
    #[arg(long)]
    actor: Option<String>,
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
    output: Output,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
}

pub async fn run(args: Args) -> Result<()> {
    let since = args.since.map_or(0, |d| {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        now.saturating_sub(d).as_secs()
    });
    let records = args
        .server
        .client()?
        .audit(since, args.actor.as_deref())
        .await
        .context("reading the audit log")?;
    match args.output {
        Output::Json => {
            let items = serde_json::json!({ "items": records });
            println!("{}", serde_json::to_string_pretty(&items)?);
        }
        Output::Text => {
            for r in records {
                let when =
                    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(r.time));
                let revision = r
                    .revision
                    .map(|v| format!(" revision {v}"))
                    .unwrap_or_default();
                println!(
                    "{when} {} from {} {} {} -> {}{revision}{}",
                    r.actor,
                    r.peer,
                    r.method,
                    r.path,
                    r.status,
                    if r.changes.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", r.changes.join(", "))
                    }
                );
            }
        }
    }
    Ok(())
}
