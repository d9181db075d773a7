//! Learned peers end to end: the cgroup programs learn the hosts the protected namespace really
//! talks to (and nothing from other namespaces); a forged SYN in a learned peer's name is
//! answered with a SYN cookie and bans nobody, while a real full connect from that peer
//! completes the handshake and is banned; UDP probes from peers are only reported; learned
//! peers survive a restart in `peers.json`.

use std::{
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    time::Duration,
};

use portsentry::{
    config::settings::LiveSettings,
    daemon::guard::{self, KernelExtras},
    dataplane::{Dataplane, LoadOptions},
    net::{listening::Listening, ports::PortSet},
};
use portsentry_tests::{
    clock::before_boot,
    lab::{portsentry, run_in, sock, Daemon, DaemonArgs, Lab, Netns, TempDir},
};

const TRAP: u16 = 111;
const UDP_TRAP: u16 = 54321;
const SERVICE: u16 = 8080;
const SHORT: Duration = Duration::from_millis(800);
const WAIT: Duration = Duration::from_secs(5);
const HOUR: Duration = Duration::from_secs(3600);

fn start(lab: &Lab, dir: &TempDir) -> Daemon {
    DaemonArgs::new(lab)
        .iface()
        .tcp_ports(&TRAP.to_string())
        .udp_ports(&UDP_TRAP.to_string())
        // The scanner side is the protected side's default gateway: keep it out of the
        // automatic allowlist, or nothing it sends would ever count.
        .no_auto_allow()
        .no_pin()
        .state_dir(&dir.path)
        .start()
        .expect("daemon")
}

