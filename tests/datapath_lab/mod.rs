//! Network-namespace lab for datapath tests: two fresh namespaces joined by a veth pair with
//! default offloads, torn down by `Drop` whatever happens. Shared checks run against any `Port`.
#![allow(dead_code)]

use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use rnat::datapath::{FrameInfo, Port, in_netns};
use rnat::wire::checksum::{fold, pseudo_header, sum, verify};
use rnat::wire::offload;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0x0a, 0x01];
pub const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0x0b, 0x01];
pub const IP_A: [u8; 4] = [10, 200, 0, 1];
pub const IP_B: [u8; 4] = [10, 200, 0, 2];

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Namespaces `ns_a` / `ns_b` with veth `if_a` (10.200.0.1/24) / `if_b` (10.200.0.2/24).
pub struct Lab {
    pub ns_a: String,
    pub ns_b: String,
    pub if_a: String,
    pub if_b: String,
}

fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{args:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn mac_str(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

impl Lab {
    /// `None` (with a note) when not root.
    pub fn new(tag: &str) -> Option<Lab> {
        if !is_root() {
            eprintln!("skipping: datapath namespace tests need root");
            return None;
        }
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}{}{}", tag, std::process::id() % 100_000, n);
        let lab = Lab {
            ns_a: format!("rnat-{id}-a"),
            ns_b: format!("rnat-{id}-b"),
            if_a: format!("v{id}a"),
            if_b: format!("v{id}b"),
        };
        assert!(lab.if_a.len() < 16, "interface name too long");
        lab.setup().unwrap_or_else(|e| panic!("lab setup: {e}"));
        Some(lab)
    }

    fn setup(&self) -> Result<(), String> {
        let (a, b) = (&self.ns_a, &self.ns_b);
        run(&["ip", "netns", "add", a])?;
        run(&["ip", "netns", "add", b])?;
        let (ma, mb) = (mac_str(MAC_A), mac_str(MAC_B));
        run(&[
            "ip", "link", "add", &self.if_a, "address", &ma, "netns", a, "type", "veth", "peer",
            "name", &self.if_b, "address", &mb, "netns", b,
        ])?;
        for (ns, ifn, ip) in [
            (a, &self.if_a, "10.200.0.1/24"),
            (b, &self.if_b, "10.200.0.2/24"),
        ] {
            run(&[
                "ip",
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.disable_ipv6=1",
            ])?;
            run(&["ip", "-n", ns, "addr", "add", ip, "dev", ifn])?;
            run(&["ip", "-n", ns, "link", "set", ifn, "up"])?;
            run(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
        }
        // Static neighbours: no ARP needed for injected frames.
        run(&[
            "ip",
            "-n",
            a,
            "neigh",
            "add",
            "10.200.0.2",
            "lladdr",
            &mb,
            "dev",
            &self.if_a,
        ])?;
        run(&[
            "ip",
            "-n",
            b,
            "neigh",
            "add",
            "10.200.0.1",
            "lladdr",
            &ma,
            "dev",
            &self.if_b,
        ])?;
        Ok(())
    }

    pub fn ethtool_a(&self, args: &[&str]) {
        let mut v = vec![
            "ip", "netns", "exec", &self.ns_a, "ethtool", "-K", &self.if_a,
        ];
        v.extend_from_slice(args);
        run(&v).unwrap();
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth end inside it, and with it the pair.
        let _ = run(&["ip", "netns", "del", &self.ns_a]);
        let _ = run(&["ip", "netns", "del", &self.ns_b]);
    }
}

/// Receives for at most `dur` (or until `stop` says so), collecting copies of all frames.
pub fn collect(
    port: &mut dyn Port,
    dur: Duration,
    mut stop: impl FnMut(&[(Vec<u8>, FrameInfo)]) -> bool,
) -> Vec<(Vec<u8>, FrameInfo)> {
    let deadline = Instant::now() + dur;
    let mut got = Vec::new();
    for _ in 0..100_000 {
        let now = Instant::now();
        if now >= deadline || stop(&got) {
            break;
        }
        let left = (deadline - now).min(Duration::from_millis(50));
        port.rx(left, &mut |f, i| got.push((f.to_vec(), *i)))
            .expect("rx");
    }
    got
}

pub fn udp_frame(
    src: [u8; 4],
    dst: [u8; 4],
    smac: [u8; 6],
    dmac: [u8; 6],
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(smac, dmac)
        .ipv4(src, dst, 64)
        .udp(4000, dport);
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    v
}

pub fn tcp_frame(
    src: [u8; 4],
    dst: [u8; 4],
    smac: [u8; 6],
    dmac: [u8; 6],
    payload: &[u8],
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(smac, dmac)
        .ipv4(src, dst, 64)
        .tcp(4001, 4002, 1_000_000, 64240)
        .ack(1)
        .psh();
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    v
}

/// Replaces a valid transport checksum with the Linux partial form; returns the metadata.
pub fn make_partial(frame: &mut [u8]) -> FrameInfo {
    let l = offload::l4_info(frame).unwrap();
    let src = frame[l.l3 + 12..l.l3 + 16].try_into().unwrap();
    let dst = frame[l.l3 + 16..l.l3 + 20].try_into().unwrap();
    let ph = fold(pseudo_header(src, dst, l.protocol, (l.end - l.l4) as u16));
    frame[l.l4 + l.csum_offset..l.l4 + l.csum_offset + 2].copy_from_slice(&ph.to_be_bytes());
    FrameInfo {
        csum_partial: true,
        csum_start: l.l4 as u16,
        csum_offset: l.csum_offset as u16,
        ..Default::default()
    }
}

/// True when the frame's IPv4 and TCP/UDP checksums are complete and valid.
pub fn checksums_valid(frame: &[u8]) -> bool {
    let Ok(l) = offload::l4_info(frame) else {
        return false;
    };
    let src = frame[l.l3 + 12..l.l3 + 16].try_into().unwrap();
    let dst = frame[l.l3 + 16..l.l3 + 20].try_into().unwrap();
    verify(&frame[l.l3..l.l4], 0)
        && fold(
            sum(&frame[l.l4..l.end]) + pseudo_header(src, dst, l.protocol, (l.end - l.l4) as u16),
        ) == 0xffff
}

fn ip_src(frame: &[u8]) -> Option<[u8; 4]> {
    match SlicedPacket::from_ethernet(frame).ok()?.net? {
        NetSlice::Ipv4(ip) => Some(ip.header().source()),
        _ => None,
    }
}

/// RX checks, `port` open on `if_a` in `ns_a`: a raw frame injected from B arrives intact; a bulk
/// TCP transfer from B arrives; the port never sees what A's own kernel sends; and (when
/// `expect_gso`) large TCP frames arrive as GSO super-frames with partial checksums described
/// correctly by their metadata.
pub fn check_rx(lab: &Lab, port: &mut dyn Port, injector: &mut dyn Port, expect_gso: bool) {
    // 1. raw frame from B
    let marker = b"rnat-datapath-raw-frame-marker";
    let f = udp_frame(IP_B, IP_A, MAC_B, MAC_A, 9, marker);
    injector.tx(&f, &FrameInfo::default()).unwrap();
    injector.flush().unwrap();
    let got = collect(port, Duration::from_secs(3), |g| {
        g.iter().any(|(x, _)| *x == f)
    });
    let (_, info) = got
        .iter()
        .find(|(x, _)| *x == f)
        .expect("raw frame received");
    assert!(
        !info.csum_partial && info.gso_type == 0,
        "raw frame metadata {info:?}"
    );

    // 2. bulk TCP from B to a listener in A
    let listener = in_netns(&lab.ns_a, || TcpListener::bind("10.200.0.1:5001"))
        .unwrap()
        .unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = vec![0u8; 65536];
        let mut total = 0usize;
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            total += n;
        }
        total
    });
    const BULK: usize = 2 << 20;
    let client = in_netns(&lab.ns_b, || {
        let c = TcpStream::connect_timeout(
            &"10.200.0.1:5001".parse().unwrap(),
            Duration::from_secs(3),
        )?;
        c.set_write_timeout(Some(Duration::from_secs(5)))?;
        Ok::<_, std::io::Error>(c)
    })
    .unwrap()
    .unwrap();
    let writer = std::thread::spawn(move || {
        let mut c = client;
        let chunk = vec![0x5au8; 256 * 1024];
        for _ in 0..BULK / chunk.len() {
            if c.write_all(&chunk).is_err() {
                break;
            }
        }
    });
    let got = collect(port, Duration::from_secs(4), |g| {
        g.iter().filter(|(x, _)| x.len() > 1514).count() > 3
            || g.iter().map(|(x, _)| x.len()).sum::<usize>() > BULK
    });
    writer.join().unwrap();
    assert_eq!(server.join().unwrap(), BULK, "bulk transfer completed");
    let mut tcp_from_b = 0;
    let mut big = 0;
    for (frame, info) in &got {
        assert_ne!(
            ip_src(frame),
            Some(IP_A),
            "saw our own namespace's transmission"
        );
        let Ok(p) = SlicedPacket::from_ethernet(frame) else {
            continue;
        };
        let Some(TransportSlice::Tcp(t)) = p.transport else {
            continue;
        };
        if t.destination_port() != 5001 {
            continue;
        }
        tcp_from_b += 1;
        if info.csum_partial {
            assert_eq!((info.csum_start, info.csum_offset), (34, 16), "{info:?}");
            assert_eq!(
                offload::looks_partial(frame),
                Some((34, 16)),
                "metadata matches bytes"
            );
            let mut c = frame.clone();
            offload::complete_partial_checksum(&mut c, 34, 16).unwrap();
            assert!(checksums_valid(&c));
        } else {
            assert!(checksums_valid(frame), "complete checksum valid");
        }
        if frame.len() > 1514 {
            big += 1;
            assert!(info.csum_partial, "super-frame has partial checksum");
            assert_eq!(info.gso_type & 0x7f, 1, "GSO TCPv4: {info:?}");
            assert!(info.gso_size > 0 && info.gso_size <= 1448, "{info:?}");
        }
    }
    assert!(tcp_from_b > 0, "saw the bulk TCP traffic");
    if expect_gso {
        assert!(big > 0, "saw GSO super-frames (default veth offloads)");
    }
    eprintln!(
        "rx: {} frames, {tcp_from_b} TCP from B, {big} super-frames",
        got.len()
    );
}

