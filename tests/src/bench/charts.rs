//! The benchmark's headline comparisons as SVG charts (plotters), for docs/BENCHMARKS.md:
//! answers leaked after the trigger, CPU per dropped packet by filter, pass-path cost against
//! ban-table size, fleet ingest time against the number of decisions. Each chart is drawn from
//! the figures of the same run; a chart whose figures the run did not measure (`--only`) is
//! left as it was.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use plotters::prelude::*;

use super::Figure;

/// One horizontal bar: median with a min–max whisker.
struct Bar {
    label: String,
    series: usize,
    median: f64,
    min: f64,
    max: f64,
}

const COLOURS: [RGBColor; 4] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0x7f, 0x7f, 0x7f),
];

/// Draws every chart the figures allow into `dir`; returns the files written.
pub fn draw_all(figures: &[Figure], dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    let mut draw = |name: &str, title: &str, unit: &str, series: &[&str], bars: Vec<Bar>| {
        if bars.is_empty() {
            return Ok::<(), anyhow::Error>(());
        }
        let path = dir.join(name);
        bar_chart(&path, title, unit, series, &bars)?;
        written.push(path);
        Ok(())
    };

    // Answers a scanner got after the trigger: portsentry against the classic architecture.
    let leak: Vec<Bar> = figures
        .iter()
        .filter(|f| f.name.ends_with(": answers after trigger"))
        .enumerate()
        .map(|(i, f)| {
            bar(
                f,
                f.name.trim_end_matches(": answers after trigger"),
                i.min(1),
            )
        })
        .collect();
    draw(
        "leak.svg",
        "Answers leaked to an nmap -sS -p- scan after the trigger",
        "packets",
        &["portsentry", "classic (detect, then a firewall rule)"],
        leak,
    )?;

    // Softirq CPU per dropped packet, by filter, on both flood paths.
    let mut flood = Vec::new();
    for (series, path) in ["skb path", "frame path"].iter().enumerate() {
        for f in figures
            .iter()
            .filter(|f| f.section.contains(path) && f.name.ends_with(": softirq CPU"))
        {
            flood.push(bar(f, f.name.trim_end_matches(": softirq CPU"), series));
        }
    }
    draw(
        "flood-cpu.svg",
        "Softirq CPU per dropped packet, by filter (trafgen flood over veth)",
        "ns/packet",
        &["skb path", "frame path (XDP_REDIRECT)"],
        flood,
    )?;

    // Kernel-timed per-packet cost against the size of the ban table, grouped by size.
    let kernel_timed = |name: &str| {
        figures
            .iter()
            .find(|f| f.name == name && !f.name.contains("wall clock"))
    };
    let sizes: Vec<&str> = figures
        .iter()
        .filter_map(|f| f.name.strip_prefix("pass path, "))
        .filter(|size| !size.starts_with("wall clock"))
        .collect();
    let mut pass = Vec::new();
    for size in sizes {
        let rows = [
            (format!("pass path, {size}"), "pass path"),
            (format!("banned-drop path, {size}"), "banned-drop path"),
            (format!("empty XDP program ({size})"), "empty XDP program"),
        ];
        for (series, (name, what)) in rows.iter().enumerate() {
            if let Some(f) = kernel_timed(name) {
                pass.push(bar(f, &format!("{size} — {what}"), series));
            }
        }
    }
    draw(
        "pass-path.svg",
        "Per-packet cost against ban-table size (BPF_PROG_TEST_RUN)",
        "ns/packet",
        &["pass path", "banned-drop path", "empty XDP program"],
        pass,
    )?;

    // Fleet ingest time against the number of decisions.
    let ingest: Vec<Bar> = figures
        .iter()
        .filter(|f| f.name.starts_with("fleet ingest: ") && f.name.ends_with(" decisions applied"))
        .map(|f| {
            let n = f.name["fleet ingest: ".len()..].trim_end_matches(" decisions applied");
            bar(f, &format!("{n} decisions"), 0)
        })
        .collect();
    draw(
        "fleet-ingest.svg",
        "Time to apply CrowdSec decisions from one LAPI pull",
        "s",
        &["portsentry"],
        ingest,
    )?;
    Ok(written)
}

