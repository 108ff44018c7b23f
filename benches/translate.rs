//! Criterion benchmarks of the NAT core (one core, no I/O):
//! - `established/{1k,64k,1M}`: ns per packet for outbound packets of established UDP flows, the
//!   flows visited in random order (the table far larger than the caches at 1M);
//! - `established_batch/{1k,64k,1M}`: the same through `Worker::process_batch`, 16 frames a call,
//!   still reported per packet;
//! - `new_sessions`: cost of a packet that creates a mapping and a session (1 / that = sessions/s),
//!   single frames and batched;
//! - bytes of memory per session, printed before the timings (reserved heap / capacity).
//!
//! Each iteration copies a 60-byte template into the work buffer before translating it (the
//! frame is rewritten in place); that copy is part of the figure.

use criterion::{Criterion, Throughput, criterion_group};
use rnat::nat::{Config, Direction, Engine, FrameMeta, Prefix, Time, Verdict};
use std::hint::black_box;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

const PUBLICS: u8 = 32;

fn config(max_sessions: usize) -> Config {
    config_with(max_sessions, PUBLICS)
}

fn config_with(max_sessions: usize, publics: u8) -> Config {
    Config {
        public_addrs: (1..=publics)
            .map(|i| Ipv4Addr::new(203, 0, 113, i))
            .collect(),
        inside_prefixes: vec!["10.0.0.0/8".parse::<Prefix>().unwrap()],
        inside_addr: Some(Ipv4Addr::new(10, 0, 0, 1)),
        max_sessions,
        ..Config::default()
    }
}

/// Flow `i`: 16 inside ports per inside host, all to 198.51.100.20:53.
fn frame(i: u32) -> [u8; 60] {
    frame_to(0x0a00_0000 | ((i / 16) + 2), 1024 + (i % 16) as u16 * 7, 53)
}

/// A UDP frame from `src`:`sport` to 198.51.100.20:`dport` with a valid IPv4 checksum.
fn frame_to(src: u32, sport: u16, dport: u16) -> [u8; 60] {
    let mut f = [0u8; 60];
    f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
    f[12] = 0x08;
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&46u16.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&src.to_be_bytes());
    ip[16..20].copy_from_slice(&[198, 51, 100, 20]);
    let c = rnat::wire::checksum::checksum(ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f[34..36].copy_from_slice(&sport.to_be_bytes());
    f[36..38].copy_from_slice(&dport.to_be_bytes());
    f[38..40].copy_from_slice(&26u16.to_be_bytes());
    f
}

/// Flow indices in a fixed pseudo-random order.
fn shuffled(n: u32) -> Vec<u32> {
    let mut v: Vec<u32> = (0..n).collect();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
    v
}

fn populated(n: u32) -> (Arc<Engine>, Vec<[u8; 60]>) {
    let engine = Engine::new(config(n as usize)).unwrap();
    let w = engine.worker();
    let mut scratch = [0u8; 1600];
    let frames: Vec<[u8; 60]> = shuffled(n).into_iter().map(frame).collect();
    for f in &frames {
        let mut g = *f;
        let v = w.process(
            Direction::Outbound,
            &mut g,
            FrameMeta::default(),
            Time::from_secs(1),
            &mut scratch,
        );
        assert_eq!(v, Verdict::Forward);
    }
    assert_eq!(engine.session_count(), n as usize);
    (engine, frames)
}

fn memory_report() {
    let n: u32 = 1 << 20;
    let report = |label: &str, engine: &Engine| {
        let bytes = engine.table_heap_bytes();
        println!(
            "memory: {label}: {} sessions, {} mappings, {} MiB reserved, {:.1} bytes/session",
            engine.session_count(),
            engine.mapping_count(),
            bytes >> 20,
            bytes as f64 / engine.session_count() as f64
        );
    };
    // Worst case: every session its own mapping (needs many public addresses for 1M ports).
    let (engine, _) = populated(n);
    report(
        &format!("1 session per mapping, {PUBLICS} public addresses"),
        &engine,
    );
    drop(engine);
    // Typical: inside endpoints talk to several remotes (32 here); one public address.
    // Sessions cluster by inside endpoint (one shard per mapping), so leave shard headroom.
    let engine = Engine::new(config_with(n as usize * 5 / 4, 1)).unwrap();
    let w = engine.worker();
    let mut scratch = [0u8; 1600];
    for i in 0..n {
        let mut f = frame_to(
            0x0a00_0000 | ((i / 512) + 2),
            1024 + ((i / 32) % 16) as u16,
            1 + (i % 32) as u16,
        );
        let v = w.process(
            Direction::Outbound,
            &mut f,
            FrameMeta::default(),
            Time::from_secs(1),
            &mut scratch,
        );
        assert_eq!(
            v,
            Verdict::Forward,
            "flow {i}: {:?}",
            engine
                .stats()
                .drops
                .iter()
                .filter(|d| d.1 > 0)
                .collect::<Vec<_>>()
        );
    }
    report("32 remotes per mapping, 1 public address", &engine);
}

