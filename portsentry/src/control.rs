//! The control verbs: `status`, `list`, `ban`, `unban`. They work whether or not the daemon
//! runs: on the pinned maps when they exist (live state), and always on the state file (so a
//! restart keeps what they did).

use std::{net::IpAddr, path::PathBuf};

use anyhow::{Context, Result};
use portsentry_common::{ban_origin, config_flags, ScanType, Stat};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{
    cidr::Cidr,
    clock::{self, Now},
    dataplane::Maps,
    settings::Settings,
    state::{self, FleetNote, SavedBan, SavedCidrBan, StateStore},
};

/// Written by the daemon at start so `status` can say what runs where.
pub const DAEMON_FILE: &str = "daemon.json";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DaemonInfo {
    pub pid: u32,
    pub started_at_ms: u64,
    /// (interface, "native" | "generic")
    pub interfaces: Vec<(String, String)>,
    pub pin_dir: Option<PathBuf>,
}

fn open_maps(settings: &Settings) -> Result<Option<Maps>> {
    match &settings.pin_dir {
        Some(dir) => Maps::open_pinned(dir)
            .with_context(|| format!("opening pinned maps in {}", dir.display())),
        None => Ok(None),
    }
}

fn pid_alive(pid: u32) -> bool {
    i32::try_from(pid)
        .ok()
        .is_some_and(|p| nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), None).is_ok())
}

pub fn status(settings: &Settings, as_json: bool) -> Result<()> {
    let info: Option<DaemonInfo> = std::fs::read_to_string(settings.state_dir.join(DAEMON_FILE))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let running = info.as_ref().is_some_and(|i| pid_alive(i.pid));
    let maps = open_maps(settings)?;
    let (config, stats, bans) = match &maps {
        Some(m) => (Some(m.config()?), Some(m.stats()?), Some(m.bans()?.len())),
        None => (None, None, None),
    };
    let mode = config.map(|c| {
        if c.layout_version == 0 {
            "unconfigured"
        } else if c.flags & config_flags::ENFORCE != 0 {
            "block"
        } else {
            "detect"
        }
    });
    if as_json {
        let counters: serde_json::Map<String, serde_json::Value> = stats
            .as_ref()
            .map(|s| {
                let mut m: serde_json::Map<_, _> = Stat::ALL
                    .iter()
                    .map(|st| (st.name().to_owned(), json!(s.get(*st))))
                    .collect();
                m.insert("packets".into(), json!(s.packets()));
                m
            })
            .unwrap_or_default();
        let out = json!({
            "running": running,
            "pid": info.as_ref().filter(|_| running).map(|i| i.pid),
            "interfaces": info.as_ref().filter(|_| running).map(|i| i.interfaces.iter().map(|(n, m)| json!({"name": n, "xdp_mode": m})).collect::<Vec<_>>()),
            "mode": mode,
            "bans": bans,
            "counters": counters,
            "pin_dir": settings.pin_dir,
            "state_dir": settings.state_dir,
        });
        println!("{out}");
        return Ok(());
    }
    match (&info, running) {
        (Some(i), true) => {
            let ifs: Vec<String> = i
                .interfaces
                .iter()
                .map(|(n, m)| format!("{n} ({m} XDP)"))
                .collect();
            println!(
                "daemon:      running, pid {}, since {}",
                i.pid,
                clock::iso_local(i.started_at_ms)
            );
            println!("interfaces:  {}", ifs.join(", "));
        }
        _ => println!("daemon:      not running"),
    }
    match (&maps, &settings.pin_dir) {
        (Some(_), Some(dir)) => println!("maps:        pinned in {}", dir.display()),
        (None, Some(dir)) => println!(
            "maps:        none pinned in {} (nothing is enforced)",
            dir.display()
        ),
        (None, None) | (Some(_), None) => println!("maps:        not pinned"),
    }
    if let Some(mode) = mode {
        println!("mode:        {mode}");
    }
    if let Some(n) = bans {
        println!("bans:        {n}");
    }
    if let Some(s) = stats {
        println!("packets:     {}", s.packets());
        for st in Stat::ALL {
            println!("{:<12} {}", format!("{}:", st.name()), s.get(st));
        }
    }
    Ok(())
}

