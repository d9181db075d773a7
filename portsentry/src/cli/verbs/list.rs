//! `portsentry list`: every ban with its origin, times, trigger and drops.

use super::{control_request, VerbResult};
use crate::{cli::GlobalArgs, control::Request};

pub fn run(global: &GlobalArgs, json: bool) -> VerbResult {
    control_request(global, Request::List { json })
}
