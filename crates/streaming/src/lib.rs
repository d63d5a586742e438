//! The `streaming` binary as a library: parses flags and hands over to the mode:
//! `replay` (files), `demo` (embedded, no services) or, with a cloud configured, the streaming
//! pipeline.
//!
//! # Layout
//! - `args`: flags and environment variables ([`StreamingCli`]).
//! - `demo`: generator → engine → NDJSON file in one process.
//! - `replay_cmd`: the file replay command.
//! - `report_file`: the HTML report of a replay or the demo (`firstclick-report`), written
//!   through a temporary file.
//! - `run`: the streaming service: Pub/Sub in, Redis enrichment, BigQuery out.
//! - `intake`: one task per subscription: parse, dead-letter bad messages.
//! - `worker`: the thin driver of the delivery core (`firstclick-delivery`), which owns the
//!   engine: rows, checkpoint deltas and base pieces, acks.
//! - `sink`: the rows' way into BigQuery (`--bigquery-write-api`: insertAll, or exactly once
//!   through pending streams), with its retries.
//! - `state`: loading the checkpoint from Redis ([`load_checkpoint`], [`Loaded`]); `state
//!   inspect` and `state reset`.
//! - `preflight`: the checks of every dependency, run at start-up (exit code 78 when one
//!   fails) and by `check`, and their periodic probes afterwards.
//! - `check`: `streaming check`, the checklist of a configuration against the real services.
//! - `health`: readiness and each dependency's up/down state (/readyz, the gauges).
//! - `outage`: retries with jittered backoff that log an outage once.
//! - `shutdown`: SIGTERM/SIGINT handling, the grace period after which the stop is forced.
//! - `metrics`, `http`: counters, the stats line, /metrics, /healthz and /readyz.
//!
//! The modules are private: the binary needs [`main_entry`] and [`exit_code`], the deployment
//! checks [`StreamingCli`], the checkpoint benchmark [`load_checkpoint`].

mod args;
mod check;
mod demo;
mod health;
mod http;
mod intake;
mod metrics;
mod outage;
mod preflight;
mod replay_cmd;
mod report_file;
mod run;
mod shutdown;
mod sink;
mod state;
mod worker;

use clap::Parser;

use args::StreamingCommand;

pub use args::StreamingCli;
pub use state::{load as load_checkpoint, Loaded};

fn cloud_configured() -> bool {
    ["PUBSUB_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()))
}

/// The exit code for an error [`main_entry`] returned: 78 (`EX_CONFIG`) for a configuration
/// error (a start-up check failed, a setting cannot be used), 1 otherwise.
pub fn exit_code(error: &anyhow::Error) -> u8 {
    preflight::exit_code(error)
}

/// Parses the command line and runs the chosen mode.
pub fn main_entry() -> anyhow::Result<()> {
    firstclick_pubsub::install_crypto_provider();
    let cli = StreamingCli::parse();
    firstclick_cli::init_logging(&cli.log);
    match cli.command {
        Some(StreamingCommand::Replay(args)) => replay_cmd::run(args),
        Some(StreamingCommand::Demo(args)) => demo::run(args),
        Some(StreamingCommand::Check(args)) => in_runtime(check::run(*args)),
        Some(StreamingCommand::Run(args)) => run_service(*args),
        Some(StreamingCommand::State(cmd)) => in_runtime(state_command(cmd)),
        None if cloud_configured() => run_service(*cli.run),
        None => {
            tracing::info!(
                "no cloud configured (neither PUBSUB_EMULATOR_HOST nor \
                 GOOGLE_APPLICATION_CREDENTIALS is set): running the embedded demo"
            );
            match StreamingCli::parse_from(["streaming", "demo"]).command {
                Some(StreamingCommand::Demo(args)) => demo::run(args),
                _ => anyhow::bail!("internal error: the demo subcommand did not parse"),
            }
        }
    }
}

fn run_service(args: run::RunArgs) -> anyhow::Result<()> {
    in_runtime(run::run(args))
}

fn in_runtime(job: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))?;
    let result = runtime.block_on(job);
    // Tasks still waiting on a service (a forced stop) or a blocking DNS lookup must not hold
    // the exit: the work that matters is done or given up on.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}

async fn state_command(cmd: args::StateCommand) -> anyhow::Result<()> {
    use anyhow::Context;
    use args::StateCommand;
    let run = match &cmd {
        StateCommand::Inspect(a) => &a.run,
        StateCommand::Reset(a) => &a.run,
    };
    let name = run::checkpoint_name(run);
    let store = firstclick_redis::CheckpointStore::new(&run.redis, name.clone())
        .context("bad Redis settings")?;
    match cmd {
        StateCommand::Inspect(a) => {
            let forced = tokio_util::sync::CancellationToken::new();
            forced.cancel();
            match state::inspect(&store, a.run.engine.config(), &forced).await? {
                None => {
                    println!(
                        "no checkpoint named {name} on {} (keys firstclick:{{{name}}}:*)",
                        store.addr()
                    );
                }
                Some(i) if a.json => println!("{}", serde_json::to_string_pretty(&i)?),
                Some(i) => {
                    println!("checkpoint        {name} on {}", store.addr());
                    println!("keys              {}", i.keys.join(", "));
                    println!("format version    {}", i.format_version);
                    println!("live clicks       {}", i.live_clicks);
                    println!("pending checkouts {}", i.pending_checkouts);
                    println!("remembered ids    {}", i.remembered_checkouts);
                    println!(
                        "watermark         {}",
                        i.watermark.as_deref().unwrap_or("none yet")
                    );
                    println!(
                        "changelog         {} elements ({} replayed over the base, {} bytes)",
                        i.changelog_length, i.changelog_replayed, i.changelog_bytes
                    );
                    match (i.base_generation, i.base_age_secs) {
                        (0, _) => {
                            println!("base snapshot     none yet (everything is in the changelog)")
                        }
                        (g, age) => println!(
                            "base snapshot     generation {g}, {} pieces, {} bytes, written {}",
                            i.base_pieces,
                            i.base_bytes,
                            age.map_or("at an unknown time".to_string(), |a| format!(
                                "{a:.0} s ago"
                            ))
                        ),
                    }
                    println!("bytes in all      {}", i.base_bytes + i.changelog_bytes);
                    println!("clean shutdown    {}", i.clean_shutdown);
                    println!("restore took      {:.2} s", i.restore_secs);
                }
            }
            Ok(())
        }
        StateCommand::Reset(a) => {
            if !a.yes {
                anyhow::bail!(
                    "`state reset` deletes the checkpoint {name} on {}; run it again with \
                     --yes to confirm (stop the service first)",
                    store.addr()
                );
            }
            let deleted = state::reset(&store).await?;
            println!(
                "deleted checkpoint {name} on {} ({deleted} keys)",
                store.addr()
            );
            Ok(())
        }
    }
}
