//! Upstream PortSentry's own system tests, run against portsentry.
//!
//! Each `#[test]` is one case of upstream 2.x's `system_test/` (before commit d154137; the same
//! cases as today's `system_test_robot/tests.robot`), or of the 1.2-era advanced-mode cases
//! removed in commit eff3b22. The case's classic `portsentry.conf` and command-line switches
//! are data in `tests/fixtures/upstream/<case>/` (`portsentry.test` holds the switches, as
//! upstream's did). Every case goes the way an administrator would: the classic file is
//! converted by our own `portsentry import-conf --mode …` (the modes follow the switches:
//! `--connect` → tcp, udp; `--stealth` → stcp, sudp; `-atcp`/`-audp` as they are), and the daemon
//! runs with the resulting TOML in the lab's protected namespace. The scanner namespace drives
//! the same probes (nmap -sT/-sS/-sN/-sX/-sF/-sU, TCP connects, hping3), and the test asserts
//! what upstream asserts, on our stdout and history lines.
//!
//! The lab adjusts only what a lab must: `/tmp/portsentry-test/` (upstream's test directory)
//! becomes this test's directory, the ignore file's `SOURCE_IP4`/`SOURCE_IP6` become the
//! scanner's addresses (as upstream's robot suite writes the runner's), hosts.deny lines go to
//! the test directory instead of /etc, and `run` gets `--iface`, `--state-dir`, `--no-pin` and
//! `--no-auto-allow` (the lab's default gateway is the scanner).
//!
//! Where upstream checks what a packet-level detector cannot produce (connect mode's `type:
//! [Connect]`, PORT_BANNER, the binary BLOCKED_FILE, an `already blocked` line per dropped
//! packet, localhost self-scans), the case asserts the documented equivalent; docs/TESTING.md
//! ("Upstream system tests: what differs and why") lists each.

