//! A fixed-capacity hash index from 64-bit hashes to `u32` ids.
//!
//! The keys themselves live elsewhere (in a slab); the index stores a 32-bit tag of the hash and the
//! id, 8 bytes a slot, and asks the caller to confirm a candidate id. Linear probing with
//! backward-shift deletion: no tombstones, so the table never needs rehashing and never allocates
//! after construction. The load factor stays at or below 3/4 because `insert` refuses entries past
//! the capacity given at construction.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

const EMPTY: u32 = u32::MAX;

#[derive(Clone, Copy)]
struct Slot {
    tag: u32,
    id: u32,
}

impl Slot {
    #[inline]
    fn unpack(w: u64) -> Slot {
        Slot {
            tag: w as u32,
            id: (w >> 32) as u32,
        }
    }
    #[inline]
    fn pack(self) -> u64 {
        ((self.id as u64) << 32) | self.tag as u64
    }
}

const EMPTY_SLOT: u64 = (EMPTY as u64) << 32;

/// The slots are words read and written with relaxed atomics (plain loads and stores on x86 and
/// ARM): the owner changes them under its shard's lock, and an [`IndexView`] may read them
/// without it, as a cache-warming hint.
pub(crate) struct Index {
    slots: Arc<[AtomicU64]>,
    len: usize,
    cap: usize,
}

/// A lock-free, read-only handle on an [`Index`]'s slots. What it reads may be stale or torn
/// against concurrent changes; it is only used to pull a slot's cache line in early.
pub(crate) struct IndexView {
    slots: Arc<[AtomicU64]>,
}

/// How many slots from its home [`IndexView::candidate`] looks at: at the index's load factor
/// (3/4 at most) nearly every entry sits that close to its home.
const HINT_PROBE: usize = 4;

impl IndexView {
    #[inline]
    fn home(&self, hash: u64) -> usize {
        ((tag_of(hash) as u64 * self.slots.len() as u64) >> 32) as usize
    }

    /// The address of `hash`'s home slot, for a prefetch (the slot is not read).
    #[inline]
    pub fn home_addr(&self, hash: u64) -> usize {
        self.slots
            .get(self.home(hash))
            .map_or(0, |w| w as *const AtomicU64 as usize)
    }

    /// The id of the first entry, at most [`HINT_PROBE`] slots from `hash`'s home, whose tag is
    /// `hash`'s: the likely owner of the key, whose record the caller may prefetch. Read without
    /// the owner's lock, so only a hint (the key is not checked, the slots may be changing).
    #[inline]
    pub fn candidate(&self, hash: u64) -> Option<u32> {
        let tag = tag_of(hash);
        let n = self.slots.len();
        let mut i = self.home(hash);
        for _ in 0..HINT_PROBE.min(n) {
            let s = Slot::unpack(self.slots.get(i)?.load(Relaxed));
            if s.id == EMPTY {
                return None;
            }
            if s.tag == tag {
                return Some(s.id);
            }
            i = if i + 1 == n { 0 } else { i + 1 };
        }
        None
    }
}

/// A lock-free handle on a [`Slab`]'s memory: its base address and record size, so that the batch
/// path can compute (and prefetch) a record's address without the owner's lock. It never reads
/// the records; the slab never moves or grows, so the address stays right for the table's life.
#[derive(Clone, Copy)]
pub(crate) struct SlabView {
    base: usize,
    len: usize,
    size: usize,
}

impl SlabView {
    /// Address and size of record `id`; `None` past the slab.
    #[inline]
    pub fn record(&self, id: u32) -> Option<(usize, usize)> {
        let id = id as usize;
        (id < self.len).then(|| (self.base + id * self.size, self.size))
    }
}

/// The low half of the hash: the table shards by its top bits, so those are constant within an
/// index and must not choose the home slot.
#[inline]
fn tag_of(hash: u64) -> u32 {
    hash as u32
}

impl Index {
    /// An index that holds up to `cap` entries.
    pub fn with_capacity(cap: usize) -> Self {
        // Any bucket count works (homes come from a multiply-shift, not a mask), so the table is
        // sized exactly for a load factor of 3/4 at capacity.
        let buckets = (cap.max(1) * 4).div_ceil(3).max(8);
        Index {
            slots: (0..buckets).map(|_| AtomicU64::new(EMPTY_SLOT)).collect(),
            len: 0,
            cap,
        }
    }

    /// A lock-free reader of the slots.
    pub fn view(&self) -> IndexView {
        IndexView {
            slots: self.slots.clone(),
        }
    }

    #[inline]
    fn slot(&self, i: usize) -> Slot {
        Slot::unpack(self.slots[i].load(Relaxed))
    }

