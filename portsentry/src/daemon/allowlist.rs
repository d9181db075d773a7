//! Applying the live settings to the kernel: guarded ports, the allowlist (configured plus
//! automatic: own addresses, gateways, resolvers, the LAPI host) and the config block, and
//! handing the allowlist to the ban book so it lifts what it covers.

use super::*;

impl Daemon {
    /// The automatic allowlist: own addresses always (a probe "from" one of them is forged),
    /// plus gateways, resolvers and the LAPI host with `auto_allow`.
    fn automatic_entries(&self) -> Result<Vec<Cidr>> {
        if self.settings.live.auto_allow {
            netinfo::auto_allow_list(&self.lapi_hosts)
        } else {
            netinfo::own_address_list()
        }
    }

    /// The path check and the SYN cookies (sent to the route's neighbour) look routes up
    /// "from" the loopback device, which needs forwarding on there (only there: nothing arrives
    /// on `lo` from outside). Without it bans still happen, marked unverified, and learned
    /// peers get no cookies.
    fn ensure_route_lookups(&mut self) {
        let wanted = self.settings.live.path_check || self.extras.peer_challenge;
        match (wanted, self.lo_forwarding.is_some()) {
            (true, false) => match LoopbackForwarding::enable() {
                Ok(f) => self.lo_forwarding = Some(f),
                Err(e) => crate::errln!(
                    "portsentry: warning: cannot enable route lookups on lo ({e}); bans are made \
                     unverified and learned peers get no SYN cookies"
                ),
            },
            (false, true) => self.lo_forwarding = None,
            _ => {}
        }
    }

    /// Writes ports, allowlist, hooks and the config block from `self.settings`.
    pub(super) fn apply(&mut self) -> Result<()> {
        self.auto_allow = self.automatic_entries()?;
        self.ensure_route_lookups();
        let allow = self.allowlist();
        self.recompute_remembered();
        let written = guard::write(
            &mut self.dp,
            &self.settings.live,
            &allow,
            &self.listening,
            &self.remembered,
            &self.extras,
        )?;
        self.report_refused_allow(&written);
        self.lift_allowlisted(&allow)?;
        let allow_count = written.count;
        self.hooks.reload(self.settings.live.hooks.clone());
        self.sink = LogSink::new(
            self.settings.live.log_format,
            self.settings.live.history_file.as_deref(),
            self.settings.live.history_format,
        );
        crate::errln!(
            "portsentry: guarding TCP [{}] UDP [{}]{}; mode {}; trigger {}; {} allowlist entr{}",
            self.settings.live.tcp_ports,
            self.settings.live.udp_ports,
            match (
                self.settings.live.advanced_tcp_below,
                self.settings.live.advanced_udp_below
            ) {
                (None, None) => String::new(),
                (t, u) => format!(
                    " plus advanced mode below TCP {} UDP {}",
                    t.map_or("-".into(), |n| n.to_string()),
                    u.map_or("-".into(), |n| n.to_string())
                ),
            },
            if self.settings.live.mode == Mode::Block {
                "block"
            } else {
                "detect"
            },
            self.settings.live.effective_trigger(),
            allow_count,
            if allow_count == 1 { "y" } else { "ies" }
        );
        Ok(())
    }

    /// The configured plus automatic allowlist, sorted and without duplicates.
    pub(super) fn allowlist(&self) -> Vec<Cidr> {
        let mut allow = self.settings.live.allow.clone();
        allow.extend(self.auto_allow.iter().copied());
        allow.sort();
        allow.dedup();
        allow
    }

    pub(super) fn report_refused_allow(&self, written: &TrieWrite) {
        if let Some(first) = written.refused.first() {
            crate::errln!(
                "portsentry: error: the allowlist trie is full: {} entr(y/ies) not written (first: {first})",
                written.refused.len(),
            );
        }
    }

    /// Hands the allowlist to the ban book, which lifts every ban it now covers.
    pub(super) fn lift_allowlisted(&mut self, allow: &[Cidr]) -> Result<()> {
        let lifted = self
            .book
            .set_allowlist(Some(&mut self.dp), allow, &Now::read())?;
        if !lifted.is_empty() {
            let shown: Vec<String> = lifted.iter().take(10).map(Cidr::to_string).collect();
            self.sink.line(&format!(
                "portsentry: allowlist: lifted {} ban(s) covered by the allowlist: {}{}",
                lifted.len(),
                shown.join(", "),
                if lifted.len() > 10 { ", …" } else { "" }
            ));
            self.mark_dirty();
        }
        Ok(())
    }

    /// An address or route changed: recompute the automatic allowlist and apply it if it
    /// differs (a new gateway is protected before a spoofed probe from it can count).
    pub(super) fn refresh_auto_allow(&mut self) {
        let fresh = match self.automatic_entries() {
            Ok(list) => list,
            Err(e) => {
                crate::errln!("portsentry: error: recomputing the automatic allowlist: {e:#}");
                return;
            }
        };
        if fresh == self.auto_allow {
            return;
        }
        self.auto_allow = fresh;
        let allow = self.allowlist();
        let result = guard::write_allowlist(&mut self.dp, &allow)
            .map_err(anyhow::Error::from)
            .and_then(|written| {
                self.report_refused_allow(&written);
                self.lift_allowlisted(&allow)?;
                Ok(written.count)
            });
        match result {
            Ok(count) => crate::errln!(
                "portsentry: addresses or routes changed; automatic allowlist updated ({} automatic, {count} in total)",
                self.auto_allow.len()
            ),
            Err(e) => crate::errln!("portsentry: error: updating the automatic allowlist: {e:#}"),
        }
    }
}
