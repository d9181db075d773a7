//! Leak after detection: `nmap -sS -p- --min-rate 20000` against 5 real services, counting
//! answers to probes sent after the scanner's first trap probe, for (a) portsentry in block mode
//! and (b) the classic PortSentry architecture rebuilt from our parts: detect-only mode plus a
//! `run_cmd` hook that inserts an nftables drop rule. Same lab, same scanner, same run.

use std::{collections::BTreeSet, io::Write, process::Stdio};

use anyhow::{bail, Result};
use portsentry::config::settings::{Mode, CLASSIC_TCP_PORTS};

use super::{Figure, Plan};
use crate::{
    case, fullscan,
    lab::{sock, DaemonArgs, Lab, TempDir},
};

const SECTION: &str = "Leak after detection (nmap -sS -p- --min-rate 20000, 5 services)";
const SERVICES: [u16; 5] = [22, 80, 443, 3306, 8080];

fn config(lab: &Lab, dir: &TempDir, detect_with_nft_hook: bool) -> String {
    let nft = which("nft").unwrap_or_else(|| "/usr/sbin/nft".into());
    let mut s = case::settings(lab, dir);
    s.startup.state_dir = dir.join("state");
    s.live.tcp_ports = case::ports(CLASSIC_TCP_PORTS);
    if detect_with_nft_hook {
        s.live.mode = Mode::Detect;
        s.live.hooks.run_cmd_always = true;
        s.live.hooks.run_cmd = Some(
            [
                nft.as_str(),
                "add",
                "rule",
                "inet",
                "psbench",
                "input",
                "ip",
                "saddr",
                "$TARGET$",
                "drop",
            ]
            .map(str::to_owned)
            .to_vec(),
        );
    }
    dir.write(
        if detect_with_nft_hook {
            "classic.toml"
        } else {
            "block.toml"
        },
        &case::config_text(&s),
    )
}

fn which(program: &str) -> Option<String> {
    ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        .iter()
        .map(|d| format!("{d}/{program}"))
        .find(|p| std::path::Path::new(p).exists())
}

pub fn run(plan: Plan) -> Result<Vec<Figure>> {
    let reps = if plan.quick { 1 } else { 3 };
    let lab = Lab::new(1 + 2 * reps)?;
    let dir = TempDir::new("bench-leak")?;
    let _services: Vec<_> = SERVICES
        .iter()
        .map(|p| lab.protected.tcp_service(sock(lab.protected_v4, *p)))
        .collect();
    let traps: BTreeSet<u16> = CLASSIC_TCP_PORTS
        .split(',')
        .filter_map(|p| p.parse().ok())
        .collect();
    let mut nft = lab
        .protected
        .command("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = nft.stdin.take() {
        stdin.write_all(b"table inet psbench {\n chain input {\n  type filter hook input priority 0; policy accept;\n }\n}\n")?;
    }
    if !nft.wait()?.success() {
        bail!("creating the nftables table for the classic setup failed");
    }

    let (mut block_leaks, mut classic_leaks, mut block_open, mut classic_open) =
        (vec![], vec![], vec![], vec![]);
    let mut scanner = 1;
    for rep in 0..reps {
        super::progress("leak", "repetition", rep + 1, reps);
        for classic in [false, true] {
            let cfg = config(&lab, &dir, classic);
            // `--config` is global: after `run` it means the same as before it.
            let mut d = DaemonArgs::new(&lab).config(&cfg).start()?;
            let src = lab.scanner_v4[scanner];
            scanner += 1;
            let r = fullscan::scan(&lab, &dir, src, &traps);
            if !r.trap_probed || r.probes < 1000 {
                bail!(
                    "the scan from {src} did not run ({} probes):\n{}",
                    r.probes,
                    d.output()
                );
            }
            if !d.has_line(|l| l.contains(&format!("Scan from: [{src}]"))) {
                bail!("the scan from {src} was not detected:\n{}", d.output());
            }
            eprintln!(
                "bench: leak, {}: {} probes, {} answers, {} leaked, open {:?}",
                if classic {
                    "detect + nft hook"
                } else {
                    "block"
                },
                r.probes,
                r.answers,
                r.leaked,
                r.open
            );
            if classic {
                classic_leaks.push(r.leaked as f64);
                classic_open.push(r.open.len() as f64);
            } else {
                block_leaks.push(r.leaked as f64);
                block_open.push(r.open.len() as f64);
            }
            d.stop()?;
        }
    }
    let classic = Figure::new(
        SECTION,
        "classic: detect + run_cmd nft rule: answers after trigger",
        "packets",
        &classic_leaks,
    );
    let mut block = Figure::new(
        SECTION,
        "portsentry block mode: answers after trigger",
        "packets",
        &block_leaks,
    );
    block.target = Some("= 0".into());
    block.met = Some(block.max == 0.0);
    Ok(vec![
        block,
        classic,
        Figure::new(
            SECTION,
            "portsentry block mode: open ports nmap reported",
            "ports",
            &block_open,
        ),
        Figure::new(
            SECTION,
            "classic: open ports nmap reported",
            "ports",
            &classic_open,
        ),
    ])
}
