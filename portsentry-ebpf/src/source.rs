//! Which sources can be real peers. A forged probe can carry any source address; some can
//! never be a host that talks to us, and banning them only hurts (0.0.0.0 bans DHCP clients,
//! ::ffff:a.b.c.d in an IPv6 packet would ban the IPv4 host a.b.c.d). Those are *bogus*: never
//! counted or banned. Link-local sources are real but meaningful on this link only.
//!
//! Userspace keeps the same ranges for fleet decisions (`portsentry_common::bogus`); a unit
//! test there pins both lists to each other.

use portsentry_common::AddrKey;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum SourceClass {
    Normal,
    /// 169.254/16, fe80::/10.
    LinkLocal,
    /// IPv4 0/8, 127/8, 224/4, 240/4 (255.255.255.255 included); IPv6 ::/96 (::, ::1 and
    /// IPv4-compatible), ::ffff:0:0/96 (IPv4-mapped) and ff00::/8.
    Bogus,
}

/// Classifies the source of a packet; `is_v6` says which header it came from (an IPv4 source is
/// stored IPv4-mapped, so the same key inside an IPv6 header is a forgery).
#[inline(always)]
pub fn classify(src: &AddrKey, is_v6: bool) -> SourceClass {
    let a = &src.addr;
    if !is_v6 {
        return match (a[12], a[13]) {
            (0 | 127, _) => SourceClass::Bogus,
            (first, _) if first >= 224 => SourceClass::Bogus,
            (169, 254) => SourceClass::LinkLocal,
            _ => SourceClass::Normal,
        };
    }
    if a[0] == 0xff {
        return SourceClass::Bogus;
    }
    if a[0] == 0xfe && a[1] & 0xc0 == 0x80 {
        return SourceClass::LinkLocal;
    }
    // Words, not a byte loop: one comparison per 4 bytes keeps this branch cheap.
    let word = |i: usize| u32::from_ne_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]]);
    if word(0) == 0 && word(4) == 0 {
        let third = word(8);
        // ::/96 (unspecified, loopback, IPv4-compatible) and ::ffff:0:0/96 (IPv4-mapped).
        if third == 0 || third == u32::from_ne_bytes([0, 0, 0xff, 0xff]) {
            return SourceClass::Bogus;
        }
    }
    SourceClass::Normal
}

/// The hit-table key for a link-local source: the address with the receiving interface written
/// into bits that are zero in every link-local address (IPv6 fe80::/64 bytes 4..8; the zero
/// prefix of an IPv4-mapped key), because fe80::1 on one link and fe80::1 on another are two
/// hosts. Bans stay keyed by address.
#[inline(always)]
pub fn per_interface(src: &AddrKey, ifindex: u32, is_v6: bool) -> AddrKey {
    let mut key = *src;
    let at = if is_v6 { 4 } else { 0 };
    let bytes = ifindex.to_be_bytes();
    key.addr[at] = bytes[0];
    key.addr[at + 1] = bytes[1];
    key.addr[at + 2] = bytes[2];
    key.addr[at + 3] = bytes[3];
    key
}
