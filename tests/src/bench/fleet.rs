//! Fleet at scale: a fake LAPI (`fakelapi`) serves N Ip decisions at start; measured are the
//! seconds from the answer's last byte to the daemon's summary line (parse + apply), a probe's
//! ban-line latency and SIGTERM's time to exit while 100 k are applied, and the RSS afterwards.

use std::{
    net::IpAddr,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use super::{Figure, Plan};
use crate::{
    case::{self, TRAP},
    fakelapi::{decisions_body, FakeLapi},
    lab::{sock, Daemon, DaemonArgs, Lab, TempDir},
};

const SECTION: &str = "Fleet at scale";
const APPLYING: &str = "portsentry: crowdsec: applying the full decision list";
const SUMMARY: &str = "portsentry: crowdsec: full decision list";

fn label(n: usize) -> String {
    if n >= 1_000_000 {
        format!("{} M", n / 1_000_000)
    } else {
        format!("{} k", n / 1000)
    }
}

/// A daemon in `lab` pulling from a fake LAPI that serves `body`.
fn start(
    lab: &Lab,
    dir: &TempDir,
    tag: &str,
    n: usize,
    body: Vec<u8>,
) -> Result<(Daemon, FakeLapi)> {
    let lapi = FakeLapi::start(&lab.protected, body)?;
    let key = dir.write_secret(&format!("{tag}.key"), "fake-key\n");
    let state = dir.join(tag);
    let mut s = case::fleet_settings(lab, dir, &lapi.url);
    s.startup.state_dir = state;
    s.live.tcp_ports = case::ports("");
    s.live.udp_ports = case::ports(&TRAP.to_string());
    s.startup.max_bans = u32::try_from(n + n / 8 + 1024)?;
    let crowdsec = case::crowdsec(&mut s);
    crowdsec.api_key_file = Some(key.into());
    crowdsec.max_decisions = n.max(1000);
    let config = dir.write(&format!("{tag}.toml"), &case::config_text(&s));
    let d = DaemonArgs::new(lab)
        .config(&config)
        .ready_within(Duration::from_secs(60))
        .start()?;
    Ok((d, lapi))
}

/// Polls `d` for a line every 2 ms (finer than `wait_for_line`); when it was seen.
fn line_seen(d: &Daemon, pred: impl Fn(&str) -> bool, timeout: Duration) -> Option<Instant> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if d.has_line(&pred) {
            return Some(Instant::now());
        }
        thread::sleep(Duration::from_millis(2));
    }
    None
}

/// Seconds from the LAPI answer to the summary line for `n` decisions.
fn ingest(lab: &Lab, dir: &TempDir, tag: &str, n: usize, body: &[u8]) -> Result<(f64, Daemon)> {
    let (d, lapi) = start(lab, dir, tag, n, body.to_vec())?;
    let served = lapi
        .wait_startup_served(Duration::from_secs(60))
        .context("the daemon never pulled")?;
    let expected = format!("{SUMMARY}: {n} banned");
    let Some(done) = line_seen(&d, |l| l.starts_with(&expected), Duration::from_secs(300)) else {
        bail!("{n} decisions not applied:\n{}", d.output());
    };
    Ok((done.duration_since(served).as_secs_f64(), d))
}

