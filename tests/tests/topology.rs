//! Real topologies under the path check (issue 25, items 1 and 10): a guarded interface that is
//! a bridge port, a bond slave or a VLAN parent bans honest scanners, whose route back leaves
//! by the upper device, and still refuses forged sources; and one ARP request or ND message
//! that repoints a neighbour's entry at an attacker does not let a forged probe ban the victim.
//! Bond and VLAN labs need the kernel's bonding and 8021q support: where it is missing, those
//! tests say so and skip.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use portsentry::{config::settings::Settings, dataplane::AttachMode};
use portsentry_common::{tcp_flags::SYN, LinkKey, Stat, UpperLinks};
use portsentry_tests::{
    case::{self, attackalert},
    lab::{self, mac_bytes_of, mac_of, run_in, Daemon, Lab, LanHost, TempDir},
    packets::{self, Packet},
    xdp::{settings, TestXdp, XDP_DROP, XDP_PASS},
};

/// `ip ARGS`, which must succeed.
fn ip(args: &[&str]) {
    lab::ip(args).unwrap_or_else(|e| panic!("{e:#}"));
}

/// `ip ARGS`, its error (with the kernel's words) if it failed.
fn try_ip(args: &[&str]) -> Result<(), String> {
    lab::ip(args).map_err(|e| format!("{e:#}"))
}

/// Moves the protected side's addresses and default route from the lab's veth onto `upper`
/// (a bridge or bond the veth was made a port of), plus a second interface other0
/// (10.99.0.1/24) that a forged source can be routed out of.
fn addresses_onto(lab: &Lab, upper: &str) {
    let p = &lab.protected.name;
    ip(&["-n", p, "addr", "flush", "dev", &lab.iface]);
    ip(&["-n", p, "addr", "add", "10.77.0.1/24", "dev", upper]);
    ip(&["-n", p, "addr", "add", "fd77::1/64", "dev", upper, "nodad"]);
    ip(&["-n", p, "link", "set", upper, "up"]);
    ip(&[
        "-n",
        p,
        "route",
        "replace",
        "default",
        "via",
        "10.77.0.2",
        "dev",
        upper,
    ]);
    lab.add_other_interface().expect("other0");
}

/// The case's settings, attached in native mode (as on a real NIC).
fn native(lab: &Lab, dir: &TempDir) -> Settings {
    let mut s = case::settings(lab, dir);
    s.startup.xdp_mode = AttachMode::Native;
    s
}

/// The daemon guarding the lab's veth (native XDP) sees an honest `nmap -sS` from the scanner
/// and bans it, names the upper device at attach, and refuses a forged source that routes out
/// of another interface.
fn honest_scan_bans_and_forgery_is_refused(lab: &Lab, upper: &str, role: &str) {
    let dir = TempDir::new("topology").unwrap();
    let mut d = case::start(lab, &dir, &native(lab, &dir));
    let attach = format!(
        "portsentry: {} is {role} {upper}: routes via {upper} count as {}",
        lab.iface, lab.iface
    );
    d.expect_line(&format!("the attach line {attach:?}"), |l| l == attach);
    let target = lab.protected_v4.to_string();
    // A forged source routed out of other0, arriving on the port: still spoofed.
    let forged_src = "10.99.0.5";
    case::forged_syns(
        &lab.scanner,
        forged_src,
        lab.protected_v4,
        111,
        3,
        Duration::from_micros(200),
    );
    d.expect_line(
        "the forged probe refused as spoofed",
        case::probe_line(forged_src, "spoofed"),
    );
    let scan = case::syn_scan(&lab.scanner, &lab.scanner_iface, None, &target);
    d.expect_line(
        &format!("the honest scanner's ban ({upper}): {scan}"),
        |l| l.starts_with("attackalert: Host 10.77.0.2 "),
    );
    assert!(
        !d.has_line(|l| l.starts_with("attackalert: Host 10.99.0.5 ")),
        "the forged source was banned\n{}",
        d.output()
    );
    d.stop_cleanly();
}

