//! [`RoutedNs`]: a lab namespace for data-plane runs (BPF_PROG_TEST_RUN) that need this host's
//! routes and neighbours, such as the SYN cookie, which goes to the neighbour the route back to
//! the claimed source names. A test-run program resolves routes in the namespace of the thread
//! that runs it, so the test body runs on a thread inside the protected namespace.

use anyhow::{Context, Result};

use super::{ip, mac_of, Lab};

/// The protected side of a [`Lab`] with default routes (IPv4 and IPv6) via the scanner end
/// (10.77.0.2, fd77::2), permanent neighbour entries for both gateway addresses, and route
/// lookups from `lo` on (as the daemon arranges).
pub struct RoutedNs {
    pub lab: Lab,
    /// The protected interface's index (the ingress of every test packet).
    pub ifindex: u32,
    /// The gateway's (scanner end's) MAC: the neighbour of every off-link route.
    pub gateway_mac: [u8; 6],
    /// The protected interface's own MAC.
    pub own_mac: [u8; 6],
}

/// `aa:bb:cc:dd:ee:ff` as bytes.
pub fn mac_bytes(text: &str) -> Result<[u8; 6]> {
    let mut mac = [0u8; 6];
    let parts: Vec<&str> = text.split(':').collect();
    anyhow::ensure!(parts.len() == 6, "not a MAC address: {text}");
    for (i, part) in parts.iter().enumerate() {
        mac[i] = u8::from_str_radix(part, 16).with_context(|| format!("MAC {text}"))?;
    }
    Ok(mac)
}

impl RoutedNs {
    pub fn new() -> Result<Self> {
        Self::with_aliases(1)
    }

    /// [`RoutedNs::new`] on a lab whose scanner has `aliases` addresses.
    pub fn with_aliases(aliases: usize) -> Result<Self> {
        let lab = Lab::new(aliases)?;
        let p = lab.protected.name.clone();
        let gw = mac_of(&lab.scanner.name, &lab.scanner_iface)?;
        let own = mac_of(&p, &lab.iface)?;
        ip(&["-n", &p, "-6", "route", "add", "default", "via", "fd77::2"])?;
        for gateway in ["10.77.0.2", "fd77::2"] {
            ip(&[
                "-n",
                &p,
                "neigh",
                "replace",
                gateway,
                "lladdr",
                &gw,
                "dev",
                &lab.iface,
                "nud",
                "permanent",
            ])?;
        }
        for key in ["net.ipv4.conf.lo.forwarding", "net.ipv6.conf.lo.forwarding"] {
            lab.protected.sysctl(key, "1")?;
        }
        let ifindex = lab.protected.ifindex(&lab.iface)?;
        Ok(Self {
            gateway_mac: mac_bytes(&gw)?,
            own_mac: mac_bytes(&own)?,
            lab,
            ifindex,
        })
    }

    /// Writes `/proc/sys/<key>` (dots for slashes) in the protected namespace.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.lab.protected.sysctl(key, value)
    }

    /// Runs `f` on a thread inside the protected namespace, with the interface's index.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce(u32) -> T + Send + 'static) -> T {
        let ifindex = self.ifindex;
        self.lab.protected.run(move || f(ifindex))
    }
}
