//! `trellis dns` as a real process, fed by a real control plane, queried
//! with the real `dig` over UDP and TCP.

mod harness;

use harness::local::{BIN, ControlPlane, private_dir, trellis};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/samples/path-and-header-routing.yaml"
);

/// A `trellis dns` process, killed on drop.
struct Dns {
    child: Child,
    addrs: Vec<String>,
    data_dir: tempfile::TempDir,
}

impl Dns {
    /// Starts `trellis dns` with `args`, joining with a DNS join token each
    /// network it answers that has no certificate in `data_dir` yet.
    fn start(cp: &ControlPlane, args: &[&str], data_dir: Option<tempfile::TempDir>) -> Dns {
        let data_dir = data_dir.unwrap_or_else(private_dir);
        let (child, addrs) = spawn(cp, args, data_dir.path());
        Dns {
            child,
            addrs,
            data_dir,
        }
    }

    fn stop(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::replace(&mut self.data_dir, private_dir())
    }
}

/// A `trellis dns` process on `data_dir`, and the addresses it printed.
fn spawn(cp: &ControlPlane, args: &[&str], data_dir: &std::path::Path) -> (Child, Vec<String>) {
    let networks = args.windows(2).filter_map(|w| match w {
        ["--network", n] => Some(n.to_string()),
        ["--listen" | "--source", spec] => spec.split_once('=').map(|(_, n)| n.to_string()),
        _ => None,
    });
    let mut tokens = Vec::new();
    for network in networks {
        let kept = data_dir
            .join("identity")
            .join(&network)
            .join("identity.json");
        if !kept.exists() {
            tokens.push("--join-token".to_string());
            tokens.push(format!("{network}={}", cp.join_token(&network, "dns")));
        }
    }
    let mut child = harness::Owned::new(
        Command::new(BIN)
            .arg("dns")
            .args(args)
            .args(&tokens)
            .args(["--control-plane", &cp.url])
            .arg("--data-dir")
            .arg(data_dir)
            .env("TRELLIS_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn trellis dns"),
    );
    let listeners = args.iter().filter(|a| **a == "--listen").count();
    let mut out = BufReader::new(child.get_mut().stdout.take().unwrap());
    let mut addrs = Vec::new();
    for _ in 0..listeners {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let addr = line
            .trim()
            .strip_prefix("trellis dns listening on ")
            .unwrap_or_else(|| panic!("listening line, not {line:?}"));
        addrs.push(addr.to_string());
    }
    (child.release(), addrs)
}

impl Drop for Dns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What dig saw: status, flags, and the answer and authority sections.
#[derive(Debug)]
struct Reply {
    status: String,
    flags: String,
    answer: Vec<String>,
    authority: Vec<String>,
}

fn dig(addr: &str, args: &[&str]) -> Reply {
    let (host, port) = addr.rsplit_once(':').unwrap();
    let out = Command::new("dig")
        .args([
            &format!("@{host}"),
            "-p",
            port,
            "+tries=1",
            "+time=2",
            "+norecurse",
        ])
        .args(args)
        .output()
        .expect("dig is needed (bind9-dnsutils; scripts/setup.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut reply = Reply {
        status: String::new(),
        flags: String::new(),
        answer: vec![],
        authority: vec![],
    };
    let mut section = "";
    for line in text.lines() {
        if let Some(rest) = line.split("status: ").nth(1) {
            reply.status = rest.split(',').next().unwrap_or_default().to_string();
        } else if let Some(rest) = line.strip_prefix(";; flags: ") {
            reply.flags = rest.split(';').next().unwrap_or_default().to_string();
        } else if line.starts_with(";; ANSWER SECTION") {
            section = "answer";
        } else if line.starts_with(";; AUTHORITY SECTION") {
            section = "authority";
        } else if line.starts_with(";;") || line.is_empty() {
            section = if line.is_empty() { "" } else { section };
        } else if !line.starts_with(';') {
            let rr = line.split_whitespace().collect::<Vec<_>>().join(" ");
            match section {
                "answer" => reply.answer.push(rr),
                "authority" => reply.authority.push(rr),
                _ => {}
            }
        }
    }
    assert!(!reply.status.is_empty(), "no answer from {addr}: {text}");
    reply
}

