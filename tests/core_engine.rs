//! The NAT core driven with byte-level frames and a virtual clock. Test names follow
//! shared/rfc-checklist.md where a test proves one of its requirements.

mod frames;

use frames::*;
use rnat::nat::Direction::{Inbound, Outbound};
use rnat::nat::{
    Config, DropReason, Engine, Filtering, FrameMeta, PortRange, Prefix, Proto, Time, Timeouts,
    Verdict, Worker,
};
use std::net::Ipv4Addr;

fn cfg() -> Config {
    Config {
        public_addrs: vec![Ipv4Addr::from(PUB)],
        inside_prefixes: vec!["192.168.1.0/24".parse::<Prefix>().unwrap()],
        inside_addr: Some(Ipv4Addr::from(GW_IN)),
        max_sessions: 4096,
        shards: 8,
        ..Config::default()
    }
}

fn worker(c: Config) -> Worker {
    Engine::new(c).unwrap().worker()
}

fn t(s: u64) -> Time {
    Time::from_secs(s)
}

struct Nat {
    w: Worker,
    scratch: Vec<u8>,
}

impl Nat {
    fn new(c: Config) -> Nat {
        Nat {
            w: worker(c),
            scratch: vec![0; 2048],
        }
    }
    fn out(&mut self, mut f: Vec<u8>, now: Time) -> Result<Vec<u8>, Verdict> {
        match self.w.process(
            Outbound,
            &mut f,
            FrameMeta::default(),
            now,
            &mut self.scratch,
        ) {
            Verdict::Forward => Ok(f),
            v => Err(v),
        }
    }
    fn inb(&mut self, mut f: Vec<u8>, now: Time) -> Result<Vec<u8>, Verdict> {
        match self.w.process(
            Inbound,
            &mut f,
            FrameMeta::default(),
            now,
            &mut self.scratch,
        ) {
            Verdict::Forward => Ok(f),
            v => Err(v),
        }
    }
    fn stats(&self) -> rnat::nat::Stats {
        self.w.engine().stats()
    }
}

// ------------------------------------------------------------------ rewriting

#[test]
fn outbound_udp_rewrites_source_with_valid_checksums() {
    let mut n = Nat::new(cfg());
    let f = n.out(udp(H1, 40000, SRV, 53, b"query"), t(1)).unwrap();
    let h = check(&f);
    assert_eq!(
        h,
        Hdr {
            src: PUB,
            dst: SRV,
            sport: 40000,
            dport: 53,
            ttl: 63
        }
    );
}

#[test]
fn outbound_tcp_rewrites_source_with_valid_checksums() {
    let mut n = Nat::new(cfg());
    let f = n.out(tcp(H1, 51000, SRV, 80, SYN, b""), t(1)).unwrap();
    assert_eq!(
        check(&f),
        Hdr {
            src: PUB,
            dst: SRV,
            sport: 51000,
            dport: 80,
            ttl: 63
        }
    );
    let f = n
        .out(tcp(H1, 51000, SRV, 80, ACK, &[7u8; 999]), t(1))
        .unwrap();
    check(&f);
}

#[test]
fn rfc5508_req1_echo_identifier_is_translated_both_ways() {
    let mut n = Nat::new(cfg());
    let f = n.out(echo_request(H1, SRV, 777, 1), t(1)).unwrap();
    let h = check(&f);
    assert_eq!((h.src, h.dst), (PUB, SRV));
    let back = n.inb(echo_reply(SRV, PUB, h.sport, 1), t(2)).unwrap();
    let b = check(&back);
    assert_eq!((b.src, b.dst, b.sport), (SRV, H1, 777));
}

#[test]
fn inbound_reply_restores_inside_destination() {
    let mut n = Nat::new(cfg());
    for (proto, port) in [("udp", 41000), ("tcp", 41001)] {
        let f = if proto == "udp" {
            udp(H1, port, SRV, 9, b"x")
        } else {
            tcp(H1, port, SRV, 9, SYN, b"")
        };
        let h = check(&n.out(f, t(1)).unwrap());
        let back = n.inb(reply_to(&h, proto, b"answer"), t(2)).unwrap();
        let b = check(&back);
        assert_eq!((b.src, b.sport, b.dst), (SRV, 9, H1), "{proto}");
        assert_eq!(b.dport, port, "{proto}");
    }
}

#[test]
fn udp_zero_checksum_stays_zero() {
    let mut n = Nat::new(cfg());
    let mut f = udp(H1, 40000, SRV, 53, b"nocsum");
    f[14 + 20 + 6] = 0;
    f[14 + 20 + 7] = 0;
    let f = n.out(f, t(1)).unwrap();
    assert_eq!(&f[40..42], &[0, 0]);
    check(&f);
}

