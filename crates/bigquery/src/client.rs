//! [`BigQuery`]: an authenticated REST client bound to one project, dataset and table.
//!
//! Against the emulator (`BIGQUERY_EMULATOR_HOST`) it talks plain HTTP to
//! `http://HOST:PORT/bigquery/v2` with a dummy bearer token; on Google Cloud it authenticates
//! with the service-account key file, or else the application-default credentials. Our own
//! `reqwest` client adds the connect and request timeouts that the client crate's default lacks,
//! so a dead endpoint fails fast instead of hanging a sink.

use std::sync::Arc;
use std::time::Duration;

use gcp_bigquery_client::auth::Authenticator;
use gcp_bigquery_client::client_builder::ClientBuilder;
use gcp_bigquery_client::error::BQError;
use gcp_bigquery_client::Client;

use firstclick_cli::GcpArgs;

use crate::args::BigQueryArgs;
use crate::error::ConnectError;

/// How long to wait for a TCP (and TLS) connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one REST call may take, end to end (an insertAll of 9 MB included).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// A BigQuery client for one output table. Cheap to clone; clones share the connection pool.
#[derive(Clone)]
pub struct BigQuery {
    pub(crate) client: Client,
    pub(crate) project: String,
    pub(crate) dataset: String,
    pub(crate) table: String,
    pub(crate) touches_table: String,
    pub(crate) location: Option<String>,
    pub(crate) emulator: bool,
}

impl std::fmt::Debug for BigQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BigQuery")
            .field("table", &self.table_path())
            .field("location", &self.location)
            .field("emulator", &self.emulator)
            .finish()
    }
}

/// Hands the emulator a fixed bearer token; it checks none.
#[derive(Clone)]
struct EmulatorToken;

#[async_trait::async_trait]
impl Authenticator for EmulatorToken {
    async fn access_token(&self) -> Result<String, BQError> {
        Ok("emulator".to_owned())
    }
}

impl BigQuery {
    /// Builds a client from the command-line flags. Makes no request: a wrong address or a
    /// missing table shows up on the first call.
    pub async fn connect(gcp: &GcpArgs, args: &BigQueryArgs) -> Result<Self, ConnectError> {
        validate_project(&gcp.project_id)?;
        validate_dataset(&args.dataset)?;
        validate_table(&args.table)?;
        validate_table(&args.touches_table).map_err(|e| match e {
            ConnectError::InvalidName {
                value, expected, ..
            } => ConnectError::InvalidName {
                what: "--bq-touches-table/BQ_TOUCHES_TABLE",
                value,
                expected,
            },
            other => other,
        })?;
        if args.touches_table == args.table {
            return Err(ConnectError::InvalidName {
                what: "--bq-touches-table/BQ_TOUCHES_TABLE",
                value: args.touches_table.clone(),
                expected: "a table other than --bq-table",
            });
        }
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| ConnectError::Http(e.to_string()))?;
        let mut builder = ClientBuilder::new();
        builder.with_client(http);
        let (client, emulator) = match &args.emulator_host {
            Some(host) => {
                let base = emulator_base_url(host)?;
                tracing::debug!(%base, "using the BigQuery emulator");
                builder.with_v2_base_url(base);
                let client = builder
                    .build_from_authenticator(Arc::new(EmulatorToken))
                    .await
                    .map_err(|e| ConnectError::Http(e.to_string()))?;
                (client, true)
            }
            None => {
                let client = match &gcp.credentials {
                    Some(path) => {
                        let path_text = path.to_string_lossy();
                        builder
                            .build_from_service_account_key_file(&path_text)
                            .await
                            .map_err(|e| ConnectError::Credentials {
                                source_desc: format!("service-account key {path_text}"),
                                message: e.to_string(),
                            })?
                    }
                    None => builder
                        .build_from_application_default_credentials()
                        .await
                        .map_err(|e| ConnectError::Credentials {
                            source_desc: "application-default credentials".into(),
                            message: e.to_string(),
                        })?,
                };
                (client, false)
            }
        };
        Ok(BigQuery {
            client,
            project: gcp.project_id.clone(),
            dataset: args.dataset.clone(),
            table: args.table.clone(),
            touches_table: args.touches_table.clone(),
            location: args.location.clone(),
            emulator,
        })
    }

    /// The same client, bound to another dataset (tests use one fresh dataset each).
    pub fn with_dataset(&self, dataset: &str) -> Result<Self, ConnectError> {
        validate_dataset(dataset)?;
        let mut other = self.clone();
        other.dataset = dataset.to_owned();
        Ok(other)
    }

    /// The project id.
    pub fn project(&self) -> &str {
        &self.project
    }

    /// The dataset id.
    pub fn dataset(&self) -> &str {
        &self.dataset
    }

    /// The output table's id.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The deduplicating view's id, `{table}_dedup`.
    pub fn view(&self) -> String {
        format!("{}_dedup", self.table)
    }

    /// The touches table's id (`--bq-touches-table`).
    pub fn touches_table(&self) -> &str {
        &self.touches_table
    }

    /// `project.dataset.touches_table`, as written inside backticks in SQL.
    pub fn touches_table_path(&self) -> String {
        format!("{}.{}.{}", self.project, self.dataset, self.touches_table)
    }

    /// The touches table's deduplicating view's id, `{touches_table}_dedup`.
    pub fn touches_view(&self) -> String {
        format!("{}_dedup", self.touches_table)
    }

    /// `project.dataset.{touches_table}_dedup`, as written inside backticks in SQL.
    pub fn touches_view_path(&self) -> String {
        format!("{}.{}.{}", self.project, self.dataset, self.touches_view())
    }

    /// `project.dataset.model_comparison`, the view that compares the models
    /// (`firstclick_model::schema::model_comparison_sql`).
    pub fn comparison_view_path(&self) -> String {
        format!(
            "{}.{}.{}",
            self.project,
            self.dataset,
            firstclick_model::schema::COMPARISON_VIEW
        )
    }

    /// True when talking to the emulator.
    pub fn is_emulator(&self) -> bool {
        self.emulator
    }

    /// `project.dataset.table`, as written inside backticks in SQL.
    pub fn table_path(&self) -> String {
        format!("{}.{}.{}", self.project, self.dataset, self.table)
    }

    /// `project.dataset.{table}_dedup`, as written inside backticks in SQL.
    pub fn view_path(&self) -> String {
        format!("{}.{}.{}", self.project, self.dataset, self.view())
    }

    /// The underlying client of `gcp-bigquery-client`, for calls this crate does not wrap.
    pub fn raw(&self) -> &Client {
        &self.client
    }
}

