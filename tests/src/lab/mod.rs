//! A two-host lab on one machine and the daemon processes the end-to-end tests run in it.
//! Traffic never leaves the lab's namespaces; everything is removed on drop, also when a test
//! panics.
//!
//! - [`netns`]: a named network namespace, running code, sysctls and test services inside it;
//!   [`OwnedNetns`], one more namespace deleted on drop.
//! - [`topology`]: [`Lab`], a protected and a scanner namespace joined by a veth pair, with
//!   their addresses, routes and neighbours ([`Lab::recreate_link`] restores all of them), a
//!   host beside the scanner on its link ([`Lab::lan_host`]) and a second protected interface
//!   ([`Lab::add_other_interface`]).
//! - [`routed`]: [`RoutedNs`], a protected namespace with routes and gateway neighbours for
//!   data-plane runs that look routes up (SYN cookies).
//! - [`args`]: [`DaemonArgs`], the one builder of a test daemon's command line.
//! - [`daemon`]: [`Daemon`], a running `portsentry run`: ready when it sends READY=1 on a
//!   notify socket the test owns, its output, signals, stop and memory.
//! - [`fixtures`]: throwaway directories and bpffs mounts, and running tools to completion.

pub mod args;
pub mod daemon;
pub mod fixtures;
pub mod netns;
mod output;
pub mod routed;
pub mod topology;

use std::sync::atomic::{AtomicUsize, Ordering};

pub use args::DaemonArgs;
pub use daemon::Daemon;
pub use fixtures::{baseline_object, portsentry, portsentry_bin, run_in, sock, PinDir, TempDir};
pub use netns::{Netns, OwnedNetns, Service};
pub use routed::RoutedNs;
pub use topology::{ip, mac_bytes_of, mac_of, veth_pair, Lab, LanHost};

/// A number unique within this test process, for names of namespaces, links and directories
/// (together with the process id, so parallel test processes do not clash).
pub(crate) fn unique() -> usize {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    COUNTER.fetch_add(1, Ordering::Relaxed)
}