    #[inline]
    fn set(&self, i: usize, s: Slot) {
        self.slots[i].store(s.pack(), Relaxed);
    }

    #[inline]
    fn home(&self, tag: u32) -> usize {
        ((tag as u64 * self.slots.len() as u64) >> 32) as usize
    }

    #[inline]
    fn next(&self, i: usize) -> usize {
        if i + 1 == self.slots.len() { 0 } else { i + 1 }
    }

    /// Probe distance from `from` forward to `to`, wrapping.
    #[inline]
    fn dist(&self, from: usize, to: usize) -> usize {
        if to >= from {
            to - from
        } else {
            to + self.slots.len() - from
        }
    }

    /// The id whose hash is `hash` and for which `is_key` says yes.
    #[inline]
    pub fn find(&self, hash: u64, mut is_key: impl FnMut(u32) -> bool) -> Option<u32> {
        let tag = tag_of(hash);
        let mut i = self.home(tag);
        loop {
            let s = self.slot(i);
            if s.id == EMPTY {
                return None;
            }
            if s.tag == tag && is_key(s.id) {
                return Some(s.id);
            }
            i = self.next(i);
        }
    }

    /// Adds an entry. Returns false, changing nothing, when the index is at capacity.
    #[inline]
    pub fn insert(&mut self, hash: u64, id: u32) -> bool {
        debug_assert_ne!(id, EMPTY);
        if self.len >= self.cap {
            return false;
        }
        let tag = tag_of(hash);
        let mut i = self.home(tag);
        while self.slot(i).id != EMPTY {
            i = self.next(i);
        }
        self.set(i, Slot { tag, id });
        self.len += 1;
        true
    }

    /// Removes the entry (`hash`, `id`). Returns whether it was present.
    pub fn remove(&mut self, hash: u64, id: u32) -> bool {
        let tag = tag_of(hash);
        let mut i = self.home(tag);
        loop {
            let s = self.slot(i);
            if s.id == EMPTY {
                return false;
            }
            if s.id == id {
                break;
            }
            i = self.next(i);
        }
        // Backward-shift: pull later entries of the probe run into the hole when their home allows.
        let mut hole = i;
        let mut j = self.next(i);
        loop {
            let s = self.slot(j);
            if s.id == EMPTY {
                break;
            }
            let home = self.home(s.tag);
            // Entry at j may move to the hole if its home is not cyclically in (hole, j].
            if self.dist(home, hole) < self.dist(home, j) {
                self.set(hole, s);
                hole = j;
            }
            j = self.next(j);
        }
        self.set(hole, Slot { tag: 0, id: EMPTY });
        self.len -= 1;
        true
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.slots.len() * std::mem::size_of::<AtomicU64>()
    }
}

/// A record that can sit on a slab's free list: while dead, one of its fields holds the next
/// free id, so the free list costs no memory of its own.
pub(crate) trait Recycle: Copy {
    /// A dead record, used to fill (and so pre-fault) the slab's memory at construction.
    const VACANT: Self;
    fn next_free(&self) -> u32;
    /// Marks the record dead and links it to `next`.
    fn kill(&mut self, next: u32);
}

const NONE: u32 = u32::MAX;

/// A fixed-capacity slab of records addressed by `u32` ids, with an intrusive free list.
///
/// All `cap` records are written at construction, so the memory is faulted in up front: the
/// per-packet path never takes a first-touch page fault (nor zeroes a page) when a session is
/// created, and the resident size a user sees is the reserved size from the start.
pub(crate) struct Slab<T> {
    items: Box<[T]>,
    /// Records ever handed out (the high-water mark); those above it have never been used.
    used: usize,
    free_head: u32,
    free_len: usize,
}

impl<T: Recycle> Slab<T> {
    pub fn with_capacity(cap: usize) -> Self {
        Slab {
            items: vec![T::VACANT; cap].into_boxed_slice(),
            used: 0,
            free_head: NONE,
            free_len: 0,
        }
    }

    /// Stores `v`; `None` when full. Never reallocates.
    #[inline]
    pub fn alloc(&mut self, v: T) -> Option<u32> {
        if self.free_head != NONE {
            let id = self.free_head;
            let slot = &mut self.items[id as usize];
            self.free_head = slot.next_free();
            *slot = v;
            self.free_len -= 1;
            Some(id)
        } else if let Some(slot) = self.items.get_mut(self.used) {
            *slot = v;
            self.used += 1;
            Some((self.used - 1) as u32)
        } else {
            None
        }
    }

    /// Kills the record `id` and puts it on the free list.
    #[inline]
    pub fn release(&mut self, id: u32) {
        let head = self.free_head;
        self.items[id as usize].kill(head);
        self.free_head = id;
        self.free_len += 1;
    }

