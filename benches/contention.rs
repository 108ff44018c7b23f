//! The shared table under contention, and the alternative the first issue suggested (dashmap).
//!
//! Two threads (this machine has two cores) translate established flows at the same time:
//! - `rnat/{1,2}_threads`: the whole engine path (`Worker::process`: parse, one shard lock,
//!   session lookup and update, rewrite with checksums) over 64 k established UDP flows;
//! - `dashmap/{1,2}_threads`: only the table part done with `DashMap` — a session lookup by
//!   5-tuple with `get_mut` to refresh it, plus the public-port → mapping lookup the inbound
//!   direction needs as a second map — over the same number of flows.
//!
//! Each iteration is one operation per thread; the figure is the time for both threads to finish
//! a batch, divided by the operations done.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dashmap::DashMap;
use rnat::nat::{Config, Direction, Engine, FrameMeta, Prefix, Time, Verdict};
use std::hint::black_box;
use std::net::Ipv4Addr;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

const FLOWS: u32 = 65_536;
const BATCH: u64 = 200_000;

fn frame(i: u32) -> [u8; 60] {
    let mut f = [0u8; 60];
    f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
    f[12] = 0x08;
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&46u16.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&(0x0a00_0000 | (i / 16 + 2)).to_be_bytes());
    ip[16..20].copy_from_slice(&[198, 51, 100, 20]);
    let c = rnat::wire::checksum::checksum(ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f[34..36].copy_from_slice(&(1024 + (i % 16) as u16 * 7).to_be_bytes());
    f[36..38].copy_from_slice(&53u16.to_be_bytes());
    f[38..40].copy_from_slice(&26u16.to_be_bytes());
    f
}

/// Runs `op(thread, i)` BATCH times on each of `threads` threads at once; returns the mean time
/// per operation.
fn parallel(threads: usize, iters: u64, op: Arc<dyn Fn(usize, u64) + Send + Sync>) -> Duration {
    let mut total = Duration::ZERO;
    let mut done = 0;
    while done < iters {
        let n = (iters - done).min(BATCH);
        let barrier = Arc::new(Barrier::new(threads));
        let start = Instant::now();
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                let (b, op) = (barrier.clone(), op.clone());
                std::thread::spawn(move || {
                    b.wait();
                    for i in 0..n {
                        op(t, i);
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        total += start.elapsed() / threads as u32;
        done += n;
    }
    total
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("contention");
    g.throughput(Throughput::Elements(1));
    // rnat: the engine, populated.
    let engine = Engine::new(Config {
        public_addrs: (1..=4).map(|i| Ipv4Addr::new(203, 0, 113, i)).collect(),
        inside_prefixes: vec!["10.0.0.0/8".parse::<Prefix>().unwrap()],
        max_sessions: FLOWS as usize * 2,
        ..Config::default()
    })
    .unwrap();
    let frames: Arc<Vec<[u8; 60]>> = Arc::new((0..FLOWS).map(frame).collect());
    {
        let w = engine.worker();
        let mut s = [0u8; 1600];
        for f in frames.iter() {
            let mut f = *f;
            assert_eq!(
                w.process(
                    Direction::Outbound,
                    &mut f,
                    FrameMeta::default(),
                    Time::from_secs(1),
                    &mut s
                ),
                Verdict::Forward
            );
        }
    }
    for threads in [1usize, 2] {
        // Workers are per thread (not `Sync`): each thread makes its own on first use.
        let engine = engine.clone();
        let frames = frames.clone();
        let op: Arc<dyn Fn(usize, u64) + Send + Sync> = Arc::new(move |t, i| {
            thread_local!(static W: std::cell::RefCell<Option<rnat::nat::Worker>> = const { std::cell::RefCell::new(None) });
            // Threads walk the flows from different offsets, so they meet on shards at random.
            let k = ((i.wrapping_mul(2_654_435_761) + t as u64 * 7919) % FLOWS as u64) as usize;
            let mut f = frames[k];
            let mut s = [0u8; 64];
            W.with(|w| {
                let mut w = w.borrow_mut();
                if w.is_none() {
                    *w = Some(engine.worker());
                }
                black_box(w.as_ref().unwrap().process(
                    Direction::Outbound,
                    &mut f,
                    FrameMeta::default(),
                    Time::from_secs(2),
                    &mut s,
                ));
            });
        });
        g.bench_function(format!("rnat/{threads}_threads"), |b| {
            b.iter_custom(|iters| parallel(threads, iters, op.clone()))
        });
    }
    // dashmap: the two maps a NAT needs, with a small session value.
    type Key = (u8, u32, u16, u32, u16);
    let sessions: Arc<DashMap<Key, (u32, u16, u64)>> =
        Arc::new(DashMap::with_capacity(FLOWS as usize));
    let by_port: Arc<DashMap<(u8, u16), Key>> = Arc::new(DashMap::with_capacity(FLOWS as usize));
    let keys: Arc<Vec<Key>> = Arc::new(
        (0..FLOWS)
            .map(|i| {
                (
                    17u8,
                    0x0a00_0000 | (i / 16 + 2),
                    1024 + (i % 16) as u16 * 7,
                    0xc633_6414,
                    53,
                )
            })
            .collect(),
    );
    for (i, k) in keys.iter().enumerate() {
        sessions.insert(*k, (0xcb00_7101, i as u16, 0));
        by_port.insert((17, i as u16), *k);
    }
    for threads in [1usize, 2] {
        let (sessions, by_port, keys) = (sessions.clone(), by_port.clone(), keys.clone());
        let op: Arc<dyn Fn(usize, u64) + Send + Sync> = Arc::new(move |t, i| {
            let k = ((i.wrapping_mul(2_654_435_761) + t as u64 * 7919) % FLOWS as u64) as usize;
            if let Some(mut s) = sessions.get_mut(&keys[k]) {
                s.2 = i;
                let port = s.1;
                drop(s);
                black_box(by_port.get(&(17, port)).map(|m| m.1));
            }
        });
        g.bench_function(format!("dashmap/{threads}_threads"), |b| {
            b.iter_custom(|iters| parallel(threads, iters, op.clone()))
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