/// One row of `list`.
#[derive(Debug, Serialize)]
struct BanRow {
    target: String,
    since: Option<String>,
    expires: Option<String>,
    trigger: String,
    origin: &'static str,
    drops: u64,
}

pub fn list(settings: &Settings, as_json: bool) -> Result<()> {
    let store = StateStore::new(&settings.state_dir);
    let saved = store.load()?;
    let now = Now::read();
    let mut rows = Vec::new();
    match open_maps(settings)? {
        Some(maps) => {
            for (addr, e) in maps.bans()? {
                let b = SavedBan::from_entry(addr, &e, &now);
                if !b.is_expired(now.unix_ms) {
                    rows.push(ban_row(&b, &saved.fleet));
                }
            }
            for (cidr, drops) in maps.ban_cidrs()? {
                let meta = saved.cidr_bans.iter().find(|c| c.cidr == cidr.to_string());
                rows.push(cidr_row(&cidr.to_string(), meta, drops, &saved.fleet));
            }
        }
        None => {
            rows.extend(
                saved
                    .bans
                    .iter()
                    .filter(|b| !b.is_expired(now.unix_ms))
                    .map(|b| ban_row(b, &saved.fleet)),
            );
            rows.extend(
                saved
                    .cidr_bans
                    .iter()
                    .filter(|c| !c.is_expired(now.unix_ms))
                    .map(|c| cidr_row(&c.cidr, Some(c), 0, &saved.fleet)),
            );
        }
    }
    rows.sort_by(|a, b| a.target.cmp(&b.target));
    if as_json {
        println!("{}", serde_json::to_string(&rows)?);
        return Ok(());
    }
    if rows.is_empty() {
        println!("no bans");
        return Ok(());
    }
    println!(
        "{:<40} {:<25} {:<25} {:<30} {:<9} {:>8}",
        "TARGET", "SINCE", "EXPIRES", "TRIGGER", "ORIGIN", "DROPS"
    );
    for r in rows {
        println!(
            "{:<40} {:<25} {:<25} {:<30} {:<9} {:>8}",
            r.target,
            r.since.unwrap_or_else(|| "-".into()),
            r.expires.unwrap_or_else(|| "never".into()),
            r.trigger,
            r.origin,
            r.drops
        );
    }
    Ok(())
}

/// A fleet ban's trigger: who decided and why, e.g. `cscli: manual 'ban' from 'm1'`.
fn fleet_trigger(notes: &[FleetNote], target: &str) -> String {
    notes
        .iter()
        .find(|n| n.target == target)
        .map(|n| format!("{}: {}", n.origin, n.scenario))
        .unwrap_or_else(|| "crowdsec decision".into())
}

fn ban_row(b: &SavedBan, notes: &[FleetNote]) -> BanRow {
    let target = b.addr.to_string();
    BanRow {
        trigger: if b.origin == ban_origin::FLEET {
            fleet_trigger(notes, &target)
        } else {
            state::trigger_text(b.proto, b.port, b.scan_type)
        },
        target,
        since: Some(clock::iso_local(b.banned_at_ms)),
        expires: b.expires_at_ms.map(clock::iso_local),
        origin: state::origin_text(b.origin),
        drops: b.drops,
    }
}

fn cidr_row(cidr: &str, meta: Option<&SavedCidrBan>, drops: u64, notes: &[FleetNote]) -> BanRow {
    let fleet = meta.is_some_and(|m| m.origin == ban_origin::FLEET);
    BanRow {
        target: cidr.to_owned(),
        since: meta.map(|m| clock::iso_local(m.added_at_ms)),
        expires: meta.and_then(|m| m.expires_at_ms).map(clock::iso_local),
        trigger: if fleet {
            fleet_trigger(notes, cidr)
        } else {
            "manual".into()
        },
        origin: state::origin_text(if fleet {
            ban_origin::FLEET
        } else {
            ban_origin::MANUAL
        }),
        drops,
    }
}

