//! A node in a box: two network namespaces joined by a veth pair, "node"
//! (control plane, `trellis node` with the eBPF datapath on a cgroup of its
//! own, clients in the redirected cgroup) and "targets" (Python backends on
//! 10.200.0.2). The node's SNAT address is 10.200.0.10. Everything is
//! removed on drop, also when the test fails; names are unique per test so
//! tests run in parallel. Without root: SKIPPED, and under CI=true a failure.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub use super::BIN;
pub const TARGET_IP: &str = "10.200.0.2";
pub const SNAT_IP: &str = "10.200.0.10";
const HERE: &str = super::HELPERS;

use super::{Owned, must, wait_line, wait_line_kept};
pub use super::{root, sh};

fn unique() -> (String, String) {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    let pid = std::process::id();
    (format!("{pid}-{n}"), format!("{}{n}", pid % 100_000))
}

/// A "container": a network namespace of its own joined to the node's
/// bridge by a veth pair, its own address and cgroup, and its own
/// `resolv.conf` (`/etc/netns/<ns>/resolv.conf`, which `ip netns exec`
/// mounts over `/etc/resolv.conf`) naming the node DNS.
pub struct Container {
    pub ns: String,
    pub ip: String,
    pub cgroup: PathBuf,
}

/// The node side of the containers' bridge; the proxy and the node DNS
/// listen here so that containers reach them.
pub const BRIDGE_IP: &str = "10.88.0.1";

/// Network `east`, service network `shop` over it, and one target group
/// per (name, port) of `groups` with its target at [`TARGET_IP`] and
/// `health_check` (a YAML flow mapping): what a test's services build on.
pub fn shop_network(groups: &[(&str, u16)], health_check: &str) -> String {
    let mut yaml = String::from(
        "apiVersion: trellis.dev/v1alpha1\nkind: Network\nmetadata: {name: east}\nspec: {}\n\
         ---\napiVersion: trellis.dev/v1alpha1\nkind: ServiceNetwork\nmetadata: {name: shop}\nspec: {networks: [east]}\n",
    );
    for (name, port) in groups {
        yaml.push_str(&format!(
            "---\napiVersion: trellis.dev/v1alpha1\nkind: TargetGroup\nmetadata: {{name: {name}}}\n\
             spec: {{network: east, healthCheck: {health_check}, targets: [{{address: {TARGET_IP}, port: {port}}}]}}\n"
        ));
    }
    yaml
}

/// The Python to run a test script with: Debian's when it needs gRPC
/// (setup.sh installs python3-grpcio, which only Debian's python3 sees;
/// the `python3` on PATH may be another, such as pyenv's).
fn python(grpc: bool) -> &'static str {
    if grpc { "/usr/bin/python3" } else { "python3" }
}

pub struct Env {
    pub ns: String,
    tns: String,
    pub run: PathBuf,
    cg_mount: PathBuf,
    pub client_cg: PathBuf,
    proxy_cg: PathBuf,
    pin_dir: PathBuf,
    pub cp_url: String,
    cp: Option<Child>,
    node: Option<Child>,
    /// Nodes a newer one took over from, draining.
    replaced: Vec<Child>,
    /// Nodes not started here (a successor a node started), by pid.
    adopted: Vec<u32>,
    /// Containers made by `add_container`, removed on drop.
    containers: Vec<Container>,
    bridge: Option<String>,
    short: String,
    /// The last node's extra arguments, for a restart.
    node_extra: Vec<String>,
    backends: Vec<Child>,
    pub admin: String,
    /// The node's log level (`TRELLIS_LOG`).
    pub node_log: &'static str,
    /// The node's `--drain-seconds`.
    pub node_drain: u32,
    /// `NAME=VALUE ...` in the node's environment.
    pub node_env: String,
    /// A command the node runs under (a supervisor), before `env`.
    pub node_wrapper: String,
}

