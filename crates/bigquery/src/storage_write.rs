//! An alternative sink path through the BigQuery Storage Write API (gRPC `AppendRows` on the
//! table's `_default` stream), for the emulator.
//!
//! The client crate's own Storage Write wrapper always dials Google's host, so
//! [`StorageWriter::connect_emulator`] uses its generated `BigQueryWriteClient` on a plaintext
//! channel to the emulator's gRPC port (docs/design.md §9). Against Google Cloud, use
//! [`BigQuery::insert_rows`]; this path is not wired for TLS and OAuth there.
//!
//! Rows are encoded as protobuf ([`ProtoRow`] for the output table, [`ProtoTouch`] for the
//! touches table; field numbers = column positions + 1): STRING as `string`, NUMERIC as its
//! decimal text (at most 9 decimals), TIMESTAMP as `int64` microseconds. The PENDING-stream
//! calls serve both tables ([`StorageWriter::for_touches`]); the `_default` stream path
//! ([`StorageWriter::append_rows`]) writes output rows only. Semantics differ from insertAll: the default stream has no insertId, so a retry
//! writes duplicates (the `_dedup` view hides them), and a request is all-or-nothing: when
//! BigQuery names bad rows, none of the request is written; the bad rows are reported as
//! permanent and the others of the request as retryable ([`RejectedRow::retryable`]). The
//! emulator does not name rows: it refuses the whole request with `INVALID_ARGUMENT`, which
//! arrives as an [`InsertError::Permanent`] for all its rows (use insertAll for per-row errors
//! there). The emulator's gRPC servicer also shares its DuckDB connection with the REST API
//! without a lock: an append that overlaps a REST call can fail on either side with "connection
//! is busy" (transient here; a refused query on the REST side).

use std::collections::HashMap;

use gcp_bigquery_client::google::cloud::bigquery::storage::v1::append_rows_response::Response;
use gcp_bigquery_client::google::cloud::bigquery::storage::v1::big_query_write_client::BigQueryWriteClient;
use gcp_bigquery_client::google::cloud::bigquery::storage::v1::storage_error::StorageErrorCode;
use gcp_bigquery_client::google::cloud::bigquery::storage::v1::{
    write_stream, AppendRowsRequest, AppendRowsResponse, BatchCommitWriteStreamsRequest,
    CreateWriteStreamRequest, FinalizeWriteStreamRequest, WriteStream,
};
use gcp_bigquery_client::storage::{
    ColumnMode as ProtoMode, ColumnType as ProtoType, FieldDescriptor, StorageApi, TableDescriptor,
};
use tonic::transport::Channel;

use firstclick_model::schema::{Column, ColumnMode, ColumnType, OUTPUT_COLUMNS};
use firstclick_model::{AttributedRow, TouchRow};

use crate::error::{ApiError, ConnectError, InsertError};
use crate::rows::{Encoded, TableRow};
use crate::sink::{InsertReport, RejectedRow, RowError};
use crate::{BigQuery, BigQueryArgs};

/// Most rows per `AppendRows` request.
pub const MAX_APPEND_ROWS: usize = 5_000;
/// Most bytes of encoded rows per `AppendRows` request (the API's limit is 10 MB).
const MAX_APPEND_BYTES: usize = 9_000_000;

