//! The allowlist keeper: the configured allowlist plus the automatic entries (own addresses
//! always, gateways, resolvers and the LAPI host with `auto_allow`), recomputed on every
//! rtnetlink address or route notification; the route lookups on `lo` the path check and the
//! SYN cookies need; and handing the allowlist to the ban book, which lifts what it covers.
//!
//! Owns the automatic entries as last computed, the LAPI's addresses and `lo`'s forwarding.
//! Writes the allowlist trie through `guard`; bans only through the ban book.

use std::net::IpAddr;

use anyhow::Result;

use super::guard;
use crate::{
    bans::BanBook,
    clock::Now,
    config::settings::{CrowdsecSettings, LiveSettings},
    dataplane::{Dataplane, TrieWrite},
    net::{cidr::Cidr, lo_forwarding::LoopbackForwarding, netinfo},
};

/// The automatic allowlist and what it needs.
pub(super) struct AllowlistKeeper {
    /// The automatic allowlist entries as last computed (own addresses, gateways, resolvers,
    /// the LAPI host).
    auto_allow: Vec<Cidr>,
    /// The LAPI's addresses, resolved once at start (fleet mode).
    lapi_hosts: Vec<IpAddr>,
    /// Forwarding on `lo` for the path check's route lookups, restored on drop.
    lo_forwarding: Option<LoopbackForwarding>,
}

/// What a refresh of the automatic allowlist did.
pub(super) enum Refreshed {
    /// Nothing changed (or it failed, which is said).
    Unchanged,
    /// The allowlist was written: the line about bans it lifted, if any (the book changed
    /// then), and the summary line for stderr.
    Written {
        lifted: Option<String>,
        summary: String,
    },
}

impl AllowlistKeeper {
    /// The LAPI's addresses are resolved now (fleet mode), once.
    pub fn new(crowdsec: Option<&CrowdsecSettings>) -> Self {
        Self {
            auto_allow: Vec::new(),
            lapi_hosts: crowdsec
                .map(|c| netinfo::lapi_hosts(&c.lapi_url))
                .unwrap_or_default(),
            lo_forwarding: None,
        }
    }

    /// The automatic allowlist: own addresses always (a probe "from" one of them is forged),
    /// plus gateways, resolvers and the LAPI host with `auto_allow`.
    fn automatic_entries(&self, live: &LiveSettings) -> Result<Vec<Cidr>> {
        if live.auto_allow {
            netinfo::auto_allow_list(&self.lapi_hosts)
        } else {
            netinfo::own_address_list()
        }
    }

    /// Recomputes the automatic entries and turns `lo`'s route lookups on or off, for
    /// applying the settings (at start and on SIGHUP).
    pub fn recompute(&mut self, live: &LiveSettings, peer_challenge: bool) -> Result<()> {
        self.auto_allow = self.automatic_entries(live)?;
        self.ensure_route_lookups(live, peer_challenge);
        Ok(())
    }

    /// The path check and the SYN cookies (sent to the route's neighbour) look routes up
    /// "from" the loopback device, which needs forwarding on there (only there: nothing arrives
    /// on `lo` from outside). Without it bans still happen, marked unverified, and learned
    /// peers get no cookies.
    fn ensure_route_lookups(&mut self, live: &LiveSettings, peer_challenge: bool) {
        let wanted = live.path_check || peer_challenge;
        match (wanted, self.lo_forwarding.is_some()) {
            (true, false) => match LoopbackForwarding::enable() {
                Ok(f) => self.lo_forwarding = Some(f),
                Err(e) => crate::errln!(
                    "portsentry: warning: cannot enable route lookups on lo ({e}); bans are made \
                     unverified and learned peers get no SYN cookies"
                ),
            },
            (false, true) => self.lo_forwarding = None,
            _ => {}
        }
    }

    /// The configured plus automatic allowlist, sorted and without duplicates.
    pub fn list(&self, live: &LiveSettings) -> Vec<Cidr> {
        let mut allow = live.allow.clone();
        allow.extend(self.auto_allow.iter().copied());
        allow.sort();
        allow.dedup();
        allow
    }

    /// An address or route changed: recompute the automatic allowlist and apply it if it
    /// differs (a new gateway is protected before a spoofed probe from it can count).
    pub fn refresh(
        &mut self,
        live: &LiveSettings,
        book: &mut BanBook,
        dp: &mut Dataplane,
    ) -> Refreshed {
        let fresh = match self.automatic_entries(live) {
            Ok(list) => list,
            Err(e) => {
                crate::errln!("portsentry: error: recomputing the automatic allowlist: {e:#}");
                return Refreshed::Unchanged;
            }
        };
        if fresh == self.auto_allow {
            return Refreshed::Unchanged;
        }
        self.auto_allow = fresh;
        let allow = self.list(live);
        let result = guard::write_allowlist(dp, &allow)
            .map_err(anyhow::Error::from)
            .and_then(|written| {
                report_refused(&written);
                Ok((written.count, lift(book, dp, &allow)?))
            });
        match result {
            Ok((total, lifted)) => Refreshed::Written {
                lifted,
                summary: format!(
                    "portsentry: addresses or routes changed; automatic allowlist updated ({} automatic, {total} in total)",
                    self.auto_allow.len()
                ),
            },
            Err(e) => {
                crate::errln!("portsentry: error: updating the automatic allowlist: {e:#}");
                Refreshed::Unchanged
            }
        }
    }
}

/// Says when the allowlist trie could not hold every entry.
pub(super) fn report_refused(written: &TrieWrite) {
    if let Some(first) = written.refused.first() {
        crate::errln!(
            "portsentry: error: the allowlist trie is full: {} entr(y/ies) not written (first: {first})",
            written.refused.len(),
        );
    }
}

/// Hands the allowlist to the ban book, which lifts every ban it now covers; the line saying
/// so if it lifted any (the book changed then).
pub(super) fn lift(
    book: &mut BanBook,
    dp: &mut Dataplane,
    allow: &[Cidr],
) -> Result<Option<String>> {
    let lifted = book.set_allowlist(Some(dp), allow, &Now::read())?;
    if lifted.is_empty() {
        return Ok(None);
    }
    let shown: Vec<String> = lifted.iter().take(10).map(Cidr::to_string).collect();
    Ok(Some(format!(
        "portsentry: allowlist: lifted {} ban(s) covered by the allowlist: {}{}",
        lifted.len(),
        shown.join(", "),
        if lifted.len() > 10 { ", …" } else { "" }
    )))
}
