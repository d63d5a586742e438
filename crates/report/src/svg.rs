//! The charts, as SVG text written by hand: vertical grouped bars (categories along the x axis,
//! one bar per series in each) and horizontal bars (a ranking). Bars are `<rect class="bar">`
//! with a `<title>` tooltip; axes are `<line>`, labels `<text>`. Every chart is an
//! `<svg data-chart="ID">`, so a test can count bars per chart. All text goes through
//! [`escape`]; numbers are formatted by the caller.

use std::fmt::Write;

use crate::html::escape;

/// A vertical grouped bar chart.
pub(crate) struct Columns<'a> {
    /// `data-chart` attribute and element id.
    pub(crate) id: &'a str,
    /// Accessible name (`aria-label`).
    pub(crate) label: &'a str,
    /// The x axis's groups.
    pub(crate) categories: Vec<String>,
    /// Series names and colours, in bar order within a group; shown as a legend when more
    /// than one.
    pub(crate) series: Vec<(String, &'static str)>,
    /// `values[category][series]`.
    pub(crate) values: Vec<Vec<f64>>,
    /// The text of a tick or a bar's value.
    pub(crate) format: &'a dyn Fn(f64) -> String,
    /// Write each bar's value above it.
    pub(crate) value_labels: bool,
    /// With one series: a colour per category instead of the series' colour.
    pub(crate) category_colors: Option<Vec<&'static str>>,
}

const W: f64 = 1040.0;
const H: f64 = 340.0;
const LEFT: f64 = 90.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 34.0;
const BOTTOM: f64 = 46.0;

/// A round step for about `target` ticks up to `max`: 1, 2 or 5 times a power of ten.
pub(crate) fn nice_step(max: f64, target: f64) -> f64 {
    if !(max > 0.0 && max.is_finite()) {
        return 1.0;
    }
    let raw = max / target;
    let mag = 10f64.powf(raw.log10().floor());
    let m = raw / mag;
    let f = if m <= 1.0 {
        1.0
    } else if m <= 2.0 {
        2.0
    } else if m <= 5.0 {
        5.0
    } else {
        10.0
    };
    f * mag
}

fn open(out: &mut String, id: &str, label: &str, w: f64, h: f64) {
    let _ = write!(
        out,
        r#"<svg data-chart="{id}" id="chart-{id}" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="{label}">"#,
        id = escape(id),
        label = escape(label),
    );
    let _ = write!(
        out,
        r##"<rect class="background" x="0" y="0" width="{w}" height="{h}" fill="#ffffff"/>"##
    );
}

impl Columns<'_> {
    /// The chart as one `<svg>` element.
    pub(crate) fn to_svg(&self) -> String {
        let mut out = String::with_capacity(8192);
        open(&mut out, self.id, self.label, W, H);
        let max = self
            .values
            .iter()
            .flatten()
            .copied()
            .filter(|v| v.is_finite())
            .fold(0.0, f64::max);
        let step = nice_step(max, 5.0);
        let top_value = (max / step).ceil().max(1.0) * step;
        let (x0, y0, plot_w, plot_h) = (LEFT, H - BOTTOM, W - LEFT - RIGHT, H - TOP - BOTTOM);
        let y_of = |v: f64| y0 - (v.max(0.0) / top_value) * plot_h;
        // Grid and y ticks.
        let mut tick = 0.0;
        while tick <= top_value + step / 2.0 {
            let y = y_of(tick);
            let _ = write!(
                out,
                r##"<line class="grid" x1="{x0}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e3e6ea"/><text class="tick" x="{:.1}" y="{:.1}" text-anchor="end" font-size="12" fill="#555">{}</text>"##,
                x0 + plot_w,
                x0 - 8.0,
                y + 4.0,
                escape(&(self.format)(tick)),
            );
            tick += step;
        }
        // Bars.
        let groups = self.categories.len().max(1) as f64;
        let group_w = plot_w / groups;
        let n = self.series.len().max(1) as f64;
        let bar_w = (group_w * 0.8 / n).min(90.0);
        for (c, category) in self.categories.iter().enumerate() {
            let gx = x0 + group_w * c as f64;
            let start = gx + (group_w - bar_w * n) / 2.0;
            for (s, (name, color)) in self.series.iter().enumerate() {
                let v = self
                    .values
                    .get(c)
                    .and_then(|r| r.get(s))
                    .copied()
                    .unwrap_or(0.0);
                let v = if v.is_finite() { v } else { 0.0 };
                let (x, y) = (start + bar_w * s as f64, y_of(v));
                let color = self
                    .category_colors
                    .as_ref()
                    .and_then(|cs| cs.get(c))
                    .copied()
                    .unwrap_or(color);
                let text = (self.format)(v);
                let _ = write!(
                    out,
                    r#"<rect class="bar" x="{x:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{color}"><title>{}</title></rect>"#,
                    (bar_w - 2.0).max(1.0),
                    y0 - y,
                    escape(&format!("{category}, {name}: {text}")),
                );
                if self.value_labels {
                    let _ = write!(
                        out,
                        r##"<text class="value" x="{:.1}" y="{:.1}" text-anchor="middle" font-size="12" fill="#222">{}</text>"##,
                        x + bar_w / 2.0 - 1.0,
                        y - 5.0,
                        escape(&text),
                    );
                }
            }
            let _ = write!(
                out,
                r##"<text class="category" x="{:.1}" y="{:.1}" text-anchor="middle" font-size="12" fill="#333">{}</text>"##,
                gx + group_w / 2.0,
                y0 + 18.0,
                escape(category),
            );
        }
        // Axes.
        let _ = write!(
            out,
            r##"<line class="axis" x1="{x0}" y1="{TOP}" x2="{x0}" y2="{y0}" stroke="#333"/><line class="axis" x1="{x0}" y1="{y0}" x2="{:.1}" y2="{y0}" stroke="#333"/>"##,
            x0 + plot_w,
        );
        // Legend.
        if self.series.len() > 1 {
            let mut lx = x0;
            for (name, color) in &self.series {
                let _ = write!(
                    out,
                    r##"<rect class="legend" x="{lx:.1}" y="8" width="12" height="12" fill="{color}"/><text class="legend" x="{:.1}" y="18" font-size="12" fill="#333">{}</text>"##,
                    lx + 16.0,
                    escape(name),
                );
                lx += 24.0 + 7.5 * name.chars().count() as f64;
            }
        }
        out.push_str("</svg>");
        out
    }
}

