//! Enums whose codes cross the kernel/userspace boundary, each declared once: code, variant and
//! name text on one line. The on-wire structs keep raw integer fields (the XDP program writes
//! bytes); userspace turns them back into enums with `TryFrom`, which never panics and reports
//! an unknown code (a newer program, a corrupt entry) as [`UnknownCode`] for the caller to handle.

use core::fmt;

/// A code with no variant, from `TryFrom<u8>` / `TryFrom<u32>` of a [`wire_enum!`] enum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownCode<T> {
    /// The enum's name, e.g. `ScanType`.
    pub what: &'static str,
    pub code: T,
}

impl<T: fmt::Display> fmt::Display for UnknownCode<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown {} code {}", self.what, self.code)
    }
}

impl<T: fmt::Debug + fmt::Display> core::error::Error for UnknownCode<T> {}

/// Declares a `#[repr($repr)]` enum from one list of `Variant = code => "name"` lines and derives
/// from it: `ALL` (declaration order), `COUNT`, `name()`, `TryFrom<$repr>` and `From<Self> for
/// $repr`. With `serde` before `enum`, userspace (feature `user`) also (de)serialises each
/// variant as its name.
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        $vis:vis serde enum $name:ident: $repr:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $code:literal => $text:literal, )+
        }
    ) => {
        wire_enum! {
            $(#[$meta])*
            #[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
            $vis enum $name: $repr {
                $(
                    $(#[$vmeta])*
                    #[cfg_attr(feature = "user", serde(rename = $text))]
                    $variant = $code => $text,
                )+
            }
        }
    };
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident: $repr:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $code:literal => $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[repr($repr)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant = $code, )+
        }

        impl $name {
            /// Number of variants.
            pub const COUNT: usize = [$(stringify!($variant)),+].len();
            /// Every variant, in declaration order.
            pub const ALL: [$name; $name::COUNT] = [$($name::$variant),+];

            /// The name, declared next to the code.
            #[inline(always)]
            pub const fn name(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )+
                }
            }
        }

        impl TryFrom<$repr> for $name {
            type Error = UnknownCode<$repr>;

            #[inline(always)]
            fn try_from(code: $repr) -> Result<Self, Self::Error> {
                match code {
                    $( $code => Ok($name::$variant), )+
                    _ => Err(UnknownCode { what: stringify!($name), code }),
                }
            }
        }

        impl From<$name> for $repr {
            #[inline(always)]
            fn from(v: $name) -> $repr {
                v as $repr
            }
        }
    };
}

wire_enum! {
    /// How a probe was classified; names follow PortSentry's log wording (`type: [...]`).
    pub enum ScanType: u8 {
        /// Not a probe (or not classified).
        None = 0 => "Unknown",
        TcpSyn = 1 => "TCP SYN/Normal scan",
        TcpFin = 2 => "TCP FIN scan",
        TcpNull = 3 => "TCP NULL scan",
        TcpXmas = 4 => "TCP XMAS scan",
        /// Some other flag combination without ACK or RST.
        TcpOther = 5 => "Unknown Type",
        Udp = 6 => "UDP",
        /// Ban added by an administrator (`portsentry ban`), not by a probe.
        Manual = 7 => "Manual",
    }
}