/// `http://HOST:PORT/bigquery/v2` from `HOST:PORT` (an `http://` prefix is accepted).
fn emulator_base_url(host: &str) -> Result<String, ConnectError> {
    let bare = host.trim().trim_end_matches('/');
    let bare = bare.strip_prefix("http://").unwrap_or(bare);
    let valid = bare
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
    if !valid {
        return Err(ConnectError::InvalidName {
            what: "--bigquery-emulator-host/BIGQUERY_EMULATOR_HOST",
            value: host.to_owned(),
            expected: "HOST:PORT of the emulator's REST endpoint, e.g. 127.0.0.1:9050",
        });
    }
    Ok(format!("http://{bare}/bigquery/v2"))
}

fn validate_project(project: &str) -> Result<(), ConnectError> {
    let ok = !project.is_empty()
        && project
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | ':' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ConnectError::InvalidName {
            what: "--project-id/PROJECT_ID",
            value: project.to_owned(),
            expected: "a Google Cloud project id: letters, digits and hyphens",
        })
    }
}

/// Dataset ids: letters, digits and underscores, at most 1024 (BigQuery's rule).
pub(crate) fn validate_dataset(dataset: &str) -> Result<(), ConnectError> {
    let ok = !dataset.is_empty()
        && dataset.len() <= 1024
        && dataset
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(ConnectError::InvalidName {
            what: "--bq-dataset/BQ_DATASET",
            value: dataset.to_owned(),
            expected: "a dataset id: 1 to 1024 ASCII letters, digits and underscores",
        })
    }
}

/// Table ids: we accept the portable subset (letters, digits, underscores, hyphens), so the id
/// can be written in SQL between backticks and the view name `{table}_dedup` stays valid.
fn validate_table(table: &str) -> Result<(), ConnectError> {
    let ok = !table.is_empty()
        && table.len() <= 1000
        && table
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(ConnectError::InvalidName {
            what: "--bq-table/BQ_TABLE",
            value: table.to_owned(),
            expected: "a table id: 1 to 1000 ASCII letters, digits, underscores and hyphens",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emulator_url_needs_host_and_port() {
        assert_eq!(
            emulator_base_url("127.0.0.1:9050").ok().as_deref(),
            Some("http://127.0.0.1:9050/bigquery/v2")
        );
        assert_eq!(
            emulator_base_url("http://localhost:9050/").ok().as_deref(),
            Some("http://localhost:9050/bigquery/v2")
        );
        assert!(emulator_base_url("localhost").is_err());
        assert!(emulator_base_url(":9050").is_err());
        assert!(emulator_base_url("h:port").is_err());
    }

    #[test]
    fn names_that_cannot_be_quoted_are_refused() {
        assert!(validate_dataset("firstclick_1").is_ok());
        assert!(validate_dataset("a-b").is_err());
        assert!(validate_dataset("").is_err());
        assert!(validate_table("attributed_checkouts").is_ok());
        assert!(validate_table("a`b").is_err());
        assert!(validate_project("test-project").is_ok());
        assert!(validate_project("a b").is_err());
    }
}
