//! `trellis demo`, the README's first command, run as a user runs it: the
//! real binary, to its summary, with its printed split checked against the
//! weights. Root (the datapath); the demo's connections are redirected in a
//! cgroup of its own so parallel tests' VIPs are not touched.

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

/// The demo's backends and gateway use the fixed ports of samples/demo.yaml:
/// one demo at a time.
static ONE_DEMO: std::sync::Mutex<()> = std::sync::Mutex::new(());

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
    let _one = ONE_DEMO.lock().unwrap_or_else(|e| e.into_inner());
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
    assert_cleaned_up(&cg);
}

/// No processes left in the demo's cgroup, no pins left in /sys/fs/bpf.
fn assert_cleaned_up(cg: &Cgroup) {
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

/// Ctrl-C (SIGINT to the demo alone, so it must stop its children itself),
/// once in the middle of the walk (while it sends 50,000 requests) and once
/// with `--keep-running` after the summary: both times it says so, exits 0
/// and leaves nothing behind.
#[test]
fn the_demo_cleans_up_on_ctrl_c() {
    if !harness::root("demo") {
        return;
    }
    let _one = ONE_DEMO.lock().unwrap_or_else(|e| e.into_inner());
    let cg = Cgroup::new(&format!("trellis-demo-int-{}", std::process::id()));
    for (flags, when, then) in [
        (
            "--requests 50000",
            "$ for i in $(seq 50000)",
            "interrupted: stopping what the demo started",
        ),
        (
            "--requests 200 --keep-running",
            "Everything stays up until Ctrl-C.",
            "stopping what the demo started",
        ),
    ] {
        let dns_port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut demo = Stopped(
            Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "echo $$ > {cg}/cgroup.procs && exec {bin} demo --dns-port {dns_port} --cgroup {cg} {flags}",
                    cg = cg.group.display(),
                    bin = harness::BIN
                ))
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let demo = &mut demo.0;
        let lines = lines_of(demo);
        let wait = |wanted: &str| {
            let t = std::time::Instant::now();
            loop {
                let left = std::time::Duration::from_secs(30).saturating_sub(t.elapsed());
                match lines.recv_timeout(left) {
                    Ok(line) if line.contains(wanted) => return,
                    Ok(_) => {}
                    Err(_) => panic!("{flags}: the demo never said {wanted:?}"),
                }
            }
        };
        wait(when);
        if flags.contains("keep-running") {
            let procs = std::fs::read_to_string(cg.group.join("cgroup.procs")).unwrap();
            assert!(procs.lines().count() >= 4, "the stack is not up: {procs}");
        }
        harness::sh(&format!("kill -INT {}", demo.id()));
        wait(then);
        let t = std::time::Instant::now();
        let status = loop {
            if let Some(status) = demo.try_wait().unwrap() {
                break status;
            }
            if t.elapsed() > std::time::Duration::from_secs(20) {
                let _ = demo.kill();
                panic!("{flags}: the demo did not stop on SIGINT");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        assert!(status.success(), "{flags}: {status}");
        assert_cleaned_up(&cg);
    }
}

/// A demo that is stopped as a user would (Ctrl-C, then harder) if the test
/// ends while it runs, so a failed test leaves no stack behind.
struct Stopped(std::process::Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        if !matches!(self.0.try_wait(), Ok(None)) {
            return;
        }
        harness::sh(&format!("kill -INT {}", self.0.id()));
        let t = std::time::Instant::now();
        while t.elapsed() < std::time::Duration::from_secs(15) {
            if !matches!(self.0.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The child's stdout, line by line, without escape sequences.
fn lines_of(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let out = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines() {
            let Ok(line) = line else { return };
            if tx
                .send(line.replace("\x1b[1m", "").replace("\x1b[0m", ""))
                .is_err()
            {
                return;
            }
        }
    });
    rx
}
