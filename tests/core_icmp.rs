//! ICMP error translation in the core (RFC 5508, RFC 5382 REQ-9/10, RFC 4787 REQ-12), with
//! byte-level frames and independent checksum verification.

mod frames;

use frames::*;
use rnat::nat::Direction::{Inbound, Outbound};
use rnat::nat::{Config, DropReason, Engine, Filtering, FrameMeta, Prefix, Time, Verdict, Worker};
use std::net::Ipv4Addr;

const RTR: [u8; 4] = [203, 0, 113, 254];

fn worker(c: Config) -> Worker {
    Engine::new(c).unwrap().worker()
}

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

/// Sends h1:5000 -> srv:53 out; returns the translated frame.
fn udp_out(w: &Worker) -> Vec<u8> {
    let mut f = udp(H1, 5000, SRV, 53, b"query-bytes");
    assert_eq!(run(w, Outbound, &mut f, 1), Verdict::Forward);
    f
}

/// The ICMP message of a frame, and its quoted packet.
fn icmp_parts(f: &[u8]) -> (&[u8], &[u8]) {
    let icmp = &f[34..];
    (icmp, &icmp[8..])
}

#[test]
fn rfc5508_req4_inbound_port_unreachable_restores_quoted_packet() {
    let w = worker(cfg());
    let sent = udp_out(&w);
    let mut e = icmp_error(SRV, PUB, 3, 3, [0; 4], &quote_of(&sent, 8));
    assert_eq!(run(&w, Inbound, &mut e, 2), Verdict::Forward);
    let h = check(&e);
    assert_eq!(
        (h.src, h.dst),
        (SRV, H1),
        "outer destination is the quoted source after translation"
    );
    let (icmp, quoted) = icmp_parts(&e);
    assert_eq!((icmp[0], icmp[1]), (3, 3), "type and code kept");
    let q = check_quoted_header(quoted);
    assert_eq!((q.source, q.destination), (H1, SRV));
    assert_eq!(
        u16::from_be_bytes([quoted[20], quoted[21]]),
        5000,
        "quoted source port restored"
    );
    // The quoted UDP checksum was present and is now right for the original datagram.
    let orig = udp(H1, 5000, SRV, 53, b"query-bytes");
    assert_eq!(&quoted[26..28], &orig[40..42]);
}

#[test]
fn rfc5508_req4_time_exceeded_from_a_router_reaches_the_inside_host() {
    // traceroute: the probe's TTL runs out at a router beyond the gateway.
    let w = worker(cfg());
    let sent = udp_out(&w);
    let mut e = icmp_error(RTR, PUB, 11, 0, [0; 4], &quote_of(&sent, 8));
    assert_eq!(run(&w, Inbound, &mut e, 2), Verdict::Forward);
    let h = check(&e);
    assert_eq!((h.src, h.dst), (RTR, H1));
    check_quoted_header(&e[42..]);
}

#[test]
fn rfc5382_req9_frag_needed_for_tcp_keeps_the_mtu() {
    let w = worker(cfg());
    let mut s = tcp(H1, 6000, SRV, 443, ACK, &[0u8; 100]);
    assert_eq!(run(&w, Outbound, &mut s, 1), Verdict::Forward);
    // A full quote (RFC 1812 style): the quoted TCP checksum is present and kept consistent.
    let mut e = icmp_error(RTR, PUB, 3, 4, [0, 0, 0x05, 0x00], &quote_of(&s, 120));
    assert_eq!(run(&w, Inbound, &mut e, 2), Verdict::Forward);
    check(&e);
    assert_eq!(&e[38..42], &[0, 0, 5, 0], "next-hop MTU field unchanged");
    let quoted = &e[42..];
    let q = check_quoted_header(quoted);
    assert_eq!(q.source, H1);
    let orig = tcp(H1, 6000, SRV, 443, ACK, &[0u8; 100]);
    assert_eq!(
        &quoted[20..],
        &orig[34..],
        "quoted TCP segment identical to what h1 sent"
    );
}

#[test]
fn rfc5508_req3b_quoted_ip_options_are_walked() {
    let w = worker(cfg());
    let sent = udp_out(&w);
    let mut q = quote_of(&sent, 8);
    // Give the quoted header 4 bytes of options (NOP x3, EOL).
    let mut withopt = q[..20].to_vec();
    withopt.extend_from_slice(&[1, 1, 1, 0]);
    withopt.extend_from_slice(&q[20..]);
    withopt[0] = 0x46;
    withopt[10] = 0;
    withopt[11] = 0;
    let c = rnat::wire::checksum::checksum(&withopt[..24]);
    withopt[10..12].copy_from_slice(&c.to_be_bytes());
    q = withopt;
    let mut e = icmp_error(SRV, PUB, 3, 3, [0; 4], &q);
    assert_eq!(run(&w, Inbound, &mut e, 2), Verdict::Forward);
    check(&e);
    let quoted = &e[42..];
    check_quoted_header(quoted);
    assert_eq!(u16::from_be_bytes([quoted[24], quoted[25]]), 5000);
}

#[test]
fn rfc5508_req3_bad_checksums_are_dropped() {
    let w = worker(cfg());
    let sent = udp_out(&w);
    let good = icmp_error(SRV, PUB, 3, 3, [0; 4], &quote_of(&sent, 8));
    let mut bad_icmp = good.clone();
    bad_icmp[36] ^= 0x55;
    assert_eq!(
        run(&w, Inbound, &mut bad_icmp, 2),
        Verdict::Drop(DropReason::BadChecksum)
    );
    // A quoted header with a wrong checksum (ICMP checksum made right again around it).
    let mut q = quote_of(&sent, 8);
    q[10] ^= 0x01;
    let mut bad_quoted = icmp_error(SRV, PUB, 3, 3, [0; 4], &q);
    assert_eq!(
        run(&w, Inbound, &mut bad_quoted, 2),
        Verdict::Drop(DropReason::BadChecksum)
    );
    let mut ok = good;
    assert_eq!(run(&w, Inbound, &mut ok, 2), Verdict::Forward);
}

