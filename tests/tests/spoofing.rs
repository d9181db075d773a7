//! Spoof-safe banning in the data plane (BPF_PROG_TEST_RUN on the real object): bogus sources
//! never count, and a would-be ban is checked against the way this host routes back to its
//! source. Path-check cases run inside a lab namespace, on its real interface, routes and
//! neighbour table.

use std::net::IpAddr;

use portsentry_common::{tcp_flags::SYN, EventKind, Stat};
use portsentry_tests::{
    case::{self, SERVICE},
    lab::{ip, run_in, sock, Lab, RoutedNs, TempDir},
    packets::Packet,
    xdp::{settings, TestXdp, XDP_DROP, XDP_PASS},
};

/// Sources that can never be a real peer: each probe passes, counts as bogus, bans nothing.
#[test]
fn bogus_sources_are_never_counted_or_banned() {
    let mut x = TestXdp::load(&settings("111", "161"));
    let bogus = [
        "0.0.0.0",
        "0.1.2.3",
        "127.0.0.1",
        "224.0.0.1",
        "239.255.255.250",
        "240.0.0.1",
        "255.255.255.255",
        "::",
        "::1",
        "ff02::1",
        "ff05::2",
        "::ffff:10.99.0.77",
        "::10.99.0.77",
    ];
    for src in bogus {
        assert_eq!(
            x.run(&Packet::tcp(src, 111, SYN).build()),
            XDP_PASS,
            "{src}"
        );
        assert_eq!(x.run(&Packet::udp(src, 161).build()), XDP_PASS, "{src}");
        assert!(!x.is_banned(src), "{src} was banned");
    }
    // The IPv4-mapped forgery must not have banned the IPv4 host it names either.
    assert!(!x.is_banned("10.99.0.77"));
    let stats = x.stats();
    assert_eq!(stats.get(Stat::BogusSource), 2 * bogus.len() as u64);
    assert_eq!(stats.get(Stat::Bans), 0);
    assert_eq!(stats.get(Stat::ProbesSyn) + stats.get(Stat::ProbesUdp), 0);
    // Throttled: far fewer events than probes, at least one.
    let events = x.events();
    assert!(
        !events.is_empty() && events.len() < 2 * bogus.len(),
        "{}",
        events.len()
    );

    // Link-local sources are real: they still ban.
    for src in ["169.254.7.7", "fe80::7"] {
        assert_eq!(
            x.run(&Packet::tcp(src, 111, SYN).build()),
            XDP_DROP,
            "{src}"
        );
        assert!(x.is_banned(src), "{src}");
    }
}

/// A routed lab namespace ([`RoutedNs`]: the protected side knows its gateway 10.77.0.2 by
/// MAC and looks routes up from the loopback device, as the daemon arranges) whose scanner has
/// two addresses, with a second interface (other0, 10.99.0.1/24) and no route to
/// 192.0.2.128/25 or 2001:db8:dead::/48.
struct PathLab(RoutedNs);

impl std::ops::Deref for PathLab {
    type Target = RoutedNs;
    fn deref(&self) -> &RoutedNs {
        &self.0
    }
}

impl PathLab {
    fn new() -> Self {
        let routed = RoutedNs::with_aliases(2).expect("routed lab");
        routed.lab.add_other_interface().expect("other0");
        let p = &routed.lab.protected.name;
        ip(&["-n", p, "route", "add", "unreachable", "192.0.2.128/25"]).unwrap();
        ip(&[
            "-n",
            p,
            "-6",
            "route",
            "add",
            "unreachable",
            "2001:db8:dead::/48",
        ])
        .unwrap();
        Self(routed)
    }

