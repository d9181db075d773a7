//! Bogus sources: addresses no real peer can send from (unspecified, loopback, multicast,
//! reserved, and IPv6 packets carrying IPv4 in their source). Declared once here for the XDP
//! program (which never counts a probe from one) and for userspace (which refuses fleet
//! decisions and manual bans covering one), so the two lists cannot drift apart.
//!
//! Each range is `(network, prefix length)` in its own family. The IPv4-mapped range is apart:
//! as the source of an IPv6 packet it is forged, but in the map key space an IPv4 address *is*
//! `::ffff:a.b.c.d`, so userspace reads a mapped address or range as the IPv4 one and checks it
//! against [`V4`].

/// IPv4: "this network" 0/8, loopback 127/8, multicast 224/4, reserved 240/4 (broadcast too).
pub const V4: [([u8; 4], u8); 4] = [
    ([0, 0, 0, 0], 8),
    ([127, 0, 0, 0], 8),
    ([224, 0, 0, 0], 4),
    ([240, 0, 0, 0], 4),
];

/// IPv6: unspecified `::/128`, loopback `::1/128`, multicast `ff00::/8`, IPv4-compatible
/// `::/96` (deprecated; covers the first two, listed for what they are).
pub const V6: [([u8; 16], u8); 4] = [
    ([0; 16], 128),
    ([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], 128),
    ([0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 8),
    ([0; 16], 96),
];

/// IPv4-mapped `::ffff:0:0/96`: bogus as the source of an IPv6 packet (see the module doc).
pub const V6_MAPPED: ([u8; 16], u8) = ([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0], 96);

/// Whether the first `prefix` bits of `addr` and `net` are equal (bounded: at most 16 bytes).
#[inline(always)]
fn prefix_eq<const N: usize>(addr: &[u8; N], net: &[u8; N], prefix: u8) -> bool {
    let mut i = 0;
    while i < N {
        let bits = (prefix as usize).saturating_sub(i * 8);
        if bits == 0 {
            return true;
        }
        let mask: u8 = if bits >= 8 { 0xff } else { 0xff << (8 - bits) };
        if (addr[i] ^ net[i]) & mask != 0 {
            return false;
        }
        i += 1;
    }
    true
}

/// An IPv4 source no real peer can have.
#[inline(always)]
pub fn is_bogus_v4(addr: &[u8; 4]) -> bool {
    let mut i = 0;
    while i < V4.len() {
        if prefix_eq(addr, &V4[i].0, V4[i].1) {
            return true;
        }
        i += 1;
    }
    false
}

/// The source of an IPv6 packet no real peer can have, IPv4-mapped sources included.
#[inline(always)]
pub fn is_bogus_v6_source(addr: &[u8; 16]) -> bool {
    if prefix_eq(addr, &V6_MAPPED.0, V6_MAPPED.1) {
        return true;
    }
    let mut i = 0;
    while i < V6.len() {
        if prefix_eq(addr, &V6[i].0, V6[i].1) {
            return true;
        }
        i += 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_edges() {
        for a in [
            [0, 0, 0, 0],
            [0, 255, 255, 255],
            [127, 0, 0, 1],
            [224, 0, 0, 1],
            [239, 255, 255, 255],
            [240, 0, 0, 0],
            [255, 255, 255, 255],
        ] {
            assert!(is_bogus_v4(&a), "{a:?}");
        }
        for a in [
            [1, 0, 0, 0],
            [126, 255, 255, 255],
            [128, 0, 0, 0],
            [223, 255, 255, 255],
            [10, 0, 0, 1],
            [169, 254, 1, 1],
        ] {
            assert!(!is_bogus_v4(&a), "{a:?}");
        }
    }

    #[test]
    fn v6_edges() {
        let mut a = [0u8; 16];
        assert!(is_bogus_v6_source(&a), "::");
        a[15] = 1;
        assert!(is_bogus_v6_source(&a), "::1");
        a[12] = 10;
        assert!(is_bogus_v6_source(&a), "::10.0.0.1 (IPv4-compatible)");
        a[10] = 0xff;
        a[11] = 0xff;
        assert!(is_bogus_v6_source(&a), "::ffff:10.0.0.1 (IPv4-mapped)");
        a[11] = 0xfe;
        assert!(!is_bogus_v6_source(&a), "::fffe:a00:1 is neither");
        let mut m = [0u8; 16];
        m[0] = 0xff;
        m[1] = 0x02;
        m[15] = 1;
        assert!(is_bogus_v6_source(&m), "ff02::1");
        m[0] = 0xfe;
        m[1] = 0x80;
        assert!(!is_bogus_v6_source(&m), "fe80::1 is link-local, not bogus");
        let doc = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];
        assert!(!is_bogus_v6_source(&doc));
    }
}
