//! One ban as the ban book keeps it: what is banned, who decided, since when, until when, why.
//! Plain data; the precedence rules live in `bans/mod.rs`.

use portsentry_common::{ban_flags, BanEntry, IpProto, ScanType};
use serde::{Deserialize, Serialize};

use crate::{clock::Now, net::cidr::Cidr};

/// Who created a ban: declared once, with its kernel code and its name (the state file's and
/// `list`'s spelling), as `portsentry_common::BanOrigin`.
pub use portsentry_common::BanOrigin as Origin;

/// The ban book's rules about origins.
pub trait OriginRules: Sized {
    /// The origin of a kernel entry. Unknown codes (a newer program) read as detected: the
    /// weakest local origin.
    fn from_code(code: u8) -> Self;
    /// Local bans (detected, restored, manual) outrank fleet decisions.
    fn is_local(&self) -> bool;
    /// Bans the table may displace under pressure: the kernel's own, never an operator's or
    /// the fleet's.
    fn is_displaceable(&self) -> bool;
}

impl OriginRules for Origin {
    fn from_code(code: u8) -> Self {
        Origin::try_from(code).unwrap_or(Origin::Detected)
    }

    fn is_local(&self) -> bool {
        *self != Origin::Fleet
    }

    fn is_displaceable(&self) -> bool {
        matches!(self, Origin::Detected | Origin::Restored)
    }
}

/// The probe that triggered a detected ban.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trigger {
    /// `tcp` or `udp`.
    pub proto: TriggerProto,
    pub port: u16,
    /// Scan type key: `syn`, `fin`, `null`, `xmas`, `other`, `udp`.
    pub scan: ScanKey,
}

/// The state file's spelling of an [`IpProto`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TriggerProto {
    Tcp,
    Udp,
}

impl From<IpProto> for TriggerProto {
    fn from(p: IpProto) -> Self {
        match p {
            IpProto::Tcp => TriggerProto::Tcp,
            IpProto::Udp => TriggerProto::Udp,
        }
    }
}

impl From<TriggerProto> for IpProto {
    fn from(p: TriggerProto) -> Self {
        match p {
            TriggerProto::Tcp => IpProto::Tcp,
            TriggerProto::Udp => IpProto::Udp,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScanKey {
    Syn,
    Fin,
    Null,
    Xmas,
    Other,
    Udp,
}

impl ScanKey {
    pub fn scan_type(self) -> ScanType {
        match self {
            ScanKey::Syn => ScanType::TcpSyn,
            ScanKey::Fin => ScanType::TcpFin,
            ScanKey::Null => ScanType::TcpNull,
            ScanKey::Xmas => ScanType::TcpXmas,
            ScanKey::Other => ScanType::TcpOther,
            ScanKey::Udp => ScanType::Udp,
        }
    }

    pub fn from_scan_type(scan: ScanType) -> Option<Self> {
        Some(match scan {
            ScanType::TcpSyn => ScanKey::Syn,
            ScanType::TcpFin => ScanKey::Fin,
            ScanType::TcpNull => ScanKey::Null,
            ScanType::TcpXmas => ScanKey::Xmas,
            ScanType::TcpOther => ScanKey::Other,
            ScanType::Udp => ScanKey::Udp,
            ScanType::None | ScanType::Manual => return None,
        })
    }
}

impl Trigger {
    /// From a kernel entry; `None` for bans no probe made (manual, fleet) and for codes this
    /// build does not know.
    pub fn from_kernel(protocol: u8, port: u16, scan_type: u8) -> Option<Self> {
        let proto = TriggerProto::from(IpProto::try_from(protocol).ok()?);
        let scan = ScanKey::from_scan_type(ScanType::try_from(scan_type).ok()?)?;
        Some(Self { proto, port, scan })
    }

    /// e.g. `TCP/111 TCP SYN/Normal scan`.
    pub fn text(&self) -> String {
        format!(
            "{}/{} {}",
            IpProto::from(self.proto).name(),
            self.port,
            self.scan.scan_type().name()
        )
    }
}

/// Where a fleet ban came from, for `portsentry list` (CrowdSec's origin and scenario).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetNote {
    /// CrowdSec's origin: `cscli`, `crowdsec`, `CAPI`, `portsentry`, …
    pub origin: String,
    pub scenario: String,
}

/// One ban: an address (/32, /128) or a network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BanRecord {
    pub target: Cidr,
    pub origin: Origin,
    /// Detect mode: recorded and reported, never dropped (in any mode) until promoted.
    pub shadow: bool,
    /// Wall clock, Unix milliseconds.
    pub since_ms: u64,
    /// `None`: never expires.
    pub expires_ms: Option<u64>,
    pub trigger: Option<Trigger>,
    pub fleet: Option<FleetNote>,
    /// Packets dropped, as last read from the kernel.
    pub drops: u64,
    /// Made although the path check could not decide: gives way first under table pressure
    /// and never escalates as a repeat offence.
    pub unverified: bool,
}

impl BanRecord {
    /// A ban found in the kernel that no record describes: no trigger, no expiry known.
    pub fn untracked(target: Cidr, origin: Origin, now_ms: u64) -> Self {
        Self {
            target,
            origin,
            shadow: false,
            since_ms: now_ms,
            expires_ms: None,
            trigger: None,
            fleet: None,
            drops: 0,
            unverified: false,
        }
    }

    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_ms.is_some_and(|t| t <= now_ms)
    }

