//! SYN cookies in network namespaces, end to end (issue 25, items 5 and 6):
//!
//! - on a LAN, a forger that writes a learned peer's address from its own MAC never sees the
//!   cookie (it goes to the peer's MAC, the neighbour the route names), so it cannot complete
//!   the handshake and get the peer banned; the real peer's own full connect still is banned;
//! - on a veth whose far end runs no XDP program, XDP_TX frames are never delivered: the daemon
//!   says so at attach and a learned peer's connect to a trap port is refused at once instead of
//!   waiting for a SYN-ACK that never comes; with a program on the far end the challenge runs.
//!
//! Whether the far end runs XDP is each test's explicit choice (`Lab::accept_xdp_tx`).

use std::{
    io,
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use portsentry::dataplane::AttachMode;
use portsentry_tests::{
    case::{self, ban_line as banned_line, SERVICE, TRAP, WAIT},
    lab::{ip, mac_of, sock, Daemon, Lab, Netns, OwnedNetns, TempDir},
};

/// The case's daemon, attached in native mode (XDP_TX needs it).
fn start(lab: &Lab, dir: &TempDir) -> Daemon {
    let mut s = case::settings(lab, dir);
    s.startup.xdp_mode = AttachMode::Native;
    case::start(lab, dir, &s)
}

/// A TCP connect from `src` in `ns` to `dst`: Ok once connected, else the error and how long
/// it took to come.
fn connect(
    ns: &Netns,
    src: IpAddr,
    dst: SocketAddr,
    timeout: Duration,
) -> Result<(), (io::ErrorKind, Duration)> {
    ns.run(move || {
        use socket2::{Domain, Socket, Type};
        let began = Instant::now();
        let sock = Socket::new(Domain::IPV4, Type::STREAM, None)
            .map_err(|e| (e.kind(), began.elapsed()))?;
        sock.bind(&SocketAddr::new(src, 0).into())
            .map_err(|e| (e.kind(), began.elapsed()))?;
        sock.connect_timeout(&dst.into(), timeout)
            .map_err(|e| (e.kind(), began.elapsed()))
    })
}

/// A learned peer's full connect to a trap port on a veth whose far end runs no XDP program:
/// the daemon says at attach that XDP_TX cannot deliver there, and the connect is refused at
/// once (the SYN goes to the stack), not left waiting for a SYN-ACK that is never delivered;
/// the peer is not banned by it. With an XDP program on the far end, the same connect completes
/// on the cookie and bans the peer.
#[test]
fn without_xdp_on_the_far_end_a_peers_connect_is_refused_not_black_holed() {
    for far_end_xdp in [false, true] {
        let lab = Lab::new(1).unwrap();
        if far_end_xdp {
            lab.accept_xdp_tx().unwrap();
        }
        let dir = TempDir::new("cookies-veth").unwrap();
        let mut d = start(&lab, &dir);
        let peer = lab.scanner_v4[0];
        // The protected host talks to the peer: a learned (outbound) peer.
        let _svc = lab.scanner.tcp_service(sock(peer, SERVICE));
        assert!(lab
            .protected
            .tcp_connect(lab.protected_v4, sock(peer, SERVICE), WAIT));

        let result = connect(&lab.scanner, peer, sock(lab.protected_v4, TRAP), WAIT);
        let warning =
            |l: &str| l.contains("runs no XDP program") && l.contains("get no SYN cookie");
        if far_end_xdp {
            // The handshake completes on the cookie; its ACK bans the peer.
            assert!(result.is_ok(), "{result:?}");
            d.expect_line("the completed handshake's ban", banned_line(peer));
        } else {
            let (kind, took) = result.expect_err("nothing listens on the trap port");
            assert_eq!(
                kind,
                io::ErrorKind::ConnectionRefused,
                "refused by the stack, not timed out after {took:?}:\n{}",
                d.tail()
            );
            assert!(took < Duration::from_secs(2), "{took:?}");
            d.expect_line(
                "the peer probe line saying no cookie went out",
                case::probe_line(peer, "no SYN cookie"),
            );
            d.expect_no_line("a ban of the peer", banned_line(peer));
        }
        assert_eq!(
            d.has_line(warning),
            !far_end_xdp,
            "far end XDP {far_end_xdp}: the attach warning:\n{}",
            d.tail()
        );
    }
}

/// A LAN: the lab's scanner namespace becomes a switch (its end of the protected host's veth
/// a port of bridge br0, with an XDP program so XDP_TX frames are delivered); a peer
/// (10.77.0.5) and a forger (10.77.0.6) hang off two more ports. The protected host talks to
/// the peer (a learned peer, its MAC in the neighbour table). The forger then gives itself the
/// peer's address and makes a full connect from it to a trap port: its SYN comes from the
/// forger's MAC, and before this change the cookie went back there, the forger's stack
/// completed the handshake and the peer was banned (without a path check). Now the cookie goes
/// to the peer's MAC, the forger never completes, and the peer is not banned; the real peer's
/// own full connect still is.
#[test]
fn a_lan_forger_cannot_answer_a_peers_cookie() {
    let lab = Lab::new(1).unwrap();
    let sw = lab.scanner.name.clone();
    let id = lab.iface.trim_start_matches("vp").to_owned();
    ip(&["-n", &sw, "addr", "flush", "dev", &lab.scanner_iface]).unwrap();
    ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"]).unwrap();
    ip(&[
        "-n",
        &sw,
        "link",
        "set",
        &lab.scanner_iface,
        "master",
        "br0",
    ])
    .unwrap();
    ip(&["-n", &sw, "link", "set", "br0", "up"]).unwrap();
    lab.accept_xdp_tx().unwrap();
    let peer: IpAddr = "10.77.0.5".parse().unwrap();
    let forger: IpAddr = "10.77.0.6".parse().unwrap();
    let (peer_netns, forger_netns) = (
        OwnedNetns::add(&format!("psr{id}")).unwrap(),
        OwnedNetns::add(&format!("psf{id}")).unwrap(),
    );
    let (peer_ns, forger_ns) = (peer_netns.name.clone(), forger_netns.name.clone());
    for (ns, addr, port) in [(&peer_ns, peer, "sp1"), (&forger_ns, forger, "sp2")] {
        portsentry_tests::lab::veth_pair(ns, "eth0", &sw, port).unwrap();
        ip(&["-n", &sw, "link", "set", port, "master", "br0"]).unwrap();
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            "eth0",
        ])
        .unwrap();
    }
    // The forger never asks for the protected host's MAC (an ARP request would itself poison
    // the protected host's entry for the peer: item 10, another check) and never answers for
    // the address it borrows.
    let protected_mac = mac_of(&lab.protected.name, &lab.iface).unwrap();
    ip(&[
        "-n",
        &forger_ns,
        "neigh",
        "replace",
        &lab.protected_v4.to_string(),
        "lladdr",
        &protected_mac,
        "dev",
        "eth0",
        "nud",
        "permanent",
    ])
    .unwrap();
    for key in ["all", "eth0"] {
        forger_netns
            .sysctl(&format!("net.ipv4.conf.{key}.arp_ignore"), "8")
            .unwrap();
    }

    let dir = TempDir::new("cookies-lan").unwrap();
    let mut d = start(&lab, &dir);
    let _svc = peer_netns.tcp_service(sock(peer, SERVICE));
    assert!(
        lab.protected
            .tcp_connect(lab.protected_v4, sock(peer, SERVICE), WAIT),
        "the protected host reaches the peer"
    );

    // The forger borrows the peer's address and connects from it.
    ip(&[
        "-n",
        &forger_ns,
        "addr",
        "add",
        &format!("{peer}/32"),
        "dev",
        "eth0",
    ])
    .unwrap();
    let forged = connect(
        &forger_netns,
        peer,
        sock(lab.protected_v4, TRAP),
        Duration::from_secs(3),
    );
    d.expect_line(
        "the forged SYN answered",
        case::probe_line(peer, "answered with a SYN cookie"),
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        forged.is_err(),
        "the forger completed a handshake in the peer's name"
    );
    d.expect_no_line(
        "a LAN forger got the learned peer banned",
        banned_line(peer),
    );
    ip(&[
        "-n",
        &forger_ns,
        "addr",
        "del",
        &format!("{peer}/32"),
        "dev",
        "eth0",
    ])
    .unwrap();

    // The peer itself: its full connect completes on the cookie (which reaches it through the
    // switch) and bans it, path verified.
    assert!(
        connect(&peer_netns, peer, sock(lab.protected_v4, TRAP), WAIT).is_ok(),
        "the real peer's handshake on the cookie:\n{}",
        d.tail()
    );
    d.expect_line(
        "the real peer's completed handshake banning it",
        banned_line(peer),
    );
}
