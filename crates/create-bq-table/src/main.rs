//! `create-bq-table`: creates (or checks) the BigQuery dataset, the output table, its primary
//! key and the deduplicating view, and prints what it did. Safe to run on every deploy.
//!
//! Exit status: 0 when everything exists as designed (a primary key the backend refuses, as the
//! emulator does, is reported but not fatal); 1 with a message on stderr otherwise.

use anyhow::Context;
use clap::Parser;
use firstclick_bigquery::{BigQuery, BigQueryArgs};
use firstclick_cli::{GcpArgs, LogArgs};

/// Create the firstclick BigQuery dataset, table (partitioned by day of checkout_time,
/// clustered by user_id), primary key and `{table}_dedup` view, if missing.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    gcp: GcpArgs,
    #[command(flatten)]
    bigquery: BigQueryArgs,
    #[command(flatten)]
    log: LogArgs,
}

fn main() -> std::process::ExitCode {
    // gcp-bigquery-client brings rustls; should another crate of the process bring a second
    // crypto provider, rustls could not pick one by itself (DESIGN §7). An error here means a
    // provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    firstclick_cli::init_logging(&cli.log);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let target = format!(
        "{}.{}.{}",
        cli.gcp.project_id, cli.bigquery.dataset, cli.bigquery.table
    );
    let bq = BigQuery::connect(&cli.gcp, &cli.bigquery)
        .await
        .with_context(|| format!("cannot set up a BigQuery client for {target}"))?;
    let report = bq.ensure_table().await.with_context(|| {
        format!(
            "cannot create the output table {target}{}",
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
