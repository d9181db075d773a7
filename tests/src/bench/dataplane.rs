//! Data-plane cost per packet: BPF_PROG_TEST_RUN with `repeat` on the real object, each path
//! divided by an empty XDP program (returns XDP_PASS) loaded and run the same way, interleaved
//! in the same loop so CPU frequency drift hits both alike.

use std::{net::IpAddr, path::Path};

use anyhow::{anyhow, Context, Result};
use aya::{
    programs::{TestRun, TestRunOptions, Xdp},
    Ebpf,
};
use portsentry::{config::settings::LiveSettings, net::cidr::Cidr};
use portsentry_common::{
    tcp_flags::{ACK, SYN},
    BanEntry, BanOrigin, IpProto, ScanType, Stat,
};

use super::{Figure, Plan};
use crate::{
    packets::Packet,
    xdp::{settings, TestXdp, XDP_DROP, XDP_PASS},
};

const SECTION: &str = "Data-plane cost per packet (BPF_PROG_TEST_RUN)";
/// Runs per test-run call for the pass and drop paths (~10 ms each).
const REPEAT: u32 = 200_000;
/// Probe runs emit one event each (the kernel's global event limit is turned off for them);
/// this stays below the ring buffer's capacity (≈18 k events), which is drained between calls,
/// so every probe pays for a real event.
const PROBE_REPEAT: u32 = 10_000;
const MAX_BANS: u32 = 1_048_576 + 1024;
/// Runs per call on a path that writes one diagnostic record (~100 bytes) each.
const DIAG_REPEAT: u32 = 500;

/// The empty program, loaded from the object `cargo xtask bench` built.
pub struct Baseline {
    ebpf: Ebpf,
}

impl Baseline {
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let mut ebpf = Ebpf::load(&bytes).context("loading the baseline object")?;
        let prog: &mut Xdp = ebpf
            .program_mut("baseline")
            .ok_or_else(|| anyhow!("no `baseline` program in {}", path.display()))?
            .try_into()?;
        prog.load()?;
        Ok(Self { ebpf })
    }

    fn program(&self) -> Result<&Xdp> {
        Ok(self
            .ebpf
            .program("baseline")
            .ok_or_else(|| anyhow!("baseline program"))?
            .try_into()?)
    }
}

/// One test-run call: (kernel-timed ns per run, wall-clock ns per run, verdict).
///
/// The kernel times its run loop and reports the mean per run in whole nanoseconds: the
/// program's own cost, ±1 ns. Wall-clock time over the call also includes work the kernel does
/// per run outside its timer (ring-buffer wake-ups, for one) and any time this thread was
/// scheduled out; the syscall itself is below 0.01 ns per run at these repeat counts.
fn ns_per_packet(prog: &Xdp, packet: &[u8], repeat: u32) -> Result<(f64, f64, u32)> {
    let t = std::time::Instant::now();
    let r = prog.test_run(TestRunOptions {
        data_in: Some(packet),
        repeat,
        ..Default::default()
    })?;
    let wall = t.elapsed().as_nanos() as f64 / f64::from(repeat);
    Ok((r.duration.as_nanos() as f64, wall, r.return_value))
}

fn ban(t: &mut TestXdp, addr: IpAddr) -> Result<()> {
    let entry = BanEntry {
        origin: BanOrigin::Manual as u8,
        proto: IpProto::Tcp as u8,
        port: 111,
        scan_type: ScanType::TcpSyn as u8,
        ..Default::default()
    };
    t.dp.insert_ban(addr, &entry)?;
    Ok(())
}

/// The n-th synthetic banned address: 10.0.0.0/8 first, then fd00::/8 (IPv6).
fn synthetic(n: u32) -> IpAddr {
    if n < (1 << 24) - 2 {
        IpAddr::from([10, (n >> 16) as u8, (n >> 8) as u8, n as u8])
    } else {
        IpAddr::from([0xfd00, 0, 0, 0, 0, 0, (n >> 16) as u16, n as u16])
    }
}

struct Paths {
    pass: Vec<u8>,
    drop: Vec<u8>,
    probe: Vec<u8>,
}

/// Samples of one path: kernel-timed and wall-clock ns per packet.
#[derive(Default)]
struct Samples {
    kernel: Vec<f64>,
    wall: Vec<f64>,
}

impl Samples {
    fn push(&mut self, (kernel, wall, _): (f64, f64, u32)) {
        self.kernel.push(kernel);
        self.wall.push(wall);
    }
}

