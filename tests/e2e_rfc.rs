//! End-to-end RFC behaviours through rnat in a netns lab: traceroute across the NAT (ICMP error
//! translation, RFC 5508) and hairpinning between two inside hosts (RFC 4787 REQ-9/9a).

mod common;

use common::*;
use std::time::Duration;

#[test]
fn e2e_rfc5508_traceroute_shows_every_hop() {
    require_root!();
    let lab = Lab::new();
    let rnat = lab.start_rnat(&[]);
    let out = lab.exec_timeout(
        "h1",
        &["traceroute", "-n", "-q", "1", "-w", "2", "-m", "5", SRV_IP],
        Duration::from_secs(30),
    );
    let t = output_text(&out);
    let hops: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
        .collect();
    assert_eq!(
        hops,
        [GW_INSIDE_IP, RTR_GW_SIDE_IP, SRV_IP],
        "traceroute output:\n{t}\n{}",
        rnat.stderr()
    );
}

#[test]
fn e2e_rfc4787_req9_hairpinning_between_inside_hosts() {
    require_root!();
    let lab = Lab::new();
    let rnat = lab.start_rnat(&["--filtering", "endpoint-independent"]);
    // h2: a UDP echo service on port 7000 that reports who it sees, with a mapping opened by a
    // first packet to srv (so 203.0.113.1:7000 leads to it).
    let seen = lab.temp_path("hairpin-peer");
    let script = format!(
        "import socket\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.bind(('0.0.0.0', 7000))\n\
         s.sendto(b'open', ('{SRV_IP}', 9))\n\
         s.settimeout(10)\n\
         data, peer = s.recvfrom(2048)\n\
         open('{}', 'w').write('%s:%d' % peer)\n\
         s.sendto(data, peer)\n",
        seen.display()
    );
    let _srv = lab.spawn("h2", &["python3", "-c", &script]);
    lab.wait_listening("h2", "udp", 7000, Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(300));
    let client = format!(
        "import socket\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.bind(('0.0.0.0', 6000))\n\
         s.settimeout(5)\n\
         s.sendto(b'hello neighbour', ('{GW_PUBLIC_IP}', 7000))\n\
         data, peer = s.recvfrom(2048)\n\
         print(data.decode(), '%s:%d' % peer)\n"
    );
    let out = lab.exec_timeout("h1", &["python3", "-c", &client], Duration::from_secs(10));
    let t = output_text(&out);
    assert!(
        t.contains(&format!("hello neighbour {GW_PUBLIC_IP}:7000")),
        "h1 got the echo from h2's public endpoint:\n{t}\n{}",
        rnat.stderr()
    );
    let peer = std::fs::read_to_string(&seen).unwrap_or_default();
    assert_eq!(
        peer,
        format!("{GW_PUBLIC_IP}:6000"),
        "h2 sees h1's public address and port (REQ-9a), never 192.168.1.2"
    );
}

#[test]
fn e2e_rfc4787_req2_address_pool_with_paired_pooling_and_arp() {
    require_root!();
    let lab = Lab::new();
    // 203.0.113.2 is on no interface: rnat answers ARP for it.
    let rnat = lab.start_rnat(&["--public", "203.0.113.1", "--public", "203.0.113.2"]);
    let echo = servers::start_udp_echo(&lab);
    let sources: Vec<String> = (20..36).map(|i| format!("192.168.1.{i}")).collect();
    for s in &sources {
        lab.exec_ok(
            "h1",
            &["ip", "addr", "add", &format!("{s}/24"), "dev", "eth0"],
        );
    }
    // Two datagrams from each source address, from different ports.
    for s in &sources {
        for port in [40001, 40002] {
            let out = lab.exec_input(
                "h1",
                &[
                    "socat",
                    "-t",
                    "1.5",
                    "-",
                    &format!("UDP4:{SRV_IP}:{},bind={s}:{port}", servers::UDP_PORT),
                ],
                format!("from {s}\n").as_bytes(),
                Duration::from_secs(10),
            );
            assert!(
                String::from_utf8_lossy(&out.stdout).contains(&format!("from {s}")),
                "no echo for {s}:{port}\n{}\n{}",
                output_text(&out),
                rnat.stderr()
            );
        }
    }
    let peers = echo.peers();
    assert_eq!(peers.len(), sources.len() * 2, "{peers:?}");
    let used: std::collections::BTreeSet<&str> = peers.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(
        used.into_iter().collect::<Vec<_>>(),
        ["203.0.113.1", "203.0.113.2"],
        "both pool addresses used"
    );
    // Paired: the two datagrams of one source left from the same public address (peers are in order).
    for pair in peers.chunks(2) {
        assert_eq!(
            pair[0].0, pair[1].0,
            "one inside address, one public address: {peers:?}"
        );
    }
    let neigh = lab.exec_ok("rtr", &["ip", "neigh", "show", "203.0.113.2"]);
    assert!(
        neigh.contains("lladdr"),
        "rtr resolved the pool address through rnat's ARP reply: {neigh}"
    );
}

