//! Cache hints for the core's batch path: a software prefetch behind a safe function, so that
//! `src/nat` (which forbids `unsafe`) can ask for a line without reading it.

/// Whether [`prefetch`] issues a real prefetch on this target (x86_64); elsewhere it does nothing
/// and callers fall back to plain loads where they can.
pub const PREFETCH: bool = cfg!(target_arch = "x86_64");

/// Asks the CPU to bring the cache line holding `addr` into all cache levels (`PREFETCHT0`).
/// `addr` may be any value: the instruction is a hint, it never faults and reads nothing the
/// program can observe, so a stale or wrong address only wastes a memory access.
#[inline(always)]
pub fn prefetch(addr: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `_mm_prefetch` is `unsafe` only for its `sse` target feature, which every x86_64
    // CPU has (it is in the baseline target). PREFETCHT0 performs no architectural memory access:
    // an unmapped, unaligned or freed address is ignored without a fault, and no memory or
    // register the program can see changes, so any `addr` is sound.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(addr as *const i8);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = addr;
}

/// Prefetches the first and the last cache line of the `len` bytes at `addr`: all of a record of
/// up to 64 bytes, which spans one line or two.
#[inline(always)]
pub fn prefetch_span(addr: usize, len: usize) {
    prefetch(addr);
    let last = addr.wrapping_add(len.saturating_sub(1));
    if last >> 6 != addr >> 6 {
        prefetch(last);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Prefetching is a hint: any address, mapped or not, is harmless.
    #[test]
    fn prefetch_any_address_is_harmless() {
        let v = [7u64; 32];
        prefetch(v.as_ptr() as usize);
        prefetch_span(v.as_ptr() as usize + 60, 48);
        prefetch(0);
        prefetch(usize::MAX);
        prefetch_span(usize::MAX - 3, 48);
        assert_eq!(v[31], 7);
    }
}
