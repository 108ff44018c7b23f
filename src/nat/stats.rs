//! Counters. Each worker owns one block and is its only writer, so increments are plain
//! load + store on its own cache lines (no locked instructions, no sharing); readers sum the blocks.

use std::sync::atomic::{AtomicU64, Ordering};

/// Why a frame was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DropReason {
    /// Too short, or a header field is impossible.
    Malformed = 0,
    /// IPv4 header checksum wrong.
    BadChecksum,
    /// Outbound source outside the inside prefixes.
    Spoofed,
    /// Inbound to a public port with no mapping.
    NoMapping,
    /// Inbound refused by the filtering mode.
    Filtered,
    /// No public port (or identifier) left to allocate.
    NoPorts,
    /// The session table is full.
    TableFull,
    /// A fragment rnat does not translate (of a hairpinned datagram).
    Fragment,
    /// A protocol rnat does not translate.
    UnsupportedProtocol,
    /// An ICMP type rnat does not translate.
    UnsupportedIcmp,
    /// TTL ran out (an ICMP time-exceeded was generated when possible).
    TtlExceeded,
    /// Larger than the next link's MTU.
    TooBig,
    /// A fragment held out of order whose first fragment did not come in time.
    FragmentTimeout,
    /// A fragment refused or evicted by the fragment tracker's limits (RFC 4787 REQ-14a).
    FragmentLimit,
    /// The subscriber (inside address) is at its port or session quota.
    Quota,
    /// Outbound to an address that is never a remote peer (loopback, 0/8, an inside prefix...).
    Martian,
}

impl DropReason {
    pub const ALL: [DropReason; 16] = [
        DropReason::Malformed,
        DropReason::BadChecksum,
        DropReason::Spoofed,
        DropReason::NoMapping,
        DropReason::Filtered,
        DropReason::NoPorts,
        DropReason::TableFull,
        DropReason::Fragment,
        DropReason::UnsupportedProtocol,
        DropReason::UnsupportedIcmp,
        DropReason::TtlExceeded,
        DropReason::TooBig,
        DropReason::FragmentTimeout,
        DropReason::FragmentLimit,
        DropReason::Quota,
        DropReason::Martian,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DropReason::Martian => "martian_destination",
            DropReason::Quota => "quota",
            DropReason::Malformed => "malformed",
            DropReason::BadChecksum => "bad_checksum",
            DropReason::Spoofed => "spoofed_source",
            DropReason::NoMapping => "no_mapping",
            DropReason::Filtered => "filtered",
            DropReason::NoPorts => "no_ports",
            DropReason::TableFull => "table_full",
            DropReason::Fragment => "fragment",
            DropReason::UnsupportedProtocol => "unsupported_protocol",
            DropReason::UnsupportedIcmp => "unsupported_icmp",
            DropReason::TtlExceeded => "ttl_exceeded",
            DropReason::TooBig => "too_big",
            DropReason::FragmentTimeout => "fragment_timeout",
            DropReason::FragmentLimit => "fragment_limit",
        }
    }
}

/// Counter slots.
#[derive(Debug, Clone, Copy)]
#[repr(usize)]
pub enum Counter {
    PktsOut = 0,
    BytesOut,
    PktsIn,
    BytesIn,
    Kernel,
    IcmpGenerated,
    MappingsCreated,
    SessionsCreated,
    /// Fragments held until their first fragment arrives.
    FragHeld,
    /// Held fragments translated and handed to the datapath.
    FragReleased,
    /// Unsolicited inbound SYNs held (RFC 5382 REQ-4).
    SynHeld,
    /// Held SYNs answered with ICMP port-unreachable after the hold time.
    SynRejected,
    /// Held SYNs dropped silently because an outbound SYN for the connection was translated.
    SynCancelled,
    /// Held SYNs forgotten after the hold time without an answer (policy `drop`, or the ICMP
    /// rate limit).
    SynForgotten,
    /// Unsolicited SYNs not held because the store was full (dropped without an answer).
    SynHoldFull,
    /// First drop reason; drops occupy `DropBase + reason`.
    DropBase,
}