/// Measures every path against the baseline, interleaved, `plan.reps` times.
fn measure(
    t: &mut TestXdp,
    base: &Baseline,
    paths: &Paths,
    label: &str,
    plan: Plan,
    out: &mut Vec<Figure>,
) -> Result<()> {
    let bprog = base.program()?;
    let (mut b, mut pass, mut drop, mut probe, mut held) = (
        Samples::default(),
        Samples::default(),
        Samples::default(),
        Samples::default(),
        Samples::default(),
    );
    for _ in 0..plan.reps {
        b.push(ns_per_packet(bprog, &paths.pass, REPEAT)?);
        let prog = t.dp.program()?;
        let r = ns_per_packet(prog, &paths.pass, REPEAT)?;
        anyhow::ensure!(r.2 == XDP_PASS, "pass path returned {}", r.2);
        pass.push(r);
        let r = ns_per_packet(prog, &paths.drop, REPEAT)?;
        anyhow::ensure!(r.2 == XDP_DROP, "drop path returned {}", r.2);
        drop.push(r);
        let r = ns_per_packet(prog, &paths.probe, PROBE_REPEAT)?;
        anyhow::ensure!(
            r.2 == XDP_PASS,
            "probe path returned {} (the probe source must never be banned)",
            r.2
        );
        probe.push(r);
        t.events();
        // A trap-port flood: the kernel's event limit (on, as the daemon sets it) holds back
        // all but its burst, so the probe path runs without the ring-buffer record.
        t.with_event_limit();
        let held_before = t.stats().get(Stat::EventsSuppressed);
        let r = ns_per_packet(t.dp.program()?, &paths.probe, REPEAT);
        let held_back = t.stats().get(Stat::EventsSuppressed) - held_before;
        t.without_event_limit();
        let r = r?;
        anyhow::ensure!(r.2 == XDP_PASS, "probe path returned {}", r.2);
        anyhow::ensure!(
            held_back >= u64::from(REPEAT) / 2,
            "only {held_back} of {REPEAT} events were held back"
        );
        held.push(r);
        t.events();
    }
    let baseline = Figure::new(
        SECTION,
        format!("empty XDP program ({label})"),
        "ns/packet",
        &b.kernel,
    );
    let pass_fig = Figure::new(
        SECTION,
        format!("pass path, {label}"),
        "ns/packet",
        &pass.kernel,
    )
    .against(&baseline)
    .at_most(2.0, "≤ 2.0×");
    out.push(pass_fig.clone());
    out.push(
        Figure::new(
            SECTION,
            format!("banned-drop path, {label}"),
            "ns/packet",
            &drop.kernel,
        )
        .against(&baseline),
    );
    out.push(
        Figure::new(
            SECTION,
            format!("guarded-probe path, {label}"),
            "ns/packet",
            &probe.kernel,
        )
        .against(&baseline),
    );
    // Equal footing: both kernel-timed, per run. The wall clock of a call is dominated by
    // test_run's fixed per-call cost (`call_overhead`), which weighs 20× more per packet on
    // the probe path's shorter calls, so it is no measure of either path.
    out.push(
        Figure::new(
            SECTION,
            format!("guarded-probe path (event sent) vs pass path, {label}"),
            "ns/packet",
            &probe.kernel,
        )
        .against(&pass_fig),
    );
    // What caps how fast a trap-port flood is absorbed: the probe path with its event held
    // back by the kernel's limit.
    out.push(
        Figure::new(
            SECTION,
            format!("guarded-probe path, flood (event held back) vs pass path, {label}"),
            "ns/packet",
            &held.kernel,
        )
        .against(&pass_fig)
        .at_most(3.0, "≤ 3.0× pass"),
    );
    out.push(baseline);
    out.push(call_overhead(&b, REPEAT, label));
    Ok(())
}

/// What one test_run call costs beyond its runs, from the empty program's samples: wall time
/// minus `repeat` kernel-timed runs. With `repeat > 1` the kernel swaps the program into the
/// XDP dispatcher before the runs and out after them, each swap waiting for an RCU grace
/// period (net/bpf/test_run.c, `bpf_prog_change_xdp`): milliseconds per call, the same for
/// every program, and the whole of the "1 600 ns wall clock" once reported for the probe path
/// (16 ms over its 10 000 runs).
fn call_overhead(b: &Samples, repeat: u32, label: &str) -> Figure {
    let per_call: Vec<f64> = b
        .wall
        .iter()
        .zip(&b.kernel)
        .map(|(wall, kernel)| (wall - kernel) * f64::from(repeat) / 1e6)
        .collect();
    Figure::new(
        SECTION,
        format!("test_run fixed cost per call, repeat > 1 ({label})"),
        "ms/call",
        &per_call,
    )
}

