//! The worker's row sink: BigQuery by the write path the flags chose, with its bookkeeping
//! (written, to retry, refused with a reason) and its waits through outages. The worker hands
//! it an epoch's rows and gets back the rows BigQuery refuses for good, to dead-letter.
//!
//! - `insert-all`: `tabledata.insertAll` with `insertId = checkout_id`; rows are visible when
//!   written, so a crash between the write and the checkpoint writes them again (the `_dedup`
//!   view hides that; BigQuery's insertId de-duplication is best effort).
//! - `storage-write`: [`EpochWriter`], one PENDING stream per checkpoint epoch, committed after
//!   the checkpoint (the delivery core's two-phase rows): exactly one row per checkout in the
//!   raw table.

use std::sync::Arc;
use std::time::Instant;

use anyhow::bail;
use clap::ValueEnum;
use firstclick_bigquery::{BigQuery, CommitOutcome, EpochWriter, RefusedRow};
use firstclick_model::{AttributedRow, TouchRow};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
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
    Epochs(EpochWriter),
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

    /// Rows through pending streams, one per epoch.
    pub(crate) fn epochs(
        writer: EpochWriter,
        metrics: Arc<Metrics>,
        forced: CancellationToken,
    ) -> Self {
        RowSink {
            path: Path::Epochs(writer),
            metrics,
            forced,
        }
    }

    /// Writes `rows` as part of `epoch`, waiting through outages (until the forced stop);
    /// returns the rows BigQuery refuses for good.
    pub(crate) async fn write(
        &mut self,
        epoch: u64,
        rows: Vec<AttributedRow>,
        touches: Vec<TouchRow>,
    ) -> anyhow::Result<Vec<RefusedRow>> {
        let _pending_touches_table = touches;
        let attempted = rows.len();
        let attributed = rows.iter().filter(|r| r.click.is_some()).count();
        let refused = match &mut self.path {
            Path::InsertAll(bq) => insert_all(bq, rows, &self.metrics, &self.forced).await?,
            Path::Epochs(writer) => {
                writer.stage(epoch, rows);
                let mut outage = Outage::new("BigQuery");
                loop {
                    let started = Instant::now();
                    let result = writer.send(epoch).await;
                    Metrics::set(
                        &self.metrics.last_insert_micros,
                        started.elapsed().as_micros() as u64,
                    );
                    match result {
                        Ok(refused) => {
                            outage.recovered();
                            break refused;
                        }
                        Err(e) if e.transient => {
                            outage.failed(&e);
                            if !outage.wait(&self.forced).await {
                                bail!(
                                    "stopped while BigQuery was down; {} rows not written \
                                     (their messages are not acknowledged)",
                                    writer.queued(epoch)
                                );
                            }
                        }
                        Err(e) => bail!(
                            "BigQuery refuses the rows: {e}. Fix the table or the credentials \
                             (see create-bq-table); nothing unwritten was acknowledged"
                        ),
                    }
                }
            }
        };
        let refused_attributed = refused.iter().filter(|r| r.row.click.is_some()).count();
        Metrics::add(
            &self.metrics.rows_written,
            (attempted - refused.len()) as u64,
        );
        Metrics::add(
            &self.metrics.rows_attributed,
            (attributed - refused_attributed) as u64,
        );
        Ok(refused)
    }

    /// Two-phase rows: finalizes `epoch`'s rows; returns what commits them.
    pub(crate) async fn prepare(&mut self, epoch: u64) -> anyhow::Result<Option<Vec<u8>>> {
        let Path::Epochs(writer) = &mut self.path else {
            return Ok(None);
        };
        let mut outage = Outage::new("BigQuery");
        loop {
            match writer.prepare(epoch).await {
                Ok(name) => {
                    outage.recovered();
                    return Ok(name.map(String::into_bytes));
                }
                Err(e) if e.transient => {
                    outage.failed(&e);
                    if !outage.wait(&self.forced).await {
                        bail!("stopped while BigQuery was down; epoch {epoch} not prepared (its messages are not acknowledged)");
                    }
                }
                Err(e) => bail!("cannot finalize the rows of epoch {epoch}: {e}"),
            }
        }
    }

    /// Two-phase rows: commits `transaction` (a pending stream's name).
    pub(crate) async fn commit(&mut self, transaction: Vec<u8>) -> anyhow::Result<()> {
        let name = String::from_utf8_lossy(&transaction).into_owned();
        let Path::Epochs(writer) = &mut self.path else {
            bail!(
                "the checkpoint holds rows written with --bigquery-write-api storage-write that \
                 a crash left uncommitted (stream {name}); start once with storage-write to \
                 commit them, then switch"
            );
        };
        let mut outage = Outage::new("BigQuery");
        loop {
            match writer.commit(&name).await {
                Ok(CommitOutcome::Visible(rows)) => {
                    outage.recovered();
                    Metrics::add(&self.metrics.rows_committed, rows as u64);
                    return Ok(());
                }
                Ok(CommitOutcome::Lost) => {
                    // Only an emulator that restarted between our checkpoint and our commit
                    // loses a pending stream; BigQuery keeps it until it is committed.
                    Metrics::add(&self.metrics.streams_lost, 1);
                    tracing::error!(
                        stream = %name,
                        "the pending stream of the last checkpoint is gone and its rows are not \
                         in this process: they are lost (an emulator restart?)"
                    );
                    return Ok(());
                }
                Err(e) if e.transient => {
                    outage.failed(&e);
                    if !outage.wait(&self.forced).await {
                        bail!("stopped while BigQuery was down; stream {name} not committed (the checkpoint names it: the next start commits it)");
                    }
                }
                Err(e) => bail!("cannot commit stream {name}: {e}"),
            }
        }
    }
}

/// The insertAll path: retries the rows BigQuery refuses for a passing reason and those of a
/// failed request; returns the ones it refuses for good.
async fn insert_all(
    bq: &BigQuery,
    mut rows: Vec<AttributedRow>,
    metrics: &Metrics,
    forced: &CancellationToken,
) -> anyhow::Result<Vec<RefusedRow>> {
    let mut outage = Outage::new("BigQuery");
    let mut refused = Vec::new();
    while !rows.is_empty() {
        let started = Instant::now();
        let result = bq.insert_rows(&rows).await;
        Metrics::set(
            &metrics.last_insert_micros,
            started.elapsed().as_micros() as u64,
        );
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
