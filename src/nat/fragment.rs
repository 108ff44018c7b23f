//! IPv4 fragments (RFC 4787 REQ-14/14a): translated in order and out of order, in bounded memory.
//!
//! Only the first fragment (offset 0, MF set) carries the transport header. It is translated like
//! an unfragmented packet (lookup or creation of the session, rewrite of address, port, TTL and
//! checksums: the transport checksum covers the whole datagram and sits in the first fragment,
//! so the incremental update is right for the reassembled datagram). Its outcome, the *fate* of
//! the datagram, is recorded in a per-worker tracker keyed by the received packet's (direction,
//! source, destination, protocol, identification):
//! - translate: later fragments get only their address (source outbound, destination inbound),
//!   TTL and IP header checksum rewritten, and are forwarded;
//! - kernel: the datagram is for the host itself (a port outside rnat's ranges, a protocol rnat
//!   does not translate inbound): later fragments get [`Verdict::Kernel`];
//! - drop: later fragments are dropped for the same reason as the first.
//!
//! A non-first fragment that arrives before its first fragment is copied into a preallocated pool
//! and gets [`Verdict::Held`]. When the first fragment arrives, the held fragments are translated
//! and queued for [`Worker::take_released`] (or freed, for the kernel and drop fates). Held
//! fragments whose first fragment does not come within [`TIMEOUT`] are dropped
//! (`fragment_timeout`).
//!
//! Bounds (RFC 4787 REQ-14a): [`ENTRIES`] tracked datagrams (a full probe window evicts the entry
//! that expires soonest), [`POOL`] held frames of at most [`SLOT`] bytes, at most [`PER_SOURCE`]
//! of them per source (sources hashed into [`BUCKETS`] buckets). Everything is allocated when the
//! worker is created; the work per fragment is bounded (a probe window, plus a sweep of
//! [`SWEEP`] entries, plus a full sweep at most every 100 ms when the pool is exhausted). A flood
//! of fragments costs only fragmented traffic (`fragment_limit`), never memory nor unfragmented
//! packets, which do not touch the tracker.

use super::engine::{Flow, L3, Side, Worker, rewrite};
use super::stats::{Counter, DropReason, WorkerStats};
use super::table::mix;
use super::{Direction, FrameMeta, Proto, Time, Verdict};
use crate::wire::bytes::{be16, be32};
use crate::wire::checksum::{update16, update32};
use crate::wire::{Icmp, proto};
use std::time::Duration;

/// How long a datagram's fate and its held fragments are kept after its last fragment.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// Tracked datagrams per worker (a power of two).
pub const ENTRIES: usize = 1024;
/// Slots probed for one key.
const PROBE: usize = 8;
/// Held (out-of-order) frames per worker.
pub const POOL: usize = 256;
/// Largest frame (Ethernet header included) that can be held.
pub const SLOT: usize = 2048;
/// Held frames per source bucket.
pub const PER_SOURCE: u16 = 64;
/// Source buckets for [`PER_SOURCE`].
pub const BUCKETS: usize = 256;
/// Entries checked for expiry per fragment.
const SWEEP: usize = 4;
/// Minimum interval between full sweeps (only when the pool is exhausted).
const FULL_SWEEP_EVERY: Duration = Duration::from_millis(100);
const NONE: u16 = u16::MAX;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fate {
    Free,
    /// Fragments held, first fragment not seen yet.
    Pending,
    /// Rewrite the address (source outbound, destination inbound) to this one.
    Translate(u32),
    Kernel,
    Drop(DropReason),
}

#[derive(Clone, Copy)]
struct Entry {
    fate: Fate,
    dir: Direction,
    src: u32,
    dst: u32,
    id: u16,
    proto: u8,
    expires: Time,
    /// First held slot (a list through [`Slot::next`]), or [`NONE`].
    head: u16,
}

const FREE_ENTRY: Entry = Entry {
    fate: Fate::Free,
    dir: Direction::Outbound,
    src: 0,
    dst: 0,
    id: 0,
    proto: 0,
    expires: Time::ZERO,
    head: NONE,
};

