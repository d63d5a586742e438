//! The attribution rule and event-time semantics of docs/design.md §1 and §3, one edge case
//! per test.

use firstclick_engine::{
    CheckoutOutcome, ClickOutcome, Engine, EngineConfig, EngineStats, FinalCheckout, Progress,
    Restorer,
};
use firstclick_model::{
    AttributionModel, Checkout, CheckoutDetails, Click, EventTime, Id, ModelSet,
};

const S: i64 = 1_000_000;
const HOUR: i64 = 3600 * S;

fn t(secs: i64) -> EventTime {
    EventTime::from_micros(secs * S)
}

fn click(id: &str, user: i64, product: &str, at: EventTime) -> Click {
    Click {
        click_id: Id::new(id),
        user_id: user,
        product_id: Id::new(product),
        time: at,
    }
}

fn checkout(id: &str, user: i64, product: &str, at: EventTime) -> Checkout {
    Checkout {
        checkout_id: Id::new(id),
        user_id: user,
        product_id: Id::new(product),
        time: at,
        total_amount: None,
        details: CheckoutDetails::default(),
    }
}

/// Feeds clicks then checkouts, flushes, returns checkout id -> attributed click id.
fn run(clicks: Vec<Click>, checkouts: Vec<Checkout>) -> Vec<(String, Option<String>)> {
    let mut e = Engine::new(EngineConfig::default());
    for c in clicks {
        e.on_click(c);
    }
    for c in checkouts {
        e.on_checkout(c);
    }
    let mut out = Vec::new();
    e.flush(&mut out);
    ids(&out)
}

fn ids(out: &[FinalCheckout]) -> Vec<(String, Option<String>)> {
    out.iter()
        .map(|f| {
            (
                f.checkout.checkout_id.to_string(),
                f.click().map(|c| c.click_id.to_string()),
            )
        })
        .collect()
}

fn some(s: &str) -> Option<String> {
    Some(s.to_string())
}

#[test]
fn window_is_inclusive_at_both_ends() {
    let at = t(10_000);
    let got = run(
        vec![click("at-start", 1, "p", at.offset(-HOUR))],
        vec![checkout("k", 1, "p", at)],
    );
    assert_eq!(got, vec![("k".into(), some("at-start"))]);
    let got = run(
        vec![click("at-end", 1, "p", at)],
        vec![checkout("k", 1, "p", at)],
    );
    assert_eq!(got, vec![("k".into(), some("at-end"))]);
}

#[test]
fn clicks_before_the_window_are_ignored() {
    let at = t(10_000);
    let got = run(
        vec![click("too-old", 1, "p", at.offset(-HOUR - 1))],
        vec![checkout("k", 1, "p", at)],
    );
    assert_eq!(got, vec![("k".into(), None)]);
}

#[test]
fn clicks_after_the_checkout_are_ignored() {
    let at = t(10_000);
    let got = run(
        vec![
            click("after", 1, "p", at.offset(1)),
            click("before", 1, "p", at.offset(-5 * S)),
        ],
        vec![checkout("k", 1, "p", at)],
    );
    assert_eq!(got, vec![("k".into(), some("before"))]);
}

#[test]
fn first_click_wins_and_ties_break_on_click_id() {
    let at = t(10_000);
    let got = run(
        vec![
            click("b", 1, "p", at.offset(-60 * S)),
            click("c", 1, "p", at.offset(-30 * S)),
            click("a", 1, "p", at.offset(-60 * S)),
        ],
        vec![checkout("k", 1, "p", at)],
    );
    assert_eq!(got, vec![("k".into(), some("a"))]);
}

