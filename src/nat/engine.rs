//! The per-frame entry point: classify, look up or create the session, rewrite in place.

use super::config::{Config, ConfigError, Filtering, PortRange};
use super::stats::{Counter, DropReason, Stats, WorkerStats};
use super::synhold::{Holding, Key as SynKey, SynHold};
use super::table::{
    F_INBOUND_CREATED, M_STATIC, Shard, Table, give, map_hash, mix, owner_parts, owner_word,
    sess_hash, take,
};
use super::tcp::TcpState;
use super::{Direction, Proto, Time};
use crate::datapath::hint;
use crate::wire::bytes::{be16, be32, put16, put32};
use crate::wire::checksum;
use crate::wire::{Ethernet, Icmp, Ipv4, Tcp, Udp, ethertype, proto};
use parking_lot::Mutex;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

/// Frames per group in [`Worker::process_batch`]: enough to overlap the cache misses of a group,
/// few enough that its lines are still cached when the group is translated.
const BATCH: usize = 16;

/// Stage 1's result for one frame of a batch group: what stage 2 needs, hashes included, so they
/// are computed once for both stages.
#[derive(Clone, Copy)]
enum Ahead {
    /// Nothing to prefetch (not IPv4 TCP/UDP/ICMP, too short, not to a public address).
    Skip,
    Out {
        si: usize,
        h: u64,
        mh: u64,
        src: u32,
        sport: u16,
        proto: Proto,
    },
    In {
        pub_idx: u8,
        proto: Proto,
        dport: u16,
    },
}

/// What the datapath should do with a frame after [`Worker::process`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The frame was rewritten in place: send it out of the other interface.
    Forward,
    /// Drop the frame and send the reply of this many bytes, written at the start of the scratch
    /// buffer, back out of the interface the frame came in on.
    Reply(usize),
    /// Not NAT traffic (ARP, IPv6, traffic to the gateway itself): the host kernel handles it.
    Kernel,
    /// The frame was rewritten in place (hairpinning: from one inside host to another through its
    /// public mapping): send it back out of the interface it came in on.
    Hairpin,
    /// Drop the frame; the reason is counted.
    Drop(DropReason),
    /// A fragment that arrived before its first fragment: the engine kept a copy and will hand
    /// it, translated, to [`Worker::take_released`] (counted; nothing to send now).
    Held,
}

/// Offload state of a received frame, as the datapath learned it from the kernel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrameMeta {
    /// The L4 checksum field holds only the pseudo-header sum (Linux CHECKSUM_PARTIAL): the engine
    /// keeps it a correct partial sum, and whoever transmits completes it.
    pub csum_partial: bool,
    /// A GSO super-frame that the kernel will segment on transmit: exempt from the MTU check.
    /// (A packet over the MTU with DF clear is translated and forwarded: the datapath fragments it.)
    pub gso: bool,
}

/// One session as the control plane sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    pub proto: Proto,
    pub inside: SocketAddrV4,
    pub public: SocketAddrV4,
    pub remote: SocketAddrV4,
    /// TCP state name, or "ACTIVE" for UDP and ICMP.
    pub state: &'static str,
    pub idle: Duration,
    pub expires_in: Duration,
    pub pkts_out: u32,
    pub pkts_in: u32,
    pub bytes: u64,
    /// Opened by an inbound packet (endpoint-independent or address-dependent filtering).
    pub inbound_created: bool,
}

/// The shared NAT engine. Cheap to share (`Arc`); each datapath thread gets a [`Worker`].
pub struct Engine {
    cfg: Config,
    /// Port ranges split by RFC 4787 range class: [0..1023], [1024..65535].
    class_ranges: [Vec<PortRange>; 2],
    class_total: [u32; 2],
    pub(super) table: Table,
    workers: Mutex<Vec<Arc<WorkerStats>>>,
    /// What can change while running (`Engine::reconfigure`).
    pub(super) live: super::live::Live,
    /// The port forwards in effect.
    pub(super) forwards: Mutex<Vec<super::config::Forward>>,
    /// Unsolicited inbound SYNs waiting out the hold time (RFC 5382 REQ-4). Shared because the
    /// outbound SYN that cancels one may reach any worker.
    pub(super) syn_hold: SynHold,
    /// Lifetimes of the explicit (PCP/NAT-PMP) mappings; control plane only.
    pub(super) explicit: Mutex<super::portmap::Explicit>,
}

/// A datapath thread's handle on the engine, with its own counters.
pub struct Worker {
    engine: Arc<Engine>,
    pub(super) stats: Arc<WorkerStats>,
    /// Fragment tracker (RFC 4787 REQ-14); only this worker locks it.
    pub(super) frags: Mutex<super::fragment::Fragments>,
    /// Rate limit of generated ICMP errors: (second, errors sent in it).
    icmp_budget: std::cell::Cell<(u32, u32)>,
}

/// At most this many ICMP errors per second per worker about refused new flows (RFC 1812 asks
/// routers to rate-limit the errors they generate).
const ICMP_REFUSAL_RATE: u32 = 100;

pub(super) const L3: usize = Ethernet::HEADER_LEN;

/// What the classifier extracted from a translatable frame.
#[derive(Clone, Copy)]
pub(super) struct Flow {
    pub(super) proto: Proto,
    pub(super) l4: usize,
    pub(super) src: u32,
    pub(super) dst: u32,
    pub(super) sport: u16,
    pub(super) dport: u16,
    pub(super) tcp_flags: u8,
    pub(super) ip_len: usize,
    /// Outbound to one of the public addresses (RFC 4787 REQ-9).
    pub(super) hairpin: bool,
}

