//! The HTML report of a replay (`streaming replay --report FILE`, and the demo's
//! `out/demo-report.html`): attributed against organic checkouts, the time from the credited
//! click to the checkout, credited revenue per model side by side, and the top products of
//! each model.
//!
//! A [`Report`] watches the rows and touches as the pipeline produces them
//! ([`Report::observe_row`], [`Report::observe_touch`]) and keeps only aggregates, so its
//! memory does not grow with the run: counters per model, a fixed histogram, exact revenue
//! sums in billionths, and a bounded table of heavy products per model (exact while a model
//! has seen at most [`TOP_CAPACITY`] products, an overestimate with a stated error bound
//! beyond). [`Report::render`] writes one self-contained HTML file: inline CSS, SVG charts
//! drawn by hand (`<rect>` bars, axes, `<text>` labels), no JavaScript, nothing fetched.
//!
//! # Layout
//! - `aggregate`: [`Report`], what it observes and the sums it keeps; the histogram buckets
//!   ([`DELAY_BUCKETS`]).
//! - `topn`: the bounded heavy-hitter table behind the top products (weighted Space-Saving
//!   with batch eviction).
//! - `svg`: the charts, vertical grouped bars and horizontal bars, with text escaped.
//! - `html`: the page around them ([`Report::render`], [`RenderInfo`]) and [`escape`].
//!
//! The modules are private; the items above are re-exported here.

mod aggregate;
mod html;
mod svg;
mod topn;

pub use aggregate::{Report, DELAY_BUCKETS, TOP_CAPACITY, TOP_N};
pub use html::{escape, RenderInfo};