pub fn run(plan: Plan, baseline_object: &Path) -> Result<Vec<Figure>> {
    let base = Baseline::load(baseline_object)?;
    // The probe source counts but is never banned: a trigger no scanner reaches.
    let s = LiveSettings {
        scan_trigger: u32::MAX,
        ..settings("111", "")
    };
    let mut t = TestXdp::load_with(&s, &[], &[], Some(MAX_BANS));
    t.without_event_limit();
    let paths = Paths {
        pass: Packet::tcp("192.0.2.10", 443, ACK).build(),
        drop: Packet::tcp("198.51.100.7", 443, SYN).build(),
        probe: Packet::tcp("203.0.113.9", 111, SYN).build(),
    };
    ban(&mut t, "198.51.100.7".parse()?)?;

    let mut figures = Vec::new();
    measure(&mut t, &base, &paths, "0 other bans", plan, &mut figures)?;
    let mut loaded = 0u32;
    for target in [10_000u32, 1_000_000] {
        eprintln!("portsentry-bench: dataplane: loading {target} bans…");
        while loaded < target {
            ban(&mut t, synthetic(loaded))?;
            loaded += 1;
        }
        let label = if target >= 1_000_000 {
            "1 M bans".to_owned()
        } else {
            format!("{} k bans", target / 1000)
        };
        measure(&mut t, &base, &paths, &label, plan, &mut figures)?;
    }
    // Flatness: the pass path at 1 M bans against itself at 0 bans.
    let pass_at = |label: &str| {
        figures
            .iter()
            .find(|f| f.name == format!("pass path, {label}"))
            .cloned()
    };
    if let (Some(zero), Some(million)) = (pass_at("0 other bans"), pass_at("1 M bans")) {
        let mut flat = million.clone();
        flat.name = "pass path at 1 M bans vs 0 bans".into();
        flat.baseline = Some((zero.name.clone(), zero.median));
        let r = flat.ratio().unwrap_or(f64::NAN);
        flat.target = Some("flat ±5 %".into());
        flat.met = Some((0.95..=1.05).contains(&r));
        figures.push(flat);
    }

    // 10 k allowlist networks (consulted only for would-be probes) on top of the 1 M bans.
    let allow: Vec<Cidr> = (0..10_000u32)
        .map(|i| format!("100.{}.{}.0/24", 64 + (i >> 8), i & 0xff).parse())
        .collect::<Result<_, _>>()?;
    t.configure(&s, &allow, &[]);
    t.without_event_limit();
    measure(
        &mut t,
        &base,
        &paths,
        "1 M bans + 10 k allowlist CIDRs",
        plan,
        &mut figures,
    )?;
    drop(t);
    figures.extend(xdp_filter_peers(plan, &base)?);
    figures.extend(ipv6_probe(plan, &base)?);
    figures.extend(diagnostics_cost(plan, &base)?);
    figures.extend(spoof_checks(plan, baseline_object)?);
    Ok(figures)
}