#[test]
fn e2e_static_port_forward_from_outside_and_by_hairpin() {
    require_root!();
    let lab = Lab::new();
    let rnat = lab.start_rnat(&["--forward", "tcp:8080=192.168.1.2:80"]);
    let dir = lab.temp_path("www");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("index.html"), "forwarded\n").unwrap();
    let log = lab.temp_path("www.log");
    let _web = lab.spawn_logged(
        "h1",
        &[
            "python3",
            "-m",
            "http.server",
            "80",
            "--bind",
            "0.0.0.0",
            "--directory",
            dir.to_str().unwrap(),
        ],
        &lab.temp_path("www.out"),
        &log,
    );
    lab.wait_listening("h1", "tcp", 80, Duration::from_secs(5));
    let url = format!("http://{GW_PUBLIC_IP}:8080/index.html");
    for client in ["srv", "h2"] {
        let out = lab.exec_timeout(
            client,
            &["curl", "-s", "-m", "5", &url],
            Duration::from_secs(10),
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "forwarded\n",
            "{client} through the forward:\n{}\n{}",
            output_text(&out),
            rnat.stderr()
        );
    }
    // The web server saw srv's own address from outside and h2's *public* address by hairpin.
    let seen = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(seen.contains(SRV_IP), "{seen}");
    assert!(
        seen.contains(GW_PUBLIC_IP) && !seen.contains(H2_IP),
        "{seen}"
    );
}

/// A TCP connect from the host it runs in to ADDR PORT (argv), 30 s at most: prints
/// `connected SECONDS` or `ERROR_NAME ERRNO SECONDS`.
const CONNECT: &str = "import socket, sys, time\n\
s = socket.socket()\n\
s.settimeout(float(sys.argv[3]))\n\
t = time.monotonic()\n\
try:\n    s.connect((sys.argv[1], int(sys.argv[2])))\n    print('connected', round(time.monotonic() - t, 2))\n\
except OSError as e:\n    print(type(e).__name__, e.errno, round(time.monotonic() - t, 2))\n";

/// Seconds since midnight of a `tcpdump -nn -r` line (`HH:MM:SS.ffffff IP ...`).
fn seconds_of(line: &str) -> f64 {
    let ts = line.split_whitespace().next().unwrap_or_default();
    let v: Vec<f64> = ts.split(':').filter_map(|x| x.parse().ok()).collect();
    assert_eq!(v.len(), 3, "no timestamp in {line:?}");
    v[0] * 3600.0 + v[1] * 60.0 + v[2]
}

/// srv connects to a public port with no mapping; returns the connect's report, the outside wire
/// (TCP to or from that port, and ICMP), and what h1 and h2 saw from srv.
fn unsolicited_connect(
    lab: &Lab,
    rnat: &Rnat,
    port: u16,
    timeout_s: u32,
) -> (String, Captured, Captured, Captured) {
    let wire = lab.capture(WIRE_HOST, WIRE_IFACE, &format!("tcp port {port} or icmp"));
    let h1 = lab.capture("h1", "eth0", &format!("ip and src host {SRV_IP}"));
    let h2 = lab.capture("h2", "eth0", &format!("ip and src host {SRV_IP}"));
    let out = lab.exec_timeout(
        "srv",
        &[
            "/usr/bin/python3",
            "-c",
            CONNECT,
            GW_PUBLIC_IP,
            &port.to_string(),
            &timeout_s.to_string(),
        ],
        Duration::from_secs(timeout_s as u64 + 20),
    );
    if !out.status.success() {
        rnat.fail(&format!("connect script: {}", output_text(&out)));
    }
    let report = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (report, wire.stop(), h1.stop(), h2.stop())
}

