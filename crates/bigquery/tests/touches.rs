//! The touches table and the `model_comparison` view against the BigQuery emulator, one fresh
//! dataset per test: `ensure_table` creates both tables and the three views; rows of three
//! models (first_click, linear, position_based) and their touch rows are written by insertAll
//! and by the exactly-once epoch writers; they read back, and the comparison view answers with
//! exact conversions and credited revenue.
//!
//! Run: `BIGQUERY_EMULATOR_HOST=127.0.0.1:9050 BIGQUERY_EMULATOR_GRPC_HOST=127.0.0.1:9060
//! cargo test -p firstclick-bigquery --test touches`.

mod common;

use std::collections::BTreeMap;

use firstclick_bigquery::{
    BigQuery, BigQueryArgs, CommitOutcome, EnsureOutcome, EpochTransaction, EpochWriter,
    StorageWriter,
};
use firstclick_model::touch::ONE;
use firstclick_model::{
    apportion, AttributedRow, AttributionModel, ClickRef, Decimal9, EventTime, Id, TouchRow,
};
use serde_json::Value;

use common::{cleanup, fresh, row, T0};

/// The Storage Write calls share the emulator's DuckDB connection with REST without a lock
/// (docs/design.md §9): one test at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const MODELS: [AttributionModel; 3] = [
    AttributionModel::FirstClick,
    AttributionModel::Linear,
    AttributionModel::PositionBased,
];

/// Checkouts: (id, product, amount, number of clicks). `k4` is organic.
const CHECKOUTS: [(&str, &str, f64, usize); 4] = [
    ("k1", "p1", 100.0, 2),
    ("k2", "p1", 10.0, 3),
    ("k3", "p2", 7.5, 1),
    ("k4", "p2", 20.0, 0),
];

fn weights(model: AttributionModel, n: usize) -> Vec<f64> {
    match (model, n) {
        (AttributionModel::PositionBased, n) if n > 2 => (0..n)
            .map(|i| {
                if i == 0 || i == n - 1 {
                    0.4
                } else {
                    0.2 / (n - 2) as f64
                }
            })
            .collect(),
        _ => vec![1.0; n],
    }
}

/// One row per checkout and model, and the touch rows of the multi-touch models, with credits
/// and revenue apportioned exactly as the engine does.
fn data() -> (Vec<AttributedRow>, Vec<TouchRow>) {
    let mut rows = Vec::new();
    let mut touches = Vec::new();
    for (i, (id, product, amount, clicks)) in CHECKOUTS.iter().enumerate() {
        let offset = i as i64 * 1_000_000;
        let mut base = row(id, i as i64 + 1, offset);
        base.checkout.product_id = Id::new(product);
        base.checkout.total_amount = Some(*amount);
        let refs: Vec<ClickRef> = (0..*clicks)
            .map(|c| ClickRef {
                click_id: Id::new(&format!("{id}-c{c}")),
                time: EventTime::from_micros(T0 + offset - 60_000_000 * (*clicks - c) as i64),
            })
            .collect();
        base.click = refs.first().cloned();
        for model in MODELS {
            let mut r = base.clone();
            r.model = model;
            rows.push(r);
            if !model.is_multi_touch() || refs.is_empty() {
                continue;
            }
            let w = weights(model, refs.len());
            let total = Decimal9::from_f64(*amount).expect("amount").0;
            let credits = apportion(ONE, &w);
            let revenue = apportion(total, &w);
            for (k, click) in refs.iter().enumerate() {
                touches.push(TouchRow {
                    checkout_id: base.checkout.checkout_id.clone(),
                    user_id: base.checkout.user_id,
                    product_id: base.checkout.product_id.clone(),
                    checkout_time: base.checkout.time,
                    click: click.clone(),
                    model,
                    credit: Decimal9(credits[k]),
                    credited_revenue: Some(Decimal9(revenue[k])),
                    processed_at: base.processed_at,
                });
            }
        }
    }
    (rows, touches)
}

/// A NUMERIC as BigQuery's answer has it (text or number), as exact decimal text.
fn decimal(v: &Value) -> String {
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => panic!("not a number: {other}"),
    };
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    }
}

