//! A [`Snapshot`] as Prometheus series, encoded by `prometheus-client`: OpenMetrics text for
//! scrapers that ask for it (Prometheus does), the Prometheus text format 0.0.4 otherwise
//! (`curl`, `promtool check metrics`). Every series is declared in [`encode_snapshot`], once;
//! counters get their `_total` suffix from the encoder.

use std::{fmt, sync::Arc};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeGaugeValue, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge, MetricType},
    registry::{Registry, Unit},
};

use super::snapshot::{Snapshot, PROBE_STATS};
use portsentry_common::Stat;

/// The prefix of every series.
pub const PREFIX: &str = "portsentry";

/// The two text formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    OpenMetrics,
    Prometheus,
}

impl Format {
    /// OpenMetrics if the `Accept` header asks for it, else the classic text format.
    pub fn negotiate(accept: Option<&str>) -> Self {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Prometheus,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        }
    }
}

/// The exposition of `snapshot` in `format`.
pub fn render(snapshot: Arc<Snapshot>, format: Format) -> Result<String, fmt::Error> {
    let mut registry = Registry::with_prefix(PREFIX);
    registry.register_collector(Box::new(SnapshotCollector(snapshot)));
    let mut out = String::new();
    match format {
        Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, &registry)?,
        Format::Prometheus => {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)?
        }
    }
    Ok(out)
}

#[derive(Debug)]
struct SnapshotCollector(Arc<Snapshot>);

impl Collector for SnapshotCollector {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        encode_snapshot(&self.0, &mut Series(encoder))
    }
}

type Labels = Vec<(&'static str, String)>;

/// Writes descriptors and samples.
struct Series<'e>(DescriptorEncoder<'e>);

impl Series<'_> {
    fn counter(&mut self, name: &str, help: &str, v: u64) -> fmt::Result {
        let m = self
            .0
            .encode_descriptor(name, help, None, MetricType::Counter)?;
        ConstCounter::new(v).encode(m)
    }

    fn gauge<N: EncodeGaugeValue + fmt::Debug>(
        &mut self,
        name: &str,
        help: &str,
        unit: Option<&Unit>,
        v: N,
    ) -> fmt::Result {
        let m = self
            .0
            .encode_descriptor(name, help, unit, MetricType::Gauge)?;
        ConstGauge::new(v).encode(m)
    }

    fn counters(&mut self, name: &str, help: &str, rows: &[(Labels, u64)]) -> fmt::Result {
        let mut m = self
            .0
            .encode_descriptor(name, help, None, MetricType::Counter)?;
        for (labels, v) in rows {
            ConstCounter::new(*v).encode(m.encode_family(labels)?)?;
        }
        Ok(())
    }

    fn gauges(&mut self, name: &str, help: &str, rows: &[(Labels, u64)]) -> fmt::Result {
        let mut m = self
            .0
            .encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (labels, v) in rows {
            ConstGauge::new(*v).encode(m.encode_family(labels)?)?;
        }
        Ok(())
    }
}

fn label(key: &'static str, value: impl Into<String>) -> Labels {
    vec![(key, value.into())]
}

