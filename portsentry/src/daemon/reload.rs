//! SIGHUP: re-read the configuration; live keys apply at once, startup keys warn.

use super::*;

impl Daemon {
    /// Block mode never enforces what detect mode recorded, unless the operator asks.
    pub(super) fn report_shadow_bans(&self) {
        let n = self.book.shadow_count();
        if self.settings.live.mode == Mode::Block && n > 0 {
            crate::errln!(
                "portsentry: block mode: {n} shadow ban(s) from detect mode are not enforced; \
                 `portsentry promote-shadow` enforces them"
            );
        }
    }

    pub(super) fn reload(&mut self, sources: &Sources) {
        let loaded = sources
            .load()
            .map_err(anyhow::Error::from)
            .and_then(|(s, source)| {
                resources::check(&s)?;
                Ok((s, source))
            });
        match loaded {
            Ok((s, source)) => {
                let restart_only = self.settings.startup.changed_keys(&s.startup);
                if !restart_only.is_empty() {
                    crate::errln!(
                        "portsentry: warning: {} change(s) take effect on restart only",
                        restart_only.join(", ")
                    );
                }
                let to_block =
                    self.settings.live.mode == Mode::Detect && s.live.mode == Mode::Block;
                self.settings.live = s.live;
                self.notifier.reload(&self.settings.live.notify);
                match self.apply() {
                    Ok(()) => {
                        crate::errln!(
                            "portsentry: reloaded configuration from {source}; bans kept"
                        );
                        if to_block {
                            self.report_shadow_bans();
                        }
                    }
                    Err(e) => {
                        crate::errln!("portsentry: error: applying reloaded configuration: {e:#}")
                    }
                }
            }
            Err(e) => crate::errln!(
                "portsentry: error: reload failed, keeping the running configuration: {e:#}"
            ),
        }
    }
}
