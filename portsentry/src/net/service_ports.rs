//! Advanced mode's memory of service ports. A port is a service port while a socket listens on
//! it, and stays one for `service_port_memory` after the socket is gone: a client connecting
//! while sshd restarts is a client, not a scanner. Every port seen listening (TCP LISTEN, UDP
//! unconnected) is remembered with the last time it was seen, in wall-clock milliseconds so the
//! memory survives a restart (the daemon keeps it in `state_dir/service_ports.json`).
//!
//! Only advanced mode's "every port below N" consults the memory: a port in the explicit
//! `tcp_ports`/`udp_ports` lists is a trap whenever nothing listens on it right now.
//!
//! Pure: the caller passes the time and does the file I/O.

use std::{collections::BTreeMap, time::Duration};

use serde::{Deserialize, Serialize};

use super::{listening::Listening, ports::PortSet};

/// The file in `state_dir`.
pub const FILE: &str = "service_ports.json";
/// The file's format version.
pub const VERSION: u32 = 1;

/// Port → last time a socket listened on it (Unix ms), per protocol.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServicePorts {
    tcp: BTreeMap<u16, u64>,
    udp: BTreeMap<u16, u64>,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    version: u32,
    tcp: BTreeMap<u16, u64>,
    udp: BTreeMap<u16, u64>,
}

impl ServicePorts {
    /// Records the ports listening at `now_ms`. Returns true if a port was not remembered
    /// before (worth saving soon; a refreshed time can wait).
    pub fn observe(&mut self, listening: &Listening, now_ms: u64) -> bool {
        let mut added = false;
        for (seen, memory) in [
            (&listening.tcp, &mut self.tcp),
            (&listening.udp, &mut self.udp),
        ] {
            for port in seen.iter() {
                let last = memory.entry(port).or_insert_with(|| {
                    added = true;
                    now_ms
                });
                *last = (*last).max(now_ms);
            }
        }
        added
    }

    /// The ports that had a listener within `memory` of `now_ms` (`None`: ever).
    pub fn remembered(&self, memory: Option<Duration>, now_ms: u64) -> Listening {
        let recent = |m: &BTreeMap<u16, u64>| {
            let mut set = PortSet::default();
            for (&port, &last) in m {
                if within(last, memory, now_ms) {
                    set.insert(port);
                }
            }
            set
        };
        Listening {
            tcp: recent(&self.tcp),
            udp: recent(&self.udp),
        }
    }

    /// Forgets the ports not seen within `memory`; returns how many.
    pub fn forget_older(&mut self, memory: Option<Duration>, now_ms: u64) -> usize {
        let before = self.len();
        self.tcp.retain(|_, last| within(*last, memory, now_ms));
        self.udp.retain(|_, last| within(*last, memory, now_ms));
        before - self.len()
    }

    /// Ports remembered, both protocols.
    pub fn len(&self) -> usize {
        self.tcp.len() + self.udp.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The file's text.
    pub fn to_json(&self) -> String {
        let stored = Stored {
            version: VERSION,
            tcp: self.tcp.clone(),
            udp: self.udp.clone(),
        };
        let mut text = serde_json::to_string_pretty(&stored).unwrap_or_default();
        text.push('\n');
        text
    }

    /// Reads the file's text; an error says what is wrong with it.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let stored: Stored = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if stored.version != VERSION {
            return Err(format!(
                "version {} (this portsentry writes {VERSION})",
                stored.version
            ));
        }
        Ok(Self {
            tcp: stored.tcp,
            udp: stored.udp,
        })
    }
}

fn within(last_ms: u64, memory: Option<Duration>, now_ms: u64) -> bool {
    match memory {
        None => true,
        Some(m) => {
            now_ms.saturating_sub(last_ms) <= u64::try_from(m.as_millis()).unwrap_or(u64::MAX)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;

    fn listening(tcp: &str, udp: &str) -> Listening {
        Listening {
            tcp: PortSet::parse(tcp).unwrap(),
            udp: PortSet::parse(udp).unwrap(),
        }
    }

    fn ports(s: &PortSet) -> Vec<u16> {
        s.iter().collect()
    }

    #[test]
    fn a_port_stays_a_service_port_for_the_memory_after_its_socket_is_gone() {
        let t0 = 1_700_000_000_000;
        let memory = Some(Duration::from_secs(3600));
        let mut m = ServicePorts::default();
        assert!(m.observe(&listening("22,80", "53"), t0), "new ports");
        assert!(
            !m.observe(&listening("22,80", "53"), t0 + MIN),
            "nothing new"
        );
        // sshd restarts: 22 has no socket for a while, 80 keeps listening.
        assert!(!m.observe(&listening("80", ""), t0 + 2 * MIN));
        let r = m.remembered(memory, t0 + 30 * MIN);
        assert_eq!(ports(&r.tcp), vec![22, 80]);
        assert_eq!(ports(&r.udp), vec![53]);
        // An hour after 22 was last seen (t0 + 1 min), it is forgotten; 80 was seen later.
        let r = m.remembered(memory, t0 + 61 * MIN + 1);
        assert_eq!(ports(&r.tcp), vec![80]);
        assert!(r.udp.is_empty(), "53 last seen at t0 + 1 min");
        // "never": nothing is forgotten.
        let r = m.remembered(None, t0 + 1000 * 24 * 60 * MIN);
        assert_eq!(ports(&r.tcp), vec![22, 80]);
    }

    #[test]
    fn forgetting_and_the_clock_going_back() {
        let t0 = 1_700_000_000_000;
        let mut m = ServicePorts::default();
        m.observe(&listening("22", ""), t0);
        m.observe(&listening("25", ""), t0 + 10 * MIN);
        // A clock set back does not make a port older than it was.
        m.observe(&listening("25", ""), t0);
        assert_eq!(
            m.forget_older(Some(Duration::from_secs(300)), t0 + 12 * MIN),
            1
        );
        assert_eq!(
            ports(
                &m.remembered(Some(Duration::from_secs(300)), t0 + 12 * MIN)
                    .tcp
            ),
            vec![25]
        );
        assert_eq!(m.forget_older(None, u64::MAX), 0);
    }

    #[test]
    fn the_file_round_trips_and_bad_files_are_errors() {
        let mut m = ServicePorts::default();
        m.observe(&listening("22,443", "123"), 1_700_000_000_000);
        let text = m.to_json();
        assert!(text.contains("\"22\": 1700000000000"), "{text}");
        assert_eq!(ServicePorts::from_json(&text), Ok(m));
        assert!(ServicePorts::from_json("{").is_err());
        assert!(
            ServicePorts::from_json(r#"{"version":9,"tcp":{},"udp":{}}"#)
                .unwrap_err()
                .contains("version 9")
        );
        assert!(ServicePorts::from_json(r#"{"version":1,"tcp":{"x":1},"udp":{}}"#).is_err());
    }
}
