//! End-to-end: rnat with `--workers 2` (two datapath threads, AF_PACKET fanout groups on both
//! interfaces, one shared translation table). Real clients through the lab as in `e2e_gateway`;
//! the traffic must work and be translated whichever worker sees each direction of a flow.
//!
//! Run as root: `cargo test --test e2e_workers` (skips with a note otherwise).

mod common;

use common::*;

fn through_rnat_workers(scenario: impl FnOnce(&Lab) -> Result<Observation, String>) -> Observation {
    through_rnat_with(&["--workers", "2"], scenario)
}

#[test]
fn e2e_workers_ping() {
    require_root!();
    through_rnat_workers(|lab| scenarios::ping(lab, "h1"));
}

#[test]
fn e2e_workers_http_download() {
    require_root!();
    through_rnat_workers(|lab| scenarios::http_download(lab, "h1"));
}

#[test]
fn e2e_workers_udp_echo() {
    require_root!();
    let obs = through_rnat_workers(|lab| scenarios::udp_echo(lab, "h1"));
    assert_eq!(obs.server_endpoints.len(), 3, "{obs:?}");
}

#[test]
fn e2e_workers_tcp_bulk_iperf3() {
    require_root!();
    let obs = through_rnat_workers(|lab| scenarios::iperf_tcp(lab, "h1"));
    eprintln!("iperf3 through rnat --workers 2: {:?}", obs.notes);
}

#[test]
fn e2e_workers_two_hosts() {
    require_root!();
    through_rnat_workers(scenarios::two_hosts);
}

/// `--busy-poll-us`: the workers keep polling after traffic instead of sleeping in poll(2); the
/// frames that arrive in the spin window (the ping replies, TCP ACKs) take the non-sleeping path.
#[test]
fn e2e_workers_busy_poll_ping_and_tcp() {
    require_root!();
    through_rnat_with(&["--workers", "2", "--busy-poll-us", "20000"], |lab| {
        scenarios::ping(lab, "h1")
    });
    through_rnat_with(&["--workers", "1", "--busy-poll-us", "500"], |lab| {
        scenarios::http_download(lab, "h1")
    });
}
