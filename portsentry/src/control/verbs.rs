//! What `status`, `list`, `ban`, `unban` and `promote-shadow` do to a ban book, and the text
//! they print. The same code answers in the daemon (over the socket) and in the CLI when no
//! daemon runs, so the output is the same either way.

use std::fmt::Write as _;

use portsentry_common::Stat;
use serde::Serialize;
use serde_json::json;

use super::{socket::Reply, socket::Request, DaemonInfo};
use crate::{
    bans::{BanBook, BanOutcome, BanRecord, NewBan, Origin},
    clock::{self, Now},
    dataplane::Maps,
    metrics::{DaemonView, Snapshot},
    net::cidr::Cidr,
};

/// What a verb acts on.
pub struct Target<'a> {
    pub book: &'a mut BanBook,
    /// Live (daemon) or pinned maps; `None`: the state file only.
    pub maps: Option<&'a mut Maps>,
    /// Set when the daemon answers.
    pub daemon: Option<&'a DaemonInfo>,
    pub pin_dir: Option<&'a std::path::Path>,
    /// What only a running daemon knows (hooks, fleet), when one answers.
    pub view: Option<DaemonView>,
    /// How many of the bans with the most drops `status` names (`metrics_top_bans`).
    pub top_bans: usize,
}

pub fn execute(req: &Request, t: Target<'_>) -> Reply {
    let now = Now::read();
    let result = match req {
        Request::Status { json } => status(t, *json),
        Request::List { json } => list(t, *json),
        Request::Ban { target, ttl_ms } => ban(t, *target, *ttl_ms, &now),
        Request::Unban { targets, all } => unban(t, targets, *all, &now),
        Request::PromoteShadow => promote(t, &now),
    };
    result.unwrap_or_else(|e| Reply::error(1, format!("portsentry: error: {e:#}")))
}

fn ok(stdout: String) -> anyhow::Result<Reply> {
    Ok(Reply {
        code: 0,
        stdout,
        stderr: String::new(),
    })
}

