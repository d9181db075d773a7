//! Flood drop cost: trafgen floods a banned source's UDP packets into the protected namespace;
//! we compare the CPU per packet (softirq time from /proc/stat, where veth's receive path and
//! every filter below run) and the packet rate for portsentry's XDP drop, an nftables `netdev`
//! ingress drop, an nftables `inet` input drop, and no filter at all.
//!
//! Two delivery paths, because veth is not a NIC:
//! - skb path: trafgen sends on the scanner's veth. The packet is an skb before the protected
//!   side sees it, and native XDP on veth must first copy such an skb into a page of its own
//!   (its head is not a page fragment), a cost no physical NIC has.
//! - frame path: trafgen sends into a second veth pair whose far end redirects every packet
//!   (XDP_REDIRECT, `forward` program) to the scanner's veth, so it reaches the protected veth
//!   through `ndo_xdp_xmit` as a raw frame with no skb, as a NIC's DMA buffer reaches XDP.
//!   The generator side's cost (skb copy and redirect) is the same for every setup.

use std::{
    collections::HashMap,
    os::unix::process::CommandExt,
    process::Stdio,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use aya::{
    maps::DevMap,
    programs::{Xdp, XdpMode},
    Ebpf,
};

use super::{Figure, Plan};
use crate::lab::{sock, veth_pair, DaemonArgs, Lab, Netns, TempDir};

const SKB_SECTION: &str = "Flood drop cost, skb path (trafgen → veth)";
const FRAME_SECTION: &str =
    "Flood drop cost, frame path (trafgen → XDP_REDIRECT → veth, no skb before the filter)";
/// The generator's veth pair in the scanner namespace for the frame path.
const GEN_IN: &str = "psgen0";
const GEN_OUT: &str = "psgen1";
const TRAP: u16 = 111;
/// The flood's UDP destination port.
const FLOOD_PORT: u16 = 9999;

/// CPU time counters from the first line of /proc/stat, in clock ticks.
#[derive(Clone, Copy, Debug, Default)]
struct CpuTimes {
    busy: u64,
    softirq: u64,
}

fn cpu_times() -> Result<CpuTimes> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().context("empty /proc/stat")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() < 7 {
        bail!("unexpected /proc/stat: {line}");
    }
    // user nice system idle iowait irq softirq steal ...
    let busy = v[0] + v[1] + v[2] + v[5] + v[6] + v.get(7).copied().unwrap_or(0);
    Ok(CpuTimes {
        busy,
        softirq: v[6],
    })
}

fn tick_ns() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    1e9 / if hz > 0 { hz as f64 } else { 100.0 }
}

fn link_stat(ns: &Netns, iface: &str, name: &str) -> u64 {
    ns.command("cat")
        .arg(format!("/sys/class/net/{iface}/statistics/{name}"))
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(0)
}

