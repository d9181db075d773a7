//! The config file's guarantees: every error names file:line:column and key, unknown keys get
//! a "did you mean", check-config output parses back to the same settings.

use std::{path::Path, time::Duration};

use proptest::prelude::*;

use super::{
    file::field_names,
    settings::{LiveSettings, Mode, Settings, StartupSettings},
    *,
};
use crate::net::cidr::Cidr;

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
fn crowdsec_table() {
    let s = parse(
        "[crowdsec]\nlapi_url = \"http://10.0.0.1:8080/\"\napi_key = \"k\"\nupdate_frequency = \"500ms\"\nlogin = \"m\"\npassword = \"p\"\n",
    )
    .unwrap();
    let c = s.startup.crowdsec.as_ref().unwrap();
    assert_eq!(c.lapi_url, "http://10.0.0.1:8080");
    assert_eq!(c.update_frequency, Duration::from_millis(500));
    assert!(c.is_bouncer() && c.is_machine());
    assert_eq!(c.scenario, "portsentry/port-scan");
    let shown = render(&s);
    assert!(
        shown.contains("api_key = \"(hidden)\"") && !shown.contains("= \"k\""),
        "{shown}"
    );
    assert!(!shown.contains("\"p\""), "{shown}");
    assert!(parse("").unwrap().startup.crowdsec.is_none());
}

#[test]
fn crowdsec_errors() {
    assert!(err("[crowdsec]\napi_key = \"k\"").contains("key `crowdsec.lapi_url`: is required"));
    assert!(
        err("[crowdsec]\nlapi_url = \"10.0.0.1:8080\"\napi_key = \"k\"").contains(
            ":2:12: key `crowdsec.lapi_url`: `10.0.0.1:8080` is not an http:// or https:// URL"
        )
    );
    assert!(err("[crowdsec]\nlapi_url = \"http://x\"").contains("nothing to do"));
    assert!(err("[crowdsec]\nlapi_url = \"http://x\"\nlogin = \"m\"")
        .contains("`login` and `password` go together"));
    assert!(
        err("[crowdsec]\nlapi_url = \"http://x\"\napi_key = \"k\"\napi_key_file = \"/k\"")
            .contains("exclude each other")
    );
    assert!(err(
        "[crowdsec]\nlapi_url = \"http://x\"\napi_key = \"k\"\nupdate_frequency = \"1ms\""
    )
    .contains(":4:20: key `crowdsec.update_frequency`: must be a duration of at least 100ms"));
    assert!(err("[crowdsec]\nlapi_url = \"http://x\"\napikey = \"k\"")
        .contains(":3:1: key `crowdsec.apikey`: unknown key (did you mean `crowdsec.api_key`?)"));
}

