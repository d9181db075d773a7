//! The config file's guarantees: every error names file:line:column and key, unknown keys get
//! a "did you mean", check-config output parses back to the same settings. The `[crowdsec]`
//! table's rules are tested in `crowdsec`, where settings come from (ignore file, command line)
//! in `loading`.

use std::{path::Path, time::Duration};

use proptest::prelude::*;

use super::{
    file::field_names,
    settings::{LiveSettings, Mode, Settings, StartupSettings},
    *,
};
use crate::net::cidr::Cidr;

mod crowdsec;
mod loading;

fn parse(text: &str) -> Result<Settings, ConfigError> {
    parse_str(text, Path::new("test.toml"))
}

fn err(text: &str) -> String {
    parse(text).expect_err("must be rejected").to_string()
}

#[test]
fn the_shipped_example_is_the_default() {
    let s = parse_str(EMBEDDED_DEFAULT, Path::new("dist/portsentry.toml")).unwrap();
    assert_eq!(render(&s), render(&Settings::default()));
}

#[test]
fn render_round_trips() {
    let text = r#"
interfaces = ["veth0", "eth1"]
tcp_ports = [1, 79, "6000-6063"]
udp_ports = "7,9"
advanced_tcp_below = 1024
advanced_exclude_tcp = "113"
scan_trigger = 3
window = "90s"
mode = "detect"
block_udp = false
ban_ttl = "never"
max_bans = 1000
allow = ["10.0.0.0/8", "2001:db8::/32", "192.0.2.1"]
history_file = "/var/log/portsentry.history"
log_format = "json"
xdp_mode = "generic"
pin_dir = ""
[hooks]
run_cmd = ["/usr/local/bin/notify", "$TARGET$ \"quoted\"", "{port}"]
hosts_deny = "ALL: $TARGET$ : DENY"
kill_route = ["/sbin/ip", "route", "add", "blackhole", "$TARGET$"]
run_cmd_first = true
run_cmd_always = true
timeout = "1m 30s"
max_concurrent = 2
max_per_minute = 0
"#;
    let s = parse(text).unwrap();
    assert_eq!(s.startup.interfaces, ["veth0", "eth1"]);
    assert_eq!(s.live.tcp_ports.len(), 66);
    assert_eq!(s.live.advanced_tcp_below, Some(1024));
    assert_eq!(s.live.window, Some(Duration::from_secs(90)));
    assert_eq!(
        (s.live.mode, s.live.block_udp, s.live.ban_ttl),
        (Mode::Detect, false, None)
    );
    assert_eq!(s.startup.pin_dir, None);
    assert_eq!(s.live.allow.len(), 3);
    assert_eq!(s.live.hooks.timeout, Duration::from_secs(90));
    assert_eq!(
        s.live.hooks.run_cmd.as_ref().unwrap()[1],
        "$TARGET$ \"quoted\""
    );
    let rendered = render(&s);
    let again = parse(&rendered).unwrap();
    assert_eq!(render(&again), rendered);
}

#[test]
fn errors_name_file_line_column_and_key() {
    assert_eq!(
        err("scan_trigger = 1\ntcp_ports = \"1,2,x\"\n"),
        "test.toml:2:13: key `tcp_ports`: `x` is not a port number (1-65535)"
    );
    assert_eq!(
        err("\n\n[hooks]\nrun_cmd = \"rm -rf $TARGET$\"\n"),
        "test.toml:4:11: key `hooks.run_cmd`: must be a list of strings (argv), e.g. [\"/usr/local/bin/notify\", \"$TARGET$\"]: commands are never run through a shell"
    );
    assert!(err("scan_triger = 2").starts_with(
        "test.toml:1:1: key `scan_triger`: unknown key (did you mean `scan_trigger`?)"
    ));
    assert!(err("[hooks]\ntimout = \"1s\"")
        .contains(":2:1: key `hooks.timout`: unknown key (did you mean `hooks.timeout`?)"));
    assert!(err("allow = [\"10.0.0.1/8\"]")
        .contains(":1:10: key `allow`: `10.0.0.1/8` has host bits set"));
    assert!(err("mode = \"drop\"")
        .contains("key `mode`: unknown variant `drop`, expected `block` or `detect`"));
    assert!(err("window = \"soon\"").contains("key `window`: `soon` is not a duration"));
    assert!(err("block_tcp = 1")
        .contains("key `block_tcp`: invalid type: integer `1`, expected a boolean"));
    assert!(err("scan_trigger = -1").contains("out of range"));
    assert!(err("tcp_ports = [0]").contains("0 is not a port number"));
    assert!(err("a = = 1").starts_with("test.toml:1:"));
    assert!(
        err("[hooks]\nkill_route = [\"/sbin/route\", \"add\"]").contains("must contain $TARGET$")
    );
    // `[]` is how check-config shows "no command", so it reads back as none.
    assert_eq!(
        parse("[hooks]\nrun_cmd = []").unwrap().live.hooks.run_cmd,
        None
    );
    assert!(
        err("[hooks]\nrun_cmd = [\"\"]").contains("the program (first element) must not be empty")
    );
    assert!(err("[hooks]\ntimeout = \"never\"").contains("positive duration"));
    assert!(err("hooks = 3").contains("key `hooks`: must be a table"));
}