/// One output row as protobuf; tags are the columns' positions in [`OUTPUT_COLUMNS`] plus one
/// (a unit test holds them together).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ProtoRow {
    /// `checkout_id`
    #[prost(string, required, tag = "1")]
    pub(crate) checkout_id: String,
    /// `user_id`
    #[prost(string, optional, tag = "2")]
    pub(crate) user_id: Option<String>,
    /// `user_name`
    #[prost(string, optional, tag = "3")]
    pub(crate) user_name: Option<String>,
    /// `product_id`
    #[prost(string, optional, tag = "4")]
    pub(crate) product_id: Option<String>,
    /// `payment_method`
    #[prost(string, optional, tag = "5")]
    pub(crate) payment_method: Option<String>,
    /// `total_amount`, NUMERIC as decimal text.
    #[prost(string, optional, tag = "6")]
    pub(crate) total_amount: Option<String>,
    /// `shipping_address`
    #[prost(string, optional, tag = "7")]
    pub(crate) shipping_address: Option<String>,
    /// `billing_address`
    #[prost(string, optional, tag = "8")]
    pub(crate) billing_address: Option<String>,
    /// `user_agent`
    #[prost(string, optional, tag = "9")]
    pub(crate) user_agent: Option<String>,
    /// `ip_address`
    #[prost(string, optional, tag = "10")]
    pub(crate) ip_address: Option<String>,
    /// `checkout_time`, microseconds since the epoch.
    #[prost(int64, required, tag = "11")]
    pub(crate) checkout_time: i64,
    /// `click_id`
    #[prost(string, optional, tag = "12")]
    pub(crate) click_id: Option<String>,
    /// `click_time`, microseconds since the epoch.
    #[prost(int64, optional, tag = "13")]
    pub(crate) click_time: Option<i64>,
    /// `attribution_model`
    #[prost(string, optional, tag = "14")]
    pub(crate) attribution_model: Option<String>,
    /// `processed_at`, microseconds since the epoch.
    #[prost(int64, optional, tag = "15")]
    pub(crate) processed_at: Option<i64>,
}

/// One touch row as protobuf; tags are the columns' positions in
/// [`firstclick_model::schema::TOUCH_COLUMNS`] plus one (a unit test holds them together).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ProtoTouch {
    /// `checkout_id`
    #[prost(string, required, tag = "1")]
    pub(crate) checkout_id: String,
    /// `user_id`
    #[prost(string, optional, tag = "2")]
    pub(crate) user_id: Option<String>,
    /// `product_id`
    #[prost(string, optional, tag = "3")]
    pub(crate) product_id: Option<String>,
    /// `checkout_time`, microseconds since the epoch.
    #[prost(int64, required, tag = "4")]
    pub(crate) checkout_time: i64,
    /// `click_id`
    #[prost(string, required, tag = "5")]
    pub(crate) click_id: String,
    /// `click_time`, microseconds since the epoch.
    #[prost(int64, required, tag = "6")]
    pub(crate) click_time: i64,
    /// `attribution_model`
    #[prost(string, required, tag = "7")]
    pub(crate) attribution_model: String,
    /// `credit`, NUMERIC as exact decimal text.
    #[prost(string, required, tag = "8")]
    pub(crate) credit: String,
    /// `credited_revenue`, NUMERIC as exact decimal text.
    #[prost(string, optional, tag = "9")]
    pub(crate) credited_revenue: Option<String>,
    /// `processed_at`, microseconds since the epoch.
    #[prost(int64, optional, tag = "10")]
    pub(crate) processed_at: Option<i64>,
}

impl From<&TouchRow> for ProtoTouch {
    fn from(t: &TouchRow) -> Self {
        ProtoTouch {
            checkout_id: t.checkout_id.as_text().into_owned(),
            user_id: Some(t.user_id.to_string()),
            product_id: Some(t.product_id.as_text().into_owned()),
            checkout_time: t.checkout_time.as_micros(),
            click_id: t.click.click_id.as_text().into_owned(),
            click_time: t.click.time.as_micros(),
            attribution_model: t.model.as_str().to_owned(),
            // Decimal9 prints exact decimal text with at most 9 places.
            credit: t.credit.to_string(),
            credited_revenue: t.credited_revenue.map(|r| r.to_string()),
            processed_at: Some(t.processed_at.as_micros()),
        }
    }
}

/// A NUMERIC's text: at most 9 decimals (BigQuery's scale), no trailing zeros, no exponent.
fn numeric_text(v: f64) -> String {
    let fixed = format!("{v:.9}");
    let trimmed = fixed.trim_end_matches('0').trim_end_matches('.');
    match trimmed {
        "-0" | "" => "0".to_owned(),
        t => t.to_owned(),
    }
}

