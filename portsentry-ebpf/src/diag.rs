//! Kernel-side diagnostics for an operator asking "why?": why a packet counted as malformed,
//! bogus or spoofed, why a fragment or extension-header chain was dropped, which table was full,
//! which event was lost, which prefix reached its trigger. Written with aya-log to its
//! own ring buffer (AYA_LOGS) and forwarded by the daemon into its log (`log_level`).
//!
//! Off by default at no cost: `AYA_LOG_LEVEL` is a read-only global the daemon sets at load
//! (0 = off), so the verifier sees every call below as dead code and removes it. Counters
//! (PS_STATS) count every case whatever the level; these lines only explain them.
//!
//! Every line is written by one global BPF function, [`portsentry_diag`], which the verifier
//! checks once on its own: inlined at each call site, aya-log's record code multiplied the
//! program's verification work by four.

use aya_ebpf::bindings::xdp_action;
use aya_log_ebpf::{
    debug,
    macro_support::{level_enabled, Level},
    trace,
};
use portsentry_common::AddrKey;

use crate::parse::Malformed;

/// What [`portsentry_diag`] says; its argument `what`.
#[derive(Clone, Copy)]
#[repr(u32)]
enum What {
    MalformedFrame,
    MalformedIpHeader,
    MalformedL4,
    MalformedExtension,
    TooManyExtensions,
    TinyFragment,
    OverlappingFragment,
    IncompleteFirstFragment,
    Bogus,
    Spoofed,
    Unverified,
    HitTableFull,
    BanTableFull,
    EventLost,
    Probe,
    PrefixTrigger,
}

#[inline(always)]
fn say(level: Level, what: What, src: Option<&AddrKey>, port: u16, n: u64) {
    say_code(level, what as u32, src, port, n);
}

#[inline(always)]
fn say_code(level: Level, what: u32, src: Option<&AddrKey>, port: u16, n: u64) {
    if !level_enabled(level) {
        return;
    }
    let (hi, lo) = match src {
        Some(k) => {
            let mut hi = [0u8; 8];
            let mut lo = [0u8; 8];
            hi.copy_from_slice(&k.addr[..8]);
            lo.copy_from_slice(&k.addr[8..]);
            (u64::from_be_bytes(hi), u64::from_be_bytes(lo))
        }
        None => (0, 0),
    };
    portsentry_diag(what, hi, lo, u32::from(port), n);
}

#[inline(always)]
pub fn malformed_frame() {
    say(Level::Debug, What::MalformedFrame, None, 0, 0);
}

/// `why` is a [`Malformed`] code; the reasons below are numbered the same way (asserted).
#[inline(always)]
pub fn malformed(src: &AddrKey, why: u8) {
    say_code(Level::Debug, u32::from(why), Some(src), 0, 0);
}

const _: () = {
    assert!(What::MalformedIpHeader as u32 == Malformed::IpHeader as u32);
    assert!(What::MalformedL4 as u32 == Malformed::TruncatedL4 as u32);
    assert!(What::MalformedExtension as u32 == Malformed::TruncatedExtension as u32);
    assert!(What::TooManyExtensions as u32 == Malformed::TooManyExtensions as u32);
    assert!(What::TinyFragment as u32 == Malformed::TinyFragment as u32);
    assert!(What::OverlappingFragment as u32 == Malformed::OverlappingFragment as u32);
    assert!(What::IncompleteFirstFragment as u32 == Malformed::IncompleteFirstFragment as u32);
};

#[inline(always)]
pub fn bogus(src: &AddrKey, port: u16) {
    say(Level::Debug, What::Bogus, Some(src), port, 0);
}

#[inline(always)]
pub fn spoofed(src: &AddrKey, port: u16) {
    say(Level::Debug, What::Spoofed, Some(src), port, 0);
}

#[inline(always)]
pub fn unverified(src: &AddrKey) {
    say(Level::Debug, What::Unverified, Some(src), 0, 0);
}

#[inline(always)]
pub fn hit_table_full(src: &AddrKey) {
    say(Level::Debug, What::HitTableFull, Some(src), 0, 0);
}

