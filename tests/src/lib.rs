//! Shared test support: raw packet builders, BPF_PROG_TEST_RUN helpers and the network-namespace
//! lab. The tests themselves live in `tests/tests/`.

pub mod bench;
pub mod clock;
pub mod crowdsec;
pub mod fail2ban;
pub mod fakelapi;
pub mod fullscan;
pub mod lab;
pub mod packets;
pub mod sinks;
pub mod skip;
pub mod xdp;
