//! Flood drop cost: trafgen floods a banned source's UDP packets over a veth pair into the
//! protected namespace; we compare the receive side's CPU per packet (softirq time from
//! /proc/stat, where veth's receive path and every filter below run) and the packet rate for
//! portsentry's XDP drop, an nftables `netdev` ingress drop, an nftables `inet` input drop, and
//! no filter at all.

use std::{
    os::unix::process::CommandExt,
    process::Stdio,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use super::{Figure, Plan};
use crate::lab::{sock, Daemon, Lab, Netns, TempDir};

const SECTION: &str = "Flood drop cost (trafgen over veth, receive side)";
const TRAP: u16 = 111;

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

/// One flood of `secs` seconds; returns (softirq ns/packet, busy ns/packet, packets/s received).
fn flood(lab: &Lab, conf: &str, secs: f64) -> Result<(f64, f64, f64)> {
    let rx0 = link_stat(&lab.scanner, &lab.scanner_iface, "tx_packets");
    let c0 = cpu_times()?;
    let t0 = Instant::now();
    // Own process group: trafgen forks a worker per CPU, and the worker must stop too.
    let mut gen = lab
        .scanner
        .command("trafgen")
        .args([
            "--dev",
            &lab.scanner_iface,
            "--conf",
            conf,
            "--cpus",
            "1",
            "--num",
            "0",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .context("starting trafgen (Debian package netsniff-ng)")?;
    thread::sleep(Duration::from_secs_f64(secs));
    stop_group(&mut gen);
    let elapsed = t0.elapsed().as_secs_f64();
    let c1 = cpu_times()?;
    let packets =
        link_stat(&lab.scanner, &lab.scanner_iface, "tx_packets").saturating_sub(rx0) as f64;
    if packets < 1000.0 {
        bail!("trafgen sent only {packets} packets");
    }
    let ns = tick_ns();
    Ok((
        (c1.softirq - c0.softirq) as f64 * ns / packets,
        (c1.busy - c0.busy) as f64 * ns / packets,
        packets / elapsed,
    ))
}

/// The four receive-side setups.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Setup {
    Xdp,
    NftNetdev,
    NftInet,
    None,
}

impl Setup {
    fn name(self) -> &'static str {
        match self {
            Setup::Xdp => "portsentry XDP drop",
            Setup::NftNetdev => "nftables netdev ingress drop",
            Setup::NftInet => "nftables inet input drop",
            Setup::None => "no filter",
        }
    }
}

pub fn run(plan: Plan) -> Result<Vec<Figure>> {
    let lab = Lab::new(2)?;
    let dir = TempDir::new("bench-flood")?;
    let banned = lab.scanner_v4[0];
    let conf = dir.write(
        "flood.trafgen",
        &format!(
            "{{ eth(da={}, sa={}), ipv4(saddr={banned}, daddr={}, ttl=64), udp(sp=40000, dp=9999), fill(0x41, 18) }}\n",
            mac(&lab.protected, &lab.iface)?,
            mac(&lab.scanner, &lab.scanner_iface)?,
            lab.protected_v4
        ),
    );
    let secs = if plan.quick { 2.0 } else { 4.0 };
    let setups = [Setup::Xdp, Setup::NftNetdev, Setup::NftInet, Setup::None];
    let mut soft = vec![Vec::new(); setups.len()];
    let mut busy = vec![Vec::new(); setups.len()];
    let mut rate = vec![Vec::new(); setups.len()];
    for _ in 0..plan.reps {
        for (i, setup) in setups.iter().enumerate() {
            let mut daemon = None;
            match setup {
                Setup::Xdp => {
                    let state = dir.join("state").display().to_string();
                    let ports = TRAP.to_string();
                    let mut d = Daemon::start(
                        &lab.protected,
                        &["run", "--iface", &lab.iface, "--tcp-ports", &ports, "--no-pin", "--no-auto-allow", "--state-dir", &state],
                    )?;
                    // The source bans itself by probing the trap port.
                    lab.scanner.tcp_connect(banned, sock(lab.protected_v4, TRAP), Duration::from_millis(300));
                    if !d.wait_for_line(|l| l.starts_with(&format!("attackalert: Host {banned} ")), Duration::from_secs(5)) {
                        bail!("the flood source was not banned:\n{}", d.output());
                    }
                    daemon = Some(d);
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
            let (s, b, r) = flood(&lab, &conf, secs)?;
            soft[i].push(s);
            busy[i].push(b);
            rate[i].push(r);
            match setup {
                Setup::Xdp => {
                    if let Some(mut d) = daemon {
                        d.stop()?;
                    }
                    // A fresh state dir per repetition: the next run must ban anew.
                    let _ = std::fs::remove_dir_all(dir.join("state"));
                }
                Setup::NftNetdev => nft(&lab.protected, "delete table netdev psbench")?,
                Setup::NftInet => nft(&lab.protected, "delete table inet psbench")?,
                Setup::None => {}
            }
        }
    }
    let mut figures = Vec::new();
    let netdev_soft = Figure::new(
        SECTION,
        format!("{}: softirq CPU", Setup::NftNetdev.name()),
        "ns/packet",
        &soft[1],
    );
    for (i, setup) in setups.iter().enumerate() {
        let f = Figure::new(
            SECTION,
            format!("{}: softirq CPU", setup.name()),
            "ns/packet",
            &soft[i],
        );
        figures.push(if *setup == Setup::Xdp {
            f.against(&netdev_soft).at_most(0.5, "≤ 0.5× netdev")
        } else {
            f.against(&netdev_soft)
        });
    }
    let netdev_busy = Figure::new(
        SECTION,
        format!("{}: all CPU", Setup::NftNetdev.name()),
        "ns/packet",
        &busy[1],
    );
    for (i, setup) in setups.iter().enumerate() {
        figures.push(
            Figure::new(
                SECTION,
                format!("{}: all CPU (sender included)", setup.name()),
                "ns/packet",
                &busy[i],
            )
            .against(&netdev_busy),
        );
    }
    let netdev_rate = Figure::new(
        SECTION,
        format!("{}: rate", Setup::NftNetdev.name()),
        "packets/s",
        &rate[1],
    );
    for (i, setup) in setups.iter().enumerate() {
        figures.push(
            Figure::new(
                SECTION,
                format!("{}: packets/s", setup.name()),
                "packets/s",
                &rate[i],
            )
            .against(&netdev_rate),
        );
    }
    Ok(figures)
}
