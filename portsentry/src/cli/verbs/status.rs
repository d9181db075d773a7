//! `portsentry status`: is the daemon running, where, in which mode, and its counters.

use super::{control_request, VerbResult};
use crate::{cli::GlobalArgs, control::Request};

pub fn run(global: &GlobalArgs, json: bool) -> VerbResult {
    control_request(global, Request::Status { json })
}
