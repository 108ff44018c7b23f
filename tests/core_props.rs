//! Property tests of the core: translation round trips, and no panic on any input.

mod frames;

use frames::*;
use proptest::prelude::*;
use rnat::nat::Direction::{Inbound, Outbound};
use rnat::nat::{Config, Engine, Filtering, FrameMeta, Prefix, Time, Verdict};
use std::net::Ipv4Addr;

fn engine() -> std::sync::Arc<Engine> {
    Engine::new(Config {
        public_addrs: vec![Ipv4Addr::from(PUB)],
        inside_prefixes: vec!["192.168.0.0/16".parse::<Prefix>().unwrap()],
        inside_addr: Some(Ipv4Addr::from(GW_IN)),
        filtering_udp: Filtering::EndpointIndependent,
        max_sessions: 1 << 14,
        shards: 4,
        ..Config::default()
    })
    .unwrap()
}

fn build(proto: u8, src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, payload: &[u8]) -> Vec<u8> {
    match proto {
        0 => udp(src, sport, dst, dport, payload),
        1 => tcp(src, sport, dst, dport, ACK, payload),
        _ => echo_request(src, dst, sport, 1),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Outbound then inbound: the reply to the translated packet comes back to exactly the
    /// original sender, with every checksum valid and the payload untouched.
    #[test]
    fn outbound_then_inbound_restores_the_original_endpoints(
        proto in 0u8..3,
        host in 2u8..250,
        sport in 1u16..,
        dst in prop::array::uniform4(1u8..224),
        dport in 1u16..,
        payload in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        prop_assume!(dst != PUB);
        // Martian destinations (0/8, loopback, the inside prefix) are refused by design.
        prop_assume!(dst[0] != 0 && dst[0] != 127 && dst[..2] != [192, 168]);
        let e = engine();
        let w = e.worker();
        let mut scratch = vec![0u8; 2048];
        let src = [192, 168, 7, host];
        let orig = build(proto, src, sport, dst, dport, &payload);
        let mut f = orig.clone();
        prop_assert_eq!(w.process(Outbound, &mut f, FrameMeta::default(), Time::from_secs(1), &mut scratch), Verdict::Forward);
        let out = check(&f);
        prop_assert_eq!(out.src, PUB);
        prop_assert_eq!(out.dst, dst);
        if proto < 2 {
            prop_assert_eq!(&f[f.len() - payload.len()..], &payload[..]);
        }
        // The remote answers the translated packet.
        let mut r = match proto {
            0 => udp(dst, dport, PUB, out.sport, &payload),
            1 => tcp(dst, dport, PUB, out.sport, ACK, &payload),
            _ => echo_reply(dst, PUB, out.sport, 1),
        };
        prop_assert_eq!(w.process(Inbound, &mut r, FrameMeta::default(), Time::from_secs(2), &mut scratch), Verdict::Forward);
        let back = check(&r);
        prop_assert_eq!(back.dst, src);
        prop_assert_eq!(back.src, dst);
        if proto == 2 {
            prop_assert_eq!(back.sport, sport);
        } else {
            prop_assert_eq!((back.sport, back.dport), (dport, sport));
        }
        // Apart from the rewritten fields, the reply is byte-identical to what the remote sent
        // to the inside host directly (TTL one lower).
        let mut direct = match proto {
            0 => udp(dst, dport, src, sport, &payload),
            1 => tcp(dst, dport, src, sport, ACK, &payload),
            _ => echo_reply(dst, src, sport, 1),
        };
        direct[22] -= 1;
        direct[24] = r[24];
        direct[25] = r[25];
        let csum_at = match proto { 0 => 40, 1 => 50, _ => 36 };
        prop_assert!(same_csum(
            u16::from_be_bytes([direct[csum_at], direct[csum_at + 1]]),
            u16::from_be_bytes([r[csum_at], r[csum_at + 1]])
        ));
        direct[csum_at] = r[csum_at];
        direct[csum_at + 1] = r[csum_at + 1];
        prop_assert_eq!(direct, r);
    }

    /// Arbitrary bytes in either direction never panic.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200), inbound in any::<bool>()) {
        let e = engine();
        let w = e.worker();
        let mut scratch = vec![0u8; 2048];
        let mut f = bytes;
        let dir = if inbound { Inbound } else { Outbound };
        let _ = w.process(dir, &mut f, FrameMeta::default(), Time::from_secs(1), &mut scratch);
    }

    /// Valid frames with random bytes flipped never panic, and whatever is forwarded outbound
    /// never carries a private source address.
    #[test]
    fn mutated_frames_never_panic_or_leak(
        proto in 0u8..3,
        flips in prop::collection::vec((0usize..80, any::<u8>()), 1..6),
        partial in any::<bool>(),
        small_scratch in any::<bool>(),
    ) {
        let e = engine();
        let w = e.worker();
        let mut scratch = vec![0u8; if small_scratch { 40 } else { 2048 }];
        let mut f = build(proto, H1, 1234, SRV, 80, b"payload-bytes");
        let n = f.len();
        for (at, x) in flips {
            f[at % n] ^= x;
        }
        let meta = FrameMeta { csum_partial: partial, gso: false };
        for dir in [Outbound, Inbound] {
            let mut g = f.clone();
            let v = w.process(dir, &mut g, meta, Time::from_secs(1), &mut scratch);
            if dir == Outbound && v == Verdict::Forward {
                prop_assert_eq!(&g[26..30], &PUB[..]);
            }
        }
    }
}
