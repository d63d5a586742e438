//! Property test: random streams with bounded disorder, through the engine, compared with a
//! brute-force oracle written independently here (docs/design.md §1: for each distinct checkout
//! id, the window is the distinct clicks of the same user and product with
//! `T - lookback <= time <= T`; first click takes the smallest `(time, click_id)`, last click the
//! largest; linear, time decay and position based share the credit, in exact billionths whose
//! sum is 1, and the amount likewise).

use std::collections::{BTreeMap, HashSet};

use firstclick_engine::{Engine, EngineConfig};
use firstclick_model::{
    AttributionModel, Checkout, CheckoutDetails, Click, EventTime, Id, ModelSet,
};
use proptest::prelude::*;

const S: i64 = 1_000_000;
const LOOKBACK: i64 = 100 * S;
const DISORDER: i64 = 10 * S;
const HALF_LIFE: i64 = 30 * S;
const ONE: i64 = 1_000_000_000;

#[derive(Clone, Debug)]
enum Ev {
    Click(Click),
    Checkout(Checkout),
}

fn product(n: u8) -> Id {
    // Mix packed UUIDs and plain text ids.
    if n.is_multiple_of(2) {
        Id::new(&format!("00000000-0000-4000-8000-00000000000{n}"))
    } else {
        Id::new(&format!("p{n}"))
    }
}

fn event() -> impl Strategy<Value = (bool, u8, u8, i64, u8)> {
    // (is_click, user, product, time in units of 100 ms over 200 s, id): a narrow time range
    // so that windows hold several clicks, and ties of time happen.
    (any::<bool>(), 1u8..3, 0u8..3, 0i64..2_000, 0u8..40)
}

/// A stream: true events, then each given an arrival key `time + jitter` with
/// `0 <= jitter <= DISORDER`, sorted by that key. Some events are sent twice.
fn stream() -> impl Strategy<Value = Vec<Ev>> {
    proptest::collection::vec(
        (
            event(),
            0..=DISORDER,
            proptest::option::weighted(0.1, 0..=DISORDER),
        ),
        0..300,
    )
    .prop_map(|raw| {
        let mut keyed = Vec::new();
        for (i, ((is_click, user, prod, tenth, id), jitter, dup)) in raw.into_iter().enumerate() {
            let time = EventTime::from_micros(tenth * S / 10);
            let ev = if is_click {
                Ev::Click(Click {
                    // Ids repeat across events on purpose only via `dup`; make them unique.
                    click_id: Id::new(&format!("c{id:02}-{i}")),
                    user_id: i64::from(user),
                    product_id: product(prod),
                    time,
                })
            } else {
                Ev::Checkout(Checkout {
                    checkout_id: Id::new(&format!("k{i}")),
                    user_id: i64::from(user),
                    product_id: product(prod),
                    time,
                    // Cents, sometimes none at all.
                    total_amount: (id % 5 != 0).then(|| f64::from(id) * 13.37 + 0.01),
                    details: CheckoutDetails::default(),
                })
            };
            keyed.push((time.as_micros() + jitter, i * 2, ev.clone()));
            if let Some(j) = dup {
                keyed.push((time.as_micros() + j, i * 2 + 1, ev));
            }
        }
        keyed.sort_by_key(|(k, i, _)| (*k, *i));
        keyed.into_iter().map(|(_, _, e)| e).collect()
    })
}

/// What one model gives one checkout: the credited click's id, and the touches (click id,
/// credit in billionths, revenue in billionths).
type Answer = (Option<String>, Vec<(String, i64, Option<i64>)>);

/// Largest remainder, written here from its definition: floors, then one unit each to the
/// largest remainders, the earlier index first among equal remainders.
fn shares(total: i64, exact: &[f64]) -> Vec<i64> {
    let mut out: Vec<i64> = exact.iter().map(|e| e.floor() as i64).collect();
    let mut by_remainder: Vec<(f64, usize)> = exact
        .iter()
        .enumerate()
        .map(|(i, e)| (e - e.floor(), i))
        .collect();
    by_remainder.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut left = total - out.iter().sum::<i64>();
    let (mut k, n) = (0, out.len());
    while left > 0 {
        out[by_remainder[k % n].1] += 1;
        left -= 1;
        k += 1;
    }
    out
}