impl Env {
    pub fn new(test: &str) -> Option<Env> {
        if !root(test) {
            return None;
        }
        let (id, short) = unique();
        let run = PathBuf::from(format!("/run/trellis-node-test-{id}"));
        let cg_mount = run.join("cg2");
        let mut env = Env {
            ns: format!("trellis-n-{id}"),
            tns: format!("trellis-g-{id}"),
            // One cgroup v2 hierarchy per host, however often it is
            // mounted: the names must be unique.
            client_cg: cg_mount.join(format!("trellis-n-{id}-clients")),
            proxy_cg: cg_mount.join(format!("trellis-n-{id}-proxy")),
            pin_dir: run.join("bpf").join("trellis"),
            cg_mount,
            run,
            cp_url: String::new(),
            cp: None,
            node: None,
            replaced: Vec::new(),
            adopted: Vec::new(),
            containers: Vec::new(),
            bridge: None,
            short: short.clone(),
            node_extra: Vec::new(),
            backends: Vec::new(),
            admin: String::new(),
            node_log: "warn",
            node_drain: 2,
            node_env: String::new(),
            node_wrapper: String::new(),
        };
        std::fs::create_dir_all(&env.cg_mount).unwrap();
        must(&format!(
            "ip netns add {n} && ip -n {n} link set lo up && ip netns add {t} && ip -n {t} link set lo up \
             && ip link add tn{short} netns {n} type veth peer name tg{short} netns {t} \
             && ip -n {n} addr add 10.200.0.1/24 dev tn{short} && ip -n {n} addr add {SNAT_IP}/24 dev tn{short} \
             && ip -n {t} addr add {TARGET_IP}/24 dev tg{short} \
             && ip -n {n} link set tn{short} up && ip -n {t} link set tg{short} up",
            n = env.ns,
            t = env.tns
        ));
        must(&format!("mount -t cgroup2 none {}", env.cg_mount.display()));
        // bpffs mounted here, not by the node: `ip netns exec` gives each
        // process a mount namespace of its own, and a node taking over from
        // another must find the other's pins.
        let bpffs = env.pin_dir.parent().unwrap();
        std::fs::create_dir_all(bpffs).unwrap();
        must(&format!("mount -t bpf bpf {}", bpffs.display()));
        std::fs::create_dir(&env.client_cg).unwrap();
        std::fs::create_dir(&env.proxy_cg).unwrap();
        env.start_control_plane();
        Some(env)
    }

    /// A container with address 10.88.0.`n`, in a cgroup under the
    /// client cgroup (`redirected`) or beside it. The bridge is made with
    /// the first one.
    pub fn add_container(&mut self, n: u8, redirected: bool) -> Container {
        if self.bridge.is_none() {
            let br = format!("tb{}", self.short);
            must(&format!(
                "ip -n {ns} link add {br} type bridge && ip -n {ns} addr add {BRIDGE_IP}/24 dev {br} \
                 && ip -n {ns} link set {br} up",
                ns = self.ns
            ));
            self.bridge = Some(br);
        }
        let br = self.bridge.clone().unwrap_or_default();
        let ns = format!("{}-c{n}", self.ns);
        let ip = format!("10.88.0.{n}");
        let host = format!("tv{}x{n}", self.short);
        let parent = if redirected {
            &self.client_cg
        } else {
            &self.cg_mount
        };
        let cgroup = parent.join(format!("{ns}-cg"));
        // Known before it exists, so a failure half-way is cleaned up too.
        self.containers.push(Container {
            ns: ns.clone(),
            ip: ip.clone(),
            cgroup: cgroup.clone(),
        });
        let made = sh(&format!(
            "set -x; ip netns add {ns} && ip -n {ns} link set lo up \
             && ip link add {host} netns {node} type veth peer name eth0 netns {ns} \
             && ip -n {node} link set {host} master {br} && ip -n {node} link set {host} up \
             && ip -n {ns} addr add {ip}/24 dev eth0 && ip -n {ns} link set eth0 up \
             && ip -n {ns} route add default via {BRIDGE_IP}",
            node = self.ns
        ));
        if !made.status.success() {
            // What was there, for whoever meets this next.
            let state = sh(&format!(
                "ip netns list; ip -n {node} -br link; ip -n {ns} -br link; ip -n {ns} -br addr; ip -n {ns} route",
                node = self.ns
            ));
            panic!(
                "container {ns}: {}\nstate:\n{}{}",
                String::from_utf8_lossy(&made.stderr),
                String::from_utf8_lossy(&state.stdout),
                String::from_utf8_lossy(&state.stderr)
            );
        }
        let resolv = PathBuf::from("/etc/netns").join(&ns);
        std::fs::create_dir_all(&resolv).unwrap();
        std::fs::write(
            resolv.join("resolv.conf"),
            format!("nameserver {BRIDGE_IP}\n"),
        )
        .unwrap();
        std::fs::create_dir(&cgroup).unwrap();
        Container { ns, ip, cgroup }
    }

    /// `cmd` in container `c` (its namespace and its cgroup).
    pub fn in_container(&self, c: &Container, cmd: &str) -> Command {
        let mut command = Command::new("ip");
        command.args([
            "netns",
            "exec",
            &c.ns,
            "sh",
            "-c",
            &format!(
                "echo $$ > {}/cgroup.procs && exec {cmd}",
                c.cgroup.display()
            ),
        ]);
        command
    }

