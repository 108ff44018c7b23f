//! AF_PACKET backend against real veth pairs in private namespaces (needs root; skips otherwise).

mod datapath_lab;

use datapath_lab::*;
use rnat::datapath::{
    AfPacket, AfPacketOptions, AfPacketStats, FrameInfo, Port, RX_BATCH, RxMode, in_netns,
};

fn mode(rx_mode: RxMode) -> AfPacketOptions {
    AfPacketOptions {
        rx_mode,
        ..Default::default()
    }
}

fn open(ns: &str, ifname: &str, opts: AfPacketOptions) -> AfPacket {
    let name = ifname.to_string();
    in_netns(ns, move || AfPacket::open(&name, &opts))
        .unwrap()
        .unwrap()
}

/// Raw frames, GSO super-frames with partial checksums (metadata checked against the bytes), and
/// none of our own namespace's transmissions (`PACKET_IGNORE_OUTGOING`), in one receive mode.
fn rx_mode_gets_gso_metadata(tag: &str, rx_mode: RxMode) -> Option<AfPacketStats> {
    let lab = Lab::new(tag)?;
    let mut port = open(&lab.ns_a, &lab.if_a, mode(rx_mode));
    let mut inj = open(&lab.ns_b, &lab.if_b, AfPacketOptions::default());
    check_rx(&lab, &mut port, &mut inj, true);
    let st = port.stats();
    assert!(
        st.rx_frames > 0 && st.rx_truncated == 0,
        "{rx_mode:?}: {st:?}"
    );
    Some(st)
}

#[test]
fn afpacket_rx_gets_gso_metadata_and_not_own_traffic() {
    rx_mode_gets_gso_metadata("ar", RxMode::Mmsg);
}

/// V2: MTU frames in ring slots, GSO super-frames (larger than a slot) whole through the socket
/// queue (`TP_STATUS_COPY`), both with their offload metadata.
#[test]
fn afpacket_rx_v2_ring_gets_gso_metadata() {
    assert_eq!(
        AfPacketOptions::default().rx_mode,
        RxMode::V2,
        "the default"
    );
    let Some(st) = rx_mode_gets_gso_metadata("a2", RxMode::V2) else {
        return;
    };
    assert!(
        st.rx_copied > 0,
        "super-frames through the copy path: {st:?}"
    );
    assert!(
        st.rx_frames > st.rx_copied,
        "small frames through the slots: {st:?}"
    );
}

#[test]
fn afpacket_rx_v3_ring_gets_gso_metadata() {
    rx_mode_gets_gso_metadata("a3", RxMode::V3);
}

/// Fanout (hash, defrag) in the per-frame modes: two sockets in one group share the traffic and
/// together see every frame.
#[test]
fn afpacket_fanout_with_per_frame_rx() {
    use rnat::datapath::{Fanout, FanoutMode};
    let Some(lab) = Lab::new("af") else { return };
    for (k, rx_mode) in [RxMode::Mmsg, RxMode::V2].into_iter().enumerate() {
        let o = AfPacketOptions {
            rx_mode,
            fanout: Some(Fanout {
                group: 4242 + k as u16,
                mode: FanoutMode::Hash,
                defrag: true,
            }),
            ..Default::default()
        };
        let mut p1 = open(&lab.ns_a, &lab.if_a, o);
        let mut p2 = open(&lab.ns_a, &lab.if_a, o);
        let mut inj = open(&lab.ns_b, &lab.if_b, AfPacketOptions::default());
        let frames: Vec<Vec<u8>> = (0..64u16)
            .map(|i| udp_frame(IP_B, IP_A, MAC_B, MAC_A, 1000 + i, &[k as u8; 40]))
            .collect();
        for f in &frames {
            inj.tx(f, &Default::default()).unwrap();
        }
        inj.flush().unwrap();
        let mut seen = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        while std::time::Instant::now() < deadline && seen.len() < frames.len() {
            for p in [&mut p1, &mut p2] {
                p.rx(std::time::Duration::from_millis(5), &mut |f, _| {
                    if frames.iter().any(|x| x == f) {
                        seen.push(f.to_vec())
                    }
                })
                .unwrap();
            }
        }
        assert_eq!(seen.len(), frames.len(), "{rx_mode:?}: every frame once");
        let (a, b) = (p1.stats().rx_frames, p2.stats().rx_frames);
        assert!(
            a > 0 && b > 0,
            "{rx_mode:?}: both fanout members got frames ({a}, {b})"
        );
    }
}

