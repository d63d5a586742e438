//! Measures write throughput into the BigQuery emulator.
//!
//! `BIGQUERY_EMULATOR_HOST=127.0.0.1:9050 cargo run -p firstclick-bigquery --example
//! insert_throughput -- [ROWS] [CONCURRENCY] [insertall|storage|epochs] [ROWS_PER_REQUEST]`
//! (defaults: 20000 rows, 1 call in flight, insertall, 500). `storage` uses the Storage Write
//! path's `_default` stream and needs `BIGQUERY_EMULATOR_GRPC_HOST` too; `epochs` is the
//! service's exactly-once path: each ROWS_PER_REQUEST rows are one epoch (a pending stream
//! created, appended, finalized and committed), one epoch at a time. Creates a fresh dataset, writes the rows in
//! calls of ROWS_PER_REQUEST rows, reports rows/s and call latencies, checks the row count, and
//! drops the dataset.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use firstclick_bigquery::{BigQuery, BigQueryArgs, EpochWriter, StorageWriter};
use firstclick_cli::GcpArgs;
use firstclick_model::{
    AttributedRow, AttributionModel, Checkout, ClickRef, DetailTexts, EventTime, Id,
};

fn row(i: usize) -> AttributedRow {
    let t = 1_714_564_800_000_000 + i as i64 * 1_000;
    AttributedRow {
        checkout: Checkout {
            checkout_id: Id::new(&format!("00000000-0000-4000-8000-{i:012}")),
            user_id: (i % 10_000) as i64,
            product_id: Id::new(&format!("product-{}", i % 500)),
            time: EventTime::from_micros(t),
            total_amount: Some((i % 100_000) as f64 / 100.0),
            details: DetailTexts {
                payment_method: Some("credit_card"),
                shipping_address: Some("1 Main Street, Springfield"),
                billing_address: Some("1 Main Street, Springfield"),
                user_agent: Some("Mozilla/5.0 (X11; Linux x86_64) Firefox/126.0"),
                ip_address: Some("192.168.10.21"),
            }
            .into(),
        },
        user_name: Some("Ada Lovelace".into()),
        click: (!i.is_multiple_of(5)).then(|| ClickRef {
            click_id: Id::new(&format!("10000000-0000-4000-8000-{i:012}")),
            time: EventTime::from_micros(t - 30_000_000),
        }),
        model: AttributionModel::FirstClick,
        processed_at: EventTime::from_micros(t + 20_000_000),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut argv = std::env::args().skip(1);
    let rows: usize = argv.next().map_or(Ok(20_000), |s| s.parse())?;
    let concurrency: usize = argv.next().map_or(Ok(1), |s| s.parse())?;
    let mode = argv.next().unwrap_or_else(|| "insertall".into());
    let (storage, epochs) = match mode.as_str() {
        "insertall" => (false, false),
        "storage" => (true, false),
        "epochs" => (true, true),
        other => {
            return Err(format!("expected insertall, storage or epochs, found {other}").into())
        }
    };
    let per_request: usize = argv.next().map_or(Ok(500), |s| s.parse())?;
    let host = std::env::var("BIGQUERY_EMULATOR_HOST")
        .map_err(|_| "set BIGQUERY_EMULATOR_HOST=HOST:PORT of the emulator")?;
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
    let args = BigQueryArgs {
        emulator_host: Some(host),
        emulator_grpc_host: None,
        dataset: format!("bench_{}", nanos % 1_000_000_000_000),
        ..Default::default()
    };
    let gcp = GcpArgs {
        project_id: std::env::var("PROJECT_ID").unwrap_or_else(|_| "test-project".into()),
        credentials: None,
    };
    let bq = BigQuery::connect(&gcp, &args).await?;
    bq.ensure_table().await?;
    let writer = if storage {
        let grpc = std::env::var("BIGQUERY_EMULATOR_GRPC_HOST")
            .map_err(|_| "set BIGQUERY_EMULATOR_GRPC_HOST=HOST:PORT of the emulator's gRPC port")?;
        Some(StorageWriter::connect_emulator(&bq, &grpc)?)
    } else {
        None
    };

    let data: Vec<AttributedRow> = (0..rows).map(row).collect();
    let chunks: Vec<&[AttributedRow]> = data.chunks(per_request.max(1)).collect();
    let started = Instant::now();
    let mut latencies: Vec<Duration> = Vec::with_capacity(chunks.len());
    if let (true, Some(w)) = (epochs, &writer) {
        let mut epochs = EpochWriter::new(w.clone());
        for (epoch, chunk) in chunks.iter().enumerate() {
            let t = Instant::now();
            epochs.stage(epoch as u64, chunk.to_vec());
            let refused = epochs.send(epoch as u64).await?;
            assert!(refused.is_empty(), "{refused:?}");
            let name = epochs.prepare(epoch as u64).await?.ok_or("no stream")?;
            epochs.commit(&name).await?;
            latencies.push(t.elapsed());
        }
    }
    for group in chunks.chunks(concurrency.max(1)).filter(|_| !epochs) {
        let calls = group.iter().map(|chunk| {
            let bq = bq.clone();
            let writer = writer.clone();
            async move {
                let t = Instant::now();
                let report = match &writer {
                    Some(w) => w.append_rows_with_limit(chunk, chunk.len()).await?,
                    None => {
                        bq.insert_rows_with_limits(chunk, chunk.len(), 9_000_000)
                            .await?
                    }
                };
                Ok::<_, firstclick_bigquery::InsertError>((t.elapsed(), report))
            }
        });
        for result in futures::future::join_all(calls).await {
            let (latency, report) = result?;
            assert_eq!(report.inserted, report.attempted, "{:?}", report.rejected);
            latencies.push(latency);
        }
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
    println!(
        "{}: {rows} rows in {} calls of {per_request}, {concurrency} in flight: {:.2} s, \
         {:.0} rows/s; call latency p50 {:?}, p90 {:?}, max {:?}",
        match (storage, epochs) {
            (_, true) => "Storage Write, a pending stream per epoch",
            (true, false) => "Storage Write, default stream",
            _ => "insertAll",
        },
        latencies.len(),
        elapsed.as_secs_f64(),
        rows as f64 / elapsed.as_secs_f64(),
        pct(0.5),
        pct(0.9),
        pct(1.0)
    );
    let n = bq
        .query(&format!("SELECT COUNT(*) AS n FROM `{}`", bq.table_path()))
        .await?;
    println!("rows in the table: {}", n[0]["n"]);
    bq.raw()
        .dataset()
        .delete_if_exists(bq.project(), bq.dataset(), true)
        .await;
    Ok(())
}