/// RFC 5382 REQ-4: a SYN from outside to a public port with no mapping is not answered for 6 s,
/// then answered with ICMP port-unreachable from the public address, which makes the remote's
/// connect fail with "connection refused" (Linux treats a port-unreachable for a SYN as a hard
/// error). Nothing reaches an inside host.
#[test]
fn e2e_rfc5382_req4_unsolicited_syn_gets_port_unreachable_after_6s() {
    require_root!();
    let lab = Lab::new();
    let rnat = lab.start_rnat(&[]);
    let (report, wire, h1, h2) = unsolicited_connect(&lab, &rnat, 23456, 30);
    let ctx = || format!("connect: {report}\nwire:\n{}\n{}", wire.text, rnat.stderr());
    let f: Vec<&str> = report.split_whitespace().collect();
    assert_eq!(f.first(), Some(&"ConnectionRefusedError"), "{}", ctx());
    let secs: f64 = f.last().and_then(|s| s.parse().ok()).unwrap_or(0.0);
    assert!(
        (6.0..12.0).contains(&secs),
        "refused after {secs} s\n{}",
        ctx()
    );
    // The wire: the SYN (and its retransmissions), then one port-unreachable about it, and no
    // TCP answer (RST or SYN-ACK) from the public address.
    let syns: Vec<&str> = wire
        .lines()
        .filter(|l| l.contains(&format!("> {GW_PUBLIC_IP}.23456:")) && l.contains("[S]"))
        .collect();
    let errors: Vec<&str> = wire
        .lines()
        .filter(|l| l.contains(&format!("{GW_PUBLIC_IP} > {SRV_IP}: ICMP")))
        .collect();
    assert!(!syns.is_empty(), "{}", ctx());
    assert_eq!(errors.len(), 1, "{}", ctx());
    assert!(
        errors[0].contains(&format!("{GW_PUBLIC_IP} tcp port 23456 unreachable")),
        "{}",
        ctx()
    );
    assert!(
        !wire
            .lines()
            .any(|l| l.contains(&format!("{GW_PUBLIC_IP}.23456 >"))),
        "{}",
        ctx()
    );
    let waited = seconds_of(errors[0]) - seconds_of(syns[0]);
    assert!(
        (6.0..8.0).contains(&waited),
        "port-unreachable {waited} s after the first SYN\n{}",
        ctx()
    );
    assert_eq!(h1.count() + h2.count(), 0, "{}\n{}", h1.text, h2.text);
    // Counted.
    let o = lab.rnat_client(&rnat, &["stats", "--json"]);
    let st: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| rnat.fail(&format!("stats: {e}: {}", output_text(&o))));
    assert_eq!(st["unsolicited_syn"]["held"], 1, "{st:#}");
    assert_eq!(st["unsolicited_syn"]["rejected"], 1, "{st:#}");
}

/// RFC 5382 REQ-4a: with `--unsolicited-syn drop` the SYN is held and forgotten: the remote's
/// connect times out and the wire never shows an answer.
#[test]
fn e2e_rfc5382_req4a_drop_policy_never_answers() {
    require_root!();
    let lab = Lab::new();
    let rnat = lab.start_rnat(&["--unsolicited-syn", "drop"]);
    let (report, wire, h1, h2) = unsolicited_connect(&lab, &rnat, 23457, 9);
    let ctx = || format!("connect: {report}\nwire:\n{}\n{}", wire.text, rnat.stderr());
    assert!(
        report.starts_with("TimeoutError") || report.starts_with("timeout"),
        "{}",
        ctx()
    );
    assert!(
        !wire
            .lines()
            .any(|l| mentions_ip(l.split(" > ").next().unwrap_or_default(), GW_PUBLIC_IP)),
        "{}",
        ctx()
    );
    assert_eq!(h1.count() + h2.count(), 0, "{}\n{}", h1.text, h2.text);
}

