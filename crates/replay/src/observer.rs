//! [`RowObserver`]: a look at every row and touch as the pipeline writes them, for consumers
//! that keep aggregates rather than rows (the HTML report, `firstclick_report::Report`).
//!
//! A generic parameter of [`crate::Pipeline`] rather than a boxed trait object, so the default
//! ([`NoObserver`]) costs nothing, and implemented for `&mut T`, so the caller keeps the
//! observer and reads it after [`crate::Pipeline::finish`].

use firstclick_model::{AttributedRow, TouchRow};

/// Sees each output row and touch row just before it is written.
pub trait RowObserver {
    /// One row (one per checkout and model).
    fn observe_row(&mut self, row: &AttributedRow);
    /// One touch row of a multi-touch model (also when the touches are not written anywhere).
    fn observe_touch(&mut self, touch: &TouchRow);
    /// Whether it looks at anything: the partitioned replay keeps the rows it has already
    /// serialized only for an observer that does.
    fn wants_rows(&self) -> bool {
        true
    }
}

/// The observer that does nothing (the default).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoObserver;

impl RowObserver for NoObserver {
    fn observe_row(&mut self, _: &AttributedRow) {}
    fn observe_touch(&mut self, _: &TouchRow) {}
    fn wants_rows(&self) -> bool {
        false
    }
}

impl<T: RowObserver + ?Sized> RowObserver for &mut T {
    fn observe_row(&mut self, row: &AttributedRow) {
        (**self).observe_row(row);
    }
    fn observe_touch(&mut self, touch: &TouchRow) {
        (**self).observe_touch(touch);
    }
    fn wants_rows(&self) -> bool {
        (**self).wants_rows()
    }
}

impl RowObserver for firstclick_report::Report {
    fn observe_row(&mut self, row: &AttributedRow) {
        firstclick_report::Report::observe_row(self, row);
    }
    fn observe_touch(&mut self, touch: &TouchRow) {
        firstclick_report::Report::observe_touch(self, touch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CountingSink, Pipeline, UserNames};
    use firstclick_datagen::{Generator, GeneratorConfig};
    use firstclick_engine::EngineConfig;
    use firstclick_model::{parse_checkout, parse_click, AttributionModel, EventKind, ModelSet};

    #[derive(Default)]
    struct Counter {
        rows: u64,
        touches: u64,
        revenue_rows: u64,
    }

    impl RowObserver for Counter {
        fn observe_row(&mut self, row: &AttributedRow) {
            self.rows += 1;
            self.revenue_rows += u64::from(row.checkout.total_amount.is_some());
        }
        fn observe_touch(&mut self, _: &TouchRow) {
            self.touches += 1;
        }
    }

    /// The observer sees exactly the rows the sink gets and every touch, also with no
    /// touches output configured; the report built alongside agrees.
    #[test]
    fn observers_see_every_row_and_touch() {
        let config = EngineConfig {
            models: ModelSet::of(&[AttributionModel::FirstClick, AttributionModel::Linear]),
            ..EngineConfig::default()
        };
        let generator = Generator::new(GeneratorConfig {
            clicks: Some(2_000),
            seed: 3,
            organic_rate: 0.1,
            ..GeneratorConfig::default()
        });
        let mut counter = Counter::default();
        let mut report = firstclick_report::Report::new();
        let mut both = (&mut counter, &mut report);
        let mut p = Pipeline::new(config, UserNames::default(), CountingSink::default())
            .with_observer(&mut both);
        for e in generator {
            match e.kind {
                EventKind::Click => match parse_click(e.line.as_bytes()) {
                    Ok(c) => p.click(c).expect("counting sink"),
                    Err(_) => p.bad(),
                },
                EventKind::Checkout => match parse_checkout(e.line.as_bytes()) {
                    Ok(c) => p.checkout(c).expect("counting sink"),
                    Err(_) => p.bad(),
                },
            }
        }
        let (summary, sink) = p.finish().expect("counting sink never fails");
        assert!(summary.rows > 1_000 && summary.touches > 0, "{summary:?}");
        assert_eq!(counter.rows, sink.rows);
        assert_eq!(counter.rows, summary.rows);
        assert_eq!(counter.touches, summary.touches);
        let (a, o) = report.attributed_and_organic(AttributionModel::Linear);
        assert_eq!(2 * (a + o), summary.rows);
        assert_eq!(a, summary.attributed);
        assert!(o > 0);
        assert_eq!(report.touches(AttributionModel::Linear), summary.touches);
        // Rows per bucket (first click) and credits per bucket (linear) both add up to the
        // attributed checkouts.
        for m in [AttributionModel::FirstClick, AttributionModel::Linear] {
            let total: f64 = report.delay_histogram(m).iter().sum();
            assert!((total - a as f64).abs() < 1e-6, "{m:?}: {total} vs {a}");
        }
        // Both models credit the attributed checkouts' whole revenue (up to the exact
        // splitting, which sums back to the amounts).
        assert_eq!(
            report.credited_revenue(AttributionModel::FirstClick),
            report.credited_revenue(AttributionModel::Linear)
        );
    }

    impl<A: RowObserver, B: RowObserver> RowObserver for (A, B) {
        fn observe_row(&mut self, row: &AttributedRow) {
            self.0.observe_row(row);
            self.1.observe_row(row);
        }
        fn observe_touch(&mut self, touch: &TouchRow) {
            self.0.observe_touch(touch);
            self.1.observe_touch(touch);
        }
    }
}
