//! The `streaming` binary as a library: parses flags and hands over to the mode:
//! `replay` (files), `demo` (embedded, no services) or, with a cloud configured, the streaming
//! pipeline.
//!
//! # Layout
//! - [`args`]: flags and environment variables.
//! - [`demo`]: generator → engine → NDJSON file in one process.
//! - [`replay_cmd`]: the file replay command.
//! - [`run`]: the streaming service: Pub/Sub in, Redis enrichment, BigQuery out.
//! - [`intake`]: one task per subscription: parse, dead-letter bad messages.
//! - [`worker`]: the task that owns the engine: rows, checkpoints, acks.
//! - [`outage`]: retries with backoff that log an outage once.
//! - [`shutdown`]: SIGTERM/SIGINT handling.
//! - [`metrics`], [`http`]: counters, the stats line, /metrics and /healthz.

pub mod args;
pub mod demo;
pub mod http;
pub mod intake;
pub mod metrics;
pub mod outage;
pub mod replay_cmd;
pub mod run;
pub mod shutdown;
pub mod worker;

use clap::Parser;

use args::{Cli, Command};

pub use args::Cli as StreamingCli;

fn cloud_configured() -> bool {
    ["PUBSUB_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()))
}

/// Parses the command line and runs the chosen mode.
pub fn main_entry() -> anyhow::Result<()> {
    firstclick_pubsub::install_crypto_provider();
    let cli = Cli::parse();
    firstclick_cli::init_logging(&cli.log);
    match cli.command {
        Some(Command::Replay(args)) => replay_cmd::run(args),
        Some(Command::Demo(args)) => demo::run(args),
        Some(Command::Run(args)) => run_service(*args),
        None if cloud_configured() => run_service(*cli.run),
        None => {
            tracing::info!(
                "no cloud configured (neither PUBSUB_EMULATOR_HOST nor \
                 GOOGLE_APPLICATION_CREDENTIALS is set): running the embedded demo"
            );
            match Cli::parse_from(["streaming", "demo"]).command {
                Some(Command::Demo(args)) => demo::run(args),
                _ => anyhow::bail!("internal error: the demo subcommand did not parse"),
            }
        }
    }
}

fn run_service(args: run::RunArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))?;
    runtime.block_on(run::run(args))
}
