//! Running SQL and reading the result as JSON objects, for tests and tools.
//!
//! [`BigQuery::query`] sends `jobs.query`, waits for the job with `jobs.getQueryResults`, follows
//! every page, and returns one `serde_json::Map` per row keyed by column name. BigQuery's wire
//! format sends every cell as a string; we convert by the column's type:
//!
//! | column type                 | returned as                                                 |
//! |-----------------------------|-------------------------------------------------------------|
//! | `STRING`, `DATE`, `TIME`, ... | JSON string, as sent                                       |
//! | `INTEGER`/`INT64`           | JSON integer                                                |
//! | `FLOAT`/`FLOAT64`           | JSON number (non-finite values stay strings: `"NaN"`)       |
//! | `BOOLEAN`/`BOOL`            | JSON bool                                                   |
//! | `NUMERIC`/`BIGNUMERIC`      | JSON string, exact decimal without trailing zeros (`"12.5"`) |
//! | `TIMESTAMP`                 | JSON integer: microseconds since the Unix epoch, UTC        |
//! | `RECORD`, `REPEATED`        | the raw `{"v": ...}` structure, unconverted                 |
//! | NULL                        | JSON null                                                   |
//!
//! TIMESTAMPs are requested with `formatOptions.useInt64Timestamp` so real BigQuery answers
//! integer microseconds like the emulator does; float seconds (what real BigQuery sends on the
//! pages fetched with `getQueryResults`, where the client crate cannot pass that option) are
//! converted to microseconds too.
//!
//! A refused query can come back as HTTP 400 (BigQuery) or as HTTP 200 with an `errors` array
//! (the emulator): both are errors here.

use std::time::{Duration, Instant};

use gcp_bigquery_client::model::data_format_options::DataFormatOptions;
use gcp_bigquery_client::model::error_proto::ErrorProto;
use gcp_bigquery_client::model::get_query_results_parameters::GetQueryResultsParameters;
use gcp_bigquery_client::model::query_request::QueryRequest;
use gcp_bigquery_client::model::query_response::QueryResponse;
use gcp_bigquery_client::model::table_field_schema::TableFieldSchema;
use gcp_bigquery_client::model::table_row::TableRow;
use serde_json::{Map, Value};

use crate::error::{ApiError, QueryError};
use crate::BigQuery;

/// Rows per result page.
const PAGE_SIZE: u32 = 10_000;
/// How long one `getQueryResults` call may wait on the server for the job to finish.
const POLL_WAIT_MS: i32 = 10_000;
/// How long we wait for a job overall.
const MAX_WAIT: Duration = Duration::from_secs(600);

/// One result row: column name to value (see the module documentation for the types).
pub type Row = Map<String, Value>;

impl BigQuery {
    /// Runs `sql` (standard SQL) and returns all its rows. DDL and DML return no rows.
    ///
    /// Write table names fully qualified: `` `project.dataset.table` `` (see
    /// [`BigQuery::table_path`]).
    pub async fn query(&self, sql: &str) -> Result<Vec<Row>, QueryError> {
        self.query_with_page_size(sql, PAGE_SIZE).await
    }

    /// [`BigQuery::query`], fetching at most `page_size` rows per response.
    pub async fn query_with_page_size(
        &self,
        sql: &str,
        page_size: u32,
    ) -> Result<Vec<Row>, QueryError> {
        let page_size = i32::try_from(page_size.max(1)).unwrap_or(i32::MAX);
        let operation = || format!("query in project {}", self.project);
        let mut request = QueryRequest::new(sql);
        request.location = self.location.clone();
        request.max_results = Some(page_size);
        request.timeout_ms = Some(POLL_WAIT_MS);
        request.format_options = Some(int64_timestamps());
        let first = self
            .client
            .job()
            .query(&self.project, request)
            .await
            .map_err(|e| ApiError::from_bq(operation(), e))?;
        check_errors(sql, first.errors.as_deref())?;

        let job_id = first
            .job_reference
            .as_ref()
            .and_then(|r| r.job_id.clone())
            .ok_or_else(|| QueryError::Malformed("no jobReference.jobId in the answer".into()))?;
        let location = first
            .job_reference
            .as_ref()
            .and_then(|r| r.location.clone())
            .or_else(|| self.location.clone());

        let started = Instant::now();
        let mut page = first;
        let mut rows = Vec::new();
        loop {
            let complete = page.job_complete.unwrap_or(false);
            if complete {
                if let Some(page_rows) = page.rows.take() {
                    let fields = page
                        .schema
                        .as_ref()
                        .and_then(|s| s.fields.as_deref())
                        .unwrap_or_default();
                    for r in page_rows {
                        rows.push(convert_row(fields, r)?);
                    }
                }
                if page.page_token.is_none() {
                    return Ok(rows);
                }
            } else if started.elapsed() > MAX_WAIT {
                return Err(QueryError::Timeout {
                    job_id,
                    waited_secs: started.elapsed().as_secs(),
                    sql: sql.to_owned(),
                });
            }
            let params = GetQueryResultsParameters {
                // The client crate sends these parameters as a query string and cannot encode
                // the nested `formatOptions.useInt64Timestamp` ("builder error: unsupported
                // value"). Later pages from real BigQuery thus carry float seconds, which
                // `timestamp_micros` reads (exact to the microsecond for present-day times).
                format_options: None,
                location: location.clone(),
                max_results: Some(page_size),
                // While the job runs, ask again from the start; once complete, follow the token.
                page_token: if complete {
                    page.page_token.take()
                } else {
                    None
                },
                start_index: None,
                timeout_ms: Some(POLL_WAIT_MS),
            };
            let next = self
                .client
                .job()
                .get_query_results(&self.project, &job_id, params)
                .await
                .map_err(|e| ApiError::from_bq(format!("getQueryResults of job {job_id}"), e))?;
            page = QueryResponse::from(next);
            check_errors(sql, page.errors.as_deref())?;
        }
    }
}

