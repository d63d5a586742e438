//! [`Report`]: what the report keeps of the rows and touches it observes.
//!
//! Only aggregates, per model: row counts (attributed and organic), a histogram of the seconds
//! from the credited clicks to the checkout over the fixed [`DELAY_BUCKETS`] (single-touch: the
//! row's click, one per checkout; multi-touch: every touch weighted by its credit, which sums to
//! one per checkout, so every model's histogram adds up to its attributed checkouts), revenue as exact
//! sums of billionths ([`Decimal9`] units in an `i128`, so no sum overflows or rounds), and a
//! bounded table of heavy products (`topn`). Memory is the same after ten rows and after a
//! billion.
//!
//! Credited revenue follows the model's own output: a single-touch model (first, last click)
//! credits the whole `total_amount` of its attributed rows to the one click; a multi-touch
//! model credits the `credited_revenue` of its touch rows, which sum to the same amounts split
//! among the clicks. Both therefore add up to the revenue of the attributed checkouts; they
//! differ in which products and clicks it lands on.

use firstclick_model::{AttributedRow, AttributionModel, Decimal9, TouchRow};

use crate::topn::{Heavy, TopTable};

/// The histogram's buckets: `(upper bound in seconds, inclusive; label)`. A delay falls in the
/// first bucket whose bound it does not exceed; the last bucket takes everything longer (a
/// lookback above the default hour).
pub const DELAY_BUCKETS: [(i64, &str); 11] = [
    (10, "≤ 10 s"),
    (30, "10–30 s"),
    (60, "30 s–1 min"),
    (120, "1–2 min"),
    (300, "2–5 min"),
    (600, "5–10 min"),
    (900, "10–15 min"),
    (1800, "15–30 min"),
    (2700, "30–45 min"),
    (3600, "45–60 min"),
    (i64::MAX, "> 1 h"),
];

/// How many top products per model the report shows.
pub const TOP_N: usize = 10;

/// How many products per model the top table keeps at least (it holds at most twice as many);
/// the sums are exact while a model has seen no more distinct products than this in total.
pub const TOP_CAPACITY: usize = 1000;

const MICROS: i64 = 1_000_000;
const ONE: i64 = 1_000_000_000;

#[derive(Clone, Debug)]
pub(crate) struct ModelStats {
    pub(crate) rows: u64,
    pub(crate) attributed: u64,
    pub(crate) organic: u64,
    /// Of the rows, those whose checkout has no usable `total_amount`.
    pub(crate) without_amount: u64,
    pub(crate) attributed_revenue: i128,
    pub(crate) organic_revenue: i128,
    pub(crate) touches: u64,
    pub(crate) touch_revenue: i128,
    /// Single-touch: attributed rows per bucket, in billionths (one row is 10^9).
    /// Multi-touch: the touches' credits per bucket, in billionths.
    pub(crate) delays: [i128; DELAY_BUCKETS.len()],
    pub(crate) top: TopTable,
}

impl Default for ModelStats {
    fn default() -> Self {
        ModelStats {
            rows: 0,
            attributed: 0,
            organic: 0,
            without_amount: 0,
            attributed_revenue: 0,
            organic_revenue: 0,
            touches: 0,
            touch_revenue: 0,
            delays: [0; DELAY_BUCKETS.len()],
            top: TopTable::new(TOP_CAPACITY),
        }
    }
}

/// Aggregates of a run's rows and touches, for [`Report::render`]; see the module
/// documentation.
#[derive(Clone, Debug, Default)]
pub struct Report {
    models: [ModelStats; AttributionModel::ALL.len()],
}

fn index(model: AttributionModel) -> usize {
    AttributionModel::ALL
        .iter()
        .position(|m| *m == model)
        .unwrap_or(0)
}

/// The bucket of a delay in microseconds (a negative one, which the engine never produces,
/// counts as 0).
pub(crate) fn bucket_of(delay_micros: i64) -> usize {
    let secs = delay_micros.max(0);
    DELAY_BUCKETS
        .iter()
        .position(|(bound, _)| secs <= bound.saturating_mul(MICROS))
        .unwrap_or(DELAY_BUCKETS.len() - 1)
}

impl Report {
    /// An empty report.
    pub fn new() -> Self {
        Report::default()
    }

    /// Takes in one output row (one per checkout and model).
    pub fn observe_row(&mut self, row: &AttributedRow) {
        let multi = row.model.is_multi_touch();
        let m = &mut self.models[index(row.model)];
        m.rows += 1;
        let amount = row.checkout.total_amount.and_then(Decimal9::from_f64);
        if amount.is_none() {
            m.without_amount += 1;
        }
        let amount = i128::from(amount.map_or(0, |d| d.0));
        match &row.click {
            Some(click) => {
                m.attributed += 1;
                m.attributed_revenue += amount;
                if !multi {
                    let delay = row.checkout.time.as_micros() - click.time.as_micros();
                    m.delays[bucket_of(delay)] += i128::from(ONE);
                    m.top.add(&row.checkout.product_id, amount);
                }
            }
            None => {
                m.organic += 1;
                m.organic_revenue += amount;
            }
        }
    }

