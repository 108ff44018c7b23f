//! Port-block allocation (RFC 6888 REQ-13..15, `--port-block-size`): a subscriber's mappings take
//! ports from its own blocks of N aligned ports on its paired public address, blocks are chosen at
//! random, released once their last port has rested, never shared, never overlap forwards or
//! explicit mappings; out of blocks means ICMP code 13.

mod frames;

use frames::*;
use rnat::nat::Direction::{Inbound, Outbound};
use rnat::nat::{
    Config, ConfigError, DropReason, Engine, Filtering, Forward, FrameMeta, MapRequest, PortBlock,
    PortRange, Prefix, Proto, Time, Verdict, Worker,
};
use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

fn cfg(block: u16) -> Config {
    Config {
        public_addrs: vec![Ipv4Addr::from(PUB), Ipv4Addr::new(203, 0, 113, 2)],
        inside_prefixes: vec!["192.168.0.0/16".parse::<Prefix>().unwrap()],
        inside_addr: Some(Ipv4Addr::from(GW_IN)),
        filtering_udp: Filtering::EndpointIndependent,
        max_sessions: 50_000,
        shards: 8,
        port_block_size: block,
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

/// Sends a UDP flow out; returns the public endpoint it left with.
fn out_udp(w: &Worker, host: [u8; 4], sport: u16, at: u64) -> SocketAddrV4 {
    let mut f = udp(host, sport, SRV, 53, b"q");
    assert_eq!(
        run(w, Outbound, &mut f, at),
        Verdict::Forward,
        "{host:?}:{sport}"
    );
    let h = check(&f);
    SocketAddrV4::new(h.src.into(), h.sport)
}

fn out_tcp(w: &Worker, host: [u8; 4], sport: u16, at: u64) -> SocketAddrV4 {
    let mut f = tcp(host, sport, SRV, 80, SYN, b"");
    assert_eq!(run(w, Outbound, &mut f, at), Verdict::Forward);
    let h = check(&f);
    SocketAddrV4::new(h.src.into(), h.sport)
}

fn blocks_of(e: &Engine, host: [u8; 4]) -> Vec<PortBlock> {
    e.port_blocks()
        .into_iter()
        .filter(|b| b.inside == Ipv4Addr::from(host))
        .collect()
}

#[test]
fn rfc6888_req14_ports_come_from_the_subscribers_block() {
    let e = Engine::new(cfg(64)).unwrap();
    let w = e.worker();
    let paired = e.paired_public(Ipv4Addr::from(H1));
    let udp_ports: HashSet<SocketAddrV4> = (0..30).map(|i| out_udp(&w, H1, 5000 + i, 1)).collect();
    let tcp_ports: HashSet<SocketAddrV4> = (0..20).map(|i| out_tcp(&w, H1, 6000 + i, 1)).collect();
    assert_eq!(
        (udp_ports.len(), tcp_ports.len()),
        (30, 20),
        "a port given twice"
    );
    let b = blocks_of(&e, H1);
    assert_eq!(b.len(), 1, "{b:?}");
    let b = b[0];
    assert_eq!((b.public, b.size, b.first_port % 64), (paired, 64, 0));
    assert_eq!(b.in_use, 50);
    for p in udp_ports.iter().chain(&tcp_ports) {
        assert!(b.contains(*p), "{p} outside {b:?}");
    }
    // Replies come back through the block's ports.
    let mut g = udp(H1, 5000, SRV, 53, b"q");
    run(&w, Outbound, &mut g, 1);
    let h = check(&g);
    let mut back = udp(SRV, 53, h.src, h.sport, b"r");
    assert_eq!(run(&w, Inbound, &mut back, 1), Verdict::Forward);
    assert_eq!(check(&back).dst, H1);
    // Parity follows the inside port when it can (RFC 4787 REQ-4): even inside ports got even
    // public ports.
    let mut even = udp(H1, 7000, SRV, 53, b"q");
    run(&w, Outbound, &mut even, 1);
    assert_eq!(check(&even).sport % 2, 0);
}

#[test]
fn rfc6888_req14_second_block_when_first_is_full() {
    let e = Engine::new(cfg(8)).unwrap();
    let w = e.worker();
    let ports: Vec<SocketAddrV4> = (0..12).map(|i| out_udp(&w, H1, 5000 + i, 1)).collect();
    let b = blocks_of(&e, H1);
    assert_eq!(b.len(), 2, "{b:?}");
    assert_eq!(b.iter().map(|x| x.in_use).sum::<u32>(), 12);
    assert!(
        b.iter().any(|x| x.in_use == 8),
        "the first block filled up: {b:?}"
    );
    for p in &ports {
        assert!(b.iter().any(|x| x.contains(*p)), "{p} outside {b:?}");
    }
    assert_eq!(ports.iter().collect::<HashSet<_>>().len(), 12);
}

#[test]
fn rfc6888_req15_blocks_are_random_and_aligned() {
    let firsts = |seed: u64| -> Vec<u16> {
        let e = Engine::new(Config { seed, ..cfg(64) }).unwrap();
        let w = e.worker();
        for h in 0..40u8 {
            out_udp(&w, [192, 168, 5, h + 1], 4000, 1);
        }
        let mut v = Vec::new();
        for h in 0..40u8 {
            let b = blocks_of(&e, [192, 168, 5, h + 1]);
            assert_eq!(b.len(), 1);
            assert_eq!(b[0].first_port % 64, 0, "aligned");
            assert!(b[0].first_port >= 1024, "inside the port range");
            v.push(b[0].first_port);
        }
        v
    };
    let a = firsts(1);
    // Not handed out in order: neither sorted nor clustered.
    let mut sorted = a.clone();
    sorted.sort_unstable();
    assert_ne!(a, sorted, "blocks in host order: guessable");
    assert!(
        sorted[39] - sorted[0] > 20_000,
        "blocks clustered: {sorted:?}"
    );
    let gaps: HashSet<u16> = sorted.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.len() > 5, "evenly spaced: {sorted:?}");
    // Another seed, other blocks.
    let b = firsts(2);
    let same = a.iter().zip(&b).filter(|(x, y)| x == y).count();
    assert!(
        same < 5,
        "{same} of 40 hosts got the same block with another seed"
    );
}

#[test]
fn rfc6888_req14_block_released_after_last_port_cools() {
    let c = Config {
        port_cooldown: Duration::from_secs(120),
        ..cfg(16)
    };
    let udp_timeout = c.timeouts.udp.as_secs();
    let e = Engine::new(c).unwrap();
    let w = e.worker();
    for i in 0..5 {
        out_udp(&w, H1, 5000 + i, 1);
    }
    let first = blocks_of(&e, H1);
    assert_eq!(first.len(), 1);
    // The sessions expire: the ports rest, the block stays held while they do.
    let ended = 1 + udp_timeout + 1;
    assert_eq!(e.expire(Time::from_secs(ended)), 5);
    let b = blocks_of(&e, H1);
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].in_use, 0);
    e.expire(Time::from_secs(ended + 60));
    assert_eq!(
        blocks_of(&e, H1).len(),
        1,
        "released before the ports rested"
    );
    // Rested: the next sweep releases it.
    e.expire(Time::from_secs(ended + 130));
    assert!(e.port_blocks().is_empty(), "{:?}", e.port_blocks());
    // A new flow claims a block again.
    out_udp(&w, H1, 6000, ended + 131);
    assert_eq!(blocks_of(&e, H1).len(), 1);
    // Flushing (no cool-down skipped): the block goes only after the rest too.
    e.flush(Some(Ipv4Addr::from(H1)), Time::from_secs(ended + 132));
    e.expire(Time::from_secs(ended + 133));
    assert_eq!(blocks_of(&e, H1).len(), 1);
    e.expire(Time::from_secs(ended + 300));
    assert!(e.port_blocks().is_empty());
}

