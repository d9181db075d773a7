//! Facts about this host's network: the default-route interface, its own addresses, gateways
//! and resolvers (so the host can never ban itself or its infrastructure).

use std::{
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use anyhow::{bail, Context, Result};

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

/// Name servers from resolv.conf (a missing file means none).
pub fn resolvers(path: &str) -> Vec<IpAddr> {
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
    use super::*;

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
