//! The page: [`Report::render`] puts the four sections around their charts in one HTML file
//! with inline CSS and a Content-Security-Policy that forbids every fetch, so the file shows
//! the same offline, attached to a mail or opened from CI artefacts. No JavaScript: tooltips
//! are SVG `<title>`s. Every piece of text from the data (product ids, the caller's title and
//! facts) goes through [`escape`].

use std::fmt::Write;

use firstclick_model::AttributionModel;

use crate::aggregate::{Report, DELAY_BUCKETS, TOP_N};
use crate::svg::{Columns, Ranking};

/// What the page says besides the aggregates: its title and a few facts about the run
/// (`("clicks", "30,000")`, shown in a table at the top, in order).
#[derive(Clone, Debug, Default)]
pub struct RenderInfo {
    /// Title of the page.
    pub title: String,
    /// Label and value pairs.
    pub facts: Vec<(String, String)>,
}

/// `text` with `&`, `<`, `>`, `"` and `'` replaced by entities: safe in element content and
/// in quoted attributes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn color(model: AttributionModel) -> &'static str {
    match model {
        AttributionModel::FirstClick => "#2b6cb0",
        AttributionModel::LastClick => "#dd6b20",
        AttributionModel::Linear => "#2f855a",
        AttributionModel::TimeDecay => "#805ad5",
        AttributionModel::PositionBased => "#c53030",
    }
}

const ATTRIBUTED: &str = "#2b6cb0";
const ORGANIC: &str = "#a0aec0";

/// `1234567` as `1,234,567`.
pub(crate) fn count(n: u64) -> String {
    group(&n.to_string())
}

