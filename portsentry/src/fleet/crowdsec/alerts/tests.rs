use super::*;
use crate::detect::events::Protocol;

fn ban(ip: &str) -> BanNotice {
    BanNotice {
        source: ip.parse().unwrap(),
        dst_port: 111,
        protocol: Protocol::Tcp,
        scan: "TCP SYN/Normal scan".into(),
        probes: 3,
        enforced: true,
        shareable: true,
        verified: true,
        ttl: Some(Duration::from_secs(86_400)),
        interface: "eth0".into(),
        at: "2026-11-25T09:16:34.032Z".parse().unwrap(),
    }
}

#[test]
fn alert_has_every_field_lapi_requires() {
    let a = Alert::from_ban(&ban("2001:db8::7"), "portsentry/port-scan", "host-a");
    let v = serde_json::to_value(&a).unwrap();
    for k in [
        "scenario",
        "scenario_hash",
        "scenario_version",
        "message",
        "events_count",
        "start_at",
        "stop_at",
        "capacity",
        "leakspeed",
        "simulated",
        "events",
        "source",
    ] {
        assert!(!v[k].is_null(), "{k} missing: {v}");
    }
    let d = &v["decisions"][0];
    assert_eq!(d["duration"], "86400s");
    assert_eq!(d["type"], "ban");
    assert_eq!(d["scope"], "Ip");
    assert_eq!(d["value"], "2001:db8::7");
    assert_eq!(d["origin"], "portsentry");
    assert_eq!(v["events_count"], 3);
    assert_eq!(v["simulated"], false);
    assert!(v["events"][0]["meta"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!({"key": "dst_port", "value": "111"})));
    let unenforced = BanNotice {
        enforced: false,
        ttl: None,
        ..ban("10.0.0.9")
    };
    let a = Alert::from_ban(&unenforced, "x/y", "h");
    assert!(a.simulated);
    assert_eq!(a.decisions[0].duration, "315360000s");
}

#[test]
fn alert_payload_is_pinned() {
    // The whole body, byte for byte: LAPI and the scenarios downstream parse all of it.
    let a = Alert::from_ban(&ban("2001:db8::7"), "portsentry/port-scan", "host-a");
    let want = concat!(
        r#"{"scenario":"portsentry/port-scan","scenario_hash":"","#,
        r#""scenario_version":""#,
        env!("CARGO_PKG_VERSION"),
        r#"","message":"portsentry on host-a: 2001:db8::7 probed TCP/111 (TCP SYN/Normal scan) and was banned""#,
        r#","events_count":3,"start_at":"2026-11-25T09:16:34.032Z","stop_at":"2026-11-25T09:16:34.032Z","capacity":0,"leakspeed":"0s","simulated":false,"remediation":true"#,
        r#","events":[{"timestamp":"2026-11-25T09:16:34.032Z","meta":["#,
        r#"{"key":"source_ip","value":"2001:db8::7"},{"key":"dst_port","value":"111"},{"key":"proto","value":"tcp"},"#,
        r#"{"key":"scan_type","value":"TCP SYN/Normal scan"},{"key":"interface","value":"eth0"},"#,
        r#"{"key":"machine","value":"host-a"},{"key":"service","value":"portsentry"},{"key":"log_type","value":"portsentry_ban"}]}]"#,
        r#","source":{"scope":"Ip","value":"2001:db8::7","ip":"2001:db8::7"}"#,
        r#","decisions":[{"duration":"86400s","type":"ban","scope":"Ip","value":"2001:db8::7","#,
        r#""origin":"portsentry","scenario":"portsentry/port-scan"}]}"#,
    );
    assert_eq!(serde_json::to_string(&a).unwrap(), want);
}

#[test]
fn queue_is_bounded_persisted_and_survives_garbage() {
    let dir = std::env::temp_dir().join(format!("ps-cs-queue-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (mut q, loaded) = AlertQueue::load(&dir, 3);
    assert!(matches!(loaded, Loaded::Fresh));
    for i in 1..=5 {
        let dropped = q.push(Alert::from_ban(&ban(&format!("10.0.0.{i}")), "s", "h"));
        assert_eq!(dropped, usize::from(i > 3));
    }
    let (last, batch) = q.front(2);
    assert_eq!(batch[0].source.value, "10.0.0.3", "the oldest went first");
    // While that batch is in flight, a new alert pushes 10.0.0.3 out of the bound.
    q.push(Alert::from_ban(&ban("10.0.0.6"), "s", "h"));
    q.remove_through(last);
    let (_, rest) = q.front(5);
    let rest: Vec<&str> = rest.iter().map(|a| a.source.value.as_str()).collect();
    assert_eq!(
        rest,
        ["10.0.0.5", "10.0.0.6"],
        "exactly the sent ones are gone"
    );
    assert!(q.is_dirty());
    q.save().unwrap();
    assert!(!q.is_dirty());
    let (mut again, loaded) = AlertQueue::load(&dir, 3);
    assert!(matches!(loaded, Loaded::Restored(2)));
    let (last, _) = again.front(5);
    again.remove_through(last);
    assert!(again.is_empty());
    again.save().unwrap();
    assert!(!again.path().exists(), "an empty queue leaves no file");
    // Garbage is kept aside byte for byte through `state_file`, with the line every
    // state file gets.
    std::fs::write(again.path(), "{not json").unwrap();
    let (q, loaded) = AlertQueue::load(&dir, 3);
    assert!(q.is_empty());
    let Loaded::Unusable(unusable) = loaded else {
        panic!("garbage must be kept aside");
    };
    let crate::state_file::Kept::Aside(moved) = &unusable.kept else {
        panic!("{unusable:?}");
    };
    assert_eq!(std::fs::read_to_string(moved).unwrap(), "{not json");
    assert!(moved
        .to_string_lossy()
        .contains("crowdsec-alerts.json.corrupt-"));
    let line = unusable.line(STARTS_WITHOUT);
    let head = format!(
        "portsentry: error: {}: not a portsentry CrowdSec alert queue (",
        q.path().display()
    );
    let tail = format!("); kept aside as {}; {STARTS_WITHOUT}", moved.display());
    assert!(line.starts_with(&head) && line.ends_with(&tail), "{line}");
    let _ = std::fs::remove_dir_all(&dir);
}
