//! The report's pictures, as SVG strings: learning curves drawn with
//! `plotters`, and the Gantt chart of the schedule written as a `maud`
//! template (each bar is an SVG element with its own tooltip, which a chart
//! library's backend does not offer).
//!
//! Both escape the text they draw — `plotters` every label and attribute,
//! the template every spliced value — so the page can inline the SVG as
//! it is. The curves' labels are fixed strings and numbers anyway; the
//! Gantt chart's carry the run's row names and tooltips.

use maud::{html, Markup};
use plotters::prelude::*;

use crate::error::{Error, Result};

/// An sRGB colour.
pub type Rgb = (u8, u8, u8);

/// Distinct colours, readable on white, neighbours far apart in hue (models
/// next to each other in the grid differ in one hyper-parameter only, and
/// should not look alike).
const PALETTE: [Rgb; 20] = [
    (0x1f, 0x77, 0xb4),
    (0xff, 0x7f, 0x0e),
    (0x2c, 0xa0, 0x2c),
    (0xd6, 0x27, 0x28),
    (0x94, 0x67, 0xbd),
    (0x8c, 0x56, 0x4b),
    (0xe3, 0x77, 0xc2),
    (0x7f, 0x7f, 0x7f),
    (0xbc, 0xbd, 0x22),
    (0x17, 0xbe, 0xcf),
    (0x39, 0x3b, 0x79),
    (0xe6, 0x55, 0x0d),
    (0x63, 0x79, 0x39),
    (0xad, 0x49, 0x4a),
    (0x7b, 0x41, 0x73),
    (0x1b, 0x9e, 0x77),
    (0xe7, 0xba, 0x52),
    (0x84, 0x3c, 0x39),
    (0x6b, 0xae, 0xd6),
    (0xce, 0x6d, 0xbd),
];

/// The colour of model (or trainer) `i`: the palette, then golden-angle hues.
pub fn color(i: usize) -> Rgb {
    if let Some(c) = PALETTE.get(i) {
        return *c;
    }
    let h = (i as f64 * 137.507_764) % 360.0;
    hsl(h, 0.62, 0.45)
}

fn hsl(h: f64, s: f64, l: f64) -> Rgb {
    let c = (1.0 - (2.0 * l - 1.0).abs()) * s;
    let x = c * (1.0 - ((h / 60.0) % 2.0 - 1.0).abs());
    let m = l - c / 2.0;
    let (r, g, b) = match (h / 60.0) as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let to = |v: f64| ((v + m) * 255.0).round().clamp(0.0, 255.0) as u8;
    (to(r), to(g), to(b))
}

/// `#rrggbb`.
pub fn hex(c: Rgb) -> String {
    format!("#{:02x}{:02x}{:02x}", c.0, c.1, c.2)
}

/// Black or white, whichever reads better on `c`.
fn text_on(c: Rgb) -> &'static str {
    let lin = |v: u8| {
        let v = v as f64 / 255.0;
        if v <= 0.04045 {
            v / 12.92
        } else {
            ((v + 0.055) / 1.055).powf(2.4)
        }
    };
    let y = 0.2126 * lin(c.0) + 0.7152 * lin(c.1) + 0.0722 * lin(c.2);
    if y > 0.36 {
        "#111"
    } else {
        "#fff"
    }
}

/// One model's curve.
pub struct Series {
    /// Model id (picks the colour).
    pub model: usize,
    /// (epoch, value) points, epochs counted from 1.
    pub points: Vec<(f64, f64)>,
    /// Drawn thicker (the best model).
    pub bold: bool,
}

fn draw_err(e: impl std::fmt::Display) -> Error {
    Error::Chart(e.to_string())
}

/// Digits after the point that tell ticks `step` apart.
fn decimals(step: f64) -> usize {
    if !(step.is_finite() && step > 0.0) {
        return 2;
    }
    (-step.log10().floor()).clamp(0.0, 6.0) as usize
}

