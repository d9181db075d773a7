//! The exposition of a full snapshot in both formats, series left out when their source is
//! absent, and the shipped Grafana dashboard querying only series that exist.

use std::{collections::BTreeSet, net::IpAddr, sync::Arc};

use portsentry_common::Stat;

use super::*;
use crate::{
    bans::Origin,
    dataplane::Stats,
    fleet::FleetCounters,
    hooks::HookStats,
    metrics::snapshot::{BanView, DaemonView, KernelView, TableFill, TopBan},
    net::cidr::Cidr,
};

const DASHBOARD: &str = include_str!("../../../../dist/grafana/portsentry.json");

/// A snapshot with every part present and distinct values.
fn full() -> Snapshot {
    let mut stats = Stats::default();
    for (i, st) in Stat::ALL.iter().enumerate() {
        stats.0[*st as usize] = 100 + i as u64;
    }
    let tables = ["bans", "ban_networks", "allowlist", "learned_peers"]
        .into_iter()
        .enumerate()
        .map(|(i, t)| TableFill {
            table: t,
            entries: i as u64 + 1,
            capacity: 1000,
        })
        .collect();
    let target = |s: &str| Cidr::host(s.parse::<IpAddr>().unwrap());
    Snapshot {
        taken_at_ms: 10_000,
        kernel: Some(KernelView {
            stats,
            mode: "block",
            learned_peers: 4,
            tables,
        }),
        bans: BanView {
            total: 6,
            shadow: 1,
            active: Origin::ALL.iter().map(|o| (*o, 1)).collect(),
            made: Origin::ALL.iter().map(|o| (*o, 2)).collect(),
            fleet_held: 1,
        },
        top_bans: vec![
            TopBan {
                target: target("192.0.2.7"),
                origin: Origin::Detected,
                drops: 42,
            },
            TopBan {
                target: target("2001:db8::7"),
                origin: Origin::Manual,
                drops: 5,
            },
        ],
        daemon: Some(DaemonView {
            hooks: HookStats {
                started: 3,
                succeeded: 2,
                failed: 1,
                timed_out: 1,
                skipped_queue_full: 4,
                skipped_rate: 5,
            },
            hooks_running: 1,
            hooks_queued: 6,
            fleet: Some(FleetCounters {
                pulls: 7,
                pull_errors: 1,
                last_pull_ms: Some(7_500),
                pushes: 2,
                push_errors: 1,
                alert_queue: 3,
                ..FleetCounters::default()
            }),
            notify: Some(crate::notify::NotifyStats {
                mail: crate::notify::ChannelStats {
                    configured: true,
                    sent: 4,
                    failed: 2,
                    dropped: 1,
                    depth: 3,
                },
                ..Default::default()
            }),
        }),
    }
}

/// Sample lines (`name{labels} value`) of a text exposition.
fn samples(text: &str) -> Vec<(&str, &str)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.rsplit_once(' ').expect("name and value"))
        .collect()
}

fn names(text: &str) -> BTreeSet<String> {
    samples(text)
        .iter()
        .map(|(s, _)| s.split('{').next().unwrap().to_owned())
        .collect()
}

