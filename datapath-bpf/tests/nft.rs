//! Root tests of the nftables fallback, in a throwaway network namespace:
//! the same proxy and clients as the eBPF tests, the same SO_ORIGINAL_DST
//! call in the proxy (answered by conntrack here).

mod common;

use common::{Netns, PROXY_MARK, PROXY_PORT, VIP4, VIP6, output, root, services, sh, unique};
use std::time::Duration;
use trellis_datapath::{Choice, Datapath, NftDatapath, NftOptions, Options};

fn setup(test: &str) -> Option<(Netns, NftOptions)> {
    if !root(test) {
        return None;
    }
    let mut ns = Netns::new(&unique());
    ns.start_proxy(None);
    let opts = NftOptions {
        table: "trellis".into(),
        netns: Some(ns.name.clone()),
        proxy_port: PROXY_PORT,
        proxy_mark: PROXY_MARK,
        vip_pools: vec!["169.254.171.0/24".into(), "fd00:7472:6c73::/112".into()],
    };
    Some((ns, opts))
}

#[test]
fn nftables_redirects_with_the_same_proxy_call() {
    let Some((ns, opts)) = setup("nftables_redirects_with_the_same_proxy_call") else {
        return;
    };
    let mut dp = NftDatapath::attach(&opts).unwrap();
    assert_eq!(dp.reconcile(&services()).unwrap().added, 3);

    assert_eq!(
        ns.client(VIP4, 80, None),
        format!("peer={VIP4}:80 orig={VIP4}:80 said=hello")
    );
    assert_eq!(
        ns.client(VIP6, 8080, None),
        format!("peer={VIP6}:8080 orig=[{VIP6}]:8080 said=hello")
    );
    // Not a service: not redirected (refused by the local route).
    assert_eq!(ns.client("169.254.171.99", 80, None), "error=ECONNREFUSED");
    assert_eq!(ns.client(VIP4, 81, None), "error=ECONNREFUSED");
    // The proxy's marked sockets pass untouched.
    assert_eq!(
        output(ns.spawn_client(VIP4, 80, None, 0.0, PROXY_MARK)),
        "error=ECONNREFUSED"
    );

    let again = dp.reconcile(&services()).unwrap();
    assert_eq!((again.added, again.removed, again.unchanged), (0, 0, 3));

    // The agent gone, the table stays and keeps redirecting.
    drop(dp);
    assert_eq!(
        ns.client(VIP4, 80, None),
        format!("peer={VIP4}:80 orig={VIP4}:80 said=hello")
    );
}

#[test]
fn nftables_removal_spares_established_connections_and_cleanup_removes_the_table() {
    let test = "nftables_removal_spares_established_connections_and_cleanup_removes_the_table";
    let Some((ns, opts)) = setup(test) else {
        return;
    };
    let mut dp = NftDatapath::attach(&opts).unwrap();
    dp.reconcile(&services()).unwrap();
    let established = ns.spawn_client(VIP4, 80, None, 1.5, 0);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(dp.reconcile(&[]).unwrap().removed, 3);
    assert_eq!(ns.client(VIP4, 80, None), "error=ECONNREFUSED");
    assert_eq!(
        output(established),
        format!("peer={VIP4}:80 orig={VIP4}:80 said=hello")
    );

    NftDatapath::cleanup(&opts).unwrap();
    let tables = sh(&format!("ip netns exec {} nft list tables", ns.name));
    assert!(tables.status.success());
    assert!(
        !String::from_utf8_lossy(&tables.stdout).contains("trellis"),
        "table left behind"
    );
    assert_eq!(local_routes(&ns), "", "routes left behind");
}

/// Our `local` routes in `ns`, one per line.
fn local_routes(ns: &Netns) -> String {
    let out = sh(&format!(
        "ip -n {n} -4 route show table local proto 116; ip -n {n} -6 route show table local proto 116",
        n = ns.name
    ));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Issue 23: a node routes the pools its snapshot names (no flag to keep in
/// step): a new pool is routed before the old one goes.
#[test]
fn nftables_routes_follow_the_pools_it_is_given() {
    let Some((ns, mut opts)) = setup("nftables_routes_follow_the_pools_it_is_given") else {
        return;
    };
    opts.vip_pools.clear();
    let mut dp = NftDatapath::attach(&opts).unwrap();
    assert_eq!(local_routes(&ns), "");
    dp.route_pools(&["169.254.171.0/24".into(), "fd00:7472:6c73::/112".into()])
        .unwrap();
    dp.reconcile(&services()).unwrap();
    assert_eq!(
        ns.client(VIP4, 80, None),
        format!("peer={VIP4}:80 orig={VIP4}:80 said=hello")
    );
    let routes = local_routes(&ns);
    assert!(
        routes.contains("169.254.171.0/24") && routes.contains("fd00:7472:6c73::/112"),
        "{routes}"
    );

    // The control plane moved to a wider pool.
    dp.route_pools(&["169.254.128.0/17".into(), "fd00:7472:6c73::/112".into()])
        .unwrap();
    let routes = local_routes(&ns);
    assert!(routes.contains("169.254.128.0/17"), "{routes}");
    assert!(!routes.contains("169.254.171.0/24"), "{routes}");
    assert_eq!(ns.client("169.254.200.9", 80, None), "error=ECONNREFUSED");

    NftDatapath::cleanup(&opts).unwrap();
    assert_eq!(local_routes(&ns), "", "routes left behind");
}

#[test]
fn auto_falls_back_to_nftables_when_ebpf_cannot_run_and_ebpf_says_why() {
    let Some((ns, nft)) =
        setup("auto_falls_back_to_nftables_when_ebpf_cannot_run_and_ebpf_says_why")
    else {
        return;
    };
    // A cgroup path that is not cgroup v2: eBPF cannot attach there.
    let ebpf = Options {
        cgroup: ns.run.clone(),
        proxy_cgroup: ns.run.clone(),
        pin_dir: ns.run.join("bpf").join("trellis"),
        proxy_v4: format!("127.0.0.1:{PROXY_PORT}").parse().unwrap(),
        proxy_v6: format!("[::1]:{PROXY_PORT}").parse().unwrap(),
        proxy_mark: PROXY_MARK,
    };
    let err = trellis_datapath::open(Choice::Ebpf, &ebpf, &nft)
        .err()
        .expect("ebpf must refuse");
    let msg = err.to_string();
    assert!(
        msg.starts_with("the ebpf datapath cannot run here: "),
        "{msg}"
    );
    assert!(
        msg.contains("is not a cgroup v2 directory") && msg.contains("mount -t cgroup2"),
        "{msg}"
    );

    let mut dp = trellis_datapath::open(Choice::Auto, &ebpf, &nft).unwrap();
    assert_eq!(dp.name(), "nftables");
    dp.reconcile(&services()).unwrap();
    assert_eq!(
        ns.client(VIP4, 80, None),
        format!("peer={VIP4}:80 orig={VIP4}:80 said=hello")
    );
    drop(dp);
    NftDatapath::cleanup(&nft).unwrap();
}
