//! Root tests of the nftables fallback, in a throwaway network namespace:
//! the same proxy and clients as the eBPF tests, the same SO_ORIGINAL_DST
//! call in the proxy (answered by conntrack here).

mod common;

use common::{Netns, PROXY_MARK, PROXY_PORT, VIP4, VIP6, must, output, root, sh, unique};
use std::time::Duration;
use trellis_datapath::{Datapath, NftDatapath, NftOptions, ServiceEntry};

fn setup(test: &str) -> Option<(Netns, NftOptions)> {
    if !root(test) {
        return None;
    }
    let mut ns = Netns::new(&unique());
    // For local traffic the route lookup precedes the nat hook: the VIP pools
    // are local routes on lo (what the agent sets up in nftables mode).
    must(&format!(
        "ip -n {n} route add local 169.254.171.0/24 dev lo && ip -n {n} -6 route add local fd00:7472:6c73::/112 dev lo",
        n = ns.name
    ));
    ns.start_proxy(None);
    let opts = NftOptions {
        table: "trellis".into(),
        netns: Some(ns.name.clone()),
        proxy_port: PROXY_PORT,
        proxy_mark: PROXY_MARK,
    };
    Some((ns, opts))
}

fn services() -> Vec<ServiceEntry> {
    vec![
        ServiceEntry {
            vip: VIP4.parse().unwrap(),
            ports: vec![80],
        },
        ServiceEntry {
            vip: VIP6.parse().unwrap(),
            ports: vec![8080],
        },
    ]
}

#[test]
fn nftables_redirects_with_the_same_proxy_call() {
    let Some((ns, opts)) = setup("nftables_redirects_with_the_same_proxy_call") else {
        return;
    };
    let mut dp = NftDatapath::attach(&opts).unwrap();
    assert_eq!(dp.reconcile(&services()).unwrap().added, 2);

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
    assert_eq!((again.added, again.removed, again.unchanged), (0, 0, 2));
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
    assert_eq!(dp.reconcile(&[]).unwrap().removed, 2);
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
}
