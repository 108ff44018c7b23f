//! End-to-end router duties of rnat, and the pnet fallback backend, in a netns lab:
//! TTL expiry answered with ICMP time-exceeded from the inside address, DF-set packets over the
//! outside MTU answered with fragmentation-needed carrying the MTU, DF-clear ones fragmented, and
//! the kernel kept out of the way (no RST for rnat's ports, no forwarding of untranslated traffic).

mod common;

use common::*;
use std::time::Duration;

#[test]
fn e2e_ttl_expiry_answered_with_time_exceeded_from_inside_address() {
    require_root!();
    let lab = Lab::new();
    let rnat = lab.start_rnat(&[]);
    let out = lab.exec_timeout(
        "h1",
        &["ping", "-n", "-c", "1", "-t", "1", "-W", "2", SRV_IP],
        Duration::from_secs(10),
    );
    let t = output_text(&out);
    assert!(
        t.contains(&format!("From {GW_INSIDE_IP}")) && t.contains("Time to live exceeded"),
        "expected time-exceeded from {GW_INSIDE_IP}:\n{t}\n{}",
        rnat.stderr()
    );
}

/// Lowers the MTU of the gateway's outside link (both ends).
fn small_outside_mtu(lab: &Lab, mtu: &str) {
    lab.exec_ok("gw", &["ip", "link", "set", "eth0", "mtu", mtu]);
    lab.exec_ok("rtr", &["ip", "link", "set", WIRE_IFACE, "mtu", mtu]);
}

#[test]
fn e2e_df_packet_over_outside_mtu_gets_frag_needed() {
    require_root!();
    let lab = Lab::new();
    small_outside_mtu(&lab, "1280");
    let rnat = lab.start_rnat(&[]);
    let out = lab.exec_timeout(
        "h1",
        &[
            "ping", "-n", "-c", "2", "-i", "0.3", "-M", "do", "-s", "1400", "-W", "2", SRV_IP,
        ],
        Duration::from_secs(10),
    );
    let t = output_text(&out);
    assert!(
        t.contains("mtu = 1280") || t.contains("mtu=1280"),
        "expected frag-needed with mtu 1280:\n{t}\n{}",
        rnat.stderr()
    );
    // Path MTU discovery then works: the same ping at the learned size gets through.
    let out = lab.exec_timeout(
        "h1",
        &[
            "ping", "-n", "-c", "2", "-i", "0.3", "-M", "do", "-s", "1252", "-W", "2", SRV_IP,
        ],
        Duration::from_secs(10),
    );
    assert!(
        output_text(&out).contains(" 0% packet loss"),
        "{}",
        output_text(&out)
    );
}

#[test]
fn e2e_df_clear_datagram_over_outside_mtu_is_fragmented() {
    require_root!();
    let lab = Lab::new();
    small_outside_mtu(&lab, "1280");
    let _rnat = lab.start_rnat(&[]);
    let got = lab.temp_path("udp-big");
    let got_s = got.to_str().unwrap().to_string();
    let _srv = lab.spawn(
        "srv",
        &[
            "sh",
            "-c",
            &format!("socat -u UDP4-RECV:7000 CREATE:{got_s}"),
        ],
    );
    lab.wait_listening("srv", "udp", 7000, Duration::from_secs(5));
    let wire = lab.capture(WIRE_HOST, WIRE_IFACE, "udp or (ip[6:2] & 0x1fff != 0)");
    // 1400 bytes of payload with DF clear (IP_MTU_DISCOVER = IP_PMTUDISC_DONT).
    let script = "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); \
                  s.setsockopt(socket.IPPROTO_IP, 10, 0); s.sendto(b'x' * 1400, ('198.51.100.20', 7000))";
    let out = lab.exec("h1", &["python3", "-c", script]);
    assert!(out.status.success(), "{}", output_text(&out));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::fs::metadata(&got).map(|m| m.len()).unwrap_or(0) < 1400
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let wire = wire.stop();
    assert_eq!(
        std::fs::metadata(&got).map(|m| m.len()).unwrap_or(0),
        1400,
        "server got the whole datagram\n{}",
        wire.text
    );
    assert!(
        wire.text.contains("frag") || wire.lines().count() >= 2,
        "crossed the wire in fragments:\n{}",
        wire.text
    );
    wire.check_translated().unwrap();
}