impl Engine {
    /// Builds the engine; all table memory is reserved here.
    pub fn new(cfg: Config) -> Result<Arc<Engine>, ConfigError> {
        cfg.validate()?;
        let classes = [PortRange::new(0, 1023), PortRange::new(1024, 65535)];
        let class_ranges: [Vec<PortRange>; 2] = std::array::from_fn(|c| {
            cfg.port_ranges
                .iter()
                .filter_map(|r| {
                    let (a, b) = (r.first.max(classes[c].first), r.last.min(classes[c].last));
                    (a <= b).then_some(PortRange::new(a, b))
                })
                .collect()
        });
        let class_total = std::array::from_fn(|c| class_ranges[c].iter().map(|r| r.len()).sum());
        let table = Table::new(&cfg);
        install_forwards(&cfg, &table)?;
        Ok(Arc::new(Engine {
            live: super::live::Live::new(&cfg),
            syn_hold: SynHold::new(cfg.syn_hold_capacity, table.seed),
            forwards: Mutex::new(cfg.forwards.clone()),
            explicit: Mutex::default(),
            cfg,
            class_ranges,
            class_total,
            table,
            workers: Mutex::new(Vec::new()),
        }))
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// A handle for one datapath thread.
    pub fn worker(self: &Arc<Self>) -> Worker {
        let stats = Arc::new(WorkerStats::default());
        self.workers.lock().push(stats.clone());
        Worker {
            engine: self.clone(),
            stats,
            frags: Mutex::new(super::fragment::Fragments::new(self.table.seed)),
            icmp_budget: std::cell::Cell::new((0, 0)),
        }
    }

    /// Counters summed over all workers.
    pub fn stats(&self) -> Stats {
        let w = self.workers.lock();
        Stats::sum(w.iter().map(|a| &**a))
    }

    #[inline]
    fn public_index(&self, a: u32) -> Option<u8> {
        self.table.addrs.public_index(a)
    }

    #[inline]
    fn in_port_ranges(&self, port: u16) -> bool {
        self.table.addrs.in_port_ranges(port)
    }

    #[inline]
    fn timeout(&self, proto: u8, state: u8) -> Duration {
        self.live.timeout(proto, state)
    }

    #[inline]
    pub(super) fn session_expired(&self, proto: u8, state: u8, last_seen: Time, now: Time) -> bool {
        self.expired(proto, state, last_seen, now)
    }

    /// The `last_seen` that gives a session hit by a RST now the transitory timer of the `Reset`
    /// state without ever lengthening its life (RFC 7857 §2.2): its deadline becomes
    /// min(current deadline, now + transitory). (A deadline less than the transitory time after
    /// the clock's origin cannot be kept exactly and becomes the transitory time; the gateway's
    /// engine clock starts at 30 days.)
    #[inline]
    fn after_rst(&self, proto: u8, state: u8, last_seen: Time, now: Time) -> Time {
        let deadline = last_seen + self.timeout(proto, state);
        let transitory = self.timeout(proto, TcpState::Reset as u8);
        let back = transitory.as_nanos().min(u64::MAX as u128) as u64;
        Time::from_nanos(deadline.as_nanos().saturating_sub(back)).min(now)
    }

    #[inline]
    fn expired(&self, proto: u8, state: u8, last_seen: Time, now: Time) -> bool {
        now >= last_seen + self.timeout(proto, state)
    }

    /// Number of live sessions.
    pub fn session_count(&self) -> usize {
        self.table
            .shards
            .iter()
            .map(|s| s.lock().sessions.live())
            .sum()
    }

    /// Number of live mappings.
    pub fn mapping_count(&self) -> usize {
        self.table
            .shards
            .iter()
            .map(|s| s.lock().mappings.live())
            .sum()
    }

    /// Unsolicited inbound SYNs held now (RFC 5382 REQ-4).
    pub fn held_syns(&self) -> usize {
        self.syn_hold.len()
    }

    /// Whether a TCP session between the public endpoint and the remote of `k` is live.
    fn has_live_session(&self, k: &SynKey, now: Time) -> bool {
        let t = &self.table;
        let Some(pub_idx) = self.public_index(k.pub_ip) else {
            return false;
        };
        let word = t.ports.owner(pub_idx, Proto::Tcp, k.pub_port);
        let Some((si, mid)) = owner_parts(word) else {
            return false;
        };
        let sh = t.shards[si & t.shard_mask].lock();
        if t.ports.owner(pub_idx, Proto::Tcp, k.pub_port) != word {
            return false;
        }
        let m = *sh.mappings.get(mid);
        sh.find_session(t.seed, proto::TCP, m.in_ip, m.in_port, k.rem_ip, k.rem_port)
            .is_some_and(|id| {
                let s = sh.sessions.get(id);
                !self.expired(s.proto, s.state, s.last_seen, now)
            })
    }

    /// Heap bytes reserved by the table (sessions, mappings, indexes, port space) and the
    /// held-SYN store.
    pub fn table_heap_bytes(&self) -> usize {
        self.table.heap_bytes() + self.syn_hold.heap_bytes()
    }

    /// Removes every session idle past its timeout, ending mappings left without sessions (their
    /// ports then rest for the cool-down), and unpins explicit mappings whose lifetime is over
    /// (see `portmap`). Returns how many sessions were removed. Called by the
    /// control plane about once a second; lookups already treat expired sessions as gone.
    pub fn expire(&self, now: Time) -> usize {
        self.expire_explicit(now);
        self.expire_blocks(now);
        let seed = self.table.seed;
        let mut removed = 0;
        for shard in self.table.shards.iter() {
            let mut sh = shard.lock();
            let n = sh.sessions.high_water();
            for id in 0..n as u32 {
                let s = *sh.sessions.get(id);
                if s.proto != 0 && self.expired(s.proto, s.state, s.last_seen, now) {
                    let freed = sh.remove_session(seed, id);
                    if let Some(m) = &freed {
                        self.release_port(m, now);
                    }
                    self.released(s.in_ip, freed.is_some());
                    removed += 1;
                }
            }
        }
        removed
    }

    /// Removes sessions whose inside address matches `inside` (all when `None`).
    pub fn flush(&self, inside: Option<Ipv4Addr>, now: Time) -> usize {
        let seed = self.table.seed;
        let mut removed = 0;
        for shard in self.table.shards.iter() {
            let mut sh = shard.lock();
            for id in 0..sh.sessions.high_water() as u32 {
                let s = *sh.sessions.get(id);
                if s.proto != 0 && inside.is_none_or(|a| u32::from(a) == s.in_ip) {
                    let freed = sh.remove_session(seed, id);
                    if let Some(m) = &freed {
                        self.release_port(m, now);
                    }
                    self.released(s.in_ip, freed.is_some());
                    removed += 1;
                }
            }
        }
        removed
    }

    fn release_port(&self, m: &super::table::Mapping, now: Time) {
        let until = (now + self.live.cooldown()).secs_u32().saturating_add(1);
        self.release_mapping_port(m, until);
    }

    /// A copy of the table for display (allocates; control plane only).
    pub fn sessions(&self, now: Time) -> Vec<SessionInfo> {
        let mut out = Vec::new();
        for shard in self.table.shards.iter() {
            let sh = shard.lock();
            for id in 0..sh.sessions.high_water() as u32 {
                let s = *sh.sessions.get(id);
                let Some(proto) = Proto::from_ip(s.proto) else {
                    continue;
                };
                let m = *sh.mappings.get(s.mapping);
                let timeout = self.timeout(s.proto, s.state);
                let idle = now.saturating_sub(s.last_seen);
                out.push(SessionInfo {
                    proto,
                    inside: SocketAddrV4::new(s.in_ip.into(), s.in_port),
                    public: SocketAddrV4::new(
                        self.cfg.public_addrs[m.pub_idx as usize],
                        m.pub_port,
                    ),
                    remote: SocketAddrV4::new(s.rem_ip.into(), s.rem_port),
                    state: TcpState::from_u8(s.state).map_or("ACTIVE", |t| t.name()),
                    idle,
                    expires_in: timeout.saturating_sub(idle),
                    pkts_out: s.pkts_out,
                    pkts_in: s.pkts_in,
                    bytes: s.bytes,
                    inbound_created: s.flags & F_INBOUND_CREATED != 0,
                });
            }
        }
        out
    }

    /// Chooses and claims a public port for a new mapping (RFC 4787 REQ-3/3a/4, RFC 6056).
    pub(super) fn claim_port(
        &self,
        sh: &mut Shard,
        pub_idx: u8,
        proto: Proto,
        want: u16,
        word: u32,
        now_s: u32,
    ) -> Option<u16> {
        // 1. Preserve the inside port when it is free.
        if self.in_port_ranges(want) && self.claim_single(pub_idx, proto, want, word, now_s) {
            return Some(want);
        }
        // 2. Same range class and parity, random.
        let class = (want >= 1024) as usize;
        let (ranges, total) = (&self.class_ranges[class], self.class_total[class]);
        let nth = |mut i: u32| -> u16 {
            for r in ranges {
                if i < r.len() {
                    return (r.first as u32 + i) as u16;
                }
                i -= r.len();
            }
            unreachable!("index below total")
        };
        if total > 0 {
            for _ in 0..16 {
                let p = nth((sh.next_random() % total as u64) as u32);
                let p = (p & !1) | (want & 1);
                if ranges.iter().any(|r| r.contains(p))
                    && self.claim_single(pub_idx, proto, p, word, now_s)
                {
                    return Some(p);
                }
            }
            // 3. Exhaustive from a random start: same class and parity first, then any parity.
            let start = (sh.next_random() % total as u64) as u32;
            for parity_matters in [true, false] {
                for i in 0..total {
                    let p = nth((start + i) % total);
                    if (!parity_matters || p & 1 == want & 1)
                        && self.claim_single(pub_idx, proto, p, word, now_s)
                    {
                        return Some(p);
                    }
                }
            }
        }
        // 4. The other class, rather than failing.
        let other = 1 - class;
        let (ranges, total) = (&self.class_ranges[other], self.class_total[other]);
        if total > 0 {
            let start = (sh.next_random() % total as u64) as u32;
            for i in 0..total {
                let mut j = (start + i) % total;
                let p = ranges
                    .iter()
                    .find_map(|r| {
                        if j < r.len() {
                            Some((r.first as u32 + j) as u16)
                        } else {
                            j -= r.len();
                            None
                        }
                    })
                    .unwrap_or(0);
                if p != 0 && self.claim_single(pub_idx, proto, p, word, now_s) {
                    return Some(p);
                }
            }
        }
        None
    }
}

impl Worker {
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Translates one Ethernet frame in place. `dir` says which interface it arrived on; `scratch`
    /// receives a generated reply (ICMP error) when the verdict is [`Verdict::Reply`]; 1514 bytes
    /// are enough. Never panics, whatever `frame` holds.
    #[inline]
    pub fn process(
        &self,
        dir: Direction,
        frame: &mut [u8],
        meta: FrameMeta,
        now: Time,
        scratch: &mut [u8],
    ) -> Verdict {
        let v = match dir {
            Direction::Outbound => self.outbound(frame, meta, now, scratch),
            Direction::Inbound => self.inbound(frame, meta, now, scratch),
        };
        match v {
            Verdict::Drop(r) => self.stats.count_drop(r),
            Verdict::Kernel => self.stats.bump(Counter::Kernel),
            Verdict::Reply(_) => self.stats.bump(Counter::IcmpGenerated),
            Verdict::Forward | Verdict::Hairpin | Verdict::Held => {}
        }
        v
    }