pub fn run(plan: Plan) -> Result<Vec<Figure>> {
    let lab = Lab::new(if plan.quick { 40 } else { 80 })?;
    let dir = TempDir::new("bench-fleet")?;
    let mut figures = Vec::new();

    let sizes: &[usize] = &[10_000, 100_000, 1_000_000];
    let mut rss_100k = Vec::new();
    for &n in sizes {
        let body = decisions_body(n, "4h");
        let reps = match (plan.quick, n >= 1_000_000) {
            (true, true) => 1,
            (false, true) => 2,
            (true, false) => 2,
            (false, false) => 3,
        };
        let mut secs = Vec::new();
        for r in 0..reps {
            let (s, mut d) = ingest(&lab, &dir, &format!("n{n}-{r}"), n, &body)?;
            secs.push(s);
            if n == 100_000 {
                thread::sleep(Duration::from_millis(500));
                rss_100k.push(d.rss_kib().unwrap_or(0) as f64 / 1024.0);
            }
            // The big state file is not what this measures.
            d.kill9();
        }
        let limit = if n >= 1_000_000 { 10.0 } else { 2.0 };
        figures.push(
            Figure::new(
                SECTION,
                format!("fleet ingest: {} decisions applied", label(n)),
                "s",
                &secs,
            )
            .at_most(limit, &format!("< {limit} s")),
        );
    }

    // Probes during a 100 k ingest: one UDP probe every 50 ms from a new source, from the
    // answer until the summary; latency = probe sent → its ban line.
    let n = 100_000;
    let body = decisions_body(n, "4h");
    let mut latencies = Vec::new();
    let reps = if plan.quick { 1 } else { 2 };
    let sources: Vec<IpAddr> = lab.scanner_v4.iter().skip(1).copied().collect();
    let per_rep = sources.len() / reps;
    for r in 0..reps {
        let (d, lapi) = start(&lab, &dir, &format!("probe-{r}"), n, body.clone())?;
        let served = lapi
            .wait_startup_served(Duration::from_secs(60))
            .context("the daemon never pulled")?;
        for (i, src) in sources[r * per_rep..(r + 1) * per_rep].iter().enumerate() {
            let at = served + Duration::from_millis(50) * i as u32;
            thread::sleep(at.saturating_duration_since(Instant::now()));
            if d.has_line(|l| l.starts_with(SUMMARY)) {
                break;
            }
            let sent = Instant::now();
            lab.scanner.udp_send(*src, sock(lab.protected_v4, TRAP));
            let needle = format!("attackalert: Host {src} has been blocked via XDP drop");
            let Some(seen) = line_seen(&d, |l| l.starts_with(&needle), Duration::from_secs(30))
            else {
                bail!("no ban line for {src}:\n{}", d.output());
            };
            // Only probes answered before the summary were logged during the ingest.
            if !d.has_line(|l| l.starts_with(SUMMARY)) {
                latencies.push(seen.duration_since(sent).as_secs_f64() * 1000.0);
            }
        }
        if line_seen(&d, |l| l.starts_with(SUMMARY), Duration::from_secs(60)).is_none() {
            bail!("100 k decisions not applied:\n{}", d.output());
        }
    }
    if latencies.is_empty() {
        bail!("no probe was logged while the decisions were applied");
    }
    figures.push(
        Figure::new(
            SECTION,
            format!(
                "probe log latency during 100 k ingest ({} probes)",
                latencies.len()
            ),
            "ms",
            &latencies,
        )
        .at_most(100.0, "< 100 ms"),
    );

    // SIGTERM while 100 k are applied.
    let mut stops = Vec::new();
    for r in 0..plan.reps.min(3) {
        let (mut d, lapi) = start(&lab, &dir, &format!("term-{r}"), n, body.clone())?;
        lapi.wait_startup_served(Duration::from_secs(60))
            .context("the daemon never pulled")?;
        if line_seen(&d, |l| l.starts_with(APPLYING), Duration::from_secs(30)).is_none() {
            bail!("no line announcing the application:\n{}", d.output());
        }
        thread::sleep(Duration::from_millis(50));
        let t = Instant::now();
        d.stop()?;
        stops.push(t.elapsed().as_secs_f64());
    }
    figures.push(
        Figure::new(SECTION, "SIGTERM during 100 k ingest", "s", &stops).at_most(2.0, "< 2 s"),
    );
    figures.push(Figure::new(
        SECTION,
        "daemon RSS after 100 k decisions",
        "MiB",
        &rss_100k,
    ));
    Ok(figures)
}
