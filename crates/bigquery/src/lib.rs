//! The BigQuery connector of firstclick: it creates the output table and streams attributed rows
//! into it (docs/design.md §4, §5, §9).
//!
//! # Layout
//! - `args`: [`BigQueryArgs`], the `--bq-*` and `--bigquery-emulator-host` flags.
//! - `client`: [`BigQuery`], an authenticated client bound to one project, dataset and table;
//!   plain HTTP and a dummy token against the emulator.
//! - `table`: [`BigQuery::ensure_table`], the idempotent creation of the dataset, the output
//!   and touches tables from `firstclick_model::schema`, their primary keys and `_dedup` views,
//!   and the `model_comparison` view; [`BigQuery::check_table`], the same schema comparison
//!   of both tables without creating anything (the service's start-up check).
//! - `rows`: [`TableRow`], what the writers need of a row of either table (JSON, protobuf,
//!   insertId), so that both tables share one implementation of each write path.
//! - `sink`: [`BigQuery::insert_rows`] and [`BigQuery::insert_touches`], batched `insertAll`
//!   with the table's key as insertId, and the split of failures into transient, permanent and
//!   per-row.
//! - `storage_write`: [`StorageWriter`], the same rows through the Storage Write API
//!   (`AppendRows` on the `_default` stream, and the calls on PENDING streams), wired for the
//!   emulator's gRPC port only.
//! - `epochs`: [`EpochWriter`], exactly-once rows: one PENDING stream per checkpoint epoch,
//!   appended at offsets, finalized, committed after the checkpoint, for either table;
//!   [`EpochTransaction`], the names of an epoch's streams in both tables, as the checkpoint
//!   stores them.
//! - `query`: [`BigQuery::query`], SQL to JSON rows keyed by column name, for tests and tools.
//! - `error`: the error types, and the one rule that says which failures are worth retrying.
//!
//! The modules are private; what a caller needs is re-exported here.
//!
//! # Tests
//! `tests/emulator.rs` runs against the BigQuery emulator (docs/design.md §9), one fresh dataset
//! per test: `BIGQUERY_EMULATOR_HOST=127.0.0.1:9050 cargo test -p firstclick-bigquery`. Without
//! the variable the tests panic. `examples/insert_throughput.rs` measures insertAll rows/s.
//!
//! ```no_run
//! # async fn demo(rows: &[firstclick_model::AttributedRow]) -> Result<(), Box<dyn std::error::Error>> {
//! use firstclick_bigquery::{BigQuery, BigQueryArgs};
//! let gcp = firstclick_cli::GcpArgs::default();
//! let args = BigQueryArgs { emulator_host: Some("127.0.0.1:9050".into()), ..Default::default() };
//! let bq = BigQuery::connect(&gcp, &args).await?;
//! println!("{}", bq.ensure_table().await?);
//! let report = bq.insert_rows(rows).await?;
//! for bad in report.permanent() {
//!     eprintln!("dead-letter {bad}");
//! }
//! # Ok(()) }
//! ```

mod args;
mod client;
mod epochs;
mod error;
mod query;
mod rows;
mod sink;
mod storage_write;
mod table;

pub use args::{BigQueryArgs, EMULATOR_GRPC_PORT};
pub use client::BigQuery;
pub use epochs::{CommitOutcome, EpochTransaction, EpochWriter, RefusedRow};
pub use error::{ApiError, ConnectError, EnsureError, InsertError, QueryError};
pub use query::Row;
pub use rows::TableRow;
pub use sink::{InsertReport, RejectedRow, RowError, MAX_BATCH_BYTES, MAX_BATCH_ROWS};
pub use storage_write::{StorageWriter, MAX_APPEND_ROWS};
pub use table::{EnsureOutcome, EnsureReport, PrimaryKeyOutcome, SchemaDifference};
