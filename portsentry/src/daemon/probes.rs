//! Probe and ban events from the XDP program: log them, record bans in the ban book (making
//! room when the table is full), and start the responses (hooks, fleet alert).

use super::*;

impl Daemon {
    pub(super) fn on_event(&mut self, ev: &ProbeEvent) {
        let iface = self
            .names_by_index
            .get(&ev.ifindex)
            .cloned()
            .unwrap_or_else(|| "?".into());
        let mut ev = ev.clone();
        let target = Cidr::host(ev.src);
        let mut repeat = None;
        match ev.kind {
            EventKind::Probe
            | EventKind::Spoofed
            | EventKind::Contested
            | EventKind::Bogus
            | EventKind::PeerProbe => {}
            EventKind::Ignored => {
                if !self.ignored_lines.allow(ev.src, crate::clock::unix_ms()) {
                    return;
                }
            }
            EventKind::Ban => {
                if let Err(e) = self.book.on_kernel_ban(&self.dp, &target, &Now::read()) {
                    crate::errln!("portsentry: error: recording the ban of {target}: {e:#}");
                }
                repeat = self.note_offence(&target);
                self.mark_dirty();
            }
            EventKind::BanTableFull => {
                if self.ban_despite_full_table(&ev) {
                    ev.kind = EventKind::Ban;
                    repeat = self.note_offence(&target);
                }
            }
            EventKind::PrefixTrigger => {
                self.on_prefix_trigger(&ev, &iface);
                return;
            }
        }
        self.log_event(&ev, &iface);
        self.notifier.on_event(&ev);
        if let Some(r) = repeat {
            let ttl = r.ttl.map_or_else(
                || "never".to_owned(),
                crate::config::values::format_duration,
            );
            // Bounded like probe lines: a flood that re-bans displaced sources must not
            // become a flood of these.
            if self.line_budget.admit(
                ev.src,
                crate::detect::budget::LineClass::Other,
                crate::clock::unix_ms(),
            ) {
                self.sink.line(&format!(
                    "portsentry: repeat offender {}: ban {}, ttl {ttl}",
                    ev.src, r.bans
                ));
            }
        }
        if self.is_first_trigger(&ev) {
            self.sink.first_trigger(&ev);
        }
        if ev.kind == EventKind::Ban {
            let ttl = repeat.map_or(self.settings.live.ban_ttl, |r| r.ttl);
            self.respond(&ev, &iface, ttl);
            self.fold_into_prefix(&ev, &iface);
        } else if self.is_unblocked_trigger(&ev) {
            // PortSentry's BLOCK_* = 2: run_cmd, once per source per ban period, no ban.
            let notice =
                BanNotice::from_event(&ev, &iface, self.settings.live.ban_ttl, chrono::Utc::now());
            self.hooks.on_ban(&notice);
        }
    }

    /// The event's lines, within the flood budget (`detect::budget`): a newly blocked source
    /// is always logged (up to its own cap), other lines per source and in all are bounded and
    /// summarised.
    fn log_event(&mut self, ev: &ProbeEvent, iface: &str) {
        use crate::detect::budget::LineClass;
        let now_ms = crate::clock::unix_ms();
        self.flush_line_budget(now_ms);
        let class = if ev.kind == EventKind::Ban && crate::detect::logging::is_blocked(ev) {
            LineClass::Ban
        } else {
            LineClass::Other
        };
        if self.line_budget.admit(ev.src, class, now_ms) {
            self.sink
                .event(ev, self.settings.live.effective_trigger(), iface);
        }
    }

    /// Writes the summary of the lines a finished interval held back, if any, with the events
    /// the kernel held back (its counter is read only when an interval has ended).
    pub(super) fn flush_line_budget(&mut self, now_ms: u64) {
        if !self.line_budget.due(now_ms) {
            return;
        }
        let kernel = self.kernel_events_suppressed();
        if let Some(summary) = self.line_budget.summary(now_ms, kernel) {
            self.sink.line(&summary);
        }
    }

    /// The kernel's `events_suppressed` counter (0 if it cannot be read).
    pub(super) fn kernel_events_suppressed(&self) -> u64 {
        self.dp
            .stats()
            .map(|s| s.get(portsentry_common::Stat::EventsSuppressed))
            .unwrap_or(0)
    }

