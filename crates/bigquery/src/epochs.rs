//! [`EpochWriter`]: exactly-once rows through the Storage Write API, one PENDING stream per
//! checkpoint epoch (docs/design.md §4.2).
//!
//! The rows of an epoch are appended to that epoch's stream, where they stay invisible; the
//! stream is finalized when the epoch's rows are all written ([`EpochWriter::prepare`], which
//! names it), and committed ([`EpochWriter::commit`]) once the checkpoint that finishes those
//! checkouts is durable. A crash before the checkpoint leaves the stream uncommitted for good
//! (its messages come again and go to a new stream); a crash after it is repaired by committing
//! the stream named in the checkpoint again, which is a no-op if it was committed.
//!
//! Every append carries its offset in the stream, so a request whose answer was lost can be
//! sent again without writing its rows twice (BigQuery answers `ALREADY_EXISTS`). A request
//! BigQuery refuses writes nothing: it is halved until the refused rows are found, alone,
//! and those are handed back to the caller (to dead-letter) while the others are written.
//!
//! The writer keeps each epoch's rows until its stream is committed: the emulator holds
//! streams in memory, so after it restarts a stream is gone, and its rows are written again
//! to a new one. Real BigQuery keeps a pending stream until it is committed or expires.
//!
//! The writer is generic over the table's row ([`TableRow`]): the service runs one for the
//! output table and one for the touches table, and an [`EpochTransaction`] names both streams
//! of an epoch, so that one checkpoint commits both tables (and a restore commits both again).

use std::collections::{BTreeMap, HashMap};

use firstclick_model::AttributedRow;

use crate::error::ApiError;
use crate::rows::TableRow;
use crate::storage_write::{Appended, Committed, StorageWriter, MAX_APPEND_ROWS};

/// A row BigQuery refused for good, with its reason.
#[derive(Clone, Debug)]
pub struct RefusedRow<R = AttributedRow> {
    /// The row.
    pub row: R,
    /// Why, in BigQuery's words.
    pub reason: String,
}

/// What [`EpochWriter::commit`] came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitOutcome {
    /// The rows are visible (now, or they were before); how many this writer knew of (0 for a
    /// stream of an earlier process life).
    Visible(usize),
    /// The stream is gone and this process does not hold its rows (a stream of an earlier
    /// process life on an emulator that restarted since): its rows are lost.
    Lost,
}

/// One epoch's stream as this writer sees it.
#[derive(Debug)]
struct EpochStream<R> {
    name: Option<String>,
    /// In the stream, in offset order.
    written: Vec<R>,
    /// Staged and not yet in the stream.
    queued: Vec<R>,
    /// Rows per request at most; halved while a request is refused.
    limit: usize,
    /// Rows of the last request sent whose answer did not arrive: the next request at that
    /// offset must be the same rows, so that `ALREADY_EXISTS` means exactly them.
    in_doubt: Option<usize>,
}

impl<R> Default for EpochStream<R> {
    fn default() -> Self {
        EpochStream {
            name: None,
            written: Vec::new(),
            queued: Vec::new(),
            limit: 0,
            in_doubt: None,
        }
    }
}

/// See the module documentation. `R` is the table's row: [`AttributedRow`] (the default) for
/// the output table, [`firstclick_model::TouchRow`] for the touches table (with a
/// [`StorageWriter::for_touches`]).
#[derive(Debug)]
pub struct EpochWriter<R: TableRow = AttributedRow> {
    writer: StorageWriter,
    open: BTreeMap<u64, EpochStream<R>>,
    /// Finalized streams not yet committed, with their rows.
    prepared: HashMap<String, Vec<R>>,
    /// Streams made again because BigQuery had lost them.
    pub streams_recreated: u64,
}

impl<R: TableRow> EpochWriter<R> {
    /// A writer over `writer`'s table.
    pub fn new(writer: StorageWriter) -> Self {
        EpochWriter {
            writer,
            open: BTreeMap::new(),
            prepared: HashMap::new(),
            streams_recreated: 0,
        }
    }

    /// Adds rows to `epoch`; [`EpochWriter::send`] writes them.
    pub fn stage(&mut self, epoch: u64, rows: Vec<R>) {
        let e = self.open.entry(epoch).or_default();
        e.queued.extend(rows);
    }

    /// Rows staged in `epoch` and not yet in its stream.
    pub fn queued(&self, epoch: u64) -> usize {
        self.open.get(&epoch).map_or(0, |e| e.queued.len())
    }

