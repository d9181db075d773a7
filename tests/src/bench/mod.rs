//! `cargo xtask bench`: every figure is the median of several repetitions, with min and max, and
//! where it has one, a ratio against a baseline measured in the same run.
//!
//! Sections: data-plane cost per packet (BPF_PROG_TEST_RUN), flood drop cost over veth
//! (trafgen), leak after detection (nmap), scale and start-up, fleet decisions at scale (a fake
//! LAPI).

pub mod charts;
pub mod dataplane;
pub mod fleet;
pub mod flood;
pub mod leak;
pub mod scale;
pub mod xdp_filter;

use std::{fmt::Write as _, path::Path, time::Instant};

use anyhow::{Context, Result};
use serde_json::json;

/// How much work a run does.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    pub quick: bool,
    /// Repetitions per figure.
    pub reps: usize,
}

impl Plan {
    pub fn new(quick: bool) -> Self {
        Self {
            quick,
            reps: if quick { 3 } else { 7 },
        }
    }
}

/// One measured figure.
#[derive(Clone, Debug)]
pub struct Figure {
    pub section: &'static str,
    pub name: String,
    pub unit: &'static str,
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// Name and median of the baseline this figure is divided by.
    pub baseline: Option<(String, f64)>,
    /// What the issue asks for, as text (e.g. "≤ 2.0×").
    pub target: Option<String>,
    /// Whether the target is met (`None`: no target).
    pub met: Option<bool>,
}

impl Figure {
    pub fn new(
        section: &'static str,
        name: impl Into<String>,
        unit: &'static str,
        samples: &[f64],
    ) -> Self {
        let (median, min, max) = summarize(samples);
        Self {
            section,
            name: name.into(),
            unit,
            median,
            min,
            max,
            baseline: None,
            target: None,
            met: None,
        }
    }

    pub fn against(mut self, baseline: &Figure) -> Self {
        self.baseline = Some((baseline.name.clone(), baseline.median));
        self
    }

    /// The same samples under another name (a second row against another baseline).
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    pub fn ratio(&self) -> Option<f64> {
        self.baseline
            .as_ref()
            .and_then(|(_, b)| (*b > 0.0).then(|| self.median / b))
    }

    /// Target on the ratio (or on the median when there is no baseline): at most `limit`.
    pub fn at_most(mut self, limit: f64, text: &str) -> Self {
        let v = self.ratio().unwrap_or(self.median);
        self.target = Some(text.to_owned());
        self.met = Some(v <= limit);
        self
    }
}

/// (median, min, max); NaN for no samples.
pub fn summarize(samples: &[f64]) -> (f64, f64, f64) {
    let mut v: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    let median = if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    };
    (median, v[0], v[v.len() - 1])
}

fn num(x: f64) -> String {
    if !x.is_finite() {
        "n/a".into()
    } else if x.abs() >= 1000.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// The markdown table printed on stdout and copied into docs/BENCHMARKS.md.
pub fn table(figures: &[Figure]) -> String {
    let mut out = String::new();
    let mut section = "";
    for f in figures {
        if f.section != section {
            section = f.section;
            let _ = writeln!(out, "\n### {section}\n");
            let _ = writeln!(
                out,
                "| figure | median | min | max | unit | baseline | ratio | target |"
            );
            let _ = writeln!(out, "|---|---:|---:|---:|---|---|---:|---|");
        }
        let baseline = f
            .baseline
            .as_ref()
            .map_or(String::new(), |(n, b)| format!("{n} ({})", num(*b)));
        let ratio = f.ratio().map_or(String::new(), |r| format!("{r:.2}×"));
        let target = match (&f.target, f.met) {
            (Some(t), Some(true)) => format!("{t} ✅"),
            (Some(t), Some(false)) => format!("{t} ❌ missed"),
            (Some(t), None) => t.clone(),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            f.name,
            num(f.median),
            num(f.min),
            num(f.max),
            f.unit,
            baseline,
            ratio,
            target
        );
    }
    out
}

/// `target/bench/results.json`: one object per figure.
pub fn write_json(figures: &[Figure], path: &Path, plan: Plan, machine: &str) -> Result<()> {
    let items: Vec<_> = figures
        .iter()
        .map(|f| {
            json!({
                "section": f.section,
                "name": f.name,
                "unit": f.unit,
                "median": f.median,
                "min": f.min,
                "max": f.max,
                "baseline": f.baseline.as_ref().map(|(n, _)| n.clone()),
                "baseline_median": f.baseline.as_ref().map(|(_, b)| *b),
                "ratio": f.ratio(),
                "target": f.target,
                "target_met": f.met,
            })
        })
        .collect();
    let doc = json!({ "quick": plan.quick, "repetitions": plan.reps, "machine": machine, "figures": items });
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, serde_json::to_string_pretty(&doc)?)
        .with_context(|| format!("writing {}", path.display()))
}

/// A progress line for long sections: `portsentry-bench: SECTION: what (i/n)`.
pub fn progress(section: &str, what: &str, i: usize, n: usize) {
    eprintln!("portsentry-bench: {section}: {what} ({i}/{n})");
}

/// Kernel, CPU model and count, for the report.
pub fn machine() -> String {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|r| r.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cpus = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    format!("Linux {}, {cpus} × {model}", kernel.trim())
}

/// Runs a closure and returns its result and wall time in seconds.
pub fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let t = Instant::now();
    let out = f();
    (out, t.elapsed().as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_ratios() {
        assert_eq!(summarize(&[3.0, 1.0, 2.0]), (2.0, 1.0, 3.0));
        assert_eq!(summarize(&[4.0, 1.0, 2.0, 3.0]), (2.5, 1.0, 4.0));
        assert!(summarize(&[]).0.is_nan());
        let base = Figure::new("s", "empty", "ns", &[10.0, 10.0]);
        let f = Figure::new("s", "pass", "ns", &[15.0, 30.0, 14.0])
            .against(&base)
            .at_most(2.0, "≤ 2.0×");
        assert_eq!(f.ratio(), Some(1.5));
        assert_eq!(f.met, Some(true));
        assert!(table(&[base, f])
            .contains("| pass | 15.0 | 14.0 | 30.0 | ns | empty (10.0) | 1.50× | ≤ 2.0× ✅ |"));
    }
}
