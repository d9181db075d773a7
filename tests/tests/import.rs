//! `import-conf` on PortSentry's own stock configs (1.2 and 2.x), checked the way an
//! administrator would: the effective configuration `check-config` prints has the classic
//! meaning, key by key.

use std::{collections::BTreeSet, process::Command};

use portsentry_tests::lab::{portsentry_bin, TempDir};

const STOCK_1_2: &str = include_str!("../fixtures/classic/stock-1.2.conf");
const STOCK_2_X: &str = include_str!("../fixtures/classic/stock-2.x.conf");
/// The entries of both stock ignore files.
const STOCK_IGNORE: &str = "127.0.0.1/32\n0.0.0.0\n";

struct Imported {
    /// What `import-conf` printed (with its comments).
    text: String,
    /// What `check-config` says the imported file means.
    effective: toml::Table,
    dir: TempDir,
}

/// Imports `classic` as `portsentry --MODE…` ran it, with its file paths moved into a temp dir
/// (where the ignore file exists), then reads back the effective configuration.
fn import(classic: &str, modes: &[&str]) -> Imported {
    let dir = TempDir::new("import").expect("dir");
    let d = dir.path.display().to_string();
    dir.write("portsentry.ignore", STOCK_IGNORE);
    let classic = classic
        .replace("/usr/local/psionic/portsentry/", &format!("{d}/"))
        .replace("/etc/portsentry/", &format!("{d}/"));
    let conf = dir.write("portsentry.conf", &classic);
    let mut cmd = Command::new(portsentry_bin());
    cmd.arg("import-conf").arg(&conf);
    for m in modes {
        cmd.args(["--mode", m]);
    }
    let out = cmd.output().expect("import-conf");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "import-conf: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let toml_path = dir.write("portsentry.toml", &text);
    let out = Command::new(portsentry_bin())
        .args(["check-config", &toml_path])
        .output()
        .expect("check-config");
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "check-config:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let effective = shown
        .parse::<toml::Table>()
        .unwrap_or_else(|e| panic!("check-config printed invalid TOML ({e}):\n{shown}"));
    Imported {
        text,
        effective,
        dir,
    }
}

impl Imported {
    fn get(&self, key: &str) -> &toml::Value {
        let (table, key) = match key.split_once('.') {
            Some((t, k)) => (
                self.effective
                    .get(t)
                    .and_then(toml::Value::as_table)
                    .unwrap_or_else(|| panic!("no [{t}]")),
                k,
            ),
            None => (&self.effective, key),
        };
        table
            .get(key)
            .unwrap_or_else(|| panic!("no `{key}` in the effective config:\n{:#?}", self.effective))
    }

    fn str(&self, key: &str) -> &str {
        self.get(key).as_str().expect(key)
    }

    fn int(&self, key: &str) -> i64 {
        self.get(key).as_integer().expect(key)
    }

    fn bool(&self, key: &str) -> bool {
        self.get(key).as_bool().expect(key)
    }

    fn ports(&self, key: &str) -> BTreeSet<u16> {
        ports(self.str(key))
    }

    fn list(&self, key: &str) -> Vec<&str> {
        self.get(key)
            .as_array()
            .expect(key)
            .iter()
            .filter_map(toml::Value::as_str)
            .collect()
    }

    fn path(&self, name: &str) -> String {
        format!("{}/{name}", self.dir.path.display())
    }

    /// `tcp_ports` (`proto` "tcp") or `udp_ports` holds the ports of the classic file's
    /// `TCP_PORTS`/`UDP_PORTS`.
    fn carries_ports(&self, classic: &str, proto: &str) {
        let (ours, theirs) = (
            format!("{proto}_ports"),
            format!("{}_PORTS", proto.to_uppercase()),
        );
        assert_eq!(
            self.ports(&ours),
            ports(&classic_value(classic, &theirs)),
            "{ours}"
        );
    }

    /// Whether import-conf wrote a comment containing `note`.
    fn says(&self, note: &str) -> bool {
        self.text
            .lines()
            .any(|l| l.split_once('#').is_some_and(|(_, c)| c.contains(note)))
    }
}

/// A classic or portsentry port list ("1,11,12345-12346") as a set.
fn ports(list: &str) -> BTreeSet<u16> {
    let mut set = BTreeSet::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (a, b): (u16, u16) = (a.parse().expect(part), b.parse().expect(part));
        set.extend(a..=b);
    }
    set
}