#[test]
fn last_click_model_takes_the_latest_in_the_window() {
    let at = t(10_000);
    let mut e = Engine::new(EngineConfig {
        models: ModelSet::of(&[AttributionModel::LastClick]),
        ..EngineConfig::default()
    });
    e.on_click(click("early", 1, "p", at.offset(-60 * S)));
    e.on_click(click("late-a", 1, "p", at.offset(-10 * S)));
    e.on_click(click("late-b", 1, "p", at.offset(-10 * S)));
    e.on_click(click("after", 1, "p", at.offset(S)));
    e.on_checkout(checkout("k", 1, "p", at));
    let mut out = Vec::new();
    e.flush(&mut out);
    assert_eq!(ids(&out), vec![("k".into(), some("late-b"))]);
    assert_eq!(out[0].attributions[0].model, AttributionModel::LastClick);
}

#[test]
fn repeat_purchases_each_use_their_own_window() {
    let got = run(
        vec![
            click("c1", 1, "p", t(1_000)),
            click("c2", 1, "p", t(1_000 + 7_200)),
        ],
        vec![
            checkout("k1", 1, "p", t(1_100)),
            checkout("k2", 1, "p", t(1_200)),
            checkout("k3", 1, "p", t(1_000 + 7_300)),
        ],
    );
    assert_eq!(
        got,
        vec![
            ("k1".into(), some("c1")),
            ("k2".into(), some("c1")),
            ("k3".into(), some("c2")),
        ]
    );
}

#[test]
fn user_and_product_never_collide_like_concatenated_keys() {
    // The Beam original keyed on str(user)+str(product): 1+"23" == 12+"3".
    let got = run(
        vec![click("c", 1, "23", t(100))],
        vec![checkout("k", 12, "3", t(200))],
    );
    assert_eq!(got, vec![("k".into(), None)]);
}

#[test]
fn checkouts_without_clicks_still_produce_a_row() {
    let got = run(vec![], vec![checkout("organic", 5, "p", t(100))]);
    assert_eq!(got, vec![("organic".into(), None)]);
}

