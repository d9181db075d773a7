//! Facts about this host's network: the default-route interface, its own addresses, gateways
//! and resolvers (so the host can never ban itself or its infrastructure).
//!
//! Everything here is read fresh on each call (from `/proc`, `getifaddrs` and the resolver
//! files), so callers recompute the automatic allowlist whenever [`crate::net::netwatch`] reports a
//! change.

use std::{
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, ToSocketAddrs},
    path::Path,
};

use anyhow::{bail, Context, Result};

use crate::net::cidr::Cidr;

/// The system resolver configuration (with systemd-resolved, it lists only the local stub).
pub const RESOLV_CONF: &str = "/etc/resolv.conf";

/// systemd-resolved's non-stub file: the real upstream servers it forwards to (absent without
/// systemd-resolved).
pub const RESOLVED_UPSTREAM_CONF: &str = "/run/systemd/resolve/resolv.conf";

/// A default route: interface and gateway (if any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultRoute {
    pub iface: String,
    pub gateway: Option<IpAddr>,
}

/// Default routes from `/proc/net/route` (IPv4) and `/proc/net/ipv6_route`.
pub fn default_routes() -> Vec<DefaultRoute> {
    let mut routes = fs::read_to_string("/proc/net/route")
        .map(|s| parse_route_v4(&s))
        .unwrap_or_default();
    routes.extend(
        fs::read_to_string("/proc/net/ipv6_route")
            .map(|s| parse_route_v6(&s))
            .unwrap_or_default(),
    );
    routes
}

/// The interface of the (first) default route.
pub fn default_route_iface() -> Result<String> {
    match default_routes().into_iter().next() {
        Some(r) => Ok(r.iface),
        None => bail!(
            "no default route, so no interface to protect by default: name one with --iface \
             (or `interfaces` in the config)"
        ),
    }
}

fn parse_route_v4(text: &str) -> Vec<DefaultRoute> {
    // Iface Destination Gateway Flags ... Mask ...; hex fields in host (little-endian) order.
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 8 || f[1] != "00000000" || f[7] != "00000000" {
                return None;
            }
            let flags = u32::from_str_radix(f[3], 16).ok()?;
            if flags & 0x1 == 0 {
                return None; // RTF_UP not set
            }
            let gw = u32::from_str_radix(f[2], 16).ok()?;
            let gateway = (gw != 0).then(|| IpAddr::V4(Ipv4Addr::from(gw.swap_bytes())));
            Some(DefaultRoute {
                iface: f[0].to_owned(),
                gateway,
            })
        })
        .collect()
}

fn parse_route_v6(text: &str) -> Vec<DefaultRoute> {
    // dest dest_plen src src_plen next_hop metric refcnt use flags iface
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 || f[0] != "0".repeat(32) || f[1] != "00" || f[9] == "lo" {
                return None;
            }
            let hop = u128::from_str_radix(f[4], 16).ok()?;
            let gateway = (hop != 0).then(|| IpAddr::V6(Ipv6Addr::from(hop)));
            Some(DefaultRoute {
                iface: f[9].to_owned(),
                gateway,
            })
        })
        .collect()
}