const GOOD: &[(&str, &str)] = &[
    ("tcp_ports", "\"1,2,3-9\""),
    ("udp_ports", "[7, \"9-10\"]"),
    ("scan_trigger", "2"),
    ("window", "\"5m\""),
    ("ban_ttl", "\"never\""),
    ("mode", "\"detect\""),
    ("allow", "[\"10.0.0.0/8\"]"),
    ("block_udp", "false"),
    ("advanced_tcp_below", "1024"),
];
const BAD: &[(&str, &str)] = &[
    ("tcp_ports", "\"1,,2\""),
    ("udp_ports", "[70000]"),
    ("scan_trigger", "\"two\""),
    ("window", "\"5 fortnights\""),
    ("mode", "\"panic\""),
    ("allow", "[\"10.0.0.1/8\"]"),
    ("block_udp", "\"no\""),
    ("advanced_tcp_below", "65536"),
    ("bogus_key", "1"),
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Arbitrary text never panics; every rejection names a line.
    #[test]
    fn arbitrary_text_never_panics(text in "(?s).{0,300}") {
        if let Err(e) = parse(&text) {
            prop_assert!(e.line >= 1, "{e}");
            prop_assert!(e.to_string().starts_with("test.toml:"));
        }
    }

    /// Near-valid files: TOML-ish fragments from the real key set.
    #[test]
    fn key_soup_never_panics(lines in prop::collection::vec(
        (prop::sample::select([field_names::<StartupSettings>(), field_names::<LiveSettings>()].concat()), prop::sample::select(vec![
            "1", "-1", "0", "\"\"", "\"1-\"", "[1,", "[\"a\"]", "true", "1.5", "{a=1}", "\"::/0\"",
            "[\"::ffff:1.2.3.4/120\"]", "\"65535-1\"", "\"never\"", "1979-05-27", "[[]]",
        ])), 0..8)) {
        let text: String = lines.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
        if let Err(e) = parse(&text) {
            prop_assert!(e.line >= 1 && e.line <= lines.len().max(1), "{e}\n{text}");
        }
    }

    /// The first bad line in document order is the one reported.
    #[test]
    fn the_reported_line_is_the_bad_one(
        good in prop::collection::vec(prop::sample::select(GOOD), 0..6),
        bad in prop::sample::select(BAD),
        at in 0usize..6,
    ) {
        let mut entries: Vec<(&str, &str)> = Vec::new();
        for g in good {
            if g.0 != bad.0 && !entries.iter().any(|e| e.0 == g.0) {
                entries.push(g);
            }
        }
        let at = at.min(entries.len());
        entries.insert(at, bad);
        let text: String = entries.iter().map(|(k, v)| format!("# comment\n{k} = {v}\n")).collect();
        let e = parse(&text).expect_err("bad value accepted");
        prop_assert_eq!(e.line, 2 * at + 2, "{}\n{}", e, text);
        prop_assert_eq!(e.key.as_deref(), Some(bad.0));
    }
}

#[test]
fn check_config_shows_every_key_of_the_types() {
    let mut s = Settings::default();
    s.startup.crowdsec = parse("[crowdsec]\nlapi_url = \"http://x\"\napi_key = \"k\"\nlogin = \"m\"\npassword = \"p\"\ncredentials_file = \"\"\napi_key_file = \"\"\n")
        .unwrap()
        .startup
        .crowdsec;
    let shown = render(&s);
    let doc: toml::Table = shown.parse().unwrap();
    for key in [
        field_names::<StartupSettings>(),
        field_names::<LiveSettings>(),
    ]
    .concat()
    {
        assert!(doc.contains_key(key), "`{key}` missing from:\n{shown}");
    }
    let hooks = doc["hooks"].as_table().unwrap();
    for key in field_names::<HookSettings>() {
        assert!(
            hooks.contains_key(*key),
            "`hooks.{key}` missing from:\n{shown}"
        );
    }
    let crowdsec = doc["crowdsec"].as_table().unwrap();
    for key in [
        "lapi_url",
        "ca_cert_path",
        "cert_path",
        "key_path",
        "insecure_skip_verify",
        "api_key",
        "update_frequency",
        "login",
        "password",
        "scenario",
        "queue_max",
    ] {
        assert!(
            crowdsec.contains_key(key),
            "`crowdsec.{key}` missing from:\n{shown}"
        );
    }
}

#[test]
fn metrics_keys() {
    let s = parse("metrics_listen = \"[::1]:9650\"\nmetrics_top_bans = 3\n").unwrap();
    assert_eq!(
        s.startup.metrics_listen,
        Some("[::1]:9650".parse().unwrap())
    );
    assert_eq!(s.startup.metrics_top_bans, 3);
    assert_eq!(render(&parse(&render(&s)).unwrap()), render(&s));
    assert_eq!(
        parse("metrics_listen = \"\"\n")
            .unwrap()
            .startup
            .metrics_listen,
        None
    );
    let e = err("metrics_listen = \"localhost\"\n");
    assert!(
        e.contains("test.toml:1:18: key `metrics_listen`") && e.contains("is not an address:port"),
        "{e}"
    );
    let e = err("metrics_top_bans = 5000\n");
    assert!(
        e.contains("key `metrics_top_bans`") && e.contains("out of range"),
        "{e}"
    );
}