#[test]
fn udp_checksum_that_becomes_zero_is_sent_as_ffff() {
    // Choose two payload bytes so that the *translated* datagram's checksum computes to 0.
    let mut n = Nat::new(cfg());
    let probe = udp(PUB, 40000, SRV, 53, &[0, 0]);
    let c = u16::from_be_bytes([probe[40], probe[41]]);
    let payload = c.to_be_bytes();
    let translated_direct = udp(PUB, 40000, SRV, 53, &payload);
    // etherparse writes a computed 0 as 0xffff itself; the value is "zero" either way.
    assert!(same_csum(
        u16::from_be_bytes([translated_direct[40], translated_direct[41]]),
        0
    ));
    let f = n.out(udp(H1, 40000, SRV, 53, &payload), t(1)).unwrap();
    assert_eq!(&f[40..42], &[0xff, 0xff]);
    check(&f);
}

#[test]
fn partial_checksum_is_kept_partial_and_correct() {
    use rnat::wire::checksum::{fold, pseudo_header, sum};
    let mut n = Nat::new(cfg());
    let mut f = tcp(H1, 52000, SRV, 443, ACK, &[1u8; 100]);
    let seg_len = (f.len() - 34) as u16;
    let partial = fold(pseudo_header(H1, SRV, 6, seg_len));
    f[50..52].copy_from_slice(&partial.to_be_bytes());
    let meta = FrameMeta {
        csum_partial: true,
        gso: false,
    };
    assert_eq!(
        n.w.process(Outbound, &mut f, meta, t(1), &mut n.scratch),
        Verdict::Forward
    );
    let field = u16::from_be_bytes([f[50], f[51]]);
    assert_eq!(field, fold(pseudo_header(PUB, SRV, 6, seg_len)));
    // Completing it the way a NIC does yields a valid checksum.
    f[50] = 0;
    f[51] = 0;
    let full = !fold(sum(&f[34..]) + pseudo_header(PUB, SRV, 6, seg_len));
    f[50..52].copy_from_slice(&full.to_be_bytes());
    check(&f);
}

#[test]
fn ip_options_are_walked() {
    let mut n = Nat::new(cfg());
    let base = udp(H1, 40000, SRV, 53, b"opts");
    // Insert 4 bytes of IPv4 options (NOP NOP NOP EOL): IHL 6.
    let mut f = base[..34].to_vec();
    f.extend_from_slice(&[1, 1, 1, 0]);
    f.extend_from_slice(&base[34..]);
    f[14] = 0x46;
    let total = u16::from_be_bytes([f[16], f[17]]) + 4;
    f[16..18].copy_from_slice(&total.to_be_bytes());
    f[24] = 0;
    f[25] = 0;
    let c = rnat::wire::checksum::checksum(&f[14..38]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    let out = n.out(f, t(1)).unwrap();
    let h = check(&out);
    assert_eq!((h.src, h.sport), (PUB, 40000));
}

// ------------------------------------------------------------------ mapping and ports

#[test]
fn rfc4787_req1_endpoint_independent_mapping_udp() {
    let mut n = Nat::new(cfg());
    let a = check(&n.out(udp(H1, 5000, SRV, 1000, b"a"), t(1)).unwrap());
    let b = check(&n.out(udp(H1, 5000, SRV2, 2000, b"b"), t(1)).unwrap());
    assert_eq!(a.sport, b.sport);
    assert_eq!(n.w.engine().mapping_count(), 1);
    assert_eq!(n.w.engine().session_count(), 2);
}

#[test]
fn rfc5382_req1_endpoint_independent_mapping_tcp() {
    let mut n = Nat::new(cfg());
    let a = check(&n.out(tcp(H1, 5001, SRV, 80, SYN, b""), t(1)).unwrap());
    let b = check(&n.out(tcp(H1, 5001, SRV2, 443, SYN, b""), t(1)).unwrap());
    assert_eq!(a.sport, b.sport);
}

#[test]
fn port_preserved_when_free() {
    let mut n = Nat::new(cfg());
    assert_eq!(
        check(&n.out(udp(H1, 33333, SRV, 53, b"x"), t(1)).unwrap()).sport,
        33333
    );
}

#[test]
fn rfc4787_req3_no_port_overloading() {
    let mut n = Nat::new(cfg());
    let a = check(&n.out(udp(H1, 6000, SRV, 53, b"x"), t(1)).unwrap());
    let b = check(&n.out(udp(H2, 6000, SRV, 53, b"x"), t(1)).unwrap());
    assert_eq!(a.sport, 6000);
    assert_ne!(
        a.sport, b.sport,
        "two inside endpoints never share a public port"
    );
}

#[test]
fn rfc4787_req4_parity_and_req3a_range_class_preserved() {
    let mut c = cfg();
    c.port_ranges = vec![PortRange::new(1, 65535)];
    let mut n = Nat::new(c);
    for (port, host_a, host_b) in [
        (6001u16, H1, H2),
        (6002, H1, H2),
        (123, H1, H2),
        (500, H1, H2),
    ] {
        let a = check(&n.out(udp(host_a, port, SRV, 53, b"x"), t(1)).unwrap());
        let b = check(&n.out(udp(host_b, port, SRV, 53, b"x"), t(1)).unwrap());
        assert_eq!(a.sport, port);
        assert_eq!(b.sport % 2, port % 2, "parity of {port}");
        assert_eq!(b.sport < 1024, port < 1024, "range class of {port}");
    }
}

#[test]
fn rfc6056_non_preserved_ports_are_randomised() {
    let mut n = Nat::new(cfg());
    let mut ports = Vec::new();
    for i in 0..20u8 {
        let h = [192, 168, 1, 10 + i];
        ports.push(check(&n.out(udp(h, 7000, SRV, 53, b"x"), t(1)).unwrap()).sport);
    }
    assert_eq!(ports[0], 7000);
    let mut sorted = ports[1..].to_vec();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 19);
    // Not sequential: the gaps between consecutive allocations are not all small.
    let big_gaps = ports
        .windows(2)
        .filter(|w| w[0].abs_diff(w[1]) > 64)
        .count();
    assert!(big_gaps > 10, "{ports:?}");
}