#[test]
fn answers_over_udp_and_tcp() {
    let cp = ControlPlane::start(&[]);
    assert!(trellis(&cp, &["apply", "-f", SAMPLE]).status.success());
    let dns = Dns::start(&cp, &["--listen", "127.0.0.1:0", "--network", "east"], None);
    let at = &dns.addrs[0];
    wait_for(at, "catalog.trellis.internal", "NOERROR");

    for transport in ["+notcp", "+tcp"] {
        let r = dig(at, &[transport, "catalog.trellis.internal", "A"]);
        assert_eq!(r.status, "NOERROR", "{transport}");
        assert!(r.flags.contains("aa"), "authoritative: {r:?}");
        assert_eq!(
            r.answer,
            ["catalog.trellis.internal. 30 IN A 169.254.171.1"],
            "{transport}"
        );

        let r = dig(at, &[transport, "catalog.trellis.internal", "AAAA"]);
        assert_eq!(
            r.answer,
            ["catalog.trellis.internal. 30 IN AAAA fd00:7472:6c73::1"]
        );
    }
    // Case-insensitive (answered with the name as declared, as hickory's
    // own store does); the custom domain name is answered too.
    let r = dig(at, &["CaTaLoG.ExAmPlE.CoM", "A"]);
    assert_eq!(r.answer, ["catalog.example.com. 30 IN A 169.254.171.1"]);
    // Apex: SOA and NS.
    let r = dig(at, &["trellis.internal", "SOA"]);
    assert_eq!(r.answer.len(), 1);
    assert!(
        r.answer[0].contains("SOA ns.trellis.internal. hostmaster.trellis.internal."),
        "{r:?}"
    );
    let r = dig(at, &["trellis.internal", "NS"]);
    assert_eq!(
        r.answer,
        ["trellis.internal. 30 IN NS ns.trellis.internal."]
    );
    // No such name: NXDOMAIN with the SOA for negative caching.
    let r = dig(at, &["nope.trellis.internal", "A"]);
    assert_eq!(r.status, "NXDOMAIN");
    assert!(
        r.flags.contains("aa") && r.authority[0].contains(" SOA "),
        "{r:?}"
    );
    // The name exists, not with that type: NODATA with the SOA.
    let r = dig(at, &["catalog.trellis.internal", "MX"]);
    assert_eq!((r.status.as_str(), r.answer.len()), ("NOERROR", 0));
    assert!(r.authority[0].contains(" SOA "), "{r:?}");
    // Outside every zone: REFUSED.
    assert_eq!(dig(at, &["example.org", "A"]).status, "REFUSED");
    // The forms the UDP fast path answers in place (no EDNS, or EDNS
    // without options; RD echoed) read as the general path's answers do.
    for form in [&["+noedns"][..], &["+nocookie"], &["+nocookie", "+recurse"]] {
        let r = dig(at, &[form, &["catalog.trellis.internal", "A"]].concat());
        assert_eq!(
            r.answer,
            ["catalog.trellis.internal. 30 IN A 169.254.171.1"],
            "{form:?}"
        );
        assert!(r.flags.contains("aa"), "{form:?}: {r:?}");
        assert_eq!(r.flags.contains("rd"), form.contains(&"+recurse"), "{r:?}");
        let r = dig(at, &[form, &["catalog.trellis.internal", "AAAA"]].concat());
        assert_eq!(
            r.answer,
            ["catalog.trellis.internal. 30 IN AAAA fd00:7472:6c73::1"],
            "{form:?}"
        );
    }
}