#[test]
fn duplicates_are_stored_once_and_emitted_once() {
    let mut e = Engine::new(EngineConfig::default());
    assert_eq!(e.on_click(click("c", 1, "p", t(100))), ClickOutcome::Stored);
    assert_eq!(
        e.on_click(click("c", 1, "p", t(100))),
        ClickOutcome::Duplicate
    );
    assert_eq!(e.live_clicks(), 1);
    assert_eq!(
        e.on_checkout(checkout("k", 1, "p", t(200))),
        CheckoutOutcome::Pending
    );
    assert_eq!(
        e.on_checkout(checkout("k", 1, "p", t(200))),
        CheckoutOutcome::Duplicate
    );
    // A duplicate arriving after the row was written produces nothing either.
    e.on_click(click("later", 9, "q", t(300)));
    let mut out = Vec::new();
    e.drain_final(&mut out);
    assert_eq!(ids(&out), vec![("k".into(), some("c"))]);
    assert_eq!(
        e.on_checkout(checkout("k", 1, "p", t(200))),
        CheckoutOutcome::Duplicate
    );
    e.flush(&mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(e.stats().duplicate_clicks, 1);
    assert_eq!(e.stats().duplicate_checkouts, 2);
}

#[test]
fn checkout_waits_for_a_click_that_arrives_after_it_within_the_bound() {
    let mut e = Engine::new(EngineConfig::default());
    let mut out = Vec::new();
    e.on_click(click("other", 2, "x", t(1_000)));
    e.on_checkout(checkout("k", 1, "p", t(1_005)));
    e.drain_final(&mut out);
    assert!(
        out.is_empty(),
        "the watermark (985 s) has not passed 1005 s"
    );
    // Clicks up to 15 s behind the newest one are still on time.
    e.on_click(click("newest", 2, "x", t(1_019)));
    e.on_click(click("mine", 1, "p", t(1_004)));
    e.drain_final(&mut out);
    assert!(
        out.is_empty(),
        "the watermark (1004 s) has not passed 1005 s"
    );
    e.on_click(click("push", 2, "x", t(1_021)));
    e.drain_final(&mut out);
    assert_eq!(ids(&out), vec![("k".into(), some("mine"))]);
}

#[test]
fn a_click_behind_the_watermark_is_late_and_does_not_change_written_rows() {
    let mut e = Engine::new(EngineConfig::default());
    let mut out = Vec::new();
    e.on_checkout(checkout("k", 1, "p", t(1_000)));
    e.on_click(click("push", 2, "x", t(1_100)));
    e.drain_final(&mut out);
    assert_eq!(ids(&out), vec![("k".into(), None)]);
    // Arrives 100 s behind the newest click: the row is already written.
    assert_eq!(
        e.on_click(click("late", 1, "p", t(999))),
        ClickOutcome::Late { stored: true }
    );
    assert_eq!(e.stats().late_clicks, 1);
    e.flush(&mut out);
    assert_eq!(out.len(), 1);
    // Still used for a checkout that is not final yet.
    e.on_checkout(checkout("k2", 1, "p", t(1_090)));
    e.on_click(click("push2", 2, "x", t(1_200)));
    e.drain_final(&mut out);
    assert_eq!(ids(&out[1..]), vec![("k2".into(), some("late"))]);
    // A click older than everything kept is dropped.
    assert_eq!(
        e.on_click(click("ancient", 1, "p", t(1_200 - 15 - 3600 - 15 - 1))),
        ClickOutcome::Late { stored: false }
    );
}

#[test]
fn idle_clicks_let_the_watermark_follow_processing_time() {
    let cfg = EngineConfig::default();
    let mut e = Engine::new(cfg);
    let mut out = Vec::new();
    e.on_click(click("c", 1, "p", t(1_000)));
    e.on_checkout(checkout("k", 1, "p", t(1_010)));
    e.tick(0);
    e.drain_final(&mut out);
    assert!(out.is_empty());
    e.tick(cfg.idle_timeout_micros - 1);
    e.drain_final(&mut out);
    assert!(out.is_empty(), "not idle long enough yet");
    e.tick(cfg.idle_timeout_micros);
    // 985 s + 30 s of idle processing time = 1015 s > 1010 s.
    assert_eq!(e.watermark(), Some(t(1_015)));
    e.drain_final(&mut out);
    assert_eq!(ids(&out), vec![("k".into(), some("c"))]);
    // A new click resets the idle clock; the watermark never goes back.
    e.on_click(click("c2", 1, "p", t(1_001)));
    e.tick(cfg.idle_timeout_micros + 1);
    assert_eq!(e.watermark(), Some(t(1_015)));
}

#[test]
fn a_stream_that_starts_with_checkouts_does_not_make_first_clicks_late() {
    let cfg = EngineConfig::default();
    let mut e = Engine::new(cfg);
    let mut out = Vec::new();
    e.on_checkout(checkout("k", 1, "p", t(5_000)));
    e.tick(0);
    e.tick(cfg.idle_timeout_micros / 2);
    e.drain_final(&mut out);
    assert!(out.is_empty());
    assert_eq!(e.watermark(), None);
    assert_eq!(
        e.on_click(click("c", 1, "p", t(4_990))),
        ClickOutcome::Stored
    );
    e.on_click(click("push", 2, "x", t(5_100)));
    e.drain_final(&mut out);
    assert_eq!(ids(&out), vec![("k".into(), some("c"))]);
}

#[test]
fn checkouts_alone_are_released_after_the_idle_timeout() {
    let cfg = EngineConfig::default();
    let mut e = Engine::new(cfg);
    let mut out = Vec::new();
    e.on_checkout(checkout("k", 1, "p", t(5_000)));
    e.tick(0);
    e.tick(cfg.idle_timeout_micros);
    e.drain_final(&mut out);
    assert_eq!(ids(&out), vec![("k".into(), None)]);
    // It never jumped to any wall clock: 5000 s - 15 s + 30 s.
    assert_eq!(e.watermark(), Some(t(5_015)));
}

#[test]
fn state_is_bounded_by_rate_times_retention() {
    let cfg = EngineConfig::default();
    let mut e = Engine::new(cfg);
    let mut out = Vec::new();
    // One click per second for 10 hours of event time.
    for i in 0..36_000i64 {
        e.on_click(click(&format!("c{i}"), i % 50, "p", t(i)));
        e.drain_final(&mut out);
    }
    let retention = 3600 + 15 + 15;
    let sweep_slack = 3600 / 8;
    assert!(
        e.live_clicks() <= (retention + sweep_slack) as usize + 1,
        "{} live clicks",
        e.live_clicks()
    );
    assert!(e.live_clicks() >= retention as usize);
    assert_eq!(e.stats().evicted_clicks as usize + e.live_clicks(), 36_000);
}

#[test]
fn snapshot_restore_continues_identically() {
    let mut a = Engine::new(EngineConfig::default());
    let mut out_a = Vec::new();
    for i in 0..200i64 {
        a.on_click(click(
            &format!("c{i}"),
            i % 7,
            &format!("p{}", i % 5),
            t(i * 30),
        ));
        if i % 3 == 0 {
            a.on_checkout(checkout(
                &format!("k{i}"),
                i % 7,
                &format!("p{}", i % 5),
                t(i * 30 + 5),
            ));
        }
        a.drain_final(&mut out_a);
    }
    let snap = a.snapshot();
    let json = serde_json::to_string(&snap).expect("snapshot serializes");
    let mut b = Engine::restore(serde_json::from_str(&json).expect("snapshot deserializes"));
    assert_eq!(b.snapshot(), snap);
    let mut out_b = Vec::new();
    for i in 200..300i64 {
        for (e, out) in [(&mut a, &mut out_a), (&mut b, &mut out_b)] {
            e.on_click(click(
                &format!("c{i}"),
                i % 7,
                &format!("p{}", i % 5),
                t(i * 30),
            ));
            e.on_checkout(checkout(
                &format!("k{i}"),
                i % 7,
                &format!("p{}", i % 5),
                t(i * 30 + 5),
            ));
            e.on_checkout(checkout(&format!("k{}", i - 150), 0, "p0", t(0)));
            e.drain_final(out);
        }
    }
    a.flush(&mut out_a);
    b.flush(&mut out_b);
    let tail_a = &out_a[out_a.len() - out_b.len()..];
    assert!(!out_b.is_empty());
    assert_eq!(tail_a, &out_b[..]);
    // Every counter continues identically, but for the clicks freed: a snapshot leaves out the
    // clicks below the horizon whose memory was not freed yet, so `b` never frees them.
    let freed = |e: &Engine| EngineStats {
        evicted_clicks: 0,
        ..*e.stats()
    };
    assert_eq!(freed(&a), freed(&b));
}

#[test]
fn the_watermark_follows_the_slowest_active_stream() {
    let cfg = EngineConfig::default();
    let mut e = Engine::with_streams(cfg, 2);
    let mut out = Vec::new();
    // Stream 0 races ahead; stream 1 has not delivered yet: no watermark.
    e.on_click_from(0, click("a-far", 1, "x", t(2_000)));
    assert_eq!(e.watermark(), None);
    e.on_checkout(checkout("k", 1, "p", t(1_000)));
    // Stream 1 delivers older clicks in its own order: none is late.
    for (i, at) in [990, 995, 1_000].into_iter().enumerate() {
        let outcome = e.on_click_from(1, click(&format!("b{i}"), 1, "p", t(at)));
        assert_eq!(outcome, ClickOutcome::Stored);
    }
    assert_eq!(e.watermark(), Some(t(1_000 - 15)));
    e.drain_final(&mut out);
    assert!(out.is_empty());
    e.on_click_from(1, click("b-push", 2, "y", t(1_016)));
    e.drain_final(&mut out);
    assert_eq!(ids(&out), vec![("k".into(), some("b0"))]);
}

#[test]
fn an_idle_source_stops_holding_the_watermark() {
    let cfg = EngineConfig::default();
    let mut e = Engine::with_streams(cfg, 3);
    e.tick(0);
    e.on_click_from(0, click("a", 1, "x", t(2_000)));
    e.on_click_from(1, click("b", 1, "x", t(1_000)));
    assert_eq!(e.watermark(), None, "stream 2 has not delivered");
    e.tick(1);
    e.on_click_from(0, click("a2", 1, "x", t(2_001)));
    e.tick(cfg.idle_timeout_micros);
    // Stream 2 never delivered: idle now. Stream 1 was active at tick 1: not yet.
    assert_eq!(e.watermark(), Some(t(1_000 - 15)));
    e.tick(cfg.idle_timeout_micros + 1);
    // Stream 1 went quiet too: stream 0 alone sets the watermark.
    assert_eq!(e.watermark(), Some(t(2_001 - 15)));
}

#[test]
fn a_held_watermark_lets_redelivered_clicks_in_on_time() {
    let cfg = EngineConfig::default();
    let mut e = Engine::new(cfg);
    let mut out = Vec::new();
    e.on_click(click("before", 9, "x", t(1_000)));
    e.hold_watermark_until(10 * S);
    e.tick(0);
    e.on_checkout(checkout("k", 1, "p", t(1_010)));
    // Newer clicks first, then (a lease later) the click the crashed worker had in flight.
    e.on_click(click("newer", 9, "x", t(1_500)));
    assert_eq!(e.watermark(), Some(t(1_000 - 15)), "held");
    assert_eq!(
        e.on_click(click("mine", 1, "p", t(1_005))),
        ClickOutcome::Stored
    );
    e.tick(5 * S);
    e.drain_final(&mut out);
    assert!(out.is_empty());
    e.tick(10 * S);
    assert_eq!(e.watermark(), Some(t(1_500 - 15)), "released");
    e.drain_final(&mut out);
    assert_eq!(ids(&out), vec![("k".into(), some("mine"))]);
}

#[test]
fn after_a_restore_with_every_stream_quiet_the_watermark_follows_the_clicks_seen() {
    // Every earlier life died during its recovery hold: the checkpoint's watermark is far
    // behind the newest click it holds. Nothing new arrives after this restart (all clicks
    // were acknowledged before), so no stream delivers: once the hold is over and the streams
    // are idle, the clicks already seen still justify the watermark.
    let cfg = EngineConfig::default();
    let mut r = Restorer::new(cfg);
    r.progress(Progress {
        max_click_time: Some(t(2_000)),
        watermark: Some(t(985)),
        last_sweep: None,
        stats: EngineStats::default(),
    });
    let mut e = r.finish();
    e.expect_streams(2);
    e.hold_watermark_until(10 * S);
    e.tick(0);
    e.on_checkout(checkout("k", 1, "p", t(1_500)));
    e.tick(10 * S);
    e.tick(10 * S + cfg.idle_timeout_micros + 1);
    assert_eq!(e.watermark(), Some(t(2_000 - 15)));
    let mut out = Vec::new();
    e.drain_final(&mut out);
    assert_eq!(ids(&out), vec![("k".into(), None)]);
}

#[test]
fn after_a_quiet_start_every_source_gets_a_chance_before_one_sets_the_watermark() {
    let cfg = EngineConfig::default();
    let mut e = Engine::with_streams(cfg, 2);
    let mut out = Vec::new();
    // Nothing arrives for longer than the idle timeout: both streams go idle.
    e.tick(0);
    e.tick(cfg.idle_timeout_micros + 1);
    e.on_checkout(checkout("k", 1, "p", t(1_000)));
    // Stream 0 starts with newer clicks; stream 1 must still be waited for.
    e.on_click_from(0, click("a", 9, "x", t(1_100)));
    assert_eq!(e.watermark(), None);
    assert_eq!(
        e.on_click_from(1, click("b", 1, "p", t(995))),
        ClickOutcome::Stored
    );
    e.drain_final(&mut out);
    e.on_click_from(1, click("b2", 9, "x", t(1_100)));
    e.drain_final(&mut out);
    assert_eq!(ids(&out), vec![("k".into(), some("b"))]);
}