/// A horizontal bar chart: one labelled bar per item, longest first as given.
pub(crate) struct Ranking<'a> {
    /// `data-chart` attribute and element id.
    pub(crate) id: &'a str,
    /// Accessible name (`aria-label`).
    pub(crate) label: &'a str,
    /// `(label, value, value text, colour)` per bar.
    pub(crate) bars: Vec<(String, f64, String, &'static str)>,
}

impl Ranking<'_> {
    /// The chart as one `<svg>` element.
    pub(crate) fn to_svg(&self) -> String {
        const ROW: f64 = 26.0;
        const LABEL_W: f64 = 300.0;
        const VALUE_W: f64 = 190.0;
        let h = TOP / 2.0 + ROW * self.bars.len().max(1) as f64 + 10.0;
        let mut out = String::with_capacity(4096);
        open(&mut out, self.id, self.label, W, h);
        let max = self
            .bars
            .iter()
            .map(|b| b.1)
            .filter(|v| v.is_finite())
            .fold(0.0, f64::max);
        let x0 = LABEL_W;
        let plot_w = W - LABEL_W - VALUE_W;
        if self.bars.is_empty() {
            let _ = write!(
                out,
                r##"<text class="empty" x="{x0}" y="{:.1}" font-size="13" fill="#777">nothing credited</text>"##,
                TOP / 2.0 + 17.0
            );
        }
        for (i, (label, v, text, color)) in self.bars.iter().enumerate() {
            let y = TOP / 2.0 + ROW * i as f64;
            let v = if v.is_finite() { v.max(0.0) } else { 0.0 };
            let w = if max > 0.0 { v / max * plot_w } else { 0.0 };
            let _ = write!(
                out,
                r##"<text class="category" x="{:.1}" y="{:.1}" text-anchor="end" font-size="12" font-family="monospace" fill="#333">{}</text><rect class="bar" x="{x0}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{color}"><title>{}</title></rect><text class="value" x="{:.1}" y="{:.1}" font-size="12" fill="#222">{}</text>"##,
                x0 - 8.0,
                y + 16.0,
                escape(label),
                y + 3.0,
                w.max(1.0),
                ROW - 6.0,
                escape(&format!("{label}: {text}")),
                x0 + w.max(1.0) + 6.0,
                y + 16.0,
                escape(text),
            );
        }
        let _ = write!(
            out,
            r##"<line class="axis" x1="{x0}" y1="{:.1}" x2="{x0}" y2="{:.1}" stroke="#333"/>"##,
            TOP / 2.0,
            h - 8.0
        );
        out.push_str("</svg>");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_steps() {
        assert_eq!(nice_step(100.0, 5.0), 20.0);
        assert_eq!(nice_step(7.0, 5.0), 2.0);
        assert_eq!(nice_step(0.0, 5.0), 1.0);
        assert_eq!(nice_step(f64::NAN, 5.0), 1.0);
        assert_eq!(nice_step(4_900.0, 5.0), 1000.0);
    }

    #[test]
    fn columns_draw_one_bar_per_category_and_series_and_escape_text() {
        let fmt = |v: f64| format!("{v:.0}");
        let c = Columns {
            id: "x",
            label: "a <b>",
            categories: vec!["one".into(), "<two>".into(), "three".into()],
            series: vec![("s&1".into(), "#111111"), ("s2".into(), "#222222")],
            values: vec![vec![1.0, 2.0], vec![3.0, f64::NAN], vec![0.0, 10.0]],
            format: &fmt,
            value_labels: true,
            category_colors: None,
        };
        let svg = c.to_svg();
        assert!(svg.starts_with("<svg data-chart=\"x\""));
        assert!(svg.ends_with("</svg>"));
        assert_eq!(svg.matches("class=\"bar\"").count(), 6);
        assert!(svg.contains("&lt;two&gt;") && !svg.contains("<two>"));
        assert!(svg.contains("s&amp;1"));
        assert!(svg.contains("aria-label=\"a &lt;b&gt;\""));
        assert!(!svg.contains("NaN"));
        // The tallest bar reaches the top of the scale (10 on a step of 2).
        assert!(svg.contains(&format!("y=\"{TOP:.1}\"")), "{svg}");
    }

    #[test]
    fn ranking_draws_one_bar_per_item() {
        let r = Ranking {
            id: "top",
            label: "top",
            bars: (0..4)
                .map(|i| (format!("p{i}"), 4.0 - i as f64, format!("{i}"), "#333333"))
                .collect(),
        };
        let svg = r.to_svg();
        assert_eq!(svg.matches("class=\"bar\"").count(), 4);
        let empty = Ranking {
            id: "e",
            label: "e",
            bars: vec![],
        }
        .to_svg();
        assert_eq!(empty.matches("class=\"bar\"").count(), 0);
        assert!(empty.contains("nothing credited"));
    }
}
