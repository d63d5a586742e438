//! Errors of this crate, and the one place that decides whether a failed BigQuery call is worth
//! retrying.
//!
//! Every REST call goes through [`ApiError::from_bq`], which turns the client crate's `BQError`
//! into an [`ApiError`] that says what was attempted, what came back, and whether the caller
//! should retry with backoff (network failures, timeouts, HTTP 408/429/5xx and BigQuery's
//! rate-limit 403s) or give up (everything else: bad request, not found, permission denied).

use std::fmt;

use gcp_bigquery_client::error::BQError;

use crate::sink::InsertReport;

/// A failed call to the BigQuery REST API, classified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// What we were doing, e.g. `insertAll into p.d.t`.
    pub operation: String,
    /// The HTTP status, when a response arrived and carried one.
    pub status: Option<u16>,
    /// BigQuery's error reason (`invalid`, `notFound`, `rateLimitExceeded`, ...), when given.
    pub reason: Option<String>,
    /// What went wrong, in BigQuery's or the transport's words.
    pub message: String,
    /// True when retrying the same call later may succeed (network, timeout, 408, 429, 5xx,
    /// rate limits, token fetch failures); false when it will fail the same way again.
    pub transient: bool,
}

impl ApiError {
    /// Classifies an error of the client crate raised while doing `operation`.
    pub fn from_bq(operation: impl Into<String>, err: BQError) -> Self {
        let operation = operation.into();
        match err {
            BQError::ResponseError { error } => {
                let e = error.error;
                let reason = e
                    .errors
                    .first()
                    .and_then(|m| m.get("reason"))
                    .cloned()
                    .filter(|r| !r.is_empty());
                let status = u16::try_from(e.code).ok();
                let transient = status.is_some_and(is_transient_status)
                    || reason.as_deref().is_some_and(is_transient_reason);
                ApiError {
                    operation,
                    status,
                    reason,
                    message: e.message,
                    transient,
                }
            }
            BQError::RequestError(re) => {
                // Connection refused/reset, DNS, timeouts and bodies that are not BigQuery's
                // JSON (a proxy's 502 page, a dropped connection) all land here. Only a request
                // we could not even build is the caller's fault.
                let status = re.status().map(|s| s.as_u16());
                let transient = !re.is_builder()
                    && match status {
                        Some(s) => is_transient_status(s),
                        None => true,
                    };
                ApiError {
                    operation,
                    status,
                    reason: None,
                    message: error_chain(&re),
                    transient,
                }
            }
            // Fetching an access token goes over the network to Google's token endpoint (or
            // the metadata server); it recovers when they do.
            e @ (BQError::AuthError(_) | BQError::YupAuthError(_) | BQError::NoToken) => ApiError {
                operation,
                status: None,
                reason: Some("authentication".into()),
                message: error_chain(&e),
                transient: true,
            },
            other => ApiError {
                operation,
                status: None,
                reason: None,
                message: error_chain(&other),
                transient: false,
            },
        }
    }

    /// True when the call answered HTTP 404.
    pub fn is_not_found(&self) -> bool {
        self.status == Some(404)
    }

    /// True when the call answered HTTP 409 (the object already exists).
    pub fn is_conflict(&self) -> bool {
        self.status == Some(409)
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failed", self.operation)?;
        match (self.status, &self.reason) {
            (Some(s), Some(r)) => write!(f, " (HTTP {s}, {r})")?,
            (Some(s), None) => write!(f, " (HTTP {s})")?,
            (None, Some(r)) => write!(f, " ({r})")?,
            (None, None) => {}
        }
        write!(f, ": {}", self.message)?;
        if self.transient {
            write!(f, "; this is transient, retry with backoff")
        } else {
            write!(f, "; retrying will not help")
        }
    }
}

impl std::error::Error for ApiError {}

/// HTTP statuses after which the same request may succeed later.
fn is_transient_status(status: u16) -> bool {
    status == 408 || status == 429 || (500..=599).contains(&status)
}

/// BigQuery error reasons that mean "try again later" even under a 4xx status (BigQuery answers
/// rate limits with 403).
pub(crate) fn is_transient_reason(reason: &str) -> bool {
    matches!(
        reason,
        "rateLimitExceeded"
            | "quotaExceeded"
            | "backendError"
            | "internalError"
            | "timeout"
            | "stopped"
    )
}

/// An error and all its sources, `: `-separated (reqwest hides "connection refused" two levels
/// down).
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