impl From<&AttributedRow> for ProtoRow {
    fn from(r: &AttributedRow) -> Self {
        let c = &r.checkout;
        let d = c.details.texts();
        let text = |v: Option<&str>| v.map(str::to_owned);
        ProtoRow {
            checkout_id: c.checkout_id.as_text().into_owned(),
            user_id: Some(c.user_id.to_string()),
            user_name: r.user_name.clone(),
            product_id: Some(c.product_id.as_text().into_owned()),
            payment_method: text(d.payment_method),
            total_amount: c.total_amount.filter(|a| a.is_finite()).map(numeric_text),
            shipping_address: text(d.shipping_address),
            billing_address: text(d.billing_address),
            user_agent: text(d.user_agent),
            ip_address: text(d.ip_address),
            checkout_time: c.time.as_micros(),
            click_id: r.click.as_ref().map(|k| k.click_id.as_text().into_owned()),
            click_time: r.click.as_ref().map(|k| k.time.as_micros()),
            attribution_model: Some(r.model.as_str().to_owned()),
            processed_at: Some(r.processed_at.as_micros()),
        }
    }
}

/// The writer schema sent with the rows of the table of `columns` ([`OUTPUT_COLUMNS`] or
/// [`firstclick_model::schema::TOUCH_COLUMNS`]).
pub(crate) fn table_descriptor(columns: &[Column]) -> TableDescriptor {
    let field_descriptors = columns
        .iter()
        .zip(1u32..)
        .map(|(c, number)| FieldDescriptor {
            number,
            name: c.name.to_owned(),
            typ: match c.column_type {
                ColumnType::String | ColumnType::Numeric => ProtoType::String,
                ColumnType::Timestamp => ProtoType::Int64,
            },
            mode: match c.mode {
                ColumnMode::Required => ProtoMode::Required,
                ColumnMode::Nullable => ProtoMode::Nullable,
            },
        })
        .collect();
    TableDescriptor { field_descriptors }
}

/// What one append at an offset came to.
#[derive(Debug)]
pub(crate) enum Appended {
    /// The rows are in the stream now.
    Written,
    /// The offset was written before (an earlier attempt whose answer was lost).
    AlreadyThere,
    /// BigQuery refuses the request (bad rows): nothing of it is written.
    Refused(String),
    /// The stream does not exist (any more).
    StreamGone,
}

/// What a commit came to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Committed {
    /// Committed now.
    Now,
    /// It was committed before.
    Before,
    /// The stream does not exist (any more).
    StreamGone,
}

/// Appends rows to the output table over the Storage Write API. Cheap to clone; clones share
/// the HTTP/2 connection.
#[derive(Clone)]
pub struct StorageWriter {
    client: BigQueryWriteClient<Channel>,
    stream: String,
    table_path: String,
    descriptor: std::sync::Arc<TableDescriptor>,
}

impl std::fmt::Debug for StorageWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageWriter")
            .field("stream", &self.stream)
            .finish()
    }
}

/// gRPC codes after which the same request may pass later.
fn is_transient_code(code: tonic::Code) -> bool {
    use tonic::Code::*;
    matches!(
        code,
        Unavailable
            | DeadlineExceeded
            | ResourceExhausted
            | Aborted
            | Internal
            | Unknown
            | Cancelled
    )
}

fn status_error(operation: String, status: &tonic::Status) -> ApiError {
    ApiError {
        operation,
        status: None,
        reason: Some(format!("{:?}", status.code())),
        message: status.message().to_owned(),
        transient: is_transient_code(status.code()),
    }
}

impl StorageWriter {
    /// Connects the way `args` says: the emulator's gRPC port
    /// ([`BigQueryArgs::emulator_grpc_address`]); without an emulator, an error that says so.
    pub fn connect(bq: &BigQuery, args: &BigQueryArgs) -> Result<Self, ConnectError> {
        match args.emulator_grpc_address() {
            Some(address) => Self::connect_emulator(bq, &address),
            None => Err(ConnectError::StorageWriteNeedsEmulator),
        }
    }