const N: usize = Counter::DropBase as usize + DropReason::ALL.len();

/// One worker's counters.
#[repr(align(64))]
pub struct WorkerStats {
    c: [AtomicU64; N],
}

impl Default for WorkerStats {
    fn default() -> Self {
        WorkerStats {
            c: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl WorkerStats {
    #[inline]
    pub(crate) fn add(&self, c: usize, v: u64) {
        // Single writer: no read-modify-write instruction needed.
        let a = &self.c[c];
        a.store(a.load(Ordering::Relaxed).wrapping_add(v), Ordering::Relaxed);
    }
    #[inline]
    pub(crate) fn bump(&self, c: Counter) {
        self.add(c as usize, 1)
    }
    #[inline]
    pub(crate) fn count_drop(&self, r: DropReason) {
        self.add(Counter::DropBase as usize + r as usize, 1)
    }
    fn get(&self, i: usize) -> u64 {
        self.c[i].load(Ordering::Relaxed)
    }
}

/// A sum over all workers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub pkts_out: u64,
    pub bytes_out: u64,
    pub pkts_in: u64,
    pub bytes_in: u64,
    /// Frames left to the host kernel (not NAT traffic).
    pub kernel: u64,
    pub icmp_generated: u64,
    pub mappings_created: u64,
    pub sessions_created: u64,
    /// Fragments held out of order ([`crate::nat::Verdict::Held`]).
    pub frags_held: u64,
    /// Held fragments translated and released (see `Worker::take_released`).
    pub frags_released: u64,
    /// Unsolicited inbound SYNs held (RFC 5382 REQ-4).
    pub syn_held: u64,
    /// Held SYNs answered with ICMP port-unreachable after the hold time.
    pub syn_rejected: u64,
    /// Held SYNs dropped silently because an outbound SYN for the connection was translated.
    pub syn_cancelled: u64,
    /// Held SYNs forgotten after the hold time (policy `drop`, or the ICMP rate limit).
    pub syn_forgotten: u64,
    /// Unsolicited SYNs not held because the store was full.
    pub syn_hold_full: u64,
    pub drops: Vec<(DropReason, u64)>,
}

impl Stats {
    pub(crate) fn sum<'a>(blocks: impl Iterator<Item = &'a WorkerStats>) -> Stats {
        let mut t = [0u64; N];
        for b in blocks {
            for (i, v) in t.iter_mut().enumerate() {
                *v += b.get(i);
            }
        }
        Stats {
            pkts_out: t[Counter::PktsOut as usize],
            bytes_out: t[Counter::BytesOut as usize],
            pkts_in: t[Counter::PktsIn as usize],
            bytes_in: t[Counter::BytesIn as usize],
            kernel: t[Counter::Kernel as usize],
            icmp_generated: t[Counter::IcmpGenerated as usize],
            mappings_created: t[Counter::MappingsCreated as usize],
            sessions_created: t[Counter::SessionsCreated as usize],
            frags_held: t[Counter::FragHeld as usize],
            frags_released: t[Counter::FragReleased as usize],
            syn_held: t[Counter::SynHeld as usize],
            syn_rejected: t[Counter::SynRejected as usize],
            syn_cancelled: t[Counter::SynCancelled as usize],
            syn_forgotten: t[Counter::SynForgotten as usize],
            syn_hold_full: t[Counter::SynHoldFull as usize],
            drops: DropReason::ALL
                .iter()
                .map(|r| (*r, t[Counter::DropBase as usize + *r as usize]))
                .collect(),
        }
    }

    /// Drops counted for `r`.
    pub fn dropped(&self, r: DropReason) -> u64 {
        self.drops
            .iter()
            .find(|(x, _)| *x == r)
            .map_or(0, |(_, n)| *n)
    }
}