    /// Translates a batch of frames that arrived on the same interface, in order: the same as
    /// calling [`Worker::process`] on each, then `done(i, verdict, reply)` (`reply`: the generated
    /// frame for [`Verdict::Reply`], else empty) before the next frame. `metas[i]` is frame `i`'s
    /// offload state (missing entries: the default).
    ///
    /// On a table larger than a core's L2 (`Table::warm_batches`), the frames go through a
    /// software-prefetch pipeline, in groups of 16, that takes no lock and reads no record, so the
    /// cache misses of a group's lookups overlap instead of coming one after the other:
    /// 1. per frame, the keyed hashes (kept for stage 2), and a prefetch of the line the lookup
    ///    starts from (outbound: the session-index home slot; inbound: the port ownership word);
    ///    done for the next group before the current one is translated;
    /// 2. per frame, that (by now cached) line is read lock-free and the record it names is
    ///    prefetched (outbound: the session whose tag matches, or for a likely new flow the
    ///    mapping-index slot and the port word it will try to claim; inbound: the owner's mapping);
    /// 3. the frames are translated in order, by `process`.
    ///
    /// What the first two stages read is only a hint: it may be stale, and is never trusted.
    pub fn process_batch<F: AsMut<[u8]>>(
        &self,
        dir: Direction,
        frames: &mut [F],
        metas: &[FrameMeta],
        now: Time,
        scratch: &mut [u8],
        mut done: impl FnMut(usize, Verdict, &[u8]),
    ) {
        // A table that fits the caches has no misses to overlap: the stages would only cost.
        let warm = self.engine.table.warm_batches;
        let mut next = [Ahead::Skip; BATCH];
        if warm {
            let end = frames.len().min(BATCH);
            self.prefetch_first_group(dir, &mut frames[..end], &mut next);
        }
        let mut start = 0;
        while start < frames.len() {
            let end = frames.len().min(start + BATCH);
            if warm {
                // Stage 2 for this group (its first lines were fetched a group earlier, or just
                // now for the first group), then stage 1 for the next group, so that its lines
                // arrive while this one is translated.
                for a in &next[..end - start] {
                    self.prefetch_second(a);
                }
                let after = frames.len().min(end + BATCH);
                if end < after {
                    self.prefetch_first_group(dir, &mut frames[end..after], &mut next);
                }
            }
            for (k, f) in frames[start..end].iter_mut().enumerate() {
                let i = start + k;
                let meta = metas.get(i).copied().unwrap_or_default();
                let v = self.process(dir, f.as_mut(), meta, now, scratch);
                let reply = match v {
                    Verdict::Reply(n) => scratch.get(..n).unwrap_or_default(),
                    _ => &[],
                };
                done(i, v, reply);
            }
            start = end;
        }
    }

    /// Stage 1 of the batch pipeline for one group (at most [`BATCH`] frames): keys into `ahead`,
    /// first lines prefetched. No effects beyond the caches.
    #[inline]
    fn prefetch_first_group<F: AsMut<[u8]>>(
        &self,
        dir: Direction,
        frames: &mut [F],
        ahead: &mut [Ahead; BATCH],
    ) {
        for (a, f) in ahead.iter_mut().zip(frames.iter_mut()) {
            *a = self.ahead_key(dir, f.as_mut());
            self.prefetch_first(a);
        }
    }

    /// Stage 1's parse: the key of the frame's first table access, from a light parse (the full
    /// checks come in `process`; a frame they reject costs only a useless prefetch here).
    #[inline]
    fn ahead_key(&self, dir: Direction, f: &[u8]) -> Ahead {
        let Some(ip) = f.get(L3..L3 + 20) else {
            return Ahead::Skip;
        };
        let l4 = L3 + (ip[0] as usize & 15) * 4;
        let Some(ports) = f.get(l4..l4 + 8) else {
            return Ahead::Skip;
        };
        let (proto, p) = match ip[9] {
            proto::TCP => (Proto::Tcp, proto::TCP),
            proto::UDP => (Proto::Udp, proto::UDP),
            proto::ICMP => (Proto::Icmp, proto::ICMP),
            _ => return Ahead::Skip,
        };
        let (src, dst) = (be32(ip, 12), be32(ip, 16));
        let (sport, dport) = match proto {
            Proto::Icmp => (be16(ports, 4), be16(ports, 4)),
            _ => (be16(ports, 0), be16(ports, 2)),
        };
        let t = &self.engine.table;
        match dir {
            Direction::Outbound => {
                let mh = map_hash(t.seed, p, src, sport);
                Ahead::Out {
                    si: t.shard_of(mh),
                    h: sess_hash(t.seed, p, src, sport, dst, dport),
                    mh,
                    src,
                    sport,
                    proto,
                }
            }
            Direction::Inbound => match t.addrs.public_index(dst) {
                Some(pub_idx) => Ahead::In {
                    pub_idx,
                    proto,
                    dport,
                },
                None => Ahead::Skip,
            },
        }
    }