/// Figures read back from a `results.json`, to redraw the charts of a past run.
pub fn figures_from_json(path: &Path) -> Result<Vec<Figure>> {
    let text = std::fs::read_to_string(path)?;
    let doc: serde_json::Value = serde_json::from_str(&text)?;
    let items = doc["figures"]
        .as_array()
        .ok_or_else(|| anyhow!("{}: no `figures` list", path.display()))?;
    let num = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or(0.0);
    Ok(items
        .iter()
        .map(|v| {
            // A one-shot tool: the few section names live for the rest of the process.
            let section: &'static str = Box::leak(
                v["section"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
                    .into_boxed_str(),
            );
            let mut f = Figure::new(
                section,
                v["name"].as_str().unwrap_or_default(),
                "",
                &[num(v, "median")],
            );
            f.min = num(v, "min");
            f.max = num(v, "max");
            f
        })
        .collect())
}

fn bar(f: &Figure, label: &str, series: usize) -> Bar {
    Bar {
        label: label.to_owned(),
        series,
        median: f.median,
        min: f.min,
        max: f.max,
    }
}

/// Horizontal bars, one row per bar, coloured by series, with a legend and min–max whiskers.
fn bar_chart(path: &Path, title: &str, unit: &str, series: &[&str], bars: &[Bar]) -> Result<()> {
    let rows = bars.len();
    let height = 90 + 26 * u32::try_from(rows).unwrap_or(40) + 30;
    let root = SVGBackend::new(path, (960, height)).into_drawing_area();
    let err = |e: &dyn std::fmt::Display| anyhow!("drawing {}: {e}", path.display());
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let top = bars
        .iter()
        .map(|b| b.max.max(b.median))
        .fold(0.0_f64, f64::max)
        .max(1e-9)
        * 1.15;
    let labels: Vec<String> = bars.iter().map(|b| b.label.clone()).collect();
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(380)
        .build_cartesian_2d(0.0..top, (0..rows).into_segmented())
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_desc(unit)
        .y_labels(rows)
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => labels.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .draw()
        .map_err(|e| err(&e))?;
    for (s, name) in series.iter().enumerate() {
        let colour = COLOURS[s % COLOURS.len()];
        let mine: Vec<(usize, &Bar)> = bars
            .iter()
            .enumerate()
            .filter(|(_, b)| b.series == s)
            .collect();
        if mine.is_empty() {
            continue;
        }
        chart
            .draw_series(mine.iter().map(|(i, b)| {
                Rectangle::new(
                    [
                        (0.0, SegmentValue::Exact(*i)),
                        (b.median, SegmentValue::Exact(*i + 1)),
                    ],
                    colour.mix(0.8).filled(),
                )
            }))
            .map_err(|e| err(&e))?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], colour.filled()));
        chart
            .draw_series(mine.iter().map(|(i, b)| {
                PathElement::new(
                    vec![
                        (b.min, SegmentValue::CenterOf(*i)),
                        (b.max, SegmentValue::CenterOf(*i)),
                    ],
                    BLACK.stroke_width(2),
                )
            }))
            .map_err(|e| err(&e))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK.mix(0.3))
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fig(section: &'static str, name: &str, median: f64) -> Figure {
        Figure::new(
            section,
            name,
            "ns/packet",
            &[median * 0.9, median, median * 1.2],
        )
    }

    #[test]
    fn each_chart_shows_its_figures_and_missing_ones_are_skipped() {
        let dir = std::env::temp_dir().join(format!("portsentry-charts-{}", std::process::id()));
        let figures = vec![
            fig("Leak", "portsentry block mode: answers after trigger", 0.0),
            fig(
                "Leak",
                "classic: detect + run_cmd nft rule: answers after trigger",
                1287.0,
            ),
            fig(
                "Flood drop cost, skb path",
                "portsentry XDP drop: softirq CPU",
                334.0,
            ),
            fig(
                "Flood drop cost, frame path",
                "portsentry XDP drop: softirq CPU",
                492.0,
            ),
            fig("Data-plane", "pass path, 1 M bans", 35.0),
            fig("Data-plane", "empty XDP program (1 M bans)", 5.0),
            fig("Data-plane", "pass path, wall clock, 1 M bans", 99.0),
        ];
        let written = draw_all(&figures, &dir).unwrap();
        let names: Vec<String> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            ["leak.svg", "flood-cpu.svg", "pass-path.svg"],
            "no ingest figures, no chart"
        );
        let svg = |n: &str| std::fs::read_to_string(dir.join(n)).unwrap();
        assert!(svg("leak.svg").contains("classic: detect + run_cmd nft rule"));
        assert!(svg("flood-cpu.svg").contains("frame path (XDP_REDIRECT)"));
        let pass = svg("pass-path.svg");
        assert!(
            pass.contains("1 M bans — pass path") && pass.contains("1 M bans — empty XDP program"),
            "{pass}"
        );
        assert!(!pass.contains("wall clock"), "kernel-timed figures only");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