/// A line chart of one metric per epoch for every model.
pub fn curve_svg(
    title: &str,
    y_desc: &str,
    series: &[Series],
    epochs: usize,
    unit_range: bool,
) -> Result<String> {
    let values = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .filter(|v| v.is_finite());
    let (mut lo, mut hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    let pad = if hi > lo { (hi - lo) * 0.08 } else { 0.01 };
    lo -= pad;
    hi += pad;
    if unit_range {
        lo = lo.max(0.0);
        hi = hi.min(1.0);
    }
    let y_decimals = decimals((hi - lo) / 6.0);
    let e = epochs.max(1) as f64;
    let (x0, x1) = (1.0 - 0.15 * e.max(2.0) / 2.0, e + 0.15 * e.max(2.0) / 2.0);
    let x_fmt = |x: &f64| {
        if (x - x.round()).abs() < 1e-6 && *x >= 1.0 {
            format!("{}", x.round() as i64)
        } else {
            String::new()
        }
    };
    let y_fmt = |y: &f64| format!("{y:.y_decimals$}");

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (560, 330)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 17))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(58)
            .build_cartesian_2d(x0..x1, lo..hi)
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .x_labels(epochs.clamp(2, 12) + 1)
            .y_labels(7)
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .x_desc("epoch")
            .y_desc(y_desc)
            .label_style(("sans-serif", 13))
            .axis_desc_style(("sans-serif", 14))
            .light_line_style(RGBColor(0xf0, 0xf0, 0xf0))
            .bold_line_style(RGBColor(0xdd, 0xdd, 0xdd))
            .disable_x_mesh()
            .draw()
            .map_err(draw_err)?;
        // The best model last, so it is drawn on top.
        let mut order: Vec<&Series> = series.iter().collect();
        order.sort_by_key(|s| s.bold);
        for s in order {
            let (r, g, b) = color(s.model);
            let c = RGBColor(r, g, b);
            let width = if s.bold { 4 } else { 2 };
            let pts: Vec<(f64, f64)> = s
                .points
                .iter()
                .copied()
                .filter(|p| p.1.is_finite())
                .collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), c.stroke_width(width)))
                .map_err(draw_err)?;
            chart
                .draw_series(
                    pts.iter()
                        .map(|&p| Circle::new(p, if s.bold { 5 } else { 3 }, c.filled())),
                )
                .map_err(draw_err)?;
        }
        root.present().map_err(draw_err)?;
    }
    Ok(svg)
}

/// One bar of a Gantt chart.
pub struct Bar {
    /// Row index.
    pub row: usize,
    /// Start, seconds.
    pub start: f64,
    /// End, seconds.
    pub end: f64,
    /// Fill colour.
    pub color: Rgb,
    /// Labels from longest to shortest; the first that fits is drawn. A
    /// label with a newline is drawn on two lines, if the bar is tall enough.
    pub labels: Vec<String>,
    /// Tooltip.
    pub title: String,
    /// Seconds of the bar spent waiting for data (drawn as a strip at its foot).
    pub wait: f64,
}

/// A "nice" tick step (1, 2 or 5 × 10^k) giving about `n` ticks over `span`.
fn nice_step(span: f64, n: f64) -> f64 {
    let raw = (span / n).max(1e-9);
    let p = 10f64.powf(raw.log10().floor());
    let f = raw / p;
    let m = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    m * p
}

/// Width of `text` at 11 px sans-serif, roughly (its longest line).
fn text_width(text: &str) -> f64 {
    text.lines().map(|l| l.chars().count()).max().unwrap_or(0) as f64 * 6.4 + 6.0
}

