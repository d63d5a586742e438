//! Shared set-up of the emulator tests: the emulator's address, a fresh dataset per test, and
//! rows to insert.

#![allow(dead_code)] // each test binary uses a different part

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use firstclick_bigquery::{BigQuery, BigQueryArgs};
use firstclick_cli::GcpArgs;
use firstclick_model::{
    AttributedRow, AttributionModel, Checkout, ClickRef, DetailTexts, EventTime, Id,
};

/// `BIGQUERY_EMULATOR_HOST`, or a panic that says how to start the emulator.
pub(crate) fn emulator_host() -> String {
    match std::env::var("BIGQUERY_EMULATOR_HOST") {
        Ok(h) if !h.trim().is_empty() => h,
        _ => panic!(
            "BIGQUERY_EMULATOR_HOST is not set: these tests need the BigQuery emulator \
             (docs/design.md §9). Start it (scripts/dev-up, or the bqemulator launcher with \
             --rest-port 9050) and run with BIGQUERY_EMULATOR_HOST=127.0.0.1:9050"
        ),
    }
}

/// `BIGQUERY_EMULATOR_GRPC_HOST` (the emulator's Storage Write port), or a panic.
pub(crate) fn emulator_grpc_host() -> String {
    match std::env::var("BIGQUERY_EMULATOR_GRPC_HOST") {
        Ok(h) if !h.trim().is_empty() => h,
        _ => panic!(
            "BIGQUERY_EMULATOR_GRPC_HOST is not set: the Storage Write tests need the BigQuery \
             emulator's gRPC port (--grpc-port), e.g. BIGQUERY_EMULATOR_GRPC_HOST=127.0.0.1:9060"
        ),
    }
}

/// The emulator's project.
pub(crate) fn gcp() -> GcpArgs {
    GcpArgs {
        project_id: std::env::var("PROJECT_ID").unwrap_or_else(|_| "test-project".into()),
        credentials: None,
    }
}

/// A dataset name no other test (or earlier run) uses.
pub(crate) fn fresh_dataset(test: &str) -> String {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "t_{test}_{}_{}_{}",
        std::process::id(),
        nanos % 1_000_000_000_000,
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// A client on the emulator bound to a fresh dataset.
pub(crate) async fn fresh(test: &str) -> BigQuery {
    let args = BigQueryArgs {
        emulator_host: Some(emulator_host()),
        emulator_grpc_host: None,
        dataset: fresh_dataset(test),
        table: "attributed_checkouts".into(),
        touches_table: "attributed_touches".into(),
        location: None,
    };
    BigQuery::connect(&gcp(), &args)
        .await
        .expect("client for the emulator")
}

/// Drops the test's dataset (best effort: a leftover only costs emulator memory).
pub(crate) async fn cleanup(bq: &BigQuery) {
    bq.raw()
        .dataset()
        .delete_if_exists(bq.project(), bq.dataset(), true)
        .await;
}

/// 2024-05-01T12:00:00Z in microseconds.
pub(crate) const T0: i64 = 1_714_564_800_000_000;

/// A row with every field set, attributed to a click.
pub(crate) fn row(checkout_id: &str, user_id: i64, offset_micros: i64) -> AttributedRow {
    AttributedRow {
        checkout: Checkout {
            checkout_id: Id::new(checkout_id),
            user_id,
            product_id: Id::new("5b0e7fd8-5bd8-4c1e-9c0e-6f0b8f3b8a11"),
            time: EventTime::from_micros(T0 + offset_micros),
            total_amount: Some(123.45),
            details: DetailTexts {
                payment_method: Some("credit_card"),
                shipping_address: Some("1 Main St"),
                billing_address: Some("2 Side St"),
                user_agent: Some("Mozilla/5.0"),
                ip_address: Some("10.0.0.1"),
            }
            .into(),
        },
        user_name: Some("Ada Lovelace".into()),
        click: Some(ClickRef {
            click_id: Id::new(&format!("click-{checkout_id}")),
            time: EventTime::from_micros(T0 + offset_micros - 60_000_000),
        }),
        model: AttributionModel::FirstClick,
        processed_at: EventTime::from_micros(T0 + offset_micros + 20_000_000),
    }
}
