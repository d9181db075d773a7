//! The whole check of a run's settings before they are used (at start, on SIGHUP, by
//! `check-config`): `config` checks the values, then each owner reads what its section names
//! (the fleet its credentials and certificates, the notifier its transports' files).

use anyhow::Result;

use crate::{config::settings::Settings, fleet::Fleet, notify::Transports};

pub fn check(s: &Settings) -> Result<()> {
    s.validate()?;
    if let Some(c) = &s.startup.crowdsec {
        Fleet::check(c)?;
    }
    Transports::load(&s.live.notify)?;
    Ok(())
}
