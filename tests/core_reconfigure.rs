//! Live reconfiguration (SIGHUP): timeouts, filtering, quotas and forwards change without
//! dropping sessions; what shapes the table needs a restart; a bad configuration changes nothing.

mod frames;

use frames::*;
use rnat::nat::Direction::{Inbound, Outbound};
use rnat::nat::{
    Config, DropReason, Engine, Filtering, Forward, FrameMeta, Prefix, Time, Verdict, Worker,
};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

fn cfg() -> Config {
    Config {
        public_addrs: vec![Ipv4Addr::from(PUB)],
        inside_prefixes: vec!["192.168.1.0/24".parse::<Prefix>().unwrap()],
        inside_addr: Some(Ipv4Addr::from(GW_IN)),
        max_sessions: 1024,
        shards: 4,
        ..Config::default()
    }
}

fn run(w: &Worker, dir: rnat::nat::Direction, mut f: Vec<u8>, at: u64) -> Verdict {
    let mut scratch = vec![0u8; 2048];
    w.process(
        dir,
        &mut f,
        FrameMeta::default(),
        Time::from_secs(at),
        &mut scratch,
    )
}

fn setup() -> (Arc<Engine>, Worker) {
    let e = Engine::new(cfg()).unwrap();
    let w = e.worker();
    (e, w)
}

#[test]
fn timeouts_change_live_and_keep_sessions() {
    let (e, w) = setup();
    assert_eq!(
        run(&w, Outbound, udp(H1, 5000, SRV, 53, b"x"), 0),
        Verdict::Forward
    );
    let mut c = cfg();
    c.timeouts.udp = Duration::from_secs(600);
    let r = e.reconfigure(&c, Time::from_secs(1)).unwrap();
    assert_eq!(r.applied, ["timeouts"]);
    assert!(r.needs_restart.is_empty());
    assert_eq!(
        e.expire(Time::from_secs(400)),
        0,
        "the running session follows the new timer"
    );
    assert_eq!(e.session_count(), 1);
    assert_eq!(e.expire(Time::from_secs(600)), 1);
    assert_eq!(e.current_config().timeouts.udp, Duration::from_secs(600));
}

#[test]
fn filtering_changes_live() {
    let (e, w) = setup();
    assert_eq!(
        run(&w, Outbound, udp(H1, 5000, SRV, 53, b"x"), 0),
        Verdict::Forward
    );
    assert_eq!(
        run(&w, Inbound, udp(SRV2, 9, PUB, 5000, b"x"), 1),
        Verdict::Drop(DropReason::Filtered)
    );
    let mut c = cfg();
    c.filtering_udp = Filtering::EndpointIndependent;
    assert_eq!(
        e.reconfigure(&c, Time::from_secs(1)).unwrap().applied,
        ["filtering"]
    );
    assert_eq!(
        run(&w, Inbound, udp(SRV2, 9, PUB, 5000, b"x"), 2),
        Verdict::Forward
    );
    // Address-dependent filtering needs an index sized at start.
    c.filtering_udp = Filtering::AddressDependent;
    let r = e.reconfigure(&c, Time::from_secs(3)).unwrap();
    assert_eq!(r.needs_restart, ["filtering (address-dependent)"]);
    assert_eq!(
        e.current_config().filtering_udp,
        Filtering::EndpointIndependent,
        "kept the running mode"
    );
}

#[test]
fn forwards_are_added_and_removed_live() {
    let (e, w) = setup();
    let mut c = cfg();
    assert_eq!(
        run(&w, Inbound, udp(SRV, 4000, PUB, 5353, b"q"), 0),
        Verdict::Drop(DropReason::NoMapping)
    );
    c.forwards = vec!["udp:5353=192.168.1.10:53".parse::<Forward>().unwrap()];
    assert_eq!(
        e.reconfigure(&c, Time::from_secs(1)).unwrap().applied,
        ["forward"]
    );
    assert_eq!(
        run(&w, Inbound, udp(SRV, 4000, PUB, 5353, b"q"), 1),
        Verdict::Forward
    );
    // Removed again: the mapping lives on with its session, then ends like any other.
    c.forwards.clear();
    e.reconfigure(&c, Time::from_secs(2)).unwrap();
    assert_eq!(
        run(&w, Inbound, udp(SRV, 4000, PUB, 5353, b"q"), 3),
        Verdict::Forward,
        "existing session kept"
    );
    assert_eq!(
        run(&w, Inbound, udp(SRV2, 4000, PUB, 5353, b"q"), 3),
        Verdict::Drop(DropReason::Filtered),
        "no longer open to all"
    );
    e.expire(Time::from_secs(1000));
    assert_eq!(e.mapping_count(), 0);
}

#[test]
fn forward_outside_the_port_ranges_needs_a_restart() {
    let (e, _w) = setup();
    let mut c = cfg();
    c.forwards = vec!["tcp:80=192.168.1.10:80".parse::<Forward>().unwrap()];
    let r = e.reconfigure(&c, Time::from_secs(1)).unwrap();
    assert_eq!(r.needs_restart, ["forward (outside the port ranges)"]);
    assert!(e.current_config().forwards.is_empty());
}

