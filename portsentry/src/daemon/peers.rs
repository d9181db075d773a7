//! Learned peers in the daemon: attaching the cgroup programs at start (or running without
//! them), restoring `peers.json` into the map, and saving it again on the sweep schedule and at
//! exit.
//!
//! Owns the attached peer-learning programs (detached on drop) and the peer memory; the file's
//! format and the restore are `crate::peers`'.

use crate::{
    clock::Now,
    config::settings::{LiveSettings, Settings},
    dataplane::{Dataplane, PeerLearning},
    peers::{self, PeerMemory, PeerStore},
    report::ReportGate,
};

/// The peer-learning programs and `peers.json`, while peers are learned.
pub(super) struct Peers {
    /// The attached peer-learning programs; detached on drop.
    learning: Option<PeerLearning>,
    /// `peers.json`, while peers are learned.
    memory: Option<PeerMemory>,
}

impl Peers {
    /// Attaches the programs and restores the last run's peers (before the config is written,
    /// so that the first config already challenges peers).
    pub fn start(dp: &mut Dataplane, settings: &Settings) -> Self {
        let (learning, memory) = start_learning(dp, settings);
        Self { learning, memory }
    }

    /// The programs are attached: trap probes from learned peers are challenged.
    pub fn learning(&self) -> bool {
        self.learning.is_some()
    }

    /// The network namespace whose sockets teach peers (0 without the programs).
    pub fn netns_cookie(&self) -> u64 {
        self.learning.as_ref().map_or(0, |l| l.netns_cookie)
    }

    /// Peers are learned and kept in `peers.json`.
    pub fn remembered(&self) -> bool {
        self.memory.is_some()
    }

    /// Saves the learned peers if they changed since the last save; a failure is reported
    /// through `errors`.
    pub fn save(&mut self, dp: &Dataplane, live: &LiveSettings, errors: &mut ReportGate) {
        let Some(memory) = self.memory.as_mut() else {
            return;
        };
        if let Err(e) = memory.save(dp, live.peer_memory, live.learn_inbound, &Now::read()) {
            if errors.try_report().is_some() {
                crate::errln!(
                    "portsentry: error: saving learned peers to {}: {e:#}",
                    memory.store().path().display()
                );
            }
        }
    }
}

/// The programs attached (or `None`) and the file to keep peers in (only while learning: a run
/// without the programs leaves the last run's file alone).
fn start_learning(
    dp: &mut Dataplane,
    settings: &Settings,
) -> (Option<PeerLearning>, Option<PeerMemory>) {
    if !settings.startup.learn_peers {
        return (None, None);
    }
    if !dp.syn_cookies() {
        crate::errln!(
            "portsentry: warning: this kernel lacks the XDP SYN cookie helpers (Linux 6.0+): not learning peers; trap probes from every source count as from strangers"
        );
        return (None, None);
    }
    let learning = match dp.learn_peers() {
        Ok(l) => l,
        Err(e) => {
            crate::errln!(
                "portsentry: warning: cannot learn peers: {:#}; trap probes from every source count as from strangers",
                anyhow::Error::from(e)
            );
            return (None, None);
        }
    };
    let store = PeerStore::new(&settings.startup.state_dir);
    // Never fatal: a damaged or too-new file is kept aside (as bans.json is), an unreadable
    // one reported.
    let saved = store.open().unwrap_or_else(|unusable| {
        crate::errln!("{}", unusable.line("starting without saved peers"));
        Vec::new()
    });
    let learn_inbound = settings.live.learn_inbound;
    match peers::restore(dp, &saved, settings.live.peer_memory, learn_inbound, &Now::read()) {
        Ok(r) => crate::errln!(
            "portsentry: learning peers (hosts this network namespace contacts: TCP connections it opens, connected UDP sockets, UDP destinations that had not written first; {}; via {}); restored {} peer(s) from {} ({} older than peer_memory{})",
            if learn_inbound {
                "clients whose connections it accepts too (learn_inbound)"
            } else {
                "not its clients"
            },
            learning.cgroup.display(),
            r.restored,
            store.path().display(),
            r.expired,
            if r.inbound_dropped > 0 {
                format!(", {} client(s) dropped: learn_inbound is off", r.inbound_dropped)
            } else {
                String::new()
            }
        ),
        Err(e) => crate::errln!("portsentry: error: restoring saved peers: {e:#}"),
    }
    (Some(learning), Some(PeerMemory::new(store)))
}
