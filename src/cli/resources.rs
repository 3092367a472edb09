//! `trellis apply | diff | get | delete`: the operator's side of the API.

use anyhow::{Result, anyhow, bail};
use serde_json::Value;
use serde_json::value::RawValue;
use std::path::PathBuf;
use std::time::Duration;
use trellis_api::client::{ChangeAction, Client, ClientError};
use trellis_api::manifest::{self, Document, to_yaml};
use trellis_api::resource::Spec;
use trellis_api::{FieldError, Kind, Object};

#[derive(clap::Args)]
pub struct ServerArgs {
    /// Control plane URL.
    #[arg(long, env = "TRELLIS_SERVER", default_value = "https://127.0.0.1:7070")]
    server: String,
    /// The control plane's CA certificate (its <data-dir>/ca.pem), to
    /// verify it by. Default: /var/lib/trellis/ca.pem.
    #[arg(long, env = "TRELLIS_CA_FILE", conflicts_with = "ca_hash")]
    ca_file: Option<PathBuf>,
    /// Instead of a CA file: the SHA-256 of the CA certificate (the hex
    /// after the dot in a join token); the server must send that CA.
    #[arg(long, env = "TRELLIS_CA_HASH")]
    ca_hash: Option<String>,
    /// File holding the API token (the control plane's <data-dir>/api-token).
    /// The token itself may be given in TRELLIS_TOKEN instead.
    #[arg(long, env = "TRELLIS_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// How long to wait for the control plane, in seconds.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
}

impl ServerArgs {
    pub fn client(&self) -> Result<Client> {
        let trust = match &self.ca_hash {
            Some(hash) => super::pinned_trust(hash)?,
            None => super::read_trust(self.ca_file.as_deref())?,
        };
        super::operator_client(
            &self.server,
            trust,
            self.token_file.as_deref(),
            Duration::from_secs(self.timeout),
        )
    }
}

#[derive(clap::Args)]
pub struct ApplyArgs {
    /// YAML file or directory of *.yaml files; `-` reads standard input. Repeatable.
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<PathBuf>,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(clap::Args)]
pub struct DiffArgs {
    /// YAML file or directory of *.yaml files; `-` reads standard input. Repeatable.
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<PathBuf>,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Output {
    Table,
    Yaml,
    Json,
}

#[derive(clap::Args)]
pub struct GetArgs {
    /// Network, ServiceNetwork (sn), Service (svc), TargetGroup (tg) or Identity.
    kind: String,
    name: Option<String>,
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    output: Output,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(clap::Args)]
pub struct DeleteArgs {
    kind: String,
    name: String,
    #[command(flatten)]
    server: ServerArgs,
}

fn parse_kind(s: &str) -> Result<Kind> {
    Kind::parse(s).ok_or_else(|| {
        anyhow!("unknown kind {s:?}; use network, servicenetwork (sn), service (svc), targetgroup (tg) or identity")
    })
}

/// Loads the manifests, printing every located error. Each document is
/// kept as its JSON text, not as a tree: a manifest of 30,000 documents
/// would otherwise cost the CLI hundreds of megabytes.
fn load(files: &[PathBuf]) -> Result<Vec<Document<Box<RawValue>>>> {
    let json = |value: Value| {
        // A JSON value always serializes.
        serde_json::value::to_raw_value(&value).unwrap_or_else(|_| RawValue::NULL.to_owned())
    };
    manifest::load_as(files, json).map_err(|errors| {
        for e in &errors {
            eprintln!("{e}");
        }
        anyhow!(
            "{} problem(s) in the input; nothing was applied",
            errors.len()
        )
    })
}

/// Turns an API rejection into located lines (`file:line:col: path: msg`).
pub(crate) fn report<T>(docs: &[Document<T>], err: ClientError) -> anyhow::Error {
    let ClientError::Api { error, .. } = &err else {
        return err.into();
    };
    if error.errors.is_empty() {
        return err.into();
    }
    for e in &error.errors {
        eprintln!("{}", locate(docs, e));
    }
    anyhow!(
        "{} problem(s) in the input; nothing was applied",
        error.errors.len()
    )
}

fn locate<T>(docs: &[Document<T>], e: &FieldError) -> String {
    match e.document.and_then(|i| docs.get(i)) {
        Some(doc) => doc.error(&e.path, e.message.clone()).to_string(),
        None => format!("{} (stored): {}: {}", e.object, e.path, e.message),
    }
}

pub async fn apply(args: ApplyArgs) -> Result<()> {
    let docs = load(&args.files)?;
    if docs.is_empty() {
        bail!("no documents in the input");
    }
    let client = args.server.client()?;
    let values: Vec<&RawValue> = docs.iter().map(|d| &*d.value).collect();
    let resp = client
        .apply(&values, false)
        .await
        .map_err(|e| report(&docs, e))?;
    print_changes(&resp);
    Ok(())
}

/// What an apply changed, a line per object, then the revision.
pub(crate) fn print_changes(resp: &trellis_api::client::ApplyResponse) {
    for c in &resp.changes {
        let what = match c.action {
            ChangeAction::Created => "created",
            ChangeAction::Configured => "configured",
            ChangeAction::Unchanged => "unchanged",
        };
        println!("{}/{} {what}", c.kind.as_str().to_ascii_lowercase(), c.name);
    }
    println!("revision {}", resp.revision);
}

pub async fn diff(args: DiffArgs) -> Result<()> {
    let docs = load(&args.files)?;
    let client = args.server.client()?;
    let values: Vec<&RawValue> = docs.iter().map(|d| &*d.value).collect();
    let resp = client
        .apply(&values, true)
        .await
        .map_err(|e| report(&docs, e))?;
    let mut unchanged = 0;
    for c in &resp.changes {
        let name = format!("{}/{}", c.kind.as_str().to_ascii_lowercase(), c.name);
        let before = c.before.as_ref().map(to_yaml).unwrap_or_default();
        let after = c.after.as_ref().map(to_yaml).unwrap_or_default();
        match c.action {
            ChangeAction::Unchanged => unchanged += 1,
            ChangeAction::Created | ChangeAction::Configured => {
                let diff = similar::TextDiff::from_lines(&before, &after);
                let (old, new) = if c.action == ChangeAction::Created {
                    ("/dev/null".to_string(), name.clone())
                } else {
                    (name.clone(), name.clone())
                };
                print!(
                    "{}",
                    diff.unified_diff().context_radius(3).header(&old, &new)
                );
            }
        }
    }
    println!(
        "{} to change, {unchanged} unchanged (at revision {})",
        resp.changes.len() - unchanged,
        resp.revision
    );
    Ok(())
}

pub async fn get(args: GetArgs) -> Result<()> {
    let kind = parse_kind(&args.kind)?;
    let client = args.server.client()?;
    let items = match &args.name {
        Some(name) => vec![client.get(kind, name).await?],
        None => client.list(kind).await?.items,
    };
    match (args.output, &args.name) {
        (Output::Json, Some(_)) => println!("{}", serde_json::to_string_pretty(&items[0])?),
        (Output::Json, None) => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "items": items }))?
        ),
        (Output::Yaml, _) => {
            let docs: Vec<String> = items.iter().map(|o| to_yaml(&o.to_value())).collect();
            print!("{}", docs.join("---\n"));
        }
        (Output::Table, _) => print!("{}", table(kind, &items, super::unix_now())),
    }
    Ok(())
}

