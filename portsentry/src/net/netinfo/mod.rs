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
/// This host's own addresses as allowlist entries. A probe "from" one of them arriving on the
/// wire is forged, so they are allowlisted even with `auto_allow = false`.
pub fn own_address_list() -> Result<Vec<Cidr>> {
    Ok(host_entries(own_addresses()?))
}

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
mod tests;
