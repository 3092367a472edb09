//! Simulated nodes for scale benchmarks (issue 23): N watchers of one
//! network in one process, each its own TLS connection showing a real node
//! certificate and doing the real watch (`Client::watch`: deltas, gzip).
//! They start from the snapshot one of them fetched, as nodes restarted
//! with a persisted snapshot do; once every watcher is parked on the
//! control plane, `--change` (a shell command, e.g. `trellis apply -f
//! weight.yaml`) runs, and each watcher's delivery time (from the command's
//! return), bytes on the wire and what it got are recorded; then it
//! watches again, as a node does. `--unrelated`,
//! run while the watches are open, is timed too. Prints one JSON object.
//!
//! `scripts/bench-watchers.sh` builds the scene and runs it.

use anyhow::{Context, bail};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use trellis_api::client::{Client, Credential, Trust, Update};
use trellis_api::identity::Identity;
use trellis_api::pki::JoinSecret;
use trellis_api::pki::Role;

// As the `trellis` binary nodes run.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Args {
    control_plane: String,
    join_token: String,
    network: String,
    nodes: usize,
    /// New connections per second while the watchers start.
    connect_rate: usize,
    change: String,
    unrelated: Option<String>,
    cp_pid: Option<u32>,
    dir: std::path::PathBuf,
    deadline: Duration,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        control_plane: String::new(),
        join_token: String::new(),
        network: String::new(),
        nodes: 1000,
        connect_rate: 2000,
        change: String::new(),
        unrelated: None,
        cp_pid: None,
        dir: std::env::temp_dir(),
        deadline: Duration::from_secs(60),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--control-plane" => a.control_plane = value()?,
            "--join-token" => a.join_token = value()?,
            "--network" => a.network = value()?,
            "--nodes" => a.nodes = value()?.parse()?,
            "--connect-rate" => a.connect_rate = value()?.parse()?,
            "--change" => a.change = value()?,
            "--unrelated" => a.unrelated = Some(value()?),
            "--cp-pid" => a.cp_pid = Some(value()?.parse()?),
            "--dir" => a.dir = value()?.into(),
            "--deadline-seconds" => a.deadline = Duration::from_secs(value()?.parse()?),
            other => bail!("unknown flag {other}"),
        }
    }
    if a.control_plane.is_empty() || a.join_token.is_empty() || a.network.is_empty() {
        bail!("--control-plane, --join-token and --network are needed");
    }
    if a.change.is_empty() {
        bail!("--change COMMAND is needed");
    }
    Ok(a)
}