#[test]
fn ports_stay_inside_configured_ranges() {
    let mut c = cfg();
    c.port_ranges = vec![PortRange::new(20000, 20009), PortRange::new(30000, 30009)];
    let mut n = Nat::new(c);
    let mut seen = std::collections::HashSet::new();
    for i in 0..20u8 {
        let h = [192, 168, 1, 10 + i];
        let p = check(&n.out(udp(h, 5000 + i as u16, SRV, 53, b"x"), t(1)).unwrap()).sport;
        assert!(
            (20000..=20009).contains(&p) || (30000..=30009).contains(&p),
            "{p}"
        );
        assert!(seen.insert(p));
    }
    // All 20 used: the next new mapping finds no port.
    let v = n
        .out(udp([192, 168, 1, 99], 5000, SRV, 53, b"x"), t(1))
        .unwrap_err();
    let Verdict::Reply(len) = v else {
        panic!("expected ICMP code 13, got {v:?}")
    };
    assert_eq!(
        (n.scratch[34], n.scratch[35]),
        (3, 13),
        "destination unreachable, admin prohibited"
    );
    assert!(len > 42);
    assert_eq!(n.stats().dropped(DropReason::NoPorts), 1);
    // Existing mappings are unaffected.
    assert!(
        n.out(udp([192, 168, 1, 10], 5000, SRV, 53, b"x"), t(1))
            .is_ok()
    );
}

#[test]
fn rfc6888_req8_freed_port_rests_before_reuse() {
    let mut c = cfg();
    c.port_ranges = vec![PortRange::new(40000, 40000)];
    let mut n = Nat::new(c);
    assert_eq!(
        check(&n.out(udp(H1, 40000, SRV, 53, b"x"), t(0)).unwrap()).sport,
        40000
    );
    // UDP timer (300 s) runs out; the sweep frees the mapping.
    assert_eq!(n.w.engine().expire(t(300)), 1);
    assert_eq!(n.w.engine().mapping_count(), 0);
    // Another host wants the port during the cool-down: refused (with ICMP code 13).
    for at in [301, 300 + 119] {
        let v = n.out(udp(H2, 40000, SRV, 53, b"x"), t(at)).unwrap_err();
        assert!(matches!(v, Verdict::Reply(_)), "{v:?}");
    }
    assert_eq!(n.stats().dropped(DropReason::NoPorts), 2);
    // After 120 s of rest it is free again.
    assert_eq!(
        check(&n.out(udp(H2, 40000, SRV, 53, b"x"), t(300 + 122)).unwrap()).sport,
        40000
    );
}

#[test]
fn rfc4787_req2_paired_pooling() {
    let mut c = cfg();
    c.public_addrs = (1..=4).map(|i| Ipv4Addr::new(203, 0, 113, i)).collect();
    let mut n = Nat::new(c);
    for i in 0..16u8 {
        let h = [192, 168, 1, 10 + i];
        let first = check(&n.out(udp(h, 1000 + i as u16, SRV, 53, b"x"), t(1)).unwrap()).src;
        for p in 0..5u16 {
            let again = check(&n.out(tcp(h, 2000 + p, SRV2, 80, SYN, b""), t(1)).unwrap()).src;
            assert_eq!(
                again, first,
                "inside host {h:?} always uses one public address"
            );
        }
    }
}

// ------------------------------------------------------------------ filtering

fn filtering_cfg(mode: Filtering) -> Config {
    Config {
        filtering_udp: mode,
        filtering_tcp: mode,
        ..cfg()
    }
}

