//! End-to-end tests of the AF_XDP datapath (cargo feature `xdp`): real clients through
//! `rnat --backend xdp` in the netns lab of `tests/common` (see `tests/e2e_gateway.rs` for what
//! each scenario checks: the traffic works, and the server saw only the public address).
//! Run as root: `cargo test --features xdp --test e2e_xdp` (skips with a note otherwise).
#![cfg(feature = "xdp")]

mod common;

use common::*;
use std::time::Duration;

const XDP: &[&str] = &["--backend", "xdp"];

fn xdp_attached(lab: &Lab, ifname: &str) -> bool {
    let out = lab.exec("gw", &["ip", "-d", "link", "show", "dev", ifname]);
    String::from_utf8_lossy(&out.stdout).contains("prog/xdp")
}

#[test]
fn e2e_xdp_ping_through_nat() {
    require_root!();
    through_rnat_with(XDP, |lab| scenarios::ping(lab, "h1"));
}

#[test]
fn e2e_xdp_http_download_sees_public_address() {
    require_root!();
    through_rnat_with(XDP, |lab| scenarios::http_download(lab, "h1"));
}

#[test]
fn e2e_xdp_udp_echo_sees_public_address() {
    require_root!();
    let obs = through_rnat_with(XDP, |lab| scenarios::udp_echo(lab, "h1"));
    assert_eq!(obs.server_endpoints.len(), 3, "{obs:?}");
}

/// The programs are attached while rnat runs, the gateway's own address still answers pings from
/// both sides (ARP and ICMP to the gateway pass to the kernel), and both programs are gone after
/// SIGTERM, and after `kill -9` too (bpf_link: the kernel detaches when the process dies), after
/// which a new rnat starts and translates again.
#[test]
fn e2e_xdp_gateway_answers_and_detaches_on_exit() {
    require_root!();
    let lab = Lab::new();
    let mut rnat = lab.start_rnat(XDP);
    for ifname in ["eth0", "eth1"] {
        if !xdp_attached(&lab, ifname) {
            rnat.fail(&format!("no XDP program on {ifname} while rnat runs"));
        }
    }
    if !rnat.stderr().contains("XDP program attached") {
        rnat.fail("rnat did not log the XDP attachment");
    }
    for (host, addr) in [("h1", "192.168.1.1"), ("rtr", "203.0.113.1")] {
        let out = lab.exec_timeout(
            host,
            &["ping", "-c", "2", "-i", "0.2", "-W", "2", addr],
            Duration::from_secs(10),
        );
        if !out.status.success() {
            rnat.fail(&format!(
                "{host} cannot ping the gateway's own address {addr}: {}",
                output_text(&out)
            ));
        }
    }
    let st = rnat
        .stop_with(libc::SIGTERM, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(st.success(), "rnat exit status {st}");
    for ifname in ["eth0", "eth1"] {
        assert!(
            !xdp_attached(&lab, ifname),
            "XDP program left on {ifname} after exit"
        );
    }
    let mut rnat = lab.start_rnat(XDP);
    let _ = rnat.stop_with(libc::SIGKILL, Duration::from_secs(5));
    for ifname in ["eth0", "eth1"] {
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while xdp_attached(&lab, ifname) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            !xdp_attached(&lab, ifname),
            "XDP program left on {ifname} after kill -9"
        );
    }
    let mut rnat = lab.start_rnat(XDP);
    if let Err(e) = scenarios::ping(&lab, "h1") {
        rnat.fail(&format!("after kill -9 and a restart: {e}"));
    }
    let _ = rnat.stop_with(libc::SIGTERM, Duration::from_secs(5));
}