    /// Takes in one touch row of a multi-touch model.
    pub fn observe_touch(&mut self, touch: &TouchRow) {
        let m = &mut self.models[index(touch.model)];
        m.touches += 1;
        let delay = touch.checkout_time.as_micros() - touch.click.time.as_micros();
        m.delays[bucket_of(delay)] += i128::from(touch.credit.0);
        if let Some(r) = touch.credited_revenue {
            m.touch_revenue += i128::from(r.0);
            m.top.add(&touch.product_id, i128::from(r.0));
        }
    }

    /// The models that produced at least one row or touch, in [`AttributionModel::ALL`] order.
    pub fn models(&self) -> Vec<AttributionModel> {
        AttributionModel::ALL
            .into_iter()
            .filter(|m| {
                let s = self.stats(*m);
                s.rows > 0 || s.touches > 0
            })
            .collect()
    }

    pub(crate) fn stats(&self, model: AttributionModel) -> &ModelStats {
        &self.models[index(model)]
    }

    /// Rows of `model` with a click, and without (organic).
    pub fn attributed_and_organic(&self, model: AttributionModel) -> (u64, u64) {
        let s = self.stats(model);
        (s.attributed, s.organic)
    }

    /// Revenue of `model`'s attributed and organic rows, in billionths.
    pub fn revenue_split(&self, model: AttributionModel) -> (i128, i128) {
        let s = self.stats(model);
        (s.attributed_revenue, s.organic_revenue)
    }

    /// The revenue `model` credits to clicks, in billionths: the `total_amount` of its
    /// attributed rows for a single-touch model, the sum of its touches' `credited_revenue`
    /// for a multi-touch one.
    pub fn credited_revenue(&self, model: AttributionModel) -> i128 {
        let s = self.stats(model);
        if model.is_multi_touch() {
            s.touch_revenue
        } else {
            s.attributed_revenue
        }
    }

    /// Touch rows of `model` observed.
    pub fn touches(&self, model: AttributionModel) -> u64 {
        self.stats(model).touches
    }

    /// The histogram of `model`'s attributed checkouts over [`DELAY_BUCKETS`], by the seconds
    /// from the credited click to the checkout: for a single-touch model the number of rows,
    /// for a multi-touch model the sum of its touches' credits (a checkout whose two clicks
    /// share the credit counts half in each click's bucket). Either way the buckets add up to
    /// the model's attributed checkouts.
    pub fn delay_histogram(&self, model: AttributionModel) -> [f64; DELAY_BUCKETS.len()] {
        self.stats(model).delays.map(|d| d as f64 / ONE as f64)
    }

