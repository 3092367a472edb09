//! Test harness shared by the datapath's root tests: a throwaway network
//! namespace with a proxy process that reports what SO_ORIGINAL_DST and
//! getpeername say, and one-shot client processes. Everything is removed on
//! drop, also when the test fails. Without root the tests say SKIPPED; under
//! CI=true that is a failure.

#![allow(dead_code)] // each test binary uses a different part

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

pub const PROXY_PORT: u16 = 15001;
pub const PROXY_MARK: u32 = 0x7472;
pub const VIP4: &str = "169.254.171.10";
pub const VIP6: &str = "fd00:7472:6c73::a";

const PROXY_PY: &str = r#"
import socket, struct, sys, threading
def serve(fam, host):
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, int(sys.argv[1])))
    s.listen(64)
    while True:
        c, _ = s.accept()
        try:
            if fam == socket.AF_INET:
                port, ip = struct.unpack('!2xH4s8x', c.getsockopt(socket.SOL_IP, 80, 16))
                orig = '%s:%d' % (socket.inet_ntop(fam, ip), port)
            else:
                port, ip = struct.unpack('!2xH4x16s4x', c.getsockopt(socket.IPPROTO_IPV6, 80, 28))
                orig = '[%s]:%d' % (socket.inet_ntop(fam, ip), port)
        except OSError as e:
            orig = 'none'
        said = c.makefile().readline().strip()
        c.sendall(('orig=%s said=%s\n' % (orig, said)).encode())
        c.close()
for fam, host in ((socket.AF_INET, '127.0.0.1'), (socket.AF_INET6, '::1')):
    threading.Thread(target=serve, args=(fam, host), daemon=True).start()
print('ready', flush=True)
threading.Event().wait()
"#;

const CLIENT_PY: &str = r#"
import errno, socket, sys, time
host, port, delay, mark = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
fam = socket.AF_INET6 if ':' in host else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM)
if mark:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
s.settimeout(5)
try:
    s.connect((host, port))
except OSError as e:
    print('error=%s' % errno.errorcode.get(e.errno, e.errno))
    sys.exit(0)
peer = s.getpeername()
time.sleep(delay)
s.sendall(b'hello\n')
print('peer=%s:%d %s' % (peer[0], peer[1], s.makefile().readline().strip()))
"#;

/// The services both datapaths are tested with: 5 map entries for eBPF
/// (a VIP entry per VIP, plus one per port), 3 set elements for nftables.
pub fn services() -> Vec<trellis_datapath::ServiceEntry> {
    use trellis_datapath::ServiceEntry;
    vec![
        ServiceEntry {
            vip: VIP4.parse().unwrap(),
            ports: vec![80],
        },
        ServiceEntry {
            vip: VIP6.parse().unwrap(),
            ports: vec![80, 8080],
        },
    ]
}

pub fn sh(cmd: &str) -> Output {
    Command::new("sh").args(["-c", cmd]).output().expect("sh")
}

pub fn must(cmd: &str) {
    let out = sh(cmd);
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// False (after saying SKIPPED) when not root; panics under CI=true.
pub fn root(test: &str) -> bool {
    if String::from_utf8_lossy(&sh("id -u").stdout).trim() == "0" {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "datapath test {test} needs root, and CI=true: failing instead of skipping"
    );
    eprintln!("SKIPPED: datapath test {test} needs root");
    false
}

/// A unique id for names: process id and a counter.
pub fn unique() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

pub struct Netns {
    pub name: String,
    /// Scratch dir under /run (not /sys: `ip netns exec` remounts /sys).
    pub run: PathBuf,
    proxy: Option<Child>,
}

impl Netns {
    pub fn new(id: &str) -> Netns {
        let ns = Netns {
            name: format!("trellis-t-{id}"),
            run: PathBuf::from(format!("/run/trellis-test-{id}")),
            proxy: None,
        };
        std::fs::create_dir_all(&ns.run).unwrap();
        must(&format!(
            "ip netns add {n} && ip -n {n} link set lo up",
            n = ns.name
        ));
        std::fs::write(ns.run.join("proxy.py"), PROXY_PY).unwrap();
        std::fs::write(ns.run.join("client.py"), CLIENT_PY).unwrap();
        ns
    }

    /// `echo $$ > cgroup.procs && ` for running a command in `cgroup`.
    fn join(cgroup: Option<&Path>) -> String {
        cgroup
            .map(|c| format!("echo $$ > {}/cgroup.procs && ", c.display()))
            .unwrap_or_default()
    }

    /// Starts the proxy on 127.0.0.1 and ::1, in `cgroup` if given.
    pub fn start_proxy(&mut self, cgroup: Option<&Path>) {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.name, "sh", "-c"])
            .arg(format!(
                "{}exec python3 {} {PROXY_PORT}",
                Netns::join(cgroup),
                self.run.join("proxy.py").display()
            ))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready");
        self.proxy = Some(child);
    }

    pub fn stop_proxy(&mut self) {
        if let Some(mut p) = self.proxy.take() {
            let _ = p.kill();
            let _ = p.wait();
        }
    }

    /// Starts a client: connect to host:port (in `cgroup` if given), wait
    /// `delay` seconds, say hello; it prints what it saw on one line.
    pub fn spawn_client(
        &self,
        host: &str,
        port: u16,
        cgroup: Option<&Path>,
        delay: f32,
        mark: u32,
    ) -> Child {
        Command::new("ip")
            .args(["netns", "exec", &self.name, "sh", "-c"])
            .arg(format!(
                "{}exec python3 {} {host} {port} {delay} {mark}",
                Netns::join(cgroup),
                self.run.join("client.py").display()
            ))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
    }

    pub fn client(&self, host: &str, port: u16, cgroup: Option<&Path>) -> String {
        output(self.spawn_client(host, port, cgroup, 0.0, 0))
    }
}

pub fn output(child: Child) -> String {
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.stop_proxy();
        let _ = sh(&format!("ip netns del {}", self.name));
        let _ = std::fs::remove_dir_all(&self.run);
    }
}
