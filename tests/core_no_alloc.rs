//! The per-packet path never allocates: a counting global allocator watches it.

mod frames;

use frames::*;
use rnat::nat::Direction::{Inbound, Outbound};
use rnat::nat::{Config, Engine, FrameMeta, Prefix, Time, Verdict};
use std::alloc::{GlobalAlloc, Layout, System};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static A: Counting = Counting;

/// The allocation count is global: the tests of this file run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn per_packet_path_does_not_allocate() {
    let _one = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let e = Engine::new(Config {
        public_addrs: vec![Ipv4Addr::from(PUB)],
        inside_prefixes: vec!["192.168.0.0/16".parse::<Prefix>().unwrap()],
        inside_addr: Some(Ipv4Addr::from(GW_IN)),
        max_sessions: 50_000,
        ..Config::default()
    })
    .unwrap();
    let w = e.worker();
    let mut scratch = vec![0u8; 2048];
    // Frames built up front: building allocates, translating must not.
    let mut frames: Vec<(rnat::nat::Direction, Vec<u8>)> = Vec::new();
    for i in 0..5000u16 {
        let h = [192, 168, (i >> 8) as u8, i as u8];
        frames.push((Outbound, udp(h, 1000 + i, SRV, 53, b"q")));
        frames.push((Outbound, tcp(h, 2000 + i, SRV, 80, SYN, b"")));
        frames.push((Outbound, udp(h, 1000 + i, SRV, 53, b"again")));
        frames.push((Inbound, udp(SRV, 53, PUB, 1000 + i, b"stray-or-reply")));
        frames.push((Outbound, echo_request(h, SRV, i, 1)));
    }
    // Fragmented datagrams, in order and reversed, both ways (the tracker's pool is reserved
    // when the worker is created).
    for i in 0..200u16 {
        let h = [192, 168, 2, i as u8];
        let mut big = udp(h, 3000 + i, SRV, 53, &[7u8; 3000]);
        big[18..22].copy_from_slice(&[(i >> 8) as u8, i as u8, 0, 0]);
        big[24..26].copy_from_slice(&[0, 0]);
        let c = rnat::wire::checksum::checksum(&big[14..34]);
        big[24..26].copy_from_slice(&c.to_be_bytes());
        let mut frs = Vec::new();
        rnat::wire::frag::fragment(&big, 14, 1280, &mut Vec::new(), |f| frs.push(f.to_vec()))
            .unwrap();
        if i % 2 == 1 {
            frs.reverse();
        }
        frames.extend(frs.into_iter().map(|f| (Outbound, f)));
        let mut back = udp(SRV, 53, PUB, 3000 + i, &[9u8; 3000]);
        back[18..22].copy_from_slice(&[(i >> 8) as u8, i as u8, 0, 0]);
        back[24..26].copy_from_slice(&[0, 0]);
        let c = rnat::wire::checksum::checksum(&back[14..34]);
        back[24..26].copy_from_slice(&c.to_be_bytes());
        let mut frs = Vec::new();
        rnat::wire::frag::fragment(&back, 14, 1280, &mut Vec::new(), |f| frs.push(f.to_vec()))
            .unwrap();
        if i % 2 == 0 {
            frs.reverse();
        }
        frames.extend(frs.into_iter().map(|f| (Inbound, f)));
    }
    // Unsolicited SYNs (held, RFC 5382 REQ-4), some cancelled by an outbound SYN.
    for i in 0..500u16 {
        frames.push((Inbound, tcp(SRV, 80, PUB, 40000 + i, SYN, b"")));
        if i % 2 == 0 {
            frames.push((
                Outbound,
                tcp([192, 168, 3, 1], 40000 + i, SRV, 80, SYN, b""),
            ));
        }
    }
    let mut ttl1 = udp(H1, 5, SRV, 5, b"ttl");
    ttl1[22] = 1;
    frames.push((Outbound, ttl1));
    let before = ALLOCS.load(Ordering::Relaxed);
    let mut forwarded = 0;
    let mut released = 0;
    for (dir, f) in frames.iter_mut() {
        if w.process(
            *dir,
            f,
            FrameMeta::default(),
            Time::from_secs(1),
            &mut scratch,
        ) == Verdict::Forward
        {
            forwarded += 1;
        }
        w.take_released(|_, _| released += 1);
    }
    // The rest are answered with port-unreachables after the hold time.
    let mut rejected = 0;
    while w.take_unanswered_syns(Time::from_secs(10), &mut scratch, 64, |_| rejected += 1) > 0 {}
    let expired = e.expire(Time::from_secs(100_000));
    let after = ALLOCS.load(Ordering::Relaxed);
    assert!(forwarded > 20_000, "{forwarded}");
    assert!(expired > 10_000);
    assert_eq!(released, 400, "held fragments released");
    assert_eq!(
        rejected, 100,
        "held SYNs answered (ICMP rate limit: 100 a second)"
    );
    assert_eq!(e.stats().syn_cancelled, 250);
    assert_eq!(after - before, 0, "allocations on the packet path");
}

/// Port-block mode: claiming ports inside blocks, claiming new blocks, filling them, running out
/// of them, and releasing them at expiry allocate nothing either.
#[test]
fn per_packet_path_does_not_allocate_in_block_mode() {
    let _one = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let e = Engine::new(Config {
        public_addrs: vec![Ipv4Addr::from(PUB)],
        inside_prefixes: vec!["192.168.0.0/16".parse::<Prefix>().unwrap()],
        inside_addr: Some(Ipv4Addr::from(GW_IN)),
        max_sessions: 50_000,
        // 1024 blocks of 16.
        port_ranges: vec![rnat::nat::PortRange::new(1024, 17407)],
        port_block_size: 16,
        ..Config::default()
    })
    .unwrap();
    let w = e.worker();
    let mut scratch = vec![0u8; 2048];
    let mut frames: Vec<(rnat::nat::Direction, Vec<u8>)> = Vec::new();
    // 1000 hosts with 30 mappings each (two blocks of 16 per host, TCP, UDP and ICMP), more
    // than the 1024 blocks: some run out (code 13).
    for h in 0..1000u16 {
        let host = [192, 168, 10 + (h >> 8) as u8, h as u8];
        for i in 0..20u16 {
            frames.push((Outbound, udp(host, 1000 + i, SRV, 53, b"q")));
            if i % 4 == 0 {
                frames.push((Outbound, tcp(host, 2000 + i, SRV, 80, SYN, b"")));
                frames.push((Outbound, echo_request(host, SRV, 3000 + i, 1)));
            }
        }
    }
    let before = ALLOCS.load(Ordering::Relaxed);
    let mut forwarded = 0;
    let mut refused = 0;
    for (dir, f) in frames.iter_mut() {
        match w.process(
            *dir,
            f,
            FrameMeta::default(),
            Time::from_secs(1),
            &mut scratch,
        ) {
            Verdict::Forward => forwarded += 1,
            Verdict::Reply(_) => refused += 1,
            _ => {}
        }
    }
    let blocks_held = e.port_block_count();
    let expired = e.expire(Time::from_secs(100_000));
    e.expire(Time::from_secs(200_000));
    let after = ALLOCS.load(Ordering::Relaxed);
    assert!(forwarded > 15_000, "{forwarded}");
    assert!(refused > 0, "some hosts ran out of blocks");
    assert_eq!(blocks_held, 1024, "{blocks_held}");
    assert!(expired > 15_000);
    assert_eq!(e.port_block_count(), 0, "blocks released after the rest");
    assert_eq!(after - before, 0, "allocations on the packet path");
}
