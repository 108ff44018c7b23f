//! Fuzz harnesses, shared by the cargo-fuzz targets in `fuzz/fuzz_targets/` (nightly, libFuzzer)
//! and by `tests/fuzz_corpus_replay.rs` (stable), which runs every file of the committed corpus
//! through exactly this code in CI.
//!
//! - [`packet_path`]: an engine with a live table; the input is a sequence of frames with
//!   direction, offload flags and time steps, run through `Worker::process` both ways with
//!   `Engine::expire` sweeps in between. Invariants are asserted after every frame.
//! - [`wire_views`]: every `wire` view, the offload helpers and fragmentation on arbitrary bytes.
//!
//! Only the public API of the `rnat` crate is used (the fuzz crate depends on it like any user).
#![allow(dead_code)]

use rnat::nat::{
    Config, Direction, DropReason, Engine, Filtering, FrameMeta, PortRange, Prefix, Time, Verdict,
};
use rnat::wire::checksum::{self, fold, pseudo_header, sum};
use rnat::wire::{Arp, Ethernet, Icmp, Ipv4, Tcp, Udp, frag, offload, proto};
use std::collections::HashMap;
use std::net::Ipv4Addr;

pub const PUBLIC: [[u8; 4]; 2] = [[203, 0, 113, 1], [203, 0, 113, 2]];
pub const GW_IN: [u8; 4] = [192, 168, 1, 1];
pub const H1: [u8; 4] = [192, 168, 1, 2];
pub const H2: [u8; 4] = [192, 168, 1, 3];
pub const SRV: [u8; 4] = [198, 51, 100, 20];
pub const SRV2: [u8; 4] = [198, 51, 100, 21];
const MAC_HOST: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const MAC_GW: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const L3: usize = 14;

// ------------------------------------------------------------------ input format

/// Header byte 0 of a `packet_path` input: the engine configuration.
pub mod cfg_bits {
    /// Bits 0-1: filtering (0 endpoint-independent, 1 address-dependent, else address-and-port).
    pub const FILTER_MASK: u8 = 0x03;
    /// 16 public ports only (1024-1031, 40000-40007): port exhaustion is reachable.
    pub const FEW_PORTS: u8 = 0x04;
    /// Outside and inside MTU 576: fragmentation-needed is reachable.
    pub const MTU_576: u8 = 0x08;
    /// Inbound packets do not refresh sessions.
    pub const NO_INBOUND_REFRESH: u8 = 0x10;
    /// Two public addresses.
    pub const TWO_PUBLIC: u8 = 0x20;
    /// No inside address configured (no ICMP errors generated towards the inside).
    pub const NO_INSIDE_ADDR: u8 = 0x40;
    /// A second inside prefix, 10.0.0.0/8.
    pub const TWO_PREFIXES: u8 = 0x80;
}

/// Header byte 1 of a `packet_path` input.
pub mod mode_bits {
    /// Feed frames through `Worker::process_batch` (one frame per batch) instead of `process`.
    pub const BATCH: u8 = 0x01;
    /// Do not prime the table with the fixed flows of [`super::prime_frames`].
    pub const NO_PRIME: u8 = 0x02;
    /// Per-subscriber quotas: 4 ports and 8 sessions per inside address.
    pub const QUOTAS: u8 = 0x04;
    /// Two port forwards (static mappings): tcp 1030 -> H1:22, udp 40006 -> H2:53.
    pub const FORWARDS: u8 = 0x08;
    /// Port-block allocation with blocks of 8 ports (RFC 6888 REQ-14); with FEW_PORTS, two more
    /// blocks (50000-50015).
    pub const BLOCKS: u8 = 0x10;
}

/// The control byte in front of each frame of a `packet_path` input.
pub mod rec_bits {
    /// Received on the outside (else on the inside).
    pub const INBOUND: u8 = 0x01;
    /// `FrameMeta::csum_partial`.
    pub const PARTIAL: u8 = 0x02;
    /// `FrameMeta::gso`.
    pub const GSO: u8 = 0x04;
    /// Bits 3-5: index into [`super::STEPS_MS`], the time advanced before the frame.
    pub const STEP_SHIFT: u8 = 3;
    /// Run `Engine::expire` after the frame and check the table.
    pub const EXPIRE: u8 = 0x40;
    /// Fix the IPv4 and transport checksums before processing (lets mutations reach deep paths).
    pub const FIX_CSUM: u8 = 0x80;
}

/// Time steps (milliseconds) selectable per frame: around every timer of the default config.
pub const STEPS_MS: [u64; 8] = [0, 1, 1_000, 30_000, 61_000, 241_000, 301_000, 7_441_000];

