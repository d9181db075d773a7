//! The digest's rendering: its subject, text and JSON from a closed window and what the
//! daemon added at closing time.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use serde_json::json;

use super::{Closing, SourceFacts, Window, LISTED};
use crate::detect::events::Protocol;

/// `111,113-115,6000-6063`.
pub fn port_ranges(ports: &BTreeSet<u16>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut it = ports.iter().copied().peekable();
    while let Some(start) = it.next() {
        let mut end = start;
        while it.peek() == Some(&(end.wrapping_add(1))) && end != u16::MAX {
            end += 1;
            it.next();
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    out.join(",")
}

pub fn clock(ms: u64) -> String {
    use chrono::TimeZone;
    chrono::Local
        .timestamp_millis_opt(ms as i64)
        .single()
        .map_or_else(|| ms.to_string(), |t| t.format("%H:%M").to_string())
}

pub fn stamp(ms: u64) -> String {
    use chrono::TimeZone;
    chrono::Local
        .timestamp_millis_opt(ms as i64)
        .single()
        .map_or_else(
            || ms.to_string(),
            |t| t.format("%Y-%m-%d %H:%M:%S %z").to_string(),
        )
}

/// The digest's subject, text and JSON.
pub fn render(w: &Window, c: &Closing<'_>) -> (String, String, serde_json::Value) {
    let span = format!("{}–{}", clock(w.start_ms), clock(c.end_ms));
    // Blocked first, then by first seen.
    let mut sources: Vec<(&IpAddr, &SourceFacts)> = w.sources.iter().collect();
    sources.sort_by_key(|(a, f)| (f.banned != Some(true), f.first_ms, **a));
    let blocked = sources
        .iter()
        .filter(|(_, f)| f.banned == Some(true))
        .count();
    let subject = if blocked > 0 {
        format!(
            "[portsentry] {}: {blocked} scanner{} blocked ({span})",
            c.host,
            if blocked == 1 { "" } else { "s" }
        )
    } else {
        format!(
            "[portsentry] {}: {} source(s) seen, none blocked ({span})",
            c.host,
            sources.len() + c.other_bans.len()
        )
    };
    let mut t = String::new();
    let mut js = Vec::new();
    t.push_str(&format!(
        "portsentry on {}, {} to {}\n\n",
        c.host,
        stamp(w.start_ms),
        stamp(c.end_ms)
    ));
    for (addr, f) in sources.iter().take(LISTED) {
        let ban = (c.ban_of)(**addr);
        let action = if f.banned == Some(true) {
            "blocked"
        } else if f.probes == 0 && f.ignored {
            "ignored"
        } else {
            "not blocked"
        };
        let mut ports = Vec::new();
        if !f.tcp_ports.is_empty() {
            ports.push(format!("TCP {}", port_ranges(&f.tcp_ports)));
        }
        if !f.udp_ports.is_empty() {
            ports.push(format!("UDP {}", port_ranges(&f.udp_ports)));
        }
        let protocols: Vec<&str> = [
            (!f.tcp_ports.is_empty()).then_some("TCP"),
            (!f.udp_ports.is_empty()).then_some("UDP"),
        ]
        .into_iter()
        .flatten()
        .collect();
        t.push_str(&format!("{addr}: {action}\n"));
        t.push_str(&format!(
            "  first seen {}, last seen {}, {} probe(s)\n",
            stamp(f.first_ms),
            stamp(f.last_ms),
            f.probes
        ));
        if !ports.is_empty() {
            t.push_str(&format!("  ports: {}\n", ports.join("; ")));
            t.push_str(&format!(
                "  scan types: {}\n",
                f.scans.iter().copied().collect::<Vec<_>>().join(", ")
            ));
        }
        if let Some(v) = f.verified {
            t.push_str(&format!(
                "  source: {}\n",
                if v {
                    "verified (arrived the way this host routes back)"
                } else {
                    "not verified (no route back or neighbour to check against)"
                }
            ));
        }
        if let Some(why) = f.refused {
            t.push_str(&format!(
                "  ban refused: {}\n",
                if why == "spoofed" {
                    "spoofed (the probe that reached the trigger did not arrive the way this host routes back; the address may be forged)"
                } else {
                    "contested (its neighbour's MAC changed moments before: ARP/ND poisoning or a replaced host)"
                }
            ));
        }
        if let Some(b) = &ban {
            t.push_str(&format!(
                "  ban: origin {}, expires {}, {} packet(s) dropped since the ban\n",
                b.origin,
                b.expires_ms.map_or_else(|| "never".to_owned(), stamp),
                b.drops
            ));
        }
        js.push(json!({
            "address": addr.to_string(),
            "action": action,
            "first_seen_ms": f.first_ms,
            "last_seen_ms": f.last_ms,
            "probes": f.probes,
            "tcp_ports": port_ranges(&f.tcp_ports),
            "udp_ports": port_ranges(&f.udp_ports),
            "protocols": protocols,
            "scan_types": f.scans,
            "verified": f.verified,
            "ban_refused": f.refused,
            "origin": ban.as_ref().map(|b| b.origin.clone()),
            "ban_expires_ms": ban.as_ref().and_then(|b| b.expires_ms),
            "drops": ban.as_ref().map(|b| b.drops),
        }));
    }
    let mut not_listed = w.sources_not_listed + sources.len().saturating_sub(LISTED) as u64;
    let room = LISTED.saturating_sub(js.len());
    not_listed += c.other_bans.len().saturating_sub(room) as u64;
    for (target, b) in c.other_bans.iter().take(room) {
        t.push_str(&format!("{target}: blocked\n"));
        t.push_str(&format!(
            "  ban: origin {}, since {}, expires {}, {} packet(s) dropped since the ban\n",
            b.origin,
            stamp(b.since_ms),
            b.expires_ms.map_or_else(|| "never".to_owned(), stamp),
            b.drops
        ));
        js.push(json!({
            "address": target,
            "action": "blocked",
            "origin": b.origin,
            "ban_expires_ms": b.expires_ms,
            "drops": b.drops,
        }));
    }
    if not_listed > 0 {
        t.push_str(&format!("and {not_listed} more source(s) not listed\n"));
    }
    if w.alerts_folded > 0 {
        t.push_str(&format!(
            "{} more new ban(s) not alerted one by one (max_alerts_per_hour = {})\n",
            w.alerts_folded, c.alert_cap
        ));
    }
    let mut top: Vec<(&(Protocol, u16), &u64)> = w.trap_ports.iter().collect();
    top.sort_by(|a, b| b.1.cmp(a.1).then(a.0 .1.cmp(&b.0 .1)));
    let top: Vec<String> = top
        .iter()
        .take(5)
        .map(|((p, port), n)| format!("{} {port} ({n})", proto_name(*p)))
        .collect();
    t.push_str(&format!(
        "\nTotals: {} probe(s), {} ban(s), {} spoofed, {} contested and {} bogus probe(s) refused, {} event(s) held back in the kernel, fleet: {} in, {} out\n",
        w.probes, w.bans, w.spoofed, w.contested, w.bogus, c.totals.events_held_back, c.totals.fleet_in, c.totals.fleet_out
    ));
    if !top.is_empty() {
        t.push_str(&format!("Top trap ports: {}\n", top.join(", ")));
    }
    if !w.flips.is_empty() {
        t.push_str(
            "\nNeighbour MAC changes (ARP/ND spoofing on the LAN, or a replaced host): the addresses were contested, their probes did not ban\n",
        );
        for f in &w.flips {
            t.push_str(&format!("  {f}\n"));
        }
        if w.flips_not_listed > 0 {
            t.push_str(&format!("  and {} more\n", w.flips_not_listed));
        }
    }
    let body = json!({
        "version": 1,
        "type": "digest",
        "host": c.host,
        "window_start_ms": w.start_ms,
        "window_end_ms": c.end_ms,
        "subject": subject,
        "sources": js,
        "sources_not_listed": not_listed,
        "alerts_folded": w.alerts_folded,
        "totals": {
            "probes": w.probes,
            "bans": w.bans,
            "spoofed_refused": w.spoofed,
            "contested_refused": w.contested,
            "bogus_refused": w.bogus,
            "events_held_back": c.totals.events_held_back,
            "fleet_in": c.totals.fleet_in,
            "fleet_out": c.totals.fleet_out,
        },
        "top_trap_ports": w.trap_ports_sorted(),
        "neighbour_flips": w.flips,
        "neighbour_flips_not_listed": w.flips_not_listed,
    });
    (subject, t, body)
}

fn proto_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "TCP",
        Protocol::Udp => "UDP",
    }
}

impl Window {
    fn trap_ports_sorted(&self) -> Vec<serde_json::Value> {
        let mut v: BTreeMap<(u64, u16, &'static str), ()> = BTreeMap::new();
        for ((p, port), n) in &self.trap_ports {
            v.insert((u64::MAX - n, *port, proto_name(*p)), ());
        }
        v.keys()
            .take(5)
            .map(|(n, port, p)| json!({"protocol": p, "port": port, "probes": u64::MAX - n}))
            .collect()
    }
}
