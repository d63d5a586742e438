//! `create-bq-table` as a library: the command line ([`CreateBqTableCli`]) and the job
//! ([`run`]), so that deployment checks can read the flags and environment variables of the
//! binary without running it. The binary (`src/main.rs`) only installs the crypto provider,
//! parses and calls [`run`].
//!
//! # Layout
//! No modules: `src/lib.rs` holds [`CreateBqTableCli`] and [`run`]; `src/main.rs` is the binary;
//! `tests/cli.rs` runs the binary against the emulator.

use anyhow::Context;
use clap::Parser;
use firstclick_bigquery::{BigQuery, BigQueryArgs};
use firstclick_cli::{GcpArgs, LogArgs};

/// Create the firstclick BigQuery dataset, output table (partitioned by day of checkout_time,
/// clustered by user_id), touches table (partitioned by day of checkout_time, clustered by
/// attribution_model and product_id), their primary keys and `_dedup` views, and the
/// `model_comparison` view, if missing.
#[derive(Parser, Debug)]
#[command(
    name = "create-bq-table",
    version,
    about,
    after_help = firstclick_cli::EXIT_STATUS_HELP
)]
pub struct CreateBqTableCli {
    /// Google Cloud project and key.
    #[command(flatten)]
    pub gcp: GcpArgs,
    /// Dataset, table, location and the emulator address.
    #[command(flatten)]
    pub bigquery: BigQueryArgs,
    /// Logging.
    #[command(flatten)]
    pub log: LogArgs,
}

/// Creates whatever is missing of the dataset, the two tables, their primary keys and the
/// views, and prints the report on stdout.
pub async fn run(cli: CreateBqTableCli) -> anyhow::Result<()> {
    let target = format!(
        "{}.{}.{}",
        cli.gcp.project_id, cli.bigquery.dataset, cli.bigquery.table
    );
    let bq = BigQuery::connect(&cli.gcp, &cli.bigquery)
        .await
        .with_context(|| format!("cannot set up a BigQuery client for {target}"))?;
    let report = bq.ensure_table().await.with_context(|| {
        format!(
            "cannot create the output tables {target} and {}{}",
            bq.touches_table_path(),
            if bq.is_emulator() {
                " on the emulator"
            } else {
                ""
            }
        )
    })?;
    println!("{report}");
    Ok(())
}

/// Whether `cause` is a configuration error (exit 78): a setting that cannot be used, or an
/// existing object in the way, as opposed to BigQuery not answering (exit 1, running again may
/// succeed).
pub fn is_config_error(cause: &(dyn std::error::Error + 'static)) -> bool {
    use firstclick_bigquery::{ConnectError, EnsureError};
    cause.is::<ConnectError>()
        || matches!(
            cause.downcast_ref::<EnsureError>(),
            Some(
                EnsureError::SchemaMismatch { .. }
                    | EnsureError::WrongKind { .. }
                    | EnsureError::NotFound { .. }
            )
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// The flattened flag groups fit together (unique names and variables, valid defaults).
    #[test]
    fn command_line_is_consistent() {
        CreateBqTableCli::command().debug_assert();
    }
}