fn established(c: &mut Criterion) {
    memory_report();
    let mut g = c.benchmark_group("established");
    g.throughput(Throughput::Elements(1));
    for (n, label) in [(1_000u32, "1k"), (65_536, "64k"), (1 << 20, "1M")] {
        let (engine, frames) = populated(n);
        let w = engine.worker();
        let mut scratch = [0u8; 1600];
        let mut i = 0usize;
        g.bench_function(label, |b| {
            b.iter(|| {
                let mut f = frames[i];
                i += 1;
                if i == frames.len() {
                    i = 0;
                }
                let v = w.process(
                    Direction::Outbound,
                    &mut f,
                    FrameMeta::default(),
                    Time::from_secs(2),
                    &mut scratch,
                );
                black_box((v, f[26]))
            })
        });
    }
    g.finish();
    let mut g = c.benchmark_group("established_batch");
    g.throughput(Throughput::Elements(1));
    for (n, label) in [(1_000u32, "1k"), (65_536, "64k"), (1 << 20, "1M")] {
        let (engine, frames) = populated(n);
        let w = engine.worker();
        let mut scratch = [0u8; 1600];
        let mut i = 0usize;
        g.bench_function(label, |b| {
            b.iter_custom(|iters| {
                let batches = iters.div_ceil(BATCH as u64);
                let start = Instant::now();
                for _ in 0..batches {
                    let mut batch = [[0u8; 60]; BATCH];
                    for f in &mut batch {
                        *f = frames[i];
                        i += 1;
                        if i == frames.len() {
                            i = 0;
                        }
                    }
                    let mut fwd = 0u32;
                    w.process_batch(
                        Direction::Outbound,
                        &mut batch,
                        &[],
                        Time::from_secs(2),
                        &mut scratch,
                        |_, v, _| fwd += (v == Verdict::Forward) as u32,
                    );
                    black_box((fwd, batch[0][26]));
                }
                // Per packet: scale to the `iters` packets asked for.
                start
                    .elapsed()
                    .mul_f64(iters as f64 / (batches * BATCH as u64) as f64)
            })
        });
    }
    g.finish();
}

const BATCH: usize = 16;

fn new_sessions(c: &mut Criterion) {
    const CHUNK: u32 = 1 << 20;
    let frames: Vec<[u8; 60]> = shuffled(CHUNK).into_iter().map(frame).collect();
    let mut g = c.benchmark_group("new_sessions");
    g.throughput(Throughput::Elements(1));
    g.bench_function("udp_mapping_and_session", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(CHUNK as u64) as usize;
                let engine = Engine::new(config(CHUNK as usize)).unwrap();
                let w = engine.worker();
                let mut scratch = [0u8; 1600];
                let start = Instant::now();
                for f in &frames[..n] {
                    let mut f = *f;
                    let v = w.process(
                        Direction::Outbound,
                        &mut f,
                        FrameMeta::default(),
                        Time::from_secs(1),
                        &mut scratch,
                    );
                    black_box(v);
                }
                total += start.elapsed();
                left -= n as u64;
            }
            total
        })
    });
    g.bench_function("udp_mapping_and_session_batch", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(CHUNK as u64) as usize;
                let engine = Engine::new(config(CHUNK as usize)).unwrap();
                let w = engine.worker();
                let mut scratch = [0u8; 1600];
                let start = Instant::now();
                for chunk in frames[..n].chunks(BATCH) {
                    let mut batch = [[0u8; 60]; BATCH];
                    batch[..chunk.len()].copy_from_slice(chunk);
                    w.process_batch(
                        Direction::Outbound,
                        &mut batch[..chunk.len()],
                        &[],
                        Time::from_secs(1),
                        &mut scratch,
                        |_, v, _| {
                            black_box(v);
                        },
                    );
                }
                total += start.elapsed();
                left -= n as u64;
            }
            total
        })
    });
    g.finish();
}

