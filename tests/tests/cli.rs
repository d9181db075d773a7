//! The exit code of each verb's failure classes, as the table in README.md ("Exit codes")
//! states it: 0 ok, 1 runtime failure, 2 usage or configuration error. Every case runs
//! `portsentry` in a namespace of its own (a `run` that got further than expected attaches to
//! nothing on the host) with state in a throwaway directory and no pinned maps, and checks the
//! code and the words of the error.

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::{fs::PermissionsExt, net::UnixListener},
    path::PathBuf,
    time::Duration,
};

use portsentry::config::{settings::Settings, CrowdsecSettings};
use portsentry_tests::{
    case,
    lab::{portsentry_bin, run_in, OwnedNetns, TempDir},
};

/// The verbs that talk to the daemon or, without one, work on the state file.
const CLIENT_VERBS: [&[&str]; 5] = [
    &["status"],
    &["list"],
    &["ban", "192.0.2.7"],
    &["unban", "192.0.2.7"],
    &["promote-shadow"],
];

/// A verb's command line, the exit code it must give and words its output must contain.
struct Case {
    args: Vec<String>,
    code: i32,
    says: String,
}

fn case(args: &[&str], code: i32, says: &str) -> Case {
    Case {
        args: args.iter().map(|a| (*a).to_owned()).collect(),
        code,
        says: says.to_owned(),
    }
}

/// A namespace without a default route, and a directory for files, state and configs.
struct Bench {
    ns: OwnedNetns,
    dir: TempDir,
}

impl Bench {
    fn new(tag: &str) -> Self {
        let ns =
            OwnedNetns::add(&format!("ps-cli-{tag}-{}", std::process::id())).expect("a namespace");
        let dir = TempDir::new(tag).expect("a directory");
        Self { ns, dir }
    }

    /// A state directory of its own (`name` under the bench's directory), as a string.
    fn state_dir(&self, name: &str) -> String {
        let p = self.dir.join(name);
        std::fs::create_dir_all(&p).expect("state dir");
        p.display().to_string()
    }