    /// tests/node/client.py in container `c`; its stdout.
    pub fn container_client(&self, c: &Container, args: &[&str]) -> String {
        let out = self
            .in_container(c, &format!("python3 {HERE}/client.py {}", args.join(" ")))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// Removes container `c`: its processes are killed and its namespace
    /// deleted (with whatever connections it had open).
    pub fn remove_container(&mut self, c: &Container) {
        remove_container(c);
        self.containers.retain(|k| k.ns != c.ns);
    }

    /// Entries in one of the datapath's pinned maps (`trellis_peer_orig`, ...).
    pub fn map_entries(&self, map: &str) -> usize {
        let out = must(&format!(
            "bpftool -j map dump pinned {}/maps/{map}",
            self.pin_dir.display()
        ));
        let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        v.as_array().map_or(0, Vec::len)
    }

    /// `ip netns exec` into the node namespace, in `cgroup` if given.
    fn in_node(&self, cgroup: Option<&PathBuf>, cmd: &str) -> Command {
        let join = cgroup
            .map(|c| format!("echo $$ > {}/cgroup.procs && ", c.display()))
            .unwrap_or_default();
        let mut c = Command::new("ip");
        c.args([
            "netns",
            "exec",
            &self.ns,
            "sh",
            "-c",
            &format!("{join}exec {cmd}"),
        ]);
        c.env("TRELLIS_LOG", "warn")
            .env("TRELLIS_TOKEN_FILE", self.run.join("cp/api-token"))
            .env("TRELLIS_CA_FILE", self.run.join("cp/ca.pem"));
        c
    }

    pub fn start_control_plane(&mut self) {
        let listen = self
            .cp_url
            .strip_prefix("https://")
            .unwrap_or("127.0.0.1:0")
            .to_string();
        let mut cp = self
            .in_node(
                None,
                &format!(
                    "{BIN} control-plane --data-dir {}/cp --listen {listen}",
                    self.run.display()
                ),
            )
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let addr = wait_line(&mut cp, "trellis control plane listening on ");
        self.cp_url = addr;
        self.cp = Some(cp);
    }

    pub fn stop_control_plane(&mut self) {
        if let Some(mut c) = self.cp.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Backends in the targets namespace: specs like `http:8081:blue`, `tcp:9000:echo`.
    pub fn start_backends(&mut self, specs: &[&str]) {
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.tns,
                python(specs.iter().any(|s| s.starts_with("grpc:"))),
                &format!("{HERE}/backend.py"),
            ])
            .arg(&self.run)
            .arg(TARGET_IP)
            .args(specs)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        wait_line(&mut child, "ready");
        self.backends.push(child);
    }

