//! `trellis import gateway-api | lattice`: other systems' routing as
//! Trellis YAML on standard output (or applied with `--apply`); what could
//! not be carried over on standard error, each with where it was written.

use super::resources::{ServerArgs, print_changes};
use crate::import::{Notes, gateway_api, lattice};
use anyhow::{Result, anyhow, bail};
use serde_json::Value;
use std::path::PathBuf;
use trellis_api::Kind;
use trellis_api::client::ClientError;
use trellis_api::manifest::{self, to_yaml};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Gateway, HTTPRoute, GRPCRoute, TLSRoute, TCPRoute, and the AWS
    /// Gateway API Controller's ServiceExport, ServiceImport,
    /// TargetGroupPolicy and IAMAuthPolicy.
    GatewayApi(GatewayApiArgs),
    /// A VPC Lattice service from the JSON the AWS CLI prints
    /// (`aws vpc-lattice get-service`, `list-listeners`, `get-listener`,
    /// `list-rules`, `get-rule`, `get-auth-policy`, `get-target-group`,
    /// `list-targets`), one output per file.
    Lattice(LatticeArgs),
}

#[derive(clap::Args)]
pub struct Common {
    /// The network the imported target groups live in.
    #[arg(long)]
    network: String,
    /// Apply the result rather than print it. Target groups that already
    /// exist are left as they are (an import knows no targets).
    #[arg(long)]
    apply: bool,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(clap::Args)]
pub struct GatewayApiArgs {
    /// YAML file or directory of *.yaml files; `-` reads standard input. Repeatable.
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<PathBuf>,
    #[command(flatten)]
    common: Common,
}

#[derive(clap::Args)]
pub struct LatticeArgs {
    /// A JSON file the AWS CLI printed; for `list-targets`, write
    /// TARGET_GROUP_ID=FILE (its output does not name the group). Repeatable.
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<String>,
    /// A service network the service is to be in (Lattice keeps them in
    /// associations these outputs do not show). Repeatable.
    #[arg(long = "service-network")]
    service_networks: Vec<String>,
    #[command(flatten)]
    common: Common,
}

pub async fn run(cmd: Command) -> Result<()> {
    match cmd {
        Command::GatewayApi(args) => {
            let docs = manifest::load(&args.files).map_err(|errors| {
                for e in &errors {
                    eprintln!("{e}");
                }
                anyhow!("{} problem(s) reading the input", errors.len())
            })?;
            let opts = gateway_api::Options {
                network: args.common.network.clone(),
            };
            let (values, notes) = gateway_api::import(&docs, &opts);
            finish(values, notes, &args.common).await
        }
        Command::Lattice(args) => {
            let (values, notes) =
                lattice::import(&args.files, &args.common.network, &args.service_networks)?;
            finish(values, notes, &args.common).await
        }
    }
}

async fn finish(mut values: Vec<Value>, notes: Notes, common: &Common) -> Result<()> {
    if !notes.0.is_empty() {
        eprintln!("{} thing(s) not carried over:", notes.0.len());
        for n in &notes.0 {
            eprintln!("  {n}");
        }
    }
    if values.is_empty() {
        bail!(
            "nothing to import: the input holds no document of a kind this command reads (see `trellis import gateway-api --help` or `trellis import lattice --help`)"
        );
    }
    if !common.apply {
        let docs: Vec<String> = values.iter().map(to_yaml).collect();
        print!("{}", docs.join("---\n"));
        return Ok(());
    }
    let client = common.server.client()?;
    let mut kept = Vec::with_capacity(values.len());
    for v in values.drain(..) {
        let is_group = v["kind"] == "TargetGroup";
        let name = v["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if is_group {
            match client.get(Kind::TargetGroup, &name).await {
                Ok(_) => {
                    println!("targetgroup/{name} exists: left as it is");
                    continue;
                }
                Err(ClientError::Api { status, .. }) if status == http::StatusCode::NOT_FOUND => {}
                Err(e) => return Err(e.into()),
            }
        }
        kept.push(v);
    }
    let resp = client.apply(&kept, false).await.map_err(|e| match &e {
        ClientError::Api { error, .. } if !error.errors.is_empty() => {
            for fe in &error.errors {
                let doc = fe.document.and_then(|i| kept.get(i));
                let what = doc.map_or_else(String::new, |d| {
                    format!(
                        "{}/{}: ",
                        d["kind"].as_str().unwrap_or_default().to_ascii_lowercase(),
                        d["metadata"]["name"].as_str().unwrap_or_default()
                    )
                });
                eprintln!("{what}{}: {}", fe.path, fe.message);
            }
            anyhow!(
                "{} problem(s) in what was imported; nothing was applied",
                error.errors.len()
            )
        }
        _ => anyhow!(e.to_string()),
    })?;
    print_changes(&resp);
    Ok(())
}
