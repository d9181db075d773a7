//! A full-range fast nmap scan, captured on the wire, and what leaked after detection: shared by
//! the end-to-end test and `cargo xtask bench`.

use std::{
    collections::{BTreeSet, HashMap},
    net::IpAddr,
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use crate::lab::{run_in, Lab, TempDir};

/// What a scan saw and what it got.
#[derive(Debug, Clone)]
pub struct LeakReport {
    /// Probes the scanner sent to the target.
    pub probes: usize,
    /// Packets the target sent back to the scanner.
    pub answers: usize,
    /// Whether the scan probed a trap port at all (otherwise nothing could be detected).
    pub trap_probed: bool,
    /// Distinct ports probed before the first probe to a trap port.
    pub probed_before_trigger: BTreeSet<u16>,
    /// Answers to ports first probed at or after the first trap probe: the leak.
    pub leaked: usize,
    /// Ports nmap reported open.
    pub open: Vec<u16>,
}

/// Parses `tcpdump -nn -tt` text lines into (time, src, sport, dst, dport).
pub fn packets(text: &str) -> Vec<(f64, String, u16, String, u16)> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let t: f64 = f.next()?.parse().ok()?;
            if f.next()? != "IP" {
                return None;
            }
            let src = f.next()?;
            if f.next()? != ">" {
                return None;
            }
            let dst = f.next()?.trim_end_matches(':');
            let split = |s: &str| -> Option<(String, u16)> {
                let (a, p) = s.rsplit_once('.')?;
                Some((a.to_owned(), p.parse().ok()?))
            };
            let ((sa, sp), (da, dp)) = (split(src)?, split(dst)?);
            Some((t, sa, sp, da, dp))
        })
        .collect()
}

/// Port → state from nmap's grepable output.
pub fn port_states(grepable: &str) -> HashMap<u16, String> {
    grepable
        .lines()
        .filter_map(|l| l.split_once("Ports: "))
        .flat_map(|(_, ports)| ports.split(", ").map(str::to_owned).collect::<Vec<_>>())
        .filter_map(|p| {
            let mut f = p.split('/');
            Some((f.next()?.trim().parse().ok()?, f.next()?.to_owned()))
        })
        .collect()
}

/// Runs `nmap -sS -p- --min-rate 20000` from `scanner` (one of the lab's scanner addresses)
/// against the protected IPv4 address while tcpdump captures on the scanner's link.
pub fn scan(lab: &Lab, dir: &TempDir, scanner: IpAddr, traps: &BTreeSet<u16>) -> LeakReport {
    let cap = dir
        .join(&format!("scan-{scanner}.pcap"))
        .display()
        .to_string();
    let filter = format!("host {scanner} and tcp");
    let mut tcpdump = lab
        .scanner
        .command("tcpdump")
        .args(["-i", &lab.scanner_iface, "-nn", "-U", "-w", &cap, &filter])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting tcpdump");
    thread::sleep(Duration::from_millis(800));
    let src = scanner.to_string();
    let target = lab.protected_v4.to_string();
    let (_, out) = run_in(
        &lab.scanner,
        "nmap",
        &[
            "-sS",
            "-Pn",
            "-n",
            "-p-",
            "--min-rate",
            "20000",
            "--max-retries",
            "1",
            "-S",
            &src,
            "-e",
            &lab.scanner_iface,
            "-oG",
            "-",
            &target,
        ],
        Duration::from_secs(120),
    );
    thread::sleep(Duration::from_millis(500));
    if let Ok(pid) = i32::try_from(tcpdump.id()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGINT,
        );
    }
    let _ = tcpdump.wait();

    let text = Command::new("tcpdump")
        .args(["-nn", "-tt", "-r", &cap])
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let pkts = packets(&text);
    let probes: Vec<_> = pkts
        .iter()
        .filter(|p| p.1 == src && p.3 == target)
        .collect();
    let first_trap = probes
        .iter()
        .find(|p| traps.contains(&p.4))
        .map_or(f64::INFINITY, |p| p.0);
    let mut probed_before = BTreeSet::new();
    let mut first_probe: HashMap<u16, f64> = HashMap::new();
    for p in &probes {
        first_probe.entry(p.4).or_insert(p.0);
        if p.0 < first_trap {
            probed_before.insert(p.4);
        }
    }
    let answers: Vec<_> = pkts
        .iter()
        .filter(|p| p.1 == target && p.3 == src)
        .collect();
    let leaked = answers
        .iter()
        .filter(|a| first_probe.get(&a.2).is_some_and(|t| *t >= first_trap))
        .count();
    let open = port_states(&out)
        .into_iter()
        .filter(|(_, s)| s == "open")
        .map(|(p, _)| p)
        .collect();
    LeakReport {
        probes: probes.len(),
        trap_probed: first_trap.is_finite(),
        answers: answers.len(),
        probed_before_trigger: probed_before,
        leaked,
        open,
    }
}