#[test]
fn e2e_kernel_sends_no_rst_for_rnat_ports() {
    require_root!();
    let lab = Lab::new();
    let _rnat = lab.start_rnat(&[]);
    let wire = lab.capture_wire();
    // A SYN from outside to a public port in rnat's range with no mapping: held without an
    // answer for 6 s (RFC 5382 REQ-4; the port-unreachable that follows is e2e_rfc's test).
    let out = lab.exec_timeout(
        "srv",
        &[
            "sh",
            "-c",
            "timeout 3 socat -u /dev/null TCP4:203.0.113.1:20000,connect-timeout=2 || true",
        ],
        Duration::from_secs(10),
    );
    let wire = wire.stop();
    let resets: Vec<&str> = wire
        .lines()
        .filter(|l| l.contains("203.0.113.1.20000 >") && l.contains("[R"))
        .collect();
    assert!(
        resets.is_empty(),
        "the gateway kernel answered with RST:\n{}\n{}",
        wire.text,
        output_text(&out)
    );
    let early: Vec<&str> = wire
        .lines()
        .filter(|l| l.contains("IP 203.0.113.1 >") || l.contains("IP 203.0.113.1.20000 >"))
        .collect();
    assert!(
        early.is_empty(),
        "answered before 6 s:\n{}",
        early.join("\n")
    );
    // The gateway's own services on the public address still answer (kernel traffic untouched).
    let ping = lab.exec_timeout(
        "srv",
        &["ping", "-n", "-c", "1", "-W", "2", GW_PUBLIC_IP],
        Duration::from_secs(5),
    );
    assert!(ping.status.success(), "{}", output_text(&ping));
}

#[test]
fn e2e_pnet_backend_http_download() {
    require_root!();
    let lab = Lab::new();
    let mut rnat = lab.start_rnat(&["--backend", "pnet"]);
    let obs = scenarios::http_download(&lab, "h1").unwrap_or_else(|e| rnat.fail(&e));
    obs.assert_translated().unwrap_or_else(|e| rnat.fail(&e));
    let obs = scenarios::ping(&lab, "h2").unwrap_or_else(|e| rnat.fail(&e));
    obs.assert_translated().unwrap_or_else(|e| rnat.fail(&e));
    assert!(rnat.is_running());
}

#[test]
fn e2e_pcap_captures_both_sides_before_and_after_translation() {
    require_root!();
    let lab = Lab::new();
    let dir = lab.temp_path("pcap");
    let mut rnat = lab.start_rnat(&["--pcap", dir.to_str().unwrap(), "--workers", "1"]);
    let out = lab.exec_timeout(
        "h1",
        &["ping", "-n", "-c", "3", "-i", "0.2", "-W", "2", SRV_IP],
        Duration::from_secs(10),
    );
    assert!(out.status.success(), "{}", output_text(&out));
    rnat.stop_with(libc::SIGTERM, Duration::from_secs(5))
        .unwrap_or_else(|e| rnat.fail(&e));
    let read = |name: &str| {
        let o = lab.exec(
            "gw",
            &[
                "tcpdump",
                "-n",
                "-r",
                dir.join(name).to_str().unwrap(),
                "icmp",
            ],
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let inside = read("eth1-w0.pcap");
    let outside = read("eth0-w0.pcap");
    assert!(
        inside.contains(&format!("{H1_IP} > {SRV_IP}: ICMP echo request")),
        "inside before translation:\n{inside}"
    );
    assert!(
        inside.contains(&format!("{SRV_IP} > {H1_IP}: ICMP echo reply")),
        "inside after translation:\n{inside}"
    );
    assert!(
        outside.contains(&format!("{GW_PUBLIC_IP} > {SRV_IP}: ICMP echo request")),
        "outside after translation:\n{outside}"
    );
    assert!(
        outside.contains(&format!("{SRV_IP} > {GW_PUBLIC_IP}: ICMP echo reply")),
        "outside before translation:\n{outside}"
    );
    assert!(
        !outside.contains("192.168."),
        "no private address on the outside:\n{outside}"
    );
}