#[derive(Clone, Copy)]
struct Slot {
    len: u16,
    next: u16,
    bucket: u8,
    dir: Direction,
}

/// A received fragment's key.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Key {
    dir: Direction,
    src: u32,
    dst: u32,
    id: u16,
    proto: u8,
}

impl Entry {
    fn is(&self, k: &Key) -> bool {
        self.fate != Fate::Free
            && self.dir == k.dir
            && self.src == k.src
            && self.dst == k.dst
            && self.id == k.id
            && self.proto == k.proto
    }
}

/// Why held frames are freed without being released.
#[derive(Clone, Copy)]
enum Discard {
    Drop(DropReason),
    Kernel,
}

/// The per-worker fragment tracker. All memory is reserved in [`Fragments::new`].
pub(super) struct Fragments {
    seed: u64,
    entries: Box<[Entry]>,
    data: Box<[u8]>,
    slots: Box<[Slot]>,
    /// Free slots (a stack; capacity [`POOL`], never exceeded).
    free: Vec<u16>,
    /// Slots translated and waiting for [`Worker::take_released`] (capacity [`POOL`]).
    released: Vec<u16>,
    per_source: [u16; BUCKETS],
    cursor: usize,
    last_full_sweep: Option<Time>,
}

impl Fragments {
    pub(super) fn new(seed: u64) -> Fragments {
        Fragments {
            seed,
            entries: vec![FREE_ENTRY; ENTRIES].into_boxed_slice(),
            data: vec![0u8; POOL * SLOT].into_boxed_slice(),
            slots: vec![
                Slot {
                    len: 0,
                    next: NONE,
                    bucket: 0,
                    dir: Direction::Outbound,
                };
                POOL
            ]
            .into_boxed_slice(),
            free: (0..POOL as u16).rev().collect(),
            released: Vec::with_capacity(POOL),
            per_source: [0; BUCKETS],
            cursor: 0,
            last_full_sweep: None,
        }
    }

    fn home(&self, k: &Key) -> usize {
        let a = ((k.src as u64) << 32) | k.dst as u64;
        let b = ((k.id as u64) << 16) | ((k.proto as u64) << 8) | k.dir as u64;
        (mix(self.seed, a, b) % ENTRIES as u64) as usize
    }

    fn bucket(&self, src: u32) -> u8 {
        mix(self.seed, src as u64, 0xf4a9) as u8
    }

    /// Frees an entry and its held frames, counting each frame as `why`.
    fn clear(&mut self, i: usize, why: Discard, stats: &WorkerStats) {
        let mut s = self.entries[i].head;
        while s != NONE {
            let next = self.slots[s as usize].next;
            match why {
                Discard::Drop(r) => stats.count_drop(r),
                Discard::Kernel => stats.bump(Counter::Kernel),
            }
            self.free_slot(s);
            s = next;
        }
        self.entries[i] = FREE_ENTRY;
    }

    fn free_slot(&mut self, s: u16) {
        let b = self.slots[s as usize].bucket as usize;
        self.per_source[b] = self.per_source[b].saturating_sub(1);
        self.free.push(s);
    }

    /// Ends entry `i` if it has expired.
    fn expire_one(&mut self, i: usize, now: Time, stats: &WorkerStats) {
        let e = &self.entries[i];
        if e.fate != Fate::Free && now >= e.expires {
            self.clear(i, Discard::Drop(DropReason::FragmentTimeout), stats);
        }
    }

    /// Checks the next [`SWEEP`] entries for expiry.
    fn sweep(&mut self, now: Time, stats: &WorkerStats) {
        for _ in 0..SWEEP {
            self.expire_one(self.cursor, now, stats);
            self.cursor = (self.cursor + 1) % ENTRIES;
        }
    }