/// Our pass and banned-drop paths against xdp-filter's programs ([`super::xdp_filter`]) on the
/// same packets, with the empty program, in the same loop. Ours guards port 111 and bans
/// 198.51.100.7; the blocklist programs block that source, a few ports and a MAC; the
/// allowlist program lets the pass packet's port (443) through. Skipped, with a line saying
/// so, when `cargo xtask bench` did not stage the objects.
fn xdp_filter_peers(plan: Plan, base: &Baseline) -> Result<Vec<Figure>> {
    use super::xdp_filter::{Rules, XdpFilter, OBJECTS_ENV};
    let Some(dir) = std::env::var_os(OBJECTS_ENV).map(std::path::PathBuf::from) else {
        eprintln!(
            "portsentry-bench: dataplane: no xdp-filter peer rows: {OBJECTS_ENV} is not set (run `cargo xtask bench`)"
        );
        return Ok(Vec::new());
    };
    let banned: IpAddr = "198.51.100.7".parse()?;
    let blocklist = Rules {
        ports: &[23, 111, 135, 445, 3389],
        sources: &[banned, "203.0.113.66".parse()?, "2001:db8:bad::1".parse()?],
        macs: &[[0x02, 0xde, 0xad, 0xbe, 0xef, 0x01]],
    };
    let allowlist = Rules {
        ports: &[22, 80, 443],
        sources: &[],
        macs: &[],
    };
    let alw_all = XdpFilter::load(&dir, "xdpfilt_alw_all", &blocklist)?;
    let alw_ip = XdpFilter::load(&dir, "xdpfilt_alw_ip", &blocklist)?;
    let dny_all = XdpFilter::load(&dir, "xdpfilt_dny_all", &allowlist)?;
    let s = LiveSettings {
        scan_trigger: u32::MAX,
        ..settings("111", "")
    };
    let mut ours = TestXdp::load(&s);
    ban(&mut ours, banned)?;
    let pass = Packet::tcp("192.0.2.10", 443, ACK).build();
    let drop = Packet::tcp(&banned.to_string(), 443, SYN).build();
    let expect = |r: (f64, f64, u32), verdict: u32, what: &str| -> Result<f64> {
        anyhow::ensure!(r.2 == verdict, "{what} returned {}", r.2);
        Ok(r.0)
    };
    let bprog = base.program()?;
    let mut samples: [Vec<f64>; 7] = Default::default();
    for _ in 0..plan.reps {
        samples[0].push(ns_per_packet(bprog, &pass, REPEAT)?.0);
        let prog = ours.dp.program()?;
        let r = ns_per_packet(prog, &pass, REPEAT)?;
        samples[1].push(expect(r, XDP_PASS, "our pass path")?);
        let r = ns_per_packet(prog, &drop, REPEAT)?;
        samples[2].push(expect(r, XDP_DROP, "our banned-drop path")?);
        let r = ns_per_packet(alw_all.program()?, &pass, REPEAT)?;
        samples[3].push(expect(r, XDP_PASS, "xdpfilt_alw_all on the pass packet")?);
        let r = ns_per_packet(alw_all.program()?, &drop, REPEAT)?;
        samples[4].push(expect(
            r,
            XDP_DROP,
            "xdpfilt_alw_all on the blocked source",
        )?);
        let r = ns_per_packet(alw_ip.program()?, &pass, REPEAT)?;
        samples[5].push(expect(r, XDP_PASS, "xdpfilt_alw_ip on the pass packet")?);
        let r = ns_per_packet(dny_all.program()?, &pass, REPEAT)?;
        samples[6].push(expect(r, XDP_PASS, "xdpfilt_dny_all on an allowed port")?);
    }
    // Not "pass path, …": the size chart groups those by ban-table size.
    let label = "xdp-filter loop";
    let empty = Figure::new(
        SECTION,
        format!("empty XDP program ({label})"),
        "ns/packet",
        &samples[0],
    );
    let peer = |i: usize, name: &str| {
        Figure::new(
            SECTION,
            format!("xdp-filter {name}"),
            "ns/packet",
            &samples[i],
        )
        .against(&empty)
    };
    let peer_pass = peer(3, "xdpfilt_alw_all (blocklist, every feature): pass path");
    let peer_drop = peer(4, "xdpfilt_alw_all: blocked-source drop path");
    let ours_pass = Figure::new(
        SECTION,
        format!("pass path ({label})"),
        "ns/packet",
        &samples[1],
    );
    let ours_drop = Figure::new(
        SECTION,
        format!("banned-drop path ({label})"),
        "ns/packet",
        &samples[2],
    );
    Ok(vec![
        ours_pass.clone().against(&empty).at_most(2.0, "≤ 2.0×"),
        ours_pass
            .clone()
            .named("pass path vs xdp-filter's pass path")
            .against(&peer_pass)
            // In front of every packet, a port-scan blocker should cost no more than a
            // general-purpose blocklist program (xdp-filter, every feature) does.
            .at_most(1.0, "≤ 1.0× xdp-filter"),
        ours_drop.clone().against(&empty),
        ours_drop
            .named("banned-drop path vs xdp-filter's drop path")
            .against(&peer_drop),
        peer_pass,
        peer_drop,
        peer(5, "xdpfilt_alw_ip (blocklist, addresses only): pass path"),
        peer(
            6,
            "xdpfilt_dny_all (allowlist, every feature): allowed-port pass path",
        ),
        empty,
    ])
}

