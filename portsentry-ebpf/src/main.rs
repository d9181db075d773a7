//! portsentry's XDP program.
//!
//! Pipeline, top to bottom: parse → ban check → guard check → source check and allowlist (only
//! for would-be probes) → learned peers → count → path check (only for would-be bans) →
//! verdict → prefix count (`prefix.rs`). From the source check on, every way through parsing
//! and classification is one state for the verifier (`join`). Events other than bans and prefix
//! triggers pass the event limits first (`limit.rs`). An ordinary packet (not banned, not to a
//! guarded port) costs one config read, two ban-prefilter reads, one port-bitmap read and one
//! counter update: array reads only, no hash lookup.
//!
//! The same object carries the cgroup programs that learn peers (`peers.rs`), so that they
//! share PS_PEERS and PS_CONFIG with the XDP program.
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod atomic;
mod challenge;
mod diag;
mod limit;
mod maps;
mod neigh;
mod parse;
mod path;
mod peers;
mod prefix;
mod runtime;
mod source;
mod window;

use aya_ebpf::{
    bindings::{xdp_action, BPF_NOEXIST},
    btf_maps::lpm_trie::Key,
    helpers::{bpf_ktime_get_boot_ns, bpf_ktime_get_coarse_ns},
    macros::xdp,
    programs::XdpContext,
};
use maps::*;
use parse::{Malformed, NoSource, Packet, L4};
use path::Path;
use portsentry_common::{
    allow_slot_v4, allow_slot_v6, ban_flags, config_flags, effective_trigger, event_flags,
    tcp_flags::{ACK, CWR, ECE, FIN, PSH, RST, SYN, URG},
    AddrKey, BanEntry, BanOrigin, BootInstant, Config, Event, EventKind, HitEntry, IpProto,
    ScanType, Stat, BAN_FILTER_WORDS, LAYOUT_VERSION,
};

#[xdp]
pub fn portsentry(ctx: XdpContext) -> u32 {
    entry::<true>(&ctx)
}

/// The same pipeline without the learned-peer branch, for kernels without the SYN cookie
/// helpers (before Linux 6.0), which would refuse the whole program: the loader probes and
/// picks this one there. Its name is `portsentry_common::PROGRAM_NAME_COMPAT`.
#[xdp]
pub fn portsentry_compat(ctx: XdpContext) -> u32 {
    entry::<false>(&ctx)
}

/// `PEERS`: whether the learned-peer branch (and the helpers it calls) is compiled in.
#[inline(always)]
fn entry<const PEERS: bool>(ctx: &XdpContext) -> u32 {
    let Some(cfg) = PS_CONFIG.get(0) else {
        return xdp_action::XDP_PASS;
    };
    // A zeroed config means no daemon has configured us yet: fail open without counting.
    if cfg.layout_version != LAYOUT_VERSION {
        return xdp_action::XDP_PASS;
    }
    process::<PEERS>(ctx, cfg)
}

