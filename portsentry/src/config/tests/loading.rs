//! Where settings come from: the ignore file read relative to the config file, and the command
//! line's overlay over the file over the defaults, a bad flag named by its flag.

use super::*;

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