fn classic_value(classic: &str, key: &str) -> String {
    classic
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == key).then(|| v.trim().trim_matches('"').to_owned())
        })
        .unwrap_or_else(|| panic!("{key} not in the fixture"))
}

/// PortSentry 1.2's stock file, run as `portsentry -tcp` and `portsentry -udp`.
#[test]
fn stock_1_2_config_keeps_its_meaning() {
    let i = import(STOCK_1_2, &["tcp", "udp"]);
    i.carries_ports(STOCK_1_2, "tcp");
    i.carries_ports(STOCK_1_2, "udp");
    // ADVANCED_PORTS_* only mattered with -atcp/-audp.
    assert_eq!(i.int("advanced_tcp_below"), 0);
    assert_eq!(i.int("advanced_udp_below"), 0);
    assert_eq!(i.ports("advanced_exclude_tcp"), ports("113,139"));
    assert_eq!(i.ports("advanced_exclude_udp"), ports("520,138,137,67"));
    assert_eq!(i.str("ignore_file"), i.path("portsentry.ignore"));
    assert_eq!(
        i.list("allow"),
        ["127.0.0.1", "0.0.0.0"],
        "the ignore file's entries"
    );
    assert_eq!(i.str("history_file"), i.path("portsentry.history"));
    assert_eq!(i.str("history_format"), "portsentry2");
    assert!(i.says("set \"portsentry1\" if a parser"), "{}", i.text);
    assert_eq!(i.str("mode"), "block");
    assert!(i.bool("block_tcp") && i.bool("block_udp"));
    assert_eq!(i.int("scan_trigger"), 0);
    assert_eq!(i.str("hooks.hosts_deny"), "ALL: $TARGET$");
    assert!(i.list("hooks.run_cmd").is_empty() && i.list("hooks.kill_route").is_empty());
    // What does not carry over says so.
    for note in [
        "BLOCKED_FILE (line",
        "RESOLVE_HOST (line",
        "PortSentry never lifted a block",
        "PortSentry never forgot a probe",
    ] {
        assert!(i.says(note), "a note `{note}`:\n{}", i.text);
    }
}

/// The same file run as `portsentry -atcp` and `portsentry -audp`: ADVANCED_PORTS_* become the
/// advanced-mode bounds, with the excludes.
#[test]
fn stock_1_2_config_in_advanced_mode() {
    let i = import(STOCK_1_2, &["atcp", "audp"]);
    assert_eq!(i.int("advanced_tcp_below"), 1024);
    assert_eq!(i.int("advanced_udp_below"), 1024);
    assert_eq!(i.ports("advanced_exclude_tcp"), ports("113,139"));
    assert_eq!(i.ports("advanced_exclude_udp"), ports("520,138,137,67"));
}

/// Run as `portsentry -stcp` only: UDP is not monitored at all.
#[test]
fn stock_1_2_config_with_one_protocol() {
    let i = import(STOCK_1_2, &["stcp"]);
    i.carries_ports(STOCK_1_2, "tcp");
    assert!(i.ports("udp_ports").is_empty(), "{}", i.text);
}

/// PortSentry 2.x's stock file (2.x watches both protocols in stealth mode by default). It
/// has no BLOCK_* keys, which 2.x reads as 0: log only, nothing dropped.
#[test]
fn stock_2_x_config_keeps_its_meaning() {
    let i = import(STOCK_2_X, &[]);
    i.carries_ports(STOCK_2_X, "tcp");
    i.carries_ports(STOCK_2_X, "udp");
    assert!(!i.bool("block_tcp") && !i.bool("block_udp"));
    assert_eq!(i.str("mode"), "detect", "nothing is dropped");
    assert_eq!(i.str("ignore_file"), i.path("portsentry.ignore"));
    assert_eq!(i.str("history_file"), "/var/log/portsentry.log");
    assert_eq!(i.str("history_format"), "portsentry2");
    assert_eq!(i.int("advanced_tcp_below"), 0);
    assert_eq!(i.int("advanced_udp_below"), 0);
    assert!(i.list("hooks.run_cmd").is_empty());
    assert!(i.str("hooks.hosts_deny").is_empty());
    assert!(i.says("BLOCKED_FILE (line"), "{}", i.text);
    let stealth = import(STOCK_2_X, &["stcp", "sudp"]);
    assert_eq!(stealth.ports("tcp_ports"), i.ports("tcp_ports"));
    assert_eq!(stealth.ports("udp_ports"), i.ports("udp_ports"));
    assert_eq!(stealth.str("mode"), "detect");
}