fn mac(ns: &Netns, iface: &str) -> Result<String> {
    let out = ns
        .command("cat")
        .arg(format!("/sys/class/net/{iface}/address"))
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn nft(ns: &Netns, script: &str) -> Result<()> {
    let mut child = ns
        .command("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write;
        stdin.write_all(script.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("nft: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// Stops a process group: SIGINT, then SIGKILL if it has not exited within a second. Reaps the
/// leader; the group's other members are killed with it.
fn stop_group(child: &mut std::process::Child) {
    use nix::{
        sys::signal::{killpg, Signal},
        unistd::Pid,
    };
    let Ok(pid) = i32::try_from(child.id()) else {
        return;
    };
    let group = Pid::from_raw(pid);
    let _ = killpg(group, Signal::SIGINT);
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    // Workers may outlive the leader; SIGKILL whatever is left in the group.
    let _ = killpg(group, Signal::SIGKILL);
    let _ = child.wait();
}

/// A bench-only XDP program from the `forward` object, attached natively to `iface` in a
/// namespace by a thread that lives there; dropping this detaches it from inside the namespace.
/// With `redirect_to`, the program's device map sends every packet to that interface.
struct Attached {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Attached {
    fn start(
        ns: &Netns,
        object: &std::path::Path,
        program: &'static str,
        iface: &str,
        redirect_to: Option<&str>,
    ) -> Result<Self> {
        let bytes =
            std::fs::read(object).with_context(|| format!("reading {}", object.display()))?;
        let path = format!("/run/netns/{}", ns.name);
        let (iface, target) = (iface.to_owned(), redirect_to.map(str::to_owned));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let thread = thread::spawn(move || {
            let attach = || -> Result<Ebpf> {
                use std::os::fd::AsFd;
                let netns = std::fs::File::open(&path)?;
                nix::sched::setns(netns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)?;
                let mut ebpf = Ebpf::load(&bytes).context("loading the forward object")?;
                if let Some(target) = &target {
                    // Resolved here: device maps take ifindexes of the caller's namespace.
                    let ifindex = nix::net::if_::if_nametoindex(target.as_str())?;
                    let mut devs: DevMap<_> = ebpf
                        .map_mut("BENCH_FORWARD")
                        .context("no BENCH_FORWARD map")?
                        .try_into()?;
                    devs.set(0, ifindex, None, 0)?;
                }
                let prog: &mut Xdp = ebpf
                    .program_mut(program)
                    .with_context(|| format!("no `{program}` program"))?
                    .try_into()?;
                prog.load()?;
                prog.attach(&iface, XdpMode::Driver)?;
                Ok(ebpf)
            };
            match attach() {
                Ok(ebpf) => {
                    let _ = ready_tx.send(Ok(()));
                    let _ = stop_rx.recv();
                    drop(ebpf);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("{e:#}")));
                }
            }
        });
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => Ok(Self {
                stop: Some(stop_tx),
                thread: Some(thread),
            }),
            Ok(Err(e)) => bail!("attaching {program}: {e}"),
            Err(_) => bail!("attaching {program} timed out"),
        }
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The protected veth's count of frames its XDP receive path saw (`ethtool -S`).
fn xdp_rx_packets(ns: &Netns, iface: &str) -> u64 {
    ns.command("ethtool")
        .args(["-S", iface])
        .output()
        .ok()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter_map(|l| l.trim().strip_prefix("rx_queue_0_xdp_packets:"))
                .filter_map(|v| v.trim().parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0)
}

/// What one flood cost.
#[derive(Clone, Copy, Debug)]
struct Cost {
    /// Softirq CPU per packet, ns.
    soft: f64,
    /// All CPU per packet (sender included), ns.
    busy: f64,
    /// Packets per second sent.
    rate: f64,
}

/// One flood of `secs` seconds from `dev`.
fn flood(lab: &Lab, dev: &str, conf: &str, secs: f64) -> Result<Cost> {
    let tx0 = link_stat(&lab.scanner, dev, "tx_packets");
    let c0 = cpu_times()?;
    let t0 = Instant::now();
    // Own process group: trafgen forks a worker per CPU, and the worker must stop too.
    let mut gen = lab
        .scanner
        .command("trafgen")
        .args(["--dev", dev, "--conf", conf, "--cpus", "1", "--num", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .context("starting trafgen (Debian package netsniff-ng)")?;
    thread::sleep(Duration::from_secs_f64(secs));
    stop_group(&mut gen);
    let elapsed = t0.elapsed().as_secs_f64();
    let c1 = cpu_times()?;
    let packets = link_stat(&lab.scanner, dev, "tx_packets").saturating_sub(tx0) as f64;
    if packets < 1000.0 {
        bail!("trafgen sent only {packets} packets");
    }
    let ns = tick_ns();
    Ok(Cost {
        soft: (c1.softirq - c0.softirq) as f64 * ns / packets,
        busy: (c1.busy - c0.busy) as f64 * ns / packets,
        rate: packets / elapsed,
    })
}

/// The receive-side setups. `Floor` (an XDP program that only drops) is what no filter can
/// beat on this path: the generator's, veth's and the kernel's own cost per packet.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Setup {
    Xdp,
    NftNetdev,
    NftInet,
    None,
    Floor,
    /// The daemon attached, the flood's port not guarded: every packet takes the pass path.
    XdpPass,
    /// The daemon in detect mode guarding the flood's port: every packet is a probe of a source
    /// that is never dropped, the cost a trap-port flood puts on the data plane and the daemon.
    XdpProbe,
}

impl Setup {
    /// Run on the frame path only: the probe setups against the pass path.
    const PROBE: [Setup; 2] = [Setup::XdpPass, Setup::XdpProbe];

    const ALL: [Setup; 5] = [
        Setup::Xdp,
        Setup::NftNetdev,
        Setup::NftInet,
        Setup::None,
        Setup::Floor,
    ];

    fn name(self) -> &'static str {
        match self {
            Setup::Floor => "floor: XDP program that only drops",
            Setup::Xdp => "portsentry XDP drop",
            Setup::NftNetdev => "nftables netdev ingress drop",
            Setup::NftInet => "nftables inet input drop",
            Setup::None => "no filter",
            Setup::XdpPass => "portsentry pass path (port not guarded)",
            Setup::XdpProbe => "portsentry trap-port probes (detect mode, never dropped)",
        }
    }
}

/// Samples of one delivery path, keyed by setup: a figure is always built from its own setup's
/// samples and a ratio from its baseline's, whatever the order of [`Setup::ALL`].
#[derive(Default)]
struct Samples {
    by_setup: HashMap<Setup, SetupSamples>,
}

/// One setup's repetitions.
#[derive(Default)]
struct SetupSamples {
    soft: Vec<f64>,
    busy: Vec<f64>,
    rate: Vec<f64>,
}

impl Samples {
    fn push(&mut self, setup: Setup, cost: Cost) {
        let s = self.by_setup.entry(setup).or_default();
        s.soft.push(cost.soft);
        s.busy.push(cost.busy);
        s.rate.push(cost.rate);
    }

    /// `setup`'s samples (none if it never ran).
    fn of(&self, setup: Setup) -> &SetupSamples {
        static NONE: SetupSamples = SetupSamples {
            soft: Vec::new(),
            busy: Vec::new(),
            rate: Vec::new(),
        };
        self.by_setup.get(&setup).unwrap_or(&NONE)
    }
}

/// Sets up `setup`, floods, tears it down.
fn measure(
    lab: &Lab,
    dir: &TempDir,
    object: &std::path::Path,
    setup: Setup,
    dev: &str,
    conf: &str,
    secs: f64,
) -> Result<Cost> {
    let banned = lab.scanner_v4[0];
    let mut daemon = None;
    let mut floor = None;
    match setup {
        Setup::Floor => {
            floor = Some(Attached::start(&lab.protected, object, "drop_all", &lab.iface, None)?)
        }
        Setup::Xdp => {
            let mut d = DaemonArgs::new(lab)
                .iface()
                .tcp_ports(&TRAP.to_string())
                .no_pin()
                .no_auto_allow()
                .state_dir(dir.join("state"))
                .start()?;
            // The source bans itself by probing the trap port.
            lab.scanner.tcp_connect(banned, sock(lab.protected_v4, TRAP), Duration::from_millis(300));
            if !d.wait_for_line(|l| l.starts_with(&format!("attackalert: Host {banned} ")), Duration::from_secs(5)) {
                bail!("the flood source was not banned:\n{}", d.output());
            }
            daemon = Some(d);
        }
        Setup::XdpPass | Setup::XdpProbe => {
            let mut d = DaemonArgs::new(lab)
                .iface()
                .tcp_ports(&TRAP.to_string())
                .no_pin()
                .no_auto_allow()
                .state_dir(dir.join("state"));
            if setup == Setup::XdpProbe {
                d = d.udp_ports(&FLOOD_PORT.to_string()).args(["--mode", "detect"]);
            }
            daemon = Some(d.start()?);
        }
        Setup::NftNetdev => nft(&lab.protected, &format!(
            "table netdev psbench {{\n chain ingress {{\n  type filter hook ingress device \"{}\" priority 0; policy accept;\n  ip saddr {banned} counter drop\n }}\n}}\n",
            lab.iface
        ))?,
        Setup::NftInet => nft(&lab.protected, &format!(
            "table inet psbench {{\n chain input {{\n  type filter hook input priority 0; policy accept;\n  ip saddr {banned} counter drop\n }}\n}}\n"
        ))?,
        Setup::None => {}
    }
    let result = flood(lab, dev, conf, secs);
    drop(floor);
    match setup {
        Setup::Xdp | Setup::XdpPass | Setup::XdpProbe => {
            if let Some(mut d) = daemon {
                d.stop()?;
            }
            // A fresh state dir per repetition: the next run must ban anew.
            let _ = std::fs::remove_dir_all(dir.join("state"));
        }
        Setup::NftNetdev => nft(&lab.protected, "delete table netdev psbench")?,
        Setup::NftInet => nft(&lab.protected, "delete table inet psbench")?,
        Setup::None | Setup::Floor => {}
    }
    result
}

/// The figures of one path, each against nftables netdev ingress. `above_floor`: also each
/// filter's own cost (minus the floor); only meaningful where the floor is below every filter,
/// which on the skb path it is not (XDP on veth pays an skb copy nftables does not).
fn figures(section: &'static str, s: &Samples, above_floor: bool) -> Vec<Figure> {
    let mut out = Vec::new();
    let netdev = |what: &str, unit: &'static str, v: &[f64]| {
        Figure::new(
            section,
            format!("{}: {what}", Setup::NftNetdev.name()),
            unit,
            v,
        )
    };
    let base = s.of(Setup::NftNetdev);
    let soft_base = netdev("softirq CPU", "ns/packet", &base.soft);
    for setup in Setup::ALL {
        let f = Figure::new(
            section,
            format!("{}: softirq CPU", setup.name()),
            "ns/packet",
            &s.of(setup).soft,
        )
        .against(&soft_base);
        out.push(if setup == Setup::Xdp {
            f.at_most(0.5, "≤ 0.5× netdev")
        } else {
            f
        });
    }
    let busy_base = netdev("all CPU", "ns/packet", &base.busy);
    for setup in Setup::ALL {
        out.push(
            Figure::new(
                section,
                format!("{}: all CPU (sender included)", setup.name()),
                "ns/packet",
                &s.of(setup).busy,
            )
            .against(&busy_base),
        );
    }
    // Each filter's own cost: its softirq CPU minus the floor's, per repetition.
    let above = |setup: Setup| -> Vec<f64> {
        s.of(setup)
            .soft
            .iter()
            .zip(&s.of(Setup::Floor).soft)
            .map(|(x, f)| x - f)
            .collect()
    };
    let above_base = netdev(
        "softirq CPU above the floor",
        "ns/packet",
        &above(Setup::NftNetdev),
    );
    let filters = Setup::ALL
        .into_iter()
        .filter(|setup| above_floor && *setup != Setup::Floor);
    for setup in filters {
        let f = Figure::new(
            section,
            format!("{}: softirq CPU above the floor", setup.name()),
            "ns/packet",
            &above(setup),
        )
        .against(&above_base);
        out.push(if setup == Setup::Xdp {
            f.at_most(0.5, "≤ 0.5× netdev")
        } else {
            f
        });
    }
    let rate_base = netdev("rate", "packets/s", &base.rate);
    for setup in Setup::ALL {
        out.push(
            Figure::new(
                section,
                format!("{}: packets/s", setup.name()),
                "packets/s",
                &s.of(setup).rate,
            )
            .against(&rate_base),
        );
    }
    out
}

/// A trap-port flood against the pass path, on the frame path: both reach the UDP stack, so
/// the difference is what the probe path adds per packet (hit counting, the kernel's event
/// limits, the events that pass them and the daemon reading them), softirq and all CPU.
fn probe_figures(s: &Samples) -> Vec<Figure> {
    let mut out = Vec::new();
    for (what, pick) in [
        (
            "softirq CPU",
            (|c: &SetupSamples| &c.soft) as fn(&SetupSamples) -> &Vec<f64>,
        ),
        (
            "all CPU (sender and daemon included)",
            |c: &SetupSamples| &c.busy,
        ),
    ] {
        let pass = Figure::new(
            FRAME_SECTION,
            format!("{}: {what}", Setup::XdpPass.name()),
            "ns/packet",
            pick(s.of(Setup::XdpPass)),
        );
        let probe = Figure::new(
            FRAME_SECTION,
            format!("{}: {what}", Setup::XdpProbe.name()),
            "ns/packet",
            pick(s.of(Setup::XdpProbe)),
        )
        .against(&pass)
        .at_most(3.0, "≤ 3.0× pass");
        out.push(probe);
        out.push(pass);
    }
    out
}

pub fn run(plan: Plan, forward_object: &std::path::Path) -> Result<Vec<Figure>> {
    let lab = Lab::new(2)?;
    let dir = TempDir::new("bench-flood")?;
    let banned = lab.scanner_v4[0];
    let packet = |sa: String| -> Result<String> {
        Ok(format!(
            "{{ eth(da={}, sa={sa}), ipv4(saddr={banned}, daddr={}, ttl=64), udp(sp=40000, dp={FLOOD_PORT}), fill(0x41, 18) }}\n",
            mac(&lab.protected, &lab.iface)?,
            lab.protected_v4
        ))
    };
    let skb_conf = dir.write(
        "skb.trafgen",
        &packet(mac(&lab.scanner, &lab.scanner_iface)?)?,
    );
    let scanner = &lab.scanner.name;
    veth_pair(scanner, GEN_IN, scanner, GEN_OUT)?;
    let _forwarder = Attached::start(
        &lab.scanner,
        forward_object,
        "forward",
        GEN_OUT,
        Some(&lab.scanner_iface),
    )?;
    let frame_conf = dir.write("frame.trafgen", &packet(mac(&lab.scanner, GEN_IN)?)?);
    let secs = if plan.quick { 2.0 } else { 4.0 };
    let gro = |on: bool| {
        lab.protected
            .command("ethtool")
            .args(["-K", &lab.iface, "gro", if on { "on" } else { "off" }])
            .status()
            .ok()
            .filter(|s| s.success())
            .context("ethtool -K gro (Debian package ethtool)")
    };

    // Without an XDP program, the protected veth takes redirected frames only with GRO on
    // (that enables its NAPI ring); with GRO on it would also take skbs differently, so it is
    // on only for this path.
    let measure_frames = |setup: Setup| -> Result<Cost> {
        gro(true)?;
        let before = xdp_rx_packets(&lab.protected, &lab.iface);
        let measured = measure(&lab, &dir, forward_object, setup, GEN_IN, &frame_conf, secs);
        let arrived = xdp_rx_packets(&lab.protected, &lab.iface).saturating_sub(before);
        gro(false)?;
        let cost = measured?;
        if (arrived as f64) < 0.9 * cost.rate * secs {
            bail!(
                "frame path: only {arrived} of ~{:.0} frames reached {}",
                cost.rate * secs,
                lab.iface
            );
        }
        Ok(cost)
    };
    let (mut skb, mut frame) = (Samples::default(), Samples::default());
    for rep in 0..plan.reps {
        super::progress("flood", "repetition", rep + 1, plan.reps);
        for setup in Setup::ALL {
            let cost = measure(
                &lab,
                &dir,
                forward_object,
                setup,
                &lab.scanner_iface,
                &skb_conf,
                secs,
            )?;
            skb.push(setup, cost);

            frame.push(setup, measure_frames(setup)?);
        }
        for setup in Setup::PROBE {
            frame.push(setup, measure_frames(setup)?);
        }
    }
    let mut out = figures(SKB_SECTION, &skb, false);
    out.extend(figures(FRAME_SECTION, &frame, true));
    out.extend(probe_figures(&frame));
    Ok(out)
}