#[inline(always)]
fn process<const PEERS: bool>(ctx: &XdpContext, cfg: &Config) -> u32 {
    let enforce = cfg.flags & config_flags::ENFORCE != 0;

    // 1. Parse.
    let mut pkt = Packet::EMPTY;
    match parse::parse(ctx, &mut pkt) {
        Ok(()) => {}
        Err(NoSource::NotIp) => {
            // An ARP frame may claim a neighbour's address from another MAC: contest it.
            if neigh::watch(ctx, pkt.l3_offset, cfg) {
                count(Stat::NeighbourFlips);
            }
            return pass();
        }
        Err(NoSource::Malformed) => {
            count(Stat::Malformed);
            diag::malformed_frame();
            return pass();
        }
    };

    // 2. Ban check: needs only the source, so fragments and malformed L4 of a banned source drop.
    let ban = ban_state(&pkt, cfg);
    let banned = ban == BanState::Banned;
    if banned && enforce {
        count(Stat::Dropped);
        return xdp_action::XDP_DROP;
    }
    if !enforce && ban != BanState::None {
        // Detect mode: note what block mode would have dropped, keep reporting probes.
        count(Stat::DroppedWould);
    }
    if pkt.malformed != Malformed::No as u8 {
        diag::malformed(&pkt.src, pkt.malformed);
        // Fragment and extension-header evasion drops in every mode: the stack would reassemble
        // or accept it behind the detector's back (docs/DATAPLANE.md, "Parsing").
        if Malformed::drops(pkt.malformed) {
            count(if pkt.malformed == Malformed::TooManyExtensions as u8 {
                Stat::ExtChainsDropped
            } else {
                Stat::FragmentsDropped
            });
            return xdp_action::XDP_DROP;
        }
        count(Stat::Malformed);
        return pass();
    }

    // 3. Guard check and classification. An ACK (without SYN or RST) to a trap port is no
    // probe; with peer challenges on, it may complete a handshake on a cookie (step 5).
    let peer_challenge = PEERS && cfg.flags & config_flags::PEER_CHALLENGE != 0;
    let mut cookie_ack = false;
    let L4 {
        protocol,
        flags: tcp_flags,
        dst_port,
    } = pkt.l4;
    let Ok(ip_proto) = IpProto::try_from(protocol) else {
        // So may an ND message (ICMPv6).
        if pkt.is_v6 && neigh::watch(ctx, pkt.l3_offset, cfg) {
            count(Stat::NeighbourFlips);
        }
        return pass();
    };
    let scan = match ip_proto {
        IpProto::Tcp => {
            if !is_guarded(&PS_TCP_GUARD, dst_port) {
                return pass();
            }
            match classify_tcp(tcp_flags) {
                Some(scan) => scan,
                None if peer_challenge && challenge::is_handshake_ack(tcp_flags) => {
                    cookie_ack = true;
                    ScanType::TcpSyn
                }
                None => return pass(),
            }
        }
        IpProto::Udp => {
            if !is_guarded(&PS_UDP_GUARD, dst_port) {
                return pass();
            }
            ScanType::Udp
        }
    };

    // 4.–9. (`probe`), after `join`: from here on, every way through steps 1 to 3 is one.
    let facts = u64::from(scan as u8) | u64::from(ban as u8) << 8 | u64::from(cookie_ack) << 16;
    let Some(facts) = join(&mut pkt, facts) else {
        return pass();
    };
    probe::<PEERS>(
        ctx,
        cfg,
        &pkt,
        facts as u8,
        (facts >> 8) as u8 & 3,
        (facts >> 16) & 1 != 0,
    )
}

