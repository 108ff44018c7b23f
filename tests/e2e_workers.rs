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

/// `--realtime-priority`: every datapath worker runs under SCHED_FIFO at that priority (the
/// control plane does not), and traffic flows.
#[test]
fn e2e_workers_realtime_priority() {
    require_root!();
    let lab = Lab::new();
    let mut rnat = lab.start_rnat(&["--workers", "2", "--realtime-priority", "7"]);
    scenarios::ping(&lab, "h1").unwrap_or_else(|e| rnat.fail(&e));
    let pid = rnat.pid();
    let mut workers = 0;
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = t.unwrap().path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
        // Fields after the parenthesised name: state is field 3, rt_priority 40, policy 41.
        let rest: Vec<&str> = stat
            .rsplit_once(')')
            .map_or(vec![], |(_, r)| r.split_whitespace().collect());
        let (rt_prio, policy) = (rest.get(37).copied(), rest.get(38).copied());
        if comm.starts_with("rnat-worker") {
            workers += 1;
            assert_eq!(
                (rt_prio, policy),
                (Some("7"), Some("1")),
                "{comm}: SCHED_FIFO (1) at 7"
            );
        } else {
            assert_eq!(policy, Some("0"), "{comm}: normal scheduling");
        }
    }
    assert_eq!(workers, 2);
    assert!(rnat.is_running());
}