#[test]
fn afpacket_tx_kernel_completes_and_segments() {
    let Some(lab) = Lab::new("at") else { return };
    // With tx checksum and TSO off on the sending veth the kernel must complete the checksum and
    // segment in software from our vnet header, so B sees MTU-sized frames with valid checksums.
    lab.ethtool_a(&["tx", "off", "tso", "off"]);
    let mut port = open(&lab.ns_a, &lab.if_a, AfPacketOptions::default());
    let mut cap = open(&lab.ns_b, &lab.if_b, AfPacketOptions::default());
    check_tx(&lab, &mut port, &mut cap, true);
    assert_eq!(port.stats().tx_errors, 0, "{:?}", port.take_last_tx_error());
    // The 10 KB TCP super-frame left from the caller's buffer (no copy), the UDP frame queued
    // before it left first.
    assert_eq!(port.stats().tx_direct, 1, "{:?}", port.stats());
    assert_eq!(port.stats().tx_frames, 2, "{:?}", port.stats());
}

#[test]
fn afpacket_tx_gso_passes_through_with_default_offloads() {
    let Some(lab) = Lab::new("ag") else { return };
    let mut port = open(&lab.ns_a, &lab.if_a, AfPacketOptions::default());
    let mut cap = open(&lab.ns_b, &lab.if_b, AfPacketOptions::default());
    check_tx(&lab, &mut port, &mut cap, true);
    assert_eq!(port.stats().tx_errors, 0, "{:?}", port.take_last_tx_error());
    // The 10 KB TCP super-frame left from the caller's buffer (no copy), the UDP frame queued
    // before it left first.
    assert_eq!(port.stats().tx_direct, 1, "{:?}", port.stats());
    assert_eq!(port.stats().tx_frames, 2, "{:?}", port.stats());
}

#[test]
fn afpacket_without_vnet_hdr_falls_back_to_software() {
    let Some(lab) = Lab::new("an") else { return };
    for rx_mode in [RxMode::Mmsg, RxMode::V2, RxMode::V3] {
        let opts = AfPacketOptions {
            vnet_hdr: false,
            rx_mode,
            ..Default::default()
        };
        let mut port = open(&lab.ns_a, &lab.if_a, opts);
        let mut cap = open(&lab.ns_b, &lab.if_b, AfPacketOptions::default());
        check_tx(&lab, &mut port, &mut cap, true);
        let mut port = open(&lab.ns_a, &lab.if_a, opts);
        check_rx(&lab, &mut port, &mut cap, false);
    }
}

/// Median delivery time of a lone frame from a socket in B to `port` in A.
fn lone_frame_latency(lab: &Lab, rx_mode: RxMode) -> std::time::Duration {
    let mut port = open(&lab.ns_a, &lab.if_a, mode(rx_mode));
    let mut inj = open(&lab.ns_b, &lab.if_b, AfPacketOptions::default());
    let mut lat = Vec::new();
    for k in 0..21u8 {
        let f = udp_frame(IP_B, IP_A, MAC_B, MAC_A, 9, &[k; 32]);
        let t = std::time::Instant::now();
        inj.tx(&f, &Default::default()).unwrap();
        inj.flush().unwrap();
        let got = collect(&mut port, std::time::Duration::from_secs(1), |g| {
            g.iter().any(|(x, _)| *x == f)
        });
        assert!(got.iter().any(|(x, _)| *x == f), "frame {k} received");
        lat.push(t.elapsed());
    }
    lat.sort();
    eprintln!(
        "{rx_mode:?} lone-frame rx latency: min {:?} median {:?} max {:?}",
        lat[0], lat[10], lat[20]
    );
    lat[10]
}