/// An IPv6 source's probe also counts against its /64 (`ipv6_prefix`, on by default; IPv4's
/// aggregation is off by default, so the IPv4 rows above skip it): the IPv6 pass path and the
/// IPv6 probe path, with its event sent and held back, in the same loop.
fn ipv6_probe(plan: Plan, base: &Baseline) -> Result<Vec<Figure>> {
    let s = LiveSettings {
        scan_trigger: u32::MAX,
        ..settings("111", "")
    };
    let mut t = TestXdp::load(&s);
    let pass = Packet::tcp("2001:db8:1::10", 443, ACK).build();
    let probe = Packet::tcp("2001:db8:2::9", 111, SYN).build();
    let bprog = base.program()?;
    let (mut b, mut p, mut sent, mut held) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..plan.reps {
        b.push(ns_per_packet(bprog, &pass, REPEAT)?.0);
        p.push(ns_per_packet(t.dp.program()?, &pass, REPEAT)?.0);
        t.without_event_limit();
        sent.push(ns_per_packet(t.dp.program()?, &probe, PROBE_REPEAT)?.0);
        t.events();
        t.with_event_limit();
        held.push(ns_per_packet(t.dp.program()?, &probe, REPEAT)?.0);
        t.events();
    }
    let prefix_hits = t.dp.stats()?.get(Stat::PrefixTriggers);
    anyhow::ensure!(
        prefix_hits == 0,
        "the bench probe must never trigger its prefix"
    );
    let empty = Figure::new(SECTION, "empty XDP program (IPv6)", "ns/packet", &b);
    let pass = Figure::new(SECTION, "pass path, IPv6", "ns/packet", &p).against(&empty);
    Ok(vec![
        Figure::new(
            SECTION,
            "guarded-probe path, IPv6 with /64 counting (event sent) vs pass path",
            "ns/packet",
            &sent,
        )
        .against(&pass),
        Figure::new(
            SECTION,
            "guarded-probe path, IPv6 with /64 counting, flood (event held back) vs pass path",
            "ns/packet",
            &held,
        )
        .against(&pass)
        .at_most(3.0, "≤ 3.0× pass"),
        pass,
        empty,
    ])
}

/// The XDP program's diagnostics (aya-log, `log_level`) are compiled in: off (the default) the
/// verifier removes them, on they write a record where they fire. Both programs in the same
/// loop: the pass path (no diagnostic on it), and a bogus-source probe (one debug record).
fn diagnostics_cost(plan: Plan, base: &Baseline) -> Result<Vec<Figure>> {
    let s = settings("111", "");
    let off = TestXdp::load_with_log_level(&s, 0);
    let mut on = TestXdp::load_with_log_level(&s, 5);
    // Drained after each call, as the daemon does, so every record finds room in AYA_LOGS
    // (128 KiB: DIAG_REPEAT records fit).
    let mut records = on
        .dp
        .take_logger()
        .ok_or_else(|| anyhow!("no diagnostics reader at log_level 5"))?;
    let pass = Packet::tcp("192.0.2.10", 443, ACK).build();
    let bogus = Packet::tcp("127.0.0.9", 111, SYN).build();
    let bprog = base.program()?;
    let mut samples: [Vec<f64>; 5] = Default::default();
    for _ in 0..plan.reps {
        samples[0].push(ns_per_packet(bprog, &pass, REPEAT)?.0);
        samples[1].push(ns_per_packet(off.dp.program()?, &pass, REPEAT)?.0);
        samples[2].push(ns_per_packet(on.dp.program()?, &pass, REPEAT)?.0);
        samples[3].push(ns_per_packet(off.dp.program()?, &bogus, DIAG_REPEAT)?.0);
        samples[4].push(ns_per_packet(on.dp.program()?, &bogus, DIAG_REPEAT)?.0);
        records.flush();
    }
    let empty = Figure::new(
        SECTION,
        "empty XDP program (diagnostics)",
        "ns/packet",
        &samples[0],
    );
    let pass_off = Figure::new(
        SECTION,
        "pass path, log_level off",
        "ns/packet",
        &samples[1],
    )
    .against(&empty);
    let pass_on = Figure::new(
        SECTION,
        "pass path, log_level trace",
        "ns/packet",
        &samples[2],
    )
    .against(&pass_off)
    .at_most(1.10, "≤ 1.10× off");
    let bogus_off = Figure::new(
        SECTION,
        "bogus-source probe, log_level off",
        "ns/packet",
        &samples[3],
    )
    .against(&empty);
    let bogus_on = Figure::new(
        SECTION,
        "bogus-source probe, log_level debug (one record)",
        "ns/packet",
        &samples[4],
    )
    .against(&bogus_off);
    Ok(vec![pass_off, pass_on, bogus_off, bogus_on, empty])
}