#[test]
fn rfc6888_req14_two_hosts_never_share_a_block() {
    let e = Engine::new(Config {
        public_addrs: vec![Ipv4Addr::from(PUB)],
        ..cfg(8)
    })
    .unwrap();
    let w = e.worker();
    let (mut p1, mut p2) = (Vec::new(), Vec::new());
    for i in 0..30 {
        p1.push(out_udp(&w, H1, 5000 + i, 1));
        p2.push(out_udp(&w, H2, 5000 + i, 1));
    }
    let (b1, b2) = (blocks_of(&e, H1), blocks_of(&e, H2));
    assert_eq!((b1.len(), b2.len()), (4, 4));
    for x in &b1 {
        assert!(b2.iter().all(|y| y.first_port != x.first_port));
    }
    assert!(p1.iter().all(|p| b1.iter().any(|b| b.contains(*p))));
    assert!(p2.iter().all(|p| b2.iter().any(|b| b.contains(*p))));
}

#[test]
fn rfc6888_req14_forwards_and_pcp_ports_stay_out_of_blocks() {
    // 1024-1087: four blocks of 16. A forward sits in the first, an explicit mapping in the
    // second: only the last two can be given out.
    let e = Engine::new(Config {
        public_addrs: vec![Ipv4Addr::from(PUB)],
        port_ranges: vec![PortRange::new(1024, 1087)],
        forwards: vec!["udp:1030=192.168.1.3:53".parse::<Forward>().unwrap()],
        ..cfg(16)
    })
    .unwrap();
    let w = e.worker();
    let req = |host: [u8; 4], port: u16, suggested: u16| MapRequest {
        proto: Proto::Udp,
        inside: SocketAddrV4::new(host.into(), port),
        suggested_port: suggested,
        suggested_addr: None,
        lifetime: Duration::from_secs(600),
        prefer_failure: false,
        nonce: None,
    };
    let g = e.map(&req(H2, 7000, 1050), Time::from_secs(1)).unwrap();
    assert_eq!(g.public.port(), 1050);
    let mut got = Vec::new();
    for i in 0..20 {
        got.push(out_udp(&w, H1, 5000 + i, 1).port());
    }
    // An explicit mapping asking for a free port inside H1's blocks gets one outside every block.
    let b = blocks_of(&e, H1);
    let free_in_block = (b[0].first_port..=b[1].last_port())
        .rev()
        .find(|p| !got.contains(p))
        .unwrap();
    let g = e
        .map(&req(H2, 7001, free_in_block), Time::from_secs(1))
        .unwrap();
    let p = g.public.port();
    assert!(
        p < 1056 && p != 1030 && p != 1050,
        "{p} (asked {free_in_block})"
    );
    assert!(e.port_blocks().iter().all(|x| !x.contains(g.public)));
    for i in 20..32 {
        got.push(out_udp(&w, H1, 5000 + i, 1).port());
    }
    let b = blocks_of(&e, H1);
    let firsts: HashSet<u16> = b.iter().map(|x| x.first_port).collect();
    assert_eq!(firsts, HashSet::from([1056, 1072]), "{b:?}");
    assert!(got.iter().all(|p| *p >= 1056));
    // Out of blocks now: the 33rd flow is refused.
    let mut f = udp(H1, 5100, SRV, 53, b"q");
    assert!(matches!(run(&w, Outbound, &mut f, 1), Verdict::Reply(_)));
    // The forward and the explicit mappings still work.
    let mut f = udp(SRV, 999, PUB, 1030, b"to-forward");
    assert_eq!(run(&w, Inbound, &mut f, 1), Verdict::Forward);
    assert_eq!(check(&f).dst, H2);
    let mut f = udp(SRV2, 999, PUB, 1050, b"to-pcp");
    assert_eq!(run(&w, Inbound, &mut f, 1), Verdict::Forward);
    assert_eq!((check(&f).dst, check(&f).dport), (H2, 7000));
    let mut f = udp(SRV2, 999, PUB, p, b"to-pcp2");
    assert_eq!(run(&w, Inbound, &mut f, 1), Verdict::Forward);
    assert_eq!((check(&f).dst, check(&f).dport), (H2, 7001));
}