#[test]
fn a_service_exists_only_for_networks_that_may_see_it() {
    let cp = ControlPlane::start(&[]);
    assert!(trellis(&cp, &["apply", "-f", SAMPLE]).status.success());
    let west =
        "apiVersion: trellis.dev/v1alpha1\nkind: Network\nmetadata: {name: west}\nspec: {}\n";
    let dir = private_dir();
    std::fs::write(dir.path().join("west.yaml"), west).unwrap();
    assert!(
        trellis(
            &cp,
            &[
                "apply",
                "-f",
                dir.path().join("west.yaml").to_str().unwrap()
            ]
        )
        .status
        .success()
    );
    // One server, answering as east on one address and as west on another.
    let dns = Dns::start(
        &cp,
        &[
            "--listen",
            "127.0.0.1:0=east",
            "--listen",
            "127.0.0.2:0=west",
        ],
        None,
    );
    let (east, west) = (&dns.addrs[0], &dns.addrs[1]);
    wait_for(east, "catalog.trellis.internal", "NOERROR");
    wait_for(west, "catalog.trellis.internal", "NXDOMAIN");
    let r = dig(west, &["catalog.trellis.internal", "A"]);
    // Exactly as for a name never declared: NXDOMAIN with the zone's SOA.
    assert_eq!(r.status, "NXDOMAIN");
    assert!(r.authority[0].contains(" SOA "), "{r:?}");
    // Its custom domain is not a zone of west's at all, like any undeclared domain.
    assert_eq!(dig(west, &["catalog.example.com", "A"]).status, "REFUSED");
    assert_eq!(dig(east, &["catalog.example.com", "A"]).status, "NOERROR");
}