#[test]
fn rfc4787_req8_address_and_port_dependent_filtering_is_default() {
    let mut n = Nat::new(cfg());
    let h = check(&n.out(udp(H1, 8000, SRV, 53, b"x"), t(1)).unwrap());
    // Same remote address, other port: dropped.
    assert_eq!(
        n.inb(udp(SRV, 54, PUB, h.sport, b"x"), t(2)).unwrap_err(),
        Verdict::Drop(DropReason::Filtered)
    );
    // Other remote: dropped.
    assert_eq!(
        n.inb(udp(SRV2, 53, PUB, h.sport, b"x"), t(2)).unwrap_err(),
        Verdict::Drop(DropReason::Filtered)
    );
    // The remote it sent to: allowed.
    assert!(n.inb(udp(SRV, 53, PUB, h.sport, b"x"), t(2)).is_ok());
    assert_eq!(n.stats().dropped(DropReason::Filtered), 2);
}

#[test]
fn rfc4787_req8_address_dependent_filtering() {
    let mut n = Nat::new(filtering_cfg(Filtering::AddressDependent));
    let h = check(&n.out(udp(H1, 8000, SRV, 53, b"x"), t(1)).unwrap());
    assert!(
        n.inb(udp(SRV, 9999, PUB, h.sport, b"x"), t(2)).is_ok(),
        "same address, other port"
    );
    assert_eq!(
        n.inb(udp(SRV2, 53, PUB, h.sport, b"x"), t(2)).unwrap_err(),
        Verdict::Drop(DropReason::Filtered)
    );
}

#[test]
fn rfc4787_req8_endpoint_independent_filtering() {
    let mut n = Nat::new(filtering_cfg(Filtering::EndpointIndependent));
    let h = check(&n.out(udp(H1, 8000, SRV, 53, b"x"), t(1)).unwrap());
    let b = check(&n.inb(udp(SRV2, 7777, PUB, h.sport, b"x"), t(2)).unwrap());
    assert_eq!((b.dst, b.dport), (H1, 8000));
    // The inbound-created session then works both ways.
    assert!(n.out(udp(H1, 8000, SRV2, 7777, b"x"), t(3)).is_ok());
    let s = n.w.engine().sessions(t(3));
    assert!(
        s.iter()
            .any(|s| s.inbound_created && s.remote.port() == 7777)
    );
}

#[test]
fn inbound_without_mapping_is_dropped_and_counted() {
    let mut n = Nat::new(cfg());
    assert_eq!(
        n.inb(udp(SRV, 53, PUB, 40000, b"x"), t(1)).unwrap_err(),
        Verdict::Drop(DropReason::NoMapping)
    );
    assert_eq!(
        n.inb(tcp(SRV, 80, PUB, 40000, SYN, b""), t(1)).unwrap_err(),
        Verdict::Drop(DropReason::NoMapping)
    );
    assert_eq!(n.stats().dropped(DropReason::NoMapping), 2);
}

#[test]
fn host_traffic_outside_rnat_ports_is_left_to_the_kernel() {
    let mut c = cfg();
    c.port_ranges = vec![PortRange::new(1024, 32767)];
    let mut n = Nat::new(c);
    // ssh to the gateway's public address, and the reply to the host's own ephemeral port.
    assert_eq!(
        n.inb(tcp(SRV, 50000, PUB, 22, SYN, b""), t(1)).unwrap_err(),
        Verdict::Kernel
    );
    assert_eq!(
        n.inb(tcp(SRV, 443, PUB, 45000, ACK, b""), t(1))
            .unwrap_err(),
        Verdict::Kernel
    );
    // ping to the gateway itself, ARP, IPv6, traffic to the inside address.
    assert_eq!(
        n.inb(echo_request(SRV, PUB, 1, 1), t(1)).unwrap_err(),
        Verdict::Kernel
    );
    assert_eq!(
        n.out(udp(H1, 5353, GW_IN, 53, b"x"), t(1)).unwrap_err(),
        Verdict::Kernel
    );
    let mut arp = udp(H1, 1, SRV, 1, b"");
    arp[12] = 0x08;
    arp[13] = 0x06;
    assert_eq!(n.out(arp, t(1)).unwrap_err(), Verdict::Kernel);
    // Traffic for somebody else's address on the outside.
    assert_eq!(
        n.inb(udp(SRV, 53, SRV2, 4000, b"x"), t(1)).unwrap_err(),
        Verdict::Kernel
    );
}

#[test]
fn spoofed_inside_source_is_dropped() {
    let mut n = Nat::new(cfg());
    assert_eq!(
        n.out(udp([10, 9, 9, 9], 1000, SRV, 53, b"x"), t(1))
            .unwrap_err(),
        Verdict::Drop(DropReason::Spoofed)
    );
    assert_eq!(n.stats().dropped(DropReason::Spoofed), 1);
}

// ------------------------------------------------------------------ timers

