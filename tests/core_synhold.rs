//! RFC 5382 REQ-4: unsolicited inbound SYNs are held, not answered, for at least 6 s; an outbound
//! SYN for the same connection cancels them silently; otherwise they are answered with ICMP
//! port-unreachable (or forgotten with the `drop` policy of REQ-4a). Byte-level frames through the
//! engine, virtual clock.

mod frames;

use frames::*;
use rnat::nat::Direction::{Inbound, Outbound};
use rnat::nat::{
    Config, DropReason, Engine, Filtering, FrameMeta, Prefix, Time, UnsolicitedSyn, Verdict, Worker,
};
use std::net::Ipv4Addr;
use std::time::Duration;

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

fn ms(v: u64) -> Time {
    Time::from_millis(v)
}

struct Nat {
    w: Worker,
    scratch: Vec<u8>,
}

impl Nat {
    fn new(c: Config) -> Nat {
        Nat {
            w: Engine::new(c).unwrap().worker(),
            scratch: vec![0; 2048],
        }
    }
    fn run(&mut self, dir: rnat::nat::Direction, mut f: Vec<u8>, now: Time) -> (Verdict, Vec<u8>) {
        let v = self
            .w
            .process(dir, &mut f, FrameMeta::default(), now, &mut self.scratch);
        (v, f)
    }
    /// What the gateway loop would send out of the outside interface at `now`.
    fn released(&mut self, now: Time) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut scratch = vec![0u8; 2048];
        let n = self
            .w
            .take_unanswered_syns(now, &mut scratch, 64, |f| out.push(f.to_vec()));
        assert_eq!(n, out.len());
        out
    }
    fn stats(&self) -> rnat::nat::Stats {
        self.w.engine().stats()
    }
}

/// The remote's SYN to the public address, with 4 bytes of IP options (NOP NOP NOP EOL) so that
/// the quoted header's options are checked too.
fn remote_syn(sport: u16, dport: u16) -> Vec<u8> {
    let f = tcp(SRV, sport, PUB, dport, SYN, b"");
    let mut g = f[..34].to_vec();
    g.extend_from_slice(&[1, 1, 1, 0]);
    g.extend_from_slice(&f[34..]);
    g[14] = 0x46;
    let total = u16::from_be_bytes([g[16], g[17]]) + 4;
    g[16..18].copy_from_slice(&total.to_be_bytes());
    g[24] = 0;
    g[25] = 0;
    let c = rnat::wire::checksum::checksum(&g[14..38]);
    g[24..26].copy_from_slice(&c.to_be_bytes());
    check(&g);
    g
}

#[test]
fn rfc5382_req4_no_answer_before_6s() {
    let mut n = Nat::new(cfg());
    let syn = remote_syn(40000, 50000);
    let (v, _) = n.run(Inbound, syn.clone(), ms(1000));
    assert_eq!(
        v,
        Verdict::Drop(DropReason::NoMapping),
        "never a reply at once"
    );
    assert_eq!(n.stats().syn_held, 1);
    assert_eq!(n.w.engine().held_syns(), 1);
    // The remote retransmits (1 s, 3 s later): still held once, with the first deadline.
    for at in [2000, 4000] {
        let (v, _) = n.run(Inbound, syn.clone(), ms(at));
        assert_eq!(v, Verdict::Drop(DropReason::NoMapping));
    }
    assert_eq!(n.stats().syn_held, 1);
    for at in [1000, 3000, 6000, 6999] {
        assert!(
            n.released(ms(at)).is_empty(),
            "nothing before 6 s (at {at} ms)"
        );
    }
    assert_eq!(n.stats().icmp_generated, 0);
    assert_eq!(n.released(ms(7000)).len(), 1, "due 6 s after the first SYN");
}

