//! `trellis demo`, the README's first command, run as a user runs it: the
//! real binary, to its summary, with its printed split checked against the
//! weights. Root (the datapath); the demo's connections are redirected in a
//! cgroup of its own so parallel tests' VIPs are not touched.

mod topology;

#[path = "node/harness.rs"]
#[allow(dead_code)] // shared with tests/node.rs, which uses all of it
mod harness;

use std::path::PathBuf;
use std::process::Command;

/// A cgroup v2 mount and one cgroup in it, removed on drop.
struct Cgroup {
    mount: PathBuf,
    group: PathBuf,
}

impl Cgroup {
    fn new(name: &str) -> Cgroup {
        let mount = PathBuf::from(format!("/run/{name}"));
        std::fs::create_dir_all(&mount).unwrap();
        let out = harness::sh(&format!("mount -t cgroup2 none {}", mount.display()));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let group = mount.join(name);
        std::fs::create_dir(&group).unwrap();
        Cgroup { mount, group }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.group);
        let _ = harness::sh(&format!("umount {}", self.mount.display()));
        let _ = std::fs::remove_dir(&self.mount);
    }
}

/// The count printed on a split line: `  hello-blue   ████  900   90.0% ...`.
fn count_of(out: &str, name: &str, nth: usize) -> usize {
    out.lines()
        .filter(|l| l.trim_start().starts_with(&format!("{name} ")))
        .nth(nth)
        .and_then(|l| l.split_whitespace().find_map(|t| t.parse().ok()))
        .unwrap_or_else(|| panic!("no split line {nth} for {name} in:\n{out}"))
}

#[test]
fn the_demo_runs_to_its_summary_with_a_measured_split() {
    if !harness::root("demo") {
        return;
    }
    let cg = Cgroup::new(&format!("trellis-demo-test-{}", std::process::id()));
    let dns_port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new("timeout")
        .args(["120", "sh", "-c"])
        .arg(format!(
            "echo $$ > {cg}/cgroup.procs && exec {bin} demo --requests 1000 --dns-port {dns_port} --cgroup {cg}",
            cg = cg.group.display(),
            bin = harness::BIN
        ))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("datapath: ebpf"), "{stdout}");
    assert!(
        stdout.contains("\n169.254.171."),
        "the name did not resolve: {stdout}"
    );
    // 90/10, then 10/90 after the live change: within 3 sigma of 1,000.
    let sigma3 = 3.0 * (1000.0f64 * 0.9 * 0.1).sqrt();
    for (nth, blue) in [(0, 900.0), (1, 100.0)] {
        let got = count_of(&stdout, "hello-blue", nth) as f64;
        let green = count_of(&stdout, "hello-green", nth) as f64;
        assert!(
            (got - blue).abs() <= sigma3,
            "split {nth}: blue {got}\n{stdout}"
        );
        assert_eq!(got + green, 1000.0, "split {nth}\n{stdout}");
    }
    assert!(stdout.contains("200 hello-api"), "{stdout}");
    assert!(
        stdout.contains("200 orders: order 42, for trellis:identity/demo-client"),
        "{stdout}"
    );
    assert!(
        stdout.contains("403 auth-denied: AccessDeniedException"),
        "{stdout}"
    );
    assert!(
        stdout.contains("200 inventory: served in network remote, called from network local"),
        "{stdout}"
    );
    assert!(stdout.contains("Try next"), "{stdout}");
    // It cleaned up: no pins, no processes left in its cgroup.
    let left = std::fs::read_to_string(cg.group.join("cgroup.procs")).unwrap();
    assert!(left.trim().is_empty(), "processes left: {left}");
    assert!(
        !std::fs::read_dir("/sys/fs/bpf")
            .unwrap()
            .filter_map(|e| e.ok())
            .any(|e| e.file_name().to_string_lossy().starts_with("trellis-demo-")),
        "pins left in /sys/fs/bpf"
    );
}
