//! The settings in the daemon: SIGHUP's re-read (live keys apply at once, startup keys warn),
//! the summary line of what is guarded, and the warning about shadow bans block mode does not
//! enforce. Applying them to the kernel is the daemon's (`Daemon::apply`), through the parts.

use anyhow::Result;

use crate::{
    bans::BanBook,
    config::{
        settings::{LiveSettings, Mode, Settings},
        sources::{self, Sources},
    },
};

/// SIGHUP's new live settings, where they came from, and whether they switch detect mode to
/// block mode.
pub(super) struct Reread {
    pub live: LiveSettings,
    pub source: String,
    pub to_block: bool,
}

/// Re-reads the configuration with the run's command-line overrides and warns about the
/// changes that need a restart; `None` (said) if it cannot be read, keeping `current`.
pub(super) fn reread(sources: &Sources, current: &Settings) -> Option<Reread> {
    let (s, source) = match load(sources) {
        Ok(loaded) => loaded,
        Err(e) => {
            crate::errln!(
                "portsentry: error: reload failed, keeping the running configuration: {e:#}"
            );
            return None;
        }
    };
    let restart_only = current.startup.changed_keys(&s.startup);
    if !restart_only.is_empty() {
        crate::errln!(
            "portsentry: warning: {} change(s) take effect on restart only",
            restart_only.join(", ")
        );
    }
    let to_block = current.live.mode == Mode::Detect && s.live.mode == Mode::Block;
    Some(Reread {
        live: s.live,
        source: source.to_string(),
        to_block,
    })
}

fn load(sources: &Sources) -> Result<(Settings, sources::Source)> {
    let (s, source) = sources.load()?;
    super::resources::check(&s)?;
    Ok((s, source))
}

/// Block mode never enforces what detect mode recorded, unless the operator asks.
pub(super) fn report_shadow_bans(book: &BanBook, live: &LiveSettings) {
    let n = book.shadow_count();
    if live.mode == Mode::Block && n > 0 {
        crate::errln!(
            "portsentry: block mode: {n} shadow ban(s) from detect mode are not enforced; \
             `portsentry promote-shadow` enforces them"
        );
    }
}

/// What the settings guard, after they were applied with `allow_count` allowlist entries.
pub(super) fn guarding_line(live: &LiveSettings, allow_count: u32) -> String {
    format!(
        "portsentry: guarding TCP [{}] UDP [{}]{}; mode {}; trigger {}; {} allowlist entr{}",
        live.tcp_ports,
        live.udp_ports,
        match (live.advanced_tcp_below, live.advanced_udp_below) {
            (None, None) => String::new(),
            (t, u) => format!(
                " plus advanced mode below TCP {} UDP {}",
                t.map_or("-".into(), |n| n.to_string()),
                u.map_or("-".into(), |n| n.to_string())
            ),
        },
        if live.mode == Mode::Block {
            "block"
        } else {
            "detect"
        },
        live.effective_trigger(),
        allow_count,
        if allow_count == 1 { "y" } else { "ies" }
    )
}