pub fn ban(settings: &Settings, target: Cidr, ttl: Option<std::time::Duration>) -> Result<()> {
    let store = StateStore::new(&settings.state_dir);
    let mut saved = store.load()?;
    let now = Now::read();
    let expires_at_ms = ttl.map(|d| now.unix_ms.saturating_add(d.as_millis() as u64));
    let mut maps = open_maps(settings)?;
    if target.is_host() {
        let b = SavedBan {
            addr: target.addr,
            banned_at_ms: now.unix_ms,
            expires_at_ms,
            port: 0,
            proto: 0,
            scan_type: ScanType::Manual as u8,
            origin: ban_origin::MANUAL,
            drops: 0,
        };
        if let Some(m) = maps.as_mut() {
            m.insert_ban(target.addr, &b.to_entry(&now))?;
        }
        saved.bans.retain(|x| x.addr != target.addr);
        saved.bans.push(b);
    } else {
        saved.cidr_bans.retain(|c| c.cidr != target.to_string());
        saved.cidr_bans.push(SavedCidrBan {
            cidr: target.to_string(),
            added_at_ms: now.unix_ms,
            expires_at_ms,
            origin: ban_origin::MANUAL,
        });
        if let Some(m) = maps.as_mut() {
            let mut all: Vec<Cidr> = m.ban_cidrs()?.into_iter().map(|(c, _)| c).collect();
            all.push(target);
            apply_ban_cidrs(m, &all)?;
        }
    }
    store.save(&saved)?;
    let until = expires_at_ms
        .map(|t| format!("until {}", clock::iso_local(t)))
        .unwrap_or_else(|| "forever".into());
    match maps {
        Some(_) => println!("banned {target} {until}"),
        None => println!(
            "banned {target} {until} (saved in {}; no pinned maps found, so it takes effect when portsentry starts)",
            store.path().display()
        ),
    }
    Ok(())
}

/// Replaces the banned networks and tells the program how many there are.
pub fn apply_ban_cidrs(maps: &mut Maps, cidrs: &[Cidr]) -> Result<()> {
    let n = maps.set_ban_cidrs(cidrs)?;
    let mut config = maps.config()?;
    config.ban_cidr_count = n;
    maps.set_config(&config)?;
    Ok(())
}

pub fn unban(settings: &Settings, targets: &[Cidr], all: bool) -> Result<bool> {
    let store = StateStore::new(&settings.state_dir);
    let mut saved = store.load()?;
    let mut maps = open_maps(settings)?;
    let mut found_all = true;
    let targets: Vec<Cidr> = if all {
        let mut t: Vec<Cidr> = saved.bans.iter().map(|b| Cidr::host(b.addr)).collect();
        t.extend(
            saved
                .cidr_bans
                .iter()
                .filter_map(|c| c.cidr.parse::<Cidr>().ok()),
        );
        if let Some(m) = &maps {
            t.extend(m.bans()?.into_iter().map(|(a, _)| Cidr::host(a)));
            t.extend(m.ban_cidrs()?.into_iter().map(|(c, _)| c));
        }
        t.sort_by_key(|c| (c.addr, c.prefix));
        t.dedup();
        t
    } else {
        targets.to_vec()
    };
    for target in &targets {
        let mut found = false;
        if target.is_host() {
            let addr: IpAddr = target.addr;
            if let Some(m) = maps.as_mut() {
                found |= m.remove_ban(addr)?;
            }
            let before = saved.bans.len();
            saved.bans.retain(|b| b.addr != addr);
            found |= saved.bans.len() != before;
        } else {
            if let Some(m) = maps.as_mut() {
                let current: Vec<Cidr> = m.ban_cidrs()?.into_iter().map(|(c, _)| c).collect();
                let kept: Vec<Cidr> = current.iter().copied().filter(|c| c != target).collect();
                found |= kept.len() != current.len();
                apply_ban_cidrs(m, &kept)?;
            }
            let before = saved.cidr_bans.len();
            saved.cidr_bans.retain(|c| c.cidr != target.to_string());
            found |= saved.cidr_bans.len() != before;
        }
        if found {
            println!("unbanned {target}");
        } else if !all {
            eprintln!("portsentry: {target} was not banned");
            found_all = false;
        }
    }
    store.save(&saved)?;
    Ok(found_all)
}