/// Exact integer shares where the model allows it (linear, position based), floats for time
/// decay.
fn credits(model: AttributionModel, n: usize, ages: &[i64], total: i64) -> Vec<i64> {
    let equal = |total: i64, n: usize| -> Vec<i64> {
        let (q, r) = (total / n as i64, (total % n as i64) as usize);
        (0..n).map(|i| q + i64::from(i < r)).collect()
    };
    match (model, n) {
        (_, 0) => Vec::new(),
        (AttributionModel::Linear, _) => equal(total, n),
        (AttributionModel::PositionBased, 1) => vec![total],
        (AttributionModel::PositionBased, 2) => equal(total, 2),
        (AttributionModel::PositionBased, _) => {
            // 40 % to each end: exact when `total` is a multiple of 5 (every total here is).
            let end = total / 5 * 2;
            let mut out = vec![end];
            out.extend(equal(total - 2 * end, n - 2));
            out.push(end);
            out
        }
        (AttributionModel::TimeDecay, _) => {
            let w: Vec<f64> = ages
                .iter()
                .map(|a| 0.5f64.powf(*a as f64 / HALF_LIFE as f64))
                .collect();
            let sum: f64 = w.iter().sum();
            let exact: Vec<f64> = w.iter().map(|x| x / sum * total as f64).collect();
            shares(total, &exact)
        }
        _ => unreachable!("single-touch models have no credits"),
    }
}

/// (checkout id, model) -> what the model gives, by brute force over the whole stream.
fn oracle(events: &[Ev], models: &[AttributionModel]) -> BTreeMap<(String, String), Answer> {
    let mut seen_clicks = HashSet::new();
    let clicks: Vec<&Click> = events
        .iter()
        .filter_map(|e| match e {
            Ev::Click(c) if seen_clicks.insert(c.click_id.to_string()) => Some(c),
            _ => None,
        })
        .collect();
    let mut rows = BTreeMap::new();
    let mut done = HashSet::new();
    for e in events {
        let Ev::Checkout(k) = e else { continue };
        let id = k.checkout_id.to_string();
        if !done.insert(id.clone()) {
            continue;
        }
        let mut window: Vec<(i64, String)> = clicks
            .iter()
            .filter(|c| {
                c.user_id == k.user_id
                    && c.product_id.to_string() == k.product_id.to_string()
                    && c.time.as_micros() >= k.time.as_micros() - LOOKBACK
                    && c.time.as_micros() <= k.time.as_micros()
            })
            .map(|c| (c.time.as_micros(), c.click_id.to_string()))
            .collect();
        window.sort();
        let ages: Vec<i64> = window.iter().map(|(t, _)| k.time.as_micros() - t).collect();
        // The amount in billionths, from its 9-decimal text.
        let amount = k.total_amount.map(|a| {
            let text = format!("{a:.9}");
            let (w, f) = text.split_once('.').expect("a decimal point");
            w.parse::<i64>().expect("digits") * ONE + f.parse::<i64>().expect("digits")
        });
        for &model in models {
            let answer: Answer = match model {
                AttributionModel::FirstClick => (window.first().map(|c| c.1.clone()), Vec::new()),
                AttributionModel::LastClick => (window.last().map(|c| c.1.clone()), Vec::new()),
                _ => {
                    let credit = credits(model, window.len(), &ages, ONE);
                    let revenue = amount.map(|a| credits(model, window.len(), &ages, a));
                    let touches: Vec<(String, i64, Option<i64>)> = window
                        .iter()
                        .enumerate()
                        .map(|(i, c)| (c.1.clone(), credit[i], revenue.as_ref().map(|r| r[i])))
                        .collect();
                    let mut best: Option<(i64, String)> = None;
                    for t in &touches {
                        if best.as_ref().is_none_or(|b| t.1 > b.0) {
                            best = Some((t.1, t.0.clone()));
                        }
                    }
                    (best.map(|b| b.1), touches)
                }
            };
            rows.insert((id.clone(), model.as_str().to_owned()), answer);
        }
    }
    rows
}

