//! `create-bq-table`: creates (or checks) the BigQuery dataset, the output table, its primary
//! key and the deduplicating view, and prints what it did. Safe to run on every deploy.
//! The command line and the job live in the library (`src/lib.rs`).
//!
//! Exit status: 0 when everything exists as designed (a primary key the backend refuses, as the
//! emulator does, is reported but not fatal); 1 with a message on stderr otherwise.

use clap::Parser;
use firstclick_create_bq_table::CreateBqTableCli;

fn main() -> std::process::ExitCode {
    // gcp-bigquery-client brings rustls; should another crate of the process bring a second
    // crypto provider, rustls could not pick one by itself (docs/design.md §10). An error here
    // means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = CreateBqTableCli::parse();
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
    match runtime.block_on(firstclick_create_bq_table::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