/// What the spoof checks cost where they run, in a lab namespace with real routes: a bogus
/// source's probe (refused before counting) and a would-be ban that the path check refuses (a
/// forged gateway address from another MAC: count, one route lookup, no ban, so it repeats),
/// against the guarded-probe path below the trigger and the empty program, in the same loop.
fn spoof_checks(plan: Plan, baseline_object: &Path) -> Result<Vec<Figure>> {
    let lab = crate::lab::Lab::new(1)?;
    let p = lab.protected.name.clone();
    let gateway_mac = crate::lab::mac_of(&lab.scanner.name, &lab.scanner_iface)?;
    crate::lab::ip(&[
        "-n",
        &p,
        "neigh",
        "replace",
        "10.77.0.2",
        "lladdr",
        &gateway_mac,
        "dev",
        &lab.iface,
        "nud",
        "permanent",
    ])?;
    crate::lab::ip(&[
        "netns",
        "exec",
        &p,
        "sysctl",
        "-qw",
        "net.ipv4.conf.lo.forwarding=1",
    ])
    .with_context(|| format!("enabling lo forwarding in {p}"))?;
    let iface = lab.iface.clone();
    let object = baseline_object.to_owned();
    lab.protected.run(move || -> Result<Vec<Figure>> {
        let ifindex = nix::net::if_::if_nametoindex(iface.as_str())?;
        let base = Baseline::load(&object)?;
        let mut below_trigger = TestXdp::load(&LiveSettings {
            scan_trigger: u32::MAX,
            path_check: true,
            ..settings("111", "")
        });
        below_trigger.without_event_limit();
        let checked = TestXdp::load(&LiveSettings {
            path_check: true,
            ..settings("111", "")
        });
        let to = "10.77.0.1".parse()?;
        let stranger = [0x02, 0xde, 0xad, 0xbe, 0xef, 0x01];
        let probe = Packet::tcp("203.0.113.9", 111, SYN).to(to).build();
        let bogus = Packet::tcp("224.0.0.1", 111, SYN).to(to).build();
        let forged = Packet::tcp("10.77.0.2", 111, SYN)
            .to(to)
            .from_mac(stranger)
            .build();
        let run = |prog: &Xdp, packet: &[u8]| -> Result<(f64, f64, u32)> {
            let fields = [0, packet.len() as u32, 0, ifindex, 0, 0];
            let ctx: Vec<u8> = fields.iter().flat_map(|f| f.to_ne_bytes()).collect();
            let t0 = std::time::Instant::now();
            let r = prog.test_run(TestRunOptions {
                data_in: Some(packet),
                ctx_in: Some(&ctx),
                repeat: PROBE_REPEAT,
                ..Default::default()
            })?;
            let wall = t0.elapsed().as_nanos() as f64 / f64::from(PROBE_REPEAT);
            Ok((r.duration.as_nanos() as f64, wall, r.return_value))
        };
        let mut b = Samples::default();
        let mut probe_s = Samples::default();
        let mut bogus_s = Samples::default();
        let mut forged_s = Samples::default();
        let (mut below_trigger, mut checked) = (below_trigger, checked);
        for _ in 0..plan.reps {
            b.push(run(base.program()?, &probe)?);
            probe_s.push(run(below_trigger.dp.program()?, &probe)?);
            below_trigger.events();
            let r = run(checked.dp.program()?, &bogus)?;
            anyhow::ensure!(r.2 == XDP_PASS, "bogus probe returned {}", r.2);
            bogus_s.push(r);
            let r = run(checked.dp.program()?, &forged)?;
            anyhow::ensure!(
                r.2 == XDP_PASS && !checked.is_banned("10.77.0.2"),
                "the forged probe must be refused by the path check"
            );
            forged_s.push(r);
            checked.events();
        }
        let label = "lab namespace";
        let baseline = Figure::new(
            SECTION,
            format!("empty XDP program ({label})"),
            "ns/packet",
            &b.kernel,
        );
        let probe_fig = Figure::new(
            SECTION,
            format!("guarded-probe path, {label}"),
            "ns/packet",
            &probe_s.kernel,
        )
        .against(&baseline);
        Ok(vec![
            Figure::new(
                SECTION,
                format!("bogus-source probe (refused before counting), {label}"),
                "ns/packet",
                &bogus_s.kernel,
            )
            .against(&probe_fig),
            Figure::new(
                SECTION,
                format!("would-be ban refused by the path check (route lookup), {label}"),
                "ns/packet",
                &forged_s.kernel,
            )
            .against(&probe_fig),
            probe_fig,
            baseline,
        ])
    })
}
