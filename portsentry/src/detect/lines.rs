//! The one place that words the lines parsers read: PortSentry 2.x's `Scan from:` and
//! `attackalert:` lines (fail2ban's portsentry filter, logcheck and logwatch match them byte for
//! byte), PortSentry 1.2's history line, the JSON twin of an event line, and our own lines about
//! probes that never ban. Callers hand it facts (a [`ProbeEvent`], a [`NetworkBlocked`], a
//! [`Response`]) and write the text where it goes (`logging::LogSink`, a hook's [`LogFn`]).
//!
//! Owns wording only: nothing here writes, counts or decides.
//!
//! [`LogFn`]: crate::detect::logging::LogFn

use std::net::IpAddr;

use portsentry_common::{
    tcp_flags::{ACK, FIN, PSH, RST, SYN, URG},
    ScanType,
};
use serde_json::json;

use crate::{
    clock,
    detect::events::{EventKind, ProbeEvent},
    net::cidr::Cidr,
};

/// The line a started daemon writes once it listens, in PortSentry 2.x's wording.
pub const ACTIVE: &str = "Portsentry is now active and listening.";

/// `Scan from: [...] (...) protocol: [...] ...`, PortSentry 2.x's per-probe line. Below the
/// trigger `noblock` and `blocked` are `[unset]`, as 2.x prints them until a probe triggers.
/// `trigger` is the trigger as applied (`LiveSettings::effective_trigger`: a configured 0 is
/// 1 already).
pub fn scan_line(ev: &ProbeEvent, trigger: u64, resolved: Option<&str>) -> String {
    let addr = ev.src.to_string();
    let ip_opts = match ev.ip_options {
        Some(true) => "set",
        Some(false) => "not set",
        None => "unknown",
    };
    // An ignored (allowlisted) source's probe stops before the trigger is looked at: 2.x
    // prints `ignored: [true] triggered: [unset] noblock: [unset] blocked: [unset]`.
    let ignored = ev.kind == EventKind::Ignored;
    let triggered = !ignored && ev.count >= trigger;
    let unset = || "unset".to_owned();
    let (triggered_text, noblock, blocked) = if ignored {
        (unset(), unset(), unset())
    } else if triggered {
        (
            "true".to_owned(),
            ev.noblock.to_string(),
            ev.is_blocked().to_string(),
        )
    } else {
        ("false".to_owned(), unset(), unset())
    };
    format!(
        "Scan from: [{addr}] ({}) protocol: [{}] port: [{}] type: [{}] IP opts: [{ip_opts}] \
         ignored: [{ignored}] triggered: [{triggered_text}] noblock: [{noblock}] blocked: [{blocked}]",
        resolved.unwrap_or(&addr),
        ev.protocol.name(),
        ev.dst_port,
        scan_type_text(ev),
    )
}

/// The ban line: PortSentry's `attackalert: Host <ip> has been blocked via ...` wording, naming
/// the mechanism (an in-kernel XDP drop) instead of a route command.
pub fn ban_line(ev: &ProbeEvent, iface: &str) -> String {
    format!(
        "attackalert: Host {} has been blocked via XDP drop on interface: \"{iface}\"",
        ev.src
    )
}

/// The line for a ban the kernel could not store.
pub fn ban_table_full_line(ev: &ProbeEvent) -> String {
    format!(
        "attackalert: Host {} could not be blocked: the ban table is full (raise max_bans)",
        ev.src
    )
}

