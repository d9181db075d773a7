//! The digest: what happened in one window, per source and in all, as text and as JSON.
//!
//! Owns the window's accumulator (fed from the event loop, bounded) and its rendering. The
//! daemon adds at closing time what only the ban book and the kernel know (ban expiry, origin,
//! drops, counters), through [`Closing`].

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
};

use serde_json::json;

use crate::detect::events::{EventKind, ProbeEvent, Protocol};

/// Sources remembered per window; more are counted, not listed.
const MAX_SOURCES: usize = 10_000;
/// Ports remembered per source.
const MAX_PORTS: usize = 4096;
/// Sources listed in one digest; the rest are one "and N more" line.
const LISTED: usize = 100;

/// What one source did in the window.
#[derive(Clone, Debug, Default)]
pub struct SourceFacts {
    pub first_ms: u64,
    pub last_ms: u64,
    pub probes: u64,
    pub tcp_ports: BTreeSet<u16>,
    pub udp_ports: BTreeSet<u16>,
    pub scans: BTreeSet<&'static str>,
    /// A ban event was seen, and whether it was enforced.
    pub banned: Option<bool>,
    pub ignored: bool,
    /// The path check proved the source (None: no ban, nothing to say).
    pub verified: Option<bool>,
    /// Its would-be ban was refused: `spoofed` (it did not arrive the way this host routes
    /// back) or `contested` (its neighbour's MAC changed moments ago).
    pub refused: Option<&'static str>,
}

/// How a source's ban looks at closing time (from the ban book).
#[derive(Clone, Debug)]
pub struct BanFacts {
    /// `local`, `manual`, `fleet (cscli)` …
    pub origin: String,
    /// Unix ms; `None`: never.
    pub expires_ms: Option<u64>,
    pub drops: u64,
    pub since_ms: u64,
}

/// The window so far.
#[derive(Default)]
pub struct Window {
    pub start_ms: u64,
    pub sources: HashMap<IpAddr, SourceFacts>,
    pub sources_not_listed: u64,
    pub probes: u64,
    pub bans: u64,
    pub spoofed: u64,
    /// Would-be bans refused because the source's neighbour MAC changed moments ago.
    pub contested: u64,
    pub bogus: u64,
    pub trap_ports: HashMap<(Protocol, u16), u64>,
    /// New bans not alerted because of `max_alerts_per_hour`.
    pub alerts_folded: u64,
    /// Neighbour MAC changes (ARP/ND "flip flop", itself an attack), as the daemon logged
    /// them; the first [`MAX_FLIPS`], the rest counted.
    pub flips: Vec<String>,
    pub flips_not_listed: u64,
}

/// Neighbour flips listed in one digest.
pub const MAX_FLIPS: usize = 50;

impl Window {
    pub fn new(start_ms: u64) -> Self {
        Self {
            start_ms,
            ..Default::default()
        }
    }