#[test]
fn rfc6888_req11_out_of_blocks_is_code_13() {
    // 1024-1055: two blocks of 16.
    let e = Engine::new(Config {
        public_addrs: vec![Ipv4Addr::from(PUB)],
        port_ranges: vec![PortRange::new(1024, 1055)],
        ..cfg(16)
    })
    .unwrap();
    let w = e.worker();
    out_udp(&w, H1, 5000, 1);
    out_udp(&w, H2, 5000, 1);
    let mut f = udp([192, 168, 1, 9], 5000, SRV, 53, b"q");
    let mut scratch = vec![0u8; 2048];
    let v = w.process(
        Outbound,
        &mut f,
        FrameMeta::default(),
        Time::from_secs(1),
        &mut scratch,
    );
    let Verdict::Reply(n) = v else {
        panic!("{v:?}")
    };
    let icmp = &scratch[14 + 20..n];
    assert_eq!(
        (icmp[0], icmp[1]),
        (3, 13),
        "destination unreachable, code 13"
    );
    assert_eq!(e.stats().dropped(DropReason::NoPorts), 1);
    // A subscriber at its block limit: --max-ports-per-subscriber 16 allows one block of 16.
    let e = Engine::new(Config {
        public_addrs: vec![Ipv4Addr::from(PUB)],
        max_ports_per_subscriber: 20,
        ..cfg(16)
    })
    .unwrap();
    assert_eq!(e.config().max_blocks_per_subscriber(), 2);
    let w = e.worker();
    for i in 0..20 {
        out_udp(&w, H1, 5000 + i, 1);
    }
    assert_eq!(blocks_of(&e, H1).len(), 2);
    // The port quota refuses the 21st (code 13 as well).
    let mut f = udp(H1, 6000, SRV, 53, b"q");
    assert!(matches!(run(&w, Outbound, &mut f, 1), Verdict::Reply(_)));
    assert_eq!(e.stats().dropped(DropReason::Quota), 1);
}

