//! The settings' closed choices (`mode`, `log_format`, `history_format`, `log_level`,
//! `xdp_mode`): each enum's values and their docs, spelled one way in the file, on the command
//! line and in log lines (`Display` is the clap/serde name).

use serde::{Deserialize, Serialize};

/// Implements `Display` with the name clap and serde use, so a value is spelled one way in
/// the file, on the command line and in log lines.
macro_rules! display_as_value_name {
    ($($ty:ty),*) => {$(
        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                match clap::ValueEnum::to_possible_value(self) {
                    Some(v) => f.write_str(v.get_name()),
                    None => write!(f, "{self:?}"),
                }
            }
        }
    )*};
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Drop banned sources.
    Block,
    /// Count and report only: no source is dropped (fragment and extension-header evasion still
    /// is, docs/DATAPLANE.md).
    Detect,
}

/// Format of per-event log lines (stdout and history file).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// PortSentry 2.x's `Scan from: …` and `attackalert: …` lines.
    #[default]
    Portsentry,
    /// One JSON object per event.
    Json,
}

/// What the history file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum HistoryFormat {
    /// Every log line, timestamped (`2026-11-25T00:21:22.071+0000 Scan from: …`), as
    /// PortSentry 2.x writes it; its fail2ban filter matches these lines.
    #[default]
    Portsentry2,
    /// PortSentry 1.2's history: one `<epoch> - MM/DD/YYYY HH:MM:SS Host: <name>/<ip> Port: <port>
    /// TCP|UDP Blocked` line per source when it first triggers, which fail2ban's stock
    /// `[portsentry]` jail matches.
    Portsentry1,
}

/// How much the XDP program explains itself (aya-log, forwarded into the daemon's log).
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Default,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Nothing: the diagnostics are removed by the verifier and cost nothing.
    #[default]
    Off,
    Error,
    Warn,
    Info,
    /// Why packets count as malformed, bogus or spoofed; full tables; lost events.
    Debug,
    /// Also every counted probe, with its count in the window.
    Trace,
}

/// How to attach the XDP program: PortSentry users pick "auto" (native, falling back to generic).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// Native (driver) mode, falling back to generic where the driver lacks XDP.
    #[default]
    Auto,
    /// Driver mode only: fails where the driver has no XDP support.
    Native,
    /// Generic (skb) mode: works everywhere, slower.
    Generic,
    /// Through libxdp's multi-program dispatcher, always (native, falling back to generic, when
    /// portsentry makes the dispatcher), so xdp-loader, xdp-filter or bpfman can add programs
    /// beside ours. Needs a kernel that allows freplace programs and libxdp's xdp-dispatcher.o.
    Multi,
}

display_as_value_name!(Mode, LogFormat, HistoryFormat, LogLevel, AttachMode);
