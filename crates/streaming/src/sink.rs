//! The worker's row sink: BigQuery by the write path the flags chose, with its bookkeeping
//! (written, to retry, refused with a reason) and its waits through outages. The worker hands
//! it an epoch's rows and touch rows and gets back those BigQuery refuses for good, to
//! dead-letter ([`Refused`]).
//!
//! Rows go to the output table, touch rows (multi-touch models) to the touches table, on the
//! same path with the same retries (docs/design.md §4.2, §5):
//! - `insert-all`: `tabledata.insertAll` with the table's key as insertId; rows are visible
//!   when written, so a crash between the write and the checkpoint writes them again (the
//!   `_dedup` views hide that; BigQuery's insertId de-duplication is best effort).
//! - `storage-write`: two [`EpochWriter`]s, one per table, each with a PENDING stream per
//!   checkpoint epoch; [`RowSink::prepare`] finalizes both and names both streams in one
//!   [`EpochTransaction`], which the checkpoint stores and [`RowSink::commit`] commits (both
//!   streams, each idempotently) after it: exactly one row per key in both raw tables.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use anyhow::bail;
use clap::ValueEnum;
use firstclick_bigquery::{
    BigQuery, CommitOutcome, EpochTransaction, EpochWriter, InsertError, InsertReport, RefusedRow,
    TableRow,
};
use firstclick_model::{AttributedRow, AttributionModel, TouchRow};
use tokio_util::sync::CancellationToken;

use crate::metrics::{BigQueryCall, Metrics};
use crate::outage::Outage;

/// How rows reach BigQuery (`--bigquery-write-api`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum WriteApi {
    /// `tabledata.insertAll`: at least once (the `_dedup` view de-duplicates).
    InsertAll,
    /// The Storage Write API with a pending stream per checkpoint epoch: exactly once.
    StorageWrite,
}

impl WriteApi {
    /// Whether the delivery core must run two-phase rows for it.
    pub(crate) fn two_phase(self) -> bool {
        self == WriteApi::StorageWrite
    }
}

enum Path {
    InsertAll(BigQuery),
    Epochs {
        rows: EpochWriter,
        touches: EpochWriter<TouchRow>,
    },
}

/// What BigQuery refused for good in one [`RowSink::write`]: dead-letter these.
#[derive(Debug, Default)]
pub(crate) struct Refused {
    /// Output rows.
    pub(crate) rows: Vec<RefusedRow>,
    /// Touch rows.
    pub(crate) touches: Vec<RefusedRow<TouchRow>>,
}

/// See the module documentation.
pub(crate) struct RowSink {
    path: Path,
    metrics: Arc<Metrics>,
    forced: CancellationToken,
}

impl RowSink {
    /// Rows through `insertAll`.
    pub(crate) fn insert_all(
        bigquery: BigQuery,
        metrics: Arc<Metrics>,
        forced: CancellationToken,
    ) -> Self {
        RowSink {
            path: Path::InsertAll(bigquery),
            metrics,
            forced,
        }
    }

    /// Rows and touch rows through pending streams, one per epoch and table.
    pub(crate) fn epochs(
        rows: EpochWriter,
        touches: EpochWriter<TouchRow>,
        metrics: Arc<Metrics>,
        forced: CancellationToken,
    ) -> Self {
        RowSink {
            path: Path::Epochs { rows, touches },
            metrics,
            forced,
        }
    }

    /// Writes `rows` and `touches` as part of `epoch`, waiting through outages (until the
    /// forced stop); returns those BigQuery refuses for good.
    pub(crate) async fn write(
        &mut self,
        epoch: u64,
        rows: Vec<AttributedRow>,
        touches: Vec<TouchRow>,
    ) -> anyhow::Result<Refused> {
        let mut tally = RowTally::default();
        tally.add_rows(&rows, 1);
        tally.add_touches(&touches, 1);
        let refused = match &mut self.path {
            Path::InsertAll(bq) => Refused {
                rows: insert_all(bq, rows, &self.metrics, &self.forced).await?,
                touches: insert_all(bq, touches, &self.metrics, &self.forced).await?,
            },
            Path::Epochs {
                rows: row_writer,
                touches: touch_writer,
            } => {
                row_writer.stage(epoch, rows);
                touch_writer.stage(epoch, touches);
                Refused {
                    rows: send_epoch(row_writer, epoch, &self.metrics, &self.forced).await?,
                    touches: send_epoch(touch_writer, epoch, &self.metrics, &self.forced).await?,
                }
            }
        };
        let refused_rows: Vec<&AttributedRow> = refused.rows.iter().map(|r| &r.row).collect();
        let refused_touches: Vec<&TouchRow> = refused.touches.iter().map(|r| &r.row).collect();
        tally.add_rows(refused_rows, -1);
        tally.add_touches(refused_touches, -1);
        tally.export(&self.metrics);
        Ok(refused)
    }

