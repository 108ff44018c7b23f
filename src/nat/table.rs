//! The translation table: mappings (inside endpoint ↔ public port) and sessions (a mapping plus a
//! remote endpoint), shared by all datapath workers.
//!
//! # Layout and locking
//! - Records are sharded by a keyed hash of the *inside endpoint* (protocol, address, port): a
//!   mapping and all its sessions live in one shard, behind that shard's mutex. There is no global
//!   lock; two workers contend only when they touch the same shard at the same moment.
//! - The public port space is a flat array of atomics per (public address, protocol), one word per
//!   port: 0 when free, else (shard, mapping id). Ports are claimed with compare-and-swap, so
//!   allocation needs no lock beyond the claiming shard's, and the inbound path finds the owning
//!   shard from the destination port with one atomic load.
//! - All memory is reserved at construction: slabs and fixed-capacity indexes. Nothing on the
//!   per-packet path allocates.

use super::config::{Config, Prefix};
use super::index::{Index, IndexView, Recycle, Slab, SlabView};
use super::{Proto, Time};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

/// Mapping key hash: (protocol, inside address, inside port).
#[inline]
pub(crate) fn mix(seed: u64, a: u64, b: u64) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let x = (a ^ seed) as u128 * (b ^ K ^ seed.rotate_left(29)) as u128;
    let h = ((x >> 64) as u64) ^ (x as u64);
    let y = (h ^ K) as u128 * (h ^ 0xff51_afd7_ed55_8ccd) as u128;
    ((y >> 64) as u64) ^ (y as u64)
}

/// A live mapping (RFC 4787 "mapping"): one inside endpoint bound to one public port.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub(crate) struct Mapping {
    pub in_ip: u32,
    pub in_port: u16,
    pub pub_port: u16,
    /// 0 when the slot is free.
    pub proto: u8,
    pub pub_idx: u8,
    /// `M_STATIC` for a port forward.
    pub flags: u16,
    /// Live sessions using this mapping; the mapping ends with its last session (unless static).
    pub sessions: u32,
}

impl Recycle for Mapping {
    const VACANT: Self = Mapping {
        in_ip: 0,
        in_port: 0,
        pub_port: 0,
        proto: 0,
        pub_idx: 0,
        flags: 0,
        sessions: u32::MAX,
    };
    fn next_free(&self) -> u32 {
        self.sessions
    }
    fn kill(&mut self, next: u32) {
        self.proto = 0;
        self.sessions = next;
    }
}

impl Recycle for Session {
    const VACANT: Self = Session {
        in_ip: 0,
        rem_ip: 0,
        in_port: 0,
        rem_port: 0,
        proto: 0,
        state: 0,
        flags: 0,
        pub_idx: 0,
        mapping: u32::MAX,
        pub_port: 0,
        _pad: 0,
        last_seen: Time::ZERO,
        pkts_out: 0,
        pkts_in: 0,
        bytes: 0,
    };
    fn next_free(&self) -> u32 {
        self.mapping
    }
    fn kill(&mut self, next: u32) {
        self.proto = 0;
        self.mapping = next;
    }
}

impl Recycle for Peer {
    const VACANT: Self = Peer {
        mapping: u32::MAX,
        rem_ip: 0,
        count: 0,
    };
    fn next_free(&self) -> u32 {
        self.mapping
    }
    fn kill(&mut self, next: u32) {
        self.count = 0;
        self.mapping = next;
    }
}

/// Mapping flags: a static port forward, never ended by expiry.
pub(crate) const M_STATIC: u16 = 1;

/// Session flags.
pub(crate) const F_INBOUND_CREATED: u8 = 1;

/// A session: a mapping plus one remote endpoint. 48 bytes.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub(crate) struct Session {
    pub in_ip: u32,
    pub rem_ip: u32,
    pub in_port: u16,
    pub rem_port: u16,
    /// 0 when the slot is free.
    pub proto: u8,
    /// TCP state (`TcpState as u8`), 0 for UDP/ICMP.
    pub state: u8,
    pub flags: u8,
    /// Copy of the mapping's public address index and port (fixed for the mapping's life), so the
    /// outbound hit path reads no mapping record: one cache miss fewer per packet on large tables.
    pub pub_idx: u8,
    pub mapping: u32,
    pub pub_port: u16,
    _pad: u16,
    pub last_seen: Time,
    pub pkts_out: u32,
    pub pkts_in: u32,
    pub bytes: u64,
}

/// Per remote address reference counts of a mapping, for address-dependent filtering.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Peer {
    pub mapping: u32,
    pub rem_ip: u32,
    /// 0 when the slot is free.
    pub count: u32,
}

pub(crate) struct Shard {
    pub mappings: Slab<Mapping>,
    pub map_index: Index,
    pub sessions: Slab<Session>,
    pub sess_index: Index,
    pub peers: Slab<Peer>,
    pub peer_index: Index,
    pub rng: u64,
}

#[inline]
pub(crate) fn map_hash(seed: u64, proto: u8, ip: u32, port: u16) -> u64 {
    mix(seed, ((proto as u64) << 32) | ip as u64, port as u64)
}

