//! The file format without a daemon: round trips, version 1 files, and bad files that are
//! reported, never moved, by loading.

use std::fs;

use super::*;
use crate::bans::record::{ScanKey, TriggerProto};

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ps-store-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    d
}

fn record(target: &str, origin: Origin) -> BanRecord {
    BanRecord {
        target: target.parse().unwrap(),
        origin,
        shadow: origin == Origin::Detected,
        since_ms: 1_000,
        expires_ms: Some(5_000),
        trigger: Some(Trigger {
            proto: TriggerProto::Tcp,
            port: 111,
            scan: ScanKey::Syn,
        }),
        fleet: None,
        drops: 3,
        unverified: false,
    }
}

#[test]
fn round_trip_with_names_not_codes() {
    let dir = tmpdir("rt");
    let store = StateStore::new(&dir);
    assert_eq!(
        store.load().unwrap(),
        Saved::default(),
        "missing file is empty"
    );
    let mut fleet = record("10.9.0.0/16", Origin::Fleet);
    fleet.fleet = Some(FleetNote {
        origin: "cscli".into(),
        scenario: "manual 'ban' from 'm1'".into(),
    });
    let saved = Saved {
        bans: vec![record("10.0.0.2", Origin::Detected), fleet],
        unbanned: vec![Unbanned {
            target: "2001:db8::/64".parse().unwrap(),
            until_ms: 9,
        }],
        history: vec![Offence {
            target: "10.0.0.2".parse().unwrap(),
            bans: 3,
            last_ms: 5,
            until_ms: Some(7),
        }],
    };
    store.save(&saved).unwrap();
    assert_eq!(store.load().unwrap(), saved);
    let text = fs::read_to_string(store.path()).unwrap();
    for name in [
        "\"detected\"",
        "\"crowdsec\"",
        "\"tcp\"",
        "\"syn\"",
        "\"shadow\": true",
        "\"version\": 3",
        "\"history\"",
    ] {
        assert!(text.contains(name), "{name} in {text}");
    }
    assert_eq!(
        fs::read_dir(&dir).unwrap().count(),
        1,
        "no temporary file left"
    );
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn version_1_files_load() {
    let old = r#"{"version":1,"bans":[{"addr":"10.0.0.2","banned_at_ms":1,"expires_at_ms":null,"port":111,"proto":6,"scan_type":1,"origin":1,"drops":4}],
        "cidr_bans":[{"cidr":"10.9.0.0/16","added_at_ms":1,"expires_at_ms":2,"origin":4}],
        "fleet":[{"target":"10.9.0.0/16","origin":"cscli","scenario":"s"}]}"#;
    let s = parse(old).ok().unwrap();
    assert_eq!(s.bans.len(), 2);
    assert_eq!(s.bans[0].origin, Origin::Detected);
    assert_eq!(
        s.bans[0].trigger.unwrap().text(),
        "TCP/111 TCP SYN/Normal scan"
    );
    assert_eq!(s.bans[1].origin, Origin::Fleet);
    assert_eq!(s.bans[1].fleet.as_ref().unwrap().origin, "cscli");
}

/// Version 2 (before the repeat offenders' history) loads as is, with an empty history; the
/// next save writes version 3.
#[test]
fn version_2_files_load_without_history() {
    let v2 = r#"{"version":2,"bans":[{"target":"10.0.0.2","origin":"detected","since_ms":1,"expires_ms":9,"drops":0}],
        "unbanned":[{"target":"10.0.0.3","until_ms":7}]}"#;
    let s = parse(v2).ok().unwrap();
    assert_eq!(s.bans.len(), 1);
    assert_eq!(s.unbanned.len(), 1);
    assert!(s.history.is_empty());
    let with_history = r#"{"version":3,"bans":[],"history":[{"target":"10.0.0.2","bans":2,"last_ms":1,"until_ms":null}]}"#;
    let s = parse(with_history).ok().unwrap();
    assert_eq!(s.history[0].bans, 2);
    assert_eq!(s.history[0].until_ms, None);
}

/// Loading reports a bad file and leaves it; opening at start keeps it aside through
/// `state_file`, with the line every state file gets.
#[test]
fn corrupt_and_newer_files_are_errors_and_only_opening_moves_them() {
    let dir = tmpdir("bad");
    fs::create_dir_all(&dir).unwrap();
    let store = StateStore::new(&dir);
    fs::write(store.path(), "{ not json").unwrap();
    assert!(matches!(store.load(), Err(StateError::Corrupt { .. })));
    assert_eq!(fs::read_to_string(store.path()).unwrap(), "{ not json");
    let newer = r#"{"version": 99, "bans": []}"#;
    fs::write(store.path(), newer).unwrap();
    let err = store.load().unwrap_err();
    assert!(matches!(err, StateError::TooNew { found: 99, .. }), "{err}");
    let unusable = store.open().unwrap_err();
    let crate::state_file::Kept::Aside(moved) = &unusable.kept else {
        panic!("{unusable:?}");
    };
    assert!(!store.path().exists());
    assert_eq!(fs::read_to_string(moved).unwrap(), newer);
    assert_eq!(
        unusable.line("starting without saved bans"),
        format!(
            "portsentry: error: {}: state file version 99 is newer than this portsentry understands (3); kept aside as {}; starting without saved bans",
            store.path().display(),
            moved.display()
        )
    );
    assert!(moved.to_string_lossy().contains("bans.json.newer-"));
    fs::remove_dir_all(&dir).unwrap();
}
