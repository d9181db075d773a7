//! A [`Snapshot`] as Prometheus series, encoded by `prometheus-client`: OpenMetrics text for
//! scrapers that ask for it (Prometheus does), the Prometheus text format 0.0.4 otherwise
//! (`curl`, `promtool check metrics`). Every series is declared once: the kernel's in `kernel`,
//! the rest in [`encode_snapshot`]; counters get their `_total` suffix from the encoder.

use std::{fmt, sync::Arc};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeGaugeValue, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge, MetricType},
    registry::{Registry, Unit},
};

use super::snapshot::Snapshot;

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
        kernel::encode(k, out)?;
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

mod kernel;

#[cfg(test)]
mod tests;