/// Where the ways into step 4 become one, for the verifier: the packet's facts and `facts` (the
/// scan type, ban state and cookie-ACK flag, packed) are written to this CPU's scratch and read
/// back. Map memory is not tracked, so what comes back is unknown to the verifier, and the same
/// on every way here.
///
/// Without it, the verifier walked steps 4 to 9 once per combination of what parsing and
/// classification had found (VLAN tags, family, IP options, scan type, protocol, ban state):
/// constants along each way, and stack bytes zeroed on some ways and written on others, which
/// Linux 6.1 cannot tell apart (later kernels mostly can). That was 164 000 of the 284 000
/// instructions 6.1 verified. A global function would do the same, but its stack frame did not
/// fit beside the pipeline's in the 512 bytes a call chain may use.
///
/// The scratch is PS_COOKIE_SCRATCH's route area, which the cookie code fills only later, in
/// step 5, for the same packet. `None` (never: the array has an entry per CPU) ends the pipeline.
#[inline(always)]
fn join(pkt: &mut Packet, facts: u64) -> Option<u64> {
    // Copied as words, in place (a copy by value took a temporary on the stack, which is at its
    // limit): the Packet has no padding (4 words, asserted) and every field is set from
    // `Packet::EMPTY` on.
    const WORDS: usize = core::mem::size_of::<Packet>() / 8;
    const _: () = assert!(core::mem::size_of::<Packet>() == 32 && WORDS < 8);
    let scratch = PS_COOKIE_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: the route area is 64 bytes of 8-aligned per-CPU map memory (4 words and one more
    // fit); nothing else on this CPU uses it while the program runs. `pkt` is 4 initialised,
    // 8-aligned words. Volatile, so that the compiler does not forward the values past the map
    // (which is the point).
    unsafe {
        let area = (&raw mut (*scratch).fib) as *mut u64;
        let words = (pkt as *mut Packet).cast::<u64>();
        for i in 0..WORDS {
            area.add(i).write_volatile(words.add(i).read());
        }
        area.add(WORDS).write_volatile(facts);
        for i in 0..WORDS {
            words.add(i).write(area.add(i).read_volatile());
        }
        Some(area.add(WORDS).read_volatile())
    }
}

/// Steps 4 to 9 of [`process`] for a would-be probe of scan type `scan` (a [`ScanType`] code)
/// from a source in ban state `ban` (a [`BanState`]); `cookie_ack`: an ACK that may complete a
/// cookie handshake (step 3). Returns the XDP action.
#[inline(always)]
fn probe<const PEERS: bool>(
    ctx: &XdpContext,
    cfg: &Config,
    pkt: &Packet,
    scan: u8,
    ban: u8,
    cookie_ack: bool,
) -> u32 {
    let dst_port = pkt.l4.dst_port;
    let peer_challenge = PEERS && cfg.flags & config_flags::PEER_CHALLENGE != 0;

    // 4. Source check and allowlist, only for would-be probes. A bogus source is never counted:
    // it cannot be a real peer, so any ban would only hurt.
    if source::is_bogus(&pkt.src, pkt.is_v6) {
        if !cookie_ack {
            count(Stat::BogusSource);
            diag::bogus(&pkt.src, dst_port);
            let now = coarse_ns();
            if throttle_allows(THROTTLE_BOGUS, now) && limit::allows(0, now) {
                emit(&probe_event(ctx, pkt, EventKind::Bogus, scan, 0, now));
            }
        }
        return pass();
    }
    if cfg.allow_cidr_count != 0
        && may_be_allowed(pkt)
        && PS_ALLOW_CIDRS.get(&Key::new(128, pkt.src.addr)).is_some()
    {
        if !cookie_ack {
            count(Stat::Allowlisted);
            // PortSentry logged ignored hosts' probes (`ignored: [true]`); throttled here,
            // rate-limited per source in userspace.
            let now = coarse_ns();
            if throttle_allows(THROTTLE_IGNORED, now) && limit::allows(0, now) {
                emit(&probe_event(ctx, pkt, EventKind::Ignored, scan, 0, now));
            }
        }
        return pass();
    }

    let block_flag = if pkt.l4.protocol == IpProto::Tcp as u8 {
        config_flags::BLOCK_TCP
    } else {
        config_flags::BLOCK_UDP
    };
    let blocks_proto = cfg.flags & block_flag != 0;
    let now = coarse_ns();

    // 5. Learned peers (only where a probe could ban): a trap probe does not ban on its own. A
    // SYN is answered with a SYN cookie; the ACK that returns a valid one goes on as a probe.
    let mut confirmed = false;
    // Peer times are the daemon's boot-clock times.
    if peer_challenge && blocks_proto && peers::is_learned(&pkt.src, cfg, boot_ns()) {
        if !cookie_ack {
            // A contested neighbour's MAC may be a poisoner's: no cookie goes to it.
            if neigh::contested(&pkt.src, cfg) {
                count(Stat::Contested);
                if throttle_allows(THROTTLE_SPOOFED, now) && limit::allows(0, now) {
                    emit(&probe_event(ctx, pkt, EventKind::Contested, scan, 0, now));
                }
                return pass();
            }
            return challenge::answer(ctx, pkt, scan, now);
        }
        // Checked only where a cookie went to this source moments ago, a few wrong ones a
        // window (challenge.rs): guessing a cookie off-path takes years.
        if !challenge::check_ack(ctx, &pkt.src, now) {
            return pass();
        }
        count(Stat::CookiesConfirmed);
        confirmed = true;
    } else if cookie_ack {
        return pass();
    }

    // 6. Count. Link-local sources per receiving interface: fe80::1 on two links is two hosts.
    count(probe_stat(scan));
    // SAFETY: ctx.ctx is the xdp_md the kernel handed us.
    let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    let hits = count_probe(
        &source::hit_key(&pkt.src, ifindex, pkt.is_v6),
        cfg.window_ns,
        now,
    );
    diag::probe(&pkt.src, dst_port, hits);

    let action = verdict(ctx, pkt, cfg, ban, scan, hits, confirmed, blocks_proto, now);
    // 9. The prefix count, after the verdict: a probe that bans its source sends its ban event
    // before its prefix's trigger, so the daemon folds that ban into the prefix too.
    prefix::probe(ctx, cfg, pkt, scan, confirmed, now);
    action
}

/// Steps 7 and 8 of [`process`]: the verdict on a counted probe, its event and its ban.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn verdict(
    ctx: &XdpContext,
    pkt: &Packet,
    cfg: &Config,
    ban: u8,
    scan: u8,
    hits: u64,
    confirmed: bool,
    blocks_proto: bool,
    now: u64,
) -> u32 {
    let enforce = cfg.flags & config_flags::ENFORCE != 0;
    let banned = ban == BanState::Banned as u8;
    let dst_port = pkt.l4.dst_port;

    // 7. Verdict.
    let trigger = u64::from(effective_trigger(cfg.scan_trigger));

    let event = || {
        let mut event = probe_event(ctx, pkt, EventKind::Probe, scan, hits, now);
        if !enforce || !blocks_proto {
            event.flags |= event_flags::NOBLOCK;
        }
        if confirmed {
            event.flags |= event_flags::CONFIRMED;
        }
        event
    };

    // A shadow ban (detect mode) stays a report only: in detect mode it is not renewed, in block
    // mode the probe replaces it with a real ban.
    let recorded = banned || (ban == BanState::Shadow as u8 && !enforce);
    if hits < trigger || !blocks_proto || recorded {
        // The limit first: under a flood most events are held back, and building one is
        // wasted work on the path that caps how fast a flood is absorbed.
        if limit::allows(hits, now) {
            emit(&event());
        }
        return pass();
    }
    let mut event = event();

    // 8. Path check, only for would-be bans: a forged source must not ban the host it names. A
    // contested neighbour (its MAC changed moments ago: ARP/ND poisoning) never bans, not even
    // on a completed handshake. A completed cookie handshake gets the path check too: its ACK
    // must still come from the route's neighbour, so a LAN forger that somehow saw the cookie
    // cannot finish it from its own MAC.
    if neigh::contested(&pkt.src, cfg) {
        count(Stat::Contested);
        if throttle_allows(THROTTLE_SPOOFED, now) && limit::allows(hits, now) {
            event.kind = EventKind::Contested as u8;
            emit(&event);
        }
        return pass();
    }
    if cfg.flags & config_flags::PATH_CHECK != 0 {
        match path::check(ctx, pkt) {
            Path::Verified => {}
            Path::Unverified => {
                count(Stat::Unverified);
                diag::unverified(&pkt.src);
                event.flags |= event_flags::UNVERIFIED;
            }
            Path::Spoofed => {
                count(Stat::Spoofed);
                diag::spoofed(&pkt.src, dst_port);
                if throttle_allows(THROTTLE_SPOOFED, now) && limit::allows(hits, now) {
                    event.kind = EventKind::Spoofed as u8;
                    emit(&event);
                }
                return pass();
            }
        }
    }

    // The prefilter bit first: from the insert on, every packet of this source must reach the
    // exact lookup.
    let (word, bit) = pkt.src.filter_slot();
    if let Some(w) = PS_BAN_FILTER_KERNEL.get_ptr_mut(word) {
        // SAFETY: array memory from a successful lookup; every CPU sets bits atomically.
        unsafe { atomic::or(w, bit) };
    }
    // Ban times are boot-clock times, as the daemon's: the event of a ban carries its time.
    event.timestamp_ns = boot_ns();
    // BPF_ANY: an expired ban for this source may still be in the table and is replaced. Under
    // table pressure (an insert failed on this CPU within TABLE_FULL_BACKOFF_NS) the table is
    // left to the daemon, which picks what gives way (`bans/pressure.rs`): a forged flood would
    // otherwise refill every slot it frees before it could ban the source it freed it for.
    if !under_table_pressure(now)
        && PS_BANS
            .insert(pkt.src, detected_ban(&event, cfg, enforce), 0)
            .is_ok()
    {
        count(Stat::Bans);
        event.kind = EventKind::Ban as u8;
    } else {
        note_table_full(now);
        count(Stat::BanTableFull);
        diag::ban_table_full(&pkt.src);
        event.kind = EventKind::BanTableFull as u8;
    }
    // A ban's event always goes out. A ban the table had no room for passes the per-source
    // limit only: the daemon makes room and bans it, and under a forged flood the real
    // scanner's table-full event must not be held back in the global bucket with the forged.
    let send = event.kind == EventKind::Ban as u8 || limit::allows_per_source(hits);
    if enforce {
        event.flags |= event_flags::DROPPED;
        if send {
            emit(&event);
        }
        count(Stat::Dropped);
        xdp_action::XDP_DROP
    } else {
        if send {
            emit(&event);
        }
        count(Stat::DroppedWould);
        pass()
    }
}

