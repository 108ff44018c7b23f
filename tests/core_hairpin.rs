//! Hairpinning in the core (RFC 4787 REQ-9/9a, RFC 5382 REQ-8).

mod frames;

use frames::*;
use rnat::nat::Direction::Outbound;
use rnat::nat::{Config, DropReason, Engine, Filtering, FrameMeta, Prefix, Time, Verdict, Worker};
use std::net::Ipv4Addr;

fn worker(filtering: Filtering) -> Worker {
    Engine::new(Config {
        public_addrs: vec![Ipv4Addr::from(PUB)],
        inside_prefixes: vec!["192.168.1.0/24".parse::<Prefix>().unwrap()],
        inside_addr: Some(Ipv4Addr::from(GW_IN)),
        filtering_udp: filtering,
        filtering_tcp: filtering,
        max_sessions: 1024,
        shards: 4,
        ..Config::default()
    })
    .unwrap()
    .worker()
}

fn out(w: &Worker, f: &mut [u8]) -> Verdict {
    let mut scratch = vec![0u8; 2048];
    w.process(
        Outbound,
        f,
        FrameMeta::default(),
        Time::from_secs(1),
        &mut scratch,
    )
}

/// h2 opens a mapping by talking to srv; returns its public port.
fn h2_mapping(w: &Worker, sport: u16) -> u16 {
    let mut f = udp(H2, sport, SRV, 53, b"x");
    assert_eq!(out(w, &mut f), Verdict::Forward);
    check(&f).sport
}

#[test]
fn rfc4787_req9_hairpinning_udp_with_external_source() {
    let w = worker(Filtering::EndpointIndependent);
    let p2 = h2_mapping(&w, 7000);
    let mut f = udp(H1, 6000, PUB, p2, b"hello neighbour");
    assert_eq!(out(&w, &mut f), Verdict::Hairpin);
    let h = check(&f);
    // REQ-9a: h2 sees h1's public address and port, never 192.168.1.2.
    assert_eq!((h.src, h.dst, h.dport), (PUB, H2, 7000));
    assert_eq!(h.sport, 6000, "h1's mapping (its port preserved)");
    assert_eq!(h.ttl, 63, "one hop, one decrement");
    // h1's mapping is a real one: srv sees the same public port for h1.
    let mut g = udp(H1, 6000, SRV, 53, b"x");
    assert_eq!(out(&w, &mut g), Verdict::Forward);
    assert_eq!(
        check(&g).sport,
        h.sport,
        "endpoint-independent mapping across hairpin and outside"
    );
}

#[test]
fn rfc5382_req8_hairpinning_tcp() {
    let w = worker(Filtering::EndpointIndependent);
    let mut f = tcp(H2, 8080, SRV, 80, SYN, b"");
    assert_eq!(out(&w, &mut f), Verdict::Forward);
    let p2 = check(&f).sport;
    let mut s = tcp(H1, 50000, PUB, p2, SYN, b"");
    assert_eq!(out(&w, &mut s), Verdict::Hairpin);
    let h = check(&s);
    assert_eq!((h.src, h.dst, h.dport), (PUB, H2, 8080));
}

#[test]
fn hairpinning_obeys_the_target_mappings_filtering() {
    // Address-and-port-dependent: h1 can reach h2's mapping only after h2 sent to h1's public
    // endpoint — the hole punching that peer-to-peer software does, here between neighbours.
    let w = worker(Filtering::AddressAndPortDependent);
    let p2 = h2_mapping(&w, 7000);
    let mut first = udp(H1, 6000, PUB, p2, b"knock");
    assert_eq!(out(&w, &mut first), Verdict::Drop(DropReason::Filtered));
    // h1's own mapping exists now (public port 6000); h2 sends to it.
    let mut answer = udp(H2, 7000, PUB, 6000, b"punch");
    assert_eq!(out(&w, &mut answer), Verdict::Hairpin);
    assert_eq!(check(&answer).dst, H1);
    let mut again = udp(H1, 6000, PUB, p2, b"knock");
    assert_eq!(out(&w, &mut again), Verdict::Hairpin);
}

#[test]
fn hairpin_to_unmapped_port_is_dropped_and_gateway_ports_go_to_the_kernel() {
    let w = worker(Filtering::EndpointIndependent);
    let mut f = udp(H1, 6000, PUB, 20000, b"nobody");
    assert_eq!(out(&w, &mut f), Verdict::Drop(DropReason::NoMapping));
    // ssh to the gateway's public address, ping to it: the gateway itself answers.
    let mut ssh = tcp(H1, 40000, PUB, 22, SYN, b"");
    assert_eq!(out(&w, &mut ssh), Verdict::Kernel);
    let mut ping = echo_request(H1, PUB, 1, 1);
    assert_eq!(out(&w, &mut ping), Verdict::Kernel);
}

#[test]
fn rfc5508_req7_hairpinned_icmp_error_goes_back_to_the_sender() {
    let w = worker(Filtering::EndpointIndependent);
    let p2 = h2_mapping(&w, 7000);
    let mut f = udp(H1, 6000, PUB, p2, b"anyone there?");
    assert_eq!(out(&w, &mut f), Verdict::Hairpin);
    // h2 has nothing on port 7000 any more: it answers port-unreachable to what it saw.
    let mut e = icmp_error(H2, PUB, 3, 3, [0; 4], &quote_of(&f, 8));
    assert_eq!(out(&w, &mut e), Verdict::Hairpin);
    let h = check(&e);
    // REQ-7a: the outer destination is the quoted source after translation: h1 itself.
    assert_eq!((h.src, h.dst), (PUB, H1));
    assert_eq!(h.ttl, 63, "one hop, one decrement");
    let quoted = &e[42..];
    let q = check_quoted_header(quoted);
    assert_eq!(
        (q.source, q.destination),
        (H1, PUB),
        "h1 sees its own packet as it sent it"
    );
    let orig = udp(H1, 6000, PUB, p2, b"anyone there?");
    assert_eq!(
        &quoted[20..28],
        &orig[34..42],
        "ports and UDP checksum restored"
    );
}