    /// The record for a kernel ban-table entry.
    pub fn from_entry(target: Cidr, e: &BanEntry, now: &Now) -> Self {
        Self {
            target,
            origin: Origin::from_code(e.origin),
            shadow: e.flags & ban_flags::SHADOW != 0,
            since_ms: now.instant_to_unix_ms(e.banned_at_ns),
            expires_ms: (e.expires_at_ns != 0).then(|| now.boot_to_unix_ms(e.expires_at_ns)),
            trigger: Trigger::from_kernel(e.proto, e.port, e.scan_type),
            fleet: None,
            drops: e.drops,
            unverified: e.flags & ban_flags::UNVERIFIED != 0,
        }
    }

    /// The kernel ban-table entry for an address record; `drops` carries the kernel's counter.
    pub fn to_entry(&self, now: &Now, drops: u64) -> BanEntry {
        let (protocol, port, scan_type) = match self.trigger {
            Some(t) => (
                IpProto::from(t.proto) as u8,
                t.port,
                t.scan.scan_type() as u8,
            ),
            None => (0, 0, ScanType::Manual as u8),
        };
        BanEntry {
            banned_at_ns: now.boot_instant(self.since_ms),
            expires_at_ns: self.expires_ms.map_or(0, |t| now.expiry_to_boot(t)),
            drops,
            port,
            proto: protocol,
            scan_type,
            origin: self.origin as u8,
            flags: if self.shadow { ban_flags::SHADOW } else { 0 }
                | if self.unverified {
                    ban_flags::UNVERIFIED
                } else {
                    0
                },
            _pad: [0; 2],
        }
    }

    /// What `list` shows as the trigger.
    pub fn trigger_text(&self) -> String {
        if let Some(note) = &self.fleet {
            return format!("{}: {}", note.origin, note.scenario);
        }
        match (self.origin, self.trigger) {
            (Origin::Fleet, _) => "crowdsec decision".into(),
            (_, Some(t)) => t.text(),
            (_, None) => "manual".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_persist_by_name() {
        let json = serde_json::to_string(&Origin::ALL).unwrap();
        assert_eq!(json, r#"["detected","manual","restored","crowdsec"]"#);
        let back: Vec<Origin> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, Origin::ALL);
        assert!(serde_json::from_str::<Origin>(r#""fleet""#).is_err());
        assert_eq!(
            Origin::ALL.map(Origin::name),
            ["detected", "manual", "restored", "crowdsec"]
        );
    }

    #[test]
    fn unknown_kernel_codes_are_explicit() {
        assert_eq!(Origin::from_code(0), Origin::Detected);
        assert_eq!(Origin::from_code(99), Origin::Detected);
        assert_eq!(Origin::from_code(Origin::Fleet as u8), Origin::Fleet);
        assert_eq!(Trigger::from_kernel(1, 80, ScanType::TcpSyn as u8), None);
        assert_eq!(Trigger::from_kernel(IpProto::Tcp as u8, 80, 99), None);
        assert_eq!(
            Trigger::from_kernel(IpProto::Udp as u8, 53, ScanType::Udp as u8).map(|t| t.text()),
            Some("UDP/53 UDP".to_owned())
        );
    }

    #[test]
    fn a_ban_from_before_this_boot_keeps_its_times_through_the_kernel() {
        // Up 9 minutes; banned 2 h ago for 24 h, restored from bans.json into the kernel and
        // read back (a pinned map adopted at the next start).
        let now = Now {
            boot_ns: 540_000_000_000,
            unix_ms: 1_700_000_000_000,
        };
        let mut r = BanRecord::untracked(
            Cidr::host("192.0.2.7".parse().unwrap()),
            Origin::Detected,
            now.unix_ms - 7_200_000,
        );
        r.expires_ms = Some(now.unix_ms + 22 * 3_600_000);
        let e = r.to_entry(&now, 0);
        assert!(e.banned_at_ns < 0, "{}", e.banned_at_ns);
        let back = BanRecord::from_entry(r.target, &e, &now);
        assert_eq!((back.since_ms, back.expires_ms), (r.since_ms, r.expires_ms));
    }
}