/// A TCP server in the host it runs in: binds ADDR PORT (argv), accepts one connection (20 s at
/// most), sends back "peer=IP:PORT" and exits.
const TELL_PEER: &str = "import socket, sys\n\
s = socket.socket()\n\
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
s.bind((sys.argv[1], int(sys.argv[2])))\n\
s.listen(1)\n\
s.settimeout(20)\n\
c, a = s.accept()\n\
c.sendall(b'peer=%s:%d\\n' % (a[0].encode(), a[1]))\n\
c.close()\n";

/// RFC 4787 REQ-7: the gateway routes 10.0.0.0/8 inside (an inside network behind a router), and
/// a server at 10.9.0.5 lives beyond the outside. The kernel's main table would send translated
/// packets to it back inside; rnat routes them by the outside interface's routes only, so h1
/// reaches the server, which sees the public address, and nothing goes astray inside.
#[test]
fn e2e_rfc4787_req7_remote_inside_an_inside_prefix() {
    require_root!();
    let lab = Lab::new();
    const REMOTE: &str = "10.9.0.5";
    for (host, cmd) in [
        ("gw", "ip route add 10.0.0.0/8 via 192.168.1.3 dev eth1"),
        ("srv", "ip addr add 10.9.0.5/32 dev eth0"),
        ("rtr", "ip route add 10.9.0.5/32 via 198.51.100.20"),
    ] {
        let out = lab.sh(host, cmd);
        assert!(out.status.success(), "{host}: {cmd}: {}", output_text(&out));
    }
    let mut rnat = lab.start_rnat(&[]);
    let mut server = lab.spawn(
        "srv",
        &["/usr/bin/python3", "-c", TELL_PEER, REMOTE, "8099"],
    );
    lab.wait_listening("srv", "tcp", 8099, Duration::from_secs(15));
    let h2 = lab.capture("h2", "eth0", &format!("ip and host {REMOTE}"));
    let wire = lab.capture_wire();
    let out = lab.exec_timeout(
        "h1",
        &[
            "socat",
            "-T",
            "5",
            "-u",
            &format!("TCP4:{REMOTE}:8099,connect-timeout=5"),
            "-",
        ],
        Duration::from_secs(15),
    );
    let (h2, wire) = (h2.stop(), wire.stop());
    let reply = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let ctx = || {
        format!(
            "{}\nwire:\n{}\n{}",
            output_text(&out),
            wire.text,
            rnat.stderr()
        )
    };
    assert!(
        reply.starts_with(&format!("peer={GW_PUBLIC_IP}:")),
        "the server must see the public address: {}",
        ctx()
    );
    assert!(
        wire.lines()
            .any(|l| l.contains(&format!("IP {GW_PUBLIC_IP}.")) && l.contains(REMOTE)),
        "{}",
        ctx()
    );
    wire.check_translated().unwrap_or_else(|e| rnat.fail(&e));
    assert_eq!(
        h2.count(),
        0,
        "sent inside towards the inside router:\n{}",
        h2.text
    );
    let _ = server.wait_timeout(Duration::from_secs(5));
    assert!(rnat.is_running());
}

/// RFC 4787 REQ-7, the DHCP case: the outside interface is renumbered into an inside prefix
/// while rnat runs; rnat notices (netlink) and warns within seconds.
#[test]
fn e2e_rfc4787_req7_outside_renumbered_into_an_inside_prefix_is_warned() {
    require_root!();
    let lab = Lab::new();
    let mut rnat = lab.start_rnat(&[]);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        !rnat.stderr().contains("outside addresses changed"),
        "{}",
        rnat.stderr()
    );
    let out = lab.sh("gw", "ip addr add 192.168.1.200/24 dev eth0");
    assert!(out.status.success(), "{}", output_text(&out));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !rnat.stderr().contains("outside addresses changed")
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = rnat.stderr();
    assert!(
        log.lines()
            .any(|l| l.contains("outside addresses changed") && l.contains("192.168.1.0/24")),
        "no warning after renumbering:\n{log}"
    );
    assert!(rnat.is_running());
}