    /// When a ban made now with the configured `ban_ttl` ends (`None`: never).
    fn ban_expiry_ms(&self, now: &Now) -> Option<u64> {
        self.settings
            .live
            .ban_ttl
            .map(|ttl| now.unix_ms.saturating_add(crate::clock::duration_ms(ttl)))
    }

    /// The prefix rule from the live settings.
    pub(super) fn prefix_rule(&self) -> prefixes::PrefixRule {
        let live = &self.settings.live;
        prefixes::PrefixRule {
            ipv6_prefix: live.ipv6_prefix,
            ipv4_prefix: live.ipv4_prefix,
            threshold: live.prefix_threshold,
            ipv6_wider: live.ipv6_wider_prefixes.clone(),
            wider_threshold: live.wider_prefix_threshold,
            window_ms: live.window.map(crate::clock::duration_ms),
        }
    }

    /// A verified, enforced address ban counts toward its prefixes; at a threshold the prefix
    /// is banned and the bans inside it are folded into it (see `prefixes`).
    fn fold_into_prefix(&mut self, ev: &ProbeEvent, iface: &str) {
        if ev.unverified || ev.link_local || !crate::detect::logging::is_blocked(ev) {
            return;
        }
        let rule = self.prefix_rule();
        let now = Now::read();
        let Some((prefix, members)) = self.prefixes.on_ban(ev.src, now.unix_ms, &rule, 0) else {
            return;
        };
        let cause = if prefix.prefix == rule.prefix_of(ev.src).map_or(0, |p| p.prefix) {
            PrefixCause::Bans(members)
        } else {
            PrefixCause::Prefixes(members)
        };
        self.ban_prefix(prefix, cause, ev, iface, &now);
    }

    /// The kernel's prefix trigger: a prefix's probes (each address possibly below the
    /// trigger) reached `prefix_hits` in the window, and the path check proved the last one.
    /// Banned like a prefix of `prefix_threshold` address bans; the bans inside are folded in.
    /// The banned prefix then counts toward the wider ones.
    fn on_prefix_trigger(&mut self, ev: &ProbeEvent, iface: &str) {
        let Some(prefix) = Cidr::masked(ev.src, ev.prefix_len) else {
            return;
        };
        if prefix.is_host() || ev.prefix_len == 0 {
            return;
        }
        let now = Now::read();
        self.prefixes.forget(&prefix);
        if self.book.get(&prefix).is_some_and(|r| !r.shadow) {
            // Banned already (by the bans of its addresses, or an earlier trigger).
            return;
        }
        if !self.ban_prefix(prefix, PrefixCause::Probes(ev.count), ev, iface, &now) {
            return;
        }
        let rule = self.prefix_rule();
        if let Some((wider, n)) = self.prefixes.on_ban(ev.src, now.unix_ms, &rule, 1) {
            self.ban_prefix(wider, PrefixCause::Prefixes(n), ev, iface, &now);
        }
    }

    /// Why `prefix` may not be banned: it holds an allowlisted address or a peer this host
    /// depends on, or lies in a translator range (NAT64, Teredo, 6to4).
    fn prefix_refusal(&self, prefix: &Cidr, now: &Now) -> Option<String> {
        if let Some(range) = prefixes::translator_range(prefix.addr) {
            return Some(format!(
                "it lies in {range}, whose addresses stand for many unrelated hosts"
            ));
        }
        if let Some(allowed) = self.book.allow_overlap(prefix) {
            return Some(format!("it holds allowlisted {allowed}"));
        }
        let peer = crate::bans::KernelPeers::new(&self.dp, now)
            .and_then(|mut peers| crate::bans::PeerLookup::peer_within(&mut peers, prefix));
        match peer {
            Ok(Some(p)) => Some(format!("it holds {p}, a peer this host talks to")),
            Ok(None) => None,
            // Unknown peers: refuse rather than risk cutting off a dependency.
            Err(e) => Some(format!("its learned peers could not be read ({e})")),
        }
    }