/// Building a [`crate::BigQuery`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// A dataset, table, project or host name is not acceptable.
    #[error("invalid {what} {value:?}: {expected}")]
    InvalidName {
        /// Which setting (`--bq-dataset`, ...).
        what: &'static str,
        /// The value given.
        value: String,
        /// What a valid value looks like.
        expected: &'static str,
    },
    /// The HTTP client could not be built (TLS set-up).
    #[error("could not build the HTTP client: {0}")]
    Http(String),
    /// The credentials could not be loaded.
    #[error(
        "could not load Google Cloud credentials ({source_desc}): {message}; set \
         --credentials/GOOGLE_APPLICATION_CREDENTIALS to a service-account JSON key, or \
         --bigquery-emulator-host/BIGQUERY_EMULATOR_HOST to use the emulator"
    )]
    Credentials {
        /// Where we looked (the key file path, or application-default credentials).
        source_desc: String,
        /// Why it failed.
        message: String,
    },
    /// The Storage Write path was asked for without an emulator.
    #[error(
        "--bigquery-write-api storage-write is wired for the BigQuery emulator only in this \
         build (a plaintext gRPC channel, no OAuth); on Google Cloud set \
         --bigquery-write-api/BIGQUERY_WRITE_API to insert-all"
    )]
    StorageWriteNeedsEmulator,
}

/// `ensure_table` or `check_table` failed.
#[derive(Debug, thiserror::Error)]
pub enum EnsureError {
    /// `check_table` found no such dataset or table (`ensure_table` creates them instead).
    #[error(
        "{kind} {name} does not exist; run create-bq-table with the same --project-id, \
         --bq-dataset and --bq-table (PROJECT_ID, BQ_DATASET, BQ_TABLE), or fix those settings"
    )]
    NotFound {
        /// `dataset` or `table`.
        kind: &'static str,
        /// `project.dataset` or `project.dataset.table`.
        name: String,
    },
    /// A REST call failed.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// A DDL query was refused.
    #[error(transparent)]
    Query(#[from] QueryError),
    /// The table exists with columns that differ from ours; the sink would fail against it.
    #[error(
        "table {table} exists but its schema differs from firstclick's: {}; \
         migrate or drop the table, or point --bq-table at another name",
        differences.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    )]
    SchemaMismatch {
        /// The table, `project.dataset.table`.
        table: String,
        /// Every difference, one per column.
        differences: Vec<crate::table::SchemaDifference>,
    },
    /// An object with the name we need exists but is of another kind (a view where the table
    /// should be, or the other way round).
    #[error(
        "{name} exists but is a {found}, expected a {expected}; drop it or choose another name"
    )]
    WrongKind {
        /// `project.dataset.object`.
        name: String,
        /// `TABLE` or `VIEW`.
        expected: &'static str,
        /// What BigQuery says it is.
        found: String,
    },
}

impl EnsureError {
    /// True when running `ensure_table` again later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            EnsureError::Api(e) => e.transient,
            EnsureError::Query(e) => e.is_transient(),
            EnsureError::NotFound { .. }
            | EnsureError::SchemaMismatch { .. }
            | EnsureError::WrongKind { .. } => false,
        }
    }
}

/// A query failed.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The REST call failed (including a bad query on real BigQuery, HTTP 400).
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The query was answered but refused (the emulator answers HTTP 200 with an `errors`
    /// array).
    #[error("query refused: {}; the SQL was: {sql}", errors.join("; "))]
    Refused {
        /// The SQL sent.
        sql: String,
        /// BigQuery's messages, `reason: message`.
        errors: Vec<String>,
    },
    /// The response does not have the shape we expect.
    #[error("unexpected query response: {0}")]
    Malformed(String),
    /// The job did not complete in time.
    #[error("query job {job_id} not complete after {waited_secs} s; the SQL was: {sql}")]
    Timeout {
        /// The job still running.
        job_id: String,
        /// How long we polled.
        waited_secs: u64,
        /// The SQL sent.
        sql: String,
    },
}

impl QueryError {
    /// True when running the same query later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            QueryError::Api(e) => e.transient,
            QueryError::Timeout { .. } => true,
            QueryError::Refused { .. } | QueryError::Malformed(_) => false,
        }
    }
}

/// `insert_rows` could not finish.
///
/// Batches are sent in order; `done` reports the leading rows that were handled before the
/// failure (`done.attempted` of them, with their own rejections). Rows from `done.attempted` on
/// were not written: retry them (transient) or dead-letter them (permanent). Re-sending rows that
/// did land is harmless: `checkout_id` is the insertId and the `_dedup` view hides the rest.
#[derive(Debug, thiserror::Error)]
pub enum InsertError {
    /// BigQuery is unreachable, overloaded or failing: keep the rows, retry with backoff.
    #[error("{cause} ({} leading rows were handled before)", done.attempted)]
    Transient {
        /// What was handled before the failure.
        done: InsertReport,
        /// The failed call.
        cause: ApiError,
    },
    /// The request itself is refused (table missing, permission denied, malformed request):
    /// retrying will not help until someone fixes the table or the configuration.
    #[error("{cause} ({} leading rows were handled before)", done.attempted)]
    Permanent {
        /// What was handled before the failure.
        done: InsertReport,
        /// The failed call.
        cause: ApiError,
    },
}

impl InsertError {
    /// True when the caller should retry the remaining rows with backoff.
    pub fn is_transient(&self) -> bool {
        matches!(self, InsertError::Transient { .. })
    }

    /// What was handled before the failure.
    pub fn done(&self) -> &InsertReport {
        match self {
            InsertError::Transient { done, .. } | InsertError::Permanent { done, .. } => done,
        }
    }
}
