//! AF_XDP backend (cargo feature `xdp`): the generated XDP program's pass/redirect split (run with
//! `BPF_PROG_TEST_RUN` on byte-level frames), and XDP sockets on real veth pairs in private
//! namespaces (needs root; skips otherwise).
#![cfg(feature = "xdp")]

mod datapath_lab;

use datapath_lab::*;
use etherparse::PacketBuilder;
use rnat::control::host::HostSetup;
use rnat::datapath::xdp_prog::{self, Redirect, XDP_PASS, XDP_REDIRECT};
use rnat::datapath::{
    AfPacket, AfPacketOptions, FrameInfo, Port, Role, XdpAttachment, XdpMode, XdpOptions, XdpPort,
    XdpRules, in_netns,
};
use rnat::nat::config::{PortRange, Prefix};
use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::{Duration, Instant};

const GW_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const PEER_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];

fn setup() -> HostSetup {
    let mut s = HostSetup::new("eth1", "eth0");
    s.public_addrs = vec![Ipv4Addr::new(203, 0, 113, 1), Ipv4Addr::new(203, 0, 113, 9)];
    s.port_ranges = vec![PortRange::new(1024, 32767), PortRange::new(61000, 65535)];
    s.forwards = vec![(rnat::nat::Proto::Tcp, Ipv4Addr::new(203, 0, 113, 1), 8080)];
    s.inside_prefixes = vec![Prefix {
        addr: Ipv4Addr::new(192, 168, 1, 0),
        len: 24,
    }];
    s.gateway_addrs = vec![
        Ipv4Addr::new(203, 0, 113, 1),
        Ipv4Addr::new(192, 168, 1, 1),
        Ipv4Addr::new(192, 168, 1, 255),
    ];
    s
}

fn udp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(PEER_MAC, GW_MAC)
        .ipv4(src, dst, 64)
        .udp(sport, dport)
        .write(&mut v, b"payload")
        .unwrap();
    v
}

fn tcp(src: [u8; 4], dst: [u8; 4], dport: u16) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(PEER_MAC, GW_MAC)
        .ipv4(src, dst, 64)
        .tcp(40000, dport, 1, 1000)
        .syn()
        .write(&mut v, &[])
        .unwrap();
    v
}

fn icmp_echo(src: [u8; 4], dst: [u8; 4], reply: bool, id: u16) -> Vec<u8> {
    let mut v = Vec::new();
    let b = PacketBuilder::ethernet2(PEER_MAC, GW_MAC).ipv4(src, dst, 64);
    if reply {
        b.icmpv4_echo_reply(id, 1).write(&mut v, b"ping").unwrap();
    } else {
        b.icmpv4_echo_request(id, 1).write(&mut v, b"ping").unwrap();
    }
    v
}

/// An ICMP destination-unreachable from `src` to `dst` quoting `quoted` (an Ethernet frame).
fn icmp_error(src: [u8; 4], dst: [u8; 4], quoted: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(PEER_MAC, GW_MAC)
        .ipv4(src, dst, 64)
        .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::Port,
        ))
        .write(&mut v, &quoted[14..14 + 28])
        .unwrap();
    v
}

