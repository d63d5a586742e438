//! Property test: random streams with bounded disorder, through the engine, compared with a
//! brute-force oracle written independently here (docs/design.md §1: for each distinct checkout
//! id, the smallest `(time, click_id)` among the distinct clicks of the same user and product
//! with `T - lookback <= time <= T`).

use std::collections::{BTreeMap, HashSet};

use firstclick_engine::{Engine, EngineConfig};
use firstclick_model::{AttributionModel, Checkout, Click, EventTime, Id};
use proptest::prelude::*;

const S: i64 = 1_000_000;
const LOOKBACK: i64 = 100 * S;
const DISORDER: i64 = 10 * S;

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
    // (is_click, user, product, time in units of 100 ms over 1000 s, id)
    (any::<bool>(), 1u8..4, 0u8..4, 0i64..10_000, 0u8..40)
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
                    payment_method: None,
                    total_amount: None,
                    shipping_address: None,
                    billing_address: None,
                    user_agent: None,
                    ip_address: None,
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

/// Checkout id -> attributed (click time, click id), by brute force over the whole stream.
fn oracle(events: &[Ev], model: AttributionModel) -> BTreeMap<String, Option<(i64, String)>> {
    let mut seen_clicks = HashSet::new();
    let clicks: Vec<&Click> = events
        .iter()
        .filter_map(|e| match e {
            Ev::Click(c) if seen_clicks.insert(c.click_id.to_string()) => Some(c),
            _ => None,
        })
        .collect();
    let mut rows = BTreeMap::new();
    for e in events {
        let Ev::Checkout(k) = e else { continue };
        let id = k.checkout_id.to_string();
        if rows.contains_key(&id) {
            continue;
        }
        let candidates = clicks.iter().filter(|c| {
            c.user_id == k.user_id
                && c.product_id.to_string() == k.product_id.to_string()
                && c.time.as_micros() >= k.time.as_micros() - LOOKBACK
                && c.time.as_micros() <= k.time.as_micros()
        });
        let keyed = candidates.map(|c| (c.time.as_micros(), c.click_id.to_string()));
        let best = match model {
            AttributionModel::FirstClick => keyed.min(),
            AttributionModel::LastClick => keyed.max(),
        };
        rows.insert(id, best);
    }
    rows
}

fn run_engine(
    events: &[Ev],
    model: AttributionModel,
    drain_every_event: bool,
) -> BTreeMap<String, Option<(i64, String)>> {
    let mut engine = Engine::new(EngineConfig {
        lookback_micros: LOOKBACK,
        out_of_orderness_micros: DISORDER,
        idle_timeout_micros: i64::MAX,
        model,
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
        let click = f
            .click
            .map(|c| (c.time.as_micros(), c.click_id.to_string()));
        assert!(
            rows.insert(id.clone(), click).is_none(),
            "two rows for {id}"
        );
    }
    rows
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn engine_matches_brute_force_first_click(events in stream()) {
        let expected = oracle(&events, AttributionModel::FirstClick);
        prop_assert_eq!(run_engine(&events, AttributionModel::FirstClick, true), expected.clone());
        prop_assert_eq!(run_engine(&events, AttributionModel::FirstClick, false), expected);
    }

    #[test]
    fn engine_matches_brute_force_last_click(events in stream()) {
        let expected = oracle(&events, AttributionModel::LastClick);
        prop_assert_eq!(run_engine(&events, AttributionModel::LastClick, true), expected);
    }
}