#[test]
fn rfc4787_req5_udp_mapping_times_out_after_300s_and_outbound_refreshes() {
    let mut n = Nat::new(cfg());
    let h = check(&n.out(udp(H1, 9000, SRV, 53, b"x"), t(0)).unwrap());
    assert!(n.inb(udp(SRV, 53, PUB, h.sport, b"x"), t(299)).is_ok());
    // REQ-6: outbound refreshes.
    assert!(n.out(udp(H1, 9000, SRV, 53, b"x"), t(299)).is_ok());
    assert!(n.inb(udp(SRV, 53, PUB, h.sport, b"x"), t(598)).is_ok());
    assert_eq!(n.w.engine().expire(t(598 + 299)), 0);
    assert_eq!(n.w.engine().expire(t(598 + 300)), 1);
    assert_eq!(
        n.inb(udp(SRV, 53, PUB, h.sport, b"x"), t(598 + 301))
            .unwrap_err(),
        Verdict::Drop(DropReason::NoMapping)
    );
}

#[test]
fn inbound_refresh_can_be_turned_off() {
    let mut n = Nat::new(Config {
        inbound_refresh: false,
        ..cfg()
    });
    let h = check(&n.out(udp(H1, 9000, SRV, 53, b"x"), t(0)).unwrap());
    assert!(n.inb(udp(SRV, 53, PUB, h.sport, b"x"), t(200)).is_ok());
    assert_eq!(
        n.inb(udp(SRV, 53, PUB, h.sport, b"x"), t(300)).unwrap_err(),
        Verdict::Drop(DropReason::Filtered)
    );
}

#[test]
fn expired_session_is_refused_inbound_before_the_sweep() {
    let mut n = Nat::new(cfg());
    let h = check(&n.out(udp(H1, 9000, SRV, 53, b"x"), t(0)).unwrap());
    assert!(n.inb(udp(SRV, 53, PUB, h.sport, b"x"), t(300)).is_err());
}

#[test]
fn rfc5508_req2_icmp_query_timer_60s() {
    let mut n = Nat::new(cfg());
    let h = check(&n.out(echo_request(H1, SRV, 42, 1), t(0)).unwrap());
    assert!(n.inb(echo_reply(SRV, PUB, h.sport, 1), t(59)).is_ok());
    assert_eq!(n.w.engine().expire(t(59 + 59)), 0);
    assert_eq!(n.w.engine().expire(t(59 + 60)), 1);
}

#[test]
fn configured_timeouts_are_used() {
    let mut c = cfg();
    c.timeouts = Timeouts {
        udp: std::time::Duration::from_secs(30),
        ..Timeouts::default()
    };
    assert_eq!(c.rfc_timer_violations().len(), 1);
    let mut n = Nat::new(c);
    n.out(udp(H1, 9000, SRV, 53, b"x"), t(0)).unwrap();
    assert_eq!(n.w.engine().expire(t(29)), 0);
    assert_eq!(n.w.engine().expire(t(30)), 1);
}

fn handshake(n: &mut Nat, sport: u16, at: u64) -> Hdr {
    let h = check(&n.out(tcp(H1, sport, SRV, 80, SYN, b""), t(at)).unwrap());
    n.inb(tcp(SRV, 80, PUB, h.sport, SYN | ACK, b""), t(at))
        .unwrap();
    n.out(tcp(H1, sport, SRV, 80, ACK, b""), t(at)).unwrap();
    h
}

fn tcp_state(n: &Nat, now: u64) -> &'static str {
    let s = n.w.engine().sessions(t(now));
    assert_eq!(s.len(), 1);
    s[0].state
}

#[test]
fn rfc5382_req5_established_tcp_lives_2h4m() {
    let mut n = Nat::new(cfg());
    handshake(&mut n, 10000, 0);
    assert_eq!(tcp_state(&n, 0), "ESTABLISHED");
    assert_eq!(n.w.engine().expire(t(7439)), 0);
    assert_eq!(n.w.engine().expire(t(7440)), 1);
}

#[test]
fn rfc5382_req5_opening_tcp_is_transitory() {
    let mut n = Nat::new(cfg());
    n.out(tcp(H1, 10000, SRV, 80, SYN, b""), t(0)).unwrap();
    assert_eq!(tcp_state(&n, 0), "SYN_SENT");
    assert_eq!(n.w.engine().expire(t(239)), 0);
    assert_eq!(n.w.engine().expire(t(240)), 1);
}

#[test]
fn tcp_fin_both_ways_becomes_transitory() {
    let mut n = Nat::new(cfg());
    let h = handshake(&mut n, 10000, 0);
    n.out(tcp(H1, 10000, SRV, 80, FIN | ACK, b""), t(10))
        .unwrap();
    assert_eq!(tcp_state(&n, 10), "FIN_OUT");
    n.inb(tcp(SRV, 80, PUB, h.sport, FIN | ACK, b""), t(10))
        .unwrap();
    assert_eq!(tcp_state(&n, 10), "CLOSING");
    assert_eq!(n.w.engine().expire(t(249)), 0);
    assert_eq!(n.w.engine().expire(t(250)), 1);
}

