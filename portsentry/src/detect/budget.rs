//! Bounded logs under floods (issue 16, item 5). A flood of probes from many (forged) sources
//! must not become a flood of log lines: each probe used to give a line, so 20 000 forged
//! probes wrote 40 000 lines. Within each interval ([`INTERVAL_MS`]):
//!
//! - lines of events that enforce a ban (a source newly blocked) are always written, up to
//!   [`BAN_LINES`] sources, so a real scanner's ban appears in the middle of a flood;
//! - every other event line (probes below the trigger, detect mode, a full table, refused,
//!   ignored, spoofed, bogus) is limited to [`LINES_PER_SOURCE`] per source and
//!   [`OTHER_LINES`] in all;
//! - what was held back is summarised in one line when the interval ends: how many lines, from
//!   how many sources, the busiest ones, and how many events the kernel's own limits held back
//!   (`events_suppressed`, `portsentry-ebpf/src/limit.rs`). Nothing is silent: counters and
//!   `portsentry list` keep every probe and ban.
//!
//! Owns only these counts; the event loop asks before it hands an event to the log sink.

use std::{collections::HashMap, net::IpAddr};

/// The accounting interval.
pub const INTERVAL_MS: u64 = 10_000;
/// Non-enforcing lines per source and interval.
pub const LINES_PER_SOURCE: u32 = 5;
/// Non-enforcing lines in all per interval.
pub const OTHER_LINES: u32 = 100;
/// Sources whose ban is logged per interval (each ban is two lines).
pub const BAN_LINES: u32 = 250;
/// Sources tracked per interval; beyond it, sources are only counted.
const MAX_SOURCES: usize = 65_536;

/// What kind of line an event makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineClass {
    /// A source newly blocked: its `Scan from:` and `attackalert:` lines.
    Ban,
    /// Anything else.
    Other,
}

#[derive(Debug, Default)]
pub struct LineBudget {
    started_ms: u64,
    other: u32,
    bans: u32,
    /// Lines per source this interval (written and held back).
    per_source: HashMap<IpAddr, u32>,
    held_other: u64,
    held_bans: u64,
    /// Sources with at least one line held back.
    held_sources: HashMap<IpAddr, u64>,
    held_untracked: u64,
    /// The kernel's `events_suppressed` counter at the last summary (or at start).
    kernel_seen: u64,
    /// Events the kernel held back in the interval being summarised.
    kernel_held: u64,
}

impl LineBudget {
    /// Whether an event line of `class` from `src` is written now. Call [`Self::summary`]
    /// first, so a finished interval is reported before a new one starts.
    pub fn admit(&mut self, src: IpAddr, class: LineClass, now_ms: u64) -> bool {
        if self.started_ms == 0 {
            self.started_ms = now_ms;
        }
        let tracked = self.per_source.len() < MAX_SOURCES || self.per_source.contains_key(&src);
        let seen = if tracked {
            let n = self.per_source.entry(src).or_insert(0);
            *n += 1;
            *n
        } else {
            u32::MAX
        };
        let admitted = match class {
            LineClass::Ban => {
                self.bans < BAN_LINES && {
                    self.bans += 1;
                    true
                }
            }
            LineClass::Other => {
                seen <= LINES_PER_SOURCE && self.other < OTHER_LINES && {
                    self.other += 1;
                    true
                }
            }
        };
        if !admitted {
            match class {
                LineClass::Ban => self.held_bans += 1,
                LineClass::Other => self.held_other += 1,
            }
            if let Some(n) = self.held_sources.get_mut(&src) {
                *n += 1;
            } else if self.held_sources.len() < MAX_SOURCES {
                self.held_sources.insert(src, 1);
            } else {
                self.held_untracked += 1;
            }
        }
        admitted
    }

    /// The kernel's `events_suppressed` counter now: what it counted before is not this run's
    /// (or this interval's) to report.
    pub fn set_kernel_baseline(&mut self, kernel_suppressed: u64) {
        self.kernel_seen = kernel_suppressed;
    }

    /// Whether an interval has ended, so [`Self::summary`] has something to decide.
    pub fn due(&self, now_ms: u64) -> bool {
        self.started_ms != 0 && now_ms.saturating_sub(self.started_ms) >= INTERVAL_MS
    }

    /// At the end of an interval: the summary of what was held back, if anything, and a fresh
    /// interval. `kernel_suppressed` is the kernel's `events_suppressed` counter now.
    pub fn summary(&mut self, now_ms: u64, kernel_suppressed: u64) -> Option<String> {
        if !self.due(now_ms) {
            return None;
        }
        self.kernel_held = kernel_suppressed.saturating_sub(self.kernel_seen);
        let line =
            (self.held_other + self.held_bans + self.kernel_held > 0).then(|| self.describe());
        *self = Self {
            started_ms: now_ms,
            kernel_seen: kernel_suppressed.max(self.kernel_seen),
            ..Self::default()
        };
        line
    }

