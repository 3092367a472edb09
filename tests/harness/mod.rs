//! The one harness every integration test binary shares (`mod harness;`).
//! Here: the primitives of end-to-end scenarios — network namespaces
//! joined by veth pairs, cgroups on a private cgroup2 mount, resolv.conf
//! files for `ip netns exec`, and processes started inside them. Everything
//! is removed on drop, also when the test fails or panics; names are unique
//! per test so tests run in parallel. Without root: SKIPPED, and under
//! CI=true a failure.
//!
//! - `local`: a control plane process on loopback and the CLI against it
//!   (no root).
//! - `node`: one node agent in a namespace of its own, with backends and
//!   clients (`Env`).
//! - `trellis`: the Trellis processes of a [`Topology`].

#![allow(dead_code, unused_imports)] // each test binary uses a different part

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

pub mod etcd;
pub mod local;
pub mod node;
mod trellis;
pub use trellis::{ControlPlane, HELPERS, Node, json};

pub const BIN: &str = env!("CARGO_BIN_EXE_trellis");

/// A fresh key and a CSR for it (PEM), as a node makes them.
pub fn key_and_csr() -> (rcgen::KeyPair, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    (key, csr)
}

/// Writes `DIR/NAME.pem` (the certificate of an answer of `POST
/// /v1/certificates`) and `DIR/NAME.key`: their paths, for curl's `--cert`
/// and `--key`.
pub fn keep_certificate(
    dir: &Path,
    name: &str,
    issued: &serde_json::Value,
    key: &rcgen::KeyPair,
) -> (String, String) {
    let (cert, keyf) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    let pem = issued["certificate"].as_str().expect("a certificate");
    std::fs::write(&cert, pem).unwrap();
    std::fs::write(&keyf, key.serialize_pem()).unwrap();
    (cert.display().to_string(), keyf.display().to_string())
}

/// Fails the test if any of `needles` is in the bytes `wire` carried.
pub fn assert_not_in_clear<S: AsRef<str>>(wire: &[u8], needles: impl IntoIterator<Item = S>) {
    for needle in needles {
        let needle = needle.as_ref().as_bytes();
        assert!(
            !wire.windows(needle.len()).any(|w| w == needle),
            "{:?} crossed the wire in clear",
            String::from_utf8_lossy(needle)
        );
    }
}

/// A child process killed when this is dropped (a test that fails on the
/// way leaves nothing running), unless it was waited for.
pub struct Owned(Option<Child>);

impl Owned {
    pub fn new(child: Child) -> Owned {
        Owned(Some(child))
    }

    /// Waits for the child to exit on its own; its output.
    pub fn output(mut self) -> Output {
        self.0
            .take()
            .expect("a child")
            .wait_with_output()
            .expect("the child's output")
    }

    /// The child, no longer killed on drop.
    pub fn release(mut self) -> Child {
        self.0.take().expect("a child")
    }