/// TX checks, `port` open on `if_a`, `capture` on `if_b`: a UDP datagram with a partial checksum
/// reaches a socket in B with a valid checksum; a 10000-byte TCP super-frame arrives in B as
/// MTU-sized segments with valid checksums (`capture_segments`) or as one frame whose metadata
/// still describes it.
pub fn check_tx(lab: &Lab, port: &mut dyn Port, capture: &mut dyn Port, gso_info: bool) {
    let sock = in_netns(&lab.ns_b, || UdpSocket::bind("10.200.0.2:7000"))
        .unwrap()
        .unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let payload: Vec<u8> = (0..777u32).map(|x| (x * 31) as u8).collect();
    let mut u = udp_frame(IP_A, IP_B, MAC_A, MAC_B, 7000, &payload);
    let uinfo = make_partial(&mut u);
    assert!(!checksums_valid(&u));
    port.tx(&u, &uinfo).unwrap();

    let data: Vec<u8> = (0..10_000u32).map(|x| (x * 7 + 3) as u8).collect();
    let mut t = tcp_frame(IP_A, IP_B, MAC_A, MAC_B, &data);
    let mut tinfo = make_partial(&mut t);
    if gso_info {
        tinfo.gso_type = 1;
        tinfo.gso_size = 1448;
        tinfo.hdr_len = 54;
    }
    port.tx(&t, &tinfo).unwrap();
    port.flush().unwrap();

    let mut buf = [0u8; 2048];
    let (n, from) = sock
        .recv_from(&mut buf)
        .expect("UDP datagram delivered (checksum valid)");
    assert_eq!(&buf[..n], &payload[..]);
    assert_eq!(from.port(), 4000);

    let got = collect(capture, Duration::from_secs(3), |g| {
        g.iter().filter(|(f, _)| matches!(SlicedPacket::from_ethernet(f).ok().and_then(|p| p.transport), Some(TransportSlice::Tcp(ref t)) if t.destination_port() == 4002)).map(|(f, _)| f.len()).sum::<usize>() >= 10_000
    });
    let mut joined = Vec::new();
    let mut segs = 0;
    for (f, info) in &got {
        let Ok(p) = SlicedPacket::from_ethernet(f) else {
            continue;
        };
        let Some(TransportSlice::Tcp(tcp)) = p.transport else {
            continue;
        };
        if tcp.destination_port() != 4002 {
            continue;
        }
        segs += 1;
        let mut c = f.clone();
        if info.csum_partial {
            offload::complete_partial_checksum(
                &mut c,
                info.csum_start.into(),
                info.csum_offset.into(),
            )
            .unwrap();
        }
        assert!(checksums_valid(&c), "segment checksum valid");
        assert_eq!(
            tcp.sequence_number(),
            1_000_000u32.wrapping_add(joined.len() as u32)
        );
        joined.extend_from_slice(tcp.payload());
    }
    assert_eq!(joined, data, "all TCP payload arrived in order");
    eprintln!("tx: TCP super-frame arrived as {segs} frame(s)");
    assert!(segs >= 1);
}
