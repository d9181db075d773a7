//! The kernel's series: the XDP program's counters, table fill and capacity.

use std::fmt;

use portsentry_common::Stat;

use super::{label, Series};
use crate::metrics::snapshot::{KernelView, PROBE_STATS};

/// Every kernel series, in exposition order.
pub(super) fn encode(k: &KernelView, out: &mut Series<'_>) -> fmt::Result {
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
    Ok(())
}
