//! `portsentry unban TARGET… | --all`: lift bans; the fleet may not re-ban them for a while.

use super::{control_request, VerbResult};
use crate::{cli::GlobalArgs, control::Request, net::cidr::Cidr};

pub fn run(global: &GlobalArgs, targets: Vec<Cidr>, all: bool) -> VerbResult {
    control_request(global, Request::Unban { targets, all })
}
