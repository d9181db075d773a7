//! Learned peers end to end: the cgroup programs learn the hosts the protected namespace chose
//! to talk to (and nothing from other namespaces); a forged SYN in a learned peer's name is
//! answered with a SYN cookie and bans nobody, while a real full connect from that peer
//! completes the handshake and is banned; UDP probes from peers are only reported; learned
//! peers survive a restart in `peers.json`. Answering is not choosing (issue 25, items 2-4): a
//! client of a service, a stranger a UDP server answered and a flood of either teach no peer
//! and evict none; the real resolver path (glibc through a resolver in another namespace) does
//! teach one.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::Duration,
};

use portsentry::{
    config::settings::{LiveSettings, Settings},
    daemon::guard::{self, KernelExtras},
    dataplane::{Dataplane, LoadOptions, PeerLearning, PeerTable},
    net::{listening::Listening, ports::PortSet},
};
use portsentry_tests::{
    case::{self, ban_line as banned_line, SERVICE, SHORT, TRAP, WAIT},
    clock::before_boot,
    lab::{portsentry, run_in, sock, Daemon, Lab, Netns, TempDir},
};

const UDP_TRAP: u16 = 54321;
const HOUR: Duration = Duration::from_secs(3600);

/// The case's settings plus [`UDP_TRAP`].
fn peer_settings(lab: &Lab, dir: &TempDir) -> Settings {
    let mut s = case::settings(lab, dir);
    s.live.udp_ports = case::ports(&UDP_TRAP.to_string());
    s
}

/// [`peer_settings`] with `learn_inbound`: accepted clients are peers too.
fn inbound_settings(lab: &Lab, dir: &TempDir) -> Settings {
    let mut s = peer_settings(lab, dir);
    s.live.learn_inbound = true;
    s
}

/// The daemon's line for a learned peer's trap probe (`detect::lines::refused_line`).
fn peer_line(src: IpAddr, tcp: bool) -> impl Fn(&str) -> bool {
    let why = if tcp {
        "learned peer: answered with a SYN cookie"
    } else {
        "learned peer: reported, not banned by a UDP probe"
    };
    case::probe_line(src, why)
}

/// One raw SYN from `src` to the trap port with hping3: a forged probe, as far as the
/// protected host can tell (no socket behind it: the scanner's stack resets any answer).
/// Returns hping3's output, which lists the answers it saw (`flags=SA` for a SYN-ACK).
fn forged_syn(lab: &Lab, src: IpAddr) -> String {
    case::forged_syn(&lab.scanner, src, lab.protected_v4, TRAP).1
}