/// Profiling hook, outside criterion: `RNAT_PROFILE=established:N` or `RNAT_PROFILE=new:N` runs
/// a fixed loop of packets in [`profile_loop`] (for `valgrind --tool=callgrind
/// --toggle-collect=*profile_loop*`) and exits.
fn profile(spec: &str) {
    if spec == "cputime" {
        return cputime();
    }
    let (what, n) = spec.split_once(':').unwrap_or((spec, "1000"));
    let n: u32 = n.parse().unwrap();
    let reps = 100_000u32;
    match what {
        "established" => {
            let (engine, frames) = populated(n);
            let w = engine.worker();
            profile_loop(&w, &frames, reps, Time::from_secs(2));
        }
        "established_batch" => {
            let (engine, frames) = populated(n);
            let w = engine.worker();
            profile_batch_loop(&w, &frames, reps, Time::from_secs(2));
        }
        "new_batch" => {
            let frames: Vec<[u8; 60]> = shuffled(n).into_iter().map(frame).collect();
            let engine = Engine::new(config(n as usize)).unwrap();
            let w = engine.worker();
            profile_batch_loop(&w, &frames, n, Time::from_secs(1));
            assert_eq!(engine.session_count(), n as usize);
        }
        "new" => {
            let frames: Vec<[u8; 60]> = shuffled(n).into_iter().map(frame).collect();
            let engine = Engine::new(config(n as usize)).unwrap();
            let w = engine.worker();
            profile_loop(&w, &frames, n, Time::from_secs(1));
            assert_eq!(engine.session_count(), n as usize);
        }
        _ => panic!("RNAT_PROFILE=established[_batch]:N | new[_batch]:N"),
    }
}

/// This thread's on-CPU time (ns) from `/proc/thread-self/schedstat`: unlike wall time it does
/// not count the time other processes on a shared machine hold the core.
fn oncpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// `RNAT_PROFILE=cputime`: each case run 7 times, ns per packet as on-CPU time (best and median)
/// and wall time (best), for a machine shared with other work.
fn cputime() {
    fn report(label: &str, pkts: u64, mut run: impl FnMut()) {
        let mut cpu = Vec::new();
        let mut wall = Vec::new();
        for _ in 0..7 {
            let (c0, t0) = (oncpu_ns(), Instant::now());
            run();
            cpu.push((oncpu_ns() - c0) as f64 / pkts as f64);
            wall.push(t0.elapsed().as_nanos() as f64 / pkts as f64);
        }
        cpu.sort_by(f64::total_cmp);
        wall.sort_by(f64::total_cmp);
        println!(
            "cputime: {label:<28} on-CPU best {:7.1} ns/pkt, median {:7.1}; wall best {:7.1}",
            cpu[0], cpu[3], wall[0]
        );
    }
    const PKTS: u32 = 2_000_000;
    for (n, label) in [(1_000u32, "1k"), (65_536, "64k"), (1 << 20, "1M")] {
        let (engine, frames) = populated(n);
        let w = engine.worker();
        report(&format!("established/{label}"), PKTS as u64, || {
            profile_loop(&w, &frames, PKTS, Time::from_secs(2))
        });
        report(&format!("established_batch/{label}"), PKTS as u64, || {
            profile_batch_loop(&w, &frames, PKTS, Time::from_secs(2))
        });
    }
    const NEW: u32 = 1 << 20;
    let frames: Vec<[u8; 60]> = shuffled(NEW).into_iter().map(frame).collect();
    for (label, batched) in [("new_sessions", false), ("new_sessions_batch", true)] {
        let mut engines = Vec::new();
        for _ in 0..7 {
            engines.push(Some(Engine::new(config(NEW as usize)).unwrap()));
        }
        let mut k = 0;
        report(label, NEW as u64, || {
            // Fresh engines built beforehand; all dropped after the timings.
            let Some(engine) = engines[k].as_ref() else {
                return;
            };
            k += 1;
            let w = engine.worker();
            if batched {
                profile_batch_loop(&w, &frames, NEW, Time::from_secs(1));
            } else {
                profile_loop(&w, &frames, NEW, Time::from_secs(1));
            }
            assert_eq!(engine.session_count(), NEW as usize);
        });
    }
}

#[inline(never)]
fn profile_batch_loop(w: &rnat::nat::Worker, frames: &[[u8; 60]], reps: u32, now: Time) {
    let mut scratch = [0u8; 1600];
    let mut i = 0usize;
    for _ in 0..reps / BATCH as u32 {
        let mut batch = [[0u8; 60]; BATCH];
        for f in &mut batch {
            *f = frames[i];
            i += 1;
            if i == frames.len() {
                i = 0;
            }
        }
        w.process_batch(
            Direction::Outbound,
            &mut batch,
            &[],
            now,
            &mut scratch,
            |_, v, _| {
                black_box(v);
            },
        );
    }
}

#[inline(never)]
fn profile_loop(w: &rnat::nat::Worker, frames: &[[u8; 60]], reps: u32, now: Time) {
    let mut scratch = [0u8; 1600];
    let mut i = 0usize;
    for _ in 0..reps {
        let mut f = frames[i];
        i += 1;
        if i == frames.len() {
            i = 0;
        }
        let v = w.process(
            Direction::Outbound,
            &mut f,
            FrameMeta::default(),
            now,
            &mut scratch,
        );
        black_box((v, f[26]));
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(4)).warm_up_time(Duration::from_secs(1));
    targets = established, new_sessions
}
fn main() {
    if let Ok(spec) = std::env::var("RNAT_PROFILE") {
        profile(&spec);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
