//! The attribution models (docs/design.md §1): given the clicks of a checkout's window, sorted
//! by `(time, click_id)`, who gets the credit. Pure functions; the engine calls
//! [`attribute`] once per final checkout.

use firstclick_model::{apportion, AttributionModel, ClickRef, Decimal9, EventTime, ModelSet};

use crate::config::EngineConfig;

/// A click's share under a multi-touch model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Touch {
    /// The click.
    pub click: ClickRef,
    /// Its share of the checkout; the shares of one attribution sum to exactly 1.
    pub credit: Decimal9,
    /// Its share of the checkout's amount; the shares sum to exactly the amount (rounded to 9
    /// decimals). `None` without an amount.
    pub revenue: Option<Decimal9>,
}

/// What one model makes of one checkout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attribution {
    /// The model.
    pub model: AttributionModel,
    /// The credited click: the chosen one (first, last click), or for a multi-touch model the
    /// one with the largest credit (ties: the earlier). `None`: organic.
    pub click: Option<ClickRef>,
    /// Multi-touch models: every click of the window with its share, in window order; empty
    /// for single-touch models and for organic checkouts.
    pub touches: Vec<Touch>,
}

/// The weights a multi-touch model gives the clicks of a window (in window order) for a
/// checkout at `at`.
fn weights(
    model: AttributionModel,
    window: &[ClickRef],
    at: EventTime,
    half_life: i64,
) -> Vec<f64> {
    let n = window.len();
    match model {
        AttributionModel::Linear => vec![1.0; n],
        AttributionModel::TimeDecay => window
            .iter()
            .map(|c| {
                let age = at.as_micros().saturating_sub(c.time.as_micros()) as f64;
                (-(age / half_life.max(1) as f64)).exp2()
            })
            .collect(),
        AttributionModel::PositionBased => match n {
            0 => Vec::new(),
            1 => vec![1.0],
            2 => vec![0.5, 0.5],
            _ => {
                let middle = 0.2 / (n - 2) as f64;
                let mut w = vec![middle; n];
                w[0] = 0.4;
                w[n - 1] = 0.4;
                w
            }
        },
        AttributionModel::FirstClick | AttributionModel::LastClick => vec![0.0; n],
    }
}

/// Every model of `models` applied to one checkout at `at` with amount `amount`, whose window
/// holds `window` (sorted by `(time, click_id)`, without duplicates).
pub(crate) fn attribute(
    config: &EngineConfig,
    models: ModelSet,
    window: &[ClickRef],
    at: EventTime,
    amount: Option<f64>,
) -> Vec<Attribution> {
    models
        .iter()
        .map(|model| match model {
            AttributionModel::FirstClick => Attribution {
                model,
                click: window.first().cloned(),
                touches: Vec::new(),
            },
            AttributionModel::LastClick => Attribution {
                model,
                click: window.last().cloned(),
                touches: Vec::new(),
            },
            _ => multi_touch(model, window, at, amount, config.half_life_micros),
        })
        .collect()
}

fn multi_touch(
    model: AttributionModel,
    window: &[ClickRef],
    at: EventTime,
    amount: Option<f64>,
    half_life: i64,
) -> Attribution {
    let w = weights(model, window, at, half_life);
    let credits = apportion(firstclick_model::touch::ONE, &w);
    let revenue = amount
        .and_then(Decimal9::from_f64)
        .map(|total| apportion(total.0, &w));
    let touches: Vec<Touch> = window
        .iter()
        .zip(&credits)
        .enumerate()
        .map(|(i, (click, credit))| Touch {
            click: click.clone(),
            credit: Decimal9(*credit),
            revenue: revenue.as_ref().map(|r| Decimal9(r[i])),
        })
        .collect();
    // The largest credit; among equals the earliest (max_by_key keeps the last maximum, so
    // walk backwards).
    let click = touches
        .iter()
        .rev()
        .max_by_key(|t| t.credit)
        .map(|t| t.click.clone());
    Attribution {
        model,
        click,
        touches,
    }
}
