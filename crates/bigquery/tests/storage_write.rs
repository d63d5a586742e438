//! The Storage Write path against the emulator's gRPC port:
//! `BIGQUERY_EMULATOR_HOST=127.0.0.1:9050 BIGQUERY_EMULATOR_GRPC_HOST=127.0.0.1:9060 cargo test
//! -p firstclick-bigquery --test storage_write`.
//!
//! The tests take turns ([`SERIAL`]): the emulator's gRPC servicer and its REST API share one
//! DuckDB connection without a lock, so an append running while another test queries fails
//! with "connection is busy" on either side.

mod common;

use std::time::{Duration, Instant};

use firstclick_bigquery::{
    BigQuery, BigQueryArgs, CommitOutcome, EpochWriter, InsertError, StorageWriter,
};
use firstclick_model::AttributedRow;
use serde_json::json;

use common::{cleanup, fresh, row, T0};

/// Held for the whole of each test that appends (see the module documentation).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn appended_rows_read_back_equal() {
    let _turn = SERIAL.lock().await;
    let bq = fresh("sw_roundtrip").await;
    bq.ensure_table().await.expect("ensure_table");
    let writer =
        StorageWriter::connect_emulator(&bq, &common::emulator_grpc_host()).expect("writer");

    let full = row("k-full", 17, 0);
    let mut organic = row("k-organic", 18, 1_000);
    organic.click = None;
    organic.user_name = None;
    organic.checkout.total_amount = None;
    let mut unicode = row("k-ünï-碼-🛒", 19, 2_000);
    unicode.user_name = Some("Zoë 山田太郎 🚀".into());
    unicode.checkout.total_amount = Some(0.1 + 0.2);
    let rows = vec![full, organic, unicode];

    let report = writer.append_rows(&rows).await.expect("append");
    assert_eq!(report.inserted, 3, "{:?}", report.rejected);
    assert_eq!(report.attempted, 3);
    assert!(report.rejected.is_empty());

    let got = bq
        .query(&format!(
            "SELECT * FROM `{}` ORDER BY checkout_time",
            bq.table_path()
        ))
        .await
        .expect("query");
    assert_eq!(got.len(), 3);
    assert_eq!(got[0]["checkout_id"], json!("k-full"));
    assert_eq!(got[0]["user_id"], json!("17"));
    assert_eq!(got[0]["total_amount"], json!("123.45"));
    assert_eq!(got[0]["checkout_time"], json!(T0));
    assert_eq!(got[0]["click_time"], json!(T0 - 60_000_000));
    assert_eq!(got[0]["click_id"], json!("click-k-full"));
    assert_eq!(got[0]["attribution_model"], json!("first_click"));
    assert!(got[1]["click_id"].is_null() && got[1]["click_time"].is_null());
    assert!(got[1]["user_name"].is_null() && got[1]["total_amount"].is_null());
    assert_eq!(got[2]["checkout_id"], json!("k-ünï-碼-🛒"));
    assert_eq!(got[2]["user_name"], json!("Zoë 山田太郎 🚀"));
    assert_eq!(got[2]["total_amount"], json!("0.3"));
    cleanup(&bq).await;
}

#[tokio::test]
async fn many_rows_go_in_several_requests_on_one_call() {
    let _turn = SERIAL.lock().await;
    let bq = fresh("sw_batches").await;
    bq.ensure_table().await.expect("ensure_table");
    let writer =
        StorageWriter::connect_emulator(&bq, &common::emulator_grpc_host()).expect("writer");
    let rows: Vec<AttributedRow> = (0..1201)
        .map(|i| row(&format!("k{i:05}"), i % 7, i * 1_000))
        .collect();
    let report = writer
        .append_rows_with_limit(&rows, 500)
        .await
        .expect("append");
    assert_eq!(report.requests, 3);
    assert_eq!(report.inserted, 1201);
    let n = bq
        .query(&format!(
            "SELECT COUNT(DISTINCT checkout_id) AS n FROM `{}`",
            bq.table_path()
        ))
        .await
        .expect("count");
    assert_eq!(n[0]["n"], json!(1201));
    cleanup(&bq).await;
}

