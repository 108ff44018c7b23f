//! Port-block allocation (RFC 6888 REQ-13..15, `--port-block-size N`): each subscriber (inside
//! address) gets blocks of N contiguous ports, aligned to N and lying inside one configured port
//! range, on its paired public address; a block holds that port number for TCP, UDP and ICMP.
//! A new mapping takes a random free, rested port of one of its subscriber's blocks (same parity
//! as the inside port when possible); when none is left the subscriber claims a new block chosen
//! at random among the free ones (REQ-15: not guessable), up to a per-subscriber limit. Only block
//! claims and releases need logging (REQ-14), a factor of up to N fewer lines.
//!
//! # Ownership
//! One `AtomicU64` per (public address, block): 0 when free, else `inside address << 32 | used`,
//! `used` counting the block's ports held by its owner's mappings (all protocols). Workers take
//! a slot with compare-and-swap (owner matches, `used < N`) and then claim the port word in
//! `PortSpace` as usual, so two workers allocating for one subscriber (its mappings live in
//! different shards) never give out a port twice and never lock anything global.
//!
//! # Invariants
//! - A port counted in a block belongs to a mapping of the block's owner, and a block is only
//!   released when `used` is 0 and its ports have rested (`cool`: the latest rest of a port
//!   released in it). Releases are lazy: a block whose count drops to 0 marks its address
//!   dirty, and `Engine::expire` (control plane, once a second) frees the rested ones.
//! - A block never contains a port held outside the block logic (port forwards, explicit
//!   PCP/NAT-PMP mappings, restored snapshot entries): a new block is first marked `CLAIMING`
//!   (no slot can be taken), then every port word of it is checked free and rested for all three
//!   protocols; ports claimed one by one outside blocks are refused when their block is owned.
//!   Both sides write, fence (SeqCst), then read the other's word, so at least one of two racing
//!   claims sees the other and backs off.
//! - Whether a released mapping's port was counted is decided by the block's owner: a port
//!   counted in a block keeps the block owned by that subscriber until released, and a port held
//!   outside blocks keeps its block unowned.

use super::config::Config;
use super::table::{Mapping, Shard, Table, give, take};
use super::{Engine, Proto, Time};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::SeqCst, fence};

/// `used` value of a block being checked by its new owner: no slot can be taken meanwhile.
const CLAIMING: u64 = 1 << 31;

/// The block table. Built only when block mode is on.
pub(crate) struct PortBlocks {
    /// Ports per block (a power of two).
    size: u32,
    shift: u32,
    /// Blocks per public address (65536 / size).
    per_addr: usize,
    owners: Box<[AtomicU64]>,
    /// Per (public address, block): the second until which its last released port rests.
    cool: Box<[AtomicU32]>,
    /// Per public address: some block may be waiting to be released.
    dirty: Box<[AtomicBool]>,
    /// Per public address: the second of the last release pass made by a claim that found no
    /// free block (at most one such pass per second and address).
    last_claim_pass: Box<[AtomicU32]>,
    /// The block numbers that lie entirely inside one port range.
    eligible: Box<[u16]>,
    /// Most blocks one subscriber may hold.
    pub max_per_subscriber: u32,
}

/// One block as the control plane sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortBlock {
    /// The subscriber owning it.
    pub inside: Ipv4Addr,
    /// The public address of its ports (the subscriber's paired address).
    pub public: Ipv4Addr,
    pub first_port: u16,
    pub size: u16,
    /// Ports of the block held by the subscriber's mappings now (all protocols).
    pub in_use: u32,
}

impl PortBlock {
    pub fn last_port(&self) -> u16 {
        self.first_port + (self.size - 1)
    }

    /// Whether `public` lies in this block.
    pub fn contains(&self, public: SocketAddrV4) -> bool {
        *public.ip() == self.public && (self.first_port..=self.last_port()).contains(&public.port())
    }
}

impl PortBlocks {
    pub fn new(cfg: &Config) -> Option<Self> {
        let size = cfg.port_block_size as u32;
        if size == 0 {
            return None;
        }
        let per_addr = (65536 / size) as usize;
        let n = per_addr * cfg.public_addrs.len();
        Some(PortBlocks {
            size,
            shift: size.trailing_zeros(),
            per_addr,
            owners: (0..n).map(|_| AtomicU64::new(0)).collect(),
            cool: (0..n).map(|_| AtomicU32::new(0)).collect(),
            dirty: (0..cfg.public_addrs.len())
                .map(|_| AtomicBool::new(false))
                .collect(),
            last_claim_pass: (0..cfg.public_addrs.len())
                .map(|_| AtomicU32::new(u32::MAX))
                .collect(),
            eligible: cfg
                .port_blocks()
                .map(|p| (p as u32 >> size.trailing_zeros()) as u16)
                .collect(),
            max_per_subscriber: cfg.max_blocks_per_subscriber(),
        })
    }