fn int64_timestamps() -> DataFormatOptions {
    DataFormatOptions {
        use_int64_timestamp: Some(true),
    }
}

/// A non-empty `errors` array on an answered query means it was refused.
fn check_errors(sql: &str, errors: Option<&[ErrorProto]>) -> Result<(), QueryError> {
    match errors {
        Some(errs) if !errs.is_empty() => Err(QueryError::Refused {
            sql: sql.to_owned(),
            errors: errs
                .iter()
                .map(|e| {
                    format!(
                        "{}: {}",
                        e.reason.as_deref().unwrap_or("error"),
                        e.message.as_deref().unwrap_or("(no message)")
                    )
                })
                .collect(),
        }),
        _ => Ok(()),
    }
}

fn convert_row(fields: &[TableFieldSchema], row: TableRow) -> Result<Row, QueryError> {
    let cells = row.columns.unwrap_or_default();
    if cells.len() != fields.len() {
        return Err(QueryError::Malformed(format!(
            "a row has {} cells but the schema has {} columns",
            cells.len(),
            fields.len()
        )));
    }
    let mut out = Map::with_capacity(fields.len());
    for (field, cell) in fields.iter().zip(cells) {
        let value = convert_cell(field, cell.value.unwrap_or(Value::Null))?;
        out.insert(field.name.clone(), value);
    }
    Ok(out)
}

fn convert_cell(field: &TableFieldSchema, value: Value) -> Result<Value, QueryError> {
    let text = match &value {
        Value::Null => return Ok(Value::Null),
        Value::String(s) => s.as_str(),
        // Nested or repeated cells, or a backend that already sends typed JSON.
        _ => return Ok(value),
    };
    if field.mode.as_deref() == Some("REPEATED") {
        return Ok(value);
    }
    let bad = |expected: &str| {
        QueryError::Malformed(format!(
            "column {} ({expected}): cannot read {text:?}",
            field.name
        ))
    };
    let type_name = type_name(&field.r#type);
    Ok(match type_name.as_str() {
        "INTEGER" | "INT64" => Value::from(text.parse::<i64>().map_err(|_| bad("INTEGER"))?),
        "FLOAT" | "FLOAT64" => match text.parse::<f64>() {
            Ok(f) if f.is_finite() => Value::from(f),
            Ok(_) => value,
            Err(_) => return Err(bad("FLOAT")),
        },
        "BOOLEAN" | "BOOL" => match text {
            "true" | "TRUE" => Value::Bool(true),
            "false" | "FALSE" => Value::Bool(false),
            _ => return Err(bad("BOOLEAN")),
        },
        "NUMERIC" | "BIGNUMERIC" => Value::String(canonical_decimal(text)),
        "TIMESTAMP" => Value::from(timestamp_micros(text).ok_or_else(|| bad("TIMESTAMP"))?),
        _ => value,
    })
}

/// The type's name as BigQuery writes it (`STRING`, `INTEGER`, ...).
pub(crate) fn type_name(t: &gcp_bigquery_client::model::field_type::FieldType) -> String {
    match serde_json::to_value(t) {
        Ok(Value::String(s)) => s,
        _ => format!("{t:?}").to_uppercase(),
    }
}

/// `12.500000000` → `12.5`, `12.000` → `12`, `-0.0` → `0`.
fn canonical_decimal(text: &str) -> String {
    if !text.contains('.') || text.contains(['e', 'E']) {
        return text.to_owned();
    }
    let trimmed = text.trim_end_matches('0').trim_end_matches('.');
    match trimmed {
        "" | "-" | "-0" => "0".to_owned(),
        t => t.to_owned(),
    }
}

/// Integer microseconds (`"1714564800250000"`), or float seconds (`"1.71456480025E9"`).
fn timestamp_micros(text: &str) -> Option<i64> {
    if let Ok(micros) = text.parse::<i64>() {
        return Some(micros);
    }
    let seconds = text.parse::<f64>().ok()?;
    let micros = (seconds * 1e6).round();
    (micros.is_finite() && micros.abs() < 9.0e18).then_some(micros as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_lose_trailing_zeros_only() {
        assert_eq!(canonical_decimal("12.500000000"), "12.5");
        assert_eq!(canonical_decimal("12.000000000"), "12");
        assert_eq!(canonical_decimal("120"), "120");
        assert_eq!(canonical_decimal("-0.000"), "0");
        assert_eq!(canonical_decimal("0.010"), "0.01");
    }

    #[test]
    fn timestamps_accept_micros_and_float_seconds() {
        assert_eq!(
            timestamp_micros("1714564800250000"),
            Some(1_714_564_800_250_000)
        );
        assert_eq!(
            timestamp_micros("1.71456480025E9"),
            Some(1_714_564_800_250_000)
        );
        assert_eq!(timestamp_micros("yesterday"), None);
    }
}