/// A SYN forged in learned peer `peer`'s name is answered with a SYN-ACK (the cookie) and the
/// peer line, never a ban (`banned_means`: what a ban would say, for the failure message).
fn a_forged_syn_meets_a_cookie(lab: &Lab, d: &mut Daemon, peer: IpAddr, banned_means: &str) {
    let out = forged_syn(lab, peer);
    let (answered, banned) = (peer_line(peer, true), banned_line(peer));
    d.wait_for_line(|l| answered(l) || banned(l), WAIT);
    d.expect_no_line(&format!("{peer}: {banned_means}"), &banned);
    assert!(
        out.contains("flags=SA"),
        "{peer}: the forged SYN is answered with a SYN-ACK (the cookie): {out}"
    );
    d.expect_line("peer probe line", answered);
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
/// learned peer completes the handshake on the cookie and is banned. With `learn_inbound`, a
/// client whose connection this host accepted is such a peer too.
#[test]
fn a_forged_syn_bans_no_learned_peer_but_a_completed_handshake_does() {
    let lab = Lab::new(3).unwrap();
    lab.accept_xdp_tx().unwrap();
    set_tcp_syncookies(&lab.protected, 0);
    let dir = TempDir::new("peers").unwrap();
    let mut d = case::start(&lab, &dir, &inbound_settings(&lab, &dir));
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
        a_forged_syn_meets_a_cookie(&lab, &mut d, peer, "a forged SYN banned a learned peer");
        // The peer's sessions keep working, both ways.
        assert!(
            lab.scanner
                .tcp_connect(peer, sock(lab.protected_v4, SERVICE), SHORT),
            "{peer} can still reach the protected service:\n{}",
            d.tail()
        );
    }
    assert!(lab
        .protected
        .tcp_connect(lab.protected_v4, sock(opened, SERVICE), SHORT));

    // Control: the same forged SYN from a stranger bans it on the spot.
    forged_syn(&lab, stranger);
    d.expect_line("stranger's ban", banned_line(stranger));

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
    d.expect_line("the learned peer's ban", banned_line(opened));
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
    d.expect_no_line("a ban of the other peer", banned_line(accepted));
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

    let mut d = case::start(&lab, &dir, &peer_settings(&lab, &dir));
    // An unconnected UDP send to one peer, a TCP connection to another.
    assert!(lab
        .protected
        .udp_send(lab.protected_v4, sock(udp_peer, 5353)));
    let _svc = lab.scanner.tcp_service(sock(tcp_peer, SERVICE));
    assert!(lab
        .protected
        .tcp_connect(lab.protected_v4, sock(tcp_peer, SERVICE), WAIT));
    assert!(lab.scanner.udp_send(udp_peer, udp_trap));
    d.expect_line("UDP peer line", peer_line(udp_peer, false));
    d.stop().unwrap();
    d.expect_no_line("a ban of the UDP peer", banned_line(udp_peer));

    let saved = std::fs::read_to_string(dir.join("peers.json")).expect("peers.json written");
    for peer in [udp_peer, tcp_peer] {
        assert!(saved.contains(&format!("\"{peer}\"")), "{saved}");
    }

    // Restarted without pinned maps: the peers come from the file alone.
    let mut d = case::start(&lab, &dir, &peer_settings(&lab, &dir));
    assert!(
        d.has_line(|l| l.contains("restored 2 peer(s)")),
        "{}",
        d.tail()
    );
    let out = forged_syn(&lab, tcp_peer);
    assert!(out.contains("flags=SA"), "{out}");
    d.expect_line("TCP peer line", peer_line(tcp_peer, true));
    assert!(lab.scanner.udp_send(udp_peer, udp_trap));
    d.expect_line("UDP peer line", peer_line(udp_peer, false));
    assert!(lab.scanner.udp_send(stranger, udp_trap));
    d.expect_line("stranger's ban", banned_line(stranger));
    for peer in [udp_peer, tcp_peer] {
        d.expect_no_line(&format!("a ban of {peer}"), banned_line(peer));
    }
    d.stop().unwrap();

    // A damaged file never stops the daemon: kept aside, started without saved peers.
    std::fs::write(dir.join("peers.json"), "{ damaged").unwrap();
    let mut d = case::start(&lab, &dir, &peer_settings(&lab, &dir));
    assert!(
        d.has_line(|l| l.contains("kept aside as") && l.contains("peers.json.corrupt-")),
        "{}",
        d.tail()
    );
    forged_syn(&lab, tcp_peer);
    d.expect_line("ban of a forgotten peer", banned_line(tcp_peer));
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
    let mut s = case::settings(&lab, &dir);
    s.live.peer_memory = Some(Duration::from_secs(memory.as_secs()));
    let last_seen_ms = portsentry::clock::unix_ms() - before_boot(HOUR).as_millis() as u64;
    let file = serde_json::json!({
        "version": 1,
        "peers": [{ "addr": peer.to_string(), "last_seen_ms": last_seen_ms, "ways": 1 }],
    });
    std::fs::write(dir.join("peers.json"), file.to_string()).unwrap();

    let mut d = case::start(&lab, &dir, &s);
    assert!(
        d.has_line(|l| l.contains("restored 1 peer(s)")),
        "{}",
        d.tail()
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

/// The XDP program loaded in the calling thread's namespace with the peer-learning programs
/// attached (they record for that namespace) and its config written: trap port 111, no
/// automatic allowlist, the peer challenge on, `learn_inbound` as given.
fn learning_dataplane(learn_inbound: bool) -> (Dataplane, PeerLearning) {
    let mut dp = Dataplane::load(&LoadOptions::default()).expect("object");
    let learning = dp
        .learn_peers()
        .expect("attaching the peer-learning programs");
    let live = LiveSettings {
        tcp_ports: PortSet::parse("111").unwrap(),
        auto_allow: false,
        learn_inbound,
        ..LiveSettings::default()
    };
    let extras = KernelExtras {
        peer_challenge: true,
        netns_cookie: learning.netns_cookie,
        ..KernelExtras::default()
    };
    let none = Listening::default();
    guard::write(&mut dp, &live, &[], &none, &none, &extras).expect("config");
    (dp, learning)
}

/// The cgroup programs themselves, without a daemon: they record the remote ends of this
/// namespace's opened handshakes, connected UDP sockets and UDP sends as outbound peers, the
/// clients it accepted as inbound peers (here with `learn_inbound`), nothing a UDP socket sent
/// to a stranger it was answering, nothing of another namespace's sockets, and nothing once
/// they are detached.
#[test]
fn learning_records_this_namespace_only_and_stops_when_detached() {
    let lab = Lab::new(5).unwrap();
    let (scanner, protected, p4) = (lab.scanner.clone(), lab.protected.clone(), lab.protected_v4);
    let s = lab.scanner_v4.clone();
    let _svc = lab.scanner.tcp_service(sock(s[0], SERVICE));

    // Everything below runs on a thread inside the protected namespace, so the programs record
    // for that namespace (its cookie), never the host's.
    let (learned, inbound, after_detach) = protected.run(move || {
        let (dp, learning) = learning_dataplane(true);

        // Opened (active) and accepted (passive) handshakes, an unconnected UDP send and a
        // connected UDP socket.
        TcpStream::connect_timeout(&sock(s[0], SERVICE), WAIT).expect("connect out");
        let listener = TcpListener::bind(sock(p4, SERVICE)).expect("listen");
        assert!(scanner.tcp_connect(s[1], sock(p4, SERVICE), WAIT));
        listener.accept().expect("accept");
        let udp = UdpSocket::bind(SocketAddr::new(p4, 0)).unwrap();
        udp.send_to(b"x", sock(s[2], 53)).unwrap();
        let connected = UdpSocket::bind(SocketAddr::new(p4, 0)).unwrap();
        connected.connect(sock(s[3], 53)).unwrap();
        // A UDP server answering a stranger (s[4]) on its unconnected socket, and answering
        // an outbound peer (s[2]), which stays one.
        let server = UdpSocket::bind(sock(p4, 5300)).unwrap();
        server.set_read_timeout(Some(WAIT)).unwrap();
        for from in [s[4], s[2]] {
            assert!(scanner.udp_send(from, sock(p4, 5300)));
            let mut buf = [0u8; 64];
            let (_, src) = server.recv_from(&mut buf).expect("query");
            assert_eq!(src.ip(), from);
            server.send_to(b"answer", src).unwrap();
        }
        // The scanner namespace's own sockets (its side of these connections, its own sends)
        // are another namespace's: not recorded.
        assert!(scanner.udp_send(s[1], sock(p4, 9)));
        let addrs = |t| -> Vec<IpAddr> {
            dp.peers_in(t)
                .unwrap()
                .into_iter()
                .map(|(a, _)| a)
                .collect()
        };
        let (learned, inbound) = (addrs(PeerTable::Outbound), addrs(PeerTable::Inbound));

        drop(learning);
        let late = UdpSocket::bind(SocketAddr::new(p4, 0)).unwrap();
        let sent_to = |host: u8| -> IpAddr {
            let to = IpAddr::V4(Ipv4Addr::new(10, 77, 0, host));
            late.send_to(b"x", sock(to, 53)).ok();
            to
        };
        // Closing a link's last fd frees it later on some kernels (Debian's 6.1 defers it to a
        // workqueue), and a send meanwhile still runs the program: wait for the first send
        // that is not recorded, then one more must not be either.
        let stopped = (150..250).any(|host| {
            let to = sent_to(host);
            std::thread::sleep(Duration::from_millis(20));
            !addrs(PeerTable::Outbound).contains(&to)
        });
        assert!(stopped, "sends were still recorded 2 s after the detach");
        let last = sent_to(250);
        let after_detach = addrs(PeerTable::Outbound);
        assert!(!after_detach.contains(&last), "recorded after the detach");
        (learned, inbound, after_detach)
    });
    let mut want = vec![lab.scanner_v4[0], lab.scanner_v4[2], lab.scanner_v4[3]];
    let mut got = learned.clone();
    want.sort();
    got.sort();
    assert_eq!(
        got, want,
        "the hosts the protected side chose to talk to, not the stranger it answered"
    );
    assert_eq!(inbound, vec![lab.scanner_v4[1]], "the accepted client");
    assert!(!learned.contains(&lab.protected_v4));
    assert!(
        learned.iter().all(|a| after_detach.contains(a)),
        "detaching keeps what was learned: {after_detach:?}"
    );
}

/// New outbound peers are learned at a bounded rate: one process sending to thousands of new
/// destinations at once learns about a burst's worth (per CPU), and the rest are counted, so a
/// local process cannot churn the table.
#[test]
fn new_outbound_peers_are_learned_at_a_bounded_rate() {
    const SENT: u32 = 6000;
    let lab = Lab::new(1).unwrap();
    let p4 = lab.protected_v4;
    let (learned, limited) = lab.protected.run(move || {
        let (dp, _learning) = learning_dataplane(false);
        let udp = UdpSocket::bind(SocketAddr::new(p4, 0)).unwrap();
        for i in 0..SENT {
            let [_, _, a, b] = i.to_be_bytes();
            let dst = IpAddr::V4(Ipv4Addr::new(10, 200, a, b));
            udp.send_to(b"x", sock(dst, 53)).ok();
        }
        let stats = dp.stats().unwrap();
        (
            dp.peers().unwrap().len() as u64,
            stats.get(portsentry_common::Stat::PeerLearnLimited),
        )
    });
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let bound = cpus * portsentry_common::PEER_LEARN_BURST + 64;
    assert!(
        learned <= bound,
        "{learned} of {SENT} destinations learned at once (bound {bound})"
    );
    assert!(learned >= portsentry_common::PEER_LEARN_BURST.min(u64::from(SENT)) / 2);
    assert_eq!(
        learned + limited,
        u64::from(SENT),
        "every refusal is counted"
    );
}

/// A UDP server on one unconnected socket that answers whoever wrote, as a DNS, NTP or QUIC
/// server does: each datagram's answer (`reply`) goes back to its source. Stops on drop.
struct UdpServer {
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl UdpServer {
    fn start(ns: &Netns, addr: SocketAddr, reply: fn(&[u8]) -> Option<Vec<u8>>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicUsize::new(0));
        let (s, a) = (stop.clone(), answered.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = ns.spawn(move || {
            let sock = UdpSocket::bind(addr).expect("bind the UDP server");
            sock.set_read_timeout(Some(Duration::from_millis(50)))
                .expect("timeout");
            tx.send(()).ok();
            let mut buf = [0u8; 1500];
            while !s.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                if let Some(answer) = reply(&buf[..n]) {
                    // Counted before the send: the client may read the answer (and the test
                    // read this count) before send_to returns, as happened in a slow VM.
                    a.fetch_add(1, Ordering::Relaxed);
                    if sock.send_to(&answer, from).is_err() {
                        a.fetch_sub(1, Ordering::Relaxed);
                    }
                }
            }
        });
        rx.recv_timeout(WAIT).expect("UDP server started");
        Self {
            stop,
            answered,
            thread: Some(thread),
        }
    }

    fn answered(&self) -> usize {
        self.answered.load(Ordering::Relaxed)
    }
}

impl Drop for UdpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn echo(query: &[u8]) -> Option<Vec<u8>> {
    Some(query.to_vec())
}

/// The address every name resolves to through [`dns_answer`].
const RESOLVED: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 7);

/// A minimal DNS responder: an A query is answered with [`RESOLVED`], any other type with no
/// data (NOERROR, no answers), as an authoritative server would for a name without it.
fn dns_answer(q: &[u8]) -> Option<Vec<u8>> {
    // The question: QNAME's labels up to the root label, then QTYPE and QCLASS.
    let mut i = 12;
    while *q.get(i)? != 0 {
        i += 1 + usize::from(*q.get(i)?);
    }
    let end = i + 5;
    let question = q.get(12..end)?;
    let is_a = question[question.len() - 4..question.len() - 2] == [0, 1];
    let mut r = q.get(..2)?.to_vec(); // the query's ID
    r.extend([0x81, 0x80, 0, 1, 0, u8::from(is_a), 0, 0, 0, 0]);
    r.extend(question);
    if is_a {
        // Name by pointer to the question's, type A, class IN, TTL 60, 4 bytes.
        r.extend([0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        r.extend(RESOLVED.octets());
    }
    Some(r)
}

/// One datagram from `src` (an address of `ns`) to `dst` and whether an answer came back.
fn udp_round_trip(ns: &Netns, src: IpAddr, dst: SocketAddr) -> bool {
    ns.run(move || {
        let Ok(sock) = UdpSocket::bind(SocketAddr::new(src, 0)) else {
            return false;
        };
        sock.set_read_timeout(Some(WAIT)).ok();
        let mut buf = [0u8; 64];
        sock.send_to(b"hello", dst).is_ok() && sock.recv_from(&mut buf).is_ok()
    })
}

/// `/etc/netns/NAME/`: files `ip netns exec NAME` binds over `/etc` (resolv.conf naming the
/// test's resolver, an nsswitch.conf that asks DNS after the hosts file, whatever the host's
/// says). Removed on drop.
struct NetnsEtc {
    dir: PathBuf,
}

impl NetnsEtc {
    fn resolver(ns: &Netns, nameserver: IpAddr) -> Self {
        let dir = PathBuf::from("/etc/netns").join(&ns.name);
        std::fs::create_dir_all(&dir).expect("creating /etc/netns/NAME");
        let me = Self { dir };
        std::fs::write(
            me.dir.join("resolv.conf"),
            format!("nameserver {nameserver}\noptions timeout:2 attempts:2\n"),
        )
        .expect("writing resolv.conf");
        std::fs::write(me.dir.join("nsswitch.conf"), "hosts: files dns\n")
            .expect("writing nsswitch.conf");
        me
    }
}

impl Drop for NetnsEtc {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        // Only if no one else's namespace files are there.
        let _ = std::fs::remove_dir("/etc/netns");
    }
}

/// glibc's resolver in the protected namespace (`getent hosts`) looks a name up through the
/// resolver `resolver_addr` in the scanner namespace; returns getent's output.
fn resolve(lab: &Lab, resolver_addr: IpAddr) -> (UdpServer, NetnsEtc) {
    let server = UdpServer::start(&lab.scanner, sock(resolver_addr, 53), dns_answer);
    let etc = NetnsEtc::resolver(&lab.protected, resolver_addr);
    let (code, out) = run_in(
        &lab.protected,
        "getent",
        &["hosts", "peer-test.example"],
        Duration::from_secs(15),
    );
    assert_eq!(code, 0, "getent hosts through the lab's resolver: {out}");
    assert!(
        out.contains(&RESOLVED.to_string()) && out.contains("peer-test.example"),
        "{out}"
    );
    assert!(server.answered() >= 1, "the resolver answered");
    (server, etc)
}

/// A daemon on `s` in `dir`; `client` connects to the protected host's service (an inbound
/// peer if `s` learns them), then SYN-scans it with nmap: the daemon and nmap's output.
fn client_syn_scan(lab: &Lab, dir: &TempDir, s: &Settings, client: IpAddr) -> (Daemon, String) {
    let d = case::start(lab, dir, s);
    assert!(lab
        .scanner
        .tcp_connect(client, sock(lab.protected_v4, SERVICE), WAIT));
    let nmap = case::syn_scan(
        &lab.scanner,
        &lab.scanner_iface,
        Some(client),
        &lab.protected_v4.to_string(),
    );
    (d, nmap)
}

/// Issue 25, item 2: a client that completed a connection to a service is no peer; its SYN
/// scan of a trap port bans it. With `learn_inbound = true` (what it trades away, documented)
/// the client is an inbound peer and its scan only meets SYN cookies. On 27926f0 every
/// accepted client was a peer: the first half failed.
#[test]
fn a_client_of_a_service_is_banned_for_a_syn_scan_unless_learn_inbound() {
    let lab = Lab::new(2).unwrap();
    lab.accept_xdp_tx().unwrap();
    let _svc = lab.protected.tcp_service(sock(lab.protected_v4, SERVICE));
    let (client, inbound_client) = (lab.scanner_v4[0], lab.scanner_v4[1]);

    let dir = TempDir::new("peers-client").unwrap();
    let (mut d, nmap) = client_syn_scan(&lab, &dir, &peer_settings(&lab, &dir), client);
    d.expect_line(
        &format!("the client's SYN scan banning it (nmap said: {nmap})"),
        banned_line(client),
    );
    d.expect_no_line("a peer line for the client", peer_line(client, true));
    d.stop().unwrap();

    let dir = TempDir::new("peers-client-inbound").unwrap();
    let settings = inbound_settings(&lab, &dir);
    let (mut d, nmap) = client_syn_scan(&lab, &dir, &settings, inbound_client);
    d.expect_line(
        "inbound peer's cookie line",
        peer_line(inbound_client, true),
    );
    d.expect_no_line(
        &format!("learn_inbound: the client's SYN scan met a cookie, no ban (nmap said: {nmap})"),
        banned_line(inbound_client),
    );
}

/// Issue 25, item 3: a UDP service on an unconnected socket that answers a stranger does not
/// make it a peer: the stranger's SYN probe, forged or real, bans it. On 27926f0 the answer
/// taught an outbound peer and the probe only got a SYN cookie.
#[test]
fn a_stranger_a_udp_service_answered_is_no_peer() {
    const ECHO: u16 = 7007;
    let lab = Lab::new(1).unwrap();
    lab.accept_xdp_tx().unwrap();
    let dir = TempDir::new("peers-udp-answer").unwrap();
    let mut d = case::start(&lab, &dir, &peer_settings(&lab, &dir));
    let echo_server = UdpServer::start(&lab.protected, sock(lab.protected_v4, ECHO), echo);
    let stranger = lab.scanner_v4[0];
    assert!(
        udp_round_trip(&lab.scanner, stranger, sock(lab.protected_v4, ECHO)),
        "the echo service answered the stranger"
    );
    assert_eq!(echo_server.answered(), 1);
    let out = forged_syn(&lab, stranger);
    d.expect_line(
        &format!("an answered stranger's SYN probe banning it (hping3: {out})"),
        banned_line(stranger),
    );
    d.expect_no_line("a peer line for the stranger", peer_line(stranger, true));
}

/// Issue 25, items 3 and 4: the real resolver path teaches an outbound peer (glibc's
/// `getent hosts` through a resolver in another namespace), and so does an outbound TCP
/// connection; then, with a peer table of 4 and `learn_inbound` on, a dozen clients' completed
/// handshakes and hundreds of forged UDP queries to a UDP service (answered to their forged
/// sources) evict neither: a forged probe in the resolver's or the dependency's name still gets
/// a SYN cookie and bans nobody. On 27926f0 one LRU of 4 held them all: the flood pushed the
/// resolver out and the forged probe banned it.
#[test]
fn the_resolver_is_an_outbound_peer_that_no_flood_evicts() {
    const ECHO: u16 = 7007;
    const CLIENTS: usize = 12;
    let lab = Lab::new(2 + CLIENTS).unwrap();
    lab.accept_xdp_tx().unwrap();
    let (resolver, dependency) = (lab.scanner_v4[0], lab.scanner_v4[1]);
    let dir = TempDir::new("peers-flood").unwrap();
    let mut s = inbound_settings(&lab, &dir);
    s.startup.max_peers = 4;
    let mut d = case::start(&lab, &dir, &s);
    let (_dns, _etc) = resolve(&lab, resolver);
    let _dep_svc = lab.scanner.tcp_service(sock(dependency, SERVICE));
    assert!(lab
        .protected
        .tcp_connect(lab.protected_v4, sock(dependency, SERVICE), WAIT));

    // The flood: clients completing handshakes (inbound peers, in their own table), and
    // forged UDP queries from random sources that the echo service answers.
    let _svc = lab.protected.tcp_service(sock(lab.protected_v4, SERVICE));
    for client in &lab.scanner_v4[2..] {
        assert!(lab
            .scanner
            .tcp_connect(*client, sock(lab.protected_v4, SERVICE), WAIT));
    }
    let echo_server = UdpServer::start(&lab.protected, sock(lab.protected_v4, ECHO), echo);
    let (_, hping) = case::random_source_udp(
        &lab.scanner,
        lab.protected_v4,
        ECHO,
        300,
        Duration::from_micros(2000),
        Duration::from_secs(30),
    );
    assert!(
        echo_server.answered() >= 100,
        "the echo service answered the forged queries ({} answered; hping3: {hping})",
        echo_server.answered()
    );

    for peer in [resolver, dependency] {
        a_forged_syn_meets_a_cookie(
            &lab,
            &mut d,
            peer,
            "the flood evicted an outbound peer and a forged SYN banned it",
        );
    }
}
