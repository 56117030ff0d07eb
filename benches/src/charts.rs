//! The report's SVG charts (plotters). Every chart is grouped bars: one group per scenario (or
//! percentile, or transfer mode), one bar per contender that ran there, each bar at the median of
//! the repetitions with a whisker from the lowest to the highest, and optional horizontal
//! reference lines (HAProxy's level, the crypto limit and the target). The legend sits beside
//! the plot, so it never covers a bar.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::report::Stat;

/// One chart's data.
pub struct Bars {
    pub caption: String,
    pub y_desc: String,
    /// Group labels, `\n` between the label's lines.
    pub groups: Vec<String>,
    /// Per series (a contender): its name and, per group, its figures where it ran.
    pub series: Vec<(String, Vec<Option<Stat>>)>,
    /// Horizontal reference lines: what each marks, and its height.
    pub lines: Vec<(String, f64)>,
}

impl Bars {
    /// Writes the chart to `path` and returns true; nothing (false) when no series has a figure.
    pub fn draw(&self, path: &Path) -> anyhow::Result<bool> {
        let series: Vec<&(String, Vec<Option<Stat>>)> = self.series.iter().filter(|(_, v)| v.iter().any(Option::is_some)).collect();
        if series.is_empty() || self.groups.is_empty() {
            return Ok(false);
        }
        let highest = series.iter().flat_map(|(_, v)| v.iter().flatten().map(|s| s.max.max(s.median)));
        let top = highest.chain(self.lines.iter().map(|l| l.1)).fold(0.0f64, f64::max).max(f64::MIN_POSITIVE) * 1.1;
        let groups = self.groups.len() as f64;
        let root = SVGBackend::new(path, (1200, 560)).into_drawing_area();
        root.fill(&WHITE)?;
        let (plot, legend) = root.split_horizontally(1000);
        let mut chart = ChartBuilder::on(&plot)
            .caption(&self.caption, ("sans-serif", 20))
            .margin(12)
            .y_label_area_size(64)
            .build_cartesian_2d(0f64..groups, -top * 0.1..top)?;
        let decimals = if top > 20.0 { 0 } else { 1 };
        chart.configure_mesh().disable_x_mesh().x_labels(0).y_desc(&self.y_desc).y_label_formatter(&|v| format!("{v:.decimals$}")).draw()?;
        let width = 0.8 / series.len() as f64;
        for (i, (name, values)) in series.iter().enumerate() {
            let color = color(name, i);
            let left = |g: usize| g as f64 + 0.1 + i as f64 * width;
            let bars = values.iter().enumerate().filter_map(|(g, v)| v.map(|s| (left(g), s)));
            chart.draw_series(bars.clone().map(|(x, s)| Rectangle::new([(x, 0.0), (x + width * 0.85, s.median)], color.filled())))?;
            let spread = bars.filter(|(_, s)| s.max > s.min).map(|(x, s)| (x + width * 0.425, s));
            chart.draw_series(spread.map(|(x, s)| PathElement::new(vec![(x, s.min), (x, s.max)], BLACK.stroke_width(1))))?;
        }
        let note = TextStyle::from(("sans-serif", 13).into_font()).pos(Pos::new(HPos::Right, VPos::Bottom));
        for (label, y) in &self.lines {
            chart.draw_series(std::iter::once(PathElement::new(vec![(0.0, *y), (groups, *y)], BLACK.mix(0.6).stroke_width(1))))?;
            chart.draw_series(std::iter::once(Text::new(label.clone(), (groups - 0.01, *y), note.clone())))?;
        }
        let below = TextStyle::from(("sans-serif", 13).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
        for (g, label) in self.groups.iter().enumerate() {
            let lines = label.lines().enumerate().map(|(l, text)| Text::new(text.to_string(), (g as f64 + 0.5, -top * (0.012 + 0.04 * l as f64)), below.clone()));
            chart.draw_series(lines)?;
        }
        for (i, (name, _)) in series.iter().enumerate() {
            let y = 60 + i as i32 * 24;
            legend.draw(&Rectangle::new([(8, y), (22, y + 14)], color(name, i).filled()))?;
            legend.draw(&Text::new(name.clone(), (30, y), ("sans-serif", 14)))?;
        }
        root.present()?;
        Ok(true)
    }
}

/// A scenario's name as a two-line label: `bulk-1m-c64` → `bulk` over `1m-c64`.
pub fn two_lines(name: &str) -> String {
    name.replacen('-', "\n", 1)
}

/// The same colour for a contender in every chart; others take the palette in turn.
fn color(name: &str, i: usize) -> RGBColor {
    const PALETTE: [RGBColor; 4] = [RGBColor(0xff, 0x7f, 0x0e), RGBColor(0x8c, 0x56, 0x4b), RGBColor(0xe3, 0x77, 0xc2), RGBColor(0xbc, 0xbd, 0x22)];
    match name {
        "lbd" | "lbd-xdp" | "userspace TLS, lbd's vCPU" => RGBColor(0x1f, 0x77, 0xb4),
        "lbd-raw" | "lbd-userspace" | "userspace TLS, whole guest" => RGBColor(0x9e, 0xc9, 0xe6),
        "lbd-ktls" | "kTLS, lbd's vCPU" => RGBColor(0x2c, 0xa0, 0x2c),
        "lbd-ktls-raw" | "kTLS, whole guest" => RGBColor(0x98, 0xdf, 0x8a),
        "haproxy" | "haproxy-tcp" => RGBColor(0xd6, 0x27, 0x28),
        "nginx" => RGBColor(0x94, 0x67, 0xbd),
        "tcp-proxy" => RGBColor(0x7f, 0x7f, 0x7f),
        _ => PALETTE[i % PALETTE.len()],
    }
}