    /// Stage 1's prefetch: the line the lookup starts from. (Where the target has no prefetch,
    /// nothing: stage 2's loads, independent across the group, then overlap instead.)
    #[inline]
    fn prefetch_first(&self, a: &Ahead) {
        let t = &self.engine.table;
        match *a {
            Ahead::Out { si, h, .. } => {
                if let Some(v) = t.sess_views.get(si) {
                    hint::prefetch(v.home_addr(h));
                }
            }
            Ahead::In {
                pub_idx,
                proto,
                dport,
            } => hint::prefetch(t.ports.word_addr(pub_idx, proto, dport)),
            Ahead::Skip => {}
        }
    }

    /// Stage 2: reads the line stage 1 fetched (lock-free, a hint) and prefetches the record it
    /// names. Session and mapping records are only prefetched, never read, without their lock.
    #[inline]
    fn prefetch_second(&self, a: &Ahead) {
        let t = &self.engine.table;
        match *a {
            Ahead::Out {
                si,
                h,
                mh,
                src,
                sport,
                proto,
            } => {
                let cand = t.sess_views.get(si).and_then(|v| v.candidate(h));
                if let Some(rec) = cand.and_then(|id| t.sess_slabs.get(si)?.record(id)) {
                    // Likely an established flow: its session record is all it needs.
                    hint::prefetch_span(rec.0, rec.1);
                    return;
                }
                // Likely a new flow: it will look up its mapping and try to claim its own port on
                // the address paired with its source.
                if let Some(v) = t.map_views.get(si) {
                    hint::prefetch(v.home_addr(mh));
                }
                let n_pub = self.engine.cfg.public_addrs.len().max(1) as u64;
                let pub_idx = (mix(t.seed, src as u64, 0x9a1) % n_pub) as u8;
                hint::prefetch(t.ports.word_addr(pub_idx, proto, sport));
            }
            Ahead::In {
                pub_idx,
                proto,
                dport,
            } => {
                // The owner's mapping record; the session index slot after it needs the mapping's
                // contents (the inside endpoint), which only the lock may read.
                let owner = owner_parts(t.ports.owner(pub_idx, proto, dport));
                let rec =
                    owner.and_then(|(si, mid)| t.map_slabs.get(si & t.shard_mask)?.record(mid));
                if let Some((addr, len)) = rec {
                    hint::prefetch_span(addr, len);
                }
            }
            Ahead::Skip => {}
        }
    }

    /// Parses IPv4 + L4 far enough to translate. `Err(verdict)` for everything else.
    #[inline]
    fn classify(&self, f: &[u8], dir: Direction) -> Result<Flow, Verdict> {
        if f.len() < L3 || be16(f, 12) != ethertype::IPV4 {
            return Err(Verdict::Kernel);
        }
        let ip = Ipv4::new_checked(&f[L3..]).map_err(|_| Verdict::Drop(DropReason::Malformed))?;
        let (src, dst) = (ip.src_u32(), ip.dst_u32());
        let e = &self.engine;
        let sets = &e.table.addrs;
        match dir {
            // To a public address from inside: hairpinning (RFC 4787 REQ-9), checked below.
            Direction::Outbound if sets.is_local(dst) && sets.public_index(dst).is_none() => {
                return Err(Verdict::Kernel);
            }
            Direction::Inbound if sets.public_index(dst).is_none() => return Err(Verdict::Kernel),
            _ => {}
        }
        if !ipv4_checksum_ok(&f[L3..], ip.header_len()) {
            return Err(Verdict::Drop(DropReason::BadChecksum));
        }
        match dir {
            Direction::Outbound if !sets.is_inside_source(src) => {
                return Err(Verdict::Drop(DropReason::Spoofed));
            }
            // Public destinations are hairpinning, handled below.
            Direction::Outbound
                if sets.public_index(dst).is_none() && sets.is_martian_remote(dst) =>
            {
                return Err(Verdict::Drop(DropReason::Martian));
            }
            Direction::Inbound if sets.is_martian_remote(src) => {
                return Err(Verdict::Drop(DropReason::Spoofed));
            }
            _ => {}
        }
        let ip_len = ip.total_len();
        let l4 = L3 + ip.header_len();
        let seg = &f[l4..L3 + ip_len];
        let p = ip.protocol();
        if ip.is_fragment() {
            return Err(Verdict::Drop(DropReason::Fragment));
        }
        let malformed = |_| Verdict::Drop(DropReason::Malformed);
        let (proto, sport, dport, tcp_flags) = match p {
            proto::TCP => {
                let t = Tcp::new_checked(seg).map_err(malformed)?;
                (Proto::Tcp, t.src_port(), t.dst_port(), t.flags())
            }
            proto::UDP => {
                let u = Udp::new_checked(seg).map_err(malformed)?;
                (Proto::Udp, u.src_port(), u.dst_port(), 0)
            }
            proto::ICMP => {
                let i = Icmp::new_checked(seg).map_err(malformed)?;
                match (dir, i.msg_type()) {
                    (Direction::Outbound, Icmp::ECHO_REQUEST) => (Proto::Icmp, i.ident(), 0, 0),
                    (Direction::Inbound, Icmp::ECHO_REPLY) => (Proto::Icmp, 0, i.ident(), 0),
                    (_, _) if i.is_error() => {
                        return Err(Verdict::Drop(DropReason::UnsupportedIcmp));
                    }
                    (Direction::Inbound, _) => return Err(Verdict::Kernel),
                    (Direction::Outbound, _) => {
                        return Err(Verdict::Drop(DropReason::UnsupportedIcmp));
                    }
                }
            }
            _ if dir == Direction::Inbound => return Err(Verdict::Kernel),
            _ => return Err(Verdict::Drop(DropReason::UnsupportedProtocol)),
        };
        let hairpin = dir == Direction::Outbound && sets.public_index(dst).is_some();
        if (dir == Direction::Inbound || hairpin)
            && (!sets.in_port_ranges(dport) || (hairpin && proto == Proto::Icmp))
        {
            // The host's own traffic on the public address (ssh, apt, ping to the gateway...).
            return Err(Verdict::Kernel);
        }
        Ok(Flow {
            proto,
            l4,
            src,
            dst,
            sport,
            dport,
            tcp_flags,
            ip_len,
            hairpin,
        })
    }