    pub fn record(&mut self, ev: &ProbeEvent, now_ms: u64) {
        // A refusal names an address that may not be the sender's: it is counted, and marks a
        // source only if that source's own probes are already listed.
        let refused = match ev.kind {
            EventKind::Spoofed => {
                self.spoofed += 1;
                Some("spoofed")
            }
            EventKind::Contested => {
                self.contested += 1;
                Some("contested")
            }
            _ => None,
        };
        if let Some(why) = refused {
            if let Some(f) = self.sources.get_mut(&ev.src) {
                if f.banned != Some(true) {
                    f.refused = Some(why);
                }
            }
            return;
        }
        match ev.kind {
            EventKind::Spoofed | EventKind::Contested => return,
            EventKind::Bogus => {
                self.bogus += 1;
                return;
            }
            EventKind::PrefixTrigger | EventKind::BanTableFull => return,
            EventKind::Probe | EventKind::Ban | EventKind::Ignored | EventKind::PeerProbe => {}
        }
        if ev.kind != EventKind::Ignored {
            self.probes += 1;
            *self
                .trap_ports
                .entry((ev.protocol, ev.dst_port))
                .or_default() += 1;
        }
        if ev.kind == EventKind::Ban {
            self.bans += 1;
        }
        let full = self.sources.len() >= MAX_SOURCES;
        let f = match self.sources.get_mut(&ev.src) {
            Some(f) => f,
            None if full => {
                self.sources_not_listed += 1;
                return;
            }
            None => self.sources.entry(ev.src).or_insert_with(|| SourceFacts {
                first_ms: now_ms,
                ..Default::default()
            }),
        };
        f.last_ms = now_ms;
        if ev.kind == EventKind::Ignored {
            f.ignored = true;
            return;
        }
        f.probes += 1;
        let ports = match ev.protocol {
            Protocol::Tcp => &mut f.tcp_ports,
            Protocol::Udp => &mut f.udp_ports,
        };
        if ports.len() < MAX_PORTS {
            ports.insert(ev.dst_port);
        }
        f.scans.insert(ev.scan.name());
        if ev.kind == EventKind::Ban {
            let enforced = ev.is_blocked();
            f.banned = Some(f.banned.unwrap_or(false) || enforced);
            f.verified = Some(!ev.unverified && !ev.link_local);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
            && self.probes == 0
            && self.spoofed == 0
            && self.contested == 0
            && self.bogus == 0
            && self.alerts_folded == 0
            && self.flips.is_empty()
    }

    /// A neighbour's MAC changed (the daemon's `neighbour flip` line).
    pub fn record_flip(&mut self, line: &str) {
        if self.flips.len() < MAX_FLIPS {
            self.flips.push(line.to_owned());
        } else {
            self.flips_not_listed += 1;
        }
    }
}

/// Counters of the whole window that the daemon reads at closing time.
#[derive(Clone, Debug, Default)]
pub struct Totals {
    /// Events the kernel held back (flood budget) in the window.
    pub events_held_back: u64,
    /// Fleet decisions taken in, local alerts pushed out.
    pub fleet_in: u64,
    pub fleet_out: u64,
}

/// What the daemon hands over when the window closes.
pub struct Closing<'a> {
    pub host: &'a str,
    pub end_ms: u64,
    pub totals: Totals,
    /// The ban of a source, if the book holds one.
    pub ban_of: &'a dyn Fn(IpAddr) -> Option<BanFacts>,
    /// Bans made in the window that no probe here explains (manual, fleet): target and facts.
    pub other_bans: Vec<(String, BanFacts)>,
    /// `max_alerts_per_hour`, for the "N more" line.
    pub alert_cap: u32,
}

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

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 25, item 10: a neighbour flip reaches the administrator with the digest.
    #[test]
    fn a_neighbour_flip_makes_and_appears_in_a_digest() {
        let mut w = Window::new(0);
        assert!(w.is_empty());
        let line = "portsentry: neighbour flip: 10.77.0.3 on eth0 moved from 02:00:00:00:00:03 to 02:00:00:00:00:66; contested for 5m";
        w.record_flip(line);
        assert!(!w.is_empty(), "a flip alone is worth a digest");
        let no_ban = |_: IpAddr| None;
        let c = Closing {
            host: "h",
            end_ms: 60_000,
            totals: Totals::default(),
            ban_of: &no_ban,
            other_bans: Vec::new(),
            alert_cap: 20,
        };
        let (_, text, json) = render(&w, &c);
        assert!(text.contains(&format!("  {line}\n")), "{text}");
        assert_eq!(json["neighbour_flips"][0], line);
    }

    #[test]
    fn ports_are_ranges() {
        let s: BTreeSet<u16> = [1, 2, 3, 5, 111, 112, 65535].into_iter().collect();
        assert_eq!(port_ranges(&s), "1-3,5,111-112,65535");
        assert_eq!(port_ranges(&BTreeSet::new()), "");
    }

    fn event(kind: EventKind, last: u8) -> ProbeEvent {
        ProbeEvent {
            kind,
            src: IpAddr::from([192, 0, 2, last]),
            dst_port: 111,
            protocol: Protocol::Tcp,
            scan: portsentry_common::ScanType::TcpSyn,
            tcp_flags: 0x02,
            count: 1,
            ifindex: 1,
            ip_options: Some(false),
            dropped: false,
            noblock: false,
            unverified: false,
            link_local: false,
            confirmed: false,
            cookie_withheld: false,
            prefix_len: 0,
            timestamp_ns: 0,
        }
    }

    /// Refusals (spoofed, contested neighbour, bogus) are totals, never sources or probes: the
    /// refused address is not the sender's, so naming it would accuse a bystander.
    #[test]
    fn refusals_are_counted_not_listed() {
        let mut w = Window::new(0);
        w.record(&event(EventKind::Spoofed, 1), 1);
        w.record(&event(EventKind::Contested, 2), 2);
        w.record(&event(EventKind::Contested, 3), 3);
        w.record(&event(EventKind::Bogus, 4), 4);
        assert_eq!((w.spoofed, w.contested, w.bogus, w.probes), (1, 2, 1, 0));
        assert!(w.sources.is_empty() && !w.is_empty());
        let no_ban = |_: IpAddr| None;
        let closing = Closing {
            host: "h",
            end_ms: 10,
            totals: Totals::default(),
            ban_of: &no_ban,
            other_bans: Vec::new(),
            alert_cap: 20,
        };
        let (subject, text, body) = render(&w, &closing);
        assert!(
            subject.contains("0 source(s) seen, none blocked"),
            "{subject}"
        );
        assert!(
            text.contains("1 spoofed, 2 contested and 1 bogus probe(s) refused"),
            "{text}"
        );
        assert_eq!(body["totals"]["contested_refused"], 2);
        assert_eq!(body["totals"]["spoofed_refused"], 1);

        // A source whose own probe is listed, then whose would-be ban is refused: marked.
        let mut w = Window::new(0);
        w.record(&event(EventKind::Probe, 5), 1);
        w.record(&event(EventKind::Spoofed, 5), 2);
        assert_eq!(
            w.sources[&IpAddr::from([192, 0, 2, 5])].refused,
            Some("spoofed")
        );
        let (_, text, body) = render(&w, &closing);
        assert!(text.contains("192.0.2.5: not blocked\n"), "{text}");
        assert!(text.contains("  ban refused: spoofed ("), "{text}");
        assert_eq!(body["sources"][0]["ban_refused"], "spoofed");
    }
}
