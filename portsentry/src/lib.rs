//! portsentry: the userspace side of an XDP port-scan detector and blocker.
//!
//! One folder per concern, in the order data flows (see docs/ARCHITECTURE.md):
//! `config` (what to guard) → `dataplane` (the XDP program and its maps) → `detect` (events
//! and log lines) → `bans` (the ban book) → `hooks` (responses) and `fleet` (CrowdSec).
//! `peers` keeps the learned peers across restarts.
//! `control` serves the CLI verbs, `daemon` runs the event loop, `net` knows this host's
//! network, `cli` parses the command line, `report` rate-limits lines about conditions that
//! repeat, `state_file` writes the state files and keeps aside one that cannot be used.
//! `main.rs` only wires them together.

// The daemon's lines go through `outln!`/`errln!` (journal.rs), which add a journald
// priority under systemd; a bare `println!`/`eprintln!` there would lose it.
#[deny(clippy::print_stdout, clippy::print_stderr)]
pub mod bans;
pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
#[deny(clippy::print_stdout, clippy::print_stderr)]
pub mod daemon;
#[deny(clippy::print_stdout, clippy::print_stderr)]
pub mod dataplane;
#[deny(clippy::print_stdout, clippy::print_stderr)]
pub mod detect;
#[deny(clippy::print_stdout, clippy::print_stderr)]
pub mod fleet;
#[deny(clippy::print_stdout, clippy::print_stderr)]
pub mod hooks;
pub mod journal;
pub mod metrics;
pub mod net;
#[deny(clippy::print_stdout, clippy::print_stderr)]
pub mod notify;
#[deny(clippy::print_stdout, clippy::print_stderr)]
pub mod peers;
pub mod report;
pub mod secret_file;
pub mod state_file;
