//! Scale and start-up: time to load and attach, time to restore persisted bans, kernel memory of
//! the maps (from /proc/PID/fdinfo, what bpftool shows as memlock) at default and at 1 M
//! capacity, and the daemon's RSS idle and during a many-source scan.

use std::{
    net::IpAddr,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use portsentry::{
    bans::{BanRecord, Origin, Saved, StateStore, Trigger},
    clock,
    net::cidr::Cidr,
};
use portsentry_common::{IpProto, ScanType};

use super::{Figure, Plan};
use crate::lab::{run_in, Daemon, DaemonArgs, Lab, TempDir};

const SECTION: &str = "Scale and start-up";
/// Starts the daemon and returns it with the seconds until it reported itself ready (READY=1).
fn start_timed(args: DaemonArgs, limit: Duration) -> Result<(Daemon, f64)> {
    let t = Instant::now();
    let d = args.ready_within(limit).start()?;
    Ok((d, t.elapsed().as_secs_f64()))
}

/// Kernel memory of a daemon's maps, bytes.
#[derive(Clone, Copy, Default)]
struct MapMemory {
    /// Sum of `memlock` over the daemon's BPF map fds.
    total: u64,
    /// That of its largest map (the ban table).
    largest: u64,
}

fn map_memory(pid: u32) -> Result<MapMemory> {
    let mut total = 0;
    let mut largest = 0;
    for entry in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))? {
        let Ok(text) = std::fs::read_to_string(entry?.path()) else {
            continue;
        };
        if !text.contains("map_type:") {
            continue;
        }
        let memlock: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("memlock:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        total += memlock;
        largest = largest.max(memlock);
    }
    Ok(MapMemory { total, largest })
}

fn write_bans(dir: &std::path::Path, n: u32) -> Result<()> {
    let now = clock::unix_ms();
    let bans = (0..n)
        .map(|i| BanRecord {
            target: Cidr::host(IpAddr::from([10, (i >> 16) as u8, (i >> 8) as u8, i as u8])),
            origin: Origin::Detected,
            shadow: false,
            since_ms: now,
            expires_ms: None,
            trigger: Trigger::from_kernel(IpProto::Tcp as u8, 111, ScanType::TcpSyn as u8),
            fleet: None,
            drops: 0,
            unverified: false,
        })
        .collect();
    StateStore::new(dir)
        .save(&Saved {
            bans,
            ..Saved::default()
        })
        .context("writing the ban file")?;
    Ok(())
}

pub fn run(plan: Plan) -> Result<Vec<Figure>> {
    let lab = Lab::new(1)?;
    let dir = TempDir::new("bench-scale")?;
    let mut figures = Vec::new();

    // Load and attach, nothing to restore.
    let (mut starts, mut rss_idle) = (vec![], vec![]);
    let mut default_mem = MapMemory::default();
    for i in 0..plan.reps {
        super::progress("scale", "start-up", i + 1, plan.reps);
        let state = dir.join(&format!("empty-{i}")).display().to_string();
        let (mut d, secs) = start_timed(
            DaemonArgs::new(&lab).iface().no_pin().state_dir(&state),
            Duration::from_secs(20),
        )?;
        starts.push(secs * 1000.0);
        thread::sleep(Duration::from_millis(300));
        rss_idle.push(d.rss_kib().unwrap_or(0) as f64 / 1024.0);
        default_mem = map_memory(d.pid())?;
        d.stop()?;
    }
    figures.push(Figure::new(
        SECTION,
        "start-up: load, configure, attach (no bans)",
        "ms",
        &starts,
    ));
    figures.push(Figure::new(SECTION, "daemon RSS, idle", "MiB", &rss_idle));
    figures.push(Figure::new(
        SECTION,
        "kernel memory of all maps, default capacity (65 536 bans)",
        "MiB",
        &[default_mem.total as f64 / 1048576.0],
    ));
    figures.push(Figure::new(
        SECTION,
        "kernel memory of the ban table, default capacity",
        "MiB",
        &[default_mem.largest as f64 / 1048576.0],
    ));

    // Restore persisted bans.
    let n: u32 = if plan.quick { 100_000 } else { 1_000_000 };
    let label = if n >= 1_000_000 {
        "1 M".to_owned()
    } else {
        format!("{} k", n / 1000)
    };
    let restore_dir = dir.join("restore");
    write_bans(&restore_dir, n)?;
    let state = restore_dir.display().to_string();
    let capacity = (n + n / 8).to_string();
    let mut restores = vec![];
    let mut big_mem = MapMemory::default();
    let reps = if plan.quick { 1 } else { 3 };
    for _ in 0..reps {
        let (mut d, secs) = start_timed(
            DaemonArgs::new(&lab)
                .iface()
                .no_pin()
                .args(["--max-bans", &capacity])
                .state_dir(&state),
            Duration::from_secs(300),
        )?;
        if !d.has_line(|l| l.starts_with(&format!("portsentry: restored {n} ban(s)"))) {
            bail!("not all {n} bans were restored:\n{}", d.output());
        }
        restores.push(secs);
        big_mem = map_memory(d.pid())?;
        // Kill: a clean stop would rewrite the big file for nothing.
        d.kill9();
    }
    figures.push(
        Figure::new(
            SECTION,
            format!("start-up restoring {label} persisted bans"),
            "s",
            &restores,
        )
        .at_most(2.0, "< 2 s"),
    );
    figures.push(Figure::new(
        SECTION,
        format!("kernel memory of all maps, {label} ban capacity (+12 %)"),
        "MiB",
        &[big_mem.total as f64 / 1048576.0],
    ));

    // RSS while many sources scan: hping3 SYNs from random sources to a trap port, each one a
    // ban (and a log line).
    let state = dir.join("flood").display().to_string();
    let (mut d, _) = start_timed(
        DaemonArgs::new(&lab)
            .iface()
            .no_pin()
            .no_auto_allow()
            .tcp_ports("111")
            .args(["--max-bans", "200000"])
            .state_dir(&state),
        Duration::from_secs(20),
    )?;
    let tgt = lab.protected_v4.to_string();
    let secs = if plan.quick { 3 } else { 6 };
    let flood = {
        let ns = lab.scanner.clone();
        thread::spawn(move || {
            run_in(
                &ns,
                "hping3",
                &["--flood", "--rand-source", "-S", "-p", "111", &tgt],
                Duration::from_secs(secs),
            )
        })
    };
    let mut peak = 0u64;
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(secs + 2) {
        peak = peak.max(d.rss_kib().unwrap_or(0));
        thread::sleep(Duration::from_millis(100));
    }
    let _ = flood.join();
    thread::sleep(Duration::from_secs(1));
    // Counted by the daemon (its log lines are bounded under a flood).
    let (_, out, _) = crate::lab::portsentry(&["status", "--json", "--state-dir", &state]);
    let status: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    let bans = status["bans_made"]["detected"].as_u64().unwrap_or(0);
    let refused = status["counters"]["ban_table_full"].as_u64().unwrap_or(0);
    figures.push(Figure::new(
        SECTION,
        format!(
            "daemon peak RSS during a random-source SYN flood ({bans} sources banned, {refused} more refused: table full)"
        ),
        "MiB",
        &[peak as f64 / 1024.0],
    ));
    d.stop()?;
    Ok(figures)
}
