//! Live notice of address and route changes, so the automatic allowlist follows the system.
//!
//! Owns one thing: an rtnetlink (`NETLINK_ROUTE`) socket subscribed to the IPv4/IPv6 address
//! and route multicast groups, registered with the tokio reactor. [`RouteWatch::changed`]
//! resolves when the kernel reported at least one change; the messages are drained and
//! discarded, not parsed: the caller recomputes the list from `/proc` and `getifaddrs`
//! ([`crate::net::netinfo::auto_allow_list`]).
//!
//! It must not touch anything else: no BPF maps, no allowlist state, no settings. Deciding
//! what to allow and writing it to the kernel stays with the daemon.

use std::{io, os::fd::AsRawFd, os::fd::OwnedFd};

use nix::{
    errno::Errno,
    sys::socket::{recvfrom, NetlinkAddr},
};
use tokio::io::unix::AsyncFd;

/// The multicast groups we listen to: address and route changes, IPv4 and IPv6. Resolver
/// files are not covered (no netlink event for them); links are not needed (an interface going
/// away also removes its addresses and routes, which we do hear about).
const GROUPS: u32 = (libc::RTMGRP_IPV4_IFADDR
    | libc::RTMGRP_IPV6_IFADDR
    | libc::RTMGRP_IPV4_ROUTE
    | libc::RTMGRP_IPV6_ROUTE) as u32;

/// Receive buffer for one datagram. The contents are thrown away, so a longer message being
/// truncated does not matter (the datagram is consumed either way).
const BUF_LEN: usize = 8192;

/// An rtnetlink subscription to address and route changes.
pub struct RouteWatch {
    fd: AsyncFd<OwnedFd>,
    buf: Box<[u8]>,
}

impl RouteWatch {
    /// Opens and subscribes the socket. Must be called inside a tokio runtime with IO enabled
    /// (outside any runtime it returns an error).
    pub fn new() -> io::Result<RouteWatch> {
        Ok(RouteWatch {
            fd: super::rtnl::subscribe(GROUPS, "address and route groups")?,
            buf: vec![0; BUF_LEN].into_boxed_slice(),
        })
    }

    /// Waits until at least one change notification arrived, then drains everything queued
    /// (one burst, such as a DHCP renewal, gives one wake-up; more may follow, so a caller may
    /// want to debounce). A receive-queue overrun (`ENOBUFS`: notifications were lost) also
    /// counts as a change. Messages that do not come from the kernel are ignored.
    ///
    /// Cancel-safe: dropping the future loses no notice that was not yet reported.
    pub async fn changed(&mut self) -> io::Result<()> {
        loop {
            let mut guard = self.fd.readable().await?;
            let raw = guard.get_inner().as_raw_fd();
            let mut changed = false;
            loop {
                match recvfrom::<NetlinkAddr>(raw, &mut self.buf) {
                    // Only the kernel (port id 0) reports changes; any local process may send
                    // to our port id, and must not make us recompute at will.
                    Ok((_, from)) => changed |= from.is_some_and(|a| a.pid() == 0),
                    Err(Errno::EAGAIN) => {
                        guard.clear_ready();
                        break;
                    }
                    Err(Errno::EINTR) => {}
                    // The socket buffer overflowed: we lost notifications, so something changed.
                    Err(Errno::ENOBUFS) => changed = true,
                    Err(e) => return Err(with_context(e, "reading rtnetlink notifications")),
                }
            }
            if changed {
                return Ok(());
            }
        }
    }
}

fn with_context(e: Errno, what: &str) -> io::Error {
    let err = io::Error::from(e);
    io::Error::new(err.kind(), format!("{what}: {err}"))
}

#[cfg(test)]
mod tests {
    use std::{process::Command, time::Duration};

    use super::*;

    /// Runs `ip args` (in the calling thread's network namespace); false if `ip` is missing.
    fn ip(args: &[&str]) -> bool {
        match Command::new("ip").args(args).status() {
            Ok(status) => {
                assert!(status.success(), "ip {args:?}: {status}");
                true
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => panic!("ip {args:?}: {e}"),
        }
    }

    #[test]
    fn new_outside_runtime_is_an_error() {
        assert!(RouteWatch::new().is_err());
    }

    #[test]
    fn address_changes_wake_the_watch() {
        // A network namespace of our own (per thread), so the test touches no real interface.
        std::thread::spawn(|| {
            // SAFETY: unshare(2) takes no pointers; it only moves this thread to a new netns.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                let err = io::Error::last_os_error();
                if err.raw_os_error() == Some(libc::EPERM) {
                    eprintln!("skipping: cannot create a network namespace (not root): {err}");
                    return;
                }
                panic!("unshare(CLONE_NEWNET): {err}");
            }
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut watch = RouteWatch::new().unwrap();
                // Children forked from this thread start in its namespace.
                if !ip(&["link", "set", "lo", "up"]) {
                    eprintln!("skipping: no `ip` command");
                    return;
                }
                ip(&["addr", "add", "10.99.0.1/32", "dev", "lo"]);
                tokio::time::timeout(Duration::from_secs(2), watch.changed())
                    .await
                    .expect("no notification within 2 s")
                    .unwrap();
                // Let the first burst settle (each `changed` drains what is queued) ...
                while tokio::time::timeout(Duration::from_millis(300), watch.changed())
                    .await
                    .is_ok()
                {}
                // ... then the socket is quiet, yet still armed: a second change wakes it again.
                ip(&["addr", "add", "10.99.0.2/32", "dev", "lo"]);
                tokio::time::timeout(Duration::from_secs(2), watch.changed())
                    .await
                    .expect("no second notification within 2 s")
                    .unwrap();
            });
        })
        .join()
        .unwrap();
    }
}
