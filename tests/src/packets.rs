//! Raw packet builders for data-plane tests: Ethernet (VLAN tags), IPv4 (options, fragments),
//! IPv6 (extension headers, fragments), TCP and UDP. Checksums are left zero: XDP never checks.
//! TCP flags, EtherTypes and protocol numbers are the XDP program's own, from
//! `portsentry-common` (`tcp_flags`, `ethertype`, `ipv6_ext`, `IpProto`).

use std::net::IpAddr;

use portsentry_common::{ethertype, ipv6_ext, IpProto};

/// An IPv6 extension header to insert before the transport header.
#[derive(Clone, Copy, Debug)]
pub enum Ext {
    HopByHop,
    Routing,
    DestOpts,
    /// Fragment header with this fragment offset (in 8-byte units) and more-fragments flag.
    Fragment {
        offset: u16,
        more: bool,
    },
    /// Authentication header (12 bytes of header plus 4 of ICV).
    Ah,
}

#[derive(Clone, Copy, Debug)]
pub enum Transport {
    Tcp {
        dst_port: u16,
        flags: u8,
    },
    Udp {
        dst_port: u16,
    },
    /// Any other protocol number with a few payload bytes.
    Other(u8),
}

/// A packet description; `build()` gives the bytes.
#[derive(Clone, Debug)]
pub struct Packet {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// Ethernet source (the neighbour the frame came from).
    pub src_mac: [u8; 6],
    pub vlans: Vec<(u16, u16)>,
    pub ipv4_options: Vec<u8>,
    /// IPv4 fragment offset (8-byte units) and MF flag.
    pub ipv4_frag: Option<(u16, bool)>,
    pub ipv6_ext: Vec<Ext>,
    pub transport: Transport,
    /// TCP sequence and acknowledgement numbers (default 1 and 0) and options (default none,
    /// padded to a multiple of 4 bytes with End-of-Options).
    pub tcp_seq: u32,
    pub tcp_ack: u32,
    pub tcp_options: Vec<u8>,
    /// Keep only this many bytes of the transport header and payload (a tiny fragment); the
    /// IP length fields say so too.
    pub l4_len: Option<usize>,
    /// Bytes of payload after the transport header (zeros; the UDP length counts them).
    pub payload: usize,
    /// Pad the frame with zeros to this length (Ethernet's 60-byte minimum), after the IP
    /// packet: the IP length fields do not count the padding.
    pub pad_to: usize,
}

/// The source port of every TCP and UDP packet built here.
pub const SRC_PORT: u16 = 40000;

impl Packet {
    pub fn tcp(src: &str, dst_port: u16, flags: u8) -> Self {
        Self::new(src, Transport::Tcp { dst_port, flags })
    }

    pub fn udp(src: &str, dst_port: u16) -> Self {
        Self::new(src, Transport::Udp { dst_port })
    }

    pub fn new(src: &str, transport: Transport) -> Self {
        let src: IpAddr = src.parse().expect("test address");
        let dst: IpAddr = if src.is_ipv4() {
            "192.0.2.1".parse()
        } else {
            "2001:db8::1".parse()
        }
        .expect("literal");
        Self {
            src,
            dst,
            src_mac: [0x02, 0, 0, 0, 0, 0x02],
            vlans: Vec::new(),
            ipv4_options: Vec::new(),
            ipv4_frag: None,
            ipv6_ext: Vec::new(),
            transport,
            tcp_seq: 1,
            tcp_ack: 0,
            tcp_options: Vec::new(),
            l4_len: None,
            payload: 0,
            pad_to: 0,
        }
    }

    /// Keeps only the first `len` bytes of the transport header (and payload), with IP
    /// lengths to match: a first fragment too short for its transport header.
    pub fn l4_len(mut self, len: usize) -> Self {
        self.l4_len = Some(len);
        self
    }

    /// `len` bytes of payload after the transport header.
    pub fn payload(mut self, len: usize) -> Self {
        self.payload = len;
        self
    }

    /// Pads the frame with zeros to `len` bytes, as a NIC pads short frames to 60.
    pub fn pad_to(mut self, len: usize) -> Self {
        self.pad_to = len;
        self
    }

    /// The probed address (default 192.0.2.1 or 2001:db8::1).
    pub fn to(mut self, dst: IpAddr) -> Self {
        self.dst = dst;
        self
    }

    /// The Ethernet source address.
    pub fn from_mac(mut self, mac: [u8; 6]) -> Self {
        self.src_mac = mac;
        self
    }

    /// TCP sequence number.
    pub fn seq(mut self, seq: u32) -> Self {
        self.tcp_seq = seq;
        self
    }

    /// TCP acknowledgement number.
    pub fn ack(mut self, ack: u32) -> Self {
        self.tcp_ack = ack;
        self
    }