/// CPU seconds (user + system) of `pid` so far.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at ')'.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// Runs `command` with `sh -c` and returns how long it took.
async fn run(command: &str) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    let out = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .output()
        .await?;
    if !out.status.success() {
        bail!(
            "{command}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(t0.elapsed())
}

struct Received {
    at: Instant,
    wire_bytes: usize,
    delta: bool,
    items: usize,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    let limit = trellis_api::limits::raise_open_files()?;
    if (limit as usize) < a.nodes + 64 {
        bail!(
            "{} watchers need as many descriptors; the limit is {limit}",
            a.nodes
        );
    }
    let secret = JoinSecret::parse(&a.join_token).map_err(anyhow::Error::msg)?;
    let timeout = Duration::from_secs(30);
    let enroll = Client::new(
        &a.control_plane,
        Trust::pin(secret.ca_sha256),
        Credential::None,
        timeout,
    )?;
    let identity = Identity::enroll(
        &enroll,
        Role::Node,
        &a.network,
        &a.dir,
        Some(&secret.secret),
    )
    .await?;
    let trust = Trust::from_pem(&identity.ca_pem()).map_err(anyhow::Error::msg)?;
    let client = |_| {
        Client::new(
            &a.control_plane,
            trust.clone(),
            identity.credential(),
            timeout,
        )
    };

    let first = client(0)?
        .watch(&a.network, None, Duration::ZERO)
        .await?
        .context("no snapshot")?;
    let Update::Whole(base) = first.update else {
        bail!("the first answer was not a whole snapshot");
    };
    let base = Arc::new(base);
    let since = base.revision;
    eprintln!(
        "snapshot at revision {since}: {} services, {} bytes on the wire; starting {} watchers",
        base.services.len(),
        first.wire_bytes,
        a.nodes
    );

    let parked = Arc::new(AtomicUsize::new(0));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..a.nodes {
        let c = client(i)?;
        let (parked, tx, network, base) =
            (parked.clone(), tx.clone(), a.network.clone(), base.clone());
        tasks.spawn(async move {
            // Connect (answered at once: nothing newer), then park.
            while c
                .watch(&network, Some(since), Duration::ZERO)
                .await
                .is_err()
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            parked.fetch_add(1, Ordering::Relaxed);
            // As a node: after a change, watch again on the same connection
            // from the revision it brought (closing would add a teardown
            // per watcher no real fleet pays).
            let mut held = since;
            loop {
                match c.watch(&network, Some(held), Duration::from_secs(55)).await {
                    Ok(Some(w)) => {
                        let at = Instant::now();
                        let (delta, items, revision) = match &w.update {
                            // One watcher proves the delta leads where it says.
                            Update::Delta(d) if i == 0 => {
                                if let Err(e) = base.with(d) {
                                    eprintln!("watcher 0: {e}");
                                }
                                (true, d.len(), d.revision)
                            }
                            Update::Delta(d) => (true, d.len(), d.revision),
                            Update::Whole(s) => (false, s.services.len(), s.revision),
                        };
                        held = revision;
                        let _ = tx.send(Received {
                            at,
                            wire_bytes: w.wire_bytes,
                            delta,
                            items,
                        });
                    }
                    Ok(None) => continue,
                    Err(e) => {
                        eprintln!("watcher {i}: {e}");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        });
        if a.connect_rate > 0 && (i + 1) % a.connect_rate.max(1) == 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    drop(tx);
    let wait_start = Instant::now();
    while parked.load(Ordering::Relaxed) < a.nodes {
        if wait_start.elapsed() > a.deadline {
            bail!(
                "only {} of {} watchers connected",
                parked.load(Ordering::Relaxed),
                a.nodes
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let connected_in = started.elapsed();
    // Let the last watchers' requests reach the control plane.
    tokio::time::sleep(Duration::from_secs(1)).await;
    eprintln!("{} watchers parked in {connected_in:?}", a.nodes);

    let unrelated = match &a.unrelated {
        Some(cmd) => Some(run(cmd).await?),
        None => None,
    };
    let cpu0 = a.cp_pid.and_then(cpu_seconds);
    let own0 = cpu_seconds(std::process::id());
    let change = run(&a.change).await?;
    let applied = Instant::now();
    let mut got = Vec::with_capacity(a.nodes);
    let deadline = tokio::time::Instant::now() + a.deadline;
    while got.len() < a.nodes {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(r)) => got.push(r),
            _ => break,
        }
    }
    let delivered_in = applied.elapsed();
    let cpu = cpu0.zip(a.cp_pid.and_then(cpu_seconds)).map(|(a, b)| b - a);
    let own = own0
        .zip(cpu_seconds(std::process::id()))
        .map(|(a, b)| b - a);
    tasks.abort_all();

    // Delivered before the command returned counts as 0.
    let mut ms: Vec<f64> = got
        .iter()
        .map(|r| r.at.saturating_duration_since(applied).as_secs_f64() * 1e3)
        .collect();
    ms.sort_by(f64::total_cmp);
    let bytes: Vec<usize> = got.iter().map(|r| r.wire_bytes).collect();
    let report = serde_json::json!({
        "nodes": a.nodes,
        "services": base.services.len(),
        "received": got.len(),
        "deltas": got.iter().filter(|r| r.delta).count(),
        "delta_items_max": got.iter().filter(|r| r.delta).map(|r| r.items).max(),
        "connected_seconds": connected_in.as_secs_f64(),
        "change_command_ms": change.as_secs_f64() * 1e3,
        "unrelated_command_ms": unrelated.map(|d| d.as_secs_f64() * 1e3),
        "delivery_ms": {
            "p50": percentile(&ms, 0.5), "p90": percentile(&ms, 0.9),
            "p99": percentile(&ms, 0.99), "max": ms.last().copied(),
        },
        "all_delivered_ms": delivered_in.as_secs_f64() * 1e3,
        "wire_bytes_per_node": {
            "mean": bytes.iter().sum::<usize>() as f64 / bytes.len().max(1) as f64,
            "max": bytes.iter().max(),
        },
        "control_plane_cpu_seconds": cpu,
        "simulator_cpu_seconds": own,
    });
    println!("{report}");
    if got.len() < a.nodes {
        bail!("{} of {} watchers got the change", got.len(), a.nodes);
    }
    Ok(())
}
