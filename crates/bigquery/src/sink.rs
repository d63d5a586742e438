//! Streaming output rows into the table with `tabledata.insertAll`.
//!
//! [`BigQuery::insert_rows`] sends the rows in order, in requests of at most
//! [`MAX_BATCH_ROWS`] rows and [`MAX_BATCH_BYTES`] of JSON (BigQuery's limits are 50,000 rows and
//! 10 MB; Google recommends about 500 rows). Each row is the JSON of [`AttributedRow`] (keys are
//! the column names) with `insertId = checkout_id`, so a retried row is deduplicated by BigQuery
//! on a best-effort basis (the emulator does not), and by the `_dedup` view in any case.
//!
//! Requests use `skipInvalidRows`: the valid rows of a request are written even when some are
//! refused. Outcomes are split three ways, so a caller can ack, retry or dead-letter:
//! - the whole request failed in a way that may pass later (network, timeout, 429, 5xx):
//!   [`InsertError::Transient`];
//! - the whole request is refused (no such table, no permission): [`InsertError::Permanent`];
//! - some rows are refused: listed in [`InsertReport::rejected`] with their index in the input
//!   and BigQuery's reasons; [`RejectedRow::retryable`] tells the rows refused for a passing
//!   reason (`backendError`, `stopped`, ...) from the invalid ones (dead-letter those).
//!
//! [`BigQuery::insert_touches`] writes touch rows to the touches table the same way (one
//! implementation for any [`TableRow`]), with `insertId = checkout_id:model:click_id`.

use gcp_bigquery_client::model::table_data_insert_all_request::TableDataInsertAllRequest;
use gcp_bigquery_client::model::table_data_insert_all_request_rows::TableDataInsertAllRequestRows;
use gcp_bigquery_client::model::table_data_insert_all_response::TableDataInsertAllResponse;

use firstclick_model::{AttributedRow, TouchRow};

use crate::error::{is_transient_reason, ApiError, InsertError};
use crate::rows::TableRow;
use crate::BigQuery;

/// Most rows per insertAll request.
pub const MAX_BATCH_ROWS: usize = 500;
/// Most bytes of row JSON per insertAll request (BigQuery refuses requests over 10 MB).
pub const MAX_BATCH_BYTES: usize = 9_000_000;
/// Bytes a row adds to a request besides its JSON (`{"insertId":"...","json":...},`).
const ROW_OVERHEAD: usize = 32;

/// What happened to the rows given to [`BigQuery::insert_rows`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct InsertReport {
    /// How many leading rows of the input were handled: all of them on success; on a
    /// [`InsertError`], the rows before the failed request.
    pub attempted: usize,
    /// Rows BigQuery accepted.
    pub inserted: usize,
    /// Rows that were not written, in input order.
    pub rejected: Vec<RejectedRow>,
    /// insertAll requests that succeeded.
    pub requests: usize,
}

impl InsertReport {
    /// Rejected rows that will be refused again: dead-letter them.
    pub fn permanent(&self) -> impl Iterator<Item = &RejectedRow> {
        self.rejected.iter().filter(|r| !r.retryable)
    }

    /// Rejected rows refused for a passing reason: send them again later.
    pub fn retryable(&self) -> impl Iterator<Item = &RejectedRow> {
        self.rejected.iter().filter(|r| r.retryable)
    }
}

/// A row that was not written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RejectedRow {
    /// Its index in the slice given to [`BigQuery::insert_rows`].
    pub index: usize,
    /// Its `checkout_id`.
    pub checkout_id: String,
    /// Why, as BigQuery (or this crate, before sending) said.
    pub errors: Vec<RowError>,
    /// True when every reason is a passing one (`backendError`, `internalError`, `timeout`,
    /// `stopped`, `rateLimitExceeded`): the row itself is fine, send it again.
    pub retryable: bool,
}

impl std::fmt::Display for RejectedRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "row {} (checkout_id {}): ", self.index, self.checkout_id)?;
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// One reason a row was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowError {
    /// BigQuery's reason code, e.g. `invalid`; `rowTooLarge` or `unserializable` when this crate
    /// refused to send the row.
    pub reason: String,
    /// The offending column, when known.
    pub location: String,
    /// The explanation.
    pub message: String,
}

