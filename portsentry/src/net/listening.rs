//! Ports with a local service, from /proc/net/{tcp,tcp6,udp,udp6} of the daemon's network
//! namespace. Such ports are never traps (PortSentry 2.x's "service check"), and advanced mode
//! guards every port below N *except* these and the ones that had a listener recently
//! (`service_ports`: a service restarting is still a service).

use std::fs;

use crate::net::ports::PortSet;

/// TCP sockets in LISTEN state.
const TCP_LISTEN: &str = "0A";
/// UDP sockets bound without a peer ("unconnected"): a service waiting for datagrams.
const UDP_UNCONN: &str = "07";

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listening {
    pub tcp: PortSet,
    pub udp: PortSet,
}

impl Listening {
    /// Reads the current sockets; unreadable files count as no sockets.
    pub fn read() -> Self {
        let read = |f: &str| fs::read_to_string(f).unwrap_or_default();
        let mut l = Self::default();
        for f in ["/proc/net/tcp", "/proc/net/tcp6"] {
            add_ports(&mut l.tcp, &read(f), TCP_LISTEN);
        }
        for f in ["/proc/net/udp", "/proc/net/udp6"] {
            add_ports(&mut l.udp, &read(f), UDP_UNCONN);
        }
        l
    }
}

/// Adds the local ports of rows in `state` (`sl local_address rem_address st …`, hex fields).
fn add_ports(set: &mut PortSet, table: &str, state: &str) {
    for line in table.lines().skip(1) {
        let mut fields = line.split_whitespace();
        let (Some(_sl), Some(local), Some(_remote), Some(st)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if st != state {
            continue;
        }
        if let Some(port) = local
            .rsplit(':')
            .next()
            .and_then(|p| u16::from_str_radix(p, 16).ok())
        {
            if port != 0 {
                set.insert(port);
            }
        }
    }
}

/// The ports to guard: the explicit list plus, in advanced mode, every port in 1..below minus
/// the exclusions and the `remembered` service ports; then minus ports where a service listens
/// now. A remembered port stays a trap if the explicit list names it.
pub fn guarded(
    explicit: &PortSet,
    advanced_below: Option<u16>,
    exclude: &PortSet,
    listening: &PortSet,
    remembered: &PortSet,
) -> PortSet {
    let mut out = PortSet::default();
    if let Some(below) = advanced_below {
        if below > 1 {
            out.insert_range(1, below - 1);
        }
        for p in remembered.iter() {
            out.remove(p);
        }
    }
    for p in explicit.iter() {
        out.insert(p);
    }
    if advanced_below.is_some() {
        for p in exclude.iter() {
            out.remove(p);
        }
    }
    for p in listening.iter() {
        out.remove(p);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_listening_sockets() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue\n\
                   0: 00000000:0016 00000000:0000 0A 00000000:00000000\n\
                   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000\n";
        let mut set = PortSet::default();
        add_ports(&mut set, tcp, TCP_LISTEN);
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![22]);
        let udp6 = "  sl  local_address                         remote_address                        st\n\
                    0: 00000000000000000000000000000000:0035 00000000000000000000000000000000:0000 07 0\n";
        let mut set = PortSet::default();
        add_ports(&mut set, udp6, UDP_UNCONN);
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![53]);
    }

    #[test]
    fn advanced_mode_guards_below_n_minus_excludes_and_services() {
        let explicit = PortSet::parse("31337").unwrap();
        let g = guarded(
            &explicit,
            Some(1024),
            &PortSet::parse("113,139").unwrap(),
            &PortSet::parse("22,80,31337").unwrap(),
            &PortSet::default(),
        );
        assert!(g.contains(1) && g.contains(1023) && !g.contains(1024));
        assert!(!g.contains(22) && !g.contains(113) && !g.contains(139));
        assert!(
            !g.contains(31337),
            "a listening service is never a trap, even when listed"
        );
        assert_eq!(g.len(), 1023 - 2 - 2);
    }

    #[test]
    fn remembered_service_ports_leave_advanced_mode_but_not_the_explicit_list() {
        let explicit = PortSet::parse("111").unwrap();
        let remembered = PortSet::parse("22,111,2000").unwrap();
        let none = PortSet::default();
        let g = guarded(&explicit, Some(1024), &none, &none, &remembered);
        assert!(!g.contains(22), "sshd restarting: still a service port");
        assert!(g.contains(111), "an explicit trap stays a trap");
        assert!(g.contains(23), "never had a listener: a trap");
        assert!(!g.contains(2000), "above the advanced range anyway");
        let classic = guarded(&explicit, None, &none, &none, &remembered);
        assert_eq!(classic.iter().collect::<Vec<_>>(), vec![111]);
    }
}