fn arp() -> Vec<u8> {
    let mut f = vec![0u8; 42];
    f[..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&PEER_MAC);
    f[12..14].copy_from_slice(&[0x08, 0x06]);
    f[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f[22..28].copy_from_slice(&PEER_MAC);
    f[28..32].copy_from_slice(&[203, 0, 113, 254]);
    f[38..42].copy_from_slice(&[203, 0, 113, 1]);
    f
}

fn verdicts(rules: &XdpRules, cases: &[(&str, Vec<u8>, u32)]) {
    let prog = xdp_prog::load(&xdp_prog::generate(rules, Redirect::Verdict)).expect("load");
    let mut bad = Vec::new();
    for (name, frame, want) in cases {
        let got = xdp_prog::test_run(prog.as_raw_fd(), frame).expect("test run");
        if got != *want {
            bad.push(format!("{name}: got {got}, want {want}"));
        }
    }
    assert!(bad.is_empty(), "{:?}: {bad:#?}", rules.role);
}

/// The outside program redirects exactly rnat's traffic (mapped ports, forwards, echo replies and
/// ICMP errors about rnat's ports, non-first fragments, pool addresses) and passes ARP, IPv6, and
/// the gateway's own traffic.
#[test]
fn xdp_program_outside_passes_arp_and_own_traffic() {
    if !is_root() {
        eprintln!("skipping: loading BPF programs needs root");
        return;
    }
    let (public, pool, other, remote) = (
        [203, 0, 113, 1],
        [203, 0, 113, 9],
        [198, 51, 100, 7],
        [198, 51, 100, 20],
    );
    let mut frag = udp(remote, public, 53, 22);
    frag[20] = 0x00;
    frag[21] = 0x10; // fragment offset 16 (x8 bytes), no port to read
    let mut ipv6 = udp(remote, public, 53, 5000);
    ipv6[12..14].copy_from_slice(&[0x86, 0xdd]);
    let sent_by_rnat = udp(public, remote, 5000, 53);
    let sent_by_host = udp(public, remote, 40000, 53);
    let rules = setup().xdp_rules(Role::Outside);
    verdicts(
        &rules,
        &[
            ("arp", arp(), XDP_PASS),
            ("ipv6", ipv6, XDP_PASS),
            (
                "udp to a mapped port",
                udp(remote, public, 53, 5000),
                XDP_REDIRECT,
            ),
            (
                "udp to the second range",
                udp(remote, public, 53, 65000),
                XDP_REDIRECT,
            ),
            (
                "udp to the host's port",
                udp(remote, public, 53, 40000),
                XDP_PASS,
            ),
            ("tcp to a forward", tcp(remote, public, 8080), XDP_REDIRECT),
            ("tcp to ssh", tcp(remote, public, 22), XDP_PASS),
            (
                "udp to another address",
                udp(remote, other, 53, 5000),
                XDP_PASS,
            ),
            (
                "anything to a pool address",
                tcp(remote, pool, 22),
                XDP_REDIRECT,
            ),
            (
                "echo reply, rnat id",
                icmp_echo(remote, public, true, 5000),
                XDP_REDIRECT,
            ),
            (
                "echo reply, host id",
                icmp_echo(remote, public, true, 100),
                XDP_PASS,
            ),
            (
                "echo request to the host",
                icmp_echo(remote, public, false, 5000),
                XDP_PASS,
            ),
            (
                "icmp error about rnat",
                icmp_error(remote, public, &sent_by_rnat),
                XDP_REDIRECT,
            ),
            (
                "icmp error about the host",
                icmp_error(remote, public, &sent_by_host),
                XDP_PASS,
            ),
            ("non-first fragment", frag, XDP_REDIRECT),
            (
                "truncated",
                udp(remote, public, 53, 5000)[..30].to_vec(),
                XDP_PASS,
            ),
        ],
    );
}

/// The inside program redirects what is routed through the gateway (and hairpinned to a public
/// port) and passes ARP, traffic to the gateway's own addresses, multicast and broadcast.
#[test]
fn xdp_program_inside_redirects_routed_traffic_only() {
    if !is_root() {
        eprintln!("skipping: loading BPF programs needs root");
        return;
    }
    let (host, gw, public, remote, stranger) = (
        [192, 168, 1, 10],
        [192, 168, 1, 1],
        [203, 0, 113, 1],
        [198, 51, 100, 7],
        [10, 9, 9, 9],
    );
    let rules = setup().xdp_rules(Role::Inside);
    verdicts(
        &rules,
        &[
            ("arp", arp(), XDP_PASS),
            ("ping the gateway", icmp_echo(host, gw, false, 7), XDP_PASS),
            ("dns to the gateway", udp(host, gw, 5353, 53), XDP_PASS),
            (
                "directed broadcast",
                udp(host, [192, 168, 1, 255], 68, 67),
                XDP_PASS,
            ),
            ("routed udp", udp(host, remote, 5353, 53), XDP_REDIRECT),
            (
                "routed ping",
                icmp_echo(host, remote, false, 7),
                XDP_REDIRECT,
            ),
            (
                "source outside the prefixes",
                udp(stranger, remote, 1, 53),
                XDP_PASS,
            ),
            (
                "multicast",
                udp(host, [224, 0, 0, 251], 5353, 5353),
                XDP_PASS,
            ),
            (
                "broadcast",
                udp(host, [255, 255, 255, 255], 68, 67),
                XDP_PASS,
            ),
            (
                "hairpin to a mapped port",
                tcp(host, public, 5000),
                XDP_REDIRECT,
            ),
            ("ssh to the public address", tcp(host, public, 22), XDP_PASS),
            (
                "hairpin to a forward",
                tcp(host, public, 8080),
                XDP_REDIRECT,
            ),
        ],
    );
}

fn xdp_link_shown(ns: &str, ifname: &str) -> bool {
    let o = Command::new("ip")
        .args(["-n", ns, "-d", "link", "show", "dev", ifname])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).contains("prog/xdp")
}

