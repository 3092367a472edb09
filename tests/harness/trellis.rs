//! Trellis's parts on a topology, driven the way a user drives them: a
//! control plane and the CLI against it, node agents with the eBPF datapath
//! and node-local DNS, and clients that resolve names through the system
//! resolver and call with curl.

use super::{BIN, Topology};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The Python clients and backends shared with tests/node.rs.
pub const HELPERS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/node");

pub struct ControlPlane {
    pub ns: String,
    pub data: PathBuf,
}

/// One node agent: its namespace, the cgroup whose connections it
/// redirects, its own cgroup and its bpffs pins.
pub struct Node {
    pub network: String,
    pub ns: String,
    pub clients: PathBuf,
    pub proxy_cg: PathBuf,
    pub pins: PathBuf,
    /// The admin endpoint, known once started.
    pub admin: String,
}

/// What curl saw.
pub struct Reply {
    pub code: u16,
    /// The `x-trellis-error` header, empty when absent.
    pub error: String,
    pub body: String,
    pub secs: f64,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        json(&self.body)
    }
}

pub fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

impl Topology {
    /// A control plane in `ns` on 0.0.0.0:7070, data in the topology's run
    /// dir, its API certificate naming every IPv4 address `ns` has now.
    pub fn control_plane(&mut self, ns: &str, flags: &str) -> ControlPlane {
        let data = self.run.join("cp");
        let addrs = self.exec(ns, None, "ip -o -4 addr show");
        let advertise: String = String::from_utf8_lossy(&addrs.stdout)
            .lines()
            .filter_map(|l| {
                l.split_whitespace()
                    .nth(3)?
                    .split('/')
                    .next()
                    .map(String::from)
            })
            .map(|a| format!(" --advertise {a}"))
            .collect();
        self.spawn(
            "cp",
            ns,
            None,
            &format!(
                "{BIN} control-plane --data-dir {} --listen 0.0.0.0:7070{advertise} {flags}",
                data.display()
            ),
            "trellis control plane listening on ",
        );
        ControlPlane {
            ns: ns.to_string(),
            data,
        }
    }