#[test]
fn an_honest_scan_on_a_bridge_port_bans_and_a_forged_source_is_still_refused() {
    let lab = Lab::new(2).unwrap();
    let p = &lab.protected.name;
    ip(&["-n", p, "link", "add", "br0", "type", "bridge"]);
    ip(&["-n", p, "link", "set", &lab.iface, "master", "br0"]);
    addresses_onto(&lab, "br0");
    honest_scan_bans_and_forgery_is_refused(&lab, "br0", "a port of");
}

#[test]
fn an_honest_scan_on_a_bond_slave_bans() {
    let lab = Lab::new(2).unwrap();
    let p = &lab.protected.name;
    if let Err(e) = try_ip(&["-n", p, "link", "add", "bond0", "type", "bond"]) {
        portsentry_tests::skip::skip(
            "an_honest_scan_on_a_bond_slave_bans",
            &format!("this kernel cannot make a bond ({e})"),
        );
        return;
    }
    ip(&["-n", p, "link", "set", &lab.iface, "down"]);
    ip(&["-n", p, "link", "set", &lab.iface, "master", "bond0"]);
    ip(&["-n", p, "link", "set", &lab.iface, "up"]);
    addresses_onto(&lab, "bond0");
    honest_scan_bans_and_forgery_is_refused(&lab, "bond0", "a slave of");
}

#[test]
fn an_honest_scan_tagged_for_a_vlan_device_bans_on_its_parent() {
    let lab = Lab::new(2).unwrap();
    let (p, s) = (&lab.protected.name, &lab.scanner.name);
    let vp = format!("{}.100", lab.iface);
    let vs = format!("{}.100", lab.scanner_iface);
    if let Err(e) = try_ip(&[
        "-n", p, "link", "add", "link", &lab.iface, "name", &vp, "type", "vlan", "id", "100",
    ]) {
        portsentry_tests::skip::skip(
            "an_honest_scan_tagged_for_a_vlan_device_bans_on_its_parent",
            &format!("this kernel cannot make a VLAN device ({e})"),
        );
        return;
    }
    ip(&[
        "-n",
        s,
        "link",
        "add",
        "link",
        &lab.scanner_iface,
        "name",
        &vs,
        "type",
        "vlan",
        "id",
        "100",
    ]);
    ip(&["-n", p, "addr", "add", "10.78.0.1/24", "dev", &vp]);
    ip(&["-n", s, "addr", "add", "10.78.0.2/24", "dev", &vs]);
    ip(&["-n", p, "link", "set", &vp, "up"]);
    ip(&["-n", s, "link", "set", &vs, "up"]);
    // The tag must be in the frame XDP sees, not in offload metadata.
    for (ns, dev) in [
        (&lab.scanner, &lab.scanner_iface),
        (&lab.protected, &lab.iface),
    ] {
        let _ = run_in(
            ns,
            "ethtool",
            &["-K", dev, "txvlan", "off", "rxvlan", "off"],
            Duration::from_secs(5),
        );
    }
    let dir = TempDir::new("topology-vlan").unwrap();
    let mut d = case::start(&lab, &dir, &native(&lab, &dir));
    d.expect_line("carries VLAN 100 for …", |l| {
        l.contains(&format!("carries VLAN 100 for {vp}"))
    });
    case::syn_scan(&lab.scanner, &vs, None, "10.78.0.1");
    d.expect_line("the ban", |l| l.starts_with("attackalert: Host 10.78.0.2 "));
    d.stop_cleanly();
}

