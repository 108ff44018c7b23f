//! Fragments through the NAT core (RFC 4787 REQ-14/14a): datagrams fragmented here, fed in order,
//! reversed and shuffled, in both directions; what comes out (forwarded at once or released later
//! by `Worker::take_released`) is reassembled and checked independently (etherparse recomputes
//! the IPv4 and UDP checksums over the whole datagram).

mod frames;

use frames::*;
use rnat::nat::Direction::{self, Inbound, Outbound};
use rnat::nat::{Config, DropReason, Engine, FrameMeta, Prefix, Time, Verdict, Worker};
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

fn t(ms: u64) -> Time {
    Time::from_millis(ms)
}

/// A UDP datagram of `len` payload bytes with DF clear and identification `id`.
fn big_udp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, len: usize, id: u16) -> Vec<u8> {
    let payload: Vec<u8> = (0..len).map(|i| (i * 7 + id as usize) as u8).collect();
    let mut f = udp(src, sport, dst, dport, &payload);
    f[18..20].copy_from_slice(&id.to_be_bytes());
    f[20..22].copy_from_slice(&[0, 0]);
    fix_ip_checksum(&mut f);
    f
}

fn fix_ip_checksum(f: &mut [u8]) {
    f[24..26].copy_from_slice(&[0, 0]);
    let c = rnat::wire::checksum::checksum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
}

/// The frame split into IPv4 fragments of at most `mtu` bytes, in order.
fn fragments(f: &[u8], mtu: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    rnat::wire::frag::fragment(f, 14, mtu, &mut Vec::new(), |fr| out.push(fr.to_vec())).unwrap();
    out
}

/// Reassembles IPv4 fragments (any order) into one Ethernet frame; panics when incomplete or when
/// the fragments disagree on the header fields that identify the datagram.
fn reassemble(frags: &[Vec<u8>]) -> Vec<u8> {
    assert!(!frags.is_empty());
    let mut parts: Vec<(usize, bool, &[u8])> = Vec::new();
    let mut first: Option<&Vec<u8>> = None;
    for fr in frags {
        // Every fragment's own header checksum is right.
        let (h, _) = etherparse::Ipv4Header::from_slice(&fr[14..]).unwrap();
        assert_eq!(
            h.header_checksum,
            h.calc_header_checksum(),
            "fragment header checksum"
        );
        let (h0, _) = etherparse::Ipv4Header::from_slice(&frags[0][14..]).unwrap();
        assert_eq!(
            (h.source, h.destination, h.identification, h.protocol),
            (h0.source, h0.destination, h0.identification, h0.protocol),
            "fragments of one datagram"
        );
        let off = h.fragment_offset.value() as usize * 8;
        let ihl = h.header_len();
        let total = h.total_len as usize;
        parts.push((off, h.more_fragments, &fr[14 + ihl..14 + total]));
        if off == 0 {
            first = Some(fr);
        }
    }
    parts.sort_by_key(|p| p.0);
    let mut payload = Vec::new();
    for (off, _, data) in &parts {
        assert_eq!(*off, payload.len(), "no gap or overlap");
        payload.extend_from_slice(data);
    }
    assert!(!parts.last().unwrap().1, "last fragment has MF clear");
    let first = first.expect("first fragment");
    let ihl = ((first[14] & 15) as usize) * 4;
    let mut out = first[..14 + ihl].to_vec();
    out.extend_from_slice(&payload);
    let total = (ihl + payload.len()) as u16;
    out[16..18].copy_from_slice(&total.to_be_bytes());
    out[20..22].copy_from_slice(&[0, 0]);
    fix_ip_checksum(&mut out);
    out
}

struct Nat {
    w: Worker,
    scratch: Vec<u8>,
}

impl Nat {
    fn new() -> Nat {
        Nat {
            w: Engine::new(cfg()).unwrap().worker(),
            scratch: vec![0; 2048],
        }
    }