/// Every address configured on any interface of this host (network namespace).
pub fn own_addresses() -> Result<Vec<IpAddr>> {
    let mut out = Vec::new();
    for ifa in nix::ifaddrs::getifaddrs().context("listing interface addresses")? {
        let Some(addr) = ifa.address else { continue };
        if let Some(v4) = addr.as_sockaddr_in() {
            out.push(IpAddr::V4(v4.ip()));
        } else if let Some(v6) = addr.as_sockaddr_in6() {
            out.push(IpAddr::V6(v6.ip()));
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// The automatic allowlist: one host entry for each of this host's own addresses, the gateways of
/// its default routes, the name servers in [`RESOLV_CONF`] and systemd-resolved's upstream
/// servers in [`RESOLVED_UPSTREAM_CONF`], plus `extra_hosts` (e.g. [`lapi_hosts`]). Sorted and
/// deduplicated. Loopback stubs (127.0.0.53) are kept: harmless.
///
/// Read live on every call; only listing the interface addresses can fail.
pub fn auto_allow_list(extra_hosts: &[IpAddr]) -> Result<Vec<Cidr>> {
    auto_allow_list_from(
        &[Path::new(RESOLV_CONF), Path::new(RESOLVED_UPSTREAM_CONF)],
        extra_hosts,
    )
}

/// [`auto_allow_list`] with the resolver files as parameters (missing files mean no servers).
fn auto_allow_list_from(resolv_confs: &[&Path], extra_hosts: &[IpAddr]) -> Result<Vec<Cidr>> {
    let mut addrs = own_addresses()?;
    addrs.extend(default_routes().into_iter().filter_map(|r| r.gateway));
    for path in resolv_confs {
        addrs.extend(resolvers(path));
    }
    addrs.extend_from_slice(extra_hosts);
    Ok(host_entries(addrs))
}

/// One host entry per address, sorted and deduplicated (after IPv4-mapped addresses fold into
/// IPv4).
fn host_entries(addrs: impl IntoIterator<Item = IpAddr>) -> Vec<Cidr> {
    let mut out: Vec<Cidr> = addrs.into_iter().map(Cidr::host).collect();
    out.sort_by_key(|c| (c.addr, c.prefix));
    out.dedup();
    out
}

/// The addresses of the host in an `http://` or `https://` URL (such as the CrowdSec LAPI's):
/// an IP literal (IPv6 in brackets) as is, a name resolved with the system resolver for the
/// URL's port. Best effort: an unparsable URL or a failed lookup gives an empty list.
///
/// Resolving a name blocks (getaddrinfo): call it off the async runtime's threads, or accept
/// the delay of a slow resolver.
pub fn lapi_hosts(lapi_url: &str) -> Vec<IpAddr> {
    let Some((host, port)) = url_host_port(lapi_url) else {
        return Vec::new();
    };
    if let Ok(ip) = host.parse::<IpAddr>() {
        return vec![ip];
    }
    let mut out: Vec<IpAddr> = match (host, port).to_socket_addrs() {
        Ok(addrs) => addrs.map(|a| a.ip()).collect(),
        Err(_) => return Vec::new(),
    };
    out.sort();
    out.dedup();
    out
}

/// Host (brackets and IPv6 zone removed) and port (default 80 or 443) of an http(s) URL.
fn url_host_port(url: &str) -> Option<(&str, u16)> {
    let url = url.trim();
    let (scheme, rest) = url.split_once("://")?;
    let default_port = if scheme.eq_ignore_ascii_case("http") {
        80
    } else if scheme.eq_ignore_ascii_case("https") {
        443
    } else {
        return None;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    // Credentials (user:pass@host) are not part of the host.
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = if let Some(bracketed) = hostport.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']')?;
        // A zone (fe80::1%25eth0) is not part of the address.
        let host = host.split('%').next().unwrap_or_default();
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':')?),
        };
        (host, port)
    } else {
        match hostport.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    let port = match port {
        None | Some("") => default_port,
        Some(p) => p.parse().ok()?,
    };
    (!host.is_empty()).then_some((host, port))
}

/// Name servers from resolv.conf (a missing or unreadable file means none).
pub fn resolvers(path: impl AsRef<Path>) -> Vec<IpAddr> {
    fs::read_to_string(path)
        .map(|s| parse_resolv_conf(&s))
        .unwrap_or_default()
}

