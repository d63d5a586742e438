//! Base pieces and deltas written from an engine decode back into the same engine, with UUID
//! and text ids, single and repeated clicks per key, pending and remembered checkouts; and the
//! format version and magic are checked.

use firstclick_checkpoint::{apply, describe, ChangeLog, ElementKind, FormatError, PieceWriter};
use firstclick_engine::{Engine, EngineConfig, Restorer};
use firstclick_model::{Checkout, Click, DetailTexts, EventTime, Id};

fn engine_with_state(n: u64) -> Engine {
    let mut e = Engine::new(EngineConfig::default());
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut rnd = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..n {
        let product = if i % 3 == 0 {
            Id::Text(format!("product-{}", i % 7).into())
        } else {
            Id::Uuid([rnd(), rnd()])
        };
        let click_id = if i % 5 == 0 {
            Id::Text(format!("click-{i}").into())
        } else {
            Id::Uuid([rnd(), rnd()])
        };
        e.on_click(Click {
            click_id,
            user_id: (i % 50) as i64 - 3,
            product_id: product.clone(),
            time: EventTime::from_micros(1_700_000_000_000_000 + i as i64 * 1000),
        });
        if i % 4 == 0 {
            e.on_checkout(Checkout {
                checkout_id: Id::Uuid([rnd(), rnd()]),
                user_id: (i % 50) as i64,
                product_id: product,
                time: EventTime::from_micros(1_700_000_000_000_000 + i as i64 * 1000 - 20_000_000),
                total_amount: Some(i as f64 / 7.0),
                details: DetailTexts {
                    payment_method: Some("card"),
                    shipping_address: None,
                    billing_address: Some("somewhere"),
                    user_agent: None,
                    ip_address: Some("::1"),
                }
                .into(),
            });
        }
    }
    e
}

#[test]
fn pieces_restore_the_engine() {
    let engine = engine_with_state(20_000);
    assert!(engine.pending_checkouts() > 0 && engine.live_clicks() > 10_000);
    for piece_bytes in [1, 50_000, 16 << 20] {
        let mut writer = PieceWriter::new(42, piece_bytes);
        let mut pieces = Vec::new();
        while !writer.is_done() {
            pieces.extend(writer.step(&engine));
        }
        assert_eq!(writer.pieces(), pieces.len() as u64);
        let mut r = Restorer::new(*engine.config());
        for p in &pieces {
            apply(p, &mut r).expect("piece decodes");
        }
        let (kind, head) = describe(pieces.last().expect("pieces")).expect("head");
        assert_eq!(kind, ElementKind::BaseHead);
        assert_eq!(head.started_at, Some(42));
        assert_eq!(
            r.finish().snapshot(),
            engine.snapshot(),
            "piece_bytes {piece_bytes}"
        );
    }
}

#[test]
fn deltas_replay_the_changes() {
    let mut live = Engine::new(EngineConfig::default());
    let source = engine_with_state(5_000);
    let mut log = ChangeLog::new();
    for (key, click) in source.clicks().iter() {
        let c = Click {
            click_id: click.click_id.clone(),
            user_id: key.user_id,
            product_id: key.product_id.clone(),
            time: click.time,
        };
        log.click(&c);
        live.on_click(c);
    }
    for c in source.pending_in_order() {
        log.checkout(&c);
        live.on_checkout(c);
    }
    let deltas = log.seal(&live.progress(), true);
    assert_eq!(deltas.len(), 1);
    let mut r = Restorer::new(*live.config());
    let applied = apply(&deltas[0], &mut r).expect("delta decodes");
    assert!(applied.clean_shutdown);
    assert_eq!(applied.clicks as usize, source.live_clicks());
    assert_eq!(r.finish().snapshot(), live.snapshot());
}

#[test]
fn foreign_bytes_and_other_versions_are_refused() {
    let e = apply(
        b"{\"version\":1}",
        &mut Restorer::new(EngineConfig::default()),
    )
    .expect_err("JSON");
    assert!(matches!(e, FormatError::NotACheckpoint { .. }), "{e}");
    let mut delta = ChangeLog::new().seal(&Default::default(), false).remove(0);
    delta[2] = 9;
    let e = apply(&delta, &mut Restorer::new(EngineConfig::default())).expect_err("v9");
    assert!(matches!(e, FormatError::Version { found: 9, .. }), "{e}");
    assert!(e.to_string().contains("state reset --yes"), "{e}");
}
