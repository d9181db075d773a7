//! Which sources can be real peers. A forged probe can carry any source address; some can
//! never be a host that talks to us, and banning them only hurts (0.0.0.0 bans DHCP clients,
//! ::ffff:a.b.c.d in an IPv6 packet would ban the IPv4 host a.b.c.d). Those are *bogus*: never
//! counted or banned. Link-local sources are real but meaningful on this link only.
//!
//! The ranges are declared once, in `portsentry_common::bogus`, which userspace also uses to
//! refuse fleet decisions and manual bans.

use portsentry_common::{bogus, AddrKey};

/// Whether a packet's source can never be a real peer; `is_v6` says which header it came
/// from (an IPv4 source is stored IPv4-mapped, so the same key inside an IPv6 header is a
/// forgery). The ranges are `portsentry_common::bogus`, the list userspace checks fleet
/// decisions against: IPv4 0/8, 127/8, 224/4, 240/4; IPv6 ::/96 (::, ::1, IPv4-compatible),
/// ::ffff:0:0/96 (IPv4-mapped) and ff00::/8.
#[inline(always)]
pub fn is_bogus(src: &AddrKey, is_v6: bool) -> bool {
    let a = &src.addr;
    if is_v6 {
        bogus::is_bogus_v6_source(a)
    } else {
        bogus::is_bogus_v4(&[a[12], a[13], a[14], a[15]])
    }
}

/// The hit-table key of a source: its address, except that a link-local source (169.254/16,
/// fe80::/10) also carries the receiving interface, written into bits that are zero in every
/// link-local address (IPv6 fe80::/64 bytes 4..8; the zero prefix of an IPv4-mapped key):
/// fe80::1 on one link and fe80::1 on another are two hosts. Bans stay keyed by address.
///
/// Returns the key rather than a "link-local" flag on purpose: a flag kept alive down the rest
/// of the pipeline doubles the states the verifier explores after it; the key's bytes are
/// unknown to it either way. (Userspace tells link-local events from their address.)
#[inline(always)]
pub fn hit_key(src: &AddrKey, ifindex: u32, is_v6: bool) -> AddrKey {
    let a = &src.addr;
    let link_local = if is_v6 {
        a[0] == 0xfe && a[1] & 0xc0 == 0x80
    } else {
        a[12] == 169 && a[13] == 254
    };
    let mut key = *src;
    if !link_local {
        return key;
    }
    let at = if is_v6 { 4 } else { 0 };
    let bytes = ifindex.to_be_bytes();
    key.addr[at] = bytes[0];
    key.addr[at + 1] = bytes[1];
    key.addr[at + 2] = bytes[2];
    key.addr[at + 3] = bytes[3];
    key
}