/// A Gantt chart: one row per `rows` entry, one `<g class="unit">` per bar,
/// time on the x axis from 0 to `span` seconds.
pub fn gantt_svg(rows: &[String], bars: &[Bar], span: f64, row_height: f64) -> String {
    const MIN_W: f64 = 1200.0;
    const MAX_W: f64 = 2400.0;
    const LEFT: f64 = 92.0;
    const RIGHT: f64 = 18.0;
    const TOP: f64 = 10.0;
    const AXIS: f64 = 44.0;
    let span = bars.iter().map(|b| b.end).fold(span, f64::max).max(1e-3);
    // Wide enough that a typical bar has room for its label (the page
    // scrolls sideways), but no wider than a browser draws comfortably.
    let mut durations: Vec<f64> = bars.iter().map(|b| b.end - b.start).collect();
    durations.sort_by(f64::total_cmp);
    let median = durations.get(durations.len() / 2).copied().unwrap_or(span);
    let plot_w = (MIN_W - LEFT - RIGHT)
        .max(span * 32.0 / median.max(1e-6))
        .min(MAX_W - LEFT - RIGHT);
    let scale = Scale {
        left: LEFT,
        top: TOP,
        row_height,
        bar_h: (row_height - 6.0).max(4.0),
        sx: plot_w / span,
    };
    let w_total = LEFT + plot_w + RIGHT;
    let h = TOP + rows.len() as f64 * row_height + AXIS;
    // Time grid: a line and a label every `step` seconds.
    let step = nice_step(span, (plot_w / 100.0).max(4.0));
    let tick_decimals = decimals(step);
    let axis_y = TOP + rows.len() as f64 * row_height;
    let ticks: Vec<f64> = std::iter::successors(Some(0.0), |t| Some(t + step))
        .take_while(|t| *t <= span + step * 1e-6)
        .collect();
    // Every element has an explicit end tag: inline SVG is foreign content
    // to an HTML parser, where `<rect ...>` without `/>` or `</rect>` would
    // stay open and swallow what follows.
    html! {
        svg xmlns="http://www.w3.org/2000/svg" class="gantt"
            viewBox=(format_args!("0 0 {w_total:.0} {h}")) width=(format_args!("{w_total:.0}"))
            height=(h) font-family="sans-serif" font-size="11" {
            // Row stripes and labels.
            @for (i, label) in rows.iter().enumerate() {
                @let y = TOP + i as f64 * row_height;
                rect x=(LEFT) y=(y) width=(plot_w) height=(row_height)
                    fill=(if i % 2 == 0 { "#f6f7f9" } else { "#ffffff" }) {}
                text x=(LEFT - 8.0) y=(y + row_height / 2.0) text-anchor="end"
                    dominant-baseline="middle" font-size="12" fill="#333" { (label) }
            }
            @for t in &ticks {
                @let x = format!("{:.1}", LEFT + t * scale.sx);
                line x1=(x) y1=(TOP) x2=(x) y2=(format_args!("{:.1}", axis_y + 4.0))
                    stroke="#d8dbe0" stroke-width="1" {}
                text x=(x) y=(format_args!("{:.1}", axis_y + 17.0)) text-anchor="middle"
                    fill="#444" { (format_args!("{t:.tick_decimals$}")) }
            }
            line x1=(LEFT) y1=(axis_y) x2=(LEFT + plot_w) y2=(axis_y) stroke="#555" {}
            text x=(LEFT + plot_w / 2.0) y=(format_args!("{:.1}", axis_y + 36.0))
                text-anchor="middle" font-size="12" fill="#333" {
                "seconds since the run started"
            }
            @for b in bars {
                (scale.bar(b))
            }
        }
    }
    .into_string()
}

/// Where a Gantt chart puts things: its plot's corner, row and bar heights,
/// and pixels per second.
struct Scale {
    left: f64,
    top: f64,
    row_height: f64,
    bar_h: f64,
    sx: f64,
}