#[test]
fn rfc5508_req3c_quoted_transport_checksum_is_not_checked() {
    let w = worker(cfg());
    let sent = udp_out(&w);
    let mut q = quote_of(&sent, 8);
    q[26] ^= 0xff; // garbage quoted UDP checksum
    let mut e = icmp_error(SRV, PUB, 3, 3, [0; 4], &q);
    assert_eq!(run(&w, Inbound, &mut e, 2), Verdict::Forward);
    check(&e);
}

#[test]
fn rfc5508_req4_error_without_mapping_is_dropped() {
    let w = worker(cfg());
    let sent = udp_out(&w);
    // Quoting a port rnat never allocated.
    let mut q = quote_of(&sent, 8);
    q[20..22].copy_from_slice(&12345u16.to_be_bytes());
    let mut e = icmp_error(SRV, PUB, 3, 3, [0; 4], &q);
    assert_eq!(
        run(&w, Inbound, &mut e, 2),
        Verdict::Drop(DropReason::NoMapping)
    );
    // Quoting a remote the session never talked to (a forged error).
    let mut q = quote_of(&sent, 8);
    q[16..20].copy_from_slice(&SRV2);
    q[10] = 0;
    q[11] = 0;
    let c = rnat::wire::checksum::checksum(&q[..20]);
    q[10..12].copy_from_slice(&c.to_be_bytes());
    let mut e = icmp_error(SRV, PUB, 3, 3, [0; 4], &q);
    assert_eq!(
        run(&w, Inbound, &mut e, 2),
        Verdict::Drop(DropReason::Filtered)
    );
}

#[test]
fn rfc5508_req6_rfc4787_req12_errors_neither_refresh_nor_end_sessions() {
    let w = worker(cfg());
    let sent = udp_out(&w); // at t=1
    for at in [100, 200, 290] {
        let mut e = icmp_error(SRV, PUB, 3, 3, [0; 4], &quote_of(&sent, 8));
        assert_eq!(run(&w, Inbound, &mut e, at), Verdict::Forward);
        assert_eq!(
            w.engine().session_count(),
            1,
            "an ICMP error does not end the session"
        );
    }
    let s = &w.engine().sessions(Time::from_secs(290))[0];
    assert_eq!(s.idle.as_secs(), 289, "no refresh by errors");
    assert_eq!(
        w.engine().expire(Time::from_secs(301)),
        1,
        "expires on its own timer"
    );
}

#[test]
fn rfc5508_req5_outbound_error_from_inside_host_is_translated() {
    let mut c = cfg();
    c.filtering_udp = Filtering::EndpointIndependent;
    let w = worker(c);
    let sent = udp_out(&w);
    let public_port = u16::from_be_bytes([sent[34], sent[35]]);
    // srv sends to the mapping; rnat delivers it to h1, which answers port-unreachable.
    let mut inb = udp(SRV, 53, PUB, public_port, b"answer");
    assert_eq!(run(&w, Inbound, &mut inb, 2), Verdict::Forward);
    let mut e = icmp_error(H1, SRV, 3, 3, [0; 4], &quote_of(&inb, 8));
    assert_eq!(run(&w, Outbound, &mut e, 3), Verdict::Forward);
    let h = check(&e);
    assert_eq!((h.src, h.dst), (PUB, SRV), "outer source translated");
    let quoted = &e[42..];
    let q = check_quoted_header(quoted);
    assert_eq!((q.source, q.destination), (SRV, PUB));
    assert_eq!(
        u16::from_be_bytes([quoted[22], quoted[23]]),
        public_port,
        "quoted destination port is public"
    );
    // The quoted datagram is now exactly what srv had sent.
    let orig = udp(SRV, 53, PUB, public_port, b"answer");
    assert_eq!(&quoted[20..28], &orig[34..42]);
}

#[test]
fn rfc5508_errors_about_echo_queries_are_translated() {
    let w = worker(cfg());
    let mut ping = echo_request(H1, SRV, 4242, 7);
    assert_eq!(run(&w, Outbound, &mut ping, 1), Verdict::Forward);
    let mut e = icmp_error(RTR, PUB, 11, 0, [0; 4], &quote_of(&ping, 8));
    assert_eq!(run(&w, Inbound, &mut e, 2), Verdict::Forward);
    let h = check(&e);
    assert_eq!(h.dst, H1);
    let quoted = &e[42..];
    check_quoted_header(quoted);
    let orig = echo_request(H1, SRV, 4242, 7);
    assert_eq!(
        &quoted[20..28],
        &orig[34..42],
        "quoted echo request restored, checksum included"
    );
}

#[test]
fn icmp_error_with_truncated_quote_is_a_counted_drop() {
    let w = worker(cfg());
    let sent = udp_out(&w);
    let mut e = icmp_error(SRV, PUB, 3, 3, [0; 4], &quote_of(&sent, 8)[..24]);
    assert_eq!(
        run(&w, Inbound, &mut e, 2),
        Verdict::Drop(DropReason::Malformed)
    );
    assert_eq!(w.engine().stats().dropped(DropReason::Malformed), 1);
}
