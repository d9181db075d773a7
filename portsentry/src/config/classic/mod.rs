//! `portsentry import-conf`: a classic PortSentry 1.2 / 2.x `portsentry.conf` as our TOML.
//!
//! The file's `KEY="value"` lines are read by `entries`; this file turns them into TOML.
//! Every key is either carried over or left as a comment saying why. Hook commands are split
//! into argv the way a shell would split a plain command line (`split_command`); a command that
//! needs a shell (pipes, `;`, `&&`, redirections, `$(...)`, variables) is not carried over,
//! because running it through `sh -c` with the attacker's address substituted is exactly what
//! we refuse to do.
//!
//! Text in, text out: reads and writes no files and never touches a running daemon's settings.

mod entries;
mod split_command;

use std::path::Path;

use toml_edit::Value;

use crate::net::ports::PortSet;
use entries::read_entries;
pub use entries::ImportError;
use split_command::split_command;

/// The mode a classic PortSentry was started in (`portsentry -atcp`, …): which protocol it
/// watched, and whether in advanced mode. Stealth (`stcp`, `sudp`) and connect (`tcp`, `udp`)
/// modes both become trap port lists: portsentry watches packets, as stealth mode did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ClassicMode {
    Tcp,
    Udp,
    Stcp,
    Sudp,
    Atcp,
    Audp,
}

impl ClassicMode {
    fn is_tcp(self) -> bool {
        matches!(self, Self::Tcp | Self::Stcp | Self::Atcp)
    }

    fn is_advanced(self) -> bool {
        matches!(self, Self::Atcp | Self::Audp)
    }
}

/// PortSentry 1.2's ADVANCED_PORTS_TCP/UDP default.
const CLASSIC_ADVANCED_BELOW: u16 = 1024;

