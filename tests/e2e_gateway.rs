//! End-to-end tests: real clients through `rnat --inside eth1 --outside eth0` in a netns lab.
//!
//! Each test builds its own lab (`tests/common`), starts rnat in the `gw` namespace (waiting for
//! `rnat: ready` on its stderr), runs real clients, and checks that
//! - the traffic works (replies, matching sha256, nonzero throughput), and
//! - it was translated: the server saw only the public address 203.0.113.1, and a capture on
//!   the gateway's outside wire (rtr's gw-facing interface) shows no 192.168.x.x address.
//!
//! The second point makes these tests fail for a gateway that forwards without translating;
//! `tests/lab_selftest.rs` proves that with plain forwarding and passes with kernel NAT.
//! The gateway namespace has ip_forward=0 and no nft NAT: only rnat can carry the traffic.
//!
//! Run as root: `cargo test --test e2e_gateway` (skips with a note otherwise).
//! `RNAT_BIN=/path/to/gateway` runs them against another binary; `RNAT_READY_TIMEOUT_S`
//! changes the 10 s readiness wait. To check the suite itself:
//! `RNAT_BIN=$PWD/tools/lib/fake-gateway` (kernel masquerade) must pass, and with
//! `FAKE_GATEWAY_MODE=forward-only` (forwards without translating) every traffic test must fail.

mod common;

use common::*;
use std::time::Duration;

/// Run `scenario` with rnat in a fresh lab; fail with rnat's stderr on any problem.
fn through_rnat(scenario: impl FnOnce(&Lab) -> Result<Observation, String>) -> Observation {
    through_rnat_with(&[], scenario)
}

#[test]
fn e2e_ping_through_nat() {
    require_root!();
    through_rnat(|lab| scenarios::ping(lab, "h1"));
}

#[test]
fn e2e_http_download_sees_public_address() {
    require_root!();
    through_rnat(|lab| scenarios::http_download(lab, "h1"));
}

#[test]
fn e2e_udp_echo_sees_public_address() {
    require_root!();
    let obs = through_rnat(|lab| scenarios::udp_echo(lab, "h1"));
    assert_eq!(obs.server_endpoints.len(), 3, "{obs:?}");
}

#[test]
fn e2e_tcp_bulk_iperf3_through_nat() {
    require_root!();
    let obs = through_rnat(|lab| scenarios::iperf_tcp(lab, "h1"));
    eprintln!("iperf3 through rnat: {:?}", obs.notes);
}

#[test]
fn e2e_two_hosts_share_public_address() {
    require_root!();
    let obs = through_rnat(scenarios::two_hosts);
    // Same inside source port on h1 and h2: two distinct public endpoints, same address.
    assert!(obs.server_endpoints.len() >= 2, "{obs:?}");
}

#[test]
fn e2e_second_inside_host_pings_through_nat() {
    require_root!();
    through_rnat(|lab| scenarios::ping(lab, "h2"));
}

#[test]
fn e2e_rnat_exits_cleanly_on_sigint_and_sigterm() {
    require_root!();
    let lab = Lab::new();
    for sig in [libc::SIGINT, libc::SIGTERM] {
        let mut rnat = lab.start_rnat(&[]);
        let st = rnat
            .stop_with(sig, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("{e}"));
        if !st.success() {
            rnat.fail(&format!("rnat exit status after signal {sig}: {st}"));
        }
    }
}