/// The line for an event that never bans on its own (a forged-looking, bogus or learned
/// peer's probe). PortSentry had no such events, so these lines are ours; they never use the
/// `Scan from:` or `attackalert:` prefixes parsers match on.
pub fn refused_line(ev: &ProbeEvent, iface: &str) -> Option<String> {
    let what = format!(
        "{} {} port {} on {iface}",
        scan_type_text(ev),
        ev.protocol.name(),
        ev.dst_port
    );
    let why = match ev.kind {
        EventKind::Spoofed => {
            "spoofed: it did not arrive the way this host routes back to its source; not banned"
        }
        EventKind::Contested => {
            "contested: its neighbour's MAC changed moments ago (ARP/ND poisoning or a replaced host); not banned"
        }
        EventKind::Bogus => "bogus source (cannot be a real peer); not counted",
        EventKind::PeerProbe if ev.protocol == portsentry_common::IpProto::Udp => {
            "learned peer: reported, not banned by a UDP probe"
        }
        EventKind::PeerProbe if ev.scan == ScanType::TcpSyn && ev.cookie_withheld => {
            "learned peer: no SYN cookie (no resolved neighbour on the route back through this \
             interface, or XDP_TX cannot deliver here); passed to the stack, not banned"
        }
        EventKind::PeerProbe if ev.scan == ScanType::TcpSyn => {
            "learned peer: answered with a SYN cookie; banned only if it completes the handshake"
        }
        // FIN, NULL, XMAS and other flag sets get no SYN-ACK: only a handshake can ban a peer.
        EventKind::PeerProbe => {
            "learned peer: reported, not banned (only a handshake completed on a SYN cookie bans it)"
        }
        EventKind::Probe
        | EventKind::Ban
        | EventKind::BanTableFull
        | EventKind::Ignored
        | EventKind::PrefixTrigger => return None,
    };
    Some(format!("portsentry: probe from {} ({what}): {why}", ev.src))
}

/// PortSentry 1.2's history line for a source that reached the trigger: `<epoch> - MM/DD/YYYY
/// HH:MM:SS Host: <name>/<ip> Port: <port> TCP|UDP Blocked`. 1.2 wrote it once per source,
/// whether BLOCK_* blocked or not; fail2ban's stock `[portsentry]` filter matches it.
pub fn classic_history_line(ev: &ProbeEvent, unix_ms: u64) -> String {
    format!(
        "{} Host: {src}/{src} Port: {} {} Blocked",
        clock::classic_local(unix_ms),
        ev.dst_port,
        ev.protocol.name(),
        src = ev.src,
    )
}

/// The event as one JSON object (`log_format = "json"`); `trigger` as in [`scan_line`].
pub fn json_line(ev: &ProbeEvent, trigger: u64, iface: &str, unix_ms: u64) -> String {
    json!({
        "time": clock::iso_local_ms(unix_ms),
        "event": ev.kind.name(),
        "src": ev.src.to_string(),
        "protocol": ev.protocol.name(),
        "port": ev.dst_port,
        "scan": scan_type_text(ev),
        "tcp_flags": ev.tcp_flags,
        "ip_options": match ev.ip_options { Some(true) => "set", Some(false) => "not set", None => "unknown" },
        "count": ev.count,
        "triggered": ev.count >= trigger,
        "noblock": ev.noblock,
        "blocked": ev.is_blocked(),
        "dropped": ev.dropped,
        "unverified": ev.unverified,
        "link_local": ev.link_local,
        "confirmed": ev.confirmed,
        "interface": iface,
    })
    .to_string()
}

/// Why a prefix is banned: its address bans (the daemon's count) or its probes (the kernel's
/// prefix trigger).
#[derive(Clone, Copy, Debug)]
pub enum PrefixCause {
    /// Distinct verified address bans within the window.
    Bans(usize),
    /// Probes from the prefix within the window.
    Probes(u64),
    /// Distinct narrower prefixes holding verified bans within the window.
    Prefixes(usize),
}

impl PrefixCause {
    /// What happened, for the lines that do not ban.
    fn what(self, prefix: &Cidr) -> String {
        match self {
            PrefixCause::Bans(n) => format!("{n} addresses of {prefix} banned"),
            PrefixCause::Probes(n) => format!("{n} probes from {prefix} within the window"),
            PrefixCause::Prefixes(n) => format!("{n} narrower prefixes of {prefix} hold bans"),
        }
    }
}

