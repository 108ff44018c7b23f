//! Per-subscriber quotas (RFC 6888 REQ-4/5, REQ-11): a limit on public ports and on sessions per
//! inside address; at the limit new flows are refused with ICMP code 13 and nobody else suffers.

mod frames;

use frames::*;
use rnat::nat::Direction::{Inbound, Outbound};
use rnat::nat::{Config, DropReason, Engine, Filtering, FrameMeta, Prefix, Time, Verdict, Worker};
use std::net::Ipv4Addr;

fn worker(ports: u32, sessions: u32) -> Worker {
    Engine::new(Config {
        public_addrs: vec![Ipv4Addr::from(PUB)],
        inside_prefixes: vec!["192.168.1.0/24".parse::<Prefix>().unwrap()],
        inside_addr: Some(Ipv4Addr::from(GW_IN)),
        filtering_udp: Filtering::EndpointIndependent,
        max_sessions: 8192,
        shards: 4,
        max_ports_per_subscriber: ports,
        max_sessions_per_subscriber: sessions,
        ..Config::default()
    })
    .unwrap()
    .worker()
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

#[test]
fn rfc6888_req4_port_quota_per_subscriber() {
    let w = worker(3, 0);
    for p in 1..=3 {
        assert_eq!(
            run(&w, Outbound, udp(H1, 1000 + p, SRV, 53, b"x"), 1),
            Verdict::Forward
        );
    }
    // A fourth public port for h1: refused, with ICMP code 13.
    assert!(matches!(
        run(&w, Outbound, udp(H1, 1004, SRV, 53, b"x"), 1),
        Verdict::Reply(_)
    ));
    assert_eq!(w.engine().stats().dropped(DropReason::Quota), 1);
    // More sessions on a mapping h1 already has: no new port, allowed.
    assert_eq!(
        run(&w, Outbound, udp(H1, 1001, SRV2, 53, b"x"), 1),
        Verdict::Forward
    );
    // h2 has its own quota.
    assert_eq!(
        run(&w, Outbound, udp(H2, 1004, SRV, 53, b"x"), 1),
        Verdict::Forward
    );
    // Once h1's mappings expire its ports come back.
    w.engine().expire(Time::from_secs(1000));
    assert_eq!(
        run(&w, Outbound, udp(H1, 1004, SRV, 53, b"x"), 1000),
        Verdict::Forward
    );
}

#[test]
fn rfc6888_req5_session_quota_per_subscriber_and_no_starvation() {
    let w = worker(0, 50);
    // h1 floods new flows.
    let mut ok = 0;
    for p in 0..1000u16 {
        if run(&w, Outbound, udp(H1, 2000 + p, SRV, 53, b"flood"), 1) == Verdict::Forward {
            ok += 1;
        }
    }
    assert_eq!(ok, 50, "h1 gets exactly its quota");
    assert_eq!(w.engine().stats().dropped(DropReason::Quota), 950);
    // h2 is not starved, and h1's existing flows keep working.
    for p in 0..50u16 {
        assert_eq!(
            run(&w, Outbound, udp(H2, 3000 + p, SRV, 53, b"x"), 1),
            Verdict::Forward
        );
    }
    assert_eq!(
        run(&w, Outbound, udp(H1, 2000, SRV, 53, b"again"), 2),
        Verdict::Forward
    );
}

#[test]
fn quota_counts_inbound_created_sessions_and_gives_them_back() {
    let w = worker(0, 2);
    assert_eq!(
        run(&w, Outbound, udp(H1, 5000, SRV, 53, b"x"), 1),
        Verdict::Forward
    );
    // Endpoint-independent filtering: a second remote opens a session inbound.
    assert_eq!(
        run(&w, Inbound, udp(SRV2, 9, PUB, 5000, b"x"), 1),
        Verdict::Forward
    );
    // Quota of 2 reached: a third remote is refused, inbound too.
    assert_eq!(
        run(&w, Inbound, udp([198, 51, 100, 30], 9, PUB, 5000, b"x"), 1),
        Verdict::Drop(DropReason::Quota)
    );
    // Everything expires; the counts return to zero, not below.
    assert_eq!(w.engine().expire(Time::from_secs(1000)), 2);
    assert_eq!(
        run(&w, Outbound, udp(H1, 5000, SRV, 53, b"x"), 1000),
        Verdict::Forward
    );
    assert_eq!(
        run(&w, Outbound, udp(H1, 5001, SRV, 53, b"x"), 1000),
        Verdict::Forward
    );
    assert!(matches!(
        run(&w, Outbound, udp(H1, 5002, SRV, 53, b"x"), 1000),
        Verdict::Reply(_)
    ));
}
