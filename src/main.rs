//! `trellis`: one binary for every Trellis role and the operator CLI.

mod cli;
mod import;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "trellis",
    version,
    about = "Trellis service-network overlay",
    propagate_version = true
)]
struct Cli {
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `trellis_control_plane=debug`.
    #[arg(long, global = true, env = "TRELLIS_LOG", default_value = "info")]
    log: String,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = cli::LogFormat::Text)]
    log_format: cli::LogFormat,
    /// Runtime worker threads (default: one per CPU).
    #[arg(long, global = true, env = "TRELLIS_WORKER_THREADS")]
    worker_threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Trellis on this machine in a minute: control plane, node, DNS, datapath,
    /// sample backends and real traffic (blue/green, a rule, auth). Root for traffic.
    Demo(cli::demo::Args),
    /// Run the control plane (embedded store in --data-dir, or etcd).
    ControlPlane(Box<cli::control_plane::Args>),
    /// Create or update the resources in YAML files or directories.
    Apply(cli::resources::ApplyArgs),
    /// Show what `apply` would change, without changing anything.
    Diff(cli::resources::DiffArgs),
    /// List resources of a kind, or show one.
    Get(cli::resources::GetArgs),
    /// Delete one resource (refused while others reference it).
    Delete(cli::resources::DeleteArgs),
    /// Other systems' routes as Trellis YAML: the Gateway API, VPC Lattice.
    #[command(subcommand)]
    Import(cli::import::Command),
    /// Every mutating API call: who, when, from where, what changed, outcome.
    Audit(cli::audit::Args),
    /// Follow the flows of every node: requests and connections, allowed
    /// or refused and why (`--verdict denied --follow`).
    Observe(cli::observe::Args),
    /// Identities and their access keys (SigV4).
    #[command(subcommand)]
    Identity(cli::identity::Command),
    /// Certificates for HTTPS targets from the control plane's CA.
    #[command(subcommand)]
    Ca(cli::ca::Command),
    /// Named API tokens with roles: create, list, revoke.
    #[command(subcommand)]
    Token(cli::token::Command),
    /// Network operations: join tokens for nodes.
    #[command(subcommand)]
    Network(cli::network::Command),
    /// Run the authoritative DNS server for one or more networks.
    Dns(cli::dns::Args),
    /// Run the node agent: datapath, proxy and (optionally) the node-local DNS.
    Node(Box<cli::node::Args>),
    /// Attach or remove the eBPF datapath by hand.
    #[command(subcommand)]
    Datapath(cli::datapath::Command),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    cli::init_logging(&cli.log, cli.log_format);
    // One worker: a current-thread runtime, where a task woken by another
    // (a request handed to an upstream connection and back) runs without
    // the work-stealing scheduler's cross-thread bookkeeping.
    let mut builder = match cli.worker_threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n.max(1));
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Demo(args) => cli::demo::run(args).await,
            Command::ControlPlane(args) => cli::control_plane::run(*args).await,
            Command::Apply(args) => cli::resources::apply(args).await,
            Command::Diff(args) => cli::resources::diff(args).await,
            Command::Get(args) => cli::resources::get(args).await,
            Command::Delete(args) => cli::resources::delete(args).await,
            Command::Audit(args) => cli::audit::run(args).await,
            Command::Import(cmd) => cli::import::run(cmd).await,
            Command::Observe(args) => cli::observe::run(args).await,
            Command::Datapath(cmd) => cli::datapath::run(cmd),
            Command::Dns(args) => cli::dns::run(args).await,
            Command::Identity(cmd) => cli::identity::run(cmd).await,
            Command::Network(cmd) => cli::network::run(cmd).await,
            Command::Token(cmd) => cli::token::run(cmd).await,
            Command::Ca(cmd) => cli::ca::run(cmd).await,
            Command::Node(args) => cli::node::run(*args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the reason, with its causes.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Returns the memory freed so far to the OS. mimalloc purges freed pages
/// only as it allocates, so an idle process keeps the peak of its start
/// (loading the eBPF object, compiling the first config): measured with
/// 1,000 services, 35 MB idle instead of 17 MB.
pub fn release_free_memory() {
    // SAFETY: mi_collect has no preconditions: it walks and trims the
    // allocator's own free lists, from any thread, at any time.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

// mimalloc returns freed memory to the OS promptly, so the control plane's RSS
// falls back after a large apply instead of keeping its peak (measured in
// docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