    /// Bans `prefix` (origin detected) unless [`Self::prefix_refusal`] refuses it, and folds
    /// the detected bans inside it (addresses and narrower prefixes) into it. Each outcome is
    /// one line (a refusal once per window). Returns whether the prefix is banned now.
    fn ban_prefix(
        &mut self,
        prefix: Cidr,
        cause: PrefixCause,
        ev: &ProbeEvent,
        iface: &str,
        now: &Now,
    ) -> bool {
        if let Some(why) = self.prefix_refusal(&prefix, now) {
            let window_ms = self.settings.live.window.map(crate::clock::duration_ms);
            if self.prefixes.first_refusal(prefix, now.unix_ms, window_ms) {
                self.sink.line(&format!(
                    "portsentry: {}; the prefix itself is not banned: {why}",
                    cause.what(&prefix)
                ));
            }
            return false;
        }
        let inside: Vec<Cidr> = self
            .book
            .hosts_in(&prefix)
            .map(|r| r.target)
            .chain(
                // Narrower prefix bans: few, and a prefix ban is rare.
                self.book
                    .records()
                    .filter(|r| !r.target.is_host())
                    .map(|r| r.target),
            )
            .filter(|t| *t != prefix && prefix.covers(t))
            .filter(|t| {
                self.book.get(t).is_some_and(|r| {
                    crate::bans::OriginRules::is_displaceable(&r.origin) && !r.shadow
                })
            })
            .collect();
        let new = NewBan {
            target: prefix,
            origin: Origin::Detected,
            shadow: false,
            expires_ms: self.ban_expiry_ms(now),
            trigger: Trigger::from_kernel(ev.protocol as u8, ev.dst_port, ev.scan as u8),
            fleet: None,
            unverified: false,
        };
        match self.book.ban(Some(&mut self.dp), new, now) {
            Ok(crate::bans::BanOutcome::Banned | crate::bans::BanOutcome::Renewed) => {
                for t in &inside {
                    if let Err(e) = self.book.unban(Some(&mut self.dp), t, false, now) {
                        crate::errln!("portsentry: error: folding {t} into {prefix}: {e:#}");
                    }
                }
                let n = inside.len();
                let why = match cause {
                    PrefixCause::Bans(_) => {
                        format!("{n} of its addresses were banned; their bans are folded into it")
                    }
                    PrefixCause::Probes(count) => format!(
                        "{count} probes from its addresses within the window; {n} address ban(s) folded into it"
                    ),
                    PrefixCause::Prefixes(m) => format!(
                        "{m} of its narrower prefixes held bans; {n} ban(s) folded into it"
                    ),
                };
                self.sink.line(&format!(
                    "attackalert: Network {prefix} has been blocked via XDP drop on interface: \"{iface}\" ({why})"
                ));
                self.mark_dirty();
                true
            }
            Ok(other) => {
                self.sink.line(&format!(
                    "portsentry: {}; the prefix itself could not be banned: {other:?}",
                    cause.what(&prefix)
                ));
                false
            }
            Err(e) => {
                crate::errln!("portsentry: error: banning {prefix}: {e:#}");
                false
            }
        }
    }

    /// A counted probe at or past the trigger (banned or not: PortSentry 1.2 wrote its history
    /// line whatever BLOCK_* said) from a source not yet written in this ban period. Only
    /// tracked when the history is in 1.2 format.
    fn is_first_trigger(&mut self, ev: &ProbeEvent) -> bool {
        let live = &self.settings.live;
        if self.sink.history_format() != HistoryFormat::Portsentry1
            || !matches!(ev.kind, EventKind::Probe | EventKind::Ban)
            || ev.count < live.effective_trigger()
        {
            return false;
        }
        let ttl_ms = live.ban_ttl.map(crate::clock::duration_ms);
        self.classic_history
            .first_in_period(ev.src, crate::clock::unix_ms(), ttl_ms)
    }

    /// A probe that reached the trigger in block mode but whose protocol does not block, with
    /// `run_cmd_always` set, from a source not answered in this ban period.
    fn is_unblocked_trigger(&mut self, ev: &ProbeEvent) -> bool {
        let live = &self.settings.live;
        if ev.kind != EventKind::Probe
            || !ev.noblock
            || live.mode != Mode::Block
            || !live.hooks.run_cmd_always
            || live.hooks.run_cmd.is_none()
            || ev.count < live.effective_trigger()
        {
            return false;
        }
        let ttl_ms = live.ban_ttl.map(crate::clock::duration_ms);
        self.unenforced
            .first_in_period(ev.src, crate::clock::unix_ms(), ttl_ms)
    }

