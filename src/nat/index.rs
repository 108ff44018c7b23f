//! A fixed-capacity hash index from 64-bit hashes to `u32` ids.
//!
//! The keys themselves live elsewhere (in a slab); the index stores a 32-bit tag of the hash and the
//! id, 8 bytes a slot, and asks the caller to confirm a candidate id. Linear probing with
//! backward-shift deletion: no tombstones, so the table never needs rehashing and never allocates
//! after construction. The load factor stays at or below 3/4 because `insert` refuses entries past
//! the capacity given at construction.

const EMPTY: u32 = u32::MAX;

#[derive(Clone, Copy)]
struct Slot {
    tag: u32,
    id: u32,
}

pub(crate) struct Index {
    slots: Box<[Slot]>,
    mask: usize,
    len: usize,
    cap: usize,
}

#[inline]
fn tag_of(hash: u64) -> u32 {
    (hash >> 32) as u32
}

impl Index {
    /// An index that holds up to `cap` entries.
    pub fn with_capacity(cap: usize) -> Self {
        let buckets = (cap.max(1) * 4).div_ceil(3).next_power_of_two().max(8);
        Index {
            slots: vec![Slot { tag: 0, id: EMPTY }; buckets].into_boxed_slice(),
            mask: buckets - 1,
            len: 0,
            cap,
        }
    }

    #[inline]
    fn home(&self, tag: u32) -> usize {
        tag as usize & self.mask
    }

    /// The id whose hash is `hash` and for which `is_key` says yes.
    #[inline]
    pub fn find(&self, hash: u64, mut is_key: impl FnMut(u32) -> bool) -> Option<u32> {
        let tag = tag_of(hash);
        let mut i = self.home(tag);
        loop {
            let s = self.slots[i];
            if s.id == EMPTY {
                return None;
            }
            if s.tag == tag && is_key(s.id) {
                return Some(s.id);
            }
            i = (i + 1) & self.mask;
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
        while self.slots[i].id != EMPTY {
            i = (i + 1) & self.mask;
        }
        self.slots[i] = Slot { tag, id };
        self.len += 1;
        true
    }

    /// Removes the entry (`hash`, `id`). Returns whether it was present.
    pub fn remove(&mut self, hash: u64, id: u32) -> bool {
        let tag = tag_of(hash);
        let mut i = self.home(tag);
        loop {
            let s = self.slots[i];
            if s.id == EMPTY {
                return false;
            }
            if s.id == id {
                break;
            }
            i = (i + 1) & self.mask;
        }
        // Backward-shift: pull later entries of the probe run into the hole when their home allows.
        let mut hole = i;
        let mut j = (i + 1) & self.mask;
        loop {
            let s = self.slots[j];
            if s.id == EMPTY {
                break;
            }
            let home = self.home(s.tag);
            // Entry at j may move to the hole if its home is not cyclically in (hole, j].
            let dist_j = j.wrapping_sub(home) & self.mask;
            let dist_hole = hole.wrapping_sub(home) & self.mask;
            if dist_hole < dist_j {
                self.slots[hole] = s;
                hole = j;
            }
            j = (j + 1) & self.mask;
        }
        self.slots[hole] = Slot { tag: 0, id: EMPTY };
        self.len -= 1;
        true
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.slots.len() * std::mem::size_of::<Slot>()
    }
}

/// A fixed-capacity slab of records addressed by `u32` ids, with a free list.
pub(crate) struct Slab<T> {
    items: Vec<T>,
    free: Vec<u32>,
    cap: usize,
}

impl<T> Slab<T> {
    pub fn with_capacity(cap: usize) -> Self {
        Slab {
            items: Vec::with_capacity(cap),
            free: Vec::with_capacity(cap),
            cap,
        }
    }

    /// Stores `v`; `None` when full. Never reallocates.
    #[inline]
    pub fn alloc(&mut self, v: T) -> Option<u32> {
        if let Some(id) = self.free.pop() {
            self.items[id as usize] = v;
            Some(id)
        } else if self.items.len() < self.cap {
            self.items.push(v);
            Some((self.items.len() - 1) as u32)
        } else {
            None
        }
    }

    /// Returns `id` to the free list; the caller marks the record dead.
    #[inline]
    pub fn release(&mut self, id: u32) {
        self.free.push(id);
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
        self.items.len()
    }

    pub fn live(&self) -> usize {
        self.items.len() - self.free.len()
    }

    pub fn heap_bytes(&self) -> usize {
        self.items.capacity() * std::mem::size_of::<T>() + self.free.capacity() * 4
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
            let hash = |k: u32| ((k as u64 % 13) << 32) | k as u64;
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
        assert!(idx.insert(1 << 32, 1));
        assert!(idx.insert(2 << 32, 2));
        assert!(idx.insert(3 << 32, 3));
        assert!(!idx.insert(4 << 32, 4));
        assert!(idx.remove(2 << 32, 2));
        assert!(idx.insert(4 << 32, 4));
    }

    #[test]
    fn slab_reuses_and_caps() {
        let mut s = Slab::with_capacity(2);
        let a = s.alloc(10).unwrap();
        let _b = s.alloc(11).unwrap();
        assert!(s.alloc(12).is_none());
        s.release(a);
        assert_eq!(s.alloc(13), Some(a));
        assert_eq!(*s.get(a), 13);
    }
}
