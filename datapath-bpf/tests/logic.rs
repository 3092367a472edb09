//! Program-level tests of the redirect decision (`trellis_redirect()` in
//! bpf/trellis_lb.h), run in the kernel with BPF_PROG_TEST_RUN through an XDP
//! wrapper (bpf/trellis_test.bpf.c) on fake connect() contexts. Needs root to
//! load a program.

mod common;

use aya::maps::{Array, HashMap, MapData};
use aya::programs::{TestRun, TestRunOptions, Xdp};
use std::net::IpAddr;
use trellis_datapath::abi::{
    Config, ConfigBytes, OrigBytes, SVC_VIP_ONLY, Stats, StatsBytes, SvcKey, SvcKeyBytes, SvcValue,
    SvcValueBytes, orig_cgroup,
};

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/trellis_test.bpf.o"));

const PASS: u32 = 0;
const REDIRECT: u32 = 1;
const REFUSE: u32 = 2;
const MARK: u32 = 0x7472;

/// `struct trellis_test_case`: key, mark, cookie, verdict (out), the
/// caller's cgroup (here the cookie times 1000).
fn case(key: SvcKey, mark: u32, cookie: u64) -> [u8; 48] {
    let mut b = [0u8; 48];
    b[..20].copy_from_slice(&key.encode());
    b[20..24].copy_from_slice(&mark.to_ne_bytes());
    b[24..32].copy_from_slice(&cookie.to_ne_bytes());
    b[40..48].copy_from_slice(&(cookie * 1000).to_ne_bytes());
    b
}

fn key(vip: &str, port: u16) -> SvcKey {
    SvcKey {
        vip: vip.parse::<IpAddr>().unwrap(),
        port,
    }
}

#[test]
fn redirect_decisions_and_their_map_effects() {
    if !common::root("redirect_decisions_and_their_map_effects") {
        return;
    }
    let mut ebpf = aya::Ebpf::load(OBJECT).unwrap();
    let mut cfg: Array<MapData, ConfigBytes> =
        Array::try_from(ebpf.take_map("trellis_cfg").unwrap()).unwrap();
    let config = Config {
        proxy_v4: "127.0.0.1".parse().unwrap(),
        proxy_v6: "::1".parse().unwrap(),
        proxy_port: 15001,
        proxy_mark: MARK,
    };
    cfg.set(0, config.encode(), 0).unwrap();
    let mut svc: HashMap<MapData, SvcKeyBytes, SvcValueBytes> =
        HashMap::try_from(ebpf.take_map("trellis_svc").unwrap()).unwrap();
    for (k, id, flags) in [
        (key("169.254.171.10", 0), 1, SVC_VIP_ONLY),
        (key("169.254.171.10", 80), 1, 0),
        (key("fd00:7472:6c73::a", 0), 2, SVC_VIP_ONLY),
        (key("fd00:7472:6c73::a", 8080), 2, 0),
    ] {
        svc.insert(k.encode(), SvcValue { id, flags }.encode(), 0)
            .unwrap();
    }
    let cookies: HashMap<MapData, u64, OrigBytes> =
        HashMap::try_from(ebpf.take_map("trellis_cookie").unwrap()).unwrap();
    let stats: Array<MapData, StatsBytes> =
        Array::try_from(ebpf.take_map("trellis_stats").unwrap()).unwrap();

    let prog: &mut Xdp = ebpf
        .program_mut("trellis_test_redirect")
        .unwrap()
        .try_into()
        .unwrap();
    prog.load().unwrap();
    let run = |k: SvcKey, mark: u32, cookie: u64| -> u32 {
        let input = case(k, mark, cookie);
        let mut output = [0u8; 48];
        let result = prog
            .test_run(TestRunOptions {
                data_in: Some(&input),
                data_out: Some(&mut output),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(result.return_value, 2, "XDP_PASS"); // XDP_ABORTED would mean a bad context
        u32::from_ne_bytes(output[32..36].try_into().unwrap())
    };

    // (what, key, mark, cookie, verdict)
    let table = [
        (
            "a service VIP:port is redirected",
            key("169.254.171.10", 80),
            0,
            101,
            REDIRECT,
        ),
        ("IPv6 too", key("fd00:7472:6c73::a", 8080), 0, 102, REDIRECT),
        (
            "a VIP on another port is refused",
            key("169.254.171.10", 81),
            0,
            103,
            REFUSE,
        ),
        (
            "an unknown address passes",
            key("169.254.171.99", 80),
            0,
            104,
            PASS,
        ),
        (
            "an ordinary destination passes",
            key("10.0.0.1", 80),
            0,
            105,
            PASS,
        ),
        (
            "the proxy's marked socket passes",
            key("169.254.171.10", 80),
            MARK,
            106,
            PASS,
        ),
        (
            "another mark does not",
            key("169.254.171.10", 80),
            7,
            107,
            REDIRECT,
        ),
    ];
    for (what, k, mark, cookie, want) in table {
        assert_eq!(run(k, mark, cookie), want, "{what}");
        // Only redirected connections leave an original destination behind.
        let orig = cookies.get(&cookie, 0).ok();
        assert_eq!(orig.is_some(), want == REDIRECT, "{what}: cookie entry");
        if let Some(o) = orig {
            let dst: [u8; 20] = o[..20].try_into().unwrap();
            assert_eq!(
                SvcKey::decode(&dst),
                Some(k),
                "{what}: the original destination is the VIP:port"
            );
            assert_eq!(
                orig_cgroup(&o),
                cookie * 1000,
                "{what}: the caller's cgroup"
            );
        }
    }
    let v4 = Stats::decode(&stats.get(&1, 0).unwrap());
    assert_eq!((v4.redirected, v4.refused), (2, 1));
    let v6 = Stats::decode(&stats.get(&2, 0).unwrap());
    assert_eq!((v6.redirected, v6.refused), (1, 0));
}