/// Every series, in exposition order. Series whose source is absent (no maps, no daemon, no
/// fleet mode, no pull yet) are left out rather than reported as zero.
fn encode_snapshot(s: &Snapshot, out: &mut Series<'_>) -> fmt::Result {
    if let Some(k) = &s.kernel {
        let st = &k.stats;
        out.counter(
            "packets_passed",
            "Packets the XDP program passed.",
            st.get(Stat::Passed),
        )?;
        out.counter(
            "packets_dropped",
            "Packets the XDP program dropped (banned sources).",
            st.get(Stat::Dropped),
        )?;
        out.counter(
            "packets_dropped_would",
            "Detect mode: packets block mode would have dropped (they passed).",
            st.get(Stat::DroppedWould),
        )?;
        out.counter(
            "packets_malformed",
            "Packets that did not parse (passed unless their source is banned).",
            st.get(Stat::Malformed),
        )?;
        out.counter(
            "packets_fragments_dropped",
            "Fragments dropped as evasion (too short for the TCP/UDP header, IPv4 offset 1, IPv6 first fragment without its header chain).",
            st.get(Stat::FragmentsDropped),
        )?;
        out.counter(
            "packets_ext_chains_dropped",
            "IPv6 packets dropped for an extension-header chain longer than the XDP program walks.",
            st.get(Stat::ExtChainsDropped),
        )?;
        let probes: Vec<_> = PROBE_STATS
            .iter()
            .map(|(stat, scan, proto)| {
                (
                    vec![
                        ("scan_type", (*scan).to_owned()),
                        ("protocol", (*proto).to_owned()),
                    ],
                    st.get(*stat),
                )
            })
            .collect();
        out.counters(
            "probes",
            "Probes counted on trap ports, by scan type and protocol.",
            &probes,
        )?;
        out.counter(
            "probes_allowlisted",
            "Would-be probes from allowlisted sources (passed, never counted).",
            st.get(Stat::Allowlisted),
        )?;
        out.counter(
            "probes_bogus_source",
            "Probes from sources no real peer can have (0/8, 127/8, multicast, ...): never counted.",
            st.get(Stat::BogusSource),
        )?;
        out.counter(
            "peer_probes",
            "Trap probes from learned peers that did not ban on their own.",
            st.get(Stat::PeerProbes),
        )?;
        out.counter(
            "syn_cookies_sent",
            "SYN cookies sent to learned peers' trap SYNs.",
            st.get(Stat::CookiesSent),
        )?;
        out.counter(
            "syn_cookies_confirmed",
            "Handshakes learned peers completed on a SYN cookie.",
            st.get(Stat::CookiesConfirmed),
        )?;
        out.counter(
            "syn_cookies_withheld",
            "Learned peers' trap SYNs that got no SYN cookie (no resolved neighbour on the route back through the interface, or XDP_TX cannot deliver there): passed to the stack.",
            st.get(Stat::CookiesWithheld),
        )?;
        out.counter(
            "syn_cookie_acks_unsolicited",
            "ACKs from learned peers to trap ports not checked: no cookie went to them moments ago.",
            st.get(Stat::CookieAcksUnsolicited),
        )?;
        out.counter(
            "syn_cookie_checks_refused",
            "ACKs from learned peers not checked: their source spent its wrong-cookie budget.",
            st.get(Stat::CookieChecksRefused),
        )?;
        out.counter(
            "kernel_bans",
            "Bans the XDP program made at the trigger.",
            st.get(Stat::Bans),
        )?;
        out.counter(
            "bans_refused_spoofed",
            "Would-be bans refused by the path check (the probe did not arrive the way replies leave).",
            st.get(Stat::Spoofed),
        )?;
        out.counter(
            "bans_unverified",
            "Bans made although the path check could not decide.",
            st.get(Stat::Unverified),
        )?;
        out.counter(
            "ban_table_full",
            "Bans the XDP program could not store: the ban table was full.",
            st.get(Stat::BanTableFull),
        )?;
        out.counter(
            "hit_table_full",
            "Probes that could not be counted: the hit table was full.",
            st.get(Stat::HitTableFull),
        )?;
        out.counter(
            "events_lost",
            "Events the ring buffer had no room for.",
            st.get(Stat::EventsLost),
        )?;
        out.counter(
            "events_suppressed",
            "Events the XDP program held back and counted (from 5 beyond a source's trigger only powers of two; at most 1000 a second per CPU); bans and prefix triggers are never held back.",
            st.get(Stat::EventsSuppressed),
        )?;
        out.counter(
            "prefix_triggers",
            "Prefix trigger events: a prefix's probes reached scan_trigger x prefix_threshold in the window.",
            st.get(Stat::PrefixTriggers),
        )?;
        out.counter(
            "prefix_unproven",
            "Prefix triggers withheld: the path check did not prove the probe's source.",
            st.get(Stat::PrefixUnproven),
        )?;
        out.counter(
            "bans_refused_contested",
            "Would-be bans and SYN cookies refused: the source's neighbour MAC changed within neighbour_contest.",
            st.get(Stat::Contested),
        )?;
        out.counter(
            "neighbour_flips",
            "ARP or ND frames that claimed a known neighbour's address from another MAC.",
            st.get(Stat::NeighbourFlips),
        )?;
        let entries: Vec<_> = k
            .tables
            .iter()
            .map(|t| (label("table", t.table), t.entries))
            .collect();
        out.gauges(
            "table_entries",
            "Entries in each kernel table (bans, ban_networks, allowlist, learned_peers, learned_inbound_peers).",
            &entries,
        )?;
        let capacity: Vec<_> = k
            .tables
            .iter()
            .map(|t| (label("table", t.table), t.capacity))
            .collect();
        out.gauges(
            "table_capacity",
            "Capacity of each kernel table.",
            &capacity,
        )?;
    }

    let b = &s.bans;
    let active: Vec<_> = b
        .active
        .iter()
        .map(|(o, n)| (label("origin", o.name()), *n))
        .collect();
    out.gauges(
        "bans_active",
        "Enforced, unexpired bans by origin (detected, manual, restored, crowdsec).",
        &active,
    )?;
    out.gauge(
        "bans_shadow",
        "Detect mode's shadow bans: recorded, never dropped until promoted.",
        None,
        b.shadow,
    )?;
    let made: Vec<_> = b
        .made
        .iter()
        .map(|(o, n)| (label("origin", o.name()), *n))
        .collect();
    out.counters(
        "bans_made",
        "Bans made since the daemon started, by origin (renewals not counted).",
        &made,
    )?;
    let top: Vec<_> = s
        .top_bans
        .iter()
        .map(|t| {
            (
                vec![
                    ("target", t.target.to_string()),
                    ("origin", t.origin.name().to_owned()),
                ],
                t.drops,
            )
        })
        .collect();
    out.counters(
        "ban_drops",
        "Packets dropped for each of the metrics_top_bans bans with the most drops.",
        &top,
    )?;

    let Some(d) = &s.daemon else {
        return Ok(());
    };
    let h = &d.hooks;
    out.counter(
        "hook_responses_started",
        "Ban responses (the configured hooks for one ban) started.",
        h.started,
    )?;
    out.counters(
        "hook_responses_skipped",
        "Ban responses skipped: every slot busy and the queue full, or over max_per_minute.",
        &[
            (label("reason", "queue_full"), h.skipped_queue_full),
            (label("reason", "rate"), h.skipped_rate),
        ],
    )?;
    out.gauge(
        "hook_responses_running",
        "Ban responses running now.",
        None,
        d.hooks_running,
    )?;
    out.gauge(
        "hook_responses_queued",
        "Ban responses waiting for a free slot now.",
        None,
        d.hooks_queued,
    )?;
    out.counter(
        "hooks_succeeded",
        "Single hooks (a command or a hosts.deny line) that succeeded.",
        h.succeeded,
    )?;
    out.counter(
        "hooks_failed",
        "Single hooks that failed (a timeout included).",
        h.failed,
    )?;
    out.counter(
        "hooks_timed_out",
        "Hook commands killed after the timeout.",
        h.timed_out,
    )?;

    if let Some(n) = &d.notify {
        encode_notify(n, out)?;
    }
    let Some(f) = &d.fleet else {
        return Ok(());
    };
    out.counter(
        "fleet_pulls",
        "Decision pulls CrowdSec LAPI answered.",
        f.pulls,
    )?;
    out.counter(
        "fleet_pull_errors",
        "Decision pulls that failed.",
        f.pull_errors,
    )?;
    if let Some(age) = s.last_pull_age_seconds() {
        out.gauge(
            "fleet_last_pull_age",
            "Time since the last answered decision pull.",
            Some(&Unit::Seconds),
            age,
        )?;
    }
    out.gauge(
        "fleet_decisions_held",
        "Fleet decisions held as bans (enforced or shadow).",
        None,
        b.fleet_held,
    )?;
    out.counter(
        "fleet_pushes",
        "Alert push requests LAPI accepted.",
        f.pushes,
    )?;
    out.counter(
        "fleet_push_errors",
        "Alert push requests that failed.",
        f.push_errors,
    )?;
    out.counter(
        "fleet_alerts_queued",
        "Local bans queued as alerts for the fleet.",
        f.alerts_queued,
    )?;
    out.counter(
        "fleet_alerts_pushed",
        "Alerts LAPI accepted.",
        f.alerts_pushed,
    )?;
    out.counter(
        "fleet_alerts_capped",
        "Alerts dropped by max_alerts_per_minute.",
        f.alerts_capped,
    )?;
    out.counter(
        "fleet_alerts_not_shared",
        "Local bans kept off the fleet (unverified or link-local source).",
        f.alerts_not_shared,
    )?;
    out.gauge(
        "fleet_alert_queue",
        "Alerts waiting for LAPI.",
        None,
        f.alert_queue,
    )?;
    out.counters(
        "fleet_decisions_refused",
        "Fleet decisions refused, each counted once, by reason.",
        &[
            (label("reason", "bogus"), f.refused_bogus),
            (label("reason", "learned_peer"), f.refused_learned_peer),
            (label("reason", "allowlisted"), f.refused_allowlisted),
        ],
    )?;
    Ok(())
}