#[test]
fn rfc6888_req14_block_limit_per_subscriber() {
    // Without a port quota: 65536 / 16 / 4 = 1024 blocks; with a cap of 2 blocks (quota 32),
    // a third block is never claimed even when the quota would allow more ports.
    let c = Config {
        public_addrs: vec![Ipv4Addr::from(PUB)],
        ..cfg(16)
    };
    assert_eq!(c.max_blocks_per_subscriber(), 1024);
    let e = Engine::new(Config {
        max_ports_per_subscriber: 32,
        ..c
    })
    .unwrap();
    let w = e.worker();
    for i in 0..32 {
        out_udp(&w, H1, 5000 + i, 1);
    }
    assert_eq!(blocks_of(&e, H1).len(), 2);
    assert!(blocks_of(&e, H1).iter().all(|b| b.in_use == 16));
}

#[test]
fn rfc6888_req14_two_workers_one_subscriber_never_share_a_port() {
    let e: Arc<Engine> = Engine::new(cfg(64)).unwrap();
    let per = 1500u16;
    let threads: Vec<_> = (0..2u16)
        .map(|t| {
            let w = e.worker();
            std::thread::spawn(move || {
                let mut got = Vec::with_capacity(per as usize);
                let mut scratch = vec![0u8; 2048];
                for i in 0..per {
                    let mut f = udp(H1, 10_000 + t * 20_000 + i, SRV, 53, b"q");
                    let v = w.process(
                        Outbound,
                        &mut f,
                        FrameMeta::default(),
                        Time::from_secs(1),
                        &mut scratch,
                    );
                    assert_eq!(v, Verdict::Forward);
                    got.push(check(&f).sport);
                }
                got
            })
        })
        .collect();
    let all: Vec<u16> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let distinct: HashSet<u16> = all.iter().copied().collect();
    assert_eq!(distinct.len(), all.len(), "a port given twice");
    let b = blocks_of(&e, H1);
    assert_eq!(b.iter().map(|x| x.in_use).sum::<u32>(), 2 * per as u32);
    // Blocks fill before new ones are claimed (a racing claim may leave one partly used).
    let need = (2 * per as usize).div_ceil(64);
    assert!(b.len() >= need && b.len() <= need + 2, "{} blocks", b.len());
    for p in &all {
        assert!(b.iter().any(|x| (x.first_port..=x.last_port()).contains(p)));
    }
    assert_eq!(e.mapping_count(), 2 * per as usize);
}

#[test]
fn port_block_sizes_are_validated() {
    for bad in [1u16, 4, 7, 12, 100, 8192, 65535] {
        let err = Engine::new(cfg(bad)).err();
        assert_eq!(
            err,
            Some(ConfigError::BadPortBlockSize(bad as u32)),
            "{bad}"
        );
    }
    for good in [0u16, 8, 64, 4096] {
        assert!(Engine::new(cfg(good)).is_ok(), "{good}");
    }
    // No aligned block fits inside the ranges.
    let err = Engine::new(Config {
        port_ranges: vec![PortRange::new(1025, 1050)],
        ..cfg(32)
    })
    .err();
    assert_eq!(err, Some(ConfigError::NoPortBlocks(32)));
    assert!(
        ConfigError::BadPortBlockSize(12)
            .to_string()
            .contains("power of two from 8 to 4096")
    );
}

/// A block whose ports have all rested is free for another host at once, even before the next
/// expiry pass releases it (found by the packet_path fuzzer: without this, a third host got code
/// 13 until `Engine::expire` ran again).
#[test]
fn rfc6888_req14_rested_block_is_claimable_before_the_next_expiry_pass() {
    // 1024-1055: two blocks of 16.
    let e = Engine::new(Config {
        public_addrs: vec![Ipv4Addr::from(PUB)],
        port_ranges: vec![PortRange::new(1024, 1055)],
        ..cfg(16)
    })
    .unwrap();
    let w = e.worker();
    out_udp(&w, H1, 5000, 1);
    out_udp(&w, H2, 5000, 1);
    // Both sessions end; their ports rest for the cool-down (120 s), the blocks stay held.
    let t = 1 + e.config().timeouts.udp.as_secs() + 1;
    e.expire(Time::from_secs(t));
    assert_eq!(e.session_count(), 0);
    assert_eq!(e.port_blocks().len(), 2, "held while their ports rest");
    let h3 = [192, 168, 1, 9];
    let mut f = udp(h3, 5000, SRV, 53, b"q");
    assert!(
        matches!(run(&w, Outbound, &mut f, t + 10), Verdict::Reply(_)),
        "still resting: refused"
    );
    // Rested, and no expiry pass since: the new host gets one of them.
    let rested = t + e.config().port_cooldown.as_secs() + 1;
    let p = out_udp(&w, h3, 5000, rested);
    assert_eq!(blocks_of(&e, h3).len(), 1, "{p}");
    assert!(blocks_of(&e, H1).len() + blocks_of(&e, H2).len() <= 1);
}