#[test]
fn rfc5382_req4_port_unreachable_after_6s() {
    let mut n = Nat::new(cfg());
    let syn = remote_syn(40000, 50000);
    n.run(Inbound, syn.clone(), ms(500));
    let out = n.released(ms(6500));
    assert_eq!(out.len(), 1);
    let r = &out[0];
    // Ethernet: back to the MAC the SYN came from, from the MAC it was sent to.
    assert_eq!(&r[0..6], &syn[6..12]);
    assert_eq!(&r[6..12], &syn[0..6]);
    assert_eq!(&r[12..14], &[0x08, 0x00]);
    // Outer IPv4: from the public address to the remote, ICMP, correct checksums.
    let h = check(r);
    assert_eq!((h.src, h.dst), (PUB, SRV));
    assert_eq!(r[14], 0x45);
    assert_eq!(r[23], 1, "ICMP");
    assert_eq!(u16::from_be_bytes([r[16], r[17]]) as usize, r.len() - 14);
    assert!(rnat::wire::checksum::verify(&r[14..34], 0));
    // ICMP destination unreachable, port unreachable, checksum over the whole message.
    assert_eq!((r[34], r[35]), (3, 3));
    assert_eq!(&r[38..42], &[0, 0, 0, 0], "unused");
    assert!(rnat::wire::checksum::verify(&r[34..], 0));
    // The quote: the original IP header with its options, unchanged (valid checksum), then the
    // TCP header (at least the 8 bytes RFC 792 asks for: ports and sequence number).
    let q = &r[42..];
    assert_eq!(
        q,
        &syn[14..],
        "the whole SYN is quoted, header options included"
    );
    let qh = check_quoted_header(q);
    assert_eq!(qh.options.as_slice(), &[1, 1, 1, 0]);
    assert_eq!((qh.source, qh.destination), (SRV, PUB));
    assert_eq!(&q[24..26], &40000u16.to_be_bytes());
    assert_eq!(&q[26..28], &50000u16.to_be_bytes());
    let s = n.stats();
    assert_eq!((s.syn_held, s.syn_rejected, s.icmp_generated), (1, 1, 1));
    assert_eq!(n.w.engine().held_syns(), 0);
    assert!(n.released(ms(20_000)).is_empty(), "answered once");
}

#[test]
fn rfc5382_req4_outbound_syn_cancels_held_syn() {
    let mut n = Nat::new(cfg());
    // The remote's SYN arrives first (simultaneous open): no mapping yet.
    let syn = tcp(SRV, 80, PUB, 10000, SYN, b"");
    assert_eq!(
        n.run(Inbound, syn.clone(), ms(0)).0,
        Verdict::Drop(DropReason::NoMapping)
    );
    // The inside host's SYN to that remote, from the port the remote aimed at (preserved).
    let (v, f) = n.run(Outbound, tcp(H1, 10000, SRV, 80, SYN, b""), ms(2000));
    assert_eq!(v, Verdict::Forward);
    let h = check(&f);
    assert_eq!((h.src, h.sport), (PUB, 10000));
    assert_eq!(n.stats().syn_cancelled, 1);
    assert_eq!(n.w.engine().held_syns(), 0);
    // Never an error about it.
    assert!(n.released(ms(60_000)).is_empty());
    assert_eq!(n.stats().icmp_generated, 0);
    // Simultaneous open proceeds (RFC 5382 REQ-2): the remote's retransmitted SYN gets in.
    let (v, b) = n.run(Inbound, syn, ms(3000));
    assert_eq!(v, Verdict::Forward);
    let b = check(&b);
    assert_eq!((b.dst, b.dport), (H1, 10000));
    let s = n.w.engine().sessions(ms(3000));
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].state, "ESTABLISHED");
}