    /// Connects to the emulator's gRPC port (`HOST:PORT`, e.g. `127.0.0.1:9060`) for the table
    /// of `bq`. Connects lazily: an unreachable port shows up on the first append, as a
    /// transient error.
    pub fn connect_emulator(bq: &BigQuery, grpc_host: &str) -> Result<Self, ConnectError> {
        let bare = grpc_host.trim().trim_end_matches('/');
        let bare = bare.strip_prefix("http://").unwrap_or(bare);
        let endpoint = Channel::from_shared(format!("http://{bare}"))
            .map_err(|_| ConnectError::InvalidName {
                what: "BigQuery emulator gRPC address",
                value: grpc_host.to_owned(),
                expected: "HOST:PORT of the emulator's gRPC (Storage Write) endpoint",
            })?
            .connect_timeout(std::time::Duration::from_secs(5))
            .timeout(std::time::Duration::from_secs(120));
        let channel = endpoint.connect_lazy();
        Ok(StorageWriter {
            client: BigQueryWriteClient::new(channel),
            stream: format!(
                "projects/{}/datasets/{}/tables/{}/streams/_default",
                bq.project(),
                bq.dataset(),
                bq.table()
            ),
            table_path: bq.table_path(),
            descriptor: std::sync::Arc::new(table_descriptor(OUTPUT_COLUMNS)),
        })
    }

    /// The same connection, for `bq`'s touches table (`--bq-touches-table`): its PENDING
    /// streams take [`TouchRow`]s.
    pub fn for_touches(&self, bq: &BigQuery) -> Self {
        StorageWriter {
            client: self.client.clone(),
            stream: format!(
                "projects/{}/datasets/{}/tables/{}/streams/_default",
                bq.project(),
                bq.dataset(),
                bq.touches_table()
            ),
            table_path: bq.touches_table_path(),
            descriptor: self.descriptor.clone(),
        }
    }

    /// `projects/P/datasets/D/tables/T`.
    fn parent(&self) -> String {
        self.stream
            .strip_suffix("/streams/_default")
            .unwrap_or(&self.stream)
            .to_owned()
    }

    fn request<M>(&self, message: M, routing: &str) -> tonic::Request<M> {
        let mut request = tonic::Request::new(message);
        // BigQuery routes the call by this header; the emulator ignores it.
        if let Ok(v) = routing.parse() {
            request.metadata_mut().insert("x-goog-request-params", v);
        }
        request
    }

    /// Creates a PENDING stream on the table: rows appended to it stay invisible until it is
    /// finalized and committed. Returns its name.
    pub(crate) async fn create_pending(&self) -> Result<String, ApiError> {
        let parent = self.parent();
        let message = CreateWriteStreamRequest {
            parent: parent.clone(),
            write_stream: Some(WriteStream {
                r#type: write_stream::Type::Pending as i32,
                ..WriteStream::default()
            }),
        };
        let request = self.request(message, &format!("parent={parent}"));
        let mut client = self.client.clone();
        match client.create_write_stream(request).await {
            Ok(r) => Ok(r.into_inner().name),
            Err(status) => Err(status_error(
                format!("CreateWriteStream on {}", self.table_path),
                &status,
            )),
        }
    }

    /// Appends `rows` to `stream` at `offset`, as one request on one call.
    pub(crate) async fn append_at<R: TableRow>(
        &self,
        stream: &str,
        rows: &[R],
        offset: i64,
    ) -> Result<Appended, ApiError> {
        let encoded: Vec<Encoded> = rows.iter().map(|r| Encoded(r.encode_proto())).collect();
        let descriptor = table_descriptor(R::COLUMNS);
        let (data, _) = StorageApi::create_rows(&descriptor, &encoded, usize::MAX);
        let message = AppendRowsRequest {
            write_stream: stream.to_owned(),
            offset: Some(offset),
            trace_id: "firstclick".into(),
            missing_value_interpretations: HashMap::new(),
            default_missing_value_interpretation: 0,
            rows: Some(data),
        };
        let operation = || format!("AppendRows into {stream} at offset {offset}");
        let request = self.request(
            futures::stream::iter([message]),
            &format!("write_stream={stream}"),
        );
        let mut client = self.client.clone();
        let mut responses = match client.append_rows(request).await {
            Ok(r) => r.into_inner(),
            Err(status) if status.code() == tonic::Code::NotFound => {
                return Ok(Appended::StreamGone)
            }
            Err(status) => return Err(status_error(operation(), &status)),
        };
        let response = match responses.message().await {
            Ok(Some(r)) => r,
            Ok(None) => {
                return Err(ApiError {
                    operation: operation(),
                    status: None,
                    reason: Some("streamClosed".into()),
                    message: "the server closed the stream without an answer".into(),
                    transient: true,
                })
            }
            Err(status) if status.code() == tonic::Code::NotFound => {
                return Ok(Appended::StreamGone)
            }
            Err(status) => return Err(status_error(operation(), &status)),
        };
        if let Some(e) = response.row_errors.first() {
            return Ok(Appended::Refused(format!(
                "row {} of the request: {}",
                e.index, e.message
            )));
        }
        match response.response {
            Some(Response::Error(status)) => match tonic::Code::from_i32(status.code) {
                tonic::Code::AlreadyExists => Ok(Appended::AlreadyThere),
                tonic::Code::NotFound => Ok(Appended::StreamGone),
                tonic::Code::InvalidArgument => Ok(Appended::Refused(status.message)),
                code => Err(ApiError {
                    operation: operation(),
                    status: None,
                    reason: Some(format!("{code:?}")),
                    message: status.message,
                    transient: is_transient_code(code),
                }),
            },
            Some(Response::AppendResult(_)) | None => Ok(Appended::Written),
        }
    }

