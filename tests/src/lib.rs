//! Shared test support: raw packet builders, BPF_PROG_TEST_RUN helpers and the network-namespace
//! lab, what every end-to-end case shares (`case`), and the tools `cargo xtask test` stages
//! (`staged`). The tests themselves live in
//! `tests/tests/`.

pub mod bench;
pub mod case;
pub mod clock;
pub mod crowdsec;
pub mod fail2ban;
pub mod fakelapi;
pub mod fullscan;
pub mod lab;
pub mod logcheck;
pub mod packets;
pub mod sinks;
pub mod skip;
pub mod staged;
pub mod tls;
pub mod xdp;