    fn find(&mut self, k: &Key, now: Time, stats: &WorkerStats) -> Option<usize> {
        let h = self.home(k);
        for j in 0..PROBE {
            let i = (h + j) % ENTRIES;
            if self.entries[i].is(k) {
                self.expire_one(i, now, stats);
                return self.entries[i].is(k).then_some(i);
            }
        }
        None
    }

    /// The entry for `k`, created (pending) when missing; evicts the entry of the probe window
    /// that expires soonest when the window is full.
    fn find_or_insert(&mut self, k: &Key, now: Time, stats: &WorkerStats) -> usize {
        if let Some(i) = self.find(k, now, stats) {
            return i;
        }
        let h = self.home(k);
        let mut victim = h % ENTRIES;
        for j in 0..PROBE {
            let i = (h + j) % ENTRIES;
            self.expire_one(i, now, stats);
            if self.entries[i].fate == Fate::Free {
                victim = i;
                break;
            }
            if self.entries[i].expires < self.entries[victim].expires {
                victim = i;
            }
        }
        if self.entries[victim].fate != Fate::Free {
            self.clear(victim, Discard::Drop(DropReason::FragmentLimit), stats);
        }
        self.entries[victim] = Entry {
            fate: Fate::Pending,
            dir: k.dir,
            src: k.src,
            dst: k.dst,
            id: k.id,
            proto: k.proto,
            expires: now + TIMEOUT,
            head: NONE,
        };
        victim
    }

    /// Copies `f` into the pool under a pending entry for `k`.
    fn hold(&mut self, k: &Key, f: &[u8], now: Time, stats: &WorkerStats) -> Verdict {
        if f.len() > SLOT {
            return Verdict::Drop(DropReason::FragmentLimit);
        }
        let b = self.bucket(k.src);
        if self.per_source[b as usize] >= PER_SOURCE {
            return Verdict::Drop(DropReason::FragmentLimit);
        }
        if self.free.is_empty()
            && self
                .last_full_sweep
                .is_none_or(|t| now >= t + FULL_SWEEP_EVERY)
        {
            self.last_full_sweep = Some(now);
            for i in 0..ENTRIES {
                self.expire_one(i, now, stats);
            }
        }
        let Some(s) = self.free.pop() else {
            return Verdict::Drop(DropReason::FragmentLimit);
        };
        let i = self.find_or_insert(k, now, stats);
        let e = &mut self.entries[i];
        self.slots[s as usize] = Slot {
            len: f.len() as u16,
            next: e.head,
            bucket: b,
            dir: k.dir,
        };
        e.head = s;
        e.expires = now + TIMEOUT;
        self.per_source[b as usize] += 1;
        let at = s as usize * SLOT;
        self.data[at..at + f.len()].copy_from_slice(f);
        stats.bump(Counter::FragHeld);
        Verdict::Held
    }

    /// Records the fate decided by a first fragment and settles the fragments held for it.
    fn settle(&mut self, k: &Key, fate: Fate, now: Time, stats: &WorkerStats) {
        let i = self.find_or_insert(k, now, stats);
        let e = &mut self.entries[i];
        e.fate = fate;
        e.expires = now + TIMEOUT;
        let mut s = std::mem::replace(&mut e.head, NONE);
        while s != NONE {
            let slot = self.slots[s as usize];
            let next = slot.next;
            let at = s as usize * SLOT;
            let frame = &mut self.data[at..at + slot.len as usize];
            let outcome = match fate {
                Fate::Translate(addr) if frame[L3 + 8] > 1 => {
                    translate_ip(frame, k.dir, addr);
                    count_translated(stats, k.dir, frame);
                    None
                }
                Fate::Translate(_) => Some(Discard::Drop(DropReason::TtlExceeded)),
                Fate::Kernel => Some(Discard::Kernel),
                Fate::Drop(r) => Some(Discard::Drop(r)),
                Fate::Free | Fate::Pending => Some(Discard::Drop(DropReason::FragmentLimit)),
            };
            match outcome {
                None => {
                    stats.bump(Counter::FragReleased);
                    self.released.push(s);
                }
                Some(Discard::Drop(r)) => {
                    stats.count_drop(r);
                    self.free_slot(s);
                }
                Some(Discard::Kernel) => {
                    stats.bump(Counter::Kernel);
                    self.free_slot(s);
                }
            }
            s = next;
        }
    }
}