    /// Finalizes `stream` (no more appends); returns the rows it holds, `None` if it is gone.
    pub(crate) async fn finalize(&self, stream: &str) -> Result<Option<i64>, ApiError> {
        let message = FinalizeWriteStreamRequest {
            name: stream.to_owned(),
        };
        let request = self.request(message, &format!("name={stream}"));
        let mut client = self.client.clone();
        match client.finalize_write_stream(request).await {
            Ok(r) => Ok(Some(r.into_inner().row_count)),
            Err(status) if status.code() == tonic::Code::NotFound => Ok(None),
            Err(status) => Err(status_error(
                format!("FinalizeWriteStream {stream}"),
                &status,
            )),
        }
    }

    /// Commits the finalized `stream`: its rows become visible, atomically.
    pub(crate) async fn commit(&self, stream: &str) -> Result<Committed, ApiError> {
        let parent = self.parent();
        let message = BatchCommitWriteStreamsRequest {
            parent: parent.clone(),
            write_streams: vec![stream.to_owned()],
        };
        let operation = || format!("BatchCommitWriteStreams {stream}");
        let request = self.request(message, &format!("parent={parent}"));
        let mut client = self.client.clone();
        let response = match client.batch_commit_write_streams(request).await {
            Ok(r) => r.into_inner(),
            Err(status) => return Err(status_error(operation(), &status)),
        };
        let Some(e) = response.stream_errors.first() else {
            return Ok(Committed::Now);
        };
        let code = StorageErrorCode::try_from(e.code).unwrap_or(StorageErrorCode::Unspecified);
        match code {
            StorageErrorCode::StreamAlreadyCommitted => Ok(Committed::Before),
            // The emulator answers a second commit with the stream's state instead.
            StorageErrorCode::InvalidStreamState
                if e.error_message.to_ascii_lowercase().contains("committed") =>
            {
                Ok(Committed::Before)
            }
            StorageErrorCode::StreamNotFound => Ok(Committed::StreamGone),
            _ => Err(ApiError {
                operation: operation(),
                status: None,
                reason: Some(code.as_str_name().to_owned()),
                message: e.error_message.clone(),
                transient: false,
            }),
        }
    }

    /// Appends `rows` to the `_default` stream, in requests of at most [`MAX_APPEND_ROWS`] rows,
    /// all on one `AppendRows` call. Outcomes as for [`BigQuery::insert_rows`], with the
    /// all-or-nothing rule of the module documentation.
    pub async fn append_rows(&self, rows: &[AttributedRow]) -> Result<InsertReport, InsertError> {
        self.append_rows_with_limit(rows, MAX_APPEND_ROWS).await
    }

