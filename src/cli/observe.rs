//! `trellis observe`: the flows of every node, as `hubble observe` shows
//! Cilium's: the last ones, or following new ones as they come, filtered.

use super::resources::ServerArgs;
use anyhow::{Context, Result};
use std::time::{Duration, UNIX_EPOCH};
use trellis_api::flow::{Flow, FlowFilter, StatusFilter, Verdict};

#[derive(clap::Args)]
pub struct Args {
    /// Only flows of this service.
    #[arg(long)]
    service: Option<String>,
    /// Only flows seen by nodes of this network.
    #[arg(long)]
    network: Option<String>,
    /// Only flows of callers authenticated as this identity.
    #[arg(long)]
    from_identity: Option<String>,
    /// Only flows forwarded to this target group.
    #[arg(long)]
    target_group: Option<String>,
    /// Only `allowed`, `denied` (by auth) or `error` (answered by Trellis:
    /// no target, connect failed, ...) flows.
    #[arg(long, value_enum)]
    verdict: Option<VerdictArg>,
    /// Only flows answered with this status or class (`404`, `5xx`).
    #[arg(long)]
    status: Option<StatusFilter>,
    /// Only flows younger than this (`5m`).
    #[arg(long, value_parser = humantime::parse_duration)]
    since: Option<Duration>,
    /// How many of the latest flows to show first.
    #[arg(long, default_value_t = 20)]
    last: usize,
    /// Keep following new flows until interrupted.
    #[arg(short = 'f', long)]
    follow: bool,
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Compact)]
    output: Output,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum VerdictArg {
    Allowed,
    Denied,
    Error,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Output {
    /// One line per flow.
    Compact,
    /// One JSON object per line.
    Json,
}

pub async fn run(args: Args) -> Result<()> {
    let filter = FlowFilter {
        network: args.network,
        service: args.service,
        from_identity: args.from_identity,
        target_group: args.target_group,
        verdict: args.verdict.map(|v| match v {
            VerdictArg::Allowed => Verdict::Allowed,
            VerdictArg::Denied => Verdict::Denied,
            VerdictArg::Error => Verdict::Error,
        }),
        status: args.status,
        since_ms: args.since.map(trellis_api::flow::ago_ms),
    };
    let client = args.server.client()?;
    let first = client
        .flows(&filter, None, args.last, Duration::ZERO)
        .await
        .context("reading flows")?;
    show(&first.items, args.output)?;
    if !args.follow {
        return Ok(());
    }
    let following = async {
        let mut after = first.next;
        loop {
            match client
                .flows(&filter, Some(after), 0, Duration::from_secs(25))
                .await
            {
                Ok(page) => {
                    show(&page.items, args.output)?;
                    after = page.next;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reading flows failed; trying again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    };
    tokio::select! {
        r = following => r,
        () = super::control_plane::shutdown() => Ok(()),
    }
}

fn show(flows: &[Flow], output: Output) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for f in flows {
        match output {
            Output::Json => writeln!(out, "{}", serde_json::to_string(f)?)?,
            Output::Compact => writeln!(out, "{}", compact(f))?,
        }
    }
    out.flush()?;
    Ok(())
}

/// `TIME NODE CALLER -> SERVICE/LISTENER METHOD PATH VERDICT STATUS ...`.
fn compact(f: &Flow) -> String {
    let when = humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(f.time_ms));
    let caller = match (&f.identity, &f.workload) {
        (Some(i), _) => format!("{} ({i})", f.client),
        (None, Some(w)) => format!("{} ({w})", f.client),
        _ => f.client.clone(),
    };
    let what = match f.kind.as_str() {
        "tcp" => "TCP".to_string(),
        _ => format!("{} {}", f.method, f.path),
    };
    let to = match f.target.is_empty() {
        true => String::new(),
        false => format!(" -> {}/{}", f.target_group, f.target),
    };
    let why = match f.reason.is_empty() {
        true => String::new(),
        false => format!(" ({})", f.reason),
    };
    format!(
        "{when} {}/{} {caller} -> {}/{} {what} {} {}{why}{to} {:.1}ms",
        f.network,
        f.node,
        f.service,
        f.listener,
        f.verdict.as_str().to_uppercase(),
        f.status,
        f.duration_ms
    )
}
