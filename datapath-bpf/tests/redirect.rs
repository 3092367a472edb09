//! Root tests of the eBPF datapath, with real programs attached to real
//! cgroups: a throwaway network namespace, a cgroup2 mount and a bpffs under
//! /run (`ip netns exec` remounts /sys, so nothing here lives there), a proxy
//! process in its own cgroup that reports what SO_ORIGINAL_DST and
//! getpeername say, and client processes inside and outside the redirected
//! cgroup. Without root they say SKIPPED; under CI=true that is a failure.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use trellis_datapath::{EbpfDatapath, Options, ServiceEntry};

const PROXY_PORT: u16 = 15001;
const VIP4: &str = "169.254.171.10";
const VIP6: &str = "fd00:7472:6c73::a";

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
host, port, delay = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
fam = socket.AF_INET6 if ':' in host else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM)
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

/// Everything one test creates, removed on drop (also when the test fails).
struct Env {
    id: String,
    run: PathBuf,
    netns: String,
    cg_mount: PathBuf,
    client_cg: PathBuf,
    proxy_cg: PathBuf,
    pin_dir: PathBuf,
    proxy: Option<Child>,
}

fn sh(cmd: &str) -> std::process::Output {
    Command::new("sh").args(["-c", cmd]).output().expect("sh")
}

fn must(cmd: &str) {
    let out = sh(cmd);
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `None` (after saying SKIPPED) when not root; panics under CI=true.
fn env(name: &str) -> Option<Env> {
    let uid = sh("id -u");
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "eBPF datapath test {name} needs root, and CI=true: failing instead of skipping"
        );
        eprintln!("SKIPPED: eBPF datapath test {name} needs root");
        return None;
    }
    static N: AtomicU32 = AtomicU32::new(0);
    let id = format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    );
    let run = PathBuf::from(format!("/run/trellis-test-{id}"));
    let mut e = Env {
        netns: format!("trellis-t-{id}"),
        cg_mount: run.join("cg2"),
        client_cg: run.join("cg2").join(format!("trellis-t-{id}-client")),
        proxy_cg: run.join("cg2").join(format!("trellis-t-{id}-proxy")),
        pin_dir: run.join("bpf").join("trellis"),
        run,
        id,
        proxy: None,
    };
    std::fs::create_dir_all(&e.cg_mount).unwrap();
    must(&format!("mount -t cgroup2 none {}", e.cg_mount.display()));
    std::fs::create_dir(&e.client_cg).unwrap();
    std::fs::create_dir(&e.proxy_cg).unwrap();
    must(&format!(
        "ip netns add {} && ip -n {} link set lo up",
        e.netns, e.netns
    ));
    std::fs::write(e.run.join("proxy.py"), PROXY_PY).unwrap();
    std::fs::write(e.run.join("client.py"), CLIENT_PY).unwrap();
    e.start_proxy();
    Some(e)
}

impl Env {
    fn options(&self) -> Options {
        Options {
            cgroup: self.client_cg.clone(),
            proxy_cgroup: self.proxy_cg.clone(),
            pin_dir: self.pin_dir.clone(),
            proxy_v4: format!("127.0.0.1:{PROXY_PORT}").parse().unwrap(),
            proxy_v6: format!("[::1]:{PROXY_PORT}").parse().unwrap(),
            proxy_mark: 0x7472,
        }
    }