/// The ban a probe makes: from its event's time, port, protocol and scan type.
#[inline(always)]
fn detected_ban(event: &Event, cfg: &Config, enforce: bool) -> BanEntry {
    let now = event.timestamp_ns;
    BanEntry {
        banned_at_ns: now as BootInstant,
        expires_at_ns: if cfg.ban_ttl_ns == 0 {
            0
        } else {
            now.saturating_add(cfg.ban_ttl_ns)
        },
        drops: 0,
        port: event.dst_port,
        proto: event.proto,
        scan_type: event.scan_type,
        origin: BanOrigin::Detected as u8,
        flags: (if enforce { 0 } else { ban_flags::SHADOW })
            | if event.flags & event_flags::UNVERIFIED != 0 {
                ban_flags::UNVERIFIED
            } else {
                0
            },
        _pad: [0; 2],
    }
}

/// An event about this packet's source and transport header.
#[inline(always)]
fn probe_event(
    ctx: &XdpContext,
    pkt: &Packet,
    kind: EventKind,
    scan: u8,
    count: u64,
    now: u64,
) -> Event {
    Event {
        timestamp_ns: now,
        count,
        src: pkt.src,
        // SAFETY: ctx.ctx is the xdp_md the kernel handed us.
        ifindex: unsafe { (*ctx.ctx).ingress_ifindex },
        dst_port: pkt.l4.dst_port,
        kind: kind as u8,
        proto: pkt.l4.protocol,
        scan_type: scan,
        tcp_flags: pkt.l4.flags,
        flags: event_base_flags(pkt),
        prefix_len: 0,
        _pad: [0; 4],
    }
}