wire_enum! {
    /// Indexes into the per-CPU statistics array; the names are the counters' names in `status`.
    ///
    /// There is no packet counter: the ordinary path updates exactly one counter (`Passed`), so
    /// userspace derives `packets` from the verdict counters (`dataplane::Stats::packets`).
    pub enum Stat: u32 {
        Passed = 0 => "passed",
        Dropped = 1 => "dropped",
        /// Detect mode: packets that block mode would have dropped.
        DroppedWould = 2 => "dropped_would",
        ProbesSyn = 3 => "probes_syn",
        ProbesFin = 4 => "probes_fin",
        ProbesNull = 5 => "probes_null",
        ProbesXmas = 6 => "probes_xmas",
        ProbesOther = 7 => "probes_other",
        ProbesUdp = 8 => "probes_udp",
        Bans = 9 => "bans",
        /// Bans that could not be stored because the ban table was full.
        BanTableFull = 10 => "ban_table_full",
        /// Events the ring buffer had no room for.
        EventsLost = 11 => "events_lost",
        /// Packets that did not parse; they pass unless their source is banned.
        Malformed = 12 => "malformed",
        /// Would-be probes from allowlisted sources (passed, not counted).
        Allowlisted = 13 => "allowlisted",
        /// Probes that could not be counted because the hit table was full.
        HitTableFull = 14 => "hit_table_full",
        /// Probes from sources that cannot be a real peer (0/8, 127/8, multicast, class E,
        /// ::, ::1, ff00::/8, IPv4-mapped or -compatible in IPv6): never counted.
        BogusSource = 15 => "bogus_source",
        /// Would-be bans refused by the path check: the probe did not arrive the way this host
        /// routes back to its source.
        Spoofed = 16 => "spoofed",
        /// Bans made although the path check could not decide (no route back, no neighbour).
        Unverified = 17 => "unverified",
        /// Trap probes from learned peers that did not ban on their own.
        PeerProbes = 18 => "peer_probes",
        /// SYN cookies sent to learned peers' trap SYNs.
        CookiesSent = 19 => "cookies_sent",
        /// Handshakes learned peers completed on a valid SYN cookie; each then counts as a
        /// probe (and bans at the trigger).
        CookiesConfirmed = 20 => "cookies_confirmed",
        /// Fragments dropped as evasion: IPv4 first fragments too short for the TCP/UDP header
        /// (RFC 1858), IPv4 fragments at offset 1 (RFC 3128), IPv6 first fragments without the
        /// whole header chain (RFC 7112).
        FragmentsDropped = 21 => "fragments_dropped",
        /// IPv6 packets dropped for an extension-header chain longer than the program walks.
        ExtChainsDropped = 22 => "ext_chains_dropped",
        /// Events the program did not send (counted instead): from `EVENTS_BEYOND_TRIGGER`
        /// beyond a source's trigger on, only probes whose count is a power of two are sent, and every CPU sends at most
        /// `EVENT_RATE_PER_CPU` a second (burst `EVENT_BURST`); bans and prefix triggers are
        /// never held back.
        EventsSuppressed = 23 => "events_suppressed",
        /// Prefix trigger events sent: a prefix's probes reached `prefix_hits` in the window.
        PrefixTriggers = 24 => "prefix_triggers",
        /// Prefix triggers withheld because the path check did not prove the probe's source
        /// (spoofed or unverified); the next probe of the prefix tries again.
        PrefixUnproven = 25 => "prefix_unproven",
        /// New outbound peers not learned because the learning rate bound was spent
        /// (`PEER_LEARN_BURST`, `PEER_LEARN_INTERVAL_NS`): a local process contacting new
        /// hosts faster than that cannot churn the peer table.
        PeerLearnLimited = 26 => "peer_learn_limited",
        /// Would-be bans (and SYN cookies) refused because the source is a contested
        /// neighbour: its MAC changed within `neighbour_contest` (PS_CONTESTED).
        Contested = 27 => "contested",
        /// ARP or ND frames that claimed a known neighbour's address from another MAC (the
        /// address became contested).
        NeighbourFlips = 28 => "neighbour_flips",
        /// Learned peers' trap SYNs that got no SYN cookie (no resolved neighbour on the route
        /// back, the route leaves by another interface, XDP_TX cannot deliver on the interface,
        /// the SYN cannot be rewritten): passed to the stack, which refuses them.
        CookiesWithheld = 29 => "cookies_withheld",
        /// ACKs to trap ports from learned peers not checked for a cookie because none went to
        /// that source moments ago: passed, uncounted.
        CookieAcksUnsolicited = 30 => "cookie_acks_unsolicited",
        /// ACKs not checked because their source spent its wrong-cookie budget: passed.
        CookieChecksRefused = 31 => "cookie_checks_refused",
    }
}