    /// Runs `packets` (with the verdict expected for each and whether it must leave a ban) through
    /// a fresh program with the path check on, inside the protected namespace, arriving on the
    /// lab's interface; returns the program's counters.
    fn run(&self, cases: Vec<(&'static str, Vec<u8>, u32, IpAddr, bool)>) -> (u64, u64, u64) {
        let ifindex = self.ifindex;
        self.lab.protected.run(move || {
            let mut x = TestXdp::load(&portsentry::config::settings::LiveSettings {
                path_check: true,
                ..settings("111", "")
            });
            for (what, packet, verdict, src, banned) in cases {
                assert_eq!(x.run_on(&packet, ifindex), verdict, "{what}: verdict");
                assert_eq!(
                    x.dp.ban(src).expect("ban lookup").is_some(),
                    banned,
                    "{what}: banned?"
                );
                // Ban events say whether the path was proven (LAN hosts without a neighbour
                // entry and sources without a route back are not).
                let unproven = what.starts_with("fresh") || what.starts_with("no route");
                for e in &x.events_of(EventKind::Ban) {
                    assert_eq!(e.unverified, unproven, "{what}: unverified flag");
                }
            }
            let s = x.stats();
            (
                s.get(Stat::Spoofed),
                s.get(Stat::Unverified),
                s.get(Stat::Bans),
            )
        })
    }
}

#[test]
fn a_probe_bans_only_if_it_arrived_the_way_the_route_back_leaves() {
    let pl = PathLab::new();
    let gw = pl.gateway_mac;
    let stranger = [0x02, 0xde, 0xad, 0xbe, 0xef, 0x01];
    let to_v4: IpAddr = "10.77.0.1".parse().unwrap();
    let to_v6: IpAddr = "fd77::1".parse().unwrap();
    let probe = |src: &str, mac: [u8; 6]| {
        let to = if src.contains(':') { to_v6 } else { to_v4 };
        Packet::tcp(src, 111, SYN).to(to).from_mac(mac).build()
    };
    let addr = |s: &str| s.parse::<IpAddr>().unwrap();
    let cases = vec![
        // The gateway's own address from another MAC: an on-link forger aiming at the gateway.
        (
            "forged gateway",
            probe("10.77.0.2", stranger),
            XDP_PASS,
            addr("10.77.0.2"),
            false,
        ),
        (
            "forged gateway v6",
            probe("fd77::2", stranger),
            XDP_PASS,
            addr("fd77::2"),
            false,
        ),
        // An internet address that did not come through the gateway.
        (
            "forged internet",
            probe("198.51.100.7", stranger),
            XDP_PASS,
            addr("198.51.100.7"),
            false,
        ),
        // An address routed out of another interface arriving here.
        (
            "wrong interface",
            probe("10.99.0.5", gw),
            XDP_PASS,
            addr("10.99.0.5"),
            false,
        ),
        // A real internet scanner: through the gateway's MAC, routed back the same way.
        (
            "internet scanner",
            probe("203.0.113.9", gw),
            XDP_DROP,
            addr("203.0.113.9"),
            true,
        ),
        (
            "internet scanner v6",
            probe("2001:db8:77::9", gw),
            XDP_DROP,
            addr("2001:db8:77::9"),
            true,
        ),
        // A LAN host this one never talked to (no neighbour entry yet): banned, unverified.
        (
            "fresh LAN scanner",
            probe("10.77.0.3", stranger),
            XDP_DROP,
            addr("10.77.0.3"),
            true,
        ),
        // No usable route back (an unreachable route): banned, unverified.
        (
            "no route back",
            probe("192.0.2.200", gw),
            XDP_DROP,
            addr("192.0.2.200"),
            true,
        ),
        (
            "no route back v6",
            probe("2001:db8:dead::9", gw),
            XDP_DROP,
            addr("2001:db8:dead::9"),
            true,
        ),
    ];
    let (spoofed, unverified, bans) = pl.run(cases);
    assert_eq!((spoofed, unverified, bans), (4, 3, 5));
}

#[test]
fn without_the_path_check_a_forged_gateway_probe_bans_as_before() {
    let pl = PathLab::new();
    let ifindex = pl.ifindex;
    let packet = Packet::tcp("10.77.0.2", 111, SYN)
        .to("10.77.0.1".parse().unwrap())
        .from_mac([0x02, 0xde, 0xad, 0xbe, 0xef, 0x01])
        .build();
    let banned = pl.lab.protected.run(move || {
        let x = TestXdp::load(&settings("111", ""));
        assert_eq!(x.run_on(&packet, ifindex), XDP_DROP);
        x.is_banned("10.77.0.2")
    });
    assert!(
        banned,
        "path_check = false keeps today's behaviour (asymmetric routing)"
    );
}

/// A forger cannot get a prefix banned: the kernel's prefix trigger gets the path check a ban
/// gets. Nine probes of 2001:db8:77::/64 (each address below `scan_trigger`) from a MAC that is
/// not the gateway's reach the prefix's count but send no trigger (counted as unproven); the
/// next probe of the prefix, through the gateway, sends it.
#[test]
fn a_forged_prefix_never_triggers_a_real_one_does() {
    let pl = PathLab::new();
    let (gw, ifindex) = (pl.gateway_mac, pl.ifindex);
    let stranger = [0x02, 0xde, 0xad, 0xbe, 0xef, 0x02];
    let probe = |i: u32, mac: [u8; 6]| {
        Packet::tcp(&format!("2001:db8:77::{:x}", 0x100 + i), 111, SYN)
            .to("fd77::1".parse().unwrap())
            .from_mac(mac)
            .build()
    };
    let (forged, real): (Vec<_>, Vec<_>) = (
        (0..9).map(|i| probe(i, stranger)).collect(),
        vec![probe(9, gw)],
    );
    let (unproven, triggers, first, second) = pl.lab.protected.run(move || {
        let mut x = TestXdp::load(&portsentry::config::settings::LiveSettings {
            path_check: true,
            scan_trigger: 3,
            prefix_threshold: 3,
            ..settings("111", "")
        });
        for p in &forged {
            assert_eq!(x.run_on(p, ifindex), XDP_PASS);
        }
        let kinds = |x: &mut TestXdp| {
            x.events_of(EventKind::PrefixTrigger)
                .into_iter()
                .map(|e| (e.src.to_string(), e.prefix_len, e.count))
                .collect::<Vec<_>>()
        };
        let first = kinds(&mut x);
        for p in &real {
            assert_eq!(x.run_on(p, ifindex), XDP_PASS);
        }
        let second = kinds(&mut x);
        let s = x.stats();
        (
            s.get(Stat::PrefixUnproven),
            s.get(Stat::PrefixTriggers),
            first,
            second,
        )
    });
    assert!(first.is_empty(), "forged probes sent a trigger: {first:?}");
    assert_eq!(
        unproven, 1,
        "the 9th forged probe reached the count and was refused"
    );
    assert_eq!(second, [("2001:db8:77::".to_owned(), 64, 10)]);
    assert_eq!(triggers, 1);
}

/// The proof, end to end with real traffic: an attacker on the protected host's segment
/// (its own namespace, a macvlan next to the gateway) forges trap probes in the name of the
/// gateway, of a neighbour this host talks to, of bogus addresses and of 10 000 random internet
/// addresses. None of them is banned, the neighbour keeps its service, and a real `nmap -sS`
/// coming through the gateway from an unknown internet address is still banned on its first
/// probe. `--no-auto-allow`, so the allowlist cannot be what saves the gateway.
#[test]
fn a_forging_neighbour_bans_nothing_and_a_real_scanner_is_still_banned() {
    use std::time::Duration;

    let lab = Lab::new(2).unwrap();
    let s = lab.scanner.name.clone();
    let attacker = lab
        .lan_host("a", "atk0", Some("10.77.0.50/24"))
        .expect("the attacker's namespace");
    // The internet scanner's address, behind the gateway (the scanner namespace).
    ip(&["-n", &s, "addr", "add", "203.0.113.9/32", "dev", "lo"]).unwrap();

    let dir = TempDir::new("spoof-e2e").unwrap();
    let mut d = case::start(&lab, &dir, &case::settings(&lab, &dir));

    // This host talks to its neighbour 10.77.0.3 (a real service there) and to the internet
    // through its gateway, so both are in its neighbour table.
    let neighbour = lab.scanner_v4[1];
    let _service = lab.scanner.tcp_service(sock(neighbour, SERVICE));
    let me = lab.protected_v4;
    assert!(lab
        .protected
        .tcp_connect(me, sock(neighbour, SERVICE), Duration::from_secs(2)));
    let _ = lab.protected.tcp_connect(
        me,
        sock("198.51.100.1".parse().unwrap(), 80),
        Duration::from_millis(300),
    );

    let target = me.to_string();
    let forge = |source: &str, count: &str| {
        let mut args = vec!["-c", count, "-i", "u200", "-S", "-p", "111"];
        if source == "random" {
            args.push("--rand-source");
        } else {
            args.extend(["-a", source]);
        }
        args.push(&target);
        run_in(&attacker.ns, "hping3", &args, Duration::from_secs(20));
    };
    // (hping3 reads `-a 0.0.0.0` and `-a 255.255.255.255` as "no source given" and sends from
    // its own address, so those two are covered by the data-plane test above.)
    for source in [
        "10.77.0.2",
        "10.77.0.3",
        "127.0.0.1",
        "224.0.0.1",
        "239.1.2.3",
    ] {
        forge(source, "3");
    }
    forge("random", "10000");

    // A real scan from an unknown address, through the gateway.
    let internet: IpAddr = "203.0.113.9".parse().unwrap();
    let scan = case::syn_scan(&lab.scanner, &lab.scanner_iface, Some(internet), &target);
    d.expect_line("the real scanner's ban", |l| {
        l.starts_with("attackalert: Host 203.0.113.9 ")
    });
    assert!(
        scan.contains("111/filtered"),
        "the trap probe was answered: {scan}"
    );

    let bans = d.lines_matching(|l| l.starts_with("attackalert: Host "));
    assert_eq!(
        bans.len(),
        1,
        "only the real scanner may be banned; {} bans, first ones: {:?}",
        bans.len(),
        &bans[..bans.len().min(8)]
    );
    assert!(
        d.has_line(case::probe_line("10.77.0.2", "spoofed")),
        "the forged gateway probe is reported as spoofed\n{}",
        d.output()
    );
    // The neighbour still reaches this host and is reached by it.
    assert!(lab
        .protected
        .tcp_connect(me, sock(neighbour, SERVICE), Duration::from_secs(2)));
    d.stop_cleanly();
}

/// fe80::7 on one link and fe80::7 on another are two hosts: link-local probes are counted per
/// interface, so two probes on two links do not reach a trigger of 2, two on one link do.
#[test]
fn link_local_sources_are_counted_per_interface() {
    let pl = PathLab::new();
    let (veth, other) = (pl.ifindex, pl.lab.protected.ifindex("other0").unwrap());
    let verdicts = pl.lab.protected.run(move || {
        let x = TestXdp::load(&portsentry::config::settings::LiveSettings {
            scan_trigger: 2,
            ..settings("111", "")
        });
        let mut out = Vec::new();
        for src in ["fe80::7", "169.254.7.7"] {
            let probe = Packet::tcp(src, 111, SYN).build();
            out.push(x.run_on(&probe, veth));
            out.push(x.run_on(&probe, other));
            out.push(x.is_banned(src) as u32);
            out.push(x.run_on(&probe, veth));
            out.push(x.is_banned(src) as u32);
        }
        out
    });
    assert_eq!(
        verdicts,
        [XDP_PASS, XDP_PASS, 0, XDP_DROP, 1, XDP_PASS, XDP_PASS, 0, XDP_DROP, 1],
        "per link: pass, pass (another link), not banned, ban on the second probe of one link"
    );
}