#[inline]
pub(crate) fn sess_hash(
    seed: u64,
    proto: u8,
    in_ip: u32,
    in_port: u16,
    rem_ip: u32,
    rem_port: u16,
) -> u64 {
    mix(
        seed ^ 0x51,
        ((in_ip as u64) << 32) | rem_ip as u64,
        ((in_port as u64) << 32) | ((rem_port as u64) << 16) | proto as u64,
    )
}

#[inline]
fn peer_hash(seed: u64, mapping: u32, rem_ip: u32) -> u64 {
    mix(seed ^ 0xadf, mapping as u64, rem_ip as u64)
}

impl Shard {
    fn new(cap: usize, with_peers: bool, rng: u64) -> Self {
        let peer_cap = if with_peers { cap } else { 0 };
        Shard {
            mappings: Slab::with_capacity(cap),
            map_index: Index::with_capacity(cap),
            sessions: Slab::with_capacity(cap),
            sess_index: Index::with_capacity(cap),
            peers: Slab::with_capacity(peer_cap),
            peer_index: Index::with_capacity(peer_cap),
            rng: rng | 1,
        }
    }

    #[inline]
    pub fn next_random(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    #[inline]
    pub fn find_session(
        &self,
        seed: u64,
        proto: u8,
        in_ip: u32,
        in_port: u16,
        rem_ip: u32,
        rem_port: u16,
    ) -> Option<u32> {
        let h = sess_hash(seed, proto, in_ip, in_port, rem_ip, rem_port);
        self.sess_index.find(h, |id| {
            let s = self.sessions.get(id);
            s.in_ip == in_ip
                && s.rem_ip == rem_ip
                && s.in_port == in_port
                && s.rem_port == rem_port
                && s.proto == proto
        })
    }

    #[inline]
    pub fn find_mapping(&self, seed: u64, proto: u8, in_ip: u32, in_port: u16) -> Option<u32> {
        let h = map_hash(seed, proto, in_ip, in_port);
        self.map_index.find(h, |id| {
            let m = self.mappings.get(id);
            m.in_ip == in_ip && m.in_port == in_port && m.proto == proto
        })
    }

    /// Adds a session to `mapping`. `None` when the shard is full.
    #[allow(clippy::too_many_arguments)] // a session's fields, all plain values
    pub fn add_session(
        &mut self,
        seed: u64,
        mapping: u32,
        rem_ip: u32,
        rem_port: u16,
        state: u8,
        flags: u8,
        now: Time,
    ) -> Option<u32> {
        let m = *self.mappings.get(mapping);
        let s = Session {
            in_ip: m.in_ip,
            rem_ip,
            in_port: m.in_port,
            rem_port,
            proto: m.proto,
            state,
            flags,
            pub_idx: m.pub_idx,
            mapping,
            pub_port: m.pub_port,
            _pad: 0,
            last_seen: now,
            pkts_out: 0,
            pkts_in: 0,
            bytes: 0,
        };
        let with_peers = self.peers_enabled();
        if with_peers && !self.peer_ref(seed, mapping, rem_ip) {
            return None;
        }
        let Some(id) = self.sessions.alloc(s) else {
            if with_peers {
                self.peer_unref(seed, mapping, rem_ip);
            }
            return None;
        };
        let h = sess_hash(seed, m.proto, m.in_ip, m.in_port, rem_ip, rem_port);
        // Capacity of the index equals the slab's, so this cannot fail.
        let inserted = self.sess_index.insert(h, id);
        debug_assert!(inserted);
        self.mappings.get_mut(mapping).sessions += 1;
        Some(id)
    }

    fn peers_enabled(&self) -> bool {
        self.peers.heap_bytes() != 0
    }

    fn peer_ref(&mut self, seed: u64, mapping: u32, rem_ip: u32) -> bool {
        let h = peer_hash(seed, mapping, rem_ip);
        if let Some(id) = self.peer_index.find(h, |id| {
            let p = self.peers.get(id);
            p.mapping == mapping && p.rem_ip == rem_ip && p.count != 0
        }) {
            self.peers.get_mut(id).count += 1;
            return true;
        }
        match self.peers.alloc(Peer {
            mapping,
            rem_ip,
            count: 1,
        }) {
            Some(id) => self.peer_index.insert(h, id),
            None => false,
        }
    }

    fn peer_unref(&mut self, seed: u64, mapping: u32, rem_ip: u32) {
        let h = peer_hash(seed, mapping, rem_ip);
        if let Some(id) = self.peer_index.find(h, |id| {
            let p = self.peers.get(id);
            p.mapping == mapping && p.rem_ip == rem_ip && p.count != 0
        }) {
            let p = self.peers.get_mut(id);
            p.count -= 1;
            if p.count == 0 {
                self.peer_index.remove(h, id);
                self.peers.release(id);
            }
        }
    }

    /// Whether `mapping` has a session towards `rem_ip` (address-dependent filtering).
    pub fn has_peer(&self, seed: u64, mapping: u32, rem_ip: u32) -> bool {
        let h = peer_hash(seed, mapping, rem_ip);
        self.peer_index
            .find(h, |id| {
                let p = self.peers.get(id);
                p.mapping == mapping && p.rem_ip == rem_ip && p.count != 0
            })
            .is_some()
    }

    /// Removes a session; returns the mapping it leaves behind if that mapping is now unused
    /// (the caller frees its port).
    pub fn remove_session(&mut self, seed: u64, id: u32) -> Option<Mapping> {
        let s = *self.sessions.get(id);
        if s.proto == 0 {
            return None;
        }
        let h = sess_hash(seed, s.proto, s.in_ip, s.in_port, s.rem_ip, s.rem_port);
        self.sess_index.remove(h, id);
        self.sessions.release(id);
        if self.peers_enabled() {
            self.peer_unref(seed, s.mapping, s.rem_ip);
        }
        let m = self.mappings.get_mut(s.mapping);
        m.sessions -= 1;
        if m.sessions == 0 && m.flags & M_STATIC == 0 {
            let m = *m;
            let h = map_hash(seed, m.proto, m.in_ip, m.in_port);
            self.map_index.remove(h, s.mapping);
            self.mappings.release(s.mapping);
            return Some(m);
        }
        None
    }

    /// Adds a mapping record (the port is already claimed). `None` when full.
    pub fn add_mapping(
        &mut self,
        seed: u64,
        proto: u8,
        in_ip: u32,
        in_port: u16,
        pub_idx: u8,
        pub_port: u16,
    ) -> Option<u32> {
        let id = self.mappings.alloc(Mapping {
            in_ip,
            in_port,
            pub_port,
            proto,
            pub_idx,
            flags: 0,
            sessions: 0,
        })?;
        let inserted = self
            .map_index
            .insert(map_hash(seed, proto, in_ip, in_port), id);
        debug_assert!(inserted);
        Some(id)
    }

    /// Drops a mapping that never got a session (allocation failed half-way).
    pub fn drop_empty_mapping(&mut self, seed: u64, id: u32) {
        let m = *self.mappings.get(id);
        debug_assert_eq!(m.sessions, 0);
        self.map_index
            .remove(map_hash(seed, m.proto, m.in_ip, m.in_port), id);
        self.mappings.get_mut(id).proto = 0;
        self.mappings.release(id);
    }

    pub fn heap_bytes(&self) -> usize {
        self.mappings.heap_bytes()
            + self.map_index.heap_bytes()
            + self.sessions.heap_bytes()
            + self.sess_index.heap_bytes()
            + self.peers.heap_bytes()
            + self.peer_index.heap_bytes()
    }
}

/// Public port ownership, one atomic word per (public address, protocol, port):
/// - `0`: free;
/// - `COOLING | second`: free, but resting until that second (RFC 6888 REQ-8);
/// - otherwise `(mapping_id + 1) << 8 | shard`: owned by that mapping.
pub(crate) struct PortSpace {
    words: Box<[AtomicU32]>,
}

const COOLING: u32 = 1 << 31;

#[inline]
pub(crate) fn owner_word(shard: usize, mapping: u32) -> u32 {
    debug_assert!(mapping < (1 << 23) - 1);
    ((mapping + 1) << 8) | shard as u32
}

#[inline]
pub(crate) fn owner_parts(w: u32) -> Option<(usize, u32)> {
    (w != 0 && w & COOLING == 0).then(|| ((w & 0xff) as usize, (w >> 8) - 1))
}

impl PortSpace {
    fn new(n_public: usize) -> Self {
        let n = n_public * 3 * 65536;
        PortSpace {
            words: (0..n).map(|_| AtomicU32::new(0)).collect(),
        }
    }