#[test]
fn rfc5382_req4_filtered_syn_to_existing_mapping_is_held_too() {
    for mode in [
        Filtering::AddressAndPortDependent,
        Filtering::AddressDependent,
    ] {
        let mut n = Nat::new(Config {
            filtering_tcp: mode,
            ..cfg()
        });
        // A mapping for H1:10000 (public 10000) talking to SRV2:443.
        n.run(Outbound, tcp(H1, 10000, SRV2, 443, SYN, b""), ms(0));
        // SRV:80 is refused by either filter.
        let (v, _) = n.run(Inbound, tcp(SRV, 80, PUB, 10000, SYN, b""), ms(100));
        assert_eq!(v, Verdict::Drop(DropReason::Filtered), "{mode:?}");
        assert_eq!(n.stats().syn_held, 1, "{mode:?}");
        let out = n.released(ms(6100));
        assert_eq!(out.len(), 1, "{mode:?}");
        assert_eq!((out[0][34], out[0][35]), (3, 3));
        // A later outbound SYN for a held one on the existing mapping cancels it.
        n.run(Inbound, tcp(SRV, 81, PUB, 10000, SYN, b""), ms(7000));
        n.run(Outbound, tcp(H1, 10000, SRV, 81, SYN, b""), ms(8000));
        assert_eq!(n.stats().syn_cancelled, 1, "{mode:?}");
        assert!(n.released(ms(20_000)).is_empty(), "{mode:?}");
    }
}

#[test]
fn rfc5382_req4_only_pure_syns_are_held() {
    let mut n = Nat::new(cfg());
    for flags in [SYN | ACK, ACK, RST, FIN] {
        let (v, _) = n.run(Inbound, tcp(SRV, 80, PUB, 10000, flags, b""), ms(0));
        assert_eq!(v, Verdict::Drop(DropReason::NoMapping));
    }
    n.run(Inbound, udp(SRV, 53, PUB, 10000, b"x"), ms(0));
    assert_eq!(n.stats().syn_held, 0);
    assert!(n.released(ms(10_000)).is_empty());
}

#[test]
fn rfc5382_req4_drop_policy_sends_nothing() {
    let mut n = Nat::new(Config {
        unsolicited_syn: UnsolicitedSyn::Drop,
        ..cfg()
    });
    n.run(Inbound, tcp(SRV, 80, PUB, 20000, SYN, b""), ms(0));
    assert_eq!(
        n.stats().syn_held,
        1,
        "held and forgotten, not refused at once"
    );
    assert!(n.released(ms(10_000)).is_empty());
    let s = n.stats();
    assert_eq!(
        (s.syn_rejected, s.syn_forgotten, s.icmp_generated),
        (0, 1, 0)
    );
    assert_eq!(n.w.engine().held_syns(), 0);
    // Live: back to reject without a restart.
    let mut c = n.w.engine().current_config();
    c.unsolicited_syn = UnsolicitedSyn::Reject;
    let r = n.w.engine().reconfigure(&c, ms(10_000)).unwrap();
    assert!(r.applied.contains(&"unsolicited-syn"), "{r:?}");
    n.run(Inbound, tcp(SRV, 80, PUB, 20000, SYN, b""), ms(11_000));
    assert_eq!(n.released(ms(17_000)).len(), 1);
}

#[test]
fn rfc5382_req4_hold_time_is_configurable_but_not_below_6s() {
    assert!(
        Engine::new(Config {
            syn_hold: Duration::from_secs(5),
            ..cfg()
        })
        .is_err()
    );
    let mut n = Nat::new(Config {
        syn_hold: Duration::from_secs(10),
        ..cfg()
    });
    n.run(Inbound, tcp(SRV, 80, PUB, 20000, SYN, b""), ms(0));
    assert!(n.released(ms(9_999)).is_empty());
    assert_eq!(n.released(ms(10_000)).len(), 1);
}

