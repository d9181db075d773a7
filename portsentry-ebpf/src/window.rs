//! The windowed hit counter shared by PS_HITS (per source) and PS_PREFIX_HITS (per prefix): one
//! rule for when a window ends and who restarts it, whatever map holds the counter.

use crate::atomic;

/// Counts one hit on the counter at `start`/`count` (map memory every CPU updates atomically)
/// and returns the count in the current window, this hit included, and whether this hit began
/// a new window. When the window is over, the CPU that wins the compare-and-swap on its start
/// restarts the count at 1; the others add to the new window. With no window (`window_ns` 0)
/// the count never decays (PortSentry's behaviour).
///
/// # Safety
/// `start` and `count` point into the value of a successful map lookup.
#[inline(always)]
pub unsafe fn count(start: *mut u64, count: *mut u64, window_ns: u64, now: u64) -> (u64, bool) {
    // SAFETY: the caller's contract.
    unsafe {
        let started = start.read_volatile();
        if window_ns != 0
            && now.wrapping_sub(started) > window_ns
            && atomic::compare_exchange(start, started, now)
        {
            atomic::swap(count, 1);
            return (1, true);
        }
        (atomic::fetch_add(count, 1) + 1, false)
    }
}