impl Scale {
    /// One bar: its tooltip, its rectangle, a strip for the time it waited
    /// for data, and the longest of its labels that fits.
    fn bar(&self, b: &Bar) -> Markup {
        let bar_h = self.bar_h;
        let x = self.left + b.start.max(0.0) * self.sx;
        let w = ((b.end - b.start).max(0.0) * self.sx).max(1.5);
        let y = self.top + b.row as f64 * self.row_height + (self.row_height - bar_h) / 2.0;
        let wait_w = if b.wait > 0.0 && b.end > b.start {
            (b.wait / (b.end - b.start)).min(1.0) * w
        } else {
            0.0
        };
        let fits = |l: &&String| text_width(l) <= w && (!l.contains('\n') || bar_h >= 24.0);
        let lines: Vec<&str> = b
            .labels
            .iter()
            .find(fits)
            .map(|l| l.lines().collect())
            .unwrap_or_default();
        let f2 = |v: f64| format!("{v:.2}");
        html! {
            g.unit {
                title { (b.title) }
                rect x=(f2(x)) y=(f2(y)) width=(f2(w)) height=(f2(bar_h)) rx="2"
                    fill=(hex(b.color)) stroke="#fff" stroke-width="1" {}
                @if wait_w >= 1.0 {
                    rect x=(f2(x)) y=(f2(y + bar_h - 3.0)) width=(f2(wait_w)) height="3"
                        fill="#000" fill-opacity="0.45" {}
                }
                @if !lines.is_empty() {
                    text text-anchor="middle" dominant-baseline="middle" fill=(text_on(b.color)) {
                        @for (i, line) in lines.iter().enumerate() {
                            @let dy = (i as f64 - (lines.len() as f64 - 1.0) / 2.0) * 11.5;
                            tspan x=(f2(x + w / 2.0)) y=(f2(y + bar_h / 2.0 + dy)) { (line) }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn palette_colours_are_distinct_for_a_large_grid() {
        let colours: std::collections::HashSet<Rgb> = (0..64).map(color).collect();
        assert_eq!(colours.len(), 64);
    }

    #[test]
    fn bar_labels_shrink_to_fit_or_disappear() {
        let bar = |end: f64| Bar {
            row: 0,
            start: 0.0,
            end,
            color: color(0),
            labels: vec!["model 12 · epoch 3".into(), "m12".into()],
            title: "t".into(),
            wait: 0.0,
        };
        // 100 s over ~1090 px: 10.9 px per second.
        let wide = gantt_svg(&["a".into()], &[bar(100.0)], 100.0, 30.0);
        assert!(wide.contains(">model 12 · epoch 3</tspan>"), "{wide}");
        let narrow = gantt_svg(&["a".into()], &[bar(3.0), bar(100.0)], 100.0, 30.0);
        assert!(narrow.contains(">m12</tspan>"), "{narrow}");
        let tiny = gantt_svg(&["a".into()], &[bar(0.1), bar(100.0)], 100.0, 30.0);
        assert_eq!(tiny.matches(">m12</tspan>").count(), 0, "{tiny}");
    }

    #[test]
    fn gantt_text_is_escaped() {
        let bar = Bar {
            row: 0,
            start: 0.0,
            end: 100.0,
            color: color(0),
            labels: vec!["<b>&</b>".into()],
            title: "<script>\"x\"".into(),
            wait: 0.0,
        };
        let svg = gantt_svg(&["<i>row</i>".into()], &[bar], 100.0, 30.0);
        assert!(!svg.contains("<script") && !svg.contains("<b>") && !svg.contains("<i>"));
        assert!(
            svg.contains("<title>&lt;script&gt;&quot;x&quot;</title>"),
            "{svg}"
        );
        assert!(svg.contains(">&lt;b&gt;&amp;&lt;/b&gt;</tspan>"), "{svg}");
        assert!(svg.contains(">&lt;i&gt;row&lt;/i&gt;</text>"), "{svg}");
    }

    #[test]
    fn nice_steps_are_one_two_or_five_times_a_power_of_ten() {
        assert_eq!(nice_step(60.0, 12.0), 5.0);
        assert_eq!(nice_step(1.0, 12.0), 0.1);
        assert_eq!(nice_step(250.0, 12.0), 50.0);
    }
}