pub async fn delete(args: DeleteArgs) -> Result<()> {
    let kind = parse_kind(&args.kind)?;
    let client = args.server.client()?;
    let resp = client.delete(kind, &args.name).await?;
    println!(
        "{}/{} deleted",
        kind.as_str().to_ascii_lowercase(),
        args.name
    );
    println!("revision {}", resp.revision);
    Ok(())
}

/// A kubectl-like table: the kind's own columns, then REVISION and AGE.
fn table(kind: Kind, items: &[Object], now: u64) -> String {
    let mut head: Vec<&str> = vec!["NAME"];
    head.extend(match kind {
        Kind::Service => &["VIP", "DNS NAME", "LISTENERS"][..],
        Kind::TargetGroup => &["NETWORK", "PROTOCOL", "TARGETS"][..],
        Kind::ServiceNetwork => &["NETWORKS", "AUTH"][..],
        Kind::Network => &["GATEWAYS"][..],
        Kind::Identity => &["ALIASES"][..],
    });
    head.extend(["REVISION", "AGE"]);
    let mut rows = vec![head.iter().map(|s| s.to_string()).collect::<Vec<_>>()];
    for o in items {
        let mut row = vec![o.resource.name().to_string()];
        match &o.resource.spec {
            Spec::Service(s) => {
                row.push(
                    o.status
                        .vip
                        .map(|v| v.to_string())
                        .unwrap_or_else(|| "-".into()),
                );
                let mut dns = o.status.dns_name.clone().unwrap_or_default();
                if let Some(d) = &s.custom_domain_name {
                    dns = format!("{dns},{d}");
                }
                row.push(dns);
                let listeners: Vec<String> = s
                    .listeners
                    .iter()
                    .map(|l| format!("{}:{}", l.protocol.as_str(), l.effective_port()))
                    .collect();
                row.push(listeners.join(","));
            }
            Spec::TargetGroup(t) => {
                row.push(t.network.clone());
                row.push(t.protocol.as_str().to_string());
                row.push(t.targets.len().to_string());
            }
            Spec::ServiceNetwork(s) => {
                row.push(s.networks.join(","));
                row.push(
                    if s.auth_type == trellis_api::resource::AuthType::SigV4 {
                        "SIGV4"
                    } else {
                        "NONE"
                    }
                    .into(),
                );
            }
            Spec::Network(n) => {
                let g: Vec<&str> = n.gateways.iter().map(|g| g.address.as_str()).collect();
                row.push(if g.is_empty() {
                    "-".into()
                } else {
                    g.join(",")
                });
            }
            Spec::Identity(i) => row.push(i.aliases.len().to_string()),
        }
        row.push(o.status.revision.to_string());
        row.push(age(now.saturating_sub(o.status.created_at)));
        rows.push(row);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let cells: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(cells.join("   ").trim_end());
        out.push('\n');
    }
    out
}

fn age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}
