//! `trellis demo`: Trellis's main job on this one machine, in a minute.
//!
//! Starts a control plane (embedded store in a temporary or given data dir)
//! and applies `samples/demo.yaml`; starts the sample backends that file
//! points at; starts `trellis node` with the node-local DNS and the datapath
//! (eBPF, or nftables where eBPF is missing); then resolves a name, measures a
//! blue/green split, follows a path rule, shifts the weights live, and calls
//! a SIGV4 service signed and unsigned. Everything it started is stopped and
//! removed on exit, on an error and on Ctrl-C.

use anyhow::{Context, Result, bail};
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use trellis_api::pki::Role;

/// The demo's configuration: a sample, applied by tests too.
const DEMO_YAML: &str = include_str!("../../samples/demo.yaml");

/// How long any one wait of the demo may take.
const WAIT: Duration = Duration::from_secs(15);

#[derive(clap::Args)]
pub struct Args {
    /// Keep the control plane's and node's data here (and leave it after);
    /// default a temporary directory, removed at the end.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Leave everything running after the walk-through, until Ctrl-C.
    #[arg(long)]
    keep_running: bool,
    /// Requests per measured split.
    #[arg(long, default_value_t = 1000)]
    requests: usize,
    /// Node-local DNS port on 127.0.0.1.
    #[arg(long, default_value_t = 15353)]
    dns_port: u16,
    /// cgroup v2 directory whose processes are redirected (the demo must run
    /// in it); default the whole machine (the unified root).
    #[arg(long)]
    cgroup: Option<PathBuf>,
}

/// What the demo started; stopped and removed when dropped.
struct Stack {
    dir: PathBuf,
    keep_dir: bool,
    control_plane: Option<Child>,
    node: Option<Child>,
    /// The gateway-only node of network `remote`.
    gateway: Option<Child>,
    pins: PathBuf,
    nft_table: String,
}