#[inline(always)]
pub fn ban_table_full(src: &AddrKey) {
    say(Level::Debug, What::BanTableFull, Some(src), 0, 0);
}

#[inline(always)]
pub fn event_lost() {
    say(Level::Debug, What::EventLost, None, 0, 0);
}

#[inline(always)]
pub fn probe(src: &AddrKey, port: u16, hits: u64) {
    say(Level::Trace, What::Probe, Some(src), port, hits);
}

/// `n` probes from `prefix`/`len` (IPv4: the length within the IPv4 address) reached the
/// prefix trigger.
#[inline(always)]
pub fn prefix_trigger(prefix: &AddrKey, len: u32, n: u64) {
    say(
        Level::Debug,
        What::PrefixTrigger,
        Some(prefix),
        len as u16,
        n,
    );
}

/// Writes one diagnostic. Arguments are plain numbers (a global function takes no pointers to
/// the stack): the address as two big-endian halves, the port, a count. Returns XDP_PASS,
/// unused: a global function must return a scalar.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn portsentry_diag(what: u32, hi: u64, lo: u64, port: u32, n: u64) -> u32 {
    let mut a = [0u8; 16];
    a[..8].copy_from_slice(&hi.to_be_bytes());
    a[8..].copy_from_slice(&lo.to_be_bytes());
    // The macros' first argument is a context they do not use (aya-log-ebpf 0.2).
    let c = &();
    match what {
        x if x == What::MalformedFrame as u32 => debug!(
            c,
            "malformed: frame too short for its Ethernet, VLAN or IP header; passed"
        ),
        x if x == What::MalformedIpHeader as u32 => debug!(
            c,
            "malformed: packet from {:i}: IP version or header length invalid; passed", a
        ),
        x if x == What::MalformedL4 as u32 => debug!(
            c,
            "malformed: packet from {:i}: TCP/UDP header cut short; passed", a
        ),
        x if x == What::MalformedExtension as u32 => debug!(
            c,
            "malformed: packet from {:i}: IPv6 extension header cut short; passed", a
        ),
        x if x == What::TooManyExtensions as u32 => debug!(
            c,
            "evasion: packet from {:i}: more IPv6 extension headers than walked; dropped", a
        ),
        x if x == What::TinyFragment as u32 => debug!(
            c,
            "evasion: IPv4 first fragment from {:i} too short for its TCP/UDP header (RFC 1858); dropped",
            a
        ),
        x if x == What::OverlappingFragment as u32 => debug!(
            c,
            "evasion: IPv4 fragment from {:i} at offset 1 (overlapping-fragment trick, RFC 3128); dropped",
            a
        ),
        x if x == What::IncompleteFirstFragment as u32 => debug!(
            c,
            "evasion: IPv6 first fragment from {:i} without the whole header chain and TCP/UDP header (RFC 7112); dropped",
            a
        ),
        x if x == What::Bogus as u32 => debug!(
            c,
            "bogus source {:i} (no real peer has it) probed port {}: not counted", a, port
        ),
        x if x == What::Spoofed as u32 => debug!(
            c,
            "path check: probe from {:i} to port {} did not arrive the way this host routes back (other interface or neighbour): spoofed, not banned",
            a,
            port
        ),
        x if x == What::Unverified as u32 => debug!(
            c,
            "path check: no route or neighbour entry yet for {:i}: banned, marked unverified", a
        ),
        x if x == What::HitTableFull as u32 => debug!(
            c,
            "hit table: could neither add nor find {:i}; probe counted as its first", a
        ),
        x if x == What::BanTableFull as u32 => debug!(
            c,
            "ban table full: {:i} not banned in the kernel; the daemon makes room", a
        ),
        x if x == What::EventLost as u32 => debug!(
            c,
            "event ring buffer full: an event was lost (the daemon is behind)"
        ),
        x if x == What::PrefixTrigger as u32 => debug!(
            c,
            "prefix {:i}/{}: {} probes in the window reached the prefix trigger; reported to the daemon",
            a,
            port,
            n
        ),
        x if x == What::Probe as u32 => trace!(
            c,
            "probe from {:i} to port {}: {} in the window", a, port, n
        ),
        _ => {}
    }
    xdp_action::XDP_PASS
}