    /// [`StorageWriter::append_rows`] with another number of rows per request.
    pub async fn append_rows_with_limit(
        &self,
        rows: &[AttributedRow],
        max_rows: usize,
    ) -> Result<InsertReport, InsertError> {
        let mut report = InsertReport::default();
        if rows.is_empty() {
            return Ok(report);
        }
        let protos: Vec<ProtoRow> = rows.iter().map(ProtoRow::from).collect();
        // Split into requests: (first input index, row count, request).
        let mut requests = Vec::new();
        let mut start = 0;
        while start < protos.len() {
            let end = (start + max_rows.max(1)).min(protos.len());
            let (mut data, mut taken) =
                StorageApi::create_rows(&self.descriptor, &protos[start..end], MAX_APPEND_BYTES);
            if taken == 0 {
                // A single row over the limit goes alone; BigQuery then refuses it.
                (data, taken) =
                    StorageApi::create_rows(&self.descriptor, &protos[start..=start], usize::MAX);
            }
            requests.push((
                start,
                taken,
                AppendRowsRequest {
                    write_stream: self.stream.clone(),
                    offset: None,
                    trace_id: "firstclick".into(),
                    missing_value_interpretations: HashMap::new(),
                    default_missing_value_interpretation: 0,
                    rows: Some(data),
                },
            ));
            start += taken;
        }
        let spans: Vec<(usize, usize)> = requests.iter().map(|(s, n, _)| (*s, *n)).collect();
        let operation = || format!("AppendRows into {}", self.table_path);

        let mut request = tonic::Request::new(futures::stream::iter(
            requests.into_iter().map(|(_, _, r)| r),
        ));
        // BigQuery routes the call by this header; the emulator ignores it.
        if let Ok(v) = format!("write_stream={}", self.stream).parse() {
            request.metadata_mut().insert("x-goog-request-params", v);
        }
        let mut client = self.client.clone();
        let transient_or_not = |report: InsertReport, cause: ApiError| {
            if cause.transient {
                InsertError::Transient {
                    done: report,
                    cause,
                }
            } else {
                InsertError::Permanent {
                    done: report,
                    cause,
                }
            }
        };
        let mut responses = match client.append_rows(request).await {
            Ok(r) => r.into_inner(),
            Err(status) => {
                return Err(transient_or_not(report, status_error(operation(), &status)))
            }
        };
        for (start, count) in spans {
            let response: AppendRowsResponse = match responses.message().await {
                Ok(Some(r)) => r,
                Ok(None) => {
                    let cause = ApiError {
                        operation: operation(),
                        status: None,
                        reason: Some("streamClosed".into()),
                        message: format!(
                            "the server closed the stream before answering the request for rows \
                             {start}..{}",
                            start + count
                        ),
                        transient: true,
                    };
                    return Err(transient_or_not(report, cause));
                }
                Err(status) => {
                    return Err(transient_or_not(report, status_error(operation(), &status)))
                }
            };
            if !response.row_errors.is_empty() {
                // Nothing of this request was written: name the bad rows, return the others
                // for a retry.
                let mut rejected: Vec<RejectedRow> = (start..start + count)
                    .map(|i| RejectedRow {
                        index: i,
                        checkout_id: rows[i].checkout.checkout_id.as_text().into_owned(),
                        errors: vec![RowError {
                            reason: "stopped".into(),
                            location: String::new(),
                            message: "not written: another row of the same request was refused"
                                .into(),
                        }],
                        retryable: true,
                    })
                    .collect();
                for e in &response.row_errors {
                    let Some(r) = usize::try_from(e.index)
                        .ok()
                        .and_then(|i| rejected.get_mut(i))
                    else {
                        continue;
                    };
                    r.errors = vec![RowError {
                        reason: "invalid".into(),
                        location: String::new(),
                        message: e.message.clone(),
                    }];
                    r.retryable = false;
                }
                report.rejected.extend(rejected);
            } else {
                match response.response {
                    Some(Response::Error(status)) => {
                        let code = tonic::Code::from_i32(status.code);
                        let cause = ApiError {
                            operation: operation(),
                            status: None,
                            reason: Some(format!("{code:?}")),
                            message: status.message,
                            transient: is_transient_code(code),
                        };
                        return Err(transient_or_not(report, cause));
                    }
                    Some(Response::AppendResult(_)) | None => report.inserted += count,
                }
            }
            report.requests += 1;
            report.attempted = start + count;
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn numeric_text_is_exact_decimal() {
        assert_eq!(numeric_text(123.45), "123.45");
        assert_eq!(numeric_text(100.0), "100");
        assert_eq!(numeric_text(0.1 + 0.2), "0.3");
        assert_eq!(numeric_text(-0.0), "0");
    }

    /// The field tags of an encoded message, in order.
    fn tags_of(bytes: &[u8]) -> Vec<u32> {
        let mut tags = Vec::new();
        let mut buf = bytes;
        while !buf.is_empty() {
            let key = prost::encoding::decode_varint(&mut buf).expect("key");
            tags.push((key >> 3) as u32);
            match key & 7 {
                0 => {
                    prost::encoding::decode_varint(&mut buf).expect("varint");
                }
                2 => {
                    let len = prost::encoding::decode_varint(&mut buf).expect("len") as usize;
                    buf = &buf[len..];
                }
                other => panic!("unexpected wire type {other}"),
            }
        }
        tags
    }

    #[test]
    fn touch_proto_tags_follow_the_touch_columns() {
        use firstclick_model::schema::TOUCH_COLUMNS;
        let t = ProtoTouch {
            checkout_id: "a".into(),
            user_id: Some("b".into()),
            product_id: Some("c".into()),
            checkout_time: 1,
            click_id: "d".into(),
            click_time: 2,
            attribution_model: "linear".into(),
            credit: "0.5".into(),
            credited_revenue: Some("1.25".into()),
            processed_at: Some(3),
        };
        let expected: Vec<u32> = (1..=TOUCH_COLUMNS.len() as u32).collect();
        assert_eq!(tags_of(&t.encode_to_vec()), expected);
        let debug = format!("{t:?}");
        let mut at = 0;
        for c in TOUCH_COLUMNS {
            let pos = debug[at..]
                .find(&format!("{}:", c.name))
                .unwrap_or_else(|| panic!("{} missing or out of order in {debug}", c.name));
            at += pos;
        }
        let d = table_descriptor(TOUCH_COLUMNS);
        assert_eq!(d.field_descriptors.len(), TOUCH_COLUMNS.len());
        assert!(d
            .field_descriptors
            .iter()
            .zip(TOUCH_COLUMNS)
            .all(|(f, c)| f.name == c.name));
    }

    #[test]
    fn proto_tags_follow_the_schema_columns() {
        // Encode a row with every field set and read the tag of each field back in order.
        let row = ProtoRow {
            checkout_id: "a".into(),
            user_id: Some("b".into()),
            user_name: Some("c".into()),
            product_id: Some("d".into()),
            payment_method: Some("e".into()),
            total_amount: Some("1".into()),
            shipping_address: Some("f".into()),
            billing_address: Some("g".into()),
            user_agent: Some("h".into()),
            ip_address: Some("i".into()),
            checkout_time: 1,
            click_id: Some("j".into()),
            click_time: Some(2),
            attribution_model: Some("k".into()),
            processed_at: Some(3),
        };
        let bytes = row.encode_to_vec();
        let mut tags = Vec::new();
        let mut buf = bytes.as_slice();
        while !buf.is_empty() {
            let key = prost::encoding::decode_varint(&mut buf).expect("key");
            tags.push((key >> 3) as u32);
            match key & 7 {
                0 => {
                    prost::encoding::decode_varint(&mut buf).expect("varint");
                }
                2 => {
                    let len = prost::encoding::decode_varint(&mut buf).expect("len") as usize;
                    buf = &buf[len..];
                }
                other => panic!("unexpected wire type {other}"),
            }
        }
        let expected: Vec<u32> = (1..=OUTPUT_COLUMNS.len() as u32).collect();
        assert_eq!(tags, expected);
        let d = table_descriptor(OUTPUT_COLUMNS);
        for (f, c) in d.field_descriptors.iter().zip(OUTPUT_COLUMNS) {
            assert_eq!(f.name, c.name);
        }
        // The field names of the struct are the column names, in order.
        let debug = format!("{row:?}");
        let mut at = 0;
        for c in OUTPUT_COLUMNS {
            let pos = debug[at..]
                .find(&format!("{}:", c.name))
                .unwrap_or_else(|| panic!("{} missing or out of order in {debug}", c.name));
            at += pos;
        }
    }
}
