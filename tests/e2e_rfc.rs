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