/// The kernel side of the upper-link rule, on the real object in a lab namespace (this kernel
/// has no VLAN devices, so the daemon's entries are written by hand): an untagged frame or a
/// frame tagged 100 may be routed back via the upper device its entry names, a frame tagged 200
/// whose entry names another device is refused, and without an entry the ingress alone counts.
#[test]
fn tagged_and_untagged_frames_are_checked_against_their_upper_devices() {
    let lab = Lab::new(1).unwrap();
    let p = lab.protected.name.clone();
    lab.add_other_interface().expect("other0");
    let host_mac = [0x02, 0x99, 0, 0, 0, 5];
    for host in ["10.99.0.5", "10.99.0.6", "10.99.0.7"] {
        ip(&[
            "-n",
            &p,
            "neigh",
            "replace",
            host,
            "lladdr",
            "02:99:00:00:00:05",
            "dev",
            "other0",
            "nud",
            "permanent",
        ]);
    }
    lab.protected
        .sysctl("net.ipv4.conf.lo.forwarding", "1")
        .unwrap();
    let (ingress, other) = (
        lab.protected.ifindex(&lab.iface).unwrap(),
        lab.protected.ifindex("other0").unwrap(),
    );
    let (spoofed, bans) = lab.protected.run(move || {
        let mut x = TestXdp::load(&portsentry::config::settings::LiveSettings {
            path_check: true,
            ..settings("111", "")
        });
        let probe = |src: &str, vid: Option<u16>| {
            let mut p = Packet::tcp(src, 111, SYN)
                .to("10.77.0.1".parse().unwrap())
                .from_mac(host_mac);
            if let Some(v) = vid {
                p = p.vlan(0x8100, v);
            }
            p.build()
        };
        // No entry: routed out of other0, arriving here untagged: spoofed.
        assert_eq!(
            x.run_on(&probe("10.99.0.5", None), ingress),
            XDP_PASS,
            "no entry"
        );
        let mut entries = std::collections::BTreeMap::new();
        let up = |i: u32| {
            let mut v = UpperLinks::default();
            v.ifindex[0] = i;
            v
        };
        let key = |o, i| LinkKey {
            ifindex: ingress,
            outer_vid: o,
            inner_vid: i,
        };
        entries.insert(key(0, 0), up(other));
        entries.insert(key(100, 0), up(other));
        entries.insert(key(200, 0), up(9999));
        x.dp.set_upper_links(&entries).expect("upper links");
        assert_eq!(x.dp.upper_links().unwrap().len(), 3);
        // Untagged, the port of "other0": banned, verified by the neighbour's MAC.
        assert_eq!(
            x.run_on(&probe("10.99.0.5", None), ingress),
            XDP_DROP,
            "untagged via upper"
        );
        // Tagged 100, whose VLAN device is "other0": banned.
        assert_eq!(
            x.run_on(&probe("10.99.0.6", Some(100)), ingress),
            XDP_DROP,
            "tag 100"
        );
        // Tagged 200, whose VLAN device is another one: spoofed (before layout 9 a tagged
        // frame's interface was not compared at all, and this banned).
        assert_eq!(
            x.run_on(&probe("10.99.0.7", Some(200)), ingress),
            XDP_PASS,
            "tag 200"
        );
        let s = x.stats();
        (s.get(Stat::Spoofed), s.get(Stat::Bans))
    });
    assert_eq!((spoofed, bans), (2, 2));
}

/// A LAN attacker (its own namespace, a macvlan beside the scanner) and a victim this host
/// talks to (10.77.0.3 / fd77::3, behind the scanner's MAC).
struct ArpLab {
    /// Before `lab`: its namespace goes first, as the lab's link it hangs off still exists.
    attacker: LanHost,
    lab: Lab,
    protected_mac: [u8; 6],
}

impl ArpLab {
    fn new() -> Self {
        let lab = Lab::new(2).unwrap();
        let attacker = lab
            .lan_host("a", "atk0", None)
            .expect("the attacker's namespace");
        let protected_mac = mac_bytes_of(&lab.protected.name, &lab.iface).unwrap();
        Self {
            attacker,
            lab,
            protected_mac,
        }
    }
}

impl ArpLab {
    /// This host knows the victim: a neighbour entry with the victim's MAC that ARP/ND may
    /// update (not permanent), as after talking to it, without making it a learned peer
    /// (whose SYNs get a SYN cookie instead of a ban; that path has its own hook).
    fn knows_victim(&self, victim: IpAddr) {
        let victim_mac = mac_of(&self.lab.scanner.name, &self.lab.scanner_iface).unwrap();
        ip(&[
            "-n",
            &self.lab.protected.name,
            "neigh",
            "replace",
            &victim.to_string(),
            "lladdr",
            &victim_mac,
            "dev",
            &self.lab.iface,
            "nud",
            "stale",
        ]);
    }