    /// Runs every case (the verbs that read settings get `globals` and a pin directory that
    /// does not exist appended) and fails once, listing each case whose code or words differ.
    fn check(&self, cases: &[Case], globals: &[&str]) {
        let bin = portsentry_bin().display().to_string();
        let no_pins = self.dir.join("no-pins").display().to_string();
        let mut wrong = Vec::new();
        for c in cases {
            let mut args: Vec<&str> = c.args.iter().map(String::as_str).collect();
            if c.args
                .first()
                .is_some_and(|v| v != "import-conf" && v != "generate-docs")
            {
                args.extend_from_slice(globals);
                args.extend(["--pin-dir", &no_pins]);
            }
            let (code, out) = run_in(&self.ns, &bin, &args, Duration::from_secs(30));
            if code != c.code || !out.contains(&c.says) {
                wrong.push(format!(
                    "portsentry {}: exit {code}, want {} with {:?}; output:\n{out}",
                    args.join(" "),
                    c.code,
                    c.says
                ));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }
}

#[test]
fn usage_and_configuration_errors_exit_2_in_every_verb() {
    let b = Bench::new("usage");
    let bad = b.dir.write("bad.toml", "tcp_ports = \"1,70000\"\n");
    let missing = b.dir.join("missing.toml").display().to_string();
    let bad_line = format!("{bad}:1:13: key `tcp_ports`");
    let unreadable = format!("{missing}: cannot read the configuration file");
    let mut cases = Vec::new();
    for verb in
        CLIENT_VERBS
            .iter()
            .copied()
            .chain([&["notify", "--test"][..], &["check-config"], &["run"]])
    {
        for (config, says) in [(&bad, &bad_line), (&missing, &unreadable)] {
            let mut args = verb.to_vec();
            args.extend(["--config", config]);
            cases.push(case(&args, 2, says));
        }
    }
    cases.extend([
        case(&["check-config", &bad], 2, &bad_line),
        case(
            &["run", "--tcp-ports", "x"],
            2,
            "--tcp-ports \"x\": `x` is not a port number",
        ),
        // clap's own refusals.
        case(&["frobnicate"], 2, "unrecognized subcommand"),
        case(&["ban", "192.0.2.300"], 2, "invalid value"),
        case(&["ban", "192.0.2.7", "--ttl", "200y"], 2, "invalid value"),
        case(&["unban", "192.0.2.7", "--all"], 2, "cannot be used with"),
        case(&["notify"], 2, "say what to do: `portsentry notify --test`"),
        case(&["notify", "--test"], 2, "no transport is configured"),
    ]);
    let state = b.state_dir("state");
    b.check(&cases, &["--state-dir", &state]);
}

/// What the settings name is checked by its owner before `run` starts and by `check-config`:
/// the values together, the fleet's credentials, a transport's secret. Each is a configuration
/// error (exit 2) wherever it is found, `notify --test` included.
#[test]
fn files_the_settings_name_are_configuration_errors() {
    let b = Bench::new("resources");
    let noports = b.dir.write(
        "noports.toml",
        &case::config_text(&{
            let mut s = Settings::default();
            s.live.tcp_ports = case::ports("");
            s.live.udp_ports = case::ports("");
            s
        }),
    );
    let creds = b.dir.join("machine.yaml");
    let nocreds = b.dir.write(
        "nocreds.toml",
        &case::config_text(&{
            let mut s = Settings::default();
            s.startup.crowdsec = Some(CrowdsecSettings {
                lapi_url: "http://127.0.0.1:1".to_owned(),
                credentials_file: Some(creds.clone()),
                ..Default::default()
            });
            s
        }),
    );
    let token = b.dir.write("webhook.token", "t0ken\n");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let open_token = b.dir.write(
        "open-token.toml",
        &case::config_text(&{
            let mut s = Settings::default();
            s.live.notify.webhook_url = "http://127.0.0.1:1/hook".to_owned();
            s.live.notify.webhook_token_file = Some(PathBuf::from(&token));
            s
        }),
    );
    let classic = b.dir.write("portsentry.conf", "# c\nTCP_PORTS=\"1,x\"\n");
    let no_ports = "no guarded ports: set at least one TCP or UDP port";
    let no_creds = format!(
        "key `crowdsec.credentials_file`: cannot read {}: No such file or directory",
        creds.display()
    );
    let not_private = format!("key `notify.webhook_token_file`: {token} has mode 0644");
    let mut cases = Vec::new();
    for verb in [&["check-config"][..], &["run", "--config"]] {
        for (config, says) in [
            (&noports, no_ports),
            (&nocreds, &no_creds),
            (&open_token, &not_private),
        ] {
            let mut args = verb.to_vec();
            args.push(config);
            cases.push(case(&args, 2, says));
        }
    }
    cases.extend([
        case(
            &["notify", "--test", "--config", &open_token],
            2,
            &not_private,
        ),
        case(
            &["import-conf", &classic],
            2,
            &format!("{classic}:2: TCP_PORTS: `x`"),
        ),
        case(
            &["import-conf", "/nonexistent/portsentry.conf"],
            2,
            "/nonexistent/portsentry.conf: No such file or directory",
        ),
    ]);
    let state = b.state_dir("state");
    b.check(&cases, &["--state-dir", &state]);
}

/// Failures of the environment or of the work exit 1: a daemon that does not answer, a
/// damaged state file, a transport that refuses, a kernel or interface `run` cannot use.
/// Without a daemon the control verbs work on the state file (exit 0); the answers they give
/// on their own (a target never bannable: 2; not banned: 1) are pinned here too.
#[test]
fn runtime_failures_exit_1() {
    let b = Bench::new("runtime");
    let empty = b.state_dir("empty");
    let corrupt = b.state_dir("corrupt");
    std::fs::write(format!("{corrupt}/bans.json"), "{not json").unwrap();
    // A live process that is not this verb's: the daemon that does not answer.
    let silent = b.state_dir("silent");
    std::fs::write(
        format!("{silent}/daemon.json"),
        format!(
            "{{\"pid\":{},\"started_at_ms\":0,\"interfaces\":[],\"pin_dir\":null}}",
            std::process::id()
        ),
    )
    .unwrap();
    // A socket that answers nonsense: the exchange fails.
    let garbled = b.state_dir("garbled");
    let listener = UnixListener::bind(format!("{garbled}/control.sock")).unwrap();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut line = String::new();
            let _ = BufReader::new(&conn).read_line(&mut line);
            let _ = conn.write_all(b"garbage\n");
        }
    });
    let hook = b.dir.write(
        "hook.toml",
        &case::config_text(&{
            let mut s = Settings::default();
            s.live.notify.webhook_url = "http://127.0.0.1:1/hook".to_owned();
            s
        }),
    );
    let not_a_dir = b.dir.write("a-file", "");

    let with_state = |verb: &[&str], state: &str| {
        let mut args = verb.to_vec();
        args.extend(["--state-dir", state]);
        args.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>()
    };
    let mut cases = Vec::new();
    for verb in CLIENT_VERBS {
        let at = |state: &str, code: i32, says: &str| Case {
            args: with_state(verb, state),
            code,
            says: says.to_owned(),
        };
        cases.push(at(
            &silent,
            1,
            "does not answer; nothing was changed (a change made behind its back would not hold)",
        ));
        cases.push(at(&garbled, 1, "the daemon's control socket failed: "));
        cases.push(at(
            &corrupt,
            1,
            "reading saved bans (nothing was changed): ",
        ));
    }
    let in_empty = |verb: &[&str], code: i32, says: &str| Case {
        args: with_state(verb, &empty),
        code,
        says: says.to_owned(),
    };
    cases.extend([
        in_empty(&["list"], 0, "no daemon is running; reading "),
        in_empty(
            &["ban", "224.0.0.1"],
            2,
            "is in the bogus range 224.0.0.0/4",
        ),
        in_empty(&["unban", "192.0.2.99"], 1, "192.0.2.99 was not banned"),
        in_empty(
            &["notify", "--test", "--config", &hook],
            1,
            "1 of 1 transport(s) failed",
        ),
        in_empty(
            &["run", "--no-pin", "--iface", "nosuch0"],
            1,
            "unknown network interface nosuch0",
        ),
        in_empty(
            &["run", "--no-pin"],
            1,
            "no default route, so no interface to protect by default",
        ),
        case(
            &["generate-docs", &format!("{not_a_dir}/docs")],
            1,
            &format!("creating {not_a_dir}/docs/man8: "),
        ),
    ]);
    b.check(&cases, &[]);
}