fn group(digits: &str) -> String {
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Billionths as money with two decimals, rounded half away from zero: `1,234.57`.
pub(crate) fn money(nanos: i128) -> String {
    let cents = (nanos.abs() + 5_000_000) / 10_000_000;
    let sign = if nanos < 0 && cents > 0 { "-" } else { "" };
    format!(
        "{sign}{}.{:02}",
        group(&(cents / 100).to_string()),
        cents % 100
    )
}

fn percent(part: f64, whole: f64) -> f64 {
    if whole > 0.0 {
        100.0 * part / whole
    } else {
        0.0
    }
}

const STYLE: &str = "\
body{margin:0;background:#f5f6f8;color:#1a202c;font:15px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif}\
main{max-width:1100px;margin:0 auto;padding:24px 28px 40px}\
h1{font-size:26px;margin:0 0 12px}h2{font-size:19px;margin:0 0 6px}h3{font-size:15px;margin:18px 0 4px}\
section{background:#fff;border:1px solid #e2e8f0;border-radius:8px;padding:18px 20px;margin:18px 0}\
p.note{color:#4a5568;margin:0 0 10px}\
table{border-collapse:collapse;font-variant-numeric:tabular-nums}\
td,th{padding:3px 14px 3px 0;text-align:left}td.n{text-align:right}\
table.facts td:first-child{color:#4a5568}\
svg{display:block;max-width:100%;height:auto}\
footer{color:#718096;font-size:13px;margin-top:24px}";

impl Report {
    /// The report as one self-contained HTML document; see the module documentation.
    pub fn render(&self, info: &RenderInfo) -> String {
        let models = self.models();
        let mut out = String::with_capacity(64 * 1024);
        let title = escape(&info.title);
        let _ = write!(
            out,
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>{title}</title><style>{STYLE}</style></head>\n<body><main>\n<h1>{title}</h1>\n"
        );
        out.push_str("<table class=\"facts\">");
        for (k, v) in &info.facts {
            let _ = write!(out, "<tr><td>{}</td><td>{}</td></tr>", escape(k), escape(v));
        }
        let names: Vec<&str> = models.iter().map(|m| m.as_str()).collect();
        let _ = writeln!(
            out,
            "<tr><td>models</td><td>{}</td></tr></table>",
            escape(&if names.is_empty() {
                "none (no rows)".to_string()
            } else {
                names.join(", ")
            })
        );
        self.attributed_section(&mut out, &models);
        self.delay_section(&mut out, &models);
        self.revenue_section(&mut out, &models);
        self.top_section(&mut out, &models);
        out.push_str(
            "<footer>firstclick report: one self-contained file (inline CSS and SVG, no \
             scripts, nothing loaded from the network). Aggregates only, taken as the rows \
             were written.</footer>\n</main></body></html>\n",
        );
        out
    }

    fn attributed_section(&self, out: &mut String, models: &[AttributionModel]) {
        out.push_str("<section id=\"attributed-organic\"><h2>Attributed vs organic</h2>");
        // Every model sees the same window, so all agree on which checkouts have a click.
        let primary = models.first().copied().unwrap_or_default();
        let (a, o) = self.attributed_and_organic(primary);
        let (ra, ro) = self.revenue_split(primary);
        let (n, r) = ((a + o) as f64, (ra + ro) as f64);
        let _ = write!(
            out,
            "<p class=\"note\">Checkouts with a click of the same user and product in the \
             lookback window (attributed) and without (organic), by number and by revenue. \
             {} of {} checkouts attributed ({:.1} %); revenue {} attributed, {} organic.</p>",
            count(a),
            count(a + o),
            percent(a as f64, n),
            money(ra),
            money(ro),
        );
        let fmt = |v: f64| format!("{v:.0} %");
        let chart = Columns {
            id: "attributed-organic",
            label: "Attributed and organic checkouts, share of count and of revenue",
            categories: vec!["checkouts".into(), "revenue".into()],
            series: vec![
                ("attributed".into(), ATTRIBUTED),
                ("organic".into(), ORGANIC),
            ],
            values: vec![
                vec![percent(a as f64, n), percent(o as f64, n)],
                vec![percent(ra as f64, r), percent(ro as f64, r)],
            ],
            format: &fmt,
            value_labels: true,
            category_colors: None,
        };
        out.push_str(&chart.to_svg());
        out.push_str("</section>\n");
    }

    fn delay_section(&self, out: &mut String, models: &[AttributionModel]) {
        out.push_str(
            "<section id=\"delays\"><h2>Time from click to checkout</h2><p class=\"note\">\
             Attributed checkouts by the time from the credited click to the checkout. A \
             multi-touch model counts every click of the window with its share of the credit \
             (two clicks at 50 % add half a checkout to each one's bucket), so every model's \
             bars add up to the same attributed checkouts. Buckets include their upper \
             bound.</p>",
        );
        let hists: Vec<[f64; DELAY_BUCKETS.len()]> =
            models.iter().map(|m| self.delay_histogram(*m)).collect();
        let fmt = |v: f64| count(v.max(0.0).round() as u64);
        let chart = Columns {
            id: "delays",
            label: "Histogram of the time from the credited click to the checkout",
            categories: DELAY_BUCKETS.iter().map(|b| b.1.to_string()).collect(),
            series: models
                .iter()
                .map(|m| (m.as_str().to_string(), color(*m)))
                .collect(),
            values: (0..DELAY_BUCKETS.len())
                .map(|b| hists.iter().map(|h| h[b]).collect())
                .collect(),
            format: &fmt,
            value_labels: models.len() == 1,
            category_colors: None,
        };
        out.push_str(&chart.to_svg());
        out.push_str("</section>\n");
    }

    fn revenue_section(&self, out: &mut String, models: &[AttributionModel]) {
        out.push_str(
            "<section id=\"revenue\"><h2>Credited revenue by model</h2><p class=\"note\">\
             First and last click credit a checkout's whole amount to one click; linear, time \
             decay and position based split it among the clicks of the window (the touch \
             rows' credited revenue). Every model credits each attributed checkout in full, so \
             the totals agree; they differ in which clicks get the credit.</p>",
        );
        let fmt = |v: f64| money((v * 1e9) as i128);
        let chart = Columns {
            id: "revenue",
            label: "Credited revenue per attribution model",
            categories: models.iter().map(|m| m.as_str().to_string()).collect(),
            series: vec![("credited revenue".into(), "#2b6cb0")],
            values: models
                .iter()
                .map(|m| vec![self.credited_revenue(*m) as f64 / 1e9])
                .collect(),
            format: &fmt,
            value_labels: true,
            category_colors: Some(models.iter().map(|m| color(*m)).collect()),
        };
        out.push_str(&chart.to_svg());
        out.push_str(
            "<table class=\"revenue\"><tr><th>model</th><th>rows</th><th>touches</th>\
             <th>credited revenue</th></tr>",
        );
        for m in models {
            let (a, o) = self.attributed_and_organic(*m);
            let _ = write!(
                out,
                "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                escape(m.as_str()),
                count(a + o),
                if m.is_multi_touch() {
                    count(self.touches(*m))
                } else {
                    "–".to_string()
                },
                money(self.credited_revenue(*m)),
            );
        }
        out.push_str("</table></section>\n");
    }

    fn top_section(&self, out: &mut String, models: &[AttributionModel]) {
        let _ = write!(
            out,
            "<section id=\"top-products\"><h2>Top products per model</h2><p class=\"note\">\
             The {TOP_N} products with the most credited revenue under each model. A click \
             counts only for a checkout of its own product, so every model credits a \
             checkout's revenue to the same product: the lists agree, and the models differ in \
             which clicks (and when) get the credit, as the histogram above shows.</p>"
        );
        for m in models {
            let top = self.top_products(*m, TOP_N);
            let approximate = top.iter().map(|t| t.2).max().unwrap_or(0);
            let _ = write!(out, "<h3>{}</h3>", escape(m.as_str()));
            if approximate > 0 {
                let _ = write!(
                    out,
                    "<p class=\"note\">More products than the report keeps: each figure may \
                     overstate by at most {} (≈).</p>",
                    money(approximate)
                );
            }
            let id = format!("top-{}", m.as_str());
            let label = format!("Top products by credited revenue, {}", m.as_str());
            let chart = Ranking {
                id: &id,
                label: &label,
                bars: top
                    .into_iter()
                    .map(|(product, revenue, error)| {
                        let text = if error > 0 {
                            format!("≈ {}", money(revenue))
                        } else {
                            money(revenue)
                        };
                        (product.to_string(), revenue as f64, text, color(*m))
                    })
                    .collect(),
            };
            out.push_str(&chart.to_svg());
        }
        if models.is_empty() {
            out.push_str("<p class=\"note\">No rows were written.</p>");
        }
        out.push_str("</section>\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::tests::{row, touch};
    use AttributionModel::*;

    #[test]
    fn escapes_and_formats() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(count(0), "0");
        assert_eq!(count(1234567), "1,234,567");
        assert_eq!(count(100), "100");
        assert_eq!(money(12_345_678_901_234), "12,345.68");
        assert_eq!(money(-4_999_999), "0.00");
        assert_eq!(money(-1_005_000_000), "-1.01");
    }

    /// The bars of the chart `id`: the `class="bar"` rects between its `<svg>` and `</svg>`.
    fn bars(html: &str, id: &str) -> usize {
        let start = html
            .find(&format!("<svg data-chart=\"{id}\""))
            .unwrap_or_else(|| panic!("no chart {id}"));
        let end = start + html[start..].find("</svg>").expect("chart closed");
        html[start..end].matches("class=\"bar\"").count()
    }

    #[test]
    fn every_section_has_its_chart_with_the_expected_bars() {
        let mut r = Report::new();
        for (i, model) in [FirstClick, LastClick, Linear].into_iter().enumerate() {
            for k in 0..30 {
                let product = format!("product-{}", k % 12);
                let delay = (k != 0).then_some(k * 100 + i as i64);
                r.observe_row(&row(&format!("k{k}"), &product, Some(10.0), delay, model));
                if model == Linear && delay.is_some() {
                    r.observe_touch(&touch(
                        &format!("k{k}"),
                        &product,
                        Some(5_000_000_000),
                        model,
                    ));
                    r.observe_touch(&touch(
                        &format!("k{k}"),
                        &product,
                        Some(5_000_000_000),
                        model,
                    ));
                }
            }
        }
        let info = RenderInfo {
            title: "Replay <of> \"data\"".into(),
            facts: vec![("input".into(), "clicks & checkouts".into())],
        };
        let html = r.render(&info);
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.trim_end().ends_with("</html>"));
        assert!(html.contains("<title>Replay &lt;of&gt; &quot;data&quot;</title>"));
        assert!(html.contains("clicks &amp; checkouts"));
        assert!(!html.contains("<script"), "no JavaScript");
        assert!(
            !html.contains("http://")
                || html.matches("http://").count()
                    == html.matches("xmlns=\"http://www.w3.org/2000/svg\"").count(),
            "nothing but the SVG namespace names a URL"
        );
        assert_eq!(html.matches("<svg").count(), 3 + 3);
        assert_eq!(html.matches("<svg").count(), html.matches("</svg>").count());
        assert_eq!(html.matches("<section").count(), 4);
        assert_eq!(
            html.matches("<section").count(),
            html.matches("</section>").count()
        );
        assert_eq!(bars(&html, "attributed-organic"), 4);
        assert_eq!(bars(&html, "delays"), DELAY_BUCKETS.len() * 3);
        assert_eq!(bars(&html, "revenue"), 3);
        for m in ["first_click", "last_click", "linear"] {
            assert_eq!(bars(&html, &format!("top-{m}")), TOP_N, "{m}");
        }
        // Each model's revenue bar has that model's colour.
        assert!(
            html.contains(&format!(
                "fill=\"{}\"><title>linear, credited revenue: 290.00",
                color(Linear)
            )),
            "{html}"
        );
        // 29 of 30 attributed.
        assert!(html.contains("29 of 30 checkouts attributed (96.7 %)"));
    }

    #[test]
    fn an_empty_report_is_still_a_page() {
        let html = Report::new().render(&RenderInfo::default());
        assert!(html.contains("No rows were written."));
        assert_eq!(bars(&html, "attributed-organic"), 4);
        assert_eq!(bars(&html, "revenue"), 0);
        assert!(!html.contains("NaN") && !html.contains("inf"));
    }
}