    /// Feeds `frames` in the given order; returns what left the worker (forwarded at once, or
    /// released after a frame), with every verdict.
    fn feed(
        &mut self,
        dir: Direction,
        frames: &[Vec<u8>],
        now: Time,
    ) -> (Vec<Vec<u8>>, Vec<Verdict>) {
        let (mut out, mut verdicts) = (Vec::new(), Vec::new());
        for f in frames {
            let mut f = f.clone();
            let v = self
                .w
                .process(dir, &mut f, FrameMeta::default(), now, &mut self.scratch);
            if v == Verdict::Forward {
                out.push(f);
            }
            verdicts.push(v);
            self.w.take_released(|d, fr| {
                assert_eq!(d, dir, "released in the datagram's direction");
                out.push(fr.to_vec());
            });
        }
        (out, verdicts)
    }

    fn one(&mut self, dir: Direction, f: Vec<u8>, now: Time) -> Vec<u8> {
        let (out, v) = self.feed(dir, &[f], now);
        assert_eq!(v, [Verdict::Forward]);
        out.into_iter().next().unwrap()
    }

    fn stats(&self) -> rnat::nat::Stats {
        self.w.engine().stats()
    }
}

/// The payload of a UDP frame.
fn udp_payload(f: &[u8]) -> &[u8] {
    let ihl = ((f[14] & 15) as usize) * 4;
    &f[14 + ihl + 8..]
}

fn shuffled(mut v: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    // A fixed permutation that puts the first fragment neither first nor last.
    assert!(v.len() >= 3);
    let first = v.remove(0);
    v.reverse();
    v.insert(1, first);
    v
}

/// Outbound datagram through the NAT in `order`; returns the reassembled translation.
fn outbound_case(order: impl Fn(Vec<Vec<u8>>) -> Vec<Vec<u8>>) -> (Nat, Vec<u8>, Vec<Verdict>) {
    let mut n = Nat::new();
    let orig = big_udp(H1, 40000, SRV, 5000, 3000, 0x1234);
    let (out, v) = n.feed(Outbound, &order(fragments(&orig, 1280)), t(1000));
    assert_eq!(out.len(), 3, "{v:?}");
    let re = reassemble(&out);
    let h = check(&re);
    assert_eq!((h.src, h.sport, h.dst, h.dport), (PUB, 40000, SRV, 5000));
    assert_eq!(h.ttl, 63);
    assert_eq!(udp_payload(&re), udp_payload(&orig));
    (n, re, v)
}

#[test]
fn rfc4787_req14_in_order_fragments_outbound() {
    let (n, _, v) = outbound_case(|v| v);
    assert_eq!(v, [Verdict::Forward; 3]);
    assert_eq!(n.stats().pkts_out, 3);
    assert_eq!(n.stats().frags_held, 0);
}

#[test]
fn rfc4787_req14_out_of_order_fragments_outbound() {
    let (n, _, v) = outbound_case(|mut v| {
        v.reverse();
        v
    });
    assert_eq!(v, [Verdict::Held, Verdict::Held, Verdict::Forward]);
    let s = n.stats();
    assert_eq!((s.frags_held, s.frags_released, s.pkts_out), (2, 2, 3));
}

#[test]
fn rfc4787_req14_shuffled_fragments_outbound() {
    let (_, _, v) = outbound_case(shuffled);
    assert_eq!(v, [Verdict::Held, Verdict::Forward, Verdict::Forward]);
}

/// Opens a mapping for H1:40000 with a small datagram; returns the public port.
fn open_mapping(n: &mut Nat) -> u16 {
    let f = n.one(Outbound, udp(H1, 40000, SRV, 5000, b"hello"), t(500));
    check(&f).sport
}

fn inbound_case(order: impl Fn(Vec<Vec<u8>>) -> Vec<Vec<u8>>) -> Vec<Verdict> {
    let mut n = Nat::new();
    let port = open_mapping(&mut n);
    let orig = big_udp(SRV, 5000, PUB, port, 3000, 0x4321);
    let (out, v) = n.feed(Inbound, &order(fragments(&orig, 1000)), t(1000));
    assert_eq!(out.len(), 4, "{v:?}");
    let re = reassemble(&out);
    let h = check(&re);
    assert_eq!((h.src, h.sport, h.dst, h.dport), (SRV, 5000, H1, 40000));
    assert_eq!(udp_payload(&re), udp_payload(&orig));
    assert_eq!(n.stats().pkts_in, 4);
    v
}