    /// Writes what is staged for `epoch` into its stream (creating it first). On an error,
    /// what was written stays written: call it again (after a wait, if the error is
    /// transient). Returns the rows BigQuery refused, once.
    pub async fn send(&mut self, epoch: u64) -> Result<Vec<RefusedRow<R>>, ApiError> {
        let e = self.open.entry(epoch).or_default();
        send(&self.writer, e, &mut self.streams_recreated).await
    }

    /// Finalizes `epoch`'s stream once everything staged is written; returns its name, or
    /// `None` when the epoch had no rows. Call [`EpochWriter::send`] first.
    pub async fn prepare(&mut self, epoch: u64) -> Result<Option<String>, ApiError> {
        let Some(e) = self.open.get_mut(&epoch) else {
            return Ok(None);
        };
        loop {
            if !e.queued.is_empty() {
                let refused = send(&self.writer, e, &mut self.streams_recreated).await?;
                if !refused.is_empty() {
                    return Err(ApiError {
                        operation: format!("prepare epoch {epoch}"),
                        status: None,
                        reason: Some("unsent".into()),
                        message: "rows were staged after their send; call send first".into(),
                        transient: false,
                    });
                }
            }
            let Some(name) = e.name.clone() else {
                // Nothing was ever written in this epoch.
                self.open.remove(&epoch);
                return Ok(None);
            };
            match self.writer.finalize(&name).await? {
                Some(count) if count as usize == e.written.len() => {
                    if let Some(e) = self.open.remove(&epoch) {
                        self.prepared.insert(name.clone(), e.written);
                    }
                    return Ok(Some(name));
                }
                Some(count) => {
                    return Err(ApiError {
                        operation: format!("FinalizeWriteStream {name}"),
                        status: None,
                        reason: Some("rowCount".into()),
                        message: format!(
                            "the stream holds {count} rows, this writer appended {}: rows were \
                             appended by someone else, or lost",
                            e.written.len()
                        ),
                        transient: false,
                    })
                }
                None => lost_stream(e, &mut self.streams_recreated),
            }
        }
    }

    /// Commits the finalized stream `name`. Committing a stream that is already committed
    /// succeeds. If BigQuery has lost the stream and this writer holds its rows (prepared in
    /// this process), they are written to a new stream, which is committed instead.
    pub async fn commit(&mut self, name: &str) -> Result<CommitOutcome, ApiError> {
        let rows = self.prepared.get(name).map_or(0, Vec::len);
        match self.writer.commit(name).await? {
            Committed::Now | Committed::Before => {
                self.prepared.remove(name);
                Ok(CommitOutcome::Visible(rows))
            }
            Committed::StreamGone => {
                let Some(rows) = self.prepared.remove(name) else {
                    return Ok(CommitOutcome::Lost);
                };
                // Write them again, under a private epoch number no caller uses.
                let epoch = u64::MAX - self.streams_recreated;
                self.streams_recreated += 1;
                let count = rows.len();
                self.open.insert(
                    epoch,
                    EpochStream {
                        queued: rows.clone(),
                        ..EpochStream::default()
                    },
                );
                let done = async {
                    let refused = self.send(epoch).await?;
                    debug_assert!(refused.is_empty(), "these rows were accepted before");
                    let Some(again) = self.prepare(epoch).await? else {
                        return Ok(CommitOutcome::Visible(0));
                    };
                    match self.writer.commit(&again).await? {
                        Committed::Now | Committed::Before => {
                            self.prepared.remove(&again);
                            Ok(CommitOutcome::Visible(count))
                        }
                        Committed::StreamGone => Err(ApiError {
                            operation: format!("BatchCommitWriteStreams {again}"),
                            status: None,
                            reason: Some("streamGone".into()),
                            message: "the stream was lost again".into(),
                            transient: true,
                        }),
                    }
                }
                .await;
                if done.is_err() {
                    // Keep the rows under the old name, so that a retry starts over.
                    self.open.remove(&epoch);
                    self.prepared.insert(name.to_owned(), rows);
                }
                done
            }
        }
    }
}

/// Puts every row of a lost stream back in the queue, to go to a new stream.
fn lost_stream<R>(e: &mut EpochStream<R>, recreated: &mut u64) {
    tracing::warn!(
        stream = e.name.as_deref().unwrap_or_default(),
        rows = e.written.len(),
        "BigQuery lost a pending stream; writing its rows to a new one"
    );
    *recreated += 1;
    e.name = None;
    e.in_doubt = None;
    let mut again = std::mem::take(&mut e.written);
    again.append(&mut e.queued);
    e.queued = again;
}