/// Slots in PS_THROTTLE.
const THROTTLE_BOGUS: u32 = 0;
/// Also the slot of contested-source events: both are refused bans.
const THROTTLE_SPOOFED: u32 = 1;
const THROTTLE_IGNORED: u32 = 2;
/// The last failed ban insert on this CPU (coarse clock), for [`under_table_pressure`].
const THROTTLE_TABLE_FULL: u32 = 4;
/// How long a CPU leaves the ban table to the daemon after an insert failed.
const TABLE_FULL_BACKOFF_NS: u64 = 1_000_000_000;
/// At most one throttled event of a kind per CPU in this long: a forged flood must not turn
/// into a flood of events and log lines (the counters still count every packet).
const THROTTLE_NS: u64 = 100_000_000;

#[inline(always)]
fn throttle_allows(slot: u32, now: u64) -> bool {
    match PS_THROTTLE.get_ptr_mut(slot) {
        Some(last) => {
            // SAFETY: per-CPU slot from a successful lookup; no other CPU writes it.
            unsafe {
                if *last != 0 && now.wrapping_sub(*last) < THROTTLE_NS {
                    return false;
                }
                *last = now;
            }
            true
        }
        None => false,
    }
}

/// Whether an insert into the ban table failed on this CPU within [`TABLE_FULL_BACKOFF_NS`].
#[inline(always)]
fn under_table_pressure(now: u64) -> bool {
    match PS_THROTTLE.get(THROTTLE_TABLE_FULL) {
        Some(last) => *last != 0 && now.wrapping_sub(*last) < TABLE_FULL_BACKOFF_NS,
        None => false,
    }
}

/// Remembers that the ban table had no room (once per backoff period, so that the period
/// ends and the program tries again).
#[inline(always)]
fn note_table_full(now: u64) {
    if let Some(last) = PS_THROTTLE.get_ptr_mut(THROTTLE_TABLE_FULL) {
        // SAFETY: per-CPU slot from a successful lookup; no other CPU writes it.
        unsafe {
            if *last == 0 || now.wrapping_sub(*last) >= TABLE_FULL_BACKOFF_NS {
                *last = now;
            }
        }
    }
}

