//! pnet fallback backend against real veth pairs in private namespaces (needs root).

mod datapath_lab;

use datapath_lab::*;
use rnat::datapath::{AfPacket, AfPacketOptions, PnetOptions, PnetPort, in_netns};

#[test]
fn pnet_rx_infers_offloads_and_tx_does_them_in_software() {
    let Some(lab) = Lab::new("p") else { return };
    let (a, b) = (lab.if_a.clone(), lab.if_b.clone());
    let mut port = in_netns(&lab.ns_a, move || {
        PnetPort::open(&a, &PnetOptions::default())
    })
    .unwrap()
    .unwrap();
    assert_eq!(port.mtu(), 1500);
    let mut cap = in_netns(&lab.ns_b, move || {
        AfPacket::open(&b, &AfPacketOptions::default())
    })
    .unwrap()
    .unwrap();
    check_tx(&lab, &mut port, &mut cap, false);
    let st = port.stats();
    assert_eq!(st.tx_errors, 0, "{:?}", port.take_last_tx_error());
    assert!(st.tx_segments >= 7, "{st:?}");
    check_rx(&lab, &mut port, &mut cap, true);
}