impl Stack {
    fn stop(child: &mut Child) {
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if let Some(node) = &mut self.node {
            Stack::stop(node);
            // A node stopped any way at all leaves no hook or pin behind.
            let _ = Command::new(exe())
                .args(["--log", "error", "node", "--network", "local", "--cleanup"])
                .arg("--bpf-pin-dir")
                .arg(&self.pins)
                .args(["--nft-table", &self.nft_table])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        if let Some(gw) = &mut self.gateway {
            Stack::stop(gw);
        }
        if let Some(cp) = &mut self.control_plane {
            Stack::stop(cp);
        }
        if !self.keep_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Where network remote's gateway listens (samples/demo.yaml says so).
const REMOTE_GATEWAY: &str = "127.0.0.1:18096";

fn exe() -> PathBuf {
    std::env::current_exe().unwrap_or_else(|_| PathBuf::from("trellis"))
}

fn bold(s: &str) {
    println!("\n\x1b[1m{s}\x1b[0m");
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

pub async fn run(args: Args) -> Result<()> {
    let (dir, keep_dir) = match &args.data_dir {
        Some(d) => (d.clone(), true),
        None => (
            std::env::temp_dir().join(format!("trellis-demo-{}", std::process::id())),
            false,
        ),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut stack = Stack {
        dir: dir.clone(),
        keep_dir,
        control_plane: None,
        node: None,
        gateway: None,
        pins: PathBuf::from(format!("/sys/fs/bpf/trellis-demo-{}", std::process::id())),
        nft_table: format!("trellis_demo_{}", std::process::id()),
    };
    // Listening from here on: a Ctrl-C (or a TERM, as scripts and service
    // managers stop things) is never lost between two waits.
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).context("listening for Ctrl-C")?;
    let mut terminate = signal(SignalKind::terminate()).context("listening for TERM")?;
    let mut stopped = async move || {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    };
    tokio::select! {
        r = walk(&args, &mut stack) => if let Err(e) = r {
            // The logs the error points at outlive the demo.
            stack.keep_dir = true;
            eprintln!("the demo failed; its logs are kept in {}", stack.dir.display());
            return Err(e);
        },
        () = stopped() => {
            println!("\ninterrupted: stopping what the demo started");
            return Ok(());
        }
    }
    if args.keep_running {
        println!("\nEverything stays up until Ctrl-C.");
        stopped().await;
        println!("stopping what the demo started");
    }
    Ok(())
}

async fn walk(args: &Args, stack: &mut Stack) -> Result<()> {
    println!("Trellis demo: a control plane, a node with DNS and the datapath, and real traffic.");
    println!("data dir: {}", stack.dir.display());

    // The control plane, on a free loopback port.
    let cp_out = stack.dir.join("control-plane.out");
    let child = Command::new(exe())
        .args(["--log", "warn", "control-plane", "--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(stack.dir.join("control-plane"))
        .stdout(std::fs::File::create(&cp_out)?)
        .stderr(std::fs::File::create(stack.dir.join("control-plane.log"))?)
        .spawn()
        .context("starting the control plane")?;
    stack.control_plane = Some(child);
    let server = wait_for_line(&cp_out, "listening on ")
        .await
        .context("the control plane did not start (see control-plane.log in the data dir)")?;
    println!("control plane: {server}");
    // Every client shows the token, loopback included (docs/security.md).
    let token_file = stack.dir.join("control-plane").join("api-token");
    let ca_file = stack.dir.join("control-plane").join("ca.pem");
    let client = super::operator_client(
        &server,
        super::read_trust(Some(&ca_file))?,
        Some(&token_file),
        Duration::from_secs(5),
    )?;

    bold("$ trellis apply -f samples/demo.yaml");
    let sources = demo_documents()?;
    let mut docs: Vec<Value> = sources.iter().map(|d| d.value.clone()).collect();
    let applied = client
        .apply(&docs, false)
        .await
        .map_err(|e| super::resources::report(&sources, e))?;
    for c in &applied.changes {
        println!(
            "{}/{} {}",
            c.kind.as_str().to_ascii_lowercase(),
            c.name,
            format!("{:?}", c.action).to_ascii_lowercase()
        );
    }
    let _backends = BackendsGuard(start_backends().await?);

    if !is_root() {
        println!(
            "\nNot root: the datapath (eBPF or nftables) and the node need root, so the demo stops \
             here with the control plane's half. Run it as root (sudo) to see traffic."
        );
        bold("$ trellis get services");
        for obj in client
            .list(trellis_api::resource::Kind::Service)
            .await?
            .items
        {
            let vip = obj.status.vip.map(|v| v.to_string());
            println!(
                "{}  vip {}",
                obj.resource.name(),
                vip.as_deref().unwrap_or("-")
            );
        }
        return Ok(());
    }

    // Network remote's gateway: a node that redirects nothing here and
    // serves remote's targets to the other networks' nodes.
    let local_token = client
        .create_join_token("local", Role::Node, Duration::from_secs(600))
        .await?;
    let remote_token = client
        .create_join_token("remote", Role::Node, Duration::from_secs(600))
        .await?;
    bold(&format!(
        "$ trellis node --network remote --no-datapath --gateway-listen {REMOTE_GATEWAY} \\\n    --join-token $(trellis network join-token remote) &"
    ));
    let gateway_out = stack.dir.join("remote-node.out");
    let child = Command::new(exe())
        .args(["--log", "info", "--log-format", "json", "node"])
        .args(["--network", "remote", "--control-plane", &server])
        .arg("--data-dir")
        .arg(stack.dir.join("remote-node"))
        .args(["--no-datapath", "--gateway-listen", REMOTE_GATEWAY])
        .args(["--join-token", &remote_token.token])
        .args(["--proxy-listen", &format!("127.0.0.1:{}", free_port()?)])
        .args(["--admin-listen", "127.0.0.1:0"])
        .arg("--access-log")
        .arg(stack.dir.join("remote-access.log"))
        .args(["--drain-seconds", "1"])
        .stdout(std::fs::File::create(&gateway_out)?)
        .stderr(std::fs::File::create(stack.dir.join("remote-node.log"))?)
        .spawn()
        .context("starting remote's gateway")?;
    stack.gateway = Some(child);
    wait_for_line(&gateway_out, "gateway listening on ")
        .await
        .context("remote's gateway did not start (see remote-node.log in the data dir)")?;
    println!("remote's gateway: {REMOTE_GATEWAY} (mutual TLS, certificate from the control plane)");

    // The node agent: proxy, DNS, datapath.
    let admin = free_port()?;
    let proxy_port = free_port()?;
    bold(&format!(
        "$ trellis node --network local --control-plane {server} --dns-listen 127.0.0.1:{} \\\n    --join-token $(trellis network join-token local) &",
        args.dns_port
    ));
    let node_log = stack.dir.join("node.log");
    let child = Command::new(exe())
        .args([
            "--log",
            "info",
            "--log-format",
            "json",
            "node",
            "--network",
            "local",
        ])
        .args(["--control-plane", &server, "--datapath", "auto"])
        .arg("--data-dir")
        .arg(stack.dir.join("node"))
        .arg("--bpf-pin-dir")
        .arg(&stack.pins)
        .args(["--nft-table", &stack.nft_table])
        .args(["--dns-listen", &format!("127.0.0.1:{}", args.dns_port)])
        .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
        .args(["--proxy-listen", &format!("127.0.0.1:{proxy_port}")])
        .arg("--access-log")
        .arg(stack.dir.join("access.log"))
        .args(["--drain-seconds", "1"])
        .args(["--join-token", &local_token.token])
        .args(
            args.cgroup
                .iter()
                .flat_map(|c| [std::ffi::OsStr::new("--cgroup"), c.as_os_str()]),
        )
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&node_log)?)
        .spawn()
        .context("starting the node")?;
    stack.node = Some(child);
    let admin: SocketAddr = (Ipv4Addr::LOCALHOST, admin).into();
    wait_until(
        "the node to be ready (see node.log in the data dir)",
        || async {
            matches!(
                http_get(admin, "/ready", &[]).await,
                Ok((StatusCode::OK, _))
            )
        },
    )
    .await?;
    let datapath = datapath_of(&node_log);
    println!("node ready; datapath: {datapath}");
    if datapath == "nftables" {
        println!(
            "(eBPF cgroup hooks were not available here, so connections to VIPs are redirected by \
             nftables instead; node.log says why)"
        );
    }

    // DNS: the name resolves to the service's VIP.
    let dns: SocketAddr = (Ipv4Addr::LOCALHOST, args.dns_port).into();
    bold(&format!(
        "$ dig @127.0.0.1 -p {} +short hello.trellis.internal",
        args.dns_port
    ));
    let hello = resolve(dns, "hello.trellis.internal").await?;
    println!("{hello}");
    let orders = resolve(dns, "orders.trellis.internal").await?;

    // Blue/green: N requests through the VIP.
    let vip: SocketAddr = (hello, 80).into();
    wait_until("both colours to answer through the VIP", || async {
        let seen = count(vip, "/", 50).await.unwrap_or_default();
        seen.len() >= 2
    })
    .await?;
    bold(&format!(
        "$ for i in $(seq {n}); do curl -s http://hello.trellis.internal/; done | sort | uniq -c",
        n = args.requests
    ));
    let split = count(vip, "/", args.requests).await?;
    chart(
        &split,
        &[("hello-blue", 90), ("hello-green", 10)],
        args.requests,
    );

    bold("$ curl http://hello.trellis.internal/api/orders      # rule `api`: path prefix /api/");
    let (status, body) = http_get(vip, "/api/orders", &[]).await?;
    println!("{} {}", status.as_u16(), body.trim());
    if body.trim() != "hello-api" {
        bail!("the /api/ rule sent the request to {body:?}, not hello-api");
    }

    // A live weight change.
    bold("$ trellis apply -f demo.yaml   # weights hello-blue 10, hello-green 90");
    set_weights(&mut docs, 10, 90)?;
    let shifted = client
        .apply(&docs, false)
        .await
        .map_err(|e| super::resources::report(&sources, e))?;
    println!("service/hello configured (revision {})", shifted.revision);
    wait_until("the node to take the new revision", || async {
        node_revision(admin, &stack.dir.join("node"))
            .await
            .is_some_and(|r| r >= shifted.revision)
    })
    .await?;
    bold(&format!("$ ... the same {} requests again", args.requests));
    let split = count(vip, "/", args.requests).await?;
    chart(
        &split,
        &[("hello-blue", 10), ("hello-green", 90)],
        args.requests,
    );

    // Auth: a signed request allowed, an unsigned one refused.
    bold("$ trellis identity add-key demo-client");
    let key = client.create_key("demo-client").await?;
    println!(
        "AccessKeyId {}  (the secret is printed once; the demo keeps it in memory)",
        key.access_key_id
    );
    let orders_vip: SocketAddr = (orders, 80).into();
    let url = "http://orders.trellis.internal/orders/42";
    bold(&format!(
        "$ curl --aws-sigv4 aws:amz:us-east-1:vpc-lattice-svcs --user KEY:SECRET {url}"
    ));
    let mut signed = (StatusCode::FORBIDDEN, String::new());
    let t = Instant::now();
    while t.elapsed() < WAIT {
        let headers = sign_get(url, &key.access_key_id, &key.secret_access_key)?;
        signed = http_get(orders_vip, "/orders/42", &headers).await?;
        if signed.0 == StatusCode::OK {
            break;
        }
        // The node gets the new key with the next snapshot.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("{} {}", signed.0.as_u16(), signed.1.trim());
    if signed.0 != StatusCode::OK {
        bail!("the signed request was refused: {}", signed.1.trim());
    }
    bold(&format!("$ curl {url}      # unsigned"));
    let (status, body) = http_get(orders_vip, "/orders/42", &[]).await?;
    println!("{} {}", status.as_u16(), body.trim());
    if status != StatusCode::FORBIDDEN {
        bail!("an unsigned request to a SIGV4 service answered {status}");
    }

    // A service whose targets are in network remote, called by name from
    // local: through remote's gateway.
    bold("$ curl http://inventory.trellis.internal/      # targets in network remote");
    let inventory = resolve(dns, "inventory.trellis.internal").await?;
    let inventory_vip: SocketAddr = (inventory, 80).into();
    let mut crossed = (StatusCode::SERVICE_UNAVAILABLE, String::new());
    let t = Instant::now();
    while t.elapsed() < WAIT {
        crossed = http_get(inventory_vip, "/", &[]).await?;
        if crossed.0 == StatusCode::OK {
            break;
        }
        // The gateway serves once it has its own snapshot.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("{} {}", crossed.0.as_u16(), crossed.1.trim());
    if crossed.0 != StatusCode::OK {
        bail!("the cross-network call failed: {}", crossed.1.trim());
    }

    bold("Summary");
    println!(
        "  hello.trellis.internal -> {hello}, split measured over {} requests per weight setting",
        args.requests
    );
    println!("  a path rule, a live weight change, SigV4 auth allowed and denied");
    println!(
        "  inventory.trellis.internal ({inventory}) served in network remote, through its gateway"
    );
    println!(
        "  datapath: {datapath}; access log: {}",
        stack.dir.join("access.log").display()
    );
    bold("Try next");
    println!("  export TRELLIS_SERVER={server}");
    println!("  export TRELLIS_TOKEN_FILE={}", token_file.display());
    println!("  export TRELLIS_CA_FILE={}", ca_file.display());
    println!("  trellis get services");
    println!(
        "  dig @127.0.0.1 -p {} hello.trellis.internal",
        args.dns_port
    );
    println!("  curl http://{hello}/             # from any process on this machine");
    println!("  curl http://127.0.0.1:{}/metrics", admin.port());
    println!(
        "  curl -H \"authorization: Bearer $(cat {})\" http://127.0.0.1:{}/config",
        stack.dir.join("node").join("admin-token").display(),
        admin.port()
    );
    bold("See it");
    println!("  trellis observe --service hello --follow          # every node's flows, live");
    println!("  trellis observe --verdict denied --last 20        # why requests were refused");
    println!(
        "  console: {server}/ui/  (sign in with the token in {}; the certificate is from {})",
        token_file.display(),
        ca_file.display()
    );
    if !args.keep_running {
        println!("  (run `trellis demo --keep-running` to keep all of it up)");
    }
    Ok(())
}

fn demo_documents() -> Result<Vec<trellis_api::manifest::Document>> {
    trellis_api::manifest::parse("samples/demo.yaml", DEMO_YAML).map_err(|errs| {
        let lines: Vec<String> = errs.iter().map(ToString::to_string).collect();
        anyhow::anyhow!("{}", lines.join("\n"))
    })
}

/// Sets hello's default split in the applied documents.
fn set_weights(docs: &mut [Value], blue: u32, green: u32) -> Result<()> {
    let hello = docs
        .iter_mut()
        .find(|d| d["kind"] == "Service" && d["metadata"]["name"] == "hello")
        .context("samples/demo.yaml has no service hello")?;
    let forward = &mut hello["spec"]["listeners"][0]["defaultAction"]["forward"];
    forward[0]["weight"] = blue.into();
    forward[1]["weight"] = green.into();
    Ok(())
}

/// A loopback port free now.
fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

async fn wait_for_line(file: &Path, marker: &str) -> Result<String> {
    let t = Instant::now();
    while t.elapsed() < WAIT {
        if let Ok(text) = std::fs::read_to_string(file) {
            if let Some(rest) = text
                .lines()
                .find_map(|l| l.split_once(marker).map(|(_, r)| r.trim().to_string()))
            {
                return Ok(rest);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("no {marker:?} line in {} after {WAIT:?}", file.display())
}

async fn wait_until<F, Fut>(what: &str, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t = Instant::now();
    while t.elapsed() < WAIT {
        if check().await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("gave up waiting {WAIT:?} for {what}")
}

/// The datapath the node reports having attached.
fn datapath_of(log: &Path) -> String {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["fields"]["message"] == "datapath attached")
        .and_then(|v| v["fields"]["datapath"].as_str().map(String::from))
        .unwrap_or_else(|| "unknown".into())
}

async fn node_revision(admin: SocketAddr, node_dir: &Path) -> Option<u64> {
    let token = std::fs::read_to_string(node_dir.join("admin-token")).ok()?;
    let auth = (
        "authorization".to_string(),
        format!("Bearer {}", token.trim()),
    );
    let (_, body) = http_get(admin, "/config", &[auth]).await.ok()?;
    serde_json::from_str::<Value>(&body).ok()?["revision"].as_u64()
}

async fn resolve(dns: SocketAddr, name: &str) -> Result<Ipv4Addr> {
    let t = Instant::now();
    loop {
        match trellis_dns::lookup::a(dns, name, Duration::from_secs(2)).await {
            Ok(a) if !a.is_empty() => return Ok(a[0]),
            other if t.elapsed() > WAIT => bail!("{name} did not resolve: {other:?}"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// One GET on a fresh connection: (status, body).
async fn http_get(
    addr: SocketAddr,
    path: &str,
    headers: &[(String, String)],
) -> Result<(StatusCode, String)> {
    let mut conn = Conn::open(addr).await?;
    conn.get(path, headers).await
}

/// A keep-alive HTTP/1.1 connection.
struct Conn {
    addr: SocketAddr,
    sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Result<Conn> {
        let stream =
            tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
                .await
                .with_context(|| format!("connecting to {addr}: timed out"))?
                .with_context(|| format!("connecting to {addr}"))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(Conn { addr, sender })
    }

    async fn get(
        &mut self,
        path: &str,
        headers: &[(String, String)],
    ) -> Result<(StatusCode, String)> {
        let mut req = Request::get(path);
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            req = req.header("host", self.addr.ip().to_string());
        }
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let resp = tokio::time::timeout(
            Duration::from_secs(5),
            self.sender.send_request(req.body(Empty::new())?),
        )
        .await
        .with_context(|| format!("GET {path} from {}: no answer in 5 s", self.addr))??;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

/// `n` GETs of `path` over keep-alive connections: answers counted by body.
async fn count(addr: SocketAddr, path: &str, n: usize) -> Result<BTreeMap<String, usize>> {
    let mut seen = BTreeMap::new();
    let mut conn = Conn::open(addr).await?;
    for _ in 0..n {
        if conn.sender.ready().await.is_err() {
            conn = Conn::open(addr).await?;
        }
        let (status, body) = conn.get(path, &[]).await?;
        let key = if status == StatusCode::OK {
            body.trim().to_string()
        } else {
            format!("HTTP {}", status.as_u16())
        };
        *seen.entry(key).or_insert(0) += 1;
    }
    Ok(seen)
}

/// The split as bars, against the weights, with the binomial bound.
fn chart(seen: &BTreeMap<String, usize>, weights: &[(&str, u32)], n: usize) {
    let total: u32 = weights.iter().map(|(_, w)| w).sum();
    for (name, weight) in weights {
        let got = seen.get(*name).copied().unwrap_or(0);
        let share = got as f64 / n as f64;
        let bar = "█".repeat((share * 50.0).round() as usize);
        let p = f64::from(*weight) / f64::from(total);
        let sigma = (p * (1.0 - p) / n as f64).sqrt() * 100.0;
        println!(
            "  {name:<12} {bar:<50} {got:>5}  {:>5.1}%  (weight {weight}, expected {:.0}% ± {:.1})",
            share * 100.0,
            p * 100.0,
            3.0 * sigma
        );
    }
    for (other, got) in seen
        .iter()
        .filter(|(k, _)| !weights.iter().any(|(w, _)| w == k))
    {
        println!("  {other:<12} {got:>5}  (unexpected)");
    }
}

/// The headers a SigV4 signer (the `aws-sigv4` crate, as AWS SDKs sign)
/// adds to a GET of `url`.
fn sign_get(url: &str, key: &str, secret: &str) -> Result<Vec<(String, String)>> {
    let identity = aws_credential_types::Credentials::new(key, secret, None, None, "demo").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name(trellis_api::keys::SIGNING_SERVICE)
        .time(std::time::SystemTime::now())
        .settings(SigningSettings::default())
        .build()?
        .into();
    let host = url.split('/').nth(2).unwrap_or_default();
    let signable = SignableRequest::new(
        "GET",
        url,
        [("host", host)].into_iter(),
        SignableBody::Bytes(b""),
    )?;
    let (instructions, _) = sign(signable, &params)?.into_parts();
    let mut req = Request::get(url).body(())?;
    instructions.apply_to_request_http1x(&mut req);
    let mut out: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
        .collect();
    out.push(("host".into(), host.into()));
    Ok(out)
}

/// The sample backends of samples/demo.yaml: each answers its name (the
/// orders backend also says who called), `/healthz` answers ok.
async fn start_backends() -> Result<Vec<tokio::task::JoinHandle<()>>> {
    let mut tasks = Vec::new();
    for (name, port) in [
        ("hello-blue", 18091),
        ("hello-green", 18092),
        ("hello-api", 18093),
        ("orders", 18094),
        ("inventory", 18095),
    ] {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port))
            .await
            .with_context(|| {
                format!("the demo's backend {name} needs 127.0.0.1:{port} (samples/demo.yaml)")
            })?;
        tasks.push(tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: Request<hyper::body::Incoming>| async move {
                            let body = if req.uri().path() == "/healthz" {
                                "ok\n".to_string()
                            } else if name == "inventory" {
                                let from = req
                                    .headers()
                                    .get("x-trellis-source-network")
                                    .and_then(|v| v.to_str().ok())
                                    .unwrap_or("?");
                                format!(
                                    "{name}: served in network remote, called from network {from}\n"
                                )
                            } else if let Some(who) = req.headers().get("x-trellis-identity") {
                                format!("{name}: order 42, for {}\n", who.to_str().unwrap_or("?"))
                            } else {
                                format!("{name}\n")
                            };
                            Ok::<_, std::convert::Infallible>(http::Response::new(
                                http_body_util::Full::new(Bytes::from(body)),
                            ))
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        }));
    }
    Ok(tasks)
}

/// Stops the backends when the walk ends.
struct BackendsGuard(Vec<tokio::task::JoinHandle<()>>);

impl Drop for BackendsGuard {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}