    pub fn get_mut(&mut self) -> &mut Child {
        self.0.as_mut().expect("a child")
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn sh(cmd: &str) -> Output {
    Command::new("sh").args(["-c", cmd]).output().expect("sh")
}

pub fn must(cmd: &str) -> String {
    let out = sh(cmd);
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// False (after saying SKIPPED) when not root; panics under CI=true.
pub fn root(test: &str) -> bool {
    let root = String::from_utf8_lossy(&sh("id -u").stdout).trim() == "0";
    needs(test, "root", root)
}

/// `have`, or SKIPPED with what `test` needs (and a failure under
/// CI=true: privileged tests never silently pass).
pub fn needs(test: &str, what: &str, have: bool) -> bool {
    if have {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "test {test} needs {what}, and CI=true: failing instead of skipping"
    );
    eprintln!("SKIPPED: test {test} needs {what}");
    false
}

pub struct Topology {
    /// Unique per test: namespace names start with it.
    pub id: String,
    /// Short unique digits, for interface names (15 characters at most).
    short: String,
    pub run: PathBuf,
    cg_mount: PathBuf,
    namespaces: Vec<String>,
    cgroups: Vec<PathBuf>,
    pin_dirs: Vec<PathBuf>,
    links: u32,
    /// In start order; stopped in reverse (nodes before their control plane).
    children: Vec<(String, Child)>,
}

impl Topology {
    pub fn new(test: &str) -> Option<Topology> {
        if !root(test) {
            return None;
        }
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let id = format!("tt{}-{n}", pid % 100_000);
        let run = PathBuf::from(format!("/run/trellis-scenario-{id}"));
        let cg_mount = run.join("cg2");
        std::fs::create_dir_all(&cg_mount).unwrap();
        let topo = Topology {
            short: format!("{}{n}", pid % 100_000),
            id,
            run,
            cg_mount,
            namespaces: Vec::new(),
            cgroups: Vec::new(),
            pin_dirs: Vec::new(),
            links: 0,
            children: Vec::new(),
        };
        must(&format!(
            "mount -t cgroup2 none {}",
            topo.cg_mount.display()
        ));
        Some(topo)
    }

    /// A namespace with loopback up; returns its full name.
    pub fn netns(&mut self, name: &str) -> String {
        let ns = format!("{}-{name}", self.id);
        must(&format!("ip netns add {ns} && ip -n {ns} link set lo up"));
        self.namespaces.push(ns.clone());
        ns
    }

    /// A veth pair between two namespaces, with an address (CIDR) on each end.
    pub fn link(&mut self, a: &str, a_addr: &str, b: &str, b_addr: &str) {
        self.links += 1;
        let (x, y) = (
            format!("v{}a{}", self.short, self.links),
            format!("v{}b{}", self.short, self.links),
        );
        must(&format!(
            "ip link add {x} netns {a} type veth peer name {y} netns {b} \
             && ip -n {a} addr add {a_addr} dev {x} && ip -n {b} addr add {b_addr} dev {y} \
             && ip -n {a} link set {x} up && ip -n {b} link set {y} up"
        ));
    }

    /// One more address in `ns`, on its loopback (a /32: the neighbours
    /// find it by ARP on the link whose subnet it belongs to).
    pub fn address(&self, ns: &str, addr: &str) {
        must(&format!("ip -n {ns} addr add {addr}/32 dev lo"));
    }

    /// A cgroup of its own.
    pub fn cgroup(&mut self, name: &str) -> PathBuf {
        let cg = self.cg_mount.join(format!("{}-{name}", self.id));
        std::fs::create_dir(&cg).unwrap();
        self.cgroups.push(cg.clone());
        cg
    }

    /// A bpffs pin directory for one node agent (removed on drop).
    pub fn pin_dir(&mut self, name: &str) -> PathBuf {
        let dir = self.run.join(format!("bpf-{name}")).join("trellis");
        self.pin_dirs.push(dir.clone());
        dir
    }

    /// What `ip netns exec NS` puts at /etc/resolv.conf.
    pub fn resolver(&self, ns: &str, nameserver: &str) {
        let dir = PathBuf::from("/etc/netns").join(ns);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("resolv.conf"),
            format!("nameserver {nameserver}\n"),
        )
        .unwrap();
    }

    fn command(ns: &str, cgroup: Option<&Path>, cmd: &str) -> Command {
        let join = cgroup
            .map(|c| format!("echo $$ > {}/cgroup.procs && ", c.display()))
            .unwrap_or_default();
        let mut c = Command::new("ip");
        c.args([
            "netns",
            "exec",
            ns,
            "sh",
            "-c",
            &format!("{join}exec {cmd}"),
        ]);
        c.env("TRELLIS_LOG", "warn");
        c
    }

    /// Runs `cmd` to its end in `ns` (and `cgroup`).
    pub fn exec(&self, ns: &str, cgroup: Option<&Path>, cmd: &str) -> Output {
        Topology::command(ns, cgroup, cmd).output().unwrap()
    }

    /// Starts `cmd` in `ns` (and `cgroup`) as `key` and waits for a stdout
    /// line starting with `ready`; returns the rest of that line.
    pub fn spawn(
        &mut self,
        key: &str,
        ns: &str,
        cgroup: Option<&Path>,
        cmd: &str,
        ready: &str,
    ) -> String {
        let mut child = Topology::command(ns, cgroup, cmd)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let line = wait_line(&mut child, ready);
        self.children.push((key.to_string(), child));
        line
    }

    /// Kills the process started as `key`.
    pub fn kill(&mut self, key: &str) {
        if let Some(i) = self.children.iter().position(|(k, _)| k == key) {
            let (_, mut c) = self.children.remove(i);
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Reads `child`'s stdout until a line starts with `prefix` (20 s at most);
/// keeps draining it afterwards so the child never blocks on a full pipe.
pub fn wait_line(child: &mut Child, prefix: &str) -> String {
    wait_line_kept(child, prefix, None)
}

/// [`wait_line`], keeping every line the child prints in `keep` too.
pub fn wait_line_kept(child: &mut Child, prefix: &str, keep: Option<PathBuf>) -> String {
    let out = child.stdout.take().expect("stdout");
    let mut keep = keep.map(|p| std::fs::File::create(p).expect("a file for the output"));
    let (tx, rx) = std::sync::mpsc::channel();
    let wanted = prefix.to_string();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(out);
        let mut line = String::new();
        let mut sent = false;
        while reader.read_line(&mut line).unwrap_or(0) > 0 {
            if let Some(f) = keep.as_mut() {
                let _ = f.write_all(line.as_bytes());
            }
            if !sent {
                if let Some(rest) = line.trim().strip_prefix(&wanted) {
                    let _ = tx.send(rest.to_string());
                    sent = true;
                }
            }
            line.clear();
        }
    });
    rx.recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("no line starting with {prefix:?}"))
}

impl Drop for Topology {
    fn drop(&mut self) {
        for (_, mut c) in self.children.drain(..).rev() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for dir in &self.pin_dirs {
            let _ = trellis_datapath::EbpfDatapath::cleanup(dir);
            if let Some(mount) = dir.parent() {
                let _ = sh(&format!("umount {}", mount.display()));
            }
        }
        for cg in &self.cgroups {
            for _ in 0..50 {
                if std::fs::remove_dir(cg).is_ok() || !cg.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = sh(&format!("umount {}", self.cg_mount.display()));
        for ns in &self.namespaces {
            let _ = sh(&format!("ip netns del {ns}"));
            let _ = std::fs::remove_dir_all(PathBuf::from("/etc/netns").join(ns));
        }
        let _ = std::fs::remove_dir_all(&self.run);
    }
}
