//! AF_PACKET backend against real veth pairs in private namespaces (needs root; skips otherwise).

mod datapath_lab;

use datapath_lab::*;
use rnat::datapath::{AfPacket, AfPacketOptions, Port, in_netns};

fn open(ns: &str, ifname: &str, opts: AfPacketOptions) -> AfPacket {
    let name = ifname.to_string();
    in_netns(ns, move || AfPacket::open(&name, &opts))
        .unwrap()
        .unwrap()
}

#[test]
fn afpacket_rx_gets_gso_metadata_and_not_own_traffic() {
    let Some(lab) = Lab::new("ar") else { return };
    let mut port = open(&lab.ns_a, &lab.if_a, AfPacketOptions::default());
    let mut inj = open(&lab.ns_b, &lab.if_b, AfPacketOptions::default());
    check_rx(&lab, &mut port, &mut inj, true);
    let st = port.stats();
    assert!(st.rx_frames > 0 && st.rx_truncated == 0, "{st:?}");
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
}

#[test]
fn afpacket_tx_gso_passes_through_with_default_offloads() {
    let Some(lab) = Lab::new("ag") else { return };
    let mut port = open(&lab.ns_a, &lab.if_a, AfPacketOptions::default());
    let mut cap = open(&lab.ns_b, &lab.if_b, AfPacketOptions::default());
    check_tx(&lab, &mut port, &mut cap, true);
    assert_eq!(port.stats().tx_errors, 0, "{:?}", port.take_last_tx_error());
}

#[test]
fn afpacket_without_vnet_hdr_falls_back_to_software() {
    let Some(lab) = Lab::new("an") else { return };
    let opts = AfPacketOptions {
        vnet_hdr: false,
        ..Default::default()
    };
    let mut port = open(&lab.ns_a, &lab.if_a, opts);
    let mut cap = open(&lab.ns_b, &lab.if_b, AfPacketOptions::default());
    check_tx(&lab, &mut port, &mut cap, true);
    let mut port = open(&lab.ns_a, &lab.if_a, opts);
    check_rx(&lab, &mut port, &mut cap, false);
}

/// A lone frame is handed over when its ring block retires (`block_timeout_ms`, rounded up to a
/// jiffy by the kernel): measures that latency and bounds it loosely.
#[test]
fn afpacket_lone_frame_latency_is_bounded() {
    let Some(lab) = Lab::new("al") else { return };
    let mut port = open(&lab.ns_a, &lab.if_a, AfPacketOptions::default());
    let mut inj = open(&lab.ns_b, &lab.if_b, AfPacketOptions::default());
    let mut lat = Vec::new();
    for k in 0..20u8 {
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
        "lone-frame rx latency: min {:?} median {:?} max {:?}",
        lat[0], lat[10], lat[19]
    );
    assert!(lat[10] < std::time::Duration::from_millis(50));
}
