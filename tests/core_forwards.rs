//! Static port forwards in the core: a permanent mapping open to any remote, hairpin access to
//! it, and the inside host's own outbound traffic using the forwarded public port.

mod frames;

use frames::*;
use rnat::nat::Direction::{Inbound, Outbound};
use rnat::nat::{Config, ConfigError, Engine, Forward, FrameMeta, Prefix, Time, Verdict, Worker};
use std::net::Ipv4Addr;

const WEB: [u8; 4] = [192, 168, 1, 10];

fn cfg(forwards: &[&str]) -> Config {
    Config {
        public_addrs: vec![Ipv4Addr::from(PUB)],
        inside_prefixes: vec!["192.168.1.0/24".parse::<Prefix>().unwrap()],
        inside_addr: Some(Ipv4Addr::from(GW_IN)),
        max_sessions: 1024,
        shards: 4,
        forwards: forwards
            .iter()
            .map(|f| f.parse::<Forward>().unwrap())
            .collect(),
        ..Config::default()
    }
}

fn run(w: &Worker, dir: rnat::nat::Direction, f: &mut [u8], at: u64) -> Verdict {
    let mut scratch = vec![0u8; 2048];
    w.process(
        dir,
        f,
        FrameMeta::default(),
        Time::from_secs(at),
        &mut scratch,
    )
}

#[test]
fn forward_parses_and_rejects_bad_specs() {
    let f: Forward = "tcp:8080=192.168.1.10:80".parse().unwrap();
    assert_eq!(
        (f.public_port, f.inside.to_string(), f.public_addr),
        (8080, "192.168.1.10:80".into(), None)
    );
    let f: Forward = "udp:203.0.113.1:5353=192.168.1.10:53".parse().unwrap();
    assert_eq!(f.public_addr, Some(Ipv4Addr::new(203, 0, 113, 1)));
    for bad in [
        "tcp:8080",
        "icmp:1=192.168.1.1:1",
        "tcp:0=192.168.1.10:80",
        "tcp:80=192.168.1.10",
        "tcp:x=1.2.3.4:5",
    ] {
        assert!(bad.parse::<Forward>().is_err(), "{bad}");
    }
}

#[test]
fn forward_accepts_any_remote_on_a_port_outside_the_ranges() {
    // 80 lies outside the default dynamic ranges (1024-65535): forwarded ports are NAT traffic too.
    let w = Engine::new(cfg(&["tcp:80=192.168.1.10:8000"]))
        .unwrap()
        .worker();
    for (remote, sport) in [(SRV, 40000u16), (SRV2, 50000)] {
        let mut syn = tcp(remote, sport, PUB, 80, SYN, b"");
        assert_eq!(
            run(&w, Inbound, &mut syn, 1),
            Verdict::Forward,
            "default filtering is APDF, forwards are open"
        );
        let h = check(&syn);
        assert_eq!((h.dst, h.dport), (WEB, 8000));
        // The answer leaves from the forwarded public port.
        let mut ack = tcp(WEB, 8000, remote, sport, SYN | ACK, b"");
        assert_eq!(run(&w, Outbound, &mut ack, 1), Verdict::Forward);
        let h = check(&ack);
        assert_eq!((h.src, h.sport), (PUB, 80));
    }
    // UDP 80 is not forwarded.
    let mut u = udp(SRV, 1, PUB, 80, b"x");
    assert!(matches!(run(&w, Inbound, &mut u, 1), Verdict::Drop(_)));
}

#[test]
fn forward_outlives_its_sessions() {
    let e = Engine::new(cfg(&["udp:5000=192.168.1.10:5000"])).unwrap();
    let w = e.worker();
    let mut q = udp(SRV, 9, PUB, 5000, b"x");
    assert_eq!(run(&w, Inbound, &mut q, 1), Verdict::Forward);
    assert_eq!(e.expire(Time::from_secs(10_000)), 1);
    assert_eq!(e.mapping_count(), 1, "the static mapping stays");
    let mut again = udp(SRV2, 9, PUB, 5000, b"x");
    assert_eq!(run(&w, Inbound, &mut again, 10_001), Verdict::Forward);
}

#[test]
fn forward_is_reachable_by_hairpin() {
    let w = Engine::new(cfg(&["tcp:8080=192.168.1.10:80"]))
        .unwrap()
        .worker();
    let mut syn = tcp(H1, 45000, PUB, 8080, SYN, b"");
    assert_eq!(run(&w, Outbound, &mut syn, 1), Verdict::Hairpin);
    let h = check(&syn);
    assert_eq!((h.src, h.dst, h.dport), (PUB, WEB, 80));
}

#[test]
fn forward_config_errors_are_clear() {
    let twice = Engine::new(cfg(&[
        "tcp:8080=192.168.1.10:80",
        "tcp:8080=192.168.1.11:80",
    ]));
    assert!(matches!(twice.err(), Some(ConfigError::BadForward(_, _))));
    let foreign = Engine::new(cfg(&["tcp:198.51.100.1:8080=192.168.1.10:80"]));
    assert!(matches!(foreign.err(), Some(ConfigError::BadForward(_, _))));
    let same_inside = Engine::new(cfg(&[
        "tcp:8080=192.168.1.10:80",
        "tcp:8081=192.168.1.10:80",
    ]));
    assert!(matches!(
        same_inside.err(),
        Some(ConfigError::BadForward(_, _))
    ));
}