/// Rewrites the address of a non-first fragment (source outbound, destination inbound),
/// decrements the TTL and updates the IPv4 header checksum. `f` holds at least a 20-byte header.
fn translate_ip(f: &mut [u8], dir: Direction, new: u32) {
    let at = L3 + if dir == Direction::Outbound { 12 } else { 16 };
    let old = be32(f, at);
    f[at..at + 4].copy_from_slice(&new.to_be_bytes());
    let ttl = f[L3 + 8];
    let (w_old, w_new) = (
        u16::from_be_bytes([ttl, f[L3 + 9]]),
        u16::from_be_bytes([ttl - 1, f[L3 + 9]]),
    );
    f[L3 + 8] = ttl - 1;
    let c = update16(update32(be16(f, L3 + 10), old, new), w_old, w_new);
    f[L3 + 10..L3 + 12].copy_from_slice(&c.to_be_bytes());
}

fn count_translated(stats: &WorkerStats, dir: Direction, f: &[u8]) {
    let len = be16(f, L3 + 2) as u64;
    let (p, b) = match dir {
        Direction::Outbound => (Counter::PktsOut, Counter::BytesOut),
        Direction::Inbound => (Counter::PktsIn, Counter::BytesIn),
    };
    stats.bump(p);
    stats.add(b as usize, len);
}

impl Worker {
    /// A fragment that [`Worker::process`]'s classifier accepted as far as the IP header (valid,
    /// checksum right, not for the host on a non-public address, not spoofed).
    pub(super) fn fragment(
        &self,
        dir: Direction,
        f: &mut [u8],
        meta: FrameMeta,
        now: Time,
    ) -> Verdict {
        let Some(ip) = f.get(L3..L3 + 20) else {
            return Verdict::Drop(DropReason::Malformed);
        };
        let word = be16(ip, 6);
        let offset = (word & 0x1fff) as usize * 8;
        let key = Key {
            dir,
            src: be32(ip, 12),
            dst: be32(ip, 16),
            id: be16(ip, 4),
            proto: ip[9],
        };
        if offset == 8 && key.proto == proto::TCP {
            // RFC 1858: an offset of 8 bytes can only serve to overwrite TCP flags.
            return Verdict::Drop(DropReason::Malformed);
        }
        let ttl = ip[8];
        let stats = &*self.stats;
        let mut fr = self.frags.lock();
        fr.sweep(now, stats);
        if offset == 0 {
            let (v, fate) = if ttl <= 1 {
                let r = DropReason::TtlExceeded;
                (Verdict::Drop(r), Fate::Drop(r))
            } else {
                self.first_fragment(dir, f, meta, now)
            };
            fr.settle(&key, fate, now, stats);
            return v;
        }
        match fr.find(&key, now, stats).map(|i| fr.entries[i].fate) {
            Some(Fate::Translate(_)) | None | Some(Fate::Pending) if ttl <= 1 => {
                Verdict::Drop(DropReason::TtlExceeded)
            }
            Some(Fate::Translate(addr)) => {
                translate_ip(f, dir, addr);
                count_translated(stats, dir, f);
                Verdict::Forward
            }
            Some(Fate::Kernel) => Verdict::Kernel,
            Some(Fate::Drop(r)) => Verdict::Drop(r),
            Some(Fate::Pending) | Some(Fate::Free) | None => {
                let len = L3 + be16(f, L3 + 2) as usize;
                fr.hold(&key, &f[..len.min(f.len())], now, stats)
            }
        }
    }