fn run_engine(
    events: &[Ev],
    models: &[AttributionModel],
    drain_every_event: bool,
) -> BTreeMap<(String, String), Answer> {
    let mut engine = Engine::new(EngineConfig {
        lookback_micros: LOOKBACK,
        out_of_orderness_micros: DISORDER,
        idle_timeout_micros: i64::MAX,
        models: ModelSet::of(models),
        half_life_micros: HALF_LIFE,
    });
    let mut out = Vec::new();
    for e in events {
        match e.clone() {
            Ev::Click(c) => {
                engine.on_click(c);
            }
            Ev::Checkout(c) => {
                engine.on_checkout(c);
            }
        }
        if drain_every_event {
            engine.drain_final(&mut out);
        }
    }
    engine.flush(&mut out);
    assert_eq!(
        engine.stats().late_clicks,
        0,
        "disorder within the bound is never late"
    );
    let mut rows = BTreeMap::new();
    for f in out {
        let id = f.checkout.checkout_id.to_string();
        let amount = f.checkout.total_amount;
        assert_eq!(
            f.attributions.len(),
            models.len(),
            "one attribution per model"
        );
        for a in f.attributions {
            if !a.touches.is_empty() {
                let sum: i64 = a.touches.iter().map(|t| t.credit.0).sum();
                assert_eq!(sum, ONE, "credits of {id} under {:?}", a.model);
                if let Some(total) = amount.and_then(firstclick_model::Decimal9::from_f64) {
                    let got: i64 = a
                        .touches
                        .iter()
                        .filter_map(|t| t.revenue)
                        .map(|r| r.0)
                        .sum();
                    assert_eq!(got, total.0, "revenue of {id} under {:?}", a.model);
                }
            }
            let answer: Answer = (
                a.click.map(|c| c.click_id.to_string()),
                a.touches
                    .into_iter()
                    .map(|t| {
                        (
                            t.click.click_id.to_string(),
                            t.credit.0,
                            t.revenue.map(|r| r.0),
                        )
                    })
                    .collect(),
            );
            assert!(
                rows.insert((id.clone(), a.model.as_str().to_owned()), answer)
                    .is_none(),
                "two rows for {id}"
            );
        }
    }
    rows
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn engine_matches_brute_force_first_click(events in stream()) {
        let models = [AttributionModel::FirstClick];
        let expected = oracle(&events, &models);
        prop_assert_eq!(run_engine(&events, &models, true), expected.clone());
        prop_assert_eq!(run_engine(&events, &models, false), expected);
    }

    #[test]
    fn engine_matches_brute_force_last_click(events in stream()) {
        let models = [AttributionModel::LastClick];
        prop_assert_eq!(run_engine(&events, &models, true), oracle(&events, &models));
    }

    #[test]
    fn every_model_at_once_matches_brute_force(events in stream()) {
        let models = AttributionModel::ALL;
        let expected = oracle(&events, &models);
        let all = run_engine(&events, &models, true);
        prop_assert_eq!(&all, &expected);
        // All models at once give the first-click rows first click alone gives.
        let alone = run_engine(&events, &[AttributionModel::FirstClick], true);
        let first: BTreeMap<_, _> = all
            .into_iter()
            .filter(|((_, m), _)| m == "first_click")
            .collect();
        prop_assert_eq!(first, alone);
    }
}

fn checkout_at(id: &str, secs: i64, amount: Option<f64>) -> Ev {
    Ev::Checkout(Checkout {
        checkout_id: Id::new(id),
        user_id: 1,
        product_id: Id::new("p"),
        time: EventTime::from_micros(secs * S),
        total_amount: amount,
        details: CheckoutDetails::default(),
    })
}

fn click_at(id: &str, secs: i64) -> Ev {
    Ev::Click(Click {
        click_id: Id::new(id),
        user_id: 1,
        product_id: Id::new("p"),
        time: EventTime::from_micros(secs * S),
    })
}

fn touches_of(events: &[Ev], model: AttributionModel) -> Vec<(String, i64, Option<i64>)> {
    let rows = run_engine(events, &[model], true);
    rows.into_values().next().expect("one checkout").1
}

#[test]
fn one_click_gets_everything_and_two_share_by_the_model() {
    let one = [click_at("a", 10), checkout_at("k", 20, Some(9.99))];
    for model in [
        AttributionModel::Linear,
        AttributionModel::TimeDecay,
        AttributionModel::PositionBased,
    ] {
        assert_eq!(
            touches_of(&one, model),
            vec![("a".into(), ONE, Some(9_990_000_000))],
            "{model:?}"
        );
    }
    let two = [
        click_at("a", 10),
        click_at("b", 40),
        checkout_at("k", 70, Some(1.0)),
    ];
    assert_eq!(
        touches_of(&two, AttributionModel::PositionBased),
        vec![
            ("a".into(), ONE / 2, Some(ONE / 2)),
            ("b".into(), ONE / 2, Some(ONE / 2))
        ]
    );
    // One half-life apart (30 s): the newer click weighs twice the older.
    let decay = touches_of(&two, AttributionModel::TimeDecay);
    assert_eq!(decay[0].1, 333_333_333);
    assert_eq!(decay[1].1, 666_666_667);
}

#[test]
fn ties_and_duplicates() {
    // Two clicks at the same time are ordered by id; a duplicate counts once.
    let events = [
        click_at("b", 10),
        click_at("a", 10),
        click_at("a", 10),
        click_at("c", 50),
        checkout_at("k", 60, Some(10.0)),
    ];
    assert_eq!(
        touches_of(&events, AttributionModel::Linear),
        vec![
            ("a".into(), 333_333_334, Some(3_333_333_334)),
            ("b".into(), 333_333_333, Some(3_333_333_333)),
            ("c".into(), 333_333_333, Some(3_333_333_333)),
        ]
    );
    assert_eq!(
        touches_of(&events, AttributionModel::PositionBased),
        vec![
            ("a".into(), 400_000_000, Some(4_000_000_000)),
            ("b".into(), 200_000_000, Some(2_000_000_000)),
            ("c".into(), 400_000_000, Some(4_000_000_000)),
        ]
    );
    // The credited click of an equal split is the earliest.
    let rows = run_engine(&events, &[AttributionModel::Linear], true);
    assert_eq!(rows.values().next().expect("a row").0.as_deref(), Some("a"));
}