fn rules_for_a() -> XdpRules {
    XdpRules {
        role: Role::Outside,
        public: vec![Ipv4Addr::from(IP_A)],
        pool_only: vec![],
        ranges: vec![(1024, 32767)],
        forwards: vec![],
        inside_prefixes: vec![],
        own: vec![Ipv4Addr::from(IP_A)],
    }
}

/// Frames a peer sends arrive through the XDP socket, frames sent through it arrive at the peer
/// (complete and partial checksums), and the kernel still gets ARP and its own traffic: the peer
/// resolves and pings the namespace's own address, and reaches a UDP socket on a port outside
/// the ranges, while the socket is bound. The program is gone after the port closes.
fn xsk_roundtrip(tag: &str, mode: XdpMode) {
    let Some(lab) = Lab::new(tag) else { return };
    let ifa = lab.if_a.clone();
    let (att, mut port) = in_netns(&lab.ns_a, move || {
        let att = XdpAttachment::attach(&ifa, &rules_for_a(), 1, mode)?;
        let port = XdpPort::open(&ifa, &att, &XdpOptions::default())?;
        Ok::<_, std::io::Error>((att, port))
    })
    .unwrap()
    .unwrap_or_else(|e| panic!("{mode:?}: {e}"));
    assert!(xdp_link_shown(&lab.ns_a, &lab.if_a), "program attached");
    if mode != XdpMode::Auto {
        assert_eq!(att.mode(), mode);
    }
    let ifb = lab.if_b.clone();
    let mut inj = in_netns(&lab.ns_b, move || {
        AfPacket::open(&ifb, &AfPacketOptions::default())
    })
    .unwrap()
    .unwrap();

    // 1. a raw frame to a mapped port arrives through the socket, byte for byte
    let f = udp_frame(IP_B, IP_A, MAC_B, MAC_A, 5000, b"rnat-xdp-raw-frame");
    inj.tx(&f, &FrameInfo::default()).unwrap();
    inj.flush().unwrap();
    let got = collect(&mut port, Duration::from_secs(3), |g| {
        g.iter().any(|(x, _)| *x == f)
    });
    assert!(
        got.iter().any(|(x, _)| *x == f),
        "{mode:?}: raw frame via XSK"
    );

    // 2. a datagram from a kernel socket in B (partial checksum on veth) arrives, and its
    //    checksum is complete or described as partial
    let sock_b = in_netns(&lab.ns_b, || UdpSocket::bind("10.200.0.2:4444"))
        .unwrap()
        .unwrap();
    sock_b.send_to(b"from-a-socket", "10.200.0.1:6000").unwrap();
    let got = collect(&mut port, Duration::from_secs(3), |g| {
        g.iter().any(|(x, _)| x.ends_with(b"from-a-socket"))
    });
    let (frame, info) = got
        .iter()
        .find(|(x, _)| x.ends_with(b"from-a-socket"))
        .unwrap_or_else(|| panic!("{mode:?}: socket datagram via XSK"));
    let mut frame = frame.clone();
    if info.csum_partial {
        rnat::wire::offload::complete_partial_checksum(
            &mut frame,
            info.csum_start as usize,
            info.csum_offset as usize,
        )
        .unwrap();
    }
    assert!(checksums_valid(&frame), "{mode:?}: {info:?}");

    // 3. frames sent through the socket reach a kernel socket in B (complete and partial)
    sock_b
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let sock_b7 = in_netns(&lab.ns_b, || UdpSocket::bind("10.200.0.2:7000"))
        .unwrap()
        .unwrap();
    sock_b7
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let out = udp_frame(IP_A, IP_B, MAC_A, MAC_B, 7000, b"out-through-xsk");
    port.tx(&out, &FrameInfo::default()).unwrap();
    let mut partial = udp_frame(IP_A, IP_B, MAC_A, MAC_B, 7000, b"partial-through-xsk");
    let pinfo = make_partial(&mut partial);
    port.tx(&partial, &pinfo).unwrap();
    port.flush().unwrap();
    let mut buf = [0u8; 256];
    let mut seen = Vec::new();
    for _ in 0..2 {
        let (n, _) = sock_b7
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("{mode:?}: datagram sent through XSK: {e}"));
        seen.push(buf[..n].to_vec());
    }
    seen.sort();
    assert_eq!(
        seen,
        vec![b"out-through-xsk".to_vec(), b"partial-through-xsk".to_vec()]
    );
    assert!(port.stats().tx_frames >= 2);

    // 4. the kernel keeps ARP and its own traffic while the socket is bound
    let del = Command::new("ip")
        .args([
            "-n",
            &lab.ns_b,
            "neigh",
            "del",
            "10.200.0.1",
            "dev",
            &lab.if_b,
        ])
        .status()
        .unwrap();
    assert!(del.success());
    let ping = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.ns_b,
            "ping",
            "-c",
            "2",
            "-i",
            "0.2",
            "-W",
            "2",
            "10.200.0.1",
        ])
        .output()
        .unwrap();
    assert!(
        ping.status.success(),
        "{mode:?}: ping of A's own address: {}",
        String::from_utf8_lossy(&ping.stdout)
    );
    let arp_seen = collect(&mut port, Duration::from_millis(500), |g| {
        g.iter().any(|(x, _)| x.len() >= 14 && x[12..14] == [8, 6])
    });
    assert!(
        arp_seen.iter().any(|(x, _)| x[12..14] == [8, 6]),
        "{mode:?}: the gateway still sees ARP (tap)"
    );
    let sock_a = in_netns(&lab.ns_a, || UdpSocket::bind("10.200.0.1:40053"))
        .unwrap()
        .unwrap();
    sock_a
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    sock_b.send_to(b"to-the-host", "10.200.0.1:40053").unwrap();
    let (n, _) = sock_a
        .recv_from(&mut buf)
        .unwrap_or_else(|e| panic!("{mode:?}: UDP to a host port reaches the kernel: {e}"));
    assert_eq!(&buf[..n], b"to-the-host");
    let st = port.stats();
    assert_eq!(st.rx_invalid, 0, "{st:?}");
    assert!(st.rx_frames >= 2 && st.rx_arp >= 1, "{st:?}");

    // 5. closing the port and the attachment detaches the program
    drop(port);
    drop(att);
    let deadline = Instant::now() + Duration::from_secs(3);
    while xdp_link_shown(&lab.ns_a, &lab.if_a) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!xdp_link_shown(&lab.ns_a, &lab.if_a), "program detached");
}

#[test]
fn xdp_socket_native_rx_tx_and_kernel_keeps_arp() {
    xsk_roundtrip("xn", XdpMode::Native);
}

#[test]
fn xdp_socket_generic_rx_tx_and_kernel_keeps_arp() {
    xsk_roundtrip("xg", XdpMode::Generic);
}
