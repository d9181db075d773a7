//! Addresses and networks in the XDP program's key form: IPv6 as is, IPv4 IPv4-mapped
//! (`::ffff:a.b.c.d`, prefix + 96), so one table and one trie serve both families.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

use portsentry_common::AddrKey;
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum CidrError {
    #[error("`{0}` is not an IPv4 or IPv6 address")]
    BadAddress(String),
    #[error("`{0}` is not a valid prefix length (0-{1})")]
    BadPrefix(String, u8),
    #[error("`{0}` has host bits set beyond the /{1} prefix (did you mean {2}?)")]
    HostBitsSet(String, u8, String),
}

/// An address with a prefix length; a plain address is a /32 or /128. Always canonical: an
/// IPv4-mapped IPv6 address or network is stored as the IPv4 one, so the two are one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn host(addr: IpAddr) -> Self {
        Self {
            addr: canonical(addr),
            prefix: max_prefix(addr),
        }
    }

    /// The key-form prefix length (IPv4 + 96).
    pub fn key_prefix(&self) -> u32 {
        match self.addr {
            IpAddr::V4(_) => u32::from(self.prefix) + 96,
            IpAddr::V6(_) => u32::from(self.prefix),
        }
    }

    pub fn key(&self) -> AddrKey {
        addr_key(self.addr)
    }

    pub fn is_host(&self) -> bool {
        self.prefix == max_prefix(self.addr)
    }

    /// The network `addr/prefix` with host bits cleared (lenient, for ranges from other
    /// programs); `None` if the prefix is too long for the family.
    pub fn masked(addr: IpAddr, prefix: u8) -> Option<Self> {
        let (addr, prefix) = match (addr, canonical(addr)) {
            // An IPv4-mapped network keeps its length relative to the IPv4 address.
            (IpAddr::V6(_), IpAddr::V4(v4)) => (IpAddr::V4(v4), prefix.checked_sub(96)?),
            (_, a) => (a, prefix),
        };
        if prefix > max_prefix(addr) {
            return None;
        }
        let addr = match addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(mask_v4(u32::from(a), prefix))),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(mask_v6(u128::from(a), prefix))),
        };
        Some(Self { addr, prefix })
    }

    /// The network in the kernel's key space (IPv4 as `::ffff:a.b.c.d/96+n`), where every
    /// comparison is made: an IPv6 range such as `::fffe:0:0/95` covers IPv4 addresses there,
    /// exactly as the XDP program's trie lookup sees it.
    fn key_space(&self) -> (u128, u32) {
        (u128::from_be_bytes(self.key().addr), self.key_prefix())
    }

    /// The first and last address of the network in the kernel's key space (IPv4 mapped).
    pub fn key_range(&self) -> (u128, u128) {
        let (net, len) = self.key_space();
        let host_bits = 128 - len;
        let last = if host_bits >= 128 {
            u128::MAX
        } else {
            net | ((1u128 << host_bits) - 1)
        };
        (net, last)
    }

    /// Every address of `other` is in `self`.
    pub fn covers(&self, other: &Cidr) -> bool {
        let (net, len) = self.key_space();
        let (addr, other_len) = other.key_space();
        len <= other_len && mask_v6(addr, len as u8) == net
    }

    /// The two networks share at least one address (one contains the other).
    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.covers(other) || other.covers(self)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.covers(&Cidr::host(ip))
    }
}

fn max_prefix(addr: IpAddr) -> u8 {
    match canonical(addr) {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// IPv4-mapped IPv6 addresses are treated as the IPv4 address they carry.
pub fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

fn mask_v4(a: u32, prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        a & (u32::MAX << (32 - u32::from(prefix)))
    }
}

fn mask_v6(a: u128, prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        a & (u128::MAX << (128 - u32::from(prefix)))
    }
}

pub fn addr_key(addr: IpAddr) -> AddrKey {
    match canonical(addr) {
        IpAddr::V4(v4) => AddrKey::from_v4(v4.octets()),
        IpAddr::V6(v6) => AddrKey::from_v6(v6.octets()),
    }
}

pub fn key_addr(key: &AddrKey) -> IpAddr {
    match key.as_v4() {
        Some(o) => IpAddr::V4(Ipv4Addr::from(o)),
        None => IpAddr::V6(Ipv6Addr::from(key.addr)),
    }
}

/// Strict parsing: a bad address, a bad prefix or host bits beyond the prefix are errors
/// (PortSentry silently never matched such entries).
impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr_s, prefix_s) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr_s
            .parse()
            .map_err(|_| CidrError::BadAddress(addr_s.to_owned()))?;
        let addr = canonical(addr);
        let max = max_prefix(addr);
        let prefix = match prefix_s {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max && !p.starts_with('+') => n,
                _ => return Err(CidrError::BadPrefix(p.to_owned(), max)),
            },
        };
        let network = match addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(mask_v4(u32::from(a), prefix))),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(mask_v6(u128::from(a), prefix))),
        };
        if network != addr {
            return Err(CidrError::HostBitsSet(
                s.to_owned(),
                prefix,
                format!("{network}/{prefix}"),
            ));
        }
        Ok(Self { addr, prefix })
    }
}

