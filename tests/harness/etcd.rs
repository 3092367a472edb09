//! An etcd cluster on loopback for the shared-store tests: Debian's
//! `etcd-server` (scripts/setup.sh installs it), members on free ports with
//! data dirs of their own, all killed and removed on drop. Without the
//! binary: SKIPPED, and under CI=true a failure.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Limits raised as docs/operations.md tells operators to raise them, so
/// that large applies fit in one transaction.
pub const MAX_TXN_OPS: usize = 20_000;
pub const MAX_REQUEST_BYTES: usize = 32 << 20;

pub struct Member {
    pub name: String,
    pub client: String,
    peer: String,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

pub struct Etcd {
    pub members: Vec<Member>,
    initial: String,
    token: String,
    /// Flags every member gets besides the cluster's (TLS files).
    extra: Vec<String>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Whether etcd can run here; says SKIPPED (or fails under CI) if not.
pub fn available(test: &str) -> bool {
    if Command::new("etcd").arg("--version").output().is_ok() {
        return true;
    }
    let why = "etcd is not installed (scripts/setup.sh installs etcd-server)";
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: {why}");
    }
    eprintln!("SKIPPED {test}: {why}");
    false
}

impl Etcd {
    /// A cluster of `n` members, healthy when this returns.
    pub fn cluster(n: usize) -> Etcd {
        Etcd::cluster_with(n, "http", &[], &[])
    }

    /// A cluster of `n` members serving clients on `scheme` with `extra`
    /// flags (TLS files), checked healthy with `etcdctl` and `ctl` flags.
    pub fn cluster_with(n: usize, scheme: &str, extra: &[String], ctl: &[String]) -> Etcd {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let unique = format!(
            "trellis-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        );
        let members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client: format!("{scheme}://127.0.0.1:{}", free_port()),
                peer: format!("http://127.0.0.1:{}", free_port()),
                dir: tempfile::tempdir().expect("a data dir"),
                child: None,
            })
            .collect();
        let initial = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        let mut etcd = Etcd {
            members,
            initial,
            token: unique,
            extra: extra.to_vec(),
        };
        for i in 0..n {
            etcd.start(i);
        }
        etcd.wait_healthy_with(&(0..n).collect::<Vec<_>>(), ctl);
        etcd
    }

    /// Every member's client URL, comma-separated.
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(|m| m.client.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts member `i` (again, on its data dir: it rejoins).
    pub fn start(&mut self, i: usize) {
        let m = &mut self.members[i];
        let child = Command::new("etcd")
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(m.dir.path().join("data"))
            .args(["--listen-client-urls", &m.client])
            .args(["--advertise-client-urls", &m.client])
            .args(["--listen-peer-urls", &m.peer])
            .args(["--initial-advertise-peer-urls", &m.peer])
            .args(["--initial-cluster", &self.initial])
            .args(["--initial-cluster-token", &self.token])
            .args(["--initial-cluster-state", "new"])
            .args(["--max-txn-ops", &MAX_TXN_OPS.to_string()])
            .args(["--max-request-bytes", &MAX_REQUEST_BYTES.to_string()])
            .args(["--logger", "zap", "--log-level", "error"])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn etcd");
        m.child = Some(child);
    }

    /// SIGKILL member `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits until members `which` answer as healthy (a leader elected).
    pub fn wait_healthy(&self, which: &[usize]) {
        self.wait_healthy_with(which, &[]);
    }

    fn wait_healthy_with(&self, which: &[usize], ctl: &[String]) {
        let endpoints: Vec<&str> = which
            .iter()
            .map(|&i| self.members[i].client.as_str())
            .collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .args(["--endpoints", &endpoints.join(",")])
                .args(ctl)
                .args(["--command-timeout", "2s", "endpoint", "health"])
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "etcd members {which:?} not healthy within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `etcdctl` against every member with `args`; panics if it fails.
    pub fn ctl(&self, args: &[&str]) -> String {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.endpoints()])
            .args(args)
            .output()
            .expect("etcdctl");
        assert!(
            out.status.success(),
            "etcdctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `etcdctl get` of every key under `prefix`, keys only, from the
    /// members running.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let running: Vec<&str> = self
            .members
            .iter()
            .filter(|m| m.child.is_some())
            .map(|m| m.client.as_str())
            .collect();
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &running.join(",")])
            .args(["get", "--prefix", "--keys-only", prefix])
            .output()
            .expect("etcdctl");
        assert!(
            out.status.success(),
            "etcdctl get: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