#[test]
fn forward_on_a_port_in_use_is_refused_and_changes_nothing() {
    let (e, w) = setup();
    assert_eq!(
        run(&w, Outbound, udp(H1, 7000, SRV, 53, b"x"), 0),
        Verdict::Forward
    );
    let mut c = cfg();
    c.timeouts.udp = Duration::from_secs(999);
    c.forwards = vec!["udp:7000=192.168.1.10:53".parse::<Forward>().unwrap()];
    assert!(e.reconfigure(&c, Time::from_secs(1)).is_err());
    assert_eq!(
        e.current_config().timeouts.udp,
        Duration::from_secs(300),
        "nothing applied"
    );
    assert!(e.current_config().forwards.is_empty());
}

#[test]
fn table_shape_needs_a_restart() {
    let (e, _w) = setup();
    let mut c = cfg();
    c.public_addrs.push(Ipv4Addr::new(203, 0, 113, 2));
    c.max_sessions = 4096;
    c.max_ports_per_subscriber = 10;
    let r = e.reconfigure(&c, Time::from_secs(1)).unwrap();
    assert_eq!(r.needs_restart, ["public", "max-sessions"]);
    assert_eq!(r.applied, ["quotas"], "quotas can always change live");
}

#[test]
fn quotas_change_live_when_enabled_at_start() {
    let mut c = cfg();
    c.max_ports_per_subscriber = 100;
    let e = Engine::new(c.clone()).unwrap();
    let w = e.worker();
    for p in 0..3 {
        assert_eq!(
            run(&w, Outbound, udp(H1, 1000 + p, SRV, 53, b"x"), 0),
            Verdict::Forward
        );
    }
    c.max_ports_per_subscriber = 3;
    assert_eq!(
        e.reconfigure(&c, Time::from_secs(1)).unwrap().applied,
        ["quotas"]
    );
    assert!(matches!(
        run(&w, Outbound, udp(H1, 2000, SRV, 53, b"x"), 1),
        Verdict::Reply(_)
    ));
    assert_eq!(
        run(&w, Outbound, udp(H1, 1000, SRV, 53, b"x"), 1),
        Verdict::Forward,
        "existing flows continue"
    );
}

/// A forward removed while it has sessions becomes an ordinary mapping, which holds a unit of the
/// subscriber's port quota from then on (it gives one back when it ends).
#[test]
fn removed_forward_with_sessions_counts_against_the_port_quota() {
    let mut c = cfg();
    c.max_ports_per_subscriber = 1;
    c.forwards = vec!["udp:5353=192.168.1.2:53".parse::<Forward>().unwrap()];
    let e = Engine::new(c.clone()).unwrap();
    let w = e.worker();
    assert_eq!(
        run(&w, Inbound, udp(SRV, 4000, PUB, 5353, b"q"), 0),
        Verdict::Forward
    );
    c.forwards.clear();
    e.reconfigure(&c, Time::from_secs(1)).unwrap();
    let v = run(&w, Outbound, udp(H1, 6000, SRV, 53, b"x"), 2);
    assert!(
        matches!(v, Verdict::Reply(_)) && quota_drops(&e) == 1,
        "the former forward's mapping holds the host's only port: {v:?}"
    );
    // Its session ends (UDP timeout): the port goes back, and only once.
    e.expire(Time::from_secs(1000));
    assert_eq!(e.mapping_count(), 0);
    assert_eq!(
        run(&w, Outbound, udp(H1, 6000, SRV, 53, b"x"), 1001),
        Verdict::Forward
    );
    let v = run(&w, Outbound, udp(H1, 6001, SRV, 53, b"x"), 1001);
    assert!(
        matches!(v, Verdict::Reply(_)) && quota_drops(&e) == 2,
        "still one port at a time: {v:?}"
    );
}

/// Packets refused for a quota (answered with ICMP code 13, RFC 5508 REQ-8).
fn quota_drops(e: &Engine) -> u64 {
    e.stats()
        .drops
        .iter()
        .find(|d| d.0 == DropReason::Quota)
        .map_or(0, |d| d.1)
}

/// A reload that cannot install a forward changes nothing, also when it removes others: the
/// inside endpoint of the new forward already has a dynamic mapping on another port.
#[test]
fn refused_forward_reload_changes_nothing() {
    let mut c = cfg();
    c.forwards = vec!["udp:5353=192.168.1.3:53".parse::<Forward>().unwrap()];
    let e = Engine::new(c.clone()).unwrap();
    let w = e.worker();
    assert_eq!(
        run(&w, Outbound, udp(H1, 80, SRV, 4000, b"x"), 0),
        Verdict::Forward
    );
    let mut new = c.clone();
    new.forwards = vec!["udp:8080=192.168.1.2:80".parse::<Forward>().unwrap()];
    let err = e.reconfigure(&new, Time::from_secs(1)).unwrap_err();
    assert!(err.to_string().contains("live mapping"), "{err}");
    assert_eq!(e.current_config().forwards, c.forwards, "old forward kept");
    assert_eq!(
        run(&w, Inbound, udp(SRV2, 4000, PUB, 5353, b"q"), 2),
        Verdict::Forward,
        "old forward still open to any remote"
    );
    // Once the dynamic mapping has ended, the same reload goes through.
    e.expire(Time::from_secs(1000));
    e.reconfigure(&new, Time::from_secs(1001)).unwrap();
    assert_eq!(
        run(&w, Inbound, udp(SRV2, 4000, PUB, 8080, b"q"), 1002),
        Verdict::Forward
    );
}
