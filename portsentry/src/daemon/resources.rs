//! The whole check of a run's settings before they are used (at start, on SIGHUP, by
//! `check-config`): `config` checks the values, then each owner reads what its section names
//! (the fleet its credentials and certificates, the notifier its transports' files).

use thiserror::Error;

use crate::{
    config::{settings::Settings, ValidationError},
    fleet::{crowdsec::CheckError, Fleet},
    notify::{TransportError, Transports},
};

/// Why the settings cannot be used: each owner's own error, worded by it.
#[derive(Debug, Error)]
pub enum ResourceError {
    /// The values do not hold together.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// `[crowdsec]`: a credentials, key or certificate file.
    #[error(transparent)]
    Fleet(#[from] CheckError),
    /// `[notify]`: a transport's URL or secret file.
    #[error(transparent)]
    Notify(#[from] TransportError),
}

pub fn check(s: &Settings) -> Result<(), ResourceError> {
    s.validate()?;
    if let Some(c) = &s.startup.crowdsec {
        Fleet::check(c)?;
    }
    Transports::load(&s.live.notify)?;
    Ok(())
}