    #[inline]
    fn slot(pub_idx: u8, proto: Proto, port: u16) -> usize {
        ((pub_idx as usize * 3 + proto as usize) << 16) | port as usize
    }

    #[inline]
    pub fn owner(&self, pub_idx: u8, proto: Proto, port: u16) -> u32 {
        self.words[Self::slot(pub_idx, proto, port)].load(Ordering::Acquire)
    }

    /// Claims a free, rested port for `word`.
    #[inline]
    pub fn try_claim(&self, pub_idx: u8, proto: Proto, port: u16, word: u32, now_s: u32) -> bool {
        let w = &self.words[Self::slot(pub_idx, proto, port)];
        let cur = w.load(Ordering::Relaxed);
        let free = cur == 0 || (cur & COOLING != 0 && cur & !COOLING <= now_s);
        free && w
            .compare_exchange(cur, word, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }

    /// Whether a port is free and rested at second `now_s` (what `try_claim` would accept).
    #[inline]
    pub fn is_claimable(&self, pub_idx: u8, proto: Proto, port: u16, now_s: u32) -> bool {
        let cur = self.words[Self::slot(pub_idx, proto, port)].load(Ordering::SeqCst);
        cur == 0 || (cur & COOLING != 0 && cur & !COOLING <= now_s)
    }

    /// `try_claim` that returns the word it replaced, for [`PortSpace::restore`].
    #[inline]
    pub fn try_claim_prev(
        &self,
        pub_idx: u8,
        proto: Proto,
        port: u16,
        word: u32,
        now_s: u32,
    ) -> Option<u32> {
        let w = &self.words[Self::slot(pub_idx, proto, port)];
        let cur = w.load(Ordering::Relaxed);
        let free = cur == 0 || (cur & COOLING != 0 && cur & !COOLING <= now_s);
        (free
            && w.compare_exchange(cur, word, Ordering::SeqCst, Ordering::Relaxed)
                .is_ok())
        .then_some(cur)
    }

    /// Undoes a claim made with `try_claim_prev` (the port was not handed out).
    #[inline]
    pub fn restore(&self, pub_idx: u8, proto: Proto, port: u16, prev: u32) {
        self.words[Self::slot(pub_idx, proto, port)].store(prev, Ordering::SeqCst);
    }

    /// Frees a port; it rests until `rest_until_s` (0: free at once).
    #[inline]
    pub fn release(&self, pub_idx: u8, proto: Proto, port: u16, rest_until_s: u32) {
        let v = if rest_until_s == 0 {
            0
        } else {
            COOLING | rest_until_s.min(!COOLING)
        };
        self.words[Self::slot(pub_idx, proto, port)].store(v, Ordering::Release);
    }

    pub fn heap_bytes(&self) -> usize {
        self.words.len() * 4
    }

    /// The address of a port's word, for the batch path's prefetch (the word is not read).
    #[inline]
    pub fn word_addr(&self, pub_idx: u8, proto: Proto, port: u16) -> usize {
        self.words
            .get(Self::slot(pub_idx, proto, port))
            .map_or(0, |w| w as *const AtomicU32 as usize)
    }
}

/// The address and port sets of the configuration, precomputed for the per-packet checks:
/// a filter that answers "not a public address" with one load, (network, mask) pairs for the
/// inside prefixes, and a bitmap of the configured port ranges.
pub(crate) struct AddrSets {
    /// The gateway's inside address, if any.
    inside_addr: Option<u32>,
    /// 1024-bit filter over the public addresses: a clear bit means "not public".
    pub_filter: [u64; 16],
    /// Public addresses sorted, with their index in the configuration.
    public_sorted: Box<[(u32, u8)]>,
    /// Inside prefixes as (network, mask); empty: any source.
    inside: Box<[(u32, u32)]>,
    /// One bit per port: in the configured port ranges.
    ports: Box<[u64]>,
}

#[inline]
fn filter_bit(a: u32) -> usize {
    (a.wrapping_mul(0x9e37_79b1) >> 22) as usize
}

impl AddrSets {
    fn new(cfg: &Config) -> Self {
        let mut public_sorted: Vec<(u32, u8)> = cfg
            .public_addrs
            .iter()
            .enumerate()
            .map(|(i, a)| (u32::from(*a), i as u8))
            .collect();
        public_sorted.sort_unstable();
        let mut pub_filter = [0u64; 16];
        for &(a, _) in &public_sorted {
            let b = filter_bit(a);
            pub_filter[b / 64] |= 1 << (b % 64);
        }
        let mut ports = vec![0u64; 1024].into_boxed_slice();
        for r in cfg.port_ranges.iter().filter(|r| !r.is_empty()) {
            for p in r.first..=r.last {
                ports[p as usize / 64] |= 1 << (p % 64);
            }
        }
        // Forwarded ports are NAT traffic too, wherever they lie.
        for f in &cfg.forwards {
            ports[f.public_port as usize / 64] |= 1 << (f.public_port % 64);
        }
        AddrSets {
            inside_addr: cfg.inside_addr.map(u32::from),
            pub_filter,
            public_sorted: public_sorted.into_boxed_slice(),
            inside: cfg
                .inside_prefixes
                .iter()
                .map(|p: &Prefix| (u32::from(p.addr) & p.mask(), p.mask()))
                .collect(),
            ports,
        }
    }

