//! Learned peers (PS_PEERS, written here as the cgroup programs would): a trap SYN gets a SYN
//! cookie (XDP_TX) instead of a ban, the ACK that returns the cookie counts as a probe, and
//! other trap probes from peers are reported only. Strangers keep today's behaviour.

use std::{net::IpAddr, time::Duration};

use portsentry::{
    config::settings::Mode,
    detect::events::{EventKind, Protocol},
};
use portsentry_common::tcp_flags::{CWR, ECE};
use portsentry_tests::{clock::before_boot, lab::RoutedNs, packets::SRC_PORT, xdp::XDP_TX};

use super::*;

const TRAP: u16 = 111;
const UDP_TRAP: u16 = 54321;
const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
/// A SYN's usual option: MSS 1460.
const MSS_1460: [u8; 4] = [2, 4, 0x05, 0xb4];

/// Where a test body runs: inside a routed lab namespace (`RoutedNs`), so that the SYN
/// cookie finds the route back to the peer (default routes via the gateway) and its
/// neighbour.
#[derive(Clone, Copy)]
struct Net {
    ifindex: u32,
    /// The gateway's MAC: the neighbour every peer here is routed through.
    gateway: [u8; 6],
    /// The protected interface's MAC.
    own: [u8; 6],
}

impl Net {
    /// `x`, receiving on the lab's interface.
    fn on(&self, mut x: TestXdp) -> TestXdp {
        x.ingress = Some(self.ifindex);
        x
    }

    fn challenged(&self, tcp: &str, udp: &str) -> TestXdp {
        self.on(TestXdp::with_peer_challenge(&settings(tcp, udp)))
    }
}

/// Runs `body` in a fresh routed lab namespace; returns what it returns.
fn in_lab<T: Send + 'static>(body: impl FnOnce(Net) -> T + Send + 'static) -> T {
    let ns = RoutedNs::new().expect("routed lab namespace");
    let net = Net {
        ifindex: ns.ifindex,
        gateway: ns.gateway_mac,
        own: ns.own_mac,
    };
    ns.run(move |_| body(net))
}

