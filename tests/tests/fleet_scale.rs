//! Fleet mode at scale, against a fake LAPI (`portsentry_tests::fakelapi`) serving a community
//! blocklist's worth of decisions: while 100 k decisions are applied the daemon keeps logging
//! probes and answers SIGTERM at once, every decision ends up enforced in XDP, and an answer
//! over the caps is refused with an error naming the cap. Also the other bulk write of the ban
//! table: a million bans restored at start, written in batches as fleet decisions are.

use std::{
    net::IpAddr,
    thread,
    time::{Duration, Instant},
};

use portsentry::config::CrowdsecSettings;
use portsentry_tests::{
    case::{self, ban_line as ban_line_of, SERVICE, TRAP},
    fakelapi::{decision_ip, decisions_body, decisions_body_padded, FakeLapi},
    lab::{ip, portsentry, sock, Daemon, DaemonArgs, Lab, Service, TempDir},
};
const N: usize = 100_000;
/// A probe's ban line must be logged within this while decisions are applied (the bench's
/// target is 100 ms; this leaves room for a loaded test machine).
const PROBE_LINE_WITHIN: Duration = Duration::from_millis(300);
const PROBE_EVERY: Duration = Duration::from_millis(100);
const PROBE_EVERY_AFTER: Duration = Duration::from_millis(250);
/// The daemon's first expiry sweep starts 30 s after its start; it is over by then.
const SWEPT_AFTER: Duration = Duration::from_secs(34);
const APPLYING: &str = "portsentry: crowdsec: applying the full decision list";
const SUMMARY: &str = "portsentry: crowdsec: full decision list";

struct Host {
    lab: Lab,
    dir: TempDir,
    config: String,
    _service: Service,
}

impl Host {
    /// A protected host pulling from `lapi` (started on its namespace by `serve`), its
    /// `[crowdsec]` settings changed by `tune`.
    fn new(
        name: &str,
        aliases: usize,
        tune: impl FnOnce(&mut CrowdsecSettings),
        serve: impl FnOnce(&Lab) -> FakeLapi,
    ) -> (Self, FakeLapi) {
        let lab = Lab::new(aliases).expect("lab");
        let lapi = serve(&lab);
        let dir = TempDir::new(name).expect("state dir");
        let key = dir.write_secret("bouncer.key", "fake-key\n");
        let mut s = case::fleet_settings(&lab, &dir, &lapi.url);
        s.startup.max_bans = 300_000;
        case::crowdsec(&mut s).api_key_file = Some(key.into());
        tune(case::crowdsec(&mut s));
        let config = case::write_config(&dir, &s);
        let service = lab.protected.tcp_service(sock(lab.protected_v4, SERVICE));
        (
            Host {
                lab,
                dir,
                config,
                _service: service,
            },
            lapi,
        )
    }

    fn start(&self) -> Daemon {
        DaemonArgs::new(&self.lab)
            .config(&self.config)
            .start()
            .expect("daemon")
    }

    /// `portsentry list --json` rows of origin `crowdsec`.
    fn fleet_bans(&self) -> usize {
        let (code, out, err) = portsentry(&["list", "--json", "--config", &self.config]);
        assert_eq!(code, 0, "list: {err}");
        let rows: serde_json::Value = serde_json::from_str(&out).expect("list --json");
        rows.as_array()
            .expect("an array")
            .iter()
            .filter(|r| r["origin"] == "crowdsec")
            .count()
    }

    /// Whether the protected service answers a connect from `src` (a scanner-side address).
    fn reaches_service(&self, src: IpAddr) -> bool {
        self.lab.scanner.tcp_connect(
            src,
            sock(self.lab.protected_v4, SERVICE),
            Duration::from_millis(500),
        )
    }
}

