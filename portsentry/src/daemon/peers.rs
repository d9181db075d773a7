//! Learned peers in the daemon: attaching the cgroup programs at start (or running without
//! them), restoring `peers.json` into the map, and saving it again on the sweep schedule and at
//! exit.

use super::*;

use crate::{
    dataplane::PeerLearning,
    peers::{self, PeerFileError, PeerMemory, PeerStore},
};

/// The programs attached (or `None`) and the file to keep peers in (only while learning: a run
/// without the programs leaves the last run's file alone).
pub(super) fn start_learning(
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
    // Like bans.json: a damaged or too-new file is kept aside, never fatal.
    let saved = match store.load() {
        Ok(saved) => saved,
        Err(e @ (PeerFileError::Corrupt { .. } | PeerFileError::TooNew { .. })) => {
            let why = if matches!(e, PeerFileError::TooNew { .. }) {
                "newer"
            } else {
                "corrupt"
            };
            match store.keep_aside(why) {
                Ok(moved) => crate::errln!(
                    "portsentry: error: {e}; kept aside as {}; starting without saved peers",
                    moved.display()
                ),
                Err(m) => crate::errln!(
                    "portsentry: error: {e}; could not keep it aside ({m}); starting without saved peers"
                ),
            }
            Vec::new()
        }
        Err(e) => {
            crate::errln!("portsentry: error: {e}; starting without saved peers");
            Vec::new()
        }
    };
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

impl Daemon {
    /// Saves the learned peers if they changed since the last save.
    pub(super) fn save_peers(&mut self) {
        let Some(memory) = self.peer_memory.as_mut() else {
            return;
        };
        let live = &self.settings.live;
        if let Err(e) = memory.save(&self.dp, live.peer_memory, live.learn_inbound, &Now::read()) {
            if self.save_error_report.try_report().is_some() {
                crate::errln!(
                    "portsentry: error: saving learned peers to {}: {e:#}",
                    memory.store().path().display()
                );
            }
        }
    }
}