    fn outbound(&self, f: &mut [u8], meta: FrameMeta, now: Time, scratch: &mut [u8]) -> Verdict {
        let fl = match self.classify(f, Direction::Outbound) {
            Ok(fl) => fl,
            Err(Verdict::Drop(DropReason::UnsupportedIcmp)) if super::icmp::is_icmp_error(f) => {
                return self.icmp_error(Direction::Outbound, f, now);
            }
            Err(Verdict::Drop(DropReason::Fragment)) => {
                return self.fragment(Direction::Outbound, f, meta, now);
            }
            Err(v) => return v,
        };
        let e = &*self.engine;
        if f[L3 + 8] <= 1 {
            return self.ttl_exceeded(
                f,
                fl.ip_len,
                e.cfg.inside_addr.map_or(0, u32::from),
                scratch,
            );
        }
        if fl.hairpin {
            return self.hairpin(f, &fl, meta, now);
        }
        let mtu = e.cfg.outside_mtu as usize;
        if mtu != 0 && fl.ip_len > mtu && !meta.gso && dont_frag(f) {
            return self.too_big(
                f,
                fl.ip_len,
                mtu,
                e.cfg.inside_addr.map_or(0, u32::from),
                scratch,
            );
        }
        let (pub_ip, pub_port) = match self.lookup_out(&fl, now) {
            Ok(x) => x,
            Err(r) => return self.refuse(f, &fl, r, now, scratch),
        };
        // RFC 5382 REQ-4: an outbound SYN for a connection whose inbound SYN is held (a
        // simultaneous open) cancels it silently. Free of locks while nothing is held.
        if fl.proto == Proto::Tcp
            && fl.tcp_flags & (Tcp::SYN | Tcp::ACK | Tcp::RST) == Tcp::SYN
            && e.syn_hold.cancel(SynKey {
                pub_ip,
                rem_ip: fl.dst,
                pub_port,
                rem_port: fl.dport,
            })
        {
            self.stats.bump(Counter::SynCancelled);
        }
        rewrite(
            f,
            fl.l4,
            fl.proto,
            Side::Src,
            pub_ip,
            pub_port,
            meta.csum_partial,
        );
        self.stats.bump(Counter::PktsOut);
        self.stats.add(Counter::BytesOut as usize, fl.ip_len as u64);
        Verdict::Forward
    }

    fn inbound(&self, f: &mut [u8], meta: FrameMeta, now: Time, scratch: &mut [u8]) -> Verdict {
        let fl = match self.classify(f, Direction::Inbound) {
            Ok(fl) => fl,
            Err(Verdict::Drop(DropReason::UnsupportedIcmp)) if super::icmp::is_icmp_error(f) => {
                return self.icmp_error(Direction::Inbound, f, now);
            }
            Err(Verdict::Drop(DropReason::Fragment)) => {
                return self.fragment(Direction::Inbound, f, meta, now);
            }
            Err(v) => return v,
        };
        if f[L3 + 8] <= 1 {
            return self.ttl_exceeded(f, fl.ip_len, fl.dst, scratch);
        }
        let (in_ip, in_port) = match self.lookup_in(&fl, now) {
            Ok(x) => x,
            Err(r) => {
                if matches!(r, DropReason::NoMapping | DropReason::Filtered)
                    && fl.proto == Proto::Tcp
                    && fl.tcp_flags & (Tcp::SYN | Tcp::ACK | Tcp::RST) == Tcp::SYN
                {
                    self.hold_syn(f, &fl, now);
                }
                return Verdict::Drop(r);
            }
        };
        let mtu = self.engine.cfg.inside_mtu as usize;
        if mtu != 0 && fl.ip_len > mtu && !meta.gso && dont_frag(f) {
            return self.too_big(f, fl.ip_len, mtu, fl.dst, scratch);
        }
        rewrite(
            f,
            fl.l4,
            fl.proto,
            Side::Dst,
            in_ip,
            in_port,
            meta.csum_partial,
        );
        self.stats.bump(Counter::PktsIn);
        self.stats.add(Counter::BytesIn as usize, fl.ip_len as u64);
        Verdict::Forward
    }

    /// Outbound: the session's public (address, port), creating mapping and session as needed.
    #[inline]
    pub(super) fn lookup_out(&self, fl: &Flow, now: Time) -> Result<(u32, u16), DropReason> {
        let e = &*self.engine;
        let t = &e.table;
        let seed = t.seed;
        let p = fl.proto.ip_number();
        let mh = map_hash(seed, p, fl.src, fl.sport);
        let si = t.shard_of(mh);
        let mut guard = t.shards[si].lock();
        let sh: &mut Shard = &mut guard;
        if let Some(id) = sh.find_session(seed, p, fl.src, fl.sport, fl.dst, fl.dport) {
            let s = sh.sessions.get_mut(id);
            if e.expired(s.proto, s.state, s.last_seen, now) {
                // Same 5-tuple after expiry: start the session afresh on its (still held) mapping.
                s.state = if p == proto::TCP {
                    TcpState::initial(Direction::Outbound, fl.tcp_flags) as u8
                } else {
                    0
                };
                s.pkts_out = 0;
                s.pkts_in = 0;
                s.bytes = 0;
                s.last_seen = now;
            } else if p == proto::TCP {
                if fl.tcp_flags & Tcp::RST != 0 {
                    // RFC 7857 §2.2: a RST never refreshes (before the state changes).
                    let kept = e.after_rst(s.proto, s.state, s.last_seen, now);
                    s.state = TcpState::Reset as u8;
                    s.last_seen = kept;
                } else {
                    s.state = TcpState::from_u8(s.state)
                        .map_or(TcpState::initial(Direction::Outbound, fl.tcp_flags), |st| {
                            st.next(Direction::Outbound, fl.tcp_flags)
                        }) as u8;
                    s.last_seen = now;
                }
            } else {
                s.last_seen = now;
            }
            s.pkts_out = s.pkts_out.wrapping_add(1);
            s.bytes = s.bytes.wrapping_add(fl.ip_len as u64);
            // The session carries its mapping's public endpoint: no mapping record read.
            return Ok((
                u32::from(e.cfg.public_addrs[s.pub_idx as usize]),
                s.pub_port,
            ));
        }
        let (mid, fresh) = match sh.find_mapping(seed, p, fl.src, fl.sport) {
            Some(m) => (m, false),
            None => {
                self.quota_take(fl.src, Quota::Port)?;
                // Paired pooling: an inside address always gets the same public address.
                let pub_idx =
                    (mix(seed, fl.src as u64, 0x9a1) % e.cfg.public_addrs.len() as u64) as u8;
                let Some(mid) = sh.add_mapping(seed, p, fl.src, fl.sport, pub_idx, 0) else {
                    self.quota_give(fl.src, Quota::Port);
                    return Err(DropReason::TableFull);
                };
                match e.claim_dynamic(
                    sh,
                    pub_idx,
                    fl.proto,
                    fl.src,
                    fl.sport,
                    owner_word(si, mid),
                    now.secs_u32(),
                ) {
                    Some(port) => sh.mappings.get_mut(mid).pub_port = port,
                    None => {
                        sh.drop_empty_mapping(seed, mid);
                        self.quota_give(fl.src, Quota::Port);
                        return Err(DropReason::NoPorts);
                    }
                }
                self.stats.bump(Counter::MappingsCreated);
                (mid, true)
            }
        };
        let state = if p == proto::TCP {
            TcpState::initial(Direction::Outbound, fl.tcp_flags) as u8
        } else {
            0
        };
        let added = self.quota_take(fl.src, Quota::Session).and_then(|()| {
            let s = sh.add_session(seed, mid, fl.dst, fl.dport, state, 0, now);
            if s.is_none() {
                self.quota_give(fl.src, Quota::Session);
            }
            s.ok_or(DropReason::TableFull)
        });
        let sid = match added {
            Ok(sid) => sid,
            Err(r) => {
                if fresh {
                    let m = *sh.mappings.get(mid);
                    sh.drop_empty_mapping(seed, mid);
                    e.release_mapping_port(&m, 0);
                    self.quota_give(fl.src, Quota::Port);
                }
                return Err(r);
            }
        };
        self.stats.bump(Counter::SessionsCreated);
        let s = sh.sessions.get_mut(sid);
        s.pkts_out = 1;
        s.bytes = fl.ip_len as u64;
        let m = sh.mappings.get(mid);
        Ok((
            u32::from(e.cfg.public_addrs[m.pub_idx as usize]),
            m.pub_port,
        ))
    }

