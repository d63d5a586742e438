//! `create-bq-table`: creates (or checks) the BigQuery dataset, the output table, its primary
//! key and the deduplicating view, and prints what it did. Safe to run on every deploy.
//! The command line and the job live in the library (`src/lib.rs`).
//!
//! Exit status (also in `--help`): 0 when everything exists as designed (on the emulator,
//! which cannot declare primary keys, without them); 1 failed while running (BigQuery not
//! reachable or refusing a request); 2 bad command line; 78 configuration error (a bad
//! project, dataset or table name, unusable credentials, an existing table or view that is
//! not ours). Errors are printed as their chain of causes, never with a backtrace.

use clap::Parser;
use firstclick_create_bq_table::CreateBqTableCli;

fn main() -> std::process::ExitCode {
    // gcp-bigquery-client brings rustls; should another crate of the process bring a second
    // crypto provider, rustls could not pick one by itself (docs/design.md §10). An error here
    // means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = CreateBqTableCli::parse();
    firstclick_cli::init_logging(&cli.log);
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))
        .and_then(|runtime| runtime.block_on(firstclick_create_bq_table::run(cli)));
    firstclick_cli::finish(
        "create-bq-table",
        result,
        firstclick_create_bq_table::is_config_error,
    )
}