#[test]
fn rfc4787_req14_in_order_fragments_inbound() {
    assert_eq!(inbound_case(|v| v), [Verdict::Forward; 4]);
}

#[test]
fn rfc4787_req14_out_of_order_fragments_inbound() {
    let v = inbound_case(|mut v| {
        v.reverse();
        v
    });
    assert_eq!(
        v,
        [
            Verdict::Held,
            Verdict::Held,
            Verdict::Held,
            Verdict::Forward
        ]
    );
    let v = inbound_case(shuffled);
    assert_eq!(v[..2], [Verdict::Held, Verdict::Forward]);
}

#[test]
fn rfc4787_req14_interleaved_datagrams_both_directions() {
    let mut n = Nat::new();
    let port = open_mapping(&mut n);
    let a = fragments(&big_udp(H1, 40000, SRV, 5000, 2500, 7), 1000);
    let b = fragments(&big_udp(H1, 40000, SRV, 5000, 2500, 8), 1000);
    let c = fragments(&big_udp(SRV, 5000, PUB, port, 2500, 7), 1000);
    // Non-first fragments of all three first, then the first fragments.
    let mut outs: [Vec<Vec<u8>>; 3] = Default::default();
    for (i, d) in [&a, &b, &c].into_iter().enumerate() {
        let dir = if i == 2 { Inbound } else { Outbound };
        let (o, v) = n.feed(dir, &d[1..], t(1000));
        assert!(v.iter().all(|v| *v == Verdict::Held), "{v:?}");
        outs[i].extend(o);
    }
    for (i, d) in [&a, &b, &c].into_iter().enumerate() {
        let dir = if i == 2 { Inbound } else { Outbound };
        let (o, _) = n.feed(dir, &d[..1], t(1100));
        outs[i].extend(o);
    }
    for (i, o) in outs.iter().enumerate() {
        assert_eq!(o.len(), 3);
        let h = check(&reassemble(o));
        if i == 2 {
            assert_eq!((h.dst, h.dport), (H1, 40000));
        } else {
            assert_eq!((h.src, h.sport), (PUB, port));
        }
    }
}

#[test]
fn rfc4787_req14_fragments_for_the_host_itself_stay_kernel() {
    let mut n = Nat::new();
    // Port 22 is outside rnat's ranges: the gateway's own service, in any fragment order.
    let frs = fragments(&big_udp(SRV, 5000, PUB, 22, 3000, 9), 1280);
    let (out, v) = n.feed(Inbound, &frs, t(1000));
    assert!(out.is_empty());
    assert_eq!(v, [Verdict::Kernel; 3]);
    let frs = fragments(&big_udp(SRV, 5000, PUB, 22, 3000, 10), 1280);
    let (out, v) = n.feed(Inbound, &shuffled(frs), t(1000));
    assert!(out.is_empty());
    assert_eq!(v, [Verdict::Held, Verdict::Kernel, Verdict::Kernel]);
    // To another address of the host: the kernel's, before any tracking.
    let frs = fragments(&big_udp(H1, 5000, GW_IN, 53, 3000, 11), 1280);
    let (_, v) = n.feed(Outbound, &frs, t(1000));
    assert_eq!(v, [Verdict::Kernel; 3]);
    assert_eq!(n.stats().frags_released, 0);
}

#[test]
fn rfc4787_req14_unmapped_inbound_fragments_are_dropped() {
    let mut n = Nat::new();
    let frs = fragments(&big_udp(SRV, 5000, PUB, 30000, 3000, 12), 1280);
    let (out, v) = n.feed(Inbound, &shuffled(frs), t(1000));
    assert!(out.is_empty());
    let nm = Verdict::Drop(DropReason::NoMapping);
    assert_eq!(v, [Verdict::Held, nm, nm]);
    assert_eq!(n.stats().dropped(DropReason::NoMapping), 3);
}