    /// The CLI against `cp`, from its namespace; its stdout, trimmed.
    pub fn trellis(&self, cp: &ControlPlane, args: &str) -> String {
        let out = self.exec(
            &cp.ns,
            None,
            &format!(
                "{BIN} {args} --server https://127.0.0.1:7070 --token-file {0}/api-token --ca-file {0}/ca.pem",
                cp.data.display()
            ),
        );
        assert!(
            out.status.success(),
            "trellis {args}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// `trellis apply -f FILE`; the revision it printed.
    pub fn apply(&self, cp: &ControlPlane, file: &str) -> u64 {
        let out = self.trellis(cp, &format!("apply -f {file}"));
        out.lines()
            .find_map(|l| l.strip_prefix("revision "))
            .and_then(|r| r.trim().parse().ok())
            .unwrap_or_else(|| panic!("apply printed no revision: {out}"))
    }

    /// Waits until `node` serves `revision` or a later one.
    pub fn wait_revision(&self, node: &Node, revision: u64) {
        self.wait_for(node, "/config", |body| {
            serde_json::from_str::<serde_json::Value>(body)
                .ok()
                .and_then(|c| c["revision"].as_u64())
                .is_some_and(|r| r >= revision)
        });
    }

    /// Cgroups and pins for a node agent of `network` in `ns`, whose system
    /// resolver is the node-local DNS.
    pub fn node(&mut self, network: &str, ns: &str) -> Node {
        self.resolver(ns, "127.0.0.53");
        Node {
            network: network.to_string(),
            ns: ns.to_string(),
            clients: self.cgroup(&format!("{network}-clients")),
            proxy_cg: self.cgroup(&format!("{network}-proxy")),
            pins: self.pin_dir(network),
            admin: String::new(),
        }
    }

    /// Starts `node`'s agent against the control plane at `cp_url` (eBPF
    /// datapath, DNS on 127.0.0.53, SNAT from `snat`) and waits until ready.
    /// A node with no certificate yet joins with a fresh join token unless
    /// `flags` gives one.
    pub fn start_node(
        &mut self,
        node: &mut Node,
        cp: &ControlPlane,
        cp_url: &str,
        snat: &str,
        flags: &str,
    ) {
        let name = &node.network;
        let run = self.run.display().to_string();
        let joined = self.run.join(name).join("identity.json").exists();
        let join = match joined || flags.contains("--join-token") {
            true => String::new(),
            false => format!(
                "--join-token {}",
                self.trellis(cp, &format!("network join-token {name}"))
            ),
        };
        let cmd = format!(
            "{BIN} node --network {name} --control-plane {cp_url} \
             --data-dir {run}/{name} --cgroup {} --proxy-cgroup {} \
             --bpf-pin-dir {} --datapath ebpf --snat-address {snat} \
             --admin-listen 127.0.0.1:0 --dns-listen 127.0.0.53:53 \
             --access-log {run}/{name}-access.log --drain-seconds 1 {join} {flags}",
            node.clients.display(),
            node.proxy_cg.display(),
            node.pins.display(),
        );
        node.admin = self.spawn(
            &format!("node-{name}"),
            &node.ns.clone(),
            Some(&node.proxy_cg.clone()),
            &cmd,
            "trellis node admin listening on ",
        );
        self.wait_for(node, "/ready", |body| body.starts_with("ready"));
    }

    /// GET on a node's admin endpoint.
    pub fn admin(&self, node: &Node, path: &str) -> String {
        let out = self.exec(
            &node.ns,
            None,
            &format!(
                "curl -s -m 5 -H \"authorization: Bearer $(cat {}/{}/admin-token)\" http://{}{path}",
                self.run.display(),
                node.network,
                node.admin
            ),
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// Polls a node's admin `path` until `ok` holds (30 s at most).
    pub fn wait_for(&self, node: &Node, path: &str, ok: impl Fn(&str) -> bool) {
        let t = Instant::now();
        loop {
            let body = self.admin(node, path);
            if ok(&body) {
                return;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "{}{path} never got there: {body}",
                node.network
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs `cmd` as a client of `node` (its namespace, its redirected
    /// cgroup); its stdout.
    pub fn client(&self, node: &Node, cmd: &str) -> String {
        let out = self.exec(&node.ns, Some(&node.clients), cmd);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// curl as a client of `node`; names go through the system resolver.
    pub fn curl(&self, node: &Node, args: &str) -> Reply {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let headers = self.run.join(format!("headers-{n}"));
        let t = Instant::now();
        // A marker before the status: an empty body still leaves a line.
        let text = self.client(
            node,
            &format!(
                "curl -s -m 10 -D {} -w '\\n=%{{http_code}}' {args}",
                headers.display()
            ),
        );
        let secs = t.elapsed().as_secs_f64();
        let (body, code) = text.rsplit_once('=').unwrap_or(("", "0"));
        let body = body.strip_suffix('\n').unwrap_or(body);
        let head = std::fs::read_to_string(&headers).unwrap_or_default();
        let _ = std::fs::remove_file(&headers);
        let error = head
            .lines()
            .find_map(|l| l.strip_prefix("x-trellis-error: "))
            .unwrap_or_default()
            .trim()
            .to_string();
        Reply {
            code: code.trim().parse().unwrap_or(0),
            error,
            body: body.to_string(),
            secs,
        }
    }

    /// N keep-alive GETs from a client of `node`:
    /// `{"names": {backend: n}, "errors": k, "statuses": {...}}`.
    pub fn count(&self, node: &Node, url: &str, n: usize) -> serde_json::Value {
        let text = self.client(
            node,
            &format!("python3 {HELPERS}/client.py count {url} {n}"),
        );
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("client said {text:?}: {e}"))
    }

    /// Python backends (`http:PORT:NAME`, `tcp:PORT:NAME`) on `addr` in `ns`.
    pub fn backends(&mut self, ns: &str, addr: &str, specs: &str) {
        let run = self.run.display().to_string();
        self.spawn(
            &format!("backends-{ns}-{addr}"),
            ns,
            None,
            &format!("python3 {HELPERS}/backend.py {run} {addr} {specs}"),
            "ready",
        );
    }
}