/// Probes come in while 100 k decisions are applied: each probe's ban line is logged within
/// [`PROBE_LINE_WITHIN`]; in the end all 100 k decisions are in the book and sampled ones drop.
/// The same holds after the apply, while the grown book is saved and first swept.
/// (On main before the fix the whole list was applied in one turn of the event loop: the
/// probes' lines came seconds late. Before the save moved to its own thread, a probe sent at
/// the end of the apply waited ~1.6 s for the save of the 100 k book in a debug build, and
/// before the sweep went in parts, one sent during the first sweep waited 0.86 s.)
#[test]
fn probes_are_logged_while_100k_decisions_are_applied() {
    let aliases = 220;
    let (host, lapi) = Host::new(
        "fs-probe",
        aliases,
        |_| (),
        |lab| FakeLapi::start(&lab.protected, decisions_body(N, "4h")).expect("fake LAPI"),
    );
    let started = Instant::now();
    let mut d = host.start();
    let served = lapi
        .wait_startup_served(Duration::from_secs(20))
        .expect("the daemon pulled the decision list");
    let mut during = Vec::new();
    let mut after = Vec::new();
    // One probe every 100 ms from a new source from the moment LAPI answered until the
    // decisions are applied (parsing, then applying), then one every 250 ms until the first
    // expiry sweep of the grown book is over (30 s after start): the save of the grown book
    // and the sweep must not hold up the loop either.
    let mut at = served;
    let mut ingest = None;
    for src in host.lab.scanner_v4.iter().skip(1).copied() {
        thread::sleep(at.saturating_duration_since(Instant::now()));
        let ingest_done = d.has_line(|l| l.starts_with(SUMMARY));
        if ingest_done && started.elapsed() > SWEPT_AFTER {
            break;
        }
        let sent = Instant::now();
        // The SYN bans in XDP and is dropped: the connect times out, the line is what counts.
        host.lab.scanner.tcp_connect(
            src,
            sock(host.lab.protected_v4, TRAP),
            Duration::from_millis(20),
        );
        d.expect_line_within(
            &format!("the ban line for {src}"),
            Duration::from_secs(60),
            ban_line_of(src),
        );
        let latency = sent.elapsed();
        if ingest_done {
            ingest.get_or_insert(sent - served);
            after.push((src, latency));
            at += PROBE_EVERY_AFTER;
        } else {
            during.push((src, latency));
            at += PROBE_EVERY;
        }
    }
    d.expect_line_within("the summary line", Duration::from_secs(60), |l| {
        l.starts_with(SUMMARY)
    });
    eprintln!("probe latencies during ingest: {during:?}; after: {after:?}; summary seen {ingest:?} after the answer");
    assert!(
        !during.is_empty(),
        "no probe was sent before the decisions were applied; output:\n{}",
        d.output()
    );
    assert!(
        started.elapsed() > SWEPT_AFTER,
        "the probes ended before the first sweep (more scanner aliases needed); output:\n{}",
        d.output()
    );
    for (src, latency) in &after {
        assert!(
            *latency <= PROBE_LINE_WITHIN,
            "the ban line for {src} came {latency:?} after its probe, right after the decisions were applied (bound {PROBE_LINE_WITHIN:?}); output:\n{}",
            d.output()
        );
    }
    for (src, latency) in &during {
        assert!(
            *latency <= PROBE_LINE_WITHIN,
            "the ban line for {src} came {latency:?} after its probe, while decisions were applied (bound {PROBE_LINE_WITHIN:?}); output:\n{}",
            d.output()
        );
    }
    assert!(
        d.has_line(|l| l.starts_with(&format!("{SUMMARY}: {N} banned"))),
        "all {N} decisions banned:\n{}",
        d.output()
    );
    assert_eq!(host.fleet_bans(), N, "every decision is in the book");

    // Sampled decisions drop in XDP: their address on the scanner side cannot reach the
    // service; an address LAPI did not list can.
    let dev = host.lab.scanner_iface.clone();
    let samples = [decision_ip(0), decision_ip(N / 2), decision_ip(N - 1)];
    let control: std::net::Ipv4Addr = "11.200.0.1".parse().expect("address");
    for a in samples.iter().chain([&control]) {
        ip(&[
            "-n",
            &host.lab.scanner.name,
            "addr",
            "add",
            &format!("{a}/32"),
            "dev",
            &dev,
        ])
        .expect("scanner alias");
    }
    assert!(
        host.reaches_service(IpAddr::V4(control)),
        "an address without a decision reaches the service"
    );
    for a in samples {
        assert!(
            !host.reaches_service(IpAddr::V4(a)),
            "{a} has a decision and must be dropped"
        );
    }
    d.stop().expect("stop");
}

