//! The importer end to end: commands split or refused, every classic key carried over or
//! explained, bad values named by line, and any input giving an error or TOML that validates.

use super::*;
use crate::config;
use proptest::prelude::*;

fn imp(text: &str) -> Result<String, ImportError> {
    import(text, Path::new("portsentry.conf"), &[])
}

fn imp_as(text: &str, modes: &[ClassicMode]) -> String {
    import(text, Path::new("portsentry.conf"), modes).unwrap()
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
        "history_file = \"/var/log/portsentry.history\"", "history_format = \"portsentry2\"  # PortSentry 2.x's lines; 1.2",
        "# BLOCKED_FILE (line 14) not carried over",
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
        s.live.hooks.run_cmd_first && s.live.hooks.run_cmd_always && s.live.hooks.run_cmd.is_none()
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

/// What PortSentry makes of a missing key is carried over: upstream's stock 2.x
/// `examples/portsentry.conf` sets neither BLOCK_TCP nor BLOCK_UDP (log only), and a file
/// without UDP_PORTS monitors no UDP port.
#[test]
fn absent_keys_keep_their_classic_meaning() {
    let out = imp("TCP_PORTS=\"1,11,111\"\nSCAN_TRIGGER=\"0\"\n").unwrap();
    assert!(
        out.contains("udp_ports = \"\"  # UDP_PORTS absent"),
        "{out}"
    );
    assert!(
        out.contains("block_tcp = false  # BLOCK_TCP absent"),
        "{out}"
    );
    assert!(
        out.contains("block_udp = false  # BLOCK_UDP absent"),
        "{out}"
    );
    let s = config::parse_str(&out, Path::new("imported.toml")).unwrap();
    assert_eq!(s.live.mode, crate::config::settings::Mode::Detect);
    assert!(!s.live.block_tcp && !s.live.block_udp);
    assert_eq!(s.live.tcp_ports.len(), 3);
    assert!(s.live.udp_ports.is_empty());

    // Present keys are left alone.
    let out = imp("TCP_PORTS=\"1\"\nUDP_PORTS=\"7\"\nBLOCK_TCP=\"1\"\nBLOCK_UDP=\"1\"\n").unwrap();
    assert!(!out.contains("absent"), "{out}");
    let s = config::parse_str(&out, Path::new("imported.toml")).unwrap();
    assert_eq!(s.live.mode, crate::config::settings::Mode::Block);
}

/// `import-conf --mode`: the classic command line decides what was watched and whether in
/// advanced mode, as PortSentry 1.2's `-atcp`/`-sudp`/… did.
#[test]
fn classic_modes_decide_protocols_and_advanced_mode() {
    let file = "TCP_PORTS=\"1,11\"\nUDP_PORTS=\"7\"\nADVANCED_PORTS_TCP=\"2048\"\nBLOCK_TCP=\"1\"\nBLOCK_UDP=\"1\"\n";
    let parse = |out: &str| config::parse_str(out, Path::new("imported.toml")).unwrap();

    // -atcp alone: advanced TCP below the file's bound, TCP_PORTS ignored (as 1.2 did), no UDP.
    let out = imp_as(file, &[ClassicMode::Atcp]);
    let s = parse(&out);
    assert_eq!(s.live.advanced_tcp_below, Some(2048));
    assert!(
        s.live.udp_ports.is_empty() && s.live.tcp_ports.is_empty(),
        "{out}"
    );
    assert!(
        out.contains("TCP_PORTS not used: PortSentry 1.2 in advanced mode"),
        "{out}"
    );

    // -atcp with -stcp (two classic daemons): both the list and advanced mode.
    let s = parse(&imp_as(file, &[ClassicMode::Atcp, ClassicMode::Stcp]));
    assert_eq!(s.live.advanced_tcp_below, Some(2048));
    assert_eq!(s.live.tcp_ports.len(), 2);

    // -stcp and -audp: UDP advanced with 1.2's default bound (the file has none).
    let out = imp_as(file, &[ClassicMode::Stcp, ClassicMode::Audp]);
    let s = parse(&out);
    assert_eq!(s.live.advanced_tcp_below, None, "{out}");
    assert_eq!(s.live.advanced_udp_below, Some(1024), "{out}");
    assert!(
        s.live.udp_ports.is_empty() && s.live.tcp_ports.contains(11),
        "{out}"
    );

    // -udp alone: no TCP port is watched, whatever TCP_PORTS says.
    let s = parse(&imp_as(file, &[ClassicMode::Udp]));
    assert!(s.live.tcp_ports.is_empty() && s.live.udp_ports.contains(7));

    // No mode: the file decides; the advanced bound stays a comment that names the flag.
    let out = imp_as(file, &[]);
    assert!(
        out.contains("# advanced_tcp_below = 2048") && out.contains("--mode atcp"),
        "{out}"
    );
}