    #[inline]
    fn slot(&self, pub_idx: u8, block: usize) -> usize {
        pub_idx as usize * self.per_addr + block
    }

    #[inline]
    fn block_of(&self, port: u16) -> usize {
        (port as u32 >> self.shift) as usize
    }

    /// Whether the block holding `port` on `pub_idx` has an owner (or is being claimed).
    #[inline]
    pub fn is_owned(&self, pub_idx: u8, port: u16) -> bool {
        self.owners[self.slot(pub_idx, self.block_of(port))].load(SeqCst) != 0
    }

    pub fn heap_bytes(&self) -> usize {
        self.owners.len() * 12 + self.dirty.len() + self.eligible.len() * 2
    }
}

impl Engine {
    #[inline]
    fn blocks(&self) -> Option<&PortBlocks> {
        self.table.blocks.as_ref()
    }

    /// Claims one port outside the block logic (forwards, explicit mappings, the one-by-one
    /// allocator, restored entries): in block mode a port whose block is owned is refused, and the
    /// claim is undone if a block claim raced it.
    pub(super) fn claim_single(
        &self,
        pub_idx: u8,
        proto: Proto,
        port: u16,
        word: u32,
        now_s: u32,
    ) -> bool {
        claim_single(&self.table, pub_idx, proto, port, word, now_s)
    }