#[inline(always)]
fn pass() -> u32 {
    count(Stat::Passed);
    xdp_action::XDP_PASS
}

/// CLOCK_BOOTTIME: for everything compared with the daemon's times (ban expiry, learned
/// peers). It reads the clock source, 50–90 ns on the project's VMs: more than the whole pass
/// path, so the per-probe bookkeeping uses [`coarse_ns`].
#[inline(always)]
fn boot_ns() -> u64 {
    // SAFETY: helper without arguments.
    unsafe { bpf_ktime_get_boot_ns() }
}

/// CLOCK_MONOTONIC_COARSE (last tick, a few ns): for state only this program reads (hit and
/// prefix windows, throttles, the event limit, probe events' timestamps). Windows of seconds
/// and limits of milliseconds do not notice its one-tick resolution.
#[inline(always)]
fn coarse_ns() -> u64 {
    // SAFETY: helper without arguments (Linux 5.11+).
    unsafe { bpf_ktime_get_coarse_ns() }
}

#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum BanState {
    None = 0,
    /// A detect-mode ban: reported, never dropped.
    Shadow = 1,
    Banned = 2,
}

/// An exact ban that has not expired, or a banned network. Bumps the matching drop counter.
///
/// The allowlist always wins: userspace lifts exact bans an allow entry covers, but a banned
/// network may contain an allowlisted address, so a network hit is checked against the
/// allowlist here. That costs a second trie lookup only for sources inside a banned network.
#[inline(always)]
fn ban_state(pkt: &Packet, cfg: &Config) -> BanState {
    let src = &pkt.src;
    if may_be_banned(pkt) {
        if let Some(ban) = exact_ban(src) {
            return ban;
        }
    }
    if cfg.ban_cidr_count != 0 {
        let key = Key::new(128, src.addr);
        if let Some(drops) = PS_BAN_CIDRS.get(&key) {
            if cfg.allow_cidr_count != 0 && PS_ALLOW_CIDRS.get(&key).is_some() {
                return BanState::None;
            }
            let drops = drops as *const u64 as *mut u64;
            // SAFETY: as above; trie values are stable map memory.
            unsafe { atomic::add(drops, 1) };
            return BanState::Banned;
        }
    }
    BanState::None
}

/// The ban prefilters: false means `src` is not in PS_BANS. Every writer of PS_BANS sets the
/// source's bit first (userspace in PS_BAN_FILTER, this program in PS_BAN_FILTER_KERNEL) and
/// no bit is ever cleared, so a clear bit in both is proof. Two inlined array reads instead
/// of a hash lookup over a 16-byte key. A missing word (never: the index is in range) says
/// "maybe".
#[inline(always)]
fn may_be_banned(pkt: &Packet) -> bool {
    let (word, bit) = if pkt.is_v6 {
        pkt.src.filter_slot()
    } else {
        let a = &pkt.src.addr;
        AddrKey::filter_slot_v4([a[12], a[13], a[14], a[15]])
    };
    let set = |filter: &aya_ebpf::btf_maps::Array<u64, { BAN_FILTER_WORDS as usize }>| {
        filter.get(word).is_none_or(|w| *w & bit != 0)
    };
    set(&PS_BAN_FILTER) || set(&PS_BAN_FILTER_KERNEL)
}

/// The allowlist prefilter: false means no PS_ALLOW_CIDRS entry covers `src`. Userspace sets
/// every bit an entry may cover before it writes the entry and never clears one, so a clear bit
/// is proof. IPv4: the source's /16, exact; IPv6: a hash of its /32. One array read instead
/// of an LPM-trie walk. A missing word (never: the index is in range) says "maybe".
#[inline(always)]
fn may_be_allowed(pkt: &Packet) -> bool {
    let a = &pkt.src.addr;
    let (word, bit) = if pkt.is_v6 {
        allow_slot_v6([a[0], a[1], a[2], a[3]])
    } else {
        allow_slot_v4([a[12], a[13], a[14], a[15]])
    };
    PS_ALLOW_FILTER.get(word).is_none_or(|w| *w & bit != 0)
}