/// Polls until `name` gets `status`, for at most 5 s; returns how long it took.
fn wait_for(at: &str, name: &str, status: &str) -> Duration {
    let t = Instant::now();
    loop {
        if dig(at, &[name, "A"]).status == status {
            return t.elapsed();
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "{name} never became {status}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A server whose certificate expired while it was down still starts, with
/// the control plane down too, and answers from its last snapshot.
#[test]
fn an_expired_certificate_still_serves_the_last_snapshot() {
    let mut cp = ControlPlane::start(&["--node-cert-ttl", "2s"]);
    assert!(trellis(&cp, &["apply", "-f", SAMPLE]).status.success());
    let dns = Dns::start(&cp, &["--listen", "127.0.0.1:0", "--network", "east"], None);
    wait_for(&dns.addrs[0], "catalog.trellis.internal", "NOERROR");
    let data_dir = dns.stop();
    cp.kill9();
    std::thread::sleep(Duration::from_secs(3));
    let kept: serde_json::Value = serde_json::from_slice(
        &std::fs::read(data_dir.path().join("identity/east/identity.json")).unwrap(),
    )
    .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(kept["notAfter"].as_u64().unwrap() < now, "{kept}");
    let dns = Dns::start(
        &cp,
        &["--listen", "127.0.0.1:0", "--network", "east"],
        Some(data_dir),
    );
    let r = dig(&dns.addrs[0], &["catalog.trellis.internal", "A"]);
    assert_eq!(r.answer.len(), 1, "{r:?}");
}

#[test]
fn applies_and_deletes_show_within_a_second_and_the_last_snapshot_survives() {
    let mut cp = ControlPlane::start(&[]);
    assert!(trellis(&cp, &["apply", "-f", SAMPLE]).status.success());
    let dns = Dns::start(&cp, &["--listen", "127.0.0.1:0", "--network", "east"], None);
    let at = dns.addrs[0].clone();
    wait_for(&at, "catalog.trellis.internal", "NOERROR");

    let dir = private_dir();
    let file = dir.path().join("orders.yaml");
    std::fs::write(
        &file,
        "apiVersion: trellis.dev/v1alpha1\nkind: Service\nmetadata: {name: orders}\n\
         spec: {serviceNetworks: [shop], listeners: [{name: web, protocol: HTTP, \
         defaultAction: {fixedResponse: {statusCode: 404}}}]}\n",
    )
    .unwrap();
    assert!(
        trellis(&cp, &["apply", "-f", file.to_str().unwrap()])
            .status
            .success()
    );
    let appeared = wait_for(&at, "orders.trellis.internal", "NOERROR");
    assert!(
        appeared < Duration::from_secs(1),
        "resolved after {appeared:?}"
    );
    assert!(trellis(&cp, &["delete", "svc", "orders"]).status.success());
    let gone = wait_for(&at, "orders.trellis.internal", "NXDOMAIN");
    assert!(gone < Duration::from_secs(1), "NXDOMAIN after {gone:?}");

    // Control plane down: the last snapshot keeps being served...
    cp.kill9();
    assert_eq!(dig(&at, &["catalog.trellis.internal", "A"]).answer.len(), 1);
    // ...and after a restart of the DNS server too, from the persisted copy.
    let data_dir = dns.stop();
    let dns = Dns::start(
        &cp,
        &["--listen", "127.0.0.1:0", "--network", "east"],
        Some(data_dir),
    );
    let r = dig(&dns.addrs[0], &["catalog.trellis.internal", "A"]);
    assert_eq!(
        r.answer,
        ["catalog.trellis.internal. 30 IN A 169.254.171.1"]
    );
}

#[test]
fn malformed_packets_never_stop_the_server() {
    let cp = ControlPlane::start(&[]);
    assert!(trellis(&cp, &["apply", "-f", SAMPLE]).status.success());
    let dns = Dns::start(&cp, &["--listen", "127.0.0.1:0", "--network", "east"], None);
    let at = dns.addrs[0].clone();
    wait_for(&at, "catalog.trellis.internal", "NOERROR");

    // A valid query for catalog.trellis.internal A, then 3,000 variants:
    // random bytes, truncations and single-byte mutations (fixed seed).
    let mut query = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in ["catalog", "trellis", "internal"] {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1]);
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    sock.send_to(&query, &at).unwrap();
    let mut buf = [0u8; 1500];
    let (n, _) = sock
        .recv_from(&mut buf)
        .expect("an answer to the valid query");
    assert!(n > query.len() && buf[..2] == query[..2]);

    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for i in 0..3000 {
        let packet: Vec<u8> = match i % 3 {
            0 => (0..(next() % 600) as usize).map(|_| next() as u8).collect(),
            1 => query[..(next() as usize % query.len())].to_vec(),
            _ => {
                let mut p = query.clone();
                let at = next() as usize % p.len();
                p[at] = next() as u8;
                p
            }
        };
        sock.send_to(&packet, &at).unwrap();
    }
    // Still answering, over UDP and TCP. The burst may still fill the socket
    // buffer when the check arrives, and the kernel then drops it: retry as any
    // resolver does.
    assert_eq!(
        dig(&at, &["+tries=5", "catalog.trellis.internal", "A"])
            .answer
            .len(),
        1
    );
    assert_eq!(
        dig(&at, &["+tcp", "catalog.trellis.internal", "A"])
            .answer
            .len(),
        1
    );
}

fn apply_text(cp: &ControlPlane, yaml: &str) {
    let dir = private_dir();
    let file = dir.path().join("doc.yaml");
    std::fs::write(&file, yaml).unwrap();
    let out = trellis(cp, &["apply", "-f", file.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn names_outside_every_zone_go_to_the_forwarder() {
    let cp = ControlPlane::start(&[]);
    assert!(trellis(&cp, &["apply", "-f", SAMPLE]).status.success());
    apply_text(
        &cp,
        "apiVersion: trellis.dev/v1alpha1\nkind: Network\nmetadata: {name: west}\nspec: {}\n",
    );
    // The upstream is another Trellis DNS, answering as east; the forwarding
    // one answers as west, which sees none of east's services.
    let upstream = Dns::start(&cp, &["--listen", "127.0.0.1:0", "--network", "east"], None);
    wait_for(&upstream.addrs[0], "catalog.trellis.internal", "NOERROR");
    let metrics = format!("127.0.0.1:{}", free_port());
    let dns = Dns::start(
        &cp,
        &[
            "--listen",
            "127.0.0.1:0",
            "--network",
            "west",
            "--forward",
            &upstream.addrs[0],
            "--metrics-listen",
            &metrics,
        ],
        None,
    );
    let at = dns.addrs[0].clone();
    wait_for(&at, "catalog.trellis.internal", "NXDOMAIN");

    // catalog.example.com is no zone of west's: forwarded, over either transport.
    for transport in ["+notcp", "+tcp"] {
        let r = dig(&at, &[transport, "catalog.example.com", "A"]);
        assert_eq!(r.status, "NOERROR", "{transport}: {r:?}");
        assert_eq!(
            r.answer,
            ["catalog.example.com. 30 IN A 169.254.171.1"],
            "{transport}"
        );
    }
    // A name inside west's zone never leaves: the service west may not see
    // stays NXDOMAIN here although the upstream knows it.
    let r = dig(&at, &["catalog.trellis.internal", "A"]);
    assert_eq!(r.status, "NXDOMAIN");
    assert!(r.flags.contains("aa"));
    // What the upstream says comes back as it said it.
    assert_eq!(dig(&at, &["nothing.example.org", "A"]).status, "REFUSED");

    // The upstream gone: SERVFAIL, within the forwarder's 2 s.
    drop(upstream);
    let r = dig(&at, &["+time=4", "catalog.example.com", "A"]);
    assert_eq!(r.status, "SERVFAIL");

    let out = harness::local::run("curl", &["-sf", &format!("http://{metrics}/metrics")]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("trellis_dns_forwarded_total 4"),
        "forwarded count: {text}"
    );
    assert!(
        text.contains("trellis_dns_forward_failures_total 1"),
        "{text}"
    );
    assert!(
        text.contains("trellis_dns_queries_total{network=\"west\",type=\"A\",rcode=\"NXDOMAIN\"}"),
        "{text}"
    );
}

#[test]
fn tcp_connections_are_limited_in_number_and_idle_time() {
    use std::io::Read;
    let cp = ControlPlane::start(&[]);
    assert!(trellis(&cp, &["apply", "-f", SAMPLE]).status.success());
    let dns = Dns::start(
        &cp,
        &[
            "--listen",
            "127.0.0.1:0",
            "--network",
            "east",
            "--dns-tcp-max-connections",
            "2",
            "--dns-tcp-idle-seconds",
            "2",
        ],
        None,
    );
    let at = dns.addrs[0].clone();
    wait_for(&at, "catalog.trellis.internal", "NOERROR");
    let connect = || {
        let s = std::net::TcpStream::connect(&at).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    };
    // Two idle connections hold both slots; a third is closed at once.
    let (_a, _b) = (connect(), connect());
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let mut third = connect();
    let mut buf = [0u8; 1];
    assert_eq!(
        third.read(&mut buf).unwrap_or(0),
        0,
        "closed without a byte"
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    // The idle ones are closed after the idle timeout, and TCP answers again.
    let mut idle = connect_after_slots_free(&at);
    let started = Instant::now();
    assert_eq!(idle.read(&mut buf).unwrap_or(0), 0);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(4),
        "idle connection closed after {waited:?}"
    );
    assert_eq!(
        dig(&at, &["+tcp", "catalog.trellis.internal", "A"]).status,
        "NOERROR"
    );
}

/// Connects once the held connections have timed out and freed a slot.
fn connect_after_slots_free(at: &str) -> std::net::TcpStream {
    use std::io::Read;
    let deadline = Instant::now() + Duration::from_secs(6);
    loop {
        let mut s = std::net::TcpStream::connect(at).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut buf = [0u8; 1];
        match s.read(&mut buf) {
            // Timed out waiting: the server kept it open, so it has a slot.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                return s;
            }
            _ => assert!(Instant::now() < deadline, "no TCP slot freed up"),
        }
    }
}

/// No snapshot the control plane compiles has an answer over 512 bytes (one A
/// and one AAAA per name), so this one is written by hand: 40 services under
/// one name, served from the persisted snapshot as after a restart with the
/// control plane down.
#[test]
fn a_large_answer_sets_tc_and_dig_retries_over_tcp() {
    use trellis_api::resource::AuthType;
    use trellis_api::snapshot::{ServiceView, Snapshot};
    let mut cp = ControlPlane::start(&[]);
    assert!(trellis(&cp, &["apply", "-f", SAMPLE]).status.success());
    let joined = Dns::start(&cp, &["--listen", "127.0.0.1:0", "--network", "east"], None);
    let data_dir = joined.stop();
    cp.kill9();
    let snapshot = Snapshot {
        network: "east".into(),
        revision: 1,
        region: "us-east-1".into(),
        dns_zone: "trellis.internal".into(),
        vip_pools: Vec::new(),
        services: (1..=40)
            .map(|i| ServiceView {
                name: format!("big-{i}"),
                vip: format!("169.254.171.{i}").parse().unwrap(),
                vip_v6: format!("fd00:7472:6c73::{i:x}").parse().unwrap(),
                dns_names: vec!["big.trellis.internal".into()],
                via: vec![],
                auth_type: AuthType::None,
                auth_policy: None,
                lattice_compat: false,
                listeners: vec![],
            })
            .map(std::sync::Arc::new)
            .collect(),
        service_networks: vec![],
        target_groups: vec![],
        gateways: Default::default(),
        identities: Vec::new(),
        inbound: Vec::new(),
    };
    trellis_api::persist::write_atomic(
        &data_dir.path().join("dns-snapshot-east.json"),
        &serde_json::to_vec(&snapshot).unwrap(),
        0o600,
    )
    .unwrap();
    let dns = Dns::start(
        &cp,
        &["--listen", "127.0.0.1:0", "--network", "east"],
        Some(data_dir),
    );
    let at = &dns.addrs[0];
    // 40 A records are 640 bytes of answer: over 512 without EDNS.
    let (host, port) = at.rsplit_once(':').unwrap();
    let out = harness::local::run(
        "dig",
        &[
            &format!("@{host}"),
            "-p",
            port,
            "+noedns",
            "+time=2",
            "big.trellis.internal",
            "A",
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Truncated, retrying in TCP mode"), "{text}");
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("big.trellis.internal."))
            .count(),
        40,
        "{text}"
    );
    // With TC ignored, the UDP answer itself: truncated, TC set.
    let r = dig(at, &["+noedns", "+ignore", "big.trellis.internal", "A"]);
    assert!(r.flags.split_whitespace().any(|f| f == "tc"), "{r:?}");
    assert!(r.answer.len() < 40, "{r:?}");
}

/// The persisted snapshot carries what nodes verify signatures with: a
/// data dir others can read is refused, and the error says the fix.
#[test]
fn a_data_dir_open_to_others_is_refused_with_the_fix() {
    use std::os::unix::fs::PermissionsExt;
    let cp = ControlPlane::start(&[]);
    let dir = private_dir();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new(BIN)
        .args(["dns", "--listen", "127.0.0.1:0", "--network", "east"])
        .args(["--control-plane", &cp.url, "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("run `chmod 700 {}`", dir.path().display())),
        "{stderr}"
    );

    // A new one is made 0700, and the snapshot in it 0600.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    assert!(trellis(&cp, &["apply", "-f", SAMPLE]).status.success());
    let fresh = dir.path().join("dns");
    let mut child = Command::new(BIN)
        .args(["dns", "--listen", "127.0.0.1:0", "--network", "east"])
        .args(["--control-plane", &cp.url, "--data-dir"])
        .arg(&fresh)
        .args(["--join-token", &cp.join_token("east", "dns")])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let snapshot = fresh.join("dns-snapshot-east.json");
    let t = Instant::now();
    while !snapshot.exists() && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&fresh), 0o700);
    assert_eq!(mode(&snapshot), 0o600);
}

/// One query for `name` A over UDP or TCP; whether it was answered with an
/// address (NOERROR and at least one answer) within a second.
fn answered(addr: &str, name: &str, tcp: bool, id: u16) -> Result<(), String> {
    use std::io::{Read, Write};
    let mut q = Vec::new();
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    let limit = Some(Duration::from_secs(1));
    let reply = if tcp {
        let mut s = std::net::TcpStream::connect(addr).map_err(|e| format!("tcp connect: {e}"))?;
        s.set_read_timeout(limit).unwrap();
        let mut framed = (q.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&q);
        s.write_all(&framed)
            .map_err(|e| format!("tcp write: {e}"))?;
        let mut len = [0u8; 2];
        s.read_exact(&mut len)
            .map_err(|e| format!("tcp read: {e}"))?;
        let mut r = vec![0u8; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut r).map_err(|e| format!("tcp read: {e}"))?;
        r
    } else {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(limit).unwrap();
        s.send_to(&q, addr).map_err(|e| format!("udp send: {e}"))?;
        let mut r = vec![0u8; 1500];
        let n = s.recv(&mut r).map_err(|e| format!("udp recv: {e}"))?;
        r.truncate(n);
        r
    };
    let ok = reply.len() > 12
        && reply[..2] == id.to_be_bytes()
        && reply[3] & 0x0f == 0
        && u16::from_be_bytes([reply[6], reply[7]]) >= 1;
    ok.then_some(()).ok_or_else(|| format!("reply {reply:?}"))
}

#[test]
fn ten_restarts_leave_no_query_unanswered() {
    let cp = ControlPlane::start(&[]);
    assert!(trellis(&cp, &["apply", "-f", SAMPLE]).status.success());
    let dir = private_dir();
    let args = ["--listen", "127.0.0.1:0", "--network", "east"];
    let (first, addrs) = spawn(&cp, &args, dir.path());
    let mut running = harness::Owned::new(first);
    let at = addrs[0].clone();
    wait_for(&at, "catalog.trellis.internal", "NOERROR");

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = [false, true]
        .into_iter()
        .map(|tcp| {
            let (at, stop) = (at.clone(), stop.clone());
            std::thread::spawn(move || {
                let (mut ok, mut failed) = (0u32, Vec::new());
                let mut id = 0u16;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    id = id.wrapping_add(1);
                    match answered(&at, "catalog.trellis.internal", tcp, id) {
                        Ok(()) => ok += 1,
                        Err(e) => failed.push(e),
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    for _ in 0..10 {
        // The successor answers on the same address; the old one exits.
        let (next, addrs) = spawn(&cp, &args, dir.path());
        assert_eq!(addrs, std::slice::from_ref(&at));
        let mut old = std::mem::replace(&mut running, harness::Owned::new(next));
        let t = Instant::now();
        while old.get_mut().try_wait().unwrap().is_none() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "the old server never exited"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(old.get_mut().try_wait().unwrap().unwrap().success());
        std::thread::sleep(Duration::from_millis(300));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for (transport, t) in ["udp", "tcp"].into_iter().zip(load) {
        let (ok, failed) = t.join().unwrap();
        println!(
            "{transport}: {ok} answered, {} not: {failed:?}",
            failed.len()
        );
        assert!(ok > 100, "{transport}: {ok}");
        assert!(failed.is_empty(), "{transport}: {failed:?}");
    }
}