    /// Two-phase rows: finalizes `epoch`'s streams in both tables; returns what commits them
    /// (an [`EpochTransaction`]'s bytes), `None` when the epoch wrote nothing.
    pub(crate) async fn prepare(&mut self, epoch: u64) -> anyhow::Result<Option<Vec<u8>>> {
        let Path::Epochs { rows, touches } = &mut self.path else {
            return Ok(None);
        };
        // One loop per table: a finalized stream leaves its writer's open epochs, so the
        // touches' retries must not prepare the rows again.
        let transaction = EpochTransaction {
            rows: prepare_epoch(rows, epoch, &self.forced).await?,
            touches: prepare_epoch(touches, epoch, &self.forced).await?,
        };
        Ok((!transaction.is_empty()).then(|| transaction.to_bytes()))
    }

    /// Two-phase rows: commits `transaction` (both streams it names; committing a committed
    /// stream is success, so a restore may commit it again).
    pub(crate) async fn commit(&mut self, transaction: Vec<u8>) -> anyhow::Result<()> {
        let Some(t) = EpochTransaction::from_bytes(&transaction) else {
            bail!(
                "the checkpoint names a rows transaction this build cannot read ({:?}); was it \
                 written by a newer version?",
                String::from_utf8_lossy(&transaction)
            );
        };
        let Path::Epochs { rows, touches } = &mut self.path else {
            bail!(
                "the checkpoint holds rows written with --bigquery-write-api storage-write that \
                 a crash left uncommitted ({t}); start once with storage-write to commit them, \
                 then switch"
            );
        };
        if let Some(name) = &t.rows {
            let n = commit_stream(rows, name, &self.metrics, &self.forced).await?;
            self.metrics.rows_committed(n as u64);
        }
        if let Some(name) = &t.touches {
            commit_stream(touches, name, &self.metrics, &self.forced).await?;
        }
        Ok(())
    }
}

/// Writes what is staged for `epoch` in `writer`'s table, through outages; returns the rows
/// refused for good.
async fn send_epoch<R: TableRow>(
    writer: &mut EpochWriter<R>,
    epoch: u64,
    metrics: &Metrics,
    forced: &CancellationToken,
) -> anyhow::Result<Vec<RefusedRow<R>>> {
    let mut outage = Outage::new("BigQuery");
    loop {
        let started = Instant::now();
        let result = writer.send(epoch).await;
        metrics.bigquery_call(BigQueryCall::Append, started.elapsed().as_secs_f64());
        match result {
            Ok(refused) => {
                outage.recovered();
                return Ok(refused);
            }
            Err(e) if e.transient => {
                outage.failed(&e);
                if !outage.wait(forced).await {
                    bail!(
                        "stopped while BigQuery was down; {} rows not written (their messages \
                         are not acknowledged)",
                        writer.queued(epoch)
                    );
                }
            }
            Err(e) => bail!(
                "BigQuery refuses the rows: {e}. Fix the table or the credentials (see \
                 create-bq-table); nothing unwritten was acknowledged"
            ),
        }
    }
}

/// Finalizes `epoch`'s stream in `writer`'s table, through outages; its name, `None` when the
/// epoch wrote nothing there.
async fn prepare_epoch<R: TableRow>(
    writer: &mut EpochWriter<R>,
    epoch: u64,
    forced: &CancellationToken,
) -> anyhow::Result<Option<String>> {
    let mut outage = Outage::new("BigQuery");
    loop {
        match writer.prepare(epoch).await {
            Ok(name) => {
                outage.recovered();
                return Ok(name);
            }
            Err(e) if e.transient => {
                outage.failed(&e);
                if !outage.wait(forced).await {
                    bail!("stopped while BigQuery was down; epoch {epoch} not prepared (its messages are not acknowledged)");
                }
            }
            Err(e) => bail!("cannot finalize the rows of epoch {epoch}: {e}"),
        }
    }
}

/// Commits the finalized stream `name` of `writer`'s table, through outages; the rows it made
/// visible that this process knew of.
async fn commit_stream<R: TableRow>(
    writer: &mut EpochWriter<R>,
    name: &str,
    metrics: &Metrics,
    forced: &CancellationToken,
) -> anyhow::Result<usize> {
    let mut outage = Outage::new("BigQuery");
    loop {
        let started = Instant::now();
        let result = writer.commit(name).await;
        metrics.bigquery_call(BigQueryCall::Commit, started.elapsed().as_secs_f64());
        match result {
            Ok(CommitOutcome::Visible(rows)) => {
                outage.recovered();
                return Ok(rows);
            }
            Ok(CommitOutcome::Lost) => {
                // Only an emulator that restarted between our checkpoint and our commit
                // loses a pending stream; BigQuery keeps it until it is committed.
                metrics.stream_lost();
                tracing::error!(
                    stream = %name,
                    "the pending stream of the last checkpoint is gone and its rows are not \
                     in this process: they are lost (an emulator restart?)"
                );
                return Ok(0);
            }
            Err(e) if e.transient => {
                outage.failed(&e);
                if !outage.wait(forced).await {
                    bail!("stopped while BigQuery was down; stream {name} not committed (the checkpoint names it: the next start commits it)");
                }
            }
            Err(e) => bail!("cannot commit stream {name}: {e}"),
        }
    }
}