    /// TCP options, padded to a multiple of 4 bytes with End-of-Options.
    pub fn tcp_options(mut self, opts: &[u8]) -> Self {
        self.tcp_options = opts.to_vec();
        while !self.tcp_options.len().is_multiple_of(4) {
            self.tcp_options.push(0);
        }
        self
    }

    /// Adds a VLAN tag (outermost first): `ethertype::VLAN` (802.1Q) or `ethertype::QINQ`
    /// (802.1ad).
    pub fn vlan(mut self, tpid: u16, id: u16) -> Self {
        self.vlans.push((tpid, id));
        self
    }

    /// IPv4 options, padded to a multiple of 4 bytes with End-of-Options.
    pub fn ipv4_options(mut self, opts: &[u8]) -> Self {
        self.ipv4_options = opts.to_vec();
        while !self.ipv4_options.len().is_multiple_of(4) {
            self.ipv4_options.push(0);
        }
        self
    }

    pub fn ipv4_fragment(mut self, offset: u16, more: bool) -> Self {
        self.ipv4_frag = Some((offset, more));
        self
    }

    pub fn ext(mut self, ext: Ext) -> Self {
        self.ipv6_ext.push(ext);
        self
    }

    pub fn build(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(128);
        p.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01]); // dst MAC
        p.extend_from_slice(&self.src_mac);
        for (tpid, id) in &self.vlans {
            p.extend_from_slice(&tpid.to_be_bytes());
            p.extend_from_slice(&(id & 0x0fff).to_be_bytes());
        }
        let (l4_proto, mut l4) = self.transport_bytes();
        if let Some(len) = self.l4_len {
            l4.truncate(len);
        }
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                p.extend_from_slice(&ethertype::IPV4.to_be_bytes());
                let ihl = 5 + self.ipv4_options.len() / 4;
                let total = (ihl * 4 + l4.len()) as u16;
                let frag = match self.ipv4_frag {
                    Some((off, more)) => (off & 0x1fff) | if more { 0x2000 } else { 0 },
                    None => 0x4000, // DF
                };
                p.push(0x40 | ihl as u8);
                p.push(0);
                p.extend_from_slice(&total.to_be_bytes());
                p.extend_from_slice(&[0x12, 0x34]);
                p.extend_from_slice(&frag.to_be_bytes());
                p.extend_from_slice(&[64, l4_proto, 0, 0]);
                p.extend_from_slice(&s.octets());
                p.extend_from_slice(&d.octets());
                p.extend_from_slice(&self.ipv4_options);
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                p.extend_from_slice(&ethertype::IPV6.to_be_bytes());
                let exts = self.ext_bytes(l4_proto);
                let first = self.ipv6_ext.first().map(ext_proto).unwrap_or(l4_proto);
                let payload = (exts.len() + l4.len()) as u16;
                p.extend_from_slice(&[0x60, 0, 0, 0]);
                p.extend_from_slice(&payload.to_be_bytes());
                p.extend_from_slice(&[first, 64]);
                p.extend_from_slice(&s.octets());
                p.extend_from_slice(&d.octets());
                p.extend_from_slice(&exts);
            }
            _ => panic!("source and destination must be the same family"),
        }
        p.extend_from_slice(&l4);
        if p.len() < self.pad_to {
            p.resize(self.pad_to, 0);
        }
        p
    }

    fn transport_bytes(&self) -> (u8, Vec<u8>) {
        match self.transport {
            Transport::Tcp { dst_port, flags } => {
                let mut t = vec![0u8; 20];
                t[0..2].copy_from_slice(&SRC_PORT.to_be_bytes());
                t[2..4].copy_from_slice(&dst_port.to_be_bytes());
                t[4..8].copy_from_slice(&self.tcp_seq.to_be_bytes());
                t[8..12].copy_from_slice(&self.tcp_ack.to_be_bytes());
                t[12] = ((20 + self.tcp_options.len()) as u8 / 4) << 4;
                t[13] = flags;
                t[14..16].copy_from_slice(&1024u16.to_be_bytes());
                t.extend_from_slice(&self.tcp_options);
                t.resize(t.len() + self.payload, 0);
                (IpProto::Tcp as u8, t)
            }
            Transport::Udp { dst_port } => {
                let mut u = vec![0u8; 12 + self.payload];
                let len = u.len() as u16;
                u[0..2].copy_from_slice(&SRC_PORT.to_be_bytes());
                u[2..4].copy_from_slice(&dst_port.to_be_bytes());
                u[4..6].copy_from_slice(&len.to_be_bytes());
                (IpProto::Udp as u8, u)
            }
            Transport::Other(proto) => (proto, vec![8, 0, 0, 0, 0, 0, 0, 0]),
        }
    }

    fn ext_bytes(&self, l4_proto: u8) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, ext) in self.ipv6_ext.iter().enumerate() {
            let next = self.ipv6_ext.get(i + 1).map(ext_proto).unwrap_or(l4_proto);
            match ext {
                Ext::HopByHop | Ext::DestOpts => {
                    // 16 bytes (len field 1): next, len, PadN option filling the rest.
                    out.extend_from_slice(&[next, 1, 1, 12]);
                    out.extend_from_slice(&[0; 12]);
                }
                Ext::Routing => {
                    // Type 0 header with no addresses left, 8 bytes.
                    out.extend_from_slice(&[next, 0, 0, 0, 0, 0, 0, 0]);
                }
                Ext::Fragment { offset, more } => {
                    let fo = (offset << 3) | u16::from(*more);
                    out.extend_from_slice(&[next, 0]);
                    out.extend_from_slice(&fo.to_be_bytes());
                    out.extend_from_slice(&[0, 0, 0, 1]);
                }
                Ext::Ah => {
                    // Payload length 2 → (2 + 2) * 4 = 16 bytes.
                    out.extend_from_slice(&[next, 2, 0, 0]);
                    out.extend_from_slice(&[0, 0, 1, 0]); // SPI
                    out.extend_from_slice(&[0, 0, 0, 1]); // sequence
                    out.extend_from_slice(&[0; 4]); // ICV
                }
            }
        }
        out
    }
}