/// One frame of a `packet_path` input.
#[derive(Debug, Clone)]
pub struct Record {
    pub ctrl: u8,
    pub frame: Vec<u8>,
}

/// Encodes a `packet_path` input (used by the corpus generator).
pub fn encode(config: u8, mode: u8, recs: &[Record]) -> Vec<u8> {
    let mut v = vec![config, mode];
    for r in recs {
        v.push(r.ctrl);
        v.extend_from_slice(&(r.frame.len() as u16).to_le_bytes());
        v.extend_from_slice(&r.frame);
    }
    v
}

/// Decodes a `packet_path` input: header bytes, then `[ctrl, len_lo, len_hi, frame...]*`; a
/// length past the end takes what is left.
pub fn decode(data: &[u8]) -> (u8, u8, Vec<Record>) {
    let config = data.first().copied().unwrap_or(0);
    let mode = data.get(1).copied().unwrap_or(0);
    let mut rest = data.get(2..).unwrap_or_default();
    let mut recs = Vec::new();
    while let Some((&ctrl, r)) = rest.split_first() {
        let len = match r {
            [a, b, ..] => u16::from_le_bytes([*a, *b]) as usize,
            _ => 0,
        };
        let r = r.get(2..).unwrap_or_default();
        let n = len.min(r.len());
        recs.push(Record {
            ctrl,
            frame: r[..n].to_vec(),
        });
        rest = &r[n..];
    }
    (config, mode, recs)
}

/// The engine configuration selected by header bytes 0 (`cfg_bits`) and 1 (`mode_bits`).
pub fn config(c: u8, mode: u8) -> Config {
    let filtering = match c & cfg_bits::FILTER_MASK {
        0 => Filtering::EndpointIndependent,
        1 => Filtering::AddressDependent,
        _ => Filtering::AddressAndPortDependent,
    };
    let mut public_addrs = vec![Ipv4Addr::from(PUBLIC[0])];
    if c & cfg_bits::TWO_PUBLIC != 0 {
        public_addrs.push(Ipv4Addr::from(PUBLIC[1]));
    }
    let mut inside_prefixes = vec!["192.168.1.0/24".parse::<Prefix>().unwrap()];
    if c & cfg_bits::TWO_PREFIXES != 0 {
        inside_prefixes.push("10.0.0.0/8".parse::<Prefix>().unwrap());
    }
    let mtu = if c & cfg_bits::MTU_576 != 0 { 576 } else { 0 };
    Config {
        public_addrs,
        port_ranges: if c & cfg_bits::FEW_PORTS != 0 && mode & mode_bits::BLOCKS != 0 {
            // Blocks of 8: the two ranges of FEW_PORTS hold the forwards' ports (a block with a
            // forward's port is never claimable), so two more blocks for the priming hosts.
            vec![
                PortRange::new(1024, 1031),
                PortRange::new(40000, 40007),
                PortRange::new(50000, 50015),
            ]
        } else if c & cfg_bits::FEW_PORTS != 0 {
            vec![PortRange::new(1024, 1031), PortRange::new(40000, 40007)]
        } else {
            vec![PortRange::new(1024, 65535)]
        },
        inside_prefixes,
        inside_addr: (c & cfg_bits::NO_INSIDE_ADDR == 0).then(|| Ipv4Addr::from(GW_IN)),
        filtering_tcp: filtering,
        filtering_udp: filtering,
        filtering_icmp: filtering,
        inbound_refresh: c & cfg_bits::NO_INBOUND_REFRESH == 0,
        // One shard of 32 + 64 slack: a table-full is reachable within a few kilobytes of input.
        max_sessions: 32,
        shards: 1,
        outside_mtu: mtu,
        inside_mtu: mtu,
        max_ports_per_subscriber: if mode & mode_bits::QUOTAS != 0 { 4 } else { 0 },
        max_sessions_per_subscriber: if mode & mode_bits::QUOTAS != 0 { 8 } else { 0 },
        forwards: if mode & mode_bits::FORWARDS != 0 {
            ["tcp:1030=192.168.1.2:22", "udp:40006=192.168.1.3:53"]
                .iter()
                .map(|f| f.parse().expect("harness forward"))
                .collect()
        } else {
            Vec::new()
        },
        port_block_size: if mode & mode_bits::BLOCKS != 0 { 8 } else { 0 },
        ..Config::default()
    }
}

// ------------------------------------------------------------------ small frame builder