/// SIGTERM while 100 k decisions are applied: the daemon exits within 2 s, cleanly, with the
/// state it had saved (a valid `bans.json` the offline `list` reads).
#[test]
fn sigterm_during_ingest_stops_within_2s_and_saves() {
    let (host, lapi) = Host::new(
        "fs-term",
        1,
        |_| (),
        |lab| FakeLapi::start(&lab.protected, decisions_body(N, "4h")).expect("fake LAPI"),
    );
    let mut d = host.start();
    lapi.wait_startup_served(Duration::from_secs(20))
        .expect("the daemon pulled the decision list");
    // Parsing takes a moment on the pull thread; then the decisions are applied in steps.
    d.expect_line_within(
        "the line announcing the application",
        Duration::from_secs(30),
        |l| l.starts_with(APPLYING),
    );
    thread::sleep(Duration::from_millis(100));
    let ingest_done = d.has_line(|l| l.starts_with(SUMMARY));
    let t = Instant::now();
    let code = d.stop().expect("stopped within 10 s");
    let took = t.elapsed();
    assert_eq!(code, Some(0), "{}", d.output());
    assert!(
        took < Duration::from_secs(2),
        "SIGTERM during ingest took {took:?} (ingest finished before it: {ingest_done}); output:\n{}",
        d.output()
    );
    assert!(
        d.has_line(|l| l.starts_with("portsentry: stopped")),
        "{}",
        d.output()
    );
    let saved = std::fs::read_to_string(host.dir.join("bans.json")).expect("bans.json written");
    let parsed: serde_json::Value = serde_json::from_str(&saved).expect("bans.json is JSON");
    let in_file = parsed["bans"].as_array().map_or(0, Vec::len);
    // Offline, the CLI reads what was saved.
    assert_eq!(host.fleet_bans(), in_file, "list reads the saved state");
    eprintln!("SIGTERM after {took:?}; {in_file} fleet bans saved");
}

/// Answers over the caps: more decisions than `crowdsec.max_decisions`, and a body larger than
/// the byte cap that follows from it. Each is refused whole with an error naming the cap and
/// the key; nothing is applied; the daemon keeps running and keeps detecting.
#[test]
fn answers_over_the_caps_are_refused_with_a_clear_error() {
    // Too many decisions.
    let (host, _lapi) = Host::new(
        "fs-cap-n",
        2,
        |c| c.max_decisions = 1000,
        |lab| FakeLapi::start(&lab.protected, decisions_body(1500, "4h")).expect("fake LAPI"),
    );
    let mut d = host.start();
    let what = "LAPI sent 1500 decisions, more than crowdsec.max_decisions = 1000";
    d.expect_line_within(
        "the error naming the count cap",
        Duration::from_secs(10),
        |l| l.contains(what),
    );
    assert!(
        d.has_line(|l| l.contains(what) && l.contains("raise crowdsec.max_decisions")),
        "{}",
        d.output()
    );
    assert!(d.is_running(), "{}", d.output());
    assert_eq!(host.fleet_bans(), 0, "nothing applied");
    let x = host.lab.scanner_v4[1];
    host.lab.scanner.tcp_connect(
        x,
        sock(host.lab.protected_v4, TRAP),
        Duration::from_millis(50),
    );
    d.expect_line("still detecting", ban_line_of(x));
    d.stop().expect("stop");

    // Too many bytes for the count: 900 decisions of ~4 KiB each.
    let (host, _lapi) = Host::new(
        "fs-cap-b",
        1,
        |c| c.max_decisions = 1000,
        |lab| {
            FakeLapi::start(&lab.protected, decisions_body_padded(900, "4h", 4096))
                .expect("fake LAPI")
        },
    );
    let mut d = host.start();
    d.expect_line_within(
        "the error naming the size cap",
        Duration::from_secs(10),
        |l| {
            l.contains("LAPI answer is larger than")
                && l.contains("crowdsec.max_decisions = 1000")
                && l.contains("raise crowdsec.max_decisions")
        },
    );
    assert!(d.is_running(), "{}", d.output());
    assert_eq!(host.fleet_bans(), 0, "nothing applied");
    d.stop().expect("stop");
}

