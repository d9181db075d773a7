//! Weighing one step of a fleet update: which fleet bans it lifts, which decisions are refused
//! (bogus ranges, the allowlist, learned peers), each decision against the book's precedence,
//! and the fresh single-address bans written to the kernel in one batch.

use std::time::Duration;

use super::{BanBook, FleetBan, FleetBatch, PeerLookup, Refusal, DETAIL_MAX};
use crate::{
    bans::{BanOutcome, NewBan, Origin},
    clock::Now,
    dataplane::{DataplaneError, Maps},
    net::{bogus, cidr::Cidr},
};

impl BanBook {
    /// The targets an update lifts: its deletions and, for a `startup` update, every fleet ban
    /// it does not list. Sorted, without duplicates.
    pub(super) fn fleet_lifts(&self, batch: &FleetBatch) -> Vec<Cidr> {
        let mut lift: Vec<Cidr> = batch.update.lifted.clone();
        if batch.update.startup {
            let listed = batch.listed();
            lift.extend(
                self.records
                    .values()
                    .filter(|r| r.origin == Origin::Fleet && !listed(&r.target))
                    .map(|r| r.target),
            );
        }
        lift.sort();
        lift.dedup();
        lift
    }

    /// The refusal of each decision of `bans`, checked in order: allowlist, bogus range,
    /// learned peer. Each network's key range is computed once per call, so a decision costs
    /// a few comparisons per allow entry and bogus range.
    pub(super) fn fleet_refusals(
        &self,
        bans: &[FleetBan],
        peers: &mut dyn PeerLookup,
    ) -> Result<Vec<Option<Refusal>>, DataplaneError> {
        let ranges = |nets: &mut dyn Iterator<Item = Cidr>| -> Vec<(u128, u128, Cidr)> {
            nets.map(|c| {
                let (first, last) = c.key_range();
                (first, last, c)
            })
            .collect()
        };
        let allow = ranges(&mut self.allow.iter().copied());
        let bogus = ranges(&mut bogus::ranges());
        // Two networks share an address exactly when their key ranges meet (one holds the
        // other): `Cidr::overlaps`.
        let meeting = |list: &[(u128, u128, Cidr)], (first, last): (u128, u128)| {
            list.iter()
                .find(|(f, l, _)| *f <= last && first <= *l)
                .map(|(_, _, c)| *c)
        };
        bans.iter()
            .map(|ban| {
                let t = &ban.target;
                let range = t.key_range();
                if let Some(a) = meeting(&allow, range) {
                    return Ok(Some(Refusal::Allowlisted(a)));
                }
                if let Some(r) = meeting(&bogus, range) {
                    return Ok(Some(Refusal::Bogus(r)));
                }
                Ok(peers.peer_within(t)?.map(Refusal::LearnedPeer))
            })
            .collect()
    }

    /// Weighs and enforces decision `i` of `batch`. A fresh address ban (no record before)
    /// is recorded and, with `maps`, left in `fresh` for [`Self::write_fresh_hosts`], which
    /// writes the step's fresh bans together; everything else is written here.
    pub(super) fn apply_decision(
        &mut self,
        maps: Option<&mut Maps>,
        batch: &mut FleetBatch,
        i: usize,
        refusal: Option<Refusal>,
        now: &Now,
        fresh: &mut Vec<usize>,
    ) -> Result<(), DataplaneError> {
        let ban = &batch.update.bans[i];
        let done = &mut batch.done;
        if let Some(why) = refusal {
            // A fleet ban made before the check knew better (an older version, a peer learned
            // since) goes too.
            if self
                .records
                .get(&ban.target)
                .is_some_and(|r| r.origin == Origin::Fleet)
            {
                self.lift(maps, &ban.target, now, false)?;
                batch.networks_changed |= !ban.target.is_host();
            }
            done.refused.push((ban.target, why));
            return Ok(());
        }
        let known = self.records.contains_key(&ban.target);
        if batch.table_full && ban.target.is_host() && !known {
            done.full += 1;
            return Ok(());
        }
        // The TTL LAPI gives now, whatever was enforced before: every pull re-asserts it.
        let expires_ms = now
            .unix_ms
            .saturating_add(u64::try_from(ban.remaining.as_millis()).unwrap_or(u64::MAX));
        let new = NewBan {
            target: ban.target,
            origin: Origin::Fleet,
            shadow: false,
            expires_ms: Some(expires_ms),
            trigger: None,
            fleet: Some(crate::bans::FleetNote {
                origin: ban.origin.to_string(),
                scenario: ban.scenario.to_string(),
            }),
            unverified: false,
        };
        if ban.target.is_host() && !known && maps.is_some() {
            // The allowlist and bogus ranges were checked with the refusals of this step.
            match self.record_ban(new, now, true) {
                Ok(_) => fresh.push(i),
                Err(refused) => Self::count_outcome(batch, i, refused),
            }
            return Ok(());
        }
        let outcome = self.ban_one(maps, new, now, false)?;
        Self::count_outcome(batch, i, outcome);
        Ok(())
    }

