//! Fleet decisions through the ban book: one pulled update applied in one pass, networks
//! written to the trie once per update, the precedence rules of `bans/mod.rs` for each target.

use std::{collections::HashSet, time::Duration};

use super::{BanBook, BanOutcome, NewBan, Origin};
use crate::{
    clock::Now, dataplane::DataplaneError, fleet::crowdsec::decisions::FleetUpdate, net::cidr::Cidr,
};

/// What one update did, for the log.
#[derive(Debug, Default)]
pub struct FleetApplied {
    /// "TARGET for DURATION (ORIGIN: SCENARIO)"
    pub banned: Vec<String>,
    pub renewed: usize,
    pub lifted: Vec<Cidr>,
    pub kept_local: usize,
    pub operator_unbanned: usize,
    pub allowlisted: Vec<Cidr>,
    pub full: usize,
}

impl BanBook {
    /// Enforces one pulled update. A `startup` update is the whole truth: fleet bans it does
    /// not list are lifted.
    pub fn apply_fleet(
        &mut self,
        maps: &mut crate::dataplane::Maps,
        update: &FleetUpdate,
        now: &Now,
    ) -> Result<FleetApplied, DataplaneError> {
        let mut done = FleetApplied::default();
        let mut networks_changed = false;
        for ban in &update.bans {
            let expires_ms = now
                .unix_ms
                .saturating_add(u64::try_from(ban.remaining.as_millis()).unwrap_or(u64::MAX));
            let new = NewBan {
                target: ban.target,
                origin: Origin::Fleet,
                shadow: false,
                expires_ms: Some(expires_ms),
                trigger: None,
                fleet: Some(super::FleetNote {
                    origin: ban.origin.clone(),
                    scenario: ban.scenario.clone(),
                }),
            };
            match self.ban_one(Some(maps), new, now, false)? {
                BanOutcome::Banned => {
                    networks_changed |= !ban.target.is_host();
                    done.banned.push(format!(
                        "{} for {} ({}: {})",
                        ban.target,
                        humantime::format_duration(Duration::from_secs(ban.remaining.as_secs())),
                        ban.origin,
                        ban.scenario
                    ));
                }
                BanOutcome::Renewed => done.renewed += 1,
                BanOutcome::Allowlisted(_) => done.allowlisted.push(ban.target),
                BanOutcome::KeptLocal => done.kept_local += 1,
                BanOutcome::OperatorUnbanned => done.operator_unbanned += 1,
                BanOutcome::TableFull => done.full += 1,
            }
        }

        let mut lift: Vec<Cidr> = update.lifted.clone();
        if update.startup {
            let listed: HashSet<Cidr> = update.bans.iter().map(|b| b.target).collect();
            lift.extend(
                self.records
                    .values()
                    .filter(|r| r.origin == Origin::Fleet && !listed.contains(&r.target))
                    .map(|r| r.target),
            );
        }
        lift.sort();
        lift.dedup();
        for t in lift {
            if self
                .records
                .get(&t)
                .is_some_and(|r| r.origin == Origin::Fleet)
            {
                self.lift(Some(maps), &t, now, false)?;
                networks_changed |= !t.is_host();
                done.lifted.push(t);
            }
        }
        if networks_changed {
            for refused in self.sync_networks(maps, now)? {
                if self
                    .records
                    .get(&refused)
                    .is_some_and(|r| r.origin == Origin::Fleet)
                {
                    self.records.remove(&refused);
                    done.banned
                        .retain(|b| !b.starts_with(&format!("{refused} ")));
                    done.full += 1;
                }
            }
        }
        Ok(done)
    }
}