impl serde::Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A visitor rather than `String::deserialize` then parse: the error is then raised
        // while the value is being read, so a config error points at the list element.
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = Cidr;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an address or network such as \"192.0.2.0/24\"")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Cidr, E> {
                s.trim().parse().map_err(E::custom)
            }
        }
        d.deserialize_str(Text)
    }
}

/// Whether `addr` is link-local (169.254/16, fe80::/10), IPv4-mapped addresses as IPv4.
pub fn is_link_local(addr: IpAddr) -> bool {
    match canonical(addr) {
        IpAddr::V4(a) => a.is_link_local(),
        IpAddr::V6(a) => a.segments()[0] & 0xffc0 == 0xfe80,
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_host() {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hosts_and_networks() {
        let c: Cidr = "10.0.0.0/8".parse().unwrap();
        assert_eq!(c.key_prefix(), 104);
        assert!(c.contains("10.9.8.7".parse().unwrap()));
        assert!(!c.contains("11.0.0.1".parse().unwrap()));
        let h: Cidr = "2001:db8::1".parse().unwrap();
        assert_eq!((h.prefix, h.key_prefix()), (128, 128));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("1.2.3.4".parse().unwrap()));
        let mapped: Cidr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(mapped.to_string(), "192.0.2.1");
    }

    #[test]
    fn rejects_host_bits_and_bad_prefixes() {
        assert!(
            matches!("10.0.0.1/8".parse::<Cidr>(), Err(CidrError::HostBitsSet(_, 8, n)) if n == "10.0.0.0/8")
        );
        assert!(matches!(
            "10.0.0.0/33".parse::<Cidr>(),
            Err(CidrError::BadPrefix(..))
        ));
        assert!(matches!(
            "10.0.0.0/".parse::<Cidr>(),
            Err(CidrError::BadPrefix(..))
        ));
        assert!(matches!(
            "10.0.0.0/+8".parse::<Cidr>(),
            Err(CidrError::BadPrefix(..))
        ));
        assert!(matches!(
            "example.com".parse::<Cidr>(),
            Err(CidrError::BadAddress(_))
        ));
    }

    #[test]
    fn lenient_networks_and_overlaps() {
        let n = |s: &str| s.parse::<Cidr>().unwrap();
        assert_eq!(
            Cidr::masked("10.1.2.3".parse().unwrap(), 16),
            Some(n("10.1.0.0/16"))
        );
        assert_eq!(
            Cidr::masked("::ffff:10.1.2.3".parse().unwrap(), 112),
            Some(n("10.1.0.0/16"))
        );
        assert_eq!(
            Cidr::masked("2001:db8::1".parse().unwrap(), 32),
            Some(n("2001:db8::/32"))
        );
        assert_eq!(Cidr::masked("10.1.2.3".parse().unwrap(), 33), None);
        assert!(n("10.0.0.0/8").overlaps(&n("10.9.0.1")));
        assert!(n("10.9.0.1").overlaps(&n("10.0.0.0/8")));
        assert!(!n("10.0.0.0/8").overlaps(&n("11.0.0.0/8")));
        // ::/0 covers IPv4 in the kernel's key space, as the trie lookup sees it.
        assert!(n("10.0.0.0/8").overlaps(&n("::/0")));
        assert!(!n("10.0.0.0/8").overlaps(&n("2001:db8::/32")));
    }

    #[test]
    fn ipv6_ranges_over_the_mapped_space_cover_ipv4() {
        let n = |s: &str| s.parse::<Cidr>().unwrap();
        let range = Cidr::masked("::fffe:0:0".parse().unwrap(), 95).unwrap();
        assert!(range.covers(&n("10.99.0.77")), "{range} covers all of IPv4");
        assert!(range.overlaps(&n("192.0.2.0/24")));
        assert_eq!(
            Cidr::masked("::ffff:0:0".parse().unwrap(), 96),
            Some(n("0.0.0.0/0")),
            "a mapped network is the IPv4 one"
        );
        assert_eq!(
            n("::ffff:10.99.0.77"),
            n("10.99.0.77"),
            "one key for both forms"
        );
    }

    #[test]
    fn keys_are_ipv4_mapped() {
        let k = addr_key("192.0.2.7".parse().unwrap());
        assert_eq!(k.as_v4(), Some([192, 0, 2, 7]));
        assert_eq!(key_addr(&k).to_string(), "192.0.2.7");
        let k6 = addr_key("2001:db8::7".parse().unwrap());
        assert_eq!(key_addr(&k6).to_string(), "2001:db8::7");
    }
}