#[test]
fn rfc4787_req14_held_fragment_times_out() {
    let mut n = Nat::new();
    let frs = fragments(&big_udp(H1, 40000, SRV, 5000, 3000, 13), 1280);
    let (_, v) = n.feed(Outbound, &frs[1..], t(1000));
    assert_eq!(v, [Verdict::Held; 2]);
    // The first fragment 10 s later: translated, but the held ones are gone.
    let (out, v) = n.feed(Outbound, &frs[..1], t(11_000));
    assert_eq!(v, [Verdict::Forward]);
    assert_eq!(out.len(), 1);
    let s = n.stats();
    assert_eq!(s.dropped(DropReason::FragmentTimeout), 2);
    assert_eq!(s.frags_released, 0);
}

#[test]
fn rfc4787_req14_atomic_fragment_is_a_normal_packet() {
    let mut n = Nat::new();
    // Offset 0, MF clear, DF clear, an identification: not a fragment at all.
    let f = big_udp(H1, 40000, SRV, 5000, 100, 77);
    let h = check(&n.one(Outbound, f, t(1000)));
    assert_eq!((h.src, h.sport), (PUB, 40000));
    assert_eq!(n.stats().frags_held, 0);
}

#[test]
fn rfc4787_req14_tiny_tcp_first_fragment_is_dropped() {
    let mut n = Nat::new();
    let mut f = tcp(H1, 40000, SRV, 80, SYN, &[0u8; 100]);
    f[20..22].copy_from_slice(&[0, 0]);
    fix_ip_checksum(&mut f);
    // First fragment with 16 bytes of TCP header (RFC 1858).
    let frs = fragments(&f, 20 + 16);
    let (out, v) = n.feed(Outbound, &frs[..1], t(1000));
    assert!(out.is_empty());
    assert_eq!(v, [Verdict::Drop(DropReason::Malformed)]);
}

#[test]
fn rfc4787_req14a_fragment_flood_is_bounded() {
    let mut n = Nat::new();
    let port = open_mapping(&mut n);
    // One source floods non-first fragments of datagrams whose first fragment never comes.
    let mut f = fragments(&big_udp(SRV2, 9, PUB, port, 2000, 0), 1000)[1].clone();
    let mut held = 0;
    for id in 0..5000u16 {
        f[18..20].copy_from_slice(&id.to_be_bytes());
        fix_ip_checksum(&mut f);
        let (_, v) = n.feed(Inbound, &[f.clone()], t(1000));
        match v[0] {
            Verdict::Held => held += 1,
            Verdict::Drop(DropReason::FragmentLimit) => {}
            other => panic!("{other:?}"),
        }
    }
    assert!(held <= 64, "per-source limit: {held}");
    assert!(n.w.fragments_held() <= 64);
    // Many sources: the pool as a whole is bounded.
    for i in 0..5000u32 {
        let src = (u32::from_be_bytes([100, 64, 0, 0]) + i).to_be_bytes();
        let mut g = fragments(&big_udp(src, 9, PUB, port, 2000, i as u16), 1000)[1].clone();
        fix_ip_checksum(&mut g);
        let (_, v) = n.feed(Inbound, &[g], t(1000));
        if v[0] == Verdict::Held {
            held += 1;
        }
        assert!(n.w.fragments_held() <= 256, "pool bounded");
    }
    assert!(held >= 200, "the pool serves other sources: {held}");
    let limited = n.stats().dropped(DropReason::FragmentLimit);
    assert!(limited >= 9000, "{limited}");
    // Meanwhile unfragmented traffic and in-order fragments go through.
    let f = n.one(Inbound, udp(SRV, 5000, PUB, port, b"still here"), t(1000));
    assert_eq!(check(&f).dst, H1);
    let frs = fragments(&big_udp(SRV, 5000, PUB, port, 3000, 0x7777), 1280);
    let (out, _) = n.feed(Inbound, &frs, t(1000));
    assert_eq!(check(&reassemble(&out)).dport, 40000);
    // Once the flood's fragments expire, out-of-order fragments are held again.
    let frs = fragments(&big_udp(SRV, 5000, PUB, port, 3000, 0x7778), 1280);
    let (out, v) = n.feed(Inbound, &shuffled(frs), t(7000));
    assert_eq!(v[0], Verdict::Held);
    assert_eq!(check(&reassemble(&out)).dport, 40000);
    assert!(n.stats().dropped(DropReason::FragmentTimeout) > 0);
}