/// The last lines of a daemon's output, for failure messages.
fn tail(d: &Daemon) -> String {
    let out = d.output();
    let lines: Vec<&str> = out.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

fn expect_line(d: &mut Daemon, what: &str, pred: impl Fn(&str) -> bool) {
    assert!(d.wait_for_line(pred, WAIT), "no {what}:\n{}", tail(d));
}

fn banned_line(src: IpAddr) -> impl Fn(&str) -> bool {
    let prefix = format!("attackalert: Host {src} has been blocked");
    move |l: &str| l.starts_with(&prefix)
}

/// The daemon's line for a learned peer's trap probe (`detect::logging::refused_line`).
fn peer_line(src: IpAddr, tcp: bool) -> impl Fn(&str) -> bool {
    let prefix = format!("portsentry: probe from {src} (");
    let why = if tcp {
        "learned peer: answered with a SYN cookie"
    } else {
        "learned peer: reported, not banned by a UDP probe"
    };
    move |l: &str| l.starts_with(&prefix) && l.contains(why)
}

/// One raw SYN from `src` to the trap port with hping3: a forged probe, as far as the
/// protected host can tell (no socket behind it: the scanner's stack resets any answer).
/// Returns hping3's output, which lists the answers it saw (`flags=SA` for a SYN-ACK).
fn forged_syn(lab: &Lab, src: IpAddr) -> String {
    run_in(
        &lab.scanner,
        "hping3",
        &[
            "-S",
            "-c",
            "1",
            "-p",
            &TRAP.to_string(),
            "-a",
            &src.to_string(),
            &lab.protected_v4.to_string(),
        ],
        Duration::from_secs(10),
    )
    .1
}

/// The protected namespace's `net.ipv4.tcp_syncookies`: the cookie helpers must not need it.
/// Net sysctls belong to the namespace of the thread that opens them; the host's is untouched.
fn set_tcp_syncookies(ns: &Netns, value: u8) {
    const PATH: &str = "/proc/sys/net/ipv4/tcp_syncookies";
    let host_before = std::fs::read_to_string(PATH).expect("reading tcp_syncookies");
    let read = ns.run(move || {
        std::fs::write(PATH, value.to_string()).expect("writing tcp_syncookies");
        std::fs::read_to_string(PATH).expect("reading tcp_syncookies")
    });
    assert_eq!(read.trim(), value.to_string());
    assert_eq!(std::fs::read_to_string(PATH).unwrap(), host_before);
}

/// A forged SYN in a learned peer's name is answered with a SYN cookie and bans nobody (the
/// peer's sessions keep working); a stranger's is banned at once; a real `nmap -sT` from the
/// learned peer completes the handshake on the cookie and is banned.
#[test]
fn a_forged_syn_bans_no_learned_peer_but_a_completed_handshake_does() {
    let lab = Lab::new(3).unwrap();
    lab.accept_xdp_tx().unwrap();
    set_tcp_syncookies(&lab.protected, 0);
    let dir = TempDir::new("peers").unwrap();
    let mut d = start(&lab, &dir);
    let (opened, accepted, stranger) = (lab.scanner_v4[0], lab.scanner_v4[1], lab.scanner_v4[2]);

    // The protected host opens a connection to a service of one peer, and accepts one from
    // another: both completed handshakes.
    let _scanner_svc = lab.scanner.tcp_service(sock(opened, SERVICE));
    let _protected_svc = lab.protected.tcp_service(sock(lab.protected_v4, SERVICE));
    assert!(lab
        .protected
        .tcp_connect(lab.protected_v4, sock(opened, SERVICE), WAIT));
    assert!(lab
        .scanner
        .tcp_connect(accepted, sock(lab.protected_v4, SERVICE), WAIT));

    for peer in [opened, accepted] {
        let out = forged_syn(&lab, peer);
        let (answered, banned) = (peer_line(peer, true), banned_line(peer));
        d.wait_for_line(|l| answered(l) || banned(l), WAIT);
        assert!(
            !d.has_line(&banned),
            "{peer}: a forged SYN banned a learned peer:\n{}",
            tail(&d)
        );
        assert!(
            out.contains("flags=SA"),
            "{peer}: the forged SYN is answered with a SYN-ACK (the cookie): {out}"
        );
        expect_line(&mut d, "peer probe line", answered);
        // The peer's sessions keep working, both ways.
        assert!(
            lab.scanner
                .tcp_connect(peer, sock(lab.protected_v4, SERVICE), SHORT),
            "{peer} can still reach the protected service:\n{}",
            tail(&d)
        );
    }
    assert!(lab
        .protected
        .tcp_connect(lab.protected_v4, sock(opened, SERVICE), SHORT));

    // Control: the same forged SYN from a stranger bans it on the spot.
    forged_syn(&lab, stranger);
    expect_line(&mut d, "stranger's ban", banned_line(stranger));

    // A real full connect from the learned peer: nmap's connect() completes the handshake on
    // the cookie, and that ACK bans it.
    let (_, nmap) = run_in(
        &lab.scanner,
        "nmap",
        &[
            "-sT",
            "-Pn",
            "-n",
            "-p",
            &TRAP.to_string(),
            &lab.protected_v4.to_string(),
        ],
        Duration::from_secs(30),
    );
    expect_line(&mut d, "the learned peer's ban", banned_line(opened));
    let state = dir.path.display().to_string();
    let (code, list, err) = portsentry(&["list", "--state-dir", &state]);
    assert_eq!(code, 0, "{list}{err}");
    assert!(
        list.contains(&opened.to_string()),
        "list shows the ban: {list}"
    );
    assert!(
        !lab.scanner
            .tcp_connect(opened, sock(lab.protected_v4, SERVICE), SHORT),
        "the banned peer is dropped everywhere (nmap said: {nmap})"
    );
    assert!(
        !d.has_line(banned_line(accepted)),
        "the other peer was never banned:\n{}",
        tail(&d)
    );
}

/// A UDP destination is learned; a UDP probe from it is reported, never banned. Learned peers
/// are saved to peers.json and restored at the next start; a corrupt file is kept aside.
#[test]
fn udp_peers_are_reported_and_learned_peers_survive_a_restart() {
    let lab = Lab::new(3).unwrap();
    lab.accept_xdp_tx().unwrap();
    let dir = TempDir::new("peers-restart").unwrap();
    let (udp_peer, tcp_peer, stranger) = (lab.scanner_v4[0], lab.scanner_v4[1], lab.scanner_v4[2]);
    let udp_trap = sock(lab.protected_v4, UDP_TRAP);

    let mut d = start(&lab, &dir);
    // An unconnected UDP send to one peer, a TCP connection to another.
    assert!(lab
        .protected
        .udp_send(lab.protected_v4, sock(udp_peer, 5353)));
    let _svc = lab.scanner.tcp_service(sock(tcp_peer, SERVICE));
    assert!(lab
        .protected
        .tcp_connect(lab.protected_v4, sock(tcp_peer, SERVICE), WAIT));
    assert!(lab.scanner.udp_send(udp_peer, udp_trap));
    expect_line(&mut d, "UDP peer line", peer_line(udp_peer, false));
    d.stop().unwrap();
    assert!(!d.has_line(banned_line(udp_peer)), "{}", tail(&d));

    let saved = std::fs::read_to_string(dir.join("peers.json")).expect("peers.json written");
    for peer in [udp_peer, tcp_peer] {
        assert!(saved.contains(&format!("\"{peer}\"")), "{saved}");
    }

    // Restarted without pinned maps: the peers come from the file alone.
    let mut d = start(&lab, &dir);
    assert!(
        d.has_line(|l| l.contains("restored 2 peer(s)")),
        "{}",
        tail(&d)
    );
    let out = forged_syn(&lab, tcp_peer);
    assert!(out.contains("flags=SA"), "{out}");
    expect_line(&mut d, "TCP peer line", peer_line(tcp_peer, true));
    assert!(lab.scanner.udp_send(udp_peer, udp_trap));
    expect_line(&mut d, "UDP peer line", peer_line(udp_peer, false));
    assert!(lab.scanner.udp_send(stranger, udp_trap));
    expect_line(&mut d, "stranger's ban", banned_line(stranger));
    for peer in [udp_peer, tcp_peer] {
        assert!(!d.has_line(banned_line(peer)), "{peer}:\n{}", tail(&d));
    }
    d.stop().unwrap();

    // A damaged file never stops the daemon: kept aside, started without saved peers.
    std::fs::write(dir.join("peers.json"), "{ damaged").unwrap();
    let mut d = start(&lab, &dir);
    assert!(
        d.has_line(|l| l.contains("kept aside as") && l.contains("peers.json.corrupt-")),
        "{}",
        tail(&d)
    );
    forged_syn(&lab, tcp_peer);
    expect_line(&mut d, "ban of a forgotten peer", banned_line(tcp_peer));
}

/// A peer saved before this boot (the machine rebooted since, or the save is older than the
/// uptime) keeps its true last-seen time through a restore and the next save. Before, it came
/// back as "seen at the boot": a peer of 6 days on a machine up 9 minutes lived almost 6 days
/// longer than peer_memory. The ages lie before the boot on every machine (`before_boot`).
#[test]
fn a_peer_saved_before_this_boot_keeps_its_true_age() {
    let lab = Lab::new(1).unwrap();
    let dir = TempDir::new("peers-before-boot").unwrap();
    let peer = lab.scanner_v4[0];
    let memory = before_boot(2 * HOUR);
    let config = dir.join("portsentry.toml");
    std::fs::write(
        &config,
        format!("peer_memory = \"{}s\"\n", memory.as_secs()),
    )
    .unwrap();
    let last_seen_ms = portsentry::clock::unix_ms() - before_boot(HOUR).as_millis() as u64;
    let file = serde_json::json!({
        "version": 1,
        "peers": [{ "addr": peer.to_string(), "last_seen_ms": last_seen_ms, "ways": 1 }],
    });
    std::fs::write(dir.join("peers.json"), file.to_string()).unwrap();

    let mut d = DaemonArgs::new(&lab)
        .config(&config)
        .iface()
        .tcp_ports(&TRAP.to_string())
        .no_auto_allow()
        .no_pin()
        .state_dir(&dir.path)
        .start()
        .expect("daemon");
    assert!(
        d.has_line(|l| l.contains("restored 1 peer(s)")),
        "{}",
        tail(&d)
    );
    d.stop().unwrap();
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("peers.json")).unwrap()).unwrap();
    let back = saved["peers"][0]["last_seen_ms"]
        .as_u64()
        .expect("saved peer");
    assert!(
        back.abs_diff(last_seen_ms) < 2_000,
        "last seen {last_seen_ms} came back as {back} ({} s later):\n{saved}",
        (back as i64 - last_seen_ms as i64) / 1000
    );
}