    /// Chooses and claims a public port for a new dynamic mapping of inside address `ip`: from
    /// its blocks in block mode, else one by one (`claim_port`).
    #[allow(clippy::too_many_arguments)] // claim_port's inputs plus the subscriber
    pub(super) fn claim_dynamic(
        &self,
        sh: &mut Shard,
        pub_idx: u8,
        proto: Proto,
        ip: u32,
        want: u16,
        word: u32,
        now_s: u32,
    ) -> Option<u16> {
        match self.blocks() {
            None => self.claim_port(sh, pub_idx, proto, want, word, now_s),
            Some(b) => self.claim_block_port(b, sh, pub_idx, proto, ip, want, word, now_s),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn claim_block_port(
        &self,
        b: &PortBlocks,
        sh: &mut Shard,
        pub_idx: u8,
        proto: Proto,
        ip: u32,
        want: u16,
        word: u32,
        now_s: u32,
    ) -> Option<u16> {
        let sub = self.table.subs.get(self.table.seed, ip);
        // 1. The block this subscriber last allocated from.
        if let Some(h) = sub.map(|s| s.block_hint.load(SeqCst)).filter(|h| *h != 0) {
            let blk = (h - 1) as usize;
            let r = sh.next_random();
            if let Some(p) = self.port_in_block(b, pub_idx, blk, proto, ip, want, word, now_s, r) {
                return Some(p);
            }
        }
        // 2. Any other block of the subscriber with a slot left.
        let mine = ((ip as u64) << 32, u64::MAX << 32);
        for &blk in b.eligible.iter() {
            let blk = blk as usize;
            let v = b.owners[b.slot(pub_idx, blk)].load(SeqCst);
            if v & mine.1 == mine.0 && ((v as u32) as u64) < b.size as u64 {
                let r = sh.next_random();
                if let Some(p) =
                    self.port_in_block(b, pub_idx, blk, proto, ip, want, word, now_s, r)
                {
                    if let Some(s) = sub {
                        s.block_hint.store(blk as u32 + 1, SeqCst);
                    }
                    return Some(p);
                }
            }
        }
        // 3. A new block, at random among the free ones (RFC 6888 REQ-15).
        if let Some(s) = sub
            && !take(&s.blocks, b.max_per_subscriber)
        {
            return None;
        }
        let mut got = self.claim_new_block(b, sh, pub_idx, ip, now_s);
        if got.is_none()
            && b.last_claim_pass[pub_idx as usize].swap(now_s, SeqCst) != now_s
            && self.release_idle_blocks(b, pub_idx, now_s) > 0
        {
            // Blocks that have become free since the last expiry pass (their ports have rested
            // but `expire` has not run yet): released now, so the host is not refused for them.
            got = self.claim_new_block(b, sh, pub_idx, ip, now_s);
        }
        let Some(blk) = got else {
            if let Some(s) = sub {
                give(&s.blocks);
            }
            return None;
        };
        if let Some(s) = sub {
            s.block_hint.store(blk as u32 + 1, SeqCst);
        }
        // The new block holds one slot for us already.
        let r = sh.next_random();
        self.pick_port_or_unslot(b, pub_idx, blk, proto, ip, want, word, now_s, r)
    }

    /// Takes a slot in block `blk` if `ip` owns it and it has one left, then a port in it.
    #[allow(clippy::too_many_arguments)]
    fn port_in_block(
        &self,
        b: &PortBlocks,
        pub_idx: u8,
        blk: usize,
        proto: Proto,
        ip: u32,
        want: u16,
        word: u32,
        now_s: u32,
        r: u64,
    ) -> Option<u16> {
        let o = &b.owners[b.slot(pub_idx, blk)];
        let size = b.size as u64;
        o.fetch_update(SeqCst, SeqCst, |v| {
            (v >> 32 == ip as u64 && (v & 0xffff_ffff) < size).then_some(v + 1)
        })
        .ok()?;
        self.pick_port_or_unslot(b, pub_idx, blk, proto, ip, want, word, now_s, r)
    }

    /// With a slot of block `blk` held for `ip`: a port in it, or the slot given back.
    #[allow(clippy::too_many_arguments)]
    fn pick_port_or_unslot(
        &self,
        b: &PortBlocks,
        pub_idx: u8,
        blk: usize,
        proto: Proto,
        ip: u32,
        want: u16,
        word: u32,
        now_s: u32,
        r: u64,
    ) -> Option<u16> {
        let got = self.pick_port(b, pub_idx, blk, proto, want, word, now_s, r);
        if got.is_none() {
            self.unslot(b, pub_idx, blk, ip, 0);
        }
        got
    }

    /// A random free, rested port of block `blk` (same parity as `want` first).
    #[allow(clippy::too_many_arguments)]
    fn pick_port(
        &self,
        b: &PortBlocks,
        pub_idx: u8,
        blk: usize,
        proto: Proto,
        want: u16,
        word: u32,
        now_s: u32,
        r: u64,
    ) -> Option<u16> {
        let base = (blk as u32) << b.shift;
        let start = (r % b.size as u64) as u32;
        let ports = &self.table.ports;
        for parity_matters in [true, false] {
            for i in 0..b.size {
                let p = (base + ((start + i) & (b.size - 1))) as u16;
                if parity_matters && p & 1 != want & 1 {
                    continue;
                }
                if ports.try_claim(pub_idx, proto, p, word, now_s) {
                    return Some(p);
                }
            }
        }
        None
    }

    /// Gives back a slot of block `blk` held for `ip`; `until`: rest of the released port.
    fn unslot(&self, b: &PortBlocks, pub_idx: u8, blk: usize, ip: u32, until: u32) -> bool {
        let i = b.slot(pub_idx, blk);
        b.cool[i].fetch_max(until, SeqCst);
        let r = b.owners[i].fetch_update(SeqCst, SeqCst, |v| {
            let used = v & 0xffff_ffff;
            (v >> 32 == ip as u64 && used > 0 && used < CLAIMING).then_some(v - 1)
        });
        match r {
            Ok(v) => {
                if v & 0xffff_ffff == 1 {
                    b.dirty[pub_idx as usize].store(true, SeqCst);
                }
                true
            }
            Err(_) => false,
        }
    }

    /// Claims a free block whose ports are all free and rested for every protocol, at random;
    /// it comes back owned by `ip` with one slot taken.
    fn claim_new_block(
        &self,
        b: &PortBlocks,
        sh: &mut Shard,
        pub_idx: u8,
        ip: u32,
        now_s: u32,
    ) -> Option<usize> {
        let n = b.eligible.len();
        if n == 0 {
            return None;
        }
        let try_one = |blk: usize| -> bool {
            let i = b.slot(pub_idx, blk);
            let o = &b.owners[i];
            if o.load(SeqCst) != 0 || b.cool[i].load(SeqCst) > now_s {
                return false;
            }
            let marked = ((ip as u64) << 32) | CLAIMING;
            if o.compare_exchange(0, marked, SeqCst, SeqCst).is_err() {
                return false;
            }
            fence(SeqCst);
            let base = (blk as u32) << b.shift;
            let clear = (0..b.size).all(|k| {
                let p = (base + k) as u16;
                [Proto::Tcp, Proto::Udp, Proto::Icmp]
                    .into_iter()
                    .all(|pr| self.table.ports.is_claimable(pub_idx, pr, p, now_s))
            });
            o.store(if clear { ((ip as u64) << 32) | 1 } else { 0 }, SeqCst);
            clear
        };
        for _ in 0..16 {
            let blk = b.eligible[(sh.next_random() % n as u64) as usize] as usize;
            if try_one(blk) {
                return Some(blk);
            }
        }
        let start = (sh.next_random() % n as u64) as usize;
        (0..n)
            .map(|k| b.eligible[(start + k) % n] as usize)
            .find(|&blk| try_one(blk))
    }

    /// Frees the port of mapping `m` (it rests until second `until`; 0: free at once) and, when
    /// the port was counted in its subscriber's block, gives the block's slot back.
    pub(super) fn release_mapping_port(&self, m: &Mapping, until: u32) {
        let Some(p) = Proto::from_ip(m.proto) else {
            return;
        };
        self.table.ports.release(m.pub_idx, p, m.pub_port, until);
        if let Some(b) = self.blocks() {
            let blk = b.block_of(m.pub_port);
            self.unslot(b, m.pub_idx, blk, m.in_ip, until);
        }
    }

    /// Releases the blocks with no port in use whose ports have rested (called by
    /// `Engine::expire`; only addresses marked dirty are scanned). Returns how many.
    pub(super) fn expire_blocks(&self, now: Time) -> usize {
        let Some(b) = self.blocks() else {
            return 0;
        };
        let now_s = now.secs_u32();
        (0..b.dirty.len())
            .map(|pub_idx| self.release_idle_blocks(b, pub_idx as u8, now_s))
            .sum()
    }

    /// Releases the blocks of public address `pub_idx` with no port in use whose ports have
    /// rested by `now_s`, if any may be waiting (its dirty flag). Returns how many.
    fn release_idle_blocks(&self, b: &PortBlocks, pub_idx: u8, now_s: u32) -> usize {
        let d = &b.dirty[pub_idx as usize];
        if !d.swap(false, SeqCst) {
            return 0;
        }
        let mut freed = 0;
        let mut pending = false;
        for &blk in b.eligible.iter() {
            let i = b.slot(pub_idx, blk as usize);
            let v = b.owners[i].load(SeqCst);
            if v == 0 || v & 0xffff_ffff != 0 {
                continue;
            }
            if b.cool[i].load(SeqCst) > now_s {
                pending = true;
                continue;
            }
            if b.owners[i].compare_exchange(v, 0, SeqCst, SeqCst).is_ok() {
                b.cool[i].store(0, SeqCst);
                if let Some(s) = self.table.subs.get(self.table.seed, (v >> 32) as u32) {
                    give(&s.blocks);
                    let _ = s
                        .block_hint
                        .compare_exchange(blk as u32 + 1, 0, SeqCst, SeqCst);
                }
                freed += 1;
            }
        }
        if pending {
            d.store(true, SeqCst);
        }
        freed
    }

    /// The port blocks held now, sorted by public address and first port (allocates; control
    /// plane only). Empty when block mode is off.
    pub fn port_blocks(&self) -> Vec<PortBlock> {
        let Some(b) = self.blocks() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (pub_idx, public) in self.config().public_addrs.iter().enumerate() {
            for &blk in b.eligible.iter() {
                let v = b.owners[b.slot(pub_idx as u8, blk as usize)].load(SeqCst);
                let used = v & 0xffff_ffff;
                if v == 0 || used >= CLAIMING {
                    continue;
                }
                out.push(PortBlock {
                    inside: Ipv4Addr::from((v >> 32) as u32),
                    public: *public,
                    first_port: ((blk as u32) << b.shift) as u16,
                    size: b.size as u16,
                    in_use: used as u32,
                });
            }
        }
        out.sort_by_key(|x| (x.public, x.first_port));
        out
    }

    /// Number of port blocks held now.
    pub fn port_block_count(&self) -> usize {
        let Some(b) = self.blocks() else {
            return 0;
        };
        b.owners
            .iter()
            .filter(|o| {
                let v = o.load(SeqCst);
                v != 0 && v & 0xffff_ffff < CLAIMING
            })
            .count()
    }
}

/// [`Engine::claim_single`] on a table (also used while the engine is being built).
pub(super) fn claim_single(
    t: &Table,
    pub_idx: u8,
    proto: Proto,
    port: u16,
    word: u32,
    now_s: u32,
) -> bool {
    let Some(b) = t.blocks.as_ref() else {
        return t.ports.try_claim(pub_idx, proto, port, word, now_s);
    };
    if b.is_owned(pub_idx, port) {
        return false;
    }
    let Some(prev) = t.ports.try_claim_prev(pub_idx, proto, port, word, now_s) else {
        return false;
    };
    fence(SeqCst);
    if b.is_owned(pub_idx, port) {
        t.ports.restore(pub_idx, proto, port, prev);
        return false;
    }
    true
}