/// `[notify]`: per configured transport (`mail`, `webhook`).
fn encode_notify(n: &crate::notify::NotifyStats, out: &mut Series<'_>) -> fmt::Result {
    let per = |f: fn(&crate::notify::ChannelStats) -> u64| -> Vec<(Labels, u64)> {
        [("mail", &n.mail), ("webhook", &n.webhook)]
            .into_iter()
            .filter(|(_, c)| c.configured || c.sent + c.failed + c.depth > 0)
            .map(|(name, c)| (label("transport", name), f(c)))
            .collect()
    };
    out.counters(
        "notify_sent",
        "Messages (alerts, digests) a transport delivered.",
        &per(|c| c.sent),
    )?;
    out.counters(
        "notify_failed",
        "Delivery attempts that failed (each is retried until max_age).",
        &per(|c| c.failed),
    )?;
    out.counters(
        "notify_dropped",
        "Messages dropped undelivered past max_age.",
        &per(|c| c.dropped),
    )?;
    out.gauges(
        "notify_outbox_depth",
        "Messages waiting in the outbox, per transport.",
        &per(|c| c.depth),
    )?;
    out.counter(
        "notify_outbox_full",
        "Messages refused because the outbox was full (outbox_max).",
        n.outbox_full,
    )?;
    out.counter(
        "notify_alerts_folded",
        "New bans folded into the next digest by max_alerts_per_hour.",
        n.alerts_folded,
    )
}

#[cfg(test)]
mod tests;
