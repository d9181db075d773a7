//! `portsentry notify --test`: send a test message through every configured transport now and
//! say per transport whether it arrived, and why not (connection refused, TLS, authentication,
//! rejected). Exit 0: every transport accepted it; 1: one failed; 2: configuration error or no
//! transport configured.

use std::process::ExitCode;

use thiserror::Error;

use super::{settings, VerbResult};
use crate::{cli::GlobalArgs, notify::TransportError};

/// Why `notify` did not send, or what failed when it did.
#[derive(Debug, Error)]
pub enum NotifyError {
    #[error("say what to do: `portsentry notify --test` sends a test message through every configured transport")]
    NoAction,
    #[error("no transport is configured: set `email_to` with `smtp_url` or `sendmail`, and/or `webhook_url` in [notify]")]
    NoTransport,
    /// A transport's key or file is wrong.
    #[error(transparent)]
    Config(#[from] TransportError),
    #[error("{failed} of {total} transport(s) failed")]
    Failed { failed: usize, total: usize },
}

pub fn run(global: &GlobalArgs, test: bool) -> VerbResult {
    if !test {
        return Err(NotifyError::NoAction.into());
    }
    let s = settings(global)?;
    let n = &s.live.notify;
    if !n.is_enabled() {
        return Err(NotifyError::NoTransport.into());
    }
    let outcomes = crate::notify::test_all(n).map_err(NotifyError::Config)?;
    let mut failed = 0;
    for o in &outcomes {
        match &o.result {
            Ok(()) => println!("portsentry: notify: {}: test message accepted", o.channel),
            Err(e) => {
                failed += 1;
                println!(
                    "portsentry: notify: {}: failed ({}): {}",
                    o.channel, e.reason, e.detail
                );
            }
        }
    }
    if failed > 0 {
        return Err(NotifyError::Failed {
            failed,
            total: outcomes.len(),
        }
        .into());
    }
    Ok(ExitCode::SUCCESS)
}
