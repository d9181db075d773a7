//! The pipeline's prefix-aware bans: a verified, enforced address ban counts toward its
//! prefixes (`prefixes`), and at a threshold, or at the kernel's prefix trigger, the prefix is
//! banned and the bans inside it are folded into it, unless the prefix holds an allowlisted
//! address or a learned peer, or lies in a translator range. The lines' words are
//! `detect::lines`' ([`NetworkBlocked`], [`PrefixCause`]).

use super::{ban_expiry_ms, prefixes, Cx, Outcome, ProbePipeline};
use crate::{
    bans::{NewBan, Origin, Trigger},
    clock::Now,
    config::settings::LiveSettings,
    detect::{
        events::ProbeEvent,
        lines::{self, NetworkBlocked, PrefixCause},
    },
    net::cidr::Cidr,
};

/// The prefix rule from the live settings.
pub(super) fn rule(live: &LiveSettings) -> prefixes::PrefixRule {
    prefixes::PrefixRule {
        ipv6_prefix: live.ipv6_prefix,
        ipv4_prefix: live.ipv4_prefix,
        threshold: live.prefix_threshold,
        ipv6_wider: live.ipv6_wider_prefixes.clone(),
        wider_threshold: live.wider_prefix_threshold,
        window_ms: live.window.map(crate::clock::duration_ms),
    }
}

impl ProbePipeline {
    /// A verified, enforced address ban counts toward its prefixes; at a threshold the prefix
    /// is banned and the bans inside it are folded into it (see `prefixes`).
    pub(super) fn fold_into_prefix(
        &mut self,
        ev: &ProbeEvent,
        iface: &str,
        cx: &mut Cx,
        o: &mut Outcome,
    ) {
        if ev.unverified || ev.link_local || !ev.is_blocked() {
            return;
        }
        let rule = rule(cx.live);
        let now = Now::read();
        let Some((prefix, members)) = self.prefixes.on_ban(ev.src, now.unix_ms, &rule, 0) else {
            return;
        };
        let cause = if prefix.prefix == rule.prefix_of(ev.src).map_or(0, |p| p.prefix) {
            PrefixCause::Bans(members)
        } else {
            PrefixCause::Prefixes(members)
        };
        self.ban_prefix(prefix, cause, ev, iface, &now, cx, o);
    }

    /// The kernel's prefix trigger: a prefix's probes (each address possibly below the
    /// trigger) reached `prefix_hits` in the window, and the path check proved the last one.
    /// Banned like a prefix of `prefix_threshold` address bans; the bans inside are folded in.
    /// The banned prefix then counts toward the wider ones.
    pub(super) fn on_prefix_trigger(
        &mut self,
        ev: &ProbeEvent,
        iface: &str,
        cx: &mut Cx,
        o: &mut Outcome,
    ) {
        let Some(prefix) = Cidr::masked(ev.src, ev.prefix_len) else {
            return;
        };
        if prefix.is_host() || ev.prefix_len == 0 {
            return;
        }
        let now = Now::read();
        self.prefixes.forget(&prefix);
        if cx.book.get(&prefix).is_some_and(|r| !r.shadow) {
            // Banned already (by the bans of its addresses, or an earlier trigger).
            return;
        }
        if !self.ban_prefix(
            prefix,
            PrefixCause::Probes(ev.count),
            ev,
            iface,
            &now,
            cx,
            o,
        ) {
            return;
        }
        let rule = rule(cx.live);
        if let Some((wider, n)) = self.prefixes.on_ban(ev.src, now.unix_ms, &rule, 1) {
            self.ban_prefix(wider, PrefixCause::Prefixes(n), ev, iface, &now, cx, o);
        }
    }

    /// Bans `prefix` (origin detected) unless [`prefix_refusal`] refuses it, and folds the
    /// detected bans inside it (addresses and narrower prefixes) into it. Each outcome is one
    /// line (a refusal once per window). Returns whether the prefix is banned now.
    #[allow(clippy::too_many_arguments)]
    fn ban_prefix(
        &mut self,
        prefix: Cidr,
        cause: PrefixCause,
        ev: &ProbeEvent,
        iface: &str,
        now: &Now,
        cx: &mut Cx,
        o: &mut Outcome,
    ) -> bool {
        if let Some(why) = prefix_refusal(cx, &prefix, now) {
            let window_ms = cx.live.window.map(crate::clock::duration_ms);
            if self.prefixes.first_refusal(prefix, now.unix_ms, window_ms) {
                o.line(lines::prefix_refused_line(cause, &prefix, &why));
            }
            return false;
        }
        let book = &*cx.book;
        let inside: Vec<Cidr> = book
            .hosts_in(&prefix)
            .map(|r| r.target)
            .chain(
                // Narrower prefix bans: few, and a prefix ban is rare.
                book.records()
                    .filter(|r| !r.target.is_host())
                    .map(|r| r.target),
            )
            .filter(|t| *t != prefix && prefix.covers(t))
            .filter(|t| {
                book.get(t).is_some_and(|r| {
                    crate::bans::OriginRules::is_displaceable(&r.origin) && !r.shadow
                })
            })
            .collect();
        let new = NewBan {
            target: prefix,
            origin: Origin::Detected,
            shadow: false,
            expires_ms: ban_expiry_ms(cx.live, now),
            trigger: Trigger::from_kernel(ev.protocol as u8, ev.dst_port, ev.scan as u8),
            fleet: None,
            unverified: false,
        };
        match cx.book.ban(Some(&mut *cx.dp), new, now) {
            Ok(crate::bans::BanOutcome::Banned | crate::bans::BanOutcome::Renewed) => {
                for t in &inside {
                    if let Err(e) = cx.book.unban(Some(&mut *cx.dp), t, false, now) {
                        crate::errln!("portsentry: error: folding {t} into {prefix}: {e:#}");
                    }
                }
                o.line(lines::network_blocked_line(&NetworkBlocked {
                    prefix,
                    iface,
                    cause,
                    folded: inside.len(),
                }));
                o.dirty = true;
                true
            }
            Ok(other) => {
                o.line(lines::prefix_not_banned_line(
                    cause,
                    &prefix,
                    &format!("{other:?}"),
                ));
                false
            }
            Err(e) => {
                crate::errln!("portsentry: error: banning {prefix}: {e:#}");
                false
            }
        }
    }
}

/// Why `prefix` may not be banned: it holds an allowlisted address or a peer this host
/// depends on, or lies in a translator range (NAT64, Teredo, 6to4).
fn prefix_refusal(cx: &Cx, prefix: &Cidr, now: &Now) -> Option<String> {
    if let Some(range) = prefixes::translator_range(prefix.addr) {
        return Some(format!(
            "it lies in {range}, whose addresses stand for many unrelated hosts"
        ));
    }
    if let Some(allowed) = cx.book.allow_overlap(prefix) {
        return Some(format!("it holds allowlisted {allowed}"));
    }
    let mut peers = crate::bans::KernelPeers::new(cx.dp, now, cx.live.peer_ttl_ns());
    let peer = crate::bans::PeerLookup::peer_within(&mut peers, prefix);
    match peer {
        Ok(Some(p)) => Some(format!("it holds {p}, a peer this host talks to")),
        Ok(None) => None,
        // Unknown peers: refuse rather than risk cutting off a dependency.
        Err(e) => Some(format!("its learned peers could not be read ({e})")),
    }
}