/// The cgroup programs themselves, without a daemon: they record the remote ends of this
/// namespace's completed handshakes and UDP sends, nothing of another namespace's sockets,
/// and nothing once they are detached.
#[test]
fn learning_records_this_namespace_only_and_stops_when_detached() {
    let lab = Lab::new(4).unwrap();
    let (scanner, protected, p4) = (lab.scanner.clone(), lab.protected.clone(), lab.protected_v4);
    let s = lab.scanner_v4.clone();
    let _svc = lab.scanner.tcp_service(sock(s[0], SERVICE));

    // Everything below runs on a thread inside the protected namespace, so the programs record
    // for that namespace (its cookie), never the host's.
    let (learned, after_detach) = protected.run(move || {
        let mut dp = Dataplane::load(&LoadOptions::default()).expect("object");
        let learning = dp
            .learn_peers()
            .expect("attaching the peer-learning programs");
        let live = LiveSettings {
            tcp_ports: PortSet::parse("111").unwrap(),
            auto_allow: false,
            ..LiveSettings::default()
        };
        let extras = KernelExtras {
            peer_challenge: true,
            netns_cookie: learning.netns_cookie,
            ..KernelExtras::default()
        };
        let none = Listening::default();
        guard::write(&mut dp, &live, &[], &none, &none, &extras).expect("config");

        // Opened (active) and accepted (passive) handshakes, an unconnected UDP send and a
        // connected UDP socket.
        TcpStream::connect_timeout(&sock(s[0], SERVICE), WAIT).expect("connect out");
        let listener = TcpListener::bind(sock(p4, SERVICE)).expect("listen");
        assert!(scanner.tcp_connect(s[1], sock(p4, SERVICE), WAIT));
        listener.accept().expect("accept");
        let udp = std::net::UdpSocket::bind(SocketAddr::new(p4, 0)).unwrap();
        udp.send_to(b"x", sock(s[2], 53)).unwrap();
        let connected = std::net::UdpSocket::bind(SocketAddr::new(p4, 0)).unwrap();
        connected.connect(sock(s[3], 53)).unwrap();
        // The scanner namespace's own sockets (its side of these connections, its own sends)
        // are another namespace's: not recorded.
        assert!(scanner.udp_send(s[1], sock(p4, 9)));
        let learned: Vec<IpAddr> = dp.peers().unwrap().into_iter().map(|(a, _)| a).collect();

        drop(learning);
        let late = std::net::UdpSocket::bind(SocketAddr::new(p4, 0)).unwrap();
        late.send_to(b"x", sock("10.77.0.200".parse().unwrap(), 53))
            .ok();
        let after: Vec<IpAddr> = dp.peers().unwrap().into_iter().map(|(a, _)| a).collect();
        (learned, after)
    });
    let mut want = lab.scanner_v4.clone();
    let mut got = learned.clone();
    want.sort();
    got.sort();
    assert_eq!(got, want, "the protected side's peers, nothing else");
    assert!(!learned.contains(&lab.protected_v4));
    assert_eq!(
        after_detach.len(),
        learned.len(),
        "detached: {after_detach:?}"
    );
}
