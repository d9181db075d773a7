//! `portsentry ban TARGET [--ttl D]`: a manual ban, for the config's `ban_ttl` by default.

use super::{control_request, settings, VerbResult};
use crate::{
    cli::{GlobalArgs, Limit},
    control::Request,
    net::cidr::Cidr,
};

pub fn run(global: &GlobalArgs, target: Cidr, ttl: Option<Limit>) -> VerbResult {
    let ttl = match ttl {
        Some(limit) => limit.0,
        None => settings(global)?.live.ban_ttl,
    };
    let ttl_ms = ttl.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    control_request(global, Request::Ban { target, ttl_ms })
}
