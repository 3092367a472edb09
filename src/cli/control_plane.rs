//! `trellis control-plane`.

use anyhow::{Context, Result};
use ipnet::{Ipv4Net, Ipv6Net};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use trellis_api::handover::{self, Ask, Offer};
use trellis_control_plane::api_tls::{self, Serving};
use trellis_control_plane::keys::Keyring;
use trellis_control_plane::state::Settings;
use trellis_control_plane::store::{EtcdOptions, EtcdStore, RedbStore, Store};
use trellis_control_plane::{Config, ControlPlane, server};

/// How long a control plane taking over waits for the old one's store lock.
const STORE_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Directory of the embedded store and the API token (created if
    /// missing). The CLI on this host finds the token here by default.
    #[arg(long, default_value = super::DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// API address (HTTPS). Operators show the bearer token in
    /// <data-dir>/api-token; nodes and DNS servers their certificate.
    #[arg(long, default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    /// A DNS name or IP address clients reach the API by, for its
    /// certificate (localhost and the loopback addresses are always in it).
    /// Repeatable.
    #[arg(long)]
    advertise: Vec<String>,
    /// Serve the API with this certificate chain (PEM, leaf first, ending
    /// with the CA clients trust) instead of one issued by the node CA.
    #[arg(long, requires = "tls_key_file")]
    tls_cert_file: Option<PathBuf>,
    /// The private key of --tls-cert-file (PEM).
    #[arg(long, requires = "tls_cert_file")]
    tls_key_file: Option<PathBuf>,
    /// DNS zone of service names.
    #[arg(long, default_value = "trellis.internal")]
    dns_zone: String,
    /// IPv4 pool of service VIPs.
    #[arg(long, default_value = trellis_api::snapshot::DEFAULT_VIP_POOL_V4)]
    vip_pool_v4: Ipv4Net,
    /// IPv6 pool of service VIPs.
    #[arg(long, default_value = trellis_api::snapshot::DEFAULT_VIP_POOL_V6)]
    vip_pool_v6: Ipv6Net,
    /// How long a deleted service's VIPs are held back before reuse, in seconds.
    #[arg(long, default_value_t = 900)]
    vip_hold_seconds: u64,
    /// The region SigV4 clients sign for.
    #[arg(long, default_value = "us-east-1")]
    sigv4_region: String,
    /// The master key that seals access-key secrets in the store (32 bytes,
    /// mode 0600, created if missing). Keep it apart from the data dir's
    /// backups. Default: <data-dir>/secrets.key.
    #[arg(long)]
    secrets_key_file: Option<PathBuf>,
    /// Largest accepted request body, in bytes.
    #[arg(long, default_value_t = 64 << 20)]
    max_body_bytes: usize,
    /// The most all stored objects may add up to, in bytes of JSON; an
    /// apply that would pass it is refused (422) and changes nothing.
    #[arg(long, default_value_t = 256 << 20)]
    max_state_bytes: usize,
    /// Lifetime of node certificates (nodes renew at two thirds of it).
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    node_cert_ttl: std::time::Duration,
    /// Most concurrent connections of operators (and of hosts joining).
    #[arg(long, default_value_t = 4096)]
    max_connections: usize,
    /// Most concurrent connections of nodes and DNS servers (each watch
    /// holds one); by default what the open-file limit leaves.
    #[arg(long)]
    max_watchers: Option<usize>,
    #[command(flatten)]
    etcd: EtcdArgs,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Copy the embedded store of --data-dir into etcd (--to etcd), or an
    /// etcd prefix into a new embedded store (--to data-dir), with the same
    /// revision, VIPs, keys, CA and tokens. No control plane may run
    /// against either meanwhile.
    Migrate(MigrateArgs),
}