    /// Inbound: the inside (address, port) for a packet to a public port, after filtering.
    #[inline]
    pub(super) fn lookup_in(&self, fl: &Flow, now: Time) -> Result<(u32, u16), DropReason> {
        let e = &*self.engine;
        let t = &e.table;
        let seed = t.seed;
        let p = fl.proto.ip_number();
        let pub_idx = e.public_index(fl.dst).ok_or(DropReason::NoMapping)?;
        let word = t.ports.owner(pub_idx, fl.proto, fl.dport);
        let (si, mid) = owner_parts(word).ok_or(DropReason::NoMapping)?;
        let mut guard = t.shards[si & t.shard_mask].lock();
        let sh: &mut Shard = &mut guard;
        // Re-check under the lock: the port may have been freed and reused meanwhile.
        if t.ports.owner(pub_idx, fl.proto, fl.dport) != word {
            return Err(DropReason::NoMapping);
        }
        let m = *sh.mappings.get(mid);
        let (in_ip, in_port) = (m.in_ip, m.in_port);
        let live = sh.find_session(seed, p, in_ip, in_port, fl.src, fl.sport);
        let live = live.filter(|&id| {
            let s = sh.sessions.get(id);
            !e.expired(s.proto, s.state, s.last_seen, now)
        });
        if let Some(id) = live {
            let refresh = e.live.inbound_refresh();
            let s = sh.sessions.get_mut(id);
            let rst = p == proto::TCP && fl.tcp_flags & Tcp::RST != 0;
            if rst {
                // RFC 7857 §2.2: a RST never refreshes (before the state changes).
                s.last_seen = e.after_rst(s.proto, s.state, s.last_seen, now);
                s.state = TcpState::Reset as u8;
            } else if p == proto::TCP {
                let st = TcpState::from_u8(s.state).unwrap_or(TcpState::SynIn);
                let next = st.next(Direction::Inbound, fl.tcp_flags);
                if next != st && st == TcpState::Reset {
                    // Traffic after a RST: it was not accepted, the connection lives on.
                    s.last_seen = now;
                }
                s.state = next as u8;
            }
            if refresh && !rst {
                s.last_seen = now;
            }
            s.pkts_in = s.pkts_in.wrapping_add(1);
            s.bytes = s.bytes.wrapping_add(fl.ip_len as u64);
            return Ok((in_ip, in_port));
        }
        // A port forward is open to everyone.
        let allowed = m.flags & M_STATIC != 0
            || match e.live.filtering(fl.proto) {
                Filtering::EndpointIndependent => true,
                Filtering::AddressDependent => sh.has_peer(seed, mid, fl.src),
                Filtering::AddressAndPortDependent => false,
            };
        if !allowed {
            return Err(DropReason::Filtered);
        }
        let state = if p == proto::TCP {
            TcpState::initial(Direction::Inbound, fl.tcp_flags) as u8
        } else {
            0
        };
        let id = match sh.find_session(seed, p, in_ip, in_port, fl.src, fl.sport) {
            Some(id) => {
                let s = sh.sessions.get_mut(id);
                s.state = state;
                s.flags |= F_INBOUND_CREATED;
                s.pkts_out = 0;
                s.bytes = 0;
                s.last_seen = now;
                id
            }
            None => {
                self.quota_take(in_ip, Quota::Session)?;
                let Some(id) =
                    sh.add_session(seed, mid, fl.src, fl.sport, state, F_INBOUND_CREATED, now)
                else {
                    self.quota_give(in_ip, Quota::Session);
                    return Err(DropReason::TableFull);
                };
                self.stats.bump(Counter::SessionsCreated);
                id
            }
        };
        let s = sh.sessions.get_mut(id);
        s.pkts_in = 1;
        s.bytes = fl.ip_len as u64;
        Ok((in_ip, in_port))
    }

    /// A new flow that cannot be given a port or a session (RFC 5508 REQ-8, RFC 6888 REQ-11): drop
    /// it and tell the sender with ICMP destination-unreachable code 13 (communication
    /// administratively prohibited), rate-limited. Existing sessions are not affected.
    fn refuse(&self, f: &[u8], fl: &Flow, r: DropReason, now: Time, scratch: &mut [u8]) -> Verdict {
        let from = self.engine.cfg.inside_addr.map_or(0, u32::from);
        let resource = matches!(
            r,
            DropReason::NoPorts | DropReason::TableFull | DropReason::Quota
        );
        if !resource || from == 0 || !self.icmp_allowed(now) {
            return Verdict::Drop(r);
        }
        let (t, c) = (Icmp::DEST_UNREACHABLE, Icmp::CODE_ADMIN_PROHIBITED);
        match icmp_error(scratch, f, fl.ip_len, t, c, 0, from) {
            Some(len) => {
                self.icmp_spent(now);
                self.stats.count_drop(r);
                Verdict::Reply(len)
            }
            None => Verdict::Drop(r),
        }
    }

    /// Whether the rate limit of generated ICMP errors about refused flows allows one more now.
    fn icmp_allowed(&self, now: Time) -> bool {
        let (sec, n) = self.icmp_budget.get();
        sec != now.secs_u32() || n < ICMP_REFUSAL_RATE
    }

    /// Counts one generated error against the rate limit.
    fn icmp_spent(&self, now: Time) {
        let (sec, n) = self.icmp_budget.get();
        let this = now.secs_u32();
        self.icmp_budget
            .set((this, if sec == this { n + 1 } else { 1 }));
    }

    /// Holds an unsolicited inbound SYN (RFC 5382 REQ-4); the caller drops the frame.
    fn hold_syn(&self, f: &[u8], fl: &Flow, now: Time) {
        let e = &*self.engine;
        let key = SynKey {
            pub_ip: fl.dst,
            rem_ip: fl.src,
            pub_port: fl.dport,
            rem_port: fl.sport,
        };
        let frame = &f[..(L3 + fl.ip_len).min(f.len())];
        match e
            .syn_hold
            .hold(key, frame, fl.ip_len, now + e.live.syn_hold())
        {
            Holding::Added => self.stats.bump(Counter::SynHeld),
            Holding::AlreadyHeld => {}
            Holding::Full => self.stats.bump(Counter::SynHoldFull),
        }
    }