    fn start_proxy(&mut self) {
        let script = self.run.join("proxy.py");
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.netns, "sh", "-c"])
            .arg(format!(
                "echo $$ > {}/cgroup.procs && exec python3 {} {PROXY_PORT}",
                self.proxy_cg.display(),
                script.display()
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

    /// Runs the client (in the redirected cgroup unless `outside`) and returns its line.
    fn client(&self, host: &str, port: u16, outside: bool, delay: f32) -> String {
        self.spawn_client(host, port, outside, delay)
            .wait_with_output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap()
    }

    fn spawn_client(&self, host: &str, port: u16, outside: bool, delay: f32) -> Child {
        let join = if outside {
            String::new()
        } else {
            format!("echo $$ > {}/cgroup.procs && ", self.client_cg.display())
        };
        Command::new("ip")
            .args(["netns", "exec", &self.netns, "sh", "-c"])
            .arg(format!(
                "{join}exec python3 {} {host} {port} {delay}",
                self.run.join("client.py").display()
            ))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn services() -> Vec<ServiceEntry> {
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
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(mut p) = self.proxy.take() {
            let _ = p.kill();
            let _ = p.wait();
        }
        let _ = EbpfDatapath::cleanup(&self.pin_dir);
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
        let _ = sh(&format!("ip netns del {}", self.netns));
        let _ = std::fs::remove_dir_all(&self.run);
        let _ = &self.id;
    }
}

fn bpftool_cgroup(cg: &Path) -> String {
    String::from_utf8_lossy(&sh(&format!("bpftool cgroup show {}", cg.display())).stdout)
        .into_owned()
}

#[test]
fn redirects_vips_and_recovers_the_original_destination() {
    let Some(env) = env("redirects_vips_and_recovers_the_original_destination") else {
        return;
    };
    let mut dp = EbpfDatapath::attach(&env.options()).unwrap();
    let r = dp.reconcile(&Env::services()).unwrap();
    assert_eq!((r.added, r.removed), (5, 0));

    // IPv4: the proxy learns the VIP, the client sees the VIP as its peer.
    assert_eq!(
        env.client(VIP4, 80, false, 0.0),
        format!("peer={VIP4}:80 orig={VIP4}:80 said=hello")
    );
    // IPv6, second port.
    assert_eq!(
        env.client(VIP6, 8080, false, 0.0),
        format!("peer={VIP6}:8080 orig=[{VIP6}]:8080 said=hello")
    );
    // A VIP that is not in the map is untouched: it fails as any unassigned
    // link-local address does.
    assert_eq!(
        env.client("169.254.171.99", 80, false, 0.0),
        "error=ENETUNREACH"
    );
    // A process outside the cgroup is untouched.
    assert_eq!(env.client(VIP4, 80, true, 0.0), "error=ENETUNREACH");
    // A known VIP on a port it does not listen on is refused at once.
    assert_eq!(env.client(VIP4, 81, false, 0.0), "error=EPERM");

    let stats = dp.stats().unwrap();
    let v4 = stats[&VIP4.parse().unwrap()];
    assert_eq!((v4.redirected, v4.refused), (1, 1));
    assert_eq!(stats[&VIP6.parse().unwrap()].redirected, 1);

    // Re-applying the same services changes nothing.
    let r = dp.reconcile(&Env::services()).unwrap();
    assert_eq!((r.added, r.removed, r.unchanged), (0, 0, 5));
}

#[test]
fn removing_a_service_stops_new_connections_only() {
    let Some(env) = env("removing_a_service_stops_new_connections_only") else {
        return;
    };
    let mut dp = EbpfDatapath::attach(&env.options()).unwrap();
    dp.reconcile(&Env::services()).unwrap();
    // Connected now, talks after the service is gone.
    let established = env.spawn_client(VIP4, 80, false, 1.5);
    std::thread::sleep(Duration::from_millis(500));
    let r = dp.reconcile(&[]).unwrap();
    assert_eq!(r.removed, 5);
    assert_eq!(env.client(VIP4, 80, false, 0.0), "error=ENETUNREACH");
    let out = established.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("peer={VIP4}:80 orig={VIP4}:80 said=hello")
    );
}

#[test]
fn redirection_survives_the_agent_and_cleanup_leaves_nothing() {
    let Some(env) = env("redirection_survives_the_agent_and_cleanup_leaves_nothing") else {
        return;
    };
    {
        let mut dp = EbpfDatapath::attach(&env.options()).unwrap();
        dp.reconcile(&Env::services()).unwrap();
    }
    // The agent is gone: the pinned links and maps still redirect. Only
    // SO_ORIGINAL_DST is unanswered, as its program lives with the agent.
    assert_eq!(
        env.client(VIP4, 80, false, 0.0),
        format!("peer={VIP4}:80 orig=none said=hello")
    );
    assert!(bpftool_cgroup(&env.client_cg).contains("connect4"));

    // A new agent takes over the pinned state as it is.
    let dp = EbpfDatapath::attach(&env.options()).unwrap();
    assert_eq!(
        env.client(VIP4, 80, false, 0.0),
        format!("peer={VIP4}:80 orig={VIP4}:80 said=hello")
    );
    assert_eq!(dp.stats().unwrap()[&VIP4.parse().unwrap()].redirected, 2);
    drop(dp);

    EbpfDatapath::cleanup(&env.pin_dir).unwrap();
    assert!(!env.pin_dir.exists(), "pins left behind");
    let shown = bpftool_cgroup(&env.client_cg);
    assert!(
        !shown.contains("connect4") && !shown.contains("sock_ops"),
        "still attached: {shown}"
    );
    assert!(
        bpftool_cgroup(&env.proxy_cg)
            .lines()
            .filter(|l| l.contains("getsockopt"))
            .count()
            == 0
    );
    assert_eq!(env.client(VIP4, 80, false, 0.0), "error=ENETUNREACH");
}
