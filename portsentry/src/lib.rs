//! portsentry: the userspace side of an XDP port-scan detector and blocker.
//!
//! One module per concern; `main.rs` only wires them together.

pub mod bans;
pub mod bpffs;
pub mod cidr;
pub mod classic;
pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
pub mod crowdsec;
pub mod daemon;
pub mod dataplane;
pub mod events;
pub mod fleet;
pub mod hooks;
pub mod ignore;
pub mod listening;
pub mod logging;
pub mod netinfo;
pub mod netwatch;
pub mod object;
pub mod options;
pub mod ports;
pub mod settings;