/// The ones' complement sum of `bytes` (big-endian words) plus `sum`, folded.
fn ones_sum(bytes: &[u8], mut sum: u32) -> u16 {
    for w in bytes.chunks(2) {
        sum += u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// A SYN-ACK as the tests read it back.
struct SynAck {
    cookie: u32,
    /// The MSS it advertises (this host's, from the route's MTU).
    mss: u16,
    window: u16,
    /// Its options after the MSS.
    options: Vec<u8>,
}

/// Checks that `out` is the SYN-ACK answering `syn`, field by field, both checksums
/// included: to the route's neighbour (the gateway) from this host's interface, whatever
/// MAC the SYN came from.
fn check_synack(net: &Net, syn: &Packet, out: &[u8]) -> SynAck {
    let input = syn.build();
    assert_eq!(
        &out[0..6],
        &net.gateway,
        "destination MAC is the route's neighbour, not the SYN's source"
    );
    assert_eq!(&out[6..12], &net.own, "source MAC is this host's interface");
    let l3 = 14 + 4 * syn.vlans.len();
    assert_eq!(&out[12..l3], &input[12..l3], "VLAN tags and EtherType kept");
    let tcp_len = usize::from(out[l3 + if syn.src.is_ipv4() { 20 } else { 40 } + 12] >> 4) * 4;
    let (ip_len, pseudo) = match (syn.src, syn.dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            let ip = &out[l3..l3 + 20];
            assert_eq!(ip[0], 0x45, "IPv4 without options");
            assert_eq!(
                usize::from(u16::from_be_bytes([ip[2], ip[3]])),
                20 + tcp_len,
                "total length"
            );
            assert_eq!((ip[8], ip[9]), (64, 6), "TTL and protocol");
            assert_eq!(&ip[12..16], &dst.octets(), "from the SYN's destination");
            assert_eq!(&ip[16..20], &src.octets(), "to the SYN's source");
            assert_eq!(ones_sum(ip, 0), 0xffff, "IPv4 header checksum");
            let mut pseudo = Vec::new();
            pseudo.extend_from_slice(&ip[12..20]);
            pseudo.extend_from_slice(&[0, 6, 0, tcp_len as u8]);
            (20, pseudo)
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            let ip = &out[l3..l3 + 40];
            assert_eq!(ip[0] >> 4, 6);
            assert_eq!(
                usize::from(u16::from_be_bytes([ip[4], ip[5]])),
                tcp_len,
                "payload length"
            );
            assert_eq!(
                (ip[6], ip[7]),
                (6, 64),
                "TCP right after the header, hop limit"
            );
            assert_eq!(&ip[8..24], &dst.octets(), "from the SYN's destination");
            assert_eq!(&ip[24..40], &src.octets(), "to the SYN's source");
            let mut pseudo = Vec::new();
            pseudo.extend_from_slice(&ip[8..40]);
            pseudo.extend_from_slice(&[0, 0, 0, tcp_len as u8, 0, 0, 0, 6]);
            (40, pseudo)
        }
        _ => unreachable!(),
    };
    assert_eq!(out.len(), l3 + ip_len + tcp_len, "frame cut to the SYN-ACK");
    let tcp = &out[l3 + ip_len..];
    let be16 = |i: usize| u16::from_be_bytes([tcp[i], tcp[i + 1]]);
    let be32 = |i: usize| u32::from_be_bytes([tcp[i], tcp[i + 1], tcp[i + 2], tcp[i + 3]]);
    assert_eq!((be16(0), be16(2)), (TRAP, SRC_PORT), "ports swapped");
    assert_eq!(be32(8), syn.tcp_seq.wrapping_add(1), "acknowledges the SYN");
    assert_eq!(tcp[13], SYN | ACK, "flags");
    assert_eq!((tcp[20], tcp[21]), (2, 4), "the MSS option first");
    assert_eq!(
        ones_sum(tcp, u32::from(ones_sum(&pseudo, 0))),
        0xffff,
        "TCP checksum over the pseudo-header"
    );
    SynAck {
        cookie: be32(4),
        mss: be16(22),
        window: be16(14),
        options: tcp[24..tcp_len].to_vec(),
    }
}

/// The ACK a peer's stack sends on the SYN-ACK: sequence number + 1, cookie + 1.
fn completing_ack(syn: &Packet, cookie: u32) -> Packet {
    let mut ack = syn.clone();
    ack.transport = portsentry_tests::packets::Transport::Tcp {
        dst_port: TRAP,
        flags: ACK,
    };
    ack.tcp_options = Vec::new();
    ack.seq(syn.tcp_seq.wrapping_add(1))
        .ack(cookie.wrapping_add(1))
}

#[test]
fn a_learned_peers_trap_syn_gets_a_syn_cookie_and_only_the_completed_handshake_bans() {
    in_lab(|net| the_completed_handshake_bans(&net));
}

fn the_completed_handshake_bans(net: &Net) {
    // This host's own MSS on a 1500-byte link, whatever the SYN offered.
    for (peer, want_mss) in [("10.0.7.2", 1460), ("2001:db8:7::2", 1440)] {
        let mut x = net.challenged("111", "");
        x.add_peer(peer, MINUTE);
        let syn = Packet::tcp(peer, TRAP, SYN)
            .seq(7_000)
            .tcp_options(&MSS_1460);

        // The SYN (what a forger can send) is answered, not counted, never a ban.
        let (verdict, out) = x.run_out(&syn.build());
        assert_eq!(verdict, XDP_TX, "{peer}: SYN answered in place");
        let SynAck { cookie, mss, .. } = check_synack(net, &syn, &out);
        assert_eq!(mss, want_mss, "{peer}: this host's MSS");
        assert!(!x.is_banned(peer), "{peer}: a SYN alone never bans a peer");
        assert!(x.dp.hits(peer.parse().unwrap()).unwrap().is_none());
        let ev = x.events();
        assert_eq!(ev.len(), 1, "{ev:?}");
        assert_eq!(
            (ev[0].kind, ev[0].scan, ev[0].src.to_string()),
            (EventKind::PeerProbe, ScanType::TcpSyn, peer.to_owned())
        );

        // An ACK without our cookie passes (the stack answers it with a RST), uncounted. (Not
        // cookie + 1: the cookie's low bits are hash + MSS index, as in the kernel's own
        // syncookies, so a neighbour of the real cookie may decode to another valid index.
        // A forger does not know the real one.)
        let wrong = completing_ack(&syn, cookie.wrapping_add(0x1000));
        assert_eq!(x.run(&wrong.build()), XDP_PASS, "{peer}: wrong cookie");
        let stale_seq = completing_ack(&syn, cookie).seq(syn.tcp_seq.wrapping_add(9));
        assert_eq!(
            x.run(&stale_seq.build()),
            XDP_PASS,
            "{peer}: wrong sequence"
        );
        assert!(!x.is_banned(peer));
        assert!(x.events().is_empty());

        // The ACK that returns the cookie: only the real peer saw the SYN-ACK. Banned.
        let ack = completing_ack(&syn, cookie);
        assert_eq!(x.run(&ack.build()), XDP_DROP, "{peer}: handshake completed");
        let ban = x.dp.ban(peer.parse().unwrap()).unwrap().expect("banned");
        assert_eq!(
            (ban.port, ban.proto, ban.scan_type, ban.origin),
            (
                TRAP,
                IpProto::Tcp as u8,
                ScanType::TcpSyn as u8,
                BanOrigin::Detected as u8
            )
        );
        let ev = x.events();
        assert_eq!(ev.len(), 1, "{ev:?}");
        assert_eq!(ev[0].kind, EventKind::Ban);
        assert!(ev[0].confirmed && ev[0].dropped, "{:?}", ev[0]);

        let s = x.stats();
        assert_eq!(
            [
                Stat::PeerProbes,
                Stat::CookiesSent,
                Stat::CookiesConfirmed,
                Stat::ProbesSyn,
                Stat::Bans,
                Stat::Passed,
                Stat::Dropped
            ]
            .map(|st| s.get(st)),
            [1, 1, 1, 1, 1, 2, 1],
            "{peer}"
        );
        assert_eq!(s.packets(), 4, "SYN (answered) + 2 passed + 1 dropped");
    }
}

#[test]
fn syns_of_every_shape_get_a_valid_cookie() {
    in_lab(|net| every_shape(&net));
}

fn every_shape(net: &Net) {
    use portsentry_tests::packets::Ext;
    let shapes: Vec<(&str, Packet)> = vec![
        // No options: the frame grows by the MSS option.
        ("v4 no options", Packet::tcp("10.0.8.1", TRAP, SYN)),
        ("v6 no options", Packet::tcp("2001:db8:8::1", TRAP, SYN)),
        // Many options (what Linux sends): the frame shrinks.
        (
            "v4 linux options",
            Packet::tcp("10.0.8.2", TRAP, SYN).tcp_options(&[
                2, 4, 5, 180, 4, 2, 8, 10, 0, 1, 2, 3, 0, 0, 0, 0, 1, 3, 3, 7,
            ]),
        ),
        (
            "v4 IP options",
            Packet::tcp("10.0.8.3", TRAP, SYN)
                .ipv4_options(&[7, 7, 4, 0, 0, 0, 0])
                .tcp_options(&MSS_1460),
        ),
        (
            "v4 802.1Q",
            Packet::tcp("10.0.8.4", TRAP, SYN)
                .vlan(VLAN, 7)
                .tcp_options(&MSS_1460),
        ),
        (
            "v6 QinQ",
            Packet::tcp("2001:db8:8::4", TRAP, SYN)
                .vlan(QINQ, 5)
                .vlan(VLAN, 6)
                .tcp_options(&MSS_1460),
        ),
        (
            "ECN SYN",
            Packet::tcp("10.0.8.6", TRAP, SYN | ECE | CWR).tcp_options(&MSS_1460),
        ),
    ];
    for (name, syn) in shapes {
        let mut x = net.challenged("111", "");
        let peer = syn.src.to_string();
        x.add_peer(&peer, MINUTE);
        let (verdict, out) = x.run_out(&syn.build());
        assert_eq!(verdict, XDP_TX, "{name}");
        let SynAck { cookie, mss, .. } = check_synack(net, &syn, &out);
        assert!(mss >= 536, "{name}: MSS {mss}");
        assert_eq!(
            x.run(&completing_ack(&syn, cookie).build()),
            XDP_DROP,
            "{name}: the cookie validates"
        );
        assert!(x.is_banned(&peer), "{name}");
    }

    // IPv6 extension headers: no cookie (the cookie code finds headers on its own, see
    // challenge.rs); the SYN is reported and passes, and bans nobody.
    let mut x = net.challenged("111", "");
    let peer = "2001:db8:8::5";
    x.add_peer(peer, MINUTE);
    let syn = Packet::tcp(peer, TRAP, SYN)
        .ext(Ext::DestOpts)
        .tcp_options(&MSS_1460);
    assert_eq!(x.run(&syn.build()), XDP_PASS);
    assert!(!x.is_banned(peer));
    assert_eq!(x.events()[0].kind, EventKind::PeerProbe);
}

#[test]
fn a_learned_peers_udp_and_other_tcp_probes_are_reported_never_banned() {
    in_lab(|net| udp_and_other(&net));
}

fn udp_and_other(net: &Net) {
    let mut x = net.challenged("111", "54321");
    for peer in ["10.0.9.1", "2001:db8:9::1"] {
        x.add_peer(peer, MINUTE);
        assert_eq!(x.run(&Packet::udp(peer, UDP_TRAP).build()), XDP_PASS);
        assert_eq!(x.run(&Packet::tcp(peer, TRAP, FIN).build()), XDP_PASS);
        assert_eq!(x.run(&Packet::tcp(peer, TRAP, 0).build()), XDP_PASS);
        assert!(!x.is_banned(peer), "{peer}");
        assert!(x.dp.hits(peer.parse().unwrap()).unwrap().is_none());
    }
    let ev = x.events();
    let seen: Vec<(EventKind, Protocol, ScanType)> =
        ev.iter().map(|e| (e.kind, e.protocol, e.scan)).collect();
    let round = [
        (EventKind::PeerProbe, Protocol::Udp, ScanType::Udp),
        (EventKind::PeerProbe, Protocol::Tcp, ScanType::TcpFin),
        (EventKind::PeerProbe, Protocol::Tcp, ScanType::TcpNull),
    ];
    assert_eq!(seen, [round, round].concat());
    let s = x.stats();
    assert_eq!(
        (
            s.get(Stat::PeerProbes),
            s.get(Stat::CookiesSent),
            s.get(Stat::Bans)
        ),
        (6, 0, 0)
    );
}

#[test]
fn strangers_expired_peers_and_runs_without_challenge_ban_on_the_first_probe() {
    in_lab(|net| strangers(&net));
}

fn strangers(net: &Net) {
    let mut s = settings("111", "54321");
    // A memory longer than this machine has been up, so "older than peer_memory" lies
    // before the boot on every machine (a freshly booted one is the hard case).
    s.peer_memory = Some(before_boot(HOUR));
    let mut x = net.on(TestXdp::with_peer_challenge(&s));
    // A stranger: today's behaviour.
    assert_eq!(
        x.run(&Packet::tcp("10.0.10.1", TRAP, SYN).build()),
        XDP_DROP
    );
    assert_eq!(x.run(&Packet::udp("10.0.10.2", UDP_TRAP).build()), XDP_DROP);
    // A stranger's ACK to a trap port is no probe, challenge or not.
    assert_eq!(
        x.run(&Packet::tcp("10.0.10.3", TRAP, ACK).build()),
        XDP_PASS
    );
    assert!(!x.is_banned("10.0.10.3"));
    // A peer not heard from for longer than peer_memory is a stranger again, also when it
    // was last seen before this boot (restored from peers.json)...
    x.add_peer("10.0.10.4", before_boot(2 * HOUR));
    assert_eq!(
        x.run(&Packet::tcp("10.0.10.4", TRAP, SYN).build()),
        XDP_DROP
    );
    for a in ["10.0.10.1", "10.0.10.2", "10.0.10.4"] {
        assert!(x.is_banned(a), "{a}");
    }
    // ... and one seen before this boot but within peer_memory is still a peer.
    x.add_peer("10.0.10.9", before_boot(HOUR / 2));
    assert_eq!(x.run(&Packet::tcp("10.0.10.9", TRAP, SYN).build()), XDP_TX);
    assert!(!x.is_banned("10.0.10.9"));

    // peer_memory "never": a peer is remembered however old.
    s.peer_memory = None;
    let mut x = net.on(TestXdp::with_peer_challenge(&s));
    x.add_peer("10.0.10.5", Duration::from_secs(400 * 86_400));
    assert_eq!(x.run(&Packet::tcp("10.0.10.5", TRAP, SYN).build()), XDP_TX);

    // Without the challenge (no peer-learning programs), a peer bans like anyone.
    let mut x = TestXdp::load(&settings("111", "54321"));
    x.add_peer("10.0.10.6", MINUTE);
    assert_eq!(
        x.run(&Packet::tcp("10.0.10.6", TRAP, SYN).build()),
        XDP_DROP
    );
    assert!(x.is_banned("10.0.10.6"));

    // A kernel without the SYN cookie helpers gets the program without the peer branch
    // (the daemon then learns no peers): it verifies, and even a stray PEER_CHALLENGE flag
    // changes nothing.
    let mut x = TestXdp::load_compat(&settings("111", "54321"));
    assert!(!x.dp.syn_cookies());
    x.extras.peer_challenge = true;
    x.configure(&settings("111", "54321"), &[], &[]);
    x.add_peer("10.0.10.7", MINUTE);
    assert_eq!(
        x.run(&Packet::tcp("10.0.10.7", TRAP, SYN).build()),
        XDP_DROP
    );
    x.add_peer("10.0.10.8", MINUTE);
    assert_eq!(x.run(&Packet::udp("10.0.10.8", UDP_TRAP).build()), XDP_DROP);
}

#[test]
fn allowlist_block_switches_trigger_and_detect_mode_apply_to_peers_too() {
    in_lab(|net| switches(&net));
}

fn switches(net: &Net) {
    // Allowlisted: never counted, never challenged.
    let mut x = TestXdp::load_with(
        &settings("111", ""),
        &["10.0.11.0/24".parse().unwrap()],
        &[],
        None,
    );
    x.extras.peer_challenge = true;
    x.configure(
        &settings("111", ""),
        &["10.0.11.0/24".parse().unwrap()],
        &[],
    );
    x.add_peer("10.0.11.1", MINUTE);
    assert_eq!(
        x.run(&Packet::tcp("10.0.11.1", TRAP, SYN).build()),
        XDP_PASS
    );
    assert_eq!(x.stats().get(Stat::Allowlisted), 1);

    // BLOCK_TCP off: nothing could ban, so nothing is challenged; the probe is reported.
    let mut s = settings("111", "");
    s.block_tcp = false;
    let mut x = TestXdp::with_peer_challenge(&s);
    x.add_peer("10.0.11.2", MINUTE);
    assert_eq!(
        x.run(&Packet::tcp("10.0.11.2", TRAP, SYN).build()),
        XDP_PASS
    );
    assert_eq!(x.events()[0].kind, EventKind::Probe);

    // Trigger 3: each completed handshake is one probe; the third bans.
    let mut s = settings("111", "");
    s.scan_trigger = 3;
    let mut x = net.on(TestXdp::with_peer_challenge(&s));
    let peer = "10.0.11.3";
    x.add_peer(peer, MINUTE);
    for round in 1..=3u32 {
        let syn = Packet::tcp(peer, TRAP, SYN)
            .seq(round * 1000)
            .tcp_options(&MSS_1460);
        let (verdict, out) = x.run_out(&syn.build());
        assert_eq!(verdict, XDP_TX);
        let SynAck { cookie, .. } = check_synack(net, &syn, &out);
        let want = if round < 3 { XDP_PASS } else { XDP_DROP };
        assert_eq!(
            x.run(&completing_ack(&syn, cookie).build()),
            want,
            "{round}"
        );
    }
    let counted: Vec<(EventKind, u64, bool)> = x
        .events()
        .iter()
        .filter(|e| e.kind != EventKind::PeerProbe)
        .map(|e| (e.kind, e.count, e.confirmed))
        .collect();
    assert_eq!(
        counted,
        [
            (EventKind::Probe, 1, true),
            (EventKind::Probe, 2, true),
            (EventKind::Ban, 3, true)
        ]
    );

    // Detect mode: the completed handshake makes a shadow ban and passes.
    let mut s = settings("111", "");
    s.mode = Mode::Detect;
    let mut x = net.on(TestXdp::with_peer_challenge(&s));
    x.add_peer(peer, MINUTE);
    let syn = Packet::tcp(peer, TRAP, SYN).tcp_options(&MSS_1460);
    let (verdict, out) = x.run_out(&syn.build());
    assert_eq!(verdict, XDP_TX);
    let SynAck { cookie, .. } = check_synack(net, &syn, &out);
    assert_eq!(x.run(&completing_ack(&syn, cookie).build()), XDP_PASS);
    let ban =
        x.dp.ban(peer.parse().unwrap())
            .unwrap()
            .expect("shadow ban");
    assert_ne!(ban.flags & portsentry_common::ban_flags::SHADOW, 0);
}

/// A stranger's MAC on the lab link (neither the gateway's nor this host's).
const FORGER_MAC: [u8; 6] = [0x02, 0xde, 0xad, 0xbe, 0xef, 0x01];

/// The SYN-ACK goes to the neighbour the route back to the claimed source names, never back
/// to the MAC the SYN came from, so a LAN forger writing a peer's address never sees the
/// cookie; where the route has no resolved neighbour, leaves by another interface, or
/// XDP_TX cannot deliver on the interface, no cookie goes out (the SYN passes, reported).
/// A handshake completed on a cookie still gets the path check: its ACK must come from the
/// route's neighbour.
#[test]
fn the_cookie_goes_to_the_routes_neighbour_and_its_ack_must_come_from_there() {
    let ns = RoutedNs::new().expect("routed lab namespace");
    let p = ns.lab.protected.name.clone();
    // A second interface: 10.99.0.0/24 is routed out of it, with a resolved neighbour.
    for args in [
        vec![
            "link", "add", "other0", "type", "veth", "peer", "name", "other1",
        ],
        vec!["addr", "add", "10.99.0.1/24", "dev", "other0"],
        vec!["link", "set", "other0", "up"],
        vec!["link", "set", "other1", "up"],
        vec![
            "neigh",
            "replace",
            "10.99.0.5",
            "lladdr",
            "02:00:00:00:99:05",
            "dev",
            "other0",
            "nud",
            "permanent",
        ],
    ] {
        let mut full = vec!["-n", p.as_str()];
        full.extend(args);
        portsentry_tests::lab::ip(&full).expect("ip");
    }
    let net = Net {
        ifindex: ns.ifindex,
        gateway: ns.gateway_mac,
        own: ns.own_mac,
    };
    ns.run(move |_| {
        let mut s = settings("111", "");
        s.path_check = true;
        let mut x = net.on(TestXdp::with_peer_challenge(&s));
        let peer = "203.0.113.7";
        x.add_peer(peer, MINUTE);

        // A forger on the link sends the peer's SYN from its own MAC: the SYN-ACK goes to
        // the gateway (the route's neighbour), not back to the forger.
        let syn = Packet::tcp(peer, TRAP, SYN)
            .from_mac(FORGER_MAC)
            .tcp_options(&MSS_1460);
        let (verdict, out) = x.run_out(&syn.build());
        assert_eq!(verdict, XDP_TX);
        let SynAck { cookie, .. } = check_synack(&net, &syn, &out);
        x.events();

        // Had the forger got the cookie anyway (a hub, a mirror port), its ACK from its own
        // MAC is refused by the path check: no ban.
        let forged_ack = completing_ack(&syn, cookie).from_mac(FORGER_MAC);
        assert_eq!(x.run(&forged_ack.build()), XDP_PASS, "forged completion");
        assert!(!x.is_banned(peer), "a forged completion banned the peer");
        let st = x.stats();
        assert_eq!(
            (st.get(Stat::CookiesConfirmed), st.get(Stat::Spoofed)),
            (1, 1)
        );
        // The same handshake completed through the gateway (the real peer) bans.
        let real_ack = completing_ack(&syn, cookie).from_mac(net.gateway);
        assert_eq!(x.run(&real_ack.build()), XDP_DROP, "real completion");
        assert!(x.is_banned(peer));
        let bans = x.events_of(EventKind::Ban);
        assert!(
            bans.len() == 1 && bans[0].confirmed && !bans[0].unverified,
            "{bans:?}"
        );

        // No cookie where none can reach the peer: an on-link peer without a neighbour
        // entry, a peer routed out of another interface, an interface where XDP_TX does not
        // deliver. Each SYN passes (the stack refuses it), reported as withheld.
        let withheld = |x: &mut TestXdp, peer: &str| {
            x.add_peer(peer, MINUTE);
            let syn = Packet::tcp(peer, TRAP, SYN).tcp_options(&MSS_1460);
            assert_eq!(x.run(&syn.build()), XDP_PASS, "{peer}: no cookie");
            assert!(!x.is_banned(peer), "{peer}");
            let ev = x.events();
            assert!(
                ev.len() == 1 && ev[0].kind == EventKind::PeerProbe && ev[0].cookie_withheld,
                "{peer}: {ev:?}"
            );
        };
        withheld(&mut x, "10.77.0.9");
        withheld(&mut x, "10.99.0.5");
        x.dp.set_xdp_tx_delivers(net.ifindex, false).unwrap();
        withheld(&mut x, "203.0.113.8");
        assert_eq!(x.stats().get(Stat::CookiesWithheld), 3);
        x.dp.set_xdp_tx_delivers(net.ifindex, true).unwrap();
        let syn = Packet::tcp("203.0.113.8", TRAP, SYN).tcp_options(&MSS_1460);
        assert_eq!(x.run(&syn.build()), XDP_TX, "delivering again");
    });
}

/// An ACK to a trap port is checked for a cookie only if one went to its source moments
/// ago, and only `COOKIE_GUESSES` wrong ones per window: a valid cookie arriving where none
/// was sent recently, or after the guesses are spent, is not checked and bans nobody.
#[test]
fn ack_checks_need_a_recent_cookie_and_stop_after_the_guess_budget() {
    in_lab(|net| {
        let peer = "203.0.113.20";
        let syn = Packet::tcp(peer, TRAP, SYN)
            .seq(31_000)
            .from_mac(net.gateway)
            .tcp_options(&MSS_1460);
        let mut x = net.challenged("111", "");
        x.add_peer(peer, MINUTE);
        let (verdict, out) = x.run_out(&syn.build());
        assert_eq!(verdict, XDP_TX);
        let SynAck { cookie, .. } = check_synack(&net, &syn, &out);
        let valid = completing_ack(&syn, cookie).from_mac(net.gateway);

        // Another program instance (its own maps: no cookie sent from it) gets the valid
        // ACK: the kernel would accept the cookie, but no cookie went out here, so it is
        // not even checked.
        let mut fresh = net.challenged("111", "");
        fresh.add_peer(peer, MINUTE);
        assert_eq!(fresh.run(&valid.build()), XDP_PASS);
        assert!(!fresh.is_banned(peer), "an unsolicited ACK was checked");
        let st = fresh.stats();
        assert_eq!(
            (
                st.get(Stat::CookieAcksUnsolicited),
                st.get(Stat::CookiesConfirmed)
            ),
            (1, 0)
        );

        // Wrong guesses, up to the budget, are checked; then nothing is, not even the
        // right cookie, and a new SYN in the same window does not refill the budget.
        let guesses = portsentry_common::COOKIE_GUESSES;
        for i in 0..guesses {
            let wrong = completing_ack(&syn, cookie.wrapping_add(0x1000 * (i as u32 + 1)))
                .from_mac(net.gateway);
            assert_eq!(x.run(&wrong.build()), XDP_PASS, "guess {i}");
        }
        assert_eq!(x.stats().get(Stat::CookieChecksRefused), 0);
        assert_eq!(
            x.run(&valid.build()),
            XDP_PASS,
            "check {} refused",
            guesses + 1
        );
        assert!(!x.is_banned(peer), "a check beyond the budget was made");
        let syn2 = syn.clone().seq(32_000);
        let (verdict, out) = x.run_out(&syn2.build());
        assert_eq!(verdict, XDP_TX);
        let SynAck { cookie: c2, .. } = check_synack(&net, &syn2, &out);
        let valid2 = completing_ack(&syn2, c2).from_mac(net.gateway);
        assert_eq!(x.run(&valid2.build()), XDP_PASS);
        assert!(!x.is_banned(peer));
        let st = x.stats();
        assert_eq!(
            (
                st.get(Stat::CookieChecksRefused),
                st.get(Stat::CookiesConfirmed)
            ),
            (2, 0)
        );
    });
}

/// The trap SYN-ACK carries the options this host's own SYN-ACKs carry, as the namespace's
/// sysctls say, in Linux's layout; its MSS is this host's (the route's MTU), its window
/// Linux's initial window.
#[test]
fn the_syn_ack_carries_the_hosts_options_as_the_sysctls_say() {
    let ns = RoutedNs::new().expect("routed lab namespace");
    let net = Net {
        ifindex: ns.ifindex,
        gateway: ns.gateway_mac,
        own: ns.own_mac,
    };
    // What Linux's SYN offers: MSS 1460, SACK permitted, timestamps (TSval 0x01020304),
    // NOP, window scale 7.
    let linux_syn: [u8; 20] = [
        2, 4, 5, 180, 4, 2, 8, 10, 1, 2, 3, 4, 0, 0, 0, 0, 1, 3, 3, 7,
    ];
    let answer = move |net: Net| {
        let mut x = net.challenged("111", "");
        let peer = "203.0.113.30";
        x.add_peer(peer, MINUTE);
        let syn = Packet::tcp(peer, TRAP, SYN).tcp_options(&linux_syn);
        let (verdict, out) = x.run_out(&syn.build());
        assert_eq!(verdict, XDP_TX);
        let a = check_synack(&net, &syn, &out);
        let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
        let now_ms = Duration::from(now).as_millis() as u32;
        (a.mss, a.window, a.options, now_ms)
    };
    let tsecr = [1, 2, 3, 4];
    // The scale Linux offers: log2 of the largest receive buffer (tcp_rmem's maximum,
    // rmem_max) less 15, as tcp_select_initial_window works it out.
    let biggest = ns.run(|_| {
        let rmem = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_rmem").unwrap();
        let max: u64 = rmem.split_whitespace().nth(2).unwrap().parse().unwrap();
        let core = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        max.max(core)
    });
    let wscale = (biggest.ilog2() - 15).min(14) as u8;

    // Linux's defaults: SACK permitted in the timestamps' padding, then the window scale;
    // window 65160 = 45 × (1460 − 12) from tcp_rmem's default 131072.
    let (mss, window, opts, _) = ns.run(move |_| answer(net));
    assert_eq!((mss, window), (1460, 65160));
    assert_eq!(opts.len(), 16, "{opts:?}");
    assert_eq!(&opts[0..4], &[4, 2, 8, 10], "{opts:?}");
    assert_eq!(&opts[8..12], &tsecr, "TSecr echoes their TSval");
    assert_eq!(&opts[12..16], &[1, 3, 3, wscale], "window scale");

    // No SACK, no timestamps: window scale alone; window 64240 = 44 × 1460.
    ns.sysctl("net.ipv4.tcp_sack", "0").unwrap();
    ns.sysctl("net.ipv4.tcp_timestamps", "0").unwrap();
    let (_, window, opts, _) = ns.run(move |_| answer(net));
    assert_eq!((window, opts), (64240, vec![1, 3, 3, wscale]));

    // SACK without timestamps, no window scaling.
    ns.sysctl("net.ipv4.tcp_sack", "1").unwrap();
    ns.sysctl("net.ipv4.tcp_window_scaling", "0").unwrap();
    let (_, _, opts, _) = ns.run(move |_| answer(net));
    assert_eq!(opts, vec![1, 1, 4, 2]);

    // Timestamps without random offsets (2): TSval is CLOCK_MONOTONIC in ms, as Linux's.
    ns.sysctl("net.ipv4.tcp_sack", "0").unwrap();
    ns.sysctl("net.ipv4.tcp_timestamps", "2").unwrap();
    let (_, window, opts, now_ms) = ns.run(move |_| answer(net));
    assert_eq!(window, 65160);
    assert_eq!(&opts[0..4], &[1, 1, 8, 10], "{opts:?}");
    assert_eq!(&opts[8..12], &tsecr);
    let tsval = u32::from_be_bytes([opts[4], opts[5], opts[6], opts[7]]);
    assert!(
        now_ms.wrapping_sub(tsval) < 1_000,
        "TSval {tsval} is the monotonic clock in ms ({now_ms})"
    );
}