#[test]
fn rfc7857_session_kept_4_minutes_after_rst() {
    let mut n = Nat::new(cfg());
    let h = handshake(&mut n, 10000, 0);
    n.inb(tcp(SRV, 80, PUB, h.sport, RST, b""), t(100)).unwrap();
    assert_eq!(tcp_state(&n, 100), "RESET");
    // Still translated during the transitory time (the RST might not have been accepted); a
    // second RST does not push the end further (RFC 7857: RSTs do not refresh).
    assert!(n.out(tcp(H1, 10000, SRV, 80, RST, b""), t(200)).is_ok());
    assert_eq!(n.w.engine().expire(t(100 + 239)), 0);
    assert_eq!(n.w.engine().expire(t(100 + 240)), 1);
}

fn short_opening_cfg() -> Config {
    Config {
        timeouts: Timeouts {
            tcp_opening: std::time::Duration::from_secs(30),
            ..Timeouts::default()
        },
        ..cfg()
    }
}

/// Virtual time `s` seconds after a start far from zero (engine time in the gateway starts at
/// 30 days; a deadline is never moved before the clock's origin).
fn at(s: u64) -> Time {
    t(10_000 + s)
}

#[test]
fn rfc7857_outbound_rst_does_not_refresh() {
    // An opening session with 30 s to live: a RST 10 s in must not give it 4 minutes.
    let mut n = Nat::new(short_opening_cfg());
    n.out(tcp(H1, 10000, SRV, 80, SYN, b""), at(0)).unwrap();
    assert!(n.out(tcp(H1, 10000, SRV, 80, RST, b""), at(10)).is_ok());
    assert_eq!(n.w.engine().sessions(at(10))[0].state, "RESET");
    assert_eq!(n.w.engine().expire(at(29)), 0);
    assert_eq!(n.w.engine().expire(at(30)), 1);
    // An established session (2 h 4 min left) is cut to the transitory time after a RST, and
    // RSTs that follow do not extend that.
    let mut n = Nat::new(cfg());
    handshake(&mut n, 10000, 10_000);
    n.out(tcp(H1, 10000, SRV, 80, RST, b""), at(100)).unwrap();
    n.out(tcp(H1, 10000, SRV, 80, RST, b""), at(300)).unwrap();
    let s = n.w.engine().sessions(at(300));
    assert_eq!(s[0].expires_in, std::time::Duration::from_secs(40));
    assert_eq!(n.w.engine().expire(at(339)), 0);
    assert_eq!(n.w.engine().expire(at(340)), 1);
}

#[test]
fn rfc7857_inbound_rst_does_not_refresh() {
    let mut n = Nat::new(short_opening_cfg());
    let h = check(&n.out(tcp(H1, 10000, SRV, 80, SYN, b""), at(0)).unwrap());
    n.inb(tcp(SRV, 80, PUB, h.sport, RST, b""), at(10)).unwrap();
    assert_eq!(n.w.engine().sessions(at(10))[0].state, "RESET");
    assert_eq!(n.w.engine().expire(at(29)), 0);
    assert_eq!(n.w.engine().expire(at(30)), 1);
    // Traffic after the RST (it was not accepted) is a live connection again.
    let mut n = Nat::new(cfg());
    let h = handshake(&mut n, 10000, 10_000);
    n.inb(tcp(SRV, 80, PUB, h.sport, RST, b""), at(100))
        .unwrap();
    n.out(tcp(H1, 10000, SRV, 80, ACK, b"x"), at(200)).unwrap();
    assert_eq!(n.w.engine().sessions(at(200))[0].state, "ESTABLISHED");
    assert_eq!(n.w.engine().expire(at(200 + 7439)), 0);
}

#[test]
fn rfc5382_req2_simultaneous_open() {
    let mut n = Nat::new(cfg());
    let h = check(&n.out(tcp(H1, 10000, SRV, 80, SYN, b""), t(0)).unwrap());
    // The remote's own SYN (no ACK) crosses ours: it is accepted and the session is established.
    let b = check(&n.inb(tcp(SRV, 80, PUB, h.sport, SYN, b""), t(0)).unwrap());
    assert_eq!((b.dst, b.dport), (H1, 10000));
    assert_eq!(tcp_state(&n, 0), "ESTABLISHED");
}

// ------------------------------------------------------------------ router duties

#[test]
fn ttl_is_decremented_and_expiry_answered_with_time_exceeded() {
    let mut n = Nat::new(cfg());
    let mut f = udp(H1, 40000, SRV, 33434, b"trace");
    f[22] = 1; // TTL 1
    f[24] = 0;
    f[25] = 0;
    let c = rnat::wire::checksum::checksum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    let orig = f.clone();
    let Err(Verdict::Reply(len)) = n.out(f, t(1)) else {
        panic!("expected a reply")
    };
    let r = &n.scratch[..len];
    assert_eq!(&r[0..6], &MAC_HOST, "back to the sender's MAC");
    assert_eq!(&r[26..30], &GW_IN, "from the gateway's inside address");
    assert_eq!(&r[30..34], &H1);
    assert_eq!((r[34], r[35]), (11, 0));
    assert!(rnat::wire::checksum::verify(&r[34..], 0));
    assert!(rnat::wire::checksum::verify(&r[14..34], 0));
    assert_eq!(&r[42..], &orig[14..], "quotes the original datagram");
    assert_eq!(
        n.w.engine().session_count(),
        0,
        "no mapping for an expired packet"
    );
    assert_eq!(n.stats().icmp_generated, 1);
}