    /// Unsolicited inbound SYNs whose hold time has passed without an outbound SYN for their
    /// connection (RFC 5382 REQ-4): for each, with the `reject` policy, an Ethernet frame carrying
    /// ICMP destination-unreachable, port-unreachable, from the public address to the remote and
    /// quoting the SYN's IP header and TCP header, is written into `scratch` and passed to `send`,
    /// to go out of the outside interface (addressed back to the MAC the SYN came from). With the
    /// `drop` policy, or past the ICMP rate limit, a held SYN is forgotten (counted). Handles at
    /// most `max` held SYNs; returns how many frames it passed to `send`. The datapath calls it
    /// periodically, traffic or not; without held SYNs it costs two atomic loads.
    pub fn take_unanswered_syns(
        &self,
        now: Time,
        scratch: &mut [u8],
        max: usize,
        mut send: impl FnMut(&[u8]),
    ) -> usize {
        let e = &*self.engine;
        let (mut cursor, mut sent) = (0, 0);
        for _ in 0..max {
            let Some(h) = e.syn_hold.pop_due(now, &mut cursor) else {
                break;
            };
            if e.has_live_session(&h.key, now) {
                // The connection opened meanwhile (the outbound SYN raced the hold).
                self.stats.bump(Counter::SynCancelled);
                continue;
            }
            if e.live.unsolicited_syn() == super::config::UnsolicitedSyn::Drop
                || !self.icmp_allowed(now)
            {
                self.stats.bump(Counter::SynForgotten);
                continue;
            }
            let (t, c) = (Icmp::DEST_UNREACHABLE, Icmp::CODE_PORT_UNREACHABLE);
            match icmp_error(scratch, h.frame(), h.ip_len as usize, t, c, 0, h.key.pub_ip) {
                Some(n) => {
                    self.icmp_spent(now);
                    self.stats.bump(Counter::SynRejected);
                    self.stats.bump(Counter::IcmpGenerated);
                    send(&scratch[..n]);
                    sent += 1;
                }
                None => self.stats.bump(Counter::SynForgotten),
            }
        }
        sent
    }

    fn ttl_exceeded(&self, f: &[u8], ip_len: usize, from: u32, scratch: &mut [u8]) -> Verdict {
        match icmp_error(scratch, f, ip_len, Icmp::TIME_EXCEEDED, 0, 0, from) {
            Some(n) if from != 0 => {
                self.stats.count_drop(DropReason::TtlExceeded);
                Verdict::Reply(n)
            }
            _ => Verdict::Drop(DropReason::TtlExceeded),
        }
    }

    fn too_big(
        &self,
        f: &[u8],
        ip_len: usize,
        mtu: usize,
        from: u32,
        scratch: &mut [u8],
    ) -> Verdict {
        let reply = (from != 0)
            .then(|| {
                let (t, c) = (Icmp::DEST_UNREACHABLE, Icmp::CODE_FRAG_NEEDED);
                icmp_error(scratch, f, ip_len, t, c, mtu as u32, from)
            })
            .flatten();
        if let Some(n) = reply {
            self.stats.count_drop(DropReason::TooBig);
            return Verdict::Reply(n);
        }
        Verdict::Drop(DropReason::TooBig)
    }
}

#[derive(Clone, Copy)]
pub(super) enum Quota {
    Port,
    Session,
}

impl Worker {
    /// Takes a port or a session for inside address `ip` (see `Engine::quota_take`).
    #[inline]
    fn quota_take(&self, ip: u32, q: Quota) -> Result<(), DropReason> {
        self.engine.quota_take(ip, q)
    }

    #[inline]
    fn quota_give(&self, ip: u32, q: Quota) {
        self.engine.quota_give(ip, q)
    }
}

impl Engine {
    /// Takes a port or a session for inside address `ip`: a session counts against the table's
    /// hard bound (`max_sessions`, `TableFull`) and against the subscriber's quota (`Quota`);
    /// a port against the subscriber's port quota. Without a configured session quota each
    /// subscriber may hold half of the table, so one host cannot starve the others.
    #[inline]
    pub(super) fn quota_take(&self, ip: u32, q: Quota) -> Result<(), DropReason> {
        if matches!(q, Quota::Session)
            && !take_usize(&self.table.live_sessions, self.cfg.max_sessions)
        {
            return Err(DropReason::TableFull);
        }
        let limit = match q {
            Quota::Port => match self.live.max_ports_per_subscriber.load(Relaxed) {
                0 => u32::MAX,
                n => n,
            },
            Quota::Session => match self.live.max_sessions_per_subscriber.load(Relaxed) {
                0 => (self.cfg.max_sessions / 2).clamp(1, u32::MAX as usize) as u32,
                n => n,
            },
        };
        let Some(sub) = self.table.subs.get(self.table.seed, ip) else {
            return Ok(());
        };
        let c = match q {
            Quota::Port => &sub.ports,
            Quota::Session => &sub.sessions,
        };
        if take(c, limit) {
            Ok(())
        } else {
            if let Quota::Session = q {
                give_usize(&self.table.live_sessions);
            }
            Err(DropReason::Quota)
        }
    }

    #[inline]
    pub(super) fn quota_give(&self, ip: u32, q: Quota) {
        if let Quota::Session = q {
            give_usize(&self.table.live_sessions);
        }
        if let Some(sub) = self.table.subs.get(self.table.seed, ip) {
            give(match q {
                Quota::Port => &sub.ports,
                Quota::Session => &sub.sessions,
            });
        }
    }