/// A minimal Ethernet/IPv4 frame with correct checksums: `proto` TCP (flags in `flags`), UDP, or
/// ICMP echo request (`sport` = identifier). Independent of the engine's own code paths.
pub fn build(
    proto_nr: u8,
    src: [u8; 4],
    sport: u16,
    dst: [u8; 4],
    dport: u16,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let l4_len = match proto_nr {
        proto::TCP => 20,
        _ => 8,
    } + payload.len();
    let mut f = Vec::with_capacity(34 + l4_len);
    f.extend_from_slice(&MAC_GW);
    f.extend_from_slice(&MAC_HOST);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&((20 + l4_len) as u16).to_be_bytes());
    f.extend_from_slice(&[0x12, 0x34, 0x40, 0, 64, proto_nr, 0, 0]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    match proto_nr {
        proto::TCP => {
            f.extend_from_slice(&sport.to_be_bytes());
            f.extend_from_slice(&dport.to_be_bytes());
            f.extend_from_slice(&[
                0, 0, 3, 232, 0, 0, 0, 0, 0x50, flags, 0xfa, 0xf0, 0, 0, 0, 0,
            ]);
        }
        proto::UDP => {
            f.extend_from_slice(&sport.to_be_bytes());
            f.extend_from_slice(&dport.to_be_bytes());
            f.extend_from_slice(&(l4_len as u16).to_be_bytes());
            f.extend_from_slice(&[0, 0]);
        }
        _ => {
            f.extend_from_slice(&[Icmp::ECHO_REQUEST, 0, 0, 0]);
            f.extend_from_slice(&sport.to_be_bytes());
            f.extend_from_slice(&[0, 1]);
        }
    }
    f.extend_from_slice(payload);
    fix_checksums(&mut f, false);
    f
}

/// The fixed flows an engine is primed with (outbound, at t = 1 s): the fuzzer's inbound frames
/// find live mappings without having to create them first.
pub fn prime_frames() -> Vec<Vec<u8>> {
    vec![
        build(proto::UDP, H1, 40000, SRV, 53, 0, b"prime"),
        build(proto::TCP, H1, 50000, SRV, 80, 0x02, b""),
        build(proto::ICMP, H1, 4000, SRV, 0, 0, b"abcdefgh"),
        build(proto::UDP, H2, 40000, SRV2, 123, 0, b"ntp"),
        build(proto::TCP, H2, 1025, SRV2, 443, 0x12, b""),
    ]
}