#[test]
fn crowdsec_tls_key_rules() {
    let https = "[crowdsec]\nlapi_url = \"https://lapi:8080\"\n";
    // A certificate without its key, and the other way round: the line of the key that is set.
    let e = err(&format!("{https}cert_path = \"/c.pem\"\n"));
    assert!(
        e.contains(":3:13: key `crowdsec.cert_path`: `crowdsec.cert_path` and `crowdsec.key_path` go together: set `crowdsec.key_path` too"),
        "{e}"
    );
    let e = err(&format!("{https}api_key = \"k\"\nkey_path = \"/k.pem\"\n"));
    assert!(
        e.contains(":4:12: key `crowdsec.key_path`: ")
            && e.contains("set `crowdsec.cert_path` too"),
        "{e}"
    );
    // A certificate alone does both roles; with a key or a password it is ambiguous.
    let c = parse(&format!(
        "{https}cert_path = \"c.pem\"\nkey_path = \"k.pem\"\n"
    ))
    .unwrap()
    .startup
    .crowdsec
    .unwrap();
    assert!(c.is_bouncer() && c.is_machine());
    let e = err(&format!(
        "{https}cert_path = \"/c\"\nkey_path = \"/k\"\ncredentials_file = \"/m.yaml\"\n"
    ));
    assert!(
        e.contains(":3:13: key `crowdsec.cert_path`: `crowdsec.cert_path` and `crowdsec.credentials_file` exclude each other"),
        "{e}"
    );
    // TLS keys need https://.
    for (line, key) in [
        ("ca_cert_path = \"/ca.pem\"", "ca_cert_path:4:16"),
        ("insecure_skip_verify = true", "insecure_skip_verify:4:24"),
    ] {
        let e = err(&format!(
            "[crowdsec]\nlapi_url = \"http://lapi:8080\"\napi_key = \"k\"\n{line}\n"
        ));
        let (key, at) = key.split_once(':').unwrap();
        assert!(
            e.contains(&format!(":{at}: key `crowdsec.{key}`: needs an https:// `crowdsec.lapi_url` (it is `http://lapi:8080`)")),
            "{e}"
        );
    }
    let e = err(&format!(
        "{https}api_key = \"k\"\nca_cert_path = \"/ca\"\ninsecure_skip_verify = true\n"
    ));
    assert!(
        e.contains(
            "`crowdsec.insecure_skip_verify` and `crowdsec.ca_cert_path` exclude each other"
        ),
        "{e}"
    );
    assert!(err(&format!(
        "{https}api_key = \"k\"\ninsecure_skip_verify = 1\n"
    ))
    .contains(":4:24: key `crowdsec.insecure_skip_verify`: "),);
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

#[test]
fn load_file_reads_the_ignore_file_relative_to_the_config() {
    let dir = std::env::temp_dir().join(format!("ps-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("ignore"), "# ours\n192.0.2.0/24\n2001:db8::1\n").unwrap();
    std::fs::write(
        dir.join("a.toml"),
        "allow = [\"192.0.2.0/24\"]\nignore_file = \"ignore\"\n",
    )
    .unwrap();
    let s = load_file(&dir.join("a.toml")).unwrap();
    assert_eq!(
        s.live.allow.iter().map(Cidr::to_string).collect::<Vec<_>>(),
        ["192.0.2.0/24", "2001:db8::1"]
    );
    assert_eq!(s.live.ignore_file, Some(dir.join("ignore")));

    std::fs::write(dir.join("ignore"), "192.0.2.0/24\n10.1.2.3/8\n").unwrap();
    let e = load_file(&dir.join("a.toml")).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!(
            "{}:2:15: key `ignore_file`: {}:2: ",
            dir.join("a.toml").display(),
            dir.join("ignore").display()
        )),
        "{e}"
    );

    let e = load_file(&dir.join("missing.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.toml: cannot read"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
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

/// The command line's keys win over the file's, which win over the defaults; `allow` adds to
/// the file's list; a path given on the command line is not rebased onto the file's folder.
#[test]
fn the_overlay_wins_over_the_file_which_wins_over_the_defaults() {
    let dir = std::env::temp_dir().join(format!("ps-overlay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("portsentry.toml");
    std::fs::write(
        &file,
        "scan_trigger = 3\nwindow = \"90s\"\nallow = [\"10.0.0.0/8\"]\nstate_dir = \"state\"\nhistory_file = \"h.log\"\n",
    )
    .unwrap();
    let mut overlay = Overlay::default();
    overlay.set("--scan-trigger", "scan_trigger", 5);
    overlay.extend("--allow", "allow", "192.0.2.1");
    overlay.set("--state-dir", "state_dir", "rel/state");
    overlay.set("--mode", "mode", "detect");
    let sources = Sources {
        config: Some(file.clone()),
        overlay,
    };
    let (s, source) = sources.load().unwrap();
    assert_eq!(source, sources::Source::File(file));
    assert_eq!(s.live.scan_trigger, 5, "flag over file");
    assert_eq!(
        s.live.window,
        Some(Duration::from_secs(90)),
        "file over default"
    );
    assert_eq!(s.live.mode, Mode::Detect, "flag over default");
    assert_eq!(s.live.ban_ttl, LiveSettings::default().ban_ttl, "default");
    let allow: Vec<String> = s.live.allow.iter().map(Cidr::to_string).collect();
    assert_eq!(allow, ["10.0.0.0/8", "192.0.2.1"]);
    assert_eq!(s.startup.state_dir, Path::new("rel/state"), "not rebased");
    assert_eq!(s.live.history_file, Some(dir.join("h.log")), "rebased");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_bad_flag_value_is_named_by_its_flag() {
    let mut overlay = Overlay::default();
    overlay.set("--tcp-ports", "tcp_ports", "x");
    let sources = Sources {
        config: Some("/nonexistent/never-read.toml".into()),
        overlay,
    };
    let e = sources.load().unwrap_err();
    assert!(matches!(e, LoadError::Flag(_)), "{e:?}");
    assert!(e.to_string().starts_with("--tcp-ports \"x\": "), "{e}");
    let mut overlay = Overlay::default();
    overlay.extend("--allow", "allow", "not-an-address");
    let e = Sources {
        config: None,
        overlay,
    }
    .load()
    .unwrap_err();
    assert!(
        e.to_string().starts_with("--allow \"not-an-address\": "),
        "{e}"
    );
}