    /// Counts a new detected ban in its source's history; a repeat offender's ban is extended
    /// to the escalated TTL (`recidive_window`, `ban_ttl_factor`, `ban_ttl_max`).
    fn note_offence(&mut self, target: &Cidr) -> Option<crate::bans::Repeat> {
        let live = &self.settings.live;
        let (policy, base) = (crate::bans::RecidivePolicy::from(live), live.ban_ttl);
        match self
            .book
            .note_offence(Some(&mut self.dp), target, &policy, base, &Now::read())
        {
            Ok(r) => r,
            Err(e) => {
                crate::errln!(
                    "portsentry: error: extending the ban of repeat offender {target}: {e:#}"
                );
                None
            }
        }
    }

    /// The kernel could not store a ban: make room in the ban book's order (expired entries,
    /// then the detected ban expiring soonest) and ban the source from here.
    pub(super) fn ban_despite_full_table(&mut self, ev: &ProbeEvent) -> bool {
        let now = Now::read();
        let capacity = self.dp.ban_capacity();
        let room = match self.book.make_room(&mut self.dp, &now) {
            Ok(room) => room,
            Err(e) => {
                crate::errln!("portsentry: error: making room in the ban table: {e:#}");
                return false;
            }
        };
        let new = NewBan {
            target: Cidr::host(ev.src),
            origin: Origin::Detected,
            shadow: !ev.dropped,
            expires_ms: self.ban_expiry_ms(&now),
            trigger: Trigger::from_kernel(ev.protocol as u8, ev.dst_port, ev.scan as u8),
            fleet: None,
            unverified: ev.unverified,
        };
        let banned = match room {
            MadeRoom::NoRoom => false,
            _ => matches!(
                self.book.ban(Some(&mut self.dp), new, &now),
                Ok(crate::bans::BanOutcome::Banned | crate::bans::BanOutcome::Renewed)
            ),
        };
        let line = match (&room, banned) {
            (
                MadeRoom::Displaced {
                    target,
                    unverified: true,
                    ..
                },
                true,
            ) => format!(
                "portsentry: ban table full ({capacity} entries): displaced {target} (unverified) to ban {}",
                ev.src
            ),
            (
                MadeRoom::Displaced {
                    target,
                    silent_since_ms,
                    ..
                },
                true,
            ) => format!(
                "portsentry: ban table full ({capacity} entries): displaced {target} (no packet since {}) to ban {}",
                crate::clock::iso_local(*silent_since_ms),
                ev.src
            ),
            (MadeRoom::Reclaimed(target), true) => format!(
                "portsentry: ban table full ({capacity} entries): reclaimed the expired ban of {target} to ban {}",
                ev.src
            ),
            _ => format!(
                "portsentry: error: ban table full ({capacity} entries), all of them manual or fleet bans: {} not banned; raise max_bans",
                ev.src
            ),
        };
        // One such line per displaced ban: bounded like probe lines under a flood.
        if self.line_budget.admit(
            ev.src,
            crate::detect::budget::LineClass::Other,
            crate::clock::unix_ms(),
        ) {
            self.sink.line(&line);
        }
        self.mark_dirty();
        banned
    }

    /// A ban's responses: hooks, and an alert for the fleet (which shares only verified
    /// sources, within its cap).
    pub(super) fn respond(&mut self, ev: &ProbeEvent, iface: &str, ttl: Option<Duration>) {
        let notice = BanNotice::from_event(ev, iface, ttl, chrono::Utc::now());
        self.hooks.on_ban(&notice);
        self.notifier.on_new_ban(&notice);
        if let Some(fleet) = &mut self.fleet {
            fleet.on_local_ban(&notice);
        }
    }
}

/// Why a prefix is banned: its address bans (the daemon's count) or its probes (the kernel's
/// prefix trigger).
#[derive(Clone, Copy, Debug)]
enum PrefixCause {
    /// Distinct verified address bans within the window.
    Bans(usize),
    /// Probes from the prefix within the window.
    Probes(u64),
    /// Distinct narrower prefixes holding verified bans within the window.
    Prefixes(usize),
}

impl PrefixCause {
    /// What happened, for the lines that do not ban.
    fn what(self, prefix: &Cidr) -> String {
        match self {
            PrefixCause::Bans(n) => format!("{n} addresses of {prefix} banned"),
            PrefixCause::Probes(n) => format!("{n} probes from {prefix} within the window"),
            PrefixCause::Prefixes(n) => format!("{n} narrower prefixes of {prefix} hold bans"),
        }
    }
}