async fn send<R: TableRow>(
    writer: &StorageWriter,
    e: &mut EpochStream<R>,
    recreated: &mut u64,
) -> Result<Vec<RefusedRow<R>>, ApiError> {
    let mut refused = Vec::new();
    if e.limit == 0 {
        e.limit = MAX_APPEND_ROWS;
    }
    while !e.queued.is_empty() {
        let name = match &e.name {
            Some(n) => n.clone(),
            None => {
                let n = writer.create_pending().await?;
                e.name = Some(n.clone());
                n
            }
        };
        let n = e.in_doubt.unwrap_or(e.limit).min(e.queued.len()).max(1);
        let offset = e.written.len() as i64;
        e.in_doubt = Some(n);
        let outcome = writer.append_at(&name, &e.queued[..n], offset).await?;
        e.in_doubt = None;
        match outcome {
            Appended::Written | Appended::AlreadyThere => {
                e.written.extend(e.queued.drain(..n));
            }
            Appended::Refused(reason) if n == 1 => {
                let row = e.queued.remove(0);
                tracing::warn!(checkout_id = %row.checkout_id(), %reason, "BigQuery refuses a row");
                refused.push(RefusedRow { row, reason });
                e.limit = MAX_APPEND_ROWS;
            }
            // Nothing of it is written: look for the bad rows in the first half.
            Appended::Refused(_) => e.limit = n / 2,
            Appended::StreamGone => lost_stream(e, recreated),
        }
    }
    Ok(refused)
}

/// What commits one epoch: the names of its streams in the output table and in the touches
/// table, either absent when the epoch wrote nothing there. Its bytes go into the checkpoint's
/// rows-commit element (docs/design.md §4.2, §6.3).
///
/// Encoding: UTF-8 lines `rows NAME` and `touches NAME`. A stream name never holds a newline or
/// starts with those words, so bytes that start with `projects/` are a plain stream name, the
/// form of checkpoints from before the touches table (the output table's stream).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EpochTransaction {
    /// The output table's stream.
    pub rows: Option<String>,
    /// The touches table's stream.
    pub touches: Option<String>,
}

impl EpochTransaction {
    /// Nothing to commit.
    pub fn is_empty(&self) -> bool {
        self.rows.is_none() && self.touches.is_none()
    }

    /// The bytes stored in the checkpoint.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut lines = Vec::new();
        if let Some(r) = &self.rows {
            lines.push(format!("rows {r}"));
        }
        if let Some(t) = &self.touches {
            lines.push(format!("touches {t}"));
        }
        lines.join("\n").into_bytes()
    }

    /// Reads [`EpochTransaction::to_bytes`] (or a plain stream name of an older checkpoint);
    /// `None` for bytes that are neither.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(bytes).ok()?;
        if text.starts_with("projects/") && !text.contains('\n') {
            return Some(EpochTransaction {
                rows: Some(text.to_owned()),
                touches: None,
            });
        }
        let mut t = EpochTransaction::default();
        for line in text.lines() {
            let (kind, name) = line.split_once(' ')?;
            let slot = match kind {
                "rows" => &mut t.rows,
                "touches" => &mut t.touches,
                _ => return None,
            };
            if name.is_empty() || slot.replace(name.to_owned()).is_some() {
                return None;
            }
        }
        (!t.is_empty()).then_some(t)
    }
}

impl std::fmt::Display for EpochTransaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let none = "none";
        write!(
            f,
            "rows stream {}, touches stream {}",
            self.rows.as_deref().unwrap_or(none),
            self.touches.as_deref().unwrap_or(none)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transactions_round_trip_and_old_ones_are_rows_streams() {
        let both = EpochTransaction {
            rows: Some("projects/p/datasets/d/tables/a/streams/1".into()),
            touches: Some("projects/p/datasets/d/tables/b/streams/2".into()),
        };
        assert_eq!(EpochTransaction::from_bytes(&both.to_bytes()), Some(both));
        let rows_only = EpochTransaction {
            rows: Some("projects/p/datasets/d/tables/a/streams/1".into()),
            touches: None,
        };
        assert_eq!(
            EpochTransaction::from_bytes(&rows_only.to_bytes()),
            Some(rows_only.clone())
        );
        assert_eq!(
            EpochTransaction::from_bytes(b"projects/p/datasets/d/tables/a/streams/1"),
            Some(rows_only)
        );
        assert_eq!(EpochTransaction::from_bytes(b""), None);
        assert_eq!(EpochTransaction::from_bytes(b"other x"), None);
        assert_eq!(EpochTransaction::from_bytes(b"rows a\nrows b"), None);
    }
}
