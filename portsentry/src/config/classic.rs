//! `portsentry import-conf`: a classic PortSentry 1.2 / 2.x `portsentry.conf` as our TOML.
//!
//! Every key is either carried over or left as a comment saying why. Hook commands are split
//! into argv the way a shell would split a plain command line; a command that needs a shell
//! (pipes, `;`, `&&`, redirections, `$(...)`, variables) is not carried over, because running it
//! through `sh -c` with the attacker's address substituted is exactly what we refuse to do.

use std::{
    fmt,
    path::{Path, PathBuf},
};

use toml_edit::Value;

use crate::net::ports::PortSet;

/// `PATH:LINE: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportError {
    pub path: PathBuf,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.path.display(), self.line, self.message)
    }
}

impl std::error::Error for ImportError {}

/// One `KEY="value"` line.
struct Entry {
    key: String,
    value: String,
    line: usize,
}

/// The classic placeholders we also understand; any other `$` needs a shell.
const PLACEHOLDERS: &[&str] = &["$TARGET$", "$PORT$", "$MODE$"];

/// Converts classic config text to TOML; `path` names it in errors and in the header.
pub fn import(text: &str, path: &Path) -> Result<String, ImportError> {
    let entries = read_entries(text, path)?;
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
                let key = if e.key.ends_with("TCP") { "advanced_tcp_below" } else { "advanced_udp_below" };
                top.push(format!(
                    "# {key} = {n}  # {origin}: PortSentry 1.2 used this only when started with -atcp/-audp; \
                     uncomment it if you did (every port below {n} without a listening socket becomes a trap)"
                ));
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
    if let [Some((t, _)), Some((u, _))] = block {
        if t == 0 && u == 0 {
            top.push("# BLOCK_TCP and BLOCK_UDP were both 0: nothing is dropped; mode = \"detect\" says so plainly".into());
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

/// Reads `KEY="value"` lines; blank lines and `#` comments are skipped.
fn read_entries(text: &str, path: &Path) -> Result<Vec<Entry>, ImportError> {
    let mut out = Vec::new();
    for (i, raw) in text.split('\n').enumerate() {
        let line = i + 1;
        let err = |message: String| ImportError {
            path: path.to_owned(),
            line,
            message,
        };
        let l = raw.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let Some((key, rest)) = l.split_once('=') else {
            return Err(err(format!(
                "expected KEY=\"value\", found `{}`",
                shorten(l)
            )));
        };
        let key = key.trim();
        if key.is_empty()
            || !key
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(err(format!(
                "`{}` is not a PortSentry key (KEY=\"value\" with an upper-case KEY)",
                shorten(key)
            )));
        }
        let rest = rest.trim();
        let value = match rest.strip_prefix('"') {
            Some(inner) => {
                // The value runs to the last quote; anything after it must be a comment.
                let Some(end) = inner.rfind('"') else {
                    return Err(err(format!("{key}: the value's closing quote is missing")));
                };
                let tail = inner[end + 1..].trim();
                if !tail.is_empty() && !tail.starts_with('#') {
                    return Err(err(format!(
                        "{key}: unexpected text after the closing quote: `{}`",
                        shorten(tail)
                    )));
                }
                inner[..end].to_owned()
            }
            None => rest.split('#').next().unwrap_or("").trim().to_owned(),
        };
        out.push(Entry {
            key: key.to_owned(),
            value,
            line,
        });
    }
    Ok(out)
}

fn shorten(s: &str) -> String {
    if s.chars().count() > 60 {
        format!("{}…", s.chars().take(60).collect::<String>())
    } else {
        s.to_owned()
    }
}

/// Splits a plain command line into argv like a shell would (whitespace, quotes, backslash),
/// or says why it needs a real shell.
fn split_command(cmd: &str) -> Result<Vec<String>, String> {
    let mut argv = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = cmd.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    argv.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err("an unterminated single quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => cur.push(c),
                            Some(c) => {
                                cur.push('\\');
                                cur.push(c);
                            }
                            None => return Err("an unterminated double quote".into()),
                        },
                        Some('$') => cur.push_str(&placeholder(&mut chars)?),
                        Some('`') => return Err("command substitution (`…`)".into()),
                        Some(c) => cur.push(c),
                        None => return Err("an unterminated double quote".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(c) => cur.push(c),
                    None => return Err("a trailing backslash".into()),
                }
            }
            '$' => {
                in_word = true;
                cur.push_str(&placeholder(&mut chars)?);
            }
            '|' | '&' | ';' | '<' | '>' | '(' | ')' | '`' => {
                return Err(format!("the shell operator `{c}`"));
            }
            '*' | '?' | '[' | '~' => return Err(format!("the shell wildcard `{c}`")),
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        argv.push(cur);
    }
    match argv.first() {
        None => return Err("it is empty".into()),
        Some(program) if program.is_empty() => return Err("the program name is empty".into()),
        Some(_) => {}
    }
    Ok(argv)
}