    /// Bookkeeping after `remove_session`: the session, and the mapping it freed if any.
    fn released(&self, in_ip: u32, freed_mapping: bool) {
        self.quota_give(in_ip, Quota::Session);
        if freed_mapping {
            self.quota_give(in_ip, Quota::Port);
        }
    }
}

fn take_usize(c: &std::sync::atomic::AtomicUsize, limit: usize) -> bool {
    c.fetch_update(Relaxed, Relaxed, |v| (v < limit).then_some(v + 1))
        .is_ok()
}

fn give_usize(c: &std::sync::atomic::AtomicUsize) {
    let _ = c.fetch_update(Relaxed, Relaxed, |v| v.checked_sub(1));
}

/// Creates the static mappings of the port forwards; their ports are claimed for good.
pub(super) fn install_forwards(cfg: &Config, table: &Table) -> Result<(), ConfigError> {
    for fw in &cfg.forwards {
        let name = || format!("{}:{}={}", fw.proto.name(), fw.public_port, fw.inside);
        let pub_idx = match fw.public_addr {
            Some(a) => cfg.public_addrs.iter().position(|x| *x == a).unwrap_or(0) as u8,
            None => 0,
        };
        let p = fw.proto.ip_number();
        let (ip, port) = (u32::from(*fw.inside.ip()), fw.inside.port());
        let si = table.shard_of(map_hash(table.seed, p, ip, port));
        let mut sh = table.shards[si].lock();
        if sh.find_mapping(table.seed, p, ip, port).is_some() {
            return Err(ConfigError::BadForward(
                name(),
                "the inside endpoint is forwarded twice",
            ));
        }
        let mid = sh
            .add_mapping(table.seed, p, ip, port, pub_idx, fw.public_port)
            .ok_or(ConfigError::BadCapacity)?;
        sh.mappings.get_mut(mid).flags = M_STATIC;
        if !super::blocks::claim_single(
            table,
            pub_idx,
            fw.proto,
            fw.public_port,
            owner_word(si, mid),
            0,
        ) {
            return Err(ConfigError::BadForward(
                name(),
                "the public port is already taken",
            ));
        }
    }
    Ok(())
}

#[inline]
fn dont_frag(f: &[u8]) -> bool {
    be16(f, L3 + 6) & Ipv4::FLAG_DF != 0
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    Src,
    Dst,
}

/// Rewrites one address and port (ICMP: the identifier), decrements the TTL, and updates the IPv4
/// and transport checksums incrementally. With `partial`, the transport checksum field holds a
/// pseudo-header sum and only the address change is folded into it.
#[inline]
pub(super) fn rewrite(
    f: &mut [u8],
    l4: usize,
    proto: Proto,
    side: Side,
    new_ip: u32,
    new_port: u16,
    partial: bool,
) {
    // Fixed-size views: one bounds check each, then constant offsets. `classify` guarantees the
    // lengths; a frame that somehow falls short is left as it is.
    let Some(Ok(ip)) = f.get_mut(L3..L3 + 20).map(<&mut [u8; 20]>::try_from) else {
        return;
    };
    let ip_off = if side == Side::Src { 12 } else { 16 };
    let old_ip = be32(ip, ip_off);
    put32(ip, ip_off, new_ip);
    let ttl = ip[8];
    let word_old = u16::from_be_bytes([ttl, ip[9]]);
    let word_new = u16::from_be_bytes([ttl.wrapping_sub(1), ip[9]]);
    ip[8] = ttl.wrapping_sub(1);
    let c = csum_upd16(csum_upd32(be16(ip, 10), old_ip, new_ip), word_old, word_new);
    put16(ip, 10, c);

    let (port_off, csum_off) = match (proto, side) {
        (Proto::Tcp, Side::Src) => (0, 16),
        (Proto::Tcp, Side::Dst) => (2, 16),
        (Proto::Udp, Side::Src) => (0, 6),
        (Proto::Udp, Side::Dst) => (2, 6),
        (Proto::Icmp, _) => (4, 2),
    };
    let Some(Ok(h)) = f.get_mut(l4..l4 + 18).map(<&mut [u8; 18]>::try_from) else {
        // Shorter than 18 bytes: UDP or ICMP in a minimal frame.
        if let Some(Ok(h)) = f.get_mut(l4..l4 + 8).map(<&mut [u8; 8]>::try_from) {
            l4_fix(
                h, proto, port_off, csum_off, old_ip, new_ip, new_port, partial,
            );
        }
        return;
    };
    l4_fix(
        h, proto, port_off, csum_off, old_ip, new_ip, new_port, partial,
    );
}

/// The transport half of [`rewrite`] on a header of `N` bytes (`N` covers both offsets).
#[inline(always)]
#[allow(clippy::too_many_arguments)] // the rewrite's inputs, all plain values
fn l4_fix<const N: usize>(
    h: &mut [u8; N],
    proto: Proto,
    port_off: usize,
    csum_off: usize,
    old_ip: u32,
    new_ip: u32,
    new_port: u16,
    partial: bool,
) {
    if port_off + 2 > N || csum_off + 2 > N {
        return;
    }
    let old_port = be16(h, port_off);
    put16(h, port_off, new_port);
    let old_c = be16(h, csum_off);
    let c = match proto {
        Proto::Icmp => csum_upd16(old_c, old_port, new_port),
        _ if partial => !csum_upd32(!old_c, old_ip, new_ip),
        Proto::Udp if old_c == 0 => 0,
        _ => {
            let c = csum_upd16(csum_upd32(old_c, old_ip, new_ip), old_port, new_port);
            if proto == Proto::Udp && c == 0 {
                0xffff
            } else {
                c
            }
        }
    };
    put16(h, csum_off, c);
}

/// [`Ipv4::verify_checksum`] with the common 20-byte header summed from a fixed-size array.
#[inline]
fn ipv4_checksum_ok(ip: &[u8], header_len: usize) -> bool {
    match ip.get(..20).map(<&[u8; 20]>::try_from) {
        Some(Ok(h)) if header_len == 20 => {
            let mut acc = 0u32;
            for i in 0..10 {
                acc += u16::from_be_bytes([h[2 * i], h[2 * i + 1]]) as u32;
            }
            fold2(acc) == 0xffff
        }
        _ => checksum::verify(ip.get(..header_len).unwrap_or_default(), 0),
    }
}

/// [`checksum::fold`] for sums below 2^32: two end-around-carry steps always suffice, so no loop.
#[inline(always)]
fn fold2(acc: u32) -> u16 {
    let a = (acc & 0xffff) + (acc >> 16);
    ((a & 0xffff) + (a >> 16)) as u16
}

/// [`checksum::update16`] (RFC 1624 eqn. 3), branch-free.
#[inline(always)]
fn csum_upd16(check: u16, old: u16, new: u16) -> u16 {
    !fold2((!check) as u32 + (!old) as u32 + new as u32)
}

/// [`checksum::update32`], branch-free.
#[inline(always)]
fn csum_upd32(check: u16, old: u32, new: u32) -> u16 {
    !fold2((!check) as u32 + (!old >> 16) + (!old & 0xffff) + (new >> 16) + (new & 0xffff))
}

/// Writes into `out` an Ethernet frame carrying an ICMP error about the IPv4 packet in `f`, sent
/// from `from` back to that packet's source (RFC 792; RFC 1812: quote as much as fits in 576
/// bytes). Returns its length, or `None` if `out` is too small.
fn icmp_error(
    out: &mut [u8],
    f: &[u8],
    ip_len: usize,
    typ: u8,
    code: u8,
    rest: u32,
    from: u32,
) -> Option<usize> {
    let quote = ip_len.min(576 - 28).min(f.len() - L3);
    let n = L3 + 28 + quote;
    if out.len() < n {
        return None;
    }
    out[0..6].copy_from_slice(&f[6..12]);
    out[6..12].copy_from_slice(&f[0..6]);
    put16(out, 12, ethertype::IPV4);
    let ip = &mut out[L3..L3 + 20];
    ip.copy_from_slice(&[
        0x45,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        64,
        proto::ICMP,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
    ]);
    put16(ip, 2, (28 + quote) as u16);
    put32(ip, 12, from);
    ip[16..20].copy_from_slice(&f[L3 + 12..L3 + 16]);
    let c = checksum::checksum(ip);
    put16(ip, 10, c);
    let icmp = &mut out[L3 + 20..n];
    icmp[0] = typ;
    icmp[1] = code;
    put16(icmp, 2, 0);
    put32(icmp, 4, rest);
    icmp[8..].copy_from_slice(&f[L3..L3 + quote]);
    let c = checksum::checksum(icmp);
    put16(icmp, 2, c);
    Some(n)
}
