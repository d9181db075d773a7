//! Forwarding on the loopback device, for the path check's route lookups.
//!
//! `bpf_fib_lookup` refuses lookups "from" an interface whose forwarding is off, which is every
//! interface of a plain host. The XDP program therefore looks routes up as if the packet came
//! in on `lo`, and this turns forwarding on for `lo` alone: nothing ever arrives on `lo` from
//! outside, so the host does not start routing anyone's packets. The previous values are put
//! back when this is dropped (daemon exit, or `path_check = false` on reload).

use std::{fs, io, path::PathBuf};

const SWITCHES: [&str; 2] = [
    "/proc/sys/net/ipv4/conf/lo/forwarding",
    "/proc/sys/net/ipv6/conf/lo/forwarding",
];

/// Holds `lo`'s forwarding on; restores what was there on drop.
#[derive(Debug)]
pub struct LoopbackForwarding {
    restore: Vec<(PathBuf, String)>,
}

impl LoopbackForwarding {
    /// Turns forwarding on for `lo` (IPv4, and IPv6 where the host has it).
    pub fn enable() -> io::Result<Self> {
        let mut restore = Vec::new();
        for (i, path) in SWITCHES.iter().enumerate() {
            let before = match fs::read_to_string(path) {
                Ok(v) => v.trim().to_owned(),
                // No IPv6 on this host: nothing to look up there.
                Err(e) if i == 1 && e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io::Error::new(e.kind(), format!("{path}: {e}"))),
            };
            if before != "1" {
                fs::write(path, "1")
                    .map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))?;
                restore.push((PathBuf::from(path), before));
            }
        }
        Ok(Self { restore })
    }
}

impl Drop for LoopbackForwarding {
    fn drop(&mut self) {
        for (path, value) in &self.restore {
            let _ = fs::write(path, value);
        }
    }
}