fn parse_resolv_conf(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next())
                .flatten()
        })
        // A scoped address (fe80::1%eth0) keeps only the address.
        .filter_map(|a| a.split('%').next().and_then(|a| a.parse().ok()))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    /// A file under the temp dir, removed on drop.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(name: &str, text: &str) -> Self {
            let path = std::env::temp_dir()
                .join(format!("portsentry-netinfo-{}-{name}", std::process::id()));
            fs::write(&path, text).unwrap();
            Self(path)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = fs::remove_file(&self.0);
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn allow_list_includes_resolved_upstreams_and_extra_hosts() {
        let stub = TempFile::new(
            "stub.conf",
            "# This is /run/systemd/resolve/stub-resolv.conf\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch .\n",
        );
        let upstream = TempFile::new(
            "upstream.conf",
            "# This is /run/systemd/resolve/resolv.conf\nnameserver 192.0.2.53\nnameserver 2001:db8::53\nnameserver 192.0.2.53\n",
        );
        let missing = std::env::temp_dir().join(format!(
            "portsentry-netinfo-{}-missing.conf",
            std::process::id()
        ));
        let extra = [
            ip("198.51.100.7"),
            ip("::ffff:192.0.2.53"),
            ip("198.51.100.7"),
        ];
        let list = auto_allow_list_from(&[&stub.0, &upstream.0, &missing], &extra).unwrap();

        for want in ["127.0.0.53", "192.0.2.53", "2001:db8::53", "198.51.100.7"] {
            assert!(
                list.contains(&Cidr::host(ip(want))),
                "{want} missing from {list:?}"
            );
        }
        // This host's own addresses are in too (the test runs with at least loopback, when up).
        for own in own_addresses().unwrap() {
            assert!(
                list.contains(&Cidr::host(own)),
                "{own} missing from {list:?}"
            );
        }
        // Every entry a host entry, sorted, no duplicates (the mapped address folded into IPv4).
        assert!(list.iter().all(|c| *c == Cidr::host(c.addr)));
        assert!(list
            .windows(2)
            .all(|w| (w[0].addr, w[0].prefix) < (w[1].addr, w[1].prefix)));
        assert_eq!(
            list.iter().filter(|c| c.addr == ip("192.0.2.53")).count(),
            1
        );
    }

    #[test]
    fn allow_list_without_resolver_files() {
        let missing = std::env::temp_dir().join(format!(
            "portsentry-netinfo-{}-none.conf",
            std::process::id()
        ));
        let list = auto_allow_list_from(&[&missing], &[]).unwrap();
        let mut own: Vec<Cidr> = own_addresses()
            .unwrap()
            .into_iter()
            .map(Cidr::host)
            .collect();
        own.extend(
            default_routes()
                .into_iter()
                .filter_map(|r| r.gateway)
                .map(Cidr::host),
        );
        own.sort_by_key(|c| (c.addr, c.prefix));
        own.dedup();
        assert_eq!(list, own);
    }

    #[test]
    fn resolved_upstream_file_parsing() {
        let upstream = TempFile::new(
            "resolved.conf",
            "# Third party programs should typically not access this file directly\n\
             nameserver 192.0.2.53\nnameserver 2001:db8::1%eth0\n",
        );
        assert_eq!(
            resolvers(&upstream.0),
            vec![ip("192.0.2.53"), ip("2001:db8::1")]
        );
        let stub = TempFile::new("stub-resolv.conf", "nameserver 127.0.0.53\n");
        assert_eq!(resolvers(&stub.0), vec![ip("127.0.0.53")]);
    }

    #[test]
    fn lapi_hosts_of_literals() {
        assert_eq!(lapi_hosts("http://127.0.0.1:8080"), vec![ip("127.0.0.1")]);
        assert_eq!(lapi_hosts("https://192.0.2.10"), vec![ip("192.0.2.10")]);
        assert_eq!(
            lapi_hosts("http://[2001:db8::10]:8080/v1"),
            vec![ip("2001:db8::10")]
        );
        assert_eq!(
            lapi_hosts("HTTPS://[2001:db8::10]/"),
            vec![ip("2001:db8::10")]
        );
        assert_eq!(
            lapi_hosts("http://[fe80::1%25eth0]:8080"),
            vec![ip("fe80::1")]
        );
        assert_eq!(
            lapi_hosts("http://user:pw@192.0.2.11:80/x?y#z"),
            vec![ip("192.0.2.11")]
        );
        assert_eq!(lapi_hosts("http://192.0.2.12?q"), vec![ip("192.0.2.12")]);
    }

    #[test]
    fn lapi_hosts_best_effort() {
        for bad in [
            "",
            "192.0.2.1:8080",
            "ftp://192.0.2.1",
            "http://",
            "http://:8080",
            "http://[2001:db8::1",
            "http://[2001:db8::1]x:80",
            "http://192.0.2.1:notaport",
            "http://192.0.2.1:99999",
        ] {
            assert_eq!(lapi_hosts(bad), Vec::<IpAddr>::new(), "{bad}");
        }
        // A name goes to the system resolver; localhost is answered locally (/etc/hosts).
        assert!(lapi_hosts("http://localhost:8080")
            .iter()
            .all(|a| a.is_loopback()));
        assert_eq!(
            url_host_port("https://lapi.example"),
            Some(("lapi.example", 443))
        );
        assert_eq!(
            url_host_port("http://lapi.example:8080/"),
            Some(("lapi.example", 8080))
        );
        assert_eq!(url_host_port("http://[::1]:"), Some(("::1", 80)));
    }

    #[test]
    fn reads_default_routes() {
        let v4 =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                  eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                  eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        assert_eq!(
            parse_route_v4(v4),
            vec![DefaultRoute {
                iface: "eth0".into(),
                gateway: Some("192.0.2.1".parse().unwrap())
            }]
        );
        let v6 = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003     eth1\n";
        assert_eq!(
            parse_route_v6(v6),
            vec![DefaultRoute {
                iface: "eth1".into(),
                gateway: Some("fe80::1".parse().unwrap())
            }]
        );
    }

    #[test]
    fn reads_resolvers() {
        let r = parse_resolv_conf(
            "# c\nnameserver 192.0.2.53\nnameserver fe80::1%eth0\nsearch x\nnameserver bogus\n",
        );
        assert_eq!(
            r,
            vec![
                "192.0.2.53".parse::<IpAddr>().unwrap(),
                "fe80::1".parse().unwrap()
            ]
        );
    }
}
