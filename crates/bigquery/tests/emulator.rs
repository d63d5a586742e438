//! The connector against the real BigQuery emulator (docs/design.md §9), one fresh dataset per
//! test.
//!
//! Run: `BIGQUERY_EMULATOR_HOST=127.0.0.1:9050 cargo test -p firstclick-bigquery`. Without the
//! variable every test panics and says so.

mod common;

use std::time::{Duration, Instant};

use firstclick_bigquery::{
    BigQuery, BigQueryArgs, EnsureError, EnsureOutcome, InsertError, PrimaryKeyOutcome, Row,
    SchemaDifference,
};
use firstclick_model::schema::{CLUSTER_COLUMNS, OUTPUT_COLUMNS, PARTITION_COLUMN};
use firstclick_model::{AttributedRow, DetailTexts, EventTime};
use gcp_bigquery_client::model::dataset::Dataset;
use gcp_bigquery_client::model::field_type::FieldType;
use gcp_bigquery_client::model::table::Table;
use gcp_bigquery_client::model::table_field_schema::TableFieldSchema;
use gcp_bigquery_client::model::table_schema::TableSchema;
use serde_json::{json, Value};

use common::{cleanup, fresh, row, T0};

fn type_name(t: &FieldType) -> String {
    serde_json::to_value(t)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// What a row reads back as through [`BigQuery::query`]: strings, NUMERIC as exact decimal text,
/// TIMESTAMPs as integer microseconds.
fn expected(r: &AttributedRow) -> Row {
    let c = &r.checkout;
    let text = |v: Option<&str>| v.map_or(Value::Null, |s| json!(s));
    let mut m = Row::new();
    m.insert("checkout_id".into(), json!(c.checkout_id.as_text()));
    m.insert("user_id".into(), json!(c.user_id.to_string()));
    m.insert("user_name".into(), json!(r.user_name));
    m.insert("product_id".into(), json!(c.product_id.as_text()));
    m.insert("payment_method".into(), text(c.details.payment_method()));
    m.insert(
        "total_amount".into(),
        c.total_amount.map_or(Value::Null, |a| json!(a.to_string())),
    );
    m.insert(
        "shipping_address".into(),
        text(c.details.shipping_address()),
    );
    m.insert("billing_address".into(), text(c.details.billing_address()));
    m.insert("user_agent".into(), text(c.details.user_agent()));
    m.insert("ip_address".into(), text(c.details.ip_address()));
    m.insert("checkout_time".into(), json!(c.time.as_micros()));
    m.insert(
        "click_id".into(),
        r.click
            .as_ref()
            .map_or(Value::Null, |k| json!(k.click_id.as_text())),
    );
    m.insert(
        "click_time".into(),
        r.click
            .as_ref()
            .map_or(Value::Null, |k| json!(k.time.as_micros())),
    );
    m.insert("attribution_model".into(), json!(r.model.as_str()));
    m.insert("processed_at".into(), json!(r.processed_at.as_micros()));
    m
}

async fn count(bq: &BigQuery, from: &str, filter: &str) -> i64 {
    let rows = bq
        .query(&format!("SELECT COUNT(*) AS n FROM `{from}` {filter}"))
        .await
        .expect("count query");
    rows[0]["n"].as_i64().expect("n is an integer")
}

#[tokio::test]
async fn ensure_table_is_idempotent_and_builds_the_designed_table() {
    let bq = fresh("ensure").await;

    let first = bq.ensure_table().await.expect("first ensure_table");
    assert_eq!(first.dataset, EnsureOutcome::Created);
    assert_eq!(first.table, EnsureOutcome::Created);
    assert_eq!(first.view, EnsureOutcome::Created);
    // The emulator refuses table constraints: reported, not fatal.
    assert!(
        matches!(first.primary_key, PrimaryKeyOutcome::NotApplied { .. }),
        "{:?}",
        first.primary_key
    );
    assert!(first.notes.is_empty(), "{:?}", first.notes);

    let second = bq.ensure_table().await.expect("second ensure_table");
    assert_eq!(second.dataset, EnsureOutcome::Existed);
    assert_eq!(second.table, EnsureOutcome::Existed);
    assert_eq!(second.view, EnsureOutcome::Existed);
    assert!(second.notes.is_empty(), "{:?}", second.notes);
    let text = second.to_string();
    assert!(text.contains("already existed"), "{text}");

    // Read the table back: columns, types, modes, descriptions, partitioning, clustering.
    let t = bq
        .raw()
        .table()
        .get(bq.project(), bq.dataset(), bq.table(), None)
        .await
        .expect("get table");
    let fields = t.schema.fields.as_deref().expect("schema fields");
    assert_eq!(fields.len(), OUTPUT_COLUMNS.len());
    for (f, c) in fields.iter().zip(OUTPUT_COLUMNS) {
        assert_eq!(f.name, c.name);
        assert_eq!(type_name(&f.r#type), c.column_type.as_str(), "{}", c.name);
        assert_eq!(f.mode.as_deref(), Some(c.mode.as_str()), "{}", c.name);
        assert_eq!(f.description.as_deref(), Some(c.description), "{}", c.name);
    }
    let p = t.time_partitioning.as_ref().expect("partitioned");
    assert_eq!(p.r#type, "DAY");
    assert_eq!(p.field.as_deref(), Some(PARTITION_COLUMN));
    let clustering = t.clustering.as_ref().and_then(|c| c.fields.clone());
    assert_eq!(
        clustering,
        Some(CLUSTER_COLUMNS.iter().map(|c| c.to_string()).collect())
    );

    let v = bq
        .raw()
        .table()
        .get(bq.project(), bq.dataset(), &bq.view(), None)
        .await
        .expect("get view");
    assert_eq!(v.r#type.as_deref(), Some("VIEW"));
    let view_columns: Vec<String> = v
        .schema
        .fields
        .unwrap_or_default()
        .into_iter()
        .map(|f| f.name)
        .collect();
    let ours: Vec<&str> = OUTPUT_COLUMNS.iter().map(|c| c.name).collect();
    assert_eq!(
        view_columns, ours,
        "the view shows exactly the table's columns"
    );

    cleanup(&bq).await;
}

#[tokio::test]
async fn an_existing_table_with_other_columns_is_refused_column_by_column() {
    let bq = fresh("mismatch").await;
    bq.raw()
        .dataset()
        .create(Dataset::new(bq.project(), bq.dataset()))
        .await
        .expect("create dataset");
    let mut fields: Vec<TableFieldSchema> = OUTPUT_COLUMNS
        .iter()
        .filter(|c| c.name != "user_name")
        .map(|c| {
            let mut f = TableFieldSchema::string(c.name);
            f.r#type = match c.column_type.as_str() {
                "NUMERIC" => FieldType::Float,
                "TIMESTAMP" => FieldType::Timestamp,
                _ => FieldType::String,
            };
            f.mode = Some(if c.name == "checkout_time" {
                "NULLABLE".into()
            } else {
                c.mode.as_str().into()
            });
            f
        })
        .collect();
    fields.push(TableFieldSchema::integer("legacy_score"));
    bq.raw()
        .table()
        .create(Table::new(
            bq.project(),
            bq.dataset(),
            bq.table(),
            TableSchema::new(fields),
        ))
        .await
        .expect("create a foreign table");

    let err = bq.ensure_table().await.expect_err("schema mismatch");
    let EnsureError::SchemaMismatch { differences, .. } = &err else {
        panic!("expected SchemaMismatch, got {err}");
    };
    assert_eq!(differences.len(), 4, "{differences:?}");
    assert!(differences.contains(&SchemaDifference::Missing {
        column: "user_name".into(),
        expected: "STRING NULLABLE".into()
    }));
    assert!(differences.contains(&SchemaDifference::Type {
        column: "total_amount".into(),
        expected: "NUMERIC".into(),
        found: "FLOAT".into()
    }));
    assert!(differences.contains(&SchemaDifference::Mode {
        column: "checkout_time".into(),
        expected: "REQUIRED".into(),
        found: "NULLABLE".into()
    }));
    assert!(differences.contains(&SchemaDifference::Unexpected {
        column: "legacy_score".into(),
        found: "INTEGER NULLABLE".into()
    }));
    let message = err.to_string();
    for column in ["user_name", "total_amount", "checkout_time", "legacy_score"] {
        assert!(message.contains(column), "{message}");
    }
    assert!(!err.is_transient());
    cleanup(&bq).await;
}

#[tokio::test]
async fn rows_read_back_equal_including_nulls_and_non_ascii() {
    let bq = fresh("roundtrip").await;
    bq.ensure_table().await.expect("ensure_table");

    let full = row("k-full", 17, 0);
    let mut organic = row("k-organic", 18, 1_000);
    organic.click = None;
    organic.user_name = None;
    organic.checkout.total_amount = None;
    organic.checkout.details = DetailTexts {
        user_agent: None,
        ..organic.checkout.details.texts()
    }
    .into();
    let mut unicode = row("k-ünï-碼-🛒", 19, 2_000_000);
    unicode.user_name = Some("Zoë Ångström 山田太郎 🚀".into());
    unicode.checkout.details = DetailTexts {
        shipping_address: Some("Straße 5, \"quoted\", back\\slash\nnewline"),
        ..unicode.checkout.details.texts()
    }
    .into();
    unicode.checkout.total_amount = Some(0.01);
    // A checkout on another day lands in another partition.
    let mut next_day = row("k-next-day", 17, 86_400_000_000);
    next_day.checkout.total_amount = Some(100.0);
    let rows = vec![full, organic, unicode, next_day];

    let report = bq.insert_rows(&rows).await.expect("insert");
    assert_eq!(report.inserted, 4);
    assert_eq!(report.attempted, 4);
    assert_eq!(report.requests, 1);
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);

    let got = bq
        .query(&format!(
            "SELECT * FROM `{}` ORDER BY checkout_time",
            bq.table_path()
        ))
        .await
        .expect("query");
    let want: Vec<Row> = rows.iter().map(expected).collect();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g, w);
    }
    // The organic row has SQL NULLs, not empty strings.
    let organic_nulls = count(
        &bq,
        &bq.table_path(),
        "WHERE click_id IS NULL AND click_time IS NULL AND user_name IS NULL",
    )
    .await;
    assert_eq!(organic_nulls, 1);
    cleanup(&bq).await;
}

#[tokio::test]
async fn the_dedup_view_hides_a_duplicated_checkout() {
    let bq = fresh("dedup").await;
    bq.ensure_table().await.expect("ensure_table");

    let a = row("k-a", 1, 0);
    let mut a_again = a.clone();
    a_again.processed_at = EventTime::from_micros(a.processed_at.as_micros() + 5_000_000);
    a_again.user_name = Some("written later".into());
    let b = row("k-b", 2, 10);
    bq.insert_rows(&[a.clone(), b.clone()])
        .await
        .expect("first insert");
    // At-least-once: the same checkout delivered again, in a later request.
    bq.insert_rows(&[a_again]).await.expect("second insert");

    // The emulator keeps both copies in the raw table (it ignores insertIds) ...
    assert_eq!(
        count(&bq, &bq.table_path(), "WHERE checkout_id = 'k-a'").await,
        2
    );
    // ... the view shows one row per checkout, the earliest written.
    let got = bq
        .query(&format!(
            "SELECT * FROM `{}` ORDER BY checkout_id",
            bq.view_path()
        ))
        .await
        .expect("query the view");
    assert_eq!(got, vec![expected(&a), expected(&b)]);
    cleanup(&bq).await;
}

#[tokio::test]
async fn many_rows_go_in_several_requests_and_page_back_in_order() {
    let bq = fresh("batches").await;
    bq.ensure_table().await.expect("ensure_table");
    let rows: Vec<AttributedRow> = (0..1201)
        .map(|i| row(&format!("k{i:05}"), i % 37, i * 1_000))
        .collect();
    let report = bq.insert_rows(&rows).await.expect("insert");
    assert_eq!(report.requests, 3, "500 + 500 + 201 rows");
    assert_eq!(report.inserted, 1201);
    assert!(report.rejected.is_empty());

    let got = bq
        .query_with_page_size(
            &format!(
                "SELECT checkout_id, checkout_time FROM `{}` ORDER BY checkout_id",
                bq.table_path()
            ),
            500,
        )
        .await
        .expect("paged query");
    assert_eq!(got.len(), 1201);
    for (i, r) in got.iter().enumerate() {
        assert_eq!(r["checkout_id"], json!(format!("k{i:05}")));
        assert_eq!(r["checkout_time"], json!(T0 + i as i64 * 1_000));
    }
    cleanup(&bq).await;
}

#[tokio::test]
async fn invalid_rows_are_reported_by_index_and_the_rest_is_written() {
    let bq = fresh("badrows").await;
    bq.ensure_table().await.expect("ensure_table");
    let good = row("k-good", 1, 0);
    // NUMERIC holds at most 29 integer digits: BigQuery refuses this row, not the request.
    let mut too_big = row("k-too-big", 2, 0);
    too_big.checkout.total_amount = Some(1e40);
    let also_good = row("k-also-good", 3, 0);

    let report = bq
        .insert_rows(&[good, too_big, also_good])
        .await
        .expect("the request itself succeeds");
    assert_eq!(report.inserted, 2);
    assert_eq!(report.rejected.len(), 1, "{:?}", report.rejected);
    let bad = &report.rejected[0];
    assert_eq!(bad.index, 1);
    assert_eq!(bad.checkout_id, "k-too-big");
    assert!(!bad.retryable, "an invalid row must be dead-lettered");
    assert!(!bad.errors.is_empty());
    assert_eq!(report.permanent().count(), 1);
    assert_eq!(count(&bq, &bq.table_path(), "").await, 2);
    cleanup(&bq).await;
}

#[tokio::test]
async fn a_missing_table_is_a_permanent_error() {
    let bq = fresh("notable").await;
    bq.ensure_table().await.expect("ensure_table");
    let args = BigQueryArgs {
        emulator_host: Some(common::emulator_host()),
        emulator_grpc_host: None,
        dataset: bq.dataset().to_owned(),
        table: "no_such_table".into(),
        touches_table: "attributed_touches".into(),
        location: None,
    };
    let other = BigQuery::connect(&common::gcp(), &args)
        .await
        .expect("client");
    let err = other
        .insert_rows(&[row("k", 1, 0)])
        .await
        .expect_err("no such table");
    assert!(matches!(err, InsertError::Permanent { .. }), "{err}");
    let InsertError::Permanent { cause, done } = &err else {
        unreachable!()
    };
    assert_eq!(cause.status, Some(404), "{cause}");
    assert_eq!(done.attempted, 0);
    cleanup(&bq).await;
}

#[tokio::test]
async fn a_refused_query_is_an_error_even_with_http_200() {
    let bq = fresh("badquery").await;
    let err = bq
        .query("SELECT nope FROM `test-project.no_such_dataset.no_such_table`")
        .await
        .expect_err("bad query");
    assert!(!err.is_transient(), "{err}");
    assert!(err.to_string().contains("no_such"), "{err}");
}

#[tokio::test]
async fn a_down_emulator_gives_a_transient_error_quickly() {
    // A port nobody listens on: bind, note, release.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let args = BigQueryArgs {
        emulator_host: Some(format!("127.0.0.1:{port}")),
        emulator_grpc_host: None,
        dataset: common::fresh_dataset("down"),
        ..Default::default()
    };
    let bq = BigQuery::connect(&common::gcp(), &args)
        .await
        .expect("connect makes no request");

    let started = Instant::now();
    let err = bq
        .insert_rows(&[row("k", 1, 0), row("k2", 1, 1)])
        .await
        .expect_err("nobody listens");
    let elapsed = started.elapsed();
    assert!(err.is_transient(), "{err}");
    assert_eq!(err.done().attempted, 0);
    assert_eq!(err.done().inserted, 0);
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
    let text = err.to_string();
    assert!(text.contains("retry"), "{text}");

    let ensure = bq.ensure_table().await.expect_err("nobody listens");
    assert!(ensure.is_transient(), "{ensure}");
    let query = bq
        .query("SELECT 1 AS one")
        .await
        .expect_err("nobody listens");
    assert!(query.is_transient(), "{query}");
}

#[tokio::test]
async fn a_dataset_in_another_location_is_noted() {
    let bq = fresh("location").await;
    bq.ensure_table()
        .await
        .expect("ensure_table in the default location");
    let args = BigQueryArgs {
        emulator_host: Some(common::emulator_host()),
        emulator_grpc_host: None,
        dataset: bq.dataset().to_owned(),
        table: bq.table().to_owned(),
        touches_table: bq.touches_table().to_owned(),
        location: Some("asia-northeast1".into()),
    };
    let elsewhere = BigQuery::connect(&common::gcp(), &args)
        .await
        .expect("client");
    let report = elsewhere.ensure_table().await.expect("ensure_table again");
    assert_eq!(report.dataset, EnsureOutcome::Existed);
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains("not in asia-northeast1")),
        "{:?}",
        report.notes
    );
    cleanup(&bq).await;
}