fn status(t: Target<'_>, as_json: bool) -> anyhow::Result<Reply> {
    // The same snapshot the metrics endpoint serves, so both show the same numbers.
    if let Some(m) = t.maps.as_deref() {
        t.book.refresh_drops(m)?;
    }
    let snap = Snapshot::collect(t.book, t.maps.as_deref(), t.view, t.top_bans)?;
    let kernel = snap.kernel.as_ref();
    let mode = kernel.map(|k| k.mode);
    let fleet = snap.daemon.as_ref().and_then(|d| d.fleet.as_ref());
    if as_json {
        let counters: serde_json::Map<String, serde_json::Value> = kernel
            .map(|k| {
                let mut m: serde_json::Map<_, _> = Stat::ALL
                    .iter()
                    .map(|st| (st.name().to_owned(), json!(k.stats.get(*st))))
                    .collect();
                m.insert("packets".into(), json!(k.stats.packets()));
                m.insert("learned_peers".into(), json!(k.learned_peers));
                m
            })
            .unwrap_or_default();
        let by_origin = |rows: &[(crate::bans::Origin, u64)]| {
            rows.iter()
                .map(|(o, n)| (o.name().to_owned(), json!(n)))
                .collect::<serde_json::Map<_, _>>()
        };
        let out = json!({
            "running": t.daemon.is_some(),
            "pid": t.daemon.map(|i| i.pid),
            "interfaces": t.daemon.map(|i| i.interfaces.iter().map(|(n, m)| json!({"name": n, "xdp_mode": m})).collect::<Vec<_>>()),
            "mode": mode,
            "bans": snap.bans.total,
            "shadow_bans": snap.bans.shadow,
            "bans_active": by_origin(&snap.bans.active),
            "bans_made": by_origin(&snap.bans.made),
            "tables": kernel.map(|k| &k.tables),
            "top_bans": snap.top_bans,
            "counters": counters,
            "hooks": snap.daemon.as_ref().map(|d| json!({
                "started": d.hooks.started,
                "running": d.hooks_running,
                "queued": d.hooks_queued,
                "succeeded": d.hooks.succeeded,
                "failed": d.hooks.failed,
                "timed_out": d.hooks.timed_out,
                "skipped_queue_full": d.hooks.skipped_queue_full,
                "skipped_rate": d.hooks.skipped_rate,
            })),
            "notify": snap.daemon.as_ref().and_then(|d| d.notify.as_ref()),
            "fleet": fleet,
            "fleet_last_pull_age_seconds": snap.last_pull_age_seconds(),
            "pin_dir": t.pin_dir,
            "state_dir": t.book.store().dir(),
        });
        return ok(format!("{out}\n"));
    }
    let mut out = String::new();
    match t.daemon {
        Some(i) => {
            let ifs: Vec<String> = i
                .interfaces
                .iter()
                .map(|(n, m)| format!("{n} ({m} XDP)"))
                .collect();
            let _ = writeln!(
                out,
                "daemon:      running, pid {}, since {}",
                i.pid,
                clock::iso_local(i.started_at_ms)
            );
            let _ = writeln!(out, "interfaces:  {}", ifs.join(", "));
        }
        None => out.push_str("daemon:      not running\n"),
    }
    let _ = match (&t.maps, t.pin_dir, t.daemon) {
        (Some(_), _, Some(_)) => writeln!(out, "maps:        live"),
        (Some(_), Some(dir), None) => writeln!(out, "maps:        pinned in {}", dir.display()),
        (None, Some(dir), _) => writeln!(
            out,
            "maps:        none pinned in {} (nothing is enforced)",
            dir.display()
        ),
        _ => writeln!(out, "maps:        not pinned"),
    };
    if let Some(mode) = mode {
        let _ = writeln!(out, "mode:        {mode}");
    }
    let _ = writeln!(out, "bans:        {}", snap.bans.total);
    if snap.bans.shadow > 0 {
        let _ = writeln!(
            out,
            "shadow:      {} (detect mode; `portsentry promote-shadow` enforces them)",
            snap.bans.shadow
        );
    }
    let origins = |rows: &[(crate::bans::Origin, u64)]| {
        rows.iter()
            .map(|(o, n)| format!("{} {n}", o.name()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(out, "active:      {}", origins(&snap.bans.active));
    let _ = writeln!(
        out,
        "made:        {} (since start)",
        origins(&snap.bans.made)
    );
    if let Some(k) = kernel {
        let fill: Vec<String> = k
            .tables
            .iter()
            .map(|f| format!("{} {}/{}", f.table, f.entries, f.capacity))
            .collect();
        let _ = writeln!(out, "tables:      {}", fill.join(", "));
        let _ = writeln!(out, "packets:     {}", k.stats.packets());
        for st in Stat::ALL {
            let _ = writeln!(out, "{:<12} {}", format!("{}:", st.name()), k.stats.get(st));
        }
        let _ = writeln!(out, "{:<12} {}", "learned_peers:", k.learned_peers);
    }
    if let Some(d) = &snap.daemon {
        let h = &d.hooks;
        let _ = writeln!(
            out,
            "hooks:       {} started, {} running, {} queued, {} succeeded, {} failed ({} timed out), {} skipped (queue full), {} skipped (rate)",
            h.started, d.hooks_running, d.hooks_queued, h.succeeded, h.failed, h.timed_out, h.skipped_queue_full, h.skipped_rate
        );
    }
    if let Some(n) = snap.daemon.as_ref().and_then(|d| d.notify.as_ref()) {
        for (name, c) in [("mail", &n.mail), ("webhook", &n.webhook)] {
            if c.configured || c.sent + c.failed + c.depth > 0 {
                let _ = writeln!(
                    out,
                    "notify:      {name}: {} sent, {} failed, {} dropped, {} in the outbox",
                    c.sent, c.failed, c.dropped, c.depth
                );
            }
        }
        if n.outbox_full + n.alerts_folded > 0 {
            let _ = writeln!(
                out,
                "notify:      {} refused (outbox full), {} alerts folded into digests",
                n.outbox_full, n.alerts_folded
            );
        }
    }
    if let Some(f) = fleet {
        for (name, n) in f.rows() {
            let _ = writeln!(out, "{:<12} {n}", format!("{name}:"));
        }
        if let Some(age) = snap.last_pull_age_seconds() {
            let _ = writeln!(out, "last_pull:   {age:.1}s ago");
        }
    }
    if !snap.top_bans.is_empty() {
        out.push_str("top drops:\n");
        for b in &snap.top_bans {
            let _ = writeln!(
                out,
                "  {:<40} {:<9} {:>10}",
                b.target.to_string(),
                b.origin.name(),
                b.drops
            );
        }
    }
    ok(out)
}

/// One row of `list`.
#[derive(Debug, Serialize)]
struct BanRow {
    target: String,
    since: Option<String>,
    expires: Option<String>,
    trigger: String,
    origin: &'static str,
    shadow: bool,
    drops: u64,
}

fn row(r: &BanRecord) -> BanRow {
    BanRow {
        target: r.target.to_string(),
        since: Some(clock::iso_local(r.since_ms)),
        expires: r.expires_ms.map(clock::iso_local),
        trigger: r.trigger_text(),
        origin: r.origin.name(),
        shadow: r.shadow,
        drops: r.drops,
    }
}

fn list(t: Target<'_>, as_json: bool) -> anyhow::Result<Reply> {
    if let Some(m) = &t.maps {
        t.book.refresh_drops(m)?;
    }
    let now_ms = clock::unix_ms();
    let rows: Vec<BanRow> = t
        .book
        .records()
        .filter(|r| !r.is_expired(now_ms))
        .map(row)
        .collect();
    if as_json {
        return ok(format!("{}\n", serde_json::to_string(&rows)?));
    }
    if rows.is_empty() {
        return ok("no bans\n".into());
    }
    let mut out = format!(
        "{:<40} {:<25} {:<25} {:<30} {:<9} {:>8}\n",
        "TARGET", "SINCE", "EXPIRES", "TRIGGER", "ORIGIN", "DROPS"
    );
    for r in rows {
        let origin = if r.shadow {
            format!("{}/shadow", r.origin)
        } else {
            r.origin.to_owned()
        };
        let _ = writeln!(
            out,
            "{:<40} {:<25} {:<25} {:<30} {:<9} {:>8}",
            r.target,
            r.since.unwrap_or_else(|| "-".into()),
            r.expires.unwrap_or_else(|| "never".into()),
            r.trigger,
            origin,
            r.drops
        );
    }
    ok(out)
}

fn ban(t: Target<'_>, target: Cidr, ttl_ms: Option<u64>, now: &Now) -> anyhow::Result<Reply> {
    let expires_ms = ttl_ms.map(|ms| now.unix_ms.saturating_add(ms));
    let outcome = t.book.ban(
        t.maps,
        NewBan {
            target,
            origin: Origin::Manual,
            shadow: false,
            expires_ms,
            trigger: None,
            fleet: None,
            unverified: false,
        },
        now,
    )?;
    let until = expires_ms
        .map(|t| format!("until {}", clock::iso_local(t)))
        .unwrap_or_else(|| "forever".into());
    match outcome {
        BanOutcome::Banned | BanOutcome::Renewed => ok(format!("banned {target} {until}\n")),
        BanOutcome::Bogus(range) => Ok(Reply::error(
            2,
            format!("portsentry: error: {target} is not banned: it is in the bogus range {range}, where no real peer can be (the XDP program never counts such a source)"),
        )),
        BanOutcome::Allowlisted(a) => Ok(Reply::error(
            1,
            format!("portsentry: error: {target} is not banned: the allowlist entry {a} covers it (the allowlist always wins)"),
        )),
        BanOutcome::TableFull => Ok(Reply::error(
            1,
            format!("portsentry: error: {target} is not banned: the table is full of manual and fleet bans; raise max_bans (or max_ban_networks) and restart"),
        )),
        BanOutcome::KeptLocal | BanOutcome::OperatorUnbanned => {
            ok(format!("banned {target} {until}\n"))
        }
    }
}

fn unban(t: Target<'_>, targets: &[Cidr], all: bool, now: &Now) -> anyhow::Result<Reply> {
    let targets: Vec<Cidr> = if all {
        t.book.records().map(|r| r.target).collect()
    } else {
        targets.to_vec()
    };
    let mut reply = Reply::default();
    let mut maps = t.maps;
    for target in &targets {
        match t.book.unban(maps.as_deref_mut(), target, true, now)? {
            Some(_) => {
                let _ = writeln!(reply.stdout, "unbanned {target}");
            }
            None if !all => {
                let _ = writeln!(reply.stderr, "portsentry: {target} was not banned");
                reply.code = 1;
            }
            None => {}
        }
    }
    Ok(reply)
}

fn promote(t: Target<'_>, now: &Now) -> anyhow::Result<Reply> {
    let n = t.book.promote_shadow(t.maps, now)?;
    ok(format!("promoted {n} shadow ban(s) to enforced bans\n"))
}
