//! `chart BANDWIDTH.json OUTDIR`: one chart per release sequence from the bandwidth harness's
//! results (benches/bandwidth.py), `OUTDIR/bandwidth-<sequence>.svg`: for each scenario, the
//! bytes relsync and each other tool downloaded, as % of a full download, on a log scale. The
//! tools are the table's columns, in its order: zstd --patch-from, bsdiff, xdelta3, casync, bita,
//! zsync, HDiffPatch and Zucchini + xz (a bar is missing where a tool did not run).

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::Deserialize;

/// The parts of bandwidth.json the charts use.
#[derive(Debug, Deserialize)]
struct Results {
    /// The other tools, in column order.
    tools: Vec<String>,
    /// In table order.
    rows: Vec<Row>,
}

#[derive(Debug, Deserialize)]
struct Row {
    /// previous, behind or fresh.
    scenario: String,
    /// For `behind`: how many releases behind the newest the client was.
    #[serde(default)]
    behind: Option<u32>,
    /// The release sequence: ruff, numpy, synthetic.
    name: String,
    /// The installed version; none for a fresh install.
    old: Option<String>,
    new: String,
    /// Bytes of the full download.
    full: u64,
    /// Bytes relsync downloaded.
    wire: u64,
    /// Bytes each other tool downloaded; null where it was not run.
    tools: HashMap<String, Option<u64>>,
}

impl Row {
    fn label(&self) -> String {
        match (&self.old, self.scenario.as_str()) {
            (None, _) => format!("{} fresh install", self.new),
            (Some(old), "previous") => format!("{old} → {}", self.new),
            (Some(old), "behind") => match self.behind {
                Some(k) => format!("{old} → {} ({k} behind)", self.new),
                None => format!("{old} → {} (behind)", self.new),
            },
            (Some(old), scenario) => format!("{old} → {} ({scenario})", self.new),
        }
    }

    /// relsync's bytes, then each tool's, as % of the full download.
    fn percents(&self, tools: &[String]) -> Vec<Option<f64>> {
        let tool_bytes = tools.iter().map(|t| self.tools.get(t).copied().flatten());
        std::iter::once(Some(self.wire))
            .chain(tool_bytes)
            .map(|bytes| bytes.map(|b| 100.0 * b as f64 / self.full as f64))
            .collect()
    }
}

/// Tableau's ten colours; relsync gets the first.
const COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, outdir] = args.as_slice() else {
        bail!("usage: chart BANDWIDTH.json OUTDIR");
    };
    let json = std::fs::read_to_string(input).with_context(|| format!("reading {input}"))?;
    let results: Results =
        serde_json::from_str(&json).with_context(|| format!("parsing {input}"))?;
    std::fs::create_dir_all(outdir).with_context(|| format!("creating {outdir}"))?;
    let series: Vec<String> = std::iter::once("relsync".to_string())
        .chain(results.tools.iter().cloned())
        .collect();
    let mut names: Vec<&str> = Vec::new();
    for row in &results.rows {
        if !names.contains(&row.name.as_str()) {
            names.push(&row.name);
        }
    }
    for name in names {
        let rows: Vec<&Row> = results.rows.iter().filter(|r| r.name == name).collect();
        let path = Path::new(outdir).join(format!("bandwidth-{name}.svg"));
        draw(&path, name, &series, &rows).with_context(|| format!("drawing {}", path.display()))?;
        println!("{}", path.display());
    }
    Ok(())
}

/// A percentage as a bar or axis label: 361, 36, 3.0, 0.08.
fn short(percent: f64) -> String {
    match percent {
        p if p >= 10.0 => format!("{p:.0}"),
        p if p >= 1.0 => format!("{p:.1}"),
        p => format!("{p:.2}"),
    }
}

fn draw(path: &Path, name: &str, series: &[String], rows: &[&Row]) -> Result<()> {
    let values: Vec<Vec<Option<f64>>> = rows.iter().map(|r| r.percents(&series[1..])).collect();
    let positive = values.iter().flatten().flatten().filter(|&&v| v > 0.0);
    let (min, max) = positive.fold((f64::MAX, 0.0f64), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    if max == 0.0 {
        bail!("no bytes to draw");
    }
    // From a whole decade well below the smallest bar; room above the largest for its label.
    let y_range = 10f64.powf((min / 2.0).log10().floor())..max.max(100.0) * 4.0;
    // x counts half bars: each group is a bar wide margin, then its bars, two units each.
    let group = 2 * series.len() as i32 + 4;
    let groups = rows.len() as i32;
    let bar_x = |i: usize, j: usize| i as i32 * group + 2 + 2 * j as i32;
    let width = (groups as u32 * 160 + 260).max(800);
    let root = SVGBackend::new(path, (width, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let title = format!("{name}: bytes downloaded per scenario");
    let (plot, legend) = (root.titled(&title, ("sans-serif", 20))?).split_horizontally(width - 170);
    let centers = (0..groups).map(|i| i * group + group / 2).collect();
    let mut chart = ChartBuilder::on(&plot)
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(
            (0..groups * group).with_key_points(centers),
            y_range.clone().log_scale(),
        )?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_label_formatter(&|x| {
            rows.get((x / group) as usize)
                .map_or(String::new(), |r| r.label())
        })
        .y_desc("% of a full download (log scale)")
        .y_label_formatter(&|y| format!("{y:.*}", (-y.log10().floor()).max(0.0) as usize))
        .label_style(("sans-serif", 13))
        .draw()?;
    chart.draw_series(std::iter::once(PathElement::new(
        [(0, 100.0), (groups * group, 100.0)],
        BLACK.mix(0.4),
    )))?;

    let label_style = TextStyle::from(("sans-serif", 11).into_font())
        .transform(FontTransform::Rotate270)
        .pos(Pos::new(HPos::Left, VPos::Center));
    for (j, tool) in series.iter().enumerate() {
        let color = COLORS[j % COLORS.len()];
        let bars: Vec<(i32, f64)> = (values.iter().enumerate())
            .filter_map(|(i, v)| v[j].map(|v| (bar_x(i, j), v)))
            .collect();
        chart.draw_series(
            bars.iter()
                .map(|&(x, v)| Rectangle::new([(x, y_range.start), (x + 2, v)], color.filled())),
        )?;
        chart.draw_series(bars.iter().map(|&(x, v)| {
            Text::new(
                format!(" {}", short(v)),
                (x + 1, v.max(y_range.start)),
                label_style.clone(),
            )
        }))?;
        let y = 40 + 22 * j as i32;
        legend.draw(&Rectangle::new([(0, y), (12, y + 12)], color.filled()))?;
        legend.draw(&Text::new(tool.as_str(), (20, y), ("sans-serif", 13)))?;
    }
    root.present()?;
    Ok(())
}