/// A lone frame is handed over when its V3 ring block retires (`block_timeout_ms`, rounded up to
/// a jiffy by the kernel); the per-frame modes hand it over at once. Measures, bounds loosely,
/// and checks the per-frame modes beat the V3 retire timer.
#[test]
fn afpacket_lone_frame_latency_is_bounded() {
    let Some(lab) = Lab::new("al") else { return };
    let v3 = lone_frame_latency(&lab, RxMode::V3);
    let v2 = lone_frame_latency(&lab, RxMode::V2);
    let mmsg = lone_frame_latency(&lab, RxMode::Mmsg);
    assert!(v3 < std::time::Duration::from_millis(50));
    assert!(
        v2 < v3 && mmsg < v3,
        "per-frame modes wake sooner: {v2:?} {mmsg:?} vs {v3:?}"
    );
}

/// `rx_batch` on the default V2 ring: frames come in batches of at most `RX_BATCH`, in order; a
/// GSO super-frame (too large for a slot, read from the socket queue) comes alone, in its place,
/// with its offload metadata.
#[test]
fn afpacket_v2_rx_batch_in_order_with_a_super_frame_between() {
    let Some(lab) = Lab::new("ab") else { return };
    let mut port = open(&lab.ns_a, &lab.if_a, mode(RxMode::V2));
    let mut inj = open(&lab.ns_b, &lab.if_b, AfPacketOptions::default());
    let small = |i: u16| udp_frame(IP_B, IP_A, MAC_B, MAC_A, 9000 + i, b"batch");
    for i in 0..40 {
        inj.tx(&small(i), &FrameInfo::default()).unwrap();
    }
    let data: Vec<u8> = (0..10_000u32).map(|x| (x * 7 + 3) as u8).collect();
    let mut big = tcp_frame(IP_B, IP_A, MAC_B, MAC_A, &data);
    let mut binfo = make_partial(&mut big);
    binfo.gso_type = 1;
    binfo.gso_size = 1448;
    binfo.hdr_len = 54;
    inj.tx(&big, &binfo).unwrap();
    for i in 40..60 {
        inj.tx(&small(i), &FrameInfo::default()).unwrap();
    }
    inj.flush().unwrap();

    // What arrives: ours only (UDP 9000.. or the TCP frame), with its batch's size.
    let mut seen: Vec<(String, usize, FrameInfo)> = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while seen.len() < 61 && std::time::Instant::now() < deadline {
        port.rx_batch(
            std::time::Duration::from_millis(100),
            &mut |frames, infos| {
                assert!(frames.len() <= RX_BATCH && frames.len() == infos.len());
                let n = frames.len();
                for (f, info) in frames.iter().zip(infos) {
                    if f.len() > 1514 {
                        seen.push(("big".into(), n, *info));
                    } else if f.len() >= 38 && f[23] == 17 {
                        let dport = u16::from_be_bytes([f[36], f[37]]);
                        if (9000..9060).contains(&dport) {
                            seen.push((format!("{}", dport - 9000), n, *info));
                        }
                    }
                }
            },
        )
        .unwrap();
    }
    let order: Vec<&str> = seen.iter().map(|s| s.0.as_str()).collect();
    let want: Vec<String> = (0..40)
        .map(|i| i.to_string())
        .chain(["big".to_string()])
        .chain((40..60).map(|i| i.to_string()))
        .collect();
    assert_eq!(order, want, "all frames, in order");
    let (_, n, info) = seen.iter().find(|s| s.0 == "big").unwrap();
    assert_eq!(*n, 1, "the super-frame comes alone");
    assert!(info.csum_partial && info.gso_type != 0, "{info:?}");
    assert!(
        seen.iter().any(|s| s.1 > 1),
        "small frames come in batches: {:?}",
        seen.iter().map(|s| s.1).collect::<Vec<_>>()
    );
    let st = port.stats();
    assert!(st.rx_copied >= 1 && st.rx_truncated == 0, "{st:?}");
}