/// The ban book's fleet steps against real maps (no traffic needed).
mod kernel {
    use std::{net::IpAddr, time::Duration};

    use portsentry::{
        bans::{Origin, Refusal, StateStore},
        clock::Now,
        dataplane::{Dataplane, LoadOptions},
        fleet::crowdsec::decisions::{FleetBan, FleetUpdate},
        net::cidr::Cidr,
    };
    use portsentry_common::{peer_ways, BanEntry, PeerEntry};
    use portsentry_tests::{fakelapi::decision_ip, lab::TempDir, xdp::open_book};

    const CAPACITY: u32 = 3000;
    const DECISIONS: usize = 3500;

    /// Fresh fleet bans are written a step at a time, all prefilter bits first, then the
    /// entries: in one batch call each, or one by one where the kernel has no batch operations
    /// (forced here). Both ways every ban made has its record, its kernel entry and its
    /// prefilter bit; an address the kernel held without a record is replaced; the allowlist
    /// and learned peers (read in one batch, or one lookup each) still refuse; a full table
    /// refuses the rest with the count.
    #[test]
    fn fresh_fleet_bans_are_written_in_batches_with_their_filter_bits() {
        for batch_ops in [true, false] {
            let dir = TempDir::new("fleet-batch").unwrap();
            let mut dp = Dataplane::load(&LoadOptions {
                max_bans: Some(CAPACITY),
                ..LoadOptions::default()
            })
            .expect("loading the XDP object (run with `cargo xtask test`)");
            dp.set_batch_ops(batch_ops);
            let now = Now::read();
            let mut book = open_book(StateStore::new(&dir.path), &dp, &now);
            // 11.0.0.0/30 is allowlisted (decisions 0-2: 11.0.0.1-3); 11.0.0.11 is a peer this
            // host talks to; the kernel holds 11.0.0.6 with no record (its own ban, its event
            // still queued).
            book.set_allowlist(Some(&mut dp), &["11.0.0.0/30".parse().unwrap()], &now)
                .unwrap();
            let peer = IpAddr::V4(decision_ip(10));
            dp.insert_peer(
                peer,
                &PeerEntry {
                    last_seen_ns: now.boot_ns as i64,
                    ways: peer_ways::OUTBOUND,
                    _pad: 0,
                },
            )
            .unwrap();
            let held = IpAddr::V4(decision_ip(5));
            dp.insert_ban(
                held,
                &BanEntry {
                    origin: Origin::Detected as u8,
                    drops: 7,
                    ..Default::default()
                },
            )
            .unwrap();
            let update = FleetUpdate {
                startup: true,
                bans: (0..DECISIONS)
                    .map(|i| FleetBan {
                        target: Cidr::host(IpAddr::V4(decision_ip(i))),
                        remaining: Duration::from_secs(3600),
                        origin: "CAPI".into(),
                        scenario: "crowdsecurity/ssh-bf".into(),
                    })
                    .collect(),
                ..FleetUpdate::default()
            };
            let peer_memory = portsentry::config::settings::LiveSettings::default().peer_ttl_ns();
            let done = book
                .apply_fleet(&mut dp, &update, &now, peer_memory)
                .unwrap();
            let how = if batch_ops { "batch" } else { "one by one" };
            assert_eq!(
                dp.batch_ops(),
                batch_ops,
                "{how}: this kernel has batch operations"
            );
            let refused: Vec<String> = done
                .refused
                .iter()
                .map(|(t, why)| format!("{t} {}", why.name()))
                .collect();
            assert_eq!(
                refused,
                [
                    "11.0.0.1 allowlisted",
                    "11.0.0.2 allowlisted",
                    "11.0.0.3 allowlisted",
                    "11.0.0.11 learned_peer"
                ],
                "{how}"
            );
            assert!(matches!(done.refused[3].1, Refusal::LearnedPeer(p) if p == peer));
            let in_kernel = dp.bans().unwrap();
            assert_eq!(
                in_kernel.len(),
                CAPACITY as usize,
                "{how}: the table is full"
            );
            assert_eq!(done.banned_count, CAPACITY as usize, "{how}: {done:?}");
            assert_eq!(done.full, DECISIONS - 4 - CAPACITY as usize, "{how}");
            let fleet: Vec<_> = book
                .records()
                .filter(|r| r.origin == Origin::Fleet)
                .collect();
            assert_eq!(
                fleet.len(),
                CAPACITY as usize,
                "{how}: records of refused bans go"
            );
            for (addr, entry) in &in_kernel {
                assert!(
                    dp.filter_bit(*addr).unwrap(),
                    "{how}: {addr} has no filter bit"
                );
                assert_eq!(entry.origin, Origin::Fleet as u8, "{how}: {addr}");
                assert!(
                    book.get(&Cidr::host(*addr)).is_some(),
                    "{how}: {addr} unrecorded"
                );
            }
            let replaced = in_kernel.iter().find(|(a, _)| *a == held).map(|(_, e)| e);
            assert!(
                replaced.is_some_and(|e| e.expires_at_ns > now.boot_ns),
                "{how}: the kernel's own entry carries the fleet ban now"
            );
        }
    }