#[test]
fn rfc4787_req13_df_packet_too_big_gets_frag_needed() {
    let mut c = cfg();
    c.outside_mtu = 1400;
    let mut n = Nat::new(c);
    let mut f = udp(H1, 40000, SRV, 9, &[0u8; 1500]);
    f[20] = 0x40; // DF
    f[24] = 0;
    f[25] = 0;
    let cs = rnat::wire::checksum::checksum(&f[14..34]);
    f[24..26].copy_from_slice(&cs.to_be_bytes());
    let Err(Verdict::Reply(len)) = n.out(f, t(1)) else {
        panic!("expected frag-needed")
    };
    let r = &n.scratch[..len];
    assert_eq!((r[34], r[35]), (3, 4));
    assert_eq!(
        u16::from_be_bytes([r[40], r[41]]),
        1400,
        "carries the next-hop MTU"
    );
    assert!(len <= 14 + 576);
    // A GSO super-frame is segmented later, so it passes.
    let mut g = udp(H1, 40001, SRV, 9, &[0u8; 1500]);
    let meta = FrameMeta {
        csum_partial: false,
        gso: true,
    };
    assert_eq!(
        n.w.process(Outbound, &mut g, meta, t(1), &mut n.scratch),
        Verdict::Forward
    );
}

// ------------------------------------------------------------------ bad input and limits

#[test]
fn malformed_frames_are_counted_drops() {
    let mut n = Nat::new(cfg());
    let good = udp(H1, 40000, SRV, 53, b"data");
    let mut truncated = good.clone();
    truncated.truncate(30);
    assert_eq!(
        n.out(truncated, t(1)).unwrap_err(),
        Verdict::Drop(DropReason::Malformed)
    );
    let mut ihl = good.clone();
    ihl[14] = 0x44;
    assert_eq!(
        n.out(ihl, t(1)).unwrap_err(),
        Verdict::Drop(DropReason::Malformed)
    );
    let mut lying = good.clone();
    lying[16..18].copy_from_slice(&2000u16.to_be_bytes());
    assert_eq!(
        n.out(lying, t(1)).unwrap_err(),
        Verdict::Drop(DropReason::Malformed)
    );
    let mut bad_csum = good.clone();
    bad_csum[24] ^= 0xff;
    assert_eq!(
        n.out(bad_csum, t(1)).unwrap_err(),
        Verdict::Drop(DropReason::BadChecksum)
    );
    let mut tcp_off = tcp(H1, 1, SRV, 2, ACK, b"");
    tcp_off[46] = 0xf0; // data offset 60 > segment
    assert_eq!(
        n.out(tcp_off, t(1)).unwrap_err(),
        Verdict::Drop(DropReason::Malformed)
    );
    let s = n.stats();
    assert_eq!(s.dropped(DropReason::Malformed), 4);
    assert_eq!(s.dropped(DropReason::BadChecksum), 1);
    assert!(n.out(good, t(1)).is_ok(), "good traffic still flows");
}

#[test]
fn table_full_refuses_new_flows_but_keeps_existing() {
    let mut c = cfg();
    c.max_sessions = 8;
    c.shards = 1;
    let mut n = Nat::new(c);
    // Eight hosts, one flow each: the table holds exactly max_sessions.
    for h in 0..8u8 {
        assert!(
            n.out(udp([192, 168, 1, 10 + h], 1000, SRV, 53, b"x"), t(1))
                .is_ok()
        );
    }
    for h in 0..5u8 {
        let v = n
            .out(udp([192, 168, 1, 30 + h], 1000, SRV, 53, b"x"), t(1))
            .unwrap_err();
        assert!(
            matches!(v, Verdict::Reply(_)),
            "refused with ICMP code 13: {v:?}"
        );
    }
    assert_eq!(n.stats().dropped(DropReason::TableFull), 5);
    assert_eq!(n.w.engine().session_count(), 8);
    assert!(
        n.out(udp([192, 168, 1, 10], 1000, SRV, 53, b"x"), t(1))
            .is_ok(),
        "existing flows continue"
    );
}

#[test]
fn one_host_gets_at_most_half_the_table_by_default() {
    let mut c = cfg();
    c.max_sessions = 8;
    c.shards = 1;
    let mut n = Nat::new(c);
    let ok = (0..20u16)
        .filter(|i| n.out(udp(H1, 1000 + i, SRV, 53, b"x"), t(1)).is_ok())
        .count();
    assert_eq!(ok, 4, "fair share: half of max_sessions");
    assert_eq!(n.stats().dropped(DropReason::Quota), 16);
    assert!(
        n.out(udp(H2, 1000, SRV, 53, b"x"), t(1)).is_ok(),
        "another host is still served"
    );
}

