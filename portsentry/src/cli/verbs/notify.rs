//! `portsentry notify --test`: send a test message through every configured transport now and
//! say per transport whether it arrived, and why not (connection refused, TLS, authentication,
//! rejected). Exit 0: every transport accepted it; 1: one failed; 2: configuration error or no
//! transport configured.

use std::process::ExitCode;

use super::{settings, Failure, VerbResult};
use crate::cli::GlobalArgs;

pub fn run(global: &GlobalArgs, test: bool) -> VerbResult {
    if !test {
        return Err(Failure::Usage(anyhow::anyhow!(
            "say what to do: `portsentry notify --test` sends a test message through every configured transport"
        )));
    }
    let s = settings(global)?;
    let n = &s.live.notify;
    if !n.is_enabled() {
        return Err(Failure::Usage(anyhow::anyhow!(
            "no transport is configured: set `email_to` with `smtp_url` or `sendmail`, and/or `webhook_url` in [notify]"
        )));
    }
    let outcomes = crate::notify::test_all(n).map_err(|e| Failure::Usage(e.into()))?;
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
        return Err(Failure::Runtime(anyhow::anyhow!(
            "{failed} of {} transport(s) failed",
            outcomes.len()
        )));
    }
    Ok(ExitCode::SUCCESS)
}