/// Recomputes the IPv4 header checksum and the transport checksum (a correct partial one with
/// `partial`) where the frame is parseable far enough. Never panics.
pub fn fix_checksums(f: &mut [u8], partial: bool) {
    let Some(ipb) = f.get(L3..) else { return };
    let Ok(ip) = Ipv4::new_checked(ipb) else {
        return;
    };
    let (hl, total, p, frag_) = (
        ip.header_len(),
        ip.total_len(),
        ip.protocol(),
        ip.is_fragment(),
    );
    let (src, dst) = (ip.src(), ip.dst());
    let mut ip = Ipv4::new_unchecked(&mut f[L3..]);
    ip.fill_checksum();
    if frag_ {
        return;
    }
    let seg = &mut f[L3 + hl..L3 + total];
    let at = match p {
        proto::TCP if seg.len() >= 20 => 16,
        proto::UDP if seg.len() >= 8 => 6,
        proto::ICMP if seg.len() >= 8 => {
            seg[2..4].copy_from_slice(&[0, 0]);
            let c = checksum::checksum(seg);
            seg[2..4].copy_from_slice(&c.to_be_bytes());
            return;
        }
        _ => return,
    };
    let ph = pseudo_header(src, dst, p, seg.len() as u16);
    let c = if partial {
        fold(ph)
    } else {
        seg[at..at + 2].copy_from_slice(&[0, 0]);
        let c = !fold(sum(seg) + ph);
        if c == 0 && p == proto::UDP { 0xffff } else { c }
    };
    seg[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

// ------------------------------------------------------------------ checks

/// One's-complement equality (0x0000 and 0xffff are both zero).
fn same_csum(a: u16, b: u16) -> bool {
    a == b || (a | b == 0xffff && (a == 0 || b == 0))
}

/// Transport checksum state of a non-fragment IPv4 TCP/UDP/ICMP frame: `Some(true)` when valid
/// (with `partial`, TCP/UDP: when the field holds the pseudo-header sum), `Some(false)` when not,
/// `None` when there is nothing to check (not parseable, fragment, UDP without checksum...).
pub fn l4_checksum_ok(f: &[u8], partial: bool) -> Option<bool> {
    let ip = Ipv4::new_checked(f.get(L3..)?).ok()?;
    if ip.is_fragment() {
        return None;
    }
    let seg = ip.payload();
    let ph = pseudo_header(ip.src(), ip.dst(), ip.protocol(), seg.len() as u16);
    match ip.protocol() {
        proto::ICMP => Some(Icmp::new_checked(seg).ok()?.verify_checksum()),
        proto::TCP => {
            let t = Tcp::new_checked(seg).ok()?;
            Some(if partial {
                same_csum(t.checksum(), fold(ph))
            } else {
                checksum::verify(seg, ph)
            })
        }
        proto::UDP => {
            let u = Udp::new_checked(seg).ok()?;
            if partial {
                Some(same_csum(u.checksum(), fold(ph)))
            } else if u.checksum() == 0 {
                None
            } else {
                Some(checksum::verify(seg, ph))
            }
        }
        _ => None,
    }
}

fn ip_checksum_ok(f: &[u8]) -> Option<bool> {
    Some(Ipv4::new_checked(f.get(L3..)?).ok()?.verify_checksum())
}

fn in_prefixes(c: &Config, a: u32) -> bool {
    c.inside_prefixes.iter().any(|p| p.contains(a))
}

fn is_public(c: &Config, a: u32) -> bool {
    c.public_addrs.iter().any(|p| u32::from(*p) == a)
}

fn addr(f: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([f[L3 + at], f[L3 + at + 1], f[L3 + at + 2], f[L3 + at + 3]])
}

/// Checks the table through the control-plane API: every session's inside endpoint is inside,
/// its public endpoint is a public address and an allowed port, no public endpoint has two
/// inside owners, and there are no more mappings than sessions.
fn check_table(e: &Engine, now: Time) {
    let c = e.config();
    let sessions = e.sessions(now);
    assert_eq!(
        sessions.len(),
        e.session_count(),
        "sessions() vs session_count()"
    );
    // Every mapping has a session, except the static ones of the port forwards.
    assert!(
        e.mapping_count() <= e.session_count() + c.forwards.len(),
        "more mappings ({}) than sessions ({})",
        e.mapping_count(),
        e.session_count()
    );
    let mut owners = HashMap::new();
    for s in &sessions {
        assert!(
            in_prefixes(c, u32::from(*s.inside.ip())),
            "session with an outside inside endpoint: {s:?}"
        );
        assert!(
            is_public(c, u32::from(*s.public.ip())),
            "session on a non-public address: {s:?}"
        );
        assert!(
            c.port_ranges.iter().any(|r| r.contains(s.public.port())),
            "session on a port outside the ranges: {s:?}"
        );
        let prev = owners.insert((s.proto, s.public), s.inside);
        assert!(
            prev.is_none_or(|p| p == s.inside),
            "public endpoint {} {:?} owned by {:?} and {:?}",
            s.proto.name(),
            s.public,
            prev,
            s.inside
        );
    }
}

/// What one `packet_path` run saw (for the replay test's summary).
#[derive(Debug, Default, Clone)]
pub struct PathSummary {
    pub frames: usize,
    pub forwarded: usize,
    pub hairpinned: usize,
    pub replies: usize,
    pub kernel: usize,
    /// `Verdict::Held` (an out-of-order fragment), or verdicts newer than this harness.
    pub other: usize,
    /// Fragments released by `Worker::take_released`.
    pub released: usize,
    pub drops: HashMap<&'static str, usize>,
}

/// The `packet_path` target. Panics (the fuzzer's crash) when an invariant breaks.
pub fn packet_path(data: &[u8]) -> PathSummary {
    let (c, mode, recs) = decode(data);
    let engine = Engine::new(config(c, mode)).expect("harness configs are valid");
    let w = engine.worker();
    let cfg = engine.config().clone();
    let mut scratch = vec![0u8; 1514];
    let mut now = Time::from_secs(1);
    let mut sum_ = PathSummary::default();
    if mode & mode_bits::NO_PRIME == 0 {
        for mut f in prime_frames() {
            let v = w.process(
                Direction::Outbound,
                &mut f,
                FrameMeta::default(),
                now,
                &mut scratch,
            );
            assert_eq!(v, Verdict::Forward, "priming flow refused");
        }
    }
    let base = engine.stats();
    let (mut n_drop, mut n_reply, mut n_kernel) = (0u64, 0u64, 0u64);
    let mut local_drops: HashMap<DropReason, u64> = HashMap::new();
    for r in recs {
        let dir = if r.ctrl & rec_bits::INBOUND != 0 {
            Direction::Inbound
        } else {
            Direction::Outbound
        };
        let meta = FrameMeta {
            csum_partial: r.ctrl & rec_bits::PARTIAL != 0,
            gso: r.ctrl & rec_bits::GSO != 0,
        };
        let step = STEPS_MS[((r.ctrl >> rec_bits::STEP_SHIFT) & 7) as usize];
        now = Time::from_nanos(now.as_nanos() + step * 1_000_000);
        let mut f = r.frame;
        if r.ctrl & rec_bits::FIX_CSUM != 0 {
            fix_checksums(&mut f, meta.csum_partial);
        }
        let orig = f.clone();
        let ip_ok = ip_checksum_ok(&f);
        let l4_ok = l4_checksum_ok(&f, meta.csum_partial);
        let v = if mode & mode_bits::BATCH != 0 {
            let mut got = None;
            let mut frames = [&mut f[..]];
            w.process_batch(
                dir,
                &mut frames,
                &[meta],
                now,
                &mut scratch,
                |i, v, reply| {
                    assert_eq!(i, 0);
                    if let Verdict::Reply(n) = v {
                        assert_eq!(reply.len(), n, "batch reply length");
                    }
                    got = Some(v);
                },
            );
            got.expect("process_batch reported the frame")
        } else {
            w.process(dir, &mut f, meta, now, &mut scratch)
        };
        sum_.frames += 1;
        // A catch-all arm keeps the harness building while the engine grows verdicts.
        #[allow(unreachable_patterns)]
        match v {
            Verdict::Forward | Verdict::Hairpin => {
                assert_eq!(f.len(), orig.len());
                let ip = Ipv4::new_checked(&f[L3..])
                    .unwrap_or_else(|e| panic!("{v:?} frame no longer parses: {e}"));
                let (src, dst) = (ip.src_u32(), ip.dst_u32());
                let (osrc, odst) = (addr(&orig, 12), addr(&orig, 16));
                match (v, dir) {
                    (Verdict::Forward, Direction::Outbound) => {
                        assert!(
                            !in_prefixes(&cfg, src),
                            "outbound Forward leaks inside source {}",
                            Ipv4Addr::from(src)
                        );
                        assert!(
                            is_public(&cfg, src),
                            "outbound Forward from non-public {}",
                            Ipv4Addr::from(src)
                        );
                        assert!(
                            in_prefixes(&cfg, osrc),
                            "outbound Forward of a spoofed source"
                        );
                    }
                    (Verdict::Forward, Direction::Inbound) => {
                        assert!(
                            in_prefixes(&cfg, dst),
                            "inbound Forward to non-inside {}",
                            Ipv4Addr::from(dst)
                        );
                        assert!(
                            is_public(&cfg, odst),
                            "inbound Forward not to a public address"
                        );
                    }
                    (Verdict::Hairpin, Direction::Outbound) => {
                        assert!(is_public(&cfg, src), "hairpin source not public");
                        assert!(in_prefixes(&cfg, dst), "hairpin destination not inside");
                    }
                    (Verdict::Hairpin, Direction::Inbound) => panic!("inbound Hairpin verdict"),
                    _ => unreachable!(),
                }
                if ip_ok == Some(true) {
                    assert!(ip.verify_checksum(), "{v:?} {dir:?}: IPv4 checksum broken");
                }
                if l4_ok == Some(true) {
                    assert_eq!(
                        l4_checksum_ok(&f, meta.csum_partial),
                        Some(true),
                        "{v:?} {dir:?}: transport checksum broken (partial {})",
                        meta.csum_partial
                    );
                }
                assert_eq!(
                    ip.ttl() as u16 + 1,
                    orig[L3 + 8] as u16,
                    "{v:?}: TTL must drop by one"
                );
                if v == Verdict::Forward {
                    sum_.forwarded += 1;
                } else {
                    sum_.hairpinned += 1;
                }
            }
            Verdict::Reply(n) => {
                n_reply += 1;
                sum_.replies += 1;
                assert!((L3 + 28..=scratch.len()).contains(&n), "reply length {n}");
                let rep = &scratch[..n];
                let ip = Ipv4::new_checked(&rep[L3..]).expect("reply parses");
                assert_eq!(ip.total_len(), n - L3, "reply IP length");
                assert!(ip.verify_checksum(), "reply IPv4 checksum");
                assert_eq!(ip.protocol(), proto::ICMP);
                let icmp = Icmp::new_checked(ip.payload()).expect("reply ICMP");
                assert!(
                    icmp.is_error() && icmp.verify_checksum(),
                    "reply ICMP checksum"
                );
                assert_eq!(
                    ip.dst_u32(),
                    addr(&orig, 12),
                    "reply goes back to the sender"
                );
                if dir == Direction::Inbound {
                    assert!(
                        !in_prefixes(&cfg, ip.src_u32()),
                        "reply to the outside from an inside address"
                    );
                }
                assert_ne!(ip.src_u32(), 0, "reply from 0.0.0.0");
            }
            Verdict::Kernel => {
                n_kernel += 1;
                sum_.kernel += 1;
                assert_eq!(f, orig, "a Kernel frame was modified");
            }
            Verdict::Drop(reason) => {
                n_drop += 1;
                *local_drops.entry(reason).or_default() += 1;
                *sum_.drops.entry(reason.name()).or_default() += 1;
            }
            _ => sum_.other += 1,
        }
        // Fragments held out of order and released by this frame: translated like the others.
        w.take_released(|d, fr| {
            sum_.released += 1;
            let Ok(ip) = Ipv4::new_checked(fr.get(L3..).unwrap_or_default()) else {
                panic!("released fragment does not parse");
            };
            assert!(ip.verify_checksum(), "released fragment IPv4 checksum");
            match d {
                Direction::Outbound => {
                    assert!(
                        is_public(&cfg, ip.src_u32()),
                        "released outbound fragment source"
                    );
                }
                Direction::Inbound => {
                    assert!(
                        in_prefixes(&cfg, ip.dst_u32()),
                        "released inbound fragment dst"
                    );
                }
            }
        });
        if r.ctrl & rec_bits::EXPIRE != 0 {
            engine.expire(now);
            check_table(&engine, now);
        }
    }
    // Every verdict was counted (fragment timeouts and evictions add drops of their own).
    let st = engine.stats();
    assert!(st.kernel - base.kernel >= n_kernel, "kernel counter");
    assert_eq!(
        st.icmp_generated - base.icmp_generated,
        n_reply,
        "icmp_generated counter"
    );
    let total = |s: &rnat::nat::Stats| s.drops.iter().map(|(_, n)| *n).sum::<u64>();
    assert!(
        total(&st) - total(&base) >= n_drop + n_reply,
        "every drop and every generated error counts one drop"
    );
    for (r, n) in local_drops {
        assert!(
            st.dropped(r) - base.dropped(r) >= n,
            "drop counter {}",
            r.name()
        );
    }
    check_table(&engine, now);
    // Nothing outlives its timers: a sweep far in the future empties the table.
    let later = now + std::time::Duration::from_secs(100_000);
    engine.expire(later);
    assert_eq!(
        engine.session_count(),
        0,
        "sessions left after every timer ran out"
    );
    assert_eq!(
        engine.mapping_count(),
        cfg.forwards.len(),
        "mappings left after every timer ran out (beyond the static forwards)"
    );
    // And the emptied table serves new flows again, once the freed ports have rested.
    let later = later + cfg.port_cooldown + std::time::Duration::from_secs(1);
    let mut f = build(proto::UDP, H1, 40001, SRV, 53, 0, b"after");
    let v = w.process(
        Direction::Outbound,
        &mut f,
        FrameMeta::default(),
        later,
        &mut scratch,
    );
    assert_eq!(v, Verdict::Forward, "a fresh flow after the sweep");
    sum_
}

// ------------------------------------------------------------------ wire_views

/// The `wire_views` target: input = 4 control bytes + the buffer.
pub fn wire_views(data: &[u8]) {
    let Some((ctl, b)) = data.split_first_chunk::<4>() else {
        return;
    };
    // Views at the start, after an Ethernet header, and at a chosen offset.
    for at in [0, L3, ctl[0] as usize % 64] {
        views_at(b.get(at..).unwrap_or_default());
    }
    // A chain as the engine walks it: Ethernet -> IPv4 -> transport.
    if let Ok(eth) = Ethernet::new_checked(b)
        && let Ok(ip) = Ipv4::new_checked(eth.payload())
    {
        let p = ip.payload();
        match ip.protocol() {
            proto::TCP => drop(Tcp::new_checked(p).map(|t| t.header_len())),
            proto::UDP => drop(Udp::new_checked(p).map(|u| u.len())),
            proto::ICMP => drop(Icmp::new_checked(p).map(|i| i.payload().len())),
            _ => {}
        }
    }
    offload_helpers(ctl, b);
    fragmentation(ctl, b);
    checksum_updates(ctl, b);
}

fn views_at(b: &[u8]) {
    let mut m = b.to_vec();
    if let Ok(e) = Ethernet::new_checked(b) {
        let _ = (e.dst(), e.src(), e.ethertype(), e.payload().len());
        let mut e = Ethernet::new_unchecked(&mut m[..]);
        e.set_dst([1; 6]);
        e.set_src([2; 6]);
        e.set_ethertype(0x0800);
        let _ = e.payload_mut().len();
    }
    if let Ok(a) = Arp::new_checked(b) {
        let _ = (
            a.operation(),
            a.sender_mac(),
            a.sender_ip(),
            a.target_mac(),
            a.target_ip(),
        );
        Arp::new_unchecked(&mut m[..]).fill(Arp::REPLY, [1; 6], [1; 4], [2; 6], [2; 4]);
    }
    let mut m = b.to_vec();
    if let Ok(ip) = Ipv4::new_checked(b) {
        let (hl, total) = (ip.header_len(), ip.total_len());
        assert!(20 <= hl && hl <= total && total <= b.len(), "Ipv4 contract");
        assert_eq!(ip.payload().len(), total - hl);
        assert_eq!(ip.header().len(), hl);
        let _ = (
            ip.dscp_ecn(),
            ip.ident(),
            ip.dont_frag(),
            ip.more_frags(),
            ip.frag_offset(),
            ip.is_fragment(),
            ip.ttl(),
            ip.protocol(),
            ip.checksum(),
            ip.src(),
            ip.dst(),
            ip.src_u32(),
            ip.dst_u32(),
            ip.verify_checksum(),
        );
        let mut ip = Ipv4::new_unchecked(&mut m[..]);
        ip.set_ttl(1);
        ip.set_ident(7);
        ip.set_frag_word(0x4000);
        ip.set_src_u32(1);
        ip.set_dst_u32(2);
        ip.fill_checksum();
        assert!(ip.verify_checksum(), "fill_checksum then verify");
        let _ = ip.payload_mut().len();
        ip.set_total_len(total as u16);
    }
    let mut m = b.to_vec();
    if let Ok(t) = Tcp::new_checked(b) {
        assert!(
            20 <= t.header_len() && t.header_len() <= b.len(),
            "Tcp contract"
        );
        let _ = (
            t.src_port(),
            t.dst_port(),
            t.seq(),
            t.ack(),
            t.flags(),
            t.checksum(),
        );
        let mut t = Tcp::new_unchecked(&mut m[..]);
        t.set_src_port(1);
        t.set_dst_port(2);
        t.set_checksum(3);
    }
    let mut m = b.to_vec();
    if let Ok(u) = Udp::new_checked(b) {
        assert!(8 <= u.len() && u.len() <= b.len(), "Udp contract");
        let _ = (u.src_port(), u.dst_port(), u.is_empty(), u.checksum());
        let mut u = Udp::new_unchecked(&mut m[..]);
        u.set_src_port(1);
        u.set_dst_port(2);
        u.set_checksum(3);
    }
    let mut m = b.to_vec();
    if let Ok(i) = Icmp::new_checked(b) {
        let _ = (
            i.msg_type(),
            i.code(),
            i.checksum(),
            i.ident(),
            i.seq(),
            i.is_query(),
            i.is_error(),
            i.verify_checksum(),
            i.payload().len(),
        );
        let mut i = Icmp::new_unchecked(&mut m[..]);
        i.set_type_code(3, 3);
        i.set_ident(9);
        i.set_rest(0x0102_0304);
        let _ = i.payload_mut().len();
        i.fill_checksum();
        assert!(i.verify_checksum(), "ICMP fill_checksum then verify");
    }
}

fn offload_helpers(ctl: &[u8; 4], b: &[u8]) {
    let l3 = offload::ipv4_offset(b);
    if let Some(l3) = l3 {
        assert!(l3 <= b.len());
    }
    let info = offload::l4_info(b);
    if let Ok(i) = info {
        assert!(
            i.l3 < i.l4 && i.l4 <= i.end && i.end <= b.len(),
            "l4_info bounds {i:?}"
        );
        assert!(
            i.l4 + i.csum_offset + 2 <= i.end,
            "l4_info checksum field {i:?}"
        );
    }
    if let Some((s, o)) = offload::looks_partial(b) {
        assert!(
            s as usize + o as usize + 2 <= b.len(),
            "looks_partial bounds"
        );
    }
    // Arbitrary offsets: an error or a write inside the buffer, never a panic.
    let mut m = b.to_vec();
    let _ = offload::complete_partial_checksum(&mut m, ctl[1] as usize * 2, ctl[2] as usize % 32);
    let _ = offload::complete_partial_checksum(&mut m, usize::MAX - 1, 16);
    let _ = offload::complete_partial_checksum(&mut m, 16, usize::MAX);
    // Filling makes the checksum verify; a correct partial completed makes it verify too.
    let mut m = b.to_vec();
    if offload::fill_l4_checksum(&mut m).is_ok() {
        let i = info.expect("fill_l4_checksum accepted what l4_info refused");
        assert_eq!(
            l4_checksum_at(&m, &i),
            Some(true),
            "fill_l4_checksum result does not verify"
        );
        let mut p = m.clone();
        let ph = pseudo_of(&p, &i);
        let at = i.l4 + i.csum_offset;
        p[at..at + 2].copy_from_slice(&fold(ph).to_be_bytes());
        if i.protocol == proto::TCP || fold(ph) != 0 {
            offload::complete_partial_checksum(&mut p, i.l4, i.csum_offset)
                .expect("complete a valid partial");
            assert_eq!(l4_checksum_at(&p, &i), Some(true), "completed partial");
        }
    }
    // Segmentation: every segment is a valid frame of at most mss payload bytes.
    let mss = (ctl[3] as usize) * 8;
    let mut buf = Vec::new();
    let mut n = 0;
    let r = offload::segment_tcp(b, mss, &mut buf, |seg| {
        n += 1;
        let i = offload::l4_info(seg).expect("segment parses");
        let doff = (seg[i.l4 + 12] >> 4) as usize * 4;
        assert!(i.end - i.l4 - doff <= mss, "segment larger than mss");
        assert!(ip_checksum_ok_at(seg, i.l3), "segment IPv4 checksum");
        assert_eq!(l4_checksum_at(seg, &i), Some(true), "segment TCP checksum");
    });
    if let Ok(k) = r {
        assert_eq!(k, n, "segment count");
    }
}

fn pseudo_of(f: &[u8], i: &offload::L4Info) -> u64 {
    let s = |k: usize| {
        [
            f[i.l3 + k],
            f[i.l3 + k + 1],
            f[i.l3 + k + 2],
            f[i.l3 + k + 3],
        ]
    };
    pseudo_header(s(12), s(16), i.protocol, (i.end - i.l4) as u16)
}

fn l4_checksum_at(f: &[u8], i: &offload::L4Info) -> Option<bool> {
    let seg = f.get(i.l4..i.end)?;
    Some(checksum::verify(seg, pseudo_of(f, i)))
}

fn ip_checksum_ok_at(f: &[u8], l3: usize) -> bool {
    Ipv4::new_checked(&f[l3..]).is_ok_and(|ip| ip.verify_checksum())
}

fn fragmentation(ctl: &[u8; 4], b: &[u8]) {
    let l3 = offload::ipv4_offset(b).unwrap_or(L3);
    let mtu = u16::from_le_bytes([ctl[1], ctl[2]]) as usize % 1600;
    let mut buf = Vec::new();
    let mut n = 0;
    let mut bytes = 0;
    let r = frag::fragment(b, l3, mtu, &mut buf, |fr| {
        n += 1;
        assert!(fr.len() <= l3 + mtu, "fragment over the MTU");
        let ip = Ipv4::new_checked(&fr[l3..]).expect("fragment parses");
        assert!(ip.verify_checksum(), "fragment IPv4 checksum");
        bytes += ip.payload().len();
    });
    if let Ok(k) = r {
        assert_eq!(k, n);
        let ip = Ipv4::new_checked(&b[l3..]).expect("fragmented a valid packet");
        assert_eq!(
            bytes,
            ip.payload().len(),
            "fragments carry the whole payload"
        );
    }
}

fn checksum_updates(ctl: &[u8; 4], b: &[u8]) {
    // RFC 1624: an incremental update equals a full recomputation (up to +0/-0).
    if b.len() < 8 || !b.len().is_multiple_of(2) {
        return;
    }
    let mut d = b.to_vec();
    let c0 = checksum::checksum(&d);
    let at = (ctl[0] as usize * 2) % (d.len() - 4);
    let old16 = u16::from_be_bytes([d[at], d[at + 1]]);
    let new16 = u16::from_be_bytes([ctl[1], ctl[2]]);
    d[at..at + 2].copy_from_slice(&new16.to_be_bytes());
    let inc = checksum::update16(c0, old16, new16);
    assert!(same_csum(inc, checksum::checksum(&d)), "update16");
    let c1 = checksum::checksum(&d);
    let old32 = u32::from_be_bytes([d[at], d[at + 1], d[at + 2], d[at + 3]]);
    let new32 = u32::from_be_bytes(*ctl);
    d[at..at + 4].copy_from_slice(&new32.to_be_bytes());
    let inc = checksum::update32(c1, old32, new32);
    assert!(same_csum(inc, checksum::checksum(&d)), "update32");
}