    /// Up to `n` products of `model` with the most credited revenue, largest first: product
    /// id, revenue in billionths, and the bound on how much that figure may overstate (0 while
    /// exact, see [`TOP_CAPACITY`]).
    pub fn top_products(
        &self,
        model: AttributionModel,
        n: usize,
    ) -> Vec<(firstclick_model::Id, i128, i128)> {
        self.stats(model)
            .top
            .top(n)
            .into_iter()
            .map(
                |Heavy {
                     product,
                     estimate,
                     error,
                 }| (product, estimate, error),
            )
            .collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use firstclick_model::{parse_checkout, ClickRef, EventTime, Id};

    pub(crate) fn row(
        id: &str,
        product: &str,
        amount: Option<f64>,
        delay_secs: Option<i64>,
        model: AttributionModel,
    ) -> AttributedRow {
        let amount = amount.map_or("null".to_string(), |a| a.to_string());
        let json = format!(
            r#"{{"checkout_id":"{id}","user_id":7,"product_id":"{product}","total_amount":{amount},
                "datetime_occured":"2024-05-01 12:00:00.000"}}"#
        );
        let checkout = parse_checkout(json.as_bytes()).expect("valid checkout");
        let click = delay_secs.map(|d| ClickRef {
            click_id: Id::new(&format!("click-{id}")),
            time: EventTime::from_micros(checkout.time.as_micros() - d * MICROS),
        });
        AttributedRow {
            checkout,
            user_name: None,
            click,
            model,
            processed_at: EventTime::from_micros(0),
        }
    }

    pub(crate) fn touch(
        id: &str,
        product: &str,
        revenue: Option<i64>,
        model: AttributionModel,
    ) -> TouchRow {
        TouchRow {
            checkout_id: Id::new(id),
            user_id: 7,
            product_id: Id::new(product),
            checkout_time: EventTime::from_micros(10 * MICROS),
            click: ClickRef {
                click_id: Id::new("c"),
                time: EventTime::from_micros(MICROS),
            },
            model,
            credit: Decimal9(500_000_000),
            credited_revenue: revenue.map(Decimal9),
            processed_at: EventTime::from_micros(0),
        }
    }

    const G: i128 = 1_000_000_000;

    #[test]
    fn buckets_include_their_upper_bound() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(10 * MICROS), 0);
        assert_eq!(bucket_of(10 * MICROS + 1), 1);
        assert_eq!(bucket_of(3600 * MICROS), 9);
        assert_eq!(bucket_of(3600 * MICROS + 1), 10);
        assert_eq!(bucket_of(-5), 0);
        assert_eq!(bucket_of(i64::MAX), 10);
    }

    #[test]
    fn single_touch_rows_count_split_and_credit_total_amounts() {
        use AttributionModel::*;
        let mut r = Report::new();
        r.observe_row(&row("k1", "p1", Some(12.5), Some(5), FirstClick));
        r.observe_row(&row("k2", "p1", Some(0.1), Some(45), FirstClick));
        r.observe_row(&row("k3", "p2", Some(100.0), None, FirstClick));
        r.observe_row(&row("k4", "p2", None, Some(4000), FirstClick));
        r.observe_row(&row("k1", "p1", Some(12.5), Some(3000), LastClick));
        assert_eq!(r.models(), vec![FirstClick, LastClick]);
        assert_eq!(r.attributed_and_organic(FirstClick), (3, 1));
        assert_eq!(r.attributed_and_organic(LastClick), (1, 0));
        assert_eq!(
            r.revenue_split(FirstClick),
            (12 * G + G / 2 + G / 10, 100 * G)
        );
        assert_eq!(r.credited_revenue(FirstClick), 12_600_000_000);
        assert_eq!(r.credited_revenue(LastClick), 12_500_000_000);
        let h = r.delay_histogram(FirstClick);
        assert_eq!((h[0], h[2], h[10]), (1.0, 1.0, 1.0));
        assert_eq!(h.iter().sum::<f64>(), 3.0);
        assert_eq!(r.delay_histogram(LastClick)[9], 1.0);
        let top = r.top_products(FirstClick, 10);
        // p2's only attributed row has no amount; organic rows credit nothing.
        assert_eq!(top[0], (Id::new("p1"), 12_600_000_000, 0));
        assert_eq!(top[1], (Id::new("p2"), 0, 0));
        assert_eq!(r.stats(FirstClick).without_amount, 1);
    }

    #[test]
    fn multi_touch_credits_the_touches_not_the_rows() {
        use AttributionModel::*;
        let mut r = Report::new();
        r.observe_row(&row("k1", "p1", Some(10.0), Some(60), Linear));
        r.observe_touch(&touch("k1", "p1", Some(3_333_333_334), Linear));
        r.observe_touch(&touch("k1", "p1", Some(3_333_333_333), Linear));
        r.observe_touch(&touch("k1", "p1", Some(3_333_333_333), Linear));
        r.observe_touch(&touch("k2", "p9", None, Linear));
        r.observe_touch(&touch("k3", "p3", Some(2 * ONE), TimeDecay));
        assert_eq!(r.models(), vec![Linear, TimeDecay]);
        assert_eq!(r.credited_revenue(Linear), 10 * G);
        assert_eq!(r.touches(Linear), 4);
        assert_eq!(r.credited_revenue(TimeDecay), 2 * G);
        assert_eq!(r.attributed_and_organic(TimeDecay), (0, 0));
        let top = r.top_products(Linear, 10);
        assert_eq!(top, vec![(Id::new("p1"), 10 * G, 0)]);
        // The touches' delays (9 s each), weighted by their credit (0.5 each in `touch`); the
        // row's own click (60 s) does not count for a multi-touch model.
        let h = r.delay_histogram(Linear);
        assert_eq!(h[0], 2.0);
        assert_eq!(h.iter().sum::<f64>(), 2.0);
    }

    #[test]
    fn memory_does_not_grow_with_the_rows() {
        let mut r = Report::new();
        for i in 0..(5 * TOP_CAPACITY) {
            let k = format!("k{i}");
            let p = format!("p{i}");
            r.observe_row(&row(
                &k,
                &p,
                Some(1.0),
                Some(1),
                AttributionModel::FirstClick,
            ));
        }
        let s = r.stats(AttributionModel::FirstClick);
        assert!(s.top.len() < 2 * TOP_CAPACITY);
        assert_eq!(s.rows, 5 * TOP_CAPACITY as u64);
        assert!(s.top.floor() > 0, "the sums are no longer exact");
    }
}
