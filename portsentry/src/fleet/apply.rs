//! Enforcing what the bouncer pulls: an update applied through the ban book at once or a step
//! at a time, and its log lines (each change while there are few, else a summary; each refused
//! decision logged and counted once).

use anyhow::Result;

use crate::{
    bans::{BanBook, FleetApplied, FleetBatch, PeerSource, Refusal},
    clock::Now,
    dataplane::Maps,
    fleet::crowdsec::decisions::FleetUpdate,
    net::cidr::Cidr,
};

use super::Fleet;

/// Per-decision log lines are written for updates up to this size; bigger ones (a community
/// blocklist at startup) get the summary only.
const DETAIL_LINES_MAX: usize = 20;
/// Updates with this many decisions and deletions or more get a line when their application
/// starts (it takes a while; the summary follows at the end).
const ANNOUNCE_FROM: usize = 10_000;
/// Refused decisions remembered so each is logged once; beyond this many the memory starts over.
const REPORTED_MAX: usize = 100_000;

impl Fleet {
    /// Enforces one pulled update through the ban book at once; returns log lines. Learned
    /// peers are current within `peer_ttl_ns` (the settings' `peer_memory`).
    pub fn apply(
        &mut self,
        book: &mut BanBook,
        maps: &mut Maps,
        update: &FleetUpdate,
        peer_ttl_ns: u64,
    ) -> Result<Vec<String>> {
        let done = book.apply_fleet(maps, update, &Now::read(), peer_ttl_ns)?;
        Ok(self.lines(done, update))
    }

    /// Starts applying a pulled update a step at a time ([`Fleet::step`]); a large one is
    /// announced.
    pub fn begin(&mut self, update: FleetUpdate) -> (FleetBatch, Option<String>) {
        let n = update.bans.len() + update.lifted.len();
        let line = (n >= ANNOUNCE_FROM).then(|| {
            format!(
                "portsentry: crowdsec: applying {} ({} decisions, {} deletions) in steps; probes are served meanwhile",
                if update.startup { "the full decision list" } else { "a decision update" },
                update.bans.len(),
                update.lifted.len()
            )
        });
        (FleetBatch::new(update), line)
    }

    /// Applies the next step of `batch`; the update's log lines once it is finished. Learned
    /// peers are current within `peer_ttl_ns` (the settings' `peer_memory`).
    pub fn step(
        &mut self,
        book: &mut BanBook,
        maps: &mut Maps,
        batch: &mut FleetBatch,
        peer_ttl_ns: u64,
    ) -> Result<Option<Vec<String>>> {
        let peers = PeerSource::Kernel { peer_ttl_ns };
        let Some(done) = book.apply_fleet_step(Some(maps), peers, batch, &Now::read())? else {
            return Ok(None);
        };
        Ok(Some(self.lines(done, batch.update())))
    }

    /// Keeps the refusals not reported before (each decision is logged and counted once; a
    /// decision deleted on LAPI may be reported again when it comes back).
    fn first_refusals(
        &mut self,
        done: &FleetApplied,
        update: &FleetUpdate,
    ) -> Vec<(Cidr, Refusal)> {
        for t in &update.lifted {
            self.reported.remove(t);
        }
        if self.reported.len() > REPORTED_MAX {
            self.reported.clear();
        }
        let mut fresh = Vec::new();
        for (t, why) in &done.refused {
            if self.reported.insert(*t) {
                match why {
                    Refusal::Bogus(_) => self.counters.refused_bogus += 1,
                    Refusal::LearnedPeer(_) => self.counters.refused_learned_peer += 1,
                    Refusal::Allowlisted(_) => self.counters.refused_allowlisted += 1,
                }
                fresh.push((*t, why.clone()));
            }
        }
        fresh
    }

    /// The log lines for one applied update: each change while there are few, else a summary.
    pub(super) fn lines(&mut self, done: FleetApplied, update: &FleetUpdate) -> Vec<String> {
        let refused = self.first_refusals(&done, update);
        let mut out = Vec::new();
        let changes = done.banned_count + done.lifted.len();
        if changes <= DETAIL_LINES_MAX {
            out.extend(
                done.banned
                    .iter()
                    .map(|b| format!("portsentry: crowdsec: banned {b}")),
            );
            out.extend(done.lifted.iter().map(|l| {
                format!("portsentry: crowdsec: lifted {l} (decision deleted or expired)")
            }));
        }
        for (t, why) in refused.iter().take(DETAIL_LINES_MAX) {
            out.push(format!(
                "portsentry: warning: crowdsec: refused the decision to ban {t}: {}",
                why.explain()
            ));
        }
        if refused.len() > DETAIL_LINES_MAX {
            out.push(format!(
                "portsentry: warning: crowdsec: refused {} more decision(s) for the same reasons (see `portsentry status`)",
                refused.len() - DETAIL_LINES_MAX
            ));
        }
        if done.full > 0 {
            out.push(format!("portsentry: error: crowdsec: {} decision(s) not enforced: the ban table is full (raise max_bans)", done.full));
        }
        let ignored: usize = update.ignored.values().sum();
        if update.startup
            || changes > DETAIL_LINES_MAX
            || ignored > 0
            || done.kept_local > 0
            || done.operator_unbanned > 0
        {
            let mut parts = vec![
                format!("{} banned", done.banned_count),
                format!("{} renewed", done.renewed),
                format!("{} lifted", done.lifted.len()),
            ];
            if done.kept_local > 0 {
                parts.push(format!("{} already banned locally", done.kept_local));
            }
            if done.operator_unbanned > 0 {
                parts.push(format!(
                    "{} unbanned by the operator",
                    done.operator_unbanned
                ));
            }
            if !done.refused.is_empty() {
                parts.push(format!("{} refused", done.refused.len()));
            }
            if ignored > 0 {
                let kinds: Vec<String> = update
                    .ignored
                    .iter()
                    .map(|(k, n)| format!("{n} {k}"))
                    .collect();
                parts.push(format!("{ignored} ignored ({})", kinds.join(", ")));
            }
            out.push(format!(
                "portsentry: crowdsec: {}: {}",
                if update.startup {
                    "full decision list"
                } else {
                    "decision update"
                },
                parts.join(", ")
            ));
        }
        out
    }
}