wire_enum! {
    /// Who created a ban ([`crate::BanEntry::origin`]). The names are the state file's and
    /// `portsentry list`'s spelling.
    pub serde enum BanOrigin: u8 {
        /// The XDP program, after a source crossed the trigger.
        Detected = 1 => "detected",
        /// An administrator, via `portsentry ban`.
        Manual = 2 => "manual",
        /// A detected ban carried over from an earlier run.
        Restored = 3 => "restored",
        /// A fleet decision (CrowdSec).
        Fleet = 4 => "crowdsec",
    }
}

wire_enum! {
    /// Kinds of ring-buffer events ([`crate::Event::kind`]); the names are the JSON log's `event`.
    pub enum EventKind: u8 {
        /// A counted probe on a guarded port (below or at the trigger).
        Probe = 1 => "probe",
        /// The probe that banned its source.
        Ban = 2 => "ban",
        /// A ban that could not be stored because the ban table is full.
        BanTableFull = 3 => "ban_table_full",
        /// A would-be ban refused by the path check (no ban made).
        Spoofed = 4 => "spoofed",
        /// A probe from a bogus source (never counted); at most a few per second.
        Bogus = 5 => "bogus",
        /// A trap probe from a learned peer: UDP is only reported, a TCP SYN gets a cookie.
        PeerProbe = 6 => "peer_probe",
        /// A probe from an allowlisted ("ignored") source: never counted; a few a second at most.
        Ignored = 7 => "ignored",
        /// A prefix's probes reached the prefix trigger within the window (`src` is the masked
        /// prefix, `prefix_len` its length, `count` the prefix's probes); no ban is made in the
        /// kernel, the daemon bans the prefix. Sent only after a path check like a ban's.
        PrefixTrigger = 8 => "prefix_trigger",
        /// A would-be ban refused because the source is a contested neighbour (its MAC changed
        /// moments ago: ARP/ND poisoning or a replaced host); throttled like `Spoofed`.
        Contested = 9 => "contested",
    }
}

wire_enum! {
    /// IP protocol numbers the program acts on, as stored in maps and events; the names are
    /// PortSentry's `protocol: [...]` wording.
    pub enum IpProto: u8 {
        Tcp = 6 => "TCP",
        Udp = 17 => "UDP",
    }
}

impl IpProto {
    /// Lower case, as in PortSentry's `$MODE$` and CrowdSec's `proto` meta.
    pub const fn mode(self) -> &'static str {
        match self {
            IpProto::Tcp => "tcp",
            IpProto::Udp => "udp",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! round_trip {
        ($($t:ident: $repr:ty),+) => {$(
            for (i, v) in $t::ALL.iter().enumerate() {
                assert_eq!($t::try_from(<$repr>::from(*v)), Ok(*v), "{v:?}");
                for w in &$t::ALL[i + 1..] {
                    assert_ne!(v.name(), w.name(), "{} names must be unique", stringify!($t));
                    assert_ne!(*v as $repr, *w as $repr);
                }
            }
        )+};
    }

    #[test]
    fn codes_round_trip_and_names_are_unique() {
        round_trip!(ScanType: u8, Stat: u32, BanOrigin: u8, EventKind: u8, IpProto: u8);
    }

    #[test]
    fn unknown_codes_are_errors_not_panics() {
        assert_eq!(
            ScanType::try_from(8),
            Err(UnknownCode {
                what: "ScanType",
                code: 8
            })
        );
        assert!(BanOrigin::try_from(0).is_err());
        assert!(EventKind::try_from(255).is_err());
        assert!(IpProto::try_from(1).is_err());
        assert!(Stat::try_from(Stat::COUNT as u32).is_err());
    }

    #[test]
    fn stats_index_the_array_densely() {
        for (i, s) in Stat::ALL.iter().enumerate() {
            assert_eq!(*s as usize, i);
        }
    }

    #[test]
    fn codes_are_the_published_ones() {
        // The XDP program writes these bytes and old pins and state files hold them.
        assert_eq!((IpProto::Tcp as u8, IpProto::Udp as u8), (6, 17));
        assert_eq!(BanOrigin::ALL.map(u8::from), [1, 2, 3, 4]);
        assert_eq!(EventKind::ALL.map(u8::from), [1, 2, 3, 4, 5, 6, 7, 8, 9]);
        assert_eq!(ScanType::Manual as u8, 7);
    }
}