    /// The configuration index of public address `a`.
    #[inline]
    pub fn public_index(&self, a: u32) -> Option<u8> {
        let b = filter_bit(a);
        if self.pub_filter[(b / 64) & 15] & (1 << (b % 64)) == 0 {
            return None;
        }
        let p = &self.public_sorted;
        if let [(x, i)] = **p {
            return (x == a).then_some(i);
        }
        p.binary_search_by_key(&a, |e| e.0).ok().map(|i| p[i].1)
    }

    /// Traffic to the gateway itself, multicast or broadcast: left to the kernel.
    #[inline]
    pub fn is_local(&self, a: u32) -> bool {
        a >> 28 == 0xe
            || a == u32::MAX
            || self.inside_addr == Some(a)
            || self.public_index(a).is_some()
    }

    /// Never a remote peer (RFC 1812 5.3.7): "this network" 0/8, loopback 127/8, multicast and
    /// the reserved 240/4 (with the limited broadcast), the inside prefixes, and the gateway's own
    /// addresses. Inbound packets from these are spoofed; outbound ones to these are martians.
    #[inline]
    pub fn is_martian_remote(&self, a: u32) -> bool {
        let top = a >> 24;
        top == 0
            || top == 127
            || top >= 224
            || (!self.inside.is_empty() && self.inside.iter().any(|&(net, mask)| a & mask == net))
            || self.inside_addr == Some(a)
            || self.public_index(a).is_some()
    }