#[test]
fn flush_by_address_and_all() {
    let mut n = Nat::new(cfg());
    n.out(udp(H1, 1, SRV, 53, b"x"), t(1)).unwrap();
    n.out(udp(H2, 1, SRV, 53, b"x"), t(1)).unwrap();
    assert_eq!(n.w.engine().flush(Some(Ipv4Addr::from(H1)), t(2)), 1);
    assert_eq!(n.w.engine().session_count(), 1);
    assert_eq!(n.w.engine().flush(None, t(2)), 1);
    assert_eq!(n.w.engine().mapping_count(), 0);
}

#[test]
fn sessions_report_what_the_table_holds() {
    let mut n = Nat::new(cfg());
    n.out(udp(H1, 40000, SRV, 53, b"hello"), t(1)).unwrap();
    let s = n.w.engine().sessions(t(4));
    assert_eq!(s.len(), 1);
    let s = &s[0];
    assert_eq!(s.proto, Proto::Udp);
    assert_eq!(s.inside.to_string(), "192.168.1.2:40000");
    assert_eq!(s.public.to_string(), "203.0.113.1:40000");
    assert_eq!(s.remote.to_string(), "198.51.100.20:53");
    assert_eq!(s.idle.as_secs(), 3);
    assert_eq!(s.expires_in.as_secs(), 297);
    assert_eq!((s.pkts_out, s.pkts_in), (1, 0));
}

#[test]
fn workers_share_one_table_concurrently() {
    let engine = Engine::new(Config {
        max_sessions: 100_000,
        ..cfg()
    })
    .unwrap();
    let threads: Vec<_> = (0..4u8)
        .map(|k| {
            let w = engine.worker();
            std::thread::spawn(move || {
                let mut scratch = vec![0u8; 2048];
                let mut got = Vec::new();
                for i in 0..2000u16 {
                    let mut f = udp([192, 168, 1, 10 + k], 10000 + i, SRV, 53, b"x");
                    assert_eq!(
                        w.process(Outbound, &mut f, FrameMeta::default(), t(1), &mut scratch),
                        Verdict::Forward
                    );
                    got.push(check(&f).sport);
                }
                got
            })
        })
        .collect();
    let mut all: Vec<u16> = threads
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), n, "every mapping has its own public port");
    assert_eq!(engine.session_count(), 8000);
    // Return traffic is found whichever worker receives it.
    let w = engine.worker();
    let mut scratch = vec![0u8; 2048];
    let s = engine.sessions(t(1));
    for s in s.iter().take(500) {
        let mut f = udp(SRV, 53, PUB, s.public.port(), b"r");
        assert_eq!(
            w.process(Inbound, &mut f, FrameMeta::default(), t(2), &mut scratch),
            Verdict::Forward
        );
        assert_eq!(check(&f).dport, s.inside.port());
    }
}

#[test]
fn engine_rejects_bad_config() {
    assert!(
        Engine::new(Config {
            public_addrs: vec![],
            ..cfg()
        })
        .is_err()
    );
    assert!(
        Engine::new(Config {
            port_ranges: vec![PortRange::new(10, 20), PortRange::new(15, 30)],
            ..cfg()
        })
        .is_err()
    );
}

#[test]
fn rfc5508_req8_out_of_ports_answered_with_code_13_rate_limited() {
    let mut c = cfg();
    c.port_ranges = vec![PortRange::new(40000, 40000)];
    let mut n = Nat::new(c);
    let orig = udp(H1, 40000, SRV, 53, b"x");
    assert!(n.out(orig, t(1)).is_ok());
    let mut replies = 0;
    for i in 0..250u16 {
        let f = udp(H2, 1000 + i, SRV, 53, b"new flow");
        match n.out(f.clone(), t(1)).unwrap_err() {
            Verdict::Reply(len) => {
                replies += 1;
                let r = n.scratch[..len].to_vec();
                assert_eq!(&r[26..30], &GW_IN, "from the gateway's inside address");
                assert_eq!(&r[30..34], &H2);
                assert_eq!((r[34], r[35]), (3, 13));
                assert_eq!(&r[42..], &f[14..], "quotes the refused packet");
                assert!(rnat::wire::checksum::verify(&r[34..], 0));
            }
            Verdict::Drop(DropReason::NoPorts) => {}
            v => panic!("{v:?}"),
        }
    }
    assert_eq!(replies, 100, "rate-limited to 100 a second");
    assert_eq!(n.stats().dropped(DropReason::NoPorts), 250);
    // The next second has a fresh budget; the existing flow was never affected.
    assert!(matches!(
        n.out(udp(H2, 7, SRV, 53, b"x"), t(2)),
        Err(Verdict::Reply(_))
    ));
    assert!(n.out(udp(H1, 40000, SRV, 53, b"x"), t(2)).is_ok());
}
