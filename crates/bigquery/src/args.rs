//! The command-line flags of the BigQuery connector.
//!
//! The Google Cloud project and key are not here: they come from
//! [`firstclick_cli::GcpArgs`], shared with the Pub/Sub connector, so a binary that flattens
//! both declares `--project-id` once.

use clap::Args;

/// The emulator's gRPC port when none is given.
pub const EMULATOR_GRPC_PORT: u16 = 9060;

impl BigQueryArgs {
    /// The emulator's gRPC address: `--bigquery-emulator-grpc-host`, or the REST host's name
    /// with [`EMULATOR_GRPC_PORT`]. `None` without an emulator.
    pub fn emulator_grpc_address(&self) -> Option<String> {
        if let Some(h) = self
            .emulator_grpc_host
            .as_deref()
            .filter(|h| !h.trim().is_empty())
        {
            return Some(h.trim().to_owned());
        }
        let rest = self.emulator_host.as_deref()?.trim();
        let bare = rest
            .strip_prefix("http://")
            .unwrap_or(rest)
            .trim_end_matches('/');
        let host = match bare.rsplit_once(':') {
            Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
            _ => bare,
        };
        Some(format!("{host}:{EMULATOR_GRPC_PORT}"))
    }
}

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

    /// `HOST:PORT` of the emulator's gRPC (Storage Write) endpoint [default: the REST host with
    /// port 9060, the emulator's default].
    #[arg(
        id = "bigquery_emulator_grpc_host",
        long = "bigquery-emulator-grpc-host",
        env = "BIGQUERY_EMULATOR_GRPC_HOST",
        value_name = "HOST:PORT"
    )]
    pub emulator_grpc_host: Option<String>,

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

    /// Touches table of the multi-touch models, one row per (checkout, click, model) with its
    /// credit (created if missing, in the same dataset); its deduplicating view is
    /// `{touches_table}_dedup`.
    #[arg(
        long = "bq-touches-table",
        env = "BQ_TOUCHES_TABLE",
        default_value = firstclick_model::schema::TOUCHES_TABLE
    )]
    pub touches_table: String,

    /// BigQuery location (e.g. `EU`, `us-central1`) for a new dataset and for query jobs.
    /// Unset: BigQuery's default (US).
    #[arg(long = "bq-location", env = "BQ_LOCATION")]
    pub location: Option<String>,
}

impl Default for BigQueryArgs {
    /// The flags' defaults: no emulator, dataset `firstclick`, table `attributed_checkouts`,
    /// touches table `attributed_touches`.
    fn default() -> Self {
        BigQueryArgs {
            emulator_host: None,
            emulator_grpc_host: None,
            dataset: "firstclick".into(),
            table: "attributed_checkouts".into(),
            touches_table: firstclick_model::schema::TOUCHES_TABLE.into(),
            location: None,
        }
    }
}