    #[inline]
    pub fn is_inside_source(&self, a: u32) -> bool {
        match *self.inside {
            [] => true,
            [(net, mask)] => a & mask == net,
            ref v => v.iter().any(|&(net, mask)| a & mask == net),
        }
    }

    #[inline]
    pub fn in_port_ranges(&self, port: u16) -> bool {
        self.ports[(port as usize / 64) & 1023] & (1 << (port % 64)) != 0
    }
}

/// Per-subscriber counters (RFC 6888 REQ-4/5), keyed by inside address: a fixed open-addressing
/// table of atomics, claimed with compare-and-swap, so quota checks take no lock. A subscriber's
/// slot is kept once claimed (its counters go back to zero). When the table is full, further
/// subscribers are not limited (counted in `untracked`) rather than refused.
pub(crate) struct Subscribers {
    slots: Box<[SubSlot]>,
    pub untracked: AtomicU32,
}

pub(crate) struct SubSlot {
    ip: AtomicU32,
    pub ports: AtomicU32,
    pub sessions: AtomicU32,
    /// Port blocks held (block mode).
    pub blocks: AtomicU32,
    /// Block number + 1 of the block the subscriber last allocated from (0: none).
    pub block_hint: AtomicU32,
}

impl Subscribers {
    fn new(capacity: usize) -> Self {
        let n = if capacity == 0 {
            0
        } else {
            (capacity * 2).next_power_of_two()
        };
        Subscribers {
            slots: (0..n)
                .map(|_| SubSlot {
                    ip: AtomicU32::new(0),
                    ports: AtomicU32::new(0),
                    sessions: AtomicU32::new(0),
                    blocks: AtomicU32::new(0),
                    block_hint: AtomicU32::new(0),
                })
                .collect(),
            untracked: AtomicU32::new(0),
        }
    }

    /// The counters of `ip`, claiming a slot on first use. `None`: untracked.
    pub fn get(&self, seed: u64, ip: u32) -> Option<&SubSlot> {
        if self.slots.is_empty() || ip == 0 {
            return None;
        }
        let mask = self.slots.len() - 1;
        let mut i = mix(seed ^ 0x5b5, ip as u64, 0) as usize & mask;
        for _ in 0..64 {
            let s = &self.slots[i];
            match s.ip.load(Ordering::Acquire) {
                x if x == ip => return Some(s),
                0 => match s
                    .ip
                    .compare_exchange(0, ip, Ordering::AcqRel, Ordering::Acquire)
                {
                    Ok(_) => return Some(s),
                    Err(x) if x == ip => return Some(s),
                    Err(_) => {}
                },
                _ => {}
            }
            i = (i + 1) & mask;
        }
        self.untracked.fetch_add(1, Ordering::Relaxed);
        None
    }

    pub fn heap_bytes(&self) -> usize {
        self.slots.len() * std::mem::size_of::<SubSlot>()
    }
}

/// Takes one unit of `counter` if it is below `limit`.
pub(crate) fn take(counter: &AtomicU32, limit: u32) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
            (v < limit).then_some(v + 1)
        })
        .is_ok()
}

/// Gives one unit back (never below zero).
pub(crate) fn give(counter: &AtomicU32) {
    let _ = counter.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| v.checked_sub(1));
}

/// Session slabs larger than this get the batch path's prefetch stages (a core's L2). Measured:
/// they cost ~3 ns/packet on a 1k-flow table (all cached) and save ~20 % at 64k flows (3 MiB of
/// sessions, in L3) and ~50 % at 1M.
const WARM_ABOVE_BYTES: usize = 1 << 20;

/// The shared table.
pub(crate) struct Table {
    pub shards: Box<[Mutex<Shard>]>,
    pub shard_mask: usize,
    pub ports: PortSpace,
    pub seed: u64,
    pub addrs: AddrSets,
    /// Per-subscriber quota counters.
    pub subs: Subscribers,
    /// Port-block ownership (block mode only, see `blocks.rs`).
    pub blocks: Option<super::blocks::PortBlocks>,
    /// Live sessions, held to `max_sessions` exactly (the shards' slack is only for balance).
    pub live_sessions: std::sync::atomic::AtomicUsize,
    /// Lock-free views of each shard's session index, for the batch path's prefetch stages.
    pub sess_views: Box<[IndexView]>,
    /// The same for each shard's mapping index.
    pub map_views: Box<[IndexView]>,
    /// Each shard's session and mapping slab as an address range, for the batch path's prefetch
    /// of the record a lookup will read (never read through these).
    pub sess_slabs: Box<[SlabView]>,
    pub map_slabs: Box<[SlabView]>,
    /// Whether `process_batch` runs its prefetch stages: only for tables larger than a core's L2
    /// (`WARM_ABOVE_BYTES`); on smaller ones every line is cached and the stages only cost.
    pub warm_batches: bool,
}

