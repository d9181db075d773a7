//! Kernel event limits (issue 16, item 5): a flood of probes must not become a flood of
//! events. Two rules, both counted (`events_suppressed`), never silent:
//!
//! - per source: events whose count is at most the trigger pass this rule (each is one of
//!   PortSentry's per-probe lines, the last one the trigger line), and so do the next
//!   `EVENTS_BEYOND_TRIGGER` (a detect-mode scanner's next probes, logged as PortSentry did);
//!   beyond those only counts that are a power of two, so the daemon still learns how many
//!   came;
//! - globally: a per-CPU token bucket (GCRA: one timestamp in PS_THROTTLE's slot 3), at most
//!   `Config::event_burst` at once and one per `Config::event_interval_ns` after; it applies to
//!   every event the caller asks about, the trigger line included.
//!
//! Ban events (a source newly banned) and prefix triggers are never held back: the caller
//! does not ask. A ban the table had no room for asks the per-source rule only
//! ([`allows_per_source`]): under a forged flood the real scanner's table-full event must not
//! wait behind the forged ones in the global bucket. One global BPF function, verified once.

use portsentry_common::{effective_trigger, Stat, EVENTS_BEYOND_TRIGGER, LAYOUT_VERSION};

use crate::{count, maps::*};

/// The slot of PS_THROTTLE that holds the bucket's theoretical arrival time.
const BUCKET_SLOT: u32 = 3;

/// Whether an event whose source has `hits` probes in the window (0 for events about no
/// counted source) may go out at `now` (the caller's [`crate::coarse_ns`] reading, one helper call
/// less on the flood path); counts it as suppressed when not.
#[inline(always)]
pub fn allows(hits: u64, now: u64) -> bool {
    portsentry_event_gate(hits, now, 1) != 0
}

/// The per-source rule of [`allows`] alone, without the global bucket.
#[inline(always)]
pub fn allows_per_source(hits: u64) -> bool {
    portsentry_event_gate(hits, 0, 0) != 0
}

/// [`allows`] as a global BPF function: 1 to send, 0 suppressed (and counted); `global` 0
/// skips the global bucket.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn portsentry_event_gate(hits: u64, now: u64, global: u32) -> u32 {
    let Some(cfg) = PS_CONFIG.get(0) else {
        return 1;
    };
    if cfg.layout_version != LAYOUT_VERSION {
        return 1;
    }
    let free = u64::from(effective_trigger(cfg.scan_trigger)) + EVENTS_BEYOND_TRIGGER;
    if hits > free && hits & (hits - 1) != 0 {
        count(Stat::EventsSuppressed);
        return 0;
    }
    let interval = cfg.event_interval_ns;
    if interval == 0 || global == 0 {
        return 1;
    }
    let Some(tat) = PS_THROTTLE.get_ptr_mut(BUCKET_SLOT) else {
        return 1;
    };
    // SAFETY: per-CPU slot from a successful lookup; no other CPU writes it.
    let last = unsafe { *tat };
    let next = if last > now { last } else { now }.saturating_add(interval);
    if next - now > interval.wrapping_mul(u64::from(cfg.event_burst)) {
        count(Stat::EventsSuppressed);
        return 0;
    }
    // SAFETY: as above.
    unsafe { *tat = next };
    1
}