/// Creates both tables and the views; checks the report, and that a second run finds them.
async fn ensure(bq: &BigQuery) {
    let first = bq.ensure_table().await.expect("ensure_table");
    assert_eq!(first.touches, EnsureOutcome::Created);
    assert_eq!(first.touches_view, EnsureOutcome::Created);
    assert_eq!(first.comparison, EnsureOutcome::Created);
    assert!(first.notes.is_empty(), "{:?}", first.notes);
    let text = first.to_string();
    assert!(
        text.contains(&format!(
            "touches table {}: created",
            bq.touches_table_path()
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("view {}: created", bq.comparison_view_path())),
        "{text}"
    );
    let second = bq.ensure_table().await.expect("ensure_table again");
    assert_eq!(second.touches, EnsureOutcome::Existed);
    assert_eq!(second.touches_view, EnsureOutcome::Existed);
    assert_eq!(second.comparison, EnsureOutcome::Existed);
    assert!(second.notes.is_empty(), "{:?}", second.notes);
    assert!(bq.check_table(true).await.expect("check_table").is_empty());
}

#[tokio::test]
async fn the_touches_table_is_required_only_with_a_multi_touch_model() {
    let _turn = SERIAL.lock().await;
    let bq = fresh("touches_opt").await;
    ensure(&bq).await;
    // The same dataset and output table, a touches table that does not exist: a first-click
    // deployment made before the touches table starts; one with a multi-touch model is told
    // to run create-bq-table.
    let args = BigQueryArgs {
        emulator_host: Some(common::emulator_host()),
        emulator_grpc_host: None,
        dataset: bq.dataset().to_owned(),
        table: bq.table().to_owned(),
        touches_table: "no_such_touches".into(),
        location: None,
    };
    let without = BigQuery::connect(&common::gcp(), &args)
        .await
        .expect("client");
    assert!(without
        .check_table(false)
        .await
        .expect("first click only")
        .is_empty());
    let err = without
        .check_table(true)
        .await
        .expect_err("touches missing");
    assert!(
        matches!(err, firstclick_bigquery::EnsureError::NotFound { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("no_such_touches"), "{err}");
    cleanup(&bq).await;
}

/// Both tables hold what was written, and the comparison view answers exactly.
async fn check_contents(bq: &BigQuery, rows: &[AttributedRow], touches: &[TouchRow]) {
    let got = bq
        .query(&format!(
            "SELECT checkout_id, attribution_model, click_id, credit, credited_revenue FROM `{}` \
             ORDER BY checkout_id, attribution_model, click_id",
            bq.touches_view_path()
        ))
        .await
        .expect("touches");
    let mut want: Vec<(String, String, String, String, String)> = touches
        .iter()
        .map(|t| {
            (
                t.checkout_id.to_string(),
                t.model.as_str().to_owned(),
                t.click.click_id.to_string(),
                t.credit.to_string(),
                t.credited_revenue
                    .map(|r| r.to_string())
                    .unwrap_or_default(),
            )
        })
        .collect();
    want.sort();
    let got: Vec<(String, String, String, String, String)> = got
        .iter()
        .map(|r| {
            (
                r["checkout_id"].as_str().unwrap_or_default().to_owned(),
                r["attribution_model"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                r["click_id"].as_str().unwrap_or_default().to_owned(),
                decimal(&r["credit"]),
                decimal(&r["credited_revenue"]),
            )
        })
        .collect();
    assert_eq!(got, want);
    let n = bq
        .query(&format!(
            "SELECT COUNT(*) AS n FROM `{}`",
            bq.touches_table_path()
        ))
        .await
        .expect("count");
    assert_eq!(
        n[0]["n"].as_i64(),
        Some(touches.len() as i64),
        "raw touches"
    );
    let n = bq
        .query(&format!("SELECT COUNT(*) AS n FROM `{}`", bq.view_path()))
        .await
        .expect("count");
    assert_eq!(n[0]["n"].as_i64(), Some(rows.len() as i64), "rows");

    let got = bq
        .query(&format!(
            "SELECT attribution_model, product_id, conversions, credited_revenue FROM `{}` \
             ORDER BY attribution_model, product_id",
            bq.comparison_view_path()
        ))
        .await
        .expect("model_comparison");
    let got: BTreeMap<(String, String), (String, String)> = got
        .iter()
        .map(|r| {
            (
                (
                    r["attribution_model"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    r["product_id"].as_str().unwrap_or_default().to_owned(),
                ),
                (decimal(&r["conversions"]), decimal(&r["credited_revenue"])),
            )
        })
        .collect();
    // Every model: p1 has two attributed checkouts worth 110, p2 one worth 7.5 (k4 is organic).
    let mut want = BTreeMap::new();
    for m in MODELS {
        let m = m.as_str().to_owned();
        want.insert((m.clone(), "p1".to_owned()), ("2".into(), "110".into()));
        want.insert((m, "p2".to_owned()), ("1".into(), "7.5".into()));
    }
    assert_eq!(got, want);
}

#[tokio::test]
async fn touches_by_insert_all_read_back_and_the_comparison_view_answers() {
    let _turn = SERIAL.lock().await;
    let bq = fresh("touches_ia").await;
    ensure(&bq).await;
    let (rows, touches) = data();
    assert_eq!(touches.len(), 12, "2 models x (2 + 3 + 1) clicks");

    let report = bq.insert_rows(&rows).await.expect("rows");
    assert_eq!(report.inserted, rows.len(), "{:?}", report.rejected);
    let report = bq.insert_touches(&touches).await.expect("touches");
    assert_eq!(report.inserted, touches.len(), "{:?}", report.rejected);
    assert!(report.rejected.is_empty());
    check_contents(&bq, &rows, &touches).await;
    cleanup(&bq).await;
}

#[tokio::test]
async fn touches_by_the_epoch_writers_commit_with_their_rows() {
    let _turn = SERIAL.lock().await;
    let bq = fresh("touches_sw").await;
    ensure(&bq).await;
    let (rows, touches) = data();
    let writer =
        StorageWriter::connect_emulator(&bq, &common::emulator_grpc_host()).expect("writer");
    let mut row_epochs = EpochWriter::<AttributedRow>::new(writer.clone());
    let mut touch_epochs = EpochWriter::<TouchRow>::new(writer.for_touches(&bq));

    row_epochs.stage(5, rows.clone());
    touch_epochs.stage(5, touches.clone());
    assert!(row_epochs.send(5).await.expect("send rows").is_empty());
    assert!(touch_epochs.send(5).await.expect("send touches").is_empty());
    let transaction = EpochTransaction {
        rows: row_epochs.prepare(5).await.expect("prepare rows"),
        touches: touch_epochs.prepare(5).await.expect("prepare touches"),
    };
    assert!(transaction.rows.is_some() && transaction.touches.is_some());
    let bytes = transaction.to_bytes();
    let read = EpochTransaction::from_bytes(&bytes).expect("readable");
    assert_eq!(read, transaction);
    let n = bq
        .query(&format!(
            "SELECT COUNT(*) AS n FROM `{}`",
            bq.touches_table_path()
        ))
        .await
        .expect("count");
    assert_eq!(
        n[0]["n"].as_i64(),
        Some(0),
        "prepared touches are invisible"
    );

    let rows_name = read.rows.as_deref().expect("rows stream");
    let touches_name = read.touches.as_deref().expect("touches stream");
    assert_eq!(
        row_epochs.commit(rows_name).await.expect("commit rows"),
        CommitOutcome::Visible(rows.len())
    );
    assert_eq!(
        touch_epochs
            .commit(touches_name)
            .await
            .expect("commit touches"),
        CommitOutcome::Visible(touches.len())
    );
    // A restore commits the checkpoint's transaction again: both commits are no-ops.
    let mut again = EpochWriter::<TouchRow>::new(writer.for_touches(&bq));
    assert_eq!(
        again.commit(touches_name).await.expect("commit again"),
        CommitOutcome::Visible(0)
    );
    check_contents(&bq, &rows, &touches).await;
    cleanup(&bq).await;
}
