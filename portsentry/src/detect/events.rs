//! Reading probe and ban events from the XDP program's ring buffer.

use std::net::IpAddr;

use aya::maps::{MapData, RingBuf};
use portsentry_common::{event_flags, Event, IpProto, ScanType};
use tokio::{io::unix::AsyncFd, sync::mpsc};

use crate::net::cidr;

/// An event decoded for logging and hooks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeEvent {
    pub kind: EventKind,
    pub src: IpAddr,
    pub dst_port: u16,
    pub protocol: Protocol,
    pub scan: ScanType,
    pub tcp_flags: u8,
    pub count: u64,
    pub ifindex: u32,
    pub ip_options: Option<bool>,
    pub dropped: bool,
    pub noblock: bool,
    /// A ban made although the path check could not decide: possibly forged, kept local.
    pub unverified: bool,
    /// Link-local source (169.254/16, fe80::/10): meaningful on this link only, kept local.
    /// Read from the address: a kernel flag for it would cost the verifier a state split.
    pub link_local: bool,
    /// A learned peer's probe (or ban), counted after a handshake on a valid SYN cookie.
    pub confirmed: bool,
    /// A learned peer's trap SYN that got no SYN cookie and passed to the stack (no resolved
    /// neighbour on the route back through this interface, or XDP_TX cannot deliver here).
    pub cookie_withheld: bool,
    /// A prefix trigger's prefix length (`src` is then the masked prefix); 0 otherwise.
    pub prefix_len: u8,
    pub timestamp_ns: u64,
}

/// The kernel's event kinds, declared in `portsentry-common`.
pub use portsentry_common::EventKind;
/// The protocols an event can be for (`name()`: `TCP`, `mode()`: `tcp`), declared in
/// `portsentry-common`.
pub use portsentry_common::IpProto as Protocol;

impl ProbeEvent {
    /// A test fixture: the ban (dropped, enforced) of `src` for a TCP SYN to port 111 on
    /// ifindex 2, its first probe, no IP options; tests change the fields they are about.
    #[cfg(test)]
    pub(crate) fn example(src: &str) -> Self {
        Self {
            kind: EventKind::Ban,
            src: src.parse().expect("test address"),
            dst_port: 111,
            protocol: Protocol::Tcp,
            scan: ScanType::TcpSyn,
            tcp_flags: portsentry_common::tcp_flags::SYN,
            count: 1,
            ifindex: 2,
            ip_options: Some(false),
            dropped: true,
            noblock: false,
            unverified: false,
            link_local: false,
            confirmed: false,
            cookie_withheld: false,
            prefix_len: 0,
            timestamp_ns: 0,
        }
    }

    /// True when this event banned its source and the ban is enforced.
    pub fn is_blocked(&self) -> bool {
        self.kind == EventKind::Ban && !self.noblock
    }

    /// Whether this ban may be shared with the fleet: only bans whose source was shown to be
    /// real (path verified or handshake confirmed), never link-local ones.
    pub fn is_shareable(&self) -> bool {
        !self.unverified && !self.link_local
    }

    /// Decodes one ring-buffer record; `None` for a record of the wrong size, or of a kind or
    /// protocol this build does not know (a newer program). An unknown scan type reads as
    /// [`ScanType::None`] ("Unknown").
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < std::mem::size_of::<Event>() {
            return None;
        }
        // SAFETY: length checked; Event is plain old data, read unaligned.
        let ev: Event = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        let kind = EventKind::try_from(ev.kind).ok()?;
        let protocol = IpProto::try_from(ev.proto).ok()?;
        Some(Self {
            kind,
            src: cidr::key_addr(&ev.src),
            dst_port: ev.dst_port,
            protocol,
            scan: ScanType::try_from(ev.scan_type).unwrap_or(ScanType::None),
            tcp_flags: ev.tcp_flags,
            count: ev.count,
            ifindex: ev.ifindex,
            ip_options: (ev.flags & event_flags::IPV6 == 0)
                .then_some(ev.flags & event_flags::IP_OPTIONS != 0),
            dropped: ev.flags & event_flags::DROPPED != 0,
            noblock: ev.flags & event_flags::NOBLOCK != 0,
            unverified: ev.flags & event_flags::UNVERIFIED != 0,
            link_local: crate::net::cidr::is_link_local(cidr::key_addr(&ev.src)),
            confirmed: ev.flags & event_flags::CONFIRMED != 0,
            cookie_withheld: ev.flags & event_flags::COOKIE_WITHHELD != 0,
            prefix_len: ev.prefix_len,
            timestamp_ns: ev.timestamp_ns,
        })
    }
}

/// Drains the ring buffer whenever it is readable and sends decoded events on `tx`.
/// Returns when the receiver is gone or polling fails.
pub async fn read_events(
    ring: RingBuf<MapData>,
    tx: mpsc::Sender<ProbeEvent>,
) -> std::io::Result<()> {
    // SAFETY: RingBuf owns its map fd and returns that same fd for as long as it lives, and the
    // AsyncFd owns the RingBuf.
    let mut fd = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }?;
    loop {
        let mut guard = fd.readable_mut().await?;
        let ring = guard.get_inner_mut();
        let mut batch = Vec::new();
        while let Some(item) = ring.next() {
            if let Some(ev) = ProbeEvent::decode(&item) {
                batch.push(ev);
            }
        }
        guard.clear_ready();
        for ev in batch {
            if tx.send(ev).await.is_err() {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portsentry_common::AddrKey;

    #[test]
    fn decodes_and_rejects() {
        let ev = Event {
            kind: EventKind::Ban as u8,
            proto: IpProto::Tcp as u8,
            scan_type: ScanType::TcpSyn as u8,
            src: AddrKey::from_v4([10, 0, 0, 2]),
            dst_port: 111,
            count: 1,
            flags: event_flags::DROPPED,
            ..Default::default()
        };
        let bytes = as_bytes(&ev);
        let d = ProbeEvent::decode(bytes).unwrap();
        assert_eq!(
            (d.kind, d.dst_port, d.src.to_string()),
            (EventKind::Ban, 111, "10.0.0.2".into())
        );
        assert_eq!(d.ip_options, Some(false));
        assert!(d.dropped && !d.noblock);
        assert!(ProbeEvent::decode(&bytes[..10]).is_none());
    }

    /// The bytes the ring buffer would carry for `ev`.
    fn as_bytes(ev: &Event) -> &[u8] {
        // SAFETY: Event is repr(C) plain data with explicit padding; the slice borrows `ev`.
        unsafe {
            std::slice::from_raw_parts(
                (ev as *const Event).cast::<u8>(),
                std::mem::size_of::<Event>(),
            )
        }
    }

    fn decode(ev: Event) -> Option<ProbeEvent> {
        ProbeEvent::decode(as_bytes(&ev))
    }

    #[test]
    fn unknown_codes_are_handled_not_panicked_on() {
        let ok = Event {
            kind: EventKind::Probe as u8,
            proto: IpProto::Udp as u8,
            scan_type: ScanType::Udp as u8,
            ..Default::default()
        };
        assert_eq!(decode(ok).map(|d| d.scan), Some(ScanType::Udp));
        assert!(decode(Event { kind: 0, ..ok }).is_none());
        assert!(decode(Event { kind: 200, ..ok }).is_none());
        assert!(decode(Event { proto: 1, ..ok }).is_none());
        assert_eq!(
            decode(Event {
                scan_type: 99,
                ..ok
            })
            .map(|d| d.scan),
            Some(ScanType::None)
        );
    }
}