impl Table {
    pub fn new(cfg: &Config) -> Self {
        let n = cfg.shards.clamp(1, 256).next_power_of_two();
        let per = cfg.max_sessions.div_ceil(n);
        // Hash imbalance across shards: give each shard some slack over its even share. With
        // uniform hashing a shard's load is binomial (standard deviation about sqrt(per)): 4 of
        // those plus 1/64 (for flows that cluster on one inside endpoint), at least 64.
        let sd = (per as f64).sqrt() as usize;
        let cap = (per + (4 * sd + per / 64).max(64)).min((1 << 23) - 2);
        let with_peers = [cfg.filtering_tcp, cfg.filtering_udp, cfg.filtering_icmp]
            .contains(&super::config::Filtering::AddressDependent);
        let shards: Box<[Mutex<Shard>]> = (0..n)
            .map(|i| Mutex::new(Shard::new(cap, with_peers, mix(cfg.seed, i as u64, 0x7a6e))))
            .collect();
        let sess_views = shards.iter().map(|s| s.lock().sess_index.view()).collect();
        let map_views = shards.iter().map(|s| s.lock().map_index.view()).collect();
        let sess_slabs = shards.iter().map(|s| s.lock().sessions.view()).collect();
        let map_slabs = shards.iter().map(|s| s.lock().mappings.view()).collect();
        Table {
            shards,
            shard_mask: n - 1,
            ports: PortSpace::new(cfg.public_addrs.len()),
            seed: cfg.seed,
            addrs: AddrSets::new(cfg),
            subs: Subscribers::new(cfg.max_sessions.clamp(1024, 1 << 16)),
            blocks: super::blocks::PortBlocks::new(cfg),
            live_sessions: std::sync::atomic::AtomicUsize::new(0),
            sess_views,
            map_views,
            sess_slabs,
            map_slabs,
            warm_batches: cap * n * size_of::<Session>() > WARM_ABOVE_BYTES,
        }
    }

    #[inline]
    pub fn shard_of(&self, map_hash: u64) -> usize {
        (map_hash >> 56) as usize & self.shard_mask
    }

    pub fn heap_bytes(&self) -> usize {
        self.subs.heap_bytes()
            + self.ports.heap_bytes()
            + self.blocks.as_ref().map_or(0, |b| b.heap_bytes())
            + self
                .shards
                .iter()
                .map(|s| s.lock().heap_bytes())
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use crate::nat::{Config, Direction, Engine, FrameMeta, Time, Verdict};
    use crate::wire::bytes::{be16, be32};
    use std::net::Ipv4Addr;

    fn udp(src: u32, sport: u16, dst: u32, dport: u16) -> Vec<u8> {
        let mut f = vec![0u8; 60];
        f[12] = 0x08;
        let ip = &mut f[14..34];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&46u16.to_be_bytes());
        ip[8] = 64;
        ip[9] = 17;
        ip[12..16].copy_from_slice(&src.to_be_bytes());
        ip[16..20].copy_from_slice(&dst.to_be_bytes());
        let c = crate::wire::checksum::checksum(ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        f[34..36].copy_from_slice(&sport.to_be_bytes());
        f[36..38].copy_from_slice(&dport.to_be_bytes());
        f[38..40].copy_from_slice(&26u16.to_be_bytes());
        f
    }

    /// `process_batch` gives the same verdicts, frames and table as `process` one by one, including
    /// new flows, repeats inside one batch, replies to them, junk and a batch not a multiple of 16.
    #[test]
    fn batch_matches_single_frames() {
        // A small table (no warming pass) and one large enough for it.
        for max_sessions in [1000, 200_000] {
            batch_matches_single_frames_with(max_sessions);
        }
    }

    /// An IPv4 frame carrying `l4` (checksum of the IP header valid; the L4 one is left as given:
    /// the engine updates it incrementally either way).
    fn ipv4(p: u8, src: u32, dst: u32, l4: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 34];
        f[12] = 0x08;
        let ip = &mut f[14..34];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&(20 + l4.len() as u16).to_be_bytes());
        ip[8] = 64;
        ip[9] = p;
        ip[12..16].copy_from_slice(&src.to_be_bytes());
        ip[16..20].copy_from_slice(&dst.to_be_bytes());
        let c = crate::wire::checksum::checksum(ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        f.extend_from_slice(l4);
        f
    }

    fn tcp(src: u32, sport: u16, dst: u32, dport: u16, flags: u8) -> Vec<u8> {
        let mut l4 = [0u8; 20];
        l4[0..2].copy_from_slice(&sport.to_be_bytes());
        l4[2..4].copy_from_slice(&dport.to_be_bytes());
        l4[12] = 5 << 4;
        l4[13] = flags;
        l4[14..16].copy_from_slice(&1024u16.to_be_bytes());
        ipv4(6, src, dst, &l4)
    }

