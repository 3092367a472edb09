//! Benchmark candidate scripts leave nothing behind, stopped at any moment
//! the way ../shared/bench stops them (TERM to the process group, KILL 3 s
//! later): no pin under /sys/fs/bpf, no program on the cgroup, no work
//! directory (they hold a CA key and an API token), no process. Each
//! script is stopped at once, during its start-up, and once serving.

mod harness;

use harness::{BIN, Topology};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const SCRIPTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts");

/// Starts `script` in a process group of its own, as the harness does.
fn start(script: &str, env: &[(&str, String)]) -> Child {
    let mut c = Command::new("bash");
    c.arg(format!("{SCRIPTS}/{script}"))
        .env("TRELLIS_BIN", BIN)
        .process_group(0);
    for (k, v) in env {
        c.env(k, v);
    }
    c.spawn().unwrap()
}

/// TERM to the group; KILL after 3 s, as `stop_pid` in ../shared/bench.
fn stop(mut child: Child) {
    let group = format!("-{}", child.id());
    let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
    let t = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t.elapsed() > Duration::from_secs(3) {
            let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
            let _ = child.wait();
            panic!("the script did not stop within 3 s of TERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // What else was in the group has the same 3 s.
    while Command::new("kill")
        .args(["-0", "--", &group])
        .status()
        .is_ok_and(|s| s.success())
    {
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "processes of the group outlived it"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn attached(cgroup: &Path) -> String {
    let out = Command::new("bpftool")
        .args(["cgroup", "show"])
        .arg(cgroup)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn wait_for(what: &str, f: impl Fn() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(20), "never {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_connect_candidate_leaves_no_pin_nor_program() {
    let Some(mut topo) = Topology::new("bench-connect-cleanup") else {
        return;
    };
    for (i, moment) in ["at once", "starting", "serving"].iter().enumerate() {
        let cg = topo.cgroup(&format!("c{i}"));
        let child = start(
            "bench-connect-candidate.sh",
            &[
                ("BENCH_CGROUP", cg.display().to_string()),
                ("BENCH_VIP", "169.254.171.10:80".into()),
                ("BENCH_BACKEND", "127.0.0.1:15999".into()),
                ("BENCH_NVIPS", "100".into()),
            ],
        );
        let pins = format!("/sys/fs/bpf/trellis-bench-connect-{}", child.id());
        match *moment {
            "at once" => {}
            "starting" => std::thread::sleep(Duration::from_millis(30)),
            _ => wait_for("attached", || attached(&cg).contains("connect4")),
        }
        stop(child);
        assert!(!Path::new(&pins).exists(), "{moment}: {pins} is left");
        assert_eq!(
            attached(&cg),
            "",
            "{moment}: a program is left on the cgroup"
        );
    }
}

#[test]
fn the_dns_candidate_leaves_no_directory_nor_process() {
    if !harness::root("bench-dns-cleanup") {
        return;
    }
    let ours = || -> Vec<String> {
        std::fs::read_dir("/tmp")
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| n.starts_with("trellis-dns-bench."))
            .collect()
    };
    for moment in ["at once", "starting", "serving"] {
        let before = ours();
        let port = {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            s.local_addr().unwrap().port()
        };
        let listen = format!("127.0.0.1:{port}");
        let child = start(
            "bench-dns-candidate.sh",
            &[
                ("BENCH_RECORDS", "5".into()),
                ("BENCH_LISTEN", listen.clone()),
            ],
        );
        match moment {
            "at once" => {}
            "starting" => std::thread::sleep(Duration::from_millis(300)),
            _ => wait_for("answering", || {
                let out = Command::new("dig")
                    .args([
                        "+short",
                        "+time=1",
                        "+tries=1",
                        "-p",
                        &port.to_string(),
                        "@127.0.0.1",
                    ])
                    .arg("svc-1.trellis.internal")
                    .output()
                    .unwrap();
                !String::from_utf8_lossy(&out.stdout).trim().is_empty()
            }),
        }
        stop(child);
        let left: Vec<String> = ours().into_iter().filter(|d| !before.contains(d)).collect();
        assert!(left.is_empty(), "{moment}: {left:?} left in /tmp");
    }
}