    /// A process that opens the maps later (the daemon after the CLI) reads the prefilter
    /// whole before its first ban and keeps every bit already set: a word it writes is the
    /// kernel's word plus its bits, never its own idea of it.
    #[test]
    fn bits_set_by_an_earlier_process_survive_batched_bans() {
        use portsentry::dataplane::Maps;
        use portsentry_tests::lab::PinDir;

        let pins = PinDir::new().unwrap();
        let dir = pins.path.join("ps");
        std::fs::create_dir_all(&dir).unwrap();
        let _dp = Dataplane::load(&LoadOptions {
            pin_dir: Some(dir.clone()),
            max_bans: Some(CAPACITY * 2),
            ..LoadOptions::default()
        })
        .expect("loading the XDP object (run with `cargo xtask test`)");
        let entry = BanEntry {
            origin: Origin::Fleet as u8,
            ..Default::default()
        };
        let keys = |a: &[IpAddr]| -> Vec<_> { a.iter().map(|a| Cidr::host(*a).key()).collect() };
        let first: Vec<IpAddr> = (0..2000).map(|i| IpAddr::V4(decision_ip(i))).collect();
        // Addresses whose bits share words with the first ones (other bits of them).
        let words: std::collections::HashSet<u32> =
            keys(&first).iter().map(|k| k.filter_slot().0).collect();
        let second: Vec<IpAddr> = (10_000..)
            .map(|i| IpAddr::V4(decision_ip(i)))
            .filter(|a| words.contains(&Cidr::host(*a).key().filter_slot().0))
            .take(500)
            .collect();
        let mut earlier = Maps::open_pinned(&dir).unwrap().unwrap();
        earlier.set_batch_ops(false);
        let written = earlier
            .insert_bans(&keys(&first), &vec![entry; first.len()])
            .unwrap();
        assert_eq!(written, first.len());
        drop(earlier);
        let mut later = Maps::open_pinned(&dir).unwrap().unwrap();
        let written = later
            .insert_bans(&keys(&second), &vec![entry; second.len()])
            .unwrap();
        assert_eq!(written, second.len());
        assert!(later.batch_ops(), "this kernel has batch operations");
        for a in first.iter().chain(&second) {
            assert!(later.filter_bit(*a).unwrap(), "{a} lost its filter bit");
        }
        assert_eq!(later.bans().unwrap().len(), 2500);
    }
}