/// Converts classic config text to TOML; `path` names it in errors and in the header. `modes`
/// are the command-line modes the classic daemon ran with; none means "as the file says".
pub fn import(text: &str, path: &Path, modes: &[ClassicMode]) -> Result<String, ImportError> {
    let entries = read_entries(text, path)?;
    let watched = |tcp: bool| modes.is_empty() || modes.iter().any(|m| m.is_tcp() == tcp);
    let advanced = |tcp: bool| {
        let want = if tcp {
            ClassicMode::Atcp
        } else {
            ClassicMode::Audp
        };
        modes.contains(&want)
    };
    let err = |line: usize, message: String| ImportError {
        path: path.to_owned(),
        line,
        message,
    };

    let mut top: Vec<String> = Vec::new();
    let mut hooks: Vec<String> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let mut block = [None::<(u8, usize)>; 2];

    for (i, e) in entries.iter().enumerate() {
        let origin = format!("{} (line {})", e.key, e.line);
        if let Some(later) = entries[i + 1..].iter().find(|l| l.key == e.key) {
            notes.push(format!("# {origin} replaced by line {}", later.line));
            continue;
        }
        let v = e.value.as_str();
        match e.key.as_str() {
            "TCP_PORTS" | "UDP_PORTS" | "ADVANCED_EXCLUDE_TCP" | "ADVANCED_EXCLUDE_UDP" => {
                let set = PortSet::parse(v).map_err(|x| err(e.line, format!("{}: {x}", e.key)))?;
                let key = match e.key.as_str() {
                    "TCP_PORTS" => "tcp_ports",
                    "UDP_PORTS" => "udp_ports",
                    "ADVANCED_EXCLUDE_TCP" => "advanced_exclude_tcp",
                    _ => "advanced_exclude_udp",
                };
                top.push(format!("{key} = {}  # {origin}", toml_str(&set.to_string())));
            }
            "ADVANCED_PORTS_TCP" | "ADVANCED_PORTS_UDP" => {
                let n: u16 = v.trim().parse().map_err(|_| err(e.line, format!("{}: `{v}` is not a port number", e.key)))?;
                let tcp = e.key.ends_with("TCP");
                let (key, flag) = if tcp { ("advanced_tcp_below", "-atcp") } else { ("advanced_udp_below", "-audp") };
                if advanced(tcp) {
                    top.push(format!("{key} = {n}  # {origin}, with {flag}"));
                } else {
                    top.push(format!(
                        "# {key} = {n}  # {origin}: PortSentry 1.2 used this only when started with {flag}; \
                         uncomment it if you did, or import with --mode {} (every port below {n} without a \
                         listening socket becomes a trap)",
                        &flag[1..]
                    ));
                }
            }
            "SCAN_TRIGGER" => {
                let n: u32 = v.trim().parse().map_err(|_| err(e.line, format!("SCAN_TRIGGER: `{v}` is not a non-negative integer")))?;
                top.push(format!("scan_trigger = {n}  # {origin}"));
                top.push(
                    "# PortSentry never forgot a probe; portsentry forgets probes older than `window` (default 1h). \
                     Set window = \"never\" for the old behaviour."
                        .into(),
                );
            }
            "BLOCK_TCP" | "BLOCK_UDP" => {
                let n: u8 = match v.trim() {
                    "0" => 0,
                    "1" => 1,
                    "2" => 2,
                    _ => return Err(err(e.line, format!("{}: `{v}` is not 0, 1 or 2", e.key))),
                };
                block[usize::from(e.key == "BLOCK_UDP")] = Some((n, e.line));
                let key = e.key.to_lowercase();
                match n {
                    1 => top.push(format!("{key} = true  # {origin}")),
                    0 => top.push(format!("{key} = false  # {origin}: 0 = log only")),
                    _ => top.push(format!(
                        "{key} = false  # {origin}: 2 = run KILL_RUN_CMD only, do not block \
                         (see run_cmd_always under [hooks])"
                    )),
                }
            }
            "KILL_ROUTE" | "KILL_RUN_CMD" => {
                let key = if e.key == "KILL_ROUTE" { "kill_route" } else { "run_cmd" };
                match split_command(v) {
                    Ok(argv) if key == "kill_route" && !argv.iter().any(|a| a.contains("$TARGET$")) => {
                        notes.push(format!("# {origin} not carried over: it does not contain $TARGET$, so it blocks nothing: {v}"));
                    }
                    Ok(argv) => {
                        let list: Vec<String> = argv.iter().map(|a| toml_str(a)).collect();
                        hooks.push(format!("{key} = [{}]  # {origin}", list.join(", ")));
                        if key == "kill_route" {
                            hooks.push("# (the XDP drop already blocks banned sources; kill_route is only needed for other hosts or logs)".into());
                        }
                        if argv.iter().any(|a| a.contains("$MODE$")) {
                            hooks.push("# note: $MODE$ is now \"tcp\" or \"udp\" (classic: stcp, atcp, sudp, stealth, ...)".into());
                        }
                    }
                    Err(why) => notes.push(format!(
                        "# {origin} not carried over: {why}; it would need a shell, and portsentry never runs \
                         hooks through one. Put it in a script that takes the address as $1 and set \
                         {key} = [\"/path/to/script\", \"$TARGET$\"]. Original: {v}"
                    )),
                }
            }
            "KILL_HOSTS_DENY" => {
                if !v.contains("$TARGET$") {
                    notes.push(format!("# {origin} not carried over: it does not contain $TARGET$: {v}"));
                } else {
                    hooks.push(format!("hosts_deny = {}  # {origin}", toml_str(v)));
                }
            }
            "KILL_RUN_CMD_FIRST" => match v.trim() {
                "0" | "1" => hooks.push(format!("run_cmd_first = {}  # {origin}", v.trim() == "1")),
                _ => return Err(err(e.line, format!("KILL_RUN_CMD_FIRST: `{v}` is not 0 or 1"))),
            },
            "IGNORE_FILE" | "HISTORY_FILE" => {
                let key = if e.key == "IGNORE_FILE" { "ignore_file" } else { "history_file" };
                let why = if key == "ignore_file" {
                    "entries are checked strictly (host bits, bad lines are errors)"
                } else {
                    "appended to, never truncated at start"
                };
                top.push(format!("{key} = {}  # {origin}: {why}", toml_str(v)));
                if key == "history_file" {
                    top.push(
                        "history_format = \"portsentry2\"  # PortSentry 2.x's lines; 1.2 wrote `<epoch> - date \
                         Host: name/ip Port: N TCP Blocked` here: set \"portsentry1\" if a parser (fail2ban's \
                         stock portsentry jail) reads this file that way"
                            .into(),
                    );
                }
            }
            "BLOCKED_FILE" => notes.push(format!(
                "# {origin} not carried over: bans persist in state_dir (default /var/lib/portsentry/bans.json) \
                 and are restored at start; `portsentry list` shows them"
            )),
            "RESOLVE_HOST" => notes.push(format!(
                "# {origin} not carried over: portsentry never does reverse DNS on a scanner's address \
                 (the scanner controls its PTR record, and a lookup per probe is a cheap denial of service); \
                 log lines show the address in both places, as PortSentry did when not resolving"
            )),
            "PORT_BANNER" => notes.push(format!(
                "# {origin} not carried over: banners were sent only in connect mode; portsentry drops \
                 probes in XDP and never answers on a trap port"
            )),
            other => notes.push(format!("# {origin} not carried over: `{other}` is not a PortSentry 1.2/2.x key portsentry knows")),
        }
    }
    // Advanced mode asked for on the command line without a bound in the file: 1.2's default.
    for (tcp, key, classic) in [
        (true, "advanced_tcp_below", "ADVANCED_PORTS_TCP"),
        (false, "advanced_udp_below", "ADVANCED_PORTS_UDP"),
    ] {
        if advanced(tcp) && !entries.iter().any(|e| e.key == classic) {
            top.push(format!(
                "{key} = {CLASSIC_ADVANCED_BELOW}  # --mode {}: {classic} absent, PortSentry's default",
                if tcp { "atcp" } else { "audp" }
            ));
        }
    }
    // A protocol no mode watched: its ports are not monitored, whatever the file lists.
    for (tcp, key) in [(true, "tcp_ports"), (false, "udp_ports")] {
        if !watched(tcp) {
            top.retain(|l| !l.starts_with(&format!("{key} =")));
            top.push(format!(
                "{key} = \"\"  # no --mode watched {}: PortSentry ran without it",
                if tcp { "TCP" } else { "UDP" }
            ));
        }
    }
    // Advanced mode alone (-atcp without -tcp/-stcp): 1.2 watched every port below the bound
    // and ignored TCP_PORTS/UDP_PORTS, so a listed port above the bound is no trap.
    for (tcp, key, classic) in [
        (true, "tcp_ports", "TCP_PORTS"),
        (false, "udp_ports", "UDP_PORTS"),
    ] {
        let only_advanced =
            advanced(tcp) && !modes.iter().any(|m| m.is_tcp() == tcp && !m.is_advanced());
        if only_advanced && entries.iter().any(|e| e.key == classic) {
            top.retain(|l| !l.starts_with(&format!("{key} =")));
            top.push(format!(
                "{key} = \"\"  # {classic} not used: PortSentry 1.2 in advanced mode (--mode {}) ignored it",
                if tcp { "atcp" } else { "audp" }
            ));
        }
    }
    // What a key's absence means to PortSentry (1.2 and 2.x alike), carried over explicitly:
    // a missing port list monitors no port of that protocol, a missing BLOCK_* is 0 (log only).
    for (key, classic, proto) in [
        ("tcp_ports", "TCP_PORTS", "TCP"),
        ("udp_ports", "UDP_PORTS", "UDP"),
    ] {
        if watched(proto == "TCP") && !entries.iter().any(|e| e.key == classic) {
            top.push(format!(
                "{key} = \"\"  # {classic} absent: PortSentry monitors no {proto} port without it"
            ));
        }
    }
    for (slot, (key, classic)) in block
        .iter_mut()
        .zip([("block_tcp", "BLOCK_TCP"), ("block_udp", "BLOCK_UDP")])
    {
        if slot.is_none() {
            *slot = Some((0, 0));
            top.push(format!(
                "{key} = false  # {classic} absent: PortSentry treats it as 0 (log only)"
            ));
        }
    }
    let twos: Vec<usize> = block
        .iter()
        .flatten()
        .filter(|(n, _)| *n == 2)
        .map(|(_, l)| *l)
        .collect();
    if !twos.is_empty() {
        let lines: Vec<String> = twos.iter().map(usize::to_string).collect();
        hooks.push(format!(
            "run_cmd_always = true  # BLOCK_TCP/BLOCK_UDP = 2 (line {}): run_cmd also for sources that are not blocked",
            lines.join(", ")
        ));
        if block.iter().flatten().any(|(n, _)| *n == 0) {
            hooks.push(
                "# note: run_cmd_always covers both protocols, so run_cmd now also runs for the protocol whose BLOCK was 0"
                    .into(),
            );
        }
    }
    if block.iter().flatten().any(|(n, _)| *n == 1) {
        top.push(
            "# PortSentry never lifted a block (its routes and hosts.deny lines stayed until removed by hand); \
             portsentry bans for ban_ttl (default 24h) and keeps bans across restarts. Set ban_ttl = \"never\" \
             for the old behaviour."
                .into(),
        );
    }
    if let [Some((t, _)), Some((u, _))] = block {
        if t == 0 && u == 0 {
            top.push("# BLOCK_TCP and BLOCK_UDP were both 0 (or absent): no source is dropped; mode = \"detect\" says so plainly".into());
            top.push("mode = \"detect\"".into());
        }
    }

    let mut out = format!(
        "# portsentry configuration imported from {} (classic PortSentry) by `portsentry import-conf`.\n\
         # Review it, then validate with `portsentry check-config FILE`. Keys not listed keep their\n\
         # defaults (see dist/portsentry.toml).\n\n",
        path.display()
    );
    for l in &top {
        out.push_str(l);
        out.push('\n');
    }
    if !notes.is_empty() {
        out.push('\n');
        for l in &notes {
            out.push_str(l);
            out.push('\n');
        }
    }
    if !hooks.is_empty() {
        out.push_str("\n[hooks]\n");
        for l in &hooks {
            out.push_str(l);
            out.push('\n');
        }
    }
    Ok(out)
}

fn toml_str(s: &str) -> String {
    Value::from(s).to_string().trim().to_owned()
}

#[cfg(test)]
mod tests;