    /// A daemon with the case's settings, this host knowing `victim` ([`ArpLab::knows_victim`]).
    fn start(&self, dir: &TempDir, victim: IpAddr) -> Daemon {
        let d = case::start(&self.lab, dir, &case::settings(&self.lab, dir));
        self.knows_victim(victim);
        d
    }

    /// From the attacker, in one burst: `announcement` (an ARP request or a neighbour
    /// solicitation claiming `victim` with the attacker's MAC), then two SYNs to the trap port
    /// forged in `victim`'s name. The flip is logged, the probe refused as contested, and
    /// `victim` not banned.
    fn flip_then_forged_syn(&self, d: &mut Daemon, victim: IpAddr, announcement: Vec<u8>) {
        let to = match victim {
            IpAddr::V4(_) => self.lab.protected_v4,
            IpAddr::V6(_) => self.lab.protected_v6,
        };
        let mut syn = Packet::tcp(&victim.to_string(), 111, SYN)
            .to(to)
            .from_mac(self.attacker.mac)
            .build();
        syn[..6].copy_from_slice(&self.protected_mac);
        self.attacker
            .ns
            .send_frames("atk0", vec![announcement, syn.clone(), syn]);
        let flip = format!("portsentry: neighbour flip: {victim} on ");
        d.expect_line("the flip", |l| {
            l.starts_with(&flip) && l.contains("contested for ") && !l.contains("not contested")
        });
        d.expect_line(
            "the forged probe refused as contested",
            case::probe_line(victim, "contested"),
        );
        std::thread::sleep(Duration::from_millis(300));
        d.expect_no_line("the victim's ban", attackalert(victim));
    }
}

/// One ARP request "who-has 10.77.0.1 tell 10.77.0.3" from the attacker's MAC repoints this
/// host's entry for 10.77.0.3 at the attacker; the forged SYN that follows at once (same
/// microsecond burst) must not ban 10.77.0.3, and the flip is logged. Before layout 9 the
/// probe passed the path check's MAC comparison and banned the victim, verified.
#[test]
fn one_arp_request_does_not_let_a_forged_probe_ban_its_victim() {
    let al = ArpLab::new();
    let lab = &al.lab;
    let dir = TempDir::new("arp-flip").unwrap();
    let victim = lab.scanner_v4[1];
    let mut d = al.start(&dir, victim);
    let IpAddr::V4(victim_v4) = victim else {
        unreachable!()
    };
    let arp = packets::arp(
        1,
        [0xff; 6],
        al.attacker.mac,
        victim_v4,
        Ipv4Addr::new(10, 77, 0, 1),
    );
    al.flip_then_forged_syn(&mut d, victim, arp);
    // An honest scanner on the same link is still banned.
    case::syn_scan(
        &lab.scanner,
        &lab.scanner_iface,
        Some(lab.scanner_v4[0]),
        &lab.protected_v4.to_string(),
    );
    d.expect_line("the ban", |l| l.starts_with("attackalert: Host 10.77.0.2 "));
    d.stop_cleanly();
}

/// The same with IPv6: one neighbour solicitation from fd77::3 with the attacker's MAC as its
/// source link-layer option.
#[test]
fn one_neighbour_solicitation_does_not_let_a_forged_probe_ban_its_victim() {
    let al = ArpLab::new();
    let lab = &al.lab;
    let dir = TempDir::new("nd-flip").unwrap();
    let victim = lab.scanner_v6[1];
    let mut d = al.start(&dir, victim);
    let IpAddr::V6(victim_v6) = victim else {
        unreachable!()
    };
    let me: Ipv6Addr = "fd77::1".parse().unwrap();
    let ns = packets::neighbour_solicitation(al.attacker.mac, victim_v6, me);
    al.flip_then_forged_syn(&mut d, victim, ns);
    d.stop_cleanly();
}
