//! `portsentry promote-shadow`: enforce the shadow bans detect mode recorded.

use super::{control_request, VerbResult};
use crate::{cli::GlobalArgs, control::Request};

pub fn run(global: &GlobalArgs) -> VerbResult {
    control_request(global, Request::PromoteShadow)
}
