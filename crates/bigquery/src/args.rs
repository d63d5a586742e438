//! The command-line flags of the BigQuery connector.
//!
//! The Google Cloud project and key are not here: they come from
//! [`firstclick_cli::GcpArgs`], shared with the Pub/Sub connector, so a binary that flattens
//! both declares `--project-id` once.

use clap::Args;

/// Where the output table lives and how to reach BigQuery.
#[derive(Args, Clone, Debug)]
pub struct BigQueryArgs {
    /// `HOST:PORT` of a BigQuery emulator's REST endpoint. When set, no credentials are needed
    /// and every call goes to `http://HOST:PORT/bigquery/v2`.
    #[arg(
        id = "bigquery_emulator_host",
        long = "bigquery-emulator-host",
        env = "BIGQUERY_EMULATOR_HOST",
        value_name = "HOST:PORT"
    )]
    pub emulator_host: Option<String>,

    /// Dataset that holds the output table (created if missing).
    #[arg(long = "bq-dataset", env = "BQ_DATASET", default_value = "firstclick")]
    pub dataset: String,

    /// Output table (created if missing); the deduplicating view is `{table}_dedup`.
    #[arg(
        long = "bq-table",
        env = "BQ_TABLE",
        default_value = "attributed_checkouts"
    )]
    pub table: String,

    /// BigQuery location (e.g. `EU`, `us-central1`) for a new dataset and for query jobs.
    /// Unset: BigQuery's default (US).
    #[arg(long = "bq-location", env = "BQ_LOCATION")]
    pub location: Option<String>,
}

impl Default for BigQueryArgs {
    /// The flags' defaults: no emulator, dataset `firstclick`, table `attributed_checkouts`.
    fn default() -> Self {
        BigQueryArgs {
            emulator_host: None,
            dataset: "firstclick".into(),
            table: "attributed_checkouts".into(),
            location: None,
        }
    }
}