/// The exact ban of `src` in PS_BANS, if it has not expired. Bumps its drop counter.
#[inline(always)]
fn exact_ban(src: &AddrKey) -> Option<BanState> {
    if let Some(ban) = PS_BANS.get_ptr_mut(src) {
        // SAFETY: the pointer comes from a successful map lookup.
        let (expires, flags) = unsafe { ((*ban).expires_at_ns, (*ban).flags) };
        if expires == 0 || boot_ns() < expires {
            if flags & ban_flags::SHADOW != 0 {
                return Some(BanState::Shadow);
            }
            // SAFETY: the value is u64-aligned map memory; other CPUs update it atomically too.
            unsafe { atomic::add(&raw mut (*ban).drops, 1) };
            return Some(BanState::Banned);
        }
    }
    None
}

#[inline(always)]
fn is_guarded<const N: usize>(bitmap: &aya_ebpf::btf_maps::Array<u64, N>, port: u16) -> bool {
    match bitmap.get(u32::from(port >> 6)) {
        Some(word) => *word & (1u64 << (port & 63)) != 0,
        None => false,
    }
}

/// PortSentry's classification; `None` for packets that never count (ACK or RST set).
#[inline(always)]
fn classify_tcp(flags: u8) -> Option<ScanType> {
    if flags & (ACK | RST) != 0 {
        return None;
    }
    // ECE/CWR are ignored: an ECN-capable SYN is still a SYN.
    let f = flags & !(ECE | CWR);
    let xmas = FIN | URG | PSH;
    Some(if f == 0 {
        ScanType::TcpNull
    } else if f & xmas == xmas {
        ScanType::TcpXmas
    } else if f == FIN {
        ScanType::TcpFin
    } else if f == SYN {
        ScanType::TcpSyn
    } else {
        ScanType::TcpOther
    })
}

/// The counter of a probe of scan type `scan` (a [`ScanType`] code).
#[inline(always)]
fn probe_stat(scan: u8) -> Stat {
    match scan {
        x if x == ScanType::TcpSyn as u8 => Stat::ProbesSyn,
        x if x == ScanType::TcpFin as u8 => Stat::ProbesFin,
        x if x == ScanType::TcpNull as u8 => Stat::ProbesNull,
        x if x == ScanType::TcpXmas as u8 => Stat::ProbesXmas,
        x if x == ScanType::Udp as u8 => Stat::ProbesUdp,
        _ => Stat::ProbesOther,
    }
}

/// Counts a probe for `src` and returns the count in the current window, this probe included.
#[inline(always)]
fn count_probe(src: &AddrKey, window_ns: u64, now: u64) -> u64 {
    if let Some(hit) = PS_HITS.get_ptr_mut(src) {
        // SAFETY: pointers into the value of a successful lookup.
        return unsafe {
            window::count(
                &raw mut (*hit).window_start_ns,
                &raw mut (*hit).count,
                window_ns,
                now,
            )
        }
        .0;
    }
    let fresh = HitEntry {
        window_start_ns: now,
        count: 1,
    };
    if PS_HITS.insert(src, fresh, u64::from(BPF_NOEXIST)).is_ok() {
        return 1;
    }
    // Another CPU inserted this source first: count on its entry.
    if let Some(hit) = PS_HITS.get_ptr_mut(src) {
        // SAFETY: map memory from a successful lookup, updated atomically by every CPU.
        return unsafe { atomic::fetch_add(&raw mut (*hit).count, 1) } + 1;
    }
    count(Stat::HitTableFull);
    diag::hit_table_full(src);
    1
}

#[inline(always)]
fn event_base_flags(pkt: &Packet) -> u8 {
    let mut flags = 0;
    if pkt.ip_options {
        flags |= event_flags::IP_OPTIONS;
    }
    if pkt.is_v6 {
        flags |= event_flags::IPV6;
    }
    flags
}

#[inline(always)]
fn emit(event: &Event) {
    if PS_EVENTS.output(event, 0).is_err() {
        count(Stat::EventsLost);
        diag::event_lost();
    }
}

#[inline(always)]
fn count(stat: Stat) {
    if let Some(counter) = PS_STATS.get_ptr_mut(stat as u32) {
        // SAFETY: per-CPU slot from a successful lookup; no other CPU writes it.
        unsafe { *counter += 1 };
    }
}