/// Restoring persisted bans at start (`BanBook::open` then `install`, as `portsentry run` does)
/// against real maps: every unexpired ban reaches the kernel with its prefilter bit, an entry
/// the kernel holds already keeps its drop counter, expired records stay out, a full table
/// refuses the rest by name, and the writes go in batches.
mod restore {
    use std::{
        net::IpAddr,
        time::{Duration, Instant},
    };

    use portsentry::{
        bans::{BanBook, BanRecord, Origin, Saved, StateStore, Trigger},
        clock::{self, Now},
        dataplane::{Dataplane, LoadOptions},
        net::cidr::Cidr,
    };
    use portsentry_common::{BanEntry, IpProto, ScanType};
    use portsentry_tests::lab::TempDir;

    /// The n-th restored address: 10.0.0.1 on, in order.
    fn addr(n: u32) -> IpAddr {
        IpAddr::from(std::net::Ipv4Addr::from((10u32 << 24) + 1 + n))
    }

    /// `n` detected bans saved an hour ago for a day, then `expired` that ended a minute ago.
    fn saved(n: u32, expired: u32) -> Saved {
        let now = clock::unix_ms();
        let record = |i: u32, expires_ms| BanRecord {
            target: Cidr::host(addr(i)),
            origin: Origin::Detected,
            shadow: false,
            since_ms: now - 3_600_000,
            expires_ms: Some(expires_ms),
            trigger: Trigger::from_kernel(IpProto::Tcp as u8, 111, ScanType::TcpSyn as u8),
            fleet: None,
            drops: 0,
            unverified: false,
        };
        Saved {
            bans: (0..n)
                .map(|i| record(i, now + 86_400_000))
                .chain((n..n + expired).map(|i| record(i, now - 60_000)))
                .collect(),
            ..Saved::default()
        }
    }

    fn load(capacity: u32, batch_ops: bool) -> Dataplane {
        let mut dp = Dataplane::load(&LoadOptions {
            max_bans: Some(capacity),
            ..LoadOptions::default()
        })
        .expect("loading the XDP object (run with `cargo xtask test`)");
        dp.set_batch_ops(batch_ops);
        dp
    }

    /// The kernel's own entry for `addr` (its ban from before the restart): 7 drops so far.
    fn held_entry() -> BanEntry {
        BanEntry {
            origin: Origin::Detected as u8,
            drops: 7,
            ..Default::default()
        }
    }

    /// A table with room for 3000 and 3500 saved bans (one of them held by the kernel already,
    /// 100 more expired): batched and one at a time (forced), the same outcome.
    #[test]
    fn restored_bans_reach_the_kernel_and_a_full_table_refuses_the_rest() {
        const CAPACITY: u32 = 3000;
        const SAVED: u32 = 3500;
        for batch_ops in [true, false] {
            let how = if batch_ops { "batch" } else { "one by one" };
            let dir = TempDir::new("restore-full").unwrap();
            let mut dp = load(CAPACITY, batch_ops);
            let held = addr(SAVED - 1);
            dp.insert_ban(held, &held_entry()).unwrap();
            let now = Now::read();
            let (mut book, opened) = BanBook::open(
                StateStore::new(&dir.path),
                saved(SAVED, 100),
                Some(&dp),
                None,
                true,
                &now,
            )
            .unwrap();
            assert_eq!(
                (opened.from_file, opened.expired, opened.in_kernel),
                (SAVED as usize, 100, 1),
                "{how}"
            );
            let refused = book.install(&mut dp, &now).unwrap();
            assert_eq!(
                dp.batch_ops(),
                batch_ops,
                "{how}: this kernel has batch operations"
            );
            let in_kernel = dp.bans().unwrap();
            assert_eq!(
                in_kernel.len(),
                CAPACITY as usize,
                "{how}: the table is full"
            );
            assert_eq!(
                refused.len(),
                (SAVED - CAPACITY) as usize,
                "{how}: the rest are refused"
            );
            for (a, e) in &in_kernel {
                assert!(dp.filter_bit(*a).unwrap(), "{how}: {a} has no filter bit");
                assert!(
                    !refused.contains(&Cidr::host(*a)),
                    "{how}: {a} refused and written"
                );
                if *a != held {
                    assert_eq!(e.origin, Origin::Restored as u8, "{how}: {a}");
                }
            }
            assert_eq!(
                dp.ban(held).unwrap().map(|e| e.drops),
                Some(7),
                "{how}: the kernel's entry is kept with its drop counter"
            );
            for i in SAVED..SAVED + 100 {
                assert!(
                    dp.ban(addr(i)).unwrap().is_none(),
                    "{how}: expired {} written",
                    addr(i)
                );
            }
        }
    }