/// A prefix banned by the daemon, with the bans folded into it.
#[derive(Clone, Copy, Debug)]
pub struct NetworkBlocked<'a> {
    pub prefix: Cidr,
    pub iface: &'a str,
    pub cause: PrefixCause,
    /// Bans inside the prefix that it replaced.
    pub folded: usize,
}

/// `attackalert: Network <prefix> has been blocked via XDP drop ...`: the ban line's wording
/// for a prefix, with why in parentheses (PortSentry banned addresses only).
pub fn network_blocked_line(b: &NetworkBlocked) -> String {
    let (prefix, iface, n) = (b.prefix, b.iface, b.folded);
    let why = match b.cause {
        PrefixCause::Bans(_) => {
            format!("{n} of its addresses were banned; their bans are folded into it")
        }
        PrefixCause::Probes(count) => format!(
            "{count} probes from its addresses within the window; {n} address ban(s) folded into it"
        ),
        PrefixCause::Prefixes(m) => {
            format!("{m} of its narrower prefixes held bans; {n} ban(s) folded into it")
        }
    };
    format!(
        "attackalert: Network {prefix} has been blocked via XDP drop on interface: \"{iface}\" ({why})"
    )
}

/// A prefix that reached its threshold but is not banned: `why` it is refused (allowlisted
/// address, learned peer, translator range).
pub fn prefix_refused_line(cause: PrefixCause, prefix: &Cidr, why: &str) -> String {
    format!(
        "portsentry: {}; the prefix itself is not banned: {why}",
        cause.what(prefix)
    )
}

/// A prefix the ban book would not ban (`outcome`: the book's answer).
pub fn prefix_not_banned_line(cause: PrefixCause, prefix: &Cidr, outcome: &str) -> String {
    format!(
        "portsentry: {}; the prefix itself could not be banned: {outcome}",
        cause.what(prefix)
    )
}

/// A ban response that ran (`hooks/`): PortSentry's line for each of its responses.
#[derive(Clone, Copy, Debug)]
pub enum Response<'a> {
    /// `kill_route` ran `command` (KILL_ROUTE).
    DroppedRoute { target: IpAddr, command: &'a str },
    /// `run_cmd` ran `command` (KILL_RUN_CMD).
    ExternalCommand { target: IpAddr, command: &'a str },
    /// `hosts_deny` holds `entry` now (KILL_HOSTS_DENY); it may have been there already.
    Wrappers {
        target: IpAddr,
        entry: &'a str,
        already_present: bool,
    },
}

/// The `attackalert:` line of a ban response that succeeded.
pub fn response_line(r: &Response) -> String {
    match *r {
        Response::DroppedRoute { target, command } => format!(
            "attackalert: Host {target} has been blocked via dropped route using command: \"{command}\""
        ),
        Response::ExternalCommand { target, command } => format!(
            "attackalert: External command run for host: {target} using command: \"{command}\""
        ),
        Response::Wrappers {
            target,
            entry,
            already_present,
        } => {
            let note = if already_present {
                " (already present)"
            } else {
                ""
            };
            format!(
                "attackalert: Host {target} has been blocked via wrappers with string: \"{entry}\"{note}"
            )
        }
    }
}

fn scan_type_text(ev: &ProbeEvent) -> String {
    match ev.scan {
        ScanType::TcpOther => {
            let f = ev.tcp_flags;
            let bit = |b: u8| u8::from(f & b != 0);
            format!(
                "Unknown Type: TCP Packet Flags: SYN: {} FIN: {} ACK: {} PSH: {} URG: {} RST: {}",
                bit(SYN),
                bit(FIN),
                bit(ACK),
                bit(PSH),
                bit(URG),
                bit(RST)
            )
        }
        other => other.name().to_owned(),
    }
}

#[cfg(test)]
mod tests;
