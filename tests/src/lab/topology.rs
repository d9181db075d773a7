//! [`Lab`]: two namespaces joined by a veth pair, `protected` (10.77.0.1, fd77::1) and
//! `scanner` (10.77.0.2…, fd77::2…), each the other's default route. Names are unique per lab.
//! Creating the link and re-creating it after [`Lab::remove_link`] share one
//! [`Lab::configure_link`], so a re-created link has every address (IPv4 and IPv6), route and
//! neighbour entry the first one had.

use std::{
    net::IpAddr,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use super::Netns;

/// The MAC address of `dev` in namespace `ns`, as `ip` prints it (`aa:bb:cc:dd:ee:ff`).
pub fn mac_of(ns: &str, dev: &str) -> Result<String> {
    let text = ip_output(&["-n", ns, "link", "show", dev])?;
    Ok(text
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .with_context(|| format!("{dev} in {ns} has no MAC address"))?
        .to_owned())
}

/// The MAC address of `dev` in namespace `ns`, as bytes.
pub fn mac_bytes_of(ns: &str, dev: &str) -> Result<[u8; 6]> {
    super::routed::mac_bytes(&mac_of(ns, dev)?)
}

/// Runs `ip ARGS`, failing with its stderr.
pub fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// `ip ARGS` and its stdout.
fn ip_output(args: &[&str]) -> Result<String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip")?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A veth pair from `a_dev` in namespace `a_ns` to `b_dev` in `b_ns`, both ends up.
pub fn veth_pair(a_ns: &str, a_dev: &str, b_ns: &str, b_dev: &str) -> Result<()> {
    ip(&[
        "link", "add", a_dev, "netns", a_ns, "type", "veth", "peer", "name", b_dev, "netns", b_ns,
    ])?;
    ip(&["-n", a_ns, "link", "set", a_dev, "up"])?;
    ip(&["-n", b_ns, "link", "set", b_dev, "up"])
}

/// Two namespaces and a veth pair: `protected` (10.77.0.1, fd77::1) and `scanner`
/// (10.77.0.2.., fd77::2..) with each other as default route.
pub struct Lab {
    pub protected: Netns,
    pub scanner: Netns,
    /// The protected side's interface.
    pub iface: String,
    /// The scanner side's interface.
    pub scanner_iface: String,
    pub protected_v4: IpAddr,
    pub protected_v6: IpAddr,
    /// Scanner addresses: index 0 is the primary; more are aliases so cases do not share a ban.
    pub scanner_v4: Vec<IpAddr>,
    pub scanner_v6: Vec<IpAddr>,
}

impl Lab {
    /// A lab whose scanner has `aliases` IPv4 and IPv6 addresses.
    pub fn new(aliases: usize) -> Result<Self> {
        let id = format!("{}x{}", std::process::id() % 100_000, super::unique());
        let lab = Self {
            protected: Netns {
                name: format!("psp{id}"),
            },
            scanner: Netns {
                name: format!("pss{id}"),
            },
            iface: format!("vp{id}"),
            scanner_iface: format!("vs{id}"),
            protected_v4: "10.77.0.1".parse()?,
            protected_v6: "fd77::1".parse()?,
            scanner_v4: (0..aliases.max(1))
                .map(|i| format!("10.77.0.{}", i + 2).parse())
                .collect::<Result<_, _>>()?,
            scanner_v6: (0..aliases.max(1))
                .map(|i| format!("fd77::{:x}", i + 2).parse())
                .collect::<Result<_, _>>()?,
        };
        // From here on, Drop cleans up whatever was created.
        lab.create()?;
        Ok(lab)
    }

    fn create(&self) -> Result<()> {
        let (p, s) = (&self.protected.name, &self.scanner.name);
        ip(&["netns", "add", p])?;
        ip(&["netns", "add", s])?;
        for ns in [p, s] {
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        veth_pair(p, &self.iface, s, &self.scanner_iface)?;
        self.configure_link()
    }

    /// Re-creates the veth pair after [`Lab::remove_link`]: same names, and through
    /// [`Lab::configure_link`] the same IPv4 and IPv6 addresses, routes and neighbours.
    pub fn recreate_link(&self) -> Result<()> {
        veth_pair(
            &self.protected.name,
            &self.iface,
            &self.scanner.name,
            &self.scanner_iface,
        )?;
        self.configure_link()
    }

    /// Everything on a fresh veth pair beyond the link itself: the addresses of both ends (IPv4
    /// /24 and IPv6 /64, without duplicate address detection so they are usable at once), the
    /// default routes, the scanner's neighbour entries for the protected addresses; then it
    /// checks every address is in place and waits until both ends carry traffic.
    pub fn configure_link(&self) -> Result<()> {
        let (p, s) = (&self.protected.name, &self.scanner.name);
        for (ns, dev, addrs) in [
            (p, &self.iface, vec![self.protected_v4, self.protected_v6]),
            (s, &self.scanner_iface, self.scanner_addresses()),
        ] {
            for addr in addrs {
                let cidr = format!("{addr}/{}", if addr.is_ipv4() { 24 } else { 64 });
                let mut args = vec!["-n", ns, "addr", "add", &cidr, "dev", dev];
                if addr.is_ipv6() {
                    args.push("nodad");
                }
                ip(&args)?;
            }
        }
        ip(&["-n", p, "route", "add", "default", "via", "10.77.0.2"])?;
        ip(&["-n", s, "route", "add", "default", "via", "10.77.0.1"])?;
        self.pin_neighbours()?;
        self.check_addresses()?;
        self.wait_until_up()
    }

    fn scanner_addresses(&self) -> Vec<IpAddr> {
        self.scanner_v4
            .iter()
            .chain(&self.scanner_v6)
            .copied()
            .collect()
    }

    /// Fails unless `ip -4 addr show` and `ip -6 addr show` list every address of both ends.
    fn check_addresses(&self) -> Result<()> {
        for (ns, dev, addrs) in [
            (
                &self.protected.name,
                &self.iface,
                vec![self.protected_v4, self.protected_v6],
            ),
            (
                &self.scanner.name,
                &self.scanner_iface,
                self.scanner_addresses(),
            ),
        ] {
            let v4 = ip_output(&["-n", ns, "-4", "addr", "show", "dev", dev])?;
            let v6 = ip_output(&["-n", ns, "-6", "addr", "show", "dev", dev])?;
            for addr in addrs {
                let (family, listed) = if addr.is_ipv4() {
                    ("-4", &v4)
                } else {
                    ("-6", &v6)
                };
                let inet = if addr.is_ipv4() { "inet" } else { "inet6" };
                let wanted = format!("{inet} {addr}/");
                if !listed.contains(&wanted) {
                    bail!("{addr} is missing on {dev} in {ns}: `ip {family} addr show` says:\n{listed}");
                }
            }
        }
        Ok(())
    }

    /// Waits until both ends can carry traffic: carrier up and a real qdisc attached. Until the
    /// kernel's link watcher has run, a fresh veth has the `noop` qdisc, which silently drops
    /// everything, so a test's first SYN could be lost and its connect time out.
    fn wait_until_up(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(5);
        for (ns, dev) in [
            (&self.protected.name, &self.iface),
            (&self.scanner.name, &self.scanner_iface),
        ] {
            loop {
                let text = ip_output(&["-n", ns, "link", "show", "dev", dev])?;
                if text.contains("state UP") && !text.contains("qdisc noop") {
                    break;
                }
                if Instant::now() >= deadline {
                    bail!("{dev} in {ns} did not come up within 5 s: {text}");
                }
                thread::sleep(Duration::from_millis(10));
            }
        }
        Ok(())
    }

    /// Permanent neighbour entries on the protected side for every scanner address, as if the
    /// protected host had talked to them: the path check can then verify the scanner's MAC, so
    /// its bans are verified (and shareable with the fleet) instead of unverified.
    pub fn protected_knows_scanner(&self) -> Result<()> {
        let mac = mac_of(&self.scanner.name, &self.scanner_iface)?;
        for addr in self.scanner_addresses() {
            ip(&[
                "-n",
                &self.protected.name,
                "neigh",
                "replace",
                &addr.to_string(),
                "lladdr",
                &mac,
                "dev",
                &self.iface,
                "nud",
                "permanent",
            ])?;
        }
        Ok(())
    }

    /// Permanent neighbour entries on the scanner side for the protected addresses. A banned
    /// IPv6 source cannot complete neighbour discovery (its solicitations are dropped too), so
    /// without this a scanner could not even send the probes a test wants to see unanswered.
    fn pin_neighbours(&self) -> Result<()> {
        let mac = mac_of(&self.protected.name, &self.iface)?;
        for addr in [self.protected_v4, self.protected_v6] {
            let a = addr.to_string();
            ip(&[
                "-n",
                &self.scanner.name,
                "neigh",
                "replace",
                &a,
                "lladdr",
                &mac,
                "dev",
                &self.scanner_iface,
                "nud",
                "permanent",
            ])?;
        }
        Ok(())
    }

    /// Points the protected side's default route at `via` (a new gateway, as a DHCP renewal or
    /// a failover would): `ip -n <protected> route replace default via VIA`.
    pub fn route_replace_default(&self, via: IpAddr) -> Result<()> {
        ip(&[
            "-n",
            &self.protected.name,
            "route",
            "replace",
            "default",
            "via",
            &via.to_string(),
        ])
    }

    /// Lets the scanner's end of the veth pair take, at once, the frames a native XDP program on
    /// the protected end sends back out (XDP_TX: the SYN cookies answering learned peers). A
    /// veth end is woken to receive such frames only when it runs an XDP program itself;
    /// without one they wait in its queue until other traffic comes by. So this attaches the
    /// empty pass-everything program (`baseline`, from `PORTSENTRY_BASELINE_OBJECT`) to the
    /// scanner's end, in the scanner namespace. Physical NICs and generic XDP need nothing.
    pub fn accept_xdp_tx(&self) -> Result<()> {
        let object = super::baseline_object();
        ip(&[
            "-n",
            &self.scanner.name,
            "link",
            "set",
            "dev",
            &self.scanner_iface,
            "xdpdrv",
            "obj",
            &object.display().to_string(),
            "sec",
            "xdp",
        ])
    }

    /// A host on the scanner's link that the protected side has never seen: namespace
    /// `<scanner>SUFFIX` holding `dev`, a macvlan on the scanner's interface (bridge mode: its
    /// own MAC, the same wire), up, with `addr` (`10.77.0.50/24`, say) if given. A forger
    /// sends from it in other hosts' names. Deleted on drop.
    pub fn lan_host(&self, suffix: &str, dev: &str, addr: Option<&str>) -> Result<LanHost> {
        let ns = super::OwnedNetns::add(&format!("{}{suffix}", self.scanner.name))?;
        let s = &self.scanner.name;
        ip(&[
            "-n",
            s,
            "link",
            "add",
            dev,
            "link",
            &self.scanner_iface,
            "type",
            "macvlan",
            "mode",
            "bridge",
        ])?;
        ip(&["-n", s, "link", "set", dev, "netns", &ns.name])?;
        if let Some(addr) = addr {
            ip(&["-n", &ns.name, "addr", "add", addr, "dev", dev])?;
        }
        ip(&["-n", &ns.name, "link", "set", dev, "up"])?;
        let mac = mac_bytes_of(&ns.name, dev)?;
        Ok(LanHost {
            ns,
            dev: dev.to_owned(),
            mac,
        })
    }

    /// A second interface on the protected side, `other0` (10.99.0.1/24; a veth whose peer
    /// `other1` stays in the namespace: this kernel has no dummy driver) that a forged source
    /// can be routed out of.
    pub fn add_other_interface(&self) -> Result<()> {
        let p = &self.protected.name;
        ip(&[
            "-n", p, "link", "add", "other0", "type", "veth", "peer", "name", "other1",
        ])?;
        ip(&["-n", p, "addr", "add", "10.99.0.1/24", "dev", "other0"])?;
        ip(&["-n", p, "link", "set", "other0", "up"])?;
        ip(&["-n", p, "link", "set", "other1", "up"])
    }

    /// Deletes the veth pair (both ends).
    pub fn remove_link(&self) -> Result<()> {
        ip(&["-n", &self.protected.name, "link", "del", &self.iface])
    }

    /// Whether an XDP program is attached to the protected interface.
    pub fn xdp_attached(&self) -> Result<bool> {
        Ok(ip_output(&["-n", &self.protected.name, "link", "show", &self.iface])?.contains("xdp"))
    }
}

/// A host beside the scanner on its link ([`Lab::lan_host`]); its namespace goes on drop.
pub struct LanHost {
    pub ns: super::OwnedNetns,
    /// Its interface (a macvlan on the scanner's).
    pub dev: String,
    pub mac: [u8; 6],
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of the veth, and with it the peer.
        let _ = ip(&["netns", "del", &self.protected.name]);
        let _ = ip(&["netns", "del", &self.scanner.name]);
    }
}