    /// `trellis apply` of a YAML text; panics if refused.
    pub fn apply(&self, yaml: &str) {
        static N: AtomicU32 = AtomicU32::new(0);
        let file = self
            .run
            .join(format!("apply-{}.yaml", N.fetch_add(1, Ordering::SeqCst)));
        std::fs::write(&file, yaml).unwrap();
        let out = self
            .in_node(
                None,
                &format!("{BIN} apply -f {} --server {}", file.display(), self.cp_url),
            )
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "apply: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A `trellis` CLI process against the control plane, its stdout piped
    /// (killed by the caller).
    pub fn spawn_trellis(&self, args: &str) -> std::process::Child {
        self.in_node(None, &format!("{BIN} {args} --server {}", self.cp_url))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// A `trellis` CLI call against the control plane; its stdout. Panics
    /// if it fails.
    pub fn trellis(&self, args: &str) -> String {
        let out = self
            .in_node(None, &format!("{BIN} {args} --server {}", self.cp_url))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "trellis {args}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// A service's IPv4 VIP, from the control plane.
    pub fn vip(&self, service: &str) -> String {
        let out = self
            .in_node(
                None,
                &format!("{BIN} get svc {service} -o json --server {}", self.cp_url),
            )
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("service JSON");
        v["status"]["vip"].as_str().expect("vip").to_string()
    }

    /// Starts the node (with a join token on its first start); its stdout
    /// goes to `run/node.out`, its log to `run/node.log`.
    pub fn start_node(&mut self, extra: &[&str]) {
        self.node_extra = extra.iter().map(|a| a.to_string()).collect();
        let node = self.spawn_node();
        self.node = Some(node);
        self.wait_ready();
    }

    /// Starts a new node with the last arguments while the running one
    /// serves: the new one takes the listeners over, the old one drains
    /// and exits (see `wait_replaced`).
    pub fn restart_node(&mut self) {
        let new = self.spawn_node();
        if let Some(old) = self.node.replace(new) {
            self.replaced.push(old);
        }
        self.wait_ready();
    }

    /// Waits for every node a restart replaced to exit; their exit codes.
    pub fn wait_replaced(&mut self, limit: Duration) -> Vec<Option<i32>> {
        let t = Instant::now();
        let mut codes = Vec::new();
        for mut old in self.replaced.drain(..) {
            loop {
                if let Ok(Some(status)) = old.try_wait() {
                    codes.push(status.code());
                    break;
                }
                if t.elapsed() > limit {
                    let _ = old.kill();
                    let _ = old.wait();
                    codes.push(None);
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        codes
    }

    fn spawn_node(&mut self) -> Child {
        let join = match self.run.join("node/identity.json").exists() {
            true => String::new(),
            false => format!(
                "--join-token {}",
                self.trellis("network join-token east").trim()
            ),
        };
        let cmd = format!(
            "{} env TRELLIS_LOG={} {} {BIN} node --network east --control-plane {} --data-dir {}/node --cgroup {} --proxy-cgroup {} \
             --bpf-pin-dir {} --datapath ebpf --snat-address {SNAT_IP} --admin-listen 127.0.0.1:0 \
             --access-log {}/access.log --drain-seconds {} {join} {} 2>>{}/node.log",
            self.node_wrapper,
            self.node_log,
            self.node_env,
            self.cp_url,
            self.run.display(),
            self.client_cg.display(),
            self.proxy_cg.display(),
            self.pin_dir.display(),
            self.run.display(),
            self.node_drain,
            self.node_extra.join(" "),
            self.run.display(),
        );
        // Killed if it never says where it listens.
        let mut node = Owned::new(
            self.in_node(Some(&self.proxy_cg), &cmd)
                .stdout(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        self.admin = wait_line_kept(
            node.get_mut(),
            "trellis node admin listening on ",
            Some(self.run.join("node.out")),
        );
        node.release()
    }

    /// The running node, no longer this Env's to stop.
    pub fn take_node(&mut self) -> Option<Child> {
        self.node.take()
    }

    /// A node process started by another (a successor), stopped on drop.
    pub fn adopt_node(&mut self, pid: u32) {
        self.adopted.push(pid);
    }

    pub fn wait_ready(&self) {
        let t = Instant::now();
        while self.admin_get("/ready").0 != 200 {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "node never became ready"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stop_node(&mut self) {
        for mut n in self.node.take().into_iter().chain(self.replaced.drain(..)) {
            let _ = n.kill();
            let _ = n.wait();
        }
        for pid in self.adopted.drain(..) {
            let _ = sh(&format!("kill -9 {pid}"));
            let t = Instant::now();
            while std::path::Path::new(&format!("/proc/{pid}")).exists()
                && t.elapsed() < Duration::from_secs(5)
            {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// GET on the admin endpoint: (status, body).
    pub fn admin_get(&self, path: &str) -> (u16, String) {
        let out = self
            .in_node(
                None,
                &format!(
                    "curl -s -m 5 -w '\\n%{{http_code}}' -H \"authorization: Bearer $(cat {}/node/admin-token)\" http://{}{path}",
                    self.run.display(),
                    self.admin
                ),
            )
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    /// Runs tests/node/client.py in the redirected cgroup; parses its JSON.
    pub fn client(&self, args: &[&str]) -> serde_json::Value {
        let out = self.client_output(args);
        let text = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(text.trim()).unwrap_or_else(|e| {
            let err = String::from_utf8_lossy(&out.stderr);
            panic!("client said {text:?} ({e}), and on stderr: {err}")
        })
    }

    pub fn client_raw(&self, args: &[&str]) -> String {
        String::from_utf8_lossy(&self.client_output(args).stdout).to_string()
    }

    fn client_output(&self, args: &[&str]) -> std::process::Output {
        self.in_node(
            Some(&self.client_cg),
            &format!(
                "{} {HERE}/client.py {}",
                python(args.first() == Some(&"grpc")),
                args.join(" ")
            ),
        )
        .output()
        .unwrap()
    }

    /// What the test target on `port` counted (tests/node/backend.py's
    /// `/__count`), asked from outside the redirected cgroup.
    pub fn backend_counts(&self, port: u16) -> serde_json::Value {
        let out = self
            .in_node(
                None,
                &format!("curl -s -m 5 http://{TARGET_IP}:{port}/__count"),
            )
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("port {port} counts: {e}: {out:?}"))
    }

    /// curl in the redirected cgroup; its stdout.
    pub fn curl(&self, args: &[&str]) -> String {
        let out = self
            .in_node(
                Some(&self.client_cg),
                &format!("curl -s -m 5 {}", args.join(" ")),
            )
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// `cmd` in the node's namespace, outside the redirected cgroup,
    /// stdout piped.
    pub fn spawn_in_node(&self, cmd: &str) -> Owned {
        Owned::new(
            self.in_node(None, cmd)
                .stdout(Stdio::piped())
                .spawn()
                .unwrap(),
        )
    }

    /// Runs `f` on a thread of its own that has entered the node's network
    /// namespace (namespaces are per thread), so its sockets reach what
    /// listens there: the control plane, a ChromeDriver.
    pub fn in_namespace<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.ns);
        std::thread::scope(|s| {
            s.spawn(|| {
                let ns = std::fs::File::open(&path).expect("the node's namespace");
                nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)
                    .expect("entering the node's namespace");
                f()
            })
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
        })
    }

    pub fn spawn_client(&self, args: &[&str]) -> Owned {
        self.spawn_script("client.py", args)
    }

    /// Runs tests/node/`script` in the redirected cgroup, stdout piped.
    pub fn spawn_script(&self, script: &str, args: &[&str]) -> Owned {
        Owned::new(
            self.in_node(
                Some(&self.client_cg),
                &format!("python3 {HERE}/{script} {}", args.join(" ")),
            )
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
        )
    }

    /// tests/node/steady.py against `url` in the redirected cgroup, its DNS
    /// queries for `name` to the node DNS on 127.0.0.1:5353.
    pub fn steady_load(&self, url: &str, name: &str) -> SteadyLoad {
        static N: AtomicU32 = AtomicU32::new(0);
        let stop = self
            .run
            .join(format!("stop-load-{}", N.fetch_add(1, Ordering::SeqCst)));
        let stop_arg = stop.display().to_string();
        let child = self.spawn_script("steady.py", &[url, "127.0.0.1:5353", name, &stop_arg]);
        SteadyLoad { child, stop }
    }

    /// `dig` in the node namespace.
    pub fn dig(&self, args: &[&str]) -> String {
        let out = self
            .in_node(None, &format!("dig +time=2 +tries=1 {}", args.join(" ")))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.run.join("access.log")).unwrap_or_default()
    }
}

/// A steady.py run: stopped (and killed, if the test fails first) on drop.
pub struct SteadyLoad {
    child: Owned,
    stop: PathBuf,
}

impl SteadyLoad {
    /// Ends the load and reads its report (steady.py's header says what is
    /// in it).
    pub fn stop(self) -> serde_json::Value {
        std::fs::write(&self.stop, b"").expect("the stop file");
        let out = self.child.output();
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "steady.py said {:?}: {e}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }
}

/// Kills what runs in `c`, deletes its namespace, `resolv.conf` and cgroup.
fn remove_container(c: &Container) {
    let _ = sh(&format!(
        "ip netns pids {ns} | xargs -r kill -9; ip netns del {ns}",
        ns = c.ns
    ));
    let _ = std::fs::remove_dir_all(PathBuf::from("/etc/netns").join(&c.ns));
    for _ in 0..50 {
        if std::fs::remove_dir(&c.cgroup).is_ok() || !c.cgroup.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for c in self.containers.drain(..) {
            remove_container(&c);
        }
        self.stop_node();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.run.join("node.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("node log (last lines):");
            for line in tail.into_iter().rev() {
                eprintln!("  {line}");
            }
        }
        self.stop_control_plane();
        for mut b in self.backends.drain(..) {
            let _ = b.kill();
            let _ = b.wait();
        }
        let _ = trellis_datapath::EbpfDatapath::cleanup(&self.pin_dir);
        let _ = sh(&format!(
            "umount {}",
            self.pin_dir.parent().unwrap().display()
        ));
        for cg in [&self.client_cg, &self.proxy_cg] {
            for _ in 0..50 {
                if std::fs::remove_dir(cg).is_ok() || !cg.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = sh(&format!("umount {}", self.cg_mount.display()));
        // Whatever else a test started there (a browser and its helpers):
        // a deleted namespace does not end its processes.
        let _ = sh(&format!(
            "for ns in {n} {t}; do ip netns pids $ns | xargs -r kill -9; done; ip netns del {n}; ip netns del {t}",
            n = self.ns,
            t = self.tns
        ));
        let _ = std::fs::remove_dir_all(&self.run);
    }
}