/// After a `$`: one of our placeholders (returned whole), else an error (a shell variable).
fn placeholder(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Result<String, String> {
    let rest: String = chars.clone().collect();
    for p in PLACEHOLDERS {
        if rest.starts_with(&p[1..]) {
            for _ in 1..p.len() {
                chars.next();
            }
            return Ok((*p).to_owned());
        }
    }
    Err(format!(
        "the shell expansion `${}`",
        rest.chars().take(10).collect::<String>()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use proptest::prelude::*;

    fn imp(text: &str) -> Result<String, ImportError> {
        import(text, Path::new("portsentry.conf"))
    }

    #[test]
    fn splits_commands_like_a_shell_or_refuses() {
        assert_eq!(
            split_command("/sbin/route add -host $TARGET$ reject").unwrap(),
            ["/sbin/route", "add", "-host", "$TARGET$", "reject"]
        );
        assert_eq!(
            split_command("/bin/logger -t ps 'port $PORT$' \"host $TARGET$\"").unwrap(),
            ["/bin/logger", "-t", "ps", "port $PORT$", "host $TARGET$"]
        );
        assert_eq!(split_command("a\\ b \"c\\\"d\"").unwrap(), ["a b", "c\"d"]);
        assert!(
            split_command("/sbin/iptables -I INPUT -s $TARGET$ -j DROP && echo hi")
                .unwrap_err()
                .contains("`&`")
        );
        assert!(split_command("echo $TARGET$ >> /tmp/x")
            .unwrap_err()
            .contains("`>`"));
        assert!(split_command("mail -s \"$(hostname)\" root")
            .unwrap_err()
            .contains("`$(hostn"));
        assert!(split_command("echo $HOME").unwrap_err().contains("`$HOME"));
        assert!(split_command("echo 'unterminated").is_err());
        assert!(split_command("   ").is_err());
    }

    #[test]
    fn every_key_is_carried_over_or_explained() {
        let text = "TCP_PORTS=\"1,11,15,6000-6010\"\nUDP_PORTS=\"7, 9\"\nADVANCED_PORTS_TCP=\"1024\"\n\
                    ADVANCED_EXCLUDE_TCP=\"113,139\"\nSCAN_TRIGGER=\"2\"\nBLOCK_TCP=\"1\"\nBLOCK_UDP=\"2\"\n\
                    KILL_ROUTE=\"/sbin/iptables -I INPUT -s $TARGET$ -j DROP\"\n\
                    KILL_HOSTS_DENY=\"ALL: $TARGET$ : DENY\"\nKILL_RUN_CMD=\"/bin/echo $TARGET$ | mail root\"\n\
                    KILL_RUN_CMD_FIRST=\"1\"\nIGNORE_FILE=\"/etc/portsentry/portsentry.ignore\"\n\
                    HISTORY_FILE=\"/var/log/portsentry.history\"\nBLOCKED_FILE=\"/var/lib/portsentry.blocked\"\n\
                    RESOLVE_HOST=\"0\"\nPORT_BANNER=\"** UNAUTHORIZED ACCESS **\"\nFROBNICATE=\"1\"\n";
        let out = imp(text).unwrap();
        for needle in [
            "tcp_ports = \"1,11,15,6000-6010\"", "udp_ports = \"7,9\"", "# advanced_tcp_below = 1024",
            "advanced_exclude_tcp = \"113,139\"", "scan_trigger = 2", "block_tcp = true", "block_udp = false",
            "run_cmd_always = true  # BLOCK_TCP/BLOCK_UDP = 2 (line 7)",
            "kill_route = [\"/sbin/iptables\", \"-I\", \"INPUT\", \"-s\", \"$TARGET$\", \"-j\", \"DROP\"]",
            "hosts_deny = \"ALL: $TARGET$ : DENY\"", "# KILL_RUN_CMD (line 10) not carried over: the shell operator `|`",
            "run_cmd_first = true", "ignore_file = \"/etc/portsentry/portsentry.ignore\"",
            "history_file = \"/var/log/portsentry.history\"", "# BLOCKED_FILE (line 14) not carried over",
            "# RESOLVE_HOST (line 15) not carried over", "# PORT_BANNER (line 16) not carried over",
            "# FROBNICATE (line 17) not carried over",
        ] {
            assert!(out.contains(needle), "missing {needle:?} in\n{out}");
        }
        let without_files = out.replace("ignore_file =", "# ignore_file =");
        let s = config::parse_str(&without_files, Path::new("imported.toml")).unwrap();
        assert_eq!(s.live.scan_trigger, 2);
        assert!(s.live.tcp_ports.contains(6005) && !s.live.udp_ports.contains(8));
        assert!(
            s.live.hooks.run_cmd_first
                && s.live.hooks.run_cmd_always
                && s.live.hooks.run_cmd.is_none()
        );
    }

    #[test]
    fn both_blocks_off_is_detect_mode() {
        let out = imp("TCP_PORTS=\"1\"\nBLOCK_TCP=\"0\"\nBLOCK_UDP=\"0\"\n").unwrap();
        let s = config::parse_str(&out, Path::new("x")).unwrap();
        assert_eq!(s.live.mode, crate::config::settings::Mode::Detect);
    }

    #[test]
    fn bad_values_name_their_line() {
        assert_eq!(
            imp("# c\nTCP_PORTS=\"1,x\"").unwrap_err().to_string(),
            "portsentry.conf:2: TCP_PORTS: `x` is not a port number (1-65535)"
        );
        assert!(imp("\n\nBLOCK_TCP=\"yes\"")
            .unwrap_err()
            .to_string()
            .starts_with("portsentry.conf:3: BLOCK_TCP"));
        assert!(imp("SCAN_TRIGGER=\"-1\"")
            .unwrap_err()
            .to_string()
            .starts_with("portsentry.conf:1: SCAN_TRIGGER"));
        assert!(imp("just words")
            .unwrap_err()
            .to_string()
            .starts_with("portsentry.conf:1: expected KEY="));
        assert!(imp("TCP_PORTS=\"1,2")
            .unwrap_err()
            .to_string()
            .contains("closing quote"));
        assert!(imp("tcp_ports=\"1\"")
            .unwrap_err()
            .to_string()
            .contains("upper-case"));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn arbitrary_text_never_panics(text in "(?s).{0,300}") {
            if let Err(e) = imp(&text) {
                prop_assert!(e.line >= 1 && e.line <= text.split('\n').count());
            }
        }

        /// Whatever is imported from key-shaped input is valid TOML that check-config accepts.
        #[test]
        fn imported_output_always_validates(lines in prop::collection::vec(
            (prop::sample::select(vec![
                "TCP_PORTS", "UDP_PORTS", "SCAN_TRIGGER", "BLOCK_TCP", "BLOCK_UDP", "KILL_ROUTE", "KILL_RUN_CMD",
                "KILL_HOSTS_DENY", "KILL_RUN_CMD_FIRST", "ADVANCED_PORTS_TCP", "RESOLVE_HOST", "PORT_BANNER", "OTHER",
            ]), "[ -~]{0,40}"), 0..10)) {
            let text: String = lines.iter().map(|(k, v)| format!("{k}=\"{v}\"\n")).collect();
            if let Ok(out) = imp(&text) {
                let parsed = config::parse_str(&out, Path::new("imported.toml"));
                prop_assert!(parsed.is_ok(), "{:?}\n--- input\n{}\n--- output\n{}", parsed.err(), text, out);
            }
        }
    }
}