#[test]
fn every_series_is_there_with_its_value_in_both_formats() {
    let s = Arc::new(full());
    let prom = render(s.clone(), Format::Prometheus).unwrap();
    let om = render(s, Format::OpenMetrics).unwrap();
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert!(!prom.contains("# EOF"));
    // The same samples in both formats.
    assert_eq!(samples(&prom), samples(&om));
    for (series, value) in [
        ("portsentry_packets_dropped_total", "101"),
        ("portsentry_packets_dropped_would_total", "102"),
        (
            "portsentry_probes_total{scan_type=\"syn\",protocol=\"tcp\"}",
            "103",
        ),
        (
            "portsentry_probes_total{scan_type=\"udp\",protocol=\"udp\"}",
            "108",
        ),
        ("portsentry_events_lost_total", "111"),
        ("portsentry_hit_table_full_total", "114"),
        ("portsentry_events_suppressed_total", "123"),
        ("portsentry_prefix_triggers_total", "124"),
        ("portsentry_prefix_unproven_total", "125"),
        ("portsentry_bans_active{origin=\"crowdsec\"}", "1"),
        ("portsentry_bans_made_total{origin=\"manual\"}", "2"),
        ("portsentry_table_entries{table=\"allowlist\"}", "3"),
        ("portsentry_table_capacity{table=\"learned_peers\"}", "1000"),
        (
            "portsentry_ban_drops_total{target=\"192.0.2.7\",origin=\"detected\"}",
            "42",
        ),
        (
            "portsentry_hook_responses_skipped_total{reason=\"rate\"}",
            "5",
        ),
        (
            "portsentry_hook_responses_skipped_total{reason=\"queue_full\"}",
            "4",
        ),
        ("portsentry_hooks_failed_total", "1"),
        ("portsentry_hook_responses_running", "1"),
        ("portsentry_hook_responses_queued", "6"),
        ("portsentry_fleet_pulls_total", "7"),
        ("portsentry_fleet_push_errors_total", "1"),
        ("portsentry_fleet_last_pull_age_seconds", "2.5"),
        ("portsentry_fleet_decisions_held", "1"),
        ("portsentry_fleet_alert_queue", "3"),
    ] {
        assert!(
            samples(&prom).contains(&(series, value)),
            "{series} {value} in\n{prom}"
        );
    }
    // Every series follows the conventions: the prefix, counters end in _total.
    for name in names(&prom) {
        assert!(name.starts_with("portsentry_"), "{name}");
        let typed = format!("# TYPE {name} ");
        let ty = prom
            .lines()
            .find_map(|l| l.strip_prefix(&typed))
            .unwrap_or_else(|| panic!("no TYPE for {name}"));
        assert_eq!(ty == "counter", name.ends_with("_total"), "{name}: {ty}");
    }
    assert!(om.contains("# UNIT portsentry_fleet_last_pull_age_seconds seconds"));
}

#[test]
fn absent_sources_leave_their_series_out() {
    let mut s = full();
    s.daemon
        .as_mut()
        .unwrap()
        .fleet
        .as_mut()
        .unwrap()
        .last_pull_ms = None;
    let text = render(Arc::new(s.clone()), Format::Prometheus).unwrap();
    assert!(!text.contains("fleet_last_pull_age"), "{text}");
    assert!(text.contains("portsentry_fleet_pulls_total"));
    s.daemon = None;
    s.kernel = None;
    let text = render(Arc::new(s), Format::Prometheus).unwrap();
    assert!(!text.contains("hook") && !text.contains("fleet") && !text.contains("packets"));
    assert!(text.contains("portsentry_bans_active"), "{text}");
}

#[test]
fn format_follows_the_accept_header() {
    let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    assert_eq!(Format::negotiate(Some(prometheus)), Format::OpenMetrics);
    assert_eq!(Format::negotiate(Some("*/*")), Format::Prometheus);
    assert_eq!(Format::negotiate(None), Format::Prometheus);
}

/// Every `portsentry_…` name in a PromQL expression.
fn queried(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("portsentry_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    out
}

fn exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr" | "definition", serde_json::Value::String(s)) => out.push(s.clone()),
                    ("query", serde_json::Value::Object(q)) => {
                        if let Some(serde_json::Value::String(s)) = q.get("query") {
                            out.push(s.clone());
                        }
                    }
                    _ => exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

#[test]
fn the_dashboard_parses_and_queries_only_series_that_exist() {
    let dash: serde_json::Value = serde_json::from_str(DASHBOARD).expect("valid JSON");
    let exposed = names(&render(Arc::new(full()), Format::Prometheus).unwrap());
    let mut all = Vec::new();
    exprs(&dash, &mut all);
    let used: BTreeSet<String> = all.iter().flat_map(|e| queried(e)).collect();
    assert!(used.len() >= 15, "{used:?}");
    let missing: Vec<_> = used.difference(&exposed).collect();
    assert!(missing.is_empty(), "queried but not exposed: {missing:?}");
    // The data source is a variable, and every panel uses it.
    let vars = dash["templating"]["list"].as_array().unwrap();
    assert!(vars
        .iter()
        .any(|v| v["type"] == "datasource" && v["name"] == "datasource"));
    for p in dash["panels"].as_array().unwrap() {
        if p["type"] != "row" {
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        }
    }
    // The required panels are there.
    let titles: Vec<&str> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["title"].as_str())
        .collect();
    for want in [
        "Packets dropped and passed",
        "Probes by scan type",
        "Active bans by origin",
        "Table fill",
        "Hook health",
        "Fleet: last good pull",
    ] {
        assert!(titles.contains(&want), "{want} in {titles:?}");
    }
}
