//! Root tests of the eBPF datapath, with real programs attached to real
//! cgroups: a throwaway network namespace, a cgroup2 mount and a bpffs under
//! /run, a proxy in its own cgroup, clients inside and outside the
//! redirected cgroup (see common/mod.rs).

mod common;

use common::{Netns, PROXY_MARK, PROXY_PORT, VIP4, VIP6, must, output, root, services, sh, unique};
use std::path::{Path, PathBuf};
use std::time::Duration;
use trellis_datapath::{Datapath, EbpfDatapath, Options};

/// The namespace plus the cgroups and pins of one test, removed on drop.
struct Env {
    ns: Netns,
    cg_mount: PathBuf,
    client_cg: PathBuf,
    proxy_cg: PathBuf,
    pin_dir: PathBuf,
}

fn env(test: &str) -> Option<Env> {
    if !root(test) {
        return None;
    }
    let id = unique();
    let ns = Netns::new(&id);
    let cg_mount = ns.run.join("cg2");
    let mut e = Env {
        client_cg: cg_mount.join(format!("trellis-t-{id}-client")),
        proxy_cg: cg_mount.join(format!("trellis-t-{id}-proxy")),
        pin_dir: ns.run.join("bpf").join("trellis"),
        cg_mount,
        ns,
    };
    std::fs::create_dir_all(&e.cg_mount).unwrap();
    must(&format!("mount -t cgroup2 none {}", e.cg_mount.display()));
    std::fs::create_dir(&e.client_cg).unwrap();
    std::fs::create_dir(&e.proxy_cg).unwrap();
    let proxy_cg = e.proxy_cg.clone();
    e.ns.start_proxy(Some(&proxy_cg));
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
            proxy_mark: PROXY_MARK,
        }
    }

    /// A client in the redirected cgroup.
    fn client(&self, host: &str, port: u16) -> String {
        self.ns.client(host, port, Some(&self.client_cg))
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.ns.stop_proxy();
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
    }
}

/// What bpftool lists on `cg`; fails the test if bpftool itself fails, so
/// that "not attached" can never be read from an empty error output.
fn bpftool_cgroup(cg: &Path) -> String {
    let out = sh(&format!("bpftool cgroup show {}", cg.display()));
    assert!(
        out.status.success(),
        "bpftool: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn redirects_vips_and_recovers_the_original_destination() {
    let Some(env) = env("redirects_vips_and_recovers_the_original_destination") else {
        return;
    };
    let mut dp = EbpfDatapath::attach(&env.options()).unwrap();
    let r = dp.reconcile(&services()).unwrap();
    assert_eq!((r.added, r.removed), (5, 0));

    // IPv4: the proxy learns the VIP, the client sees the VIP as its peer.
    assert_eq!(
        env.client(VIP4, 80),
        format!("peer={VIP4}:80 orig={VIP4}:80 said=hello")
    );
    // IPv6, second port.
    assert_eq!(
        env.client(VIP6, 8080),
        format!("peer={VIP6}:8080 orig=[{VIP6}]:8080 said=hello")
    );
    // A VIP that is not in the map is untouched: it fails as any unassigned
    // link-local address does.
    assert_eq!(env.client("169.254.171.99", 80), "error=ENETUNREACH");
    // A process outside the cgroup is untouched.
    assert_eq!(env.ns.client(VIP4, 80, None), "error=ENETUNREACH");
    // A known VIP on a port it does not listen on is refused at once.
    assert_eq!(env.client(VIP4, 81), "error=EPERM");
    // The proxy's own (marked) sockets are never redirected.
    let marked = output(
        env.ns
            .spawn_client(VIP4, 80, Some(&env.client_cg), 0.0, PROXY_MARK),
    );
    assert_eq!(marked, "error=ENETUNREACH");

    let stats = dp.stats().unwrap();
    let v4 = stats[&VIP4.parse().unwrap()];
    assert_eq!((v4.redirected, v4.refused), (1, 1));
    assert_eq!(stats[&VIP6.parse().unwrap()].redirected, 1);

    // Re-applying the same services changes nothing.
    let r = dp.reconcile(&services()).unwrap();
    assert_eq!((r.added, r.removed, r.unchanged), (0, 0, 5));
}

#[test]
fn removing_a_service_stops_new_connections_only() {
    let Some(env) = env("removing_a_service_stops_new_connections_only") else {
        return;
    };
    let mut dp = EbpfDatapath::attach(&env.options()).unwrap();
    dp.reconcile(&services()).unwrap();
    // Connected now, talks after the service is gone.
    let established = env.ns.spawn_client(VIP4, 80, Some(&env.client_cg), 1.5, 0);
    std::thread::sleep(Duration::from_millis(500));
    let r = dp.reconcile(&[]).unwrap();
    assert_eq!(r.removed, 5);
    assert_eq!(env.client(VIP4, 80), "error=ENETUNREACH");
    assert_eq!(
        output(established),
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
        dp.reconcile(&services()).unwrap();
    }
    // The agent is gone: the pinned links and maps still redirect. Only
    // SO_ORIGINAL_DST is unanswered, as its program lives with the agent.
    assert_eq!(
        env.client(VIP4, 80),
        format!("peer={VIP4}:80 orig=none said=hello")
    );
    assert!(bpftool_cgroup(&env.client_cg).contains("connect4"));

    // A new agent takes over the pinned state as it is.
    let dp = EbpfDatapath::attach(&env.options()).unwrap();
    assert_eq!(
        env.client(VIP4, 80),
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
    assert!(!bpftool_cgroup(&env.proxy_cg).contains("getsockopt"));
    assert_eq!(env.client(VIP4, 80), "error=ENETUNREACH");
}
