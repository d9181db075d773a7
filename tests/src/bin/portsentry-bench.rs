//! `cargo xtask bench [--quick] [--only SECTION]`: runs the benchmarks, prints a markdown table
//! and writes `target/bench/results.json`. Needs root (XDP, network namespaces).

use std::{path::PathBuf, process::ExitCode};

use portsentry_tests::bench::{self, dataplane, fleet, flood, leak, scale, Plan};

/// One benchmark section: it returns its figures or the reason it could not run.
type Section<'a> = Box<dyn Fn() -> anyhow::Result<Vec<bench::Figure>> + 'a>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let only: Vec<&str> = args
        .iter()
        .zip(args.iter().skip(1))
        .filter(|(a, _)| *a == "--only")
        .map(|(_, v)| v.as_str())
        .collect();
    let wanted = |name: &str| only.is_empty() || only.contains(&name);
    // `--charts-from results.json`: redraw the charts of a past run, measure nothing.
    if let Some(from) = args
        .iter()
        .position(|a| a == "--charts-from")
        .and_then(|i| args.get(i + 1))
    {
        let dir = std::env::var_os("PORTSENTRY_BENCH_CHARTS")
            .map_or_else(|| PathBuf::from("docs/bench"), PathBuf::from);
        return match bench::charts::figures_from_json(std::path::Path::new(from))
            .and_then(|f| bench::charts::draw_all(&f, &dir))
        {
            Ok(files) => {
                for f in files {
                    eprintln!("portsentry-bench: drew {}", f.display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("portsentry-bench: error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let plan = Plan::new(quick);
    let Some(baseline) = std::env::var_os("PORTSENTRY_BASELINE_OBJECT").map(PathBuf::from) else {
        eprintln!("portsentry-bench: PORTSENTRY_BASELINE_OBJECT is not set: run it with `cargo xtask bench`");
        return ExitCode::from(2);
    };
    // The frame-path forwarder is built next to the baseline.
    let forward = std::env::var_os("PORTSENTRY_FORWARD_OBJECT")
        .map_or_else(|| baseline.with_file_name("forward"), PathBuf::from);
    let out = std::env::var_os("PORTSENTRY_BENCH_OUT")
        .map_or_else(|| PathBuf::from("target/bench/results.json"), PathBuf::from);
    // Charts go next to the results unless xtask points them at docs/bench.
    let charts_dir = std::env::var_os("PORTSENTRY_BENCH_CHARTS")
        .map_or_else(|| out.with_file_name("charts"), PathBuf::from);

    let machine = bench::machine();
    eprintln!(
        "portsentry-bench: {} run, {} repetitions per figure, on {machine}",
        if quick { "quick" } else { "full" },
        plan.reps
    );
    let mut figures = Vec::new();
    let mut failed = false;
    let sections: [(&str, Section); 5] = [
        ("dataplane", Box::new(|| dataplane::run(plan, &baseline))),
        ("flood", Box::new(|| flood::run(plan, &forward))),
        ("leak", Box::new(|| leak::run(plan))),
        ("scale", Box::new(|| scale::run(plan))),
        ("fleet", Box::new(|| fleet::run(plan))),
    ];
    for (name, section) in sections.iter() {
        if !wanted(name) {
            continue;
        }
        eprintln!("portsentry-bench: {name}: running…");
        let (result, secs) = bench::timed(section);
        match result {
            Ok(f) => {
                eprintln!(
                    "portsentry-bench: {name}: {} figures in {secs:.1} s",
                    f.len()
                );
                figures.extend(f);
            }
            Err(e) => {
                eprintln!("portsentry-bench: error: {name}: {e:#}");
                failed = true;
            }
        }
    }
    println!("{}", bench::table(&figures));
    println!("Machine: {machine}. Each figure: median of the repetitions, with min and max; ratio = median ÷ baseline median from the same run.");
    if let Err(e) = bench::write_json(&figures, &out, plan, &machine) {
        eprintln!("portsentry-bench: error: {e:#}");
        failed = true;
    } else {
        eprintln!("portsentry-bench: wrote {}", out.display());
    }
    match bench::charts::draw_all(&figures, &charts_dir) {
        Ok(files) => {
            for f in files {
                eprintln!("portsentry-bench: drew {}", f.display());
            }
        }
        Err(e) => {
            eprintln!("portsentry-bench: error: charts: {e:#}");
            failed = true;
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
