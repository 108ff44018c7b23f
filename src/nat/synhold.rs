//! Unsolicited inbound TCP SYNs, held (RFC 5382 REQ-4).
//!
//! A SYN from outside to a public port with no mapping, or one whose filtering refuses the
//! remote, is not answered at once: the remote may be half of a simultaneous open (RFC 5382
//! REQ-2) whose outbound SYN has not left yet. rnat drops the frame and keeps a copy of its
//! headers here for the hold time (at least 6 s). An outbound SYN that is translated for the same
//! public endpoint and remote in that time cancels it silently (the connection then proceeds
//! normally); otherwise, once the deadline passes, `Worker::take_unanswered_syns` hands back an
//! ICMP port-unreachable about it (or, with the `drop` policy of REQ-4a, forgets it).
//!
//! The store is on the [`Engine`](super::Engine), shared by all workers, because the inbound SYN
//! and the outbound one may reach different workers. It is a fixed-capacity slab plus a
//! fixed-capacity hash index behind one small mutex, all reserved at construction. The mutex is
//! taken only for an unsolicited SYN, for an outbound SYN while the store is not empty (an atomic
//! count says so without the lock), and for the periodic release once a deadline (kept in another
//! atomic) has passed: ordinary traffic never touches it. A full store drops the SYN silently
//! (counted).

use super::Time;
use super::index::{Index, Recycle, Slab};
use super::table::mix;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

/// Bytes of the original frame kept: Ethernet, the longest IPv4 header (60 bytes with options)
/// and the longest TCP header (60 bytes): more than the IP header plus 8 bytes that RFC 792 asks
/// the error to quote.
pub const SLOT: usize = 14 + 60 + 60;

/// Key of a held SYN: the public endpoint it was sent to and the remote that sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Key {
    pub pub_ip: u32,
    pub rem_ip: u32,
    pub pub_port: u16,
    pub rem_port: u16,
}

impl Key {
    fn hash(&self, seed: u64) -> u64 {
        mix(
            seed ^ 0x5e7,
            ((self.pub_ip as u64) << 32) | self.rem_ip as u64,
            ((self.pub_port as u64) << 16) | self.rem_port as u64,
        )
    }
}

/// One held SYN.
#[derive(Clone, Copy)]
pub(super) struct Held {
    pub key: Key,
    /// When the error is due; `u64::MAX` nanoseconds marks a free slot (then `len` links the
    /// free list).
    deadline: u64,
    /// IPv4 total length of the original packet.
    pub ip_len: u16,
    /// Bytes of `frame` in use; the next free id while the slot is free.
    len: u32,
    frame: [u8; SLOT],
}

impl Held {
    /// The kept start of the original frame (Ethernet header onwards).
    pub fn frame(&self) -> &[u8] {
        &self.frame[..(self.len as usize).min(SLOT)]
    }
}

impl Recycle for Held {
    const VACANT: Self = Held {
        key: Key {
            pub_ip: 0,
            rem_ip: 0,
            pub_port: 0,
            rem_port: 0,
        },
        deadline: u64::MAX,
        ip_len: 0,
        len: u32::MAX,
        frame: [0; SLOT],
    };
    fn next_free(&self) -> u32 {
        self.len
    }
    fn kill(&mut self, next: u32) {
        self.deadline = u64::MAX;
        self.len = next;
    }
}

struct Store {
    slab: Slab<Held>,
    index: Index,
}

/// What [`SynHold::hold`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Holding {
    /// A new entry.
    Added,
    /// A retransmission of a SYN already held: the first one's deadline stands.
    AlreadyHeld,
    /// No room: the SYN is dropped without an answer.
    Full,
}

pub(super) struct SynHold {
    seed: u64,
    /// Live entries (read without the lock: zero means nothing to cancel or release).
    count: AtomicUsize,
    /// The earliest deadline of a live entry, in nanoseconds (`u64::MAX`: none).
    next_due: AtomicU64,
    store: Mutex<Store>,
}

impl SynHold {
    pub fn new(capacity: usize, seed: u64) -> SynHold {
        SynHold {
            seed,
            count: AtomicUsize::new(0),
            next_due: AtomicU64::new(u64::MAX),
            store: Mutex::new(Store {
                slab: Slab::with_capacity(capacity),
                index: Index::with_capacity(capacity),
            }),
        }
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.count.load(Relaxed)
    }

    /// Holds a copy of the start of `frame` (an inbound SYN, `ip_len` bytes of IPv4) under `key`
    /// until `deadline`.
    pub fn hold(&self, key: Key, frame: &[u8], ip_len: usize, deadline: Time) -> Holding {
        let h = key.hash(self.seed);
        let mut st = self.store.lock();
        let Store { slab, index } = &mut *st;
        if index.find(h, |id| slab.get(id).key == key).is_some() {
            return Holding::AlreadyHeld;
        }
        let n = frame.len().min(SLOT);
        let mut e = Held {
            key,
            deadline: deadline.as_nanos().min(u64::MAX - 1),
            ip_len: ip_len.min(u16::MAX as usize) as u16,
            len: n as u32,
            frame: [0; SLOT],
        };
        e.frame[..n].copy_from_slice(&frame[..n]);
        let Some(id) = slab.alloc(e) else {
            return Holding::Full;
        };
        if !index.insert(h, id) {
            slab.release(id);
            return Holding::Full;
        }
        self.count.fetch_add(1, Relaxed);
        self.next_due.fetch_min(e.deadline, Relaxed);
        Holding::Added
    }

    /// Removes the entry for `key`, if any (an outbound SYN for it was translated). Without the
    /// lock when nothing is held.
    #[inline]
    pub fn cancel(&self, key: Key) -> bool {
        if self.count.load(Relaxed) == 0 {
            return false;
        }
        let h = key.hash(self.seed);
        let mut st = self.store.lock();
        let Store { slab, index } = &mut *st;
        let Some(id) = index.find(h, |id| slab.get(id).key == key) else {
            return false;
        };
        index.remove(h, id);
        slab.release(id);
        self.count.fetch_sub(1, Relaxed);
        true
    }

    /// Removes and returns one entry whose deadline has passed, scanning from `*cursor` (start
    /// at 0; the caller keeps passing it back so a burst of due entries costs one sweep).
    /// `None` when no entry is due (then the next deadline is recomputed).
    pub fn pop_due(&self, now: Time, cursor: &mut usize) -> Option<Held> {
        let t = now.as_nanos();
        if self.count.load(Relaxed) == 0 || t < self.next_due.load(Relaxed) {
            return None;
        }
        let mut st = self.store.lock();
        let Store { slab, index } = &mut *st;
        while *cursor < slab.high_water() {
            let id = *cursor as u32;
            let e = *slab.get(id);
            if e.deadline != u64::MAX && e.deadline <= t {
                index.remove(e.key.hash(self.seed), id);
                slab.release(id);
                self.count.fetch_sub(1, Relaxed);
                return Some(e);
            }
            *cursor += 1;
        }
        // Swept: the next deadline is the earliest left.
        let mut next = u64::MAX;
        for id in 0..slab.high_water() as u32 {
            next = next.min(slab.get(id).deadline);
        }
        self.next_due.store(next, Relaxed);
        None
    }

    /// Heap bytes reserved.
    pub fn heap_bytes(&self) -> usize {
        let st = self.store.lock();
        st.slab.heap_bytes() + st.index.heap_bytes()
    }
}