fn ext_proto(ext: &Ext) -> u8 {
    match ext {
        Ext::HopByHop => ipv6_ext::HOP_BY_HOP,
        Ext::Routing => ipv6_ext::ROUTING,
        Ext::Fragment { .. } => ipv6_ext::FRAGMENT,
        Ext::Ah => ipv6_ext::AH,
        Ext::DestOpts => ipv6_ext::DEST_OPTS,
    }
}

/// An ARP frame over Ethernet (`op` 1 request, 2 reply) from `sender_mac`, claiming
/// `sender_ip`, about `target_ip`, to `dst_mac` (broadcast for a request).
pub fn arp(
    op: u16,
    dst_mac: [u8; 6],
    sender_mac: [u8; 6],
    sender_ip: std::net::Ipv4Addr,
    target_ip: std::net::Ipv4Addr,
) -> Vec<u8> {
    let mut p = Vec::with_capacity(60);
    p.extend_from_slice(&dst_mac);
    p.extend_from_slice(&sender_mac);
    p.extend_from_slice(&0x0806u16.to_be_bytes());
    p.extend_from_slice(&[0, 1, 0x08, 0, 6, 4]);
    p.extend_from_slice(&op.to_be_bytes());
    p.extend_from_slice(&sender_mac);
    p.extend_from_slice(&sender_ip.octets());
    p.extend_from_slice(&[0; 6]);
    p.extend_from_slice(&target_ip.octets());
    p.resize(60, 0);
    p
}

/// An IPv6 neighbour solicitation for `target` from `src` (claimed) with a source
/// link-layer address option of `src_mac`, to `target`'s solicited-node multicast group; hop
/// limit 255 and a correct ICMPv6 checksum, so the receiving stack accepts it.
pub fn neighbour_solicitation(
    src_mac: [u8; 6],
    src: std::net::Ipv6Addr,
    target: std::net::Ipv6Addr,
) -> Vec<u8> {
    let t = target.octets();
    let group = std::net::Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, t[13], t[14], t[15],
    ]);
    let mut icmp = vec![135u8, 0, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&t);
    icmp.extend_from_slice(&[1, 1]);
    icmp.extend_from_slice(&src_mac);
    // Checksum over the IPv6 pseudo-header and the message.
    let mut sum: u32 = 0;
    let mut add = |bytes: &[u8]| {
        for pair in bytes.chunks(2) {
            let hi = u32::from(pair[0]) << 8;
            sum += hi | pair.get(1).map_or(0, |b| u32::from(*b));
        }
    };
    add(&src.octets());
    add(&group.octets());
    add(&(icmp.len() as u32).to_be_bytes());
    add(&[0, 0, 0, 58]);
    add(&icmp);
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let check = !(sum as u16);
    icmp[2..4].copy_from_slice(&check.to_be_bytes());
    let g = group.octets();
    let mut p = vec![0x33, 0x33, g[12], g[13], g[14], g[15]];
    p.extend_from_slice(&src_mac);
    p.extend_from_slice(&ethertype::IPV6.to_be_bytes());
    p.extend_from_slice(&[0x60, 0, 0, 0]);
    p.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    p.extend_from_slice(&[58, 255]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&g);
    p.extend_from_slice(&icmp);
    p
}