    fn describe(&self) -> String {
        let kernel = self.kernel_held;
        if self.held_other + self.held_bans == 0 {
            return format!(
                "portsentry: flood: {kernel} probe event(s) held back in the kernel in the last {} s (from {} beyond a source's trigger only every power of two, at most {} a second per CPU); `portsentry status` counts every probe (events_suppressed), `portsentry list` shows every ban",
                INTERVAL_MS / 1000,
                portsentry_common::EVENTS_BEYOND_TRIGGER,
                portsentry_common::EVENT_RATE_PER_CPU,
            );
        }
        let kernel = if kernel > 0 {
            format!("; {kernel} more probe event(s) held back in the kernel (events_suppressed)")
        } else {
            String::new()
        };
        let sources = self.held_sources.len() as u64 + u64::from(self.held_untracked > 0);
        let mut busiest: Vec<(&IpAddr, &u64)> = self.held_sources.iter().collect();
        busiest.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let top: Vec<String> = busiest
            .iter()
            .take(3)
            .map(|(a, n)| format!("{a} ×{n}"))
            .collect();
        format!(
            "portsentry: flood: {} probe line(s) and {} ban(s) from {}{} source(s) not logged line by line in the last {} s (busiest: {}){kernel}; at most {LINES_PER_SOURCE} lines per source, {OTHER_LINES} probe lines and {BAN_LINES} bans per {} s are; `portsentry status` counts every probe, `portsentry list` shows every ban",
            self.held_other,
            self.held_bans,
            if self.held_untracked > 0 { "over " } else { "" },
            sources,
            INTERVAL_MS / 1000,
            top.join(", "),
            INTERVAL_MS / 1000,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(i: u32) -> IpAddr {
        IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i))
    }

    #[test]
    fn a_flood_of_sources_is_capped_and_summarised_a_real_ban_still_logged() {
        let mut b = LineBudget::default();
        let mut written = 0;
        for i in 0..20_000 {
            written += u32::from(b.admit(ip(i), LineClass::Other, 1_000));
        }
        assert_eq!(written, OTHER_LINES);
        assert!(
            b.admit(ip(99_999), LineClass::Ban, 2_000),
            "the real scanner's ban"
        );
        assert!(b.summary(5_000, 0).is_none(), "the interval is not over");
        let s = b.summary(11_000, 0).expect("summary");
        assert!(
            s.starts_with(
                "portsentry: flood: 19900 probe line(s) and 0 ban(s) from 19900 source(s)"
            ),
            "{s}"
        );
        assert!(b.summary(12_000, 0).is_none(), "a fresh interval");
        assert!(b.admit(ip(1), LineClass::Other, 12_000), "budgets are back");
    }

    #[test]
    fn one_busy_source_gets_a_few_lines_others_are_unaffected() {
        let mut b = LineBudget::default();
        let busy = ip(7);
        let written = (0..50)
            .filter(|_| b.admit(busy, LineClass::Other, 100))
            .count();
        assert_eq!(written, LINES_PER_SOURCE as usize);
        assert!(b.admit(ip(8), LineClass::Other, 100));
        let s = b.summary(20_000, 0).unwrap();
        assert!(
            s.contains("45 probe line(s)") && s.contains("10.0.0.7 ×45"),
            "{s}"
        );
    }

    #[test]
    fn bans_have_their_own_larger_budget() {
        let mut b = LineBudget::default();
        let written = (0..1_000)
            .filter(|i| b.admit(ip(*i), LineClass::Ban, 100))
            .count();
        assert_eq!(written, BAN_LINES as usize);
        assert!(
            b.admit(ip(5_000), LineClass::Other, 100),
            "probe lines unaffected"
        );
        assert!(b.summary(10_100, 0).unwrap().contains(" and 750 ban(s)"));
    }

    #[test]
    fn events_the_kernel_held_back_are_reported_never_silent() {
        let mut b = LineBudget::default();
        b.set_kernel_baseline(500);
        assert!(b.admit(ip(1), LineClass::Other, 1_000));
        assert!(!b.due(5_000));
        let s = b.summary(11_000, 1_700).expect("kernel-only summary");
        assert!(
            s.starts_with("portsentry: flood: 1200 probe event(s) held back in the kernel"),
            "{s}"
        );
        assert!(b.summary(22_000, 1_700).is_none(), "nothing new");
        for i in 0..10 {
            b.admit(ip(7), LineClass::Other, 23_000 + i);
        }
        let s = b.summary(33_000, 1_710).unwrap();
        assert!(
            s.contains("(busiest: 10.0.0.7 ×5); 10 more probe event(s) held back in the kernel"),
            "{s}"
        );
    }
}