use std::{
    fs,
    net::IpAddr,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use portsentry_tests::{
    case::{forged_syn, WAIT},
    lab::{portsentry, run_in, sock, Daemon, DaemonArgs, Lab, TempDir},
};

/// How long a probe waits for an answer (a dropped probe costs this much).
const SHORT: Duration = Duration::from_millis(300);

/// One `#[test]` per upstream case whose course is one call (`name: call;`), so that each case
/// passes or fails under its own name.
macro_rules! cases {
    ($($(#[doc = $doc:expr])* $name:ident: $call:expr;)+) => {
        $(
            $(#[doc = $doc])*
            #[test]
            fn $name() {
                $call;
            }
        )+
    };
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/upstream")
}

/// Every fixture directory, sorted.
fn all_cases() -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(fixtures())
        .expect("fixtures/upstream")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// `import-conf --mode` values for upstream's command-line switches.
fn modes(switches: &str) -> Vec<&'static str> {
    let mut m = Vec::new();
    for s in switches.split_whitespace() {
        match s {
            "--connect" => m.extend(["tcp", "udp"]),
            "--stealth" => m.extend(["stcp", "sudp"]),
            "-tcp" => m.push("tcp"),
            "-udp" => m.push("udp"),
            "-stcp" => m.push("stcp"),
            "-sudp" => m.push("sudp"),
            "-atcp" => m.push("atcp"),
            "-audp" => m.push("audp"),
            _ => {}
        }
    }
    assert!(!m.is_empty(), "no mode in upstream switches `{switches}`");
    m
}

/// Writes `case`'s classic files into `dir` (upstream's /tmp/portsentry-test/ made `dir`, the
/// ignore file's placeholders made `src4`/`src6`) plus the two hook scripts upstream's cases
/// use, then converts the config with `import-conf`. Returns the TOML's path and its text.
fn prepare(case: &str, dir: &TempDir, src4: IpAddr, src6: IpAddr) -> (String, String) {
    let from = fixtures().join(case);
    let base = format!("{}/", dir.path.display());
    let conf = fs::read_to_string(from.join("portsentry.conf"))
        .expect("fixture portsentry.conf")
        .replace("/tmp/portsentry-test/", &base);
    let classic = dir.write("portsentry.conf", &conf);
    match fs::read_to_string(from.join("portsentry.ignore")) {
        Ok(ignore) => {
            let text = ignore
                .replace("SOURCE_IP4", &src4.to_string())
                .replace("SOURCE_IP6", &src6.to_string());
            dir.write("portsentry.ignore", &text);
        }
        // The 1.2 cases name an ignore file they never create, and 1.2 went on without it.
        // A missing ignore file is an error for us (`a_missing_ignore_file_is_an_error`):
        // they get an empty one.
        Err(_) if conf.contains("portsentry.ignore") => {
            dir.write("portsentry.ignore", "");
        }
        Err(_) => {}
    }
    // Upstream's helpers write their arguments to NAME.stdout; ours also append their name to
    // `order`, so the order they ran in is on record, not only the order of their log lines.
    for name in ["extcmd", "routesim"] {
        let script = format!(
            "#!/bin/sh\nprintf '%s\\n' \"$*\" > {base}{name}.stdout\necho {name} >> {base}order\n"
        );
        let path = dir.write(&format!("{name}.sh"), &script);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let switches = fs::read_to_string(from.join("portsentry.test")).expect("portsentry.test");
    let mut args = vec!["import-conf"];
    for m in modes(&switches) {
        args.extend(["--mode", m]);
    }
    args.push(&classic);
    let (code, mut toml, err) = portsentry(&args);
    assert_eq!(code, 0, "import-conf {case}: {err}\n{toml}");
    // The one edit: hosts.deny lines go to the test directory (relative to the config file).
    if toml.contains("\nhosts_deny = ") {
        toml.push_str("hosts_deny_file = \"hosts.deny\"\n");
    }
    (dir.write("portsentry.toml", &toml), toml)
}

/// One upstream case running: the lab, its directory and the daemon on the imported config.
struct Case {
    lab: Lab,
    dir: TempDir,
    d: Daemon,
    toml: String,
}

impl Case {
    fn start(case: &str) -> Self {
        Self::start_with(case, 1, &["--no-auto-allow"])
    }

    fn start_with(case: &str, aliases: usize, extra: &[&str]) -> Self {
        let lab = Lab::new(aliases).expect("lab");
        let dir = TempDir::new("upstream").expect("dir");
        let (config, toml) = prepare(case, &dir, lab.scanner_v4[0], lab.scanner_v6[0]);
        let d = DaemonArgs::new(&lab)
            .iface()
            .config(&config)
            .state_dir(&dir.path)
            .no_pin()
            .args(extra.iter().copied())
            .start()
            .unwrap_or_else(|e| panic!("{case}: {e:#}\n{toml}"));
        // Upstream's harness waits for this line; ours waits for READY=1 and checks it is there.
        assert!(
            d.has_line(|l| l == "Portsentry is now active and listening."),
            "{}",
            d.output()
        );
        Self { lab, dir, d, toml }
    }

    /// The scanner's address (upstream's runner): its primary one, which nmap -sT uses.
    fn src(&self, v6: bool) -> IpAddr {
        if v6 {
            self.lab.scanner_v6[0]
        } else {
            self.lab.scanner_v4[0]
        }
    }

    fn target(&self, v6: bool) -> IpAddr {
        if v6 {
            self.lab.protected_v6
        } else {
            self.lab.protected_v4
        }
    }

    /// Upstream's "TCP Connect Probe": a full connect attempt; true if it connected. Nothing
    /// listens on a trap port, so an unbanned source gets a RST at once, a banned one nothing.
    fn tcp_probe(&self, port: u16, v6: bool) -> bool {
        self.lab
            .scanner
            .tcp_connect(self.src(v6), sock(self.target(v6), port), SHORT)
    }

    /// Upstream's "Run Nmap": `nmap SCAN -p PORT` from the scanner's primary address, with its
    /// `-Pn -n --max-retries 0`. Returns nmap's grepable output.
    fn nmap(&self, scan: &str, port: u16, v6: bool) -> String {
        let (src, tgt, p) = (
            self.src(v6).to_string(),
            self.target(v6).to_string(),
            port.to_string(),
        );
        let mut args = vec![
            scan,
            "-Pn",
            "-n",
            "--max-retries",
            "0",
            "--max-rtt-timeout",
            "300ms",
            "-p",
            &p,
            "-oG",
            "-",
        ];
        if v6 {
            args.push("-6");
        }
        if scan != "-sT" {
            args.extend(["-S", &src, "-e", &self.lab.scanner_iface]);
        }
        args.push(&tgt);
        let (code, out) = run_in(&self.lab.scanner, "nmap", &args, Duration::from_secs(20));
        assert_eq!(code, 0, "nmap {args:?}: {out}");
        out
    }

    /// `Scan from: [SRC] (SRC) protocol: [PROTO] port: [PORT]`, the part upstream matches on.
    fn scan_prefix(&self, v6: bool, proto: &str, port: u16) -> String {
        let s = self.src(v6);
        format!("Scan from: [{s}] ({s}) protocol: [{proto}] port: [{port}]")
    }

    /// The whole `Scan from:` line for a probe from the scanner.
    fn scan_line(&self, v6: bool, proto: &str, port: u16, scan: &str, tail: &str) -> String {
        let opts = if v6 { "unknown" } else { "not set" };
        format!(
            "{} type: [{scan}] IP opts: [{opts}] {tail}",
            self.scan_prefix(v6, proto, port)
        )
    }

    /// Waits for a line equal to `line`, or failing with the output.
    fn expect_line(&mut self, line: &str) {
        self.d.expect_line(&format!("`{line}`"), |l| l == line);
    }

    /// Waits for a line starting with `prefix` and returns it.
    fn expect_prefix(&mut self, prefix: &str) -> String {
        assert!(
            self.d.wait_for_line(|l| l.starts_with(prefix), WAIT),
            "no line starting `{prefix}`; output:\n{}",
            self.d.output()
        );
        self.lines(prefix).remove(0)
    }

    fn lines(&self, prefix: &str) -> Vec<String> {
        self.d.lines_matching(|l| l.starts_with(prefix))
    }

    /// Upstream's "Wait For Stdout Pattern Count": waits until exactly `n` lines start with
    /// `prefix` (more fail at once).
    fn expect_count(&mut self, prefix: &str, n: usize) {
        let deadline = Instant::now() + WAIT;
        loop {
            let got = self.lines(prefix).len();
            assert!(
                got <= n,
                "{got} lines `{prefix}…`, want {n}:\n{}",
                self.d.output()
            );
            if got == n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{got} lines `{prefix}…`, want {n}:\n{}",
                self.d.output()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Upstream's "Confirm History Logged": the history file holds `line`, after its
    /// timestamp.
    fn expect_history(&self, line: &str) {
        let path = self.dir.join("portsentry.history");
        let deadline = Instant::now() + WAIT;
        loop {
            let text = fs::read_to_string(&path).unwrap_or_default();
            if text
                .lines()
                .any(|l| l.split_once(' ').is_some_and(|(_, rest)| rest == line))
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "history has no `{line}`:\n{text}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Upstream's "Confirm Block Triggered": the line on stdout and in the history file.
    fn expect_logged(&mut self, line: &str) {
        self.expect_line(line);
        self.expect_history(line);
    }

    /// A file the hooks wrote, waited for.
    fn file(&self, name: &str) -> String {
        let path = self.dir.join(name);
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(text) = fs::read_to_string(&path) {
                if text.ends_with('\n') {
                    return text;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{name} was not written; output:\n{}",
                self.d.output()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// `portsentry list --json` for this daemon.
    fn bans(&self) -> Vec<serde_json::Value> {
        let state = self.dir.path.display().to_string();
        let (code, out, err) = portsentry(&["list", "--json", "--state-dir", &state]);
        assert_eq!(code, 0, "list: {err}");
        match serde_json::from_str(&out) {
            Ok(serde_json::Value::Array(rows)) => rows,
            other => panic!("list --json: {other:?} from {out}"),
        }
    }

    /// Upstream's "Confirm Block File Size" (one record, of the scanner's family) and "Confirm
    /// Already Blocked" (the next probe is refused): our ban list holds exactly the scanner,
    /// and its ban has dropped at least `drops` packets.
    fn expect_one_ban(&self, v6: bool, drops: u64) {
        let src = self.src(v6).to_string();
        let deadline = Instant::now() + WAIT;
        loop {
            let rows = self.bans();
            let ok = matches!(rows.as_slice(), [row]
                if row["target"] == src.as_str()
                    && row["drops"].as_u64().unwrap_or(0) >= drops);
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "want one ban of {src} with ≥ {drops} drops, list says {rows:?}"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn expect_no_ban(&self) {
        let rows = self.bans();
        assert!(rows.is_empty(), "no ban expected: {rows:?}");
    }

    /// Fails if any line starts with `prefix`. Called after a later probe's line was seen:
    /// events arrive in order, so a line for an earlier probe would already be there.
    fn expect_no_line(&self, prefix: &str) {
        assert!(
            self.lines(prefix).is_empty(),
            "unexpected `{prefix}…`; output:\n{}",
            self.d.output()
        );
    }

    fn stop(mut self) {
        self.d.stop_cleanly();
    }
}

/// `triggered: [true]`, enforced ban.
const BLOCKED: &str = "ignored: [false] triggered: [true] noblock: [false] blocked: [true]";
/// `triggered: [true]` on a protocol that does not block (BLOCK_* = 0 or 2).
const NOBLOCK: &str = "ignored: [false] triggered: [true] noblock: [true] blocked: [false]";
/// 2.x's line for an ignored source.
const IGNORED: &str = "ignored: [true] triggered: [unset] noblock: [unset] blocked: [unset]";
const SYN: &str = "TCP SYN/Normal scan";

/// How a case probes: upstream's "TCP Connect Probe" or "Run Nmap" with a scan flag.
#[derive(Clone, Copy)]
enum Probe {
    Connect,
    Nmap(&'static str),
}

impl Probe {
    fn proto(self) -> &'static str {
        match self {
            Probe::Nmap("-sU") => "UDP",
            _ => "TCP",
        }
    }

    /// The scan type we log for it (upstream's connect mode says `Connect` for all of them).
    fn scan_type(self) -> &'static str {
        match self {
            Probe::Connect | Probe::Nmap("-sT" | "-sS") => SYN,
            Probe::Nmap("-sU") => "UDP",
            Probe::Nmap("-sN") => "TCP NULL scan",
            Probe::Nmap("-sX") => "TCP XMAS scan",
            Probe::Nmap("-sF") => "TCP FIN scan",
            Probe::Nmap(other) => panic!("no scan type for nmap {other}"),
        }
    }
}

impl Case {
    fn probe(&self, p: Probe, port: u16, v6: bool) {
        match p {
            Probe::Connect => {
                self.tcp_probe(port, v6);
            }
            Probe::Nmap(scan) => {
                self.nmap(scan, port, v6);
            }
        }
    }

    /// The `Scan from:` line `p` to `port` gives, with the flags `tail`.
    fn line_for(&self, p: Probe, port: u16, v6: bool, tail: &str) -> String {
        self.scan_line(v6, p.proto(), port, p.scan_type(), tail)
    }

    /// A TCP service on 8080 of the protected host, and whether the scanner reaches it: the
    /// proof that a source is not blocked. Only at the end of a case: a client of a service is
    /// a learned peer, whose trap probes are challenged instead of counted.
    fn reaches_service(&self, v6: bool) -> bool {
        let _svc = self.lab.protected.tcp_service(sock(self.target(v6), 8080));
        self.lab.scanner.tcp_connect(
            self.src(v6),
            sock(self.target(v6), 8080),
            Duration::from_secs(1),
        )
    }
}

/// The BLOCK = 1 cases' common course: upstream's "Confirm Block Triggered" (the line on stdout
/// and in the history file), "Confirm Block File Size" (one record of the scanner's family:
/// one ban in our list), then the same probe again and "Confirm Already Blocked" (our
/// equivalent: the ban dropped it, and nothing more was logged for it).
fn blocks_and_then_drops(case: &str, p: Probe, v6: bool) -> Case {
    let mut c = blocks(case, p, v6);
    c.probe(p, 11, v6);
    c.expect_one_ban(v6, 1);
    c.expect_count(&c.scan_prefix(v6, p.proto(), 11), 1);
    c
}

/// The first half of [`blocks_and_then_drops`]: `p` to port 11 is logged (stdout and history,
/// `blocked: [true]`) and bans the scanner.
fn blocks(case: &str, p: Probe, v6: bool) -> Case {
    let mut c = Case::start(case);
    c.probe(p, 11, v6);
    let line = c.line_for(p, 11, v6, BLOCKED);
    c.expect_logged(&line);
    c.expect_one_ban(v6, 0);
    c
}

/// KILL_ROUTE's line about `src`, up to the command.
fn route_line(src: IpAddr) -> String {
    format!("attackalert: Host {src} has been blocked via dropped route using command: ")
}

/// KILL_RUN_CMD's line about `src`, up to the command.
fn extcmd_line(src: IpAddr) -> String {
    format!("attackalert: External command run for host: {src} using command: ")
}

/// The log-only cases' course (BLOCK = 0): each of two probes gives a `noblock: [true]` line,
/// the first also in the history file, and the source is not blocked.
fn logs_each_probe(c: &mut Case, p: Probe, v6: bool) {
    let line = c.line_for(p, 11, v6, NOBLOCK);
    let prefix = c.scan_prefix(v6, p.proto(), 11);
    c.probe(p, 11, v6);
    c.expect_logged(&line);
    c.probe(p, 11, v6);
    c.expect_count(&prefix, 2);
    assert!(
        c.lines(&prefix).iter().all(|l| *l == line),
        "{}",
        c.d.output()
    );
}

/// Probes to a port the config does not guard are not logged: `not` first, then `then` to a
/// guarded port, whose line proves the first was seen and passed over.
fn not_logged_before(c: &mut Case, not: (Probe, u16), then: (Probe, u16), tail: &str) {
    c.probe(not.0, not.1, false);
    c.probe(then.0, then.1, false);
    let line = c.line_for(then.0, then.1, false, tail);
    c.expect_line(&line);
    c.expect_no_line(&c.scan_prefix(false, not.0.proto(), not.1));
}

// ---------------------------------------------------------------- connect mode, BLOCK = 1

/// 001: a TCP connect to port 11 is logged (stdout and history) and blocks the source; the
/// next connect is dropped by the ban (upstream: `already blocked`), and so are the UDP probes
/// that follow (upstream, unable to drop them, logs them).
#[test]
fn upstream_001_connect_sentry_tcp() {
    let c = blocks_and_then_drops("001-connect_sentry_tcp", Probe::Connect, false);
    c.nmap("-sU", 11, false);
    c.nmap("-sU", 11, false);
    c.expect_one_ban(false, 3);
    c.expect_no_line(&c.scan_prefix(false, "UDP", 11));
    c.stop();
}

/// 002: the same, UDP first.
#[test]
fn upstream_002_connect_sentry_udp() {
    let c = blocks_and_then_drops("002-connect_sentry_udp", Probe::Nmap("-sU"), false);
    assert!(!c.tcp_probe(11, false));
    assert!(!c.tcp_probe(11, false));
    c.expect_one_ban(false, 3);
    c.expect_no_line(&c.scan_prefix(false, "TCP", 11));
    c.stop();
}

/// 003/004: PORT_BANNER is not carried over (import-conf says why); the probe gets no banner,
/// no answer at all, and is blocked as in 001.
fn banner(case: &str, p: Probe) {
    let c = blocks_and_then_drops(case, p, false);
    assert!(
        c.toml.contains("# PORT_BANNER (line 7) not carried over"),
        "{}",
        c.toml
    );
    c.stop();
}

cases! {
    upstream_003_banner_tcp: banner("003-banner_tcp", Probe::Connect);
    /// 004: the same over UDP.
    upstream_004_banner_udp: banner("004-banner_udp", Probe::Nmap("-sU"));
}

// ---------------------------------------------------------------- BLOCK = 0 and 2

/// 005/006: BLOCK_TCP = 0 (BLOCK_UDP = 0) logs each probe of `p` and blocks nothing. The
/// file has no list for the `other` protocol: a probe of it to 11 is not logged (issue 17: an
/// absent list guards no port).
fn block_0(case: &str, p: Probe, other: Probe) {
    let mut c = Case::start(case);
    c.probe(other, 11, false);
    logs_each_probe(&mut c, p, false);
    c.expect_no_line(&c.scan_prefix(false, other.proto(), 11));
    assert!(
        c.reaches_service(false),
        "BLOCK_{} = 0 blocks nothing",
        p.proto()
    );
    c.stop();
}

cases! {
    upstream_005_block_0_tcp: block_0("005-block_0_tcp", Probe::Connect, Probe::Nmap("-sU"));
    upstream_006_block_0_udp: block_0("006-block_0_udp", Probe::Nmap("-sU"), Probe::Connect);
}

/// 007/008: BLOCK = 2 runs KILL_RUN_CMD with `$TARGET$ $PORT$` (2.x's `External command run`
/// line) and blocks nothing (issue 17).
fn block_2(case: &str, p: Probe) {
    let mut c = Case::start(case);
    c.probe(p, 11, false);
    let line = c.line_for(p, 11, false, NOBLOCK);
    c.expect_logged(&line);
    let src = c.src(false);
    c.expect_prefix(&extcmd_line(src));
    assert_eq!(c.file("extcmd.stdout"), format!("{src} 11\n"));
    assert!(
        !c.d.has_line(|l| l.contains("has been blocked")),
        "{}",
        c.d.output()
    );
    assert!(c.reaches_service(false), "BLOCK = 2 blocks nothing");
    c.stop();
}

cases! {
    upstream_007_block_2_tcp: block_2("007-block_2_tcp", Probe::Connect);
    upstream_008_block_2_udp: block_2("008-block_2_udp", Probe::Nmap("-sU"));
}

/// 009: SCAN_TRIGGER = 2: the first probe's line says `triggered: [false] noblock: [unset]`
/// (2.x's wording below the trigger), the second blocks, the third is dropped.
#[test]
fn upstream_009_scantrigger() {
    let mut c = Case::start("009-scantrigger");
    c.tcp_probe(11, false);
    let below = c.line_for(
        Probe::Connect,
        11,
        false,
        "ignored: [false] triggered: [false] noblock: [unset] blocked: [unset]",
    );
    c.expect_line(&below);
    c.tcp_probe(11, false);
    let line = c.line_for(Probe::Connect, 11, false, BLOCKED);
    c.expect_logged(&line);
    c.expect_one_ban(false, 0);
    c.tcp_probe(11, false);
    c.expect_one_ban(false, 1);
    c.expect_count(&c.scan_prefix(false, "TCP", 11), 2);
    c.stop();
}

// ---------------------------------------------------------------- hooks

/// 010: KILL_ROUTE runs with the address (2.x's `dropped route` line).
#[test]
fn upstream_010_route_kill() {
    let mut c = blocks("010-route_kill", Probe::Connect, false);
    let src = c.src(false);
    c.expect_prefix(&route_line(src));
    assert_eq!(c.file("extcmd.stdout"), format!("{src}\n"));
    c.stop();
}

/// 011/012: KILL_ROUTE and KILL_RUN_CMD both run, in the order KILL_RUN_CMD_FIRST says, and
/// their lines come in that order (upstream writes them before the probe's `Scan from:`
/// line, we after: see docs/TESTING.md).
fn route_and_cmd(case: &str, cmd_first: bool) {
    let mut c = blocks(case, Probe::Connect, false);
    let src = c.src(false);
    let (route, cmd) = (route_line(src), extcmd_line(src));
    c.expect_prefix(&route);
    c.expect_prefix(&cmd);
    assert_eq!(c.file("routesim.stdout"), format!("{src}\n"));
    assert_eq!(c.file("extcmd.stdout"), format!("{src} 11\n"));
    let order = if cmd_first {
        "extcmd\nroutesim\n"
    } else {
        "routesim\nextcmd\n"
    };
    assert_eq!(fs::read_to_string(c.dir.join("order")).unwrap(), order);
    let lines =
        c.d.lines_matching(|l| l.starts_with(&route) || l.starts_with(&cmd));
    assert_eq!(lines.len(), 2, "{}", c.d.output());
    assert_eq!(lines[0].starts_with(&cmd), cmd_first, "{}", c.d.output());
    c.stop();
}

cases! {
    upstream_011_kill_and_extcmd: route_and_cmd("011-kill_and_extcmd", false);
    upstream_012_extcmd_and_kill: route_and_cmd("012-extcmd_and_kill", true);
}

/// 013: KILL_ROUTE and KILL_HOSTS_DENY: the route script runs, the hosts.deny line is written
/// (to the test's file, not /etc/hosts.deny), with both of 2.x's lines.
#[test]
fn upstream_013_kill_route_and_hosts_deny() {
    let mut c = blocks("013-kill_route_and_hosts_deny", Probe::Connect, false);
    let src = c.src(false);
    assert_eq!(c.file("routesim.stdout"), format!("{src}\n"));
    c.expect_prefix(&route_line(src));
    c.expect_line(&format!(
        "attackalert: Host {src} has been blocked via wrappers with string: \"ALL: {src}\""
    ));
    assert_eq!(c.file("hosts.deny"), format!("ALL: {src}\n"));
    c.stop();
}

// ---------------------------------------------------------------- stealth mode

/// 014/015: stealth mode, `nmap -sT` (`-sU`): blocked, then dropped; KILL_HOSTS_DENY written.
fn stealth_hosts_deny(case: &str, p: Probe) {
    let c = blocks_and_then_drops(case, p, false);
    assert_eq!(c.file("hosts.deny"), format!("ALL: {}\n", c.src(false)));
    c.stop();
}

cases! {
    upstream_014_stealth_sentry_tcp:
        stealth_hosts_deny("014-stealth_sentry_tcp", Probe::Nmap("-sT"));
    upstream_015_stealth_sentry_udp:
        stealth_hosts_deny("015-stealth_sentry_udp", Probe::Nmap("-sU"));
    /// 018-021: each stealth scan type is named as 2.x names it, logged and blocked.
    upstream_018_syn_scan: blocks_and_then_drops("018-syn_scan", Probe::Nmap("-sS"), false).stop();
    upstream_019_null_scan:
        blocks_and_then_drops("019-null_scan", Probe::Nmap("-sN"), false).stop();
    upstream_020_xmas_scan:
        blocks_and_then_drops("020-xmas_scan", Probe::Nmap("-sX"), false).stop();
    upstream_021_fin_scan: blocks_and_then_drops("021-fin_scan", Probe::Nmap("-sF"), false).stop();
    /// 100: raw-socket stealth mode, `nmap -sT`, as 014.
    upstream_100_raw_socket_tcp:
        blocks_and_then_drops("100-raw_socket_tcp", Probe::Nmap("-sT"), false).stop();
}

// ---------------------------------------------------------------- port ranges

/// 023/024/101: `TCP_PORTS="1,5-11"`, `UDP_PORTS="1,7-11"`, BLOCK = 0: two TCP and two UDP
/// probes to 11 give two lines each.
fn range(case: &str, tcp: Probe) {
    let mut c = Case::start(case);
    logs_each_probe(&mut c, tcp, false);
    logs_each_probe(&mut c, Probe::Nmap("-sU"), false);
    assert!(c.reaches_service(false));
    c.stop();
}

cases! {
    upstream_023_sentry_connect_range: range("023-sentry_connect_range", Probe::Connect);
    upstream_024_sentry_pcap_range: range("024-sentry_pcap_range", Probe::Nmap("-sT"));
    upstream_101_sentry_stealth_range: range("101-sentry_stealth_range", Probe::Nmap("-sT"));
}

// ---------------------------------------------------------------- invalid probes

/// 025-027: a probe to port 10 (not in `TCP_PORTS="1,11"`) is not logged. Upstream waits 2 s
/// and looks; we probe 11 next and look once its line is there.
fn invalid_probe(case: &str) {
    let mut c = Case::start(case);
    not_logged_before(
        &mut c,
        (Probe::Nmap("-sT"), 10),
        (Probe::Nmap("-sT"), 11),
        NOBLOCK,
    );
    c.stop();
}

cases! {
    upstream_025_pcap_invalid_probe: invalid_probe("025-pcap_invalid_probe");
    upstream_026_connect_invalid_probe: invalid_probe("026-connect_invalid_probe");
    upstream_027_stealth_invalid_probe: invalid_probe("027-stealth_invalid_probe");
}

// ---------------------------------------------------------------- IPv6

cases! {
    /// 028: a TCP connect over IPv6: blocked (`IP opts: [unknown]`, as 2.x says for IPv6), one
    /// IPv6 ban, the next connect dropped.
    upstream_028_ipv6_connect:
        blocks_and_then_drops("028-ipv6_connect", Probe::Connect, true).stop();
    /// 029/030: `nmap -6 -sT`, the same.
    upstream_029_ipv6_pcap: blocks_and_then_drops("029-ipv6_pcap", Probe::Nmap("-sT"), true).stop();
    upstream_030_ipv6_raw: blocks_and_then_drops("030-ipv6_raw", Probe::Nmap("-sT"), true).stop();
}

// ---------------------------------------------------------------- ignore file

/// 031-034: the scanner is in the ignore file (with and without a mask, IPv4 and IPv6): its
/// probe is logged as 2.x logs an ignored source (`ignored: [true]`; upstream's verbose `found
/// in ignore file` line: a non-ignored source gets `ignored: [false] triggered: [true]`, as
/// in 025) and nothing is banned.
fn ignored(case: &str, v6: bool) {
    let mut c = Case::start(case);
    c.nmap("-sT", 11, v6);
    let line = c.line_for(Probe::Nmap("-sT"), 11, v6, IGNORED);
    c.expect_line(&line);
    c.expect_no_ban();
    c.stop();
}

cases! {
    upstream_031_ignore_file: ignored("031-ignore_file", false);
    upstream_032_ignore_file_no_mask: ignored("032-ignore_file_no_mask", false);
    upstream_033_ignore_file_ipv6: ignored("033-ignore_file_ipv6", true);
    upstream_034_ignore_file_no_mask_ipv6: ignored("034-ignore_file_no_mask_ipv6", true);
}

// ---------------------------------------------------------------- 1.2 advanced mode

/// 1.2's 018-021: in advanced mode (`-atcp`/`-audp`, ADVANCED_PORTS_* = 1024) a probe to 1025
/// or to an excluded port (113/tcp, 520/udp) is not logged. Then a probe to 1023, in no port
/// list, is logged and blocks: advanced mode, not TCP_PORTS/UDP_PORTS, guards it (upstream
/// only looks for the absent line).
fn advanced_passes(case: &str, p: Probe, port: u16) {
    let mut c = Case::start(case);
    not_logged_before(&mut c, (p, port), (p, 1023), BLOCKED);
    c.stop();
}

cases! {
    upstream_v12_018_adv_sentry_above_thres_tcp:
        advanced_passes("v1.2-018-adv_sentry_above_thres_tcp", Probe::Connect, 1025);
    upstream_v12_019_adv_sentry_above_thres_udp:
        advanced_passes("v1.2-019-adv_sentry_above_thres_udp", Probe::Nmap("-sU"), 1025);
    upstream_v12_020_adv_sentry_excluded_tcp:
        advanced_passes("v1.2-020-adv_sentry_excluded_tcp", Probe::Connect, 113);
    upstream_v12_021_adv_sentry_exluded_udp:
        advanced_passes("v1.2-021-adv_sentry_exluded_udp", Probe::Nmap("-sU"), 520);
}

/// 1.2's 022/023: a probe to 11 in advanced mode blocks, the next is dropped. Upstream also
/// checks that a missing IGNORE_FILE is skipped with a warning; ours is a configuration error
/// (`ignore_file_missing_is_an_error`), so the case runs with an empty one.
fn advanced_blocks(case: &str, p: Probe) {
    blocks_and_then_drops(case, p, false).stop();
}

cases! {
    upstream_v12_022_adv_sentry_mon_tcp:
        advanced_blocks("v1.2-022-adv_sentry_mon_tcp", Probe::Connect);
    upstream_v12_023_adv_sentry_mon_udp:
        advanced_blocks("v1.2-023-adv_sentry_mon_udp", Probe::Nmap("-sU"));
}

// ---------------------------------------------------------------- self-ignore

/// 016: upstream scans itself over loopback and expects its "source same as destination,
/// skipping" debug line. XDP never sees loopback traffic; the equivalent is a probe carrying the
/// protected host's own address as source, arriving on the guarded interface (hping3 forges
/// it). This host's addresses are in the automatic allowlist (`auto_allow`, on here), so the
/// probe is logged as ignored, as 2.x logs its self-probes, and bans nobody. A probe from
/// another scanner address afterwards is logged as usual.
#[test]
fn upstream_016_self_ignore() {
    let mut c = Case::start_with("016-self_ignore", 2, &[]);
    let own = c.lab.protected_v4;
    let other = c.lab.scanner_v4[1];
    for src in [own, other] {
        let (code, out) = forged_syn(&c.lab.scanner, src, own, 11);
        assert!(code == 0 || code == 1, "hping3: {out}");
    }
    let line = format!(
        "Scan from: [{other}] ({other}) protocol: [TCP] port: [11] type: [{SYN}] IP opts: [not set] {NOBLOCK}"
    );
    c.expect_line(&line);
    let own_line = format!(
        "Scan from: [{own}] ({own}) protocol: [TCP] port: [11] type: [{SYN}] IP opts: [not set] {IGNORED}"
    );
    assert!(c.d.has_line(|l| l == own_line), "{}", c.d.output());
    c.expect_no_ban();
    c.stop();
}

// ---------------------------------------------------------------- import-conf + check-config

/// `KEY="value"` lines of a classic file, as upstream's parser reads them.
fn classic_keys(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().trim_matches('"').to_owned()))
        .collect()
}

/// A port list (`1,5-11`) as a 65536-entry membership table.
fn port_table(list: &str) -> Vec<bool> {
    let mut t = vec![false; 65536];
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (a, b): (usize, usize) = (a.trim().parse().unwrap(), b.trim().parse().unwrap());
        t[a..=b].iter_mut().for_each(|x| *x = true);
    }
    t
}

/// For every upstream config: `import-conf --mode …` then `check-config` gives the classic
/// meaning, key by key. Ports are compared as the set of guarded ports over 1-65535 (classic:
/// the list, or in advanced mode every port below the bound but the excluded ones; ours: the
/// list plus advanced mode's ports, ignoring listening sockets, which both skip). Blocking,
/// trigger, hooks (argv, order, BLOCK = 2), files and ignore entries likewise; the keys we do
/// not carry over are named in a comment.
#[test]
fn import_conf_and_check_config_keep_the_classic_meaning_of_every_upstream_config() {
    let (src4, src6): (IpAddr, IpAddr) =
        ("192.0.2.7".parse().unwrap(), "2001:db8::7".parse().unwrap());
    let cases = all_cases();
    assert_eq!(cases.len(), 40, "{cases:?}");
    for case in cases {
        let dir = TempDir::new("upstream-import").unwrap();
        let (path, toml_text) = prepare(&case, &dir, src4, src6);
        let (code, out, err) = portsentry(&["check-config", &path]);
        assert_eq!(code, 0, "{case}: {err}\n{toml_text}");
        let eff: toml::Table =
            toml::from_str(&out).unwrap_or_else(|e| panic!("{case}: {e}\n{out}"));
        let hooks = eff["hooks"].as_table().unwrap();
        let classic_text = fs::read_to_string(dir.join("portsentry.conf")).unwrap();
        let keys = classic_keys(&classic_text);
        let get = |k: &str| {
            keys.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        let switches = fs::read_to_string(fixtures().join(&case).join("portsentry.test")).unwrap();
        let modes = modes(&switches);
        let ctx = format!("{case}:\n{toml_text}\n{out}");

        for (proto, modes_of, adv_mode) in [
            ("TCP", ["tcp", "stcp", "atcp"], "atcp"),
            ("UDP", ["udp", "sudp", "audp"], "audp"),
        ] {
            let l = proto.to_lowercase();
            let watched = modes.iter().any(|m| modes_of.contains(m));
            let classic = if !watched {
                vec![false; 65536]
            } else if modes.contains(&adv_mode) {
                let below: usize =
                    get(&format!("ADVANCED_PORTS_{proto}")).map_or(1024, |v| v.parse().unwrap());
                let excluded = port_table(get(&format!("ADVANCED_EXCLUDE_{proto}")).unwrap_or(""));
                (0..65536)
                    .map(|p| p > 0 && p < below && !excluded[p])
                    .collect()
            } else {
                port_table(get(&format!("{proto}_PORTS")).unwrap_or(""))
            };
            let list = port_table(eff[&format!("{l}_ports")].as_str().unwrap());
            let below =
                usize::try_from(eff[&format!("advanced_{l}_below")].as_integer().unwrap()).unwrap();
            let excluded = port_table(eff[&format!("advanced_exclude_{l}")].as_str().unwrap());
            let ours: Vec<bool> = (0..65536)
                .map(|p| list[p] || (p > 0 && p < below && !excluded[p]))
                .collect();
            let differ: Vec<usize> = (0..65536)
                .filter(|&p| classic[p] != ours[p])
                .take(5)
                .collect();
            assert!(differ.is_empty(), "{proto} ports {differ:?} differ: {ctx}");

            let block = get(&format!("BLOCK_{proto}"));
            assert_eq!(
                eff[&format!("block_{l}")].as_bool(),
                Some(block == Some("1")),
                "BLOCK_{proto}: {ctx}"
            );
        }
        let blocks = [get("BLOCK_TCP"), get("BLOCK_UDP")];
        let detect = blocks.iter().all(|b| matches!(b, None | Some("0")));
        assert_eq!(
            eff["mode"].as_str(),
            Some(if detect { "detect" } else { "block" }),
            "{ctx}"
        );
        assert_eq!(
            hooks["run_cmd_always"].as_bool(),
            Some(blocks.contains(&Some("2"))),
            "{ctx}"
        );
        let trigger: i64 = get("SCAN_TRIGGER").map_or(0, |v| v.parse().unwrap());
        assert_eq!(eff["scan_trigger"].as_integer(), Some(trigger), "{ctx}");

        let argv = |k: &str| -> Vec<String> {
            get(k).map_or(vec![], |v| {
                v.split_whitespace().map(str::to_owned).collect()
            })
        };
        let strings = |v: &toml::Value| -> Vec<String> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(strings(&hooks["run_cmd"]), argv("KILL_RUN_CMD"), "{ctx}");
        assert_eq!(strings(&hooks["kill_route"]), argv("KILL_ROUTE"), "{ctx}");
        assert_eq!(
            hooks["hosts_deny"].as_str(),
            Some(get("KILL_HOSTS_DENY").unwrap_or("")),
            "{ctx}"
        );
        assert_eq!(
            hooks["run_cmd_first"].as_bool(),
            Some(get("KILL_RUN_CMD_FIRST") == Some("1")),
            "{ctx}"
        );

        let same_file = |ours: &str, classic: Option<&str>| match classic {
            None => ours.is_empty(),
            Some(c) => Path::new(ours)
                .components()
                .eq(dir.path.join(c).components()),
        };
        for (k, classic) in [
            ("history_file", "HISTORY_FILE"),
            ("ignore_file", "IGNORE_FILE"),
        ] {
            assert!(
                same_file(eff[k].as_str().unwrap(), get(classic)),
                "{k}: {ctx}"
            );
        }
        let ignored: Vec<String> = fs::read_to_string(dir.join("portsentry.ignore"))
            .unwrap_or_default()
            .lines()
            .map(|l| {
                l.trim()
                    .trim_end_matches("/32")
                    .trim_end_matches("/128")
                    .to_owned()
            })
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(
            strings(&eff["allow"]),
            ignored,
            "IGNORE_FILE entries: {ctx}"
        );

        for (key, _) in &keys {
            // A port list of a protocol no mode watched, or watched only in advanced mode (which
            // ignored it), is replaced by one comment.
            let unwatched = key
                .strip_suffix("_PORTS")
                .map(|proto| format!("no --mode watched {proto}"));
            assert!(
                toml_text.contains(&format!("{key} (line "))
                    || toml_text
                        .contains(&format!("{key} not used: PortSentry 1.2 in advanced mode"))
                    || unwatched.is_some_and(|u| toml_text.contains(&u)),
                "{key} unaccounted for: {ctx}"
            );
        }
        for key in ["BLOCKED_FILE", "PORT_BANNER", "RESOLVE_HOST"] {
            if get(key).is_some() {
                assert!(
                    toml_text.contains(&format!("# {key} (line "))
                        && toml_text.contains("not carried over"),
                    "{key}: {ctx}"
                );
            }
        }
    }
}

/// 1.2 went on without a missing IGNORE_FILE ("Unable to open ignore file … Continuing
/// without it"); we refuse the configuration instead, naming the key and the file, because
/// running without an allowlist the operator wrote can ban the hosts it protects.
#[test]
fn a_missing_ignore_file_is_an_error() {
    let dir = TempDir::new("upstream-ignore").unwrap();
    let (path, _) = prepare(
        "v1.2-022-adv_sentry_mon_tcp",
        &dir,
        "192.0.2.7".parse().unwrap(),
        "2001:db8::7".parse().unwrap(),
    );
    let ignore = dir.join("portsentry.ignore");
    fs::remove_file(&ignore).unwrap();
    let (code, _, err) = portsentry(&["check-config", &path]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("key `ignore_file`")
            && err.contains(&format!(
                "{}: cannot read the ignore file",
                ignore.display()
            )),
        "{err}"
    );
}
