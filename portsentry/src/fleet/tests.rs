//! Fleet side of local bans and decisions: what is shared, the alert cap, refusal lines.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use super::*;
use crate::{
    bans::{BanNotice, FleetApplied, Refusal},
    fleet::crowdsec::decisions::FleetBan,
};

fn fleet(max_alerts_per_minute: u32) -> (Fleet, Arc<Mutex<Vec<String>>>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    let log: Log = Arc::new(move |l: String| sink.lock().unwrap().push(l));
    let dir = std::env::temp_dir().join(format!(
        "ps-fleet-{}-{max_alerts_per_minute}",
        std::process::id()
    ));
    let f = Fleet {
        updates: None,
        outbox: Some(Outbox::detached(&dir, 100)),
        log,
        scenario: "portsentry/port-scan".into(),
        host: "host-a".into(),
        lapi_url: "http://127.0.0.1:8080".into(),
        client_cert: false,
        cap: AlertCap::new(max_alerts_per_minute),
        cap_report: CapReport {
            gate: ReportGate::new(REPORT_INTERVAL),
            pending: 0,
            latest: None,
        },
        counters: FleetCounters::default(),
        pulls: None,
        reported: HashSet::new(),
    };
    (f, lines)
}

fn ban(source: &str, shareable: bool) -> BanNotice {
    BanNotice {
        shareable,
        ..BanNotice::example(source)
    }
}

fn queued(f: &Fleet) -> usize {
    f.outbox.as_ref().unwrap().len()
}

#[test]
fn unverified_and_link_local_bans_never_leave_the_host() {
    let (mut f, lines) = fleet(60);
    f.on_local_ban(&ban("192.0.2.7", false));
    f.on_local_ban(&ban("fe80::7", false));
    assert_eq!(queued(&f), 0, "nothing queued for LAPI");
    f.on_local_ban(&ban("192.0.2.8", true));
    assert_eq!(queued(&f), 1);
    assert_eq!(
        *lines.lock().unwrap(),
        [
            "portsentry: crowdsec: ban of 192.0.2.7 not shared with the fleet: unverified source",
            "portsentry: crowdsec: ban of fe80::7 not shared with the fleet: link-local source",
        ]
    );
    let c = f.counters();
    assert_eq!((c.alerts_not_shared, c.alerts_queued), (2, 1));
}

#[test]
fn alerts_over_the_cap_are_counted_dropped_and_reported_once_a_minute() {
    let (mut f, lines) = fleet(2);
    let t0 = Instant::now();
    for i in 1..=5 {
        f.on_local_ban_at(&ban(&format!("192.0.2.{i}"), true), t0);
    }
    assert_eq!(queued(&f), 2, "the cap lets two through");
    let c = f.counters();
    assert_eq!((c.alerts_queued, c.alerts_capped), (2, 3));
    {
        let l = lines.lock().unwrap();
        assert_eq!(l.len(), 1, "one line for the first drop: {l:?}");
        assert!(
            l[0].starts_with("portsentry: warning: crowdsec: alert cap reached (crowdsec.max_alerts_per_minute = 2): 1 alert(s) not pushed since the last report (latest: 192.0.2.3)"),
            "{}",
            l[0]
        );
    }
    // The two held back are told when the minute is over.
    f.flush_cap_report_at(t0 + Duration::from_secs(30));
    assert_eq!(lines.lock().unwrap().len(), 1);
    f.flush_cap_report_at(t0 + REPORT_INTERVAL);
    let l = lines.lock().unwrap();
    assert_eq!(l.len(), 2);
    assert!(
        l[1].contains(
            ": 2 alert(s) not pushed since the last report (latest: 192.0.2.5); 3 dropped in total"
        ),
        "{}",
        l[1]
    );
}

fn update(targets: &[&str], startup: bool) -> FleetUpdate {
    FleetUpdate {
        startup,
        bans: targets
            .iter()
            .map(|t| FleetBan {
                target: t.parse().unwrap(),
                remaining: Duration::from_secs(3600),
                origin: "cscli".into(),
                scenario: "manual".into(),
            })
            .collect(),
        ..Default::default()
    }
}

#[test]
fn each_refused_decision_is_logged_and_counted_once() {
    let (mut f, _) = fleet(60);
    let done = |u: &FleetUpdate| FleetApplied {
        refused: u
            .bans
            .iter()
            .map(|b| (b.target, Refusal::Bogus("224.0.0.0/4".parse().unwrap())))
            .collect(),
        ..Default::default()
    };
    let u = update(&["224.0.0.0/4"], true);
    let lines = f.lines(done(&u), &u);
    assert!(
        lines.contains(&"portsentry: warning: crowdsec: refused the decision to ban 224.0.0.0/4: it reaches into the bogus range 224.0.0.0/4 (no real peer is there)".to_owned()),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l.ends_with("1 refused")), "{lines:?}");
    // A resync lists it again: not logged again, not counted again.
    let lines = f.lines(done(&u), &u);
    assert!(
        !lines.iter().any(|l| l.contains("refused the decision")),
        "{lines:?}"
    );
    assert_eq!(f.counters().refused_bogus, 1);
    // Deleted, then decided again: news again.
    let mut deleted = update(&[], false);
    deleted.lifted = vec!["224.0.0.0/4".parse().unwrap()];
    f.lines(FleetApplied::default(), &deleted);
    let u = update(&["224.0.0.0/4"], false);
    assert!(f
        .lines(done(&u), &u)
        .iter()
        .any(|l| l.contains("refused the decision")));
    assert_eq!(f.counters().refused_bogus, 2);
}