    fn icmp_echo(src: u32, dst: u32, ty: u8, ident: u16) -> Vec<u8> {
        let mut l4 = [0u8; 8];
        l4[0] = ty;
        l4[4..6].copy_from_slice(&ident.to_be_bytes());
        ipv4(1, src, dst, &l4)
    }

    /// Translates `frames` one by one on `single` and as one batch on `batched`; both must give the
    /// same verdicts, replies and bytes. Returns the frames after translation.
    fn compare_batch(
        single: &crate::nat::Worker,
        batched: &crate::nat::Worker,
        dir: Direction,
        frames: &[Vec<u8>],
        now: Time,
    ) -> Vec<(Verdict, Vec<u8>)> {
        let mut scratch = [0u8; 1600];
        let expect: Vec<(Verdict, Vec<u8>, Vec<u8>)> = frames
            .iter()
            .map(|f| {
                let mut f = f.clone();
                let v = single.process(dir, &mut f, FrameMeta::default(), now, &mut scratch);
                let reply = match v {
                    Verdict::Reply(n) => scratch[..n].to_vec(),
                    _ => Vec::new(),
                };
                (v, f, reply)
            })
            .collect();
        let mut got_frames = frames.to_vec();
        let mut got = Vec::new();
        batched.process_batch(dir, &mut got_frames, &[], now, &mut scratch, |i, v, r| {
            got.push((i, v, r.to_vec()))
        });
        assert_eq!(got.len(), frames.len());
        for (i, (v, f, r)) in expect.iter().enumerate() {
            assert_eq!(got[i], (i, *v, r.clone()), "{dir:?} frame {i}");
            assert_eq!(&got_frames[i], f, "{dir:?} frame {i} bytes");
        }
        expect.into_iter().map(|(v, f, _)| (v, f)).collect()
    }