#[tokio::test]
async fn a_down_grpc_port_gives_a_transient_error_quickly() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let args = BigQueryArgs {
        emulator_host: Some("127.0.0.1:1".into()),
        dataset: common::fresh_dataset("sw_down"),
        ..Default::default()
    };
    let bq = BigQuery::connect(&common::gcp(), &args)
        .await
        .expect("client");
    let writer =
        StorageWriter::connect_emulator(&bq, &format!("127.0.0.1:{port}")).expect("writer");
    let started = Instant::now();
    let err = writer
        .append_rows(&[row("k", 1, 0)])
        .await
        .expect_err("nobody listens");
    assert!(err.is_transient(), "{err}");
    assert_eq!(err.done().attempted, 0);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_request_with_an_invalid_row_is_refused_whole() {
    let _turn = SERIAL.lock().await;
    let bq = fresh("sw_badrow").await;
    bq.ensure_table().await.expect("ensure_table");
    let writer =
        StorageWriter::connect_emulator(&bq, &common::emulator_grpc_host()).expect("writer");
    let mut too_big = row("k-too-big", 2, 0);
    too_big.checkout.total_amount = Some(1e40);
    let rows = vec![row("k-good", 1, 0), too_big, row("k-also-good", 3, 0)];
    // Real BigQuery names the bad row in `row_errors` (reported as a permanent rejection, the
    // others as retryable); the emulator refuses the whole request with INVALID_ARGUMENT.
    let err = writer
        .append_rows(&rows)
        .await
        .expect_err("the emulator refuses the request");
    let InsertError::Permanent { cause, done } = &err else {
        panic!("expected a permanent error, got {err}");
    };
    assert_eq!(cause.reason.as_deref(), Some("InvalidArgument"), "{cause}");
    assert_eq!(done.attempted, 0);
    assert_eq!(
        bq.query(&format!("SELECT COUNT(*) AS n FROM `{}`", bq.table_path()))
            .await
            .expect("count")[0]["n"],
        json!(0),
        "nothing of the request is written"
    );
    cleanup(&bq).await;
}

async fn count_rows(bq: &BigQuery) -> i64 {
    let got = bq
        .query(&format!("SELECT COUNT(*) AS n FROM `{}`", bq.table_path()))
        .await
        .expect("count");
    got[0]["n"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| got[0]["n"].as_i64())
        .expect("a count")
}

#[tokio::test]
async fn epoch_rows_stay_invisible_until_committed_and_commit_twice_is_fine() {
    let _turn = SERIAL.lock().await;
    let bq = fresh("sw_epochs").await;
    bq.ensure_table().await.expect("ensure_table");
    let writer =
        StorageWriter::connect_emulator(&bq, &common::emulator_grpc_host()).expect("writer");
    let mut epochs = EpochWriter::new(writer.clone());

    let rows: Vec<AttributedRow> = (0..1_200).map(|i| row(&format!("e-{i}"), i, i)).collect();
    epochs.stage(0, rows[..700].to_vec());
    assert!(epochs.send(0).await.expect("send").is_empty());
    epochs.stage(0, rows[700..1_000].to_vec());
    assert!(epochs.send(0).await.expect("send").is_empty());
    // A second epoch whose stream is never committed (as after a crash before its checkpoint).
    epochs.stage(1, rows[1_000..].to_vec());
    assert!(epochs.send(1).await.expect("send").is_empty());
    assert_eq!(count_rows(&bq).await, 0, "pending rows are invisible");

    let name = epochs.prepare(0).await.expect("prepare").expect("a stream");
    assert_eq!(
        count_rows(&bq).await,
        0,
        "finalized rows are still invisible"
    );
    assert_eq!(
        epochs.commit(&name).await.expect("commit"),
        CommitOutcome::Visible(1_000)
    );
    assert_eq!(count_rows(&bq).await, 1_000);
    // A restarted process commits the checkpoint's stream again: a no-op.
    let mut again = EpochWriter::<AttributedRow>::new(writer);
    assert_eq!(
        again.commit(&name).await.expect("commit again"),
        CommitOutcome::Visible(0)
    );
    assert_eq!(count_rows(&bq).await, 1_000, "no row twice");
    // An epoch without rows has nothing to commit.
    assert_eq!(epochs.prepare(7).await.expect("prepare"), None);
    cleanup(&bq).await;
}

#[tokio::test]
async fn a_refused_row_is_found_and_the_others_are_written() {
    let _turn = SERIAL.lock().await;
    let bq = fresh("sw_epoch_bad").await;
    bq.ensure_table().await.expect("ensure_table");
    let writer =
        StorageWriter::connect_emulator(&bq, &common::emulator_grpc_host()).expect("writer");
    let mut epochs = EpochWriter::new(writer);
    let mut rows: Vec<AttributedRow> = (0..40).map(|i| row(&format!("b-{i}"), i, i)).collect();
    rows[29].checkout.total_amount = Some(1e40);
    epochs.stage(3, rows);
    let refused = epochs.send(3).await.expect("send");
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].row.checkout.checkout_id.as_text(), "b-29");
    let name = epochs.prepare(3).await.expect("prepare").expect("a stream");
    assert_eq!(
        epochs.commit(&name).await.expect("commit"),
        CommitOutcome::Visible(39)
    );
    assert_eq!(count_rows(&bq).await, 39);
    cleanup(&bq).await;
}