    /// Translates a first fragment; returns its verdict and the fate of its datagram.
    fn first_fragment(
        &self,
        dir: Direction,
        f: &mut [u8],
        meta: FrameMeta,
        now: Time,
    ) -> (Verdict, Fate) {
        let drop = |r| (Verdict::Drop(r), Fate::Drop(r));
        let kernel = (Verdict::Kernel, Fate::Kernel);
        let ihl = (f[L3] as usize & 15) * 4;
        let ip_len = be16(f, L3 + 2) as usize;
        let l4 = L3 + ihl;
        let Some(seg) = f.get(l4..L3 + ip_len) else {
            return drop(DropReason::Malformed);
        };
        let (src, dst) = (be32(f, L3 + 12), be32(f, L3 + 16));
        let (proto, sport, dport, tcp_flags) = match f[L3 + 9] {
            // RFC 1858: a first fragment must hold the whole TCP header.
            proto::TCP if seg.len() >= 20 && seg.len() >= (seg[12] >> 4) as usize * 4 => {
                (Proto::Tcp, be16(seg, 0), be16(seg, 2), seg[13])
            }
            proto::UDP if seg.len() >= 8 => (Proto::Udp, be16(seg, 0), be16(seg, 2), 0),
            proto::ICMP if seg.len() >= Icmp::HEADER_LEN => match (dir, seg[0]) {
                (Direction::Outbound, Icmp::ECHO_REQUEST) => (Proto::Icmp, be16(seg, 4), 0, 0),
                (Direction::Inbound, Icmp::ECHO_REPLY) => (Proto::Icmp, 0, be16(seg, 4), 0),
                (Direction::Inbound, _) => return kernel,
                (Direction::Outbound, _) => return drop(DropReason::UnsupportedIcmp),
            },
            proto::TCP | proto::UDP | proto::ICMP => return drop(DropReason::Malformed),
            _ if dir == Direction::Inbound => return kernel,
            _ => return drop(DropReason::UnsupportedProtocol),
        };
        let addrs = &self.engine().table.addrs;
        let hairpin = dir == Direction::Outbound && addrs.public_index(dst).is_some();
        if (dir == Direction::Inbound || hairpin)
            && (!addrs.in_port_ranges(dport) || (hairpin && proto == Proto::Icmp))
        {
            // The host's own traffic on the public address.
            return kernel;
        }
        if hairpin {
            // Hairpinned fragmented datagrams are not translated (yet).
            return drop(DropReason::Fragment);
        }
        let fl = Flow {
            proto,
            l4,
            src,
            dst,
            sport,
            dport,
            tcp_flags,
            ip_len,
            hairpin: false,
        };
        let (side, found) = match dir {
            Direction::Outbound => (Side::Src, self.lookup_out(&fl, now)),
            Direction::Inbound => (Side::Dst, self.lookup_in(&fl, now)),
        };
        let (addr, port) = match found {
            Ok(x) => x,
            Err(r) => return drop(r),
        };
        rewrite(f, l4, proto, side, addr, port, meta.csum_partial);
        count_translated(&self.stats, dir, f);
        (Verdict::Forward, Fate::Translate(addr))
    }

    /// Frames held now (out of order, or released and not yet taken): at most [`POOL`].
    pub fn fragments_held(&self) -> usize {
        POOL - self.frags.lock().free.len()
    }

    /// Hands each fragment released since the last call (held out of order, translated when its
    /// first fragment arrived) to `send`, with the direction it travels; the frame is a complete
    /// Ethernet frame whose layer-2 header is still the received one. Call after each batch; `send`
    /// must not call back into this worker. Does not allocate.
    pub fn take_released(&self, mut send: impl FnMut(Direction, &mut [u8])) {
        let mut g = self.frags.lock();
        let fr = &mut *g;
        for k in 0..fr.released.len() {
            let s = fr.released[k];
            let slot = fr.slots[s as usize];
            let at = s as usize * SLOT;
            send(slot.dir, &mut fr.data[at..at + slot.len as usize]);
            fr.free_slot(s);
        }
        fr.released.clear();
    }
}