    /// System CPU time of this thread so far (`/proc/thread-self/stat`, clock ticks of 10 ms):
    /// what the kernel spent on its calls, whatever the build profile does in user space.
    fn system_time() -> Duration {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        // Fields after the command name: state is field 3, stime field 15.
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let ticks: u64 = after.split(' ').nth(12).unwrap().parse().unwrap();
        Duration::from_millis(ticks * 10)
    }

    /// A million bans, as `cargo xtask bench --only scale` restores at start: all in the
    /// kernel with their prefilter bits, written in batches. The kernel's time for the writes
    /// (system CPU time) is at most half that of the same entries written one insert each, the
    /// way the restore went before (measured on a second table of the same size).
    #[test]
    fn a_million_restored_bans_are_written_in_batches() {
        const N: u32 = 1_000_000;
        const CAPACITY: u32 = N + N / 8;
        let dir = TempDir::new("restore-million").unwrap();
        let now = Now::read();

        let mut reference = load(CAPACITY, true);
        let (book, _) = BanBook::open(
            StateStore::new(&dir.path),
            saved(N, 0),
            None,
            None,
            true,
            &now,
        )
        .unwrap();
        let records: Vec<&BanRecord> = book.records().collect();
        let keys: Vec<_> = records.iter().map(|r| r.target.key()).collect();
        let (t, sys) = (Instant::now(), system_time());
        reference.set_filter_bits(&keys).unwrap();
        for r in &records {
            assert!(reference
                .insert_new_ban(r.target.addr, &r.to_entry(&now, r.drops))
                .unwrap());
        }
        let one_by_one = (t.elapsed(), system_time() - sys);
        drop(records);
        drop(book);
        drop(reference);

        let mut dp = load(CAPACITY, true);
        let (mut book, opened) = BanBook::open(
            StateStore::new(&dir.path),
            saved(N, 1000),
            Some(&dp),
            None,
            true,
            &now,
        )
        .unwrap();
        assert_eq!((opened.from_file, opened.expired), (N as usize, 1000));
        let (t, sys) = (Instant::now(), system_time());
        let refused = book.install(&mut dp, &now).unwrap();
        let batched = (t.elapsed(), system_time() - sys);
        eprintln!(
            "restoring {N} bans: install {:?} ({:?} in the kernel); one insert each {:?} ({:?})",
            batched.0, batched.1, one_by_one.0, one_by_one.1
        );
        assert!(refused.is_empty(), "{} refused", refused.len());
        assert!(dp.batch_ops(), "this kernel has batch operations");
        assert_eq!(dp.ban_keys().unwrap().len(), N as usize);
        for i in (0..N).step_by(997) {
            assert!(
                dp.filter_bit(addr(i)).unwrap(),
                "{} has no filter bit",
                addr(i)
            );
            let e = dp.ban(addr(i)).unwrap();
            assert!(
                e.is_some_and(|e| e.origin == Origin::Restored as u8),
                "{} not restored: {e:?}",
                addr(i)
            );
        }
        assert!(
            batched.1 * 2 <= one_by_one.1,
            "restoring {N} bans took {:?} of kernel time, one insert each {:?}: not batched",
            batched.1,
            one_by_one.1
        );
    }
}