#[test]
fn rfc5382_req4_store_full_is_counted_and_bounded() {
    let mut n = Nat::new(Config {
        syn_hold_capacity: 32,
        ..cfg()
    });
    for i in 0..100u16 {
        let (v, _) = n.run(Inbound, tcp(SRV, 1000 + i, PUB, 30000, SYN, b""), ms(0));
        assert_eq!(v, Verdict::Drop(DropReason::NoMapping));
    }
    assert_eq!(n.w.engine().held_syns(), 32);
    let s = n.stats();
    assert_eq!((s.syn_held, s.syn_hold_full), (32, 68));
    // The held ones are answered, at most `max` per call, and the store empties.
    let mut scratch = vec![0u8; 2048];
    let mut got = 0;
    n.w.take_unanswered_syns(ms(6000), &mut scratch, 10, |_| got += 1);
    assert_eq!(got, 10);
    assert_eq!(n.released(ms(6000)).len(), 22);
    assert_eq!(n.w.engine().held_syns(), 0);
    // Room again.
    n.run(Inbound, tcp(SRV, 999, PUB, 30000, SYN, b""), ms(7000));
    assert_eq!(n.w.engine().held_syns(), 1);
}

#[test]
fn rfc5382_req4_port_unreachables_are_rate_limited() {
    let mut n = Nat::new(Config {
        syn_hold_capacity: 1024,
        ..cfg()
    });
    for i in 0..300u16 {
        n.run(Inbound, tcp(SRV, 1000 + i, PUB, 30000, SYN, b""), ms(0));
    }
    let mut sent = 0;
    let mut scratch = vec![0u8; 2048];
    // All due in the same second: at most 100 errors (RFC 1812 rate limiting), the rest forgotten.
    while n
        .w
        .take_unanswered_syns(ms(6000), &mut scratch, 64, |_| sent += 1)
        > 0
        || n.w.engine().held_syns() > 0
    {}
    assert_eq!(sent, 100);
    let s = n.stats();
    assert_eq!((s.syn_rejected, s.syn_forgotten), (100, 200));
}

#[test]
fn rfc5382_req4_held_syn_on_one_worker_cancelled_on_another() {
    let engine = Engine::new(cfg()).unwrap();
    let (a, b) = (engine.worker(), engine.worker());
    let mut scratch = vec![0u8; 2048];
    let mut f = tcp(SRV, 80, PUB, 10000, SYN, b"");
    a.process(Inbound, &mut f, FrameMeta::default(), ms(0), &mut scratch);
    let mut f = tcp(H1, 10000, SRV, 80, SYN, b"");
    assert_eq!(
        b.process(Outbound, &mut f, FrameMeta::default(), ms(10), &mut scratch),
        Verdict::Forward
    );
    assert_eq!(engine.held_syns(), 0);
    let mut n = 0;
    a.take_unanswered_syns(ms(10_000), &mut scratch, 64, |_| n += 1);
    b.take_unanswered_syns(ms(10_000), &mut scratch, 64, |_| n += 1);
    assert_eq!(n, 0);
    assert_eq!(engine.stats().syn_cancelled, 1);
}

#[test]
fn rfc5382_req4_connection_opened_meanwhile_gets_no_error() {
    // An inbound SYN held, then a session for that connection appears some other way (here the
    // remote's SYN is let in by endpoint-independent filtering after the inside host opened a
    // mapping to someone else): no error for the held SYN.
    let mut n = Nat::new(Config {
        filtering_tcp: Filtering::AddressAndPortDependent,
        ..cfg()
    });
    n.run(Inbound, tcp(SRV, 80, PUB, 10000, SYN, b""), ms(0));
    let mut c = n.w.engine().current_config();
    c.filtering_tcp = Filtering::EndpointIndependent;
    n.w.engine().reconfigure(&c, ms(1)).unwrap();
    n.run(Outbound, tcp(H1, 10000, SRV2, 443, SYN, b""), ms(100));
    let (v, _) = n.run(Inbound, tcp(SRV, 80, PUB, 10000, SYN, b""), ms(1000));
    assert_eq!(v, Verdict::Forward);
    assert!(n.released(ms(10_000)).is_empty());
    assert_eq!(n.stats().syn_cancelled, 1);
}