impl std::fmt::Display for RowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.reason)?;
        if !self.location.is_empty() {
            write!(f, " at {}", self.location)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Rows of one request, with their input indexes, and the rows of its input range that were
/// refused before sending.
struct Batch {
    start: usize,
    end: usize,
    rows: Vec<TableDataInsertAllRequestRows>,
    indexes: Vec<usize>,
    refused: Vec<RejectedRow>,
}

impl Batch {
    fn new(start: usize) -> Self {
        Batch {
            start,
            end: start,
            rows: Vec::new(),
            indexes: Vec::new(),
            refused: Vec::new(),
        }
    }
}

fn local_rejection(
    index: usize,
    checkout_id: String,
    reason: &str,
    message: String,
) -> RejectedRow {
    RejectedRow {
        index,
        checkout_id,
        errors: vec![RowError {
            reason: reason.to_owned(),
            location: String::new(),
            message,
        }],
        retryable: false,
    }
}

/// Splits the input into requests of at most `max_rows` rows and `max_bytes` of JSON.
fn batches<R: TableRow>(rows: &[R], max_rows: usize, max_bytes: usize) -> Vec<Batch> {
    let max_rows = max_rows.max(1);
    let mut out = Vec::new();
    let mut current = Batch::new(0);
    let mut bytes = 0;
    for (index, row) in rows.iter().enumerate() {
        let checkout_id = row.checkout_id();
        let prepared = row.json_value().and_then(|json| {
            let size = serde_json::to_vec(&json).map_err(|e| e.to_string())?.len()
                + checkout_id.len()
                + ROW_OVERHEAD;
            Ok((json, size))
        });
        match prepared {
            Err(message) => current.refused.push(local_rejection(
                index,
                checkout_id,
                "unserializable",
                format!("the row could not be written as JSON: {message}"),
            )),
            Ok((_, size)) if size > max_bytes => current.refused.push(local_rejection(
                index,
                checkout_id,
                "rowTooLarge",
                format!("the row is {size} bytes of JSON, more than the {max_bytes} a request may carry"),
            )),
            Ok((json, size)) => {
                if current.rows.len() == max_rows || bytes + size > max_bytes {
                    let next = Batch::new(index);
                    out.push(std::mem::replace(&mut current, next));
                    bytes = 0;
                }
                bytes += size;
                current.rows.push(TableDataInsertAllRequestRows {
                    insert_id: Some(row.insert_id()),
                    json,
                });
                current.indexes.push(index);
            }
        }
        current.end = index + 1;
    }
    if current.end > current.start {
        out.push(current);
    }
    out
}

impl BigQuery {
    /// Streams `rows` into the output table (see the module documentation for batching and for
    /// what each outcome means). An empty slice sends nothing.
    pub async fn insert_rows(&self, rows: &[AttributedRow]) -> Result<InsertReport, InsertError> {
        self.insert_rows_with_limits(rows, MAX_BATCH_ROWS, MAX_BATCH_BYTES)
            .await
    }

    /// [`BigQuery::insert_rows`] with other request limits (rows, bytes of JSON). Limits above
    /// BigQuery's own (50,000 rows, 10 MB) make BigQuery refuse the request.
    pub async fn insert_rows_with_limits(
        &self,
        rows: &[AttributedRow],
        max_rows: usize,
        max_bytes: usize,
    ) -> Result<InsertReport, InsertError> {
        self.insert_into(&self.table, rows, max_rows, max_bytes)
            .await
    }

    /// Streams touch rows into the touches table (`--bq-touches-table`), as
    /// [`BigQuery::insert_rows`] does rows, with `insertId = checkout_id:model:click_id`.
    /// [`RejectedRow::index`] is the touch's index in `touches`.
    pub async fn insert_touches(&self, touches: &[TouchRow]) -> Result<InsertReport, InsertError> {
        self.insert_into(
            &self.touches_table,
            touches,
            MAX_BATCH_ROWS,
            MAX_BATCH_BYTES,
        )
        .await
    }

    /// The insertAll of any of our tables: `table` is the id in the dataset.
    async fn insert_into<R: TableRow>(
        &self,
        table: &str,
        rows: &[R],
        max_rows: usize,
        max_bytes: usize,
    ) -> Result<InsertReport, InsertError> {
        let table_path = format!("{}.{}.{table}", self.project, self.dataset);
        let mut report = InsertReport::default();
        for batch in batches(rows, max_rows, max_bytes) {
            let Batch {
                start,
                end,
                rows: batch_rows,
                indexes,
                refused,
            } = batch;
            let mut inserted = 0;
            let mut rejected = refused;
            if !batch_rows.is_empty() {
                let sent = batch_rows.len();
                let response = self.send(table, batch_rows, start, end).await;
                let response = match response {
                    Ok(r) => r,
                    Err(cause) => {
                        report.attempted = start;
                        return Err(if cause.transient {
                            InsertError::Transient {
                                done: report,
                                cause,
                            }
                        } else {
                            InsertError::Permanent {
                                done: report,
                                cause,
                            }
                        });
                    }
                };
                let refused_remotely = match row_errors(response, &indexes, rows) {
                    Ok(r) => r,
                    Err(cause) => {
                        report.attempted = start;
                        return Err(InsertError::Permanent {
                            done: report,
                            cause: ApiError {
                                operation: format!("insertAll into {table_path}"),
                                ..cause
                            },
                        });
                    }
                };
                inserted = sent - refused_remotely.len();
                rejected.extend(refused_remotely);
                report.requests += 1;
            }
            rejected.sort_by_key(|r| r.index);
            for r in &rejected {
                tracing::warn!(table = %table_path, "BigQuery refused {r}");
            }
            report.inserted += inserted;
            report.rejected.extend(rejected);
            report.attempted = end;
        }
        Ok(report)
    }

    async fn send(
        &self,
        table: &str,
        rows: Vec<TableDataInsertAllRequestRows>,
        start: usize,
        end: usize,
    ) -> Result<TableDataInsertAllResponse, ApiError> {
        let operation = || {
            format!(
                "insertAll of rows {start}..{end} into {}.{}.{table}",
                self.project, self.dataset
            )
        };
        let mut request = TableDataInsertAllRequest::new();
        request.skip_invalid_rows();
        request
            .add_rows(rows)
            .map_err(|e| ApiError::from_bq(operation(), e))?;
        self.client
            .tabledata()
            .insert_all(&self.project, &self.dataset, table, request)
            .await
            .map_err(|e| ApiError::from_bq(operation(), e))
    }
}

/// The rows of one request that BigQuery refused, by input index.
fn row_errors<R: TableRow>(
    response: TableDataInsertAllResponse,
    indexes: &[usize],
    rows: &[R],
) -> Result<Vec<RejectedRow>, ApiError> {
    let mut out: Vec<RejectedRow> = Vec::new();
    for e in response.insert_errors.unwrap_or_default() {
        let local = e
            .index
            .and_then(|i| usize::try_from(i).ok())
            .filter(|i| *i < indexes.len())
            .ok_or_else(|| ApiError {
                operation: String::new(),
                status: Some(200),
                reason: Some("badInsertErrorIndex".into()),
                message: format!(
                    "insertErrors names row {:?} of a request of {} rows; cannot tell which \
                     rows were written",
                    e.index,
                    indexes.len()
                ),
                transient: false,
            })?;
        let index = indexes[local];
        let errors: Vec<RowError> = e
            .errors
            .unwrap_or_default()
            .into_iter()
            .map(|p| RowError {
                reason: p.reason.unwrap_or_else(|| "unknown".into()),
                location: p.location.unwrap_or_default(),
                message: p.message.unwrap_or_default(),
            })
            .collect();
        let retryable = !errors.is_empty() && errors.iter().all(|e| is_transient_reason(&e.reason));
        match out.iter_mut().find(|r| r.index == index) {
            Some(existing) => {
                existing.retryable &= retryable;
                existing.errors.extend(errors);
            }
            None => out.push(RejectedRow {
                index,
                checkout_id: rows[index].checkout_id(),
                errors,
                retryable,
            }),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use firstclick_model::{AttributionModel, EventTime};

    fn row(id: &str, address_len: usize) -> AttributedRow {
        let mut checkout = firstclick_model::parse_checkout(
            format!(
                r#"{{"checkout_id":"{id}","user_id":1,"product_id":"p","datetime_occured":"2024-05-01T00:00:00Z"}}"#
            )
            .as_bytes(),
        )
        .expect("valid checkout");
        let address = "x".repeat(address_len);
        checkout.details = firstclick_model::DetailTexts {
            shipping_address: Some(&address),
            ..checkout.details.texts()
        }
        .into();
        AttributedRow {
            checkout,
            user_name: None,
            click: None,
            model: AttributionModel::FirstClick,
            processed_at: EventTime::from_micros(0),
        }
    }

    #[test]
    fn batches_respect_row_and_byte_limits() {
        let rows: Vec<AttributedRow> = (0..1201).map(|i| row(&format!("k{i}"), 10)).collect();
        let b = batches(&rows, 500, MAX_BATCH_BYTES);
        let sizes: Vec<usize> = b.iter().map(|b| b.rows.len()).collect();
        assert_eq!(sizes, [500, 500, 201]);
        assert_eq!(b[1].start, 500);
        assert_eq!(b[2].end, 1201);

        let big: Vec<AttributedRow> = (0..5).map(|i| row(&format!("k{i}"), 1000)).collect();
        let one = serde_json::to_vec(&big[0]).expect("JSON").len() + 2 + ROW_OVERHEAD;
        let b = batches(&big, 500, 2 * one + 10);
        let sizes: Vec<usize> = b.iter().map(|b| b.rows.len()).collect();
        assert_eq!(sizes, [2, 2, 1]);
    }

    #[test]
    fn an_oversized_row_is_refused_before_sending() {
        let rows = vec![row("a", 10), row("huge", 5000), row("b", 10)];
        let b = batches(&rows, 500, 2000);
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].indexes, [0, 2]);
        assert_eq!(b[0].refused.len(), 1);
        assert_eq!(b[0].refused[0].index, 1);
        assert_eq!(b[0].refused[0].checkout_id, "huge");
        assert_eq!(b[0].refused[0].errors[0].reason, "rowTooLarge");
        assert_eq!(b[0].rows[0].insert_id.as_deref(), Some("a"));
    }
}
