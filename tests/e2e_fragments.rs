//! End-to-end fragments through rnat (RFC 4787 REQ-14): a UDP datagram larger than the MTU,
//! fragmented by the sender's kernel, both ways; and a datagram whose fragments reach the gateway
//! in reverse order (sent with scapy), delivered whole to the inside host.

mod common;

use common::*;
use std::time::Duration;

fn have_scapy(lab: &Lab) -> bool {
    lab.exec("srv", &["python3", "-c", "import scapy.all"])
        .status
        .success()
}

#[test]
fn e2e_rfc4787_req14_large_udp_datagram_both_ways() {
    require_root!();
    let lab = Lab::new();
    let rnat = lab.start_rnat(&[]);
    let echo = servers::start_udp_echo(&lab);
    let wire = lab.capture_wire();
    // 4000 bytes with DF clear: h1's kernel sends three fragments; the echo (4000 bytes plus its
    // "peer=..." prefix) comes back fragmented by srv's kernel.
    let script = format!(
        "import socket\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.setsockopt(socket.IPPROTO_IP, 10, 0)\n\
         s.settimeout(3)\n\
         data = bytes((i * 13) % 256 for i in range(4000))\n\
         d = b''\n\
         for _ in range(3):\n\
         \x20   s.sendto(data, ('{SRV_IP}', {port}))\n\
         \x20   try:\n\
         \x20       d, a = s.recvfrom(65535)\n\
         \x20       break\n\
         \x20   except socket.timeout:\n\
         \x20       pass\n\
         print('REPLY', len(d), d.endswith(data), d.split(b' ')[0].decode())\n",
        port = servers::UDP_PORT
    );
    let out = lab.exec_timeout("h1", &["python3", "-c", &script], Duration::from_secs(20));
    let t = output_text(&out);
    let wire = wire.stop();
    assert!(
        t.contains("True") && t.contains(&format!("peer={GW_PUBLIC_IP}:")),
        "the whole echo came back, seen from the public address:\n{t}\n{}\n{}",
        wire.text,
        rnat.stderr()
    );
    assert!(
        echo.peers().iter().all(|(ip, _)| ip == GW_PUBLIC_IP),
        "server saw {:?}",
        echo.peers()
    );
    assert!(
        wire.count() >= 6,
        "fragments crossed the wire both ways:\n{}",
        wire.text
    );
    wire.check_translated().unwrap();
}

/// h1 opens a mapping to srv's echo port, reports the public port, then waits for one datagram.
const RECEIVER_PY: &str = r#"
import hashlib, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 40001))
s.settimeout(30)
s.sendto(b"hello", (sys.argv[1], int(sys.argv[2])))
d, a = s.recvfrom(65535)
print("MAPPED", d.split(b" ")[0].decode().split(":")[1], flush=True)
d, a = s.recvfrom(65535)
print("GOT", a[0], a[1], len(d), hashlib.sha256(d).hexdigest(), flush=True)
"#;

/// On srv: a 3000-byte UDP datagram from the echo port to the public mapping, in fragments sent
/// last first. Prints the payload's digest.
const REVERSED_PY: &str = r#"
import hashlib, sys
from scapy.all import IP, UDP, Raw, fragment, send
data = bytes((i * 7) % 256 for i in range(3000))
p = IP(src=sys.argv[1], dst=sys.argv[2], id=0x4242, flags=0) / UDP(sport=int(sys.argv[3]), dport=int(sys.argv[4])) / Raw(data)
p = IP(bytes(p))
frags = fragment(p, fragsize=1000)
frags.reverse()
send(frags, verbose=False)
print(hashlib.sha256(data).hexdigest(), flush=True)
"#;

#[test]
fn e2e_rfc4787_req14_out_of_order_fragments_inbound() {
    require_root!();
    let lab = Lab::new();
    if !have_scapy(&lab) {
        eprintln!("note: skipping: python3-scapy is not installed (tools/deps installs it)");
        return;
    }
    let rnat = lab.start_rnat(&[]);
    let _echo = servers::start_udp_echo(&lab);
    let log = lab.temp_path("receiver.log");
    let err = lab.temp_path("receiver.err");
    let port = servers::UDP_PORT.to_string();
    let mut rx = lab.spawn_logged(
        "h1",
        &["python3", "-u", "-c", RECEIVER_PY, SRV_IP, &port],
        &log,
        &err,
    );
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let public_port = loop {
        if let Some(p) = read()
            .lines()
            .find_map(|l| l.strip_prefix("MAPPED ").map(str::to_string))
        {
            break p;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no mapping: {}\n{}",
            read(),
            std::fs::read_to_string(&err).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // What reaches the gateway's outside interface from srv: fragments only.
    let at_gw = lab.capture(
        "gw",
        "eth0",
        &format!("src host {SRV_IP} and ip[6:2] & 0x3fff != 0"),
    );
    let out = lab.exec_timeout(
        "srv",
        &[
            "python3",
            "-c",
            REVERSED_PY,
            SRV_IP,
            GW_PUBLIC_IP,
            &port,
            &public_port,
        ],
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "scapy: {}", output_text(&out));
    let digest = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let st = rx.wait_timeout(Duration::from_secs(10));
    let seen = at_gw.stop();
    let got = read();
    assert!(
        got.contains(&format!("GOT {SRV_IP} {port} 3000 {digest}")),
        "h1 got the whole datagram from srv (st {st:?}):\n{got}\n{}\nat gw:\n{}\n{}",
        std::fs::read_to_string(&err).unwrap_or_default(),
        seen.text,
        rnat.stderr()
    );
    // The fragments did arrive out of order: the first one seen carries no UDP header.
    let first = seen.lines().next().unwrap_or_default().to_string();
    assert!(
        seen.count() >= 4 && !first.contains("UDP"),
        "reverse order at the gateway:\n{}",
        seen.text
    );
}