/// Rows and touch rows by model (and, for rows, attributed or organic), for the metrics.
#[derive(Default)]
struct RowTally {
    rows: [[i64; 2]; AttributionModel::ALL.len()],
    touches: [i64; AttributionModel::ALL.len()],
}

impl RowTally {
    fn model_index(model: AttributionModel) -> usize {
        AttributionModel::ALL
            .iter()
            .position(|m| *m == model)
            .unwrap_or(0)
    }

    /// Adds `sign` for each of `rows`.
    fn add_rows<'a>(&mut self, rows: impl IntoIterator<Item = &'a AttributedRow>, sign: i64) {
        for r in rows {
            self.rows[Self::model_index(r.model)][usize::from(r.click.is_some())] += sign;
        }
    }

    /// Adds `sign` for each of `touches`.
    fn add_touches<'a>(&mut self, touches: impl IntoIterator<Item = &'a TouchRow>, sign: i64) {
        for t in touches {
            self.touches[Self::model_index(t.model)] += sign;
        }
    }

    /// Counts what the tally holds as written.
    fn export(&self, metrics: &Metrics) {
        for (i, model) in AttributionModel::ALL.iter().enumerate() {
            let [organic, attributed] = self.rows[i];
            if organic > 0 {
                metrics.rows_written(*model, false, organic as u64);
            }
            if attributed > 0 {
                metrics.rows_written(*model, true, attributed as u64);
            }
            if self.touches[i] > 0 {
                metrics.touches_written(*model, self.touches[i] as u64);
            }
        }
    }
}

/// The insertAll of either table.
trait Insert: TableRow {
    /// Inserts `rows` into their table.
    fn insert<'a>(
        bq: &'a BigQuery,
        rows: &'a [Self],
    ) -> impl Future<Output = Result<InsertReport, InsertError>> + Send + 'a;
}

impl Insert for AttributedRow {
    fn insert<'a>(
        bq: &'a BigQuery,
        rows: &'a [Self],
    ) -> impl Future<Output = Result<InsertReport, InsertError>> + Send + 'a {
        bq.insert_rows(rows)
    }
}

impl Insert for TouchRow {
    fn insert<'a>(
        bq: &'a BigQuery,
        rows: &'a [Self],
    ) -> impl Future<Output = Result<InsertReport, InsertError>> + Send + 'a {
        bq.insert_touches(rows)
    }
}

/// The insertAll path: retries the rows BigQuery refuses for a passing reason and those of a
/// failed request; returns the ones it refuses for good.
async fn insert_all<R: Insert>(
    bq: &BigQuery,
    mut rows: Vec<R>,
    metrics: &Metrics,
    forced: &CancellationToken,
) -> anyhow::Result<Vec<RefusedRow<R>>> {
    let mut outage = Outage::new("BigQuery");
    let mut refused = Vec::new();
    while !rows.is_empty() {
        let started = Instant::now();
        let result = R::insert(bq, &rows).await;
        metrics.bigquery_call(BigQueryCall::InsertAll, started.elapsed().as_secs_f64());
        let (report, failed_from) = match result {
            Ok(report) => (report, None),
            Err(e) if e.is_transient() => {
                outage.failed(&e);
                let from = e.done().attempted;
                (e.done().clone(), Some(from))
            }
            Err(e) => bail!(
                "BigQuery refuses the rows: {e}. Fix the table or the credentials (see \
                 create-bq-table); nothing unwritten was acknowledged"
            ),
        };
        // Rows past a failed request and rows refused for a passing reason go again; rows
        // refused for good go back to the caller.
        let mut again = vec![false; rows.len()];
        let mut bad = vec![None; rows.len()];
        for r in report.permanent() {
            if let Some(slot) = bad.get_mut(r.index) {
                *slot = Some(r.to_string());
            }
        }
        for r in report.retryable() {
            if let Some(slot) = again.get_mut(r.index) {
                *slot = true;
            }
        }
        let handled = failed_from.unwrap_or(rows.len());
        let mut retry_rows = Vec::new();
        for (i, row) in rows.drain(..).enumerate() {
            if i >= handled || again[i] {
                retry_rows.push(row);
            } else if let Some(reason) = bad[i].take() {
                refused.push(RefusedRow { row, reason });
            }
        }
        rows = retry_rows;
        if rows.is_empty() {
            outage.recovered();
        } else {
            if failed_from.is_none() {
                outage.failed(&format!("{} rows refused for a passing reason", rows.len()));
            }
            if !outage.wait(forced).await {
                bail!(
                    "stopped while BigQuery was down; {} rows not written (their messages are \
                     not acknowledged)",
                    rows.len()
                );
            }
        }
    }
    Ok(refused)
}