    /// Counts what decision `i` of `batch` led to.
    pub(super) fn count_outcome(batch: &mut FleetBatch, i: usize, outcome: BanOutcome) {
        let ban = &batch.update.bans[i];
        let done = &mut batch.done;
        match outcome {
            BanOutcome::Banned => {
                if !ban.target.is_host() {
                    batch.networks_changed = true;
                    batch.new_networks.insert(ban.target);
                }
                done.banned_count += 1;
                if done.banned.len() < DETAIL_MAX {
                    done.banned.push(format!(
                        "{} for {} ({}: {})",
                        ban.target,
                        humantime::format_duration(Duration::from_secs(ban.remaining.as_secs())),
                        ban.origin,
                        ban.scenario
                    ));
                }
            }
            BanOutcome::Renewed => done.renewed += 1,
            BanOutcome::Allowlisted(a) => done.refused.push((ban.target, Refusal::Allowlisted(a))),
            BanOutcome::Bogus(r) => done.refused.push((ban.target, Refusal::Bogus(r))),
            BanOutcome::KeptLocal => done.kept_local += 1,
            BanOutcome::OperatorUnbanned => done.operator_unbanned += 1,
            BanOutcome::TableFull => {
                batch.table_full |= ban.target.is_host();
                done.full += 1;
            }
        }
    }

    /// Writes the fresh address bans of one step (decisions `fresh` of `batch`, recorded by
    /// [`Self::apply_decision`]) into the kernel: all their prefilter bits, then their
    /// entries, in one call each where the kernel can ([`Maps::insert_bans`]). An address the
    /// kernel holds without a record (its own ban whose event is still queued) is replaced and
    /// its drop counter starts over. Where the table is full, room is made as for a single ban
    /// ([`BanBook::write_host_making_room`]); when none can be, that address and the rest of
    /// the update's fresh addresses are not enforced and their records go.
    pub(super) fn write_fresh_hosts(
        &mut self,
        maps: &mut Maps,
        batch: &mut FleetBatch,
        fresh: &[usize],
        now: &Now,
    ) -> Result<(), DataplaneError> {
        // Each fresh target was recorded just before; one without a record (never) is left
        // out rather than written as a default, never-expiring entry.
        let fresh: Vec<usize> = fresh
            .iter()
            .copied()
            .filter(|i| self.records.contains_key(&batch.update.bans[*i].target))
            .collect();
        let targets: Vec<Cidr> = fresh.iter().map(|i| batch.update.bans[*i].target).collect();
        let keys: Vec<_> = targets.iter().map(Cidr::key).collect();
        let entries: Vec<_> = targets
            .iter()
            .filter_map(|t| self.records.get(t).map(|r| r.to_entry(now, r.drops)))
            .collect();
        let mut next = 0;
        while next < fresh.len() {
            if batch.table_full {
                for t in &targets[next..] {
                    self.records.remove(t);
                    batch.done.full += 1;
                }
                break;
            }
            let written = next + maps.insert_bans(&keys[next..], &entries[next..])?;
            for i in &fresh[next..written] {
                self.count_made(Origin::Fleet);
                Self::count_outcome(batch, *i, BanOutcome::Banned);
            }
            next = written;
            if let Some(t) = targets.get(next) {
                // The table was full at this one.
                let outcome = if self.write_host_making_room(maps, t, now)? {
                    self.count_made(Origin::Fleet);
                    BanOutcome::Banned
                } else {
                    self.records.remove(t);
                    BanOutcome::TableFull
                };
                Self::count_outcome(batch, fresh[next], outcome);
                next += 1;
            }
        }
        Ok(())
    }
}
