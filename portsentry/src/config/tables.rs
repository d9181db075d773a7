//! The settings' tables: `[hooks]` here; `[crowdsec]` in `crowdsec`, `[notify]` in `notify`
//! (each table's keys, defaults and the rules between its keys).

use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

use super::values;

mod crowdsec;
mod notify;

pub use self::{
    crowdsec::{CrowdsecSettings, DEFAULT_CROWDSEC_SCENARIO},
    notify::{AlertMode, NotifySettings},
};

pub const DEFAULT_HOSTS_DENY: &str = "/etc/hosts.deny";

/// PortSentry's KILL_* response hooks, made safe: argv lists, never a shell.
///
/// Placeholders in every argv element and in `hosts_deny`: `$TARGET$`/`{target}` (source
/// address), `$PORT$`/`{port}` (destination port), `$MODE$`/`{mode}` (`tcp`/`udp`),
/// `{proto}` (`TCP`/`UDP`), `{scan}` (scan type text).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HookSettings {
    /// KILL_RUN_CMD: run on every ban; `[]` runs nothing.
    #[serde(with = "values::argv")]
    pub run_cmd: Option<Vec<String>>,
    /// KILL_HOSTS_DENY: this line is appended to `hosts_deny_file` on every ban.
    #[serde(with = "values::hosts_deny_line")]
    pub hosts_deny: Option<String>,
    #[serde(with = "values::required_path")]
    pub hosts_deny_file: PathBuf,
    /// KILL_ROUTE: run on every ban (after hosts_deny).
    #[serde(with = "values::targeted_argv")]
    pub kill_route: Option<Vec<String>>,
    /// KILL_RUN_CMD_FIRST: run_cmd before hosts_deny and kill_route instead of after.
    pub run_cmd_first: bool,
    /// Also run `run_cmd` for bans that are not enforced (detect mode, `block_tcp`/`block_udp`
    /// off): PortSentry's BLOCK_TCP/BLOCK_UDP = 2. hosts_deny and kill_route block, so they run
    /// only for enforced bans.
    pub run_cmd_always: bool,
    /// Each command is killed after this long and counted as failed.
    #[serde(with = "values::bounded_duration")]
    pub timeout: Duration,
    /// Ban responses (each a sequence of the hooks above) running at once; more wait in the
    /// queue.
    #[serde(deserialize_with = "values::int_in::<_, _, 1, 1024>")]
    pub max_concurrent: usize,
    /// Ban responses that may wait, in ban order, for one of the `max_concurrent` slots; a
    /// response finding the queue full is skipped. 0: skip whenever every slot is busy.
    #[serde(deserialize_with = "values::int_in::<_, _, 0, 65536>")]
    pub queue: usize,
    /// Ban responses admitted (started or queued) per rolling minute at most; more are skipped,
    /// not queued.
    #[serde(deserialize_with = "values::int_in::<_, _, 0, 4294967295>")]
    pub max_per_minute: u32,
}

impl Default for HookSettings {
    fn default() -> Self {
        Self {
            run_cmd: None,
            hosts_deny: None,
            hosts_deny_file: PathBuf::from(DEFAULT_HOSTS_DENY),
            kill_route: None,
            run_cmd_first: false,
            run_cmd_always: false,
            timeout: Duration::from_secs(10),
            max_concurrent: 4,
            queue: 256,
            max_per_minute: 60,
        }
    }
}

impl HookSettings {
    pub fn is_empty(&self) -> bool {
        self.run_cmd.is_none() && self.hosts_deny.is_none() && self.kill_route.is_none()
    }
}