    /// On a table large enough for the batch path's prefetch stages (`warm_batches`), batches that
    /// mix established flows, new flows (UDP, TCP, ICMP echo), repeats inside a batch, expired
    /// sessions, malformed and foreign frames, and their replies (plus unsolicited and junk
    /// inbound frames) give exactly the verdicts, replies and bytes of single-frame processing.
    #[test]
    fn batch_matches_single_frames_large_table_mixed() {
        let cfg = Config {
            public_addrs: vec![Ipv4Addr::new(203, 0, 113, 1), Ipv4Addr::new(203, 0, 113, 2)],
            inside_addr: Some(Ipv4Addr::new(10, 0, 0, 1)),
            max_sessions: 200_000,
            shards: 8,
            ..Config::default()
        };
        let (a, b) = (Engine::new(cfg.clone()).unwrap(), Engine::new(cfg).unwrap());
        assert!(a.table.warm_batches);
        let (wa, wb) = (a.worker(), b.worker());
        let remote = 0xc633_6414; // 198.51.100.20
        // Established flows, created the same way on both engines.
        let flow = |i: u32| udp(0x0a00_1000 + i / 8, 2000 + (i % 8) as u16, remote, 53);
        let base: Vec<Vec<u8>> = (0..4000).map(flow).collect();
        compare_batch(&wa, &wb, Direction::Outbound, &base, Time::from_secs(1));
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rnd = move |n: u32| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as u32
        };
        for round in 0..8u32 {
            // Round 5 is past the UDP timeout: established flows restart on their mappings.
            let now = Time::from_secs(if round < 5 {
                2 + round as u64
            } else {
                1000 + round as u64
            });
            let mut out = Vec::new();
            for k in 0..(37 + round * 11) {
                let f = match rnd(12) {
                    0..=4 => flow(rnd(4000)),
                    5 => udp(
                        0x0a01_0000 + rnd(1 << 12),
                        3000 + (k % 50) as u16,
                        remote,
                        53,
                    ),
                    6 => tcp(
                        0x0a02_0000 + rnd(64),
                        4000 + rnd(8) as u16,
                        remote,
                        443,
                        0x02,
                    ),
                    7 => icmp_echo(0x0a03_0000 + rnd(16), remote, 8, rnd(4) as u16 + 1),
                    8 => match out.last() {
                        Some(prev) => Vec::clone(prev), // a repeat inside the batch
                        None => flow(0),
                    },
                    9 => {
                        let mut f = flow(rnd(4000));
                        match rnd(5) {
                            0 => f.truncate(rnd(40) as usize),
                            1 => f[14] = 0x46,  // IHL 6 with a bad header checksum
                            2 => f[24] ^= 0x55, // bad header checksum
                            3 => f[12] = 0x86,  // not IPv4
                            _ => f[38..40].copy_from_slice(&400u16.to_be_bytes()), // bad UDP length
                        }
                        f
                    }
                    10 => udp(0x0a00_1000, 2000, 0x7f00_0001, 53), // martian destination
                    _ => udp(0x0a00_0001, 68, 0xffff_ffff, 67),    // broadcast: the kernel's
                };
                out.push(f);
            }
            let translated = compare_batch(&wa, &wb, Direction::Outbound, &out, now);
            // Replies to what went out (some from another remote port: filtered), plus
            // unsolicited and junk inbound frames.
            let mut inb = Vec::new();
            for (v, f) in &translated {
                if *v != Verdict::Forward || rnd(4) == 0 {
                    continue;
                }
                let (src, dst) = (be32(f, 26), be32(f, 30));
                let (sp, dp) = (be16(f, 34), be16(f, 36));
                inb.push(match f[23] {
                    17 => udp(dst, if rnd(6) == 0 { dp + 1 } else { dp }, src, sp),
                    6 => tcp(dst, dp, src, sp, if rnd(3) == 0 { 0x04 } else { 0x12 }),
                    _ => icmp_echo(dst, src, 0, be16(f, 38)),
                });
            }
            for _ in 0..(5 + round) {
                inb.push(match rnd(5) {
                    0 => udp(remote, 53, 0xcb00_7101, 1024 + rnd(60000) as u16),
                    1 => tcp(remote, 80, 0xcb00_7102, 1024 + rnd(60000) as u16, 0x02),
                    2 => udp(remote, 53, 0xcb00_7109, 4000), // not a public address
                    3 => vec![0u8; rnd(30) as usize],
                    _ => ipv4(99, remote, 0xcb00_7101, &[0; 8]), // another protocol
                });
            }
            // Shuffle so hits and misses interleave within the groups.
            for i in (1..inb.len()).rev() {
                inb.swap(i, rnd(i as u32 + 1) as usize);
            }
            compare_batch(&wa, &wb, Direction::Inbound, &inb, now);
        }
        assert_eq!(a.session_count(), b.session_count());
        assert_eq!(a.mapping_count(), b.mapping_count());
        assert_eq!(a.stats(), b.stats());
        assert!(a.session_count() > 4000);
    }

    fn batch_matches_single_frames_with(max_sessions: usize) {
        let cfg = Config {
            public_addrs: vec![Ipv4Addr::new(203, 0, 113, 1), Ipv4Addr::new(203, 0, 113, 2)],
            max_sessions,
            shards: 4,
            ..Config::default()
        };
        let (a, b) = (Engine::new(cfg.clone()).unwrap(), Engine::new(cfg).unwrap());
        assert_eq!(a.table.warm_batches, max_sessions > 1000);
        let (wa, wb) = (a.worker(), b.worker());
        let mut out: Vec<Vec<u8>> = (0..45u32)
            .map(|i| udp(0x0a00_0002 + i % 7, 1000 + (i % 5) as u16, 0xc633_6414, 53))
            .collect();
        out[9] = vec![1, 2, 3];
        out[20][14] = 0x46;
        let mut scratch = [0u8; 1600];
        let now = Time::from_secs(1);
        let single: Vec<(Verdict, Vec<u8>)> = out
            .iter()
            .map(|f| {
                let mut f = f.clone();
                let v = wa.process(
                    Direction::Outbound,
                    &mut f,
                    FrameMeta::default(),
                    now,
                    &mut scratch,
                );
                (v, f)
            })
            .collect();
        let mut verdicts = Vec::new();
        wb.process_batch(
            Direction::Outbound,
            &mut out,
            &[],
            now,
            &mut scratch,
            |i, v, _| verdicts.push((i, v)),
        );
        assert_eq!(verdicts.len(), single.len());
        for (i, (v, f)) in single.iter().enumerate() {
            assert_eq!(verdicts[i], (i, *v));
            assert_eq!(&out[i], f, "frame {i}");
        }
        // Replies come back the same way.
        let mut replies: Vec<Vec<u8>> = single
            .iter()
            .filter(|(v, _)| *v == Verdict::Forward)
            .map(|(_, f)| {
                let (src, dst) = (&f[26..30], &f[30..34]);
                let sport = u16::from_be_bytes([f[34], f[35]]);
                let dport = u16::from_be_bytes([f[36], f[37]]);
                let s = u32::from_be_bytes(src.try_into().unwrap());
                let d = u32::from_be_bytes(dst.try_into().unwrap());
                udp(d, dport, s, sport)
            })
            .collect();
        let expect: Vec<(Verdict, Vec<u8>)> = replies
            .iter()
            .map(|f| {
                let mut f = f.clone();
                let v = wa.process(
                    Direction::Inbound,
                    &mut f,
                    FrameMeta::default(),
                    now,
                    &mut scratch,
                );
                (v, f)
            })
            .collect();
        let mut got = Vec::new();
        wb.process_batch(
            Direction::Inbound,
            &mut replies,
            &[],
            now,
            &mut scratch,
            |_, v, _| got.push(v),
        );
        for (i, (v, f)) in expect.iter().enumerate() {
            assert_eq!(*v, Verdict::Forward);
            assert_eq!(got[i], *v);
            assert_eq!(&replies[i], f);
        }
        assert_eq!(a.session_count(), b.session_count());
        assert_eq!(a.stats(), b.stats());
    }
}
