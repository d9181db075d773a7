//! Header constants the XDP program parses and the tests build packets with, defined once.
//! IP protocol numbers of the transports the program acts on are [`crate::IpProto`].

/// TCP flag bits, byte 13 of the TCP header.
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    /// ECN-Echo.
    pub const ECE: u8 = 0x40;
    /// Congestion Window Reduced.
    pub const CWR: u8 = 0x80;
}

/// EtherType values the parser follows.
pub mod ethertype {
    pub const IPV4: u16 = 0x0800;
    pub const IPV6: u16 = 0x86dd;
    /// 802.1Q VLAN tag.
    pub const VLAN: u16 = 0x8100;
    /// 802.1ad (QinQ) outer VLAN tag.
    pub const QINQ: u16 = 0x88a8;
}

/// IP protocol numbers (IPv6 next-header values) of the extension headers the parser walks.
pub mod ipv6_ext {
    pub const HOP_BY_HOP: u8 = 0;
    pub const ROUTING: u8 = 43;
    pub const FRAGMENT: u8 = 44;
    /// Authentication header: its length counts 4-octet units, not 8.
    pub const AH: u8 = 51;
    pub const DEST_OPTS: u8 = 60;

    /// Extension headers the XDP program walks before the transport header; a longer chain is
    /// dropped and counted (`ext_chains_dropped`). Real traffic carries a few at most (RFC 8200
    /// allows each kind once, destination options twice), so 16 leaves room; networks widely drop long chains
    /// (RFC 9098).
    pub const MAX_CHAIN: usize = 16;
}

/// Address families as the kernel numbers them (`bpf_fib_lookup`, socket contexts).
pub mod address_family {
    pub const INET: u8 = 2;
    pub const INET6: u8 = 10;
}
