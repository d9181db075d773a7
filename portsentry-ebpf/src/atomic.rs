//! Atomic operations on map memory shared by all CPUs.
//!
//! The BPF target has no compare-and-swap in Rust's target description, so `core::sync::atomic`
//! exposes no read-modify-write methods there. The compiler intrinsics still lower to BPF atomic
//! instructions (`lock xadd`, and with `-Ctarget-cpu=v3` the BPF_FETCH, XCHG and CMPXCHG forms).

use core::intrinsics::{atomic_cxchg, atomic_or, atomic_xadd, atomic_xchg, AtomicOrdering};

/// Adds `n` and returns the previous value.
///
/// Sequentially consistent on purpose: LLVM's BPF backend lowers a *relaxed* `atomicrmw add` to
/// the plain `lock xadd`, which returns nothing, even when the result is used (the caller then
/// silently reads the addend). Pinned by the data-plane trigger test.
///
/// # Safety
/// `ptr` must point to a live, 8-byte aligned `u64` in map memory.
#[inline(always)]
pub unsafe fn fetch_add(ptr: *mut u64, n: u64) -> u64 {
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(ptr, n) }
}

/// Adds `n` without reading the result: the cheaper `lock xadd`.
///
/// # Safety
/// As [`fetch_add`].
#[inline(always)]
pub unsafe fn add(ptr: *mut u64, n: u64) {
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(ptr, n) };
}

/// Stores `new` and returns the previous value.
///
/// # Safety
/// As [`fetch_add`].
#[inline(always)]
pub unsafe fn swap(ptr: *mut u64, new: u64) -> u64 {
    unsafe { atomic_xchg::<u64, { AtomicOrdering::Relaxed }>(ptr, new) }
}

/// Stores `new` if the value is `old`; true if it did.
///
/// # Safety
/// As [`fetch_add`].
#[inline(always)]
pub unsafe fn compare_exchange(ptr: *mut u64, old: u64, new: u64) -> bool {
    unsafe {
        atomic_cxchg::<u64, { AtomicOrdering::Relaxed }, { AtomicOrdering::Relaxed }>(ptr, old, new)
            .1
    }
}

/// Sets the bits of `mask`, without reading the result (BPF_OR | BPF_ATOMIC).
///
/// # Safety
/// As [`fetch_add`].
#[inline(always)]
pub unsafe fn or(ptr: *mut u64, mask: u64) {
    unsafe { atomic_or::<u64, u64, { AtomicOrdering::Relaxed }>(ptr, mask) };
}