#[derive(clap::Args)]
struct MigrateArgs {
    #[arg(long, value_enum)]
    to: MigrateTo,
    /// The embedded store's data dir (the source, or the new store).
    #[arg(long, default_value = super::DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    #[command(flatten)]
    etcd: EtcdArgs,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum MigrateTo {
    Etcd,
    DataDir,
}

/// Copies one store into the other (`trellis control-plane migrate`).
async fn migrate(args: MigrateArgs) -> Result<()> {
    let options = args
        .etcd
        .options(256 << 20)?
        .context("--etcd-endpoints is needed: the store to copy into or from")?;
    let endpoints = options.endpoints.join(",");
    let etcd = EtcdStore::connect(options)
        .await
        .with_context(|| format!("connecting to etcd at {endpoints}"))?;
    match args.to {
        MigrateTo::Etcd => {
            let redb = RedbStore::open(&args.data_dir)
                .with_context(|| format!("opening the store in {}", args.data_dir.display()))?;
            let everything = redb.load().await?;
            let (revision, objects) = (everything.revision, everything.objects.len());
            etcd.import(everything).await?;
            println!(
                "copied revision {revision} ({objects} objects) from {} to etcd {endpoints} {}",
                args.data_dir.display(),
                args.etcd.etcd_prefix
            );
        }
        MigrateTo::DataDir => {
            std::fs::create_dir_all(&args.data_dir)?;
            if args.data_dir.join("state.redb").exists() {
                anyhow::bail!(
                    "{} already holds a store: copy into a new data dir",
                    args.data_dir.display()
                );
            }
            let everything = etcd.load().await?;
            let (revision, objects) = (everything.revision, everything.objects.len());
            let redb = RedbStore::open(&args.data_dir)?;
            redb.commit(0, &everything.into()).await?;
            println!(
                "copied revision {revision} ({objects} objects) from etcd {endpoints} {} to {}",
                args.etcd.etcd_prefix,
                args.data_dir.display()
            );
        }
    }
    Ok(())
}

/// The shared store: with --etcd-endpoints, state lives in etcd and any
/// number of control planes serve it (docs/operations.md, "High
/// availability"); the data dir keeps only this replica's own files.
#[derive(clap::Args)]
struct EtcdArgs {
    /// etcd members' client URLs (http:// or https://), comma-separated.
    #[arg(long, value_delimiter = ',')]
    etcd_endpoints: Vec<String>,
    /// Prefix of every key, so several installations can share one etcd.
    #[arg(long, default_value = "/trellis/")]
    etcd_prefix: String,
    /// CA bundle that verifies the members' certificates (PEM), as
    /// etcdctl's --cacert.
    #[arg(long)]
    etcd_cacert: Option<PathBuf>,
    /// Client certificate for etcd (PEM), as etcdctl's --cert.
    #[arg(long, requires = "etcd_key")]
    etcd_cert: Option<PathBuf>,
    /// The key of --etcd-cert (PEM), as etcdctl's --key.
    #[arg(long, requires = "etcd_cert")]
    etcd_key: Option<PathBuf>,
    /// etcd user (etcd's own authentication); the password is read from
    /// --etcd-password-file.
    #[arg(long, requires = "etcd_password_file")]
    etcd_user: Option<String>,
    #[arg(long, requires = "etcd_user")]
    etcd_password_file: Option<PathBuf>,
    /// etcd's --max-txn-ops: the most objects (plus two) one apply may
    /// change. Raise both together.
    #[arg(long, default_value_t = 128)]
    etcd_max_txn_ops: usize,
    /// etcd's --max-request-bytes: the largest apply, in bytes of stored
    /// JSON. Raise both together.
    #[arg(long, default_value_t = 1536 * 1024)]
    etcd_max_request_bytes: usize,
    /// Deadline of every etcd request: an apply against an etcd that cannot
    /// answer fails with 503 after this.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    etcd_timeout: std::time::Duration,
}

impl EtcdArgs {
    /// The etcd options, or `None` for the embedded store.
    fn options(&self, max_state_bytes: usize) -> Result<Option<EtcdOptions>> {
        if self.etcd_endpoints.is_empty() {
            return Ok(None);
        }
        let read =
            |p: &PathBuf| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
        let mut o = EtcdOptions::new(self.etcd_endpoints.clone(), &self.etcd_prefix);
        o.ca = self.etcd_cacert.as_ref().map(read).transpose()?;
        if let (Some(cert), Some(key)) = (&self.etcd_cert, &self.etcd_key) {
            o.identity = Some((read(cert)?, read(key)?));
        }
        if let (Some(user), Some(file)) = (&self.etcd_user, &self.etcd_password_file) {
            let password = String::from_utf8(read(file)?)
                .with_context(|| format!("{} is not text", file.display()))?;
            o.user = Some((user.clone(), password.trim_end().to_string()));
        }
        o.max_txn_ops = self.etcd_max_txn_ops;
        o.max_request_bytes = self.etcd_max_request_bytes;
        o.timeout = self.etcd_timeout;
        // The whole state in one page is the most a read can bring.
        o.max_response_bytes = max_state_bytes.saturating_add(16 << 20);
        Ok(Some(o))
    }
}

pub async fn run(args: Args) -> Result<()> {
    if let Some(Command::Migrate(m)) = args.command {
        return migrate(m).await;
    }
    trellis_control_plane::validate::domain_name(&args.dns_zone)
        .map_err(|why| anyhow::anyhow!("--dns-zone {:?}: {why}", args.dns_zone))?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating the data dir {}", args.data_dir.display()))?;
    let open_files =
        trellis_api::limits::raise_open_files().context("raising the open-file limit")?;
    let mut budgets = server::Budgets::fitting(open_files, args.max_connections);
    if let Some(n) = args.max_watchers {
        budgets.members = n;
    }
    tracing::info!(
        open_files,
        operators = budgets.operators,
        watchers = budgets.members,
        "connection budgets"
    );
    if (open_files as usize) < budgets.operators + budgets.members + budgets.handshakes {
        tracing::warn!(
            open_files,
            "the budgets add up to more than the open-file limit: raise LimitNOFILE (docs/operations.md)"
        );
    }
    let mut successor = super::reload::Successor::new()?;
    let handover_path = args.data_dir.join("handover.sock");
    let (mut sockets, _, mut takeover) = handover::begin(&handover_path)
        .await
        .context("taking over from the running control plane")?;
    let listener = Arc::new(
        sockets
            .tcp("api", args.listen)
            .await
            .with_context(|| format!("binding {}", args.listen))?,
    );
    let addr = listener.local_addr()?;
    if let Some(t) = takeover.as_mut() {
        // The store is one process's at a time: the running control plane
        // stops serving and closes it first. Meanwhile connections wait in
        // the listener's backlog, which both processes share.
        t.release()
            .await
            .context("taking over: the running control plane did not release its store")?;
    }
    let offered = sockets.into_offered();
    let offer = Offer::bind(&handover_path)?;
    let mut announced = false;
    loop {
        let (cp, tls, token, mut background) = open(&args, takeover.is_some()).await?;
        let stop = CancellationToken::new();
        let serving = tokio::spawn(server::serve(
            cp.clone(),
            listener.clone(),
            tls,
            token,
            budgets,
            stop.clone().cancelled_owned(),
        ));
        if let Some(t) = takeover.take() {
            t.ready().await?;
        }
        tracing::info!(
            %addr,
            data_dir = %args.data_dir.display(),
            revision = cp.current().revision,
            "control plane listening"
        );
        if !announced {
            // Scripts and tests started with port 0 learn the port from this line.
            println!("trellis control plane listening on https://{addr}");
            super::reload::ready();
            announced = true;
        }
        let taker = tokio::select! {
            () = shutdown() => {
                super::reload::stopping();
                None
            }
            taker = offer.asked(&offered, || serde_json::Value::Null, Ask::Release) => Some(taker),
            () = successor.on_hangup() => None,
        };
        // Stop accepting, end the watches (their next ask goes to whoever
        // accepts next), let requests in flight finish; then nothing holds
        // the store.
        stop.cancel();
        cp.drain_watches();
        let _ = serving.await;
        background.shutdown().await;
        drop(cp);
        let Some(mut taker) = taker else {
            tracing::info!("control plane stopped");
            return Ok(());
        };
        let handed = async {
            taker.released().await?;
            taker.next().await
        };
        match handed.await {
            Ok(Ask::Ready) => {
                tracing::info!("the next control plane serves: handed over");
                return Ok(());
            }
            Ok(Ask::Release) => tracing::warn!("the next control plane asked twice; serving again"),
            Err(e) => {
                tracing::warn!(error = %e, "the next control plane failed after the store was released; serving again")
            }
        }
    }
}

/// What [`open`] starts: the control plane, the API's TLS, the admin
/// token, and what runs beside the API.
type Opened = (
    Arc<ControlPlane>,
    Arc<rustls::ServerConfig>,
    String,
    tokio::task::JoinSet<()>,
);

/// Opens the store, the keys and the CA, and starts what runs beside the
/// API (key rotation, the API certificate's renewal, following other
/// replicas). After a takeover the old process may take a moment to let go
/// of the store's lock.
async fn open(args: &Args, took_over: bool) -> Result<Opened> {
    let store: Arc<dyn Store> = match args.etcd.options(args.max_state_bytes)? {
        Some(options) => {
            let endpoints = options.endpoints.join(",");
            let store = EtcdStore::connect(options)
                .await
                .with_context(|| format!("connecting to etcd at {endpoints}"))?;
            tracing::info!(endpoints, prefix = args.etcd.etcd_prefix, "store: etcd");
            Arc::new(store)
        }
        None => {
            let deadline = std::time::Instant::now() + STORE_LOCK_WAIT;
            loop {
                match RedbStore::open(&args.data_dir) {
                    Ok(s) => break Arc::new(s),
                    Err(e) if took_over && std::time::Instant::now() < deadline => {
                        tracing::debug!(error = %e, "the store is not free yet");
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
    };
    let key_file = args
        .secrets_key_file
        .clone()
        .unwrap_or_else(|| args.data_dir.join("secrets.key"));
    let keyring = Keyring::open_or_create(&key_file)?;
    let settings = Settings {
        zone: args.dns_zone.trim_end_matches('.').to_ascii_lowercase(),
        vip_pool_v4: args.vip_pool_v4,
        vip_pool_v6: args.vip_pool_v6,
        vip_hold_secs: args.vip_hold_seconds,
        max_state_bytes: args.max_state_bytes,
    };
    let opened = ControlPlane::load(
        store.as_ref(),
        &keyring,
        &settings,
        &args.data_dir,
        args.node_cert_ttl,
    )
    .await?;
    let names = serving_names(args);
    let serving = match (&args.tls_cert_file, &args.tls_key_file) {
        (Some(cert), Some(key)) => Serving::Files { cert, key },
        _ => Serving::Issued(&names),
    };
    let issued = matches!(serving, Serving::Issued(_));
    let api_tls::ApiTls {
        config: tls,
        anchor: api_ca_sha256,
        served,
    } = api_tls::server_config(&opened.ca, serving)?;
    let token = opened.admin_token.clone();
    let config = Config {
        data_dir: args.data_dir.clone(),
        listen: args.listen,
        settings,
        region: args.sigv4_region.clone(),
        max_body_bytes: args.max_body_bytes,
        api_ca_sha256,
    };
    let cp = Arc::new(ControlPlane::new(config, store, keyring, opened)?);
    let mut background = tokio::task::JoinSet::new();
    background.spawn(cp.clone().rotate_daily());
    background.spawn(cp.clone().follow_store());
    if issued {
        // A fresh serving certificate every day: one never nears its end.
        let cp = cp.clone();
        background.spawn(async move {
            loop {
                tokio::time::sleep(api_tls::RENEW_EVERY).await;
                let renewed = cp
                    .serving_certificate(&names, api_tls::SERVING_LIFETIME)
                    .map_err(|e| e.to_string())
                    .and_then(|(chain, key)| served.replace(chain, key).map_err(|e| e.to_string()));
                match renewed {
                    Ok(()) => tracing::info!("API certificate renewed"),
                    Err(e) => {
                        tracing::error!(error = %e, "renewing the API certificate failed; retrying tomorrow")
                    }
                }
            }
        });
    }
    Ok((cp, tls, token, background))
}

/// What the self-issued API certificate names: loopback always, the listen
/// address when it is one, and every --advertise.
fn serving_names(args: &Args) -> Vec<String> {
    let mut names: Vec<String> = ["localhost", "127.0.0.1", "::1"]
        .into_iter()
        .map(String::from)
        .collect();
    let ip = args.listen.ip();
    if !ip.is_unspecified() {
        names.push(ip.to_string());
    } else if args.advertise.is_empty() {
        tracing::warn!(
            "listening on every address with no --advertise: remote clients will not find their address in the API certificate"
        );
    }
    names.extend(args.advertise.iter().cloned());
    names.sort();
    names.dedup();
    names
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("shutting down");
}