    #[inline]
    pub fn get(&self, id: u32) -> &T {
        &self.items[id as usize]
    }

    #[inline]
    pub fn get_mut(&mut self, id: u32) -> &mut T {
        &mut self.items[id as usize]
    }

    /// Number of slots ever used (live or free), for sweeping.
    pub fn high_water(&self) -> usize {
        self.used
    }

    pub fn live(&self) -> usize {
        self.used - self.free_len
    }

    pub fn heap_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.items)
    }

    /// A lock-free handle on the records' addresses.
    pub fn view(&self) -> SlabView {
        SlabView {
            base: self.items.as_ptr() as usize,
            len: self.items.len(),
            size: std::mem::size_of::<T>(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The index agrees with a model map through any sequence of inserts and removes,
        /// including colliding homes (small hash space) that exercise backward shifting.
        #[test]
        fn index_matches_model(ops in proptest::collection::vec((any::<bool>(), 0u32..64), 1..400)) {
            let mut idx = Index::with_capacity(48);
            let mut model = std::collections::HashMap::new();
            let hash = |k: u32| ((k as u64 % 13) << 28) | ((k as u64) << 32);
            for (ins, k) in ops {
                if ins {
                    if !model.contains_key(&k) && idx.insert(hash(k), k) {
                        model.insert(k, ());
                    }
                } else if model.remove(&k).is_some() {
                    prop_assert!(idx.remove(hash(k), k));
                }
                for k in 0..64u32 {
                    prop_assert_eq!(idx.find(hash(k), |id| id == k).is_some(), model.contains_key(&k));
                }
                prop_assert_eq!(idx.len(), model.len());
            }
        }
    }

    #[test]
    fn insert_refuses_past_capacity() {
        let mut idx = Index::with_capacity(3);
        assert!(idx.insert(1 << 28, 1));
        assert!(idx.insert(2 << 28, 2));
        assert!(idx.insert(3 << 28, 3));
        assert!(!idx.insert(4 << 28, 4));
        assert!(idx.remove(2 << 28, 2));
        assert!(idx.insert(4 << 28, 4));
    }

    /// The lock-free hint finds entries near their home, says `None` for absent keys and empty
    /// homes, and follows removals.
    #[test]
    fn view_candidate_follows_the_index() {
        let mut idx = Index::with_capacity(64);
        let v = idx.view();
        // Distinct tags spread over the slots (homes come from the tag's top bits).
        let hash = |k: u32| (0xabcd_u64 << 40) | (k as u64 * (u32::MAX as u64 / 64) + 7);
        for k in 0..32 {
            assert_eq!(v.candidate(hash(k)), None);
            assert!(idx.insert(hash(k), 100 + k));
        }
        for k in 0..32 {
            assert_eq!(v.candidate(hash(k)), Some(100 + k), "key {k}");
            assert_ne!(v.home_addr(hash(k)), 0);
        }
        // Same home as key 3, another tag: not a candidate.
        assert_eq!(v.candidate(hash(3) + 1), None);
        assert!(idx.remove(hash(3), 103));
        assert_eq!(v.candidate(hash(3)), None);
        // A colliding run: the second entry sits one slot past its home.
        assert!(idx.insert(hash(40) ^ 1, 7));
        assert!(idx.insert(hash(40) ^ 2, 8));
        assert_eq!(v.candidate(hash(40) ^ 2), Some(8));
    }

    #[derive(Debug, PartialEq, Clone, Copy)]
    struct Rec(u32, bool);
    impl Recycle for Rec {
        const VACANT: Self = Rec(0, false);
        fn next_free(&self) -> u32 {
            self.0
        }
        fn kill(&mut self, next: u32) {
            *self = Rec(next, false);
        }
    }

    #[test]
    fn slab_reuses_and_caps() {
        let mut s = Slab::with_capacity(3);
        let a = s.alloc(Rec(10, true)).unwrap();
        let b = s.alloc(Rec(11, true)).unwrap();
        let _c = s.alloc(Rec(12, true)).unwrap();
        assert!(s.alloc(Rec(13, true)).is_none());
        s.release(a);
        s.release(b);
        assert_eq!(s.live(), 1);
        assert_eq!(s.alloc(Rec(14, true)), Some(b));
        assert_eq!(s.alloc(Rec(15, true)), Some(a));
        assert_eq!(*s.get(a), Rec(15, true));
        assert!(s.alloc(Rec(16, true)).is_none());
        let v = s.view();
        let base = v.record(0).unwrap().0;
        assert_eq!(
            v.record(2),
            Some((base + 2 * size_of::<Rec>(), size_of::<Rec>()))
        );
        assert_eq!(base, s.get(0) as *const Rec as usize);
        assert_eq!(v.record(3), None);
    }
}
